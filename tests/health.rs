//! Health checks end to end: the real `rtmanager` against the real etcd and Docker, with the
//! test engine that serves `GET /healthz` on port 8080 while its marker file
//! `/tmp/www/healthz` exists (scripts/build-test-image) and the image built with a Docker
//! HEALTHCHECK on the same marker. Judged as a user would: the Ready condition, the status'
//! address and ports, the history, `docker` by hand, and etcd's revisions.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker). One at a time: they time
//! probes in seconds.

use rtm_testkit as common;
use rtm_testkit::process;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerInfo, ContainerRuntime, DockerRuntime};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{
    ConditionStatus, GameRuntime, GameRuntimeStatus, HealthVerdict, OpKind, Outcome, Phase,
};
use rtm_core::records::Documents;
use rtm_core::records::events::{EventReason, Events};
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::{Keys, Store};

use common::docker::{IMAGE_1, IMAGE_HEALTH, docker, docker_cli, game as game_id, run_bounded};
use common::{etcd, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually};

/// A start of the test engine takes about a second; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// What the status shows as `status.address` (a documentation address: never routed).
const ADVERTISED: &str = "203.0.113.9";

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    store: Arc<dyn Store>,
    keys: Keys,
    documents: Documents,
    history: History,
    runtime: Arc<DockerRuntime>,
    _wipe: WipeOnDrop,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness(test: &str) -> Harness {
    let serial = SERIAL.lock().await;
    let store: Arc<dyn Store> = etcd().await;
    let keys = unique_keys(test);
    Harness {
        documents: Documents::new(store.clone(), keys.clone()),
        history: History::new(store.clone(), keys.clone(), 1000),
        runtime: Arc::new(docker().await),
        _wipe: WipeOnDrop(keys.clone()),
        store,
        keys,
        _serial: serial,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
    }
}

/// A game of the test engine with `check` (YAML, indented under `healthCheck:`).
fn doc(name: &str, image: &str, check: &str, extra: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {image}\n  stopTimeout: 5s\n  healthCheck:\n{check}{extra}"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

/// An http check of the engine's health path: every second, unhealthy after two failures.
const HTTP_CHECK: &str = "    http: {port: 8080, path: /healthz}\n    interval: 1s\n    \
                          timeout: 1s\n    failureThreshold: 2\n";

impl Harness {
    async fn controller(&self, name: &str) -> ControllerProcess {
        ControllerOptions::new(&self.keys, name)
            .env("RTM_ADVERTISE_ADDRESS", ADVERTISED)
            .start()
            .await
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    /// Waits until the game's Ready condition is `want` with `reason`; returns the status.
    async fn wait_ready(
        &self,
        game: &str,
        want: ConditionStatus,
        reason: &str,
        limit: Duration,
    ) -> GameRuntimeStatus {
        let what = format!("{game} Ready {want:?} ({reason})");
        eventually(limit, &what, async || {
            let status = self.status(game).await?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            match ready {
                Some(c) if c.status == want && c.reason == reason => Ok(status),
                other => Err(format!("phase {}, Ready {other:?}", status.phase)),
            }
        })
        .await
    }

    async fn container(&self, status: &GameRuntimeStatus) -> ContainerInfo {
        let id = status.container_id.as_deref().expect("a container id");
        self.runtime
            .inspect_container(id)
            .await
            .expect("docker inspects")
            .expect("the container exists")
    }

    async fn entries(&self, game: &str) -> Vec<HistoryEntry> {
        self.history
            .recent(game, 1000)
            .await
            .expect("history reads")
    }

    /// The outer restarts recorded as repairs of `code`.
    async fn repairs(&self, game: &str, code: ErrorCode) -> Vec<HistoryEntry> {
        self.entries(game)
            .await
            .into_iter()
            .filter(|e| e.op_kind == OpKind::Restart && e.cause == Some(code))
            .collect()
    }

    /// Waits for `count` successful repairs of `code`; returns them.
    async fn wait_repairs(&self, game: &str, code: ErrorCode, count: usize) -> Vec<HistoryEntry> {
        eventually(
            CONVERGE,
            &format!("{count} {code} repair(s) of {game}"),
            async || {
                let repairs = self.repairs(game, code).await;
                let done = repairs
                    .iter()
                    .filter(|e| e.outcome == Outcome::Success)
                    .count();
                if done >= count {
                    Ok(repairs)
                } else {
                    Err(format!("{done} so far: {repairs:?}"))
                }
            },
        )
        .await
    }
}

/// `docker exec <container> sh -c <script>`, asserting it ran.
fn exec(container: &str, script: &str) {
    let mut command = std::process::Command::new("docker");
    command.args(["exec", container, "sh", "-c", script]);
    let output = run_bounded(command, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("docker exec {container} {script:?} hung"));
    assert!(
        output.status.success(),
        "docker exec {container} {script:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Takes the marker away: the health path answers 404, `test -f` fails.
fn stop_answering(container: &str) {
    exec(container, "rm -f /tmp/www/healthz");
}

/// Ready follows the probe; a game that stops answering is Ready False within
/// interval × failureThreshold plus a bound, then replaced exactly once, recorded as
/// `health_check_failed`, and Ready again on its new container.
async fn follows_the_probe_and_replaces_once(test: &str, image: &str, check: &str) {
    let h = harness(test).await;
    let _controller = h.controller("c1").await;
    let game = game_id(test);
    h.documents
        .create(&doc(&game, image, check, ""))
        .await
        .expect("document written");
    let ready = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    assert_eq!(ready.phase, Phase::Running);
    let health = ready.health.clone().expect("status.health");
    assert_eq!(health.verdict, HealthVerdict::Passing);
    assert!(health.passed);
    let first = h.container(&ready).await;
    assert_eq!(health.container_id.as_deref(), Some(first.id.as_str()));

    stop_answering(&first.id);
    let stopped = Instant::now();
    // Not Ready any more: failing (HealthCheckFailing, with the failure), or already
    // replaced (Docker's HEALTHCHECK counts its own failures: its first failing verdict
    // may already be past the threshold, and the replacement is the next thing written).
    let not_ready = eventually(Duration::from_secs(20), "Ready to turn False", async || {
        let status = h.status(&game).await?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        let replaced = status.container_id.as_deref() != Some(first.id.as_str());
        match ready {
            Some(c) if c.status == ConditionStatus::False || replaced => Ok(status.clone()),
            other => Err(format!("phase {}, Ready {other:?}", status.phase)),
        }
    })
    .await;
    // Two one-second probes (Docker's HEALTHCHECK: two one-second checks), plus slack.
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "Ready turned False after {:?}",
        stopped.elapsed()
    );
    if let Some(failing) = not_ready
        .conditions
        .iter()
        .find(|c| c.reason == "HealthCheckFailing")
    {
        assert!(
            !failing.message.is_empty(),
            "the condition says what failed"
        );
    }

    let repairs = h.wait_repairs(&game, ErrorCode::HealthCheckFailed, 1).await;
    assert_eq!(repairs.len(), 1, "exactly one replacement: {repairs:?}");
    let note = repairs[0].note.clone().unwrap_or_default();
    assert!(note.contains("failed 2 times in a row"), "{note}");
    let again = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let second = h.container(&again).await;
    assert_ne!(second.id, first.id, "a new container");
    assert_eq!(second.hostname, first.hostname, "the hostname stays");
    assert_eq!(again.restart_count, 1, "counted in restartCount");
    assert_eq!(
        h.repairs(&game, ErrorCode::HealthCheckFailed).await.len(),
        1,
        "still exactly one replacement once the new container serves"
    );
    // One HealthCheckFailed event for the one container judged, however many probes failed.
    let events = Events::new(h.store.clone(), h.keys.clone());
    let event = eventually(CONVERGE, "a HealthCheckFailed event", async || {
        let listed = events.list(Some(&game)).await.map_err(|e| e.to_string())?;
        listed
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.reason == EventReason::HealthCheckFailed)
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert_eq!(event.count, 1, "{event:?}");
    assert!(
        event.message.contains("failed 2 times in a row"),
        "{}",
        event.message
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn an_http_probe_makes_ready_follow_the_health_path_and_replaces_a_game_that_stops_answering()
{
    follows_the_probe_and_replaces_once("health-http", IMAGE_1, HTTP_CHECK).await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_tcp_probe_replaces_a_game_whose_listener_died() {
    let h = harness("health-tcp").await;
    let _controller = h.controller("c1").await;
    let game = game_id("health-tcp");
    let check =
        "    tcp: {port: 7000}\n    interval: 1s\n    timeout: 1s\n    failureThreshold: 2\n";
    h.documents
        .create(&doc(&game, IMAGE_1, check, ""))
        .await
        .expect("document written");
    let ready = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let first = h.container(&ready).await;
    // The engine process lives on; only its game port stops listening.
    exec(&first.id, "killall nc");
    h.wait_ready(
        &game,
        ConditionStatus::False,
        "HealthCheckFailing",
        Duration::from_secs(20),
    )
    .await;
    let repairs = h.wait_repairs(&game, ErrorCode::HealthCheckFailed, 1).await;
    assert_eq!(repairs.len(), 1, "{repairs:?}");
    h.wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn an_exec_probe_makes_ready_follow_its_exit_code() {
    let check = "    exec: {command: [/bin/test, -f, /tmp/www/healthz]}\n    interval: 1s\n    \
                 timeout: 1s\n    failureThreshold: 2\n";
    follows_the_probe_and_replaces_once("health-exec", IMAGE_1, check).await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_docker_probe_follows_the_images_healthcheck() {
    let check = "    docker: {}\n    interval: 1s\n    timeout: 1s\n    failureThreshold: 2\n";
    follows_the_probe_and_replaces_once("health-docker", IMAGE_HEALTH, check).await;
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_game_that_never_answers_ends_in_startup_timeout_and_its_replacements_back_off() {
    let h = harness("health-startup").await;
    let _controller = h.controller("c1").await;
    let game = game_id("health-startup");
    let check = "    http: {port: 8080, path: /healthz}\n    interval: 1s\n    timeout: 1s\n    \
                 startupTimeout: 3s\n";
    h.documents
        .create(&doc(
            &game,
            IMAGE_1,
            check,
            "  env: [{name: HEALTHY, value: \"0\"}]\n",
        ))
        .await
        .expect("document written");
    let starting = h
        .wait_ready(&game, ConditionStatus::False, "Starting", CONVERGE)
        .await;
    assert_eq!(starting.phase, Phase::Starting);

    let first = h.wait_repairs(&game, ErrorCode::StartupTimeout, 1).await;
    let note = first[0].note.clone().unwrap_or_default();
    assert!(note.contains("did not pass within 3s"), "{note}");
    // The second replacement waits the crash-loop back-off (10 s after the first).
    let backing_off = eventually(CONVERGE, "the back-off to show", async || {
        let status = h.status(&game).await?;
        if status.phase == Phase::CrashLoopBackOff {
            Ok(status)
        } else {
            Err(format!("phase {}", status.phase))
        }
    })
    .await;
    assert!(
        backing_off
            .message
            .as_deref()
            .unwrap_or("")
            .contains("back-off of 10s"),
        "{backing_off:?}"
    );
    let mut both = h.wait_repairs(&game, ErrorCode::StartupTimeout, 2).await;
    both.sort_by_key(|e| e.seq);
    let gap = both[1]
        .started_at
        .system_time()
        .duration_since(both[0].finished_at.expect("finished").system_time())
        .unwrap_or_default();
    assert!(
        gap >= Duration::from_secs(10),
        "the second replacement came {gap:?} after the first"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn with_restart_policy_never_an_unhealthy_game_is_failed_and_kept_for_inspection() {
    let h = harness("health-never").await;
    let _controller = h.controller("c1").await;
    let game = game_id("health-never");
    h.documents
        .create(&doc(&game, IMAGE_1, HTTP_CHECK, "  restartPolicy: Never\n"))
        .await
        .expect("document written");
    let ready = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let kept = h.container(&ready).await;
    stop_answering(&kept.id);
    let failed = eventually(CONVERGE, "the game to be Failed", async || {
        let status = h.status(&game).await?;
        if status.phase == Phase::Failed {
            Ok(status)
        } else {
            Err(format!("phase {}", status.phase))
        }
    })
    .await;
    assert!(
        failed
            .message
            .as_deref()
            .unwrap_or("")
            .contains("kept for inspection"),
        "{failed:?}"
    );
    let still = h.container(&failed).await;
    assert_eq!(still.id, kept.id, "the same container");
    assert!(still.is_running(), "left running for inspection");
    assert!(
        h.repairs(&game, ErrorCode::HealthCheckFailed)
            .await
            .is_empty()
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn the_status_says_where_to_connect_and_rtctl_shows_it() {
    let h = harness("health-where").await;
    let _controller = h.controller("c1").await;
    let game = game_id("health-where");
    let port = process::free_loopback_addr().port();
    let extra = format!("  ports: [{{containerPort: 7000, hostPort: {port}}}]\n");
    h.documents
        .create(&doc(&game, IMAGE_1, HTTP_CHECK, &extra))
        .await
        .expect("document written");
    let ready = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    assert_eq!(ready.address.as_deref(), Some(ADVERTISED));
    assert!(
        ready
            .ports
            .iter()
            .any(|p| p.container_port == 7000 && p.host_port == port),
        "{:?}",
        ready.ports
    );
    let rtctl = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rtctl"));
        common::without_rtm_env(&mut command);
        command
            .env("RTM_ETCD_ENDPOINTS", common::etcd_endpoints().join(","))
            .env("RTM_PREFIX", h.keys.prefix())
            .args(args);
        let output = run_bounded(command, Duration::from_secs(30)).expect("rtctl ran");
        assert!(output.status.success(), "rtctl {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let wide = rtctl(&["get", &game, "-o", "wide"]);
    assert!(
        wide.contains(ADVERTISED) && wide.contains(&format!("{port}->7000/tcp")),
        "{wide}"
    );
    let described = rtctl(&["describe", &game]);
    assert!(
        described.contains("http :8080/healthz") && described.contains("Passing"),
        "{described}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_paused_game_is_not_ready_and_is_resumed_never_replaced() {
    let h = harness("health-pause").await;
    let _controller = h.controller("c1").await;
    let game = game_id("health-pause");
    h.documents
        .create(&doc(&game, IMAGE_1, HTTP_CHECK, ""))
        .await
        .expect("document written");
    let ready = h
        .wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let container = h.container(&ready).await;
    let paused = docker_cli(&["pause", &container.id]);
    assert!(paused.status.success(), "{paused:?}");
    h.wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let after = h.container(&h.status(&game).await.unwrap()).await;
    assert_eq!(after.id, container.id, "resumed in place");
    assert!(
        h.repairs(&game, ErrorCode::HealthCheckFailed)
            .await
            .is_empty(),
        "a pause is repaired, never judged"
    );
    assert!(
        h.entries(&game)
            .await
            .iter()
            .any(|e| e.op_kind == OpKind::Unpause),
        "the pause was seen and undone"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn fifty_healthy_games_probed_every_second_for_a_minute_write_nothing_to_etcd() {
    let h = harness("health-quiet").await;
    let mut controller = h.controller("c1").await;
    let games: Vec<String> = (0..50).map(|i| game_id(&format!("quiet-{i}"))).collect();
    for game in &games {
        h.documents
            .create(&doc(game, IMAGE_1, HTTP_CHECK, ""))
            .await
            .expect("document written");
    }
    for game in &games {
        h.wait_ready(
            game,
            ConditionStatus::True,
            "HealthCheckPassed",
            CONVERGE * 3,
        )
        .await;
    }
    let before = game_keys(&h).await;
    let probes_before = controller.metric("rtmanager_probes_total").await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            game_keys(&h).await,
            before,
            "a key of a game changed {:?} into the quiet minute",
            started.elapsed()
        );
    }
    let probes = controller.metric("rtmanager_probes_total").await - probes_before;
    // 50 games × 60 one-second probes, less what a loaded machine delays.
    assert!(
        probes >= 50.0 * 50.0,
        "only {probes} probes ran in the minute"
    );
    controller.terminate();
}

/// Every key of the games (documents, status, history, leases, port claims) with its
/// mod_revision: the controllers' heartbeats, which renew the controller's liveness every
/// TTL/3 whatever the games do, are left out.
async fn game_keys(h: &Harness) -> Vec<(String, i64)> {
    let listed = h
        .store
        .list(&format!("{}/", h.keys.prefix()), None)
        .await
        .expect("etcd lists the prefix");
    let heartbeats = h.keys.controllers();
    listed
        .items
        .into_iter()
        .filter(|kv| !kv.key.starts_with(&heartbeats))
        .map(|kv| (kv.key, kv.mod_revision))
        .collect()
}

#[tokio::test]
#[ignore = "needs etcd and Docker"]
async fn a_restarted_controller_and_a_second_one_leave_a_healthy_games_status_alone() {
    let h = harness("health-restart").await;
    let mut first = h.controller("c1").await;
    let game = game_id("health-restart");
    h.documents
        .create(&doc(&game, IMAGE_1, HTTP_CHECK, ""))
        .await
        .expect("document written");
    h.wait_ready(&game, ConditionStatus::True, "HealthCheckPassed", CONVERGE)
        .await;
    let before = game_keys(&h).await;
    first.kill();
    // Two controllers from scratch, each with its own first results: neither may flip
    // Ready or rewrite the record (a verdict's time is the record's while it stands).
    let again = h.controller("c2").await;
    let second = h.controller("c3").await;
    for controller in [&again, &second] {
        eventually(CONVERGE, "ten probes by each controller", async || {
            let probes = controller.metric("rtmanager_probes_total").await;
            if probes >= 10.0 {
                Ok(())
            } else {
                Err(format!("{probes} probes"))
            }
        })
        .await;
    }
    let after = game_keys(&h).await;
    let status_key = h.keys.status(&game);
    let status_of = |keys: &[(String, i64)]| keys.iter().find(|(k, _)| *k == status_key).cloned();
    assert!(status_of(&before).is_some(), "{status_key} in {before:?}");
    assert_eq!(
        status_of(&after),
        status_of(&before),
        "the status record was rewritten"
    );
}
