//! `rtctl logs`, crash forensics and events end to end: the real `rtmanager` and `rtctl`
//! against the real etcd and Docker. An engine that prints and crashes is replaced, and what
//! it printed is still there after `docker rm` (`logs --previous`, `describe`, `history`); a
//! running engine is followed live (`logs -f`) from its Docker engine; a crash loop is one
//! `BackOff` event whose count grows (`rtctl events`, `-w`).
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker); `scripts/test` runs them.

use rtm_testkit as common;
use rtm_testkit::process;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rtm_core::model::parse::parse_documents;
use rtm_core::records::Documents;
use rtm_core::records::events::{Event, EventKind, EventReason, Events};
use rtm_core::records::previous::PreviousContainers;
use rtm_core::store::{Keys, Store, Txn};

use common::docker::IMAGE_1;
use common::{etcd, etcd_endpoints, unique_keys};
use process::{ControllerOptions, WipeOnDrop, eventually};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// A start of the test engine takes about a second; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);

struct World {
    store: Arc<dyn Store>,
    keys: Keys,
    docs: Documents,
    _wipe: WipeOnDrop,
}

impl Drop for World {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
    }
}

#[derive(Debug)]
struct Said {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn world(test: &str) -> World {
    let store: Arc<dyn Store> = etcd().await;
    let keys = unique_keys(test);
    World {
        docs: Documents::new(store.clone(), keys.clone()),
        _wipe: WipeOnDrop(keys.clone()),
        store,
        keys,
    }
}

impl World {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(RTCTL);
        command
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null");
        command
    }

    fn run(&self, args: &[&str]) -> Said {
        let output = assert_cmd::Command::from_std(self.command(args))
            .timeout(RUN)
            .output()
            .expect("rtctl runs");
        Said {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn apply(&self, name: &str, command: &str) {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: {IMAGE_1}\n  stopTimeout: 2s\n  command: [sh, -c, {command:?}]\n"
        );
        let doc = parse_documents(&yaml).expect("fixture parses").remove(0);
        self.docs.create(&doc).await.expect("create the game");
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker (scripts/test)"]
async fn a_crashed_engine_s_last_words_outlive_its_container() {
    let w = world("logs-previous").await;
    let _controller = ControllerOptions::new(&w.keys, "logs-previous")
        .start()
        .await;
    w.apply(
        "crasher",
        "echo loading map de_dust; echo 'panic: map de_dust not found'; echo 'on stderr' >&2; exit 3",
    )
    .await;

    let previous = PreviousContainers::new(w.store.clone(), w.keys.clone());
    let kept = eventually(
        CONVERGE,
        "the crashed container's output is kept",
        || async {
            match previous.read("crasher").await {
                Ok(Some(kept)) => Ok(kept),
                Ok(None) => Err("nothing kept yet".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    assert_eq!(kept.ended.exit_code, Some(3), "{kept:?}");
    assert!(!kept.ended.oom_killed);
    // The container it came from is gone: only etcd has its words now.
    let inspect = common::docker::docker_cli(&["inspect", &kept.container_id]);
    assert!(
        !inspect.status.success(),
        "the crashed container was removed"
    );

    let said = w.run(&["logs", "crasher", "--previous"]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    // Both streams, each in its order (Docker reads the two pipes apart, so a line on one
    // may land before an earlier one on the other).
    let mut lines: Vec<&str> = said.stdout.lines().collect();
    let stderr_at = lines.iter().position(|l| *l == "on stderr");
    assert!(stderr_at.is_some(), "{:?}", said.stdout);
    lines.retain(|l| *l != "on stderr");
    assert_eq!(
        lines,
        ["loading map de_dust", "panic: map de_dust not found"]
    );
    assert!(said.stderr.contains("exited 3"), "{}", said.stderr);
    let stamped = w.run(&[
        "logs",
        "crasher",
        "--previous",
        "--timestamps",
        "--tail",
        "3",
    ]);
    let line = stamped
        .stdout
        .lines()
        .find(|l| l.ends_with(" panic: map de_dust not found"))
        .unwrap_or_else(|| panic!("{stamped:?}"));
    let (stamp, rest) = line
        .split_once(' ')
        .expect("a timestamp, a space, the line");
    assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
    assert_eq!(rest, "panic: map de_dust not found");

    // The replacing start finishes its entry with how the container ended (the entry of
    // the operation that kept the output: its op_id).
    eventually(
        CONVERGE,
        "the replacing start's entry records the end",
        || async {
            let history = w.run(&["history", "crasher", "-o", "json"]);
            let entries: Vec<serde_json::Value> =
                serde_json::from_str(&history.stdout).map_err(|e| format!("{e}: {history:?}"))?;
            entries
                .iter()
                .find(|e| {
                    e["op_id"] == kept.op_id.as_str()
                        && e["op_kind"] == "start"
                        && e["outcome"] != "in_progress"
                })
                .map(|e| e["ended"]["exit_code"] == 3)
                .filter(|ended| *ended)
                .ok_or_else(|| history.stdout.clone())
        },
    )
    .await;
    let table = w.run(&["history", "crasher"]);
    assert!(table.stdout.contains("exited 3"), "{}", table.stdout);
    let describe = w.run(&["describe", "crasher"]);
    assert!(
        describe.stdout.contains("Last Termination:"),
        "{}",
        describe.stdout
    );
    assert!(
        describe.stdout.contains("rtctl logs crasher --previous"),
        "{}",
        describe.stdout
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker (scripts/test)"]
async fn logs_follow_a_running_engine_and_say_where_a_game_is_not() {
    let w = world("logs-follow").await;
    let controller = ControllerOptions::new(&w.keys, "logs-follow").start().await;
    w.apply(
        "ticker",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    )
    .await;

    let running = w.run(&["wait", "ticker", "--for=phase=Running", "--timeout", "60s"]);
    assert_eq!(running.code, Some(0), "{}", running.stderr);
    let mut child = w
        .command(&["logs", "ticker", "-f", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rtctl starts");
    let (sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 6 {
        match lines.recv_timeout(RUN) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let still_following = child.try_wait().expect("rtctl's state").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_following, "-f keeps following a running engine");
    assert_eq!(seen.len(), 6, "lines followed: {seen:?}");
    let ticks: Vec<u64> = seen
        .iter()
        .map(|l| {
            l.strip_prefix("tick ")
                .and_then(|n| n.parse().ok())
                .expect("tick N")
        })
        .collect();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "live, in order, none lost: {ticks:?}"
    );

    let tail = w.run(&["logs", "ticker", "--tail", "2"]);
    assert_eq!(tail.code, Some(0), "{}", tail.stderr);
    assert_eq!(tail.stdout.lines().count(), 2, "{}", tail.stdout);

    // A game this engine does not run: not found, saying where it runs (as its status
    // tells; its controller, which would run it here, is stopped first).
    drop(controller);
    common::docker::remove_installation_containers(w.keys.prefix());
    w.apply("elsewhere", "sleep 1000").await;
    let txn = Txn::new().put(
        w.keys.status("elsewhere"),
        br#"{"phase":"Running","node":"node-7"}"#.to_vec(),
    );
    w.store.txn(txn).await.unwrap();
    let said = w.run(&["logs", "elsewhere"]);
    assert_eq!(said.code, Some(4), "{}", said.stderr);
    assert!(said.stderr.contains("node node-7"), "{}", said.stderr);
    let said = w.run(&["logs", "elsewhere", "--previous"]);
    assert_eq!(said.code, Some(4), "{}", said.stderr);
    assert!(
        said.stderr.contains("no previous container"),
        "{}",
        said.stderr
    );
    let said = w.run(&[
        "logs",
        "elsewhere",
        "--docker-host",
        "unix:///nonexistent.sock",
    ]);
    assert_eq!(said.code, Some(6), "Docker unreachable: {}", said.stderr);
    // A forged record is named by its key.
    let txn = Txn::new().put(w.keys.previous("elsewhere"), b"not json".to_vec());
    w.store.txn(txn).await.unwrap();
    let said = w.run(&["logs", "elsewhere", "--previous"]);
    assert_eq!(said.code, Some(12), "{}", said.stderr);
    assert!(
        said.stderr.contains(&w.keys.previous("elsewhere")),
        "{}",
        said.stderr
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker (scripts/test)"]
async fn a_crash_loop_is_one_back_off_event_whose_count_grows() {
    let w = world("events-backoff").await;
    let controller = ControllerOptions::new(&w.keys, "events-backoff")
        .start()
        .await;
    w.apply("looper", "echo starting; exit 1").await;
    w.apply("steady", "sleep 1000").await;

    let events = Events::new(w.store.clone(), w.keys.clone());
    let backoff = eventually(
        CONVERGE,
        "the crash loop's BackOff event counts two crashes",
        || async {
            let listed = events
                .list(Some("looper"))
                .await
                .map_err(|e| e.to_string())?;
            let listed: Vec<Event> = listed
                .into_iter()
                .map(|e| e.map_err(|c| c.to_string()))
                .collect::<Result<_, _>>()?;
            match listed.as_slice() {
                [one] if one.reason == EventReason::BackOff && one.count >= 2 => Ok(one.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(backoff.kind, EventKind::Warning);
    assert!(
        backoff.message.contains("exited with code 1"),
        "{}",
        backoff.message
    );
    assert!(backoff.last_seen > backoff.first_seen || backoff.count >= 2);
    // One etcd write per counted crash, none per resync: the metric and the count agree
    // (the count may move on between the two reads, never behind).
    let written = controller
        .metric("rtmanager_events_total{reason=\"BackOff\"}")
        .await;
    let stored = events.list(Some("looper")).await.unwrap()[0]
        .clone()
        .unwrap()
        .count;
    assert!(
        written as u64 <= stored && stored <= written as u64 + 1,
        "{written} writes, count {stored}"
    );
    let key = w
        .store
        .get(&w.keys.event("looper", EventReason::BackOff))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(key.lease, 0, "attached to a lease: it expires");

    // A game that runs well has no events, through resyncs (5 s in tests).
    let said = w.run(&["events", "steady"]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    assert_eq!(said.stdout, "", "no events: {}", said.stdout);
    let said = w.run(&["events"]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let rows: Vec<&str> = said.stdout.lines().collect();
    assert!(rows[0].starts_with("LAST SEEN"), "{}", said.stdout);
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.contains("BackOff") && r.contains("gameruntime/looper")),
        "{}",
        said.stdout
    );
    let describe = w.run(&["describe", "looper"]);
    assert!(
        describe.stdout.contains("Warning   BackOff"),
        "{}",
        describe.stdout
    );

    // -w -o json: one compact object per line, the listing first.
    let mut child = w
        .command(&["events", "looper", "-w", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("rtctl starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let first: Event =
        serde_json::from_str(&lines.recv_timeout(RUN).expect("the listing")).unwrap();
    // The next crash (after a back-off of at most 40 s here) is a repeat, told as it lands.
    let next: Event =
        serde_json::from_str(&lines.recv_timeout(CONVERGE).expect("a repeat")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(next.reason, EventReason::BackOff);
    assert!(
        next.count > first.count,
        "{} then {}",
        first.count,
        next.count
    );

    // A forged event is shown for what it is, and never changes what the controller does.
    let txn = Txn::new().put(
        w.keys.event("steady", EventReason::HealthCheckFailed),
        b"{}".to_vec(),
    );
    w.store.txn(txn).await.unwrap();
    let said = w.run(&["events", "steady"]);
    assert_eq!(said.code, Some(12), "{}", said.stderr);
    assert!(
        said.stderr.contains("/events/steady/HealthCheckFailed"),
        "{}",
        said.stderr
    );
}
