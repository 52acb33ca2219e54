//! The wait engine behind `wait` and the verbs' `--wait`: it follows one game's keys
//! (document, status, and when asked history and lease) through a [`MultiWatch`] and hands
//! every change to a [`Waiter`], until the waiter is satisfied, the deadline passes or the
//! user interrupts.

use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, MultiWatch, WatchItem};
use crate::error::CliError;
use crate::output::note;
use rtm_core::store::{KeyValue, Keys, Listing, Revision, WatchEvent};

/// How long `restart --wait` waits for its restart to begin before it looks at who holds the
/// game's lease and says so (once): longer than a usual operation of another request holds it.
const LEASE_NOTICE_AFTER: Duration = Duration::from_secs(5);

/// A shared deadline for one command's waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// The deadline `total` from now.
    pub(crate) fn after(total: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + total,
            total,
        }
    }
}

/// Which of a game's keys an observation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Doc,
    Status,
    History,
    Lease,
}

/// What [`wait_for`] follows besides the document and the status.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Follow {
    /// The game's history entries.
    pub(crate) history: bool,
    /// Start at this revision (the waiter's own write), so every later revision of each key
    /// is observed, not only the newest.
    pub(crate) from: Option<Revision>,
    /// The game's lease key; the waiter is asked for a notice about it now and then
    /// ([`Waiter::lease_notice`]).
    pub(crate) lease: bool,
}

/// Decides from a game's keys, as they change, whether the wait is over.
pub(crate) trait Waiter {
    /// `kv` is the key's new value (`None`: absent or deleted). `Ok(Some(line))` ends the wait
    /// with a last line to print.
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError>;

    /// A line for stderr about the game's lease when the wait seems held up by it.
    fn lease_notice(&mut self) -> Option<String> {
        None
    }
}

/// One wait: whose keys to follow, what ends it, and what to say when it does not end.
pub(crate) struct Wait<'w> {
    pub(crate) client: &'w Client,
    /// The game.
    pub(crate) name: &'w str,
    pub(crate) follow: Follow,
    pub(crate) waiter: &'w mut dyn Waiter,
    pub(crate) deadline: Deadline,
    /// What is waited for, as the timeout and interrupt messages name it.
    pub(crate) what: String,
    /// What to do next, ending those messages.
    pub(crate) hint: String,
    /// Where the waiter's progress and the last line go.
    pub(crate) out: &'w mut dyn Write,
    pub(crate) interrupt: &'w CancellationToken,
}

/// Follows one game's document, status (and history, lease) keys until the waiter is
/// satisfied, the deadline passes or the user interrupts; prints the waiter's last line.
pub(crate) async fn wait_for(wait: Wait<'_>) -> Result<(), CliError> {
    let Wait {
        client,
        name,
        follow,
        waiter,
        deadline,
        what,
        hint,
        out,
        interrupt,
    } = wait;
    let keys = GameKeys::new(client.keys(), name, follow);
    // The keys are read once whatever the deadline (`--timeout 0s` checks once); only the
    // watch that follows runs against it.
    let started = tokio::select! {
        started = start(client, &keys, waiter, out) => started,
        () = interrupt.cancelled() => Err(CliError::Interrupted { what: what.clone(), hint: hint.clone() }),
    };
    let result: Result<String, CliError> = match started {
        Err(error) => Err(error),
        Ok(Started::Done(done)) => Ok(done),
        Ok(Started::Watching(watch)) => tokio::select! {
            result = tokio::time::timeout_at(deadline.at, follow_keys(&keys, watch, waiter, out)) => {
                match result {
                    Ok(result) => result,
                    Err(_) => Err(CliError::Timeout {
                        what,
                        after: humantime::format_duration(deadline.total).to_string(),
                        hint,
                    }),
                }
            }
            () = interrupt.cancelled() => Err(CliError::Interrupted { what, hint }),
        },
    };
    let done = match result {
        // A wait held up by someone else's lease says whose, in its last line too.
        Err(CliError::Timeout { what, after, hint }) if follow.lease => {
            let hint = match waiter.lease_notice() {
                Some(notice) => format!("{notice}; {hint}"),
                None => hint,
            };
            return Err(CliError::Timeout { what, after, hint });
        }
        other => other?,
    };
    writeln!(out, "{done}")?;
    out.flush()?;
    Ok(())
}

/// The keys of the game a wait follows, and which is which.
struct GameKeys {
    doc: String,
    status: String,
    history: String,
    lease: String,
    follow: Follow,
}

impl GameKeys {
    fn new(keys: &Keys, name: &str, follow: Follow) -> GameKeys {
        GameKeys {
            doc: keys.gameruntime(name),
            status: keys.status(name),
            history: keys.history(name),
            lease: keys.lease(name),
            follow,
        }
    }

    /// Listing order: document, status, then history and lease when followed.
    fn prefixes(&self) -> Vec<String> {
        let mut prefixes = vec![self.doc.clone(), self.status.clone()];
        if self.follow.history {
            prefixes.push(self.history.clone());
        }
        if self.follow.lease {
            prefixes.push(self.lease.clone());
        }
        prefixes
    }

    fn classify(&self, key: &str) -> Option<Which> {
        if key == self.doc {
            Some(Which::Doc)
        } else if key == self.status {
            Some(Which::Status)
        } else if self.follow.history && key.starts_with(&self.history) {
            Some(Which::History)
        } else if self.follow.lease && key == self.lease {
            Some(Which::Lease)
        } else {
            // The prefix of g1 also covers g10's keys.
            None
        }
    }
}

/// What the first look at a wait's keys found.
enum Started<'c> {
    /// The wait is already over: its last line.
    Done(String),
    /// Not yet: the watch that follows the keys from there.
    Watching(MultiWatch<'c>),
}

/// Lists the keys (from the waiter's own write, when given) and hands them to the waiter.
async fn start<'c>(
    client: &'c Client,
    keys: &GameKeys,
    waiter: &mut dyn Waiter,
    out: &mut dyn Write,
) -> Result<Started<'c>, CliError> {
    let (watch, listings, _) =
        MultiWatch::start_at(client, keys.prefixes(), keys.follow.from).await?;
    Ok(match feed_listing(keys, &listings, waiter, out)? {
        Some(done) => Started::Done(done),
        None => Started::Watching(watch),
    })
}

/// Watches the keys until the waiter says the wait is over.
async fn follow_keys(
    keys: &GameKeys,
    mut watch: MultiWatch<'_>,
    waiter: &mut dyn Waiter,
    out: &mut dyn Write,
) -> Result<String, CliError> {
    let mut lease_check = keys
        .follow
        .lease
        .then(|| Instant::now() + LEASE_NOTICE_AFTER);
    loop {
        let item = match lease_check {
            Some(at) => tokio::select! {
                item = watch.next() => item?,
                () = tokio::time::sleep_until(at) => {
                    lease_check = tell_lease(waiter, at);
                    continue;
                }
            },
            None => watch.next().await?,
        };
        if let Some(done) = feed_item(keys, &item, waiter, out)? {
            return Ok(done);
        }
    }
}

/// Asks the waiter for a notice about the lease and prints it; the time of the next check
/// (`None`: told once, no more checks).
fn tell_lease(waiter: &mut dyn Waiter, at: Instant) -> Option<Instant> {
    match waiter.lease_notice() {
        Some(notice) => {
            note(&format!("note: {notice}"));
            None
        }
        None => Some(at + LEASE_NOTICE_AFTER),
    }
}

/// Hands one watch item to the waiter: each change of a followed key, or a fresh listing.
fn feed_item(
    keys: &GameKeys,
    item: &WatchItem,
    waiter: &mut dyn Waiter,
    out: &mut dyn Write,
) -> Result<Option<String>, CliError> {
    match item {
        WatchItem::Batch(batch) => {
            for event in batch {
                let Some(which) = keys.classify(event.key()) else {
                    continue;
                };
                let kv = match event {
                    WatchEvent::Put(kv) => Some(kv),
                    WatchEvent::Delete { .. } => None,
                };
                if let Some(done) = waiter.observe(which, kv, out)? {
                    return Ok(Some(done));
                }
            }
            Ok(None)
        }
        WatchItem::Relisted(listings) => feed_listing(keys, listings, waiter, out),
    }
}

/// Hands a listing to the waiter: the document, the status and the lease (present or not),
/// then every history entry.
fn feed_listing(
    keys: &GameKeys,
    listings: &[Listing],
    waiter: &mut dyn Waiter,
    out: &mut dyn Write,
) -> Result<Option<String>, CliError> {
    let find = |key: &str| {
        listings
            .iter()
            .flat_map(|l| l.items.iter())
            .find(|kv| kv.key == key)
            .cloned()
    };
    for (which, key) in [(Which::Doc, &keys.doc), (Which::Status, &keys.status)]
        .into_iter()
        .chain(keys.follow.lease.then_some((Which::Lease, &keys.lease)))
    {
        if let Some(done) = waiter.observe(which, find(key).as_ref(), out)? {
            return Ok(Some(done));
        }
    }
    for kv in listings.iter().flat_map(|l| l.items.iter()) {
        if keys.classify(&kv.key) == Some(Which::History)
            && let Some(done) = waiter.observe(Which::History, Some(kv), out)?
        {
            return Ok(Some(done));
        }
    }
    Ok(None)
}

/// A key as the waiters' tests feed it.
#[cfg(test)]
pub(crate) fn key_value(key: &str, value: Vec<u8>, mod_revision: Revision) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        create_revision: mod_revision,
        mod_revision,
        version: 1,
        lease: 0,
    }
}
