//! `rtctl edit`, `label`, `annotate`, `patch` and `apply --dry-run=client|server|none`, the
//! real binary against the real etcd started by `scripts/services`, each test under its own
//! prefix. The editor is a small shell script the test writes (`EDITOR` names it), so what
//! a person would do in vi is a few lines of sed. Ignored by a bare `cargo test`;
//! `scripts/test` runs them, and a missing etcd fails them.

use rtm_testkit as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rtm_core::model::GameRuntime;
use rtm_core::records::Documents;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Revision, Store};

use common::docker::run_bounded;
use common::rtctl::{Rtctl, Said};
use common::{etcd, unique_keys};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Bound on one rtctl run that should answer at once (an edit runs the script editor, which
/// may run rtctl itself).
const RUN: Duration = Duration::from_secs(30);

/// Exit codes, as documented in `rtctl --help`.
mod exit {
    pub const USAGE: i32 = 2;
    pub const INVALID: i32 = 3;
    pub const NOT_FOUND: i32 = 4;
    pub const CONFLICT: i32 = 5;
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

    fn rtctl(&self) -> Rtctl {
        Rtctl::new(RTCTL, &self.keys, RUN)
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

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write a test file");
        path
    }

    /// Applies games from YAML text.
    fn apply(&self, text: &str) {
        let file = self.file("apply.yaml", text);
        self.ok(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);
    }

    /// A shell script to serve as the editor (its last argument is the file to edit).
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.file(name, &format!("#!/bin/sh\nset -e\n{body}\n"));
        let mut permissions = std::fs::metadata(&path).expect("the script").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&path, permissions).expect("make the script executable");
        path.display().to_string()
    }

    /// `rtctl edit ARGS` with `EDITOR` (and no `KUBE_EDITOR`) set to `editor`.
    fn edit(&self, editor: &str, args: &[&str]) -> Said {
        let mut command = self.rtctl().command();
        command
            .env_remove("KUBE_EDITOR")
            .env("EDITOR", editor)
            .env("TMPDIR", self.dir.path())
            .arg("edit")
            .args(args);
        let output = run_bounded(command, RUN).expect("rtctl edit ends in time");
        Said {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn doc(&self, name: &str) -> GameRuntime {
        self.docs
            .get(name)
            .await
            .expect("read the game")
            .expect("the game exists")
    }

    /// The game's mod revision in etcd: unchanged means nothing was written.
    async fn revision(&self, name: &str) -> Revision {
        self.store
            .get(&self.keys.gameruntime(name))
            .await
            .expect("read the key")
            .expect("the key exists")
            .mod_revision
    }

    /// The `rtctl-edit-*` files left in the edit's TMPDIR.
    fn kept_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("list the temp dir")
            .map(|e| e.expect("an entry").path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("rtctl-edit-"))
            })
            .collect();
        files.sort();
        files
    }

    async fn done(self) {
        common::wipe(self.store.as_ref(), &self.keys).await;
    }
}

fn game(name: &str, tier: &str) -> String {
    format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n  \
         labels: {{tier: {tier}}}\nspec:\n  image: rtmanager-test/engine:1\n  stopTimeout: 5s\n"
    )
}

fn game_on_port(name: &str, port: u16) -> String {
    format!(
        "{}  ports:\n    - {{containerPort: 7000, hostPort: {port}}}\n",
        game(name, "ranked")
    )
}

fn said(said: &Said) -> String {
    format!("stdout: {}\nstderr: {}", said.stdout, said.stderr)
}

/// The path an error message says the edit is kept in.
fn kept_path(stderr: &str) -> PathBuf {
    let start = stderr
        .find("kept in ")
        .expect("the message names the kept file")
        + "kept in ".len();
    let rest = &stderr[start..];
    let end = rest.find([':', ' ', ')', '\n']).unwrap_or(rest.len());
    PathBuf::from(&rest[..end])
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn edit_saved_unchanged_cancels_and_a_saved_change_is_written() {
    let w = World::new("rtctl-edit-basic").await;
    w.apply(&game("g1", "casual"));
    let before = w.revision("g1").await;

    // (a) Saved as it was: nothing written, the temporary file gone.
    let untouched = w.edit("true", &["g1"]);
    assert_eq!(untouched.code, Some(0), "{}", said(&untouched));
    assert!(
        untouched
            .stderr
            .contains("Edit cancelled, no changes made."),
        "{}",
        said(&untouched)
    );
    assert_eq!(untouched.stdout, "");
    assert_eq!(w.revision("g1").await, before, "nothing written");
    // Only comments added: the same.
    let commented = w.script(
        "comment.sh",
        "for f; do :; done\necho '# just a note' >> \"$f\"",
    );
    assert_eq!(w.edit(&commented, &["g1"]).code, Some(0));
    assert_eq!(w.revision("g1").await, before, "nothing written");
    assert!(w.kept_files().is_empty(), "{:?}", w.kept_files());

    // (b) A change, made by an editor given with arguments (EDITOR is split on whitespace).
    let changed = w.edit("sed -i s/engine:1/engine:2/", &["gameruntime/g1"]);
    assert_eq!(changed.code, Some(0), "{}", said(&changed));
    assert_eq!(changed.stdout, "gameruntime/g1 edited\n");
    let doc = w.doc("g1").await;
    assert_eq!(doc.spec.image, "rtmanager-test/engine:2");
    assert!(w.revision("g1").await > before);
    assert_eq!(
        doc.metadata
            .annotations
            .get("rtmanager.dev/op-source")
            .map(String::as_str),
        Some("admin_cli"),
        "stamped as apply stamps"
    );
    // JSON too, and the `gr NAME` form.
    let json = w.edit(
        "sed -i s/engine:2/engine:3/",
        &["gr", "g1", "-o", "json", "--ref", "REQ-9"],
    );
    assert_eq!(json.code, Some(0), "{}", said(&json));
    let doc = w.doc("g1").await;
    assert_eq!(doc.spec.image, "rtmanager-test/engine:3");
    assert_eq!(
        doc.metadata
            .annotations
            .get("rtmanager.dev/source-ref")
            .map(String::as_str),
        Some("REQ-9")
    );
    assert!(w.kept_files().is_empty(), "{:?}", w.kept_files());

    // A missing game, a failing editor, a rename.
    w.fails(&["edit", "nope"], exit::NOT_FOUND);
    let at = w.revision("g1").await;
    let failing = w.edit("false", &["g1"]);
    assert_eq!(failing.code, Some(exit::USAGE), "{}", said(&failing));
    assert!(
        failing.stderr.contains("nothing was written"),
        "{}",
        said(&failing)
    );
    let renamer = w.script(
        "rename.sh",
        "for f; do :; done\nsed -i 's/name: g1/name: g9/' \"$f\"",
    );
    let renamed = w.edit(&renamer, &["g1"]);
    assert_eq!(renamed.code, Some(exit::INVALID), "{}", said(&renamed));
    assert!(
        renamed.stderr.contains("metadata.name cannot change"),
        "{}",
        said(&renamed)
    );
    assert!(kept_path(&renamed.stderr).exists(), "{}", said(&renamed));
    assert_eq!(w.revision("g1").await, at, "nothing written");
    assert!(w.docs.get("g9").await.unwrap().is_none());
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn edit_reopens_an_invalid_save_with_its_errors_and_stops_when_it_is_saved_again() {
    let w = World::new("rtctl-edit-invalid").await;
    w.apply(&game("g1", "casual"));
    let seen = w.dir.path().display().to_string();

    // (c) First an unknown field, then (seeing the errors) the fix.
    let fixer = w.script(
        "fixer.sh",
        &format!(
            "for f; do :; done\nn=$(cat {seen}/count 2>/dev/null || echo 0)\nn=$((n+1))\n\
             echo $n > {seen}/count\ncp \"$f\" {seen}/seen-$n\nif [ $n = 1 ]; then\n  \
             sed -i 's/  image:/  imagee:/' \"$f\"\nelse\n  sed -i 's/  imagee: rtmanager-test\\/engine:1/  \
             image: rtmanager-test\\/engine:5/' \"$f\"\nfi"
        ),
    );
    let fixed = w.edit(&fixer, &["g1"]);
    assert_eq!(fixed.code, Some(0), "{}", said(&fixed));
    assert_eq!(fixed.stdout, "gameruntime/g1 edited\n");
    assert_eq!(w.doc("g1").await.spec.image, "rtmanager-test/engine:5");
    let first = std::fs::read_to_string(w.dir.path().join("seen-1")).unwrap();
    let second = std::fs::read_to_string(w.dir.path().join("seen-2")).unwrap();
    assert!(!first.contains("error:"), "{first}");
    assert!(
        second.starts_with(
            "# rtctl edit could not write gameruntime/g1:\n#   error (invalid_request): "
        ),
        "{second}"
    );
    assert!(second.contains("spec.imagee: unknown field"), "{second}");
    assert!(
        second.contains("\n  imagee: rtmanager-test/engine:1\n"),
        "the user's text is kept: {second}"
    );
    assert!(w.kept_files().is_empty(), "{:?}", w.kept_files());

    // Saved invalid twice without a change: stops, nothing written, the file kept.
    let at = w.revision("g1").await;
    let stubborn = w.script(
        "stubborn.sh",
        "for f; do :; done\nsed -i 's/  image:/  imagee:/' \"$f\"",
    );
    let gave_up = w.edit(&stubborn, &["g1"]);
    assert_eq!(gave_up.code, Some(exit::INVALID), "{}", said(&gave_up));
    let kept = kept_path(&gave_up.stderr);
    let text = std::fs::read_to_string(&kept).expect("the edit is kept");
    assert!(
        text.contains("imagee:") && text.contains("# rtctl edit could not write"),
        "{text}"
    );
    assert_eq!(w.revision("g1").await, at, "nothing written");
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn edit_that_loses_a_race_overwrites_nothing_and_keeps_the_file() {
    let w = World::new("rtctl-edit-race").await;
    w.apply(&game("g1", "casual"));
    // (d) While "the user" edits, someone else labels the game.
    let racer = w.script(
        "racer.sh",
        &format!(
            "for f; do :; done\n{RTCTL} label g1 raced=yes >/dev/null\n\
             sed -i s/engine:1/engine:4/ \"$f\""
        ),
    );
    let lost = w.edit(&racer, &["g1"]);
    assert_eq!(lost.code, Some(exit::CONFLICT), "{}", said(&lost));
    assert!(
        lost.stderr.contains("was changed by someone else"),
        "{}",
        said(&lost)
    );
    let kept = kept_path(&lost.stderr);
    assert!(
        lost.stderr
            .contains(&format!("rtctl apply -f {}", kept.display())),
        "{}",
        said(&lost)
    );
    let text = std::fs::read_to_string(&kept).expect("the edit is kept");
    assert!(text.contains("engine:4"), "{text}");
    let doc = w.doc("g1").await;
    assert_eq!(
        doc.spec.image, "rtmanager-test/engine:1",
        "the edit was not written"
    );
    assert_eq!(
        doc.metadata.labels.get("raced").map(String::as_str),
        Some("yes"),
        "the other change stays"
    );
    // The kept file pins the revision it was read at: apply refuses it as stale too.
    w.fails(&["apply", "-f", kept.to_str().unwrap()], exit::CONFLICT);
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn label_and_annotate_add_overwrite_and_remove_and_report_each_game() {
    let w = World::new("rtctl-label").await;
    w.apply(&format!(
        "{}---\n{}---\n{}",
        game("g1", "casual"),
        game("g2", "casual"),
        game("g3", "ranked")
    ));
    assert_eq!(
        w.ok(&["label", "g1", "team=blue"]),
        "gameruntime/g1 labeled\n"
    );
    assert_eq!(w.doc("g1").await.metadata.labels["team"], "blue");

    // Changing a value needs --overwrite.
    let at = w.revision("g1").await;
    let refused = w.fails(&["label", "g1", "tier=ranked"], exit::INVALID);
    assert!(
        refused.stderr.contains("\"tier\"") && refused.stderr.contains("--overwrite"),
        "{}",
        said(&refused)
    );
    assert_eq!(w.revision("g1").await, at, "nothing written");
    assert_eq!(
        w.ok(&["label", "gr", "g1", "tier=ranked", "--overwrite"]),
        "gameruntime/g1 labeled\n"
    );
    assert_eq!(w.doc("g1").await.metadata.labels["tier"], "ranked");

    // Removing; removing again (absent) is no change and no write.
    assert_eq!(
        w.ok(&["label", "gameruntime/g1", "team-"]),
        "gameruntime/g1 labeled\n"
    );
    assert!(!w.doc("g1").await.metadata.labels.contains_key("team"));
    let at = w.revision("g1").await;
    assert_eq!(
        w.ok(&["label", "g1", "team-"]),
        "gameruntime/g1 unchanged\n"
    );
    assert_eq!(w.revision("g1").await, at);

    // Dry run: says what would change, writes nothing.
    let dry = w.ok(&["label", "g1", "g2", "x=1", "--dry-run"]);
    assert_eq!(
        dry,
        "gameruntime/g1 labeled (dry run): x=1 (new)\ngameruntime/g2 labeled (dry run): x=1 (new)\n"
    );
    assert_eq!(w.revision("g1").await, at);

    // -l over several games, one of which refuses: each reported, the worst exit code.
    w.ok(&["label", "g2", "owner=ops"]);
    let mixed = w.fails(&["label", "-l", "tier=casual", "owner=dev"], exit::INVALID);
    assert_eq!(
        mixed.stdout,
        "",
        "g2 is the only casual game left and it refused: {}",
        said(&mixed)
    );
    w.ok(&["label", "g3", "tier=casual", "--overwrite"]);
    let mixed = w.fails(&["label", "-l", "tier=casual", "owner=dev"], exit::INVALID);
    assert_eq!(mixed.stdout, "gameruntime/g3 labeled\n", "{}", said(&mixed));
    assert!(
        mixed
            .stderr
            .contains("gameruntime/g2 already has label \"owner\""),
        "{}",
        said(&mixed)
    );
    assert_eq!(w.doc("g2").await.metadata.labels["owner"], "ops");
    let missing = w.fails(&["label", "g1", "nope", "g3", "z=1"], exit::NOT_FOUND);
    assert_eq!(
        missing.stdout,
        "gameruntime/g1 labeled\ngameruntime/g3 labeled\n",
        "{}",
        said(&missing)
    );
    assert!(
        missing.stderr.contains("gameruntime/nope not found"),
        "{}",
        said(&missing)
    );

    // A stale --resource-version is a conflict.
    let stale = w.fails(
        &["label", "g1", "q=1", "--resource-version", "1"],
        exit::CONFLICT,
    );
    assert!(
        stale.stderr.contains("resourceVersion 1"),
        "{}",
        said(&stale)
    );
    let rv = w.revision("g1").await.to_string();
    w.ok(&["label", "g1", "q=1", "--resource-version", &rv]);

    // Annotations: free-text values; rtmanager's own keys are refused.
    assert_eq!(
        w.ok(&["annotate", "g1", "note=back at 5pm: ask ops"]),
        "gameruntime/g1 annotated\n"
    );
    assert_eq!(
        w.doc("g1").await.metadata.annotations["note"],
        "back at 5pm: ask ops"
    );
    w.fails(
        &["annotate", "g1", "rtmanager.dev/source-ref=x"],
        exit::INVALID,
    );
    w.fails(&["annotate", "g1", "note=other"], exit::INVALID);
    assert_eq!(w.ok(&["annotate", "--all", "note-"]).lines().count(), 3);
    assert!(!w.doc("g1").await.metadata.annotations.contains_key("note"));
    w.fails(&["label", "g1"], exit::USAGE);
    w.fails(&["label", "g1", "a/b/c=x"], exit::INVALID);
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn patch_merges_or_applies_operations_and_refuses_what_apply_would() {
    let w = World::new("rtctl-patch").await;
    w.apply(&game("g1", "casual"));
    let merge = w.ok(&["patch", "g1", "-p", r#"{"spec":{"state":"Stopped"}}"#]);
    assert_eq!(merge, "gameruntime/g1 patched\n");
    assert_eq!(
        w.doc("g1").await.spec.state,
        rtm_core::model::DesiredState::Stopped
    );
    let at = w.revision("g1").await;
    assert_eq!(
        w.ok(&["patch", "g1", "-p", "spec: {state: Stopped}"]),
        "gameruntime/g1 unchanged\n"
    );
    assert_eq!(w.revision("g1").await, at);

    let ops = r#"[{"op":"test","path":"/spec/image","value":"rtmanager-test/engine:1"},
                 {"op":"replace","path":"/spec/image","value":"rtmanager-test/engine:2"},
                 {"op":"add","path":"/metadata/labels/rtmanager.dev~1team","value":"blue"}]"#;
    assert_eq!(
        w.ok(&["patch", "gr", "g1", "--type", "json", "-p", ops]),
        "gameruntime/g1 patched\n"
    );
    let doc = w.doc("g1").await;
    assert_eq!(doc.spec.image, "rtmanager-test/engine:2");
    assert_eq!(doc.metadata.labels["rtmanager.dev/team"], "blue");

    // Refused, nothing written: a failed test, an invalid result, status.
    let at = w.revision("g1").await;
    let failed = w.fails(
        &["patch", "g1", "--type", "json", "-p",
          r#"[{"op":"replace","path":"/spec/image","value":"x:1"},{"op":"test","path":"/spec/image","value":"y:1"}]"#],
        exit::INVALID,
    );
    assert!(
        failed.stderr.contains("operation 1 (test)"),
        "{}",
        said(&failed)
    );
    let invalid = w.fails(
        &["patch", "g1", "-p", r#"{"spec":{"imagee":"x:1"}}"#],
        exit::INVALID,
    );
    assert!(invalid.stderr.contains("spec.imagee"), "{}", said(&invalid));
    w.fails(
        &["patch", "g1", "-p", r#"{"spec":{"stopTimeout":"forever"}}"#],
        exit::INVALID,
    );
    w.fails(
        &["patch", "g1", "-p", r#"{"status":{"phase":"Running"}}"#],
        exit::INVALID,
    );
    w.fails(
        &["patch", "g1", "-p", r#"{"metadata":{"name":"g2"}}"#],
        exit::INVALID,
    );
    w.fails(
        &[
            "patch",
            "g1",
            "-p",
            r#"{"metadata":{"resourceVersion":"1"},"spec":{"state":"Running"}}"#,
        ],
        exit::CONFLICT,
    );
    w.fails(&["patch", "nope", "-p", "{}"], exit::NOT_FOUND);
    assert_eq!(w.revision("g1").await, at, "nothing written");

    // Dry run with -o yaml: the document that would be stored.
    let file = w.file("change.yaml", "spec:\n  state: Running\n");
    let shown = w.ok(&[
        "patch",
        "g1",
        "--patch-file",
        file.to_str().unwrap(),
        "--dry-run",
        "-o",
        "yaml",
    ]);
    assert!(
        shown.contains("state: Running") && shown.contains("name: g1"),
        "{shown}"
    );
    assert_eq!(w.revision("g1").await, at, "nothing written");
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn apply_dry_run_server_finds_the_conflicts_a_write_would_hit_and_writes_nothing() {
    let w = World::new("rtctl-dry-run-server").await;
    w.apply(&game_on_port("owner", 17300));
    w.apply(&game("g1", "casual"));
    let at = w.revision("g1").await;
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    // A new game: created (server dry run), nothing stored.
    let new = w.file("new.yaml", &game("g2", "casual"));
    assert_eq!(
        w.ok(&["apply", "--dry-run=server", "-f", &path(&new)]),
        "gameruntime/g2 created (server dry run)\n"
    );
    assert!(w.docs.get("g2").await.unwrap().is_none());
    // Bare --dry-run is still the client dry run, before -f.
    assert_eq!(
        w.ok(&["apply", "--dry-run", "-f", &path(&new)]),
        "gameruntime/g2 created (dry run)\n"
    );
    assert_eq!(
        w.ok(&["apply", "--dry-run=client", "-f", &path(&new)]),
        "gameruntime/g2 created (dry run)\n"
    );

    // A change pinned to a stale resourceVersion: the conflict, and no write.
    let stale = w.file(
        "stale.yaml",
        &game("g1", "casual")
            .replace(
                "name: g1\n",
                &format!("name: g1\n  resourceVersion: \"{}\"\n", at - 1),
            )
            .replace("engine:1", "engine:2"),
    );
    let said_stale = w.fails(
        &["apply", "--dry-run=server", "-f", &path(&stale)],
        exit::CONFLICT,
    );
    assert!(
        said_stale
            .stderr
            .contains("was changed since resourceVersion"),
        "{}",
        said(&said_stale)
    );
    // Pinned to the live one: configured (server dry run), still no write.
    let current = w.file(
        "current.yaml",
        &game("g1", "casual")
            .replace(
                "name: g1\n",
                &format!("name: g1\n  resourceVersion: \"{at}\"\n"),
            )
            .replace("engine:1", "engine:2"),
    );
    assert_eq!(
        w.ok(&["apply", "--dry-run=server", "-f", &path(&current)]),
        "gameruntime/g1 configured (server dry run)\n"
    );
    // Someone else's host port.
    let port = w.file("port.yaml", &game_on_port("g3", 17300));
    let taken = w.fails(
        &["apply", "--dry-run=server", "-f", &path(&port)],
        exit::CONFLICT,
    );
    assert!(taken.stderr.contains("host port 17300"), "{}", said(&taken));
    assert_eq!(w.revision("g1").await, at, "nothing written");
    assert!(w.docs.get("g3").await.unwrap().is_none());

    // --dry-run=none is a real apply.
    assert_eq!(
        w.ok(&["apply", "--dry-run=none", "-f", &path(&current)]),
        "gameruntime/g1 configured\n"
    );
    assert_eq!(w.doc("g1").await.spec.image, "rtmanager-test/engine:2");
    w.fails(
        &["apply", "--dry-run=maybe", "-f", &path(&current)],
        exit::USAGE,
    );
    let _ = w.run(&["get"]);
    w.done().await;
}
