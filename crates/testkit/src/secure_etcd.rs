//! A private etcd for one test: Debian's `/usr/bin/etcd` (3.4) on free loopback ports with its
//! data, certificates and log in a temporary directory, serving clients over TLS only and
//! requiring a client certificate (`--client-cert-auth`), with etcd's own authentication
//! enabled (user `root`, a password made up per instance). Stopped (SIGTERM, then SIGKILL) and
//! its directory removed when dropped, panics included. The shared etcd at 127.0.0.1:2379 is
//! never touched.
//!
//! How the two kinds of authentication combine in etcd 3.4: TLS proves the client holds a
//! certificate of the CA; the user comes from the auth token the client gets with its user
//! and password, and only when a request carries no token from the certificate's CN. The
//! client certificate here has a CN that is no user (`rtm-test-client`, see [`crate::tls`]),
//! so a client without the password gets nothing.

use std::net::TcpListener;
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtm_core::store::etcd::{Credentials, EtcdConfig, EtcdStore, TlsFiles};

use crate::docker::run_bounded;
use crate::tls::Certificates;

const ETCD: &str = "/usr/bin/etcd";

/// Bound on etcd coming up: it answers within a second on an idle machine.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Bound on one etcdctl call.
const ETCDCTL_LIMIT: Duration = Duration::from_secs(20);

/// A running private etcd (see the module docs); stopped and removed on drop.
#[derive(Debug)]
pub struct SecureEtcd {
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The CA, server and client files it was started with.
    pub certs: Certificates,
    /// The password of `root`.
    pub root_password: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl SecureEtcd {
    /// Starts etcd, waits until it answers over TLS, and enables authentication. Fails the
    /// test, with the end of etcd's log, if it cannot.
    pub fn start() -> SecureEtcd {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: run scripts/services (it installs etcd-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("rtm-secure-etcd-")
            .tempdir()
            .expect("a temporary directory for the private etcd");
        let certs = Certificates::generate(dir.path());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let root_password = format!("root-{}-{nanos:x}", std::process::id());
        // Free ports, as the OS picks them; another process could take one in the moment
        // before etcd binds it, which shows as etcd exiting at start.
        let client_port = free_port();
        let peer_port = free_port();
        let endpoint = format!("https://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("create etcd.log");
        let mut command = Command::new(ETCD);
        command
            .args(["--name", "rtm-secure"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("rtm-secure={peer}")])
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&certs.ca)
            .arg("--cert-file")
            .arg(&certs.server_cert)
            .arg("--key-file")
            .arg(&certs.server_key);
        let child = crate::spawn_logged(&mut command, log, &ETCD);
        let mut etcd = SecureEtcd {
            endpoint,
            certs,
            root_password,
            child,
            dir,
        };
        etcd.wait_healthy();
        etcd.enable_auth();
        etcd
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited ({status}) at start{}", self.log_tail());
            }
            let health = self.etcdctl_as(None, &["endpoint", "health"]);
            if health.status.success() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd did not answer over TLS within {START_LIMIT:?}: {}{}",
                    String::from_utf8_lossy(&health.stderr),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `root` with the root role, then `auth enable`: from here on every request needs a user.
    fn enable_auth(&self) {
        let password = format!("--new-user-password={}", self.root_password);
        self.must(None, &["user", "add", "root", &password]);
        self.must(None, &["user", "grant-role", "root", "root"]);
        self.must(None, &["auth", "enable"]);
    }

    /// Adds a user whose role may `permission` (`read`, `write` or `readwrite`) the keys
    /// under `prefix`.
    pub fn add_user(&self, user: &str, password: &str, permission: &str, prefix: &str) {
        let root = Some("root");
        self.must(root, &["role", "add", user]);
        self.must(
            root,
            &[
                "role",
                "grant-permission",
                user,
                permission,
                prefix,
                "--prefix=true",
            ],
        );
        let password = format!("--new-user-password={password}");
        self.must(root, &["user", "add", user, &password]);
        self.must(root, &["user", "grant-role", user, user]);
    }

    /// Every key in the whole keyspace, read as root.
    pub fn keys(&self) -> Vec<String> {
        let output = self.must(Some("root"), &["get", "", "--prefix", "--keys-only"]);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The environment with which `rtmanager` and `rtctl` reach this etcd as `user`.
    pub fn client_env(&self, user: &str, password: &str) -> Vec<(String, String)> {
        let path = |p: &std::path::Path| p.display().to_string();
        [
            ("RTM_ETCD_ENDPOINTS", self.endpoint.clone()),
            ("RTM_ETCD_CA_FILE", path(&self.certs.ca)),
            ("RTM_ETCD_CERT_FILE", path(&self.certs.client_cert)),
            ("RTM_ETCD_KEY_FILE", path(&self.certs.client_key)),
            ("RTM_ETCD_USER", user.to_owned()),
            ("RTM_ETCD_PASSWORD", password.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// [`SecureEtcd::client_env`] as root.
    pub fn root_env(&self) -> Vec<(String, String)> {
        self.client_env("root", &self.root_password)
    }

    /// A store connected as root, through the crate's own TLS and auth path.
    pub async fn root_store(&self) -> Arc<EtcdStore> {
        let mut config = EtcdConfig::new(vec![self.endpoint.clone()]);
        config.tls = Some(TlsFiles {
            ca_file: self.certs.ca.clone(),
            cert_file: Some(self.certs.client_cert.clone()),
            key_file: Some(self.certs.client_key.clone()),
        });
        config.credentials = Some(Credentials {
            user: "root".to_owned(),
            password: self.root_password.clone(),
        });
        let store = EtcdStore::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to the private etcd as root: {e}"));
        Arc::new(store)
    }

    /// etcdctl as `user` (root's password; `None`: no user, the certificate alone).
    fn etcdctl_as(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .arg("--cacert")
            .arg(&self.certs.ca)
            .arg("--cert")
            .arg(&self.certs.client_cert)
            .arg("--key")
            .arg(&self.certs.client_key)
            .args(["--dial-timeout=5s", "--command-timeout=10s"]);
        if let Some(user) = user {
            command.arg(format!("--user={user}:{}", self.root_password));
        }
        command.args(args);
        run_bounded(command, ETCDCTL_LIMIT).unwrap_or_else(|| {
            panic!("etcdctl {args:?} did not run or finish in {ETCDCTL_LIMIT:?}")
        })
    }

    fn must(&self, user: Option<&str>, args: &[&str]) -> Output {
        let output = self.etcdctl_as(user, args);
        assert!(
            output.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
        output
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!(
            "\n--- last lines of the private etcd's log ---\n{}",
            lines[from..].join("\n")
        )
    }
}

impl Drop for SecureEtcd {
    fn drop(&mut self) {
        // Only our own child, by its pid: SIGTERM lets etcd close its data cleanly.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The TempDir removes the data, certificates and log after this.
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
