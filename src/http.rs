//! The controller's HTTP endpoints: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (it holds an etcd
//! session, the first list of the desired state completed, and Docker
//! answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::controller::watcher::DesiredCache;
use crate::metrics::Metrics;
use crate::runtime::ContainerRuntime;

/// Bound on the Docker ping behind `/readyz`.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints look at.
#[derive(Debug, Clone)]
pub struct Health {
    pub metrics: Metrics,
    pub cache: Arc<DesiredCache>,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// False while the controller has no etcd session.
    pub session_ok: Arc<std::sync::atomic::AtomicBool>,
}

/// Binds `addr` (so a taken port is an error at start-up) and serves until
/// `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the HTTP endpoint failed");
        }
    }))
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        health.metrics.render(),
    )
}

/// Liveness: the process serves requests. An etcd outage is not a reason
/// to restart (the controller reopens its session by itself, and restarting
/// every controller at once would not help), so it only shows in the text
/// and in `/readyz`.
async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    if health.session_ok.load(std::sync::atomic::Ordering::SeqCst) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::OK, "ok (no etcd session: reconnecting)\n")
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if !health.session_ok.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no etcd session\n".to_owned(),
        );
    }
    if !health.cache.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the desired state is not listed yet\n".into(),
        );
    }
    match tokio::time::timeout(READY_PING_TIMEOUT, health.runtime.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(error)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Docker did not answer a ping\n".to_owned(),
        ),
    }
}
