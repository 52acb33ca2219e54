//! start: make the game's container run from its current spec.

use crate::failpoint;
use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, RuntimeError, RuntimeOp};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::{OpKind, Phase};

use super::{Lifecycle, OpRequest, OpResult, StatusChange, container_spec, runtime_failure};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Starts the game's container under its own lease.
    pub async fn start(&self, request: &OpRequest) -> OpResult {
        self.with_lease(OpKind::Start, request, async |lease: &GameLease| {
            self.start_under(lease, request, lease.op_id()).await
        })
        .await
    }

    /// Starts the game's container under a lease the caller holds (a
    /// restart's inner start).
    pub(crate) async fn start_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        op_id: &str,
    ) -> OpResult {
        let mut op = match self.begin(lease, OpKind::Start, request, op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        let result = self.start_steps(lease, request, &mut op.entry).await;
        self.conclude(lease, op, result).await
    }

    async fn start_steps(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        entry: &mut rtm_core::records::history::HistoryEntry,
    ) -> Result<StatusChange, Failure> {
        let game = lease.game();
        let doc = self.load(request).await?;
        let mut spec = container_spec(&doc, self.prefix(), &entry.op_id, self.policy());
        spec.labels.insert(
            crate::runtime::LABEL_NODE.to_owned(),
            self.node().to_owned(),
        );
        if let Some(image) = &request.image {
            spec.image = image.clone();
        }
        entry.image_ref = spec.image.clone();

        let existing = self.current_container(game).await?;
        let mut ready = None;
        if !existing.as_ref().is_some_and(|c| c.is_running()) {
            // Checked before anything is removed: refused by the policy,
            // without its host ports or its image, the game keeps what it
            // has (an exited container stays to be seen). The policy comes
            // first: a refused document claims no port.
            lease.check()?;
            self.admit(&doc).await?;
            let auto = self.require_host_ports(lease, &doc).await?;
            super::ports::apply_auto_ports(&mut spec, &auto);
            ready = Some(if request.image_ready {
                self.require_image(&spec.image).await?
            } else {
                let policy = doc.spec.image_pull_policy;
                self.prepare_image(game, &spec.image, policy, true).await?
            });
        }
        if let Some(existing) = existing {
            entry.container_id_before = Some(existing.id.clone());
            if existing.is_running() {
                // Already running: starting is idempotent. Replacing it for
                // a changed spec is a restart's job, not a start's.
                entry.container_id_after = Some(existing.id.clone());
                return Ok(running(existing, spec.hostname, probed(&doc)));
            }
            // An exited container is replaced, so the new one runs the
            // current image and spec.
            lease.check()?;
            if existing.state.has_exited() {
                let cause = request.cause.as_ref().map(|cause| cause.code);
                self.keep_previous(lease, &existing, cause, entry).await;
            }
            self.remove_container(&existing.id, true)
                .await
                .map_err(|e| runtime_failure(RuntimeOp::Remove, &e))?;
        }

        if let Some(ready) = ready {
            spec.labels
                .insert(crate::runtime::LABEL_IMAGE_ID.to_owned(), ready.digest);
            if let Some(note) = ready.note {
                entry.note = Some(match entry.note.take() {
                    Some(cause) => format!("{cause}; {note}"),
                    None => note,
                });
            }
        }
        lease.check()?;
        self.ensure_volumes(&doc).await?;
        let id = self.create_container(&spec).await?;
        failpoint::hit("start.after_create");
        entry.container_id_after = Some(id.clone());

        // From here on a failure leaves a created container: remove it so
        // nothing is orphaned, and say so in the failure.
        if let Err(failure) = lease.check() {
            return Err(failure.into());
        }
        if let Err(error) = self.start_container(&id).await {
            let failure = runtime_failure(RuntimeOp::Start, &error);
            return Err(match self.remove_container(&id, true).await {
                Ok(()) => {
                    entry.container_id_after = None;
                    failure
                }
                Err(rm) => Failure::new(
                    failure.code,
                    format!(
                        "{}; removing the unstarted container failed too: {rm}",
                        failure.message
                    ),
                ),
            });
        }
        let started = self
            .runtime
            .inspect_container(&id)
            .await
            .map_err(|e| runtime_failure(RuntimeOp::InspectContainer, &e))?
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::StartFailed,
                    format!("container {id} vanished right after it started"),
                )
            })?;
        failpoint::hit("start.before_status");
        Ok(running(started, spec.hostname, probed(&doc)))
    }

    /// Fails with `image_not_found` unless `image` is on the Docker host:
    /// checked before any step that could leave the game without a
    /// container (a recreate stops nothing until it passes).
    pub(super) async fn require_image(
        &self,
        image: &str,
    ) -> Result<super::image::ReadyImage, Failure> {
        match self.runtime.inspect_image(image).await {
            Ok(Some(found)) => Ok(super::image::ReadyImage {
                digest: super::image::run_digest(image, &found),
                id: found.id,
                note: None,
            }),
            Ok(None) => Err(Failure::new(
                ErrorCode::ImageNotFound,
                format!("image {image} is not present on the Docker host; load or build it there"),
            )),
            Err(e) => Err(runtime_failure(RuntimeOp::InspectImage, &e)),
        }
    }

    /// Creates the container; a timed-out create is resolved by looking the
    /// container up by name and checking it carries this operation's id.
    async fn create_container(
        &self,
        spec: &crate::runtime::ContainerSpec,
    ) -> Result<String, Failure> {
        match self.runtime.create(spec).await {
            Ok(id) => Ok(id),
            Err(RuntimeError::NameConflict { name }) => Err(Failure::new(
                ErrorCode::Conflict,
                format!("container {name} appeared concurrently; the next reconcile resolves it"),
            )),
            Err(e) if e.outcome_unknown() => {
                let op_id = spec.labels.get(crate::runtime::LABEL_OP_ID);
                match self.runtime.inspect_container(&spec.name).await {
                    Ok(Some(c)) if c.labels.get(crate::runtime::LABEL_OP_ID) == op_id => Ok(c.id),
                    _ => Err(runtime_failure(RuntimeOp::Create, &e)),
                }
            }
            Err(e) => Err(runtime_failure(RuntimeOp::Create, &e)),
        }
    }

    /// Starts the container; a timed-out start counts if it now runs.
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self.runtime.start(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.outcome_unknown() => match self.runtime.inspect_container(id).await {
                Ok(Some(c)) if c.is_running() => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

fn running(container: ContainerInfo, hostname: String, probed: bool) -> StatusChange {
    StatusChange::Set {
        phase: Phase::Running,
        container: Some(container.into()),
        hostname,
        probed,
    }
}

/// Whether the game has a health check: then its container is not Ready
/// before a probe passed.
fn probed(doc: &rtm_core::model::GameRuntime) -> bool {
    doc.spec.health_check.is_some()
}
