//! Every YAML file under `examples/` parses and validates, so the examples shown to users
//! (and used by the other integration tests) never rot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rtm_core::model::parse::{Object, parse_objects};
use rtm_core::model::{DesiredState, GameRuntime};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn yaml_files() -> Vec<PathBuf> {
    let dir = examples_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of the file, of any kind.
fn parse_objects_of(path: &Path) -> Vec<Object> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    parse_objects(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The games of the file.
fn parse_file(path: &Path) -> Vec<GameRuntime> {
    parse_objects_of(path)
        .into_iter()
        .filter_map(|object| match object {
            Object::Game(game) => Some(game),
            Object::Budget(_) => None,
        })
        .collect()
}

fn example(name: &str) -> Vec<GameRuntime> {
    parse_file(&examples_dir().join(name))
}

#[test]
fn every_example_parses_and_validates() {
    let files = yaml_files();
    assert!(
        files.len() >= 3,
        "expected the example files, found {files:?}"
    );
    for path in files {
        let docs = parse_objects_of(&path);
        assert!(!docs.is_empty(), "{} holds no document", path.display());
    }
}

#[test]
fn basic_example_is_one_running_game_with_a_published_port() {
    let docs = example("basic.yaml");
    assert_eq!(docs.len(), 1);
    let game = &docs[0];
    assert_eq!(game.metadata.name, "arena-1");
    assert_eq!(game.spec.image, "rtmanager-test/engine:1");
    assert_eq!(game.spec.state, DesiredState::Running);
    assert_eq!(game.spec.ports[0].container_port, 7000);
    assert_eq!(game.spec.ports[0].fixed_host_port(), Some(17001));
    assert_eq!(
        game.spec.resources.memory.map(|m| m.bytes()),
        Some(64 << 20)
    );
    assert_eq!(
        game.spec.resources.cpus.map(|c| c.nano_cpus()),
        Some(500_000_000)
    );
    assert_eq!(game.spec.stop_timeout, Duration::from_secs(10));
    assert!(!game.spec.env.is_empty());
}

#[test]
fn stopped_example_is_stopped() {
    let docs = example("stopped.yaml");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].spec.state, DesiredState::Stopped);
}

#[test]
fn fleet_example_is_five_games_without_host_ports() {
    let docs = example("fleet.yaml");
    let names: Vec<&str> = docs.iter().map(GameRuntime::name).collect();
    assert_eq!(
        names,
        ["fleet-1", "fleet-2", "fleet-3", "fleet-4", "fleet-5"]
    );
    for game in &docs {
        assert!(
            game.spec.ports.iter().all(|port| port.host_port.is_none()),
            "{} publishes a host port",
            game.metadata.name
        );
    }
}
