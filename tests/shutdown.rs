//! SIGTERM always ends the controller within its drain timeout, whatever etcd does: the real
//! `rtmanager` binary against an endpoint that accepts connections and never answers (start-up
//! waits on it), and against a private etcd frozen (SIGSTOP) under an open session.
//!
//! Ignored by a bare `cargo test` (they need /usr/bin/etcd and Docker); `scripts/test` runs
//! them, one at a time.

use rtm_testkit as common;
use rtm_testkit::etcd_cluster;
use rtm_testkit::process;

use std::process::Command;
use std::time::{Duration, Instant};

use common::unique_keys;
use etcd_cluster::EtcdCluster;
use process::ControllerOptions;

/// The drain timeout the controllers run with.
const DRAIN: Duration = Duration::from_secs(2);

/// The etcd request timeout: far longer than the drain, so that an exit bounded by a request
/// (a revoke, a start-up check) would show as one.
const ETCD_TIMEOUT: &str = "30s";

/// What the binary allows itself past the drain timeout (`EXIT_MARGIN` in
/// src/bin/rtmanager.rs), and slack for a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);
const SLACK: Duration = Duration::from_secs(3);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -{name} {pid} failed");
}

#[tokio::test]
#[ignore = "needs Docker: run scripts/test"]
async fn sigterm_while_start_up_waits_on_a_silent_etcd_exits_at_once() {
    let _serial = SERIAL.lock().await;
    // Accepts connections (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let endpoint = format!(
        "http://{}",
        silent.local_addr().expect("a bound socket has an address")
    );
    let keys = unique_keys("shutdown-silent");
    let mut controller = ControllerOptions::new(&keys, "silent")
        .env("RTM_ETCD_ENDPOINTS", &endpoint)
        .env("RTM_ETCD_TIMEOUT", ETCD_TIMEOUT)
        .env("RTM_DRAIN_TIMEOUT", "2s")
        .spawn();
    // Start-up is waiting for etcd's first answer now (it checks the settings first).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let asked = Instant::now();
    controller.terminate();
    let status = controller.wait_exit(DRAIN + MARGIN + SLACK).await;
    let took = asked.elapsed();
    eprintln!("exited {took:?} after SIGTERM ({status})");
    assert!(
        status.success(),
        "a stop asked for is a clean exit: {status}"
    );
    assert!(
        took < DRAIN + SLACK,
        "SIGTERM during start-up took {took:?}: start-up is not cancelled by the signal"
    );
}

#[tokio::test]
#[ignore = "needs /usr/bin/etcd and Docker: run scripts/test"]
async fn sigterm_with_the_session_open_and_etcd_frozen_exits_within_the_drain_timeout() {
    let _serial = SERIAL.lock().await;
    let mut etcd = EtcdCluster::start(1).await;
    let keys = unique_keys("shutdown-frozen");
    let mut controller = ControllerOptions::new(&keys, "frozen")
        .env("RTM_ETCD_ENDPOINTS", &etcd.endpoints().join(","))
        .env("RTM_ETCD_TIMEOUT", ETCD_TIMEOUT)
        .env("RTM_DRAIN_TIMEOUT", "2s")
        .start()
        .await;
    let pid = etcd.pid(0).expect("the member runs");
    signal(pid, "STOP");
    let asked = Instant::now();
    controller.terminate();
    let status = controller.wait_exit(DRAIN + MARGIN + SLACK + SLACK).await;
    let took = asked.elapsed();
    signal(pid, "CONT");
    eprintln!("exited {took:?} after SIGTERM ({status})");
    assert!(
        took < DRAIN + MARGIN + SLACK,
        "SIGTERM with etcd frozen took {took:?}, more than the drain timeout {DRAIN:?} and the \
         exit margin {MARGIN:?}"
    );
    assert!(
        controller.log_text().contains("signal received"),
        "{}",
        controller.log_tail()
    );
    etcd.kill(0);
}
