//! The admin listener: `/metrics` (Prometheus/OpenMetrics text), `/health`
//! (the process is up) and `/ready` (every listener is bound and serving).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Telemetry;

#[derive(Clone)]
struct AdminState {
    telemetry: Telemetry,
    ready: Arc<AtomicBool>,
}

/// Serves the admin endpoints until `token` is cancelled.
///
/// # Errors
/// The server's I/O error.
pub async fn serve(
    listener: TcpListener,
    telemetry: Telemetry,
    ready: Arc<AtomicBool>,
    token: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(readiness))
        .with_state(AdminState { telemetry, ready });
    axum::serve(listener, app)
        .with_graceful_shutdown(token.cancelled_owned())
        .await
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.telemetry.render(),
    )
}

async fn readiness(State(state): State<AdminState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
