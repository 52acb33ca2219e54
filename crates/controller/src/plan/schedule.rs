//! The scheduled-restart part of the decision, with no I/O: whether a window of the game's
//! `spec.restartSchedule` is due for its container, and what the status shows of the
//! schedule.
//!
//! (Interim: the windows come with the scheduled-restart work.)

use std::time::SystemTime;

use rtm_core::model::{GameRuntime, GameRuntimeStatus};

use super::Observed;

/// The window a restart is due for: the latest window of the schedule that the running
/// container predates (and that is not older than the schedule itself), if any.
pub(crate) fn due(
    _doc: &GameRuntime,
    _observed: &Observed,
    _now: SystemTime,
) -> Option<SystemTime> {
    None
}

/// Records the schedule in the status (what it needs to fire once per window).
pub(super) fn record(
    _status: &mut GameRuntimeStatus,
    _doc: &GameRuntime,
    _observed: &Observed,
    _now: SystemTime,
) {
}
