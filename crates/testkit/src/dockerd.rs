//! A private Docker engine for the fault tests: `dockerd` with its own
//! socket, data root, exec root and pidfile in a temporary directory, in a
//! network namespace of its own (`unshare --net`), or in one the caller
//! made ([`PrivateDockerd::start_in`], `nsenter --net`: a simulated
//! machine of [`crate::hosts`]): its docker0, addresses and rules exist
//! only there, so nothing it does to networking can reach the machine's
//! engine. (`--bridge=none` is not an option: dockerd then
//! *deletes* the host's `docker0`, which the machine's engine uses.) The
//! tests stop and restart it on purpose; the machine's engine at
//! /var/run/docker.sock is never touched.
//!
//! The test images are copied in from the machine's engine (`docker save |
//! docker -H <ours> load`): nothing is pulled. On drop the engine is
//! stopped, whatever it left mounted is unmounted and the directory is
//! deleted; only processes it started are signalled, by pid.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::docker::{IMAGE_1, IMAGE_2, ensure_test_images, run_bounded};

/// How long dockerd may take to answer after it was started.
const START_LIMIT: Duration = Duration::from_secs(60);

/// How long a graceful stop may take: dockerd stops every container first
/// (each within its stop timeout, in parallel).
const STOP_LIMIT: Duration = Duration::from_secs(45);

/// A `dockerd` of the test's own.
#[derive(Debug)]
pub struct PrivateDockerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Whether the host had the machine's engine's bridge when we started.
    host_had_docker0: bool,
    /// The network namespace it runs in (a `/proc/<pid>/ns/net` path);
    /// a new one of its own when `None`.
    netns: Option<PathBuf>,
}

/// Whether the host (our network namespace) has a `docker0` interface.
fn host_has_docker0() -> bool {
    Path::new("/sys/class/net/docker0").exists()
}

impl PrivateDockerd {
    /// Starts the engine in a network namespace of its own, waits until it
    /// answers, and loads the test images into it.
    pub async fn start() -> PrivateDockerd {
        PrivateDockerd::launch(None).await
    }

    /// [`PrivateDockerd::start`] in the existing network namespace at
    /// `netns` (a `/proc/<pid>/ns/net` path, entered with `nsenter`, which
    /// execs dockerd: the child's pid is dockerd's). The namespace must
    /// outlive the engine.
    pub async fn start_in(netns: &Path) -> PrivateDockerd {
        PrivateDockerd::launch(Some(netns.to_owned())).await
    }

    async fn launch(netns: Option<PathBuf>) -> PrivateDockerd {
        ensure_test_images();
        // Short: the socket path (and containerd's, under the exec root)
        // must fit a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("rtmd-")
            .tempdir_in("/tmp")
            .expect("a temporary directory for the private dockerd");
        // Our own (empty) configuration: the machine's daemon.json sets a
        // data root and a storage driver meant for its own engine.
        std::fs::write(dir.path().join("daemon.json"), "{}\n").expect("write daemon.json");
        let mut dockerd = PrivateDockerd {
            dir,
            child: None,
            host_had_docker0: host_has_docker0(),
            netns,
        };
        dockerd.spawn();
        dockerd.wait_answering(START_LIMIT).await;
        let load = format!(
            "set -o pipefail; docker save {IMAGE_1} {IMAGE_2} | docker -H {} load",
            dockerd.host()
        );
        let mut command = Command::new("bash");
        command.args(["-c", &load]);
        let output = run_bounded(command, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("loading the test images into the private dockerd hung"));
        assert!(
            output.status.success(),
            "loading the test images into the private dockerd failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            dockerd.log_tail()
        );
        dockerd
    }

    /// The engine's address, as `DOCKER_HOST` takes it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the private dockerd already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .expect("open the private dockerd's log");
        // unshare (nsenter) execs dockerd in a new (the given) network
        // namespace: the child's pid is dockerd's.
        let mut command = match &self.netns {
            None => {
                let mut command = Command::new("unshare");
                command.args(["--net", "dockerd"]);
                command
            }
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", netns.display()))
                    .args(["--", "dockerd"]);
                command
            }
        };
        command
            .arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("dockerd.pid"))
            // Its namespace's own docker0; no iptables or forwarding
            // changes (nor the kernel modules they load).
            .args(["--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            // Works on any filesystem, needs no kernel module.
            .args(["--storage-driver=vfs", "--log-level=warn"])
            .env_remove("DOCKER_HOST");
        self.child = Some(crate::spawn_logged(&mut command, log, &"dockerd"));
    }

    /// Waits until `docker version` answers on our socket.
    async fn wait_answering(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                panic!(
                    "the private dockerd exited ({status}) before it answered{}",
                    self.log_tail()
                );
            }
            let answer = self.cli(&["version", "--format", "{{.Server.Version}}"]);
            if answer.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the private dockerd did not answer within {limit:?}: {}{}",
                    String::from_utf8_lossy(&answer.stderr),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs the docker CLI against this engine, bounded to 30 s (a hung
    /// call reports as a failed command).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new("docker");
        command.arg("-H").arg(self.host()).args(args);
        run_bounded(command, Duration::from_secs(30)).unwrap_or_else(|| Output {
            status: failed_status(),
            stdout: Vec::new(),
            stderr: format!("docker {args:?} did not finish in 30 s").into_bytes(),
        })
    }

    /// Stops the engine gracefully (SIGTERM: it stops its containers and
    /// exits), SIGKILL if it takes longer than the stop limit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        terminate(&child);
        let deadline = Instant::now() + STOP_LIMIT;
        while !reaped(&mut child, deadline) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.reap_containerd();
    }

    /// Starts the engine again on the same directories and waits for it.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_answering(START_LIMIT).await;
    }

    /// Fails the test if the machine's engine lost its bridge while ours
    /// ran: our engine must stay inside its own network namespace.
    pub fn assert_host_network_untouched(&self) {
        assert!(
            !self.host_had_docker0 || host_has_docker0(),
            "the host's docker0 (the machine's engine's bridge) disappeared while the private \
             dockerd ran: it must not leave its network namespace"
        );
    }

    /// Whether the engine runs (started, and not stopped since).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The pid of dockerd while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The pid of the containerd this dockerd started, when it runs: read
    /// from the pid file in our exec root, and only if that process's
    /// command line names our directory (never another engine's).
    pub fn containerd_pid(&self) -> Option<u32> {
        let pid_file = self.path("exec/containerd/containerd.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline)
            .contains(&*self.dir.path().to_string_lossy())
            .then_some(pid)
    }

    /// The containerd our dockerd started normally exits with it; if it
    /// outlived it (dockerd was killed), end it: its pid file is in our
    /// exec root, and its command line names our directory.
    fn reap_containerd(&self) {
        if let Some(pid) = self.containerd_pid() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// The last lines of the engine's log, as a message suffix.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        let mut tail = format!(
            "\n--- last lines of the private dockerd's log ({}) ---\n",
            self.path("dockerd.log").display()
        );
        for line in &lines[from..] {
            let _ = writeln!(tail, "{line}");
        }
        tail
    }
}

/// Unmounts whatever is still mounted under `dir` (dockerd bind-mounts its
/// data root, and a killed dockerd leaves that behind), deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let root = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&root))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = run_bounded(
            {
                let mut command = Command::new("umount");
                command.args(["-l", &point]);
                command
            },
            Duration::from_secs(10),
        );
    }
}

#[cfg(unix)]
fn failed_status() -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(1 << 8)
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        let host = self.host();
        // A test that froze the engine (SIGSTOP) and failed before it thawed
        // it: nothing below would get an answer.
        for pid in [self.pid(), self.containerd_pid()].into_iter().flatten() {
            let _ = Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        if let Some(child) = self.child.as_mut() {
            // Remove every container first, so the shutdown does not wait
            // on stop timeouts; then a graceful stop.
            if let Some(ids) = run_bounded(
                {
                    let mut command = Command::new("docker");
                    command.arg("-H").arg(&host).args(["ps", "-aq"]);
                    command
                },
                Duration::from_secs(30),
            ) {
                let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let mut command = Command::new("docker");
                    command
                        .arg("-H")
                        .arg(&host)
                        .args(["rm", "-f", "-v"])
                        .args(&ids);
                    let _ = run_bounded(command, Duration::from_secs(60));
                }
            }
            terminate(child);
            let deadline = Instant::now() + STOP_LIMIT;
            while !reaped(child, deadline) {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.child = None;
        }
        self.reap_containerd();
        unmount_under(self.dir.path());
        // The TempDir removes the directory itself when dropped next.
    }
}

/// Asks `child` to stop gracefully (SIGTERM, by its pid).
fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// Whether `child` is gone: it exited, or `deadline` passed and it was
/// SIGKILLed and reaped.
fn reaped(child: &mut Child, deadline: Instant) -> bool {
    match child.try_wait() {
        Ok(Some(_)) => true,
        Ok(None) if Instant::now() < deadline => false,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            true
        }
    }
}
