//! A private etcd for the fault tests: one member, or a 3-member cluster,
//! on free loopback ports with their data in a temporary directory of
//! their own; each member also serves clients on the same port at one more
//! address when asked ([`EtcdCluster::start_with_address`]: the address
//! the simulated machines of [`crate::hosts`] reach it at). Never the shared etcd of `scripts/services`: these members
//! are killed and restarted on purpose, and other tests use that one.
//!
//! Every member is a child process of the test (`/usr/bin/etcd`), signalled
//! only by its own pid and killed on drop; the directory goes with it.

use std::fmt::Write as _;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::docker::run_bounded;

/// The etcd server and its command-line client (Debian's etcd 3.4).
const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Lines of a member's log shown in a failure message.
const LOG_TAIL_LINES: usize = 30;

/// One member: its ports, its data, and its process while it runs.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn client_url_at(&self, address: IpAddr) -> String {
        match address {
            IpAddr::V4(v4) => format!("http://{v4}:{}", self.client_port),
            IpAddr::V6(v6) => format!("http://[{v6}]:{}", self.client_port),
        }
    }

    /// Every URL it serves clients on: loopback, and `extra` when set.
    fn client_urls(&self, extra: Option<IpAddr>) -> String {
        match extra {
            Some(address) => format!("{},{}", self.client_url(), self.client_url_at(address)),
            None => self.client_url(),
        }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// A private etcd cluster (one member or more) on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// The address every member also serves clients on.
    extra_address: Option<IpAddr>,
    _dir: tempfile::TempDir,
}

/// Ports the OS says are free now (held together so they differ; the
/// short window before etcd binds them is acceptable on a test machine).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("a bound socket has an address")
                .port()
        })
        .collect()
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster answers (has a
    /// leader and serves reads on every member).
    pub async fn start(size: usize) -> EtcdCluster {
        EtcdCluster::launch(size, None).await
    }

    /// [`EtcdCluster::start`], every member also serving clients on
    /// `address` (an address of this machine that must exist now: etcd
    /// binds it), on the same port as on loopback;
    /// [`EtcdCluster::endpoints_at_extra_address`] names those URLs.
    pub async fn start_with_address(size: usize, address: IpAddr) -> EtcdCluster {
        EtcdCluster::launch(size, Some(address)).await
    }

    async fn launch(size: usize, extra_address: Option<IpAddr>) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("rtm-faults-etcd-")
            .tempdir()
            .expect("a temporary directory for the private etcd");
        let ports = free_ports(2 * size);
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log_path: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            token: format!("rtm-faults-{}-{}", std::process::id(), ports[0]),
            members,
            initial_cluster,
            extra_address,
            _dir: dir,
        };
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_healthy(Duration::from_secs(30)).await;
        cluster
    }

    /// The client URLs of every member (stopped ones included), as
    /// `RTM_ETCD_ENDPOINTS` takes them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The client URLs of every member at the extra address it was started
    /// with ([`EtcdCluster::start_with_address`]); fails the test when it
    /// has none.
    pub fn endpoints_at_extra_address(&self) -> Vec<String> {
        let address = self
            .extra_address
            .expect("the cluster was started with an extra address (start_with_address)");
        self.members
            .iter()
            .map(|m| m.client_url_at(address))
            .collect()
    }

    /// How many members the cluster has (stopped ones included).
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The client URLs of the members that run.
    fn live_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(Member::client_url)
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let extra = self.extra_address;
        let member = &mut self.members[i];
        assert!(
            member.child.is_none(),
            "etcd member {} is already running",
            member.name
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log_path)
            .expect("open the etcd member's log");
        let mut command = Command::new(ETCD);
        // The member's configuration is its flags alone.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("ETCD") {
                command.env_remove(&var);
            }
        }
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .arg("--listen-client-urls")
            .arg(member.client_urls(extra))
            .arg("--advertise-client-urls")
            .arg(member.client_urls(extra))
            .arg("--listen-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(member.peer_url())
            .arg("--initial-cluster")
            .arg(&initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&token)
            // Ignored on a restart: the data directory holds the cluster.
            .arg("--initial-cluster-state")
            .arg("new");
        member.child = Some(crate::spawn_logged(&mut command, log, &ETCD));
    }

    /// SIGKILLs member `i` (a crash) and reaps it.
    pub fn kill(&mut self, i: usize) {
        let member = &mut self.members[i];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of member `i` while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Starts member `i` again on the same ports and data.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Waits until every running member answers `endpoint health` (a
    /// healthy member has a leader and serves a quorum read).
    pub async fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let live = self.live_endpoints();
            let answer = etcdctl(&live, &["endpoint", "health"]);
            match answer {
                Ok(_) => return,
                Err(seen) if Instant::now() >= deadline => panic!(
                    "the private etcd ({}) was not healthy within {limit:?}: {seen}{}",
                    live.join(","),
                    self.log_tails()
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The index of the member that is the raft leader now, per `etcdctl
    /// endpoint status -w json` over the running members.
    pub fn leader(&self) -> Result<usize, String> {
        let live = self.live_endpoints();
        let text = etcdctl(&live, &["endpoint", "status", "-w", "json"])?;
        let statuses: Vec<serde_json::Value> = serde_json::from_str(&text)
            .map_err(|e| format!("endpoint status JSON: {e}: {text}"))?;
        for status in &statuses {
            let member_id = status
                .pointer("/Status/header/member_id")
                .and_then(serde_json::Value::as_u64);
            let leader = status
                .pointer("/Status/leader")
                .and_then(serde_json::Value::as_u64);
            if member_id.is_some() && member_id == leader {
                let endpoint = status
                    .get("Endpoint")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                return self
                    .members
                    .iter()
                    .position(|m| m.client_url() == endpoint)
                    .ok_or_else(|| format!("the leader {endpoint} is not a member of ours"));
            }
        }
        Err(format!("no member reports itself the leader: {text}"))
    }

    /// The last lines of every member's log, as a message suffix.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let text = std::fs::read_to_string(&member.log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            let _ = writeln!(
                out,
                "\n--- last lines of private etcd member {} ({}) ---",
                member.name,
                member.log_path.display()
            );
            for line in &lines[from..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Runs etcdctl (v3 API) against `endpoints`, bounded to 10 s.
fn etcdctl(endpoints: &[String], args: &[&str]) -> Result<String, String> {
    if endpoints.is_empty() {
        return Err("no member runs".to_owned());
    }
    let mut command = Command::new(ETCDCTL);
    command
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s")
        .args(args);
    let output = run_bounded(command, Duration::from_secs(10))
        .ok_or_else(|| format!("etcdctl {args:?} did not finish in 10 s"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
