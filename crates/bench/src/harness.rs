//! What every scenario uses: the etcd connection and a unique key prefix
//! per run, the real Docker engine (checked for the test image) or a
//! simulated one, documents written in bulk, a watch over the run's whole
//! prefix (it counts etcd writes by revision and tracks status records),
//! counting decorators around the store and the container runtime, the
//! controller run in-process, RSS, and clean-up of keys and containers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use rtm_controller::config::ControllerConfig;
use rtm_controller::metrics::Metrics;
use rtm_controller::runtime::instrumented::Instrumented;
use rtm_controller::runtime::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerSpec, DockerRuntime, FakeRuntime,
    ImageInfo, RuntimeError, RuntimeOp,
};
use rtm_core::model::{GameRuntime, GameRuntimeStatus, Phase, parse_documents, to_yaml};
use rtm_core::records::status;
use rtm_core::store::etcd::{DEFAULT_ENDPOINT, EtcdConfig, EtcdStore};
use rtm_core::store::{
    Keys, LeaseGrant, LeaseId, Listing, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent,
    WatchStream,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// The image every scenario runs (built by scripts/build-test-image).
pub(crate) const IMAGE: &str = "rtmanager-test/engine:1";

/// Every run's keys live under this; containers carry it in their prefix
/// label, which is how leftovers of a killed run are recognised.
const ROOT: &str = "/rtm-bench";

/// Cancelled by Ctrl-C: scenarios stop waiting and clean up.
pub(crate) fn interrupted() -> &'static CancellationToken {
    static TOKEN: OnceLock<CancellationToken> = OnceLock::new();
    TOKEN.get_or_init(CancellationToken::new)
}

pub(crate) fn error(message: impl Into<String>) -> Error {
    message.into().into()
}

/// The etcd endpoints every binary reads: `RTM_ETCD_ENDPOINTS`
/// (comma-separated), else etcd's default.
pub(crate) fn endpoints() -> Vec<String> {
    std::env::var("RTM_ETCD_ENDPOINTS")
        .unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned())
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect()
}

/// A client of the etcd at [`endpoints`] (not yet asked anything).
pub(crate) async fn connect_etcd() -> Result<EtcdStore> {
    Ok(EtcdStore::connect(&EtcdConfig::new(endpoints())).await?)
}

/// The real Docker engine, checked to answer and to hold [`IMAGE`].
pub(crate) async fn real_docker() -> Result<Arc<dyn ContainerRuntime>> {
    let docker: Arc<dyn ContainerRuntime> =
        Arc::new(DockerRuntime::connect(None, Duration::from_secs(60)).await?);
    docker.ping().await?;
    if docker.inspect_image(IMAGE).await?.is_none() {
        return Err(error(format!(
            "{IMAGE} is missing: run scripts/build-test-image"
        )));
    }
    Ok(docker)
}

/// A simulated Docker holding [`IMAGE`], `latency` per call, whose call
/// log is emptied every second for as long as the returned task runs: the
/// fake logs every call for tests, and at a benchmark's scale that log
/// would be the biggest thing in memory (our counters count instead).
pub(crate) fn simulated_docker(latency: Duration) -> (FakeRuntime, tokio::task::JoinHandle<()>) {
    let fake = FakeRuntime::new();
    fake.add_image(IMAGE);
    let trimmer = {
        let fake = fake.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                fake.clear_calls();
            }
        })
    };
    (fake.with_latency(latency), trimmer)
}

/// One scenario's etcd connection and key prefix.
#[derive(Debug, Clone)]
pub(crate) struct Bench {
    pub(crate) store: Arc<EtcdStore>,
    pub(crate) keys: Keys,
    /// `bench-<pid>-<tag>`: the start of every game name of this scenario.
    pub(crate) game_prefix: String,
}

impl Bench {
    /// Connects to etcd (`RTM_ETCD_ENDPOINTS`) and picks a prefix no other
    /// run uses: `/rtm-bench/<scenario>-<pid>-<unix seconds>`.
    pub(crate) async fn new(scenario: &str, tag: &str) -> Result<Bench> {
        let store = connect_etcd().await?;
        let revision = store.revision().await.map_err(|e| {
            error(format!(
                "etcd is not reachable ({e}); run eval \"$(scripts/services)\" first"
            ))
        })?;
        // Every run starts from a compacted etcd: the revisions earlier runs
        // left behind (hourly auto-compaction) slowed etcd's requests
        // 15-fold here (62 ms against 3.9 ms mean at 10,000 games), which
        // would measure etcd's history rather than the controller.
        match store.compact(revision).await {
            // Nothing was written since the last compaction.
            Ok(()) | Err(StoreError::Compacted { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let pid = std::process::id();
        let keys = Keys::new(&format!("{ROOT}/{scenario}-{pid}-{secs}"))?;
        Ok(Bench {
            store: Arc::new(store),
            keys,
            game_prefix: format!("bench-{pid}-{tag}"),
        })
    }

    pub(crate) fn game(&self, i: usize) -> String {
        format!("{}{i}", self.game_prefix)
    }

    /// Deletes every key of this run.
    pub(crate) async fn wipe(&self) -> Result<()> {
        delete_gently(self.store.as_ref(), &self.keys.root()).await
    }

    /// Removes this run's containers from `docker` and deletes its keys
    /// (both, even when the first fails).
    pub(crate) async fn clean_up(&self, docker: &dyn ContainerRuntime) -> Result<()> {
        let removed = remove_containers(docker, self.keys.prefix()).await;
        self.wipe().await?;
        removed.map(drop)
    }

    /// A `GameRuntime` the way a user writes it (defaults applied).
    pub(crate) fn doc(&self, name: &str) -> Result<GameRuntime> {
        game_doc(name)
    }

    /// Creates the documents, `concurrency` writes at a time; returns each
    /// game's resourceVersion (mod_revision) and the highest revision.
    pub(crate) async fn create_docs(
        &self,
        docs: Vec<GameRuntime>,
        concurrency: usize,
    ) -> Result<(HashMap<String, Revision>, Revision)> {
        let results: Vec<Result<(String, Revision)>> = futures::stream::iter(docs)
            .map(|doc| async move {
                let key = self.keys.gameruntime(&doc.metadata.name);
                let revision = self
                    .store
                    .create(&key, to_yaml(&doc).into_bytes(), None)
                    .await?;
                Ok((doc.metadata.name, revision))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut revisions = HashMap::new();
        let mut highest = 0;
        for result in results {
            let (name, revision) = result?;
            highest = highest.max(revision);
            revisions.insert(name, revision);
        }
        Ok((revisions, highest))
    }

    /// Replaces a document written at `expected`; returns its new revision.
    pub(crate) async fn update_doc(
        &self,
        doc: &GameRuntime,
        expected: Revision,
    ) -> Result<Revision> {
        let key = self.keys.gameruntime(&doc.metadata.name);
        Ok(self
            .store
            .update(&key, to_yaml(doc).into_bytes(), expected)
            .await?)
    }
}

/// A `GameRuntime` the way a user writes it (defaults applied).
pub(crate) fn game_doc(name: &str) -> Result<GameRuntime> {
    let yaml = format!(
        "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
         spec:\n  image: {IMAGE}\n  stopTimeout: 10s\n"
    );
    parse_documents(&yaml)?
        .pop()
        .ok_or_else(|| error("the document template parses to nothing"))
}

/// The default convergence test: Running, at the generation asked for.
pub(crate) fn running_at(
    generation: i64,
) -> impl Fn(&GameRuntimeStatus) -> bool + Send + Sync + 'static {
    move |status| status.phase == Phase::Running && status.observed_generation == Some(generation)
}

/// What the prefix watch has seen.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Revisions that changed a key under the prefix: etcd writes (one
    /// transaction, however many keys, is one revision).
    pub(crate) revisions: u64,
    last_revision: Revision,
    /// Keys put and deleted, by collection (`status`, `history`, ...).
    pub(crate) puts: BTreeMap<String, u64>,
    pub(crate) deletes: BTreeMap<String, u64>,
    /// The latest status of each game and when it arrived.
    pub(crate) statuses: HashMap<String, (GameRuntimeStatus, Instant)>,
    /// Games whose latest status passes the convergence test.
    converged: HashSet<String>,
    /// When the count of converged games first reached each value.
    pub(crate) converged_at: Vec<Instant>,
    /// Games whose lease key exists.
    pub(crate) leases: HashSet<String>,
    /// When each game's document was last seen written, at which revision.
    pub(crate) docs: HashMap<String, (Revision, Instant)>,
    pub(crate) last_event: Instant,
    pub(crate) failed: Option<String>,
}

impl Seen {
    pub(crate) fn converged(&self) -> usize {
        self.converged.len()
    }

    pub(crate) fn status(&self, game: &str) -> Option<&GameRuntimeStatus> {
        self.statuses.get(game).map(|(status, _)| status)
    }

    pub(crate) fn counts_json(&self) -> Value {
        json!({ "revisions": self.revisions, "puts": self.puts, "deletes": self.deletes })
    }
}

type Predicate = Box<dyn Fn(&GameRuntimeStatus) -> bool + Send + Sync>;

struct Shared {
    seen: Mutex<Seen>,
    changed: Notify,
    converged_when: Predicate,
}

/// A watch over a run's whole prefix.
pub(crate) struct PrefixWatch {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PrefixWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixWatch").finish_non_exhaustive()
    }
}

impl Drop for PrefixWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PrefixWatch {
    /// Watches everything under `keys.root()` from revision `from`.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        keys: &Keys,
        from: Revision,
        converged_when: impl Fn(&GameRuntimeStatus) -> bool + Send + Sync + 'static,
    ) -> Result<PrefixWatch> {
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen {
                revisions: 0,
                last_revision: 0,
                puts: BTreeMap::new(),
                deletes: BTreeMap::new(),
                statuses: HashMap::new(),
                converged: HashSet::new(),
                converged_at: Vec::new(),
                leases: HashSet::new(),
                docs: HashMap::new(),
                last_event: Instant::now(),
                failed: None,
            }),
            changed: Notify::new(),
            converged_when: Box::new(converged_when),
        });
        let mut stream = store.watch(&keys.root(), from).await?;
        let task = {
            let shared = shared.clone();
            let keys = keys.clone();
            tokio::spawn(async move {
                while let Some(batch) = stream.next().await {
                    let now = Instant::now();
                    let mut seen = lock(&shared.seen);
                    match batch {
                        Ok(events) => {
                            for event in events {
                                record(&shared, &mut seen, &keys, &event, now);
                            }
                        }
                        Err(e) => {
                            seen.failed = Some(e.to_string());
                            break;
                        }
                    }
                    drop(seen);
                    shared.changed.notify_waiters();
                }
                let mut seen = lock(&shared.seen);
                seen.failed.get_or_insert_with(|| "the watch ended".into());
                drop(seen);
                shared.changed.notify_waiters();
            })
        };
        Ok(PrefixWatch { shared, task })
    }

    /// Reads what was seen.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&lock(&self.shared.seen))
    }

    /// Waits until `done` holds (checked on every change), at most `limit`.
    pub(crate) async fn wait(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let seen = lock(&self.shared.seen);
                if done(&seen) {
                    return Ok(());
                }
                if let Some(failed) = &seen.failed {
                    return Err(error(format!(
                        "waiting for {what}: the watch failed: {failed}"
                    )));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(error(format!(
                    "timed out after {limit:?} waiting for {what}"
                )));
            }
            if interrupted().is_cancelled() {
                return Err(error(format!("interrupted while waiting for {what}")));
            }
            let wake = (deadline - now).min(Duration::from_millis(200));
            let _ = tokio::time::timeout(wake, notified).await;
        }
    }

    /// Waits until nothing under the prefix changed for `quiet`.
    pub(crate) async fn wait_quiet(&self, quiet: Duration, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let since = self.with(|seen| seen.last_event.elapsed());
            if since >= quiet {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(error(format!(
                    "the controller kept writing for {limit:?} (wanted {quiet:?} without a write)"
                )));
            }
            if interrupted().is_cancelled() {
                return Err(error("interrupted"));
            }
            tokio::time::sleep((quiet - since).max(Duration::from_millis(50))).await;
        }
    }
}

fn record(shared: &Shared, seen: &mut Seen, keys: &Keys, event: &WatchEvent, now: Instant) {
    seen.last_event = now;
    if event.mod_revision() != seen.last_revision {
        seen.last_revision = event.mod_revision();
        seen.revisions += 1;
    }
    let rest = event
        .key()
        .strip_prefix(keys.prefix())
        .unwrap_or(event.key())
        .trim_start_matches('/');
    let collection = rest.split('/').next().unwrap_or("").to_owned();
    match event {
        WatchEvent::Put(_) => *seen.puts.entry(collection).or_default() += 1,
        WatchEvent::Delete { .. } => *seen.deletes.entry(collection).or_default() += 1,
    }
    if let Some(game) = keys.name_of(&keys.statuses(), event.key()) {
        let game = game.to_owned();
        match event {
            WatchEvent::Put(kv) => {
                if let Ok(status) = status::decode(kv) {
                    if (shared.converged_when)(&status) {
                        if seen.converged.insert(game.clone()) {
                            seen.converged_at.push(now);
                        }
                    } else {
                        seen.converged.remove(&game);
                    }
                    seen.statuses.insert(game, (status, now));
                }
            }
            WatchEvent::Delete { .. } => {
                seen.converged.remove(&game);
                seen.statuses.remove(&game);
            }
        }
    } else if let Some(game) = keys.name_of(&keys.gameruntimes(), event.key()) {
        seen.docs
            .insert(game.to_owned(), (event.mod_revision(), now));
    } else if let Some(game) = keys.name_of(&keys.leases(), event.key()) {
        match event {
            WatchEvent::Put(_) => seen.leases.insert(game.to_owned()),
            WatchEvent::Delete { .. } => seen.leases.remove(game),
        };
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls and time spent, per method.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    calls: Mutex<BTreeMap<&'static str, (u64, Duration)>>,
}

impl Counters {
    fn add(&self, method: &'static str, took: Duration) {
        let mut calls = lock(&self.calls);
        let entry = calls.entry(method).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        lock(&self.calls).clone()
    }
}

/// `after - before`, per method, as JSON (calls and milliseconds).
pub(crate) fn counters_delta(
    before: &BTreeMap<&'static str, (u64, Duration)>,
    after: &BTreeMap<&'static str, (u64, Duration)>,
    per: f64,
) -> Value {
    let mut out = serde_json::Map::new();
    for (method, (calls, took)) in after {
        let (calls0, took0) = before.get(method).copied().unwrap_or_default();
        if calls - calls0 == 0 {
            continue;
        }
        out.insert(
            (*method).to_owned(),
            json!({
                "calls": (calls - calls0) as f64 / per,
                "ms": (*took - took0).as_secs_f64() * 1000.0 / per,
            }),
        );
    }
    Value::Object(out)
}

/// Keys deleted per transaction by [`delete_gently`], and the pause after
/// each: at most a few thousand deletions reach one of etcd's 100 ms
/// backend batches.
const DELETE_CHUNK: usize = 500;
const DELETE_PAUSE: Duration = Duration::from_millis(50);

/// Deletes every key under `prefix`, a few hundred per transaction with a
/// pause in between. One transaction deleting 100,000 keys left etcd 3.4
/// slower for every later request until it restarted: its backend read
/// buffer keeps the capacity of the largest write batch it ever held and
/// copies all of it for every read and every compared transaction (etcd's
/// pprof: 58 % of its CPU in `bucketBuffer.Copy` and the garbage
/// collection after it, BENCHMARKS.md).
pub(crate) async fn delete_gently(store: &dyn Store, prefix: &str) -> Result<()> {
    let keys: Vec<String> = store
        .list(prefix, None)
        .await?
        .items
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    for chunk in keys.chunks(DELETE_CHUNK) {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            continue;
        };
        // [first, last] with last's successor as the exclusive end.
        let txn = Txn::new().delete_range(first.clone(), format!("{last}\0"));
        store.txn(txn).await?;
        tokio::time::sleep(DELETE_PAUSE).await;
    }
    // Whatever was written meanwhile.
    store.txn(Txn::new().delete_prefix(prefix)).await?;
    Ok(())
}

/// A [`Store`] that counts and times every call of the store it wraps.
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn Store>,
    pub(crate) counters: Counters,
}

impl CountingStore {
    pub(crate) fn new(inner: Arc<dyn Store>) -> CountingStore {
        CountingStore {
            inner,
            counters: Counters::default(),
        }
    }

    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = std::result::Result<T, StoreError>>,
    ) -> std::result::Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.counters.add(method, started.elapsed());
        result
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn get(
        &self,
        key: &str,
    ) -> std::result::Result<Option<rtm_core::store::KeyValue>, StoreError> {
        self.timed("get", self.inner.get(key)).await
    }

    async fn list(
        &self,
        prefix: &str,
        at: Option<Revision>,
    ) -> std::result::Result<Listing, StoreError> {
        self.timed("list", self.inner.list(prefix, at)).await
    }

    async fn newest(
        &self,
        prefix: &str,
        limit: usize,
    ) -> std::result::Result<Vec<rtm_core::store::KeyValue>, StoreError> {
        self.timed("newest", self.inner.newest(prefix, limit)).await
    }

    async fn txn(&self, txn: Txn) -> std::result::Result<TxnOutcome, StoreError> {
        self.timed("txn", self.inner.txn(txn)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> std::result::Result<WatchStream, StoreError> {
        self.timed("watch", self.inner.watch(prefix, from)).await
    }

    async fn grant_lease(&self, ttl: Duration) -> std::result::Result<LeaseGrant, StoreError> {
        self.timed("grant_lease", self.inner.grant_lease(ttl)).await
    }

    async fn keep_alive(&self, lease: LeaseId) -> std::result::Result<Duration, StoreError> {
        self.timed("keep_alive", self.inner.keep_alive(lease)).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> std::result::Result<(), StoreError> {
        self.timed("revoke_lease", self.inner.revoke_lease(lease))
            .await
    }

    async fn revision(&self) -> std::result::Result<Revision, StoreError> {
        self.timed("revision", self.inner.revision()).await
    }

    async fn keys_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> std::result::Result<Vec<String>, StoreError> {
        self.timed("keys_from", self.inner.keys_from(prefix, from, limit))
            .await
    }

    async fn compact(&self, revision: Revision) -> std::result::Result<(), StoreError> {
        self.timed("compact", self.inner.compact(revision)).await
    }
}

/// A [`ContainerRuntime`] that counts the calls of the runtime it wraps,
/// and tells a waiting scenario when a game's container is first
/// inspected after it asked ([`CountingRuntime::arm`]): the first thing a
/// reconcile does with Docker, so "the start of its reconcile".
#[derive(Debug)]
pub(crate) struct CountingRuntime {
    inner: Arc<dyn ContainerRuntime>,
    pub(crate) counters: Counters,
    armed: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    inspects: AtomicU64,
}

impl CountingRuntime {
    pub(crate) fn new(inner: Arc<dyn ContainerRuntime>) -> CountingRuntime {
        CountingRuntime {
            inner,
            counters: Counters::default(),
            armed: Mutex::new(HashMap::new()),
            inspects: AtomicU64::new(0),
        }
    }

    /// Resolves with the time of the next inspect of `container`.
    pub(crate) fn arm(&self, container: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        lock(&self.armed).insert(container.to_owned(), tx);
        rx
    }

    /// Container inspects so far.
    pub(crate) fn inspects(&self) -> u64 {
        self.inspects.load(Ordering::Relaxed)
    }

    async fn timed<T>(
        &self,
        op: RuntimeOp,
        call: impl Future<Output = std::result::Result<T, RuntimeError>>,
    ) -> std::result::Result<T, RuntimeError> {
        let started = Instant::now();
        let result = call.await;
        self.counters.add(op.as_str(), started.elapsed());
        result
    }
}

#[async_trait]
impl ContainerRuntime for CountingRuntime {
    async fn ping(&self) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Ping, self.inner.ping()).await
    }

    async fn inspect_image(
        &self,
        image: &str,
    ) -> std::result::Result<Option<ImageInfo>, RuntimeError> {
        self.timed(RuntimeOp::InspectImage, self.inner.inspect_image(image))
            .await
    }

    async fn pull_image(
        &self,
        image: &str,
        credentials: Option<&rtm_controller::runtime::RegistryCredentials>,
        timeout: Duration,
    ) -> std::result::Result<ImageInfo, RuntimeError> {
        self.timed(
            RuntimeOp::PullImage,
            self.inner.pull_image(image, credentials, timeout),
        )
        .await
    }

    async fn registry_digest(
        &self,
        image: &str,
        credentials: Option<&rtm_controller::runtime::RegistryCredentials>,
        timeout: Duration,
    ) -> std::result::Result<String, RuntimeError> {
        self.timed(
            RuntimeOp::RegistryDigest,
            self.inner.registry_digest(image, credentials, timeout),
        )
        .await
    }

    async fn inspect_container(
        &self,
        name_or_id: &str,
    ) -> std::result::Result<Option<ContainerInfo>, RuntimeError> {
        let now = Instant::now();
        self.inspects.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = lock(&self.armed).remove(name_or_id) {
            let _ = tx.send(now);
        }
        self.timed(
            RuntimeOp::InspectContainer,
            self.inner.inspect_container(name_or_id),
        )
        .await
    }

    async fn create(&self, spec: &ContainerSpec) -> std::result::Result<String, RuntimeError> {
        self.timed(RuntimeOp::Create, self.inner.create(spec)).await
    }

    async fn start(&self, id: &str) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Start, self.inner.start(id)).await
    }

    async fn stop(&self, id: &str, timeout: Duration) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Stop, self.inner.stop(id, timeout))
            .await
    }

    async fn kill(&self, id: &str) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Kill, self.inner.kill(id)).await
    }

    async fn remove(&self, id: &str, force: bool) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Remove, self.inner.remove(id, force))
            .await
    }

    async fn unpause(&self, id: &str) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Unpause, self.inner.unpause(id)).await
    }

    async fn rename(&self, id: &str, name: &str) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Rename, self.inner.rename(id, name))
            .await
    }

    async fn list_managed(&self) -> std::result::Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_managed())
            .await
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> std::result::Result<rtm_controller::runtime::ExecOutcome, RuntimeError> {
        self.timed(RuntimeOp::Exec, self.inner.exec(id, command, timeout))
            .await
    }

    async fn exec_running(&self, exec_id: &str) -> std::result::Result<bool, RuntimeError> {
        self.timed(RuntimeOp::Exec, self.inner.exec_running(exec_id))
            .await
    }

    async fn last_output(
        &self,
        id: &str,
        max_bytes: usize,
    ) -> std::result::Result<String, RuntimeError> {
        self.timed(RuntimeOp::Logs, self.inner.last_output(id, max_bytes))
            .await
    }

    async fn inspect_volume(
        &self,
        name: &str,
    ) -> std::result::Result<Option<rtm_controller::runtime::VolumeInfo>, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.inspect_volume(name))
            .await
    }

    async fn create_volume(
        &self,
        spec: &rtm_controller::runtime::VolumeSpec,
    ) -> std::result::Result<rtm_controller::runtime::VolumeInfo, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.create_volume(spec))
            .await
    }

    async fn remove_volume(&self, name: &str) -> std::result::Result<(), RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.remove_volume(name))
            .await
    }

    async fn list_volumes(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> std::result::Result<Vec<rtm_controller::runtime::VolumeInfo>, RuntimeError> {
        self.timed(RuntimeOp::Volume, self.inner.list_volumes(labels))
            .await
    }

    async fn list_game(&self, game: &str) -> std::result::Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_game(game))
            .await
    }

    async fn list_labelled(
        &self,
        key: &str,
    ) -> std::result::Result<Vec<ContainerInfo>, RuntimeError> {
        self.timed(RuntimeOp::ListManaged, self.inner.list_labelled(key))
            .await
    }

    fn events(&self) -> BoxStream<'static, std::result::Result<ContainerEvent, RuntimeError>> {
        self.inner.events()
    }
}

/// The controller's configuration for a bench run: the run's prefix, a
/// free metrics port, node `bench`, plus `extra` flags.
pub(crate) fn controller_config(keys: &Keys, extra: &[&str]) -> Result<ControllerConfig> {
    let mut args = vec![
        "rtmanager",
        "--prefix",
        keys.prefix(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--node-name",
        "bench",
    ];
    args.extend_from_slice(extra);
    Ok(ControllerConfig::load(args)?)
}

/// The controller, run in this process by [`rtm_controller::run_with`].
#[derive(Debug)]
pub(crate) struct InProcess {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::result::Result<(), rtm_controller::ControllerError>>,
    pub(crate) metrics: Metrics,
}

impl InProcess {
    /// Starts it on `store` and `runtime`, the runtime wrapped as the
    /// controller's binary wraps Docker (its calls counted in the
    /// controller's own metrics).
    pub(crate) fn start(
        config: ControllerConfig,
        keys: &Keys,
        store: Arc<dyn Store>,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> InProcess {
        let metrics = Metrics::new();
        let runtime = Arc::new(Instrumented::new(runtime, metrics.clone()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(rtm_controller::run_with(
            config,
            keys.clone(),
            store,
            runtime,
            metrics.clone(),
            shutdown.clone(),
        ));
        InProcess {
            shutdown,
            task,
            metrics,
        }
    }

    /// Drains and stops it (SIGTERM's path).
    pub(crate) async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(120), self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(error("the controller did not stop within 120 s")),
        }
    }

    pub(crate) fn games_in(&self, phase: &str) -> i64 {
        self.metrics.games.with_label_values(&[phase]).get()
    }
}

/// `(VmRSS, VmHWM)` of a process in MiB (`None`: this process).
pub(crate) fn rss_mib(pid: Option<u32>) -> (f64, f64) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Force-removes every container whose prefix label starts with `prefix`.
pub(crate) async fn remove_containers(
    docker: &dyn ContainerRuntime,
    prefix: &str,
) -> Result<usize> {
    let doomed: Vec<ContainerInfo> = docker
        .list_managed()
        .await?
        .into_iter()
        .filter(|c| c.prefix().is_some_and(|p| p.starts_with(prefix)))
        .collect();
    let removed = futures::stream::iter(doomed)
        .map(|c| async move { docker.remove(&c.id, true).await.is_ok() })
        .buffer_unordered(8)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    Ok(removed)
}

/// Removes the containers of earlier runs that died before cleaning up
/// (their prefix names a process that no longer exists).
pub(crate) async fn remove_leftovers(docker: &dyn ContainerRuntime) -> Result<usize> {
    let stale: Vec<String> = docker
        .list_managed()
        .await?
        .into_iter()
        .filter_map(|c| c.prefix().map(str::to_owned))
        .filter(|p| p.starts_with(ROOT))
        .filter(|p| {
            // `/rtm-bench/<scenario>-<pid>-<secs>[-raw]`
            let parts: Vec<&str> = p.trim_end_matches("-raw").rsplit('-').collect();
            let pid = parts.get(1).and_then(|pid| pid.parse::<u32>().ok());
            pid.is_some_and(|pid| {
                pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut removed = 0;
    for prefix in stale {
        removed += remove_containers(docker, &prefix).await?;
    }
    Ok(removed)
}

/// Sleeps, unless interrupted.
pub(crate) async fn pause(d: Duration) -> Result<()> {
    tokio::select! {
        _ = interrupted().cancelled() => Err(error("interrupted")),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}
