//! The async front: one tokio task owns the repository. Changes submitted
//! while it is busy, or within a short window of each other, share a commit.
//! All git2 work runs in `spawn_blocking`.

use std::{collections::BTreeMap, future::Future, time::Duration};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{Change, ChangeOutcome, Error, GitConfig, Repo, Result, repo::RetryPolicy};

/// How the writer batches.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Most changes in one commit.
    pub max_batch: usize,
    /// How long to wait for more changes after the first one arrives.
    pub window: Duration,
    pub retry: RetryPolicy,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 250,
            window: Duration::from_millis(75),
            retry: RetryPolicy::default(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Submit(Box<Change>, Reply<ChangeOutcome>),
    ReadDir(String, Reply<BTreeMap<String, String>>),
    Head(Reply<Option<String>>),
    Contains(String, String, Reply<bool>),
}

/// A cheap, cloneable handle to the writer task. The task ends when every
/// handle is dropped.
#[derive(Clone, Debug)]
pub struct WriterHandle {
    tx: mpsc::UnboundedSender<Command>,
}

async fn answer<T>(rx: oneshot::Receiver<Result<T>>) -> Result<T> {
    rx.await.unwrap_or(Err(Error::WriterStopped))
}

impl WriterHandle {
    /// Start the writer task on the current tokio runtime. The local cache
    /// is opened on first use; an open error is returned to the callers of
    /// that batch and retried on the next.
    pub fn spawn(config: GitConfig, options: WriterOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(config, options, rx));
        WriterHandle { tx }
    }

    fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> oneshot::Receiver<Result<T>> {
        let (reply, rx) = oneshot::channel();
        // If the task is gone the reply sender is dropped and `answer`
        // reports `WriterStopped`.
        let _ = self.tx.send(make(reply));
        rx
    }

    /// Queue `change` now; the future resolves once it is pushed (or
    /// refused). Changes queued together share one commit.
    pub fn submit(&self, change: Change) -> impl Future<Output = Result<ChangeOutcome>> + use<> {
        answer(self.send(|r| Command::Submit(Box::new(change), r)))
    }

    /// Files under `dir` at the remote head (see [`Repo::read_dir`]).
    pub async fn read_dir(&self, dir: &str) -> Result<BTreeMap<String, String>> {
        answer(self.send(|r| Command::ReadDir(dir.to_string(), r))).await
    }

    /// The remote head commit, if the branch exists.
    pub async fn head(&self) -> Result<Option<String>> {
        answer(self.send(Command::Head)).await
    }

    /// See [`Repo::contains`]: whether `descendant` has `ancestor` in its history.
    pub async fn contains(&self, descendant: &str, ancestor: &str) -> Result<bool> {
        let (d, a) = (descendant.to_string(), ancestor.to_string());
        answer(self.send(|r| Command::Contains(d, a, r))).await
    }
}

/// Run `f` on the repository in a blocking thread, opening it if needed;
/// gives the repository back for the next job.
async fn blocking<T: Send + 'static>(
    repo: Option<Repo>,
    config: &GitConfig,
    retry: RetryPolicy,
    f: impl FnOnce(&mut Repo) -> Result<T> + Send + 'static,
) -> (Option<Repo>, Result<T>) {
    let config = config.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut repo = match repo {
            Some(r) => r,
            None => match Repo::open(config) {
                Ok(r) => r.with_retry(retry),
                Err(e) => return (None, Err(e)),
            },
        };
        let result = f(&mut repo);
        (Some(repo), result)
    })
    .await;
    // A panic inside git2 work: drop the repository, reopen next time.
    joined.unwrap_or_else(|_| (None, Err(Error::WriterStopped)))
}

async fn run(config: GitConfig, options: WriterOptions, mut rx: mpsc::UnboundedReceiver<Command>) {
    let mut repo: Option<Repo> = None;
    let mut deferred: Vec<Command> = Vec::new();
    loop {
        let first = match deferred.pop() {
            Some(c) => c,
            None => match rx.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        let (change, reply) = match first {
            Command::Submit(change, reply) => (change, reply),
            other => {
                repo = read(repo, &config, options.retry, other).await;
                continue;
            }
        };
        // Gather a batch: whatever arrives within the window, up to the cap.
        let mut batch = vec![(*change, reply)];
        let deadline = Instant::now() + options.window;
        while batch.len() < options.max_batch.max(1) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Command::Submit(change, reply))) => batch.push((*change, reply)),
                Ok(Some(other)) => deferred.insert(0, other),
                Ok(None) | Err(_) => break,
            }
        }
        // A change whose reconcile is gone (dropped with a leadership term
        // that ended) is not committed: the next leader decides it again.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (changes, replies): (Vec<Change>, Vec<Reply<ChangeOutcome>>) = batch.into_iter().unzip();
        tracing::debug!(size = changes.len(), "committing a batch");
        let (r, outcome) = blocking(repo, &config, options.retry, move |repo| {
            repo.commit_batch(changes)
        })
        .await;
        repo = r;
        match outcome {
            Ok(outcome) => {
                if let Some(commit) = &outcome.commit {
                    tracing::info!(%commit, size = replies.len(), attempts = outcome.metrics.attempts,
                        push_ms = outcome.metrics.push.as_millis() as u64, "pushed a commit");
                }
                for (reply, result) in replies.into_iter().zip(outcome.changes) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "git batch failed");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn read(repo: Option<Repo>, config: &GitConfig, retry: RetryPolicy, cmd: Command) -> Option<Repo> {
    match cmd {
        Command::ReadDir(dir, reply) => {
            let (repo, r) = blocking(repo, config, retry, move |repo| repo.read_dir(&dir)).await;
            let _ = reply.send(r);
            repo
        }
        Command::Head(reply) => {
            let (repo, r) = blocking(repo, config, retry, |repo| repo.head()).await;
            let _ = reply.send(r);
            repo
        }
        Command::Contains(d, a, reply) => {
            let (repo, r) = blocking(repo, config, retry, move |repo| repo.contains(&d, &a)).await;
            let _ = reply.send(r);
            repo
        }
        Command::Submit(_, reply) => {
            let _ = reply.send(Err(Error::WriterStopped));
            repo
        }
    }
}
