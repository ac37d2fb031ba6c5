//! Operator configuration: flags, each also settable by environment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// `paver operator` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct OperatorConfig {
    /// URL of the output (GitOps) repository Paver commits to.
    #[arg(long, env = "PAVER_REPO_URL")]
    pub repo_url: String,
    /// Branch of the output repository.
    #[arg(long, env = "PAVER_REPO_BRANCH", default_value = "main")]
    pub branch: String,
    /// Local folder for the working clone.
    #[arg(long, env = "PAVER_WORKDIR", default_value = "/tmp/paver-repo")]
    pub workdir: PathBuf,
    /// File holding the HTTPS username (mounted from a Secret).
    #[arg(long, env = "PAVER_GIT_USERNAME_FILE")]
    pub git_username_file: Option<PathBuf>,
    /// File holding the HTTPS token or password (mounted from a Secret).
    #[arg(long, env = "PAVER_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// File holding an SSH private key (mounted from a Secret).
    #[arg(long, env = "PAVER_GIT_SSH_KEY_FILE")]
    pub git_ssh_key_file: Option<PathBuf>,
    /// known_hosts file (plain host names, e.g. from `ssh-keyscan`) the SSH
    /// remote's host key must be listed in; without it libgit2 falls back to
    /// `~/.ssh/known_hosts`, which an image does not have.
    #[arg(long, env = "PAVER_GIT_KNOWN_HOSTS_FILE", requires = "git_ssh_key_file")]
    pub git_known_hosts_file: Option<PathBuf>,
    /// Commit author name.
    #[arg(long, env = "PAVER_GIT_AUTHOR_NAME", default_value = "Paver")]
    pub author_name: String,
    /// Commit author email.
    #[arg(long, env = "PAVER_GIT_AUTHOR_EMAIL", default_value = "paver@paver.dev")]
    pub author_email: String,
    /// How often every request is re-checked (drift, expiring exceptions), e.g. `5m`.
    #[arg(long, env = "PAVER_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,
    /// Requests reconciled at once (most of them wait for the Git writer,
    /// whose commits take every request waiting at the time).
    #[arg(long, env = "PAVER_CONCURRENCY", default_value_t = 256)]
    pub concurrency: u16,
    /// Kubernetes API requests in flight at once (and so HTTP connections).
    #[arg(long, env = "PAVER_API_CONCURRENCY", default_value_t = 64)]
    pub api_concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "PAVER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease; no leader election when empty.
    #[arg(long, env = "PAVER_LEASE_NAMESPACE", default_value = "")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, env = "PAVER_LEASE_NAME", default_value = "paver-operator")]
    pub lease_name: String,
    /// How long the leader's Lease lasts without renewal (whole seconds): a
    /// standby takes over this long after a leader dies without releasing it.
    #[arg(long, env = "PAVER_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps leading without renewing the Lease before
    /// it stops reconciling and campaigns again (shorter than the duration).
    #[arg(long, env = "PAVER_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_deadline: Duration,
    /// How often the leader renews the Lease and a standby tries to take it.
    #[arg(long, env = "PAVER_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// How long a route revision no request uses is kept after it was
    /// published (requests may still pin its version until then); the
    /// head's revision and any a request or rollout uses are always kept.
    #[arg(long, env = "PAVER_ROUTE_REVISION_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub route_revision_retention: Duration,
    /// How often each route's status counts the requests on each of its
    /// versions and unused revisions are collected (written only when
    /// something changed).
    #[arg(long, env = "PAVER_ROUTE_STATUS_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub route_status_interval: Duration,
    /// Argo CD's address of this cluster, written into every rendered
    /// Application's `destination.server` instead of the route's (default:
    /// the route's, else `https://kubernetes.default.svc`).
    #[arg(long, env = "PAVER_ARGOCD_DESTINATION_SERVER")]
    pub argocd_destination_server: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "PAVER_LOG_JSON")]
    pub log_json: bool,
}

pub use crate::core::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(
            parse_duration("999999999999999999d").is_err(),
            "overflows, never wraps"
        );
    }
}
