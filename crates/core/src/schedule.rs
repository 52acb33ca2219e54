//! Cron expressions read in a time zone: the windows of `spec.restartSchedule`.
//!
//! A [`Schedule`] is five cron fields (minute hour day-of-month month day-of-week) and an
//! IANA time zone. Its *windows* are instants: each local time the fields match, mapped to
//! the zone's clock. Two rules make that mapping total across daylight-saving changes:
//!
//! - a local time skipped by a change (02:30 on the spring-forward night in Europe/Berlin)
//!   is a window at the first instant after the gap (03:00 local);
//! - a local time that occurs twice (02:30 on the fall-back night) is one window, at its
//!   first occurrence.
//!
//! Both follow from one definition: the window of a matching local time `c` is the first
//! instant whose local time is at or after `c`. That mapping never goes backwards, so the
//! search runs over local times, skipping by field (a month, day or hour that cannot match
//! is passed over whole), and converts only the candidates it lands on.
//!
//! Time zones come from the tz database compiled into the binary (jiff's bundled copy), not
//! from the host's /usr/share/zoneinfo, which slim containers often lack.

use std::fmt;
use std::sync::LazyLock;
use std::time::SystemTime;

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};

/// The tz database compiled into the binary: the same rules on every host, whether or not
/// it has /usr/share/zoneinfo (and whatever features another crate turns on in jiff).
static ZONES: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// How many years a search looks ahead or back for a match. A valid expression matches at
/// least every eight years (29 February, skipping a non-leap century year); 28 leaves room.
const SEARCH_YEARS: i32 = 28;

/// A parsed `spec.restartSchedule`: five cron fields in a time zone.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    cron: String,
    fields: Fields,
    zone: TimeZone,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("cron", &self.cron)
            .field("zone", &self.zone.iana_name())
            .finish()
    }
}

/// Why a schedule cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression is malformed.
    #[error("invalid cron expression {expression:?}: {reason}")]
    Cron {
        /// The expression as given.
        expression: String,
        /// What is wrong with it, naming the cron field, e.g. `minute 61 is out of range
        /// 0-59`.
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
    ///
    /// Each field takes `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from
    /// `a` to the field's end), and lists of those (`1,15,30-40/5`). Months and weekdays
    /// also take names (`jan`…`dec`, `sun`…`sat`, any case); weekday 0 and 7 are both
    /// Sunday (so `fri-sun` works). When both day fields are restricted (neither contains
    /// `*`), a day matches when either does, as in classic cron.
    pub fn parse(cron: &str, zone: &str) -> Result<Schedule, ScheduleError> {
        let fields = Fields::parse(cron).map_err(|reason| ScheduleError::Cron {
            expression: cron.to_owned(),
            reason,
        })?;
        let zone = ZONES.get(zone).map_err(|_| ScheduleError::Zone {
            zone: zone.to_owned(),
        })?;
        Ok(Schedule {
            cron: cron.to_owned(),
            fields,
            zone,
        })
    }

    /// The cron expression as given.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// The time zone's canonical IANA name (`UTC` for UTC).
    pub fn zone_name(&self) -> &str {
        self.zone.iana_name().unwrap_or("UTC")
    }

    /// The latest window at or before `now`, if any (none within 28 years).
    pub fn latest_at_or_before(&self, now: SystemTime) -> Option<SystemTime> {
        let local = self.local(now)?;
        // Every local time up to `now`'s own maps to an instant at or before `now` (the
        // mapping never goes backwards), so the last match up to it is a window ≤ now…
        let mut latest = self.fields.prev_match(local)?;
        // …and later local times still can, while the clock repeats an hour (a fold): `now`
        // in its second pass sees the first pass's windows behind it. At most one fold's
        // worth of matches.
        while let Some(next) = self.fields.next_match(latest.plus_minute()) {
            if self.instant(next).is_none_or(|at| at > now) {
                break;
            }
            latest = next;
        }
        self.instant(latest)
    }

    /// The first window strictly after `after`, if any (none within 28 years).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        // Local times up to `after`'s own map to instants at or before it: start past it.
        let mut candidate = self.fields.next_match(self.local(after)?.plus_minute())?;
        loop {
            let at = self.instant(candidate)?;
            // Past a fold's first pass, or within a gap, several local times share an
            // instant or lie behind `after`: skip them.
            if at > after {
                return Some(at);
            }
            candidate = self.fields.next_match(candidate.plus_minute())?;
        }
    }

    /// `at` on the zone's clock, to the minute (seconds dropped).
    fn local(&self, at: SystemTime) -> Option<Civil> {
        let timestamp = jiff::Timestamp::try_from(at).ok()?;
        let local = self.zone.to_datetime(timestamp);
        Some(Civil {
            year: i32::from(local.year()),
            month: i32::from(local.month()),
            day: i32::from(local.day()),
            hour: i32::from(local.hour()),
            minute: i32::from(local.minute()),
        })
    }

    /// The window of the local time `local`: the first instant whose local time is at or
    /// after it (the instant itself when it occurs once; its first occurrence when it
    /// occurs twice; the end of the gap when the clock skips it).
    fn instant(&self, local: Civil) -> Option<SystemTime> {
        let civil = DateTime::new(
            i16::try_from(local.year).ok()?,
            i8::try_from(local.month).ok()?,
            i8::try_from(local.day).ok()?,
            i8::try_from(local.hour).ok()?,
            i8::try_from(local.minute).ok()?,
            0,
            0,
        )
        .ok()?;
        let timestamp = match self.zone.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok()?,
            AmbiguousOffset::Fold { before, after } => {
                let first = before.to_timestamp(civil).ok()?;
                let second = after.to_timestamp(civil).ok()?;
                first.min(second)
            }
            AmbiguousOffset::Gap { before, after } => {
                // Read with the later offset, the local time names an instant before the
                // change; the change itself is where the gap ends.
                let ahead = after.to_timestamp(civil).ok()?;
                match self.zone.following(ahead).next() {
                    Some(change) => change.timestamp(),
                    None => before.to_timestamp(civil).ok()?,
                }
            }
        };
        SystemTime::try_from(timestamp).ok()
    }
}

/// A local time to the minute. Fields are wide and may run one past their range while a
/// search steps (day 32, hour 24, month 0): each level of the search treats such a value
/// as "nothing left here" and moves to the next unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Civil {
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    minute: i32,
}

impl Civil {
    /// One minute later (left for the search to carry into hours, days, …).
    fn plus_minute(self) -> Civil {
        Civil {
            minute: self.minute + 1,
            ..self
        }
    }
}

/// The five fields as sets of values, one bit per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month and day-of-week were written without `*`: a day then matches
    /// when either field does (classic cron), else when both do.
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// One cron field: its name in error messages, its range and its value names.
struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for `min`, `min + 1`, … (e.g. `jan` is 1).
    names: &'static [&'static str],
    names_hint: &'static str,
}

const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_hint: "",
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_hint: "",
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    names_hint: "",
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_hint: " or a month name (jan…dec)",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_hint: " or a weekday name (sun…sat)",
};

/// One field read: its set of values and whether it was written with `*`.
struct Parsed {
    bits: u64,
    starred: bool,
}

impl FieldSpec {
    fn parse(&self, text: &str) -> Result<Parsed, String> {
        let mut parsed = Parsed {
            bits: 0,
            starred: false,
        };
        for item in text.split(',') {
            if item.is_empty() {
                return Err(format!("{} {text:?} has an empty list item", self.name));
            }
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => (range, Some(self.step(step)?)),
                None => (item, None),
            };
            let (first, last) = if range == "*" {
                parsed.starred = true;
                (self.min, self.max)
            } else if let Some((first, last)) = range.split_once('-') {
                let first = self.value(first)?;
                let mut last = self.value(last)?;
                if self.name == DAY_OF_WEEK.name && last == 0 && first > 0 {
                    // `fri-sun`: Sunday is 7 as well as 0.
                    last = 7;
                }
                if first > last {
                    return Err(format!(
                        "{} range {range} is reversed: give the smaller value first",
                        self.name
                    ));
                }
                (first, last)
            } else {
                let first = self.value(range)?;
                // `a/n` runs from a to the field's end; a lone `a` is itself.
                (first, if step.is_some() { self.max } else { first })
            };
            let step = step.unwrap_or(1);
            let mut value = first;
            while value <= last {
                parsed.bits |= 1 << value;
                value += step;
            }
        }
        if self.name == DAY_OF_WEEK.name && parsed.bits & (1 << 7) != 0 {
            // 7 is Sunday, kept as 0.
            parsed.bits = (parsed.bits & !(1 << 7)) | 1;
        }
        Ok(parsed)
    }

    fn value(&self, text: &str) -> Result<u32, String> {
        if let Ok(value) = text.parse::<u32>() {
            if value < self.min || value > self.max {
                return Err(format!(
                    "{} {value} is out of range {}-{}",
                    self.name, self.min, self.max
                ));
            }
            return Ok(value);
        }
        let lower = text.to_ascii_lowercase();
        match self.names.iter().position(|name| *name == lower) {
            Some(index) => Ok(self.min + index as u32),
            None => Err(format!(
                "{} {text:?} is not a number{}",
                self.name, self.names_hint
            )),
        }
    }

    fn step(&self, text: &str) -> Result<u32, String> {
        match text.parse::<u32>() {
            Ok(step) if step >= 1 => Ok(step),
            _ => Err(format!(
                "{} step {text:?} must be a whole number of at least 1",
                self.name
            )),
        }
    }
}

impl Fields {
    fn parse(cron: &str) -> Result<Fields, String> {
        let parts: Vec<&str> = cron.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err(format!(
                "has {} fields; give five: minute hour day-of-month month day-of-week",
                parts.len()
            ));
        };
        let days = DAY_OF_MONTH.parse(day)?;
        let weekdays = DAY_OF_WEEK.parse(weekday)?;
        let fields = Fields {
            minutes: MINUTE.parse(minute)?.bits,
            hours: HOUR.parse(hour)?.bits,
            days: days.bits,
            months: MONTH.parse(month)?.bits,
            weekdays: weekdays.bits,
            days_restricted: !days.starred,
            weekdays_restricted: !weekdays.starred,
        };
        fields.check_reachable(day, month)?;
        Ok(fields)
    }

    /// Refuses an expression that can never match (`0 0 31 feb,apr *`): it would be a
    /// schedule that silently never restarts anything.
    fn check_reachable(&self, day: &str, month: &str) -> Result<(), String> {
        if self.weekdays_restricted && self.days_restricted {
            // Any weekday is a match: some day of every month.
            return Ok(());
        }
        let first_day = self.days.trailing_zeros();
        // 29 February occurs in leap years: a month's longest length is what counts.
        let reachable =
            (1..=12).any(|month| self.months & (1 << month) != 0 && first_day <= longest(month));
        if reachable {
            Ok(())
        } else {
            Err(format!("day-of-month {day} never occurs in month {month}"))
        }
    }

    fn day_matches(&self, year: i32, month: i32, day: i32) -> bool {
        let by_date = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday(year, month, day)) != 0;
        if self.days_restricted && self.weekdays_restricted {
            by_date || by_weekday
        } else {
            by_date && by_weekday
        }
    }

    /// The first matching day of the month at or after `from`.
    fn next_day(&self, year: i32, month: i32, from: i32) -> Option<i32> {
        (from.max(1)..=days_in_month(year, month)).find(|&day| self.day_matches(year, month, day))
    }

    /// The last matching day of the month at or before `from`.
    fn prev_day(&self, year: i32, month: i32, from: i32) -> Option<i32> {
        (1..=from.min(days_in_month(year, month)))
            .rev()
            .find(|&day| self.day_matches(year, month, day))
    }

    /// The first matching local time at or after `from`.
    fn next_match(&self, mut at: Civil) -> Option<Civil> {
        let limit = at.year + SEARCH_YEARS;
        loop {
            if at.year > limit.min(9999) {
                return None;
            }
            match next_bit(self.months, at.month) {
                None => {
                    at = Civil {
                        year: at.year + 1,
                        month: 1,
                        day: 1,
                        hour: 0,
                        minute: 0,
                    };
                    continue;
                }
                Some(month) if month != at.month => {
                    at = Civil {
                        month,
                        day: 1,
                        hour: 0,
                        minute: 0,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match self.next_day(at.year, at.month, at.day) {
                None => {
                    at = Civil {
                        month: at.month + 1,
                        day: 1,
                        hour: 0,
                        minute: 0,
                        ..at
                    };
                    continue;
                }
                Some(day) if day != at.day => {
                    at = Civil {
                        day,
                        hour: 0,
                        minute: 0,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match next_bit(self.hours, at.hour) {
                None => {
                    at = Civil {
                        day: at.day + 1,
                        hour: 0,
                        minute: 0,
                        ..at
                    };
                    continue;
                }
                Some(hour) if hour != at.hour => {
                    at = Civil {
                        hour,
                        minute: 0,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, at.minute) {
                None => {
                    at = Civil {
                        hour: at.hour + 1,
                        minute: 0,
                        ..at
                    };
                }
                Some(minute) => return Some(Civil { minute, ..at }),
            }
        }
    }

    /// The last matching local time at or before `from`.
    fn prev_match(&self, mut at: Civil) -> Option<Civil> {
        let limit = at.year - SEARCH_YEARS;
        loop {
            if at.year < limit.max(1) {
                return None;
            }
            match prev_bit(self.months, at.month) {
                None => {
                    at = Civil {
                        year: at.year - 1,
                        month: 12,
                        day: 31,
                        hour: 23,
                        minute: 59,
                    };
                    continue;
                }
                Some(month) if month != at.month => {
                    at = Civil {
                        month,
                        day: 31,
                        hour: 23,
                        minute: 59,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match self.prev_day(at.year, at.month, at.day) {
                None => {
                    at = Civil {
                        month: at.month - 1,
                        day: 31,
                        hour: 23,
                        minute: 59,
                        ..at
                    };
                    continue;
                }
                Some(day) if day != at.day => {
                    at = Civil {
                        day,
                        hour: 23,
                        minute: 59,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match prev_bit(self.hours, at.hour) {
                None => {
                    at = Civil {
                        day: at.day - 1,
                        hour: 23,
                        minute: 59,
                        ..at
                    };
                    continue;
                }
                Some(hour) if hour != at.hour => {
                    at = Civil {
                        hour,
                        minute: 59,
                        ..at
                    };
                }
                Some(_) => {}
            }
            match prev_bit(self.minutes, at.minute) {
                None => {
                    at = Civil {
                        hour: at.hour - 1,
                        minute: 59,
                        ..at
                    };
                }
                Some(minute) => return Some(Civil { minute, ..at }),
            }
        }
    }
}

/// The lowest value in `bits` at or above `from`.
fn next_bit(bits: u64, from: i32) -> Option<i32> {
    let from = u32::try_from(from).ok()?;
    let above = bits.checked_shr(from)?;
    (above != 0).then(|| (from + above.trailing_zeros()) as i32)
}

/// The highest value in `bits` at or below `from`.
fn prev_bit(bits: u64, from: i32) -> Option<i32> {
    let from = u32::try_from(from).ok()?.min(63);
    let below = bits & (u64::MAX >> (63 - from));
    (below != 0).then(|| (63 - below.leading_zeros()) as i32)
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: i32) -> i32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => 0,
    }
}

/// A month's length in a leap year.
fn longest(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The weekday of a date, 0 for Sunday (days counted from 1970-01-01, a Thursday).
fn weekday(year: i32, month: i32, day: i32) -> i32 {
    // Days since the epoch of the proleptic Gregorian calendar, counting years from March
    // so that the leap day ends a year.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    (days + 4).rem_euclid(7)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn schedule(cron: &str, zone: &str) -> Schedule {
        Schedule::parse(cron, zone).unwrap_or_else(|e| panic!("{cron} in {zone}: {e}"))
    }

    /// An RFC 3339 instant (`2024-03-31T01:00:00Z`).
    fn at(text: &str) -> SystemTime {
        let timestamp: jiff::Timestamp = text.parse().expect("an RFC 3339 instant");
        SystemTime::try_from(timestamp).expect("an instant after 1970")
    }

    fn show(time: Option<SystemTime>) -> Option<String> {
        time.map(|t| {
            jiff::Timestamp::try_from(t)
                .expect("a printable instant")
                .to_string()
        })
    }

    fn reason(cron: &str) -> String {
        match Schedule::parse(cron, "UTC") {
            Err(ScheduleError::Cron { reason, .. }) => reason,
            other => panic!("{cron}: expected a cron error, got {other:?}"),
        }
    }

    /// The windows from `start` on, `count` of them, following next_after.
    fn windows(s: &Schedule, start: &str, count: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = at(start);
        for _ in 0..count {
            t = s.next_after(t).expect("a next window");
            out.push(show(Some(t)).expect("printable"));
        }
        out
    }

    #[test]
    fn errors_name_the_cron_field_and_the_value() {
        assert_eq!(reason("61 * * * *"), "minute 61 is out of range 0-59");
        assert_eq!(reason("* 24 * * *"), "hour 24 is out of range 0-23");
        assert_eq!(reason("* * 0 * *"), "day-of-month 0 is out of range 1-31");
        assert_eq!(reason("* * * 13 *"), "month 13 is out of range 1-12");
        assert_eq!(reason("* * * * 8"), "day-of-week 8 is out of range 0-7");
        assert_eq!(
            reason("* * * foo *"),
            "month \"foo\" is not a number or a month name (jan…dec)"
        );
        assert_eq!(
            reason("* * * * funday"),
            "day-of-week \"funday\" is not a number or a weekday name (sun…sat)"
        );
        assert_eq!(reason("x * * * *"), "minute \"x\" is not a number");
        assert_eq!(
            reason("*/0 * * * *"),
            "minute step \"0\" must be a whole number of at least 1"
        );
        assert_eq!(
            reason("* 5-3 * * *"),
            "hour range 5-3 is reversed: give the smaller value first"
        );
        assert_eq!(
            reason("1,,2 * * * *"),
            "minute \"1,,2\" has an empty list item"
        );
        assert_eq!(
            reason("* * * *"),
            "has 4 fields; give five: minute hour day-of-month month day-of-week"
        );
        assert_eq!(
            reason("0 0 * * * *"),
            "has 6 fields; give five: minute hour day-of-month month day-of-week"
        );
        assert_eq!(
            reason("0 0 30,31 feb *"),
            "day-of-month 30,31 never occurs in month feb"
        );
        let error = Schedule::parse("61 * * * *", "UTC").unwrap_err();
        assert_eq!(error.field(), "cron");
        assert_eq!(
            error.to_string(),
            "invalid cron expression \"61 * * * *\": minute 61 is out of range 0-59"
        );
    }

    #[test]
    fn an_unknown_zone_is_refused_and_names_the_time_zone_field() {
        for zone in ["", "Mars/Olympus", "CEST+2"] {
            let error = Schedule::parse("0 6 * * *", zone).unwrap_err();
            assert_eq!(error.field(), "timeZone", "{zone}");
        }
        assert_eq!(
            schedule("0 6 * * *", "europe/berlin").zone_name(),
            "Europe/Berlin"
        );
        assert_eq!(schedule("0 6 * * *", "UTC").zone_name(), "UTC");
    }

    #[test]
    fn zones_come_from_the_bundled_database_not_the_host() {
        // Even with no zoneinfo where jiff would look, the zone is known.
        let db = TimeZoneDatabase::bundled();
        assert!(db.get("Australia/Lord_Howe").is_ok());
        assert!(Schedule::parse("0 6 * * *", "Australia/Lord_Howe").is_ok());
    }

    #[test]
    fn a_daily_time_fires_every_day_at_that_local_time() {
        let s = schedule("0 6 * * *", "Europe/Berlin");
        assert_eq!(
            windows(&s, "2024-06-01T00:00:00Z", 2),
            ["2024-06-01T04:00:00Z", "2024-06-02T04:00:00Z"]
        );
        // Winter: an hour later in UTC.
        assert_eq!(
            windows(&s, "2024-12-01T00:00:00Z", 1),
            ["2024-12-01T05:00:00Z"]
        );
    }

    #[test]
    fn lists_ranges_steps_and_names_combine() {
        let s = schedule("0,30 8-17/3 * * *", "UTC");
        assert_eq!(
            windows(&s, "2024-05-01T00:00:00Z", 5),
            [
                "2024-05-01T08:00:00Z",
                "2024-05-01T08:30:00Z",
                "2024-05-01T11:00:00Z",
                "2024-05-01T11:30:00Z",
                "2024-05-01T14:00:00Z",
            ]
        );
        let s = schedule("45/5 0 1 JAN,Jul *", "UTC");
        assert_eq!(
            windows(&s, "2024-05-01T00:00:00Z", 4),
            [
                "2024-07-01T00:45:00Z",
                "2024-07-01T00:50:00Z",
                "2024-07-01T00:55:00Z",
                "2025-01-01T00:45:00Z",
            ]
        );
    }

    #[test]
    fn sunday_is_zero_and_seven_and_ends_a_named_range() {
        // 2024-05-05 is a Sunday.
        for cron in [
            "0 12 * * 0",
            "0 12 * * 7",
            "0 12 * * SUN",
            "0 12 * * sat-sun",
        ] {
            let s = schedule(cron, "UTC");
            let first = windows(&s, "2024-05-03T00:00:00Z", 1);
            let expected = if cron.ends_with("sat-sun") {
                "2024-05-04T12:00:00Z"
            } else {
                "2024-05-05T12:00:00Z"
            };
            assert_eq!(first, [expected], "{cron}");
        }
        let s = schedule("0 0 * * fri-sun", "UTC");
        assert_eq!(
            windows(&s, "2024-05-02T00:00:00Z", 4),
            [
                "2024-05-03T00:00:00Z",
                "2024-05-04T00:00:00Z",
                "2024-05-05T00:00:00Z",
                "2024-05-10T00:00:00Z",
            ]
        );
    }

    #[test]
    fn two_restricted_day_fields_match_either_one_starred_field_defers_to_the_other() {
        // The 13th, or any Friday: 2024-09-06 and 2024-09-13 are Fridays.
        let either = schedule("0 0 13 * fri", "UTC");
        assert_eq!(
            windows(&either, "2024-09-01T00:00:00Z", 3),
            [
                "2024-09-06T00:00:00Z",
                "2024-09-13T00:00:00Z",
                "2024-09-20T00:00:00Z",
            ]
        );
        // Odd days that are Mondays (`*/2` contains `*`): 2024-09-09, -23.
        let both = schedule("0 0 */2 * mon", "UTC");
        assert_eq!(
            windows(&both, "2024-09-01T00:00:00Z", 2),
            ["2024-09-09T00:00:00Z", "2024-09-23T00:00:00Z"]
        );
    }

    #[test]
    fn the_29th_of_february_waits_for_a_leap_year() {
        let s = schedule("0 0 29 2 *", "UTC");
        assert_eq!(
            windows(&s, "2097-01-01T00:00:00Z", 2),
            ["2104-02-29T00:00:00Z", "2108-02-29T00:00:00Z"]
        );
        assert_eq!(
            show(s.latest_at_or_before(at("2103-06-01T00:00:00Z"))),
            Some("2096-02-29T00:00:00Z".into())
        );
    }

    #[test]
    fn the_latest_window_includes_now_itself() {
        let s = schedule("*/15 * * * *", "UTC");
        assert_eq!(
            show(s.latest_at_or_before(at("2024-05-01T10:30:00Z"))),
            Some("2024-05-01T10:30:00Z".into())
        );
        assert_eq!(
            show(s.latest_at_or_before(at("2024-05-01T10:29:59Z"))),
            Some("2024-05-01T10:15:00Z".into())
        );
        assert_eq!(
            show(s.next_after(at("2024-05-01T10:30:00Z"))),
            Some("2024-05-01T10:45:00Z".into())
        );
    }

    #[test]
    fn a_local_time_skipped_by_spring_forward_fires_where_the_gap_ends() {
        // Europe/Berlin, 2024-03-31: 02:00 CET becomes 03:00 CEST (01:00Z).
        let s = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            windows(&s, "2024-03-30T12:00:00Z", 3),
            [
                "2024-03-31T01:00:00Z",
                "2024-04-01T00:30:00Z",
                "2024-04-02T00:30:00Z"
            ]
        );
        assert_eq!(
            show(s.latest_at_or_before(at("2024-03-31T01:00:00Z"))),
            Some("2024-03-31T01:00:00Z".into())
        );
        assert_eq!(
            show(s.latest_at_or_before(at("2024-03-31T00:59:59Z"))),
            Some("2024-03-30T01:30:00Z".into())
        );
        // America/New_York, 2024-03-10: 02:00 EST becomes 03:00 EDT (07:00Z).
        let s = schedule("15 2 * * *", "America/New_York");
        assert_eq!(
            windows(&s, "2024-03-10T00:00:00Z", 1),
            ["2024-03-10T07:00:00Z"]
        );
    }

    #[test]
    fn every_skipped_minute_collapses_into_one_window_at_the_gap_end() {
        let s = schedule("*/20 * * * *", "Europe/Berlin");
        assert_eq!(
            windows(&s, "2024-03-31T00:30:00Z", 4),
            [
                "2024-03-31T00:40:00Z",
                "2024-03-31T01:00:00Z",
                "2024-03-31T01:20:00Z",
                "2024-03-31T01:40:00Z",
            ]
        );
    }

    #[test]
    fn a_local_time_repeated_by_fall_back_fires_once_at_its_first_occurrence() {
        // Europe/Berlin, 2024-10-27: 03:00 CEST (01:00Z) becomes 02:00 CET.
        let s = schedule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            windows(&s, "2024-10-26T12:00:00Z", 2),
            ["2024-10-27T00:30:00Z", "2024-10-28T01:30:00Z"]
        );
        // In the second pass of 02:30 the window is the one behind.
        assert_eq!(
            show(s.latest_at_or_before(at("2024-10-27T01:45:00Z"))),
            Some("2024-10-27T00:30:00Z".into())
        );
        assert_eq!(
            show(s.next_after(at("2024-10-27T01:15:00Z"))),
            Some("2024-10-28T01:30:00Z".into())
        );
    }

    #[test]
    fn during_the_repeated_hour_the_latest_window_is_the_first_pass_end() {
        let s = schedule("*/15 * * * *", "Europe/Berlin");
        // 01:10Z is 02:10 CET, the second pass; the first pass ran to 02:45 CEST (00:45Z).
        assert_eq!(
            show(s.latest_at_or_before(at("2024-10-27T01:10:00Z"))),
            Some("2024-10-27T00:45:00Z".into())
        );
        // The second pass has no windows of its own; the next is 03:00 CET.
        assert_eq!(
            show(s.next_after(at("2024-10-27T00:45:00Z"))),
            Some("2024-10-27T02:00:00Z".into())
        );
    }

    #[test]
    fn a_rare_schedule_is_found_by_skipping_fields_not_minutes() {
        // Once in four years: a minute-by-minute scan would take two million steps per
        // call; ten thousand games' worth of calls stay quick.
        let s = schedule("30 4 29 feb *", "Europe/Berlin");
        let now = at("2024-06-01T00:00:00Z");
        for _ in 0..10_000 {
            assert_eq!(
                show(s.latest_at_or_before(now)),
                Some("2024-02-29T03:30:00Z".into())
            );
            assert_eq!(show(s.next_after(now)), Some("2028-02-29T03:30:00Z".into()));
        }
    }

    #[test]
    fn weekday_matches_the_calendar() {
        let mut date = jiff::civil::date(1999, 12, 25);
        for _ in 0..3000 {
            let expected = i32::from(date.weekday().to_sunday_zero_offset());
            assert_eq!(
                weekday(
                    i32::from(date.year()),
                    i32::from(date.month()),
                    i32::from(date.day())
                ),
                expected,
                "{date}"
            );
            date = date.tomorrow().expect("a date");
        }
    }

    /// The windows between `from` and `to` by the definition, scanning instants minute by
    /// minute: an instant is a window when a matching local time lies after every local
    /// time shown before it and at or before its own.
    fn windows_by_definition(
        cron: &str,
        zone: &str,
        from: SystemTime,
        to: SystemTime,
    ) -> Vec<SystemTime> {
        let s = schedule(cron, zone);
        let tz = ZONES.get(zone).expect("a zone");
        let shown =
            |t: SystemTime| tz.to_datetime(jiff::Timestamp::try_from(t).expect("an instant"));
        let matches = |c: DateTime| {
            s.fields.minutes & (1 << c.minute()) != 0
                && s.fields.hours & (1 << c.hour()) != 0
                && s.fields.months & (1 << c.month()) != 0
                && s.fields.day_matches(
                    i32::from(c.year()),
                    i32::from(c.month()),
                    i32::from(c.day()),
                )
        };
        let minute = jiff::SignedDuration::from_mins(1);
        let mut high = shown(from).round(jiff::Unit::Minute).expect("rounds");
        let mut out = Vec::new();
        let mut t = from + Duration::from_secs(60);
        while t <= to {
            let local = shown(t);
            let mut c = high.checked_add(minute).expect("a time");
            while c <= local {
                if matches(c) {
                    out.push(t);
                    break;
                }
                c = c.checked_add(minute).expect("a time");
            }
            high = high.max(local);
            t += Duration::from_secs(60);
        }
        out
    }

    fn cron_field(values: std::ops::RangeInclusive<u32>) -> impl Strategy<Value = String> {
        let (min, max) = (*values.start(), *values.end());
        prop_oneof![
            Just("*".to_owned()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max.max(2)).prop_map(|n| format!("*/{n}")),
            proptest::collection::vec(min..=max, 1..4).prop_map(|v| v
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")),
        ]
    }

    fn dense_cron() -> impl Strategy<Value = String> {
        // Fields that match often enough to meet several windows in a few days.
        (
            cron_field(0..=59),
            prop_oneof![Just("*".to_owned()), cron_field(0..=23)],
            prop_oneof![
                Just("*".to_owned()),
                Just("*/2".to_owned()),
                cron_field(1..=31)
            ],
            prop_oneof![Just("*".to_owned()), cron_field(1..=12)],
            prop_oneof![Just("*".to_owned()), cron_field(0..=7)],
        )
            .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Around the DST changes of zones with one-hour, half-hour and southern-hemisphere
        /// changes, next_after lists exactly the windows of the definition.
        #[test]
        fn next_after_walks_exactly_the_windows_of_the_definition(
            cron in dense_cron(),
            zone in prop_oneof![
                Just("Europe/Berlin"),
                Just("America/New_York"),
                Just("Australia/Lord_Howe"),
                Just("UTC"),
            ],
            start in prop_oneof![
                Just("2024-03-30T12:00:00Z"),
                Just("2024-10-26T12:00:00Z"),
                Just("2024-04-06T00:00:00Z"),
                Just("2024-10-05T00:00:00Z"),
                Just("2024-03-09T12:00:00Z"),
                Just("2024-11-02T12:00:00Z"),
            ],
        ) {
            let Ok(s) = Schedule::parse(&cron, zone) else { return Ok(()) };
            let from = at(start);
            let to = from + Duration::from_secs(36 * 3600);
            let expected = windows_by_definition(&cron, zone, from, to);
            let mut walked = Vec::new();
            let mut t = from;
            while let Some(next) = s.next_after(t).filter(|next| *next <= to) {
                walked.push(next);
                t = next;
            }
            prop_assert_eq!(walked, expected);
        }

        /// latest_at_or_before and next_after bracket every instant: no window between the
        /// two, and each is a window.
        #[test]
        fn the_latest_and_the_next_window_bracket_any_instant(
            cron in dense_cron(),
            zone in prop_oneof![Just("Europe/Berlin"), Just("America/New_York"), Just("UTC")],
            offset in 0u64..(400 * 24 * 3600),
        ) {
            let Ok(s) = Schedule::parse(&cron, zone) else { return Ok(()) };
            let now = at("2024-01-01T00:00:00Z") + Duration::from_secs(offset);
            let latest = s.latest_at_or_before(now).expect("a window within 28 years");
            let next = s.next_after(now).expect("a window within 28 years");
            prop_assert!(latest <= now && now < next);
            prop_assert_eq!(s.next_after(latest), Some(next));
            prop_assert_eq!(s.latest_at_or_before(next), Some(next));
            prop_assert_eq!(s.latest_at_or_before(next - Duration::from_secs(1)), Some(latest));
        }
    }
}
