//! What `edit`, `label`, `annotate` and `patch` share with `apply`: the changed document is
//! read back through the parser as a file given to apply would be (unknown fields, validation,
//! defaults, size limits), planned against the live one with apply's [`plan`] (status and the
//! store's bookkeeping are never written, an empty `spec.restartToken` keeps the live one),
//! checked for host ports, stamped with the request annotations and written with a compare on
//! the revision read: re-reading and redoing the change when someone else wrote first, unless
//! the caller pinned the revision (then the lost race is a conflict, exit 5).

use super::apply::{
    Action, WRITE_ATTEMPTS, backoff, check_host_ports, landed, plan, rv_of, stale, stamp_request,
};
use super::client::Client;
use super::error::CliError;
use super::input::{Input, parse_error};
use rtm_core::model::parse::parse_documents;
use rtm_core::model::{GameRuntime, Timestamp};
use rtm_core::records::documents::DocumentError;
use rtm_core::store::Revision;

/// How one read-modify-write goes.
#[derive(Debug, Clone)]
pub(crate) struct Write<'a> {
    /// The game.
    pub(crate) name: &'a str,
    /// The request's correlation id, stamped on the write.
    pub(crate) source_ref: &'a str,
    /// Do every check, read and compare, but write nothing.
    pub(crate) dry_run: bool,
    /// The revision the live document must be at (`--resource-version`, the one an edit
    /// began from): a change since is a conflict, not redone.
    pub(crate) expected: Option<Revision>,
}

/// What a read-modify-write did.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    /// [`Action::Configured`] (written, or would be with `dry_run`) or [`Action::Unchanged`].
    pub(crate) action: Action,
    /// The live document the change was made to (the last one read).
    pub(crate) live: GameRuntime,
    /// The document as stored after the write (as it would be stored, with `dry_run`; the
    /// live one when unchanged).
    pub(crate) doc: GameRuntime,
}

/// Reads exactly one GameRuntime from `text` the way apply reads a file (`source` names it in
/// errors).
pub(crate) fn parse_one(text: &str, source: &str) -> Result<GameRuntime, CliError> {
    let mut docs = parse_documents(text).map_err(|e| parse_error(source, &e))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        found => Err(CliError::invalid(format!(
            "{source}: holds {found} documents; it must hold the one game (nothing was written)"
        ))),
    }
}

/// Checks a changed document as apply checks a file's: through its YAML and the parser.
pub(crate) fn recheck(doc: &GameRuntime, source: &str) -> Result<GameRuntime, CliError> {
    parse_one(&rtm_core::model::parse::to_yaml(doc), source)
}

/// Reads the game, makes `change` to it (which answers the whole changed document, checked
/// with [`parse_one`] or [`recheck`]) and writes the result as apply would.
pub(crate) async fn read_modify_write(
    client: &Client,
    write: &Write<'_>,
    mut change: impl FnMut(&GameRuntime) -> Result<GameRuntime, CliError>,
) -> Result<Done, CliError> {
    let name = write.name;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = client.require(name).await?;
        let Some(current) = rv_of(&live) else {
            return Err(CliError::internal(format!(
                "gameruntime/{name} was read without a resourceVersion; this is a bug"
            )));
        };
        if let Some(expected) = write.expected
            && expected != current
        {
            return Err(stale(name, expected, current));
        }
        let changed = change(&live)?;
        if changed.metadata.name != name {
            return Err(CliError::invalid(format!(
                "gameruntime/{name}: metadata.name cannot change (to {:?}); to copy the game, \
                 save it with `rtctl get {name} -o yaml`, rename it there and apply the file \
                 (nothing was written)",
                changed.metadata.name
            )));
        }
        let (action, mut desired) = plan(&changed, Some(&live), Timestamp::now());
        if action == Action::Unchanged {
            return Ok(Done {
                action,
                doc: live.clone(),
                live,
            });
        }
        if desired.spec != live.spec {
            let input = Input {
                doc: desired.clone(),
                source: format!("gameruntime/{name}"),
                index: 1,
            };
            check_host_ports(client, std::slice::from_ref(&input)).await?;
        }
        if write.dry_run {
            desired.metadata.resource_version = live.metadata.resource_version.clone();
            desired.metadata.generation = live.metadata.generation;
            return Ok(Done {
                action,
                live,
                doc: desired,
            });
        }
        stamp_request(&mut desired, write.source_ref);
        match client.update(&desired, current).await {
            Ok(doc) => return Ok(Done { action, live, doc }),
            Err(DocumentError::Conflict { .. }) if write.expected.is_some() => {
                let now = client.get(name).await?.as_ref().and_then(rv_of);
                return Err(stale(name, current, now.unwrap_or_default()));
            }
            Err(e @ DocumentError::Conflict { .. }) => {
                if attempt >= WRITE_ATTEMPTS {
                    return Err(client.doc_error(e, &format!("writing gameruntime/{name}")));
                }
                backoff(attempt).await;
            }
            Err(DocumentError::Store(e)) if e.outcome_unknown() => {
                if let Some(doc) = landed(client, &desired, write.source_ref).await {
                    return Ok(Done { action, live, doc });
                }
                return Err(client.store_error(e, &format!("writing gameruntime/{name}")));
            }
            Err(e) => return Err(client.doc_error(e, &format!("writing gameruntime/{name}"))),
        }
    }
}

/// A `--resource-version` value.
pub(crate) fn parse_revision(text: &str) -> Result<Revision, CliError> {
    text.parse().map_err(|_| {
        CliError::usage(format!(
            "--resource-version {text:?} is not a number; copy metadata.resourceVersion from \
             `rtctl get NAME -o yaml`"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::store::Keys;
    use std::sync::Arc;
    use std::time::Duration;

    async fn client_with_g1() -> Client {
        let store = Arc::new(rtm_core::store::memory::MemoryStore::new());
        let client = Client::new(
            store,
            Keys::default(),
            "memory".into(),
            Duration::from_secs(1),
        );
        let doc = parse_one(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n\
             spec:\n  image: rtmanager-test/engine:1\n",
            "g1.yaml",
        )
        .unwrap();
        client.create(&doc).await.unwrap();
        client
    }

    /// A change that, the first time it runs, lets another writer label the game first.
    fn racing_change(
        client: &Client,
        calls: &std::cell::Cell<u32>,
    ) -> impl FnMut(&GameRuntime) -> Result<GameRuntime, CliError> {
        move |live| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                let mut other = live.clone();
                other.metadata.labels.insert("other".into(), "1".into());
                let rv = rv_of(live).unwrap();
                futures::executor::block_on(client.update(&other, rv)).unwrap();
            }
            let mut doc = live.clone();
            doc.metadata.labels.insert("mine".into(), "1".into());
            recheck(&doc, "gameruntime/g1")
        }
    }

    #[tokio::test]
    async fn a_lost_race_is_redone_on_the_new_document_keeping_both_changes() {
        let client = client_with_g1().await;
        let calls = std::cell::Cell::new(0);
        let write = Write {
            name: "g1",
            source_ref: "REQ-1",
            dry_run: false,
            expected: None,
        };
        let done = read_modify_write(&client, &write, racing_change(&client, &calls))
            .await
            .unwrap();
        assert_eq!(done.action, Action::Configured);
        assert_eq!(calls.get(), 2, "read, changed and written again");
        let stored = client.require("g1").await.unwrap();
        assert_eq!(stored.metadata.labels["other"], "1");
        assert_eq!(stored.metadata.labels["mine"], "1");
    }

    #[tokio::test]
    async fn a_pinned_revision_makes_a_lost_race_a_conflict_and_writes_nothing_of_ours() {
        let client = client_with_g1().await;
        let pinned = rv_of(&client.require("g1").await.unwrap());
        let calls = std::cell::Cell::new(0);
        let write = Write {
            name: "g1",
            source_ref: "REQ-1",
            dry_run: false,
            expected: pinned,
        };
        let error = read_modify_write(&client, &write, racing_change(&client, &calls))
            .await
            .unwrap_err();
        assert_eq!(
            error.exit_code(),
            super::super::error::exit::CONFLICT,
            "{error}"
        );
        let stored = client.require("g1").await.unwrap();
        assert!(!stored.metadata.labels.contains_key("mine"));
        assert_eq!(stored.metadata.labels["other"], "1");
    }

    #[tokio::test]
    async fn a_dry_run_checks_and_writes_nothing() {
        let client = client_with_g1().await;
        let before = client.require("g1").await.unwrap();
        let write = Write {
            name: "g1",
            source_ref: "REQ-1",
            dry_run: true,
            expected: None,
        };
        let done = read_modify_write(&client, &write, |live| {
            let mut doc = live.clone();
            doc.spec.image = "rtmanager-test/engine:2".into();
            recheck(&doc, "gameruntime/g1")
        })
        .await
        .unwrap();
        assert_eq!(done.action, Action::Configured);
        assert_eq!(done.doc.spec.image, "rtmanager-test/engine:2");
        assert_eq!(client.require("g1").await.unwrap(), before);
        let invalid = read_modify_write(&client, &write, |live| {
            let mut doc = live.clone();
            doc.spec.image = String::new();
            recheck(&doc, "gameruntime/g1")
        })
        .await
        .unwrap_err();
        assert_eq!(invalid.exit_code(), 3, "{invalid}");
    }
}
