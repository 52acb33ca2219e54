//! The controller's container policy: the hardening every container it
//! creates gets (every capability dropped, `no-new-privileges`, a pids
//! limit, a default memory and CPU limit, a rotated log, the games' isolated
//! network), and
//! the limits a document's asks are checked against before anything is
//! created or stopped.
//!
//! None of it is part of the spec hash: a container created under another
//! policy (or before there was one) is adopted as it is and gets the current
//! policy at its next voluntary recreate. What a document asks itself
//! (`spec.securityContext`, `spec.resources`) is hashed by the model.

use std::collections::BTreeSet;

use crate::runtime::{ContainerSpec, HostResources, LogRotation, NetworkSpec};
use rtm_core::error_code::ErrorCode;
use rtm_core::model::{Cpus, GameRuntime, Memory};

/// `--pids-limit`'s default: far above what a game server runs (an engine
/// and a few helpers, with their threads), far below what hurts a host
/// (a fork bomb stops here).
pub(crate) const DEFAULT_PIDS_LIMIT: i64 = 1024;

/// `--default-memory`: what a game without `spec.resources.memory` gets.
pub(crate) const DEFAULT_MEMORY: Memory = Memory::from_bytes(1 << 30);

/// `--max-memory`: the most a document may ask.
pub(crate) const DEFAULT_MAX_MEMORY: Memory = Memory::from_bytes(16 << 30);

/// `--default-cpus`, in CPUs.
pub(crate) const DEFAULT_CPUS: i64 = 1;

/// `--max-cpus`, in CPUs.
pub(crate) const DEFAULT_MAX_CPUS: i64 = 16;

/// `--log-max-size`: where a game's json-file log is rotated unless
/// `spec.logging.maxSize` says otherwise.
pub(crate) const DEFAULT_LOG_MAX_SIZE: Memory = Memory::from_bytes(10 << 20);

/// `--log-max-files`: the log files kept unless `spec.logging.maxFiles` says
/// otherwise (so a game's log takes at most 30 MiB of the host by default).
pub(crate) const DEFAULT_LOG_MAX_FILES: u32 = 3;

/// `--allowed-capabilities`'s default: the one capability a game server
/// plausibly needs (binding a port below 1024 as root).
pub(crate) const DEFAULT_ALLOWED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// Where a read-only root filesystem keeps a writable scratch space, and
/// its options: bounded so a game cannot fill the host's memory with it,
/// `nosuid`/`nodev` as Docker's own tmpfs defaults.
pub(crate) const READ_ONLY_TMPFS: (&str, &str) = ("/tmp", "rw,nosuid,nodev,size=64m,mode=1777");

/// The hardening and limits the controller applies to every container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPolicy {
    /// Capabilities a document may add back (`--allowed-capabilities`).
    pub(crate) allowed_capabilities: BTreeSet<String>,
    /// The pids limit of every container, and the most a document may ask.
    pub(crate) pids_limit: i64,
    /// Memory of a game that does not say; `None`: unlimited.
    pub(crate) default_memory: Option<Memory>,
    /// The most memory a document may ask; `None`: no controller limit.
    pub(crate) max_memory: Option<Memory>,
    /// CPUs of a game that does not say; `None`: unlimited.
    pub(crate) default_cpus: Option<Cpus>,
    /// The most CPUs a document may ask; `None`: no controller limit.
    pub(crate) max_cpus: Option<Cpus>,
    /// The network every game joins; `None`: Docker's default bridge.
    pub(crate) network: Option<NetworkSpec>,
    /// The log rotation of a game that does not say (`spec.logging`).
    pub(crate) log_rotation: LogRotation,
    /// The host directories `spec.volumes` may bind-mount, and what lies
    /// under them (`--allowed-host-paths`, normalised); empty: none.
    pub(crate) allowed_host_paths: Vec<String>,
}

impl Default for ContainerPolicy {
    /// The controller's defaults, with no network of its own (the
    /// controller names one per installation, see `HardeningArgs`).
    fn default() -> Self {
        ContainerPolicy {
            allowed_capabilities: DEFAULT_ALLOWED_CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            pids_limit: DEFAULT_PIDS_LIMIT,
            default_memory: Some(DEFAULT_MEMORY),
            max_memory: Some(DEFAULT_MAX_MEMORY),
            default_cpus: Some(cpus(DEFAULT_CPUS)),
            max_cpus: Some(cpus(DEFAULT_MAX_CPUS)),
            network: None,
            log_rotation: LogRotation {
                max_size_bytes: DEFAULT_LOG_MAX_SIZE.bytes(),
                max_files: DEFAULT_LOG_MAX_FILES,
            },
            allowed_host_paths: Vec::new(),
        }
    }
}

fn cpus(whole: i64) -> Cpus {
    Cpus::from_nano_cpus(whole * 1_000_000_000).expect("the default CPU counts are in range")
}

/// Why the policy refuses a document: its stable code and a message naming
/// the field, the value and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Refusal {
    /// The stable code the refused operation is recorded with.
    pub(crate) code: ErrorCode,
    /// Names the field, the value asked and the limit.
    pub(crate) message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: String) -> Self {
        Refusal { code, message }
    }
}

impl ContainerPolicy {
    /// The memory limit the game's container gets.
    pub(crate) fn memory(&self, doc: &GameRuntime) -> Option<Memory> {
        doc.spec.resources.memory.or(self.default_memory)
    }

    /// The CPU limit the game's container gets.
    pub(crate) fn cpus(&self, doc: &GameRuntime) -> Option<Cpus> {
        doc.spec.resources.cpus.or(self.default_cpus)
    }

    /// Checks what the document asks against the policy and the host
    /// (`None`: the host is not known, only the policy is checked). Pure:
    /// the lifecycle calls it before it creates, removes or stops anything,
    /// so a refused game keeps the container it has.
    pub(crate) fn admit(
        &self,
        doc: &GameRuntime,
        host: Option<HostResources>,
    ) -> Result<(), Refusal> {
        self.admit_capabilities(doc)?;
        self.admit_limits(doc)?;
        super::volumes::admit_host_paths(doc, &self.allowed_host_paths)?;
        match host {
            Some(host) => self.admit_on_host(doc, host),
            None => Ok(()),
        }
    }

    /// Refuses capabilities the controller does not allow to be added back.
    fn admit_capabilities(&self, doc: &GameRuntime) -> Result<(), Refusal> {
        let refused: Vec<&str> = doc
            .spec
            .security_context
            .capabilities
            .add
            .iter()
            .map(String::as_str)
            .filter(|c| !self.allowed_capabilities.contains(*c))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let allowed = if self.allowed_capabilities.is_empty() {
            "none".to_owned()
        } else {
            self.allowed_capabilities
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Refusal::new(
            ErrorCode::CapabilityNotAllowed,
            format!(
                "spec.securityContext.capabilities.add: {} not allowed by this controller \
                 (--allowed-capabilities: {allowed})",
                refused.join(", ")
            ),
        ))
    }

    /// Refuses resources above the controller's own maxima.
    fn admit_limits(&self, doc: &GameRuntime) -> Result<(), Refusal> {
        let resources = &doc.spec.resources;
        let limit = ErrorCode::ResourcesExceedLimit;
        if let (Some(asked), Some(max)) = (resources.memory, self.max_memory)
            && asked > max
        {
            return Err(Refusal::new(
                limit,
                format!(
                    "spec.resources.memory {asked} is above this controller's --max-memory {max}"
                ),
            ));
        }
        if let (Some(asked), Some(max)) = (resources.cpus, self.max_cpus)
            && asked > max
        {
            return Err(Refusal::new(
                limit,
                format!("spec.resources.cpus {asked} is above this controller's --max-cpus {max}"),
            ));
        }
        if let Some(asked) = resources.pids.filter(|p| *p > self.pids_limit) {
            return Err(Refusal::new(
                limit,
                format!(
                    "spec.resources.pids {asked} is above this controller's --pids-limit {}",
                    self.pids_limit
                ),
            ));
        }
        Ok(())
    }

    /// Refuses CPUs or memory (asked, or the controller's defaults) that
    /// the Docker host does not have.
    fn admit_on_host(&self, doc: &GameRuntime, host: HostResources) -> Result<(), Refusal> {
        let resources = &doc.spec.resources;
        let exceeds = ErrorCode::ResourcesExceedHost;
        // A host that reported nothing (0) is not checked rather than
        // refusing every game.
        if let Some(asked) = self.cpus(doc)
            && host.cpus > 0
            && asked.nano_cpus() > i64::from(host.cpus) * 1_000_000_000
        {
            let source = if resources.cpus.is_some() {
                "spec.resources.cpus"
            } else {
                "this controller's --default-cpus"
            };
            return Err(Refusal::new(
                exceeds,
                format!(
                    "{source} {asked} is more than the Docker host's {} CPUs",
                    host.cpus
                ),
            ));
        }
        if let Some(asked) = self.memory(doc)
            && host.memory_bytes > 0
            && asked.bytes() > host.memory_bytes
        {
            let source = if resources.memory.is_some() {
                "spec.resources.memory"
            } else {
                "this controller's --default-memory"
            };
            return Err(Refusal::new(
                exceeds,
                format!(
                    "{source} {asked} is more than the Docker host's memory ({})",
                    Memory::from_bytes(host.memory_bytes)
                ),
            ));
        }
        Ok(())
    }

    /// Fills the container's limits and hardening from the policy and what
    /// the document asks (`spec.resources`, `spec.securityContext`).
    pub(crate) fn apply(&self, doc: &GameRuntime, container: &mut ContainerSpec) {
        let spec = &doc.spec;
        let context = &spec.security_context;
        container.memory_bytes = self.memory(doc).map(Memory::bytes);
        container.nano_cpus = self.cpus(doc).map(Cpus::nano_cpus);
        container.pids_limit = Some(
            spec.resources
                .pids
                .map_or(self.pids_limit, |pids| pids.min(self.pids_limit)),
        );
        container.drop_all_capabilities = true;
        container.no_new_privileges = true;
        let mut cap_add = context.capabilities.add.clone();
        cap_add.sort_unstable();
        cap_add.dedup();
        container.cap_add = cap_add;
        container.user = context.run_as_user.map(|uid| match context.run_as_group {
            Some(gid) => format!("{uid}:{gid}"),
            None => uid.to_string(),
        });
        container.read_only_root_filesystem = context.read_only_root_filesystem;
        // A volume at /tmp is the writable scratch space then (Docker
        // refuses two mounts at one path).
        if context.read_only_root_filesystem
            && !container
                .mounts
                .iter()
                .any(|m| m.target == READ_ONLY_TMPFS.0)
        {
            let (path, options) = READ_ONLY_TMPFS;
            container.tmpfs.insert(path.to_owned(), options.to_owned());
        }
        container.network = self.network.clone();
        container.log_rotation = Some(self.log_rotation(doc));
    }

    /// The rotation of the game's log: what `spec.logging` sets, the
    /// controller's defaults for the rest.
    pub(crate) fn log_rotation(&self, doc: &GameRuntime) -> LogRotation {
        let logging = &doc.spec.logging;
        LogRotation {
            max_size_bytes: logging
                .max_size
                .map_or(self.log_rotation.max_size_bytes, Memory::bytes),
            max_files: logging.max_files.unwrap_or(self.log_rotation.max_files),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::fixtures::game;

    const HOST: HostResources = HostResources {
        cpus: 2,
        memory_bytes: 4 << 30,
    };

    fn refusal(doc: &GameRuntime) -> Refusal {
        ContainerPolicy::default()
            .admit(doc, Some(HOST))
            .expect_err("the policy refuses it")
    }

    #[test]
    fn a_document_asking_nothing_gets_the_hardened_defaults() {
        let doc = game("g1").build();
        let policy = ContainerPolicy::default();
        assert_eq!(policy.admit(&doc, Some(HOST)), Ok(()));
        let mut container = ContainerSpec::new("g1", "engine:1");
        container.drop_all_capabilities = false;
        policy.apply(&doc, &mut container);
        assert!(container.drop_all_capabilities);
        assert!(container.no_new_privileges);
        assert!(container.cap_add.is_empty());
        assert_eq!(container.pids_limit, Some(DEFAULT_PIDS_LIMIT));
        assert_eq!(container.memory_bytes, Some(1 << 30));
        assert_eq!(container.nano_cpus, Some(1_000_000_000));
        assert_eq!(container.user, None);
        assert!(!container.read_only_root_filesystem);
        assert!(container.tmpfs.is_empty());
    }

    #[test]
    fn every_log_is_rotated_by_default_and_spec_logging_overrides_each_bound() {
        let policy = ContainerPolicy::default();
        let mut container = ContainerSpec::new("g1", "engine:1");
        policy.apply(&game("g1").build(), &mut container);
        assert_eq!(
            container.log_rotation,
            Some(LogRotation {
                max_size_bytes: 10 << 20,
                max_files: 3
            }),
            "no game fills a disk by default"
        );
        let mut doc = game("g1").build();
        doc.spec.logging.max_files = Some(7);
        policy.apply(&doc, &mut container);
        assert_eq!(
            container.log_rotation,
            Some(LogRotation {
                max_size_bytes: 10 << 20,
                max_files: 7
            })
        );
        doc.spec.logging.max_size = Some("2Mi".parse().unwrap());
        policy.apply(&doc, &mut container);
        assert_eq!(
            container.log_rotation.map(|r| r.max_size_bytes),
            Some(2 << 20)
        );
    }

    #[test]
    fn what_a_document_asks_within_the_limits_is_what_it_gets() {
        let doc = game("g1")
            .memory("256Mi")
            .cpus("0.5")
            .pids(64)
            .add_capability("NET_BIND_SERVICE")
            .run_as(1000, Some(100))
            .read_only_root_filesystem()
            .build();
        let policy = ContainerPolicy::default();
        assert_eq!(policy.admit(&doc, Some(HOST)), Ok(()));
        let mut container = ContainerSpec::new("g1", "engine:1");
        policy.apply(&doc, &mut container);
        assert_eq!(container.memory_bytes, Some(256 << 20));
        assert_eq!(container.nano_cpus, Some(500_000_000));
        assert_eq!(container.pids_limit, Some(64));
        assert_eq!(container.cap_add, ["NET_BIND_SERVICE"]);
        assert_eq!(container.user.as_deref(), Some("1000:100"));
        assert!(container.read_only_root_filesystem);
        assert_eq!(container.tmpfs[READ_ONLY_TMPFS.0], READ_ONLY_TMPFS.1);
    }

    #[test]
    fn a_capability_the_controller_does_not_allow_is_refused_with_its_code() {
        let refused = refusal(&game("g1").add_capability("NET_RAW").build());
        assert_eq!(refused.code, ErrorCode::CapabilityNotAllowed);
        assert!(refused.message.contains("NET_RAW not allowed"), "{refused}");
        assert!(refused.message.contains("NET_BIND_SERVICE"), "{refused}");
        let none = ContainerPolicy {
            allowed_capabilities: BTreeSet::new(),
            ..ContainerPolicy::default()
        };
        let refused = none
            .admit(&game("g1").add_capability("NET_BIND_SERVICE").build(), None)
            .unwrap_err();
        assert!(
            refused.message.contains("allowed-capabilities: none"),
            "{refused}"
        );
    }

    #[test]
    fn asks_above_the_controllers_limits_are_refused_with_resources_exceed_limit() {
        for (doc, flag) in [
            (game("g1").memory("17Gi").build(), "--max-memory 16Gi"),
            (game("g1").cpus("17").build(), "--max-cpus 16"),
            (game("g1").pids(2048).build(), "--pids-limit 1024"),
        ] {
            let refused = ContainerPolicy::default().admit(&doc, None).unwrap_err();
            assert_eq!(refused.code, ErrorCode::ResourcesExceedLimit, "{refused}");
            assert!(refused.message.contains(flag), "{refused}");
        }
    }

    #[test]
    fn cpus_or_memory_above_the_hosts_are_refused_with_resources_exceed_host() {
        let refused = refusal(&game("g1").cpus("3").build());
        assert_eq!(refused.code, ErrorCode::ResourcesExceedHost);
        assert!(refused.message.contains("host's 2 CPUs"), "{refused}");
        let refused = refusal(&game("g1").memory("5Gi").build());
        assert_eq!(refused.code, ErrorCode::ResourcesExceedHost);
        // The controller's own default is checked too, and named as such.
        let greedy = ContainerPolicy {
            default_cpus: Some(cpus(4)),
            ..ContainerPolicy::default()
        };
        let refused = greedy.admit(&game("g1").build(), Some(HOST)).unwrap_err();
        assert!(refused.message.contains("--default-cpus"), "{refused}");
        // An unknown host, or one that reported nothing, is not checked.
        assert_eq!(
            ContainerPolicy::default().admit(&game("g1").cpus("3").build(), None),
            Ok(())
        );
        let blank = HostResources {
            cpus: 0,
            memory_bytes: 0,
        };
        assert_eq!(
            ContainerPolicy::default().admit(&game("g1").cpus("3").build(), Some(blank)),
            Ok(())
        );
    }
}
