//! `rtctl`, the real binary, against the real etcd started by `scripts/services`. Each test
//! works under its own key prefix (`RTM_PREFIX`). Most tests leave the controller out: where a
//! command waits for it, the test writes the status or history the controller would, through
//! the same store types. The tests of what only a real controller shows (a crowd of restarts
//! merged into few, a restart redone after an aborted one) run the real `rtmanager` binary
//! and Docker, one at a time. The etcd-outage test runs a private etcd it kills and restarts.
//! Run with `scripts/test` (these tests are ignored by a bare `cargo test`); a missing etcd
//! fails them, it never skips them.

use rtm_testkit as common;
use rtm_testkit::etcd_cluster;
use rtm_testkit::process;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtm_core::ErrorCode;
use rtm_core::model::{
    ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, Condition, ConditionStatus, DesiredState,
    GameRuntime, GameRuntimeStatus, OpKind, OpSource, Phase,
};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::records::status;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, Txn};

use common::{etcd, etcd_endpoints, unique_keys, within};

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);
/// Bound on waiting for something a child process prints.
const WAIT: Duration = Duration::from_secs(15);

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Exit codes, as documented in `rtctl --help`.
mod exit {
    pub const CORRUPT: i32 = 12;
    pub const DIFFERENCES: i32 = 1;
    pub const INVALID: i32 = 3;
    pub const NOT_FOUND: i32 = 4;
    pub const CONFLICT: i32 = 5;
    pub const UNAVAILABLE: i32 = 6;
    pub const OPERATION_FAILED: i32 = 8;
    pub const TIMEOUT: i32 = 9;
}

/// One test's world: its own prefix, a store for checking and simulating the controller, and
/// a directory for files.
struct World {
    store: Arc<EtcdStore>,
    keys: Keys,
    docs: Documents,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(test: &str) -> World {
        let store = etcd().await;
        let keys = unique_keys(test);
        World {
            docs: Documents::new(store.clone(), keys.clone()),
            store,
            keys,
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    /// `rtctl` with this world's prefix and no config file.
    fn rtctl(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::new(RTCTL);
        command
            .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null")
            .timeout(RUN);
        command
    }

    /// `rtctl ARGS` as a child process whose stdout is read line by line.
    fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_on(&etcd_endpoints(), args)
    }

    /// `rtctl ARGS` against the etcd at `endpoints`, as a child process whose stdout and
    /// stderr are read line by line.
    fn spawn_on(&self, endpoints: &[String], args: &[&str]) -> Running {
        let mut child = std::process::Command::new(RTCTL)
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", endpoints.join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let collected = errors.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                collected
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(line);
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            errors,
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    async fn get(&self, name: &str) -> Option<GameRuntime> {
        self.docs.get(name).await.expect("read a document")
    }

    async fn names(&self) -> Vec<String> {
        let list = self.docs.list().await.expect("list documents");
        list.items.into_iter().map(|d| d.metadata.name).collect()
    }

    /// Writes a status as the controller would.
    async fn put_status(&self, name: &str, status: &GameRuntimeStatus) {
        let txn = Txn::new().put(self.keys.status(name), status::encode(status));
        self.store.txn(txn).await.expect("write a status");
    }

    async fn delete_status(&self, name: &str) {
        let txn = Txn::new().delete(self.keys.status(name));
        self.store.txn(txn).await.expect("delete a status");
    }

    /// Deletes the test's keys (a failed test leaves them, under its own prefix, to look at).
    async fn done(self) {
        common::wipe(self.store.as_ref(), &self.keys).await;
    }

    fn history(&self) -> History {
        History::new(self.store.clone(), self.keys.clone(), 100)
    }

    /// Waits until `check` holds for the stored document.
    async fn until_doc(&self, name: &str, what: &str, check: impl Fn(&GameRuntime) -> bool) {
        within(WAIT, what, async {
            loop {
                if self.get(name).await.as_ref().is_some_and(&check) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
}

/// A running rtctl.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Its stderr so far, line by line.
    errors: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// The next stdout line containing `text`.
    fn line_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "rtctl printed no line with {text:?} within {WAIT:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the process to end; returns its status, the stdout lines not yet read, and
    /// stderr.
    fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            match self.child.try_wait().expect("poll rtctl") {
                Some(status) => break status,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "rtctl did not exit within {WAIT:?}; it printed {:?}",
                        self.seen
                    );
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut rest: Vec<String> = self.lines.try_iter().collect();
        // The reader thread may still be draining the pipe.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        // The reader thread ends with the pipe; give it a moment to take the last lines.
        let stderr_deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&self.errors) > 1 && Instant::now() < stderr_deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stderr = self.stderr_text();
        (status, rest, stderr)
    }

    fn stderr_text(&self) -> String {
        let lines = self
            .errors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Waits until stderr has a line containing `text`; returns it.
    fn stderr_with(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .errors
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .iter()
                .find(|l| l.contains(text))
            {
                return line.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "rtctl wrote no stderr line with {text:?} within {WAIT:?}; stderr: {:?}, \
                     stdout: {:?}",
                    self.stderr_text(),
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGINT (Ctrl-C).
    fn interrupt(&self) {
        let status = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn game(name: &str) -> String {
    game_on_port(name, None)
}

/// [`game`], its port 7000 published on `host_port` when given.
fn game_on_port(name: &str, host_port: Option<u16>) -> String {
    let host = host_port.map_or(String::new(), |port| format!(", hostPort: {port}"));
    format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
         labels:\n    tier: ranked\nspec:\n  image: rtmanager-test/engine:1\n  ports:\n    - \
         {{containerPort: 7000{host}}}\n"
    )
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn running_status(generation: i64) -> GameRuntimeStatus {
    GameRuntimeStatus {
        phase: Phase::Running,
        observed_generation: Some(generation),
        container_id: Some("0123456789abcdef0123456789abcdef".into()),
        restart_count: 1,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ConditionStatus::True,
            reason: "ContainerRunning".into(),
            message: String::new(),
            last_transition_time: None,
        }],
        ..GameRuntimeStatus::default()
    }
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn apply_creates_then_configures_then_leaves_unchanged() {
    let world = World::new("rtctl-apply").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success()
        .stdout("gameruntime/g1 created\n");
    let created = world.get("g1").await.expect("g1 was created");
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created
            .metadata
            .annotations
            .get(ANNOTATION_OP_SOURCE)
            .map(String::as_str),
        Some("admin_cli")
    );

    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success()
        .stdout("gameruntime/g1 unchanged\n");

    let changed = world.file("g1.yaml", &(game("g1") + "  state: Stopped\n"));
    world
        .rtctl()
        .args(["apply", "--ref", "REQ-7", "-f"])
        .arg(&changed)
        .assert()
        .success()
        .stdout("gameruntime/g1 configured\n");
    let configured = world.get("g1").await.expect("g1 exists");
    assert_eq!(configured.spec.state, DesiredState::Stopped);
    assert_eq!(configured.metadata.generation, Some(2));
    assert_eq!(
        configured.metadata.creation_timestamp, created.metadata.creation_timestamp,
        "apply keeps the creation timestamp"
    );
    assert_eq!(
        configured
            .metadata
            .annotations
            .get(ANNOTATION_SOURCE_REF)
            .map(String::as_str),
        Some("REQ-7")
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_multi_document_file_with_one_invalid_document_writes_nothing() {
    let world = World::new("rtctl-all-or-nothing").await;
    let text = format!(
        "{}---\n{}---\n{}",
        game("a"),
        game("b").replace("containerPort: 7000", "containerPort: 0"),
        game("c")
    );
    let file = world.file("fleet.yaml", &text);
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::INVALID), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: {}: document 2 (b): spec.ports[0].containerPort: must be between 1 and 65535",
            file.display()
        )),
        "{message}"
    );
    assert!(message.contains("nothing was written"), "{message}");
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(stdout(&output).is_empty());
    assert_eq!(
        world.names().await,
        Vec::<String>::new(),
        "nothing may be written"
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn dry_run_reports_what_would_happen_and_writes_nothing() {
    let world = World::new("rtctl-dry-run").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "--dry-run", "-f"])
        .arg(&file)
        .assert()
        .success()
        .stdout("gameruntime/g1 created (dry run)\n");
    assert_eq!(world.get("g1").await, None);

    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let before = world.get("g1").await.unwrap();
    let changed = world.file("g1.yaml", &game("g1").replace("engine:1", "engine:2"));
    world
        .rtctl()
        .args(["apply", "--dry-run", "-f"])
        .arg(&changed)
        .assert()
        .success()
        .stdout("gameruntime/g1 configured (dry run)\n");
    assert_eq!(
        world.get("g1").await.unwrap(),
        before,
        "dry run changed nothing"
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn diff_exits_zero_without_differences_one_with_them_and_more_on_errors() {
    let world = World::new("rtctl-diff").await;
    let file = world.file("g1.yaml", &game("g1"));

    // Not there yet: everything is a difference.
    let output = world
        .rtctl()
        .args(["diff", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::DIFFERENCES), "{output:?}");
    assert!(stdout(&output).starts_with("--- /dev/null\n+++ applied/gameruntime/g1\n"));

    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    world
        .rtctl()
        .args(["diff", "-f"])
        .arg(&file)
        .assert()
        .code(0)
        .stdout("");

    let changed = world.file("g1.yaml", &game("g1").replace("engine:1", "engine:2"));
    let output = world
        .rtctl()
        .args(["diff", "-f"])
        .arg(&changed)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::DIFFERENCES), "{output:?}");
    let text = stdout(&output);
    assert!(
        text.starts_with("--- live/gameruntime/g1\n+++ applied/gameruntime/g1\n@@"),
        "{text}"
    );
    assert!(
        text.contains("\n-  image: rtmanager-test/engine:1\n+  image: rtmanager-test/engine:2\n"),
        "{text}"
    );

    let broken = world.file("broken.yaml", "spec: [\n");
    let output = world
        .rtctl()
        .args(["diff", "-f"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(output.status.code().is_some_and(|c| c > 1), "{output:?}");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_prints_the_columns_filters_by_label_and_names() {
    let world = World::new("rtctl-get").await;
    let file = world.file(
        "games.yaml",
        &format!(
            "{}---\n{}",
            game("g1"),
            game("g2").replace("tier: ranked", "tier: casual")
        ),
    );
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    world.put_status("g1", &running_status(1)).await;

    let output = world.rtctl().arg("get").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME", "STATE", "PHASE", "READY", "SESSION", "RESTARTS", "IMAGE", "AGE"
        ]
    );
    assert_eq!(
        lines[1][..7],
        [
            "g1",
            "Running",
            "Running",
            "True",
            "Idle",
            "1",
            "rtmanager-test/engine:1"
        ]
    );
    assert!(lines[1][7].ends_with('s'), "age in seconds: {text}");
    assert_eq!(
        lines[2][..7],
        [
            "g2",
            "Running",
            "-",
            "-",
            "Idle",
            "0",
            "rtmanager-test/engine:1"
        ]
    );
    assert_eq!(lines.len(), 3, "{text}");

    let output = world
        .rtctl()
        .args(["get", "g1", "-o", "wide"])
        .output()
        .unwrap();
    let text = stdout(&output);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "STATE",
            "PHASE",
            "READY",
            "SESSION",
            "RESTARTS",
            "IMAGE",
            "AGE",
            "SESSION-REF",
            "CONTAINER",
            "NODE",
            "HOSTNAME",
            "ADDRESS",
            "PORTS"
        ]
    );
    assert_eq!(
        lines[1][8..],
        ["-", "0123456789ab", "-", "g1", "<none>", "<none>"]
    );

    world
        .rtctl()
        .args(["get", "-l", "tier=casual", "-o", "name"])
        .assert()
        .success()
        .stdout("gameruntime/g2\n");
    world
        .rtctl()
        .args(["get", "-l", "tier!=casual", "-o", "name"])
        .assert()
        .success()
        .stdout("gameruntime/g1\n");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_yaml_output_with_status_applies_back_unchanged() {
    let world = World::new("rtctl-roundtrip").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    world.put_status("g1", &running_status(1)).await;

    let output = world
        .rtctl()
        .args(["get", "g1", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let yaml = stdout(&output);
    for field in [
        "generation: 1",
        "resourceVersion:",
        "creationTimestamp:",
        "status:",
        "phase: Running",
    ] {
        assert!(yaml.contains(field), "missing {field}: {yaml}");
    }
    world
        .rtctl()
        .args(["apply", "-f", "-"])
        .write_stdin(yaml.clone())
        .assert()
        .success()
        .stdout("gameruntime/g1 unchanged\n");
    let printed = world.file("printed.yaml", &yaml);
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&printed)
        .assert()
        .success()
        .stdout("gameruntime/g1 unchanged\n");
    world
        .rtctl()
        .args(["diff", "-f"])
        .arg(&printed)
        .assert()
        .code(0);

    let output = world
        .rtctl()
        .args(["get", "g1", "-o", "json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    assert_eq!(json["status"]["phase"], "Running");
    assert_eq!(json["metadata"]["name"], "g1");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_watch_prints_a_line_when_the_status_changes() {
    let world = World::new("rtctl-watch").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();

    let mut watch = world.spawn(&["get", "g1", "-w"]);
    watch.line_with("NAME");
    let first = watch.line_with("g1");
    assert!(
        first.split_whitespace().nth(2) == Some("-"),
        "no status yet: {first}"
    );

    world
        .put_status(
            "g1",
            &GameRuntimeStatus {
                phase: Phase::Starting,
                observed_generation: Some(1),
                ..GameRuntimeStatus::default()
            },
        )
        .await;
    let starting = watch.line_with("Starting");
    assert!(starting.starts_with("g1 "), "{starting}");
    world.put_status("g1", &running_status(1)).await;
    let running = watch.line_with("True");
    let cells: Vec<&str> = running.split_whitespace().collect();
    assert_eq!(
        cells[..4],
        ["g1", "Running", "Running", "True"],
        "{running}"
    );

    // The document's own changes are lines too.
    let stopped = world.file("g1.yaml", &(game("g1") + "  state: Stopped\n"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&stopped)
        .assert()
        .success();
    let line = watch.line_with("Stopped");
    assert!(line.starts_with("g1 "), "{line}");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn restart_writes_a_new_restart_token_and_the_request_annotations() {
    let world = World::new("rtctl-restart").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let before = world.get("g1").await.unwrap();

    world
        .rtctl()
        .args(["restart", "g1", "--ref", "REQ-42"])
        .assert()
        .success()
        .stdout("gameruntime/g1 restart requested (ref REQ-42)\n");
    let after = world.get("g1").await.unwrap();
    assert!(!after.spec.restart_token.is_empty());
    assert_ne!(after.spec.restart_token, before.spec.restart_token);
    assert_eq!(
        after
            .metadata
            .annotations
            .get(ANNOTATION_OP_SOURCE)
            .map(String::as_str),
        Some(OpSource::AdminCli.as_str())
    );
    assert_eq!(
        after
            .metadata
            .annotations
            .get(ANNOTATION_SOURCE_REF)
            .map(String::as_str),
        Some("REQ-42")
    );

    // A second restart is a second request: a new token.
    world.rtctl().args(["restart", "g1"]).assert().success();
    let again = world.get("g1").await.unwrap();
    assert_ne!(again.spec.restart_token, after.spec.restart_token);

    // Applying the original file afterwards neither undoes nor repeats the restart.
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success()
        .stdout("gameruntime/g1 unchanged\n");
    world.done().await;
}

/// What the controller records for a restart asked for by `source_ref`: the outer entry and
/// its inner stop and start, all sharing the correlation id, the outer one finished with
/// `failure` when given.
async fn simulate_restart(
    world: &World,
    name: &str,
    source_ref: &str,
    failure: Option<(ErrorCode, &str)>,
) {
    let history = world.history();
    let entry = |kind| {
        let mut entry =
            HistoryEntry::begin(name, &format!("op-{kind:?}"), kind, OpSource::AdminCli);
        entry.source_ref = source_ref.to_owned();
        entry
    };
    let mut outer = history
        .append(None, entry(OpKind::Restart))
        .await
        .expect("append the restart entry");
    let mut stop = history
        .append(None, entry(OpKind::Stop))
        .await
        .expect("append the stop entry");
    stop.entry.container_id_before = Some("aaaaaaaaaaaaaaaaaaaa".into());
    stop.entry.succeed();
    history
        .finish(&stop, None)
        .await
        .expect("finish the stop entry");
    let mut start = history
        .append(None, entry(OpKind::Start))
        .await
        .expect("append the start entry");
    outer.entry.container_id_before = Some("aaaaaaaaaaaaaaaaaaaa".into());
    match failure {
        None => {
            start.entry.container_id_after = Some("bbbbbbbbbbbbbbbbbbbb".into());
            start.entry.succeed();
            outer.entry.container_id_after = Some("bbbbbbbbbbbbbbbbbbbb".into());
            outer.entry.succeed();
        }
        Some((code, message)) => {
            start.entry.fail(code, message);
            outer.entry.fail(code, message);
        }
    }
    history
        .finish(&start, None)
        .await
        .expect("finish the start entry");
    history
        .finish(&outer, None)
        .await
        .expect("finish the restart entry");
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn restart_wait_reports_the_successful_outcome_from_the_history() {
    let world = World::new("rtctl-restart-ok").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    // An earlier restart with the same ref must not end the wait.
    simulate_restart(&world, "g1", "REQ-1", Some((ErrorCode::StartFailed, "old"))).await;
    let before = world.get("g1").await.unwrap();

    let mut restart = world.spawn(&[
        "restart",
        "g1",
        "--ref",
        "REQ-1",
        "--wait",
        "--timeout",
        "30s",
    ]);
    restart.line_with("restart requested (ref REQ-1)");
    world
        .until_doc("g1", "rtctl to write a new restart token", |doc| {
            doc.spec.restart_token != before.spec.restart_token
        })
        .await;
    simulate_restart(&world, "g1", "REQ-1", None).await;

    restart.line_with("stop success");
    let (status, rest, stderr) = restart.finish();
    assert!(status.success(), "{status:?}: {stderr} {rest:?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("gameruntime/g1 restarted: container aaaaaaaaaaaa → bbbbbbbbbbbb"),
        "{rest:?}"
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn restart_wait_reports_a_failure_with_its_error_code_and_message() {
    let world = World::new("rtctl-restart-fail").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let before = world.get("g1").await.unwrap();

    let mut restart = world.spawn(&["restart", "g1", "--ref", "REQ-2", "--wait"]);
    restart.line_with("restart requested");
    world
        .until_doc("g1", "rtctl to write a new restart token", |doc| {
            doc.spec.restart_token != before.spec.restart_token
        })
        .await;
    simulate_restart(
        &world,
        "g1",
        "REQ-2",
        Some((
            ErrorCode::ImageNotFound,
            "image rtmanager-test/engine:1 is not present",
        )),
    )
    .await;
    let (status, _, stderr) = restart.finish();
    assert_eq!(status.code(), Some(exit::OPERATION_FAILED), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: restart of gameruntime/g1 failed: image_not_found: image \
             rtmanager-test/engine:1 is not present;"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn restart_wait_times_out_with_its_own_exit_code() {
    let world = World::new("rtctl-restart-timeout").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let output = world
        .rtctl()
        .args(["restart", "g1", "--wait", "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::TIMEOUT), "{output:?}");
    assert!(
        stderr(&output)
            .starts_with("error: timed out after 1s waiting for the restart of gameruntime/g1")
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn stop_and_start_set_the_desired_state_and_wait_for_the_phase() {
    let world = World::new("rtctl-stop-start").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();

    world.rtctl().args(["stop", "g1"]).assert().success();
    let stopped = world.get("g1").await.unwrap();
    assert_eq!(stopped.spec.state, DesiredState::Stopped);
    assert_eq!(
        stopped
            .metadata
            .annotations
            .get(ANNOTATION_OP_SOURCE)
            .map(String::as_str),
        Some("admin_cli")
    );
    world
        .rtctl()
        .args(["stop", "g1"])
        .assert()
        .success()
        .stdout("gameruntime/g1 unchanged (spec.state is already Stopped)\n");

    // start --wait needs the controller's status for the new generation.
    world.put_status("g1", &running_status(1)).await;
    let mut start = world.spawn(&["start", "g1", "--wait", "--timeout", "30s"]);
    start.line_with("start requested");
    world
        .until_doc("g1", "rtctl start to set spec.state", |doc| {
            doc.spec.state == DesiredState::Running
        })
        .await;
    let generation = world.get("g1").await.unwrap().metadata.generation.unwrap();
    world.put_status("g1", &running_status(generation)).await;
    let (status, rest, stderr) = start.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("gameruntime/g1 is Running"),
        "{rest:?}"
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn delete_removes_the_document_and_waits_for_the_status_to_go() {
    let world = World::new("rtctl-delete").await;
    let file = world.file("games.yaml", &format!("{}---\n{}", game("g1"), game("g2")));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();

    world
        .rtctl()
        .args(["delete", "g1"])
        .assert()
        .success()
        .stdout("gameruntime/g1 deleted\n");
    assert_eq!(world.names().await, ["g2"]);

    world.put_status("g2", &running_status(1)).await;
    let mut delete = world.spawn(&[
        "delete",
        "-f",
        file.to_str().unwrap(),
        "--ignore-not-found",
        "--wait",
    ]);
    delete.line_with("gameruntime/g2 deleted");
    assert_eq!(world.names().await, Vec::<String>::new());
    world.delete_status("g2").await;
    let (status, rest, stderr) = delete.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("gameruntime/g2 removed"),
        "{rest:?}"
    );

    let output = world.rtctl().args(["delete", "g1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(exit::NOT_FOUND), "{output:?}");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn history_and_describe_show_the_operations_newest_first() {
    let world = World::new("rtctl-history").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    simulate_restart(
        &world,
        "g1",
        "REQ-9",
        Some((ErrorCode::StartFailed, "boom")),
    )
    .await;

    let output = world.rtctl().args(["history", "g1"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let kinds: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(2).unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["start", "stop", "restart"], "newest first:\n{text}");
    assert!(text.contains("REQ-9"), "{text}");
    assert!(text.contains("start_failed: boom"), "{text}");

    let output = world
        .rtctl()
        .args(["history", "g1", "--limit", "1", "-o", "json"])
        .output()
        .unwrap();
    let entries: Vec<HistoryEntry> = serde_json::from_slice(&output.stdout).expect("JSON entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].op_kind, OpKind::Start);

    let output = world.rtctl().args(["describe", "g1"]).output().unwrap();
    let text = stdout(&output);
    assert!(text.starts_with("Name:"), "{text}");
    assert!(text.contains("History (newest first"), "{text}");
    assert!(text.contains("REQ-9"), "{text}");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn wait_ends_when_the_phase_or_condition_holds_and_times_out_otherwise() {
    let world = World::new("rtctl-wait").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();

    let output = world
        .rtctl()
        .args(["wait", "g1", "--for=condition=Ready", "--timeout", "1s"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::TIMEOUT), "{output:?}");

    let wait = world.spawn(&["wait", "g1", "--for=phase=Running", "--timeout", "30s"]);
    world.put_status("g1", &running_status(1)).await;
    let (status, rest, stderr) = wait.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("gameruntime/g1 is Running")
    );
    world
        .rtctl()
        .args(["wait", "g1", "--for=condition=Ready"])
        .assert()
        .success()
        .stdout("gameruntime/g1 condition Ready=True\n");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_stale_resource_version_is_a_conflict_unless_forced() {
    let world = World::new("rtctl-conflict").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let output = world
        .rtctl()
        .args(["get", "g1", "-o", "yaml"])
        .output()
        .unwrap();
    let old = stdout(&output);
    world.rtctl().args(["stop", "g1"]).assert().success();

    let edited = world.file(
        "edited.yaml",
        &old.replace(
            "image: rtmanager-test/engine:1",
            "image: rtmanager-test/engine:2",
        ),
    );
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&edited)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::CONFLICT), "{output:?}");
    assert!(
        stderr(&output).contains("was changed since resourceVersion"),
        "{output:?}"
    );
    assert_eq!(
        world.get("g1").await.unwrap().spec.image,
        "rtmanager-test/engine:1"
    );

    world
        .rtctl()
        .args(["apply", "--force", "-f"])
        .arg(&edited)
        .assert()
        .success()
        .stdout("gameruntime/g1 configured\n");
    assert_eq!(
        world.get("g1").await.unwrap().spec.image,
        "rtmanager-test/engine:2"
    );
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn an_unknown_name_is_not_found() {
    let world = World::new("rtctl-not-found").await;
    for args in [
        &["get", "nope"][..],
        &["describe", "nope"],
        &["history", "nope"],
        &["restart", "nope"],
        &["stop", "nope"],
        &["delete", "nope"],
    ] {
        let output = world.rtctl().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(exit::NOT_FOUND),
            "{args:?}: {output:?}"
        );
        assert_eq!(
            stderr(&output),
            format!(
                "error: gameruntime/nope not found under prefix {}; list the games with `rtctl get`\n",
                world.keys.prefix()
            ),
            "{args:?}"
        );
    }
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn an_unreachable_etcd_is_named_within_five_seconds() {
    let world = World::new("rtctl-unreachable").await;
    let file = world.file("g1.yaml", &game("g1"));
    for args in [&["get"][..], &["apply", "-f", file.to_str().unwrap()]] {
        let started = Instant::now();
        let output = world
            .rtctl()
            .env("RTM_ETCD_ENDPOINTS", "http://127.0.0.1:1")
            .args(args)
            .output()
            .unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(
            output.status.code(),
            Some(exit::UNAVAILABLE),
            "{args:?}: {output:?}"
        );
        let message = stderr(&output);
        assert!(
            message.starts_with("error: cannot reach etcd at http://127.0.0.1:1 "),
            "{message}"
        );
        assert!(message.contains("RTM_ETCD_ENDPOINTS"), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");
    }
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn malformed_yaml_is_invalid_and_names_the_file_and_line() {
    let world = World::new("rtctl-malformed").await;
    let file = world.file("bad.yaml", &format!("{}  ports: [\n", game("g1")));
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::INVALID), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("error: {}: document 1: line ", file.display())),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert_eq!(world.names().await, Vec::<String>::new());
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn an_unknown_field_is_invalid_and_names_its_path() {
    let world = World::new("rtctl-unknown-field").await;
    let file = world.file("typo.yaml", &game("g1").replace("  image:", "  imagee:"));
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::INVALID), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: {}: document 1 (g1): spec.imagee: unknown field `imagee`",
            file.display()
        )),
        "{message}"
    );
    assert_eq!(world.names().await, Vec::<String>::new());
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_bad_name_is_refused_before_any_key_is_built() {
    let world = World::new("rtctl-bad-name").await;
    for args in [
        &["get", "../x"][..],
        &["describe", "Game_1"],
        &["restart", "./b"],
        &["delete", ".."],
        &["history", "../../etc"],
        &["stop", "gameruntime/Game_1"],
    ] {
        // Against an etcd that is not there: a bad name must fail before any lookup.
        let output = world
            .rtctl()
            .env("RTM_ETCD_ENDPOINTS", "http://127.0.0.1:1")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(exit::INVALID),
            "{args:?}: {output:?}"
        );
        let message = stderr(&output);
        assert!(
            message.starts_with(&format!(
                "error: invalid name {:?}: a name must be",
                args[1].trim_start_matches("gameruntime/")
            )),
            "{message}"
        );
    }
    // A `TYPE/NAME` of a type rtctl does not know is a usage error naming the known types,
    // on every verb.
    for args in [
        &["get", "pod/x"][..],
        &["describe", "pods/x"],
        &["restart", "a/b"],
        &["delete", "svc/x"],
        &["history", "deploy/x"],
    ] {
        let output = world
            .rtctl()
            .env("RTM_ETCD_ENDPOINTS", "http://127.0.0.1:1")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let message = stderr(&output);
        assert!(
            message.contains("knows no resource type")
                && message.contains("gameruntime (gameruntimes, gr)")
                && message.contains("node (nodes, no)"),
            "{args:?}: {message}"
        );
    }
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_config_file_context_supplies_the_connection() {
    let world = World::new("rtctl-context").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let config = world.file(
        "config.yaml",
        &format!(
            "currentContext: broken\ncontexts:\n  - name: broken\n    endpoints: \
             http://127.0.0.1:1\n  - name: test\n    endpoints: [{}]\n    prefix: {}\n",
            etcd_endpoints().join(", "),
            world.keys.prefix()
        ),
    );
    let rtctl = || {
        let mut command = assert_cmd::Command::new(RTCTL);
        command
            .env_remove("RTM_ETCD_ENDPOINTS")
            .env_remove("RTM_PREFIX")
            .env("RTMCONFIG", &config)
            .timeout(RUN);
        command
    };
    rtctl()
        .args(["get", "-o", "name", "--context", "test"])
        .assert()
        .success()
        .stdout("gameruntime/g1\n");
    let output = rtctl().args(["get"]).output().unwrap();
    assert_eq!(output.status.code(), Some(exit::UNAVAILABLE), "{output:?}");
    assert!(stderr(&output).contains("http://127.0.0.1:1"));
    // A flag beats the context.
    rtctl()
        .args(["get", "-o", "name", "--prefix", world.keys.prefix()])
        .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
        .assert()
        .success()
        .stdout("gameruntime/g1\n");
    world.done().await;
}

/// A game for the tests with a real controller: the test engine, no host port (several such
/// games, and other people's tests, run on one Docker host).
fn engine_game(name: &str) -> String {
    format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {}\n  stopTimeout: 5s\n",
        common::docker::IMAGE_1
    )
}

/// One test with a real controller at a time: they time restarts in seconds on a small
/// machine.
static CONTROLLER_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a game may take to start or be recreated by the real controller (about a second
/// each; the rest is slack for a loaded machine).
const CONVERGE: Duration = Duration::from_secs(60);

/// Garbage where a document belongs: not YAML, not UTF-8.
const GARBAGE: &[u8] = b"\xff\xfe{{not: a gameruntime";

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_corrupt_document_is_shown_invalid_refused_by_apply_and_replaced_by_apply_force() {
    let world = World::new("rtctl-corrupt").await;
    let good = world.file("g2.yaml", &game("g2"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&good)
        .assert()
        .success();
    let key = world.keys.gameruntime("g1");
    world
        .store
        .txn(Txn::new().put(key.clone(), GARBAGE.to_vec()))
        .await
        .expect("write garbage");
    world.put_status("g1", &running_status(1)).await;

    // The listing shows it, as Invalid, and says why; the exit code says something is wrong.
    let output = world.rtctl().args(["get"]).output().unwrap();
    assert_eq!(output.status.code(), Some(exit::CORRUPT), "{output:?}");
    let table = stdout(&output);
    let row = table
        .lines()
        .find(|l| l.starts_with("g1 "))
        .unwrap_or_else(|| panic!("no row for g1: {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["g1", "Invalid", "Running", "True"], "{row}");
    assert!(table.lines().any(|l| l.starts_with("g2 ")), "{table}");
    let message = stderr(&output);
    assert!(
        message.contains(&key) && message.contains("not a valid GameRuntime"),
        "{message}"
    );

    // By name: not "not found".
    for args in [&["get", "g1"][..], &["describe", "g1"]] {
        let output = world.rtctl().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(exit::CORRUPT),
            "{args:?}: {output:?}"
        );
        let message = stderr(&output);
        assert!(
            message.starts_with("error: gameruntime/g1 is invalid: the value stored at ")
                && message.contains(&key)
                && message.contains("--force"),
            "{args:?}: {message}"
        );
    }
    let described = world.rtctl().args(["describe", "g1"]).output().unwrap();
    let text = stdout(&described);
    assert!(
        text.contains("State:                     Invalid\n") && text.contains("Reason:"),
        "{text}"
    );

    // JSON leaves it out, and says so.
    let output = world.rtctl().args(["get", "-o", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(exit::CORRUPT), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    // A list (no name was given), holding the one readable game.
    assert_eq!(json["kind"], "GameRuntimeList", "{json}");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["items"][0]["metadata"]["name"], "g2", "{json}");
    assert!(
        stderr(&output).contains("left out of the output"),
        "{output:?}"
    );

    // A plain apply refuses to overwrite what it cannot read, naming the key and --force.
    let file = world.file("g1.yaml", &game("g1"));
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::CORRUPT), "{output:?}");
    let message = stderr(&output);
    assert!(
        message.contains(&key)
            && message.contains("rerun with --force")
            && !message.contains("re-apply"),
        "{message}"
    );
    let raw = world.store.get(&key).await.unwrap().expect("the key stays");
    assert_eq!(raw.value, GARBAGE, "a plain apply wrote nothing");

    // apply --force replaces it.
    world
        .rtctl()
        .args(["apply", "--force", "-f"])
        .arg(&file)
        .assert()
        .success()
        .stdout("gameruntime/g1 configured\n");
    let doc = world.get("g1").await.expect("a readable document now");
    assert_eq!(doc.spec.image, "rtmanager-test/engine:1");
    world.rtctl().args(["get", "g1"]).assert().success();
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn describe_names_the_lease_holder_and_a_restart_wait_says_who_blocks_it() {
    let world = World::new("rtctl-lease").await;
    let file = world.file("g1.yaml", &game("g1"));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    let describe = || async {
        let output = world.rtctl().args(["describe", "g1"]).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        stdout(&output)
    };
    assert!(
        describe()
            .await
            .contains("Lease:                     <none> (no operation holds the game)\n"),
        "no lease key yet"
    );

    // A lease key put by hand: no etcd lease behind it.
    let record = br#"{"holder":"ghost-1","token":"t-hand","opId":"op-hand"}"#.to_vec();
    world
        .store
        .txn(Txn::new().put(world.keys.lease("g1"), record.clone()))
        .await
        .expect("put a hand-made lease key");
    let text = describe().await;
    let line = text
        .lines()
        .find(|l| l.starts_with("Lease:"))
        .unwrap_or_else(|| panic!("no Lease line in {text}"));
    assert!(
        line.contains("held by ghost-1 for operation op-hand since revision ")
            && line.ends_with(
                "; not attached to any etcd lease (forged or hand-made); the controller takes \
                 it over"
            ),
        "{line}"
    );

    // A restart waiting on it says who holds it, once, before it times out.
    let mut restart = world.spawn(&["restart", "g1", "--wait", "--timeout", "9s"]);
    let notice = restart.stderr_with("waits for its lease");
    assert!(
        notice.starts_with("note: gameruntime/g1 waits for its lease: held by ghost-1"),
        "{notice}"
    );
    let (status, _, errors) = restart.finish();
    assert_eq!(status.code(), Some(exit::TIMEOUT), "{errors}");
    assert_eq!(
        errors
            .lines()
            .filter(|l| l.starts_with("note:") && l.contains("waits for its lease"))
            .count(),
        1,
        "told once: {errors}"
    );
    let last = errors.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: timed out after 9s waiting for the restart of gameruntime/g1")
            && last.contains("waits for its lease: held by ghost-1"),
        "the timeout names the holder too: {last}"
    );

    // Attached to a live etcd lease of no live controller.
    let grant = world
        .store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("grant a lease");
    world
        .store
        .txn(Txn::new().put_with_lease(world.keys.lease("g1"), record, grant.id))
        .await
        .expect("attach the lease key");
    let text = describe().await;
    assert!(
        text.contains(&format!(
            "; attached to etcd lease {:x} (no live controller",
            grant.id
        )),
        "{text}"
    );
    world
        .store
        .revoke_lease(grant.id)
        .await
        .expect("revoke the lease");
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_watch_rides_out_an_etcd_restart_and_prints_the_next_change() {
    let mut cluster = etcd_cluster::EtcdCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let world = World::new("rtctl-watch-outage").await;
    let rtctl = || {
        let mut command = world.rtctl();
        command.env("RTM_ETCD_ENDPOINTS", endpoints.join(","));
        command
    };
    let file = world.file("g1.yaml", &game("g1"));
    rtctl().args(["apply", "-f"]).arg(&file).assert().success();

    let mut watch = world.spawn_on(&endpoints, &["get", "-w"]);
    watch.line_with("NAME");
    watch.line_with("g1 ");

    cluster.kill(0);
    let notice = watch.stderr_with("watch interrupted");
    assert!(notice.ends_with("; reconnecting"), "{notice}");
    // An outage of some seconds (a restart after a crash, a slow disk): longer than any fixed
    // number of quick retries rides out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.restart(0);
    cluster.wait_healthy(Duration::from_secs(30)).await;
    // Changed at once, perhaps before the watch is back: it must not be lost.
    let stopped = world.file("g1.yaml", &(game("g1") + "  state: Stopped\n"));
    rtctl()
        .args(["apply", "-f"])
        .arg(&stopped)
        .assert()
        .success();
    let line = watch.line_with("Stopped");
    assert!(line.starts_with("g1 "), "{line}");
    watch.stderr_with("watch resumed");
    // A second change, well after the reconnect.
    let second = world.file("g2.yaml", &game("g2"));
    rtctl()
        .args(["apply", "-f"])
        .arg(&second)
        .assert()
        .success();
    watch.line_with("g2 ");

    // Ctrl-C still ends it, cleanly.
    watch.interrupt();
    let (status, _, errors) = watch.finish();
    assert!(status.success(), "{status:?}: {errors}");
    assert!(
        !errors.lines().any(|l| l.starts_with("error:")),
        "an outage ridden out is no error: {errors}"
    );
}

/// The real controller on the world's prefix, and the test engine's container removed at the
/// end whatever happens.
async fn controller_for(world: &World, name: &str) -> process::ControllerProcess {
    common::docker::docker().await;
    process::ControllerOptions::new(&world.keys, name)
        .start()
        .await
}

/// Applies the test engine's game from `file` with rtctl and waits until it is Ready.
fn apply_engine_game(world: &World, file: &str, game_name: &str) {
    let file = world.file(file, &engine_game(game_name));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&file)
        .assert()
        .success();
    world
        .rtctl()
        .args([
            "wait",
            game_name,
            "--for=condition=Ready",
            "--timeout",
            "60s",
        ])
        .timeout(CONVERGE)
        .assert()
        .success();
}

/// Deletes the game and waits until the controller removed its container.
async fn remove_game(world: &World, game: &str) {
    world
        .rtctl()
        .args(["delete", game, "--wait", "--timeout", "60s"])
        .assert()
        .success();
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn concurrent_restart_waits_of_one_game_all_report_the_restart_that_honoured_them() {
    let _serial = CONTROLLER_TESTS.lock().await;
    let world = World::new("rtctl-restart-crowd").await;
    let game_name = common::docker::game("crowd");
    let _cleanup = common::docker::Cleanup::new(&[&rtm_controller::runtime::container_name(
        world.keys.prefix(),
        &game_name,
    )]);
    let _controller = controller_for(&world, "crowd").await;
    apply_engine_game(&world, "crowd.yaml", &game_name);
    let before = world
        .history()
        .recent(&game_name, 100)
        .await
        .expect("read the history")
        .len();

    const CROWD: usize = 20;
    let waiters: Vec<Running> = (0..CROWD)
        .map(|_| world.spawn(&["restart", &game_name, "--wait", "--timeout", "90s"]))
        .collect();
    let mut outcomes = Vec::new();
    for waiter in waiters {
        outcomes.push(finish_within(waiter, Duration::from_secs(120)));
    }
    let entries = world
        .history()
        .recent(&game_name, 100)
        .await
        .expect("read the history");
    let restarts: Vec<&HistoryEntry> = entries[..entries.len() - before]
        .iter()
        .filter(|e| e.op_kind == OpKind::Restart)
        .collect();
    for (i, (status, out, errors)) in outcomes.iter().enumerate() {
        assert!(
            status.success(),
            "waiter {i} of {CROWD} failed ({status:?}): stdout {out:?}, stderr {errors}; \
             restarts: {}",
            process::timeline(&entries)
        );
        assert!(
            out.iter().any(|l| l.contains(" restarted")),
            "waiter {i}: {out:?}"
        );
    }
    eprintln!(
        "{CROWD} concurrent requests were answered by {} restarts",
        restarts.len()
    );
    assert!(
        !restarts.is_empty() && restarts.len() <= CROWD / 2,
        "{} restarts for {CROWD} requests: {}",
        restarts.len(),
        process::timeline(&entries)
    );
    remove_game(&world, &game_name).await;
    world.done().await;
}

/// Like [`Running::finish`], with a longer bound.
fn finish_within(mut running: Running, limit: Duration) -> (ExitStatus, Vec<String>, String) {
    let deadline = Instant::now() + limit;
    while running.child.try_wait().expect("poll rtctl").is_none() {
        if Instant::now() > deadline {
            let _ = running.child.kill();
            panic!(
                "rtctl did not exit within {limit:?}; stderr: {}",
                running.stderr_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut seen = std::mem::take(&mut running.seen);
    let (status, mut rest, errors) = running.finish();
    seen.append(&mut rest);
    (status, seen, errors)
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn restart_wait_follows_a_restart_aborted_by_recovery_to_the_real_outcome() {
    let _serial = CONTROLLER_TESTS.lock().await;
    let world = World::new("rtctl-restart-aborted").await;
    let game_name = common::docker::game("aborted");
    let container = rtm_controller::runtime::container_name(world.keys.prefix(), &game_name);
    let _cleanup = common::docker::Cleanup::new(&[&container]);
    let mut controller = controller_for(&world, "first").await;
    apply_engine_game(&world, "aborted.yaml", &game_name);
    let old_container = world
        .docs
        .get_status(&game_name)
        .await
        .expect("read the status")
        .and_then(|s| s.container_id)
        .expect("a running game has a container");
    // No controller while the request is made: the "crashed" one is gone.
    controller.terminate();
    controller.wait_exit(Duration::from_secs(30)).await;

    let mut waiter = world.spawn(&[
        "restart",
        &game_name,
        "--ref",
        "REQ-ABORTED",
        "--wait",
        "--timeout",
        "90s",
    ]);
    waiter.line_with("restart requested (ref REQ-ABORTED)");
    // What recovery leaves when a controller died in the middle of this request's restart.
    let mut lost = HistoryEntry::begin(&game_name, "op-lost", OpKind::Restart, OpSource::AdminCli);
    lost.source_ref = "REQ-ABORTED".into();
    lost.container_id_before = Some(old_container.clone());
    let appended = world
        .history()
        .append(None, lost)
        .await
        .expect("append the interrupted restart");
    let mut resolved = appended.clone();
    resolved.entry.fail(
        ErrorCode::Aborted,
        "interrupted before it finished (controller crash or shutdown); resolved by the test",
    );
    world
        .history()
        .finish(&resolved, None)
        .await
        .expect("resolve it as aborted");
    waiter.stderr_with("was aborted by recovery");

    // A peer takes over and does the restart for real.
    let _peer = controller_for(&world, "peer").await;
    let (status, out, errors) = finish_within(waiter, CONVERGE);
    assert!(
        status.success(),
        "exit {status:?}; stdout {out:?}; stderr {errors}"
    );
    assert!(out.iter().any(|l| l.contains(" restarted")), "{out:?}");
    let new_container = world
        .docs
        .get_status(&game_name)
        .await
        .expect("read the status")
        .and_then(|s| s.container_id)
        .expect("a container after the restart");
    assert_ne!(new_container, old_container, "a new container ran");
    remove_game(&world, &game_name).await;
    world.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn apply_refuses_a_new_claimant_of_another_games_host_port_naming_the_owner() {
    let world = World::new("rtctl-ports").await;
    let with_port = |name: &str, port: u16| game_on_port(name, Some(port));
    let owner = world.file("owner.yaml", &with_port("owner", 17100));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&owner)
        .assert()
        .success();

    let claimant = world.file("claimant.yaml", &with_port("claimant", 17100));
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&claimant)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::CONFLICT), "{output:?}");
    assert!(
        stderr(&output).contains("host port 17100/tcp belongs to game owner"),
        "{output:?}"
    );
    assert!(world.get("claimant").await.is_none(), "nothing written");

    // Two documents of one apply asking for one port: refused before either is written.
    let both = world.file(
        "both.yaml",
        &format!(
            "{}---\n{}",
            with_port("first", 17101),
            with_port("second", 17101)
        ),
    );
    let output = world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&both)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit::CONFLICT), "{output:?}");
    assert!(world.get("first").await.is_none(), "all or nothing");

    // The owner re-applied with its port is fine; another port is fine.
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&owner)
        .assert()
        .success();
    let elsewhere = world.file("elsewhere.yaml", &with_port("claimant", 17102));
    world
        .rtctl()
        .args(["apply", "-f"])
        .arg(&elsewhere)
        .assert()
        .success();
    world.done().await;
}
