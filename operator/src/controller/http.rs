//! `/metrics`, `/healthz` and `/readyz` on one small axum server.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::metrics::Metrics;

/// Where the replica is, as `/readyz` tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Waiting for the CRDs, or between two terms.
    Starting = 0,
    /// Campaigning for the leader Lease another replica holds.
    StandingBy = 1,
    /// Leading; listing what it reconciles against.
    Syncing = 2,
    /// Leading, caches synced, the controller running.
    Leading = 3,
}

/// What the probes report.
#[derive(Clone, Default)]
pub struct Health {
    role: Arc<AtomicU8>,
}

impl Health {
    pub fn set(&self, role: Role) {
        self.role.store(role as u8, Ordering::Relaxed);
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            1 => Role::StandingBy,
            2 => Role::Syncing,
            3 => Role::Leading,
            _ => Role::Starting,
        }
    }
}

/// `/readyz`: a leader is ready once its caches are synced and its
/// controller runs; a standby is ready too (it is where it should be, and a
/// Deployment's rolling update waits for new Pods to be ready, which a
/// standby would never be while the old leader holds the Lease). The body
/// says which, so a person or a test can tell.
fn readiness(role: Role) -> (StatusCode, &'static str) {
    match role {
        Role::Leading => (StatusCode::OK, "ready: leading, caches synced\n"),
        Role::StandingBy => (StatusCode::OK, "ready: standing by for the leader Lease\n"),
        Role::Syncing => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: leading, listing routes, bundles, namespaces and requests\n",
        ),
        Role::Starting => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting (waiting for the CRDs or between leadership terms)\n",
        ),
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    readiness(s.health.role())
}

/// Serves the endpoints until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics_: Metrics,
    health: Health,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            metrics: metrics_,
            health,
        });
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_leading_or_standing_by_only() {
        let h = Health::default();
        assert_eq!(h.role(), Role::Starting);
        assert_eq!(readiness(h.role()).0, StatusCode::SERVICE_UNAVAILABLE);
        for (role, code, says) in [
            (Role::StandingBy, StatusCode::OK, "standing by"),
            (Role::Syncing, StatusCode::SERVICE_UNAVAILABLE, "listing"),
            (Role::Leading, StatusCode::OK, "leading, caches synced"),
        ] {
            h.set(role);
            assert_eq!(h.role(), role);
            let (c, body) = readiness(h.role());
            assert_eq!(c, code, "{role:?}");
            assert!(body.contains(says), "{role:?}: {body}");
        }
    }
}
