//! The controller's options for many hosts: what its node offers (`--node-labels`,
//! `--capacity`, `--port-range`), how the elected scheduler places games
//! (`--placement-strategy`), and the failure bounds (`--node-failure-grace`,
//! `--self-fence-after`), checked together at start-up.

use std::fmt;
use std::time::Duration;

use rtm_core::config::ConfigError;
use rtm_core::placement::Strategy;
use rtm_core::records::nodes::{Capacity, PortRange, parse_labels};

/// How long a self-fence may take once it starts: a look (bounded by
/// [`SELF_FENCE_LOOK`]) for another live controller of the node, then every container
/// stopped with the rest of this bound before Docker kills it.
pub const SELF_FENCE_STOP_BOUND: Duration = Duration::from_secs(5);

/// How long the self-fence asks etcd whether another controller of the node is live.
pub const SELF_FENCE_LOOK: Duration = Duration::from_secs(1);

/// What the bounds allow for the two clocks (the lost node's and the scheduler's) running
/// at slightly different rates, and for Docker's latency.
pub const CLOCK_DRIFT_MARGIN: Duration = Duration::from_secs(5);

/// The node and placement options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PlacementArgs {
    /// This node's labels, matched by the games' spec.nodeSelector: `region=eu,gpu=true`.
    #[arg(long = "node-labels", env = "RTM_NODE_LABELS", default_value = "", value_parser = labels_arg)]
    pub node_labels: String,

    /// What this node offers to games: `games=200,cpus=30,memory=60Gi`, each optional
    /// (unlimited when absent); cpus and memory add up the games' resources.
    #[arg(long = "capacity", env = "RTM_CAPACITY", default_value = "", value_parser = capacity_arg)]
    pub capacity: String,

    /// The host ports `hostPort: auto` takes from on this node.
    #[arg(long = "port-range", env = "RTM_PORT_RANGE", default_value = "17000-17999", value_parser = port_range_arg)]
    pub port_range: String,

    /// How the elected scheduler chooses a node: Packed (the fullest that fits) or
    /// Distributed (the emptiest).
    #[arg(long = "placement-strategy", env = "RTM_PLACEMENT_STRATEGY", default_value = "Packed", value_parser = strategy_arg)]
    pub placement_strategy: String,

    /// How long a node may be NotReady (its controller's session gone) before the scheduler
    /// moves its games to other nodes.
    #[arg(long = "node-failure-grace", env = "RTM_NODE_FAILURE_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_failure_grace: Duration,

    /// With no keepalive acknowledged by etcd for this long, this controller stops every
    /// container it runs (another node may start them once the grace has passed); 0 turns
    /// it off, and then the scheduler never moves this node's games away when it is lost.
    #[arg(long = "self-fence-after", env = "RTM_SELF_FENCE_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub self_fence_after: Duration,
}

fn labels_arg(text: &str) -> Result<String, String> {
    parse_labels(text)?;
    Ok(text.to_owned())
}

fn capacity_arg(text: &str) -> Result<String, String> {
    text.parse::<Capacity>()?;
    Ok(text.to_owned())
}

fn port_range_arg(text: &str) -> Result<String, String> {
    text.parse::<PortRange>()?;
    Ok(text.to_owned())
}

fn strategy_arg(text: &str) -> Result<String, String> {
    text.parse::<Strategy>()?;
    Ok(text.to_owned())
}

impl PlacementArgs {
    /// The node's labels.
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        parse_labels(&self.node_labels).expect("--node-labels is checked as it is parsed")
    }

    /// The node's capacity.
    pub fn capacity(&self) -> Capacity {
        self.capacity
            .parse()
            .expect("--capacity is checked as it is parsed")
    }

    /// The node's range for `hostPort: auto`.
    pub fn port_range(&self) -> PortRange {
        self.port_range
            .parse()
            .expect("--port-range is checked as it is parsed")
    }

    /// The scheduler's strategy.
    pub fn strategy(&self) -> Strategy {
        self.placement_strategy
            .parse()
            .expect("--placement-strategy is checked as it is parsed")
    }

    /// The self-fence bound, `None` when it is off.
    pub fn self_fence(&self) -> Option<Duration> {
        (!self.self_fence_after.is_zero()).then_some(self.self_fence_after)
    }

    /// How long a lost node that self-fences after `fence` must stay NotReady before its
    /// games may start elsewhere: the grace, and never less than its fence's end with the
    /// margins (the arithmetic of the README's "Failure bounds").
    pub fn lost_wait(grace: Duration, fence: Duration) -> Duration {
        grace.max(fence + SELF_FENCE_STOP_BOUND + CLOCK_DRIFT_MARGIN)
    }

    /// Checks that the self-fence ends before another node may start the games:
    /// self-fence-after + stop bound + drift margin < lease TTL + failure grace.
    pub fn validate(
        &self,
        lease_ttl: Duration,
        host_ports: &rtm_core::ports::HostPortPolicy,
    ) -> Result<(), ConfigError> {
        if self.node_failure_grace < Duration::from_secs(1) {
            return Err(ConfigError::Incomplete(
                "--node-failure-grace must be at least 1s",
            ));
        }
        if let Some(fence) = self.self_fence() {
            if fence < lease_ttl {
                return Err(ConfigError::Incomplete(
                    "--self-fence-after must be at least --lease-ttl: a shorter one stops the games \
                     while etcd still counts the session alive",
                ));
            }
            if fence + SELF_FENCE_STOP_BOUND + CLOCK_DRIFT_MARGIN
                >= lease_ttl + self.node_failure_grace
            {
                return Err(ConfigError::Incomplete(
                    "--self-fence-after + 5s (stop bound) + 5s (clock drift margin) must be less than \
                     --lease-ttl + --node-failure-grace, or another node may start a game before this \
                     one has stopped it",
                ));
            }
        }
        let range = self.port_range();
        if !host_ports.allows(range.first) || !host_ports.allows(range.last) {
            return Err(ConfigError::Incomplete(
                "--port-range must lie inside --host-ports",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for PlacementArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        writeln!(f, "node-labels: {}", or_dash(&self.node_labels))?;
        writeln!(f, "capacity: {}", self.capacity())?;
        writeln!(f, "port-range: {}", self.port_range())?;
        writeln!(f, "placement-strategy: {}", self.strategy())?;
        writeln!(
            f,
            "node-failure-grace: {}",
            humantime::format_duration(self.node_failure_grace)
        )?;
        writeln!(
            f,
            "self-fence-after: {}",
            humantime::format_duration(self.self_fence_after)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(fence: &str, grace: &str) -> PlacementArgs {
        PlacementArgs {
            node_labels: "region=eu".into(),
            capacity: "games=3".into(),
            port_range: "17000-17999".into(),
            placement_strategy: "Distributed".into(),
            node_failure_grace: humantime::parse_duration(grace).unwrap(),
            self_fence_after: humantime::parse_duration(fence).unwrap(),
        }
    }

    #[test]
    fn the_fence_must_end_before_the_games_may_move() {
        let ttl = Duration::from_secs(15);
        let policy =
            rtm_core::ports::HostPortPolicy::parse(rtm_core::ports::DEFAULT_HOST_PORTS, "*")
                .unwrap();
        assert!(args("30s", "60s").validate(ttl, &policy).is_ok());
        assert!(
            args("0s", "1s").validate(ttl, &policy).is_ok(),
            "no fence, no bound"
        );
        // 60 + 5 + 5 = 70 is not below 15 + 55 = 70.
        assert!(args("60s", "55s").validate(ttl, &policy).is_err());
        assert!(
            args("10s", "60s").validate(ttl, &policy).is_err(),
            "shorter than the TTL"
        );
        let low = rtm_core::ports::HostPortPolicy::parse("20000-30000", "*").unwrap();
        assert!(
            args("30s", "60s").validate(ttl, &low).is_err(),
            "range outside --host-ports"
        );
        assert_eq!(
            PlacementArgs::lost_wait(Duration::from_secs(60), Duration::from_secs(30)),
            Duration::from_secs(60)
        );
        assert_eq!(
            PlacementArgs::lost_wait(Duration::from_secs(20), Duration::from_secs(30)),
            Duration::from_secs(40)
        );
    }
}
