//! The project's Prometheus metrics: one registry per controller (a value
//! passed in, never a global, so tests get their own), with names that keep
//! the vocabulary of the YAML and the history (`op_kind`, `outcome`,
//! `error_code`, `phase`).

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// Buckets for calls that take milliseconds to a few seconds (etcd round
/// trips, lease acquisition, Docker calls that are not stops).
const FAST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every metric rtmanager exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Lifecycle operations by `op_kind`, `outcome` and `error_code` (empty
    /// on success).
    pub operations: IntCounterVec,
    /// Time to take a per-game lease, by `result` (acquired, busy, error).
    pub lease_acquire: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let operations = IntCounterVec::new(
            Opts::new(
                "rtmanager_operations_total",
                "Lifecycle operations finished, by kind, outcome and error code.",
            ),
            &["op_kind", "outcome", "error_code"],
        )
        .expect("metric definition is valid");
        let lease_acquire = HistogramVec::new(
            HistogramOpts::new(
                "rtmanager_lease_acquire_duration_seconds",
                "Time to take a per-game lease, by result.",
            )
            .buckets(FAST_BUCKETS.to_vec()),
            &["result"],
        )
        .expect("metric definition is valid");
        for collector in [
            Box::new(operations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lease_acquire.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            operations,
            lease_acquire,
        }
    }

    pub fn record_operation(&self, op_kind: &str, outcome: &str, error_code: &str) {
        self.operations
            .with_label_values(&[op_kind, outcome, error_code])
            .inc();
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_follow_prometheus_conventions() {
        let metrics = Metrics::new();
        metrics.record_operation("restart", "failure", "conflict");
        metrics.record_lease_acquire("busy", Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains(
            r#"rtmanager_operations_total{error_code="conflict",op_kind="restart",outcome="failure"} 1"#
        ));
        assert!(
            text.contains(r#"rtmanager_lease_acquire_duration_seconds_count{result="busy"} 1"#)
        );
    }
}
