//! The stable error codes: one table, shared by validation, the lifecycle
//! services, history entries, `rtctl` and the metric labels.
//!
//! A code is part of the public contract (scripts match on it, dashboards
//! group by it), so a variant's string never changes once released; new
//! failures get new codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, machine-readable classification of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request or document is malformed or fails validation.
    InvalidRequest,
    /// Someone else changed the object or holds the game's lease.
    Conflict,
    /// The game (or its record) does not exist.
    NotFound,
    /// etcd or Docker could not be reached, or answered too late.
    ServiceUnavailable,
    /// An invariant broke inside rtmanager; a bug to report.
    Internal,
    /// etcd refused the credentials or the operation.
    PermissionDenied,
    /// The image named by `spec.image` is not present on the Docker host.
    ImageNotFound,
    /// Docker refused to create or start the container.
    StartFailed,
    /// Docker failed to stop the container.
    StopFailed,
    /// A host port the spec asks for is already taken.
    PortConflict,
    /// A host port or host address the spec asks for is outside what the
    /// controller allows (`--host-ports`, `--host-ips`).
    PortNotAllowed,
    /// The per-game lease expired or was taken over mid-operation.
    LeaseLost,
    /// The operation was interrupted (controller crash or shutdown) and
    /// resolved by recovery.
    Aborted,
    /// A transitional phase did not finish before its deadline.
    DeadlineExceeded,
    /// An `http://` etcd endpoint serves TLS: the connection settings must say https://.
    TlsRequired,
    /// `spec.securityContext.capabilities.add` names a capability the controller does not
    /// allow (`--allowed-capabilities`).
    CapabilityNotAllowed,
    /// `spec.resources` asks more than the controller allows (`--max-memory`, `--max-cpus`,
    /// `--pids-limit`).
    ResourcesExceedLimit,
    /// `spec.resources` asks more CPUs or memory than the Docker host has.
    ResourcesExceedHost,
    /// The health check failed `failureThreshold` times in a row after the game was Ready.
    HealthCheckFailed,
    /// The health check never passed within `startupTimeout` of a start.
    StartupTimeout,
    /// The game is not Ready, so it cannot be allocated.
    NotReady,
    /// The game is in session (Allocated): what was asked would end a live match
    /// (`--force` overrides).
    InSession,
    /// `spec.lifecycle.preStop` failed or timed out (the stop went on).
    #[serde(rename = "prestop_failed")]
    PreStopFailed,
    /// A `spec.volumes[].source.hostPath` is outside the controller's `--allowed-host-paths`.
    HostPathNotAllowed,
    /// A Docker volume with the name of the game's own volume exists but is not this
    /// installation's volume of this game: never used, never removed.
    VolumeConflict,
    /// A shared volume (`spec.volumes[].source.volume`) does not exist on the Docker host.
    VolumeNotFound,
    /// A shared volume is rtmanager's own (another game's volume): a game cannot mount it.
    VolumeNotAllowed,
    /// Pulling `spec.image` from its registry failed (unreachable, refused, broken).
    ImagePullFailed,
    /// Pulling `spec.image` took longer than the controller's `--image-pull-timeout`.
    ImagePullTimeout,
    /// The registry refused the pull: no credentials, or wrong ones, for its host.
    ImagePullUnauthorized,
}

impl ErrorCode {
    /// Every code, in the order the README's table lists them.
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Conflict,
        ErrorCode::NotFound,
        ErrorCode::ServiceUnavailable,
        ErrorCode::Internal,
        ErrorCode::PermissionDenied,
        ErrorCode::ImageNotFound,
        ErrorCode::StartFailed,
        ErrorCode::StopFailed,
        ErrorCode::PortConflict,
        ErrorCode::PortNotAllowed,
        ErrorCode::LeaseLost,
        ErrorCode::Aborted,
        ErrorCode::DeadlineExceeded,
        ErrorCode::TlsRequired,
        ErrorCode::CapabilityNotAllowed,
        ErrorCode::ResourcesExceedLimit,
        ErrorCode::ResourcesExceedHost,
        ErrorCode::HealthCheckFailed,
        ErrorCode::StartupTimeout,
        ErrorCode::NotReady,
        ErrorCode::InSession,
        ErrorCode::PreStopFailed,
        ErrorCode::HostPathNotAllowed,
        ErrorCode::VolumeConflict,
        ErrorCode::VolumeNotFound,
        ErrorCode::VolumeNotAllowed,
        ErrorCode::ImagePullFailed,
        ErrorCode::ImagePullTimeout,
        ErrorCode::ImagePullUnauthorized,
    ];

    /// The wire form: what history entries, `rtctl` and metric labels carry.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::ImageNotFound => "image_not_found",
            ErrorCode::StartFailed => "start_failed",
            ErrorCode::StopFailed => "stop_failed",
            ErrorCode::PortConflict => "port_conflict",
            ErrorCode::PortNotAllowed => "port_not_allowed",
            ErrorCode::LeaseLost => "lease_lost",
            ErrorCode::Aborted => "aborted",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::TlsRequired => "tls_required",
            ErrorCode::CapabilityNotAllowed => "capability_not_allowed",
            ErrorCode::ResourcesExceedLimit => "resources_exceed_limit",
            ErrorCode::ResourcesExceedHost => "resources_exceed_host",
            ErrorCode::HealthCheckFailed => "health_check_failed",
            ErrorCode::StartupTimeout => "startup_timeout",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::InSession => "in_session",
            ErrorCode::PreStopFailed => "prestop_failed",
            ErrorCode::HostPathNotAllowed => "host_path_not_allowed",
            ErrorCode::VolumeConflict => "volume_conflict",
            ErrorCode::VolumeNotFound => "volume_not_found",
            ErrorCode::VolumeNotAllowed => "volume_not_allowed",
            ErrorCode::ImagePullFailed => "image_pull_failed",
            ErrorCode::ImagePullTimeout => "image_pull_timeout",
            ErrorCode::ImagePullUnauthorized => "image_pull_unauthorized",
        }
    }

    /// One line for people: when the code is used.
    pub const fn meaning(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "the document or request is malformed or fails validation",
            ErrorCode::Conflict => {
                "a concurrent change won, or another lifecycle operation holds the game's lease"
            }
            ErrorCode::NotFound => "the game does not exist",
            ErrorCode::ServiceUnavailable => "etcd or Docker is unreachable or timed out",
            ErrorCode::Internal => "an invariant broke inside rtmanager (a bug)",
            ErrorCode::PermissionDenied => "etcd refused the credentials or the operation",
            ErrorCode::ImageNotFound => {
                "spec.image is not on the Docker host (imagePullPolicy Never) or not in its registry"
            }
            ErrorCode::StartFailed => "Docker refused to create or start the container",
            ErrorCode::StopFailed => "Docker failed to stop the container",
            ErrorCode::PortConflict => {
                "a host port in spec.ports belongs to another game, or is already allocated"
            }
            ErrorCode::PortNotAllowed => {
                "a host port or hostIp in spec.ports is outside what the controller allows"
            }
            ErrorCode::LeaseLost => "the game's lease expired or was taken over mid-operation",
            ErrorCode::Aborted => "the operation was interrupted and resolved by recovery",
            ErrorCode::DeadlineExceeded => "a transitional phase missed its deadline",
            ErrorCode::TlsRequired => {
                "an http:// etcd endpoint answered a TLS handshake: use https:// and a CA"
            }
            ErrorCode::CapabilityNotAllowed => {
                "spec.securityContext.capabilities.add names a capability the controller does not allow"
            }
            ErrorCode::ResourcesExceedLimit => {
                "spec.resources asks more memory, CPUs or processes than the controller allows"
            }
            ErrorCode::ResourcesExceedHost => {
                "spec.resources asks more CPUs or memory than the Docker host has"
            }
            ErrorCode::HealthCheckFailed => {
                "the health check failed failureThreshold times in a row after the game was Ready"
            }
            ErrorCode::StartupTimeout => {
                "the health check never passed within startupTimeout of a start"
            }
            ErrorCode::NotReady => "the game is not Ready, so it cannot be allocated",
            ErrorCode::InSession => {
                "the game is in session (Allocated): the request would end a live match"
            }
            ErrorCode::PreStopFailed => {
                "spec.lifecycle.preStop failed or timed out; the stop went on"
            }
            ErrorCode::HostPathNotAllowed => {
                "a spec.volumes hostPath is outside the controller's --allowed-host-paths"
            }
            ErrorCode::VolumeConflict => {
                "a Docker volume with the name of the game's own volume is not this game's"
            }
            ErrorCode::VolumeNotFound => "a shared volume of spec.volumes does not exist",
            ErrorCode::VolumeNotAllowed => {
                "a shared volume of spec.volumes is rtmanager's own (a game's volume)"
            }
            ErrorCode::ImagePullFailed => {
                "pulling spec.image failed (registry unreachable, refused or broken)"
            }
            ErrorCode::ImagePullTimeout => {
                "pulling spec.image took longer than --image-pull-timeout"
            }
            ErrorCode::ImagePullUnauthorized => {
                "the registry refused the pull: missing or wrong credentials for its host"
            }
        }
    }

    /// Parses the wire form back (history entries read from etcd).
    pub fn parse(text: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_round_trips_through_parse_and_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
