//! One probe of one container (placeholder until the probe executor lands: tcp only).

use std::net::{IpAddr, SocketAddr};

use rtm_core::model::{HealthCheck, Probe};

use crate::runtime::ContainerRuntime;

/// Where and what to probe.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// The container to probe.
    pub(crate) container_id: &'a str,
    /// Its address on its Docker network.
    pub(crate) address: Option<IpAddr>,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProbeOutcome {
    /// It passed.
    pub(crate) passed: bool,
    /// For people.
    pub(crate) message: String,
    /// Docker's failing streak (docker kind).
    pub(crate) docker_failing_streak: Option<u32>,
    /// Docker said `starting`.
    pub(crate) pending: bool,
    /// An exec that outlived its timeout.
    pub(crate) running_exec: Option<String>,
}

impl ProbeOutcome {
    /// A pass.
    pub(crate) fn pass(message: impl Into<String>) -> Self {
        ProbeOutcome {
            passed: true,
            message: message.into(),
            docker_failing_streak: None,
            pending: false,
            running_exec: None,
        }
    }

    /// A failure.
    pub(crate) fn fail(message: impl Into<String>) -> Self {
        ProbeOutcome {
            passed: false,
            ..ProbeOutcome::pass(message)
        }
    }
}

/// Runs one probe.
pub(crate) async fn probe(
    check: &HealthCheck,
    target: &Target<'_>,
    _runtime: &dyn ContainerRuntime,
    _previous_exec: Option<&str>,
) -> ProbeOutcome {
    let Some(Probe::Tcp(tcp)) = check.probe() else {
        return ProbeOutcome::fail("not implemented");
    };
    let Some(address) = target.address else {
        return ProbeOutcome::fail("the container has no address");
    };
    let addr = SocketAddr::new(address, tcp.port);
    match tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => ProbeOutcome::pass("connected"),
        Ok(Err(e)) => ProbeOutcome::fail(format!("{e}")),
        Err(_) => ProbeOutcome::fail("timeout"),
    }
}
