//! The synchronous core: a local bare repository used as a cache of the
//! remote branch. Every operation starts from a fresh fetch and builds its
//! commit in memory on top of the fetched head, so nothing a failed attempt
//! left behind can affect the next one.

use std::{
    cell::RefCell,
    collections::{BTreeMap, hash_map::RandomState},
    hash::{BuildHasher, Hasher},
    path::Path,
    time::{Duration, Instant},
};

use git2::{
    ErrorCode, FetchOptions, ObjectType, Oid, PushOptions, Repository, Signature, TreeWalkMode,
    TreeWalkResult,
};

use super::{
    BatchMetrics, BatchOutcome, Change, ChangeOutcome, Error, GitConfig, Result,
    credentials::{Session, cause, display_url},
    history::{DirFacts, History},
    paths,
    tree::Overlay,
};

/// Local ref holding the commit being pushed.
const OUTGOING: &str = "refs/paver/outgoing";

/// Bounded, jittered exponential backoff for lost push races.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Push attempts before giving up.
    pub attempts: u32,
    /// Delay before the second attempt; doubled each time, jittered ±50 %.
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
        // Jitter in [0.5, 1.5) without a random-number dependency.
        let noise = RandomState::new().build_hasher().finish() % 1000;
        exp.mul_f64(0.5 + noise as f64 / 1000.0)
    }
}

enum PushError {
    Rejected(String),
    Failed(Error),
}

/// The result of building a batch on one base.
struct Plan {
    /// Commit to push, if the remote must move.
    push: Option<Oid>,
    /// Commit created for the changes, if any changed.
    commit: Option<Oid>,
    /// What the branch head is once `push` (if any) lands.
    head: Oid,
    changed: Vec<Result<bool>>,
}

/// Ceiling of libgit2's process-wide cache of parsed commits and trees
/// (libgit2's default is 256 MiB). Every push walks the whole previous tree
/// to leave it out of the pack, and each of a request's four trees stays
/// in the cache. libgit2 counts a tree by its raw size (about 250 bytes
/// for a request's directory) but a parsed tree holds room for sixteen
/// entries besides its raw copy, about 1 KiB. At 10,000 requests (40,000
/// trees, about 10 MiB by libgit2's count) the former 16 MiB ceiling held
/// them all. With 1 MiB (a few MiB of parsed trees) a push re-reads most
/// trees from the local object store. Measured on 10,000-request bursts
/// (bench/profiles.md): with 16 MiB the heap profile at the peak had 47 MB
/// under libgit2's push, nearly all parsed trees; 2 MiB lowered the peak by
/// about 23 MiB. Back to back on a quiet machine, with the other memory
/// changes of that day, the mean push went from 318 to 459 ms and the whole
/// burst from 127 to 146 s.
const OBJECT_CACHE_BYTES: isize = 1 << 20;

#[allow(unsafe_code)]
fn bound_object_cache() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sets a libgit2 global once, before this process opens a repository.
        if let Err(e) = unsafe { git2::opts::set_cache_max_size(OBJECT_CACHE_BYTES) } {
            tracing::warn!(error = %e, "could not bound libgit2's object cache");
        }
    });
}

/// A local cache of the remote branch, and the operations on it.
pub struct Repo {
    repo: Repository,
    config: GitConfig,
    retry: RetryPolicy,
    /// Author facts per directory, read incrementally as the branch moves
    /// (history is append-only on the branch Paver owns; a rewrite just
    /// costs one rebuild).
    history: History,
}

impl Repo {
    /// Open the local cache at `config.workdir`, creating it (empty, bare)
    /// when the directory is missing or empty. Nothing is fetched yet.
    pub fn open(config: GitConfig) -> Result<Self> {
        bound_object_cache();
        let path = &config.workdir;
        let open_err = |e| Error::Open {
            path: path.clone(),
            source: cause(e, None),
        };
        let empty = std::fs::read_dir(path).map_or(true, |mut d| d.next().is_none());
        let repo = if empty {
            Repository::init_bare(path).map_err(open_err)?
        } else {
            Repository::open_bare(path).map_err(open_err)?
        };
        Ok(Repo {
            repo,
            config,
            retry: RetryPolicy::default(),
            history: History::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.config.branch)
    }

    fn git(action: &'static str) -> impl Fn(git2::Error) -> Error {
        move |e| Error::Git {
            action,
            source: cause(e, None),
        }
    }

    /// Fetch the branch; returns the remote head (`None`: no such branch).
    pub fn fetch(&mut self) -> Result<Option<Oid>> {
        let session = Session::load(&self.config.credentials)?;
        let err = |e| Error::Fetch {
            url: display_url(&self.config.url),
            branch: self.config.branch.clone(),
            source: session.cause(e),
        };
        let branch = &self.config.branch;
        let tracking = self.tracking_ref();
        let mut remote = self.repo.remote_anonymous(&self.config.url).map_err(err)?;
        let mut opts = FetchOptions::new();
        opts.remote_callbacks(session.callbacks());
        let spec = format!("+refs/heads/{branch}:{tracking}");
        remote.fetch(&[&spec], Some(&mut opts), None).map_err(err)?;
        let advertised = remote
            .list()
            .map(|heads| heads.iter().any(|h| h.name() == format!("refs/heads/{branch}")))
            .unwrap_or(true);
        match self.repo.find_reference(&tracking) {
            Ok(mut r) if !advertised => {
                r.delete().map_err(Self::git("forget a deleted branch"))?;
                Ok(None)
            }
            Ok(r) => Ok(r.target()),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(Self::git("read the fetched branch")(e)),
        }
    }

    /// The remote head commit, after a fetch.
    pub fn head(&mut self) -> Result<Option<String>> {
        Ok(self.fetch()?.map(|id| id.to_string()))
    }

    /// Apply `changes` on top of the remote head in one commit and push it,
    /// retrying lost races on a fresh fetch. Nothing changed: no commit, no
    /// push. A change refused on its own is reported in its slot.
    pub fn commit_batch(&mut self, changes: Vec<Change>) -> Result<BatchOutcome> {
        let start = Instant::now();
        let mut metrics = BatchMetrics {
            batch_size: changes.len(),
            ..BatchMetrics::default()
        };
        let mut last_status = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            let t = Instant::now();
            let base = self.fetch()?;
            metrics.fetch += t.elapsed();

            let t = Instant::now();
            let plan = self.plan(base, &changes)?;
            metrics.commit += t.elapsed();

            let pushed = match plan.push {
                None => Ok(()),
                Some(id) => {
                    metrics.attempts = attempt;
                    let t = Instant::now();
                    let r = self.push(id);
                    metrics.push += t.elapsed();
                    r
                }
            };
            match pushed {
                Ok(()) => {
                    metrics.total = start.elapsed();
                    return Ok(self.outcome(&changes, plan, metrics));
                }
                Err(PushError::Failed(e)) => return Err(e),
                Err(PushError::Rejected(status)) => {
                    tracing::info!(attempt, %status, "git push rejected, retrying on a fresh fetch");
                    last_status = status;
                    if attempt < self.retry.attempts {
                        std::thread::sleep(self.retry.delay(attempt));
                    }
                }
            }
        }
        Err(Error::PushRejected {
            url: display_url(&self.config.url),
            branch: self.config.branch.clone(),
            attempts: self.retry.attempts.max(1),
            status: last_status,
        })
    }

    fn outcome(&mut self, changes: &[Change], plan: Plan, metrics: BatchMetrics) -> BatchOutcome {
        let head = plan.head.to_string();
        let results = changes
            .iter()
            .zip(plan.changed)
            .map(|(change, changed)| {
                changed.map(|changed| {
                    // Incremental and local (the tracking ref is the pushed head).
                    let history = if change.delete {
                        None
                    } else {
                        self.dir_facts(Some(&change.dir)).ok().flatten()
                    };
                    // Unchanged: the commit that last changed the directory, so a
                    // request's revision moves only when its own output does.
                    let revision = match (&history, changed) {
                        (
                            Some(DirFacts {
                                last_touch: Some(id), ..
                            }),
                            false,
                        ) => id.to_string(),
                        _ => head.clone(),
                    };
                    ChangeOutcome {
                        key: change.key.clone(),
                        revision: Some(revision),
                        changed,
                        metrics,
                        authors: history.map(|h| h.times()).unwrap_or_default(),
                    }
                })
            })
            .collect();
        BatchOutcome {
            head,
            commit: plan.commit.map(|c| c.to_string()),
            changes: results,
            metrics,
        }
    }

    fn signature(&self) -> Result<Signature<'static>> {
        Signature::now(&self.config.author_name, &self.config.author_email)
            .map_err(Self::git("make the commit signature"))
    }

    /// Build (but do not push) the commit for `changes` on `base`.
    fn plan(&self, base: Option<Oid>, changes: &[Change]) -> Result<Plan> {
        let sig = self.signature()?;
        let mut needs_push = false;
        let parent = match base {
            Some(id) => id,
            None => {
                // Empty remote (or missing branch): start it.
                needs_push = true;
                let empty = self
                    .repo
                    .treebuilder(None)
                    .and_then(|b| b.write())
                    .map_err(Self::git("write the empty tree"))?;
                let tree = self.repo.find_tree(empty).map_err(Self::git("read a tree"))?;
                let msg = format!("paver: initialize {}", self.config.branch);
                self.repo
                    .commit(None, &sig, &sig, &msg, &tree, &[])
                    .map_err(Self::git("write the initial commit"))?
            }
        };
        let parent = self
            .repo
            .find_commit(parent)
            .map_err(Self::git("read the head commit"))?;
        let parent_tree = parent.tree().map_err(Self::git("read the head tree"))?;
        // Only the trees along the changed directories are read and written.
        let mut overlay = Overlay::new(&self.repo, Some(parent_tree.clone()));
        let mut changed: Vec<Result<bool>> = changes
            .iter()
            .map(|c| paths::apply(&self.repo, &mut overlay, c))
            .collect();
        let tree_id = match overlay.write().map_err(Self::git("write the tree"))? {
            Some(id) => id,
            None => self
                .repo
                .treebuilder(None)
                .and_then(|b| b.write())
                .map_err(Self::git("write the empty tree"))?,
        };
        let mut commit = None;
        if tree_id == parent_tree.id() {
            // Changes that cancel out (or none at all) change nothing.
            for c in changed.iter_mut().flatten() {
                *c = false;
            }
        } else {
            let tree = self.repo.find_tree(tree_id).map_err(Self::git("read a tree"))?;
            let msg = message(changes, &changed);
            let id = self
                .repo
                .commit(None, &sig, &sig, &msg, &tree, &[&parent])
                .map_err(Self::git("write the commit"))?;
            commit = Some(id);
            needs_push = true;
        }
        let head = commit.unwrap_or(parent.id());
        Ok(Plan {
            push: needs_push.then_some(head),
            commit,
            head,
            changed,
        })
    }

    fn push(&mut self, id: Oid) -> Result<(), PushError> {
        let session = Session::load(&self.config.credentials).map_err(PushError::Failed)?;
        let failed = |e: git2::Error| {
            PushError::Failed(Error::Push {
                url: display_url(&self.config.url),
                branch: self.config.branch.clone(),
                source: session.cause(e),
            })
        };
        self.repo
            .reference(OUTGOING, id, true, "paver: outgoing")
            .map_err(|e| PushError::Failed(Self::git("set the outgoing ref")(e)))?;
        let rejected: RefCell<Option<String>> = RefCell::default();
        let result = {
            let mut callbacks = session.callbacks();
            callbacks.push_update_reference(|_refname, status| {
                if let Some(status) = status {
                    *rejected.borrow_mut() = Some(status.to_string());
                }
                Ok(())
            });
            let mut opts = PushOptions::new();
            opts.remote_callbacks(callbacks);
            let spec = format!("{OUTGOING}:refs/heads/{}", self.config.branch);
            self.repo
                .remote_anonymous(&self.config.url)
                .and_then(|mut remote| remote.push(&[&spec], Some(&mut opts)))
        };
        match result {
            Err(e) if e.code() == ErrorCode::NotFastForward => {
                return Err(PushError::Rejected(session.cause(e).message));
            }
            Err(e) => return Err(failed(e)),
            Ok(()) => {}
        }
        if let Some(status) = rejected.into_inner() {
            return Err(PushError::Rejected(status));
        }
        // The remote now points at `id`; record it like a fetch would.
        self.repo
            .reference(&self.tracking_ref(), id, true, "paver: pushed")
            .map_err(|e| PushError::Failed(Self::git("update the tracking ref")(e)))?;
        Ok(())
    }

    /// Files under `dir` at the remote head, by path relative to the
    /// repository root. Empty when the directory is absent.
    pub fn read_dir(&mut self, dir: &str) -> Result<BTreeMap<String, String>> {
        let full = dir.trim_matches('/').to_string();
        if !full.is_empty() {
            paths::check_relative(&full).map_err(|reason| Error::InvalidChange {
                key: dir.to_string(),
                reason,
            })?;
        }
        let mut files = BTreeMap::new();
        let Some(head) = self.fetch()? else {
            return Ok(files);
        };
        let tree = self
            .repo
            .find_commit(head)
            .and_then(|c| c.tree())
            .map_err(Self::git("read the head tree"))?;
        let subtree = if full.is_empty() {
            tree
        } else {
            match tree.get_path(Path::new(&full)) {
                Ok(entry) if entry.kind() == Some(ObjectType::Tree) => self
                    .repo
                    .find_tree(entry.id())
                    .map_err(Self::git("read a tree"))?,
                Ok(_) => return Ok(files),
                Err(e) if e.code() == ErrorCode::NotFound => return Ok(files),
                Err(e) => return Err(Self::git("look up the directory")(e)),
            }
        };
        let prefix = if full.is_empty() {
            String::new()
        } else {
            format!("{full}/")
        };
        let mut failure = None;
        subtree
            .walk(TreeWalkMode::PreOrder, |parent, entry| {
                if entry.kind() != Some(ObjectType::Blob) {
                    return TreeWalkResult::Ok;
                }
                match self.repo.find_blob(entry.id()) {
                    Ok(blob) => {
                        let path = format!("{prefix}{parent}{}", entry.name().unwrap_or_default());
                        files.insert(path, String::from_utf8_lossy(blob.content()).into_owned());
                        TreeWalkResult::Ok
                    }
                    Err(e) => {
                        failure = Some(e);
                        TreeWalkResult::Abort
                    }
                }
            })
            .map_err(Self::git("walk the directory"))?;
        match failure {
            Some(e) => Err(Self::git("read a file")(e)),
            None => Ok(files),
        }
    }

    /// For each author email, the time (unix seconds) of their latest commit
    /// touching `dir`, or anything when `dir` is `None`.
    /// Reads the history as of the last fetch or push (no network: it runs
    /// once per scoring, right after the commit that updated the ref); fetches
    /// only when nothing was fetched yet.
    pub fn last_commit_times_by_author(&mut self, dir: Option<&str>) -> Result<BTreeMap<String, i64>> {
        Ok(self.dir_facts(dir)?.map(|h| h.times()).unwrap_or_default())
    }

    /// The latest commit that changed `dir`, as of the last fetch or push.
    pub fn last_touch(&mut self, dir: &str) -> Result<Option<String>> {
        Ok(self
            .dir_facts(Some(dir))?
            .and_then(|h| h.last_touch)
            .map(|id| id.to_string()))
    }

    /// Whether commit `ancestor` is `descendant` or in its history (both
    /// must be known locally; an unknown commit is "no").
    pub fn contains(&self, descendant: &str, ancestor: &str) -> Result<bool> {
        let (Ok(d), Ok(a)) = (Oid::from_str(descendant), Oid::from_str(ancestor)) else {
            return Ok(false);
        };
        if d == a {
            return Ok(true);
        }
        Ok(self.repo.graph_descendant_of(d, a).unwrap_or(false))
    }

    /// The history's facts about `dir` (all of the branch when `None`) as of
    /// the tracking ref; reads only the commits not read before.
    fn dir_facts(&mut self, dir: Option<&str>) -> Result<Option<DirFacts>> {
        let known = match self.repo.refname_to_id(&self.tracking_ref()) {
            Ok(id) => Some(id),
            Err(e) if e.code() == ErrorCode::NotFound => None,
            Err(e) => return Err(Self::git("read the tracking branch")(e)),
        };
        let head = match known {
            Some(id) => id,
            None => match self.fetch()? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        self.history
            .advance(&self.repo, head)
            .map_err(Self::git("read the history"))?;
        let full = dir.map(|d| d.trim_matches('/').to_string()).unwrap_or_default();
        Ok(self.history.get(&full).cloned())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Subject, a line per changed request, then every changed request's
/// trailers as the last paragraph.
fn message(changes: &[Change], changed: &[Result<bool>]) -> String {
    let included: Vec<&Change> = changes
        .iter()
        .zip(changed)
        .filter(|(_, c)| matches!(c, Ok(true)))
        .map(|(c, _)| c)
        .collect();
    let deletes = included.iter().filter(|c| c.delete).count();
    let renders = included.len() - deletes;
    let subject = match (included.as_slice(), renders, deletes) {
        ([one], _, _) if one.delete => format!("paver: delete {}", one_line(&one.key)),
        ([one], _, _) => format!("paver: render {}", one_line(&one.key)),
        (_, n, 0) => format!("paver: render {n} requests"),
        (_, 0, n) => format!("paver: delete {n} requests"),
        (all, r, d) => format!("paver: update {} requests ({r} rendered, {d} deleted)", all.len()),
    };
    let mut msg = format!("{subject}\n\n");
    for c in &included {
        let summary = match one_line(&c.summary) {
            s if !s.is_empty() => s,
            _ if c.delete => "delete directory".to_string(),
            _ => format!("render {} files", c.files.len()),
        };
        msg.push_str(&format!("- {}: {summary}\n", one_line(&c.key)));
    }
    let trailers: Vec<String> = included
        .iter()
        .flat_map(|c| c.trailers.iter())
        .map(|(k, v)| format!("{k}: {}", v.trim()))
        .collect();
    if !trailers.is_empty() {
        msg.push('\n');
        msg.push_str(&trailers.join("\n"));
        msg.push('\n');
    }
    msg
}
