//! Cron expressions read in a time zone: the windows of `spec.restartSchedule`.
//!
//! (Interim: the parser and the window arithmetic land with the scheduled-restart work;
//! until then only the shape of an expression is checked.)

use std::time::SystemTime;

/// A parsed `spec.restartSchedule`: five cron fields in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    cron: String,
    zone: String,
}

/// Why a schedule cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is unknown.
    #[error("unknown time zone {zone:?}: give an IANA name such as Europe/Berlin or UTC")]
    Zone {
        /// The zone as given.
        zone: String,
    },
}

impl ScheduleError {
    /// The field of `spec.restartSchedule` to blame: `cron` or `timeZone`.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron { .. } => "cron",
            ScheduleError::Zone { .. } => "timeZone",
        }
    }
}

impl Schedule {
    /// Reads `cron` (minute hour day-of-month month day-of-week) in the IANA zone `zone`.
    pub fn parse(cron: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let fields = cron.split_whitespace().count();
        if fields != 5 {
            return Err(ScheduleError::Cron {
                expression: cron.to_owned(),
                reason: format!("has {fields} fields; give five: minute hour day month weekday"),
            });
        }
        if zone.is_empty() {
            return Err(ScheduleError::Zone {
                zone: zone.to_owned(),
            });
        }
        Ok(Schedule {
            cron: cron.to_owned(),
            zone: zone.to_owned(),
        })
    }

    /// The latest window at or before `now`, if any.
    pub fn latest_at_or_before(&self, _now: SystemTime) -> Option<SystemTime> {
        None
    }

    /// The first window strictly after `after`, if any.
    pub fn next_after(&self, _after: SystemTime) -> Option<SystemTime> {
        None
    }
}
