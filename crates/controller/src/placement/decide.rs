//! What the scheduler writes, decided from one look at everything (pure: the tests aim
//! here). For each game, in name order:
//!
//! - Assigned to a node that still fits and is not being left: kept (and counted there).
//! - Assigned to a node being drained: reassigned to another node that fits
//!   (`Drained`); kept while none does.
//! - Assigned to a node lost (NotReady) for longer than its wait (the failure grace, and
//!   never before its self-fence has surely ended): reassigned (`NodeLost`); a node that
//!   does not self-fence is never left this way.
//! - Assigned where `spec.node` or `spec.nodeSelector` no longer allow: reassigned
//!   (`Moved`), or unschedulable when nothing fits.
//! - Not assigned: to the node its status names when that node is live (the container
//!   there is the truth: `Adopted`); a game the scheduler did not see created waits for
//!   the claim window first, so that a node running its container can claim it; then
//!   placed (`Scheduled`, `Pinned`) or recorded unschedulable with why.
//! - An assignment whose game is gone is deleted once its node is not live (a live node
//!   deletes it itself after removing the container).
//!
//! Games kept or adopted are counted before any is placed, so capacity is never given
//! twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rtm_core::placement::{Needs, NodeOffer, Placer, Strategy};
use rtm_core::records::nodes::{Assignment, AssignmentReason, Cordon, NodeRecord};
use rtm_core::store::Revision;

use super::assignments::SeenAssignment;
use super::options::PlacementArgs;

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub(crate) struct NodeSnap {
    pub(crate) record: NodeRecord,
    pub(crate) live: bool,
    pub(crate) cordon: Option<Cordon>,
    /// How long this scheduler has seen it NotReady (`None`: live).
    pub(crate) lost_for: Option<Duration>,
}

impl NodeSnap {
    fn draining(&self) -> bool {
        self.live && self.cordon.as_ref().is_some_and(|c| c.drain)
    }

    /// Whether its games may start elsewhere: lost long enough, and self-fencing.
    fn given_up(&self, grace: Duration) -> bool {
        let Some(lost_for) = self.lost_for else {
            return false;
        };
        let Some(fence_ms) = self.record.self_fence_after_ms else {
            return false;
        };
        lost_for >= PlacementArgs::lost_wait(grace, Duration::from_millis(fence_ms))
    }
}

/// A game with a valid document.
#[derive(Debug, Clone)]
pub(crate) struct GameSnap {
    pub(crate) name: String,
    pub(crate) needs: Needs,
    /// The node its status record names.
    pub(crate) status_node: Option<String>,
    /// Whether the scheduler saw the document created (no container can exist yet).
    pub(crate) new: bool,
}

/// Everything one decision looks at.
#[derive(Debug)]
pub(crate) struct World<'w> {
    pub(crate) nodes: &'w [NodeSnap],
    pub(crate) games: &'w [GameSnap],
    /// Games whose document exists but is invalid (their assignment is left alone).
    pub(crate) invalid: &'w [String],
    pub(crate) assignments: &'w HashMap<String, Arc<SeenAssignment>>,
    pub(crate) grace: Duration,
    /// Whether games not seen created may be placed (the claim window has passed).
    pub(crate) claims_over: bool,
    pub(crate) strategy: Strategy,
    /// The scheduler's holder name, recorded as `by`.
    pub(crate) holder: &'w str,
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write `assignment` over the revision seen (`None`: create-only).
    Put {
        game: String,
        over: Option<Revision>,
        assignment: Assignment,
    },
    /// Delete the assignment written at `over`.
    Delete { game: String, over: Revision },
}

#[cfg(test)]
impl Decision {
    pub(crate) fn game(&self) -> &str {
        match self {
            Decision::Put { game, .. } | Decision::Delete { game, .. } => game,
        }
    }
}

/// What to write now.
pub(crate) fn decide(world: &World<'_>) -> Vec<Decision> {
    let nodes: HashMap<&str, &NodeSnap> = world
        .nodes
        .iter()
        .map(|n| (n.record.name.as_str(), n))
        .collect();
    let mut placer = Placer::new(
        world
            .nodes
            .iter()
            .map(|n| NodeOffer {
                name: n.record.name.clone(),
                labels: n.record.labels.clone(),
                capacity: n.record.capacity,
                port_range: n.record.port_range,
                ready: n.live && n.cordon.is_none(),
            })
            .collect(),
        world.strategy,
    );
    let mut decisions = Vec::new();
    // Games to place after everything kept is counted: (game, seen revision, leaving, reason).
    let mut to_place: Vec<(
        &GameSnap,
        Option<Revision>,
        Option<String>,
        AssignmentReason,
    )> = Vec::new();
    let mut games: Vec<&GameSnap> = world.games.iter().collect();
    games.sort_by(|a, b| a.name.cmp(&b.name));
    for game in games {
        let seen = world.assignments.get(&game.name);
        let revision = seen.map(|s| s.revision);
        let placed = seen.and_then(|s| s.assignment.node.clone());
        match placed {
            Some(node) => {
                let snap = nodes.get(node.as_str());
                // A node with no record (not registered yet, or its record lost) keeps
                // its games: a lost key never moves one.
                let fits = snap.is_none() || placer.still_fits(&node, &game.needs);
                if !fits {
                    to_place.push((game, revision, Some(node), AssignmentReason::Moved));
                } else if snap.is_some_and(|s| s.draining()) {
                    placer.occupy(&node, &game.needs);
                    to_place.push((game, revision, Some(node), AssignmentReason::Drained));
                } else if snap.is_some_and(|s| s.given_up(world.grace))
                    && game.needs.pinned.is_none()
                {
                    to_place.push((game, revision, Some(node), AssignmentReason::NodeLost));
                } else {
                    placer.occupy(&node, &game.needs);
                }
            }
            None => {
                let adopted = game
                    .status_node
                    .as_deref()
                    .filter(|n| nodes.get(n).is_some_and(|s| s.live))
                    .filter(|n| placer.still_fits(n, &game.needs));
                match adopted {
                    Some(node) if seen.is_none() => {
                        placer.occupy(node, &game.needs);
                        decisions.push(Decision::Put {
                            game: game.name.clone(),
                            over: None,
                            assignment: Assignment::to(
                                node,
                                AssignmentReason::Adopted,
                                world.holder,
                            ),
                        });
                    }
                    _ if seen.is_none() && !game.new && !world.claims_over => {}
                    _ => to_place.push((game, revision, None, AssignmentReason::Scheduled)),
                }
            }
        }
    }
    for (game, revision, leaving, reason) in to_place {
        let seen = world.assignments.get(&game.name);
        match placer.place(&game.needs, leaving.as_deref()) {
            Ok(node) => {
                if let Some(left) = &leaving
                    && reason == AssignmentReason::Drained
                {
                    placer.vacate(left, &game.needs);
                }
                let reason = match reason {
                    AssignmentReason::Scheduled if game.needs.pinned.is_some() => {
                        AssignmentReason::Pinned
                    }
                    other => other,
                };
                decisions.push(Decision::Put {
                    game: game.name.clone(),
                    over: revision,
                    assignment: Assignment::to(&node, reason, world.holder),
                });
            }
            Err(why) => match reason {
                // Stays where it is until another node has room.
                AssignmentReason::Drained | AssignmentReason::NodeLost => {}
                _ => {
                    let message = why.to_string();
                    let unchanged = seen.is_some_and(|s| {
                        s.assignment.node.is_none()
                            && s.assignment.unschedulable.as_deref() == Some(message.as_str())
                    });
                    if !unchanged {
                        decisions.push(Decision::Put {
                            game: game.name.clone(),
                            over: revision,
                            assignment: Assignment::unschedulable(&message, world.holder),
                        });
                    }
                }
            },
        }
    }
    let documented: std::collections::HashSet<&str> = world
        .games
        .iter()
        .map(|g| g.name.as_str())
        .chain(world.invalid.iter().map(String::as_str))
        .collect();
    let mut orphans: Vec<(&String, &Arc<SeenAssignment>)> = world
        .assignments
        .iter()
        .filter(|(game, _)| !documented.contains(game.as_str()))
        .collect();
    orphans.sort_by(|a, b| a.0.cmp(b.0));
    for (game, seen) in orphans {
        let live = seen
            .assignment
            .node
            .as_deref()
            .and_then(|n| nodes.get(n))
            .is_some_and(|s| s.live);
        if !live {
            decisions.push(Decision::Delete {
                game: game.clone(),
                over: seen.revision,
            });
        }
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::Timestamp;

    fn node(name: &str, capacity: &str) -> NodeSnap {
        NodeSnap {
            record: NodeRecord {
                name: name.to_owned(),
                labels: Default::default(),
                capacity: capacity.parse().unwrap(),
                address: "10.0.0.1".into(),
                port_range: "17000-17999".parse().unwrap(),
                holder: format!("{name}-h"),
                version: "t".into(),
                registered_at: Timestamp::now(),
                ttl_ms: 15_000,
                self_fence_after_ms: Some(30_000),
                lost_at: None,
            },
            live: true,
            cordon: None,
            lost_for: None,
        }
    }

    fn game(name: &str) -> GameSnap {
        GameSnap {
            name: name.to_owned(),
            needs: Needs::default(),
            status_node: None,
            new: true,
        }
    }

    fn assigned(node: &str, revision: Revision) -> Arc<SeenAssignment> {
        Arc::new(SeenAssignment {
            assignment: Assignment::to(node, AssignmentReason::Scheduled, "s"),
            revision,
        })
    }

    struct Case {
        nodes: Vec<NodeSnap>,
        games: Vec<GameSnap>,
        assignments: HashMap<String, Arc<SeenAssignment>>,
        claims_over: bool,
    }

    impl Case {
        fn new(nodes: Vec<NodeSnap>, games: Vec<GameSnap>) -> Case {
            Case {
                nodes,
                games,
                assignments: HashMap::new(),
                claims_over: true,
            }
        }

        fn decide(&self) -> Vec<Decision> {
            decide(&World {
                nodes: &self.nodes,
                games: &self.games,
                invalid: &[],
                assignments: &self.assignments,
                grace: Duration::from_secs(60),
                claims_over: self.claims_over,
                strategy: Strategy::Distributed,
                holder: "s",
            })
        }
    }

    fn puts(decisions: &[Decision]) -> Vec<(String, Option<String>, AssignmentReason)> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Put {
                    game, assignment, ..
                } => Some((game.clone(), assignment.node.clone(), assignment.reason)),
                Decision::Delete { .. } => None,
            })
            .collect()
    }

    #[test]
    fn new_games_are_placed_once_and_kept_games_are_counted_first() {
        let mut case = Case::new(
            vec![node("n1", "games=2"), node("n2", "games=2")],
            vec![game("a"), game("b"), game("c")],
        );
        case.assignments.insert("a".into(), assigned("n1", 5));
        case.assignments.insert("b".into(), assigned("n1", 6));
        assert_eq!(
            puts(&case.decide()),
            [("c".into(), Some("n2".into()), AssignmentReason::Scheduled)],
            "n1 is full with a and b"
        );
        case.assignments.insert("c".into(), assigned("n2", 7));
        assert!(case.decide().is_empty(), "a placed world writes nothing");
    }

    #[test]
    fn unplaceable_games_say_why_once() {
        let mut case = Case::new(vec![node("n1", "games=0")], vec![game("a")]);
        let decisions = case.decide();
        let Decision::Put { assignment, .. } = &decisions[0] else {
            panic!("{decisions:?}")
        };
        assert_eq!(assignment.node, None);
        assert_eq!(
            assignment.unschedulable.as_deref(),
            Some("0/1 nodes fit: 1 insufficient games (--capacity games)")
        );
        case.assignments.insert(
            "a".into(),
            Arc::new(SeenAssignment {
                assignment: assignment.clone(),
                revision: 3,
            }),
        );
        assert!(case.decide().is_empty(), "the same reason is not rewritten");
        case.nodes.push(node("n2", ""));
        let decisions = case.decide();
        assert_eq!(
            puts(&decisions),
            [("a".into(), Some("n2".into()), AssignmentReason::Scheduled)]
        );
        assert!(matches!(&decisions[0], Decision::Put { over: Some(3), .. }));
    }

    #[test]
    fn a_status_on_a_live_node_is_adopted_and_old_games_wait_for_claims() {
        let mut old = game("old");
        old.new = false;
        let mut running = game("running");
        running.new = false;
        running.status_node = Some("n2".into());
        let mut case = Case::new(vec![node("n1", ""), node("n2", "")], vec![old, running]);
        case.claims_over = false;
        assert_eq!(
            puts(&case.decide()),
            [(
                "running".into(),
                Some("n2".into()),
                AssignmentReason::Adopted
            )],
            "the unclaimed old game waits for the claim window"
        );
        case.claims_over = true;
        assert_eq!(puts(&case.decide()).len(), 2);
    }

    #[test]
    fn a_draining_node_is_left_for_another_that_fits() {
        let mut drained = node("n1", "");
        drained.cordon = Some(Cordon {
            drain: true,
            deadline: None,
            at: Timestamp::now(),
            by: None,
        });
        let mut case = Case::new(
            vec![drained, node("n2", "games=1")],
            vec![game("a"), game("b")],
        );
        case.assignments.insert("a".into(), assigned("n1", 1));
        case.assignments.insert("b".into(), assigned("n1", 2));
        assert_eq!(
            puts(&case.decide()),
            [("a".into(), Some("n2".into()), AssignmentReason::Drained)],
            "b stays on n1 while n2 is full"
        );
    }

    #[test]
    fn a_lost_node_is_left_only_after_its_wait_and_only_if_it_fences() {
        let mut lost = node("n1", "");
        lost.live = false;
        lost.lost_for = Some(Duration::from_secs(59));
        let mut case = Case::new(vec![lost, node("n2", "")], vec![game("a")]);
        case.assignments.insert("a".into(), assigned("n1", 1));
        assert!(case.decide().is_empty(), "within the grace");
        case.nodes[0].lost_for = Some(Duration::from_secs(60));
        assert_eq!(
            puts(&case.decide()),
            [("a".into(), Some("n2".into()), AssignmentReason::NodeLost)]
        );
        case.nodes[0].record.self_fence_after_ms = None;
        assert!(
            case.decide().is_empty(),
            "a node that never fences is never left"
        );
        case.nodes[0].record.self_fence_after_ms = Some(80_000);
        assert!(
            case.decide().is_empty(),
            "not before 80 s + 10 s of margins, whatever the grace"
        );
        case.nodes[0].lost_for = Some(Duration::from_secs(90));
        assert_eq!(puts(&case.decide()).len(), 1);
    }

    #[test]
    fn a_changed_selector_moves_the_game_and_gone_games_lose_dead_assignments() {
        let mut eu = node("eu1", "");
        eu.record.labels.insert("region".into(), "eu".into());
        let mut pinned = game("a");
        pinned.needs.selector.insert("region".into(), "eu".into());
        let mut case = Case::new(vec![eu, node("us1", "")], vec![pinned]);
        case.assignments.insert("a".into(), assigned("us1", 1));
        case.assignments
            .insert("gone-live".into(), assigned("us1", 2));
        case.assignments
            .insert("gone-dead".into(), assigned("nowhere", 3));
        let decisions = case.decide();
        assert_eq!(
            puts(&decisions),
            [("a".into(), Some("eu1".into()), AssignmentReason::Moved)]
        );
        assert_eq!(
            decisions
                .iter()
                .filter(|d| matches!(d, Decision::Delete { .. }))
                .map(|d| d.game().to_owned())
                .collect::<Vec<_>>(),
            ["gone-dead"],
            "the live node deletes its own once the container is gone"
        );
    }
}
