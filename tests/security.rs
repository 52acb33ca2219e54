//! Security end to end, against a private etcd that serves TLS only, requires a client
//! certificate and has its own authentication enabled (`common/secure_etcd.rs`; certificates
//! made at test time with openssl, `common/tls.rs`), the real `rtmanager` and `rtctl`
//! binaries, and the real Docker engine:
//!
//! - the controller and rtctl work over TLS with a user and password;
//! - wrong or missing credentials, and TLS set up wrong, fail with a clear message and the
//!   documented exit code (rtctl: 7 permission_denied, 6 service_unavailable, 2 usage), and a
//!   controller that cannot authenticate exits without ever being ready;
//! - each misconfiguration is named for its cause, by rtctl and by the controller's last log
//!   line: `http://` to a TLS port ("requires TLS", exit 2), no client certificate ("refused
//!   the client certificate (or none was given", exit 7), a wrong password ("refused the user
//!   name or password", exit 7), nothing listening ("connection refused", exit 6, and a
//!   controller that waits for etcd instead of exiting);
//! - game ids that attempt path or name injection are refused by `rtctl` (exit 3) and never
//!   reach etcd (the whole keyspace is listed) or Docker;
//! - the controller never touches a container without its labels, even one with a game's
//!   container name.
//!
//! Ignored by a bare `cargo test` (they need etcd, openssl and Docker); `scripts/test` runs
//! them. The tests that run controllers run one at a time (their timings are in seconds).

use rtm_testkit as common;
use rtm_testkit::process;
use rtm_testkit::secure_etcd;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_controller::runtime::{ContainerInfo, ContainerRuntime, DockerRuntime, container_name};
use rtm_core::ErrorCode;
use rtm_core::model::{GameRuntimeStatus, OpKind, Outcome, Phase};
use rtm_core::records::Documents;
use rtm_core::records::history::{History, HistoryEntry};
use rtm_core::store::Keys;
use rtm_core::store::etcd::EtcdStore;

use common::docker::{Cleanup, IMAGE_1, docker, docker_cli, game as game_id, run_bounded};
use common::{unique_keys, without_rtm_env};
use process::{ControllerOptions, ControllerProcess, binary, eventually, short};
use secure_etcd::SecureEtcd;

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Bound on a game reaching a state: a start takes about a second; the rest is slack for a
/// loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// Bound on a refusal: a wrong password or certificate must be reported within the request
/// timeouts (rtctl's is 3 s), not after a hang.
const REFUSE: Duration = Duration::from_secs(20);

/// rtctl's exit codes (`rtctl --help`).
mod exit {
    pub const USAGE: i32 = 2;
    pub const INVALID: i32 = 3;
    pub const UNAVAILABLE: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
}

/// Connection settings: environment variables for rtctl or the controller.
type Env = [(String, String)];

/// One controller-running test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's world: its private etcd, its prefix there, and a directory for manifests.
struct World {
    etcd: SecureEtcd,
    keys: Keys,
    store: Arc<EtcdStore>,
    files: tempfile::TempDir,
}

impl World {
    async fn new(test: &str) -> World {
        let etcd = SecureEtcd::start();
        let store = etcd.root_store().await;
        World {
            keys: unique_keys(test),
            store,
            etcd,
            files: tempfile::tempdir().expect("a directory for manifests"),
        }
    }

    /// rtctl with `env` (connection settings), this world's prefix, nothing of the caller's
    /// rtmanager settings and no config file.
    fn rtctl(&self, env: &Env, args: &[&str]) -> Output {
        let mut command = Command::new(RTCTL);
        without_rtm_env(&mut command)
            .env("RTMCONFIG", "/dev/null")
            .env("RTM_PREFIX", self.keys.prefix())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args);
        run_bounded(command, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("rtctl {args:?} did not exit within 120 s"))
    }

    /// rtctl as root, whatever its exit code.
    fn rtctl_as_root(&self, args: &[&str]) -> Output {
        self.rtctl(&self.etcd.root_env(), args)
    }

    /// rtctl as root; fails the test unless it succeeds.
    fn rtctl_ok(&self, args: &[&str]) -> String {
        let output = self.rtctl(&self.etcd.root_env(), args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "rtctl {args:?}: {}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A manifest file holding `yaml`.
    fn manifest(&self, file: &str, yaml: &str) -> PathBuf {
        let path = self.files.path().join(file);
        std::fs::write(&path, yaml).expect("write a manifest");
        path
    }

    /// A controller on this world's prefix, connected as root over TLS.
    fn controller(&self, name: &str) -> ControllerOptions {
        self.etcd.root_env().iter().fold(
            ControllerOptions::new(&self.keys, name),
            |options, (k, v)| options.env(k, v),
        )
    }

    fn documents(&self) -> Documents {
        Documents::new(self.store.clone(), self.keys.clone())
    }

    async fn status(&self, game: &str) -> Result<GameRuntimeStatus, String> {
        self.documents()
            .get_status(game)
            .await
            .map_err(|e| format!("read the status: {e}"))?
            .ok_or_else(|| "no status yet".to_owned())
    }

    async fn history(&self, game: &str) -> Vec<HistoryEntry> {
        History::new(self.store.clone(), self.keys.clone(), 1000)
            .recent(game, 100)
            .await
            .unwrap_or_else(|e| panic!("read the history of {game}: {e}"))
    }

    /// Every key of the private etcd that is not a live controller's heartbeat.
    /// Every key but what a controller writes of itself: its heartbeat, its node's
    /// record and the scheduler key.
    fn keys_besides_heartbeats(&self) -> Vec<String> {
        let own = [
            self.keys.controllers(),
            self.keys.nodes(),
            self.keys.scheduler(),
        ];
        self.etcd
            .keys()
            .into_iter()
            .filter(|key| !own.iter().any(|prefix| key.starts_with(prefix.as_str())))
            .collect()
    }
}

/// A minimal game manifest: the first test image, a short stop timeout.
fn manifest_yaml(name_yaml: &str) -> String {
    format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name_yaml}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n"
    )
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// stderr without rtctl's warnings (credentials over `http://`, say): the error alone.
fn error_lines(output: &Output) -> String {
    stderr(output)
        .lines()
        .filter(|line| !line.starts_with("warning: "))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A running container with this id, or why not.
async fn running(runtime: &DockerRuntime, id: &str) -> Result<ContainerInfo, String> {
    match runtime.inspect_container(id).await {
        Ok(Some(c)) if c.is_running() => Ok(c),
        Ok(Some(c)) => Err(format!("container {} is {}", short(id), c.state)),
        Ok(None) => Err(format!("container {} is gone", short(id))),
        Err(e) => Err(format!("docker inspect: {e}")),
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn controller_and_rtctl_work_over_tls_with_etcd_users() {
    let _serial = SERIAL.lock().await;
    let runtime = docker().await;
    let w = World::new("sec-e2e").await;
    let game = game_id("sec-e2e");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);

    // The password never shows, even where the configuration is printed.
    let mut print = Command::new(binary());
    print.arg("--print-config").envs(w.etcd.root_env());
    let printed = run_bounded(print, Duration::from_secs(30)).expect("rtmanager --print-config");
    let printed_text = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{}", describe(&printed));
    assert!(
        printed_text.contains(&w.etcd.endpoint) && !printed_text.contains(&w.etcd.root_password),
        "--print-config must show the endpoint and mask the password:\n{printed_text}"
    );

    let controller = w.controller("secure").start().await;
    let file = w.manifest("game.yaml", &manifest_yaml(&game));
    let applied = w.rtctl_ok(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);
    assert!(
        applied.contains(&format!("gameruntime/{game} created")),
        "{applied}"
    );

    let first = eventually(CONVERGE, "the game to run", async || {
        let status = w.status(&game).await?;
        let id = status
            .container_id
            .clone()
            .filter(|_| status.phase == Phase::Running)
            .ok_or_else(|| format!("phase {}", status.phase))?;
        running(&runtime, &id).await.map(|_| id)
    })
    .await;

    let listed = w.rtctl_ok(&["get", &game]);
    assert!(
        listed.contains(&game) && listed.contains("Running"),
        "{listed}"
    );
    let yaml = w.rtctl_ok(&["get", &game, "-o", "yaml"]);
    assert!(yaml.contains("phase: Running"), "{yaml}");

    let restarted = w.rtctl_ok(&[
        "restart",
        &game,
        "--ref",
        "SEC-1",
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(restarted.contains(&game), "{restarted}");
    let second = eventually(CONVERGE, "the restarted game to run", async || {
        let status = w.status(&game).await?;
        match status.container_id {
            Some(id) if id != first && status.phase == Phase::Running => {
                running(&runtime, &id).await.map(|_| id)
            }
            other => Err(format!("phase {}, container {other:?}", status.phase)),
        }
    })
    .await;
    assert!(
        runtime.inspect_container(&first).await.unwrap().is_none(),
        "a restart recreates: the first container is removed"
    );
    let history = w.history(&game).await;
    assert!(
        history.iter().any(|e| e.op_kind == OpKind::Restart
            && e.outcome == Outcome::Success
            && e.source_ref == "SEC-1"
            && e.container_id_after.as_deref() == Some(second.as_str())),
        "a successful restart SEC-1 in the history: {history:#?}"
    );

    w.rtctl_ok(&["delete", &game, "--wait", "--timeout", "60s"]);
    eventually(
        CONVERGE,
        "the container to be removed",
        async || match runtime.inspect_container(&second).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let tail = controller.log_tail();
    assert!(
        !tail.contains(&w.etcd.root_password),
        "the controller logged the etcd password:{tail}"
    );
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn wrong_or_missing_credentials_are_refused_as_permission_denied() {
    let w = World::new("sec-creds").await;
    let file = w.manifest("game.yaml", &manifest_yaml("sec-creds"));
    let file = file.to_str().expect("a UTF-8 path");
    let wrong_password = w.etcd.client_env("root", "not-the-password");
    let mut no_user = w.etcd.root_env();
    no_user.retain(|(k, _)| k != "RTM_ETCD_USER" && k != "RTM_ETCD_PASSWORD");
    // Allowed to read the prefix, not to write it.
    w.etcd.add_user(
        "viewer",
        "viewer-pw",
        "read",
        &format!("{}/", w.keys.prefix()),
    );
    let viewer = w.etcd.client_env("viewer", "viewer-pw");

    let cases: [(&str, &Env, &[&str], &str); 5] = [
        (
            "get, wrong password",
            &wrong_password,
            &["get"],
            "authentication failed",
        ),
        (
            "apply, wrong password",
            &wrong_password,
            &["apply", "-f", file],
            "authentication failed",
        ),
        (
            "get, certificate but no user",
            &no_user,
            &["get"],
            "permission denied",
        ),
        (
            "apply, certificate but no user",
            &no_user,
            &["apply", "-f", file],
            "permission denied",
        ),
        (
            "apply, a user who may only read",
            &viewer,
            &["apply", "-f", file],
            "permission denied",
        ),
    ];
    for (what, env, args, expected) in cases {
        let started = Instant::now();
        let output = w.rtctl(env, args);
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(exit::PERMISSION_DENIED),
            "{what}: {}",
            describe(&output)
        );
        assert!(
            message.starts_with("error: ")
                && message.contains(expected)
                && message.contains("RTM_ETCD_USER")
                && message.lines().count() == 1,
            "{what}: one clear line naming the cause and the setting: {message}"
        );
        assert!(
            !message.contains("not-the-password"),
            "{what}: the password was echoed: {message}"
        );
        assert!(
            started.elapsed() < REFUSE,
            "{what}: took {:?}",
            started.elapsed()
        );
    }
    let listed = w.rtctl(&viewer, &["get"]);
    assert_eq!(
        listed.status.code(),
        Some(0),
        "the viewer may read: {}",
        describe(&listed)
    );
    assert_eq!(
        w.etcd.keys(),
        Vec::<String>::new(),
        "a refused apply wrote nothing"
    );

    // A controller with the wrong password exits, never ready.
    let options = wrong_password.iter().fold(
        ControllerOptions::new(&w.keys, "wrong-password"),
        |o, (k, v)| o.env(k, v),
    );
    let mut controller = options.spawn();
    let exit_status = never_ready_then_exits(&mut controller).await;
    assert!(!exit_status.success(), "it exited {exit_status}");
    let tail = controller.log_tail();
    assert!(
        tail.contains("authentication failed"),
        "the log says why:{tail}"
    );
    assert!(
        !tail.contains("not-the-password"),
        "the password was logged:{tail}"
    );
}

/// Polls `/readyz` until the controller exits (at most [`REFUSE`]), failing the test if it
/// ever answers 200.
async fn never_ready_then_exits(controller: &mut ControllerProcess) -> std::process::ExitStatus {
    let deadline = Instant::now() + REFUSE;
    loop {
        if let Ok((200, body)) = controller.get("/readyz").await {
            panic!(
                "controller {} became ready: {body}{}",
                controller.name(),
                controller.log_tail()
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return controller.wait_exit(Duration::from_millis(1)).await;
        }
        if let Ok(status) = tokio::time::timeout(
            Duration::from_millis(200),
            controller.wait_exit(Duration::from_secs(3600)),
        )
        .await
        {
            return status;
        }
    }
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn tls_set_up_wrong_fails_clearly() {
    let w = World::new("sec-tls").await;
    let root = w.etcd.root_env();
    let with = |changes: &[(&str, Option<&str>)]| -> Vec<(String, String)> {
        let mut env = root.clone();
        for (var, value) in changes {
            env.retain(|(k, _)| k != var);
            if let Some(value) = value {
                env.push(((*var).to_owned(), (*value).to_owned()));
            }
        }
        env
    };
    let other_ca = w.etcd.certs.other_ca.display().to_string();
    let plain = w.etcd.endpoint.replace("https://", "http://");
    let no_ca = with(&[
        ("RTM_ETCD_CA_FILE", None),
        ("RTM_ETCD_CERT_FILE", None),
        ("RTM_ETCD_KEY_FILE", None),
    ]);
    let wrong_ca = with(&[("RTM_ETCD_CA_FILE", Some(&other_ca))]);
    let http = with(&[
        ("RTM_ETCD_ENDPOINTS", Some(&plain)),
        ("RTM_ETCD_CA_FILE", None),
        ("RTM_ETCD_CERT_FILE", None),
        ("RTM_ETCD_KEY_FILE", None),
    ]);
    let no_client_cert = with(&[("RTM_ETCD_CERT_FILE", None), ("RTM_ETCD_KEY_FILE", None)]);

    let cases: [(&str, &Env, i32, &[&str]); 4] = [
        // Without a CA there is no TLS: refused before connecting, naming the setting.
        (
            "https:// without a CA",
            &no_ca,
            exit::USAGE,
            &["https:// needs --etcd-ca-file", "RTM_ETCD_CA_FILE"],
        ),
        // A CA that did not sign etcd's certificate: the handshake fails, and says so.
        (
            "a CA that did not sign etcd's certificate",
            &wrong_ca,
            exit::UNAVAILABLE,
            &["invalid peer certificate", "UnknownIssuer"],
        ),
        // Plain HTTP/2 to a TLS port: the server hangs up; a probe finds it speaks TLS.
        (
            "http:// to the https endpoint",
            &http,
            exit::USAGE,
            &[
                "requires TLS (the endpoint answered a TLS handshake)",
                "--etcd-ca-file",
            ],
        ),
        // etcd requires a client certificate (--client-cert-auth).
        (
            "no client certificate",
            &no_client_cert,
            exit::PERMISSION_DENIED,
            &[
                "refused the client certificate (or none was given",
                "--etcd-cert-file",
            ],
        ),
    ];
    for (what, env, code, expected) in cases {
        let started = Instant::now();
        let output = w.rtctl(env, &["get"]);
        let message = error_lines(&output);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{what}: {}",
            describe(&output)
        );
        for part in expected {
            assert!(
                message.contains(part),
                "{what}: the message should say {part:?}: {message}"
            );
        }
        assert!(
            message.starts_with("error: ") && message.lines().count() == 1,
            "{what}: one line: {message}"
        );
        assert!(
            started.elapsed() < REFUSE,
            "{what}: took {:?}",
            started.elapsed()
        );
    }

    // A controller that does not trust etcd's certificate exits, never ready.
    let options = wrong_ca
        .iter()
        .fold(ControllerOptions::new(&w.keys, "wrong-ca"), |o, (k, v)| {
            o.env(k, v)
        });
    let mut controller = options.spawn();
    let exit_status = never_ready_then_exits(&mut controller).await;
    assert!(!exit_status.success(), "it exited {exit_status}");
    let tail = controller.log_tail();
    assert!(tail.contains("UnknownIssuer"), "the log says why:{tail}");
    assert_eq!(w.etcd.keys(), Vec::<String>::new(), "nothing was written");
}

/// Game ids that try to escape their key (`<prefix>/gameruntimes/<name>`) or their
/// container name (`rtm-<name>`), or to look like another game's.
const INJECTIONS: [(&str, &str); 16] = [
    ("parent directory", "../x"),
    (
        "two parent directories",
        "../../rtmanager/gameruntimes/victim",
    ),
    ("a slash", "a/b"),
    ("an encoded slash", "x%2f.."),
    ("dot dot", ".."),
    ("upper case", "Upper"),
    ("a space", "a b"),
    ("a NUL", "g\u{0}x"),
    ("a newline", "a\nb"),
    (
        "64 characters",
        "a123456789012345678901234567890123456789012345678901234567890123",
    ),
    ("unicode", "g\u{e4}me"),
    ("a Cyrillic look-alike", "g\u{430}me"),
    ("a leading dash (a flag to docker)", "-rm"),
    ("a trailing dash", "game-"),
    ("a glob", "game*"),
    ("empty", ""),
];

/// `text` as a YAML double-quoted scalar.
fn yaml_string(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\0' => quoted.push_str("\\0"),
            '\n' => quoted.push_str("\\n"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn names_that_attempt_injection_never_reach_etcd_or_docker() {
    let _serial = SERIAL.lock().await;
    let _runtime = docker().await;
    let w = World::new("sec-names").await;
    let valid = game_id("sec-names");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &valid)]);
    // A controller watches the same prefix: whatever reached etcd would reach Docker.
    let controller = w.controller("names").start().await;

    for (what, name) in INJECTIONS {
        let file = w.manifest("bad.yaml", &manifest_yaml(&yaml_string(name)));
        let output = w.rtctl_as_root(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);
        let message = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(exit::INVALID),
            "apply {what}: {}",
            describe(&output)
        );
        assert!(
            message.contains("metadata.name") && message.contains("nothing was written"),
            "apply {what}: {message}"
        );
        // A valid game in the same file is not written either: every document is checked
        // before any is written.
        let mixed = format!(
            "{}---\n{}",
            manifest_yaml(&valid),
            manifest_yaml(&yaml_string(name))
        );
        let file = w.manifest("mixed.yaml", &mixed);
        let output = w.rtctl_as_root(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);
        assert_eq!(
            output.status.code(),
            Some(exit::INVALID),
            "mixed {what}: {}",
            describe(&output)
        );

        // Names on the command line become keys too. (A NUL cannot be an argument at all.)
        if !name.contains('\0') {
            // `--` first, so that "-rm" is a name, not flags.
            for command in [
                &["get", "--", name][..],
                &["describe", "--", name],
                &["history", "--", name],
                &["restart", "--", name],
                &["stop", "--", name],
                &["start", "--", name],
                &["delete", "--", name],
                &["wait", "--for=delete", "--timeout=1s", "--", name],
            ] {
                let output = w.rtctl_as_root(command);
                // `a/b` reads as TYPE/NAME on the command line: a type rtctl does not know is
                // a usage error (2) naming the types; every other one is an invalid name (3).
                let (code, says) = if name == "a/b" {
                    (2, "knows no resource type")
                } else {
                    (exit::INVALID, "invalid")
                };
                assert_eq!(
                    output.status.code(),
                    Some(code),
                    "rtctl {command:?} ({what}): {}",
                    describe(&output)
                );
                assert!(
                    stderr(&output).contains(says),
                    "rtctl {command:?} ({what}): {}",
                    describe(&output)
                );
            }
        }
    }

    // Nothing reached etcd: the keyspace holds only what the controller writes of itself.
    assert_eq!(w.keys_besides_heartbeats(), Vec::<String>::new());
    // Nor Docker: no container is named after any of them (or the valid game).
    let names = docker_cli(&["ps", "-a", "--format", "{{.Names}}"]);
    let names = String::from_utf8_lossy(&names.stdout);
    let suspicious: Vec<&str> = names
        .lines()
        .filter(|line| {
            line.contains(&valid)
                || INJECTIONS.iter().any(|(_, name)| {
                    !name.is_empty() && *line == container_name(w.keys.prefix(), name)
                })
        })
        .collect();
    assert!(
        suspicious.is_empty(),
        "containers that should not exist: {suspicious:?}"
    );
    drop(controller);
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn a_foreign_container_with_a_games_name_is_never_touched() {
    let _serial = SERIAL.lock().await;
    let runtime = docker().await;
    let w = World::new("sec-foreign").await;
    let game = game_id("sec-foreign");
    let name = container_name(w.keys.prefix(), &game);
    let _cleanup = Cleanup::new(&[&name]);

    // Someone else's container, with the name rtmanager would give the game, and no labels.
    let run = docker_cli(&["run", "-d", "--name", &name, IMAGE_1]);
    assert!(run.status.success(), "docker run: {}", describe(&run));
    let foreign = String::from_utf8_lossy(&run.stdout).trim().to_owned();

    let _controller = w.controller("foreign").start().await;
    let file = w.manifest("game.yaml", &manifest_yaml(&game));
    w.rtctl_ok(&["apply", "-f", file.to_str().expect("a UTF-8 path")]);

    let conflict = |e: &HistoryEntry| {
        e.op_kind == OpKind::Start
            && e.outcome == Outcome::Failure
            && e.error_code == Some(ErrorCode::Conflict)
    };
    eventually(CONVERGE, "a start that fails with conflict", async || {
        let history = w.history(&game).await;
        let status = w.status(&game).await?;
        let last = status.last_operation.as_ref();
        match (history.iter().find(|e| conflict(e)), last) {
            (Some(entry), Some(op)) if op.error_code.as_deref() == Some("conflict") => {
                let message = entry.error_message.clone().unwrap_or_default();
                if message.contains(&name) {
                    Ok(())
                } else {
                    Err(format!(
                        "the failure does not name the container: {message}"
                    ))
                }
            }
            _ => Err(format!("history {history:?}, status {status:?}")),
        }
    })
    .await;

    // The controller comes back to it (backoff, resync every 5 s): still a conflict, and the
    // container stays as it was. A failure that repeats is counted on its first entry.
    eventually(CONVERGE, "a second failed start", async || {
        let count: u64 = w
            .history(&game)
            .await
            .iter()
            .filter(|e| conflict(e))
            .map(|e| 1 + e.repeated)
            .sum();
        if count >= 2 {
            Ok(())
        } else {
            Err(format!("{count} conflicts so far"))
        }
    })
    .await;
    let kept = running(&runtime, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kept.id, foreign, "the foreign container keeps its id");

    // Deleting the game removes the game's container, and this one is not the game's.
    w.rtctl_ok(&["delete", &game, "--wait", "--timeout", "60s"]);
    let kept = running(&runtime, &name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        kept.id, foreign,
        "the foreign container survives the game's deletion"
    );
    let history = w.history(&game).await;
    assert!(
        history
            .iter()
            .all(|e| e.container_id_before.as_deref() != Some(foreign.as_str())),
        "no operation acted on the foreign container: {history:#?}"
    );
}

/// Connection settings that differ from root's over TLS: each `(variable, value)` replaces the
/// variable, `None` removes it.
fn changed(env: &Env, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
    let mut env = env.to_vec();
    for (var, value) in changes {
        env.retain(|(k, _)| k != var);
        if let Some(value) = value {
            env.push(((*var).to_owned(), (*value).to_owned()));
        }
    }
    env
}

/// Settings without TLS, and without a user when `user` is false.
fn plain(env: &Env, endpoint: &str, user: bool) -> Vec<(String, String)> {
    let mut changes = vec![
        ("RTM_ETCD_ENDPOINTS", Some(endpoint)),
        ("RTM_ETCD_CA_FILE", None),
        ("RTM_ETCD_CERT_FILE", None),
        ("RTM_ETCD_KEY_FILE", None),
    ];
    if !user {
        changes.extend([("RTM_ETCD_USER", None), ("RTM_ETCD_PASSWORD", None)]);
    }
    changed(env, &changes)
}

#[tokio::test]
#[ignore = "needs etcd and Docker: run scripts/test"]
async fn each_etcd_misconfiguration_gets_its_own_message_and_exit_code() {
    let _serial = SERIAL.lock().await;
    let w = World::new("sec-wording").await;
    let root = w.etcd.root_env();
    let tls = w.etcd.endpoint.clone();
    let http = tls.replace("https://", "http://");
    let address = tls.trim_start_matches("https://").to_owned();
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("its address").port();
        format!("http://127.0.0.1:{port}")
    };
    let http_user = plain(&root, &http, true);
    let http_no_user = plain(&root, &http, false);
    let no_cert = changed(
        &root,
        &[("RTM_ETCD_CERT_FILE", None), ("RTM_ETCD_KEY_FILE", None)],
    );
    let no_cert_no_user = changed(
        &no_cert,
        &[("RTM_ETCD_USER", None), ("RTM_ETCD_PASSWORD", None)],
    );
    let wrong_password = w.etcd.client_env("root", "not-the-password");
    let refused = plain(&root, &closed, false);
    let tls_required = format!(
        "etcd at {http} requires TLS (the endpoint answered a TLS handshake); use \
         https://{address} with --etcd-ca-file (RTM_ETCD_CA_FILE)"
    );
    let no_certificate =
        format!("etcd at {tls} refused the client certificate (or none was given; ");
    let bad_password =
        format!("etcd at {tls} refused the user name or password (authentication failed) while");
    let not_reachable = format!("cannot reach etcd at {closed} while listing ");

    // (what, settings, exit code, the message starts with, and contains).
    let cases: [(&str, &Env, i32, &str, &str); 6] = [
        (
            "http:// to a TLS port, with a user (connecting authenticates)",
            &http_user,
            exit::USAGE,
            &tls_required,
            "etcd's certificate",
        ),
        (
            "http:// to a TLS port, no user (the first request fails)",
            &http_no_user,
            exit::USAGE,
            &tls_required,
            "etcd's certificate",
        ),
        (
            "no client certificate, with a user",
            &no_cert,
            exit::PERMISSION_DENIED,
            &no_certificate,
            "pass --etcd-cert-file and --etcd-key-file",
        ),
        (
            "no client certificate, no user",
            &no_cert_no_user,
            exit::PERMISSION_DENIED,
            &no_certificate,
            "pass --etcd-cert-file and --etcd-key-file",
        ),
        (
            "a wrong password",
            &wrong_password,
            exit::PERMISSION_DENIED,
            &bad_password,
            "check --etcd-user / RTM_ETCD_USER and the password (--etcd-password-file, \
             RTM_ETCD_PASSWORD or the context's password)",
        ),
        (
            "nothing listening",
            &refused,
            exit::UNAVAILABLE,
            &not_reachable,
            ": connection refused; check that etcd runs there",
        ),
    ];
    for (what, env, code, starts, contains) in cases {
        let started = Instant::now();
        let output = w.rtctl(env, &["get"]);
        let message = error_lines(&output);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{what}: {}",
            describe(&output)
        );
        assert!(
            message.starts_with(&format!("error: {starts}"))
                && message.contains(contains)
                && message.lines().count() == 1,
            "{what}: one line saying {starts:?} and {contains:?}: {message}"
        );
        assert!(
            !message.contains("not-the-password"),
            "{what}: the password was echoed: {message}"
        );
        assert!(
            started.elapsed() < REFUSE,
            "{what}: took {:?}",
            started.elapsed()
        );
    }

    // A controller started with wrong settings exits, never ready, saying why.
    let controller_cases: [(&str, &Env, String); 4] = [
        (
            "http:// to a TLS port",
            &http_no_user,
            format!("etcd at {http} requires TLS (the endpoint answered a TLS handshake)"),
        ),
        (
            "no client certificate",
            &no_cert_no_user,
            format!("etcd at {tls} refused the client certificate (or none was given"),
        ),
        (
            "no client certificate, with a user",
            &no_cert,
            format!("etcd at {tls} refused the client certificate (or none was given"),
        ),
        (
            "a wrong password",
            &wrong_password,
            format!("etcd at {tls} refused the user name or password (authentication failed)"),
        ),
    ];
    for (what, env, expected) in controller_cases {
        let options = env.iter().fold(
            ControllerOptions::new(&w.keys, "misconfigured"),
            |o, (k, v)| o.env(k, v),
        );
        let mut controller = options.spawn();
        let exit_status = never_ready_then_exits(&mut controller).await;
        assert!(!exit_status.success(), "{what}: it exited {exit_status}");
        let tail = controller.log_tail();
        let last = tail
            .lines()
            .rev()
            .find(|line| line.contains("rtmanager failed"));
        assert!(
            last.is_some_and(|line| line.contains(&expected)),
            "{what}: the last line says {expected:?}:{tail}"
        );
        assert!(
            !tail.contains("not-the-password"),
            "{what}: the password was logged:{tail}"
        );
    }

    // Nothing listening is no wrong setting: the controller waits for etcd, not ready, and
    // says what it waits for.
    let options = refused
        .iter()
        .fold(ControllerOptions::new(&w.keys, "waiting"), |o, (k, v)| {
            o.env(k, v)
        });
    let mut controller = options.spawn();
    let waiting = format!("etcd at {closed} is not reachable (connection refused)");
    eventually(
        REFUSE,
        "the controller to log that etcd is not reachable",
        async || {
            if let Ok((200, body)) = controller.get("/readyz").await {
                panic!("controller became ready: {body}{}", controller.log_tail());
            }
            let tail = controller.log_tail();
            if tail.contains(&waiting) {
                Ok(())
            } else {
                Err(tail)
            }
        },
    )
    .await;
    // Killed, not stopped: how a controller without etcd drains is not this test's subject.
    controller.kill();
    assert_eq!(w.etcd.keys(), Vec::<String>::new(), "nothing was written");
}

/// A file holding `text`, with permission bits `mode`.
fn file_with_mode(dir: &std::path::Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// `env` without the password variable.
fn without_password(env: &Env) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k != "RTM_ETCD_PASSWORD")
        .cloned()
        .collect()
}

#[tokio::test]
#[ignore = "needs openssl, /usr/bin/etcd and Docker: run scripts/test"]
async fn the_password_comes_from_a_file_never_the_command_line_and_its_exposures_are_warned_about()
{
    let _serial = SERIAL.lock().await;
    let w = World::new("sec-password").await;
    let password = w.etcd.root_password.clone();
    let dir = w.files.path();
    let private = file_with_mode(dir, "password", &format!("{password}\n"), 0o600);
    let open = file_with_mode(dir, "password-open", &format!("{password}\n"), 0o644);
    let env = without_password(&w.etcd.root_env());

    // The controller with --etcd-password-file: ready, and the password is in neither its
    // command line nor its environment (what `ps` and /proc show).
    let metrics = process::free_loopback_addr();
    let log = dir.join("controller.log");
    let log_file = std::fs::File::create(&log).expect("the log file");
    let mut command = Command::new(binary());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("RTM_") {
            command.env_remove(&var);
        }
    }
    command
        .args([
            "--etcd-password-file",
            private.to_str().expect("a UTF-8 path"),
        ])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RTM_PREFIX", w.keys.prefix())
        .env("RTM_METRICS_ADDR", metrics.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().expect("duplicate the log file handle"))
        .stderr(log_file);
    let child = command.spawn().expect("start rtmanager");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let reap = Reap(child);
    eventually(
        CONVERGE,
        "the controller ready with its password from a file",
        async || match process::http_get(metrics, "/readyz").await {
            Ok((200, _)) => Ok(()),
            other => Err(format!(
                "{other:?}; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
        },
    )
    .await;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("its command line");
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("--etcd-password-file"), "{cmdline}");
    assert!(
        !cmdline.contains(&password),
        "ps shows the password: {cmdline}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("its environment");
    assert!(
        !String::from_utf8_lossy(&environ).contains(&password),
        "the password is in the controller's environment"
    );
    drop(reap);
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(
        !text.contains(&password),
        "the password was logged:\n{text}"
    );
    assert!(
        !text.contains("holds the etcd password") && !text.contains("unencrypted"),
        "a private file over TLS is nothing to warn about:\n{text}"
    );

    // A password file others may read: the controller says so.
    let mut controller = without_password(&w.etcd.root_env())
        .iter()
        .fold(ControllerOptions::new(&w.keys, "open-file"), |o, (k, v)| {
            o.env(k, v)
        })
        .env(
            "RTM_ETCD_PASSWORD_FILE",
            open.to_str().expect("a UTF-8 path"),
        )
        .start()
        .await;
    let text = controller.log_text();
    assert!(
        text.contains("holds the etcd password and group or others may open it (mode 644)"),
        "{}",
        controller.log_tail()
    );
    controller.terminate();
    controller.wait_exit(Duration::from_secs(60)).await;

    // The flag is refused by both binaries, with the way out and without the password.
    let mut flagged = Command::new(binary());
    flagged
        .args(["--etcd-user", "root", "--etcd-password", &password])
        .env_remove("RTM_ETCD_PASSWORD");
    let refused = run_bounded(flagged, Duration::from_secs(30)).expect("rtmanager exits");
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    for output in [
        &refused,
        &w.rtctl(&env, &["get", "--etcd-password", &password]),
    ] {
        let message = stderr(output);
        assert!(
            message.contains("--etcd-password is refused on the command line")
                && message.contains("--etcd-password-file")
                && !message.contains(&password),
            "{message}"
        );
    }
    let output = w.rtctl(&env, &["get", "--etcd-password", &password]);
    assert_eq!(
        output.status.code(),
        Some(exit::USAGE),
        "{}",
        describe(&output)
    );

    // rtctl reads the file too, and warns about one others may read.
    let file_flag = [
        "--etcd-password-file",
        private.to_str().expect("a UTF-8 path"),
    ];
    let output = w.rtctl(&env, &[&["get"][..], &file_flag].concat());
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        !stderr(&output).contains("warning"),
        "{}",
        describe(&output)
    );
    let open_flag = ["--etcd-password-file", open.to_str().expect("a UTF-8 path")];
    let output = w.rtctl(&env, &[&["get"][..], &open_flag].concat());
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stderr(&output).contains("warning: ") && stderr(&output).contains("chmod 600"),
        "{}",
        describe(&output)
    );

    // A context file holding the password, readable by others.
    let context = file_with_mode(
        dir,
        "config.yaml",
        &format!(
            "currentContext: c\ncontexts:\n  - name: c\n    user: root\n    password: {}\n",
            yaml_string(&password)
        ),
        0o644,
    );
    let mut context_env = without_password(&env);
    context_env.retain(|(k, _)| k != "RTM_ETCD_USER");
    context_env.push(("RTMCONFIG".into(), context.display().to_string()));
    let output = w.rtctl(&context_env, &["get"]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        stderr(&output).contains(&format!("{} holds the etcd password", context.display())),
        "{}",
        describe(&output)
    );

    // Credentials over plaintext: warned about before anything is sent.
    let plaintext = [
        (
            "RTM_ETCD_ENDPOINTS".to_owned(),
            "http://127.0.0.1:1".to_owned(),
        ),
        ("RTM_ETCD_USER".to_owned(), "root".to_owned()),
        ("RTM_ETCD_PASSWORD".to_owned(), password.clone()),
    ];
    let output = w.rtctl(&plaintext, &["get"]);
    assert!(
        stderr(&output).contains("sent unencrypted to http://127.0.0.1:1"),
        "{}",
        describe(&output)
    );
    assert!(
        !stderr(&output).contains(&password),
        "{}",
        describe(&output)
    );
}

#[tokio::test]
#[ignore = "needs openssl, /usr/bin/etcd and script(1): run scripts/test"]
async fn rtctl_asks_for_a_missing_password_on_a_terminal_without_echoing_it() {
    let _serial = SERIAL.lock().await;
    let w = World::new("sec-prompt").await;
    let password = w.etcd.root_password.clone();
    // script(1) gives rtctl a terminal for stdin; what is typed is fed to it.
    let settings: Vec<String> = without_password(&w.etcd.root_env())
        .iter()
        .chain(&[
            ("RTM_PREFIX".to_owned(), w.keys.prefix().to_owned()),
            ("RTMCONFIG".to_owned(), "/dev/null".to_owned()),
        ])
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let inner = format!(
        "env -u RTM_ETCD_PASSWORD {} {RTCTL} get",
        settings.join(" ")
    );
    let mut child = Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) runs");
    // Typed once the prompt shows, as a person does.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (sender, shown) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 256];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buffer) {
            if n == 0 || sender.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("Password of etcd user root at") {
        match shown.recv_timeout(Duration::from_secs(30)) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => {
                let _ = child.kill();
                panic!("no prompt: {}", String::from_utf8_lossy(&seen));
            }
        }
    }
    let mut typed = child.stdin.take().expect("piped stdin");
    std::io::Write::write_all(&mut typed, format!("{password}\n").as_bytes())
        .expect("type the password");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll script(1)").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rtctl under script(1) did not end within 60 s: the password was not read");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(typed);
    let output = child.wait_with_output().expect("script(1)'s output");
    seen.extend(shown.iter().flatten());
    let seen = String::from_utf8_lossy(&seen).replace('\r', "");
    assert!(output.status.success(), "{}", describe(&output));
    assert!(seen.contains("Password of etcd user root at"), "{seen}");
    assert!(
        seen.contains("No gameruntimes found") || seen.contains("NAME"),
        "the typed password authenticated: {seen}"
    );
    assert!(!seen.contains(&password), "the password was echoed: {seen}");
}
