//! The watch of a [`Client`] over several prefixes that rides out etcd outages: it
//! reconnects with backoff, resumes where it was, and relists only when that revision was
//! compacted.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;

use super::Client;
use crate::error::{CliError, one_line};
use crate::output::{note, warn};
use rtm_core::store::{KeyValue, Listing, Revision, StoreError, WatchBatch, WatchEvent};

/// What a [`MultiWatch`] yields.
#[derive(Debug)]
pub(crate) enum WatchItem {
    /// Changes after the last listing or batch.
    Batch(WatchBatch),
    /// The revisions the watch would resume from were compacted away, so it listed every
    /// prefix afresh (in the order given) and watches on from there: the caller compares the
    /// listing with what it knew.
    Relisted(Vec<Listing>),
}

/// A watch over several prefixes from one listing revision that rides out etcd going away:
/// when a stream breaks (a lost connection, etcd restarted) it says so on stderr and
/// reconnects with backoff, resuming each prefix just after the last revision it delivered,
/// so no change is lost and none is told twice; only when those revisions were compacted
/// meanwhile does it relist. It never gives up by itself: the caller's deadline or Ctrl-C
/// ends it.
pub(crate) struct MultiWatch<'s> {
    client: &'s Client,
    prefixes: Vec<String>,
    /// Per prefix, the revision delivered last (at first: the listing's).
    seen: Vec<Revision>,
    streams: SelectAll<TaggedStream>,
    /// Set while the streams are broken and not yet reopened (`true`: relist, the revisions
    /// to resume from are compacted). Kept here, not in a local, so that a caller that drops
    /// a pending [`MultiWatch::next`] (a `select!` with a timer) resumes the reconnecting.
    broken: Option<bool>,
    /// The pause before the next reconnect attempt.
    pause: Duration,
}

/// One prefix's stream, tagged with the prefix's index and ended by a `None` item, so the
/// end of a stream (which [`SelectAll`] would swallow) is seen as a break.
type TaggedStream =
    futures::stream::BoxStream<'static, (usize, Option<Result<WatchBatch, StoreError>>)>;

/// First pause before reconnecting a broken watch, doubled per failed attempt up to
/// [`RECONNECT_MAX`], each with up to as much jitter: a restarting etcd (a second or two)
/// is back at the second or third attempt, and a long outage costs one attempt every ~10 s.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(8);

impl std::fmt::Debug for MultiWatch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiWatch")
            .field("prefixes", &self.prefixes)
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl<'s> MultiWatch<'s> {
    /// Lists every prefix at one revision and watches them from the next one.
    pub(crate) async fn start(
        client: &'s Client,
        prefixes: Vec<String>,
    ) -> Result<(MultiWatch<'s>, Vec<Listing>, Revision), CliError> {
        MultiWatch::start_at(client, prefixes, None).await
    }

    /// Like [`MultiWatch::start`], but lists at revision `at` (when given and not compacted
    /// yet), so the watch then delivers every change made after `at`: a waiter that wrote at
    /// `at` sees every later revision of the keys it follows.
    pub(crate) async fn start_at(
        client: &'s Client,
        prefixes: Vec<String>,
        at: Option<Revision>,
    ) -> Result<(MultiWatch<'s>, Vec<Listing>, Revision), CliError> {
        let mut watch = MultiWatch {
            client,
            seen: vec![0; prefixes.len()],
            prefixes,
            streams: SelectAll::new(),
            broken: None,
            pause: RECONNECT_FIRST,
        };
        let listed = match client.list_at(&watch.prefixes, at).await {
            // Too old to list at: what happened since is lost; start from now.
            Err(StoreError::Compacted { .. }) if at.is_some() => {
                client.list_at(&watch.prefixes, None).await
            }
            other => other,
        };
        let (listings, revision) = listed.map_err(|e| {
            client.store_error(e, &format!("listing {}", watch.prefixes.join(", ")))
        })?;
        watch.seen = vec![revision; watch.prefixes.len()];
        if let Err(e) = watch.connect().await {
            return Err(client.store_error(e, &format!("watching {}", watch.prefixes.join(", "))));
        }
        Ok((watch, listings, revision))
    }

    /// (Re)opens every prefix's stream just after what it delivered last.
    async fn connect(&mut self) -> Result<(), StoreError> {
        let mut streams = SelectAll::new();
        for (i, prefix) in self.prefixes.iter().enumerate() {
            let stream = self.client.store.watch(prefix, self.seen[i] + 1).await?;
            let tagged: TaggedStream = stream
                .map(move |item| (i, Some(item)))
                .chain(futures::stream::once(async move { (i, None) }))
                .boxed();
            streams.push(tagged);
        }
        self.streams = streams;
        Ok(())
    }

    /// Lists every prefix afresh and watches on from there.
    async fn relist(&mut self) -> Result<Vec<Listing>, StoreError> {
        let (listings, revision) = self.client.list_at(&self.prefixes, None).await?;
        self.seen = vec![revision; self.prefixes.len()];
        self.connect().await?;
        Ok(listings)
    }

    /// The next change, or a fresh listing after the old revisions were compacted. Waits
    /// through etcd outages (with a notice on stderr when one starts and when it ends).
    /// Cancel-safe: dropping the future loses nothing.
    pub(crate) async fn next(&mut self) -> Result<WatchItem, CliError> {
        if self.broken.is_none() {
            let (why, compacted) = match self.streams.next().await {
                Some((i, Some(Ok(batch)))) => {
                    if let Some(last) = batch.iter().map(WatchEvent::mod_revision).max() {
                        self.seen[i] = self.seen[i].max(last);
                    }
                    return Ok(WatchItem::Batch(batch));
                }
                Some((_, Some(Err(StoreError::Compacted { .. })))) => (
                    "the revisions to resume from were compacted".to_owned(),
                    true,
                ),
                Some((_, Some(Err(e)))) => (one_line(&e.to_string()), false),
                Some((_, None)) | None => ("the stream ended".to_owned(), false),
            };
            warn(&format!("watch interrupted: {why}; reconnecting"));
            self.broken = Some(compacted);
            self.pause = RECONNECT_FIRST;
        }
        loop {
            let attempt = if self.broken == Some(true) {
                self.relist().await.map(Some)
            } else {
                self.connect().await.map(|()| None)
            };
            match attempt {
                Ok(listings) => {
                    self.broken = None;
                    note(&format!(
                        "watch resumed{}",
                        if listings.is_some() {
                            " after relisting (older revisions were compacted)"
                        } else {
                            ""
                        }
                    ));
                    return Ok(match listings {
                        Some(listings) => WatchItem::Relisted(listings),
                        // The new streams deliver what happened meanwhile.
                        None => WatchItem::Batch(Vec::new()),
                    });
                }
                Err(StoreError::Compacted { .. }) => self.broken = Some(true),
                Err(StoreError::PermissionDenied { message }) => {
                    return Err(self
                        .client
                        .store_error(StoreError::PermissionDenied { message }, "watching"));
                }
                Err(_) => {}
            }
            let jitter = self.pause.mul_f64(rand::random::<f64>());
            tokio::time::sleep(self.pause + jitter).await;
            self.pause = (self.pause * 2).min(RECONNECT_MAX);
        }
    }
}

/// The keys under each watched prefix, as last seen, kept up to date from a [`MultiWatch`].
#[derive(Debug)]
pub(crate) struct Known {
    prefixes: Vec<String>,
    maps: Vec<BTreeMap<String, KeyValue>>,
}

impl Known {
    pub(crate) fn new(prefixes: Vec<String>, listings: &[Listing]) -> Known {
        let mut known = Known {
            prefixes,
            maps: Vec::new(),
        };
        known.relist(listings);
        known
    }

    pub(crate) fn relist(&mut self, listings: &[Listing]) {
        self.maps = listings
            .iter()
            .map(|l| {
                l.items
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.clone()))
                    .collect()
            })
            .collect();
    }

    /// Takes in what the watch yielded.
    pub(crate) fn update(&mut self, item: WatchItem) {
        match item {
            WatchItem::Batch(batch) => {
                for event in &batch {
                    let Some(map) = self
                        .prefixes
                        .iter()
                        .position(|p| event.key().starts_with(p.as_str()))
                        .and_then(|i| self.maps.get_mut(i))
                    else {
                        continue;
                    };
                    match event {
                        WatchEvent::Put(kv) => {
                            map.insert(kv.key.clone(), kv.clone());
                        }
                        WatchEvent::Delete { key, .. } => {
                            map.remove(key);
                        }
                    }
                }
            }
            WatchItem::Relisted(listings) => self.relist(&listings),
        }
    }

    /// The keys under each prefix, in the prefixes' order.
    pub(crate) fn maps(&self) -> &[BTreeMap<String, KeyValue>] {
        &self.maps
    }

    /// The keys as listings, in the prefixes' order.
    pub(crate) fn listings(&self) -> Vec<Listing> {
        self.maps
            .iter()
            .map(|map| Listing {
                items: map.values().cloned().collect(),
                revision: 0,
            })
            .collect()
    }
}
