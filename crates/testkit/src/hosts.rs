//! Simulated machines for the multi-host tests: each [`Host`] is a network
//! namespace of its own, joined to the test's (root) namespace by a veth
//! pair, with a private dockerd ([`PrivateDockerd::start_in`]) and, when
//! asked, the controller binary running inside it. What a test does to a
//! machine: kill or restart its controller, freeze it (a powered-off
//! machine: its controller SIGSTOPped, every container paused, then dockerd
//! and its containerd SIGSTOPped), cut its link (etcd unreachable, the
//! engine and the controller alive).
//!
//! Addresses: a [`HostNetwork`] owns one `10.77.<slot>.0/24` (a slot no
//! other test process holds, recorded under `/tmp/rtm-testkit-hosts/`, and
//! no address or route of the machine uses): host `i` is
//! `10.77.<slot>.<4i+2>/30` inside, `10.77.<slot>.<4i+1>` on the root side
//! (its default gateway); `10.77.<slot>.254` is the service address, on a
//! veth pair of its own in the root namespace that no host's link carries,
//! so etcd stays reachable from every other host when one link is cut
//! ([`crate::etcd_cluster::EtcdCluster::start_with_address`]). The
//! controller reaches its engine over the unix socket, which works across
//! network namespaces.
//!
//! The [`Monitor`] polls every host's engine all the time and records, per
//! game (label `rtmanager.dev/game`), which hosts had a running, unpaused
//! container of it: [`Monitor::assert_never_two`]. Each engine is listed
//! on its own task every ~100 ms, and each new answer is judged with the
//! other engines' last answers, so answers up to about one period apart
//! meet: a twin living less than that may go unseen, and a move from one
//! host to another completing within one period would be reported as an
//! overlap (a controller's move takes far longer: a stop, an etcd write,
//! a create and a start). A frozen engine's last answer stands.
//!
//! Cleanup, on drop, panics included: the controller is killed, a frozen
//! engine thawed, the engine stopped (its containers removed, its mounts
//! unmounted), the namespace's holder process killed (by pid), the links
//! deleted. The machine's own engine (/var/run/docker.sock) and its docker0
//! are never touched. A test process killed outright leaves the holder to
//! exit by itself (it reads its stdin from the test), and a later run
//! takes the stale slot over.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rtm_controller::runtime::{ContainerRuntime, ContainerState, DockerRuntime};

use crate::docker::run_bounded;
use crate::dockerd::PrivateDockerd;
use crate::process::{ControllerOptions, ControllerProcess};

/// Where the slots' claims live: one file per slot, holding the pid of
/// the test process that holds it.
const SLOT_DIR: &str = "/tmp/rtm-testkit-hosts";

/// The controller's `/metrics` port inside a host (each namespace has its
/// own addresses, so every host uses the same).
pub const CONTROLLER_METRICS_PORT: u16 = 9464;

/// How often the monitor lists each engine.
const MONITOR_POLL: Duration = Duration::from_millis(100);

/// Bound on one listing of an engine: a frozen engine answers nothing, and
/// its last answer then stands.
const MONITOR_LIST_LIMIT: Duration = Duration::from_secs(2);

/// Overlaps kept verbatim (the count is always exact).
const MAX_OVERLAPS: usize = 50;

/// Runs `ip` with `args` (in the namespace at `netns`, when given), bounded
/// to 10 s; fails the test unless it succeeds.
fn ip(netns: Option<&Path>, args: &[&str]) {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={}", netns.display()))
                .args(["--", "ip"]);
            command
        }
        None => Command::new("ip"),
    };
    command.args(args);
    let output = run_bounded(command, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("ip {args:?} did not run or finish in 10 s"));
    assert!(
        output.status.success(),
        "ip {args:?}{} failed: {}",
        netns
            .map(|n| format!(" (in {})", n.display()))
            .unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// `ip` with `args` in the root namespace, its failure ignored (cleanup).
fn ip_quiet(args: &[&str]) {
    let mut command = Command::new("ip");
    command.args(args);
    let _ = run_bounded(command, Duration::from_secs(10));
}

/// Sends `signal` (`-STOP`, `-CONT`, `-KILL`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The name of the root side of the service pair of slot `slot`.
fn service_link(slot: u8) -> String {
    format!("rtms{slot}")
}

/// The name of the root side of host `index`'s link in slot `slot`.
fn host_link(slot: u8, index: u8) -> String {
    format!("rtmh{slot}x{index}")
}

/// Whether any address or route of the machine is in `10.77.<slot>.0/24`.
fn subnet_in_use(slot: u8) -> bool {
    let needle = format!("10.77.{slot}.");
    [
        vec!["-o", "-4", "addr", "show"],
        vec!["-4", "route", "show", "table", "all"],
    ]
    .iter()
    .any(|args| {
        let mut command = Command::new("ip");
        command.args(args);
        run_bounded(command, Duration::from_secs(10))
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(&needle))
            .unwrap_or(true)
    })
}

/// One `10.77.<slot>.0/24` held by this test process.
#[derive(Debug)]
struct Slot {
    number: u8,
    claim: PathBuf,
    service_link: String,
}

impl Slot {
    /// Claims the first free slot: no live process's claim, no address or
    /// route of the machine in it. A claim whose process is gone is stale:
    /// its service link (if any) is deleted and the slot taken over.
    fn claim() -> Slot {
        std::fs::create_dir_all(SLOT_DIR).expect("create the slot claims' directory");
        let me = std::process::id();
        for number in 1..=250u8 {
            let claim = Path::new(SLOT_DIR).join(number.to_string());
            let created = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim);
            if created.is_err() {
                let holder = std::fs::read_to_string(&claim)
                    .ok()
                    .and_then(|text| text.trim().parse::<u32>().ok());
                let alive = holder.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if alive || holder.is_none() && claim_is_fresh(&claim) {
                    continue;
                }
                // Stale: its process is gone. Take it over, unless another
                // taker's create_new wins the race.
                ip_quiet(&["link", "del", &service_link(number)]);
                let _ = std::fs::remove_file(&claim);
                let retaken = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&claim);
                if retaken.is_err() {
                    continue;
                }
            }
            std::fs::write(&claim, me.to_string()).expect("write the slot claim");
            if subnet_in_use(number) {
                // Someone else's network (not a test of ours): skip it.
                let _ = std::fs::remove_file(&claim);
                continue;
            }
            return Slot {
                number,
                claim,
                service_link: service_link(number),
            };
        }
        panic!("no free 10.77.<slot>.0/24 for the simulated hosts (claims in {SLOT_DIR})");
    }

    fn address(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.number, last)
    }
}

/// A claim file created a moment ago has no pid in it yet: not stale.
fn claim_is_fresh(claim: &Path) -> bool {
    std::fs::metadata(claim)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(5))
}

impl Drop for Slot {
    fn drop(&mut self) {
        if link_exists(&self.service_link) {
            ip_quiet(&["link", "del", &self.service_link]);
        }
        let _ = std::fs::remove_file(&self.claim);
    }
}

/// The private network of one test's hosts: its `10.77.<slot>.0/24` and
/// the service address every host reaches through its own link.
#[derive(Debug, Clone)]
pub struct HostNetwork {
    slot: Arc<Slot>,
}

impl HostNetwork {
    /// Claims a free slot and brings the service address up.
    pub fn create() -> HostNetwork {
        let slot = Slot::claim();
        let peer = format!("{}p", slot.service_link);
        ip(
            None,
            &[
                "link",
                "add",
                &slot.service_link,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        let network = HostNetwork {
            slot: Arc::new(slot),
        };
        let service = format!("{}/32", network.service_address());
        ip(
            None,
            &["addr", "add", &service, "dev", &network.slot.service_link],
        );
        ip(None, &["link", "set", &peer, "up"]);
        ip(None, &["link", "set", &network.slot.service_link, "up"]);
        network
    }

    /// The address services for every host listen on (etcd):
    /// `10.77.<slot>.254`, in the root namespace, on no host's link.
    pub fn service_address(&self) -> IpAddr {
        IpAddr::V4(self.slot.address(254))
    }

    /// Host `index`'s address inside its namespace.
    pub fn host_address(&self, index: u8) -> Ipv4Addr {
        self.slot.address(4 * index + 2)
    }

    /// The root side of host `index`'s link (its default gateway).
    pub fn gateway_address(&self, index: u8) -> Ipv4Addr {
        self.slot.address(4 * index + 1)
    }
}

/// What a [`Monitor`] tells a host of its listings: a freeze waits for a
/// listing made after the pause, so the engine's last answer (which the
/// monitor keeps while the engine is frozen) shows its containers paused.
#[derive(Debug, Default)]
struct Watch {
    /// Monitors watching the host now.
    monitors: AtomicUsize,
    /// When the newest successful listing began.
    last_listing: Mutex<Option<Instant>>,
}

impl Watch {
    fn listed(&self, began: Instant) {
        let mut last = self.last_listing.lock().expect("watch state");
        if last.is_none_or(|t| t < began) {
            *last = Some(began);
        }
    }

    fn listed_since(&self, since: Instant) -> bool {
        self.last_listing
            .lock()
            .expect("watch state")
            .is_some_and(|t| t >= since)
    }
}

/// One simulated machine: a network namespace, its link, its engine, and
/// the controller when started.
#[derive(Debug)]
pub struct Host {
    name: String,
    index: u8,
    _network: HostNetwork,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    link: String,
    /// `unshare --net cat`: its namespace lives while it does; it reads
    /// its stdin from us, so it exits when the test process does.
    holder: Child,
    _holder_stdin: Option<ChildStdin>,
    netns: PathBuf,
    dockerd: Option<PrivateDockerd>,
    controller: Option<ControllerProcess>,
    controller_options: Option<ControllerOptions>,
    /// While the engine is frozen: the containers `freeze_engine` paused.
    frozen: Option<Vec<String>>,
    /// Whether the freeze SIGSTOPped the controller.
    controller_frozen: bool,
    link_cut: bool,
    watch: Arc<Watch>,
    dir: tempfile::TempDir,
}

impl Host {
    /// Starts host `index` (0..62) of `network` called `name`: its
    /// namespace and link, then its engine (with the test images loaded).
    pub async fn start(network: &HostNetwork, index: u8, name: &str) -> Host {
        assert!(index < 62, "host index {index} outside 0..62");
        let dir = tempfile::Builder::new()
            .prefix(&format!("rtmh-{name}-"))
            .tempdir_in("/tmp")
            .expect("a temporary directory for the host");
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unshare --net for host {name}: {e}"));
        let holder_stdin = holder.stdin.take();
        let netns = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let mut host = Host {
            name: name.to_owned(),
            index,
            _network: network.clone(),
            address: network.host_address(index),
            gateway: network.gateway_address(index),
            link: host_link(network.slot.number, index),
            holder,
            _holder_stdin: holder_stdin,
            netns,
            dockerd: None,
            controller: None,
            controller_options: None,
            frozen: None,
            controller_frozen: false,
            link_cut: false,
            watch: Arc::default(),
            dir,
        };
        host.wait_namespace().await;
        host.wire();
        host.dockerd = Some(PrivateDockerd::start_in(&host.netns).await);
        host
    }

    /// Waits until the holder runs in a namespace other than ours
    /// (`unshare` execs `cat` once it made it).
    async fn wait_namespace(&mut self) {
        let ours = std::fs::read_link("/proc/self/ns/net").expect("our network namespace");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.holder.try_wait() {
                panic!("unshare --net for host {} exited: {status}", self.name);
            }
            if std::fs::read_link(&self.netns).is_ok_and(|ns| ns != ours) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "host {}: no network namespace of its own after 10 s",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The link (its inner end is `eth0`), addresses and default route.
    fn wire(&self) {
        let pid = self.holder.id().to_string();
        ip(
            None,
            &[
                "link", "add", &self.link, "type", "veth", "peer", "name", "eth0", "netns", &pid,
            ],
        );
        let gateway = format!("{}/30", self.gateway);
        ip(None, &["addr", "add", &gateway, "dev", &self.link]);
        ip(None, &["link", "set", &self.link, "up"]);
        let inside = Some(self.netns.as_path());
        let address = format!("{}/30", self.address);
        ip(inside, &["link", "set", "lo", "up"]);
        ip(inside, &["addr", "add", &address, "dev", "eth0"]);
        ip(inside, &["link", "set", "eth0", "up"]);
        ip(
            inside,
            &["route", "add", "default", "via", &self.gateway.to_string()],
        );
    }

    /// Its name (the controller's node name, by default).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its index in the network.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Its address inside its namespace (what `--advertise-address` names).
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The root side of its link.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Its network namespace, as `nsenter --net=` takes it.
    pub fn netns(&self) -> &Path {
        &self.netns
    }

    /// Its temporary directory (the controller's log, the logs of what
    /// [`Host::spawn`] started).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its engine.
    pub fn dockerd(&self) -> &PrivateDockerd {
        self.dockerd
            .as_ref()
            .expect("the host's engine exists until drop")
    }

    /// Its engine's address, as `DOCKER_HOST` takes it.
    pub fn docker_host(&self) -> String {
        self.dockerd().host()
    }

    /// The docker CLI against its engine (bounded to 30 s).
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        self.dockerd().cli(args)
    }

    /// A command that runs `program` inside the host's namespace
    /// (`nsenter --net=<ns> -- program`; nsenter execs it, so the child's
    /// pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(program);
        command
    }

    /// Starts `command` (from [`Host::command`]) with its output appended
    /// to `<dir>/<log_name>.log`. The caller owns the child.
    pub fn spawn(&self, log_name: &str, command: &mut Command) -> Child {
        let path = self.dir().join(format!("{log_name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        crate::spawn_logged(command, log, &format!("{log_name} on host {}", self.name))
    }

    /// Starts the controller inside the host and waits until `/readyz`
    /// answers: `options` with the host's settings on top (its namespace,
    /// `DOCKER_HOST` = its engine, `RTM_NODE_NAME` = its name,
    /// `RTM_ADVERTISE_ADDRESS` = its address, `/metrics` on its address at
    /// [`CONTROLLER_METRICS_PORT`], the log in its directory). Flags in
    /// `options` override those variables.
    pub async fn start_controller(&mut self, options: ControllerOptions) -> &mut ControllerProcess {
        assert!(
            self.controller.as_mut().is_none_or(|c| c.has_exited()),
            "host {}: a controller already runs",
            self.name
        );
        let options = options
            .netns(&self.netns)
            .metrics_addr(SocketAddr::new(
                IpAddr::V4(self.address),
                CONTROLLER_METRICS_PORT,
            ))
            .log_dir(self.dir.path())
            .env("DOCKER_HOST", &self.docker_host())
            .env("RTM_NODE_NAME", &self.name)
            .env("RTM_ADVERTISE_ADDRESS", &self.address.to_string());
        self.controller_options = Some(options.clone());
        self.controller = Some(options.start().await);
        self.controller.as_mut().expect("just started")
    }

    /// The controller (started or killed); fails the test if none was started.
    pub fn controller(&self) -> &ControllerProcess {
        self.controller
            .as_ref()
            .unwrap_or_else(|| panic!("host {}: no controller was started", self.name))
    }

    /// [`Host::controller`], mutable (to signal it, wait for its exit).
    pub fn controller_mut(&mut self) -> &mut ControllerProcess {
        let name = self.name.clone();
        self.controller
            .as_mut()
            .unwrap_or_else(|| panic!("host {name}: no controller was started"))
    }

    /// SIGKILLs the controller (a crash: no drain, its lease left to
    /// expire) and reaps it.
    pub fn kill_controller(&mut self) -> ExitStatus {
        self.controller_mut().kill()
    }

    /// Starts the controller again with the options it was last started
    /// with (killing it first if it still runs) and waits until it is
    /// ready; its log continues in the same file.
    pub async fn restart_controller(&mut self) -> &mut ControllerProcess {
        let options = self
            .controller_options
            .clone()
            .unwrap_or_else(|| panic!("host {}: no controller was started", self.name));
        if let Some(controller) = self.controller.as_mut()
            && !controller.has_exited()
        {
            controller.kill();
        }
        self.controller = Some(options.start().await);
        self.controller.as_mut().expect("just started")
    }

    /// Powers the machine off, as far as anyone can tell: SIGSTOPs its
    /// controller if one runs (else it would unpause what comes next),
    /// pauses every running container (so they count as not running),
    /// waits until every [`Monitor`] watching the host has listed the
    /// engine since (its last answer, kept while the engine is frozen, then
    /// shows them paused), checks nothing runs, then SIGSTOPs dockerd and
    /// its containerd: the engine answers nothing.
    pub async fn freeze_engine(&mut self) {
        assert!(
            self.frozen.is_none(),
            "host {}: the engine is already frozen",
            self.name
        );
        if let Some(controller) = self.controller.as_mut()
            && !controller.has_exited()
        {
            signal(controller.pid(), "-STOP");
            self.controller_frozen = true;
        }
        let listed = self.docker(&["ps", "-q", "--filter", "status=running"]);
        assert!(
            listed.status.success(),
            "host {}: docker ps before the freeze failed: {}",
            self.name,
            String::from_utf8_lossy(&listed.stderr)
        );
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["pause"];
            args.extend(ids.iter().map(String::as_str));
            let paused = self.docker(&args);
            assert!(
                paused.status.success(),
                "host {}: docker pause {ids:?} failed: {}",
                self.name,
                String::from_utf8_lossy(&paused.stderr)
            );
        }
        let paused_at = Instant::now();
        if self.watch.monitors.load(Ordering::SeqCst) > 0 {
            let deadline = paused_at + Duration::from_secs(10);
            while !self.watch.listed_since(paused_at) {
                assert!(
                    Instant::now() < deadline,
                    "host {}: the monitor did not list the engine within 10 s of the pause",
                    self.name
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let still = self.docker(&["ps", "-q", "--filter", "status=running"]);
        assert!(
            still.status.success() && still.stdout.iter().all(u8::is_ascii_whitespace),
            "host {}: containers run after the pause: {}{}",
            self.name,
            String::from_utf8_lossy(&still.stdout).trim(),
            String::from_utf8_lossy(&still.stderr).trim()
        );
        let dockerd = self.dockerd();
        let pids = [dockerd.pid(), dockerd.containerd_pid()];
        for pid in pids.into_iter().flatten() {
            signal(pid, "-STOP");
        }
        self.frozen = Some(ids);
    }

    /// Undoes [`Host::freeze_engine`]: SIGCONT to containerd and dockerd,
    /// waits until the engine answers, unpauses what the freeze paused
    /// (what is gone or no longer paused meanwhile is skipped), then
    /// SIGCONT to the controller it stopped (unless it was killed since).
    pub async fn thaw_engine(&mut self) {
        let ids = self
            .frozen
            .take()
            .unwrap_or_else(|| panic!("host {}: the engine is not frozen", self.name));
        let dockerd = self.dockerd();
        for pid in [dockerd.containerd_pid(), dockerd.pid()]
            .into_iter()
            .flatten()
        {
            signal(pid, "-CONT");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.docker(&["version", "--format", "{{.Server.Version}}"]);
            if answer.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "host {}: the thawed engine did not answer within 30 s: {}{}",
                self.name,
                String::from_utf8_lossy(&answer.stderr),
                self.dockerd().log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for id in &ids {
            let _ = self.docker(&["unpause", id]);
        }
        if std::mem::take(&mut self.controller_frozen)
            && let Some(controller) = self.controller.as_mut()
            && !controller.has_exited()
        {
            signal(controller.pid(), "-CONT");
        }
    }

    /// Whether the engine is frozen now.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// Takes the root side of the host's link down: nothing outside the
    /// host (etcd, the test) reaches it or is reached from it; its engine
    /// and controller run on.
    pub fn cut_link(&mut self) {
        ip(None, &["link", "set", &self.link, "down"]);
        self.link_cut = true;
    }

    /// Brings the link back up (its routes come back with it).
    pub fn restore_link(&mut self) {
        ip(None, &["link", "set", &self.link, "up"]);
        self.link_cut = false;
    }

    /// Whether the link is cut now.
    pub fn is_link_cut(&self) -> bool {
        self.link_cut
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The controller first: it must not see its engine go away.
        if let Some(mut controller) = self.controller.take()
            && !controller.has_exited()
        {
            controller.kill();
        }
        // Thaws it if frozen (SIGCONT), removes its containers (paused ones
        // too), stops it, unmounts what it left.
        self.frozen = None;
        drop(self.dockerd.take());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        if link_exists(&self.link) {
            ip_quiet(&["link", "del", &self.link]);
        }
    }
}

// ---------------------------------------------------------------------------
// The monitor.

/// One game seen running on two hosts or more at one sample.
#[derive(Debug, Clone)]
pub struct Overlap {
    /// The game.
    pub game: String,
    /// Each host that had it running, with when that host's listing answered.
    pub hosts: Vec<(String, SystemTime)>,
    /// When the sample that showed it was taken (the newest listing in it).
    pub at: SystemTime,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(host, at)| format!("{host} (listed {})", humantime::format_rfc3339_millis(*at)))
            .collect();
        write!(
            f,
            "game {} running on {} at {}",
            self.game,
            hosts.join(" and "),
            humantime::format_rfc3339_millis(self.at)
        )
    }
}

/// The last answer of one engine.
#[derive(Debug, Clone, Default)]
struct View {
    /// When it answered; `None` before its first answer.
    at: Option<SystemTime>,
    /// The games with a running, unpaused container in it.
    running: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct MonitorState {
    views: BTreeMap<String, View>,
    /// Listings answered, per host.
    samples: BTreeMap<String, u64>,
    /// Listings that failed or timed out, per host, and the last error.
    failures: BTreeMap<String, (u64, String)>,
    /// Every host each game was ever seen running on.
    seen: BTreeMap<String, BTreeSet<String>>,
    /// The hosts of each game's current overlap (one record per overlap
    /// episode, not per sample).
    overlapping: BTreeMap<String, BTreeSet<String>>,
    overlaps: Vec<Overlap>,
    overlap_count: usize,
    /// Samples in which some game ran on two hosts.
    overlap_samples: u64,
}

impl MonitorState {
    /// Takes host `host`'s new answer and judges the sample it makes with
    /// every other host's last answer (a frozen engine's last answer
    /// stands).
    fn record(&mut self, host: &str, at: SystemTime, running: BTreeSet<String>) {
        for game in &running {
            self.seen
                .entry(game.clone())
                .or_default()
                .insert(host.to_owned());
        }
        *self.samples.entry(host.to_owned()).or_default() += 1;
        self.views.insert(
            host.to_owned(),
            View {
                at: Some(at),
                running,
            },
        );
        let mut hosts_of: BTreeMap<&str, Vec<(String, SystemTime)>> = BTreeMap::new();
        for (name, view) in &self.views {
            for game in &view.running {
                hosts_of
                    .entry(game)
                    .or_default()
                    .push((name.clone(), view.at.unwrap_or(at)));
            }
        }
        let mut any = false;
        let mut now_overlapping = BTreeMap::new();
        for (game, hosts) in hosts_of {
            if hosts.len() < 2 {
                continue;
            }
            any = true;
            let names: BTreeSet<String> = hosts.iter().map(|(h, _)| h.clone()).collect();
            if self.overlapping.get(game) != Some(&names) {
                self.overlap_count += 1;
                if self.overlaps.len() < MAX_OVERLAPS {
                    self.overlaps.push(Overlap {
                        game: game.to_owned(),
                        hosts,
                        at,
                    });
                }
            }
            now_overlapping.insert(game.to_owned(), names);
        }
        self.overlapping = now_overlapping;
        if any {
            self.overlap_samples += 1;
        }
    }
}

/// Polls every host's engine every ~100 ms (each on its own task, so a
/// frozen engine holds no other back) and judges each new answer with the
/// other hosts' last ones. Stopped on drop.
#[derive(Debug)]
pub struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The watched hosts' [`Watch`]es (none for [`Monitor::watch`]).
    watches: Vec<Arc<Watch>>,
    started: SystemTime,
}

impl Monitor {
    /// Starts watching `hosts`' engines ([`Host::freeze_engine`] then
    /// waits for this monitor's listing of the paused containers).
    pub async fn start(hosts: &[&Host]) -> Monitor {
        let engines: Vec<(String, String, Option<Arc<Watch>>)> = hosts
            .iter()
            .map(|h| (h.name().to_owned(), h.docker_host(), Some(h.watch.clone())))
            .collect();
        Monitor::launch(engines).await
    }

    /// Starts watching the engines `(host name, DOCKER_HOST address)`.
    pub async fn watch(engines: &[(String, String)]) -> Monitor {
        Monitor::launch(
            engines
                .iter()
                .map(|(name, address)| (name.clone(), address.clone(), None))
                .collect(),
        )
        .await
    }

    async fn launch(engines: Vec<(String, String, Option<Arc<Watch>>)>) -> Monitor {
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let mut tasks = Vec::new();
        let mut watches = Vec::new();
        for (name, address, watch) in engines {
            let runtime = DockerRuntime::connect(Some(&address), MONITOR_LIST_LIMIT)
                .await
                .unwrap_or_else(|e| panic!("a runtime on {name}'s engine {address}: {e}"));
            state
                .lock()
                .expect("monitor state")
                .views
                .insert(name.clone(), View::default());
            if let Some(watch) = &watch {
                watch.monitors.fetch_add(1, Ordering::SeqCst);
                watches.push(watch.clone());
            }
            tasks.push(tokio::spawn(poll_engine(
                name,
                runtime,
                state.clone(),
                watch,
            )));
        }
        Monitor {
            state,
            tasks,
            watches,
            started: SystemTime::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.state.lock().expect("monitor state")
    }

    /// The hosts whose last answer shows `game` running.
    pub fn running_on(&self, game: &str) -> BTreeSet<String> {
        self.state()
            .views
            .iter()
            .filter(|(_, view)| view.running.contains(game))
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Every host `game` was ever seen running on.
    pub fn hosts_seen(&self, game: &str) -> BTreeSet<String> {
        self.state().seen.get(game).cloned().unwrap_or_default()
    }

    /// How many listings `host`'s engine answered so far.
    pub fn samples(&self, host: &str) -> u64 {
        self.state().samples.get(host).copied().unwrap_or_default()
    }

    /// Waits until `host`'s listings answered `more` times after now (a
    /// sample taken after whatever the test just did).
    pub async fn wait_samples(&self, host: &str, more: u64, limit: Duration) {
        let target = self.samples(host) + more;
        let deadline = Instant::now() + limit;
        while self.samples(host) < target {
            assert!(
                Instant::now() < deadline,
                "the monitor got no {more} new listings of {host}'s engine within {limit:?}: {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `game` runs on `host` and on no other host (per the
    /// hosts' last answers), at most `limit`.
    pub async fn wait_running_only_on(&self, game: &str, host: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let on = self.running_on(game);
            if on.len() == 1 && on.contains(host) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {game} to run on {host} alone; it runs \
                 on {on:?}: {}",
                self.summary()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every overlap recorded (at most the first 50).
    pub fn overlaps(&self) -> Vec<Overlap> {
        self.state().overlaps.clone()
    }

    /// Fails the test with [`Monitor::check_never_two`]'s message.
    pub fn assert_never_two(&self) {
        if let Err(message) = self.check_never_two() {
            panic!("{message}");
        }
    }

    /// `Err` naming each game, its hosts and when, if any sample saw one
    /// game running on two hosts; also if some host's engine never answered
    /// (a monitor that saw nothing proves nothing).
    pub fn check_never_two(&self) -> Result<(), String> {
        let state = self.state();
        let silent: Vec<&String> = state
            .views
            .iter()
            .filter(|(_, view)| view.at.is_none())
            .map(|(host, _)| host)
            .collect();
        if !silent.is_empty() {
            return Err(format!(
                "the monitor never got an answer from the engines of {silent:?}"
            ));
        }
        if state.overlap_count == 0 {
            return Ok(());
        }
        let mut message = format!(
            "{} time(s) a game ran on two hosts at once ({} sample(s)):",
            state.overlap_count, state.overlap_samples
        );
        for overlap in &state.overlaps {
            let _ = write!(message, "\n  {overlap}");
        }
        drop(state);
        Err(format!("{message}\n{}", self.summary()))
    }

    /// A one-line account: listings per host, failures, how long it ran.
    pub fn summary(&self) -> String {
        let state = self.state();
        let per_host: Vec<String> = state
            .views
            .keys()
            .map(|host| {
                let samples = state.samples.get(host).copied().unwrap_or_default();
                match state.failures.get(host) {
                    Some((count, last)) => {
                        format!("{host}: {samples} listings, {count} failed (last: {last})")
                    }
                    None => format!("{host}: {samples} listings"),
                }
            })
            .collect();
        format!(
            "monitor over {:?}: {}; {} overlap(s)",
            self.started.elapsed().unwrap_or_default(),
            per_host.join("; "),
            state.overlap_count
        )
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for watch in &self.watches {
            watch.monitors.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// One engine's poll loop: list, record, wait out the rest of the period.
async fn poll_engine(
    host: String,
    runtime: DockerRuntime,
    state: Arc<Mutex<MonitorState>>,
    watch: Option<Arc<Watch>>,
) {
    loop {
        let began = tokio::time::Instant::now();
        let listed = tokio::time::timeout(MONITOR_LIST_LIMIT, runtime.list_managed()).await;
        let answered = SystemTime::now();
        {
            let mut state = state.lock().expect("monitor state");
            match listed {
                Ok(Ok(containers)) => {
                    let running = containers
                        .iter()
                        .filter(|c| c.state == ContainerState::Running)
                        .filter_map(|c| c.game().map(str::to_owned))
                        .collect();
                    state.record(&host, answered, running);
                    if let Some(watch) = &watch {
                        watch.listed(began.into_std());
                    }
                }
                Ok(Err(e)) => note_failure(&mut state, &host, e.to_string()),
                Err(_) => note_failure(
                    &mut state,
                    &host,
                    format!("no answer in {MONITOR_LIST_LIMIT:?}"),
                ),
            }
        }
        tokio::time::sleep_until(began + MONITOR_POLL).await;
    }
}

fn note_failure(state: &mut MonitorState, host: &str, error: String) {
    let entry = state
        .failures
        .entry(host.to_owned())
        .or_insert((0, String::new()));
    entry.0 += 1;
    entry.1 = error;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(games: &[&str]) -> BTreeSet<String> {
        games.iter().map(|g| (*g).to_owned()).collect()
    }

    #[test]
    fn a_game_on_two_hosts_is_one_overlap_per_episode_and_a_silent_host_keeps_its_last_answer() {
        let mut state = MonitorState::default();
        let t = SystemTime::UNIX_EPOCH;
        state.record("n1", t, set(&["g"]));
        state.record("n2", t, set(&[]));
        assert_eq!(state.overlap_count, 0);
        // n1 stops answering (frozen); its last answer still counts.
        state.record("n2", t, set(&["g"]));
        state.record("n2", t, set(&["g"]));
        assert_eq!(state.overlap_count, 1, "one episode, seen in two samples");
        assert_eq!(state.overlap_samples, 2);
        assert_eq!(state.overlaps[0].game, "g");
        state.record("n1", t, set(&[]));
        state.record("n1", t, set(&["g"]));
        assert_eq!(state.overlap_count, 2, "a second episode");
        assert_eq!(state.seen["g"], set(&["n1", "n2"]), "every host it ran on");
    }
}
