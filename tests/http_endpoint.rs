//! The controller's HTTP endpoint under clients that hold connections: the real `rtmanager`
//! binary with its default limits (64 connections, 10 s to send a request's headers), against
//! the real etcd and Docker.
//!
//! Ignored by a bare `cargo test` (it needs etcd and Docker); `scripts/test` runs it.

use rtm_testkit as common;
use rtm_testkit::process;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::unique_keys;
use process::{ControllerOptions, WipeOnDrop, http_get};

/// The binary's defaults (`rtm_controller::http::Limits::default()`).
const MAX_CONNECTIONS: usize = 64;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Slack for a loaded machine.
const SLACK: Duration = Duration::from_secs(10);

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn connections_that_never_send_their_headers_are_closed_and_do_not_lock_out_probes() {
    let keys = unique_keys("http-endpoint");
    let _wipe = WipeOnDrop(keys.clone());
    let controller = ControllerOptions::new(&keys, "http").start().await;
    let addr = controller.metrics_addr();

    // More clients than the cap, each sending half a request line and holding.
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..MAX_CONNECTIONS + 16 {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("slow client {i}: connect: {e}"));
        stream
            .write_all(b"GET /heal")
            .await
            .unwrap_or_else(|e| panic!("slow client {i}: send: {e}"));
        slow.push(stream);
    }

    // A probe from a fresh connection is answered once the slow ones are cut, not never.
    let answered = tokio::time::timeout(HEADER_READ_TIMEOUT + SLACK, async {
        loop {
            if let Ok((200, body)) = http_get(addr, "/healthz").await {
                return body;
            }
        }
    })
    .await
    .expect("/healthz answers within the header timeout of the slow clients");
    eprintln!(
        "/healthz answered {:?} after {} slow clients connected: {answered:?}",
        started.elapsed(),
        slow.len()
    );

    // Every slow client was closed by the server (end of stream, after a 408 or not).
    let mut buffer = [0u8; 1024];
    for (i, stream) in slow.iter_mut().enumerate() {
        let closed = tokio::time::timeout(HEADER_READ_TIMEOUT + SLACK, async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "slow client {i} is still open {:?} after it connected",
            started.elapsed()
        );
    }
    let all_closed = started.elapsed();
    eprintln!("every slow client was closed {all_closed:?} after the first connected");
    // The ones past the cap waited in the accept queue and then had their own 10 s.
    assert!(
        all_closed < 2 * HEADER_READ_TIMEOUT + SLACK,
        "closing took {all_closed:?}"
    );
    assert!(
        matches!(http_get(addr, "/readyz").await, Ok((200, _))),
        "the controller is still ready"
    );
}
