//! The history of deleted games, against the real etcd and Docker with the real controller:
//! once a game is deleted and removed, its whole history goes after the history grace (never
//! before), counted in `rtmanager_history_removed_total`; a game created again within the
//! grace keeps its history, old entries included, however old they grow.
//!
//! Ignored by a bare `cargo test` (etcd and Docker are needed); `scripts/test` runs it.

use rtm_testkit as common;
use rtm_testkit::process;

use std::time::{Duration, Instant, SystemTime};

use rtm_controller::runtime::{ContainerRuntime, container_name};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{OpKind, Outcome, Phase};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::Store;

use common::docker::{Cleanup, IMAGE_1, docker, game as game_id};
use common::{etcd, unique_keys};
use process::{ControllerOptions, WipeOnDrop, eventually};

/// The grace the controller runs with: long enough to create a game again within it, short
/// enough for a test.
const GRACE: Duration = Duration::from_secs(8);

/// Bound on a game reaching a state, or a history going: a start takes about a second, a
/// history goes within the grace plus one scan (the resync, 2 s, jittered by 20 %).
const CONVERGE: Duration = Duration::from_secs(60);

fn manifest(name: &str, state: &str) -> rtm_core::model::GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  state: {state}\n  stopTimeout: 5s\n"
    );
    parse_documents(&yaml)
        .expect("the fixture parses")
        .remove(0)
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_deleted_games_history_goes_after_the_grace_and_a_recreated_games_stays() {
    let runtime = docker().await;
    let store = etcd().await;
    let keys = unique_keys("history-grace");
    let _wipe = WipeOnDrop(keys.clone());
    let (gone, back) = (game_id("hg-gone"), game_id("hg-back"));
    let _cleanup = Cleanup::new(&[
        &container_name(keys.prefix(), &gone),
        &container_name(keys.prefix(), &back),
    ]);
    let documents = Documents::new(store.clone(), keys.clone());
    let history = History::new(store.clone(), keys.clone(), 100);
    let controller = ControllerOptions::new(&keys, "history-grace")
        .env("RTM_HISTORY_GRACE", &format!("{}s", GRACE.as_secs()))
        .env("RTM_RESYNC", "2s")
        .start()
        .await;

    for game in [&gone, &back] {
        documents
            .create(&manifest(game, "Running"))
            .await
            .expect("create the game");
    }
    for game in [&gone, &back] {
        eventually(CONVERGE, "the game to run", async || {
            let status = documents
                .get_status(game)
                .await
                .map_err(|e| e.to_string())?;
            match status {
                Some(s) if s.phase == Phase::Running => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    for game in [&gone, &back] {
        documents.delete(game, None).await.expect("delete the game");
    }
    let removed = async |game: &str| -> HistoryEntry {
        eventually(CONVERGE, "the game's removal", async || {
            let entries = history.recent(game, 100).await.map_err(|e| e.to_string())?;
            let status = documents
                .get_status(game)
                .await
                .map_err(|e| e.to_string())?;
            // The outer removal; its inner stop comes after it in the log.
            let removal = entries
                .iter()
                .find(|e| e.op_kind == OpKind::Remove && e.outcome == Outcome::Success);
            match removal {
                Some(e) if status.is_none() => Ok(e.clone()),
                other => Err(format!("removal {other:?}, status {status:?}")),
            }
        })
        .await
    };
    // Watched together: the second removal may end seconds after the first.
    let (gone_removal, _) = tokio::join!(removed(&gone), removed(&back));
    let back_before = history.recent(&back, 100).await.expect("read the history");
    // Created again within the grace, stopped: no operation runs for it, so its newest
    // entry (the removal) ages past the grace while the document exists.
    documents
        .create(&manifest(&back, "Stopped"))
        .await
        .expect("create it again");
    let recreated = Instant::now();

    let history_prefix = keys.history(&gone);
    eventually(CONVERGE, "the deleted game's history to go", async || {
        let left = store
            .list(&history_prefix, None)
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} keys left", left.items.len()))
        }
    })
    .await;
    let finished = gone_removal
        .finished_at
        .expect("a finished removal")
        .system_time();
    let after = SystemTime::now()
        .duration_since(finished)
        .unwrap_or_default();
    assert!(
        after >= GRACE,
        "the history went {after:?} after the removal, before the {GRACE:?} grace"
    );
    // Counted when the scan that removed it ends, a moment after its keys went.
    eventually(CONVERGE, "the removal to be counted", async || {
        let removed = controller.metric("rtmanager_history_removed_total").await;
        if removed == 1.0 {
            Ok(())
        } else {
            Err(format!("rtmanager_history_removed_total {removed}"))
        }
    })
    .await;

    // Two more scans after the re-created game's entries are past the grace: its history
    // stays, every old entry in it.
    let scans = |log: &str| log.matches("history sweep done").count();
    let base = scans(&controller.log_text());
    eventually(CONVERGE, "two more history scans", async || {
        let seen = scans(&controller.log_text()) - base;
        if seen >= 2 && recreated.elapsed() > GRACE {
            Ok(())
        } else {
            Err(format!("{seen} scans, {:?} since", recreated.elapsed()))
        }
    })
    .await;
    let back_after = history.recent(&back, 100).await.expect("read the history");
    for entry in &back_before {
        assert!(
            back_after
                .iter()
                .any(|e| e.seq == entry.seq && e.op_id == entry.op_id),
            "entry {} ({}) of the re-created game is kept: {back_after:#?}",
            entry.seq,
            entry.op_kind
        );
    }
    assert!(
        runtime
            .inspect_container(&container_name(keys.prefix(), &gone))
            .await
            .expect("docker inspect")
            .is_none()
    );
    assert_eq!(
        controller.metric("rtmanager_history_removed_total").await,
        1.0,
        "one history removed, and counted once, after two more scans"
    );
    assert!(
        controller.log_text().contains(&format!(
            "removed the history of a deleted game past the history grace game={gone}"
        )),
        "the removal is logged, naming the game:{}",
        controller.log_tail()
    );
}
