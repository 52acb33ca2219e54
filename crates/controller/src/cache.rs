//! The last-seen records of one etcd prefix, by name: the store behind the
//! desired-state and status caches. One writer (the prefix's
//! [`Mirror`](super::mirror::Mirror)), many cheap readers: a look hands out
//! an [`Arc`] of the record, never a copy of it.
//!
//! Readiness has two parts: *listed* (the first listing is in: a latch that
//! never opens again, what the workers wait for) and *following* (listed
//! and following the watch: false from a broken watch to the next relist,
//! while the copy may miss changes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

/// The records of a [`Cache`], by name.
pub(crate) type Records<T> = HashMap<String, Arc<T>>;

/// The last-seen records of one prefix, and whether they can be trusted.
#[derive(Debug)]
pub(crate) struct Cache<T> {
    records: RwLock<Records<T>>,
    listed: watch::Sender<bool>,
    following: AtomicBool,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self {
            records: RwLock::new(HashMap::new()),
            listed: watch::channel(false).0,
            following: AtomicBool::new(false),
        }
    }
}

impl<T> Cache<T> {
    /// The records, for a look at several at once. A writer that panicked
    /// left whole records behind (each is swapped in as one `Arc`), so a
    /// poisoned lock is read through.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Records<T>> {
        self.records
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The records, for the mirror's changes that must look before they
    /// write (a relist's swap, a revision-ordered put).
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, Records<T>> {
        self.records
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The record of `name` as last seen; `None` when there is none.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<T>> {
        self.read().get(name).cloned()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// The names that have a record.
    pub(crate) fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first listing is in.
    pub(crate) fn is_listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// Waits until the first listing is in.
    pub(crate) async fn wait_listed(&self) {
        let mut listed = self.listed.subscribe();
        // The sender lives as long as the cache, so waiting cannot fail.
        let _ = listed.wait_for(|listed| *listed).await;
    }

    /// Whether the records follow etcd now (listed, and the watch is up).
    pub(crate) fn is_following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// A listing is in and the watch follows it.
    pub(crate) fn set_following(&self) {
        self.following.store(true, Ordering::Release);
        self.listed.send_replace(true);
    }

    /// The watch ended: until the next listing, changes may be missed.
    pub(crate) fn set_broken(&self) {
        self.following.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_shares_the_record_instead_of_copying_it() {
        let cache = Cache::default();
        cache
            .write()
            .insert("g1".to_owned(), Arc::new(String::from("a document")));
        let first = cache.get("g1").expect("cached");
        let second = cache.get("g1").expect("cached");
        assert!(Arc::ptr_eq(&first, &second));
        cache.write().remove("g1");
        assert_eq!(cache.get("g1"), None);
        assert_eq!(*first, "a document", "a look outlives the record's removal");
    }

    #[tokio::test]
    async fn listed_is_a_latch_and_following_ends_with_the_watch() {
        let cache: Cache<()> = Cache::default();
        assert!(!cache.is_listed() && !cache.is_following());
        cache.set_following();
        tokio::time::timeout(std::time::Duration::from_secs(1), cache.wait_listed())
            .await
            .expect("listed");
        cache.set_broken();
        assert!(cache.is_listed(), "once listed, always listed");
        assert!(!cache.is_following());
    }
}
