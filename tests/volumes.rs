//! Volumes end to end (`spec.volumes`): the real `rtmanager` and `rtctl`
//! against the real etcd and Docker — a file in a game's own volume
//! survives `rtctl restart` and goes with `rtctl delete` (stays with
//! `retain: true`), even when the game is deleted while no controller runs;
//! a host path outside `--allowed-host-paths` is refused with its code while
//! the old container keeps running; a shared volume is mounted read-only; a
//! volume squatting the game's volume name is refused and never touched.
//!
//! Ignored by a bare `cargo test` (they need etcd and Docker). Each test has
//! its own prefix, games, network and volumes, and removes what it made.

use rtm_testkit as common;
use rtm_testkit::process;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rtm_controller::hardening::default_network_name;
use rtm_controller::runtime::{ContainerInfo, ContainerRuntime, DockerRuntime, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::volume::game_volume_name;
use rtm_core::model::{GameRuntime, GameRuntimeStatus, Volume, VolumeSource};
use rtm_core::records::Documents;
use rtm_core::store::Keys;

use common::docker::{IMAGE_1, docker, docker_cli, game as game_id, run_bounded};
use common::{etcd, etcd_endpoints, revision_of, unique_keys};
use process::{ControllerOptions, ControllerProcess, WipeOnDrop, eventually};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// A start of the test engine takes about a second; the rest is slack.
const CONVERGE: Duration = Duration::from_secs(60);

/// One test at a time: each runs a controller and a few containers.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test's installation. Dropped last: removes the containers labelled
/// with the prefix, then the volumes it names, the network, the prefix.
struct Harness {
    keys: Keys,
    documents: Documents,
    runtime: Arc<DockerRuntime>,
    network: String,
    volumes: std::sync::Mutex<Vec<String>>,
    _wipe: WipeOnDrop,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

async fn harness(test: &str) -> Harness {
    let serial = SERIAL.lock().await;
    let keys = unique_keys(test);
    Harness {
        documents: Documents::new(etcd().await, keys.clone()),
        runtime: Arc::new(docker().await),
        network: default_network_name(keys.prefix()),
        volumes: std::sync::Mutex::new(Vec::new()),
        _wipe: WipeOnDrop(keys.clone()),
        keys,
        _serial: serial,
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        common::docker::remove_installation_containers(self.keys.prefix());
        let volumes = self.volumes.lock().map(|v| v.clone()).unwrap_or_default();
        for volume in volumes {
            let mut command = Command::new("docker");
            command.args(["volume", "rm", "-f", &volume]);
            let _ = run_bounded(command, Duration::from_secs(30));
        }
        let mut command = Command::new("docker");
        command.args(["network", "rm", &self.network]);
        let _ = run_bounded(command, Duration::from_secs(30));
    }
}

fn doc(name: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

fn own(name: &str, path: &str) -> Volume {
    Volume {
        name: Some(name.into()),
        container_path: path.into(),
        read_only: false,
        retain: false,
        source: None,
    }
}

fn sourced(path: &str, source: VolumeSource, read_only: bool) -> Volume {
    Volume {
        name: None,
        container_path: path.into(),
        read_only,
        retain: false,
        source: Some(source),
    }
}

impl Harness {
    async fn controller(&self, name: &str, env: &[(&str, &str)]) -> ControllerProcess {
        let mut options =
            ControllerOptions::new(&self.keys, name).env("RTM_NETWORK", &self.network);
        for (var, value) in env {
            options = options.env(var, value);
        }
        options.start().await
    }

    /// The Docker name of `game`'s own volume `volume`, removed with the
    /// harness whatever the test leaves.
    fn volume_of(&self, game: &str, volume: &str) -> String {
        let name = game_volume_name(&container_name(self.keys.prefix(), game), volume);
        self.cleanup_volume(&name);
        name
    }

    fn cleanup_volume(&self, name: &str) {
        if let Ok(mut volumes) = self.volumes.lock() {
            volumes.push(name.to_owned());
        }
    }

    fn rtctl(&self, args: &[&str]) -> String {
        let mut command = Command::new(RTCTL);
        command
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null");
        let output = run_bounded(command, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("rtctl {args:?} did not finish within 120 s"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "rtctl {args:?}: {text}");
        text
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    /// The game's running container once the status names it, other than
    /// `not` (the one before a recreate).
    async fn wait_running(&self, game: &str, not: Option<&str>) -> ContainerInfo {
        eventually(CONVERGE, &format!("{game} to run"), async || {
            let status = self.status(game).await?;
            let id = status
                .container_id
                .clone()
                .ok_or_else(|| format!("no container in the status: {status:?}"))?;
            if Some(id.as_str()) == not {
                return Err("still the old container".to_owned());
            }
            match self.runtime.inspect_container(&id).await {
                Ok(Some(c)) if c.is_running() && status.phase.as_str() == "Running" => Ok(c),
                other => Err(format!("status {:?}, container {other:?}", status.phase)),
            }
        })
        .await
    }

    /// The message of the game's last operation once it failed with `code`.
    async fn wait_refused(&self, game: &str, code: ErrorCode) -> String {
        eventually(
            CONVERGE,
            &format!("{game} refused with {code}"),
            async || {
                let status = self.status(game).await?;
                match &status.last_operation {
                    Some(op) if op.error_code.as_deref() == Some(code.as_str()) => {
                        Ok(op.error_message.clone().unwrap_or_default())
                    }
                    other => Err(format!("last operation {other:?}")),
                }
            },
        )
        .await
    }

    /// The `note` of the game's newest `remove` history entry.
    async fn remove_note(&self, game: &str) -> String {
        let history =
            rtm_core::records::history::History::new(etcd().await, self.keys.clone(), 100);
        eventually(CONVERGE, &format!("{game}'s remove entry"), async || {
            let entries = history.recent(game, 20).await.map_err(|e| e.to_string())?;
            entries
                .iter()
                .find(|e| e.op_kind.as_str() == "remove" && e.finished_at.is_some())
                .map(|e| e.note.clone().unwrap_or_default())
                .ok_or_else(|| format!("no finished remove in {} entries", entries.len()))
        })
        .await
    }
}

/// `docker exec <container> sh -c <script>`: (exit code, stdout + stderr).
fn exec(container: &str, script: &str) -> (i32, String) {
    let mut command = Command::new("docker");
    command.args(["exec", container, "sh", "-c", script]);
    let output = run_bounded(command, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("docker exec {container} {script:?} hung"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn volume_exists(name: &str) -> bool {
    docker_cli(&["volume", "inspect", name]).status.success()
}

fn volume_label(name: &str, label: &str) -> String {
    let format = format!("{{{{index .Labels {label:?}}}}}");
    let output = docker_cli(&["volume", "inspect", "-f", &format, name]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// What `path` in volume `volume` holds, read by a throwaway container.
fn read_in_volume(volume: &str, path: &str) -> String {
    let mount = format!("{volume}:/v");
    let file = format!("/v/{path}");
    let output = docker_cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "cat",
        "-v",
        &mount,
        IMAGE_1,
        &file,
    ]);
    assert!(
        output.status.success(),
        "reading {file} of {volume}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn wait_volume_gone(name: &str) {
    eventually(
        CONVERGE,
        &format!("volume {name} to be removed"),
        async || {
            if volume_exists(name) {
                Err("still there".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_file_in_a_games_volume_survives_rtctl_restart_and_goes_with_rtctl_delete() {
    let h = harness("vol-life").await;
    let _controller = h.controller("c1", &[]).await;
    let game = game_id("vol-life");
    let mut g = doc(&game);
    // Hardened as far as a game goes: the volume is writable all the same.
    g.spec.security_context.read_only_root_filesystem = true;
    g.spec.volumes.push(own("saves", "/data"));
    let volume = h.volume_of(&game, "saves");
    h.documents.create(&g).await.expect("document written");
    let first = h.wait_running(&game, None).await;
    assert_eq!(
        volume_label(&volume, "rtmanager.dev/game"),
        game,
        "the controller made the volume, labelled"
    );
    assert_eq!(volume_label(&volume, "rtmanager.dev/volume"), "saves");
    assert_eq!(
        volume_label(&volume, "rtmanager.dev/prefix"),
        h.keys.prefix()
    );
    let (code, out) = exec(&first.id, "echo level-7 > /data/save && touch /elsewhere");
    assert_ne!(code, 0, "the root filesystem stays read-only: {out}");
    assert_eq!(exec(&first.id, "cat /data/save"), (0, "level-7\n".into()));

    // A docker volume rm by hand while the game runs: Docker refuses.
    let removed = docker_cli(&["volume", "rm", &volume]);
    assert!(!removed.status.success(), "a volume in use is kept");

    h.rtctl(&["restart", &game, "--wait", "--timeout", "60s"]);
    let second = h.wait_running(&game, Some(&first.id)).await;
    assert_ne!(second.id, first.id, "a restart is a recreate");
    assert_eq!(
        exec(&second.id, "cat /data/save"),
        (0, "level-7\n".into()),
        "the same volume is mounted again"
    );

    h.rtctl(&["delete", &game, "--wait", "--timeout", "60s"]);
    wait_volume_gone(&volume).await;
    let note = h.remove_note(&game).await;
    assert!(
        note.contains(&format!("removed volumes {volume}")),
        "{note}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_retained_volume_outlives_its_game_with_its_files() {
    let h = harness("vol-retain").await;
    let _controller = h.controller("c1", &[]).await;
    let game = game_id("vol-retain");
    let mut g = doc(&game);
    let mut saves = own("saves", "/data");
    saves.retain = true;
    g.spec.volumes = vec![saves, own("cache", "/cache")];
    let kept = h.volume_of(&game, "saves");
    let cache = h.volume_of(&game, "cache");
    h.documents.create(&g).await.expect("document written");
    let container = h.wait_running(&game, None).await;
    assert_eq!(exec(&container.id, "echo kept > /data/f").0, 0);

    h.rtctl(&["delete", &game, "--wait", "--timeout", "60s"]);
    wait_volume_gone(&cache).await;
    assert!(volume_exists(&kept), "retain: true keeps the volume");
    assert_eq!(read_in_volume(&kept, "f"), "kept");
    let note = h.remove_note(&game).await;
    assert!(
        note.contains(&format!("kept volumes {kept} (retain: true)")),
        "{note}"
    );

    // The game made again finds its data where it left it.
    h.documents
        .create(&g)
        .await
        .expect("document written again");
    let again = h.wait_running(&game, None).await;
    assert_eq!(exec(&again.id, "cat /data/f"), (0, "kept\n".into()));
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_game_deleted_while_no_controller_ran_loses_its_volumes_at_the_next_start() {
    let h = harness("vol-offline").await;
    let game = game_id("vol-offline");
    let volume = h.volume_of(&game, "saves");
    let mut g = doc(&game);
    g.spec.volumes.push(own("saves", "/data"));
    {
        let mut controller = h.controller("c1", &[]).await;
        h.documents.create(&g).await.expect("document written");
        h.wait_running(&game, None).await;
        controller.terminate();
        controller.wait_exit(Duration::from_secs(30)).await;
    }
    h.documents.delete(&game, None).await.expect("deleted");
    assert!(
        volume_exists(&volume),
        "nothing removes it without a controller"
    );
    let _controller = h.controller("c2", &[]).await;
    wait_volume_gone(&volume).await;
    let note = h.remove_note(&game).await;
    assert!(
        note.contains(&format!("removed volumes {volume}")),
        "{note}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_host_path_outside_the_allow_list_is_refused_while_the_old_container_runs() {
    let h = harness("vol-host").await;
    let root = tempfile::tempdir().expect("a temporary directory");
    let allowed = root.path().join("maps");
    std::fs::create_dir(&allowed).unwrap();
    std::fs::write(allowed.join("level1"), "hills\n").unwrap();
    // A sibling whose name starts like the allowed one: not under it.
    let sibling = root.path().join("mapsX");
    std::fs::create_dir(&sibling).unwrap();
    let allowed = allowed.to_str().unwrap().to_owned();
    let _controller = h
        .controller("c1", &[("RTM_ALLOWED_HOST_PATHS", &allowed)])
        .await;
    let game = game_id("vol-host");
    let stored = h.documents.create(&doc(&game)).await.expect("written");
    let running = h.wait_running(&game, None).await;

    let mut outside = stored.clone();
    outside.spec.volumes.push(sourced(
        "/maps",
        VolumeSource {
            volume: None,
            host_path: Some(sibling.to_str().unwrap().to_owned()),
        },
        true,
    ));
    let stored = h
        .documents
        .update(&outside, revision_of(&stored))
        .await
        .expect("updated");
    let message = h.wait_refused(&game, ErrorCode::HostPathNotAllowed).await;
    assert!(
        message.contains("is not under this controller's --allowed-host-paths"),
        "{message}"
    );
    assert!(
        message.contains(&allowed),
        "names what is allowed: {message}"
    );
    let still = h
        .runtime
        .inspect_container(&running.id)
        .await
        .unwrap()
        .expect("the old container is there");
    assert!(
        still.is_running(),
        "a refused document never stops a working container"
    );

    let mut inside = stored.clone();
    inside.spec.volumes[0].source = Some(VolumeSource {
        volume: None,
        host_path: Some(allowed.clone()),
    });
    h.documents
        .update(&inside, revision_of(&stored))
        .await
        .expect("updated");
    let replaced = h.wait_running(&game, Some(&running.id)).await;
    assert_eq!(
        exec(&replaced.id, "cat /maps/level1"),
        (0, "hills\n".into())
    );
    let (code, out) = exec(&replaced.id, "touch /maps/new");
    assert_ne!(code, 0, "readOnly: {out}");
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_shared_volume_is_mounted_read_only_and_must_exist() {
    let h = harness("vol-shared").await;
    let _controller = h.controller("c1", &[]).await;
    let shared = format!("{}-maps", game_id("shared"));
    h.cleanup_volume(&shared);
    let game = game_id("vol-shared");
    let mut g = doc(&game);
    g.spec.volumes.push(sourced(
        "/maps",
        VolumeSource {
            volume: Some(shared.clone()),
            host_path: None,
        },
        true,
    ));
    h.documents.create(&g).await.expect("written");
    let message = h.wait_refused(&game, ErrorCode::VolumeNotFound).await;
    assert!(
        message.contains(&format!("docker volume create {shared}")),
        "{message}"
    );
    assert!(!volume_exists(&shared), "a shared volume is never created");

    assert!(docker_cli(&["volume", "create", &shared]).status.success());
    let mount = format!("{shared}:/v");
    let seeded = docker_cli(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        "-v",
        &mount,
        IMAGE_1,
        "-c",
        "echo dunes > /v/level2",
    ]);
    assert!(seeded.status.success());
    // The refused game is tried again on its back-off.
    let container = h.wait_running(&game, None).await;
    assert_eq!(
        exec(&container.id, "cat /maps/level2"),
        (0, "dunes\n".into())
    );
    let (code, out) = exec(&container.id, "echo x > /maps/level2");
    assert_ne!(code, 0, "read-only: {out}");
    assert!(out.contains("Read-only file system"), "{out}");

    h.rtctl(&["delete", &game, "--wait", "--timeout", "60s"]);
    assert!(volume_exists(&shared), "a shared volume is never removed");
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_foreign_volume_under_the_games_volume_name_is_refused_and_never_touched() {
    let h = harness("vol-squat").await;
    let _controller = h.controller("c1", &[]).await;
    let game = game_id("vol-squat");
    let squatted = h.volume_of(&game, "saves");
    assert!(
        docker_cli(&["volume", "create", "--label", "owner=someone", &squatted])
            .status
            .success()
    );
    let mut g = doc(&game);
    g.spec.volumes.push(own("saves", "/data"));
    h.documents.create(&g).await.expect("written");
    let message = h.wait_refused(&game, ErrorCode::VolumeConflict).await;
    assert!(message.contains("never uses or removes it"), "{message}");
    let ours: Vec<_> = h.runtime.list_game(&game).await.unwrap();
    assert!(ours.is_empty(), "no container was made: {ours:?}");

    h.rtctl(&["delete", &game, "--wait", "--timeout", "60s"]);
    assert!(volume_exists(&squatted), "someone else's volume stays");
    assert_eq!(volume_label(&squatted, "owner"), "someone");
}
