//! What the integration tests stand on (`publish = false`, a
//! dev-dependency only): a connection to the real etcd
//! (`RTM_ETCD_ENDPOINTS`, as every binary reads it) and a key prefix of
//! the test's own, so tests run in parallel and never see each other's
//! keys; the Docker engine ([`docker`]) and private engines ([`dockerd`]);
//! etcd clusters ([`etcd_cluster`]), simulated machines (network
//! namespaces with an engine and a controller each) and a monitor of them
//! ([`hosts`]), and etcd with TLS and authentication
//! ([`secure_etcd`], [`tls`]); the controller as a child process
//! ([`process`]); the loopback registries and the tags a test pushes ([`registry`]). Here too, what many test files repeated: a stored
//! document's revision ([`revision_of`]), the controllers' heartbeats
//! ([`heartbeats`]), an environment free of the caller's `RTM_` settings
//! ([`without_rtm_env`]) and a time bound that names what it waited for
//! ([`within`]).
//!
//! A missing service fails the test with a message saying how to start it;
//! it never skips.

#![warn(missing_docs, unreachable_pub)]

pub mod docker;
pub mod dockerd;
pub mod etcd_cluster;
pub mod hosts;
pub mod process;
pub mod registry;
pub mod rtctl;
pub mod secure_etcd;
pub mod tls;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rtm_core::model::GameRuntime;
use rtm_core::store::etcd::{DEFAULT_ENDPOINT, EtcdConfig, EtcdStore};
use rtm_core::store::{Keys, Revision, Store};

/// The endpoints of the shared etcd: `RTM_ETCD_ENDPOINTS` (comma-separated), as every
/// binary reads it, else etcd's default.
pub fn etcd_endpoints() -> Vec<String> {
    std::env::var("RTM_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned())
        .split(',')
        .map(|e| e.trim().to_owned())
        .collect()
}

/// A store on `endpoints` with short timeouts (a private etcd that the test stops must
/// not hang a probe for long).
pub async fn connect_store(endpoints: &[String]) -> Arc<dyn Store> {
    let mut config = EtcdConfig::new(endpoints.to_vec());
    config.request_timeout = Duration::from_secs(3);
    config.connect_timeout = Duration::from_secs(2);
    Arc::new(
        EtcdStore::connect(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to etcd at {endpoints:?}: {e}")),
    )
}

/// A connected store, or a panic that says how to start etcd.
pub async fn etcd() -> Arc<EtcdStore> {
    let config = EtcdConfig::new(etcd_endpoints());
    let store = EtcdStore::connect(&config)
        .await
        .expect("etcd client configuration");
    if let Err(e) = store.revision().await {
        panic!("etcd is not reachable ({e}); run scripts/test, or eval \"$(scripts/services)\"");
    }
    Arc::new(store)
}

/// A key layout under a prefix no other test uses.
pub fn unique_keys(test: &str) -> Keys {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    Keys::new(&format!(
        "/rtm-test/{test}-{}-{n}-{nanos}",
        std::process::id()
    ))
    .expect("test prefix is valid")
}

/// Deletes everything under the test's prefix.
pub async fn wipe(store: &dyn Store, keys: &Keys) {
    let txn = rtm_core::store::Txn::new().delete_prefix(keys.root());
    store.txn(txn).await.expect("wipe test prefix");
}

/// The revision a document read from the store was written at (its resourceVersion): what
/// an update of it must expect.
pub fn revision_of(doc: &GameRuntime) -> Revision {
    doc.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("a stored document has a resourceVersion")
}

/// The ids of the controllers whose heartbeat key exists under `keys`.
pub async fn heartbeats(store: &dyn Store, keys: &Keys) -> Result<BTreeSet<String>, String> {
    let prefix = keys.controllers();
    let listing = store
        .list(&prefix, None)
        .await
        .map_err(|e| format!("list {prefix}: {e}"))?;
    Ok(listing
        .items
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(&prefix).map(str::to_owned))
        .collect())
}

/// Removes every `RTM_` variable of the caller's environment from `command`: nothing of the
/// caller's rtmanager settings may leak into a binary a test runs (scripts/services exports
/// `RTM_PREFIX=/rtmanager`, for one); only the test's own count.
pub fn without_rtm_env(command: &mut std::process::Command) -> &mut std::process::Command {
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("RTM_") {
            command.env_remove(&var);
        }
    }
    command
}

/// Starts `command` with no input and its output (both streams) appended to `log`, or fails
/// the test: "cannot start `what`".
pub(crate) fn spawn_logged(
    command: &mut std::process::Command,
    log: std::fs::File,
    what: &dyn std::fmt::Display,
) -> std::process::Child {
    use std::process::Stdio;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().expect("duplicate the log file handle"),
        ))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Awaits `future`, failing the test with `what` if it takes longer than
/// `limit`: every wait in a test names what it waited for.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}
