//! Graceful stops end to end (`spec.lifecycle`): the real `rtmanager` against the real etcd
//! and Docker. The engine is the test image's shell running a script that says which stop
//! signal it got and exits 0; the preStop command writes to the engine's own output
//! (`/proc/1/fd/1`), so the container's log shows what happened in which order. Judged as a
//! user would: the container's log (`docker logs -f`, followed before the stop, as a
//! restart removes the old container), its exit code and the stop's history entry.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker).

use rtm_testkit as common;
use rtm_testkit::process;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rtm_controller::runtime::{ContainerInfo, ContainerRuntime, DockerRuntime};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{DesiredState, GameRuntime, GameRuntimeStatus, OpKind, Outcome, Phase};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::{Keys, Store};

use common::docker::{IMAGE_1, docker, game as game_id};
use common::{etcd, revision_of, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually};

/// A start of the test engine takes about a second; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// The engine: reports the signal it got (SIGINT or SIGTERM) and exits 0. It says
/// "listening" once its traps are in place.
const ENGINE: &str = "trap 'echo got SIGINT; exit 0' INT\n\
                      trap 'echo got SIGTERM; exit 0' TERM\n\
                      echo listening\n\
                      while :; do sleep 1 & wait $!; done\n";

/// What the preStop of the first test writes to the engine's output.
const PRE_STOP_LINE: &str = "prestop-ran";

/// One test at a time: each runs a controller over its own key prefix, but they time stops.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    keys: Keys,
    documents: Documents,
    history: History,
    runtime: Arc<DockerRuntime>,
    _store: Arc<dyn Store>,
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
        _store: store,
        keys,
        _serial: serial,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
    }
}

/// A game of the signal-reporting engine whose stop runs `pre_stop` (a shell script), waits
/// 1s and sends SIGINT, within a 10s stopTimeout.
fn doc(name: &str, pre_stop: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 10s\n  lifecycle:\n    stopSignal: SIGINT\n    \
         preStop:\n      exec: {{command: [/bin/sh, -c, {pre_stop:?}]}}\n      timeout: 5s\n    \
         shutdownDelay: 1s\n"
    );
    let mut doc = parse_documents(&yaml).expect("fixture parses").remove(0);
    doc.spec.command = vec!["/bin/sh".into(), "-c".into(), ENGINE.into()];
    doc
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

    /// Waits until the game runs a container whose engine has its traps in place; returns it.
    async fn running(&self, game: &str) -> ContainerInfo {
        eventually(CONVERGE, &format!("{game} running"), async || {
            let status = self.status(game).await?;
            let id = match (status.phase, status.container_id.as_deref()) {
                (Phase::Running, Some(id)) => id.to_owned(),
                _ => return Err(format!("phase {}", status.phase)),
            };
            let container = self
                .runtime
                .inspect_container(&id)
                .await
                .map_err(|e| format!("inspect: {e}"))?
                .ok_or("the status names no container")?;
            let log = logs(&id);
            if container.is_running() && log.contains("listening") {
                Ok(container)
            } else {
                Err(format!("{:?}, log {log:?}", container.state))
            }
        })
        .await
    }

    /// Reads, changes and writes back a document (the controller never writes specs).
    async fn change(&self, game: &str, change: impl FnOnce(&mut GameRuntime)) {
        let mut doc = self
            .documents
            .get(game)
            .await
            .expect("etcd answers")
            .expect("the document exists");
        let expected = revision_of(&doc);
        change(&mut doc);
        self.documents
            .update(&doc, expected)
            .await
            .expect("document updated");
    }

    /// Waits for a successful entry of `kind` about `container` (as its container before);
    /// returns it.
    async fn entry(&self, game: &str, kind: OpKind, container: &str) -> HistoryEntry {
        let what = format!("a successful {kind:?} of {game}'s container {container}");
        eventually(CONVERGE, &what, async || {
            let entries = self
                .history
                .recent(game, 1000)
                .await
                .map_err(|e| format!("history read: {e}"))?;
            entries
                .iter()
                .find(|e| {
                    e.op_kind == kind
                        && e.outcome == Outcome::Success
                        && e.container_id_before.as_deref() == Some(container)
                })
                .cloned()
                .ok_or_else(|| {
                    format!("{} entries: {}", entries.len(), process::timeline(&entries))
                })
        })
        .await
    }
}

/// `docker logs` of a container, stdout and stderr.
fn logs(container: &str) -> String {
    let output = common::docker::docker_cli(&["logs", container]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `docker logs -f <container>`: it ends when the container stops, with everything the
/// container wrote, also once the container is removed.
struct FollowedLog {
    child: Child,
    reader: std::thread::JoinHandle<String>,
}

impl FollowedLog {
    fn start(container: &str) -> FollowedLog {
        let mut child = Command::new("docker")
            .args(["logs", "-f", container])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker logs -f runs");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        FollowedLog { child, reader }
    }

    /// The whole log, once the container stopped (the follow then ends by itself).
    fn finish(mut self) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("docker logs -f did not end within 30 s of the stop");
                }
            }
        }
        self.reader.join().expect("the log reader ends")
    }
}

/// A restart's old container runs the preStop command (its line lands in the engine's log)
/// before it gets SIGINT, the document's signal, which its engine handles (exit 0); the
/// inner stop entry says the preStop exited 0.
#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_restart_runs_the_pre_stop_before_the_stop_signal_and_records_it() {
    let h = harness("hooks-restart").await;
    let _controller = h.controller("c1").await;
    let game = game_id("hooks-restart");
    let script = format!("echo {PRE_STOP_LINE} > /proc/1/fd/1");
    h.documents
        .create(&doc(&game, &script))
        .await
        .expect("document written");
    let old = h.running(&game).await;
    let followed = FollowedLog::start(&old.id);

    h.change(&game, |doc| doc.spec.restart_token = "hooks-1".into())
        .await;
    let stop = h.entry(&game, OpKind::Stop, &old.id).await;
    let log = followed.finish();

    let pre_stop = log
        .find(PRE_STOP_LINE)
        .unwrap_or_else(|| panic!("the preStop line is in the old container's log: {log:?}"));
    let signal = log
        .find("got SIGINT")
        .unwrap_or_else(|| panic!("the engine got SIGINT: {log:?}"));
    assert!(pre_stop < signal, "preStop before the signal: {log:?}");
    assert!(!log.contains("got SIGTERM"), "{log:?}");
    let note = stop.note.clone().unwrap_or_default();
    assert!(note.starts_with("preStop exited 0 after "), "{stop:?}");
    let exited = h
        .entry(&game, OpKind::Restart, &old.id)
        .await
        .container_id_after
        .expect("the restart made a new container");
    assert_ne!(exited, old.id);
    h.running(&game).await;
}

/// A preStop command that fails (exit 3) is recorded as `prestop_failed` in the stop's entry,
/// and the stop goes on: the engine gets its SIGINT and the game is Stopped.
#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_failing_pre_stop_is_recorded_and_the_game_still_stops() {
    let h = harness("hooks-failing").await;
    let _controller = h.controller("c1").await;
    let game = game_id("hooks-failing");
    h.documents
        .create(&doc(&game, "echo cannot save; exit 3"))
        .await
        .expect("document written");
    let running = h.running(&game).await;

    h.change(&game, |doc| doc.spec.state = DesiredState::Stopped)
        .await;
    let stop = h.entry(&game, OpKind::Stop, &running.id).await;

    let note = stop.note.clone().unwrap_or_default();
    assert!(
        note.starts_with("prestop_failed: preStop exited 3 after ")
            && note.ends_with(": cannot save"),
        "{stop:?}"
    );
    let stopped = h
        .runtime
        .inspect_container(&running.id)
        .await
        .expect("docker inspects")
        .expect("a stopped container stays");
    assert!(!stopped.is_running());
    assert_eq!(
        stopped.exit_code,
        Some(0),
        "the engine's trap: {}",
        logs(&running.id)
    );
    assert!(
        logs(&running.id).contains("got SIGINT"),
        "{}",
        logs(&running.id)
    );
    eventually(CONVERGE, "phase Stopped", async || {
        let status = h.status(&game).await?;
        if status.phase == Phase::Stopped {
            Ok(())
        } else {
            Err(format!("phase {}", status.phase))
        }
    })
    .await;
}
