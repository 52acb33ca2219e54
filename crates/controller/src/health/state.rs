//! What the probes of one container said so far, with no I/O: the state the prober keeps in
//! memory per game, how one probe's outcome moves it, and the snapshot (`HealthView`) the
//! plan judges. Pure, so the counting rules (start period, failure threshold, the first
//! pass) are tested without sockets or time.

use std::time::{Duration, SystemTime};

use rtm_core::model::{HealthCheck, HealthVerdict};

use super::probe::ProbeOutcome;

/// What the prober knows of one game's current container: a copy handed to `plan`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthView {
    /// The container the results are about.
    pub(crate) container_id: String,
    /// The last probe's verdict (`Unknown` before any result).
    pub(crate) verdict: HealthVerdict,
    /// The container passed once, or its start was over before this controller probed it
    /// (then nobody can say it never passed: it is judged by the failure threshold, never by
    /// the startup timeout).
    pub(crate) passed: bool,
    /// Failed probes in a row that count (not those within the start period, nor Docker's
    /// `starting`).
    pub(crate) consecutive_failures: u32,
    /// The message the status shows: the last failure once the container passed; before,
    /// the first failure of the run (so that a start costs one status write, not one per
    /// probe).
    pub(crate) message: Option<String>,
    /// The last failure, whatever the phase (for the history entry of a replacement).
    pub(crate) last_failure: Option<String>,
    /// When the verdict last changed (or the failure threshold was reached).
    pub(crate) since: SystemTime,
    /// Probe results recorded for this container.
    pub(crate) results: u64,
}

/// The state of one container's probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeState {
    view: HealthView,
    /// When the container's current run started (Docker's `StartedAt`).
    started_at: Option<SystemTime>,
    /// The judgement as of the last result.
    judged: Option<Judged>,
}

impl ProbeState {
    /// The state of a container first seen `now`, started at `started_at`: one whose startup
    /// window (`startupTimeout`) was over before it was first seen counts as having passed.
    pub(crate) fn new(
        container_id: &str,
        started_at: Option<SystemTime>,
        check: &HealthCheck,
        now: SystemTime,
    ) -> ProbeState {
        let start_over = started_at.is_some_and(|started| {
            now.duration_since(started).unwrap_or_default() >= check.startup_timeout
        });
        ProbeState {
            view: HealthView {
                container_id: container_id.to_owned(),
                verdict: HealthVerdict::Unknown,
                passed: start_over,
                consecutive_failures: 0,
                message: None,
                last_failure: None,
                since: now,
                results: 0,
            },
            started_at,
            judged: None,
        }
    }

    /// The snapshot for the plan.
    pub(crate) fn view(&self) -> &HealthView {
        &self.view
    }

    /// Whether the state is about `container_id`.
    pub(crate) fn is_for(&self, container_id: &str) -> bool {
        self.view.container_id == container_id
    }

    /// Whether the container passed once (its probes then run at the check's interval).
    pub(crate) fn passed(&self) -> bool {
        self.view.passed
    }

    /// Records one probe's outcome at `now`; returns whether what the status shows (or what
    /// the plan decides) may have changed, so the game must be reconciled.
    pub(crate) fn record(
        &mut self,
        outcome: &ProbeOutcome,
        check: &HealthCheck,
        now: SystemTime,
    ) -> bool {
        let before = self.judged;
        let shown = self.shown(check);
        let view = &mut self.view;
        view.results += 1;
        if outcome.passed {
            view.passed = true;
            view.consecutive_failures = 0;
            view.message = None;
            self.set_verdict(HealthVerdict::Passing, now);
        } else if outcome.pending {
            // Docker's `starting`: no verdict yet, nothing counts.
        } else {
            let in_start_period = self.started_at.is_some_and(|started| {
                now.duration_since(started).unwrap_or_default() < check.start_period
            });
            let view = &mut self.view;
            if !in_start_period {
                view.consecutive_failures = match outcome.docker_failing_streak {
                    // Docker counts its own checks; its streak is the truth.
                    Some(streak) => streak,
                    None => view.consecutive_failures.saturating_add(1),
                };
            }
            view.last_failure = Some(outcome.message.clone());
            // Shown: every failure up to the threshold once it passed (then the game is
            // replaced, or waits to be: what it shows stays put meanwhile), else the
            // first of the run.
            let counting = view.passed && view.consecutive_failures <= check.failure_threshold;
            if counting || view.message.is_none() || view.verdict != HealthVerdict::Failing {
                view.message = Some(outcome.message.clone());
            }
            self.set_verdict(HealthVerdict::Failing, now);
        }
        let after = judge(&self.view, check, self.started_at, now);
        self.judged = after;
        if after != before && after.is_some() {
            // The threshold (or the startup deadline) was reached: a replacement's back-off
            // counts from here.
            self.view.since = now;
        }
        after != before || self.shown(check) != shown
    }

    fn set_verdict(&mut self, verdict: HealthVerdict, now: SystemTime) {
        if self.view.verdict != verdict {
            self.view.verdict = verdict;
            self.view.since = now;
        }
    }

    /// What the status record shows of this state: written on every change.
    fn shown(&self, check: &HealthCheck) -> (HealthVerdict, bool, u32, Option<String>) {
        let view = &self.view;
        // Before the first pass, failures are not counted in the record (a slow start
        // would otherwise write once per probe), and past the threshold neither.
        let failures = if view.passed {
            view.consecutive_failures.min(check.failure_threshold)
        } else {
            0
        };
        (view.verdict, view.passed, failures, view.message.clone())
    }
}

/// What the probes of a container amount to, when they call for more than Ready's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judged {
    /// `failureThreshold` failures in a row after it passed.
    Unhealthy,
    /// No pass within `startupTimeout` of its start.
    StartupTimeout,
}

/// Judges `view` of a container started at `started_at`, as of `now`. Only results this
/// controller saw count: a status record (which anyone with write access could forge) never
/// makes a game unhealthy.
pub(crate) fn judge(
    view: &HealthView,
    check: &HealthCheck,
    started_at: Option<SystemTime>,
    now: SystemTime,
) -> Option<Judged> {
    if view.passed {
        return (view.verdict == HealthVerdict::Failing
            && view.consecutive_failures >= check.failure_threshold)
            .then_some(Judged::Unhealthy);
    }
    let started = started_at?;
    let ran = now.duration_since(started).unwrap_or(Duration::ZERO);
    (view.results > 0 && ran >= check.startup_timeout).then_some(Judged::StartupTimeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::ProbeKind;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn check() -> HealthCheck {
        let mut check = HealthCheck::of(ProbeKind::Tcp { port: 7000 });
        check.interval = Duration::from_secs(1);
        check.failure_threshold = 3;
        check.start_period = Duration::from_secs(5);
        check.startup_timeout = Duration::from_secs(60);
        check
    }

    fn pass() -> ProbeOutcome {
        ProbeOutcome::pass("ok")
    }

    fn fail(message: &str) -> ProbeOutcome {
        ProbeOutcome::failed(message)
    }

    fn started(now: u64) -> ProbeState {
        ProbeState::new("c1", Some(at(0)), &check(), at(now))
    }

    #[test]
    fn a_new_container_has_no_verdict_and_has_not_passed() {
        let state = started(0);
        assert_eq!(state.view().verdict, HealthVerdict::Unknown);
        assert!(!state.passed());
        assert_eq!(judge(state.view(), &check(), Some(at(0)), at(0)), None);
    }

    #[test]
    fn a_container_first_seen_after_its_startup_window_counts_as_passed() {
        let state = started(61);
        assert!(state.passed(), "nobody can say it never passed");
    }

    #[test]
    fn the_first_pass_changes_what_the_status_shows_and_more_passes_do_not() {
        let mut state = started(0);
        assert!(state.record(&pass(), &check(), at(1)));
        assert_eq!(state.view().verdict, HealthVerdict::Passing);
        assert!(state.passed());
        for second in 2..100 {
            assert!(
                !state.record(&pass(), &check(), at(second)),
                "a healthy game costs no write"
            );
        }
        assert_eq!(state.view().since, at(1));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let mut state = started(0);
        for second in 1..5 {
            state.record(&fail("refused"), &check(), at(second));
        }
        assert_eq!(state.view().consecutive_failures, 0);
        state.record(&fail("refused"), &check(), at(6));
        assert_eq!(state.view().consecutive_failures, 1);
    }

    #[test]
    fn a_slow_start_changes_the_status_once_not_once_per_failure() {
        let mut state = started(0);
        assert!(state.record(&fail("connection refused"), &check(), at(1)));
        for second in 2..50 {
            assert!(
                !state.record(&fail(&format!("refused #{second}")), &check(), at(second)),
                "failure at {second}s before the first pass"
            );
        }
        assert_eq!(
            state.view().message.as_deref(),
            Some("connection refused"),
            "the first failure of the run is shown"
        );
        assert_eq!(state.view().last_failure.as_deref(), Some("refused #49"));
    }

    #[test]
    fn threshold_failures_after_a_pass_make_it_unhealthy_each_one_shown() {
        let mut state = started(0);
        state.record(&pass(), &check(), at(10));
        for (second, failures) in [(11, 1), (12, 2), (13, 3)] {
            assert!(state.record(&fail("http 503"), &check(), at(second)));
            assert_eq!(state.view().consecutive_failures, failures);
        }
        assert_eq!(
            judge(state.view(), &check(), Some(at(0)), at(13)),
            Some(Judged::Unhealthy)
        );
        assert_eq!(state.view().since, at(13), "the back-off counts from here");
    }

    #[test]
    fn failures_past_the_threshold_change_nothing_shown() {
        let mut state = started(0);
        state.record(&pass(), &check(), at(10));
        for second in 11..=13 {
            state.record(&fail("http 503"), &check(), at(second));
        }
        for second in 14..200 {
            assert!(
                !state.record(&fail(&format!("http 503 #{second}")), &check(), at(second)),
                "a game waiting for its replacement costs no write per probe"
            );
        }
        assert_eq!(state.view().message.as_deref(), Some("http 503"));
        assert_eq!(state.view().last_failure.as_deref(), Some("http 503 #199"));
    }

    #[test]
    fn a_pass_between_failures_starts_the_count_again() {
        let mut state = started(0);
        state.record(&pass(), &check(), at(10));
        state.record(&fail("x"), &check(), at(11));
        state.record(&fail("x"), &check(), at(12));
        state.record(&pass(), &check(), at(13));
        state.record(&fail("x"), &check(), at(14));
        assert_eq!(state.view().consecutive_failures, 1);
        assert_eq!(judge(state.view(), &check(), Some(at(0)), at(14)), None);
    }

    #[test]
    fn no_pass_by_the_startup_timeout_is_a_startup_timeout_with_a_result_seen() {
        let mut state = started(0);
        assert_eq!(judge(state.view(), &check(), Some(at(0)), at(61)), None);
        state.record(&fail("refused"), &check(), at(30));
        assert_eq!(judge(state.view(), &check(), Some(at(0)), at(59)), None);
        assert_eq!(
            judge(state.view(), &check(), Some(at(0)), at(60)),
            Some(Judged::StartupTimeout)
        );
        assert!(
            state.record(&fail("refused"), &check(), at(61)),
            "reaching the deadline calls for a reconcile"
        );
    }

    #[test]
    fn dockers_starting_is_no_verdict_and_its_streak_is_the_count() {
        let mut state = started(0);
        let starting = ProbeOutcome {
            pending: true,
            ..ProbeOutcome::failed("starting")
        };
        assert!(!state.record(&starting, &check(), at(1)));
        assert_eq!(state.view().verdict, HealthVerdict::Unknown);
        state.record(&pass(), &check(), at(6));
        let unhealthy = ProbeOutcome {
            docker_failing_streak: Some(4),
            ..ProbeOutcome::failed("docker: unhealthy")
        };
        state.record(&unhealthy, &check(), at(7));
        assert_eq!(state.view().consecutive_failures, 4);
    }
}
