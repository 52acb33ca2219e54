//! `rtctl` for sessions, disruption budgets, rollouts and the bulk verbs, the real binary
//! against the real etcd started by `scripts/services`, each test under its own prefix.
//! Where a test needs a Ready game (allocation refuses any other) it runs the real
//! `rtmanager` and Docker; the others write what they need through the store types (a
//! session record is the documented key a matchmaker writes). Ignored by a bare `cargo test`;
//! `scripts/test` runs them, and a missing etcd fails them.

use rtm_testkit as common;
use rtm_testkit::process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rtm_core::model::{ANNOTATION_FORCE, Session, SessionState, Timestamp};
use rtm_core::records::Documents;
use rtm_core::records::sessions::encode;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, Txn};

use common::rtctl::{Rtctl, Said};
use common::{etcd, unique_keys};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);
/// How long a game may take to start under the real controller (about a second; the rest
/// is slack for a loaded machine).
const CONVERGE: Duration = Duration::from_secs(60);

/// Exit codes, as documented in `rtctl --help`.
mod exit {
    pub const NOT_FOUND: i32 = 4;
    pub const CONFLICT: i32 = 5;
    pub const CORRUPT: i32 = 12;
    pub const NOT_READY: i32 = 13;
    pub const IN_SESSION: i32 = 14;
    pub const NOT_DONE: i32 = 15;
}

struct World {
    store: Arc<EtcdStore>,
    keys: Keys,
    docs: Documents,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(test: &str) -> World {
        let store = etcd().await;
        let keys = unique_keys(test);
        World {
            docs: Documents::new(store.clone(), keys.clone()),
            store,
            keys,
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn run(&self, args: &[&str]) -> Said {
        self.rtctl().run(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.rtctl().ok(args)
    }

    fn fails(&self, args: &[&str], code: i32) -> Said {
        self.rtctl().fails(args, code)
    }

    fn rtctl(&self) -> Rtctl {
        Rtctl::new(RTCTL, &self.keys, CONVERGE + RUN)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    /// Writes the session record a matchmaker would: the game is Allocated.
    async fn allocated_by_hand(&self, game: &str, reference: &str) {
        let session = Session {
            state: SessionState::Allocated,
            reference: Some(reference.to_owned()),
            since: Timestamp::now(),
            container_id: None,
            source: Some("api".to_owned()),
        };
        self.store
            .txn(Txn::new().put(self.keys.session(game), encode(&session)))
            .await
            .expect("write a session record");
    }
}

fn game_yaml(name: &str, image: &str, tier: &str) -> String {
    format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
         labels: {{tier: {tier}}}\nspec:\n  image: {image}\n  stopTimeout: 5s\n"
    )
}

const BUDGET: &str = "apiVersion: rtmanager.dev/v1alpha1\nkind: GameDisruptionBudget\n\
                      metadata: {name: casual}\nspec:\n  selector: {matchLabels: {tier: casual}}\n  \
                      maxUnavailable: \"50%\"\n";

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn budgets_apply_with_games_and_the_bulk_verbs_act_on_each_matched_game() {
    let w = World::new("rtctl-budgets").await;
    let fleet = format!(
        "{BUDGET}---\n{}---\n{}---\n{}---\n{}",
        game_yaml("c1", "rtmanager-test/engine:1", "casual"),
        game_yaml("c2", "rtmanager-test/engine:1", "casual"),
        game_yaml("c3", "rtmanager-test/engine:1", "casual"),
        game_yaml("r1", "rtmanager-test/engine:1", "ranked"),
    );
    let file = w.file("fleet.yaml", &fleet);
    let file = file.to_str().expect("a UTF-8 path");
    let applied = w.ok(&["apply", "-f", file]);
    assert!(
        applied.contains("gamedisruptionbudget/casual created"),
        "{applied}"
    );
    assert!(applied.contains("gameruntime/c3 created"), "{applied}");
    assert!(
        w.ok(&["apply", "-f", file])
            .contains("gamedisruptionbudget/casual unchanged")
    );
    assert_eq!(
        w.run(&["diff", "-f", file]).code,
        Some(0),
        "nothing differs"
    );

    // An invalid budget in the file: nothing of the file is written.
    let broken = w.file(
        "broken.yaml",
        &format!(
            "{}---\n{}",
            game_yaml("c9", "rtmanager-test/engine:1", "casual"),
            BUDGET.replace("\"50%\"", "\"150%\"")
        ),
    );
    w.fails(&["apply", "-f", broken.to_str().unwrap()], 3);
    assert!(w.docs.get("c9").await.unwrap().is_none(), "all or nothing");

    let listed = w.ok(&["get", "budgets"]);
    let header = listed.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "SELECTOR",
        "MAX-UNAVAILABLE",
        "COVERED",
        "ALLOWED",
        "HELD",
        "AGE",
    ] {
        assert!(header.contains(column), "{listed}");
    }
    let row: Vec<&str> = listed
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..6],
        ["casual", "tier=casual", "50%", "3", "2", "0"],
        "{listed}"
    );
    for alias in ["budget", "gdb", "gamedisruptionbudgets"] {
        assert!(w.ok(&["get", alias, "casual"]).contains("casual"));
    }
    let yaml = w.ok(&["get", "budgets", "casual", "-o", "yaml"]);
    assert!(yaml.contains("kind: GameDisruptionBudget"), "{yaml}");
    let described = w.ok(&["describe", "budget", "casual"]);
    assert!(
        described.contains("Covered Games:     c1 c2 c3"),
        "{described}"
    );
    assert!(described.contains("2 of 3 covered games"), "{described}");
    assert!(described.contains("Held Slots (0):"), "{described}");
    w.fails(&["describe", "budget", "nope"], exit::NOT_FOUND);

    // restart -l: one line per matched game; the ranked game is left alone.
    let before = w.docs.get("r1").await.unwrap().unwrap();
    let said = w.ok(&["restart", "-l", "tier=casual", "--ref", "BULK-1"]);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 3, "{said}");
    for (line, game) in lines.iter().zip(["c1", "c2", "c3"]) {
        assert_eq!(
            *line,
            format!("gameruntime/{game} restart requested (ref BULK-1)")
        );
    }
    assert_eq!(w.docs.get("r1").await.unwrap().unwrap(), before);
    let none = w.ok(&["stop", "-l", "tier=nobody"]);
    assert!(none.is_empty(), "{none}");
    assert!(
        w.run(&["stop", "-l", "tier=nobody"])
            .stderr
            .contains("No resources found")
    );

    // A game in session: stop --all writes every game, says which one waits, and delete -l
    // skips it (in_session) unless --force.
    w.allocated_by_hand("c2", "match-7").await;
    let said = w.run(&["stop", "--all"]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    assert_eq!(said.stdout.lines().count(), 4, "{}", said.stdout);
    assert!(
        said.stderr.contains(
            "c2 is in session (ref match-7): the stop waits for the session to end (condition \
             UpdatePending); --force ends the match now"
        ),
        "{}",
        said.stderr
    );
    let forced = w.ok(&["stop", "c2", "--force"]);
    assert!(forced.contains("forced"), "{forced}");
    let doc = w.docs.get("c2").await.unwrap().unwrap();
    assert_eq!(
        doc.metadata.annotations.get(ANNOTATION_FORCE),
        doc.metadata.generation.map(|g| g.to_string()).as_ref(),
        "the force names the generation it wrote"
    );
    w.ok(&["start", "c2"]);
    let doc = w.docs.get("c2").await.unwrap().unwrap();
    assert!(
        !doc.metadata.annotations.contains_key(ANNOTATION_FORCE),
        "a later write drops it"
    );

    let said = w.fails(&["delete", "-l", "tier=casual"], exit::IN_SESSION);
    assert!(
        said.stdout.contains("gameruntime/c1 deleted"),
        "{}",
        said.stdout
    );
    assert!(
        said.stdout.contains("gameruntime/c3 deleted"),
        "{}",
        said.stdout
    );
    assert!(said.stderr.contains("in_session"), "{}", said.stderr);
    assert!(w.docs.get("c2").await.unwrap().is_some());
    let said = w.fails(&["delete", "c2"], exit::IN_SESSION);
    assert!(said.stderr.contains("rtctl release c2"), "{}", said.stderr);
    w.ok(&["delete", "-l", "tier=casual", "--force"]);
    assert!(w.docs.get("c2").await.unwrap().is_none());
    assert!(
        w.ok(&["delete", "budget", "casual"])
            .contains("gamedisruptionbudget/casual deleted")
    );
    assert!(w.ok(&["get", "budgets"]).is_empty());

    // A budget garbled by hand holds every voluntary recreate back: get and describe say
    // so with exit 12 and the key, and delete removes it.
    let key = w.keys.budget("broken");
    w.store
        .txn(Txn::new().put(key.clone(), b"kind: Nope".to_vec()))
        .await
        .expect("write a garbled budget");
    for args in [&["get", "budgets"][..], &["describe", "budget", "broken"]] {
        let said = w.fails(args, exit::CORRUPT);
        assert!(said.stderr.contains(&key), "{args:?}: {}", said.stderr);
        assert!(
            said.stderr.contains("voluntary recreates wait"),
            "{}",
            said.stderr
        );
    }
    w.ok(&["delete", "budget", "broken"]);
    assert!(w.ok(&["get", "budgets"]).is_empty());
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn rollout_undo_goes_back_to_the_previous_image_and_keeps_the_restart_token() {
    let w = World::new("rtctl-undo").await;
    let v1 = w.file("v1.yaml", &game_yaml("u1", "rtmanager-test/engine:1", "x"));
    let v2 = w.file("v2.yaml", &game_yaml("u1", "rtmanager-test/engine:2", "x"));
    let fresh = w.file(
        "fresh.yaml",
        &game_yaml("u2", "rtmanager-test/engine:1", "x"),
    );
    w.ok(&[
        "apply",
        "-f",
        v1.to_str().unwrap(),
        "-f",
        fresh.to_str().unwrap(),
    ]);
    w.ok(&["apply", "-f", v2.to_str().unwrap()]);
    w.ok(&["restart", "u1"]);
    let token = w.docs.get("u1").await.unwrap().unwrap().spec.restart_token;

    // u1 rolls back (over the restart, which is no spec of its own); u2 has nothing earlier:
    // reported, not_found, and u1 is still rolled back.
    let said = w.fails(&["rollout", "undo", "-l", "tier=x"], exit::NOT_FOUND);
    assert_eq!(
        said.stdout.trim(),
        "gameruntime/u1 rolled back to generation 1",
        "{}",
        said.stdout
    );
    assert!(
        said.stderr
            .contains("gameruntime/u2 has no earlier revision"),
        "{}",
        said.stderr
    );
    let doc = w.docs.get("u1").await.unwrap().unwrap();
    assert_eq!(doc.spec.image, "rtmanager-test/engine:1");
    assert_eq!(doc.spec.restart_token, token, "an undo repeats no restart");
    assert_eq!(doc.metadata.generation, Some(4));
    assert_eq!(
        doc.metadata
            .annotations
            .get("rtmanager.dev/op-source")
            .map(String::as_str),
        Some("admin_cli")
    );
    // Undo again: back to engine:2.
    let again = w.ok(&["rollout", "undo", "u1"]);
    assert_eq!(again.trim(), "gameruntime/u1 rolled back to generation 3");
    assert_eq!(
        w.docs.get("u1").await.unwrap().unwrap().spec.image,
        "rtmanager-test/engine:2"
    );

    // No controller here: nothing is updated, so the rollout is not done.
    let status = w.fails(&["rollout", "status", "--all"], exit::NOT_DONE);
    assert!(
        status.stdout.starts_with("2 games: 0 updated, 0 ready"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("gameruntime/u1: no status yet"),
        "{}",
        status.stdout
    );

    // Deleting a game deletes its revisions.
    w.ok(&["delete", "u1"]);
    let left = w
        .store
        .list(&w.keys.revisions("u1"), None)
        .await
        .expect("list revisions");
    assert!(left.items.is_empty(), "{:?}", left.items);
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn a_game_that_is_not_ready_is_not_allocated() {
    let w = World::new("rtctl-not-ready").await;
    let file = w.file("g.yaml", &game_yaml("n1", "rtmanager-test/engine:1", "x"));
    w.ok(&["apply", "-f", file.to_str().unwrap()]);
    let said = w.fails(&["allocate", "n1", "--ref", "m-1"], exit::NOT_READY);
    assert!(said.stderr.contains("not Ready"), "{}", said.stderr);
    assert!(said.stderr.contains("not_ready"), "{}", said.stderr);
    assert!(w.store.get(&w.keys.session("n1")).await.unwrap().is_none());
    w.fails(&["allocate", "nope"], exit::NOT_FOUND);
    let idle = w.ok(&["release", "n1"]);
    assert!(idle.contains("was idle"), "{idle}");
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn allocate_shows_in_get_conflicts_once_taken_and_release_makes_it_idle() {
    let w = World::new("rtctl-allocate").await;
    let game = common::docker::game("allocate");
    let _cleanup = common::docker::Cleanup::new(&[&rtm_controller::runtime::container_name(
        w.keys.prefix(),
        &game,
    )]);
    common::docker::docker().await;
    let _controller = process::ControllerOptions::new(&w.keys, "allocate")
        .start()
        .await;
    let file = w.file(
        "game.yaml",
        &game_yaml(&game, common::docker::IMAGE_1, "casual"),
    );
    w.ok(&["apply", "-f", file.to_str().unwrap()]);
    w.ok(&["wait", &game, "--for=condition=Ready", "--timeout", "60s"]);

    let said = w.ok(&["allocate", &game, "--ref", "match-42"]);
    assert_eq!(
        said.trim(),
        format!("gameruntime/{game} allocated (ref match-42)")
    );
    let listed = w.ok(&["get", &game]);
    assert!(
        listed
            .lines()
            .next()
            .unwrap_or_default()
            .contains("SESSION"),
        "{listed}"
    );
    assert!(listed.contains("Allocated"), "{listed}");
    assert!(w.ok(&["get", &game, "-o", "wide"]).contains("match-42"));
    let described = w.ok(&["describe", &game]);
    assert!(described.contains("Session:"), "{described}");
    assert!(described.contains("admin_cli"), "{described}");

    let again = w.fails(&["allocate", &game, "--ref", "match-43"], exit::CONFLICT);
    assert!(
        again.stderr.contains("already allocated"),
        "{}",
        again.stderr
    );
    w.fails(&["release", &game, "--if-ref", "match-43"], exit::CONFLICT);

    let released = w.ok(&["release", &game]);
    assert!(released.contains("released"), "{released}");
    assert!(w.ok(&["get", &game]).contains("Idle"));
    assert!(w.ok(&["release", &game]).contains("was idle"));

    // An allocated game is not deleted by accident; --force deletes it.
    w.ok(&["allocate", &game]);
    w.fails(&["delete", &game], exit::IN_SESSION);
    assert!(w.docs.get(&game).await.unwrap().is_some());
    w.ok(&["delete", &game, "--force", "--wait", "--timeout", "60s"]);
    assert!(w.docs.get(&game).await.unwrap().is_none());
}
