//! prepull: answers `rtctl prepull` requests (`prepulls/<id>`): for the listed games this
//! controller reconciles ([`Ownership::owns`]), pulls each distinct image once, a few at a
//! time, through the lifecycle's own pull (credentials, `--image-pull-timeout`, the
//! `ImagePulled` log line and event), and writes this node's answer
//! (`prepulls/<id>/nodes/<node>`) attached to the request's lease, so request and answers
//! expire together.
//!
//! A prepull never stops, starts or changes a container, and takes no game lease: it only
//! puts images on the Docker host. It follows the prefix with the one list-then-watch loop
//! ([`super::mirror`]), under the controller's etcd session (it is started and stopped
//! with the workers): a relist after an outage or a restart answers every request still
//! listed that has no answer of this node yet, and a request deleted meanwhile has its
//! pulls dropped and gets no answer (the answer's write compares the request's
//! create revision). A request that breaks the bounds of
//! [`rtm_core::records::prepulls`] (forged, oversized, not on a lease) is refused with a
//! warning, once, and nothing is done for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::desired::{Desired, DesiredCache};
use crate::lifecycle::Lifecycle;
use crate::lifecycle::image::run_digest;
use crate::metrics::Metrics;
use crate::mirror::{self, Mirror};
use crate::placement::Ownership;
use rtm_core::model::{ImageName, ImagePullPolicy, Timestamp};
use rtm_core::records::prepulls::{
    self, ImageAnswer, MAX_IMAGES, NodeAnswer, PrepullKey, PrepullRequest, Prepulls, PullOutcome,
};
use rtm_core::store::{KeyValue, Keys, Revision, Store, StoreError, WatchEvent};

/// Pulls at once per controller, over all requests: a prepull warms the host without
/// taking all of its link (or the registry) from the games' own pulls.
const PULLS_AT_ONCE: usize = 3;

/// How often a request waits for the first listing of the documents (at start-up).
const CACHE_POLL: Duration = Duration::from_millis(100);

/// Attempts to write an answer while etcd fails; with the reconnect backoff they span about
/// a minute, well within a request's lease (rtctl's `--timeout` plus a margin).
const ANSWER_ATTEMPTS: u32 = 8;

/// Follows `prepulls/` and answers the requests until `stop` (the session's end).
pub(crate) async fn run(
    lifecycle: Lifecycle,
    cache: Arc<DesiredCache>,
    sharding: Ownership,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let prepuller = Prepuller::new(lifecycle, cache, sharding);
    mirror::run(&prepuller, &metrics, stop).await;
    // Dropping the prepuller drops its tasks: their pulls stop with the session.
}

/// What answers prepull requests on this node.
pub(crate) struct Prepuller {
    shared: Arc<Shared>,
    /// The requests taken up (or refused), by id: the create revision of the request, and
    /// its task while it runs. A request seen again at the same revision (a relist) is not
    /// taken up again.
    work: Mutex<HashMap<String, (Revision, Option<AbortHandle>)>>,
    tasks: Mutex<JoinSet<()>>,
}

/// What every request's task needs.
struct Shared {
    lifecycle: Lifecycle,
    cache: Arc<DesiredCache>,
    sharding: Ownership,
    records: Prepulls,
    store: Arc<dyn Store>,
    keys: Keys,
    pulls: Semaphore,
}

impl std::fmt::Debug for Prepuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepuller")
            .field("node", &self.shared.sharding.node)
            .finish_non_exhaustive()
    }
}

impl Prepuller {
    pub(crate) fn new(lifecycle: Lifecycle, cache: Arc<DesiredCache>, sharding: Ownership) -> Self {
        let session = lifecycle.session();
        let (store, keys) = (session.store().clone(), session.keys().clone());
        Prepuller {
            shared: Arc::new(Shared {
                records: Prepulls::new(store.clone(), keys.clone()),
                store,
                keys,
                lifecycle,
                cache,
                sharding,
                pulls: Semaphore::new(PULLS_AT_ONCE),
            }),
            work: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    fn node(&self) -> &str {
        &self.shared.sharding.node
    }

    /// Takes up the request stored at `kv` (id `id`) unless it already was, or this node
    /// answered it already.
    fn take_up(&self, id: &str, kv: &KeyValue, answered: bool) {
        let mut work = self.work.lock().expect("prepull work lock poisoned");
        if work
            .get(id)
            .is_some_and(|(created, _)| *created == kv.create_revision)
        {
            return;
        }
        if let Some((_, Some(task))) = work.remove(id) {
            // The same id created again: the old request is gone.
            task.abort();
        }
        if answered {
            work.insert(id.to_owned(), (kv.create_revision, None));
            return;
        }
        let request = match prepulls::decode_request(kv) {
            Ok(request) => request,
            Err(error) => {
                warn!(%error, "a prepull request is refused; nothing is pulled for it");
                work.insert(id.to_owned(), (kv.create_revision, None));
                return;
            }
        };
        info!(
            id,
            requester = %request.requester,
            games = request.games.len(),
            image = request.image.as_deref().unwrap_or("(each game's own)"),
            "prepull requested"
        );
        let shared = self.shared.clone();
        let (id_owned, created, lease) = (id.to_owned(), kv.create_revision, kv.lease);
        let task = self
            .tasks
            .lock()
            .expect("prepull tasks lock poisoned")
            .spawn(async move { shared.answer(&id_owned, created, lease, request).await });
        work.insert(id.to_owned(), (kv.create_revision, Some(task)));
    }

    /// The request `id` is gone: its pulls stop, and it is forgotten.
    fn drop_request(&self, id: &str) {
        let removed = self
            .work
            .lock()
            .expect("prepull work lock poisoned")
            .remove(id);
        if let Some((_, Some(task))) = removed {
            if !task.is_finished() {
                info!(id, "the prepull request was deleted; its pulls stop");
            }
            task.abort();
        }
    }

    /// Forgets finished tasks (their results are in etcd).
    fn reap(&self) {
        let mut tasks = self.tasks.lock().expect("prepull tasks lock poisoned");
        while tasks.try_join_next().is_some() {}
    }
}

impl Mirror for Prepuller {
    type Error = StoreError;

    fn what(&self) -> &'static str {
        "prepulls"
    }

    fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    fn prefix(&self) -> String {
        self.shared.keys.prepulls()
    }

    async fn relist(&self) -> Result<Revision, StoreError> {
        let keys = &self.shared.keys;
        let listing = self.shared.store.list(&keys.prepulls(), None).await?;
        let mut requests = BTreeMap::new();
        let mut answered = std::collections::HashSet::new();
        for kv in &listing.items {
            match PrepullKey::of(keys, &kv.key) {
                Some(PrepullKey::Request(id)) => {
                    requests.insert(id.to_owned(), kv);
                }
                Some(PrepullKey::Answer(id, node)) if node == self.node() => {
                    answered.insert(id.to_owned());
                }
                _ => {}
            }
        }
        let known: Vec<String> = self
            .work
            .lock()
            .expect("prepull work lock poisoned")
            .keys()
            .cloned()
            .collect();
        for id in known.iter().filter(|id| !requests.contains_key(*id)) {
            self.drop_request(id);
        }
        for (id, kv) in requests {
            self.take_up(&id, kv, answered.contains(&id));
        }
        self.reap();
        Ok(listing.revision)
    }

    async fn apply(&self, batch: Vec<WatchEvent>) {
        for event in batch {
            let keys = &self.shared.keys;
            match (&event, PrepullKey::of(keys, event.key())) {
                (WatchEvent::Put(kv), Some(PrepullKey::Request(id))) => self.take_up(id, kv, false),
                (WatchEvent::Delete { .. }, Some(PrepullKey::Request(id))) => self.drop_request(id),
                _ => {}
            }
        }
        self.reap();
    }
}

/// One distinct image of a request, and the covered games it is for.
#[derive(Debug)]
struct Wanted {
    image: String,
    first_game: String,
    /// Every game it is for says `imagePullPolicy: Never`.
    never: bool,
}

impl Shared {
    /// Pulls what `request` asks of this node and writes the answer.
    async fn answer(&self, id: &str, created: Revision, lease: i64, request: PrepullRequest) {
        while !self.cache.is_ready() {
            tokio::time::sleep(CACHE_POLL).await;
        }
        let (wanted, games, note) = self.wanted(&request);
        if games.is_empty() {
            info!(id, "no game of the prepull request runs on this node");
            return;
        }
        let images = futures::future::join_all(wanted.iter().map(|w| self.pull(w))).await;
        let answer = NodeAnswer {
            node: self.sharding.node.clone(),
            images,
            games,
            note,
            finished_at: Timestamp::now(),
        };
        let mut backoff = Backoff::reconnect();
        for attempt in 1..=ANSWER_ATTEMPTS {
            match self.records.answer(id, created, lease, &answer).await {
                Ok(true) => {
                    info!(id, images = answer.images.len(), "prepull answered");
                    return;
                }
                Ok(false) => {
                    info!(
                        id,
                        "the prepull request went before its answer; none written"
                    );
                    return;
                }
                Err(error @ prepulls::PrepullError::Store(StoreError::PermissionDenied { .. })) => {
                    warn!(id, %error, "this controller may not answer prepull requests: its etcd role needs readwrite on prepulls/ (scripts/etcd-roles)");
                    return;
                }
                Err(error) if attempt < ANSWER_ATTEMPTS => {
                    let delay = backoff.next_delay();
                    warn!(id, %error, retry_in = ?delay, "writing the prepull answer failed");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => warn!(id, %error, "writing the prepull answer failed; giving up"),
            }
        }
    }

    /// The distinct images to pull for the games of `request` this node reconciles (at most
    /// [`MAX_IMAGES`]), the games covered, and a note on what was left out.
    fn wanted(&self, request: &PrepullRequest) -> (Vec<Wanted>, Vec<String>, Option<String>) {
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut games = Vec::new();
        let mut left_out = 0usize;
        for game in &request.games {
            let Some(desired) = self.cache.get(game) else {
                continue;
            };
            let Desired::Valid(doc) = desired.as_ref() else {
                continue;
            };
            if !self.sharding.owns(&doc.metadata.name) {
                continue;
            }
            let image = request.image.as_deref().unwrap_or(&doc.spec.image);
            let never = doc.spec.image_pull_policy == ImagePullPolicy::Never;
            if let Some(w) = wanted.iter_mut().find(|w| w.image == image) {
                w.never &= never;
            } else if wanted.len() < MAX_IMAGES {
                wanted.push(Wanted {
                    image: image.to_owned(),
                    first_game: game.clone(),
                    never,
                });
            } else {
                left_out += 1;
                continue;
            }
            games.push(game.clone());
        }
        let note = (left_out > 0).then(|| {
            format!(
                "{left_out} games left out: their images come after the first {MAX_IMAGES} \
                 distinct images"
            )
        });
        (wanted, games, note)
    }

    /// Pulls one image (unless every game it is for says Never), a few at a time.
    async fn pull(&self, wanted: &Wanted) -> ImageAnswer {
        let image = &wanted.image;
        let skipped = |message: String| ImageAnswer {
            image: image.clone(),
            outcome: PullOutcome::Skipped,
            error_code: None,
            message: Some(message),
            digest: None,
            took_ms: 0,
        };
        if wanted.never {
            return skipped(format!(
                "imagePullPolicy Never (gameruntime/{} and any other game of it): not pulled",
                wanted.first_game
            ));
        }
        if ImageName::parse(image).is_none() {
            return skipped(format!(
                "{image} is an image id, not a repository: there is nothing to pull"
            ));
        }
        let Ok(_permit) = self.pulls.acquire().await else {
            return skipped("the controller is stopping".to_owned());
        };
        let started = Instant::now();
        let pulled = self.lifecycle.pull(&wanted.first_game, image, false).await;
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match pulled {
            Ok(info) => ImageAnswer {
                image: image.clone(),
                outcome: PullOutcome::Pulled,
                error_code: None,
                message: None,
                digest: Some(run_digest(image, &info)),
                took_ms,
            },
            Err(failure) => ImageAnswer::failed(image, failure.code, &failure.message, took_ms),
        }
    }
}

#[cfg(test)]
mod tests;
