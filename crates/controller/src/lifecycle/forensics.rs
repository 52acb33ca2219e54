//! What an operation keeps of the container it replaces or removes, so that "why did it
//! die?" has an answer after `docker rm`: for a container that exited or failed its
//! health check, its last output with its exit code, OOM flag and run times
//! (`previous/<game>`, [`rtm_core::records::previous`]) and how it ended in the
//! operation's history entry; for a recreate the document asked for, the spec fields that
//! changed since the container's generation.
//!
//! Both are evidence, never preconditions: a failure to read the output or to keep it is
//! noted in the entry and the repair goes on (an involuntary disruption is repaired at
//! once).

use rtm_core::error_code::ErrorCode;
use rtm_core::model::changes::spec_changes;
use rtm_core::model::{GameRuntime, Timestamp};
use rtm_core::records::history::HistoryEntry;
use rtm_core::records::previous::{Ended, OUTPUT_LIMIT, PreviousContainer, tail_of};
use rtm_core::records::revisions::Revisions;
use tracing::warn;

use super::Lifecycle;
use super::graceful::add_note;
use crate::lease::GameLease;
use crate::runtime::{ContainerInfo, LABEL_GENERATION};

/// How `container`'s last run ended, as Docker recorded it.
pub(crate) fn ended(container: &ContainerInfo) -> Ended {
    Ended {
        exit_code: container.exit_code,
        oom_killed: container.oom_killed,
        started_at: container.started_at.map(Timestamp::from),
        finished_at: container.finished_at.map(Timestamp::from),
    }
}

impl Lifecycle {
    /// Before `container` is removed, keeps its last output and end as the game's previous
    /// container, and its end in `entry`. The caller asks only for a container that exited
    /// on its own, or whose replacement repairs `cause` (`health_check_failed`,
    /// `startup_timeout`): a container that ran well leaves nothing to explain.
    pub(super) async fn keep_previous(
        &self,
        lease: &GameLease,
        container: &ContainerInfo,
        cause: Option<ErrorCode>,
        entry: &mut HistoryEntry,
    ) {
        let ended = ended(container);
        entry.ended = Some(ended.clone());
        let (output, truncated) = match self.runtime.last_output(&container.id, OUTPUT_LIMIT).await
        {
            Ok(output) => tail_of(&output),
            Err(error) => {
                add_note(
                    entry,
                    &format!("its last output could not be read: {error}"),
                );
                (String::new(), false)
            }
        };
        let record = PreviousContainer {
            game_id: lease.game().to_owned(),
            container_id: container.id.clone(),
            image_ref: container.image.clone(),
            op_id: entry.op_id.clone(),
            ended,
            cause,
            output,
            truncated,
            kept_at: Timestamp::now(),
        };
        if let Err(error) = self.previous.keep(lease.fence(), &record).await {
            warn!(game = %lease.game(), %error, "keeping the last output of the replaced container failed");
            add_note(
                entry,
                &format!("its last output could not be kept: {error}"),
            );
        }
    }

    /// The spec fields that changed from the generation `container` was created from (its
    /// label) to `doc`; empty when it runs `doc`'s spec, or when that generation is no
    /// longer kept (then the entry says so).
    pub(super) async fn spec_changes(
        &self,
        container: &ContainerInfo,
        doc: &GameRuntime,
    ) -> Vec<String> {
        let name = &doc.metadata.name;
        if container.spec_hash() == Some(doc.spec.recreate_hash(name).as_str()) {
            return Vec::new();
        }
        let Some(generation) = container
            .labels
            .get(LABEL_GENERATION)
            .and_then(|g| g.parse::<i64>().ok())
        else {
            return Vec::new();
        };
        if Some(generation) == doc.metadata.generation {
            return Vec::new();
        }
        let revisions = Revisions::new(self.session.store().clone(), self.session.keys().clone());
        match revisions.get(name, generation).await {
            Ok(Some(before)) => spec_changes(&before.doc.spec, &doc.spec),
            Ok(None) => vec![format!(
                "generation {generation} → {}: the earlier spec is no longer kept",
                doc.metadata.generation.unwrap_or_default()
            )],
            Err(error) => vec![format!(
                "generation {generation} → {}: the earlier spec could not be read ({error})",
                doc.metadata.generation.unwrap_or_default()
            )],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ContainerState;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_end_is_docker_s_exit_code_oom_flag_and_times() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let container = ContainerInfo {
            id: "c1".into(),
            name: "rtm-x-g1".into(),
            image: "engine:1".into(),
            image_id: "sha256:1".into(),
            hostname: "g1".into(),
            labels: Default::default(),
            state: ContainerState::Exited,
            exit_code: Some(137),
            oom_killed: true,
            started_at: Some(started),
            finished_at: Some(started + Duration::from_secs(5)),
            error: None,
            address: None,
            ports: Vec::new(),
            health: None,
        };
        let ended = ended(&container);
        assert_eq!(ended.summary(), "exited 137, OOM-killed");
        assert_eq!(
            ended.finished_at.map(Timestamp::system_time),
            Some(started + Duration::from_secs(5))
        );
    }
}
