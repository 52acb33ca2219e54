//! Docker helpers for the integration tests: a runtime on the real daemon
//! (the test fails, never skips, when it is absent), the test images, the
//! docker CLI with a time bound, and a guard that removes containers.

use std::future::Future;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerRuntime, DockerRuntime};

/// The test engine's image (scripts/build-test-image builds it).
pub const IMAGE_1: &str = "rtmanager-test/engine:1";
/// The same engine under a second tag, for tests that change the image.
pub const IMAGE_2: &str = "rtmanager-test/engine:2";
/// The engine of [`IMAGE_1`] with a Docker HEALTHCHECK (every second,
/// unhealthy after two failures) that passes while `/tmp/www/healthz`
/// exists: `docker exec <c> rm /tmp/www/healthz` makes it unhealthy.
pub const IMAGE_HEALTH: &str = "rtmanager-test/engine:health";

/// Runs a command for at most `limit`; `None` when it could not run or was
/// killed at the deadline (a hung dockerd must fail the test, not hang it).
pub fn run_bounded(mut command: Command, limit: Duration) -> Option<Output> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().ok()?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs the docker CLI (honours DOCKER_HOST like the runtime does).
pub fn docker_cli(args: &[&str]) -> Output {
    let mut command = Command::new("docker");
    command.args(args);
    run_bounded(command, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("docker {args:?} did not finish in 30 s: is dockerd hung?"))
}

/// Builds the test images once per test binary.
pub fn ensure_test_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/build-test-image"
        );
        let output = run_bounded(Command::new(script), Duration::from_secs(300))
            .unwrap_or_else(|| panic!("{script} did not run or finish in 300 s"));
        assert!(
            output.status.success(),
            "{script} failed (is Docker running? are we root for apt-get?):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    });
}

/// A runtime on the real daemon; panics (fails the test) when it is absent.
pub async fn docker() -> DockerRuntime {
    ensure_test_images();
    let runtime = DockerRuntime::connect(None, Duration::from_secs(10))
        .await
        .expect("DOCKER_HOST must be a unix:// or tcp:// address");
    within_secs(15, "ping: is dockerd running?", runtime.ping())
        .await
        .expect("Docker must be reachable at DOCKER_HOST or /var/run/docker.sock; these tests fail rather than skip");
    runtime
}

/// Awaits `fut` or fails the test naming the likely bug.
pub async fn within_secs<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("no answer within {secs}s: {what}"))
}

/// A game id unique to this test and process (a DNS-1123 label).
pub fn game(tag: &str) -> String {
    format!("it-{tag}-{}", std::process::id())
}

/// Force-removes the named containers when dropped, whatever happened.
#[derive(Debug)]
pub struct Cleanup(Vec<String>);

impl Cleanup {
    /// Guards `names`, removing any already there (leftovers of an earlier run).
    pub fn new(names: &[&str]) -> Cleanup {
        let cleanup = Cleanup(names.iter().map(|n| n.to_string()).collect());
        cleanup.remove_all(); // leftovers of an earlier run with the same pid
        cleanup
    }

    fn remove_all(&self) {
        for name in &self.0 {
            let mut command = Command::new("docker");
            command.args(["rm", "-f", "-v", name]);
            let _ = run_bounded(command, Duration::from_secs(30));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Force-removes every container (and its anonymous volumes) of the
/// installation whose key prefix is `prefix`: what a test's controllers
/// made, whatever happened to them.
pub fn remove_installation_containers(prefix: &str) {
    let filter = format!("label=rtmanager.dev/prefix={prefix}");
    let listed = docker_cli(&["ps", "-aq", "--filter", &filter]);
    for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
        let mut command = Command::new("docker");
        command.args(["rm", "-f", "-v", id]);
        let _ = run_bounded(command, Duration::from_secs(30));
    }
}

/// Waits until the test engine in `container` has installed its signal
/// handling and listens (it logs "listening" then): a stop sent before
/// that reaches a shell with no trap yet, which dies of SIGTERM (143)
/// whatever the test asked the engine to do.
pub fn wait_engine_listening(container: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = docker_cli(&["logs", container]);
        if String::from_utf8_lossy(&logs.stdout).contains("listening") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the engine in {container} did not log \"listening\" within 20 s: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
