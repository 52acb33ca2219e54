//! The history of a game's sessions: an `allocate` or `release` entry for each change the
//! controller sees of `sessions/<game>` (written by a matchmaker or `rtctl`, who may not
//! write the history themselves), and the end of a deleted game's session. No container
//! is touched; every write is fenced by the game's lease.

use rtm_core::failure::Failure;
use rtm_core::model::{OpKind, OpSource, Session};
use rtm_core::records::sessions::{DELETED, SessionRecord, UNREADABLE};
use rtm_core::store::{Compare, Txn};

use super::{Lifecycle, OpRequest, new_id};
use crate::lease::GameLease;

impl Lifecycle {
    /// Appends one finished entry per session change (`kind`, the session as it became,
    /// and a note), in order. The ref is the session's, the source what its writer
    /// claims (`admin_cli` for rtctl, else `api`).
    pub(crate) async fn record_sessions(
        &self,
        lease: &GameLease,
        game: &str,
        changes: &[(OpKind, Session, Option<String>)],
    ) -> Result<(), Failure> {
        for (kind, session, note) in changes {
            let source = match session.source.as_deref() {
                Some("admin_cli") => OpSource::AdminCli,
                Some("reconcile") => OpSource::Reconcile,
                _ => OpSource::Api,
            };
            let mut request = OpRequest::new(game, source)
                .with_source_ref(session.reference.clone().unwrap_or_default());
            let by_hand = matches!(session.source.as_deref(), Some(DELETED | UNREADABLE));
            if !by_hand && source != OpSource::Reconcile {
                request = request.claimed();
            }
            let note = match (session.source.as_deref(), note) {
                (Some(DELETED), _) => Some("the session record was deleted".to_owned()),
                (Some(UNREADABLE), _) => Some(
                    "the session record does not decode: the game counts as Allocated until it \
                     is fixed or deleted"
                        .to_owned(),
                ),
                (_, note) => note.clone(),
            };
            let mut entry = self.entry(*kind, &request, &new_id());
            entry.note = note;
            entry.container_id_before = session.container_id.clone();
            entry.container_id_after = session.container_id.clone();
            // An unreadable record has no time of its own: the entry says when it was seen.
            entry.started_at = match session.source.as_deref() {
                Some(UNREADABLE) => rtm_core::model::Timestamp::now(),
                _ => session.since,
            };
            entry.succeed();
            self.history
                .append(Some(lease.fence()), entry.clone())
                .await?;
            self.finished(&entry);
        }
        Ok(())
    }

    /// A deleted game's session ends with it: its record is deleted (if it is still the
    /// one seen) and, when it was Allocated, a release is recorded.
    pub(crate) async fn end_session_of_removed(
        &self,
        lease: &GameLease,
        game: &str,
        session: &SessionRecord,
    ) -> Result<(), Failure> {
        let Some(revision) = session.revision else {
            return Ok(());
        };
        let key = self.session.keys().session(game);
        let txn = Txn::new()
            .when(lease.fence().compare())
            .when(Compare::ModRevision {
                key: key.clone(),
                revision,
            })
            .delete(key);
        self.session.store().txn(txn).await?;
        if let Some(allocated) = session.value.as_ref().filter(|s| s.is_allocated()) {
            let ended = Session {
                state: rtm_core::model::SessionState::Idle,
                since: rtm_core::model::Timestamp::now(),
                source: Some("reconcile".to_owned()),
                ..allocated.clone()
            };
            let note = Some("the game was deleted, which ends its session".to_owned());
            self.record_sessions(lease, game, &[(OpKind::Release, ended, note)])
                .await?;
        }
        Ok(())
    }
}
