//! Host ports: which game owns one, and which ones documents may publish.
//!
//! A host port of a node — (node, protocol, port), whatever the `hostIp`:
//! an address of the host overlaps the wildcard, and Docker's proxy and NAT
//! rules for the two would compete — belongs to one game: the first whose
//! controller claimed it, by creating the key
//! `ports/<node>/<protocol>/<port>` (create-only, fenced by the game's
//! lease) before it first created a container publishing it. The claim
//! stands while the owner's document asks for the port, whether or not its
//! container runs (stopped, crashed, mid-recreate): another game asking for
//! it is refused with `port_conflict` naming the owner and never binds it.
//! The claim goes with the owner's deletion, or is taken over once the
//! owner's document no longer asks for the port.
//!
//! The container is the truth, the claim a record of it: every container
//! carries a label per host port it publishes
//! ([`host_port_label`]), so when a claim is missing (lost,
//! deleted by hand) the game whose container was created with the port gets
//! it back, never a newcomer. A claim naming a game that no longer asks for
//! the port, or one that does not decode, is claimed anew.
//!
//! The controller also bounds what documents may publish
//! ([`HostPortPolicy`]): host ports in `--host-ports` (default
//! 1024-65535: ports below 1024 only when listed) and addresses in
//! `--host-ips` (default: the wildcard only, `0.0.0.0` and `::`).

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::model::{GameRuntime, GameRuntimeSpec, Protocol, Timestamp};

/// What a claim key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortClaim {
    /// The game that owns the port.
    pub game: String,
    /// When the claim was made (for people reading it).
    pub claimed_at: Timestamp,
    /// For a port `hostPort: auto` chose: the container port it publishes. Kept while
    /// the game stays on the node, so restarts and recreates get the same port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<u16>,
}

impl PortClaim {
    /// A claim by `game`, made now.
    pub fn new(game: &str) -> PortClaim {
        PortClaim {
            game: game.to_owned(),
            claimed_at: Timestamp::now(),
            auto: None,
        }
    }

    /// A claim by `game` of a port chosen for its `auto` container port `container_port`.
    pub fn auto(game: &str, container_port: u16) -> PortClaim {
        PortClaim {
            auto: Some(container_port),
            ..PortClaim::new(game)
        }
    }

    /// The claim key's value (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `None` for a value no version wrote (garbage by hand).
    pub fn decode(value: &[u8]) -> Option<PortClaim> {
        serde_json::from_slice(value).ok()
    }
}

/// One host port a spec publishes: the unit of ownership on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// TCP or UDP: the two are separate ports.
    pub protocol: PortProtocol,
    /// The port number on the host.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// The host ports `spec` publishes, sorted, each once.
pub fn host_ports(spec: &GameRuntimeSpec) -> Vec<HostPort> {
    let mut ports: Vec<HostPort> = spec
        .ports
        .iter()
        .filter_map(|p| {
            Some(HostPort {
                protocol: match p.protocol {
                    Protocol::Tcp => PortProtocol::Tcp,
                    Protocol::Udp => PortProtocol::Udp,
                },
                port: p.fixed_host_port()?,
            })
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Whether `doc` asks for `port` on `node`: it publishes the port and runs
/// there (its `spec.node` names the node, or it names none).
pub fn asks_for(doc: &GameRuntime, node: &str, port: HostPort) -> bool {
    doc.spec.node.as_deref().is_none_or(|n| n == node) && host_ports(&doc.spec).contains(&port)
}

/// Which host ports and host addresses documents may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortPolicy {
    ports: Vec<RangeInclusive<u16>>,
    /// `None`: any address.
    ips: Option<Vec<IpAddr>>,
}

/// The default of `--host-ports`.
pub const DEFAULT_HOST_PORTS: &str = "1024-65535";
/// The default of `--host-ips`: the wildcard addresses only.
pub const DEFAULT_HOST_IPS: &str = "0.0.0.0,::";

impl Default for HostPortPolicy {
    fn default() -> Self {
        HostPortPolicy::parse(DEFAULT_HOST_PORTS, DEFAULT_HOST_IPS)
            .expect("the default host-port policy parses")
    }
}

impl HostPortPolicy {
    /// Parses `--host-ports` (`7000-9999,27015`) and `--host-ips`
    /// (`0.0.0.0,10.0.0.5`, or `*` for any address).
    pub fn parse(ports: &str, ips: &str) -> Result<HostPortPolicy, String> {
        let mut ranges = Vec::new();
        for part in ports.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let parse = |text: &str| {
                text.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p >= 1)
                    .ok_or_else(|| format!("{part:?} is not a port (1-65535) or a range low-high"))
            };
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("{part:?}: the range ends before it starts"));
            }
            ranges.push(low..=high);
        }
        if ranges.is_empty() {
            return Err("no port or range given".into());
        }
        let ips = if ips.trim() == "*" {
            None
        } else {
            let mut list = Vec::new();
            for part in ips.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                list.push(
                    part.parse::<IpAddr>()
                        .map_err(|_| format!("{part:?} is not an IP address (or * for any)"))?,
                );
            }
            Some(list)
        };
        Ok(HostPortPolicy { ports: ranges, ips })
    }

    /// Whether `--host-ports` allows `port`.
    pub fn allows(&self, port: u16) -> bool {
        self.ports.iter().any(|range| range.contains(&port))
    }

    /// Why `spec` may not publish what it asks for, naming the field and
    /// the controller option that would allow it; `Ok` when it may.
    pub fn check(&self, spec: &GameRuntimeSpec) -> Result<(), String> {
        for (index, port) in spec.ports.iter().enumerate() {
            let Some(host_port) = port.fixed_host_port() else {
                continue;
            };
            if !self.ports.iter().any(|range| range.contains(&host_port)) {
                return Err(format!(
                    "spec.ports[{index}].hostPort {host_port} is outside the host ports this \
                     controller allows ({}); ask its operator to list it in --host-ports",
                    self.describe_ports()
                ));
            }
            let address = match port.host_ip.as_deref() {
                None => None,
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                    format!("spec.ports[{index}].hostIp {text:?} is not an IP address")
                })?),
            };
            let Some(allowed) = &self.ips else { continue };
            let permitted = match address {
                // All addresses: allowed when a wildcard is.
                None => allowed.iter().any(IpAddr::is_unspecified),
                Some(address) => allowed.contains(&address),
            };
            if !permitted {
                let asked = address.map_or("all addresses".to_owned(), |a| a.to_string());
                return Err(format!(
                    "spec.ports[{index}].hostIp ({asked}) is not an address this controller \
                     lets games bind ({}); ask its operator to list it in --host-ips",
                    self.describe_ips()
                ));
            }
        }
        Ok(())
    }

    fn describe_ports(&self) -> String {
        let parts: Vec<String> = self
            .ports
            .iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                }
            })
            .collect();
        parts.join(",")
    }

    fn describe_ips(&self) -> String {
        match &self.ips {
            None => "*".into(),
            Some(ips) => {
                let parts: Vec<String> = ips.iter().map(ToString::to_string).collect();
                parts.join(",")
            }
        }
    }
}

impl fmt::Display for HostPortPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host-ports: {}, host-ips: {}",
            self.describe_ports(),
            self.describe_ips()
        )
    }
}

/// The protocol of a host port, in Docker's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortProtocol {
    /// `tcp`.
    Tcp,
    /// `udp`.
    Udp,
}

impl PortProtocol {
    /// Docker's spelling, as in `7000/tcp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label a container carries for each host port it was created to
/// publish: `rtmanager.dev/host-port.<protocol>.<port>`. Known whether or
/// not the container runs (Docker's own `publish` filter sees running
/// containers only), so a later look can tell which game a port's
/// container belongs to even when the port's claim record is lost.
pub fn host_port_label(protocol: PortProtocol, port: u16) -> String {
    format!("{LABEL_HOST_PORT_PREFIX}{}.{port}", protocol.as_str())
}

/// What every [`host_port_label`] starts with.
const LABEL_HOST_PORT_PREFIX: &str = "rtmanager.dev/host-port.";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::game;

    fn spec_with(port: u16, host_ip: Option<&str>) -> GameRuntimeSpec {
        game("g1")
            .port_with(7000, Some(port), Protocol::Udp, host_ip)
            .build()
            .spec
    }

    #[test]
    fn by_default_ports_below_1024_and_specific_addresses_are_refused() {
        let policy = HostPortPolicy::default();
        assert!(policy.check(&spec_with(27015, None)).is_ok());
        let low = policy.check(&spec_with(80, None)).unwrap_err();
        assert!(
            low.contains("spec.ports[0].hostPort 80") && low.contains("--host-ports"),
            "{low}"
        );
        let address = policy
            .check(&spec_with(27015, Some("127.0.0.1")))
            .unwrap_err();
        assert!(
            address.contains("hostIp (127.0.0.1)") && address.contains("--host-ips"),
            "{address}"
        );
        assert!(policy.check(&spec_with(27015, Some("0.0.0.0"))).is_ok());
    }

    #[test]
    fn an_operator_lists_what_games_may_publish() {
        let policy = HostPortPolicy::parse("80, 7000-7999", "10.0.0.5,0.0.0.0").unwrap();
        assert!(policy.check(&spec_with(80, None)).is_ok());
        assert!(policy.check(&spec_with(7999, Some("10.0.0.5"))).is_ok());
        assert!(policy.check(&spec_with(8000, None)).is_err());
        assert!(policy.check(&spec_with(81, None)).is_err());
        assert!(policy.check(&spec_with(7000, Some("10.0.0.6"))).is_err());
        let any = HostPortPolicy::parse("1-65535", "*").unwrap();
        assert!(any.check(&spec_with(22, Some("192.168.1.1"))).is_ok());
        assert_eq!(
            policy.to_string(),
            "host-ports: 80,7000-7999, host-ips: 10.0.0.5,0.0.0.0"
        );
    }

    #[test]
    fn a_bad_policy_is_refused_with_what_is_wrong() {
        for (ports, ips, says) in [
            ("", "*", "no port"),
            ("0", "*", "not a port"),
            ("9-8", "*", "ends before"),
            ("70000", "*", "not a port"),
            ("7000", "localhost", "not an IP"),
        ] {
            let error = HostPortPolicy::parse(ports, ips).unwrap_err();
            assert!(error.contains(says), "{ports} {ips}: {error}");
        }
    }

    #[test]
    fn a_game_asks_for_a_port_only_on_its_own_node() {
        let mut doc = game("g1").port(7000, Some(17000)).build();
        let port = HostPort {
            protocol: PortProtocol::Tcp,
            port: 17000,
        };
        assert!(asks_for(&doc, "n1", port), "unassigned: any node");
        doc.spec.node = Some("n2".into());
        assert!(!asks_for(&doc, "n1", port));
        assert!(asks_for(&doc, "n2", port));
        let udp = HostPort {
            protocol: PortProtocol::Udp,
            ..port
        };
        assert!(
            !asks_for(&doc, "n2", udp),
            "another protocol is another port"
        );
    }

    #[test]
    fn a_claim_round_trips_and_garbage_is_none() {
        let claim = PortClaim::new("g1");
        assert_eq!(PortClaim::decode(&claim.encode()), Some(claim));
        assert_eq!(PortClaim::decode(b"forged"), None);
    }
}
