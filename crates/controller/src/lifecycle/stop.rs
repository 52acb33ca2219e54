//! stop: the game's container stopped as its `spec.lifecycle` says (preStop
//! command, shutdown delay, stop signal; graceful.rs), SIGKILL at its
//! stopTimeout; the stopped container stays (a later start replaces it).

use crate::failpoint;
use crate::lease::GameLease;
use rtm_core::error_code::ErrorCode;
use rtm_core::model::defaults::DEFAULT_STOP_TIMEOUT;
use rtm_core::model::{OpKind, Phase};
use rtm_core::records::history::HistoryEntry;

use super::{Lifecycle, OpRequest, OpResult, StatusChange, effective_hostname};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Stops the game's container under its own lease.
    pub async fn stop(&self, request: &OpRequest) -> OpResult {
        self.with_lease(OpKind::Stop, request, async |lease: &GameLease| {
            self.stop_under(lease, request, lease.op_id()).await
        })
        .await
    }

    /// Stops the game's container under a lease the caller holds (a
    /// restart's inner stop, a remove).
    pub(crate) async fn stop_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        op_id: &str,
    ) -> OpResult {
        let mut op = match self.begin(lease, OpKind::Stop, request, op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        let result = self.stop_steps(lease, request, &mut op.entry).await;
        self.conclude(lease, op, result).await
    }

    async fn stop_steps(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        entry: &mut HistoryEntry,
    ) -> Result<StatusChange, Failure> {
        let game = lease.game();
        // The document may be gone (a remove stops what is left): the
        // container is still stopped, with the default timeout.
        let doc = self.document(request).await?;
        let (timeout, hostname, lifecycle) = match &doc {
            Some(doc) => (
                doc.spec.stop_timeout,
                effective_hostname(doc),
                doc.spec.lifecycle.clone(),
            ),
            None => (DEFAULT_STOP_TIMEOUT, game.to_owned(), Default::default()),
        };
        let ours = match self.current_container(game).await {
            Ok(found) => found,
            // Someone else's container holds the game's name: nothing of
            // ours runs, so nothing is stopped (a remove can then finish),
            // and theirs is never touched.
            Err(failure) if failure.code == ErrorCode::Conflict => None,
            Err(failure) => return Err(failure),
        };
        let Some(container) = ours else {
            // Nothing runs: stopped already.
            return Ok(StatusChange::Set {
                phase: Phase::Stopped,
                container: None,
                hostname,
                probed: false,
            });
        };
        entry.container_id_before = Some(container.id.clone());
        entry.container_id_after = Some(container.id.clone());
        entry.image_ref = container.image.clone();
        lease.check()?;
        // A paused container is stopped too (Docker stops it as it is).
        if container.is_alive() {
            self.stop_gracefully(lease, &container, &lifecycle, timeout, entry)
                .await?;
            failpoint::hit("stop.after_stop");
        } else {
            self.skip_pre_stop(&lifecycle, &container, entry);
        }
        let stopped = self.reinspect(&container.id).await.unwrap_or(container);
        Ok(StatusChange::Set {
            phase: Phase::Stopped,
            container: Some(stopped.into()),
            hostname,
            probed: false,
        })
    }

    /// The container as it is now (exit code after a stop), if readable.
    pub(super) async fn reinspect(&self, id: &str) -> Option<crate::runtime::ContainerInfo> {
        self.runtime.inspect_container(id).await.ok().flatten()
    }
}

/// Compile-time check that the default stays a whole number of seconds, as
/// Docker's stop API takes seconds.
const _: () = assert!(DEFAULT_STOP_TIMEOUT.subsec_nanos() == 0);
