//! The project's Prometheus metrics: one registry per controller (a value
//! passed in, never a global, so tests get their own), with names that keep
//! the vocabulary of the YAML and the history (`op_kind`, `outcome`,
//! `error_code`, `phase`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for calls that take milliseconds to a few seconds (etcd round
/// trips, lease acquisition, most Docker calls).
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for whole reconciles and Docker stops, which wait for a
/// container's stopTimeout (up to 10 minutes).
const SLOW_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The results `rtmanager_prestop_hooks_total` counts: the command exited 0,
/// failed (another exit code, or it could not run), did not end within its
/// timeout, or was skipped (the container was paused or had exited).
pub const PRE_STOP_RESULTS: [&str; 4] = ["exited_0", "failed", "timed_out", "skipped"];

/// Every metric rtmanager exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Lifecycle operations by `op_kind`, `outcome` and `error_code` (empty
    /// on success).
    pub operations: IntCounterVec,
    /// Time to take a per-game lease, by `result` (acquired, busy, changed,
    /// error).
    pub lease_acquire: HistogramVec,
    /// Reconciles by `result` (noop, acted, requeued, failed, panicked,
    /// timed_out, skipped).
    pub reconciles: IntCounterVec,
    /// Duration of one reconcile.
    pub reconcile_duration: Histogram,
    /// Games waiting in the work queue.
    pub queue_depth: IntGauge,
    /// Reconciles running now.
    pub active_workers: IntGauge,
    /// How long a game waited in the queue between becoming due (for a
    /// document change: the watcher receiving it) and a worker starting
    /// its reconcile; games queued in bulk (resync) count as due when a
    /// worker is free for them.
    pub queue_wait: Histogram,
    /// Reconciles scheduled again after a failure (with backoff).
    pub retries: IntCounter,
    /// Docker calls by `call` and `result` (ok, error).
    pub docker_requests: HistogramVec,
    /// Restarts of the etcd watch by `reason` (compacted, broken).
    pub watch_restarts: IntCounterVec,
    /// Games this controller reconciles, by `phase`.
    pub games: IntGaugeVec,
    /// Status records written (a converged game writes none).
    pub status_writes: IntCounter,
    /// `rtmanager_events_total{reason}`: events recorded (a first observation or a repeat
    /// folded into its event), each one etcd write.
    pub events: IntCounterVec,
    /// Deleted games whose whole history the sweep removed after the
    /// history grace: the one clean-up no history can record (it is the
    /// history), so it is counted here and logged.
    pub history_removed: IntCounter,
    /// Health-check probes run, by `kind` (http, tcp, exec, docker) and
    /// `result` (passed, failed, pending).
    pub probes: IntCounterVec,
    /// Duration of one probe, by `kind`.
    pub probe_duration: HistogramVec,
    /// How late a probe started: from when it was due to when it ran (a
    /// fleet probed on time keeps this near zero).
    pub probe_lateness: Histogram,
    /// Games whose containers this controller probes.
    pub probed_games: IntGauge,
    /// preStop commands (`spec.lifecycle.preStop`) of stops, by `result`
    /// (exited_0, failed, timed_out, skipped).
    pub pre_stops: IntCounterVec,
    /// Games whose voluntary disruption waits (condition `UpdatePending`
    /// True), by its `reason` (InSession, DisruptionBudget).
    pub updates_pending: IntGaugeVec,
    /// Assignment writes the elected scheduler sent (placements, moves, clean-ups).
    pub placement_writes: IntCounter,
    /// Containers the self-fence stopped (no etcd for `--self-fence-after`).
    pub self_fenced: IntCounter,
}

/// The reasons `rtmanager_updates_pending` counts: the condition's reasons.
pub const UPDATE_PENDING_REASONS: [&str; 2] = [
    rtm_core::model::REASON_IN_SESSION,
    rtm_core::model::REASON_DISRUPTION_BUDGET,
];

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

impl Metrics {
    /// Every metric, registered in a registry of its own (README, "Metrics").
    // Long because: one flat registration per metric reads best whole.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram_vec = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            register(r, HistogramVec::new(opts, labels).expect("valid metric"))
        };
        let metrics = Self {
            operations: counter_vec(
                "rtmanager_operations_total",
                "Lifecycle operations finished, by kind, outcome and error code.",
                &["op_kind", "outcome", "error_code"],
            ),
            lease_acquire: histogram_vec(
                "rtmanager_lease_acquire_duration_seconds",
                "Time to take a per-game lease, by result.",
                FAST_BUCKETS,
                &["result"],
            ),
            reconciles: counter_vec(
                "rtmanager_reconciles_total",
                "Reconciles finished, by result.",
                &["result"],
            ),
            reconcile_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rtmanager_reconcile_duration_seconds",
                        "Duration of one reconcile of one game.",
                    )
                    .buckets(SLOW_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            queue_depth: register(
                r,
                IntGauge::new("rtmanager_queue_depth", "Games waiting in the work queue.")
                    .expect("valid metric"),
            ),
            active_workers: register(
                r,
                IntGauge::new("rtmanager_active_workers", "Reconciles running now.")
                    .expect("valid metric"),
            ),
            queue_wait: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rtmanager_queue_wait_seconds",
                        "Time from a game becoming due (a change seen, a requeue) to a worker \
                         starting its reconcile.",
                    )
                    .buckets(FAST_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            placement_writes: register(
                r,
                IntCounter::new(
                    "rtmanager_assignment_writes_total",
                    "Assignment writes the elected scheduler sent (placements, moves, clean-ups).",
                )
                .expect("valid metric"),
            ),
            self_fenced: register(
                r,
                IntCounter::new(
                    "rtmanager_self_fenced_containers_total",
                    "Containers the self-fence stopped because etcd acknowledged no keepalive for --self-fence-after.",
                )
                .expect("valid metric"),
            ),
            retries: register(
                r,
                IntCounter::new(
                    "rtmanager_reconcile_retries_total",
                    "Reconciles scheduled again after a failure.",
                )
                .expect("valid metric"),
            ),
            docker_requests: histogram_vec(
                "rtmanager_docker_request_duration_seconds",
                "Docker API calls by call and result.",
                SLOW_BUCKETS,
                &["call", "result"],
            ),
            watch_restarts: counter_vec(
                "rtmanager_etcd_watch_restarts_total",
                "Relists after an etcd watch ended, by watch and reason.",
                &["watch", "reason"],
            ),
            games: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "rtmanager_games",
                        "Games this controller reconciles, by phase.",
                    ),
                    &["phase"],
                )
                .expect("valid metric"),
            ),
            status_writes: register(
                r,
                IntCounter::new("rtmanager_status_writes_total", "Status records written.")
                    .expect("valid metric"),
            ),
            events: counter_vec(
                "rtmanager_events_total",
                "Events recorded (first seen or folded into the one before), by reason.",
                &["reason"],
            ),
            history_removed: register(
                r,
                IntCounter::new(
                    "rtmanager_history_removed_total",
                    "Deleted games whose whole history was removed after the history grace.",
                )
                .expect("valid metric"),
            ),
            updates_pending: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "rtmanager_updates_pending",
                        "Games whose voluntary disruption waits, by the reason of UpdatePending.",
                    ),
                    &["reason"],
                )
                .expect("valid metric"),
            ),
            pre_stops: counter_vec(
                "rtmanager_prestop_hooks_total",
                "preStop commands of stops, by result.",
                &["result"],
            ),
            probes: counter_vec(
                "rtmanager_probes_total",
                "Health-check probes run, by kind and result.",
                &["kind", "result"],
            ),
            probe_duration: histogram_vec(
                "rtmanager_probe_duration_seconds",
                "Duration of one health-check probe, by kind.",
                FAST_BUCKETS,
                &["kind"],
            ),
            probe_lateness: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "rtmanager_probe_lateness_seconds",
                        "Time from a probe being due to it running.",
                    )
                    .buckets(FAST_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            ),
            probed_games: register(
                r,
                IntGauge::new(
                    "rtmanager_probed_games",
                    "Games whose containers this controller probes.",
                )
                .expect("valid metric"),
            ),
            registry,
        };
        metrics.initialise();
        metrics
    }

    /// Label values that exist from the start, so that dashboards and
    /// alerts see a 0 rather than no series.
    fn initialise(&self) {
        for watch in ["gameruntimes", "status", "controllers"] {
            for reason in ["compacted", "broken"] {
                self.watch_restarts.with_label_values(&[watch, reason]);
            }
        }
        for result in ["ok", "failed", "timed_out", "panicked"] {
            self.reconciles.with_label_values(&[result]);
        }
        for kind in ["http", "tcp", "exec", "docker"] {
            for result in ["passed", "failed", "pending"] {
                self.probes.with_label_values(&[kind, result]);
            }
        }
        for result in PRE_STOP_RESULTS {
            self.pre_stops.with_label_values(&[result]);
        }
        for reason in UPDATE_PENDING_REASONS {
            self.updates_pending.with_label_values(&[reason]);
        }
    }

    /// Counts one preStop command of a stop (`rtmanager_prestop_hooks_total`):
    /// `result` is one of [`PRE_STOP_RESULTS`].
    pub fn record_pre_stop(&self, result: &str) {
        self.pre_stops.with_label_values(&[result]).inc();
    }

    /// Counts a finished lifecycle operation (`rtmanager_operations_total`).
    pub fn record_operation(&self, op_kind: &str, outcome: &str, error_code: &str) {
        self.operations
            .with_label_values(&[op_kind, outcome, error_code])
            .inc();
    }

    /// Observes one lease acquisition (`rtmanager_lease_acquire_duration_seconds`).
    pub fn record_lease_acquire(&self, result: &str, elapsed: Duration) {
        self.lease_acquire
            .with_label_values(&[result])
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding gathered families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A gauge that counts games by one label, each game under at most one value at a time
/// (`rtmanager_games{phase}`, `rtmanager_updates_pending{reason}`): moving a game from
/// one value to another is one decrement and one increment, whatever order games are
/// looked at in.
#[derive(Debug)]
pub(crate) struct GamesBy {
    gauge: IntGaugeVec,
    values: Mutex<HashMap<String, &'static str>>,
}

impl GamesBy {
    pub(crate) fn new(gauge: IntGaugeVec) -> Self {
        Self {
            gauge,
            values: Mutex::new(HashMap::new()),
        }
    }

    /// Counts `game` under `value` from now on (none: under no value).
    pub(crate) fn set(&self, game: &str, value: Option<&'static str>) {
        let mut values = self
            .values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = match value {
            Some(value) => values.insert(game.to_owned(), value),
            None => values.remove(game),
        };
        if previous == value {
            return;
        }
        if let Some(previous) = previous {
            self.gauge.with_label_values(&[previous]).dec();
        }
        if let Some(value) = value {
            self.gauge.with_label_values(&[value]).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.record_operation("restart", "failure", "conflict");
        metrics.record_lease_acquire("busy", Duration::from_millis(3));
        metrics.reconciles.with_label_values(&["noop"]).inc();
        let text = metrics.render();
        assert!(text.contains(
            r#"rtmanager_operations_total{error_code="conflict",op_kind="restart",outcome="failure"} 1"#
        ));
        assert!(
            text.contains(r#"rtmanager_lease_acquire_duration_seconds_count{result="busy"} 1"#)
        );
        assert!(text.contains(r#"rtmanager_reconciles_total{result="noop"} 1"#));
        assert!(text.contains("rtmanager_queue_depth 0"));
    }
}
