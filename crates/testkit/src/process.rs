//! The real `rtmanager` binary as a child process of a test: started with
//! the test's own prefix and short timings, ready once `/readyz` answers
//! 200, stopped with SIGTERM (a graceful stop) or SIGKILL (a crash), and
//! killed on drop whatever happened. Its log goes to a file whose tail is
//! printed when the test fails, so a failure shows what the controller saw.
//!
//! Also here: a bounded poll (`eventually`) whose timeout names what it
//! waited for and what it saw last, a minimal HTTP GET (the crate has no
//! HTTP client), a reader of Prometheus text, and a guard that wipes the
//! test's etcd prefix even when the test panics.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerInfo, ContainerRuntime, DockerRuntime};
use rtm_core::model::{ConditionStatus, GameRuntimeStatus};
use rtm_core::records::history::HistoryEntry;
use rtm_core::store::Keys;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::etcd_endpoints;

/// The controller binary cargo built for this test run.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| product_binary("rtmanager"))
}

/// One of the product's binaries (`rtmanager`, `rtctl`) of this build. Cargo
/// builds them into `target/<profile>/` before it runs the product's
/// integration tests, whose own binaries sit in `target/<profile>/deps/`.
fn product_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test binary sits in target/<profile>/deps/");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: the product's binaries are built by `cargo test` of the rtmanager package (scripts/test does)",
        path.display()
    );
    path
}

/// How often `eventually` looks again: fast enough that a test waits little
/// past the moment its condition holds, slow enough not to load etcd.
const POLL: Duration = Duration::from_millis(100);

/// Bound on one probe of `eventually`: every etcd and Docker call below is
/// bounded by its client (5 s, 10 s); a probe taking longer is hung.
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// Lines of the controller's log shown when a test fails.
const LOG_TAIL_LINES: usize = 60;

/// Polls `probe` until it returns `Ok`, at most `limit`; then fails the test
/// naming `what` and the last thing `probe` reported (its `Err`). Never a
/// blind sleep: the wait ends as soon as the condition holds.
pub async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout(PROBE_LIMIT, probe()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen,
            Err(_) => format!("a probe hung for {PROBE_LIMIT:?}"),
        };
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A loopback address no process listens on right now (the OS picks the
/// port; the short window before the controller binds it is acceptable).
pub fn free_loopback_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .local_addr()
        .expect("a bound socket has an address")
}

/// How to start one controller: the environment it reads, with short timings.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    name: String,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    /// The network namespace to run it in (`nsenter --net=<this>`); the test's when `None`.
    netns: Option<PathBuf>,
    /// Where `/metrics` is served; a free loopback port when `None`.
    metrics_addr: Option<SocketAddr>,
    /// The directory its log goes to; a temporary one of its own when `None`.
    log_dir: Option<PathBuf>,
}

impl ControllerOptions {
    /// A controller on the test's prefix, with the short settings tests use:
    /// lease TTL 5 s (a crashed controller's games free up fast), resync
    /// 5 s, GC grace 3 s. `name` tells the controllers of one test apart in
    /// failure messages.
    pub fn new(keys: &Keys, name: &str) -> ControllerOptions {
        let env = [
            ("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(",")),
            ("RTM_PREFIX", keys.prefix().to_owned()),
            ("RTM_LEASE_TTL", "5s".to_owned()),
            ("RTM_RESYNC", "5s".to_owned()),
            ("RTM_GC_GRACE", "3s".to_owned()),
            ("RTM_LOG_FORMAT", "text".to_owned()),
            // One network for every test installation, instead of one per
            // (unique) test prefix that nothing would remove: Docker runs
            // out of address pools after about thirty.
            ("RTM_NETWORK", "rtm-test-games".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        ControllerOptions {
            name: name.to_owned(),
            env,
            args: Vec::new(),
            netns: None,
            metrics_addr: None,
            log_dir: None,
        }
    }

    /// Sets (or overrides) one environment variable of the controller.
    pub fn env(mut self, var: &str, value: &str) -> ControllerOptions {
        self.env.insert(var.to_owned(), value.to_owned());
        self
    }

    /// Appends command-line arguments (flags override the environment).
    pub fn args(mut self, args: &[&str]) -> ControllerOptions {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs the controller in the network namespace at `netns` (a
    /// `/proc/<pid>/ns/net` path), through `nsenter`, which execs it: the
    /// child's pid is the controller's. Its metrics address must then be
    /// one the test reaches in that namespace ([`ControllerOptions::metrics_addr`]).
    pub fn netns(mut self, netns: &Path) -> ControllerOptions {
        self.netns = Some(netns.to_owned());
        self
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `addr` instead of a
    /// free loopback port.
    pub fn metrics_addr(mut self, addr: SocketAddr) -> ControllerOptions {
        self.metrics_addr = Some(addr);
        self
    }

    /// Writes the log to `<dir>/<name>.log` (appended to, so a restarted
    /// controller continues it) instead of a temporary directory of its own.
    pub fn log_dir(mut self, dir: &Path) -> ControllerOptions {
        self.log_dir = Some(dir.to_owned());
        self
    }

    /// Starts the controller and waits until `/readyz` answers 200.
    pub async fn start(self) -> ControllerProcess {
        let mut process = self.spawn();
        process.wait_ready(Duration::from_secs(30)).await;
        process
    }

    /// Starts the controller without waiting for it to be ready.
    pub fn spawn(self) -> ControllerProcess {
        let metrics_addr = self.metrics_addr.unwrap_or_else(free_loopback_addr);
        let (log_dir, own_log_dir) = match &self.log_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let own =
                    tempfile::tempdir().expect("a temporary directory for the controller log");
                (own.path().to_owned(), Some(own))
            }
        };
        let log_path = log_dir.join(format!("{}.log", self.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create the controller log file");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns.display()))
                    .arg("--")
                    .arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        command.args(&self.args);
        crate::without_rtm_env(&mut command);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info,rtmanager=debug");
        }
        command
            .envs(&self.env)
            .env("RTM_METRICS_ADDR", metrics_addr.to_string());
        let child = crate::spawn_logged(&mut command, log, &binary().display());
        ControllerProcess {
            name: self.name,
            child,
            metrics_addr,
            log_path,
            _log_dir: own_log_dir,
            exit: None,
            tail_shown: Cell::new(false),
            signalled: Cell::new(false),
        }
    }
}

/// A running `rtmanager`; SIGKILLed on drop unless it already exited.
#[derive(Debug)]
pub struct ControllerProcess {
    name: String,
    child: Child,
    metrics_addr: SocketAddr,
    log_path: PathBuf,
    _log_dir: Option<tempfile::TempDir>,
    exit: Option<ExitStatus>,
    /// Whether a failure message already carried the log tail (drop then
    /// does not print it again).
    tail_shown: Cell<bool>,
    /// Whether this test sent the controller a signal (see `log_tail`).
    signalled: Cell<bool>,
}

impl ControllerProcess {
    /// The name it was started under (what failure messages call it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Waits until `/readyz` answers 200; fails the test if the process
    /// exits first or `limit` passes.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "controller {} exited ({status}) before /readyz answered 200{}",
                    self.name,
                    self.log_tail()
                );
            }
            let seen = match self.get("/readyz").await {
                Ok((200, _)) => return,
                Ok((code, body)) => format!("{code} {}", body.trim()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "controller {} was not ready within {limit:?} (last /readyz: {seen}){}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// One GET on the controller's metrics address.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.metrics_addr, path).await
    }

    /// The `/metrics` text; fails the test unless it answers 200.
    pub async fn metrics(&self) -> String {
        match self.get("/metrics").await {
            Ok((200, body)) => body,
            other => panic!(
                "controller {}: GET /metrics answered {other:?}{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// The sum of every sample of `name` (all label sets) on `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        metric_total(&self.metrics().await, name)
    }

    /// Sends SIGTERM: the graceful stop (drain, release leases, exit 0).
    /// Not to a process already reaped: its pid may belong to another
    /// process by now (pid_max is 32768 on many machines).
    pub fn terminate(&mut self) {
        if let Some(status) = self.try_exit() {
            panic!(
                "controller {} had already exited ({status}) when the test wanted to stop it{}",
                self.name,
                self.log_tail()
            );
        }
        self.signalled.set(true);
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL and reap: a crash, no drain, leases left to expire.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap the killed controller");
        self.exit = Some(status);
        status
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "controller {} did not exit within {limit:?} of being asked to{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        self.try_exit().is_some()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// The controller's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the controller's log, as a message suffix.
    pub fn log_tail(&self) -> String {
        self.tail_shown.set(true);
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(LOG_TAIL_LINES);
        let mut tail = format!(
            "\n--- last {} lines of controller {}'s log (pid {}, {}) ---\n",
            lines.len() - from,
            self.name,
            self.child.id(),
            self.log_path.display()
        );
        for line in &lines[from..] {
            let _ = writeln!(tail, "{line}");
        }
        // The binary logs "signal received" on SIGTERM/SIGINT. A signal the
        // test did not send came from another process on this machine
        // (someone's `pkill rtmanager`?): say so rather than let it pass
        // for a controller bug.
        if !self.signalled.get() && text.contains("signal received") {
            let _ = writeln!(
                tail,
                "NOTE: controller {} (pid {}) logged a signal this test never sent: another \
                 process on this machine signalled it; the failure may not be rtmanager's",
                self.name,
                self.child.id()
            );
        }
        tail
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && !self.tail_shown.get() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// A minimal HTTP/1.1 GET (`Connection: close`), bounded to 5 s: the
/// status code and the body (chunked bodies decoded).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send to {addr}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read from {addr}: {e}"))?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path} on {addr}: no answer in 5 s")))
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let code = head
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let chunked = head.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or("a chunk without its size line")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or("a chunk shorter than its size")?;
        out.push_str(chunk);
        body = rest.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

/// The sum of every sample of metric `name` in Prometheus text (0 when
/// absent): `name 3` and `name{a="b"} 3` count, `name_bucket{...}` does not.
fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            line.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

/// Every container Docker has (in any state) labelled as `game`'s.
pub async fn containers_of(
    runtime: &DockerRuntime,
    game: &str,
) -> Result<Vec<ContainerInfo>, String> {
    let all = runtime
        .list_managed()
        .await
        .map_err(|e| format!("docker list: {e}"))?;
    Ok(all.into_iter().filter(|c| c.game() == Some(game)).collect())
}

/// A one-line picture of containers for failure messages.
pub fn describe(containers: &[ContainerInfo]) -> String {
    let parts: Vec<String> = containers
        .iter()
        .map(|c| format!("{} {} {} {}", c.name, short(&c.id), c.state, c.image))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Wipes the test's etcd prefix when dropped, panics included (a fresh
/// thread with its own runtime, since drop cannot await).
#[derive(Debug)]
pub struct WipeOnDrop(pub Keys);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        let keys = self.0.clone();
        let wiper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let wipe = async {
                    let store = crate::etcd().await;
                    crate::wipe(store.as_ref(), &keys).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(15), wipe).await;
            });
        });
        let _ = wiper.join();
    }
}

/// The status of a record's `Ready` condition.
pub fn ready(status: &GameRuntimeStatus) -> Option<ConditionStatus> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status)
}

/// A one-line status for failure messages.
pub fn summary(status: &GameRuntimeStatus) -> String {
    format!(
        "{{phase {:?}, observedGeneration {:?}, container {:?}, Ready {:?}, restartCount {}, \
         observedRestartToken {:?}, message {:?}, lastOperation {:?}}}",
        status.phase,
        status.observed_generation,
        status.container_id.as_deref().map(short),
        ready(status),
        status.restart_count,
        status.observed_restart_token,
        status.message,
        status
            .last_operation
            .as_ref()
            .map(|op| (op.op_kind, op.outcome, op.error_code.clone())),
    )
}

/// A history for failure messages, one line per entry (newest first).
pub fn timeline(entries: &[HistoryEntry]) -> String {
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "#{} {:?} {:?} {:?} ref={} code={:?} holder={} fence={:?} msg={:?}",
                e.seq,
                e.op_kind,
                e.op_source,
                e.outcome,
                e.source_ref,
                e.error_code,
                e.holder,
                e.fence_revision,
                e.error_message.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.join("\n  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_total_sums_every_label_set_and_nothing_else() {
        let text = "# HELP x_total x\n# TYPE x_total counter\nx_total{result=\"ok\"} 3\n\
                    x_total{result=\"error\"} 2\nx_total_other 7\nx_total 1\n";
        assert_eq!(metric_total(text, "x_total"), 6.0);
        assert_eq!(metric_total(text, "absent"), 0.0);
    }

    #[test]
    fn chunked_responses_are_decoded() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), (200, "hello world".into()));
        let plain = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 3\r\n\r\nno\n";
        assert_eq!(parse_response(plain).unwrap(), (503, "no\n".into()));
    }
}
