//! Scheduled restarts end to end: the real `rtmanager` against the real etcd and Docker, a
//! game with `spec.restartSchedule: {cron: "* * * * *"}`, judged by its history (one outer
//! restart per window, `op_source: schedule`, `source_ref: window <time>`), its containers
//! and its status.
//!
//! Ignored by a bare `cargo test` (it needs etcd and Docker). It waits on the wall clock for
//! minute boundaries (the property is about them), so it takes two to three minutes.

use rtm_testkit as common;
use rtm_testkit::process;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtm_controller::runtime::{ContainerRuntime, DockerRuntime};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{
    GameRuntime, GameRuntimeStatus, OpKind, OpSource, Outcome, Phase, Timestamp,
};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::Keys;

use common::docker::{IMAGE_1, docker, game as game_id};
use common::{etcd, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually};

/// A start of the test engine takes about a second; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// A window is answered within a resync (5 s for test controllers) of it, after up to a
/// minute of waiting for it; the rest is slack.
const ANSWER: Duration = Duration::from_secs(100);

struct Harness {
    keys: Keys,
    documents: Documents,
    history: History,
    runtime: Arc<DockerRuntime>,
    _wipe: WipeOnDrop,
}

async fn harness(test: &str) -> Harness {
    let store = etcd().await;
    let keys = unique_keys(test);
    Harness {
        documents: Documents::new(store.clone(), keys.clone()),
        history: History::new(store, keys.clone(), 1000),
        runtime: Arc::new(docker().await),
        _wipe: WipeOnDrop(keys.clone()),
        keys,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
    }
}

impl Harness {
    async fn controller(&self, name: &str) -> ControllerProcess {
        ControllerOptions::new(&self.keys, name).start().await
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    /// The game's scheduled restarts (the outer entries), oldest first.
    async fn scheduled_restarts(&self, game: &str) -> Vec<HistoryEntry> {
        let mut entries: Vec<HistoryEntry> = self
            .history
            .recent(game, 1000)
            .await
            .expect("history reads")
            .into_iter()
            .filter(|e| e.op_kind == OpKind::Restart && e.op_source == OpSource::Schedule)
            .collect();
        entries.reverse();
        entries
    }

    /// Waits until the game has `count` finished scheduled restarts; returns them all.
    async fn wait_restarts(&self, game: &str, count: usize) -> Vec<HistoryEntry> {
        eventually(
            ANSWER,
            &format!("{count} scheduled restart(s) of {game}"),
            async || {
                let restarts = self.scheduled_restarts(game).await;
                let finished = restarts
                    .iter()
                    .filter(|e| e.outcome != Outcome::InProgress)
                    .count();
                if finished >= count {
                    Ok(restarts)
                } else {
                    Err(format!("{finished} so far: {restarts:?}"))
                }
            },
        )
        .await
    }

    async fn started_at(&self, container: &str) -> SystemTime {
        self.runtime
            .inspect_container(container)
            .await
            .expect("docker inspects")
            .expect("the container exists")
            .started_at
            .expect("a running container has a start time")
    }
}

fn doc(name: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n  \
         restartSchedule: {{cron: \"* * * * *\"}}\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

/// The window an entry was for, from its `source_ref` (`window <RFC 3339>`).
fn window_of(entry: &HistoryEntry) -> SystemTime {
    let time = entry
        .source_ref
        .strip_prefix("window ")
        .unwrap_or_else(|| panic!("source_ref {:?} names its window", entry.source_ref));
    time.parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("source_ref {:?}: {e}", entry.source_ref))
        .system_time()
}

/// The first whole minute strictly after `time`.
fn next_minute(time: SystemTime) -> SystemTime {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    UNIX_EPOCH + Duration::from_secs((seconds / 60 + 1) * 60)
}

/// Waits for the wall clock to pass `time`: the condition here is the clock itself.
async fn wait_for_clock(time: SystemTime) {
    if let Ok(left) = time.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    assert!(SystemTime::now() >= time, "the wall clock went backwards");
}

fn show(entries: &[HistoryEntry]) -> String {
    entries
        .iter()
        .map(|e| format!("{} {:?} {}", e.source_ref, e.outcome, e.started_at))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Restarted once at the next minute; then, with the controller stopped across a minute
/// boundary and started again, the missed window is made up exactly once and not again
/// within that minute. None of it counts in restartCount.
#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_per_minute_schedule_restarts_once_per_window_across_a_controller_restart() {
    let h = harness("schedule").await;
    let game = game_id("schedule");
    let mut first_controller = h.controller("c1").await;
    h.documents
        .create(&doc(&game))
        .await
        .expect("document written");
    let running = eventually(
        CONVERGE,
        "the game running with its schedule recorded",
        async || {
            let status = h.status(&game).await?;
            match &status.restart_schedule {
                Some(_) if status.phase == Phase::Running && status.container_id.is_some() => {
                    Ok(status)
                }
                _ => Err(format!(
                    "phase {}, {:?}",
                    status.phase, status.restart_schedule
                )),
            }
        },
    )
    .await;
    let record = running
        .restart_schedule
        .clone()
        .expect("the schedule's record");
    assert_eq!(record.cron, "* * * * *");
    assert_eq!(record.time_zone, "UTC");

    // The next minute restarts the game once.
    let next = next_minute(record.since.system_time());
    let restarts = h.wait_restarts(&game, 1).await;
    let restart = &restarts[0];
    assert_eq!(restart.outcome, Outcome::Success, "{}", show(&restarts));
    assert_eq!(
        window_of(restart),
        next,
        "for the first window after the schedule was seen: {}",
        show(&restarts)
    );
    assert_eq!(restart.container_id_before, running.container_id);
    let replacement = restart
        .container_id_after
        .clone()
        .expect("the restart names its new container");
    assert!(
        h.started_at(&replacement).await >= next,
        "started after its window"
    );

    // Stopped across a minute boundary: the windows it misses are one restart when the
    // next controller starts.
    first_controller.terminate();
    first_controller.wait_exit(Duration::from_secs(30)).await;
    let answered = h.scheduled_restarts(&game).await;
    let last_answered = answered.last().map(window_of).expect("one answered window");
    assert!(
        answered.iter().all(|e| e.outcome == Outcome::Success),
        "{}",
        show(&answered)
    );
    wait_for_clock(next_minute(SystemTime::now()) + Duration::from_secs(1)).await;
    let _second_controller = h.controller("c2").await;
    let restarts = h.wait_restarts(&game, answered.len() + 1).await;
    let made_up = &restarts[answered.len()];
    assert_eq!(made_up.outcome, Outcome::Success, "{}", show(&restarts));
    let missed = window_of(made_up);
    assert!(
        missed > last_answered,
        "for a window missed while no controller ran: {}",
        show(&restarts)
    );

    // None again within that minute: once it is over, that window has exactly one
    // restart, and the windows skipped while down none of their own.
    wait_for_clock(next_minute(missed) + Duration::from_secs(1)).await;
    let restarts = h.scheduled_restarts(&game).await;
    let between: Vec<HistoryEntry> = restarts
        .iter()
        .filter(|e| {
            let window = window_of(e);
            window > last_answered && window <= missed
        })
        .cloned()
        .collect();
    assert_eq!(
        between.len(),
        1,
        "exactly one restart for the missed window(s): {}",
        show(&restarts)
    );
    let mut windows: Vec<SystemTime> = restarts.iter().map(window_of).collect();
    windows.dedup();
    assert_eq!(
        windows.len(),
        restarts.len(),
        "never twice: {}",
        show(&restarts)
    );

    let status = h.status(&game).await.expect("status");
    assert_eq!(
        status.restart_count, 0,
        "scheduled restarts are not counted"
    );
    let record = status.restart_schedule.expect("the schedule's record");
    assert_eq!(
        record.since,
        running.restart_schedule.expect("a record").since
    );
    assert!(
        record
            .last_window
            .is_some_and(|w| w.system_time() >= missed),
        "{record:?}"
    );
}
