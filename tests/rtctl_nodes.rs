//! `rtctl` for nodes — `get nodes`, `describe node`, `cordon`, `uncordon`, `drain`, and the
//! node and assignment shown beside games — the real binary against the real etcd started by
//! `scripts/services`, each test under its own prefix. The controllers' side (registering
//! nodes, heartbeats, the scheduler's assignments) is written by the test through the store
//! types, as the documented keys the controllers write. Ignored by a bare `cargo test`;
//! `scripts/test` runs them, and a missing etcd fails them.

use rtm_testkit as common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtm_core::model::{GameRuntimeStatus, Phase, Session, SessionState, Timestamp};
use rtm_core::records::lease::Heartbeat;
use rtm_core::records::nodes::{
    Assignment, AssignmentReason, Cordon, DEFAULT_PORT_RANGE, NodeRecord, decode, encode,
};
use rtm_core::records::status;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, Txn};

use common::rtctl::{Rtctl, Said};
use common::{etcd, etcd_endpoints, unique_keys};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);
/// Bound on waiting for a line a running rtctl prints.
const WAIT: Duration = Duration::from_secs(15);

/// Exit codes, as documented in `rtctl --help`.
mod exit {
    pub const INVALID: i32 = 3;
    pub const NOT_FOUND: i32 = 4;
    pub const CONFLICT: i32 = 5;
    pub const TIMEOUT: i32 = 9;
}

struct World {
    store: Arc<EtcdStore>,
    keys: Keys,
    dir: tempfile::TempDir,
}

/// A running rtctl whose stdout is read line by line.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    /// Waits for a line equal to `expected`, failing with everything seen after [`WAIT`].
    fn expect_line(&mut self, expected: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line == expected {
                        return;
                    }
                }
                Err(_) => panic!(
                    "rtctl did not print {expected:?} within {WAIT:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for a table row of `name` whose STATUS is `status`.
    fn expect_row(&mut self, name: &str, status: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let cells: Vec<&str> = line.split_whitespace().collect();
                    let found = cells.first() == Some(&name) && cells.get(1) == Some(&status);
                    self.seen.push(line.clone());
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "rtctl did not print a row {name} {status} within {WAIT:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the process to end, within [`RUN`]; its exit code.
    fn exit_code(mut self) -> Option<i32> {
        let deadline = Instant::now() + RUN;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll rtctl") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "rtctl did not end within {RUN:?}; it printed {:?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl World {
    async fn new(test: &str) -> World {
        World {
            store: etcd().await,
            keys: unique_keys(test),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        self.rtctl().ok(args)
    }

    fn fails(&self, args: &[&str], code: i32) -> Said {
        self.rtctl().fails(args, code)
    }

    fn rtctl(&self) -> Rtctl {
        Rtctl::new(RTCTL, &self.keys, RUN)
    }

    /// rtctl ARGS as a child process.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut child = std::process::Command::new(RTCTL)
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rtctl starts");
        let (sender, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    async fn put(&self, key: String, value: Vec<u8>) {
        self.store
            .txn(Txn::new().put(key.clone(), value))
            .await
            .unwrap_or_else(|e| panic!("write {key}: {e}"));
    }

    async fn delete(&self, key: String) {
        self.store
            .txn(Txn::new().delete(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }

    /// Registers `node` as its controller would (holder `<node>-h`), with a capacity of
    /// `games=200,cpus=4,memory=8Gi`; `live`: its heartbeat exists too.
    async fn node(&self, node: &str, live: bool) {
        let holder = format!("{node}-h");
        let record = NodeRecord {
            name: node.to_owned(),
            labels: [("region".to_owned(), "eu".to_owned())].into(),
            capacity: "games=200,cpus=4,memory=8Gi".parse().expect("a capacity"),
            address: format!("{node}.example"),
            port_range: DEFAULT_PORT_RANGE,
            holder: holder.clone(),
            engine: None,
            version: "9.9.9".into(),
            registered_at: Timestamp::now(),
            ttl_ms: 10_000,
            self_fence_after_ms: Some(30_000),
            lost_at: None,
        };
        self.put(self.keys.node(node), encode(&record)).await;
        if live {
            let mut heartbeat = Heartbeat::new(&holder, Some(node));
            heartbeat.renewed_at = Some(Timestamp::now());
            let value = serde_json::to_vec(&heartbeat).expect("a heartbeat encodes");
            self.put(self.keys.controller(&holder), value).await;
        }
    }

    /// Assigns `game` to `node` as the scheduler would.
    async fn assign(&self, game: &str, node: &str) {
        let assignment = Assignment::to(node, AssignmentReason::Scheduled, "sched-h");
        self.put(self.keys.assignment(game), encode(&assignment))
            .await;
    }

    async fn allocate(&self, game: &str) {
        let session = Session {
            state: SessionState::Allocated,
            reference: Some("match-1".into()),
            since: Timestamp::now(),
            container_id: None,
            source: Some("api".into()),
        };
        self.put(
            self.keys.session(game),
            rtm_core::records::sessions::encode(&session),
        )
        .await;
    }

    async fn cordon(&self, node: &str) -> Option<Cordon> {
        let kv = self
            .store
            .get(&self.keys.cordon(node))
            .await
            .expect("read a cordon")?;
        Some(decode(&kv.value).expect("a cordon rtctl wrote decodes"))
    }

    fn apply(&self, name: &str, resources: &str) {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {{name: {name}}}\n\
             spec:\n  image: rtmanager-test/engine:1\n  resources: {resources}\n"
        );
        let file = self.file(&format!("{name}.yaml"), &yaml);
        self.ok(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);
    }
}

/// The cells of the table line that starts with `name`.
fn line_of<'t>(table: &'t str, name: &str) -> Vec<&'t str> {
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in\n{table}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_nodes_shows_ready_cordoned_draining_and_not_ready_nodes() {
    let w = World::new("nodes-get").await;
    w.node("n1", true).await;
    w.node("n2.eu.example", true).await;
    w.node("n3", false).await;
    w.node("n4", true).await;
    w.assign("g1", "n1").await;
    w.assign("g2", "n1").await;
    w.assign("g3", "n3").await;
    w.ok(&["cordon", "n2.eu.example"]);
    w.ok(&["drain", "n4", "--no-wait"]);

    let table = w.ok(&["get", "nodes"]);
    assert!(
        table.starts_with("NAME") && table.contains("STATUS") && table.contains("VERSION"),
        "{table}"
    );
    assert_eq!(line_of(&table, "n1")[1..3], ["Ready", "2/200"]);
    assert_eq!(
        line_of(&table, "n2.eu.example")[1..3],
        ["Cordoned", "0/200"]
    );
    assert_eq!(
        line_of(&table, "n3")[1..3],
        ["NotReady", "1/200"],
        "no heartbeat of its holder: NotReady"
    );
    assert_eq!(line_of(&table, "n4")[1], "Draining");
    assert_eq!(line_of(&table, "n1")[4], "9.9.9");

    let wide = w.ok(&["get", "nodes", "-o", "wide"]);
    let n1 = line_of(&wide, "n1");
    assert_eq!(
        n1[5..9],
        [
            "region=eu",
            "games=200,cpus=4,memory=8Gi",
            "n1.example",
            "17000-17999"
        ],
        "{wide}"
    );
    assert_eq!(line_of(&wide, "n3")[9], "<none>", "{wide}");

    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["get", "node", "n3", "-o", "json"])).expect("JSON");
    assert_eq!(json["name"], "n3");
    assert_eq!(json["status"], "NotReady");
    assert_eq!(json["holder"], "n3-h");
    assert_eq!(w.ok(&["get", "nodes", "n1", "-o", "name"]), "node/n1\n");
    let list: serde_json::Value =
        serde_json::from_str(&w.ok(&["get", "nodes", "-o", "json"])).expect("JSON");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(4), "{list}");

    let missing = w.fails(&["get", "node", "n9"], exit::NOT_FOUND);
    assert!(
        missing.stderr.contains("node/n9 not found"),
        "{}",
        missing.stderr
    );
    assert!(
        missing.stderr.contains("rtctl get nodes"),
        "{}",
        missing.stderr
    );
    w.fails(&["get", "node", "Not_A_Node"], exit::INVALID);
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn describe_node_shows_its_heartbeat_cordon_use_and_games() {
    let w = World::new("nodes-describe").await;
    w.node("n1", true).await;
    w.apply("g1", "{cpus: \"1.5\", memory: 1Gi}");
    w.apply("g2", "{cpus: 500m}");
    w.assign("g1", "n1").await;
    w.assign("g2", "n1").await;
    w.allocate("g2").await;
    let status = GameRuntimeStatus {
        phase: Phase::Running,
        node: Some("n1".into()),
        ..GameRuntimeStatus::default()
    };
    w.put(w.keys.status("g1"), status::encode(&status)).await;
    w.ok(&[
        "drain",
        "n1",
        "--no-wait",
        "--deadline",
        "2h",
        "--ref",
        "MAINT-7",
    ]);

    let text = w.ok(&["describe", "node", "n1"]);
    for expected in [
        "Status:              Draining",
        "by MAINT-7, deadline",
        "Holder:            n1-h",
        "Live:              yes",
        "Version:           ",
        "Games:             2 of 200",
        "CPUs:              2 of 4",
        "Memory:            1Gi of 8Gi",
        "Games (2):",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let g1 = line_of(&text, "g1");
    assert_eq!(g1[1..4], ["Running", "Idle", "Scheduled"], "{text}");
    let g2 = line_of(&text, "g2");
    assert_eq!(g2[1..4], ["-", "Allocated", "Scheduled"], "{text}");

    w.fails(&["describe", "node", "n9"], exit::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn cordon_and_uncordon_write_and_delete_the_cordon() {
    let w = World::new("nodes-cordon").await;
    w.node("n1", true).await;
    assert_eq!(
        w.ok(&["cordon", "n1", "--ref", "REQ-1"]),
        "node/n1 cordoned\n"
    );
    let cordon = w.cordon("n1").await.expect("a cordon is written");
    assert!(!cordon.drain);
    assert_eq!(cordon.by.as_deref(), Some("REQ-1"));
    assert_eq!(w.ok(&["cordon", "n1"]), "node/n1 already cordoned\n");
    assert_eq!(w.ok(&["uncordon", "n1"]), "node/n1 uncordoned\n");
    assert_eq!(w.cordon("n1").await, None);
    assert_eq!(w.ok(&["uncordon", "n1"]), "node/n1 already uncordoned\n");

    // A node with no registration: not found, and nothing written.
    let said = w.fails(&["cordon", "n9"], exit::NOT_FOUND);
    assert!(said.stderr.contains("rtctl get nodes"), "{}", said.stderr);
    assert_eq!(said.stderr.lines().count(), 1, "{}", said.stderr);
    assert_eq!(w.cordon("n9").await, None);
    w.fails(&["drain", "n9", "--no-wait"], exit::NOT_FOUND);
    w.fails(&["cordon", "bad/name"], exit::INVALID);
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn drain_waits_until_no_assignment_names_the_node() {
    let w = World::new("nodes-drain").await;
    w.node("n1", true).await;
    w.node("n2", true).await;
    w.assign("g1", "n1").await;
    w.assign("g2", "n1").await;
    w.assign("g3", "n2").await;
    w.allocate("g2").await;

    let mut drain = w.spawn(&["drain", "n1", "--deadline", "1h", "--timeout", "60s"]);
    drain.expect_line("node/n1 cordoned for draining");
    drain.expect_line("node/n1 draining: 2 games left (1 in session)");
    let cordon = w.cordon("n1").await.expect("the drain's cordon");
    assert!(cordon.drain);
    let deadline = cordon.deadline.expect("--deadline sets a deadline");
    let ahead = deadline.unix_seconds() - cordon.at.unix_seconds();
    assert_eq!(ahead, 3600, "the deadline is an hour after the drain began");

    // The scheduler moves g1 away (its node's controller releases it), then g2.
    w.assign("g1", "n2").await;
    drain.expect_line("node/n1 draining: 1 game left (1 in session)");
    w.delete(w.keys.assignment("g2")).await;
    drain.expect_line("node/n1 drained");
    assert_eq!(drain.exit_code(), Some(0));
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn drain_gives_up_at_its_timeout_and_stops_when_uncordoned() {
    let w = World::new("nodes-drain-timeout").await;
    w.node("n1", true).await;
    w.assign("g1", "n1").await;
    let said = w.fails(&["drain", "n1", "--timeout", "1s"], exit::TIMEOUT);
    assert!(
        said.stdout
            .contains("node/n1 draining: 1 game left (0 in session)"),
        "{}",
        said.stdout
    );
    assert!(said.stderr.contains("timed out"), "{}", said.stderr);
    assert!(
        w.cordon("n1").await.is_some_and(|c| c.drain),
        "the drain goes on"
    );

    let mut drain = w.spawn(&["drain", "n1", "--timeout", "60s"]);
    drain.expect_line("node/n1 draining: 1 game left (0 in session)");
    w.ok(&["uncordon", "n1"]);
    assert_eq!(drain.exit_code(), Some(exit::CONFLICT));
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_shows_the_assigned_node_and_unschedulable_games() {
    let w = World::new("nodes-games").await;
    w.apply("g1", "{}");
    w.apply("g2", "{}");
    w.assign("g1", "n1").await;
    let nowhere = Assignment::unschedulable(
        "0/3 nodes fit: 2 node selector region=eu, 1 insufficient memory",
        "sched-h",
    );
    w.put(w.keys.assignment("g2"), encode(&nowhere)).await;

    let wide = w.ok(&["get", "-o", "wide"]);
    let headers = line_of(&wide, "NAME");
    let node = headers
        .iter()
        .position(|h| *h == "NODE")
        .expect("a NODE column");
    assert_eq!(line_of(&wide, "g1")[node], "n1", "{wide}");
    assert_eq!(line_of(&wide, "g2")[2], "Unschedulable", "{wide}");
    assert_eq!(line_of(&w.ok(&["get", "g2"]), "g2")[2], "Unschedulable");
    assert_eq!(
        line_of(&w.ok(&["get", "g1", "-o", "wide"]), "g1")[node],
        "n1"
    );

    let text = w.ok(&["describe", "g2"]);
    assert!(
        text.contains("Unschedulable: 0/3 nodes fit: 2 node selector region=eu"),
        "{text}"
    );
    let text = w.ok(&["describe", "g1"]);
    assert!(text.contains("node n1 (Scheduled"), "{text}");
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_nodes_w_prints_a_row_when_a_node_changes_state() {
    let w = World::new("nodes-watch").await;
    w.node("n1", true).await;
    let mut watch = w.spawn(&["get", "nodes", "-w"]);
    watch.expect_row("NAME", "STATUS");
    watch.expect_row("n1", "Ready");
    w.ok(&["cordon", "n1"]);
    watch.expect_row("n1", "Cordoned");
    w.delete(w.keys.controller("n1-h")).await;
    watch.expect_row("n1", "NotReady");
    w.node("n2", false).await;
    watch.expect_row("n2", "NotReady");
}
