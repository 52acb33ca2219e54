//! The scheduled-restart part of the decision, with no I/O: whether a window of the game's
//! `spec.restartSchedule` is due for its container, and what the status keeps of the
//! schedule (`status.restartSchedule`).
//!
//! The container is the truth of what was answered: a window is due when the running
//! container started before it. The status adds one fact the container cannot carry —
//! since when the controller knows this schedule — so that only windows after that count.
//! Hence a window missed while every controller was down is made up once when one returns
//! (the container still predates it), never twice (its replacement does not); and a
//! schedule just added, changed, or whose record was lost starts from now: losing a record
//! never disrupts a game.

use std::time::{Duration, SystemTime};

use rtm_core::model::{
    GameRuntime, GameRuntimeStatus, RestartSchedule, RestartScheduleStatus, Timestamp,
};
use rtm_core::schedule::Schedule;

use super::Observed;

/// The window a restart is due for: the latest window of the schedule at or before `now`,
/// when the container runs, started before it, and the window is later than when the
/// controller first saw this schedule (`status.restartSchedule.since`). None without a
/// schedule, without a record of it, or when the container already answers the window.
pub(crate) fn due(doc: &GameRuntime, observed: &Observed, now: SystemTime) -> Option<SystemTime> {
    let spec = doc.spec.restart_schedule.as_ref()?;
    // No record (new schedule, changed schedule, lost status): `since` is now, and no
    // window at or before now is later than that.
    let record = record_of(&observed.status.value, spec)?;
    let container = observed.container.as_ref().filter(|c| c.is_running())?;
    // A running container always has a start time; without one nothing says it predates
    // the window, and a guess must not disrupt.
    let started = container.started_at?;
    let window = read(spec)?.latest_at_or_before(now)?;
    (window > record.since.system_time() && started < window).then_some(window)
}

/// Keeps `status.restartSchedule` for the document's schedule: started (with `since` now)
/// when there is none for this cron and zone, `lastWindow` moved on when the container
/// answers a newer window, and removed without a schedule. It changes at most once per
/// window, so a converged game costs no status writes.
pub(super) fn record(
    status: &mut GameRuntimeStatus,
    doc: &GameRuntime,
    observed: &Observed,
    now: SystemTime,
) {
    let Some((spec, schedule)) = doc
        .spec
        .restart_schedule
        .as_ref()
        .and_then(|spec| Some((spec, read(spec)?)))
    else {
        status.restart_schedule = None;
        return;
    };
    let mut record = match record_of(status, spec) {
        Some(record) => record.clone(),
        None => RestartScheduleStatus {
            cron: spec.cron.clone(),
            time_zone: spec.zone().to_owned(),
            since: Timestamp::from(now),
            last_window: None,
        },
    };
    let started = observed
        .container
        .as_ref()
        .filter(|c| c.is_running())
        .and_then(|c| c.started_at);
    if let (Some(started), Some(window)) = (started, schedule.latest_at_or_before(now)) {
        let window = Timestamp::from(window);
        let answered = started >= window.system_time() && window > record.since;
        if answered && record.last_window.is_none_or(|last| last < window) {
            record.last_window = Some(window);
        }
    }
    status.restart_schedule = Some(record);
}

/// How long after the next window the queue should look at the game again: the timer runs
/// on the monotonic clock and the window on the wall clock, so a wake a little early finds
/// nothing due and asks again for the (then tiny) rest.
const WAKE_AFTER_WINDOW: Duration = Duration::from_millis(100);

/// How long until the game should be looked at for its next window (none without a
/// schedule). The periodic resync alone would answer a window up to a resync late, and
/// with a per-minute schedule merge two windows into one.
pub(crate) fn wake(doc: Option<&GameRuntime>, now: SystemTime) -> Option<Duration> {
    let spec = doc?.spec.restart_schedule.as_ref()?;
    let next = read(spec)?.next_after(now)?;
    Some(next.duration_since(now).unwrap_or_default() + WAKE_AFTER_WINDOW)
}

/// The status record, when it is for this cron expression and zone.
fn record_of<'s>(
    status: &'s GameRuntimeStatus,
    spec: &RestartSchedule,
) -> Option<&'s RestartScheduleStatus> {
    status
        .restart_schedule
        .as_ref()
        .filter(|record| record.cron == spec.cron && record.time_zone == spec.zone())
}

/// The schedule, read; none when it does not parse (validation refuses such a document,
/// so only one written around it gets here, and it is not restarted).
fn read(spec: &RestartSchedule) -> Option<Schedule> {
    Schedule::parse(&spec.cron, spec.zone()).ok()
}
