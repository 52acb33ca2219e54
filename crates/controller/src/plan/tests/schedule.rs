//! plan() and derive_status() under `spec.restartSchedule`: one restart per window for a
//! container that predates it, made up once after an outage, never for a window before the
//! controller knew the schedule, and never because a record was lost.

use super::*;
use rtm_core::model::{RestartScheduleStatus, Timestamp};

/// T0 (`at(0)`) is 2027-01-15T08:00:00Z, a whole hour.
fn scheduled(cron: &str, zone: Option<&str>) -> GameRuntime {
    let zone = zone.map_or(String::new(), |z| format!(", timeZone: {z}"));
    doc(&format!("  restartSchedule: {{cron: \"{cron}\"{zone}}}\n"))
}

/// A game as the controller sees it across reconciles: a scheduled recreate replaces the
/// container at once, and each status the plan derives is stored.
struct Game {
    doc: GameRuntime,
    observed: Observed,
    /// The windows it was restarted for, in seconds after T0.
    restarts: Vec<u64>,
    /// How many times `status.restartSchedule` changed (a status write each).
    schedule_writes: usize,
}

impl Game {
    /// Running a container of `doc` started at `started`, with a converged status record
    /// that has not seen the schedule yet.
    fn new(doc: GameRuntime, started: u64) -> Game {
        let mut c = container(&doc, ContainerState::Running);
        c.started_at = Some(at(started));
        Game {
            observed: observed(Some(c)),
            doc,
            restarts: Vec::new(),
            schedule_writes: 0,
        }
    }

    fn reconcile(&mut self, now: u64) {
        let action = decide(Some(&self.doc), &self.observed, now);
        if action
            == (Action::Recreate {
                cause: Cause::Scheduled,
            })
        {
            let window = crate::plan::schedule::due(&self.doc, &self.observed, at(now))
                .expect("a scheduled recreate has its window");
            self.restarts.push(seconds(window));
            let mut fresh = container(&self.doc, ContainerState::Running);
            fresh.id = format!("c{}", self.restarts.len() + 1);
            fresh.started_at = Some(at(now));
            self.observed.container = Some(fresh);
        } else {
            assert_eq!(action, Action::None, "at {now}");
        }
        let status = status_of(Some(&self.doc), &self.observed, now);
        if status.restart_schedule != self.observed.status.value.restart_schedule {
            self.schedule_writes += 1;
        }
        self.observed.status = Versioned::new(status, 1);
    }

    fn record(&self) -> &RestartScheduleStatus {
        self.observed
            .status
            .value
            .restart_schedule
            .as_ref()
            .expect("status.restartSchedule")
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(at(0)).expect("after T0").as_secs()
}

const HOUR: u64 = 3600;

#[test]
fn a_container_that_predates_a_window_is_restarted_once_for_it() {
    let mut game = Game::new(scheduled("0 * * * *", None), 0);
    for now in [30, 1800, HOUR - 1] {
        game.reconcile(now);
    }
    assert!(
        game.restarts.is_empty(),
        "no window since the schedule was seen"
    );
    for now in [HOUR, HOUR + 1, HOUR + 600, 2 * HOUR - 1] {
        game.reconcile(now);
    }
    assert_eq!(game.restarts, [HOUR], "once for 09:00");
    game.reconcile(2 * HOUR + 5);
    game.reconcile(2 * HOUR + 6);
    assert_eq!(game.restarts, [HOUR, 2 * HOUR], "and once for 10:00");
    let record = game.record();
    assert_eq!(record.since, Timestamp::from(at(30)));
    assert_eq!(record.last_window, Some(Timestamp::from(at(2 * HOUR))));
    assert_eq!(record.cron, "0 * * * *");
    assert_eq!(record.time_zone, "UTC");
    assert_eq!(
        game.schedule_writes, 3,
        "the record is written when first seen and once per answered window, not per reconcile"
    );
}

#[test]
fn a_container_started_after_the_window_is_not_restarted_for_it() {
    let mut game = Game::new(scheduled("0 * * * *", None), 0);
    game.reconcile(10);
    let mut late = container(&game.doc, ContainerState::Running);
    late.started_at = Some(at(HOUR + 50));
    game.observed.container = Some(late);
    game.reconcile(HOUR + 60);
    assert!(game.restarts.is_empty());
    assert_eq!(
        game.record().last_window,
        Some(Timestamp::from(at(HOUR))),
        "it answers 09:00"
    );
}

#[test]
fn windows_missed_while_no_controller_ran_are_made_up_once() {
    let mut game = Game::new(scheduled("* * * * *", None), 0);
    game.reconcile(10);
    // Every controller down from 08:00:10 to 08:10:30: ten windows went by.
    game.reconcile(630);
    game.reconcile(631);
    game.reconcile(659);
    assert_eq!(
        game.restarts,
        [600],
        "one restart, for the latest window (08:10)"
    );
    game.reconcile(660);
    assert_eq!(
        game.restarts,
        [600, 660],
        "the next window is answered as usual"
    );
}

#[test]
fn a_controller_back_after_an_outage_does_not_restart_a_container_twice() {
    // The first controller restarted for 08:05 and died; the next one reads its record.
    let mut game = Game::new(scheduled("* * * * *", None), 0);
    game.reconcile(10);
    game.reconcile(300);
    assert_eq!(game.restarts, [300]);
    let record = game.observed.status.value.clone();
    let mut back = Game::new(game.doc.clone(), 300);
    back.observed.status = Versioned::new(record, 7);
    back.reconcile(330);
    assert!(back.restarts.is_empty(), "the container answers 08:05");
}

#[test]
fn a_schedule_added_later_does_not_fire_for_windows_before_it() {
    let mut game = Game::new(doc(""), 0);
    game.reconcile(100);
    assert_eq!(game.observed.status.value.restart_schedule, None);
    // Applied at 09:23, after the 09:00 window the container predates.
    game.doc = scheduled("0 * * * *", None);
    game.reconcile(HOUR + 1380);
    game.reconcile(HOUR + 1400);
    assert!(game.restarts.is_empty());
    assert_eq!(game.record().since, Timestamp::from(at(HOUR + 1380)));
    game.reconcile(2 * HOUR);
    assert_eq!(game.restarts, [2 * HOUR], "the first window after it fires");
}

#[test]
fn a_lost_status_record_restarts_nothing() {
    let d = scheduled("* * * * *", None);
    let mut running = container(&d, ContainerState::Running);
    running.started_at = Some(at(0));
    // No status record at all (a lost or wiped key): the container is adopted, not
    // restarted, however many windows it predates.
    let lost = Observed {
        status: Versioned::absent(),
        container: Some(running),
        health: None,
        session: Versioned::absent(),
        budget_wait: None,
        registry_digest: None,
    };
    assert!(crate::plan::schedule::due(&d, &lost, at(600)).is_none());
    assert_ne!(
        decide(Some(&d), &lost, 600),
        Action::Recreate {
            cause: Cause::Scheduled
        }
    );
    // A record without the schedule's part (rebuilt, or from before it): the same.
    let mut game = Game::new(d, 0);
    game.reconcile(600);
    assert!(game.restarts.is_empty());
    assert_eq!(
        game.record().since,
        Timestamp::from(at(600)),
        "since starts now"
    );
    game.reconcile(660);
    assert_eq!(game.restarts, [660]);
}

#[test]
fn a_changed_cron_or_time_zone_starts_the_schedule_again_from_now() {
    let mut game = Game::new(scheduled("0 * * * *", None), 0);
    game.reconcile(10);
    // 08:58: the half-hour window 08:30 went by, the container predates it.
    game.doc = scheduled("30 * * * *", None);
    game.reconcile(HOUR - 120);
    assert!(game.restarts.is_empty(), "08:30 is older than the new cron");
    assert_eq!(game.record().cron, "30 * * * *");
    assert_eq!(game.record().since, Timestamp::from(at(HOUR - 120)));
    game.reconcile(HOUR + 1800);
    assert_eq!(game.restarts, [HOUR + 1800]);

    // 09:30 UTC every day, seen at 08:00:10; at 09:06 the zone becomes Berlin, whose
    // 09:30 (08:30Z) went by after the record began.
    let mut game = Game::new(scheduled("30 9 * * *", Some("UTC")), 0);
    game.reconcile(10);
    game.doc = scheduled("30 9 * * *", Some("Europe/Berlin"));
    game.reconcile(HOUR + 360);
    assert!(game.restarts.is_empty());
    assert_eq!(game.record().time_zone, "Europe/Berlin");
}

#[test]
fn removing_the_schedule_removes_its_record() {
    let mut game = Game::new(scheduled("0 * * * *", None), 0);
    game.reconcile(10);
    assert!(game.observed.status.value.restart_schedule.is_some());
    game.doc = doc("");
    game.reconcile(HOUR + 10);
    assert_eq!(game.observed.status.value.restart_schedule, None);
    assert!(game.restarts.is_empty());
}

#[test]
fn only_a_running_container_is_restarted_on_schedule() {
    let mut game = Game::new(scheduled("* * * * *", None), 0);
    game.reconcile(10);
    let paused = ContainerInfo {
        state: ContainerState::Paused,
        ..game.observed.container.clone().expect("a container")
    };
    game.observed.container = Some(paused);
    assert_eq!(
        decide(Some(&game.doc), &game.observed, 120),
        Action::Unpause
    );

    let stopped = scheduled("* * * * *", None);
    let mut stopped_doc = stopped.clone();
    stopped_doc.spec.state = DesiredState::Stopped;
    let mut o = observed(Some(exited(
        container(&stopped, ContainerState::Running),
        0,
        5,
    )));
    o.status.value = status_of(Some(&stopped_doc), &o, 6);
    assert_eq!(decide(Some(&stopped_doc), &o, 600), Action::None);
    assert!(crate::plan::schedule::due(&stopped_doc, &o, at(600)).is_none());
}

#[test]
fn a_restart_request_goes_before_the_schedule() {
    let mut game = Game::new(scheduled("* * * * *", Some("UTC")), 0);
    game.reconcile(10);
    let mut d = scheduled("* * * * *", Some("UTC"));
    d.spec.restart_token = "t-1".into();
    assert_eq!(
        decide(Some(&d), &game.observed, 120),
        Action::Recreate {
            cause: Cause::RestartRequested
        }
    );
}

#[test]
fn the_game_is_woken_just_after_its_next_window() {
    let d = scheduled("*/15 * * * *", None);
    let wake = crate::plan::schedule::wake(Some(&d), at(100)).expect("a wake");
    assert_eq!(wake, Duration::from_secs(800) + Duration::from_millis(100));
    // At the window itself: the next one.
    let wake = crate::plan::schedule::wake(Some(&d), at(900)).expect("a wake");
    assert_eq!(wake, Duration::from_secs(900) + Duration::from_millis(100));
    assert_eq!(crate::plan::schedule::wake(Some(&doc("")), at(100)), None);
    assert_eq!(crate::plan::schedule::wake(None, at(100)), None);
}
