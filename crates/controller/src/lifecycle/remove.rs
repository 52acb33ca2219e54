//! remove: stop the game's container, `docker rm` it, and clear its status
//! (the history stays, bounded). What the controller runs when a document
//! is deleted.

use crate::lease::GameLease;
use rtm_core::error_code::ErrorCode;
use rtm_core::model::OpKind;
use rtm_core::records::history::Appended;

use super::{Lifecycle, OpRequest, OpResult, StatusChange, new_id};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Removes the game's container and status under its own lease.
    pub async fn remove(&self, request: &OpRequest) -> OpResult {
        self.with_lease(OpKind::Remove, request, async |lease: &GameLease| {
            self.remove_under(lease, request).await
        })
        .await
    }

    /// Removes under a lease the caller holds.
    pub(crate) async fn remove_under(&self, lease: &GameLease, request: &OpRequest) -> OpResult {
        let op_id = lease.op_id();
        let mut op = match self.begin(lease, OpKind::Remove, request, op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        let result = self.remove_steps(lease, request, &mut op).await;
        self.conclude(lease, op, result).await
    }

    async fn remove_steps(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        op: &mut Appended,
    ) -> Result<StatusChange, Failure> {
        let inner = OpRequest {
            source_ref: if request.source_ref.is_empty() {
                op.entry.op_id.clone()
            } else {
                request.source_ref.clone()
            },
            ..request.clone()
        };
        op.entry.source_ref = inner.source_ref.clone();
        // Looked at before the stop: a container that had exited by itself leaves its
        // last output behind (one the stop ends does not).
        let exited = self
            .current_container(lease.game())
            .await
            .ok()
            .flatten()
            .filter(|c| c.state.has_exited());
        let stop = self.stop_under(lease, &inner, &new_id()).await;
        op.entry.container_id_before = stop.container_id.clone();
        if !stop.is_success() {
            return Err(Failure::new(
                stop.error_code.unwrap_or(ErrorCode::Internal),
                format!(
                    "inner stop failed: {}",
                    stop.error_message.unwrap_or_default()
                ),
            ));
        }
        lease.check()?;
        if let Some(exited) = exited.filter(|c| stop.container_id.as_ref() == Some(&c.id)) {
            self.keep_previous(lease, &exited, None, &mut op.entry)
                .await;
        }
        if let Some(id) = &stop.container_id {
            self.remove_container(id, true).await.map_err(|e| {
                Failure::caused_by(
                    ErrorCode::ServiceUnavailable,
                    format!("docker remove: {e}"),
                    e,
                )
            })?;
        }
        self.remove_volumes(lease.game(), stop.container.as_ref(), &mut op.entry)
            .await;
        self.release_host_ports(lease).await?;
        Ok(StatusChange::Clear)
    }
}

impl Lifecycle {
    /// Stops (as its `spec.lifecycle` says) and removes the game's container
    /// on this Docker host without touching its status: the game now belongs
    /// to another node (its `spec.node` changed), which records its own
    /// status. Without this the game would run twice.
    pub(crate) async fn evict_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        reason: &str,
    ) -> OpResult {
        let op_id = lease.op_id();
        let mut op = match self.begin(lease, OpKind::Remove, request, op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        op.entry.note = Some(reason.to_owned());
        let result = async {
            let Some(container) = self.current_container(lease.game()).await? else {
                return self.release_host_ports(lease).await;
            };
            op.entry.container_id_before = Some(container.id.clone());
            op.entry.image_ref = container.image.clone();
            lease.check()?;
            if container.is_alive() {
                self.evict_stop(lease, request, &container, &mut op.entry)
                    .await?;
            } else if container.state.has_exited() {
                self.keep_previous(lease, &container, None, &mut op.entry)
                    .await;
            }
            self.remove_container(&container.id, true)
                .await
                .map_err(|e| {
                    Failure::caused_by(
                        ErrorCode::ServiceUnavailable,
                        format!("docker remove: {e}"),
                        e,
                    )
                })?;
            self.release_host_ports(lease).await
        }
        .await;
        self.close_entry(lease, op, result).await
    }
}

impl Lifecycle {
    /// The graceful stop before an eviction's forced removal. Best effort:
    /// without the document (etcd failed) it stops with the defaults, and
    /// a failed stop is noted, as the removal kills what is left anyway.
    async fn evict_stop(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        container: &crate::runtime::ContainerInfo,
        entry: &mut rtm_core::records::history::HistoryEntry,
    ) -> Result<(), Failure> {
        let doc = self.document(request).await.ok().flatten();
        let (lifecycle, timeout) = match &doc {
            Some(doc) => (doc.spec.lifecycle.clone(), doc.spec.stop_timeout),
            None => (
                rtm_core::model::Lifecycle::default(),
                rtm_core::model::defaults::DEFAULT_STOP_TIMEOUT,
            ),
        };
        match self
            .stop_gracefully(lease, container, &lifecycle, timeout, entry)
            .await
        {
            Err(failure) if failure.code == ErrorCode::LeaseLost => Err(failure),
            Err(failure) => {
                super::graceful::add_note(
                    entry,
                    &format!(
                        "the stop failed ({}); the container was removed by force",
                        failure.message
                    ),
                );
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }
}
