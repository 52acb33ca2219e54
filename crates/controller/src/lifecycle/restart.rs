//! restart: a recreate under ONE outer lease — inner stop, `docker rm`,
//! inner start with the current image. The hostname stays; the container
//! id changes. The outer entry and the inner stop and start entries share
//! one correlation id (the request's source_ref, or a generated one), and
//! every failure branch keeps the Go service's error code.

use crate::failpoint;
use crate::lease::GameLease;
use rtm_core::error_code::ErrorCode;
use rtm_core::model::{OpKind, Phase};
use rtm_core::records::history::Appended;

use super::{Lifecycle, OpRequest, OpResult, StatusChange, new_id};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Restarts the game as a recreate.
    pub async fn restart(&self, request: &OpRequest) -> OpResult {
        self.with_lease(OpKind::Restart, request, async |lease: &GameLease| {
            self.restart_under(lease, request).await
        })
        .await
    }

    /// Restarts under a lease the caller holds; the outer entry takes the
    /// lease's operation id.
    pub(crate) async fn restart_under(&self, lease: &GameLease, request: &OpRequest) -> OpResult {
        let op_id = lease.op_id();
        let mut outer = match self.begin(lease, OpKind::Restart, request, op_id).await {
            Ok(outer) => outer,
            Err(rejected) => return rejected,
        };
        // The record is checked before the correlation id exists: these
        // failures keep the request's own source_ref, as in the Go service.
        let doc = match self.restart_record(lease, request).await {
            Ok(doc) => doc,
            Err(failure) => return self.conclude(lease, outer, Err(failure)).await,
        };
        // Never stop a working container before its replacement can be
        // created: without its host ports or its image, the old one keeps
        // running.
        outer.entry.image_ref = doc.spec.image.clone();
        let ready = match self.require_host_ports(lease, &doc).await {
            Ok(_) => {
                let policy = doc.spec.image_pull_policy;
                self.prepare_image(lease.game(), &doc.spec.image, policy, false)
                    .await
            }
            Err(failure) => Err(failure),
        };
        let image_id = match ready {
            Ok(ready) => ready.id,
            Err(failure) => return self.conclude(lease, outer, Err(failure)).await,
        };

        let correlation = if request.source_ref.is_empty() {
            new_id()
        } else {
            request.source_ref.clone()
        };
        outer.entry.source_ref = correlation.clone();
        let inner = OpRequest {
            source_ref: correlation,
            image_ready: true,
            ..request.clone()
        };
        let result = self
            .recreate(lease, &inner, &mut outer, &doc, &image_id)
            .await;
        self.conclude(lease, outer, result).await
    }

    /// Loads what a restart needs: the document (missing → `not_found`, or
    /// `conflict` when the game was removed) and its image.
    async fn restart_record(
        &self,
        lease: &GameLease,
        request: &OpRequest,
    ) -> Result<rtm_core::model::GameRuntime, Failure> {
        let game = lease.game();
        let status = lease.status(&self.status).await?;
        let Some(doc) = self.document(request).await? else {
            return Err(if status.exists() {
                Failure::new(
                    ErrorCode::Conflict,
                    format!("runtime for game {game:?} is removed; cannot restart"),
                )
            } else {
                Failure::new(
                    ErrorCode::NotFound,
                    format!("gameruntime/{game} does not exist"),
                )
            });
        };
        if status.value.phase == Phase::Removing {
            return Err(Failure::new(
                ErrorCode::Conflict,
                format!("runtime for game {game:?} is being removed; cannot restart"),
            ));
        }
        if doc.spec.image.trim().is_empty() {
            return Err(Failure::new(
                ErrorCode::Internal,
                format!("gameruntime/{game} has no image to restart with"),
            ));
        }
        // Never stop a working container for a replacement the policy
        // refuses (a capability not allowed, more CPUs than the host has).
        self.admit(&doc).await?;
        Ok(doc)
    }

    /// inner stop → docker rm → inner start, all under the outer lease;
    /// `image_id` is what the image reference named when it was checked. The
    /// outer entry records what changed in `doc` since the old container's
    /// generation, and for a repair what the old container said last.
    async fn recreate(
        &self,
        lease: &GameLease,
        inner: &OpRequest,
        outer: &mut Appended,
        doc: &rtm_core::model::GameRuntime,
        image_id: &str,
    ) -> Result<StatusChange, Failure> {
        let stop = self.stop_under(lease, inner, &new_id()).await;
        outer.entry.container_id_before = stop.container_id.clone();
        if !stop.is_success() {
            return Err(inner_failure("inner stop failed", &stop));
        }
        if let Some(stopped) = &stop.container {
            outer.entry.spec_changes = self.spec_changes(stopped, doc).await;
            if let Some(cause) = &inner.cause {
                self.keep_previous(lease, stopped, Some(cause.code), &mut outer.entry)
                    .await;
            }
        }
        failpoint::hit("restart.after_stop");

        lease.check()?;
        let mut start_request = inner.clone();
        if let Some(id) = &stop.container_id
            && let Err(failure) = self.require_image(&outer.entry.image_ref).await
        {
            if let Ok(Some(_)) = self.runtime.inspect_image(image_id).await {
                // Only the tag went (a `docker rmi` of one of its names during the
                // stop): the image it named is still there, and the replacement is
                // made from it, by id, rather than leave the game stopped.
                start_request.image = Some(image_id.to_owned());
                let note = format!(
                    "{} was untagged during the stop; the replacement runs {image_id}, the \
                     image it named",
                    outer.entry.image_ref
                );
                outer.entry.note = Some(match outer.entry.note.take() {
                    Some(cause) => format!("{cause}; {note}"),
                    None => note,
                });
            } else {
                // The image went away while the old container stopped (removed
                // by hand meanwhile): keep the game on its old container rather
                // than remove it for a replacement that cannot be created.
                let again = match self.runtime.start(id).await {
                    Ok(()) => "the old container was started again".to_owned(),
                    Err(e) => format!("starting the old container again failed too: {e}"),
                };
                return Err(Failure::new(
                    failure.code,
                    format!("{} (it vanished during the stop; {again})", failure.message),
                ));
            }
        }
        if let Some(id) = &stop.container_id {
            self.remove_container(id, false).await.map_err(|e| {
                Failure::caused_by(
                    ErrorCode::ServiceUnavailable,
                    format!("docker remove: {e}"),
                    e,
                )
            })?;
        }

        failpoint::hit("restart.after_remove");
        lease.check()?;
        let start = self.start_under(lease, &start_request, &new_id()).await;
        if !start.is_success() {
            return Err(inner_failure("inner start failed", &start));
        }
        outer.entry.container_id_after = start.container_id.clone();
        failpoint::hit("restart.before_status");
        // The inner start recorded the new container in the status; the
        // outer entry only adds itself as the last operation.
        Ok(StatusChange::LastOperationOnly {
            container: start.container.map(Box::new),
        })
    }
}

fn inner_failure(what: &str, inner: &OpResult) -> Failure {
    Failure::new(
        inner.error_code.unwrap_or(ErrorCode::Internal),
        format!(
            "{what}: {}",
            inner.error_message.as_deref().unwrap_or("no message")
        ),
    )
}
