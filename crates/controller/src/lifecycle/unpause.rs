//! unpause: resume a container paused by hand (`docker pause`). An
//! involuntary disruption repaired in place: the same container, the same
//! match, no recreate.

use crate::lease::GameLease;
use crate::runtime::{ContainerState, RuntimeOp};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::{OpKind, Phase};
use rtm_core::records::history::HistoryEntry;

use super::{Lifecycle, OpRequest, OpResult, StatusChange, effective_hostname, runtime_failure};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// Resumes the game's paused container under a lease the caller holds.
    pub(crate) async fn unpause_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        op_id: &str,
    ) -> OpResult {
        let mut op = match self.begin(lease, OpKind::Unpause, request, op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        let result = self.unpause_steps(lease, request, &mut op.entry).await;
        self.conclude(lease, op, result).await
    }

    async fn unpause_steps(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        entry: &mut HistoryEntry,
    ) -> Result<StatusChange, Failure> {
        let doc = self.load(request).await?;
        let Some(container) = self.current_container(lease.game()).await? else {
            return Err(Failure::new(
                ErrorCode::NotFound,
                format!("gameruntime/{} has no container to resume", lease.game()),
            ));
        };
        entry.container_id_before = Some(container.id.clone());
        entry.container_id_after = Some(container.id.clone());
        entry.image_ref = container.image.clone();
        if container.state == ContainerState::Paused {
            lease.check()?;
            self.runtime
                .unpause(&container.id)
                .await
                .map_err(|e| runtime_failure(RuntimeOp::Unpause, &e))?;
        }
        let resumed = self.reinspect(&container.id).await.unwrap_or(container);
        if !resumed.is_running() {
            return Err(Failure::new(
                ErrorCode::StartFailed,
                format!(
                    "container {} is {} after unpause, not running",
                    resumed.id, resumed.state
                ),
            ));
        }
        Ok(StatusChange::Set {
            phase: Phase::Running,
            container: Some(resumed.into()),
            hostname: effective_hostname(&doc),
            probed: doc.spec.health_check.is_some(),
        })
    }
}
