//! `/metrics`, `/healthz` and `/readyz` on one small axum server.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use super::metrics::Metrics;

/// What the probes report.
#[derive(Clone, Default)]
pub struct Health {
    /// Set once caches are synced and controllers run.
    pub ready: Arc<AtomicBool>,
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
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
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
