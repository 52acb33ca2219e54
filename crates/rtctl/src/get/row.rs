//! The table rows of `get`: NAME STATE PHASE READY RESTARTS IMAGE AGE, and with `-o wide`
//! CONTAINER NODE HOSTNAME; an unreadable document's row says `Invalid`.

use std::time::SystemTime;

use super::games::InvalidGame;
use crate::output::{age_since, short_id};
use rtm_core::model::{GameRuntime, GameRuntimeStatus};

/// The table's header for a format.
pub(crate) fn headers(wide: bool) -> Vec<String> {
    let mut headers: Vec<String> = [
        "NAME", "STATE", "PHASE", "READY", "RESTARTS", "IMAGE", "AGE",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    if wide {
        headers.extend(["CONTAINER", "NODE", "HOSTNAME"].map(str::to_owned));
    }
    headers
}

/// The Ready condition's status, `-` without one.
pub(crate) fn ready(status: Option<&GameRuntimeStatus>) -> String {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str().to_owned())
        .unwrap_or_else(|| "-".to_owned())
}

/// Whether the Ready condition holds (only the tests ask; the table shows [`ready`]).
#[cfg(test)]
pub(crate) fn is_ready(status: Option<&GameRuntimeStatus>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == rtm_core::model::ConditionStatus::True)
}

/// One table row for a game (its document carries its status).
pub(crate) fn row(doc: &GameRuntime, wide: bool, now: SystemTime) -> Vec<String> {
    let spec = RowSpec {
        state: doc.spec.state.as_str().to_owned(),
        image: doc.spec.image.clone(),
        age: age_since(doc.metadata.creation_timestamp, now),
        node: doc.spec.node.clone(),
        hostname: Some(doc.spec.effective_hostname(&doc.metadata.name).to_owned()),
    };
    cells(&doc.metadata.name, &spec, doc.status.as_ref(), wide)
}

/// The table row of an invalid game: what its status says, dashes for the unreadable spec.
pub(crate) fn invalid_row(name: &str, game: &InvalidGame, wide: bool) -> Vec<String> {
    let spec = RowSpec {
        state: "Invalid".to_owned(),
        image: "-".to_owned(),
        age: "-".to_owned(),
        node: None,
        hostname: None,
    };
    cells(name, &spec, game.status.as_ref(), wide)
}

/// What a row takes from the document (or says in its place).
struct RowSpec {
    state: String,
    image: String,
    age: String,
    /// Shown when the status names no node / hostname.
    node: Option<String>,
    hostname: Option<String>,
}

/// The cells of one row: NAME STATE PHASE READY RESTARTS IMAGE AGE, and
/// with `wide` CONTAINER NODE HOSTNAME.
fn cells(
    name: &str,
    spec: &RowSpec,
    status: Option<&GameRuntimeStatus>,
    wide: bool,
) -> Vec<String> {
    let dash = || "-".to_owned();
    let mut cells = vec![
        name.to_owned(),
        spec.state.clone(),
        status
            .map(|s| s.phase.as_str().to_owned())
            .unwrap_or_else(dash),
        ready(status),
        status.map(|s| s.restart_count).unwrap_or(0).to_string(),
        spec.image.clone(),
        spec.age.clone(),
    ];
    if wide {
        cells.push(
            status
                .and_then(|s| s.container_id.as_deref())
                .map(|id| short_id(id).to_owned())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.node.clone())
                .or_else(|| spec.node.clone())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.hostname.clone())
                .or_else(|| spec.hostname.clone())
                .unwrap_or_else(dash),
        );
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{Condition, ConditionStatus, Phase, Timestamp};
    use std::time::Duration;

    #[test]
    fn rows_show_status_readiness_and_age() {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata: {name: g1}\n\
             spec: {image: 'rtmanager-test/engine:1'}\n",
        )
        .unwrap()
        .remove(0);
        let now = SystemTime::now();
        doc.metadata.creation_timestamp = Some(Timestamp::from(now - Duration::from_secs(200)));
        assert_eq!(
            row(&doc, false, now),
            [
                "g1",
                "Running",
                "-",
                "-",
                "0",
                "rtmanager-test/engine:1",
                "3m20s"
            ]
        );
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            restart_count: 2,
            container_id: Some("0123456789abcdef0123".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "ContainerRunning".into(),
                message: String::new(),
                last_transition_time: None,
            }],
            ..GameRuntimeStatus::default()
        });
        assert_eq!(
            row(&doc, true, now),
            [
                "g1",
                "Running",
                "Running",
                "True",
                "2",
                "rtmanager-test/engine:1",
                "3m20s",
                "0123456789ab",
                "-",
                "g1"
            ]
        );
        assert!(is_ready(doc.status.as_ref()));
    }
}
