//! What the write verbs (`restart`, `stop`, `start`) share: the request's ref and the
//! read-modify-write that carries it.
//!
//! Every write goes through [`Documents`](rtm_core::records::Documents) with optimistic concurrency
//! (re-read and retry on conflict) and carries the request annotations
//! (`rtmanager.dev/op-source: admin_cli`, `rtmanager.dev/source-ref: <ref>`), which the
//! controller records in the history of the operation it runs for the change.
//!
//! `--force` (restart, stop) also sets `rtmanager.dev/force-disruption` to the generation the
//! write creates, so that change, and only it, goes past the game's session and its budgets;
//! any write without `--force` drops an annotation left by an earlier one.

use super::apply::{backoff, check_ref, generate_ref, landed, rv_of, stamp_request};
use super::client::Client;
use super::error::CliError;
use super::output::note;
use super::session::with_ref;
use rtm_core::model::{ANNOTATION_FORCE, GameRuntime};
use rtm_core::records::documents::DocumentError;

/// How long the verbs' `--wait` waits unless told otherwise.
pub(crate) const DEFAULT_ACTION_TIMEOUT: &str = "2m";

/// A written (or already right) document.
pub(crate) struct Modified {
    /// The document as stored after the write (or as read, when nothing changed).
    pub(crate) doc: GameRuntime,
    /// Whether the change was written (false: the document already said so).
    pub(crate) changed: bool,
}

/// Reads the game, lets `change` edit it (returning whether it changed anything) and writes
/// it back with the request annotations (and, with `force`, the force annotation naming the
/// generation the write makes), re-reading and retrying when someone else wrote first.
pub(crate) async fn modify(
    client: &Client,
    name: &str,
    source_ref: &str,
    attempts: u32,
    force: bool,
    mut change: impl FnMut(&mut GameRuntime) -> bool,
) -> Result<Modified, CliError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut doc = client.require(name).await?;
        let Some(rv) = rv_of(&doc) else {
            return Err(CliError::internal(format!(
                "gameruntime/{name} was read without a resourceVersion; this is a bug"
            )));
        };
        if !change(&mut doc) {
            return Ok(Modified {
                doc,
                changed: false,
            });
        }
        stamp_request(&mut doc, source_ref);
        if force {
            force_generation(&mut doc);
        }
        match client.update(&doc, rv).await {
            Ok(written) => {
                return Ok(Modified {
                    doc: written,
                    changed: true,
                });
            }
            Err(e @ DocumentError::Conflict { .. }) => {
                if attempt >= attempts {
                    return Err(client.doc_error(e, &format!("writing gameruntime/{name}")));
                }
                backoff(attempt).await;
            }
            Err(DocumentError::Store(e)) if e.outcome_unknown() => {
                if let Some(live) = landed(client, &doc, source_ref).await {
                    return Ok(Modified {
                        doc: live,
                        changed: true,
                    });
                }
                return Err(client.store_error(e, &format!("writing gameruntime/{name}")));
            }
            Err(e) => return Err(client.doc_error(e, &format!("writing gameruntime/{name}"))),
        }
    }
}

/// The `--ref` given (checked), or a generated one naming the verb.
pub(crate) fn request_ref(given: &Option<String>, what: &str) -> Result<String, CliError> {
    match given {
        Some(source_ref) => {
            check_ref(source_ref)?;
            Ok(source_ref.clone())
        }
        None => Ok(generate_ref(what)),
    }
}

/// Marks a document about to be written (read at its current generation) so that the change
/// the write makes is forced: the annotation names the generation the write creates. The
/// write compares the resourceVersion read with the generation, so the number is exact.
pub(crate) fn force_generation(doc: &mut GameRuntime) {
    let next = doc.metadata.generation.unwrap_or(0) + 1;
    doc.metadata
        .annotations
        .insert(ANNOTATION_FORCE.to_owned(), next.to_string());
}

/// Whether the document's force annotation names its own generation (a forced change still
/// in force).
pub(crate) fn forced(doc: &GameRuntime) -> bool {
    let generation = doc.metadata.generation.map(|g| g.to_string());
    generation.is_some() && doc.metadata.annotations.get(ANNOTATION_FORCE) == generation.as_ref()
}

/// After a voluntary disruption was requested without `--force`: tells the user when the game
/// is in session, so the change waits (`what`: "the restart", "the stop").
pub(crate) async fn tell_if_in_session(
    client: &Client,
    name: &str,
    what: &str,
) -> Result<(), CliError> {
    let session = client
        .sessions()
        .get(name)
        .await
        .map_err(|e| client.session_error(e, &format!("reading the session of {name}")))?;
    if let Some(session) = session.value.filter(|s| s.is_allocated()) {
        note(&format!(
            "{name} is in session{}: {what} waits for the session to end (condition \
             UpdatePending); --force ends the match now",
            with_ref(session.reference.as_deref())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;

    #[test]
    fn force_names_the_generation_the_write_creates() {
        let mut doc = game("g1").build();
        doc.metadata.generation = Some(4);
        force_generation(&mut doc);
        assert_eq!(doc.metadata.annotations[ANNOTATION_FORCE], "5");
        assert!(!forced(&doc), "generation 4 is not the forced one");
        doc.metadata.generation = Some(5);
        assert!(forced(&doc));
    }

    #[test]
    fn a_write_without_force_drops_a_stale_force_annotation() {
        let mut doc = game("g1").build();
        doc.metadata
            .annotations
            .insert(ANNOTATION_FORCE.to_owned(), "3".to_owned());
        stamp_request(&mut doc, "REQ-1");
        assert!(!doc.metadata.annotations.contains_key(ANNOTATION_FORCE));
    }
}
