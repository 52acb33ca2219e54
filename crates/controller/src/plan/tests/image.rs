//! plan() and derive_status() for `imagePullPolicy: Always`: a tag that moved in the
//! registry recreates the game once, as a voluntary update (sessions and budgets hold
//! it back); the same digest, no answer, or a container that does not say what it
//! runs never recreates; status.imageID comes from the container.

use super::*;
use crate::plan::disruption::voluntary;
use crate::runtime::LABEL_IMAGE_ID;
use rtm_core::model::{ImagePullPolicy, Session, SessionState, Timestamp};

const REPO: &str = "127.0.0.1:5100/pulls/engine";

fn always() -> GameRuntime {
    let mut d = doc("  imagePullPolicy: Always\n");
    d.spec.image = format!("{REPO}:1");
    d
}

/// A running container of `d` created for the digest `digest` of its repository.
fn running_for(d: &GameRuntime, digest: &str) -> Observed {
    let mut c = container(d, ContainerState::Running);
    c.labels
        .insert(LABEL_IMAGE_ID.to_owned(), format!("{REPO}@{digest}"));
    observed(Some(c))
}

fn seen(mut observed: Observed, digest: &str) -> Observed {
    observed.registry_digest = Some(digest.to_owned());
    observed
}

#[test]
fn a_moved_tag_recreates_a_game_that_follows_it_as_a_voluntary_update() {
    let d = always();
    let observed = seen(running_for(&d, "sha256:aaa"), "sha256:bbb");
    let action = decide(Some(&d), &observed, 10);
    assert_eq!(
        action,
        Action::Recreate {
            cause: Cause::ImageMoved
        }
    );
    assert_eq!(voluntary(&action, &observed), Some(Cause::ImageMoved));
}

#[test]
fn the_same_digest_no_answer_or_another_policy_never_recreates() {
    let d = always();
    let same = seen(running_for(&d, "sha256:aaa"), "sha256:aaa");
    assert_eq!(decide(Some(&d), &same, 10), Action::None);
    let unknown = running_for(&d, "sha256:aaa");
    assert_eq!(decide(Some(&d), &unknown, 10), Action::None);
    let mut if_not_present = d.clone();
    if_not_present.spec.image_pull_policy = ImagePullPolicy::IfNotPresent;
    let moved = seen(running_for(&if_not_present, "sha256:aaa"), "sha256:bbb");
    assert_eq!(decide(Some(&if_not_present), &moved, 10), Action::None);
}

#[test]
fn a_container_that_does_not_say_which_digest_it_runs_is_never_recreated_for_a_tag() {
    let d = always();
    // Created before the label existed, or from an image built on the host (its id).
    let unlabelled = seen(
        observed(Some(container(&d, ContainerState::Running))),
        "sha256:b",
    );
    assert_eq!(decide(Some(&d), &unlabelled, 10), Action::None);
    let mut by_id = container(&d, ContainerState::Running);
    by_id
        .labels
        .insert(LABEL_IMAGE_ID.to_owned(), "sha256:1".to_owned());
    let by_id = seen(observed(Some(by_id)), "sha256:b");
    assert_eq!(decide(Some(&d), &by_id, 10), Action::None);
    // A lost status record changes nothing: the label alone says what runs.
    let mut lost = seen(running_for(&d, "sha256:aaa"), "sha256:aaa");
    lost.status = Versioned::absent();
    assert!(!matches!(
        decide(Some(&d), &lost, 10),
        Action::Recreate { .. }
    ));
}

#[test]
fn a_moved_tag_waits_for_the_session_and_for_a_budget_slot() {
    let d = always();
    let mut in_session = seen(running_for(&d, "sha256:aaa"), "sha256:bbb");
    in_session.session = Versioned::new(
        Some(Session {
            state: SessionState::Allocated,
            reference: Some("match-7".into()),
            since: Timestamp::from(at(0)),
            container_id: Some("c1".into()),
            source: Some("api".into()),
        }),
        7,
    );
    assert_eq!(
        decide(Some(&d), &in_session, 10),
        Action::Defer {
            cause: Cause::ImageMoved,
            hold: Hold::Session,
            remaining: None
        }
    );
    let status = status_of(Some(&d), &in_session, 10);
    let pending = crate::plan::disruption::update_pending(&status).expect("UpdatePending");
    assert!(
        pending.message.contains("move of") && pending.message.contains(REPO),
        "{}",
        pending.message
    );
    let mut budgeted = seen(running_for(&d, "sha256:aaa"), "sha256:bbb");
    budgeted.budget_wait = Some(BudgetWait {
        budget: "all".into(),
        allowed: 1,
        holders: vec!["g7".into()],
        unreadable: None,
    });
    assert!(matches!(
        decide(Some(&d), &budgeted, 10),
        Action::Defer {
            cause: Cause::ImageMoved,
            hold: Hold::Budget,
            ..
        }
    ));
}

#[test]
fn status_image_id_is_the_labelled_digest_else_the_image_id() {
    let d = always();
    let labelled = running_for(&d, "sha256:aaa");
    let status = status_of(Some(&d), &labelled, 10);
    assert_eq!(
        status.image_id.as_deref(),
        Some(format!("{REPO}@sha256:aaa").as_str())
    );
    let plain = observed(Some(container(&d, ContainerState::Running)));
    assert_eq!(
        status_of(Some(&d), &plain, 10).image_id.as_deref(),
        Some("sha256:1")
    );
    assert_eq!(status_of(Some(&d), &observed(None), 10).image_id, None);
}
