//! The table rows of `get`: NAME STATE PHASE READY SESSION RESTARTS IMAGE AGE, and with `-o
//! wide` SESSION-REF CONTAINER NODE HOSTNAME ADDRESS PORTS; an unreadable document's row says
//! `Invalid`. READY is the Ready condition (with a health check it follows the probe), never
//! the phase; SESSION is the session record (`Allocated` or `Idle`). NODE is where the
//! status says the game runs, else where its assignment puts it; a game whose assignment
//! names no node (none fits) shows PHASE `Unschedulable`.

use std::time::SystemTime;

use super::games::InvalidGame;
use crate::output::{age_since, published_ports, short_id};
use rtm_core::model::{GameRuntime, GameRuntimeStatus, Session, SessionState};
use rtm_core::records::nodes::Assignment;

/// The table's header for a format.
pub(crate) fn headers(wide: bool) -> Vec<String> {
    let mut headers: Vec<String> = [
        "NAME", "STATE", "PHASE", "READY", "SESSION", "RESTARTS", "IMAGE", "AGE",
    ]
    .iter()
    .map(|h| (*h).to_owned())
    .collect();
    if wide {
        headers.extend(WIDE_HEADERS.map(str::to_owned));
    }
    headers
}

/// The columns `-o wide` adds, after the table's eight.
const WIDE_HEADERS: [&str; 6] = [
    "SESSION-REF",
    "CONTAINER",
    "NODE",
    "HOSTNAME",
    "ADDRESS",
    "PORTS",
];

/// Where the wide columns whose values vary while a game runs are (the watch sizes them
/// ahead, see the printer), counted without the watch's EVENT column.
pub(crate) const CONTAINER_COLUMN: usize = 9;
/// See [`CONTAINER_COLUMN`].
pub(crate) const ADDRESS_COLUMN: usize = 12;
/// Where SESSION is (sized ahead by the watch, see the printer).
pub(crate) const SESSION_COLUMN: usize = 4;

/// The PHASE of a game whose assignment names no node: no node fits it.
pub(crate) const UNSCHEDULABLE: &str = "Unschedulable";

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

/// One table row for a game (its document carries its status), its session record and its
/// assignment.
pub(crate) fn row(
    doc: &GameRuntime,
    session: Option<&Session>,
    assignment: Option<&Assignment>,
    wide: bool,
    now: SystemTime,
) -> Vec<String> {
    let spec = RowSpec {
        state: doc.spec.state.as_str().to_owned(),
        image: doc.spec.image.clone(),
        age: age_since(doc.metadata.creation_timestamp, now),
        node: doc.spec.node.clone(),
        hostname: Some(doc.spec.effective_hostname(&doc.metadata.name).to_owned()),
    };
    cells(
        &doc.metadata.name,
        &spec,
        doc.status.as_ref(),
        session,
        assignment,
        wide,
    )
}

/// The table row of an invalid game: what its status says, dashes for the unreadable spec.
pub(crate) fn invalid_row(
    name: &str,
    game: &InvalidGame,
    session: Option<&Session>,
    assignment: Option<&Assignment>,
    wide: bool,
) -> Vec<String> {
    let spec = RowSpec {
        state: "Invalid".to_owned(),
        image: "-".to_owned(),
        age: "-".to_owned(),
        node: None,
        hostname: None,
    };
    cells(name, &spec, game.status.as_ref(), session, assignment, wide)
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

/// The SESSION cell: the record's state; no record is Idle.
pub(crate) fn session_state(session: Option<&Session>) -> &'static str {
    session.map_or(SessionState::Idle, |s| s.state).as_str()
}

/// The cells of one row: NAME STATE PHASE READY SESSION RESTARTS IMAGE AGE, and
/// with `wide` SESSION-REF CONTAINER NODE HOSTNAME ADDRESS PORTS.
fn cells(
    name: &str,
    spec: &RowSpec,
    status: Option<&GameRuntimeStatus>,
    session: Option<&Session>,
    assignment: Option<&Assignment>,
    wide: bool,
) -> Vec<String> {
    let dash = || "-".to_owned();
    let unschedulable = assignment.is_some_and(|a| a.node.is_none());
    let mut cells = vec![
        name.to_owned(),
        spec.state.clone(),
        if unschedulable {
            UNSCHEDULABLE.to_owned()
        } else {
            status
                .map(|s| s.phase.as_str().to_owned())
                .unwrap_or_else(dash)
        },
        ready(status),
        session_state(session).to_owned(),
        status.map(|s| s.restart_count).unwrap_or(0).to_string(),
        spec.image.clone(),
        spec.age.clone(),
    ];
    if wide {
        cells.push(
            session
                .filter(|s| s.is_allocated())
                .and_then(|s| s.reference.clone())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.container_id.as_deref())
                .map(|id| short_id(id).to_owned())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.node.clone())
                .or_else(|| assignment.and_then(|a| a.node.clone()))
                .or_else(|| spec.node.clone())
                .unwrap_or_else(dash),
        );
        cells.push(
            status
                .and_then(|s| s.hostname.clone())
                .or_else(|| spec.hostname.clone())
                .unwrap_or_else(dash),
        );
        let none = || "<none>".to_owned();
        cells.push(status.and_then(|s| s.address.clone()).unwrap_or_else(none));
        let ports = status
            .map(|s| published_ports(&s.ports))
            .unwrap_or_default();
        cells.push(if ports.is_empty() {
            none()
        } else {
            ports.join(",")
        });
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;
    use rtm_core::model::parse::parse_documents;
    use rtm_core::model::{Condition, ConditionStatus, Phase, Protocol, PublishedPort, Timestamp};
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
            row(&doc, None, None, false, now),
            [
                "g1",
                "Running",
                "-",
                "-",
                "Idle",
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
            row(&doc, None, None, true, now),
            [
                "g1",
                "Running",
                "Running",
                "True",
                "Idle",
                "2",
                "rtmanager-test/engine:1",
                "3m20s",
                "-",
                "0123456789ab",
                "-",
                "g1",
                "<none>",
                "<none>"
            ]
        );
        assert!(is_ready(doc.status.as_ref()));
    }

    /// A Ready condition, as the controller writes it.
    fn ready_condition(status: ConditionStatus, reason: &str) -> Condition {
        Condition {
            type_: "Ready".into(),
            status,
            reason: reason.into(),
            message: String::new(),
            last_transition_time: None,
        }
    }

    #[test]
    fn ready_is_the_ready_condition_even_while_the_phase_is_running() {
        let mut doc = game("g1").build();
        let now = SystemTime::now();
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            conditions: vec![ready_condition(ConditionStatus::False, "Starting")],
            ..GameRuntimeStatus::default()
        });
        let cells = row(&doc, None, None, false, now);
        assert_eq!(cells[2..4], ["Running", "False"]);
        assert!(!is_ready(doc.status.as_ref()));

        doc.status.as_mut().unwrap().conditions =
            vec![ready_condition(ConditionStatus::True, "HealthCheckPassed")];
        assert_eq!(row(&doc, None, None, false, now)[2..4], ["Running", "True"]);

        // A status without the condition says nothing of readiness, whatever its phase.
        doc.status.as_mut().unwrap().conditions.clear();
        assert_eq!(row(&doc, None, None, false, now)[2..4], ["Running", "-"]);
    }

    #[test]
    fn wide_rows_show_the_address_and_the_published_ports() {
        let mut doc = game("g1").build();
        let port = |container, protocol, ip: &str, host| PublishedPort {
            container_port: container,
            protocol,
            host_ip: Some(ip.to_owned()),
            host_port: host,
        };
        doc.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            address: Some("10.1.2.3".into()),
            ports: vec![
                port(7000, Protocol::Tcp, "0.0.0.0", 17000),
                port(7000, Protocol::Tcp, "::", 17000),
                port(7001, Protocol::Udp, "0.0.0.0", 17001),
                port(7002, Protocol::Tcp, "127.0.0.1", 17002),
            ],
            ..GameRuntimeStatus::default()
        });
        let cells = row(&doc, None, None, true, SystemTime::now());
        assert_eq!(headers(true)[12..], ["ADDRESS", "PORTS"]);
        assert_eq!(
            cells[12..],
            [
                "10.1.2.3",
                "17000->7000/tcp,17001->7001/udp,127.0.0.1:17002->7002/tcp"
            ]
        );
        assert_eq!(headers(true)[ADDRESS_COLUMN], "ADDRESS");
        assert_eq!(headers(true)[CONTAINER_COLUMN], "CONTAINER");
        // The narrow table leaves them out.
        assert_eq!(
            row(&doc, None, None, false, SystemTime::now()).len(),
            headers(false).len()
        );
    }

    #[test]
    fn an_invalid_games_wide_row_still_shows_where_its_container_listens() {
        let game = InvalidGame {
            key: "/rtmanager/gameruntimes/g1".into(),
            reason: "garbage".into(),
            status: Some(GameRuntimeStatus {
                address: Some("node-a.example".into()),
                ports: vec![PublishedPort {
                    container_port: 7000,
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 17000,
                }],
                ..GameRuntimeStatus::default()
            }),
        };
        let cells = invalid_row("g1", &game, None, None, true);
        assert_eq!(cells[1], "Invalid");
        assert_eq!(cells[12..], ["node-a.example", "17000->7000/tcp"]);
        let without_status = InvalidGame {
            status: None,
            ..game
        };
        assert_eq!(
            invalid_row("g1", &without_status, None, None, true)[12..],
            ["<none>", "<none>"]
        );
    }

    #[test]
    fn node_comes_from_the_status_else_the_assignment_and_no_node_is_unschedulable() {
        use rtm_core::records::nodes::AssignmentReason;
        let doc = game("g1").build();
        let now = SystemTime::now();
        let assigned = Assignment::to("n2", AssignmentReason::Scheduled, "c");
        let cells = row(&doc, None, Some(&assigned), true, now);
        assert_eq!((cells[2].as_str(), cells[10].as_str()), ("-", "n2"));
        let mut running = doc.clone();
        running.status = Some(GameRuntimeStatus {
            phase: Phase::Running,
            node: Some("n1".into()),
            ..GameRuntimeStatus::default()
        });
        let cells = row(&running, None, Some(&assigned), true, now);
        assert_eq!((cells[2].as_str(), cells[10].as_str()), ("Running", "n1"));
        let nowhere = Assignment::unschedulable("0/3 nodes fit: 3 insufficient memory", "c");
        let cells = row(&doc, None, Some(&nowhere), true, now);
        assert_eq!(
            (cells[2].as_str(), cells[10].as_str()),
            ("Unschedulable", "-")
        );
        assert_eq!(headers(true)[10], "NODE");
    }

    #[test]
    fn the_session_column_says_allocated_and_wide_adds_the_ref() {
        let doc = game("g1").build();
        let now = SystemTime::now();
        let allocated = Session {
            state: SessionState::Allocated,
            reference: Some("match-42".into()),
            since: Timestamp::now(),
            container_id: None,
            source: Some("admin_cli".into()),
        };
        assert_eq!(headers(false)[SESSION_COLUMN], "SESSION");
        assert_eq!(
            row(&doc, Some(&allocated), None, false, now)[SESSION_COLUMN],
            "Allocated"
        );
        assert_eq!(row(&doc, None, None, false, now)[SESSION_COLUMN], "Idle");
        let wide = row(&doc, Some(&allocated), None, true, now);
        assert_eq!(headers(true)[8], "SESSION-REF");
        assert_eq!(wide[8], "match-42");
        let ended = Session {
            state: SessionState::Idle,
            ..allocated
        };
        let wide = row(&doc, Some(&ended), None, true, now);
        assert_eq!(
            (wide[SESSION_COLUMN].as_str(), wide[8].as_str()),
            ("Idle", "-")
        );
    }
}
