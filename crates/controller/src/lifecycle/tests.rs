//! The lifecycle services against the in-memory store and the fake
//! runtime: every branch of the Go restart service, plus start, stop and
//! remove.

use std::sync::Arc;
use std::time::Duration;

use super::*;

mod pulls;
use crate::fixture;
use crate::runtime::fake::FakeRuntime;
use rtm_core::model::parse::parse_documents;
use rtm_core::records::StatusStore;
use rtm_core::store::memory::MemoryStore;
use rtm_core::store::{Keys, Store, StoreError, Txn};

const IMAGE: &str = "rtmanager-test/engine:1";

/// The name the default installation gives `game`'s container.
fn name(game: &str) -> String {
    crate::runtime::container_name(rtm_core::store::keys::DEFAULT_PREFIX, game)
}

struct World {
    store: Arc<MemoryStore>,
    runtime: Arc<FakeRuntime>,
    lifecycle: Lifecycle,
    documents: Documents,
    metrics: Metrics,
}

async fn world() -> World {
    let parts = fixture::parts().await;
    let lifecycle = Lifecycle::new(
        parts.runtime.clone(),
        parts.session,
        100,
        parts.metrics.clone(),
    );
    World {
        store: parts.store,
        runtime: parts.runtime,
        lifecycle,
        documents: parts.documents,
        metrics: parts.metrics,
    }
}

/// A small document builder: `game("g1").image("x:1").hostname("h")`.
struct GameBuilder {
    name: String,
    image: String,
    extra: String,
}

fn game(name: &str) -> GameBuilder {
    GameBuilder {
        name: name.into(),
        image: IMAGE.into(),
        extra: String::new(),
    }
}

impl GameBuilder {
    fn image(mut self, image: &str) -> Self {
        self.image = image.into();
        self
    }

    /// Publishes container port 7000 on TCP host port `host_port`.
    fn host_port(mut self, host_port: u16) -> Self {
        self.extra.push_str(&format!(
            "  ports: [{{containerPort: 7000, hostPort: {host_port}}}]\n"
        ));
        self
    }

    fn hostname(mut self, hostname: &str) -> Self {
        self.extra.push_str(&format!("  hostname: {hostname}\n"));
        self
    }

    /// Extra `spec` lines, indented by two spaces: `"  resources: {pids: 64}\n"`.
    fn spec_lines(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self
    }

    fn build(&self) -> GameRuntime {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {}\n\
             spec:\n  image: {}\n  stopTimeout: 5s\n{}",
            self.name, self.image, self.extra
        );
        parse_documents(&yaml).unwrap().remove(0)
    }
}

impl World {
    /// The game's status record as stored.
    async fn status(&self, game: &str) -> rtm_core::model::GameRuntimeStatus {
        StatusStore::new(self.store.clone(), Keys::default())
            .read(game)
            .await
            .unwrap()
            .value
    }

    async fn apply(&self, builder: GameBuilder) -> GameRuntime {
        self.documents.create(&builder.build()).await.unwrap()
    }

    async fn history(&self, game: &str) -> Vec<HistoryEntry> {
        self.lifecycle.history().recent(game, 100).await.unwrap()
    }

    async fn started(&self, name: &str) -> OpResult {
        self.apply(game(name)).await;
        let result = self.lifecycle.start(&request(name)).await;
        assert!(result.is_success(), "{result:?}");
        result
    }
}

fn request(game: &str) -> OpRequest {
    OpRequest::new(game, OpSource::AdminCli)
}

fn assert_failed(result: &OpResult, code: ErrorCode, message_part: &str) {
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    assert_eq!(result.error_code, Some(code), "{result:?}");
    let message = result.error_message.as_deref().unwrap_or_default();
    assert!(
        message.contains(message_part),
        "{message:?} should contain {message_part:?}"
    );
}

// ---------------------------------------------------------------- start

#[tokio::test]
async fn a_restart_whose_image_tag_is_removed_during_the_stop_runs_the_image_it_named() {
    let w = world().await;
    let first = w.started("g1").await;
    let image_id = w.runtime.add_image(IMAGE);
    w.runtime.untag_during_next_stop(IMAGE);
    let result = w.lifecycle.restart(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let after = result.container_id.clone().expect("a new container");
    assert_ne!(Some(after.clone()), first.container_id);
    let container = w
        .runtime
        .inspect_container(&after)
        .await
        .unwrap()
        .expect("the replacement exists");
    assert!(container.is_running());
    assert_eq!(
        container.image_id, image_id,
        "made from the image the tag named"
    );
    let outer = w
        .history("g1")
        .await
        .into_iter()
        .find(|e| e.op_kind == OpKind::Restart)
        .expect("the restart entry");
    assert!(
        outer
            .note
            .as_deref()
            .unwrap_or("")
            .contains("untagged during the stop"),
        "{outer:?}"
    );
}

#[tokio::test]
async fn a_restart_onto_an_image_removed_during_the_stop_starts_the_old_container_again() {
    let w = world().await;
    let first = w.started("g1").await;
    let old = first.container_id.clone().unwrap();
    w.runtime.add_image("rtmanager-test/engine:2");
    let mut doc = w.documents.get("g1").await.unwrap().unwrap();
    doc.spec.image = "rtmanager-test/engine:2".into();
    let revision = rtm_testkit::revision_of(&doc);
    w.documents.update(&doc, revision).await.unwrap();
    // Its only tag, of an image no container uses: the image itself goes.
    w.runtime
        .remove_image_during_next_stop("rtmanager-test/engine:2");
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ImageNotFound, "started again");
    let container = w.runtime.inspect_container(&old).await.unwrap().unwrap();
    assert!(container.is_running(), "the game keeps its old container");
}

#[tokio::test]
async fn a_health_checked_game_is_never_ready_from_its_start_alone() {
    let w = world().await;
    w.apply(game("g1").spec_lines("  healthCheck: {tcp: {port: 7000}}\n"))
        .await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let status = w.status("g1").await;
    assert_eq!(status.phase, Phase::Starting, "{status:?}");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == rtm_core::model::READY)
        .expect("Ready");
    assert_eq!(ready.status, rtm_core::model::ConditionStatus::False);
    assert_eq!(ready.reason, "Starting");
}

#[tokio::test]
async fn start_creates_a_running_labelled_container_and_records_it() {
    let w = world().await;
    w.apply(game("g1").hostname("engine-g1")).await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");

    let container = w.runtime.container(&name("g1")).expect("container exists");
    assert!(container.is_running());
    assert_eq!(container.hostname, "engine-g1");
    assert_eq!(container.game(), Some("g1"));
    assert_eq!(
        container.labels.get(crate::runtime::LABEL_OP_ID),
        Some(&result.op_id)
    );
    assert!(container.spec_hash().is_some());
    assert_eq!(result.container_id.as_deref(), Some(container.id.as_str()));

    let status = w.status("g1").await;
    assert_eq!(status.phase, Phase::Running);
    assert_eq!(status.container_id.as_deref(), Some(container.id.as_str()));
    assert_eq!(status.hostname.as_deref(), Some("engine-g1"));
    assert_eq!(status.image_ref.as_deref(), Some(IMAGE));

    let history = w.history("g1").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].op_kind, OpKind::Start);
    assert_eq!(history[0].outcome, Outcome::Success);
    assert_eq!(
        history[0].container_id_after.as_deref(),
        Some(container.id.as_str())
    );
    assert!(history[0].fence_revision.is_some());
    assert!(w.metrics.render().contains(
        r#"rtmanager_operations_total{error_code="",op_kind="start",outcome="success"} 1"#
    ));
    assert!(
        w.store.get("/rtmanager/leases/g1").await.unwrap().is_none(),
        "the lease is released"
    );
}

#[tokio::test]
async fn start_of_a_running_game_is_idempotent() {
    let w = world().await;
    let first = w.started("g1").await;
    let again = w.lifecycle.start(&request("g1")).await;
    assert!(again.is_success(), "{again:?}");
    assert_eq!(again.container_id, first.container_id);
    assert_eq!(w.runtime.count(RuntimeOp::Create), 1);
}

#[tokio::test]
async fn start_with_a_missing_image_fails_and_leaves_no_container() {
    let w = world().await;
    w.apply(game("g1").image("rtmanager-test/missing:1")).await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(
        &result,
        ErrorCode::ImageNotFound,
        "rtmanager-test/missing:1",
    );
    assert!(w.runtime.containers().is_empty());
    assert_eq!(
        w.runtime.count(RuntimeOp::Create),
        0,
        "no create without the image"
    );
    let history = w.history("g1").await;
    assert_eq!(history[0].error_code, Some(ErrorCode::ImageNotFound));
    let status = w.status("g1").await;
    let last = status
        .last_operation
        .expect("the failure shows in the status");
    assert_eq!(last.error_code.as_deref(), Some("image_not_found"));
}

#[tokio::test]
async fn a_start_docker_refuses_removes_the_created_container() {
    let w = world().await;
    w.apply(game("g1")).await;
    w.runtime.fail_next(
        RuntimeOp::Start,
        RuntimeError::PortAllocated {
            message: "port is already allocated".into(),
        },
    );
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(&result, ErrorCode::PortConflict, "already allocated");
    assert!(
        w.runtime.containers().is_empty(),
        "no orphan: {:?}",
        w.runtime.containers()
    );
}

#[tokio::test]
async fn start_of_an_unknown_game_is_not_found() {
    let w = world().await;
    let result = w.lifecycle.start(&request("ghost")).await;
    assert_failed(&result, ErrorCode::NotFound, "gameruntime/ghost");
}

#[tokio::test]
async fn a_foreign_container_with_the_games_name_is_never_touched() {
    let w = world().await;
    w.apply(game("g1")).await;
    let mut foreign = crate::runtime::ContainerSpec::new("other", IMAGE);
    foreign.name = name("g1");
    w.runtime.create(&foreign).await.unwrap();
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(
        &result,
        ErrorCode::Conflict,
        "not managed by this rtmanager",
    );
    assert_eq!(w.runtime.count(RuntimeOp::Remove), 0);
}

#[tokio::test]
async fn the_same_failure_again_and_again_is_recorded_once_with_a_count() {
    let w = world().await;
    w.apply(game("g1")).await;
    let mut foreign = crate::runtime::ContainerSpec::new("other", IMAGE);
    foreign.name = name("g1");
    w.runtime.create(&foreign).await.unwrap();
    for _ in 0..5 {
        let result = w.lifecycle.start(&request("g1")).await;
        assert_eq!(result.error_code, Some(ErrorCode::Conflict), "{result:?}");
    }
    let history = w.history("g1").await;
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].repeated, 4);
    assert!(history[0].last_repeated_at.is_some());
    assert_eq!(history[0].outcome, Outcome::Failure);

    // Something else in between starts a new entry, and the count again.
    w.runtime.remove_by_hand(&name("g1")).unwrap();
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.remove_by_hand(&name("g1")).unwrap();
    w.runtime.create(&foreign).await.unwrap();
    w.lifecycle.start(&request("g1")).await;
    let kinds: Vec<(Outcome, u64)> = w
        .history("g1")
        .await
        .iter()
        .map(|e| (e.outcome, e.repeated))
        .collect();
    assert_eq!(
        kinds,
        [
            (Outcome::Failure, 0),
            (Outcome::Success, 0),
            (Outcome::Failure, 4)
        ]
    );
}

// ---------------------------------------------------------------- stop

#[tokio::test(start_paused = true)]
async fn stop_stops_the_container_and_records_phase_stopped() {
    let w = world().await;
    let started = w.started("g1").await;
    // An engine that ignores SIGTERM shows the spec's stopTimeout (5s) is
    // what Docker is given: the stop takes exactly that long.
    w.runtime.ignore_sigterm(&name("g1")).unwrap();
    let before = tokio::time::Instant::now();
    let result = w.lifecycle.stop(&request("g1")).await;
    let took = before.elapsed();
    assert!(result.is_success(), "{result:?}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let container = w.runtime.container(&name("g1")).unwrap();
    assert!(!container.is_running());
    let status = w.status("g1").await;
    assert_eq!(status.phase, Phase::Stopped);
    assert_eq!(status.container_id, started.container_id);
    assert_eq!(status.last_exit_code, Some(137));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == rtm_core::model::READY)
        .unwrap();
    assert_eq!(
        ready.status,
        rtm_core::model::ConditionStatus::False,
        "Ready follows the phase"
    );
}

#[tokio::test]
async fn stop_of_a_game_without_container_succeeds() {
    let w = world().await;
    w.apply(game("g1")).await;
    assert!(w.lifecycle.stop(&request("g1")).await.is_success());
}

// ---------------------------------------------------------------- stop: spec.lifecycle

/// `spec.lifecycle` lines: SIGINT, a preStop command bounded by
/// `pre_stop_timeout`, and `delay` (stopTimeout is the builder's 5s).
fn lifecycle_lines(pre_stop_timeout: &str, delay: &str) -> String {
    format!(
        "  lifecycle:\n    stopSignal: SIGINT\n    preStop:\n      exec: {{command: [/bin/save, --all]}}\n      \
         timeout: {pre_stop_timeout}\n    shutdownDelay: {delay}\n"
    )
}

impl World {
    /// The game's newest entry of `kind`.
    async fn last_entry(&self, game: &str, kind: OpKind) -> HistoryEntry {
        self.history(game)
            .await
            .into_iter()
            .find(|e| e.op_kind == kind)
            .unwrap_or_else(|| panic!("a {kind:?} entry of {game}"))
    }

    /// The calls made to the game's container from its first exec on.
    fn stop_calls(&self) -> Vec<crate::runtime::FakeCall> {
        let calls = self.runtime.calls();
        let first = calls
            .iter()
            .position(|c| matches!(c.op, RuntimeOp::Exec | RuntimeOp::Stop))
            .unwrap_or(calls.len());
        calls[first..]
            .iter()
            .filter(|c| matches!(c.op, RuntimeOp::Exec | RuntimeOp::Stop | RuntimeOp::Kill))
            .cloned()
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_runs_the_pre_stop_then_waits_the_delay_then_sends_the_documents_signal() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "2s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.set_exec(
        "g1",
        crate::runtime::FakeExec::Exit {
            code: 0,
            output: "match 7 saved\n".into(),
        },
    );
    w.runtime.clear_calls();

    let result = w.lifecycle.stop(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    let calls = w.stop_calls();
    let ops: Vec<String> = calls.iter().map(ToString::to_string).collect();
    assert_eq!(calls.len(), 2, "one exec, then one stop: {ops:?}");
    assert_eq!(calls[0].op, RuntimeOp::Exec, "{ops:?}");
    assert_eq!(calls[1].op, RuntimeOp::Stop, "{ops:?}");
    assert_eq!(calls[1].signal.as_deref(), Some("SIGINT"), "{ops:?}");
    assert!(
        calls[1].at - calls[0].at >= Duration::from_secs(2),
        "the signal waits the shutdown delay after the preStop: {:?}",
        calls[1].at - calls[0].at
    );
    let stop = w.last_entry("g1", OpKind::Stop).await;
    assert_eq!(stop.outcome, Outcome::Success);
    assert_eq!(
        stop.note.as_deref(),
        Some("preStop exited 0 after 0.0s: match 7 saved")
    );
    assert!(!w.runtime.container(&name("g1")).unwrap().is_running());
}

#[tokio::test]
async fn a_stop_without_a_lifecycle_sends_sigterm_and_runs_nothing() {
    let w = world().await;
    w.started("g1").await;
    w.runtime.clear_calls();
    assert!(w.lifecycle.stop(&request("g1")).await.is_success());
    let calls = w.stop_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].signal.as_deref(), Some("SIGTERM"));
    assert_eq!(w.runtime.exec_count("g1"), 0);
    assert_eq!(w.last_entry("g1", OpKind::Stop).await.note, None);
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_stop_is_noted_as_prestop_failed_and_the_stop_goes_on() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "1s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.set_exec(
        "g1",
        crate::runtime::FakeExec::Exit {
            code: 3,
            output: "no disk".into(),
        },
    );
    let result = w.lifecycle.stop(&request("g1")).await;
    assert!(
        result.is_success(),
        "the stop's outcome is its own: {result:?}"
    );
    assert!(!w.runtime.container(&name("g1")).unwrap().is_running());
    let note = w
        .last_entry("g1", OpKind::Stop)
        .await
        .note
        .unwrap_or_default();
    assert_eq!(note, "prestop_failed: preStop exited 3 after 0.0s: no disk");
    let failed = w.metrics.pre_stops.with_label_values(&["failed"]).get();
    assert_eq!(failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_pre_stop_docker_cannot_run_is_noted_and_the_stop_goes_on() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "0s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.set_exec(
        "g1",
        crate::runtime::FakeExec::Fail(RuntimeError::Rejected {
            status: 500,
            message: "OCI runtime exec failed: /bin/save: not found".into(),
        }),
    );
    assert!(w.lifecycle.stop(&request("g1")).await.is_success());
    let note = w
        .last_entry("g1", OpKind::Stop)
        .await
        .note
        .unwrap_or_default();
    assert!(
        note.starts_with("prestop_failed: preStop could not run: docker exec: ")
            && note.contains("/bin/save: not found"),
        "{note}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_pre_stop_never_makes_the_stop_outlast_its_stop_timeout() {
    let w = world().await;
    // 4s of preStop and 1s of delay fill the whole 5s stopTimeout, and the
    // engine ignores the signal: only the SIGKILL at 5s ends it.
    w.apply(game("g1").spec_lines(&lifecycle_lines("4s", "1s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.set_exec("g1", crate::runtime::FakeExec::Hang);
    w.runtime.ignore_sigterm(&name("g1")).unwrap();
    let before = tokio::time::Instant::now();

    let result = w.lifecycle.stop(&request("g1")).await;

    let took = before.elapsed();
    assert!(result.is_success(), "{result:?}");
    assert!(took <= Duration::from_secs(5), "the stop took {took:?}");
    let container = w.runtime.container(&name("g1")).unwrap();
    assert!(!container.is_running());
    assert_eq!(container.exit_code, Some(137));
    let note = w
        .last_entry("g1", OpKind::Stop)
        .await
        .note
        .unwrap_or_default();
    assert!(
        note.starts_with("prestop_failed: preStop did not finish within 4.0s"),
        "{note}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_restart_of_a_game_with_a_hung_pre_stop_still_recreates_it_in_time() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("3s", "1s")))
        .await;
    let first = w.lifecycle.start(&request("g1")).await;
    assert!(first.is_success(), "{first:?}");
    w.runtime.set_exec("g1", crate::runtime::FakeExec::Hang);
    let before = tokio::time::Instant::now();

    let result = w.lifecycle.restart(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    assert!(
        before.elapsed() <= Duration::from_secs(5),
        "{:?}",
        before.elapsed()
    );
    assert_ne!(result.container_id, first.container_id);
    let stop = w.last_entry("g1", OpKind::Stop).await;
    assert_eq!(stop.outcome, Outcome::Success);
    assert!(
        stop.note
            .as_deref()
            .unwrap_or_default()
            .starts_with("prestop_failed: "),
        "{stop:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_container_is_stopped_without_its_pre_stop_or_delay() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "2s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.pause_by_hand(&name("g1")).unwrap();
    w.runtime.clear_calls();
    let before = tokio::time::Instant::now();

    assert!(w.lifecycle.stop(&request("g1")).await.is_success());

    assert!(
        before.elapsed() < Duration::from_secs(2),
        "no shutdown delay"
    );
    assert_eq!(
        w.runtime.exec_count("g1"),
        0,
        "nothing runs in a frozen container"
    );
    let calls = w.stop_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].op, RuntimeOp::Stop);
    assert_eq!(
        calls[0].signal, None,
        "Docker's own stop, which unpauses it"
    );
    assert!(!w.runtime.container(&name("g1")).unwrap().is_alive());
    assert_eq!(
        w.last_entry("g1", OpKind::Stop).await.note.as_deref(),
        Some("preStop skipped: the container is paused")
    );
}

#[tokio::test]
async fn a_stop_of_an_exited_container_notes_the_skipped_pre_stop() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "2s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.exit_container(&name("g1"), 1).unwrap();
    assert!(w.lifecycle.stop(&request("g1")).await.is_success());
    assert_eq!(w.runtime.exec_count("g1"), 0);
    assert_eq!(
        w.last_entry("g1", OpKind::Stop).await.note.as_deref(),
        Some("preStop skipped: the container is exited")
    );
}

#[tokio::test]
async fn a_restart_sends_the_signal_the_document_names_now_and_creates_with_it() {
    let w = world().await;
    let first = w.started("g1").await;
    assert_eq!(
        w.runtime.spec_of(&name("g1")).unwrap().stop_signal,
        None,
        "Docker's default"
    );
    let mut doc = w.documents.get("g1").await.unwrap().unwrap();
    doc.spec.lifecycle.stop_signal = Some("SIGINT".into());
    let revision = rtm_testkit::revision_of(&doc);
    w.documents.update(&doc, revision).await.unwrap();
    w.runtime.clear_calls();

    let result = w.lifecycle.restart(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    let stop = w
        .stop_calls()
        .into_iter()
        .find(|c| c.op == RuntimeOp::Stop)
        .expect("the old container was stopped");
    assert_eq!(stop.target, first.container_id.unwrap());
    assert_eq!(stop.signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        w.runtime
            .spec_of(&name("g1"))
            .unwrap()
            .stop_signal
            .as_deref(),
        Some("SIGINT"),
        "a `docker stop` by hand sends it too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_remove_runs_the_pre_stop_before_it_stops_and_removes() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "0s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.clear_calls();
    let result = w.lifecycle.remove(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let ops: Vec<RuntimeOp> = w.stop_calls().iter().map(|c| c.op).collect();
    assert_eq!(ops, [RuntimeOp::Exec, RuntimeOp::Stop]);
    assert!(w.runtime.container(&name("g1")).is_none());
    assert!(
        w.last_entry("g1", OpKind::Stop)
            .await
            .note
            .unwrap_or_default()
            .starts_with("preStop exited 0")
    );
}

#[tokio::test(start_paused = true)]
async fn an_eviction_stops_the_container_gracefully_before_it_removes_it() {
    let w = world().await;
    w.apply(game("g1").spec_lines(&lifecycle_lines("2s", "1s")))
        .await;
    assert!(w.lifecycle.start(&request("g1")).await.is_success());
    w.runtime.clear_calls();
    let lease = w.lifecycle.acquire("g1", &new_id()).await.unwrap();
    let result = w
        .lifecycle
        .evict_under(&lease, &request("g1"), "the game moved to node-b")
        .await;
    lease.release().await.unwrap();
    assert!(result.is_success(), "{result:?}");
    let calls = w.stop_calls();
    let ops: Vec<RuntimeOp> = calls.iter().map(|c| c.op).collect();
    assert_eq!(ops, [RuntimeOp::Exec, RuntimeOp::Stop], "{calls:?}");
    assert_eq!(calls[1].signal.as_deref(), Some("SIGINT"));
    assert!(w.runtime.container(&name("g1")).is_none());
    let entry = w.last_entry("g1", OpKind::Remove).await;
    let note = entry.note.unwrap_or_default();
    assert!(
        note.starts_with("the game moved to node-b; preStop exited 0"),
        "{note}"
    );
}

// ---------------------------------------------------------------- restart: the Go branches

#[tokio::test]
async fn restart_rejects_an_invalid_game_id_without_writing_anything() {
    let w = world().await;
    let before = w.store.revision().await.unwrap();
    let result = w.lifecycle.restart(&request("../etc")).await;
    assert_failed(&result, ErrorCode::InvalidRequest, "game id");
    assert_eq!(w.store.revision().await.unwrap(), before, "nothing written");
}

#[tokio::test]
async fn restart_while_the_lease_is_held_is_a_conflict_with_an_outer_entry() {
    let w = world().await;
    w.started("g1").await;
    let held = w.lifecycle.acquire("g1", "someone-else").await.unwrap();
    let result = w
        .lifecycle
        .restart(&request("g1").with_source_ref("REQ-1"))
        .await;
    assert_failed(
        &result,
        ErrorCode::Conflict,
        "another lifecycle operation is in progress for this game",
    );
    let outer = &w.history("g1").await[0];
    assert_eq!(outer.op_kind, OpKind::Restart);
    assert_eq!(outer.outcome, Outcome::Failure);
    assert_eq!(outer.source_ref, "REQ-1", "the request's ref is kept");
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0);
    held.release().await.unwrap();
}

#[tokio::test]
async fn restart_when_the_lease_store_fails_is_service_unavailable() {
    let w = world().await;
    w.started("g1").await;
    w.store.fail_next(StoreError::Unavailable {
        endpoints: "memory".into(),
        message: "connection refused".into(),
    });
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ServiceUnavailable, "connection refused");
    let outer = &w.history("g1").await[0];
    assert_eq!(outer.error_code, Some(ErrorCode::ServiceUnavailable));
}

#[tokio::test]
async fn restart_of_a_game_without_record_is_not_found() {
    let w = world().await;
    let result = w.lifecycle.restart(&request("ghost")).await;
    assert_failed(&result, ErrorCode::NotFound, "does not exist");
    let outer = &w.history("ghost").await[0];
    assert_eq!(
        (outer.op_kind, outer.error_code),
        (OpKind::Restart, Some(ErrorCode::NotFound))
    );
}

#[tokio::test]
async fn restart_of_a_removed_game_is_a_conflict() {
    let w = world().await;
    w.started("g1").await;
    w.documents.delete("g1", None).await.unwrap();
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::Conflict, "is removed");
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0);
}

#[tokio::test]
async fn restart_of_a_record_without_image_is_internal() {
    let w = world().await;
    w.started("g1").await;
    // Written around validation, as a buggy client could.
    let key = Keys::default().gameruntime("g1");
    let kv = w.store.get(&key).await.unwrap().unwrap();
    let broken = String::from_utf8(kv.value).unwrap().replace(IMAGE, "\"\"");
    w.store
        .update(&key, broken.into_bytes(), kv.mod_revision)
        .await
        .unwrap();
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_eq!(result.error_code, Some(ErrorCode::Internal), "{result:?}");
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0);
}

#[tokio::test]
async fn restart_keeps_the_inner_stops_failure_code() {
    let w = world().await;
    w.started("g1").await;
    w.runtime.fail_next(
        RuntimeOp::Stop,
        RuntimeError::Rejected {
            status: 500,
            message: "driver failed".into(),
        },
    );
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::StopFailed, "inner stop failed: ");
    assert_eq!(
        w.runtime.count(RuntimeOp::Remove),
        0,
        "no rm after a failed stop"
    );
    let entries = w.history("g1").await;
    let stop = entries.iter().find(|e| e.op_kind == OpKind::Stop).unwrap();
    assert_eq!(stop.outcome, Outcome::Failure);
    assert_eq!(stop.source_ref, entries[entries.len() - 2].source_ref);
}

#[tokio::test]
async fn restart_when_docker_is_unreachable_during_stop_is_service_unavailable() {
    let w = world().await;
    w.started("g1").await;
    w.runtime.fail_next(
        RuntimeOp::Stop,
        RuntimeError::Unreachable {
            message: "gone".into(),
        },
    );
    // The re-inspect after an unknown outcome fails too.
    w.runtime.fail_next(
        RuntimeOp::InspectContainer,
        RuntimeError::Unreachable {
            message: "gone".into(),
        },
    );
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ServiceUnavailable, "inner stop failed");
}

#[tokio::test]
async fn restart_when_docker_rm_fails_is_service_unavailable() {
    let w = world().await;
    w.started("g1").await;
    w.runtime.fail_next(
        RuntimeOp::Remove,
        RuntimeError::Rejected {
            status: 500,
            message: "device busy".into(),
        },
    );
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ServiceUnavailable, "docker remove");
    assert_eq!(w.runtime.count(RuntimeOp::Create), 1, "no second create");
}

#[tokio::test]
async fn a_restart_without_its_image_stops_nothing_and_keeps_the_old_container_running() {
    let w = world().await;
    let started = w.started("g1").await;
    w.runtime.remove_image(IMAGE);
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ImageNotFound, "is not present");
    let left = w.runtime.containers();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(Some(&left[0].id), started.container_id.as_ref());
    assert!(left[0].is_running(), "never stopped: {left:?}");
    let history = w.history("g1").await;
    assert_eq!(
        (history[0].op_kind, history[0].error_code),
        (OpKind::Restart, Some(ErrorCode::ImageNotFound)),
        "the failure is recorded: {history:#?}"
    );
    assert!(
        history.iter().all(|e| e.op_kind != OpKind::Stop),
        "no inner stop ran: {history:#?}"
    );
}

#[tokio::test]
async fn restart_reports_an_inner_start_docker_refuses() {
    let w = world().await;
    w.started("g1").await;
    w.runtime.fail_next(
        RuntimeOp::Start,
        RuntimeError::Rejected {
            status: 400,
            message: "OCI runtime create failed".into(),
        },
    );
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::StartFailed, "OCI runtime create failed");
    assert!(
        w.runtime.containers().is_empty(),
        "the unstarted container is removed"
    );
}

#[tokio::test]
async fn restart_recreates_with_a_new_id_the_same_hostname_and_one_correlation_id() {
    let w = world().await;
    w.apply(game("g1").hostname("engine-g1")).await;
    let first = w.lifecycle.start(&request("g1")).await;
    let result = w.lifecycle.restart(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");

    let container = w.runtime.container(&name("g1")).unwrap();
    assert_ne!(
        Some(container.id.clone()),
        first.container_id,
        "a new container"
    );
    assert_eq!(result.container_id.as_deref(), Some(container.id.as_str()));
    assert_eq!(container.hostname, "engine-g1");
    assert_eq!(w.runtime.containers().len(), 1);

    // Newest first: inner start, inner stop, then the outer restart
    // (appended first, finished last), then the original start.
    let entries = w.history("g1").await;
    let kinds: Vec<_> = entries.iter().map(|e| e.op_kind).collect();
    assert_eq!(
        kinds,
        [OpKind::Start, OpKind::Stop, OpKind::Restart, OpKind::Start]
    );
    let correlation = &entries[2].source_ref;
    assert!(!correlation.is_empty(), "a correlation id is generated");
    assert!(entries[..3].iter().all(|e| &e.source_ref == correlation));
    assert!(entries[..3].iter().all(|e| e.outcome == Outcome::Success));
    assert_eq!(entries[2].container_id_before, first.container_id);
    assert_eq!(
        entries[2].container_id_after.as_deref(),
        Some(container.id.as_str())
    );
    assert_eq!(result.source_ref, *correlation);

    let status = w.status("g1").await;
    assert_eq!(status.container_id.as_deref(), Some(container.id.as_str()));
    assert_eq!(status.last_operation.unwrap().op_kind, OpKind::Restart);
}

#[tokio::test]
async fn restart_reuses_the_requests_source_ref_as_correlation_id() {
    let w = world().await;
    w.started("g1").await;
    let result = w
        .lifecycle
        .restart(&request("g1").with_source_ref("REQ-42"))
        .await;
    assert!(result.is_success());
    let entries = w.history("g1").await;
    assert!(
        entries[..3].iter().all(|e| e.source_ref == "REQ-42"),
        "{entries:#?}"
    );
}

/// Delegates to the fake, but revokes the controller's etcd session in the
/// middle of the first stop, the way etcd expires a lease whose holder
/// stalled, and returns only once the session noticed.
#[derive(Debug)]
struct LosesLeaseDuringStop {
    inner: Arc<FakeRuntime>,
    store: Arc<MemoryStore>,
    session: std::sync::OnceLock<Arc<Session>>,
}

#[async_trait::async_trait]
impl ContainerRuntime for LosesLeaseDuringStop {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.inner.ping().await
    }
    async fn inspect_image(
        &self,
        image: &str,
    ) -> Result<Option<crate::runtime::ImageInfo>, RuntimeError> {
        self.inner.inspect_image(image).await
    }
    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&crate::runtime::RegistryCredentials>,
        timeout: Duration,
    ) -> Result<crate::runtime::ImageInfo, RuntimeError> {
        self.inner.pull_image(image, credentials, timeout).await
    }
    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&crate::runtime::RegistryCredentials>,
        timeout: Duration,
    ) -> Result<String, RuntimeError> {
        self.inner
            .registry_digest(image, credentials, timeout)
            .await
    }
    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        self.inner.inspect_container(id).await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        self.inner.create(spec).await
    }
    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.start(id).await
    }
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        let result = self.inner.stop(id, timeout).await;
        let session = self.session.get().expect("session set before the restart");
        self.store.revoke_lease(session.lease_id()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), session.lost().cancelled())
            .await
            .expect("the keepalive notices the revoked lease within one period");
        result
    }
    async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.kill(id).await
    }
    async fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        self.inner.remove(id, force).await
    }
    async fn unpause(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.unpause(id).await
    }
    async fn rename(&self, id: &str, name: &str) -> Result<(), RuntimeError> {
        self.inner.rename(id, name).await
    }
    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list_managed().await
    }
    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<crate::runtime::ExecOutcome, RuntimeError> {
        self.inner.exec(id, command, timeout).await
    }
    async fn exec_running(&self, exec_id: &str) -> Result<bool, RuntimeError> {
        self.inner.exec_running(exec_id).await
    }
    async fn last_output(&self, id: &str, max_bytes: usize) -> Result<String, RuntimeError> {
        self.inner.last_output(id, max_bytes).await
    }
    async fn inspect_volume(
        &self,
        name: &str,
    ) -> Result<Option<crate::runtime::VolumeInfo>, RuntimeError> {
        self.inner.inspect_volume(name).await
    }
    async fn create_volume(
        &self,
        spec: &crate::runtime::VolumeSpec,
    ) -> Result<crate::runtime::VolumeInfo, RuntimeError> {
        self.inner.create_volume(spec).await
    }
    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        self.inner.remove_volume(name).await
    }
    async fn list_volumes(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Vec<crate::runtime::VolumeInfo>, RuntimeError> {
        self.inner.list_volumes(labels).await
    }
    async fn list_game(&self, game: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list_game(game).await
    }
    async fn list_labelled(&self, key: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.inner.list_labelled(key).await
    }
    fn events(
        &self,
    ) -> futures::stream::BoxStream<'static, Result<crate::runtime::ContainerEvent, RuntimeError>>
    {
        self.inner.events()
    }
}

#[tokio::test]
async fn restart_stops_at_the_next_step_once_the_lease_is_lost() {
    let store = Arc::new(MemoryStore::new());
    let fake = Arc::new(FakeRuntime::new());
    fake.add_image(IMAGE);
    let runtime = Arc::new(LosesLeaseDuringStop {
        inner: fake.clone(),
        store: store.clone(),
        session: std::sync::OnceLock::new(),
    });
    // A 3 s TTL: the keepalive checks every second.
    let session = Session::open(
        store.clone(),
        Keys::default(),
        "node-a",
        Duration::from_secs(3),
        Metrics::new(),
    )
    .await
    .unwrap();
    runtime.session.set(session.clone()).ok();
    let lifecycle = Lifecycle::new(runtime, session, 100, Metrics::new());
    let documents = Documents::new(store.clone(), Keys::default());
    documents.create(&game("g1").build()).await.unwrap();
    // Started by hand so that the stop is the restart's first Docker call.
    let spec = container_spec(
        &game("g1").build(),
        "/rtmanager",
        "op-0",
        &ContainerPolicy::default(),
    );
    let id = fake.create(&spec).await.unwrap();
    fake.start(&id).await.unwrap();

    let result = lifecycle.restart(&request("g1")).await;
    assert_eq!(result.error_code, Some(ErrorCode::LeaseLost), "{result:?}");
    assert_eq!(
        fake.count(RuntimeOp::Remove),
        0,
        "no step after the lease was lost"
    );
    assert_eq!(fake.count(RuntimeOp::Create), 1, "never a second container");
}

// ---------------------------------------------------------------- remove

#[tokio::test]
async fn remove_stops_and_removes_the_container_and_clears_the_status() {
    let w = world().await;
    w.started("g1").await;
    w.documents.delete("g1", None).await.unwrap();
    let result = w.lifecycle.remove(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    assert!(w.runtime.containers().is_empty());
    assert!(w.store.get("/rtmanager/status/g1").await.unwrap().is_none());
    let kinds: Vec<_> = w.history("g1").await.iter().map(|e| e.op_kind).collect();
    assert_eq!(
        kinds,
        [OpKind::Stop, OpKind::Remove, OpKind::Start],
        "history is kept"
    );
}

#[tokio::test]
async fn removing_a_game_whose_name_a_foreign_container_holds_clears_it_and_leaves_that_alone() {
    let w = world().await;
    w.apply(game("g1")).await;
    let mut foreign = crate::runtime::ContainerSpec::new("other", IMAGE);
    foreign.name = name("g1");
    let foreign_id = w.runtime.create(&foreign).await.unwrap();
    w.runtime.start(&foreign_id).await.unwrap();
    let refused = w.lifecycle.start(&request("g1")).await;
    assert_failed(&refused, ErrorCode::Conflict, "not managed");
    w.documents.delete("g1", None).await.unwrap();

    let result = w.lifecycle.remove(&request("g1")).await;
    assert!(result.is_success(), "nothing of ours to remove: {result:?}");
    assert!(w.store.get("/rtmanager/status/g1").await.unwrap().is_none());
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0, "theirs is not stopped");
    assert_eq!(w.runtime.count(RuntimeOp::Remove), 0, "nor removed");
    let theirs = w.runtime.inspect_container(&name("g1")).await.unwrap();
    assert!(theirs.is_some_and(|c| c.id == foreign_id && c.is_running()));
}

// ------------------------------------------------------------ host ports

impl World {
    async fn claim_of(&self, port: u16) -> Option<String> {
        let key = Keys::default().port("node-a", "tcp", port);
        let kv = self.store.get(&key).await.unwrap()?;
        rtm_core::ports::PortClaim::decode(&kv.value).map(|c| c.game)
    }

    async fn change(&self, builder: GameBuilder) {
        let current = self.documents.get(&builder.name).await.unwrap().unwrap();
        let revision = current
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .expect("a stored document has a resource version");
        self.documents
            .update(&builder.build(), revision)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_host_port_stays_its_first_claimants_through_a_stop_a_crash_and_a_restart() {
    let w = world().await;
    w.apply(game("owner").host_port(17000)).await;
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    assert_eq!(w.claim_of(17000).await.as_deref(), Some("owner"));
    w.apply(game("claimant").host_port(17000)).await;

    let refused = |result: &OpResult| {
        assert_failed(result, ErrorCode::PortConflict, "belongs to game owner");
    };
    refused(&w.lifecycle.start(&request("claimant")).await);
    // Stopped: the port is still the owner's.
    assert!(w.lifecycle.stop(&request("owner")).await.is_success());
    refused(&w.lifecycle.start(&request("claimant")).await);
    // Crashed.
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    w.runtime.exit_container(&name("owner"), 1).unwrap();
    refused(&w.lifecycle.start(&request("claimant")).await);
    // Mid-recreate and after it.
    assert!(w.lifecycle.restart(&request("owner")).await.is_success());
    refused(&w.lifecycle.start(&request("claimant")).await);
    assert!(
        w.runtime.container(&name("claimant")).is_none(),
        "the claimant never got a container that could bind the port"
    );
    assert_eq!(w.claim_of(17000).await.as_deref(), Some("owner"));
}

#[tokio::test]
async fn a_lost_claim_goes_back_to_the_game_whose_container_was_made_with_the_port() {
    let w = world().await;
    w.apply(game("owner").host_port(17001)).await;
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    assert!(w.lifecycle.stop(&request("owner")).await.is_success());
    // etcdctl del <prefix>/ports/ --prefix, while the owner is stopped.
    w.store
        .txn(Txn::new().delete_prefix(Keys::default().ports("node-a")))
        .await
        .unwrap();
    w.apply(game("claimant").host_port(17001)).await;
    let result = w.lifecycle.start(&request("claimant")).await;
    assert_failed(&result, ErrorCode::PortConflict, "belongs to game owner");
    assert_eq!(
        w.claim_of(17001).await.as_deref(),
        Some("owner"),
        "recorded again for the owner, from its container's label"
    );
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
}

#[tokio::test]
async fn a_port_its_owner_no_longer_asks_for_or_a_garbled_claim_is_claimed_anew() {
    let w = world().await;
    w.apply(game("owner").host_port(17002)).await;
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    w.apply(game("claimant").host_port(17002)).await;
    assert!(!w.lifecycle.start(&request("claimant")).await.is_success());
    // The owner moves to another port: its next recreate claims that one,
    // and the old one is free for the claimant.
    w.change(game("owner").host_port(17003)).await;
    assert!(w.lifecycle.restart(&request("owner")).await.is_success());
    assert!(w.lifecycle.start(&request("claimant")).await.is_success());
    assert_eq!(w.claim_of(17002).await.as_deref(), Some("claimant"));
    assert_eq!(w.claim_of(17003).await.as_deref(), Some("owner"));

    // `etcdctl put <prefix>/ports/node-a/tcp/17004 garbage`.
    let key = Keys::default().port("node-a", "tcp", 17004);
    w.store
        .txn(Txn::new().put(key, b"garbage".to_vec()))
        .await
        .unwrap();
    w.apply(game("third").host_port(17004)).await;
    assert!(w.lifecycle.start(&request("third")).await.is_success());
    assert_eq!(w.claim_of(17004).await.as_deref(), Some("third"));
}

#[tokio::test]
async fn removing_a_game_releases_its_host_ports() {
    let w = world().await;
    w.apply(game("owner").host_port(17005)).await;
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    w.documents.delete("owner", None).await.unwrap();
    assert!(w.lifecycle.remove(&request("owner")).await.is_success());
    assert_eq!(w.claim_of(17005).await, None);
}

#[tokio::test]
async fn a_recreate_onto_another_games_port_is_refused_before_the_old_container_stops() {
    let w = world().await;
    w.apply(game("a").host_port(17006)).await;
    w.apply(game("b").host_port(17007)).await;
    assert!(w.lifecycle.start(&request("a")).await.is_success());
    assert!(w.lifecycle.start(&request("b")).await.is_success());
    let before = w.runtime.container(&name("b")).unwrap();
    w.change(game("b").host_port(17006)).await;
    let result = w.lifecycle.restart(&request("b")).await;
    assert_failed(&result, ErrorCode::PortConflict, "belongs to game a");
    let after = w.runtime.container(&name("b")).unwrap();
    assert_eq!(after.id, before.id);
    assert!(
        after.is_running(),
        "the working container was never stopped"
    );
}

#[tokio::test]
async fn a_port_outside_the_controllers_policy_is_refused_and_never_claimed() {
    let w = world().await;
    w.apply(game("low").host_port(80)).await;
    let result = w.lifecycle.start(&request("low")).await;
    assert_failed(&result, ErrorCode::PortNotAllowed, "--host-ports");
    assert!(w.runtime.containers().is_empty());
    assert_eq!(w.claim_of(80).await, None);
}

#[tokio::test]
async fn a_forged_claim_naming_another_claimant_never_keeps_the_owner_from_its_port() {
    let w = world().await;
    w.apply(game("owner").host_port(17008)).await;
    assert!(w.lifecycle.start(&request("owner")).await.is_success());
    w.apply(game("claimant").host_port(17008)).await;
    // `etcdctl put <prefix>/ports/node-a/tcp/17008 '{"game":"claimant",…}'`,
    // then the owner crashes.
    let key = Keys::default().port("node-a", "tcp", 17008);
    let forged = rtm_core::ports::PortClaim::new("claimant").encode();
    w.store.txn(Txn::new().put(key, forged)).await.unwrap();
    w.runtime.exit_container(&name("owner"), 1).unwrap();
    let result = w.lifecycle.start(&request("owner")).await;
    assert!(
        result.is_success(),
        "the owner's container says whose the port is: {result:?}"
    );
    assert_eq!(w.claim_of(17008).await.as_deref(), Some("owner"));
    let refused = w.lifecycle.start(&request("claimant")).await;
    assert_failed(&refused, ErrorCode::PortConflict, "belongs to game owner");
}

// ---------------------------------------------------------------- policy

#[tokio::test]
async fn start_creates_the_container_hardened_by_the_policy() {
    let w = world().await;
    w.apply(game("g1").spec_lines(
        "  resources: {pids: 64}\n  securityContext:\n    capabilities: {add: [NET_BIND_SERVICE]}\n    \
         runAsUser: 1000\n    readOnlyRootFilesystem: true\n",
    ))
    .await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert!(result.is_success(), "{result:?}");
    let id = result.container_id.unwrap();
    let spec = w.runtime.spec_of(&id).expect("the fake kept the spec");
    assert!(
        spec.drop_all_capabilities && spec.no_new_privileges,
        "{spec:?}"
    );
    assert_eq!(spec.cap_add, ["NET_BIND_SERVICE"]);
    assert_eq!(spec.pids_limit, Some(64));
    assert_eq!(spec.memory_bytes, Some(1 << 30), "the default memory");
    assert_eq!(spec.nano_cpus, Some(1_000_000_000), "the default CPUs");
    assert_eq!(spec.user.as_deref(), Some("1000"));
    assert!(spec.read_only_root_filesystem);
    assert!(spec.tmpfs.contains_key("/tmp"), "{spec:?}");
}

#[tokio::test]
async fn a_start_the_policy_refuses_creates_nothing_and_is_recorded_with_its_code() {
    let w = world().await;
    w.apply(game("g1").spec_lines("  securityContext: {capabilities: {add: [SYS_ADMIN]}}\n"))
        .await;
    let result = w.lifecycle.start(&request("g1")).await;
    assert_failed(
        &result,
        ErrorCode::CapabilityNotAllowed,
        "SYS_ADMIN not allowed",
    );
    assert!(w.runtime.containers().is_empty());
    assert_eq!(w.runtime.count(RuntimeOp::Create), 0);
    let history = w.history("g1").await;
    assert_eq!(
        (history[0].op_kind, history[0].error_code),
        (OpKind::Start, Some(ErrorCode::CapabilityNotAllowed)),
        "{history:#?}"
    );
    let status = w.status("g1").await;
    let last = status.last_operation.expect("the failure is in the status");
    assert_eq!(last.error_code.as_deref(), Some("capability_not_allowed"));
}

#[tokio::test]
async fn a_restart_into_more_cpus_than_the_host_has_stops_nothing() {
    let w = world().await;
    let started = w.started("g1").await;
    let mut doc = w.documents.get("g1").await.unwrap().unwrap();
    let expected = doc
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    doc.spec.resources.cpus = Some("9".parse().unwrap());
    w.documents.update(&doc, expected).await.unwrap();
    let result = w.lifecycle.restart(&request("g1")).await;
    assert_failed(&result, ErrorCode::ResourcesExceedHost, "host's 8 CPUs");
    let left = w.runtime.containers();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(Some(&left[0].id), started.container_id.as_ref());
    assert!(left[0].is_running(), "never stopped: {left:?}");
    assert_eq!(w.runtime.count(RuntimeOp::Stop), 0);
}

// ---------------------------------------------------------------- forensics

impl World {
    /// The game's kept previous container.
    async fn previous(&self, game: &str) -> Option<rtm_core::records::previous::PreviousContainer> {
        rtm_core::records::previous::PreviousContainers::new(self.store.clone(), Keys::default())
            .read(game)
            .await
            .unwrap()
    }

    /// The newest history entry of `game`.
    async fn newest(&self, game: &str) -> HistoryEntry {
        self.history(game).await.remove(0)
    }

    /// The newest history entry of `game` of `kind`.
    async fn newest_of(&self, game: &str, kind: OpKind) -> HistoryEntry {
        let history = self.history(game).await;
        history
            .into_iter()
            .find(|e| e.op_kind == kind)
            .expect("an entry of the kind")
    }
}

#[tokio::test]
async fn a_crashed_container_s_last_output_and_exit_are_kept_before_its_replacement() {
    let w = world().await;
    let first = w.started("g1").await;
    let old = first.container_id.unwrap();
    w.runtime.print(&old, "loading map de_dust").unwrap();
    w.runtime.print(&old, "panic: map not found").unwrap();
    w.runtime.exit_container(&old, 1).unwrap();

    let result = w.lifecycle.start(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    assert_ne!(result.container_id.as_deref(), Some(old.as_str()));
    let kept = w.previous("g1").await.expect("the output was kept");
    assert_eq!(kept.container_id, old);
    assert_eq!(
        kept.op_id, result.op_id,
        "named by the operation that replaced it"
    );
    assert_eq!(kept.ended.exit_code, Some(1));
    assert!(!kept.ended.oom_killed);
    assert!(kept.ended.finished_at.is_some());
    assert_eq!(kept.cause, None);
    let lines: Vec<&str> = kept.output.lines().collect();
    assert_eq!(lines.len(), 2, "{:?}", kept.output);
    assert!(lines[1].ends_with(" panic: map not found"), "{lines:?}");
    let entry = w.newest("g1").await;
    assert_eq!(entry.op_id, result.op_id);
    assert_eq!(
        entry.ended.as_ref().map(|e| e.summary()).as_deref(),
        Some("exited 1")
    );
}

#[tokio::test]
async fn the_removal_of_an_oom_killed_container_keeps_its_end() {
    let w = world().await;
    let first = w.started("g1").await;
    let old = first.container_id.unwrap();
    w.runtime.print(&old, "allocating 4 GiB").unwrap();
    w.runtime.oom_kill(&old).unwrap();

    let result = w.lifecycle.remove(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    assert!(w.runtime.container(&old).is_none());
    let kept = w.previous("g1").await.expect("the output was kept");
    assert!(kept.ended.oom_killed);
    assert!(
        kept.output.contains("allocating 4 GiB"),
        "{:?}",
        kept.output
    );
    let remove = w
        .history("g1")
        .await
        .into_iter()
        .find(|e| e.op_kind == OpKind::Remove)
        .unwrap();
    assert_eq!(
        remove.ended.map(|e| e.summary()).as_deref(),
        Some("exited 137, OOM-killed")
    );
}

#[tokio::test]
async fn a_container_that_ran_well_leaves_nothing_behind() {
    let w = world().await;
    let first = w.started("g1").await;
    w.runtime
        .print(first.container_id.as_deref().unwrap(), "serving")
        .unwrap();

    assert!(w.lifecycle.restart(&request("g1")).await.is_success());
    assert!(w.lifecycle.remove(&request("g1")).await.is_success());

    assert_eq!(w.previous("g1").await, None);
    assert!(w.history("g1").await.iter().all(|e| e.ended.is_none()));
}

#[tokio::test]
async fn a_replacement_for_a_failed_health_check_keeps_what_the_engine_said() {
    let w = world().await;
    let first = w.started("g1").await;
    let old = first.container_id.unwrap();
    w.runtime.print(&old, "tick took 900 ms").unwrap();
    let cause = OpCause {
        code: ErrorCode::HealthCheckFailed,
        detail: "3 probes failed in a row: connection refused".into(),
    };

    let result = w.lifecycle.restart(&request("g1").with_cause(cause)).await;

    assert!(result.is_success(), "{result:?}");
    let kept = w.previous("g1").await.expect("the output was kept");
    assert_eq!(kept.cause, Some(ErrorCode::HealthCheckFailed));
    assert!(kept.output.contains("tick took 900 ms"));
    let outer = w.newest_of("g1", OpKind::Restart).await;
    assert_eq!(outer.cause, Some(ErrorCode::HealthCheckFailed));
    assert!(outer.ended.is_some(), "{outer:?}");
}

#[tokio::test]
async fn output_docker_cannot_give_is_noted_and_the_repair_goes_on() {
    let w = world().await;
    let first = w.started("g1").await;
    let old = first.container_id.unwrap();
    w.runtime.exit_container(&old, 2).unwrap();
    w.runtime.fail_next(
        RuntimeOp::Logs,
        RuntimeError::Unreachable {
            message: "connection reset".into(),
        },
    );

    let result = w.lifecycle.start(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    let entry = w.newest("g1").await;
    assert_eq!(entry.ended.map(|e| e.exit_code), Some(Some(2)));
    let note = entry.note.unwrap_or_default();
    assert!(note.contains("its last output could not be read"), "{note}");
    let kept = w
        .previous("g1")
        .await
        .expect("the end is kept without output");
    assert_eq!(kept.output, "");
}

#[tokio::test]
async fn a_recreate_for_a_new_spec_records_the_fields_that_changed() {
    let w = world().await;
    w.runtime.add_image("rtmanager-test/engine:2");
    w.started("g1").await;
    let mut doc = w.documents.get("g1").await.unwrap().unwrap();
    doc.spec.image = "rtmanager-test/engine:2".into();
    doc.spec.env.push(rtm_core::model::EnvVar {
        name: "MODE".into(),
        value: "secret".into(),
    });
    let revision = rtm_testkit::revision_of(&doc);
    w.documents.update(&doc, revision).await.unwrap();

    let result = w.lifecycle.restart(&request("g1")).await;

    assert!(result.is_success(), "{result:?}");
    let outer = w.newest_of("g1", OpKind::Restart).await;
    assert_eq!(
        outer.spec_changes,
        [
            "env[MODE] added",
            "image: rtmanager-test/engine:1 → rtmanager-test/engine:2",
        ]
    );
    assert_eq!(outer.ended, None, "a container that ran well");
    // The next restart, with nothing changed, records no change.
    assert!(w.lifecycle.restart(&request("g1")).await.is_success());
    let again = w.newest_of("g1", OpKind::Restart).await;
    assert_ne!(again.op_id, outer.op_id);
    assert!(again.spec_changes.is_empty(), "{again:?}");
}
