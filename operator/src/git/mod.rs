//! The Git writer: a thin I/O shell that commits rendered files to the
//! GitOps repository and reads them back.
//!
//! It knows nothing about routes, policy or templates. It receives
//! [`Change`]s (a request's directory and the exact files it must hold),
//! applies a batch of them on top of the remote head in one commit, pushes,
//! and on a lost push race fetches, re-applies and retries with backoff.
//!
//! - [`Repo`] is the synchronous core (git2), usable from tests and the CLI.
//! - [`WriterHandle`] is the async front: one tokio task owns the
//!   repository and turns requests that arrive together into one commit.
//!
//! Nothing here logs or returns a secret: credentials are read from mounted
//! files at use time and every git2 message is redacted before it leaves.

mod credentials;
mod history;
mod paths;
mod repo;
mod tree;
mod writer;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

pub use credentials::Credentials;
pub use repo::{Repo, RetryPolicy};
pub use writer::{WriterHandle, WriterOptions};

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct GitConfig {
    /// Remote URL: `https://…`, `ssh://…`, `file://…` or a local path.
    pub url: String,
    /// Branch to commit to; created with an initial commit if missing.
    pub branch: String,
    /// Local bare repository used as a cache of the remote.
    pub workdir: PathBuf,
    pub credentials: Credentials,
    pub author_name: String,
    pub author_email: String,
}

/// Everything one request wants in the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// `namespace/name` of the request.
    pub key: String,
    /// The request's directory, relative to the repository root.
    pub dir: String,
    /// Files, by path relative to the repository root; every path must lie
    /// inside `dir`. Applying the change makes the directory hold
    /// exactly these files. Shared, not copied: the reconcile that submits
    /// a render keeps its files for the Scorecard while the commit is in
    /// flight (hundreds of renders at once in a burst).
    pub files: Arc<BTreeMap<String, String>>,
    /// Remove the whole directory (then `files` must be empty).
    pub delete: bool,
    /// The directory the request's files were in before (its team or its
    /// route's output path changed): removed in the same commit that
    /// writes `dir`, so the old files (and their Argo CD Application) are
    /// never left behind and never duplicated.
    pub moved_from: Option<String>,
    /// Provenance trailers, e.g. `("Paver-Request", "ns/name")`.
    pub trailers: Vec<(String, String)>,
    /// One line describing the change, listed in the commit body.
    pub summary: String,
}

/// The result of one change in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub key: String,
    /// The commit whose tree holds this change (the new commit if it
    /// changed anything, otherwise the current head).
    pub revision: Option<String>,
    /// Whether this change modified the repository.
    pub changed: bool,
    /// Facts about the batch the change travelled in.
    pub metrics: BatchMetrics,
    /// For each author email, their latest commit time (unix seconds) in the
    /// change's directory, read right after the batch (scorecard facts
    /// without a second trip through the writer).
    pub authors: BTreeMap<String, i64>,
}

/// The result of [`Repo::commit_batch`].
#[derive(Clone, Debug)]
pub struct BatchOutcome {
    /// The remote head after the batch.
    pub head: String,
    /// The commit created, if anything changed.
    pub commit: Option<String>,
    /// One entry per input change, in input order. A change refused on its
    /// own (bad path, bad trailer) fails alone; the others still commit.
    pub changes: Vec<Result<ChangeOutcome>>,
    pub metrics: BatchMetrics,
}

/// Counters and durations for metrics export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchMetrics {
    /// Changes in the batch.
    pub batch_size: usize,
    /// Push attempts (0 when nothing was pushed).
    pub attempts: u32,
    /// Time spent fetching (all attempts).
    pub fetch: Duration,
    /// Time spent building trees and commits (all attempts).
    pub commit: Duration,
    /// Time spent pushing (all attempts).
    pub push: Duration,
    /// Wall time of the whole batch, backoff included.
    pub total: Duration,
}

/// A git2 error with secrets removed from its message.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct GitCause {
    pub message: String,
    pub code: git2::ErrorCode,
    pub class: git2::ErrorClass,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to open repository at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: GitCause,
    },
    #[error("failed to fetch {branch} from {url}: {source}")]
    Fetch {
        url: String,
        branch: String,
        #[source]
        source: GitCause,
    },
    #[error("failed to push {branch} to {url}: {source}")]
    Push {
        url: String,
        branch: String,
        #[source]
        source: GitCause,
    },
    #[error("failed to push {branch} to {url}: rejected {attempts} times, last: {status}")]
    PushRejected {
        url: String,
        branch: String,
        attempts: u32,
        status: String,
    },
    #[error("failed to read credentials from {path}: {source}")]
    Credentials {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("failed to apply change {key}: {reason}")]
    InvalidChange { key: String, reason: String },
    #[error("failed to {action}: {source}")]
    Git {
        action: &'static str,
        #[source]
        source: GitCause,
    },
    #[error("failed to reach the git writer: its task has stopped")]
    WriterStopped,
}

impl Error {
    /// What failed, for metrics (`paver_git_failures_total{error}`): the
    /// remote could not be fetched or pushed, kept rejecting the push, the
    /// credentials could not be read, the local cache could not be opened,
    /// one change was invalid, another git operation failed, or the writer
    /// has stopped.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Open { .. } => "open",
            Error::Fetch { .. } => "fetch",
            Error::Push { .. } => "push",
            Error::PushRejected { .. } => "rejected",
            Error::Credentials { .. } => "credentials",
            Error::InvalidChange { .. } => "change",
            Error::Git { .. } => "git",
            Error::WriterStopped => "writer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
