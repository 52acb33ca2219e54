//! The controller's HTTP endpoints: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive) and `/readyz` (it holds an etcd
//! session, the first list of the desired state completed, and Docker
//! answers), within [`Limits`] on connections, header reads and request time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::desired::DesiredCache;
use crate::metrics::Metrics;
use crate::runtime::ContainerRuntime;

/// Bound on the Docker ping behind `/readyz`.
const READY_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client may hold of the endpoint. The endpoint serves scrapers and probes, a few
/// connections each asking every few seconds; these bounds keep clients that connect and then
/// send slowly, or never read, from taking it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from the connection
    /// (or the previous answer on a kept-alive one): then the connection is closed.
    pub header_read_timeout: Duration,
    /// Bound on answering one request (503 after it).
    pub request_timeout: Duration,
    /// How long one connection is kept: then it is closed after its current request, so a
    /// client that never reads its answer holds a slot at most this long.
    pub connection_lifetime: Duration,
    /// How long a request in flight may take to finish once its connection is closing (its
    /// lifetime is over, or the controller shuts down).
    pub close_grace: Duration,
}

impl Default for Limits {
    /// 64 connections: ample for a few scrapers and kubelet probes, while 64 tasks and sockets
    /// cost nothing. 10 s for the headers: a probe sends them in one packet, and kubelet's
    /// default probe timeout is 1 s. 10 s per request: `/readyz` pings Docker for at most 2 s,
    /// `/metrics` renders in milliseconds. A minute per connection, for a scraper that keeps
    /// one open a reconnect a minute.
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(60),
            close_grace: Duration::from_secs(5),
        }
    }
}

/// What the endpoints look at.
#[derive(Debug, Clone)]
pub struct Health {
    /// What `/metrics` serves.
    pub metrics: Metrics,
    /// Ready only once the first listing of documents completed.
    pub cache: Arc<DesiredCache>,
    /// Ready only while Docker answers a ping.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// False while the controller has no etcd session.
    pub session_ok: Arc<std::sync::atomic::AtomicBool>,
}

/// Binds `addr` (so a taken port is an error at start-up) and serves until
/// `shutdown`, within the default [`Limits`].
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
    Ok(tokio::spawn(serve_with(
        listener,
        app,
        Limits::default(),
        shutdown,
    )))
}

/// Serves `app` on `listener` within `limits` until `shutdown`; returns once every connection
/// closed (each within `close_grace` of the shutdown).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        // A slot first, then the connection: past the cap, clients wait in the accept queue.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        connections.spawn(connection(
            stream,
            app.clone(),
            limits,
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Serves one connection within `limits`; its slot is freed when it ends.
async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = hyper_util::service::TowerToHyperService::new(app);
    let request_timeout = limits.request_timeout;
    let service = hyper::service::service_fn(move |request| {
        let answer = hyper::service::Service::call(&app, request);
        async move {
            match tokio::time::timeout(request_timeout, answer).await {
                Ok(answer) => answer,
                Err(_) => Ok((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the request took too long\n",
                )
                    .into_response()),
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => Some(ended),
        _ = shutdown.cancelled() => None,
        _ = tokio::time::sleep(limits.connection_lifetime) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            served.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.close_grace, served).await {
                Ok(ended) => ended,
                // Dropped: the connection closes.
                Err(_) => return,
            }
        }
    };
    if let Err(error) = ended {
        // Header timeouts, clients that hang up: theirs, not ours.
        tracing::debug!(%error, "an HTTP connection ended with an error");
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// An endpoint with `limits`, answering `/healthz` with "ok" and `/slow` after a minute.
    async fn endpoint(
        limits: Limits,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late\n"
                }),
            );
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve_with(listener, app, limits, shutdown.clone()));
        (addr, shutdown, served)
    }

    fn short_limits() -> Limits {
        Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            connection_lifetime: Duration::from_secs(30),
            close_grace: Duration::from_secs(1),
        }
    }

    /// The whole answer to `GET path` on a fresh connection.
    async fn get_text(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    }

    /// Connections that send half a request line and hold.
    async fn slow_clients(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..count {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"GET /heal")
                .await
                .expect("send half a line");
            held.push(stream);
        }
        held
    }

    #[tokio::test]
    async fn slow_clients_are_closed_after_the_header_timeout_and_then_others_are_served() {
        let limits = short_limits();
        let (addr, shutdown, served) = endpoint(limits).await;
        let started = Instant::now();
        let mut held = slow_clients(addr, limits.max_connections + 3).await;
        // Every slot is held: a fresh client waits, and is served once the slow ones are cut.
        let answer = tokio::time::timeout(Duration::from_secs(10), get_text(addr, "/healthz"))
            .await
            .expect("/healthz answers once the slow clients are dropped");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
            "{answer}"
        );
        assert!(
            started.elapsed() >= limits.header_read_timeout,
            "served after {:?}: before any slot was freed?",
            started.elapsed()
        );
        for (i, stream) in held.iter_mut().enumerate() {
            let mut buffer = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("slow client {i} is still open after 10 s"));
            // Closed by the server: end of stream (after a 408, if hyper sends one), or a reset.
            if let Ok(n) = read
                && n > 0
            {
                let text = String::from_utf8_lossy(&buffer[..n]);
                assert!(
                    text.starts_with("HTTP/1.1 408"),
                    "slow client {i} got {text}"
                );
                let rest = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                    .await
                    .expect("closed after the 408");
                assert!(matches!(rest, Ok(0) | Err(_)), "{rest:?}");
            }
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the endpoint stops within the close grace")
            .expect("it does not panic");
    }

    #[tokio::test]
    async fn a_request_that_takes_too_long_is_answered_503() {
        let (addr, shutdown, _served) = endpoint(short_limits()).await;
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(10), get_text(addr, "/slow"))
            .await
            .expect("an answer within the request timeout");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn shutdown_closes_connections_that_are_still_open() {
        let (addr, shutdown, served) = endpoint(Limits {
            header_read_timeout: Duration::from_secs(60),
            ..short_limits()
        })
        .await;
        let mut held = slow_clients(addr, 2).await;
        // A kept-alive client between requests holds a connection too.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("send");
        let mut buffer = [0u8; 512];
        let n = idle.read(&mut buffer).await.expect("an answer");
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
        held.push(idle);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the endpoint stops within the close grace, whatever its clients do")
            .expect("it does not panic");
    }
}
