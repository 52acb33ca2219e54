//! Image pulls end to end: the real `rtmanager` against the real etcd, the real Docker
//! engine and the real registries `scripts/services` starts on loopback (Debian's
//! docker-registry, one anonymous at `$RTM_REGISTRY`, one with htpasswd auth at
//! `$RTM_REGISTRY_AUTH`). Each test pushes the local test images there under a
//! repository of its own (`docker tag` + `docker push`) and removes its tags after.
//!
//! Ignored by a bare `cargo test` (they need etcd, Docker and the registries);
//! `scripts/test` runs them, one at a time.

use rtm_testkit as common;
use rtm_testkit::process;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerInfo, DockerRuntime, LABEL_IMAGE_ID, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{GameRuntime, GameRuntimeStatus, OpKind, Outcome, Phase};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::{Keys, Store};

use common::docker::{Cleanup, IMAGE_1, IMAGE_2, docker, docker_cli, game as game_id};
use common::registry::{Pushed, env};
use common::{etcd, revision_of, unique_keys};
use process::{ControllerOptions, WipeOnDrop, containers_of, describe, eventually, timeline};

/// A start or recreate of the test engine takes about a second, a pull of its 2 MB
/// from loopback less; the rest is slack for a loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Harness {
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
        history: History::new(store, keys.clone(), 1000),
        runtime: Arc::new(docker().await),
        _wipe: WipeOnDrop(keys.clone()),
        keys,
        _serial: serial,
    }
}

/// A registry repository unique to this test and process.
fn repository(registry: &str, test: &str) -> String {
    format!("{registry}/pulls-{test}-{}/engine", std::process::id())
}

fn doc(name: &str, image: &str, policy: &str) -> GameRuntime {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {image}\n  imagePullPolicy: {policy}\n  stopTimeout: 5s\n"
    );
    parse_documents(&yaml).expect("fixture parses").remove(0)
}

/// The Docker config.json the controller reads its credentials from.
fn write_auth(path: &Path, registry: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let text = format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#);
    // Written aside and renamed, as a Secret update swaps the file.
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).expect("auth file written");
    std::fs::rename(&aside, path).expect("auth file swapped");
}

impl Harness {
    fn controller(&self, name: &str) -> ControllerOptions {
        ControllerOptions::new(&self.keys, name)
            .env("RTM_RESYNC", "2s")
            .env("RTM_IMAGE_CHECK_INTERVAL", "1s")
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents
            .get_status(game)
            .await
            .map_err(|e| format!("status read: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    async fn history(&self, game: &str) -> Vec<HistoryEntry> {
        self.history
            .recent(game, 1000)
            .await
            .expect("history readable")
    }

    async fn containers(&self, game: &str) -> Result<Vec<ContainerInfo>, String> {
        Ok(containers_of(&self.runtime, game)
            .await?
            .into_iter()
            .filter(|c| c.prefix() == Some(self.keys.prefix()))
            .collect())
    }

    /// Running, one running container, created from `image_id` (status and label).
    async fn running_from(&self, game: &str, image_id: &str) -> (GameRuntimeStatus, ContainerInfo) {
        let what = format!("{game} to run {image_id}");
        eventually(CONVERGE, &what, async || {
            let status = self.status(game).await?;
            let containers = self.containers(game).await?;
            match containers.as_slice() {
                [c] if c.is_running()
                    && status.phase == Phase::Running
                    && status.container_id.as_deref() == Some(c.id.as_str())
                    && status.image_id.as_deref() == Some(image_id)
                    && c.labels.get(LABEL_IMAGE_ID).map(String::as_str) == Some(image_id) =>
                {
                    Ok((status, c.clone()))
                }
                _ => Err(format!(
                    "status {:?} imageID {:?}; containers {}; history {}",
                    status.phase,
                    status.image_id,
                    describe(&containers),
                    timeline(&self.history(game).await)
                )),
            }
        })
        .await
    }

    /// Waits for a finished operation of `kind` that failed with `code`.
    async fn failed_with(&self, game: &str, kind: OpKind, code: ErrorCode) -> HistoryEntry {
        let what = format!("{game}: a {kind:?} failing with {code}");
        eventually(CONVERGE, &what, async || {
            let entries = self.history(game).await;
            entries
                .iter()
                .find(|e| e.op_kind == kind && e.error_code == Some(code))
                .cloned()
                .ok_or_else(|| timeline(&entries))
        })
        .await
    }
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registries: run scripts/test"]
async fn if_not_present_pulls_a_missing_image_from_the_registry_and_runs_it() {
    let h = harness("pull-missing").await;
    let game = game_id("pull-missing");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let mut pushed = Pushed::new();
    let repo = repository(&env("RTM_REGISTRY"), "missing");
    let image = format!("{repo}:1");
    let digest = pushed.push(IMAGE_1, &image);
    pushed.untag_here(&image);
    let controller = h.controller("pull").start().await;
    h.documents
        .create(&doc(&game, &image, "IfNotPresent"))
        .await
        .expect("document written");
    let (status, _) = h.running_from(&game, &format!("{repo}@{digest}")).await;
    assert_eq!(status.image_ref.as_deref(), Some(image.as_str()));
    let present = docker_cli(&["image", "inspect", &image]);
    assert!(present.status.success(), "pulled onto the host");
    assert!(
        controller.log_text().contains("ImagePulled"),
        "the pull is logged{}",
        controller.log_tail()
    );
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registries: run scripts/test"]
async fn always_recreates_once_when_its_tag_moves_and_never_while_it_stays() {
    let h = harness("pull-always").await;
    let game = game_id("pull-always");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let mut pushed = Pushed::new();
    let repo = repository(&env("RTM_REGISTRY"), "always");
    let image = format!("{repo}:1");
    let first = pushed.push(IMAGE_1, &image);
    let controller = h.controller("always").start().await;
    h.documents
        .create(&doc(&game, &image, "Always"))
        .await
        .expect("document written");
    let (_, before) = h.running_from(&game, &format!("{repo}@{first}")).await;

    // The tag moves: :2's content pushed under :1.
    let moved = pushed.push(IMAGE_2, &image);
    assert_ne!(moved, first);
    let (status, after) = h.running_from(&game, &format!("{repo}@{moved}")).await;
    assert_ne!(after.id, before.id, "recreated");
    assert_eq!(status.restart_count, 0, "a voluntary update, not a crash");
    let restarts = |entries: &[HistoryEntry]| {
        entries
            .iter()
            .filter(|e| e.op_kind == OpKind::Restart && e.outcome == Outcome::Success)
            .count()
    };
    let history = h.history(&game).await;
    assert_eq!(restarts(&history), 1, "{}", timeline(&history));

    // Later looks see the same digest: nothing more happens. Judged after the
    // controller looked at the registry at least three more times.
    let looks = || async {
        let text = controller.metrics().await;
        text.lines()
            .find(|l| {
                l.starts_with("rtmanager_docker_request_duration_seconds_count")
                    && l.contains("call=\"registry_digest\"")
                    && l.contains("result=\"ok\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Settled first: the recreate's own follow-up writes (Ready after the start) are done.
    eventually(CONVERGE, "the status to settle", async || {
        let status = h.status(&game).await?;
        match process::ready(&status) {
            Some(rtm_core::model::ConditionStatus::True) => Ok(()),
            other => Err(format!("Ready {other:?}")),
        }
    })
    .await;
    let writes = controller.metric("rtmanager_status_writes_total").await;
    let seen = looks().await;
    eventually(CONVERGE, "three more looks at the tag", async || {
        let now = looks().await;
        if now >= seen + 3.0 {
            Ok(())
        } else {
            Err(format!("{now} looks (from {seen})"))
        }
    })
    .await;
    let containers = h.containers(&game).await.unwrap();
    assert!(
        matches!(containers.as_slice(), [c] if c.id == after.id && c.is_running()),
        "{}",
        describe(&containers)
    );
    let history = h.history(&game).await;
    assert_eq!(restarts(&history), 1, "not again: {}", timeline(&history));
    assert_eq!(
        controller.metric("rtmanager_status_writes_total").await,
        writes,
        "an unchanged digest writes nothing to etcd"
    );
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registries: run scripts/test"]
async fn wrong_credentials_fail_as_unauthorized_and_leave_the_running_container_alone() {
    let h = harness("pull-auth").await;
    let game = game_id("pull-auth");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    let dir = tempfile::tempdir().unwrap();
    let mut pushed = Pushed::new();
    pushed.login(dir.path());
    let registry = env("RTM_REGISTRY_AUTH");
    let (user, password) = (env("RTM_REGISTRY_USER"), env("RTM_REGISTRY_PASSWORD"));
    let repo = repository(&registry, "auth");
    let image = format!("{repo}:1");
    let digest = pushed.push(IMAGE_1, &image);
    pushed.untag_here(&image);
    let auth = dir.path().join("config.json");
    let wrong = "not-the-password-7431";
    write_auth(&auth, &registry, &user, wrong);
    let controller = h
        .controller("auth")
        .env("RTM_REGISTRY_AUTH_FILE", &auth.display().to_string())
        .start()
        .await;
    h.documents
        .create(&doc(&game, &image, "Always"))
        .await
        .expect("document written");
    let refused = h
        .failed_with(&game, OpKind::Start, ErrorCode::ImagePullUnauthorized)
        .await;
    assert!(h.containers(&game).await.unwrap().is_empty(), "{refused:?}");

    // The right password: the file is read again, the game runs.
    write_auth(&auth, &registry, &user, &password);
    let (_, before) = h.running_from(&game, &format!("{repo}@{digest}")).await;

    // Wrong again, and a restart asked for: refused before anything is stopped.
    write_auth(&auth, &registry, &user, wrong);
    let mut current = h.documents.get(&game).await.unwrap().unwrap();
    let expected = revision_of(&current);
    current.spec.restart_token = "tok-auth".into();
    h.documents.update(&current, expected).await.unwrap();
    let failed = h
        .failed_with(&game, OpKind::Restart, ErrorCode::ImagePullUnauthorized)
        .await;
    let containers = h.containers(&game).await.unwrap();
    assert!(
        matches!(containers.as_slice(), [c] if c.id == before.id && c.is_running()),
        "the old container keeps running: {} ({failed:?})",
        describe(&containers)
    );
    assert!(
        !h.history(&game)
            .await
            .iter()
            .any(|e| e.op_kind == OpKind::Stop),
        "nothing was stopped"
    );
    let log = controller.log_text();
    for secret in [password.as_str(), wrong] {
        assert!(
            !log.contains(secret),
            "a password in the log{}",
            controller.log_tail()
        );
        let history = format!("{:?}", h.history(&game).await);
        assert!(!history.contains(secret), "a password in the history");
    }
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registries: run scripts/test"]
async fn a_registry_that_never_answers_fails_as_image_pull_timeout_in_bounded_time() {
    let h = harness("pull-timeout").await;
    let game = game_id("pull-timeout");
    let _cleanup = Cleanup::new(&[&container_name(h.keys.prefix(), &game)]);
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let _controller = h
        .controller("timeout")
        .env("RTM_IMAGE_PULL_TIMEOUT", "2s")
        .start()
        .await;
    let image = format!("127.0.0.1:{port}/silent/engine:1");
    let asked = Instant::now();
    h.documents
        .create(&doc(&game, &image, "IfNotPresent"))
        .await
        .expect("document written");
    let entry = h
        .failed_with(&game, OpKind::Start, ErrorCode::ImagePullTimeout)
        .await;
    assert!(asked.elapsed() < Duration::from_secs(30), "{entry:?}");
    assert!(
        entry
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("--image-pull-timeout"),
        "{entry:?}"
    );
    assert!(h.containers(&game).await.unwrap().is_empty());
    held.abort();
}

#[tokio::test]
#[ignore = "needs etcd, Docker and the registries: run scripts/test"]
async fn never_is_image_not_found_and_an_unreachable_registry_fails_fast() {
    let h = harness("pull-never").await;
    let never = game_id("pull-never");
    let hub = game_id("pull-hub");
    let gone = game_id("pull-gone");
    let _cleanup = Cleanup::new(&[
        &container_name(h.keys.prefix(), &never),
        &container_name(h.keys.prefix(), &hub),
        &container_name(h.keys.prefix(), &gone),
    ]);
    let repo = repository(&env("RTM_REGISTRY"), "never");
    let _controller = h.controller("never").start().await;
    let asked = Instant::now();
    h.documents
        .create(&doc(&never, &format!("{repo}:1"), "Never"))
        .await
        .unwrap();
    // No public registry is reachable here: the pull fails at once, not after minutes.
    h.documents
        .create(&doc(
            &hub,
            "docker.io/rtmanager-test/nowhere:1",
            "IfNotPresent",
        ))
        .await
        .unwrap();
    // A tag the registry does not have ("manifest unknown").
    h.documents
        .create(&doc(&gone, &format!("{repo}:404"), "IfNotPresent"))
        .await
        .unwrap();
    h.failed_with(&never, OpKind::Start, ErrorCode::ImageNotFound)
        .await;
    let hub_failure = h
        .failed_with(&hub, OpKind::Start, ErrorCode::ImagePullFailed)
        .await;
    let unknown = h
        .failed_with(&gone, OpKind::Start, ErrorCode::ImageNotFound)
        .await;
    assert!(asked.elapsed() < Duration::from_secs(30), "{hub_failure:?}");
    assert!(
        unknown
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("manifest unknown"),
        "{unknown:?}"
    );
}
