//! Health checks (`spec.healthCheck`): which games this controller probes, what their probes
//! said, and the one task that runs them.
//!
//! ```text
//! reconcile ── track / untrack ──► Health: per game its container, check and ProbeState,
//!                                  and a heap of when each is due
//!                                      │ one scheduler task (no task or timer per game):
//!                                      │ due probes run, at most `concurrency` at once
//!                                      ▼
//!                    probe::probe ─► ProbeState::record ─► changed? ─► queue.add(game)
//! reconcile ◄── view(game) ── plan judges: Ready, a replacement, a startup timeout
//! ```
//!
//! Results stay in memory: only what the status shows (a change of verdict, a failure
//! counted after Ready) makes the prober queue the game, and the reconcile writes the
//! status as for any other change. A healthy fleet costs no etcd write per probe.
//!
//! Timing: a container is first probed at a random point within its first second (or its
//! interval, if shorter), so thousands adopted at once do not probe in step; until it
//! passes once it is probed every second (at most the interval), so Ready follows soon
//! after it serves; then every interval.

pub(crate) mod probe;
pub(crate) mod state;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::Metrics;
use crate::queue::WorkQueue;
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerState};
use rtm_core::model::HealthCheck;

use self::probe::{ProbeOutcome, Target};
use self::state::ProbeState;
pub(crate) use self::state::{HealthView, Judged, judge};

/// The most a container is left unprobed before its first pass.
const STARTUP_CADENCE: Duration = Duration::from_secs(1);

/// The games this controller probes, and what their probes said.
#[derive(Debug)]
pub(crate) struct Health {
    inner: Mutex<Inner>,
    /// Wakes the scheduler when a game is tracked (it may be due before the next one).
    wake: Notify,
    metrics: Metrics,
}

#[derive(Debug, Default)]
struct Inner {
    games: HashMap<String, Tracked>,
    /// When each tracked game is next due, with the sequence number of the entry: an entry
    /// whose number is not its game's current one is stale and skipped.
    due: BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Tracked {
    container_id: String,
    address: Option<IpAddr>,
    check: HealthCheck,
    state: ProbeState,
    /// The game's current heap entry.
    seq: u64,
    /// The container is paused: no probe runs (a frozen process answers nothing, and a
    /// pause is repaired at once, not judged).
    suspended: bool,
    in_flight: bool,
    /// An exec probe that outlived its timeout.
    running_exec: Option<String>,
}

/// One probe to run.
#[derive(Debug)]
struct Job {
    game: String,
    container_id: String,
    address: Option<IpAddr>,
    check: HealthCheck,
    running_exec: Option<String>,
    due: Instant,
}

impl Health {
    /// No game tracked yet.
    pub(crate) fn new(metrics: Metrics) -> Health {
        Health {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Follows what a reconcile observed of `game`: its container probed under `check`
    /// while it runs, suspended while paused, forgotten otherwise (no check, no container,
    /// a container that is not running).
    pub(crate) fn observe(
        &self,
        game: &str,
        check: Option<&HealthCheck>,
        container: Option<&ContainerInfo>,
    ) {
        match (check, container) {
            (Some(check), Some(container))
                if matches!(
                    container.state,
                    ContainerState::Running | ContainerState::Paused
                ) =>
            {
                self.track(game, check, container)
            }
            _ => self.untrack(game),
        }
    }

    /// What the probes of `game`'s container said so far; `None` when it is not probed
    /// or has no result for `container_id`.
    pub(crate) fn view(&self, game: &str, container_id: &str) -> Option<HealthView> {
        self.lock()
            .games
            .get(game)
            .filter(|tracked| tracked.state.is_for(container_id))
            .map(|tracked| tracked.state.view().clone())
    }

    /// Stops probing `game`.
    pub(crate) fn untrack(&self, game: &str) {
        let mut inner = self.lock();
        if inner.games.remove(game).is_some() {
            self.metrics.probed_games.set(inner.games.len() as i64);
        }
    }

    fn track(&self, game: &str, check: &HealthCheck, container: &ContainerInfo) {
        let now = Instant::now();
        let suspended = container.state == ContainerState::Paused;
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let Some(tracked) = inner.games.get_mut(game)
            && tracked.container_id == container.id
            && tracked.check.probe() == check.probe()
        {
            tracked.address = container.address;
            tracked.check = check.clone();
            let resumed = tracked.suspended && !suspended;
            tracked.suspended = suspended;
            if resumed {
                // Probed again soon after the pause ends.
                reschedule(&mut inner.due, &mut inner.next_seq, game, tracked, now);
                self.wake.notify_one();
            }
            return;
        }
        let mut tracked = Tracked {
            container_id: container.id.clone(),
            address: container.address,
            check: check.clone(),
            state: ProbeState::new(
                &container.id,
                container.started_at,
                check,
                SystemTime::now(),
            ),
            seq: 0,
            suspended,
            in_flight: false,
            running_exec: None,
        };
        let first = first_delay(check);
        schedule(
            &mut inner.due,
            &mut inner.next_seq,
            game,
            &mut tracked,
            now + first,
        );
        inner.games.insert(game.to_owned(), tracked);
        self.metrics.probed_games.set(inner.games.len() as i64);
        self.wake.notify_one();
    }

    /// Takes the probes due by `now`, at most `room` of them, marking them in flight.
    fn take_due(&self, now: Instant, room: usize) -> (Vec<Job>, Option<Instant>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut jobs = Vec::new();
        while jobs.len() < room {
            let Some(Reverse((due, seq, _))) = inner.due.peek() else {
                break;
            };
            if *due > now {
                break;
            }
            let (due, seq) = (*due, *seq);
            let Some(Reverse((_, _, game))) = inner.due.pop() else {
                break;
            };
            let Some(tracked) = inner.games.get_mut(&game) else {
                continue;
            };
            if tracked.seq != seq || tracked.in_flight || tracked.suspended {
                continue;
            }
            tracked.in_flight = true;
            jobs.push(Job {
                container_id: tracked.container_id.clone(),
                address: tracked.address,
                check: tracked.check.clone(),
                running_exec: tracked.running_exec.clone(),
                due,
                game,
            });
        }
        let next = inner.due.peek().map(|Reverse((due, _, _))| *due);
        (jobs, next)
    }

    /// Records what a probe of `job` said; returns whether the game must be reconciled.
    fn finish(&self, job: &Job, outcome: &ProbeOutcome) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(tracked) = inner.games.get_mut(&job.game) else {
            return false;
        };
        if tracked.container_id != job.container_id {
            // A new container since: its own entry is in the heap already.
            return false;
        }
        tracked.in_flight = false;
        tracked.running_exec = outcome.running_exec.clone();
        if tracked.suspended {
            // Paused while it ran: a frozen process answers nothing, and that is no
            // evidence (resuming schedules the next probe).
            return false;
        }
        let changed = tracked
            .state
            .record(outcome, &tracked.check, SystemTime::now());
        let cadence = cadence(&tracked.check, tracked.state.passed());
        // On the grid of the due times, so lateness does not accumulate; a probe that
        // missed its next slot runs one cadence from now.
        let next = (job.due + cadence).max(now + cadence / 2);
        schedule(
            &mut inner.due,
            &mut inner.next_seq,
            &job.game,
            tracked,
            next,
        );
        changed
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The delay before a container's first probe: a random point in its first cadence.
fn first_delay(check: &HealthCheck) -> Duration {
    cadence(check, false).mul_f64(rand::random::<f64>())
}

/// Time between probes: the interval, and at most a second before the first pass.
fn cadence(check: &HealthCheck, passed: bool) -> Duration {
    if passed {
        check.interval
    } else {
        check.interval.min(STARTUP_CADENCE)
    }
}

fn schedule(
    due: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: &mut u64,
    game: &str,
    tracked: &mut Tracked,
    at: Instant,
) {
    *next_seq += 1;
    tracked.seq = *next_seq;
    due.push(Reverse((at, *next_seq, game.to_owned())));
}

fn reschedule(
    due: &mut BinaryHeap<Reverse<(Instant, u64, String)>>,
    next_seq: &mut u64,
    game: &str,
    tracked: &mut Tracked,
    now: Instant,
) {
    if !tracked.in_flight {
        let at = now + first_delay(&tracked.check);
        schedule(due, next_seq, game, tracked, at);
    }
}

/// Runs the probes of every tracked game until `stop`, at most `concurrency` at once,
/// queueing a game whenever what its status shows may have changed.
pub(crate) async fn run(
    health: Arc<Health>,
    runtime: Arc<dyn ContainerRuntime>,
    queue: Arc<WorkQueue>,
    concurrency: usize,
    stop: CancellationToken,
) {
    let concurrency = concurrency.max(1);
    let mut running: JoinSet<(Job, ProbeOutcome, Duration)> = JoinSet::new();
    loop {
        let now = Instant::now();
        let room = concurrency.saturating_sub(running.len());
        let (jobs, next) = health.take_due(now, room);
        for job in jobs {
            health
                .metrics
                .probe_lateness
                .observe(now.saturating_duration_since(job.due).as_secs_f64());
            let runtime = runtime.clone();
            running.spawn(async move {
                let started = Instant::now();
                let target = Target {
                    container_id: &job.container_id,
                    address: job.address,
                };
                let outcome = AssertUnwindSafe(probe::probe(
                    &job.check,
                    &target,
                    runtime.as_ref(),
                    job.running_exec.as_deref(),
                ))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    ProbeOutcome::failed("the probe panicked (a bug in rtmanager)")
                });
                (job, outcome, started.elapsed())
            });
        }
        // With no room, only a finished probe can make progress.
        let sleep_until = match next {
            Some(next) if running.len() < concurrency => next,
            _ => now + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = stop.cancelled() => {
                running.abort_all();
                return;
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                let Ok((job, outcome, took)) = done else {
                    // Only an abort ends a probe task without its result (panics are
                    // caught inside it), and aborts happen only on stop.
                    continue;
                };
                let kind = job.check.probe().map_or("unknown", |p| p.kind());
                let result = if outcome.passed {
                    "passed"
                } else if outcome.pending {
                    "pending"
                } else {
                    "failed"
                };
                health.metrics.probes.with_label_values(&[kind, result]).inc();
                health
                    .metrics
                    .probe_duration
                    .with_label_values(&[kind])
                    .observe(took.as_secs_f64());
                if health.finish(&job, &outcome) {
                    debug!(game = %job.game, passed = outcome.passed, message = %outcome.message, "health verdict changed");
                    queue.add(&job.game);
                }
            }
            _ = tokio::time::sleep_until(sleep_until) => {}
            _ = health.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests;
