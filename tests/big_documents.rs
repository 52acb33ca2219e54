//! Listing by bytes, end to end: documents of the maximum size (`MAX_DOCUMENT_BYTES`), and
//! records larger still under the controller's prefixes, against the real etcd — far more
//! bytes than one gRPC answer of the client's default 4 MiB holds.
//!
//! - the store lists them all at one revision, and reads the newest of a log of them;
//! - `rtctl apply` writes 40 maximum-size documents and `rtctl get` shows all 40;
//! - a controller converges them, and a controller restarted after one game's container was
//!   killed becomes ready (its first list completes) and brings the game back.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker); `scripts/test` runs them, one
//! at a time.

use rtm_testkit as common;
use rtm_testkit::process;

use std::process::Command;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerState, DockerRuntime, container_name};
use rtm_core::model::parse::{MAX_DOCUMENT_BYTES, parse_documents, to_yaml};
use rtm_core::model::{GameRuntime, Phase};
use rtm_core::records::Documents;
use rtm_core::store::{Store, Txn};

use common::docker::{Cleanup, IMAGE_1, docker_cli, game as game_id};
use common::{etcd, etcd_endpoints, unique_keys};
use process::{ControllerOptions, WipeOnDrop, containers_of, describe, eventually, summary};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Documents of the maximum size: 40 × 256 KiB = 10 MiB, two and a half times the client's
/// default receive limit.
const GAMES: usize = 40;

/// 40 starts of the test engine on a small machine, with slack.
const CONVERGE: Duration = Duration::from_secs(120);

/// One test at a time: 40 containers each.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Running game of the test image whose stored form is exactly `MAX_DOCUMENT_BYTES` long
/// (an annotation pads it).
fn largest_document(name: &str) -> GameRuntime {
    let with_pad = |pad: usize| {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
             annotations:\n    test.rtmanager.dev/pad: {}\nspec:\n  image: {IMAGE_1}\n",
            "x".repeat(pad)
        );
        parse_documents(&yaml)
            .expect("the padded document parses")
            .remove(0)
    };
    let base = to_yaml(&with_pad(1)).len() - 1;
    let doc = with_pad(MAX_DOCUMENT_BYTES - base);
    assert_eq!(
        to_yaml(&doc).len(),
        MAX_DOCUMENT_BYTES,
        "the pad makes the document exactly the maximum size"
    );
    doc
}

fn rtctl(keys: &rtm_core::store::Keys, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(RTCTL);
    command
        .args(args)
        .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
        .env("RTM_PREFIX", keys.prefix())
        .env("RTMCONFIG", "/dev/null");
    common::docker::run_bounded(command, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("rtctl {args:?} did not finish within 60 s"))
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn records_larger_than_a_default_grpc_answer_are_listed_whole_at_one_revision() {
    let _serial = SERIAL.lock().await;
    let store = etcd().await;
    let keys = unique_keys("big-records");
    let _wipe = WipeOnDrop(keys.clone());
    // Forged status records as large as etcd's default request limit (1.5 MiB) allows: the
    // kind of record nothing of ours writes, and any writer of the prefix can.
    let record = vec![b'x'; 1_400 * 1024];
    let count = 12;
    for i in 0..count {
        let key = format!("{}g{i:02}", keys.statuses());
        store
            .txn(Txn::new().put(key, record.clone()))
            .await
            .expect("a 1.4 MiB record fits etcd's request limit");
    }
    let before = store.revision().await.expect("the revision");
    let started = Instant::now();
    let listing = store
        .list(&keys.statuses(), None)
        .await
        .expect("a listing of 12 × 1.4 MiB = 16.8 MiB");
    let took = started.elapsed();
    assert_eq!(listing.items.len(), count, "every record is listed");
    assert!(
        listing
            .items
            .iter()
            .all(|kv| kv.value.len() == record.len())
    );
    assert!(listing.revision >= before, "one revision for the listing");
    eprintln!("listed {count} records of 1.4 MiB in {took:?}");

    // Read at an older revision: the same keys, though one changed since.
    store
        .txn(Txn::new().put(format!("{}g00", keys.statuses()), b"small".to_vec()))
        .await
        .expect("overwrite one");
    let again = store
        .list(&keys.statuses(), Some(listing.revision))
        .await
        .expect("the listing at its revision");
    assert_eq!(
        again.items, listing.items,
        "a listing at a revision is that snapshot"
    );

    // The newest entries of a log of large records, last key first.
    let newest = store
        .newest(&keys.statuses(), 5)
        .await
        .expect("the newest of large records");
    let names: Vec<&str> = newest
        .iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap_or(""))
        .collect();
    assert_eq!(names, ["g11", "g10", "g09", "g08", "g07"]);
    let all = store
        .newest(&keys.statuses(), 100)
        .await
        .expect("more than there are");
    assert_eq!(all.len(), count);
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn forty_documents_of_the_maximum_size_are_listed_by_rtctl_and_converged_by_a_restarted_controller()
 {
    let _serial = SERIAL.lock().await;
    let store = etcd().await;
    let keys = unique_keys("big-documents");
    let _wipe = WipeOnDrop(keys.clone());
    let docs = Documents::new(store.clone(), keys.clone());
    let names: Vec<String> = (0..GAMES).map(|i| game_id(&format!("big{i:02}"))).collect();
    let containers: Vec<String> = names
        .iter()
        .map(|n| container_name(keys.prefix(), n))
        .collect();
    let _cleanup = Cleanup::new(&containers.iter().map(String::as_str).collect::<Vec<_>>());

    // Written as any client of the prefix writes them (rtctl apply adds its annotations, and
    // a document of the maximum size would no longer fit).
    for name in &names {
        docs.create(&largest_document(name))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }
    let stored = store
        .get(&keys.gameruntime(&names[0]))
        .await
        .expect("read one back")
        .expect("it exists");
    assert_eq!(
        stored.value.len(),
        MAX_DOCUMENT_BYTES,
        "stored at the maximum size"
    );

    // rtctl get lists them all: one row each, under the header.
    let got = rtctl(&keys, &["get"]);
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert!(
        got.status.success(),
        "rtctl get: {}",
        String::from_utf8_lossy(&got.stderr)
    );
    for name in &names {
        assert!(
            stdout
                .lines()
                .any(|line| line.split_whitespace().next() == Some(name)),
            "rtctl get does not show {name}:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), GAMES + 1, "{stdout}");

    let mut controller = ControllerOptions::new(&keys, "big-1").start().await;
    let running = async || {
        let mut waiting = Vec::new();
        for name in &names {
            match docs.get_status(name).await {
                Ok(Some(status)) if status.phase == Phase::Running => {}
                Ok(Some(status)) => waiting.push(format!("{name} {}", summary(&status))),
                Ok(None) => waiting.push(format!("{name}: no status")),
                Err(e) => return Err(format!("{name}: {e}")),
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} not running, e.g. {}",
                waiting.len(),
                waiting[0]
            ))
        }
    };
    eventually(CONVERGE, "every big game running", running).await;
    controller.kill();

    // A game's container dies while no controller runs.
    let victim = &names[GAMES / 2];
    let before = docs
        .get_status(victim)
        .await
        .expect("read the status")
        .and_then(|s| s.container_id)
        .expect("a running game has a container id");
    let killed = docker_cli(&["kill", &before]);
    assert!(
        killed.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );

    // The restarted controller lists 10 MiB of documents, becomes ready, and repairs it.
    let started = Instant::now();
    let mut second = ControllerOptions::new(&keys, "big-2").spawn();
    second.wait_ready(Duration::from_secs(60)).await;
    eprintln!(
        "the restarted controller was ready in {:?}",
        started.elapsed()
    );
    let runtime = DockerRuntime::connect(None, Duration::from_secs(30))
        .await
        .expect("Docker");
    eventually(CONVERGE, "the killed game running again", async || {
        let found = containers_of(&runtime, victim).await?;
        match found.as_slice() {
            [one] if one.state == ContainerState::Running => Ok(()),
            other => Err(describe(other)),
        }
    })
    .await;
    eventually(CONVERGE, "every big game running", running).await;
    second.terminate();
    second.wait_exit(Duration::from_secs(60)).await;
}
