//! `rtctl prepull` end to end: the real `rtctl` and `rtmanager` against the real etcd, the
//! real Docker engine and the anonymous loopback registry `scripts/services` starts
//! (`$RTM_REGISTRY`). Each test pushes the local test images there under a repository of
//! its own and removes its tags after.
//!
//! Ignored by a bare `cargo test` (they need etcd, Docker and the registry); `scripts/test`
//! runs them, one at a time.

use rtm_testkit as common;
use rtm_testkit::process;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerInfo, DockerRuntime, container_name};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{GameRuntime, Phase};
use rtm_core::records::Documents;
use rtm_core::store::{Keys, Store, Txn};

use common::docker::{Cleanup, IMAGE_1, docker, docker_cli, game as game_id, run_bounded};
use common::registry::{Pushed, docker_ok, env};
use common::{etcd, etcd_endpoints, unique_keys};
use process::{ControllerOptions, WipeOnDrop, containers_of, describe, eventually};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// A start of the test engine takes about a second, a pull of its 2 MB from loopback
/// less; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
    keys: Keys,
    store: Arc<dyn Store>,
    documents: Documents,
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
        store,
        runtime: Arc::new(docker().await),
        _wipe: WipeOnDrop(keys.clone()),
        keys,
        _serial: serial,
    }
}

fn registry() -> String {
    env("RTM_REGISTRY")
}

fn repository(test: &str) -> String {
    format!(
        "{}/prepull-{test}-{}/engine",
        registry(),
        std::process::id()
    )
}

fn doc(name: &str, image: &str, node: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
         labels: {{wave: prepull}}\nspec:\n  image: {image}\n  node: {node}\n  stopTimeout: 5s\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

/// What an rtctl run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\nstdout:\n{}stderr:\n{}",
            self.code, self.took, self.stdout, self.stderr
        )
    }
}

impl Harness {
    fn rtctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(RTCTL);
        command
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
            .env("RTM_PREFIX", self.keys.prefix())
            .env("RTMCONFIG", "/dev/null");
        command
    }

    fn rtctl(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = run_bounded(self.rtctl_command(args), Duration::from_secs(120))
            .unwrap_or_else(|| panic!("rtctl {args:?} did not finish within 120 s"));
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    fn controller(&self, name: &str, node: &str) -> ControllerOptions {
        ControllerOptions::new(&self.keys, name).env("RTM_NODE_NAME", node)
    }

    async fn containers(&self, game: &str) -> Result<Vec<ContainerInfo>, String> {
        Ok(containers_of(&self.runtime, game)
            .await?
            .into_iter()
            .filter(|c| c.prefix() == Some(self.keys.prefix()))
            .collect())
    }

    /// Waits until `game` runs in one container; that container.
    async fn running(&self, game: &str) -> ContainerInfo {
        eventually(CONVERGE, &format!("{game} to run"), async || {
            let status = self.documents.get_status(game).await.ok().flatten();
            let containers = self.containers(game).await?;
            match (status.map(|s| s.phase), containers.as_slice()) {
                (Some(Phase::Running), [c]) if c.is_running() => Ok(c.clone()),
                (phase, _) => Err(format!("phase {phase:?}; {}", describe(&containers))),
            }
        })
        .await
    }

    /// Every key left under `prepulls/`.
    async fn prepull_keys(&self) -> Vec<String> {
        self.store
            .list(&self.keys.prepulls(), None)
            .await
            .expect("prepulls/ listed")
            .items
            .into_iter()
            .map(|kv| kv.key)
            .collect()
    }
}

fn image_present(image: &str) -> bool {
    docker_cli(&["image", "inspect", image]).status.success()
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registry: run scripts/test"]
async fn a_prepull_pulls_a_games_image_back_onto_its_node_and_leaves_its_container_alone() {
    let h = harness("prepull-ok").await;
    let game = game_id("prepull-ok");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let mut pushed = Pushed::new();
    let repo = repository("ok");
    let image = format!("{repo}:1");
    let digest = pushed.push(IMAGE_1, &image);
    let _controller = h.controller("ok", "pp-node-a").start().await;
    h.documents
        .create(&doc(&game, &image, "pp-node-a"))
        .await
        .expect("document written");
    let before = h.running(&game).await;
    // The tag leaves the host (the running container keeps its image by id).
    docker_ok(&["rmi", &image]);
    assert!(!image_present(&image));

    let run = h.rtctl(&["prepull", "-l", "wave=prepull", "--timeout", "60s"]);
    assert_eq!(run.code, Some(0), "{run}");
    assert!(image_present(&image), "pulled back onto the host: {run}");
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with("pp-node-a"))
        .unwrap_or_else(|| panic!("a row of the node: {run}"));
    assert!(row.contains(&image) && row.contains("pulled"), "{run}");
    assert!(
        row.contains(&format!("{repo}@{digest}")),
        "the digest: {run}"
    );
    assert!(run.stderr.contains("1 game,"), "{run}");
    let after = h.containers(&game).await.unwrap();
    assert!(
        matches!(after.as_slice(), [c] if c.id == before.id && c.is_running()),
        "the running container is untouched: {}",
        describe(&after)
    );
    assert_eq!(
        h.prepull_keys().await,
        Vec::<String>::new(),
        "request and answers go with rtctl's lease"
    );
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registry: run scripts/test"]
async fn an_image_the_registry_does_not_have_is_image_not_found_and_exit_8() {
    let h = harness("prepull-404").await;
    let game = game_id("prepull-404");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let _controller = h.controller("404", "pp-node-b").start().await;
    h.documents
        .create(&doc(&game, IMAGE_1, "pp-node-b"))
        .await
        .expect("document written");
    let before = h.running(&game).await;
    let missing = format!("{}:404", repository("404"));
    let run = h.rtctl(&["prepull", &game, "--image", &missing, "--timeout", "60s"]);
    assert_eq!(run.code, Some(8), "{run}");
    assert!(
        run.stdout.lines().any(|l| l.starts_with("pp-node-b")
            && l.contains(&missing)
            && l.contains("image_not_found")),
        "{run}"
    );
    assert!(run.stderr.contains("1 of 1 pulls failed"), "{run}");
    let after = h.containers(&game).await.unwrap();
    assert!(
        matches!(after.as_slice(), [c] if c.id == before.id && c.is_running()),
        "{}",
        describe(&after)
    );
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registry: run scripts/test"]
async fn a_node_no_controller_serves_times_out_with_exit_9_and_a_deleted_request_ends_the_wait() {
    let h = harness("prepull-ghost").await;
    // No controller at all: the game's node never answers.
    let game = game_id("prepull-ghost");
    h.documents
        .create(&doc(&game, IMAGE_1, "pp-ghost"))
        .await
        .expect("document written");
    let run = h.rtctl(&["prepull", &game, "--timeout", "3s"]);
    assert_eq!(run.code, Some(9), "{run}");
    assert!(
        run.took < Duration::from_secs(15),
        "within the timeout: {run}"
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("pp-ghost") && l.contains("no answer")),
        "{run}"
    );
    assert!(
        run.stderr.contains(&format!(
            "gameruntime/{game} not prepulled: its node pp-ghost did not answer"
        )),
        "{run}"
    );
    assert_eq!(h.prepull_keys().await, Vec::<String>::new(), "revoked");

    // Someone deletes the request while rtctl waits: it says so at once (exit 5), not at
    // its timeout.
    let child = h
        .rtctl_command(&["prepull", &game, "--timeout", "5m"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rtctl starts");
    let request = eventually(CONVERGE, "the request to be written", async || {
        h.prepull_keys()
            .await
            .into_iter()
            .next()
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    let deleted = Instant::now();
    h.store
        .txn(Txn::new().delete(request))
        .await
        .expect("deleted");
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("rtctl ends once its request is deleted (does it watch the request key?)")
    .unwrap()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(deleted.elapsed() < Duration::from_secs(20), "{stderr}");
    assert!(stderr.contains("was deleted by someone else"), "{stderr}");
}
