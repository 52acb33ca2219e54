//! Least privilege end to end: `scripts/etcd-roles` makes the roles and users of one
//! installation on a private etcd with TLS and authentication on (`common/secure_etcd.rs`),
//! then each user does its job, and only its job, with the real `rtmanager` and `rtctl`
//! binaries and the real Docker engine:
//!
//! - the controller, as `rtm-controller`, reconciles a game from apply to removal, and
//!   removes the deleted game's history after its grace; it may not write documents;
//! - the operator, as `rtm-operator`, applies (a budget beside the game), gets, restarts,
//!   allocates and releases, prepulls (the controller answering on the operator's lease), and
//!   deletes with rtctl; it may not write the controller's records;
//! - the viewer, as `rtm-viewer`, may get and read the history, and every write is refused
//!   (rtctl exit 7, permission_denied);
//! - the matchmaker, as `rtm-matchmaker`, allocates and releases a game through the library
//!   (`records::sessions`: it reads games, status and the lease key, and writes under
//!   `sessions/`), and may neither write games nor status nor leases nor read the history;
//! - the controller may write sessions (it removes a deleted game's) and budget slots.
//! - nodes: the controller registers a node (`nodes/`), writes assignments and the
//!   `scheduler` key, and may not write a cordon; the operator cordons and uncordons it with
//!   rtctl (`cordons/`) and may write neither `nodes/`, `assignments/` nor `scheduler`; the
//!   viewer's `rtctl cordon` is refused.
//!
//! The script runs twice: the second run changes nothing. Ignored by a bare `cargo test`
//! (etcd, openssl and Docker are needed); `scripts/test` runs it.

use rtm_testkit as common;
use rtm_testkit::process;
use rtm_testkit::secure_etcd;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rtm_controller::runtime::{ContainerRuntime, container_name};
use rtm_core::model::Phase;
use rtm_core::records::Documents;
use rtm_core::records::sessions::{Released, SessionRequest, Sessions};
use rtm_core::store::etcd::{Credentials, EtcdConfig, EtcdStore, TlsFiles};
use rtm_core::store::{Keys, Store, StoreError, Txn};

use common::docker::{Cleanup, IMAGE_1, docker, game as game_id, run_bounded};
use common::{unique_keys, without_rtm_env};
use process::{ControllerOptions, eventually};
use secure_etcd::SecureEtcd;

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/etcd-roles");

/// Bound on a game reaching a state: a start takes about a second; the rest is slack for a
/// loaded machine.
const CONVERGE: Duration = Duration::from_secs(60);

/// rtctl's exit code for permission_denied (`rtctl --help`).
const PERMISSION_DENIED: i32 = 7;

/// The users the script makes, named like their roles.
const CONTROLLER: &str = "rtm-controller";
const OPERATOR: &str = "rtm-operator";
const MATCHMAKER: &str = "rtm-matchmaker";
const VIEWER: &str = "rtm-viewer";

struct World {
    etcd: SecureEtcd,
    keys: Keys,
    dir: tempfile::TempDir,
}

impl World {
    fn users(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    fn password(&self, user: &str) -> String {
        let file = self.users().join(format!("{user}.password"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
            .trim_end()
            .to_owned()
    }

    fn env(&self, user: &str) -> Vec<(String, String)> {
        self.etcd.client_env(user, &self.password(user))
    }

    /// `scripts/etcd-roles` for this world's prefix, as root (its password in a file).
    fn etcd_roles(&self) -> Output {
        self.etcd_roles_with(&self.etcd.root_password)
    }

    /// `scripts/etcd-roles` for this world's prefix, as root with `password` (in a file).
    fn etcd_roles_with(&self, password: &str) -> Output {
        let root_file = self.dir.path().join("root.password");
        std::fs::write(&root_file, format!("{password}\n")).expect("write root's password file");
        let path = |p: &Path| p.display().to_string();
        let mut command = Command::new(SCRIPT);
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("RTM_") || name.starts_with("ETCD") {
                command.env_remove(&var);
            }
        }
        command
            .args(["--endpoints", &self.etcd.endpoint])
            .args(["--cacert", &path(&self.etcd.certs.ca)])
            .args(["--cert", &path(&self.etcd.certs.client_cert)])
            .args(["--key", &path(&self.etcd.certs.client_key)])
            .args(["--root-password-file", &path(&root_file)])
            .args(["--prefix", self.keys.prefix()])
            .args(["--users", &path(&self.users())]);
        run_bounded(command, Duration::from_secs(120)).expect("scripts/etcd-roles finished")
    }

    /// rtctl as `user`, with this world's prefix and nothing of the caller's settings.
    fn rtctl(&self, user: &str, args: &[&str]) -> Output {
        let mut command = Command::new(RTCTL);
        without_rtm_env(&mut command)
            .env("RTMCONFIG", "/dev/null")
            .env("RTM_PREFIX", self.keys.prefix())
            .envs(self.env(user))
            .args(args);
        run_bounded(command, Duration::from_secs(120))
            .unwrap_or_else(|| panic!("rtctl {args:?} did not exit within 120 s"))
    }

    fn rtctl_ok(&self, user: &str, args: &[&str]) -> String {
        let output = self.rtctl(user, args);
        assert_eq!(
            output.status.code(),
            Some(0),
            "rtctl {args:?} as {user}: {}",
            describe(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A store connected as `user`.
    async fn store(&self, user: &str) -> Arc<EtcdStore> {
        let mut config = EtcdConfig::new(vec![self.etcd.endpoint.clone()]);
        config.tls = Some(TlsFiles {
            ca_file: self.etcd.certs.ca.clone(),
            cert_file: Some(self.etcd.certs.client_cert.clone()),
            key_file: Some(self.etcd.certs.client_key.clone()),
        });
        config.credentials = Some(Credentials {
            user: user.to_owned(),
            password: self.password(user),
        });
        Arc::new(
            EtcdStore::connect(&config)
                .await
                .unwrap_or_else(|e| panic!("connect as {user}: {e}")),
        )
    }

    fn manifest(&self, file: &str, yaml: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, yaml).expect("write a manifest");
        path.display().to_string()
    }
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A put of `key` as the store's user: `Ok` when etcd allowed it.
async fn put(store: &EtcdStore, key: &str) -> Result<(), StoreError> {
    store
        .txn(Txn::new().put(key, b"{}".to_vec()))
        .await
        .map(|_| ())
}

fn denied<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::PermissionDenied { .. })),
        "{what} must be refused as permission denied: {result:?}"
    );
}

#[tokio::test]
#[ignore = "needs etcd, openssl and Docker: run scripts/test"]
async fn each_role_does_its_job_and_nothing_more() {
    let runtime = docker().await;
    let w = World {
        etcd: SecureEtcd::start(),
        keys: unique_keys("least-privilege"),
        dir: tempfile::tempdir().expect("a directory for passwords and manifests"),
    };
    let game = game_id("least-privilege");
    let _cleanup = Cleanup::new(&[&container_name(w.keys.prefix(), &game)]);

    // A wrong root password: refused before anything changes, and not echoed.
    let refused = w.etcd_roles_with("not-roots-password");
    let message = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    assert!(
        message.contains("authentication failed") && !message.contains("not-roots-password"),
        "{message}"
    );
    assert!(
        !w.users().exists(),
        "nothing made before the credentials were checked"
    );

    // The roles and users, twice: the second run finds everything as it should be.
    let first = w.etcd_roles();
    assert!(first.status.success(), "{}", describe(&first));
    let second = w.etcd_roles();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{}", describe(&second));
    let changed: Vec<&str> = said
        .lines()
        .filter(|line| {
            line.contains("created")
                || line.contains("revoked")
                || (line.starts_with("Role ") && line.ends_with(" updated"))
        })
        .collect();
    assert!(
        changed.is_empty(),
        "a second run changes no role or user: {said}"
    );
    for user in [CONTROLLER, OPERATOR, MATCHMAKER, VIEWER] {
        let file = w.users().join(format!("{user}.password"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file)
                .expect("a password file")
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{} is private", file.display());
        let password = w.password(user);
        assert!(password.len() >= 20, "a long generated password");
        assert!(
            !describe(&first).contains(&password) && !describe(&second).contains(&password),
            "the script printed {user}'s password"
        );
    }

    // The controller, as rtm-controller; a deleted game's history goes after 2 s.
    let options = w.env(CONTROLLER).iter().fold(
        ControllerOptions::new(&w.keys, "least-privilege"),
        |options, (k, v)| options.env(k, v),
    );
    let controller = options.env("RTM_HISTORY_GRACE", "2s").start().await;
    let root = Documents::new(w.etcd.root_store().await, w.keys.clone());

    // The operator applies and restarts.
    let manifest = w.manifest(
        "game.yaml",
        &format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {game}\n\
         spec:\n  image: {IMAGE_1}\n  stopTimeout: 5s\n"
        ),
    );
    let budget = w.manifest(
        "budget.yaml",
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameDisruptionBudget\nmetadata: {name: lp}\n\
         spec:\n  selector: {matchLabels: {tier: lp}}\n  maxUnavailable: 1\n",
    );
    let applied = w.rtctl_ok(OPERATOR, &["apply", "-f", &manifest, "-f", &budget]);
    assert!(
        applied.contains(&format!("gameruntime/{game} created"))
            && applied.contains("gamedisruptionbudget/lp created"),
        "{applied}"
    );
    let budgets = w.rtctl_ok(OPERATOR, &["get", "budgets"]);
    assert!(budgets.contains("lp"), "{budgets}");
    let running = async |not: Option<&str>| {
        eventually(CONVERGE, "the game to run", async || {
            let status = root
                .get_status(&game)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no status yet")?;
            match status.container_id {
                Some(id) if status.phase == Phase::Running && Some(id.as_str()) != not => {
                    match runtime.inspect_container(&id).await {
                        Ok(Some(c)) if c.is_running() => Ok(id),
                        other => Err(format!("container {id}: {other:?}")),
                    }
                }
                other => Err(format!("phase {}, container {other:?}", status.phase)),
            }
        })
        .await
    };
    let first_container = running(None).await;
    let listed = w.rtctl_ok(OPERATOR, &["get", &game]);
    assert!(listed.contains("Running"), "{listed}");
    w.rtctl_ok(
        OPERATOR,
        &[
            "restart",
            &game,
            "--ref",
            "LP-1",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let second_container = running(Some(&first_container)).await;

    // The viewer reads everything, and writes nothing.
    let seen = w.rtctl_ok(VIEWER, &["get", &game]);
    assert!(seen.contains(&game) && seen.contains("Running"), "{seen}");
    let history = w.rtctl_ok(VIEWER, &["history", &game]);
    assert!(
        history.contains("restart")
            && history.contains("admin_cli (claimed)")
            && history.contains("LP-1"),
        "the viewer reads the history, the operator's source shown as its claim:\n{history}"
    );
    // A changed document: an unchanged apply writes nothing, and is no test.
    let changed = w.manifest(
        "changed.yaml",
        &format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {game}\n\
             spec:\n  image: {IMAGE_1}\n  stopTimeout: 6s\n"
        ),
    );
    for args in [
        &["apply", "-f", changed.as_str()][..],
        &["restart", &game],
        &["stop", &game],
        &["delete", &game],
    ] {
        let output = w.rtctl(VIEWER, args);
        assert_eq!(
            output.status.code(),
            Some(PERMISSION_DENIED),
            "rtctl {args:?} as the viewer: {}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("permission denied"),
            "{}",
            describe(&output)
        );
    }
    // A prepull: the operator's request on its own lease, the controller's answer attached
    // to that lease (etcd wants write permission on the lease's keys for it), the
    // operator's revoke taking both. The test image is in no registry, so the pull fails
    // (exit 8): what counts is that the answer came and the keys went.
    let prepull = w.rtctl(OPERATOR, &["prepull", &game, "--timeout", "60s"]);
    let said = describe(&prepull);
    assert_eq!(prepull.status.code(), Some(8), "{said}");
    assert!(
        String::from_utf8_lossy(&prepull.stdout)
            .lines()
            .any(|l| l.starts_with("local ") && l.contains(IMAGE_1)),
        "the controller answered as rtm-controller: {said}"
    );
    let left = w
        .etcd
        .root_store()
        .await
        .list(&w.keys.prepulls(), None)
        .await
        .expect("prepulls/ listed");
    assert!(left.items.is_empty(), "revoked by the operator: {left:?}");
    let output = w.rtctl(VIEWER, &["prepull", &game, "--timeout", "5s"]);
    assert_eq!(
        output.status.code(),
        Some(PERMISSION_DENIED),
        "rtctl prepull as the viewer: {}",
        describe(&output)
    );
    let viewer = w.store(VIEWER).await;
    denied(
        "the viewer writing a session",
        put(&viewer, &format!("{}/sessions/{game}", w.keys.prefix())).await,
    );

    // The matchmaker reads games and status, writes sessions, and nothing else.
    let matchmaker = w.store(MATCHMAKER).await;
    let games = matchmaker
        .list(&w.keys.gameruntimes(), None)
        .await
        .expect("the matchmaker lists games");
    assert_eq!(games.items.len(), 1);
    let status = matchmaker
        .get(&w.keys.status(&game))
        .await
        .expect("the matchmaker reads status");
    assert!(status.is_some());
    let session = format!("{}/sessions/{game}", w.keys.prefix());
    put(&matchmaker, &session)
        .await
        .expect("the matchmaker writes its session");
    let kv = matchmaker
        .get(&session)
        .await
        .unwrap()
        .expect("the session reads back");
    matchmaker
        .delete(&session, kv.mod_revision)
        .await
        .expect("and is deleted");
    matchmaker
        .get(&w.keys.lease(&game))
        .await
        .expect("the matchmaker reads the lease key its allocation compares");
    // The library call a matchmaker makes: allocate, then release, atomically.
    let sessions = Sessions::new(matchmaker.clone(), w.keys.clone());
    let request = SessionRequest {
        reference: Some("LP-MATCH".into()),
        ..SessionRequest::default()
    };
    let allocated = sessions
        .allocate(&game, &request)
        .await
        .expect("the matchmaker allocates the Ready game");
    assert!(allocated.value.is_allocated());
    let listed = w.rtctl_ok(VIEWER, &["get", &game]);
    assert!(listed.contains("Allocated"), "{listed}");
    assert!(matches!(
        sessions.release(&game, &request).await,
        Ok(Released::Ended(_))
    ));
    // The operator allocates and releases with rtctl.
    let said = w.rtctl_ok(OPERATOR, &["allocate", &game, "--ref", "LP-OP"]);
    assert!(said.contains("allocated (ref LP-OP)"), "{said}");
    let said = w.rtctl_ok(OPERATOR, &["release", &game]);
    assert!(said.contains("released"), "{said}");
    denied(
        "the matchmaker writing a game",
        put(&matchmaker, &w.keys.gameruntime("mm-game")).await,
    );
    denied(
        "the matchmaker writing a status",
        put(&matchmaker, &w.keys.status(&game)).await,
    );
    denied(
        "the matchmaker reading the history",
        matchmaker.list(&w.keys.history(&game), None).await,
    );
    denied(
        "the matchmaker taking a game's lease",
        put(&matchmaker, &w.keys.lease(&game)).await,
    );

    // Each writer stays in its lane.
    let operator = w.store(OPERATOR).await;
    denied(
        "the operator writing a status",
        put(&operator, &w.keys.status(&game)).await,
    );
    denied(
        "the operator writing history",
        put(&operator, &w.keys.history_entry(&game, 999)).await,
    );
    let as_controller = w.store(CONTROLLER).await;
    denied(
        "the controller writing a game",
        put(&as_controller, &w.keys.gameruntime("c-game")).await,
    );
    // The controller removes a deleted game's session, and takes budget slots.
    for key in [session.clone(), w.keys.budget_slot("lp", 0)] {
        put(&as_controller, &key)
            .await
            .unwrap_or_else(|e| panic!("the controller writes {key}: {e}"));
        let kv = as_controller
            .get(&key)
            .await
            .unwrap()
            .expect("it reads back");
        as_controller
            .delete(&key, kv.mod_revision)
            .await
            .expect("and deletes it");
    }
    denied(
        "the controller writing a budget",
        put(&as_controller, &w.keys.budget("c-budget")).await,
    );
    // Nodes: the controller registers one, places games and holds the scheduler key; the
    // operator cordons it; neither writes the other's records.
    let node = "lp-node.example";
    let record = rtm_core::records::nodes::NodeRecord {
        name: node.to_owned(),
        labels: Default::default(),
        capacity: Default::default(),
        address: "127.0.0.1".into(),
        port_range: rtm_core::records::nodes::DEFAULT_PORT_RANGE,
        holder: "lp-holder".into(),
        engine: None,
        version: "test".into(),
        registered_at: rtm_core::model::Timestamp::now(),
        ttl_ms: 10_000,
        self_fence_after_ms: None,
        lost_at: None,
    };
    as_controller
        .txn(Txn::new().put(w.keys.node(node), rtm_core::records::nodes::encode(&record)))
        .await
        .expect("the controller registers its node");
    for key in [w.keys.assignment("lp-game"), w.keys.scheduler()] {
        put(&as_controller, &key)
            .await
            .unwrap_or_else(|e| panic!("the controller writes {key}: {e}"));
    }
    denied(
        "the controller writing a cordon",
        put(&as_controller, &w.keys.cordon(node)).await,
    );
    let said = w.rtctl_ok(OPERATOR, &["cordon", node]);
    assert!(said.contains(&format!("node/{node} cordoned")), "{said}");
    let said = w.rtctl_ok(OPERATOR, &["uncordon", node]);
    assert!(said.contains(&format!("node/{node} uncordoned")), "{said}");
    for (what, key) in [
        ("the operator writing a node record", w.keys.node(node)),
        (
            "the operator writing an assignment",
            w.keys.assignment("lp-game"),
        ),
        ("the operator writing the scheduler key", w.keys.scheduler()),
    ] {
        denied(what, put(&operator, &key).await);
    }
    let refused = w.rtctl(VIEWER, &["cordon", node]);
    assert_eq!(
        refused.status.code(),
        Some(PERMISSION_DENIED),
        "the viewer's cordon: {}",
        describe(&refused)
    );

    denied(
        "the matchmaker writing a budget slot",
        put(&matchmaker, &w.keys.budget_slot("lp", 1)).await,
    );
    denied(
        "anyone writing outside the prefix",
        put(&as_controller, "/elsewhere/x").await,
    );

    // The operator deletes: the container goes, then (2 s grace) the history, under the
    // controller's role.
    w.rtctl_ok(OPERATOR, &["delete", &game, "--wait", "--timeout", "60s"]);
    eventually(
        CONVERGE,
        "the container to be removed",
        async || match runtime.inspect_container(&second_container).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let history_prefix = w.keys.history(&game);
    eventually(
        CONVERGE,
        "the deleted game's history to be removed",
        async || {
            let left: Vec<String> = w
                .etcd
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(&history_prefix))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    assert!(
        controller.metric("rtmanager_history_removed_total").await >= 1.0,
        "the removal is counted"
    );
    let log = controller.log_text();
    assert!(
        log.contains("removed the history of a deleted game"),
        "the removal is logged:{}",
        controller.log_tail()
    );
    assert!(
        !log.to_lowercase().contains("permission denied"),
        "the controller needed a permission it lacks:{}",
        controller.log_tail()
    );
}
