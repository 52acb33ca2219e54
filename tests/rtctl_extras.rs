//! `rtctl`'s extras, the real binary: plugins (`rtctl NAME` runs `rtctl-NAME` from PATH,
//! `plugin list`), the config contexts over an `RTMCONFIG=a:b` list (`set-context`,
//! `delete-context`, `use-context`, and a `get` through a merged context), `version` against
//! the heartbeats a controller keeps, and `explain`. The tests that need etcd (started by
//! `scripts/services`) are ignored by a bare `cargo test`; `scripts/test` runs them, and a
//! missing etcd fails them.

use rtm_testkit as common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rtm_core::records::lease::Heartbeat;
use rtm_core::store::{Store, Txn};

use common::{etcd, etcd_endpoints, unique_keys};

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Exit codes, as documented in `rtctl --help`.
mod exit {
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 4;
    pub const UNAVAILABLE: i32 = 6;
}

/// rtctl with none of the caller's `RTM_*` settings and no config file unless a test gives
/// one.
fn rtctl() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::new(RTCTL);
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("RTM_") {
            command.env_remove(&var);
        }
    }
    command.env("RTMCONFIG", "/dev/null").timeout(RUN);
    command
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write a script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make the script executable");
    path
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .expect("a PATH")
}

#[test]
fn a_plugin_on_path_runs_with_its_arguments_and_exit_code() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    script(dir.path(), "rtctl-hello", "echo \"hello:$*\"\nexit 7");
    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .args(["hello", "a", "b"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(7), "{output:?}");
    assert_eq!(stdout(&output), "hello:a b\n");

    // The longer hyphenated name wins; the environment passes unchanged.
    script(dir.path(), "rtctl-hello-world", "echo \"world:$*:$MARK\"");
    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .env("MARK", "kept")
        .args(["hello", "world", "x"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output), "world:x:kept\n");

    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .args(["plugin", "list"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let listed = stdout(&output);
    assert!(
        listed.contains(&dir.path().join("rtctl-hello").display().to_string()),
        "{listed}"
    );

    // No such plugin: clap's own error; a built-in is never replaced.
    script(dir.path(), "rtctl-version", "echo plugin\nexit 3");
    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .args(["nosuchverb"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(exit::USAGE), "{output:?}");
    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .args(["version", "--client"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout(&output).starts_with("Client Version: "),
        "{output:?}"
    );
    let output = rtctl()
        .env("PATH", path_with(dir.path()))
        .args(["plugin", "list"])
        .output()
        .expect("rtctl runs");
    assert!(stderr(&output).contains("built-in command"), "{output:?}");
    // And help lists only real commands.
    let help = rtctl().arg("--help").output().expect("rtctl runs");
    assert!(!stdout(&help).contains("hello"), "{help:?}");
    assert!(!stdout(&help).contains("__man"), "{help:?}");
}

#[test]
fn explain_documents_fields_and_refuses_unknown_ones() {
    let output = rtctl()
        .args(["explain", "gr.spec.ports"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("FIELD:    ports <[]Object>"), "{text}");
    assert!(text.contains("containerPort"), "{text}");
    let output = rtctl()
        .args(["explain", "gameruntime.spec.nope"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(exit::USAGE), "{output:?}");
    assert!(stderr(&output).contains("image"), "{output:?}");
    let output = rtctl()
        .args(["explain", "node"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(exit::USAGE), "{output:?}");
}

/// Two config files `a.yaml` and `b.yaml` and the `RTMCONFIG` list naming them.
fn two_configs(dir: &Path, a: &str, b: &str) -> (PathBuf, PathBuf, std::ffi::OsString) {
    let path_a = dir.join("a.yaml");
    let path_b = dir.join("b.yaml");
    std::fs::write(&path_a, a).expect("write a.yaml");
    std::fs::write(&path_b, b).expect("write b.yaml");
    let list = std::env::join_paths([&path_a, &path_b]).expect("a list of paths");
    (path_a, path_b, list)
}

#[test]
fn contexts_over_a_list_of_config_files_are_set_used_and_deleted_in_the_right_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (path_a, path_b, list) = two_configs(
        dir.path(),
        "# a's own notes\ncontexts:\n  - name: dev\n    prefix: /dev\n",
        "currentContext: dev\ncontexts:\n  - name: prod\n    prefix: /prod\n",
    );
    let run = |args: &[&str]| {
        rtctl()
            .env("RTMCONFIG", &list)
            .args(args)
            .output()
            .expect("rtctl runs")
    };
    let current = run(&["config", "current-context"]);
    assert_eq!(stdout(&current), "dev\n", "{current:?}");

    // use-context writes where currentContext is set (b), keeping a as it was.
    let a_before = std::fs::read_to_string(&path_a).expect("read a");
    let output = run(&["config", "use-context", "prod"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let b = std::fs::read_to_string(&path_b).expect("read b");
    assert!(b.starts_with("currentContext: prod\n"), "{b}");
    assert_eq!(std::fs::read_to_string(&path_a).expect("read a"), a_before);

    // set-context of a context defined in b changes b; a new one goes to a.
    let output = run(&[
        "config",
        "set-context",
        "prod",
        "--endpoints",
        "http://p1:2379,http://p2:2379",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let b = std::fs::read_to_string(&path_b).expect("read b");
    assert!(b.contains("http://p2:2379") && b.contains("/prod"), "{b}");
    let output = run(&[
        "config",
        "set-context",
        "new",
        "--prefix",
        "/new",
        "--current",
    ]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let a = std::fs::read_to_string(&path_a).expect("read a");
    assert!(a.contains("name: new") && a.contains("/new"), "{a}");
    let current = run(&["config", "current-context"]);
    assert_eq!(stdout(&current), "new\n", "{current:?}");

    // view says where each context comes from.
    let view = run(&["config", "view"]);
    assert_eq!(view.status.code(), Some(0), "{view:?}");
    let text = stdout(&view);
    let from = |name: &str| {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .map(|line| {
                line.split_whitespace()
                    .last()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    assert_eq!(from("prod"), Some(path_b.display().to_string()), "{text}");
    assert_eq!(from("dev"), Some(path_a.display().to_string()), "{text}");

    // delete-context of the current one unsets it, with a warning; an unknown one is exit 4.
    let output = run(&["config", "delete-context", "new"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stderr(&output).contains("warning:"), "{output:?}");
    let a = std::fs::read_to_string(&path_a).expect("read a");
    assert!(!a.contains("name: new"), "{a}");
    let output = run(&["config", "current-context"]);
    assert_eq!(output.status.code(), Some(exit::USAGE), "{output:?}");
    let output = run(&["config", "delete-context", "new"]);
    assert_eq!(output.status.code(), Some(exit::NOT_FOUND), "{output:?}");
}

#[test]
fn set_context_creates_the_file_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("deep/config.yaml");
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "hunter2\n").expect("write the password file");
    let output = rtctl()
        .env("RTMCONFIG", &path)
        .args([
            "config",
            "set-context",
            "x",
            "--user",
            "ops",
            "--password-file",
        ])
        .arg(&secret)
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let mode = std::fs::metadata(&path)
        .expect("the file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&path)
            .expect("read it")
            .contains("hunter2")
    );
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn get_reads_through_a_context_merged_from_two_files() {
    let store = etcd().await;
    let keys = unique_keys("rtctl-extras-merge");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let game = dir.path().join("g1.yaml");
    std::fs::write(
        &game,
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\nspec:\n  \
         image: rtmanager-test/engine:1\n",
    )
    .expect("write the game");
    rtctl()
        .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
        .env("RTM_PREFIX", keys.prefix())
        .args(["apply", "-f"])
        .arg(&game)
        .assert()
        .success();
    // a defines the context, b (a missing file between them is skipped) makes it current.
    let (_a, _b, _) = two_configs(
        dir.path(),
        &format!(
            "contexts:\n  - name: test\n    endpoints: [{}]\n    prefix: {}\n",
            etcd_endpoints().join(", "),
            keys.prefix()
        ),
        "currentContext: test\ncontexts:\n  - name: test\n    endpoints: http://127.0.0.1:1\n",
    );
    let list = std::env::join_paths([
        dir.path().join("a.yaml"),
        dir.path().join("missing.yaml"),
        dir.path().join("b.yaml"),
    ])
    .expect("a list of paths");
    rtctl()
        .env("RTMCONFIG", &list)
        .args(["get", "-o", "name"])
        .assert()
        .success()
        .stdout("gameruntime/g1\n");
    common::wipe(store.as_ref(), &keys).await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn version_lists_live_controllers_and_warns_about_skew() {
    let store = etcd().await;
    let keys = unique_keys("rtctl-extras-version");
    let lease = store
        .grant_lease(Duration::from_secs(60))
        .await
        .expect("a lease");
    let mut live = Heartbeat::new("ctl-live", Some("node-a"));
    live.version = "0.0.1-old".into();
    let mut unleased = Heartbeat::new("ctl-gone", Some("node-b"));
    unleased.version = "9.9.9".into();
    let txn = Txn::new()
        .put_with_lease(
            keys.controller("ctl-live"),
            serde_json::to_vec(&live).expect("encode"),
            lease.id,
        )
        .put(
            keys.controller("ctl-gone"),
            serde_json::to_vec(&unleased).expect("encode"),
        );
    store.txn(txn).await.expect("write heartbeats");

    let output = rtctl()
        .env("RTM_ETCD_ENDPOINTS", etcd_endpoints().join(","))
        .env("RTM_PREFIX", keys.prefix())
        .args(["version", "-o", "json"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(value["clientVersion"]["version"].is_string(), "{value}");
    let controllers = value["controllers"].as_array().expect("a list");
    assert_eq!(controllers.len(), 1, "{value}");
    assert_eq!(controllers[0]["holder"], "ctl-live");
    assert_eq!(controllers[0]["node"], "node-a");
    assert_eq!(controllers[0]["version"], "0.0.1-old");
    assert!(stderr(&output).contains("version skew"), "{output:?}");

    // etcd unreachable: the client's version, then the unavailable error.
    let output = rtctl()
        .env("RTM_ETCD_ENDPOINTS", "http://127.0.0.1:1")
        .env("RTM_ETCD_TIMEOUT", "1s")
        .args(["version"])
        .output()
        .expect("rtctl runs");
    assert_eq!(output.status.code(), Some(exit::UNAVAILABLE), "{output:?}");
    assert!(
        stdout(&output).starts_with("Client Version: "),
        "{output:?}"
    );
    common::wipe(store.as_ref(), &keys).await;
    let _ = store.revoke_lease(lease.id).await;
}
