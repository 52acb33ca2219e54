//! What the write verbs (`restart`, `stop`, `start`) share: the request's ref and the
//! read-modify-write that carries it.
//!
//! Every write goes through [`Documents`](rtm_core::records::Documents) with optimistic concurrency
//! (re-read and retry on conflict) and carries the request annotations
//! (`rtmanager.dev/op-source: admin_cli`, `rtmanager.dev/source-ref: <ref>`), which the
//! controller records in the history of the operation it runs for the change.

use super::apply::{backoff, check_ref, generate_ref, landed, rv_of, stamp_request};
use super::client::Client;
use super::error::CliError;
use rtm_core::model::GameRuntime;
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
/// it back with the request annotations, re-reading and retrying when someone else wrote
/// first.
pub(crate) async fn modify(
    client: &Client,
    name: &str,
    source_ref: &str,
    attempts: u32,
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
