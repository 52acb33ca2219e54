//! What the controller's unit tests stand on, built in one place: the
//! in-memory twins of etcd and Docker, a session of node `node-a` on them,
//! and a reconciler over a lifecycle (its document cache listed and empty).

use std::sync::Arc;
use std::time::Duration;

use rtm_core::records::Documents;
use rtm_core::store::Keys;
use rtm_core::store::memory::MemoryStore;

use crate::desired::DesiredCache;
use crate::lease::Session;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::placement::Ownership;
use crate::plan::Settings;
use crate::reconcile::Reconciler;
use crate::runtime::FakeRuntime;

/// The image every fixture's fake engine holds.
pub(crate) const IMAGE: &str = "rtmanager-test/engine:1";

/// The node the fixtures' controller runs on.
pub(crate) const NODE: &str = "node-a";

/// A session of `holder` on `store`, under the default prefix, with a TTL
/// no test outlives.
pub(crate) async fn session(store: Arc<MemoryStore>, holder: &str) -> Arc<Session> {
    Session::open(
        store,
        Keys::default(),
        holder,
        Duration::from_secs(15),
        Metrics::new(),
    )
    .await
    .expect("the in-memory store grants a session")
}

/// An in-memory etcd and Docker (holding [`IMAGE`]) and a session of
/// [`NODE`] on them.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) runtime: Arc<FakeRuntime>,
    pub(crate) session: Arc<Session>,
    pub(crate) metrics: Metrics,
    pub(crate) documents: Documents,
}

/// Fresh [`Parts`].
pub(crate) async fn parts() -> Parts {
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(FakeRuntime::new());
    runtime.add_image(IMAGE);
    Parts {
        session: session(store.clone(), NODE).await,
        documents: Documents::new(store.clone(), Keys::default()),
        store,
        runtime,
        metrics: Metrics::new(),
    }
}

/// A reconciler of [`NODE`] (which also takes unassigned games) over
/// `lifecycle`, and its document cache, listed and empty.
pub(crate) fn reconciler(
    lifecycle: Lifecycle,
    metrics: Metrics,
) -> (Arc<DesiredCache>, Reconciler) {
    let cache = Arc::new(DesiredCache::new());
    cache.set_ready();
    let sharding = Ownership::everything(NODE);
    let reconciler = Reconciler::new(
        lifecycle,
        cache.clone(),
        sharding,
        Settings::default(),
        metrics,
    );
    (cache, reconciler)
}

/// A reconciler of [`NODE`] on fresh [`Parts`], keeping `history_retention`
/// entries per game, with what its tests look at.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) runtime: Arc<FakeRuntime>,
    pub(crate) cache: Arc<DesiredCache>,
    pub(crate) documents: Documents,
    pub(crate) reconciler: Reconciler,
}

/// A fresh [`World`].
pub(crate) async fn world(history_retention: usize) -> World {
    let parts = parts().await;
    let lifecycle = Lifecycle::new(
        parts.runtime.clone(),
        parts.session,
        history_retention,
        parts.metrics.clone(),
    )
    .with_node(NODE);
    let (cache, reconciler) = reconciler(lifecycle, parts.metrics);
    World {
        store: parts.store,
        runtime: parts.runtime,
        cache,
        documents: parts.documents,
        reconciler,
    }
}

impl World {
    /// The same world, its reconciler changed by `change` (a builder step).
    pub(crate) fn with_reconciler(self, change: impl FnOnce(Reconciler) -> Reconciler) -> World {
        World {
            reconciler: change(self.reconciler),
            ..self
        }
    }

    /// Deletes the game's document in etcd and tells the cache.
    pub(crate) async fn delete(&self, name: &str) {
        self.documents
            .delete(name, None)
            .await
            .expect("the document is deleted");
        self.cache.apply(name.to_owned(), None);
    }

    /// Reconciles until the game needs nothing more (bounded).
    pub(crate) async fn converge(&self, name: &str) {
        for _ in 0..5 {
            match self
                .reconciler
                .reconcile(name)
                .await
                .expect("the reconcile succeeds")
            {
                Some(delay) if delay <= Duration::from_secs(2) => continue,
                _ => return,
            }
        }
    }
}
