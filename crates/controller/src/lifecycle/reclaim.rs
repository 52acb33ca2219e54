//! reclaim: a container carrying a game's labels is the game's container,
//! whatever its name. One renamed by hand (`docker rename rtm-<id>-g
//! other`), or named the way rtmanager named containers before names
//! carried the installation (`rtm-g`), is named (back) and adopted before
//! anything new is started for the game; any further container claiming
//! the game is removed. Both are recorded in the
//! history under the game's lease, like every other operation.

use tracing::warn;

use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, RuntimeOp, container_name, legacy_container_name};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::OpKind;
use rtm_core::records::events::EventReason;

use super::{Lifecycle, OpRequest, OpResult, new_id, runtime_failure};
use rtm_core::failure::Failure;

impl Lifecycle {
    /// The game's containers of this installation that are not named
    /// `rtm-<installation>-<game>` (renamed by hand, named the old way, or a
    /// duplicate), running ones first.
    pub(crate) async fn misnamed_containers(
        &self,
        game: &str,
    ) -> Result<Vec<ContainerInfo>, Failure> {
        let name = container_name(self.prefix(), game);
        let mut found: Vec<ContainerInfo> = self
            .runtime
            .list_game(game)
            .await
            .map_err(|e| runtime_failure(RuntimeOp::ListManaged, &e))?
            .into_iter()
            .filter(|c| c.belongs_to(self.prefix()) && c.name.trim_start_matches('/') != name)
            .collect();
        found.sort_by_key(|c| !c.is_alive());
        Ok(found)
    }

    /// Under the game's lease: when no container has the game's name,
    /// names the game's best misnamed container back (recorded as an
    /// adoption); every other misnamed one is removed (each recorded as a
    /// removal). Returns the results, in order; empty when there was
    /// nothing to do.
    pub(crate) async fn reclaim_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
    ) -> Vec<OpResult> {
        let game = lease.game();
        let found = match self.misnamed_containers(game).await {
            Ok(found) => found,
            Err(failure) => {
                warn!(%game, error = %failure.message, "looking for renamed containers failed");
                return Vec::new();
            }
        };
        if found.is_empty() {
            return Vec::new();
        }
        let mut named_back = match self.current_container(game).await {
            Ok(canonical) => canonical.is_some(),
            // A foreign container holds the name: ours cannot take it.
            Err(failure) if failure.code == ErrorCode::Conflict => true,
            Err(failure) => {
                warn!(%game, error = %failure.message, "inspecting the game's container failed");
                return Vec::new();
            }
        };
        let mut results = Vec::new();
        for container in found {
            let result = if named_back {
                let note = format!(
                    "a second container claiming the game (named {}); removed",
                    container.name
                );
                self.remove_duplicate_under(lease, request, &container, &note)
                    .await
            } else {
                let result = self.name_back_under(lease, request, &container).await;
                named_back = result.is_success();
                result
            };
            results.push(result);
        }
        results
    }

    /// Renames a container of the game back to `rtm-<game>`: recorded as
    /// an adoption with a note.
    async fn name_back_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        container: &ContainerInfo,
    ) -> OpResult {
        let op_id = new_id();
        let mut op = match self.begin(lease, OpKind::Adopt, request, &op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        let name = container_name(self.prefix(), lease.game());
        let was = container.name.trim_start_matches('/');
        op.entry.container_id_before = Some(container.id.clone());
        op.entry.container_id_after = Some(container.id.clone());
        op.entry.image_ref = container.image.clone();
        op.entry.note = Some(if was == legacy_container_name(lease.game()) {
            format!(
                "the game's container had the name of an older rtmanager ({was}); renamed to \
                 {name}, which carries the installation"
            )
        } else {
            format!("the game's container was renamed to {was} by hand; named back to {name}")
        });
        let note = op.entry.note.clone().unwrap_or_default();
        let result = match lease.check() {
            Ok(()) => self
                .runtime
                .rename(&container.id, &name)
                .await
                .map_err(|e| runtime_failure(RuntimeOp::Rename, &e)),
            Err(error) => Err(error.into()),
        };
        let result = self.close_entry(lease, op, result).await;
        if result.is_success() {
            self.notice(
                lease.game(),
                EventReason::AdoptedContainer,
                &container.id,
                note,
            );
        }
        result
    }

    /// Removes a container that claims the game but is not its container
    /// (the sweep's duplicates, the leftovers of a reclaim), recorded as a
    /// removal with `note`.
    pub(crate) async fn remove_duplicate_under(
        &self,
        lease: &GameLease,
        request: &OpRequest,
        container: &ContainerInfo,
        note: &str,
    ) -> OpResult {
        let op_id = new_id();
        let mut op = match self.begin(lease, OpKind::Remove, request, &op_id).await {
            Ok(op) => op,
            Err(rejected) => return rejected,
        };
        op.entry.container_id_before = Some(container.id.clone());
        op.entry.image_ref = container.image.clone();
        op.entry.note = Some(note.to_owned());
        let result = match lease.check() {
            Ok(()) => self
                .remove_container(&container.id, true)
                .await
                .map_err(|e| {
                    Failure::caused_by(
                        ErrorCode::ServiceUnavailable,
                        format!("docker remove: {e}"),
                        e,
                    )
                }),
            Err(error) => Err(error.into()),
        };
        let result = self.close_entry(lease, op, result).await;
        if result.is_success() {
            self.notice(
                lease.game(),
                EventReason::RemovedDuplicate,
                &container.id,
                note.to_owned(),
            );
        }
        result
    }
}
