//! What a game's document says about disrupting it: how long a voluntary disruption may wait
//! for a session to end (`spec.disruption`), how its container is stopped
//! (`spec.lifecycle`) and when it is restarted on a schedule (`spec.restartSchedule`). The
//! shapes only: `validate.rs` checks them, the controller's `plan` and `lifecycle` act on
//! them. None of them is in the spec hash: changing them never recreates a game.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Timestamp, defaults, is_true, quantity};

/// How voluntary disruptions (a spec change that needs a new container, a restart, a
/// scheduled restart) treat a game in session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disruption {
    /// The longest a voluntary disruption waits for the game's session to end, e.g. `2h`
    /// (1s to 30 days), counted from when it began to wait; after it the disruption goes
    /// ahead and the history says so. Without it, it waits until the session ends.
    #[serde(
        default,
        with = "quantity::optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub max_session_wait: Option<Duration>,
}

impl Disruption {
    /// True when nothing is set (the field is then left out of the YAML).
    pub fn is_empty(&self) -> bool {
        self.max_session_wait.is_none()
    }
}

/// How the container is stopped: a command run in it first, a delay, then a signal. All
/// within `spec.stopTimeout`, after which the container is killed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifecycle {
    /// The signal that asks the engine to stop, e.g. `SIGINT` (`SIGTERM` when absent): a
    /// name from SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// A command run inside the container before the signal, e.g. to announce the restart
    /// to the players and save the match. Its outcome is recorded in the stop's history
    /// entry; a failure (`prestop_failed`) does not prevent the stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<PreStop>,
    /// How long to wait after the preStop command (or from the start of the stop) before
    /// the signal, e.g. `5s` (0 when absent).
    #[serde(
        default,
        with = "quantity::duration",
        skip_serializing_if = "Duration::is_zero"
    )]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub shutdown_delay: Duration,
}

impl Lifecycle {
    /// True when nothing is set (the field is then left out of the YAML).
    pub fn is_empty(&self) -> bool {
        self.stop_signal.is_none() && self.pre_stop.is_none() && self.shutdown_delay.is_zero()
    }

    /// The stop signal's name: `spec.lifecycle.stopSignal`, or `SIGTERM`.
    pub fn signal(&self) -> &str {
        self.stop_signal.as_deref().unwrap_or(defaults::STOP_SIGNAL)
    }
}

/// The signals `spec.lifecycle.stopSignal` may name: those a game engine may handle to shut
/// down cleanly (SIGKILL and SIGSTOP cannot be handled, and the rest stop nothing).
pub const STOP_SIGNALS: [&str; 7] = [
    "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGWINCH",
];

/// The command of `spec.lifecycle.preStop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreStop {
    /// The command, run inside the container (Docker exec).
    pub exec: ExecAction,
    /// How long the command may run, e.g. `20s` (1s up to the stop timeout; `10s` when
    /// absent, or the stop timeout when that is shorter); it is then left behind and the
    /// stop goes on.
    #[serde(
        default,
        with = "quantity::optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "quantity::duration_schema")]
    pub timeout: Option<Duration>,
}

impl PreStop {
    /// The command's time bound within a stop of `stop_timeout`.
    pub fn effective_timeout(&self, stop_timeout: Duration) -> Duration {
        self.timeout
            .unwrap_or(defaults::PRE_STOP_TIMEOUT)
            .min(stop_timeout)
    }
}

/// A command run inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecAction {
    /// The program and its arguments, run without a shell, e.g.
    /// `[/bin/sh, -c, "echo restarting > /proc/1/fd/1"]`.
    pub command: Vec<String>,
}

/// A restart on a schedule: the controller asks for a restart once per window of the cron
/// expression (a window missed while no controller ran is made up once, never twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartSchedule {
    /// When, as five cron fields (minute hour day-of-month month day-of-week), e.g.
    /// `0 6 * * *` (06:00 every day) or `30 4 * * mon` (04:30 on Mondays).
    pub cron: String,
    /// The IANA time zone the expression is read in, e.g. `Europe/Berlin`; `UTC` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Whether the restart waits for the game's session to end (the default); with `false`
    /// it ends a live match at the scheduled time.
    #[serde(default = "defaults::when_idle", skip_serializing_if = "is_true")]
    pub when_idle: bool,
}

impl RestartSchedule {
    /// The time zone's name: `timeZone`, or `UTC`.
    pub fn zone(&self) -> &str {
        self.time_zone.as_deref().unwrap_or("UTC")
    }
}

/// What the controller keeps of `spec.restartSchedule` in the status (`status.restartSchedule`)
/// to restart once per window. Written when the schedule is first seen (or changed) and when
/// a window is answered: at most once per window, never on every reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestartScheduleStatus {
    /// The cron expression this record is for; a different one starts a new record.
    pub cron: String,
    /// The time zone it is read in (`UTC` when absent); a different one starts a new record.
    pub time_zone: String,
    /// When the controller first saw this schedule. Only windows after it restart the game:
    /// a schedule added (or a record lost) never makes up a past window.
    pub since: Timestamp,
    /// The latest window the current container answers (it was started at or after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_window: Option<Timestamp>,
}
