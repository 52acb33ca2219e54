//! Every example runs as shown to users: each manifest under `examples/` is
//! applied to a real controller and converges, the controller config file
//! loads, and the library example `wait_ready` waits for a real game.
//! (`tests/model_examples.rs` checks that the manifests parse.)

use rtm_testkit as common;
use rtm_testkit::process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rtm_controller::config::ControllerConfig;
use rtm_controller::runtime::{ContainerRuntime, container_name};
use rtm_core::model::parse::{Object, parse_objects};
use rtm_core::model::{DesiredState, GameDisruptionBudget, GameRuntime, Phase};
use rtm_core::records::Documents;
use rtm_core::records::StatusStore;
use rtm_core::store::Store;

use common::docker::{Cleanup, docker};
use common::{etcd, unique_keys};
use process::{ControllerOptions, WipeOnDrop, eventually, free_loopback_addr};

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// The game manifests of `file`, renamed for this run (container names and host
/// ports are global on the Docker host) but otherwise as written.
fn manifests(file: &str) -> Vec<GameRuntime> {
    let mut docs: Vec<GameRuntime> = objects(file)
        .into_iter()
        .filter_map(|object| match object {
            Object::Game(doc) => Some(doc),
            Object::Budget(_) => None,
        })
        .collect();
    for doc in &mut docs {
        doc.metadata.name = format!("{}-x{}", doc.metadata.name, std::process::id());
        if let Some(hostname) = &mut doc.spec.hostname {
            hostname.push_str(&format!("-x{}", std::process::id()));
        }
        for port in &mut doc.spec.ports {
            if port.host_port.is_some() {
                port.host_port = Some(free_loopback_addr().port().into());
            }
        }
    }
    docs
}

/// Every document of `file`, of any kind, as written.
fn objects(file: &str) -> Vec<Object> {
    let text = std::fs::read_to_string(example(file)).expect("example readable");
    parse_objects(&text).expect("example parses")
}

/// The disruption budgets of `file`, as written (a test's prefix is its own).
fn budgets(file: &str) -> Vec<GameDisruptionBudget> {
    objects(file)
        .into_iter()
        .filter_map(|object| match object {
            Object::Budget(budget) => Some(budget),
            Object::Game(_) => None,
        })
        .collect()
}

/// The binary of a `cargo` example. `cargo test` builds examples only as
/// test harnesses (under a hashed name), so `scripts/test` runs `cargo
/// build --examples` first.
fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("the test binary's path");
    let profile = deps
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let binary = profile.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the examples first (cargo build --examples), as scripts/test does",
        binary.display()
    );
    binary
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn every_example_manifest_converges_under_a_real_controller() {
    let store = etcd().await;
    let runtime = docker().await;
    let keys = unique_keys("examples");
    let _wipe = WipeOnDrop(keys.clone());
    let documents = Documents::new(store.clone(), keys.clone());
    let status = StatusStore::new(store.clone(), keys.clone());

    let mut games = Vec::new();
    let budget_records = rtm_core::records::budgets::Budgets::new(store.clone(), keys.clone());
    for file in [
        "basic.yaml",
        "stopped.yaml",
        "fleet.yaml",
        "tournament.yaml",
        "sessions.yaml",
        "graceful.yaml",
        "scheduled.yaml",
    ] {
        for budget in budgets(file) {
            budget_records
                .create(&budget)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        for doc in manifests(file) {
            documents
                .create(&doc)
                .await
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            games.push(doc);
        }
    }
    let names: Vec<String> = games
        .iter()
        .map(|g| container_name(keys.prefix(), &g.metadata.name))
        .collect();
    let _cleanup = Cleanup::new(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let mut controller = ControllerOptions::new(&keys, "examples").start().await;

    for game in &games {
        let name = game.metadata.name.clone();
        let want = match game.spec.state {
            DesiredState::Running => Phase::Running,
            DesiredState::Stopped => Phase::Stopped,
        };
        eventually(
            Duration::from_secs(90),
            &format!("{name} to be {want}"),
            async || {
                let current = status.read(&name).await.map_err(|e| e.to_string())?.value;
                if current.phase == want && current.observed_generation.is_some() {
                    Ok(())
                } else {
                    Err(format!(
                        "phase {}, observedGeneration {:?}",
                        current.phase, current.observed_generation
                    ))
                }
            },
        )
        .await;
        let container = runtime
            .inspect_container(&container_name(keys.prefix(), &name))
            .await
            .unwrap();
        assert_eq!(
            container.is_some_and(|c| c.is_running()),
            want == Phase::Running,
            "{name}: the container's state matches spec.state"
        );
    }

    // The library example watches a real game's status until it is Ready.
    let ready = games
        .iter()
        .find(|g| g.spec.state == DesiredState::Running)
        .unwrap();
    let output = Command::new(example_binary("wait_ready"))
        .args([&ready.metadata.name, "30s"])
        .env("RTM_ETCD_ENDPOINTS", common::etcd_endpoints().join(","))
        .env("RTM_PREFIX", keys.prefix())
        .output()
        .expect("run the wait_ready example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is ready"), "{stdout}");

    // The allocate example allocates a Ready game of sessions.yaml and releases it.
    let duel = games
        .iter()
        .find(|g| g.metadata.name.starts_with("duel-1"))
        .expect("sessions.yaml holds duel-1");
    let run_allocate = |args: &[&str]| {
        Command::new(example_binary("allocate"))
            .args(args)
            .env("RTM_ETCD_ENDPOINTS", common::etcd_endpoints().join(","))
            .env("RTM_PREFIX", keys.prefix())
            .output()
            .expect("run the allocate example")
    };
    let output = run_allocate(&[&duel.metadata.name, "match-42"]);
    assert!(output.status.success(), "{output:?}");
    let session = store
        .get(&keys.session(&duel.metadata.name))
        .await
        .unwrap()
        .expect("the session record");
    assert!(
        rtm_core::records::sessions::decode(&session).is_allocated(),
        "{session:?}"
    );
    let again = run_allocate(&[&duel.metadata.name, "match-43"]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("[conflict]"),
        "{again:?}"
    );
    let output = run_allocate(&[&duel.metadata.name, "match-42-over", "release"]);
    assert!(output.status.success(), "{output:?}");

    // And gives up on a game that never becomes Ready.
    let output = Command::new(example_binary("wait_ready"))
        .args(["no-such-game", "1s"])
        .env("RTM_ETCD_ENDPOINTS", common::etcd_endpoints().join(","))
        .env("RTM_PREFIX", keys.prefix())
        .output()
        .expect("run the wait_ready example");
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    for game in &games {
        documents.delete(&game.metadata.name, None).await.unwrap();
    }
    for name in &names {
        eventually(
            Duration::from_secs(60),
            &format!("{name} to be removed"),
            async || match runtime.inspect_container(name).await {
                Ok(None) => Ok(()),
                Ok(Some(c)) => Err(format!("{} is {:?}", c.id, c.state)),
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
    }
    controller.terminate();
    let exit = controller.wait_exit(Duration::from_secs(30)).await;
    assert!(
        exit.success(),
        "the controller drains and exits 0: {exit:?}"
    );
    assert!(
        store
            .list(&keys.statuses(), None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[test]
fn the_example_controller_config_file_loads() {
    let path = example("config/rtmanager.yaml");
    let config = ControllerConfig::load(["rtmanager", "--config", path.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(config.lease_ttl, Duration::from_secs(15));
    assert_eq!(config.concurrency, 32);
    assert_eq!(config.etcd.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(config.placement.port_range, "17000-17999");
    assert_eq!(config.placement.placement_strategy, "Packed");
    assert_eq!(config.placement.self_fence_after, Duration::from_secs(30));
    assert_eq!(config.config_file.as_deref(), Some(path.as_path()));
}
