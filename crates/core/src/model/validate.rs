//! Validation of a parsed document: one small function per rule, every failure collected as a
//! `FieldError` naming the YAML path of the offending field.
//!
//! The rules catch at `rtctl apply` time what would otherwise fail later and far away: in
//! etcd key building (names), or when Docker creates the container (image, ports, limits).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::time::Duration;

use super::disruption::{Disruption, Lifecycle, RestartSchedule, STOP_SIGNALS};
use super::port_number::RANGE_MESSAGE as PORT_RANGE_MESSAGE;
use super::{
    API_VERSION, EnvVar, GameRuntime, HealthCheck, KIND, Memory, PortMapping, Probe, Protocol,
    Resources, SecurityContext,
};

/// The longest `spec.stopTimeout`: a stop holds the game's lease while it waits, and a stop
/// that takes longer than this is a stuck container, better killed.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(600);

/// Docker refuses memory limits under 6 MiB (`linuxMinMemory` in the daemon).
const MIN_MEMORY: Memory = Memory::from_bytes(6 << 20);

/// Docker turns NanoCpus into a CFS quota over a 100ms period, and the kernel refuses quotas
/// under 1ms: 1ms / 100ms = 0.01 CPU.
const MIN_NANO_CPUS: i64 = 10_000_000;

/// The largest `spec.resources.memory` a document may ask: no game server needs a TiB, and
/// `1000000Gi` is a typo. The controller's `--max-memory` is the real, lower, limit.
const MAX_MEMORY: Memory = Memory::from_bytes(1 << 40);

/// The largest `spec.resources.cpus` a document may ask, in CPUs: above the biggest hosts
/// sold today, so `500` written for `500m` is caught here. The controller's `--max-cpus`
/// and the host's own count are the real limits.
const MAX_CPUS: i64 = 512;

/// The smallest `spec.resources.pids`: the init, the engine and a few helper processes.
pub const MIN_PIDS: i64 = 8;
/// The largest `spec.resources.pids`: the kernel's own ceiling on process ids
/// (`PID_MAX_LIMIT`, 2^22 on 64-bit).
pub const MAX_PIDS: i64 = 1 << 22;

/// The largest user or group id, as in Kubernetes (ids are signed 32-bit there).
const MAX_ID: u32 = i32::MAX as u32;

/// Every Linux capability, by the name Docker and Kubernetes use (no `CAP_` prefix), as of
/// Linux 5.9 (`CHECKPOINT_RESTORE`).
const CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Kubernetes' limit for label values and the name part of keys.
const MAX_LABEL_LENGTH: usize = 63;
/// A DNS-1123 subdomain (label key prefixes, node names) is at most 253 characters.
const MAX_SUBDOMAIN_LENGTH: usize = 253;
/// Same bound as a subdomain: long enough for any request id or UUID-based token.
const MAX_RESTART_TOKEN_LENGTH: usize = 253;
/// The longest image reference Docker accepts (`NameTotalLengthMax`).
const MAX_IMAGE_LENGTH: usize = 255;

/// How much of a value an error message quotes: enough to recognize it, while a 200 KB name
/// does not come back as a 200 KB error line (rtctl prints it, the controller logs it).
const QUOTED_CHARS: usize = 64;

const DNS_LABEL_RULE: &str = "must be 1 to 63 characters of lowercase letters (a-z), digits \
                              (0-9) and '-', starting and ending with a letter or digit, such \
                              as \"game-7f3a\"";

/// A value quoted in an error message (`{:?}`), cut after [`QUOTED_CHARS`] characters:
/// `"xxxx"… (200000 bytes)`.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Debug for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((end, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..end], self.0.len()),
        }
    }
}

/// One rule a document breaks: where (`spec.ports[1].hostPort`, the YAML field names) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// The field's path, with the YAML (camelCase) names: `spec.ports[1].hostPort`.
    pub path: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Checks every rule and returns all the broken ones, so a user fixes a file in one pass.
pub fn validate(doc: &GameRuntime) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let errors_ref = &mut errors;
    api_version(&doc.api_version, errors_ref);
    kind(&doc.kind, errors_ref);
    metadata_name(&doc.metadata.name, errors_ref);
    labels(&doc.metadata.labels, errors_ref);
    annotations(&doc.metadata.annotations, errors_ref);
    let spec = &doc.spec;
    image(&spec.image, errors_ref);
    hostname(spec.hostname.as_deref(), errors_ref);
    no_nul_in_each("spec.command", &spec.command, errors_ref);
    no_nul_in_each("spec.args", &spec.args, errors_ref);
    env(&spec.env, errors_ref);
    ports(&spec.ports, errors_ref);
    resources(&spec.resources, errors_ref);
    resource_bounds(&spec.resources, errors_ref);
    logging_bounds(&spec.logging, errors_ref);
    super::volume::validate_volumes(&spec.volumes, errors_ref);
    stop_timeout(spec.stop_timeout, errors_ref);
    restart_token(&spec.restart_token, errors_ref);
    node(spec.node.as_deref(), errors_ref);
    labels_of("spec.nodeSelector", &spec.node_selector, errors_ref);
    if spec.node_selector.len() > MAX_NODE_SELECTOR {
        errors_ref.push(FieldError::new(
            "spec.nodeSelector",
            format!("at most {MAX_NODE_SELECTOR} labels"),
        ));
    }
    security_context(&spec.security_context, errors_ref);
    if let Some(check) = &spec.health_check {
        health_check(check, errors_ref);
    }
    disruption(&spec.disruption, errors_ref);
    lifecycle(&spec.lifecycle, spec.stop_timeout, errors_ref);
    if let Some(schedule) = &spec.restart_schedule {
        restart_schedule(schedule, errors_ref);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Checks a game name (DNS-1123 label). Names become etcd keys and container names, so
/// `rtctl` checks command-line names with this before building a key: no '/', "..", upper
/// case, spaces or control characters can get through.
pub fn validate_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {:?}: a name {DNS_LABEL_RULE}",
            Quoted(name)
        ))
    }
}

fn api_version(value: &str, errors: &mut Vec<FieldError>) {
    if value != API_VERSION {
        errors.push(FieldError::new(
            "apiVersion",
            format!("must be {API_VERSION:?}, got {:?}", Quoted(value)),
        ));
    }
}

fn kind(value: &str, errors: &mut Vec<FieldError>) {
    if value != KIND {
        errors.push(FieldError::new(
            "kind",
            format!("must be {KIND:?}, got {:?}", Quoted(value)),
        ));
    }
}

fn metadata_name(name: &str, errors: &mut Vec<FieldError>) {
    if let Err(message) = validate_name(name) {
        errors.push(FieldError::new("metadata.name", message));
    }
}

fn labels(labels: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    labels_of("metadata.labels", labels, errors);
}

/// Checks label keys and values at `path` (`metadata.labels`, a selector's `matchLabels`).
pub(super) fn labels_of(
    path: &str,
    labels: &BTreeMap<String, String>,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in labels {
        let path = format!("{path}[{:?}]", Quoted(key));
        if let Err(message) = qualified_name(key) {
            errors.push(FieldError::new(&path, format!("invalid key: {message}")));
        }
        if let Err(message) = label_value(value) {
            errors.push(FieldError::new(&path, message));
        }
    }
}

/// Checks one label outside a document (a node's `--node-labels`) by the rules of
/// `metadata.labels`.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    qualified_name(key).map_err(|message| format!("invalid key: {message}"))?;
    label_value(value)
}

fn annotations(annotations: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    // Values are free text (the document size limit bounds them); keys follow label syntax,
    // as in Kubernetes, so tools can namespace them (`rtmanager.dev/source-ref`).
    for key in annotations.keys() {
        if let Err(message) = qualified_name(key) {
            errors.push(FieldError::new(
                format!("metadata.annotations[{:?}]", Quoted(key)),
                format!("invalid key: {message}"),
            ));
        }
    }
}

fn image(reference: &str, errors: &mut Vec<FieldError>) {
    if let Err(reason) = image_reference(reference) {
        let message = if reference.is_empty() {
            reason
        } else {
            format!(
                "{:?} is not a valid image reference: {reason}",
                Quoted(reference)
            )
        };
        errors.push(FieldError::new("spec.image", message));
    }
}

fn hostname(hostname: Option<&str>, errors: &mut Vec<FieldError>) {
    // Empty means "use the name", like absent; apply_defaults fills it in.
    if let Some(hostname) = hostname.filter(|h| !h.is_empty() && !is_dns1123_label(h)) {
        errors.push(FieldError::new(
            "spec.hostname",
            format!(
                "invalid hostname {:?}: a hostname {DNS_LABEL_RULE}",
                Quoted(hostname)
            ),
        ));
    }
}

/// Docker passes command, args and env to execve as C strings, which end at the first NUL.
fn no_nul_in_each(path: &str, values: &[String], errors: &mut Vec<FieldError>) {
    for (index, value) in values.iter().enumerate() {
        if value.contains('\0') {
            errors.push(FieldError::new(
                format!("{path}[{index}]"),
                "must not contain NUL characters",
            ));
        }
    }
}

fn env(vars: &[EnvVar], errors: &mut Vec<FieldError>) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, var) in vars.iter().enumerate() {
        let path = format!("spec.env[{index}]");
        if !is_env_name(&var.name) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!(
                    "invalid variable name {:?}: use letters, digits and '_', not starting with \
                     a digit",
                    Quoted(&var.name)
                ),
            ));
        } else if let Some(first) = first_index.get(var.name.as_str()) {
            errors.push(FieldError::new(
                format!("{path}.name"),
                format!(
                    "duplicate variable {:?}, first set at spec.env[{first}]",
                    Quoted(&var.name)
                ),
            ));
        } else {
            first_index.insert(&var.name, index);
        }
        if var.value.contains('\0') {
            errors.push(FieldError::new(
                format!("{path}.value"),
                "must not contain NUL characters",
            ));
        }
    }
}

fn ports(ports: &[PortMapping], errors: &mut Vec<FieldError>) {
    let mut container_ports: HashMap<(u16, Protocol), usize> = HashMap::new();
    let mut host_ports: HashMap<(u16, Protocol), usize> = HashMap::new();
    for (index, port) in ports.iter().enumerate() {
        let path = format!("spec.ports[{index}]");
        let protocol = port.protocol;
        if port.container_port == 0 {
            errors.push(FieldError::new(
                format!("{path}.containerPort"),
                PORT_RANGE_MESSAGE,
            ));
        } else if let Some(first) = container_ports.get(&(port.container_port, protocol)) {
            errors.push(FieldError::new(
                format!("{path}.containerPort"),
                format!(
                    "duplicate container port {}/{protocol}, first listed at spec.ports[{first}]",
                    port.container_port
                ),
            ));
        } else {
            container_ports.insert((port.container_port, protocol), index);
        }
        match port.fixed_host_port() {
            None => {}
            Some(0) => errors.push(FieldError::new(
                format!("{path}.hostPort"),
                PORT_RANGE_MESSAGE,
            )),
            Some(host_port) => {
                if let Some(first) = host_ports.get(&(host_port, protocol)) {
                    errors.push(FieldError::new(
                        format!("{path}.hostPort"),
                        format!(
                            "duplicate host port {host_port}/{protocol}, first listed at \
                             spec.ports[{first}]"
                        ),
                    ));
                } else {
                    host_ports.insert((host_port, protocol), index);
                }
            }
        }
        if let Some(ip) = port
            .host_ip
            .as_deref()
            .filter(|ip| ip.parse::<IpAddr>().is_err())
        {
            errors.push(FieldError::new(
                format!("{path}.hostIp"),
                format!(
                    "{:?} is not an IP address (such as 127.0.0.1 or ::1)",
                    Quoted(ip)
                ),
            ));
        }
    }
}

fn resources(resources: &Resources, errors: &mut Vec<FieldError>) {
    if let Some(memory) = resources.memory.filter(|memory| *memory < MIN_MEMORY) {
        errors.push(FieldError::new(
            "spec.resources.memory",
            format!("must be at least {MIN_MEMORY} (Docker's minimum), got {memory}"),
        ));
    }
    if let Some(cpus) = resources
        .cpus
        .filter(|cpus| cpus.nano_cpus() < MIN_NANO_CPUS)
    {
        errors.push(FieldError::new(
            "spec.resources.cpus",
            format!(
                "must be at least 0.01 (10m), the smallest quota the kernel allows, got {cpus}"
            ),
        ));
    }
}

fn resource_bounds(resources: &Resources, errors: &mut Vec<FieldError>) {
    if let Some(memory) = resources.memory.filter(|memory| *memory > MAX_MEMORY) {
        errors.push(FieldError::new(
            "spec.resources.memory",
            format!("must be at most {MAX_MEMORY}, got {memory}"),
        ));
    }
    if let Some(cpus) = resources
        .cpus
        .filter(|cpus| cpus.nano_cpus() > MAX_CPUS * 1_000_000_000)
    {
        errors.push(FieldError::new(
            "spec.resources.cpus",
            format!("must be at most {MAX_CPUS} (did you mean {cpus}m?), got {cpus}"),
        ));
    }
    if let Some(pids) = resources
        .pids
        .filter(|pids| !(MIN_PIDS..=MAX_PIDS).contains(pids))
    {
        errors.push(FieldError::new(
            "spec.resources.pids",
            format!("must be between {MIN_PIDS} and {MAX_PIDS}, got {pids}"),
        ));
    }
}

/// The smallest `spec.logging.maxSize`: a log rotated more often loses what a crash printed.
pub const MIN_LOG_SIZE: Memory = Memory::from_bytes(1 << 20);

/// The largest `spec.logging.maxSize`.
pub const MAX_LOG_SIZE: Memory = Memory::from_bytes(1 << 30);

/// The most files `spec.logging.maxFiles` may keep.
pub const MAX_LOG_FILES: u32 = 100;

fn logging_bounds(logging: &super::Logging, errors: &mut Vec<FieldError>) {
    if let Some(size) = logging
        .max_size
        .filter(|size| !(MIN_LOG_SIZE..=MAX_LOG_SIZE).contains(size))
    {
        errors.push(FieldError::new(
            "spec.logging.maxSize",
            format!("must be between {MIN_LOG_SIZE} and {MAX_LOG_SIZE}, got {size}"),
        ));
    }
    if let Some(files) = logging
        .max_files
        .filter(|files| !(1..=MAX_LOG_FILES).contains(files))
    {
        errors.push(FieldError::new(
            "spec.logging.maxFiles",
            format!("must be between 1 and {MAX_LOG_FILES}, got {files}"),
        ));
    }
}

/// Checks a capability's spelling: one of the Linux capabilities (as of Linux 5.9), upper
/// case, no `CAP_`. Whether the controller allows it is its policy, checked when it creates
/// the container.
pub fn validate_capability(name: &str) -> Result<(), String> {
    if CAPABILITIES.contains(&name) {
        return Ok(());
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Err(if name == "ALL" {
        "ALL cannot be added: name each capability the game needs".to_owned()
    } else if CAPABILITIES.contains(&bare) {
        format!("write {bare:?}, the name without \"CAP_\" and in upper case")
    } else {
        format!(
            "{:?} is not a Linux capability (such as NET_BIND_SERVICE)",
            Quoted(name)
        )
    })
}

fn security_context(context: &SecurityContext, errors: &mut Vec<FieldError>) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, name) in context.capabilities.add.iter().enumerate() {
        let path = format!("spec.securityContext.capabilities.add[{index}]");
        if let Err(message) = validate_capability(name) {
            errors.push(FieldError::new(path, message));
        } else if let Some(first) = first_index.get(name.as_str()) {
            errors.push(FieldError::new(
                path,
                format!("duplicate capability {name}, first listed at add[{first}]"),
            ));
        } else {
            first_index.insert(name, index);
        }
    }
    for (field, id) in [
        ("runAsUser", context.run_as_user),
        ("runAsGroup", context.run_as_group),
    ] {
        if let Some(id) = id.filter(|id| *id > MAX_ID) {
            errors.push(FieldError::new(
                format!("spec.securityContext.{field}"),
                format!("must be between 0 and {MAX_ID}, got {id}"),
            ));
        }
    }
    if context.run_as_group.is_some() && context.run_as_user.is_none() {
        errors.push(FieldError::new(
            "spec.securityContext.runAsGroup",
            "needs runAsUser (Docker sets a group only with a user)",
        ));
    }
}

/// Bounds of `spec.healthCheck`: probes at most once a second (a game's own health path is
/// not a benchmark), at least once an hour (a slower check sees nothing), and deadlines of at
/// most an hour.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);
const MAX_PROBE_DURATION: Duration = Duration::from_secs(3600);
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_FAILURE_THRESHOLD: u32 = 100;
/// The request line of an http probe carries the path: bounded, and printable ASCII only.
const MAX_PROBE_PATH_LENGTH: usize = 1024;

fn health_check(check: &HealthCheck, errors: &mut Vec<FieldError>) {
    let probes = check.probes();
    if probes.len() != 1 {
        let named: Vec<&str> = probes.iter().map(Probe::kind).collect();
        errors.push(FieldError::new(
            "spec.healthCheck",
            if named.is_empty() {
                "names no probe: give exactly one of http, tcp, exec or docker".to_owned()
            } else {
                format!(
                    "names {} probes ({}): give exactly one of http, tcp, exec or docker",
                    named.len(),
                    named.join(", ")
                )
            },
        ));
    }
    for probe in probes {
        match probe {
            Probe::Http(http) => {
                probe_port("spec.healthCheck.http.port", http.port, errors);
                probe_path(&http.path, errors);
            }
            Probe::Tcp(tcp) => probe_port("spec.healthCheck.tcp.port", tcp.port, errors),
            Probe::Exec(exec) => {
                if exec.command.is_empty() || exec.command[0].is_empty() {
                    errors.push(FieldError::new(
                        "spec.healthCheck.exec.command",
                        "must name a program to run, such as [/bin/check]",
                    ));
                }
                no_nul_in_each("spec.healthCheck.exec.command", &exec.command, errors);
            }
            Probe::Docker => {}
        }
    }
    let mut within = |field: &str, value: Duration, min: Duration, max: Duration| {
        if value < min || value > max {
            errors.push(FieldError::new(
                format!("spec.healthCheck.{field}"),
                format!(
                    "must be between {} and {}, got {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                    humantime::format_duration(value)
                ),
            ));
        }
    };
    within(
        "interval",
        check.interval,
        MIN_PROBE_INTERVAL,
        MAX_PROBE_DURATION,
    );
    within(
        "timeout",
        check.timeout,
        MIN_PROBE_TIMEOUT,
        check.interval.max(MIN_PROBE_TIMEOUT),
    );
    within(
        "startPeriod",
        check.start_period,
        Duration::ZERO,
        MAX_PROBE_DURATION,
    );
    within(
        "startupTimeout",
        check.startup_timeout,
        check.interval.min(MAX_PROBE_DURATION),
        MAX_PROBE_DURATION,
    );
    if !(1..=MAX_FAILURE_THRESHOLD).contains(&check.failure_threshold) {
        errors.push(FieldError::new(
            "spec.healthCheck.failureThreshold",
            format!(
                "must be between 1 and {MAX_FAILURE_THRESHOLD}, got {}",
                check.failure_threshold
            ),
        ));
    }
}

fn probe_port(path: &str, port: u16, errors: &mut Vec<FieldError>) {
    if port == 0 {
        errors.push(FieldError::new(path, PORT_RANGE_MESSAGE));
    }
}

fn probe_path(path: &str, errors: &mut Vec<FieldError>) {
    let message = if !path.starts_with('/') {
        "must start with '/', such as /healthz"
    } else if path.len() > MAX_PROBE_PATH_LENGTH {
        "must be at most 1024 characters"
    } else if !path.bytes().all(|b| b.is_ascii_graphic()) {
        "must be printable ASCII without spaces (percent-encode anything else)"
    } else {
        return;
    };
    errors.push(FieldError::new(
        "spec.healthCheck.http.path",
        format!("{message}, got {:?}", Quoted(path)),
    ));
}

/// The longest `spec.disruption.maxSessionWait`: a month covers any match.
const MAX_SESSION_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

fn disruption(disruption: &Disruption, errors: &mut Vec<FieldError>) {
    if let Some(wait) = disruption.max_session_wait
        && !(Duration::from_secs(1)..=MAX_SESSION_WAIT).contains(&wait)
    {
        errors.push(FieldError::new(
            "spec.disruption.maxSessionWait",
            format!(
                "must be between 1s and 30days, got {}",
                humantime::format_duration(wait)
            ),
        ));
    }
}

/// A preStop command, its delay and the signal wait all happen within the stop timeout.
fn lifecycle(lifecycle: &Lifecycle, stop_timeout: Duration, errors: &mut Vec<FieldError>) {
    if let Some(signal) = &lifecycle.stop_signal
        && !STOP_SIGNALS.contains(&signal.as_str())
    {
        errors.push(FieldError::new(
            "spec.lifecycle.stopSignal",
            format!(
                "{:?} is not a stop signal; give one of {}",
                Quoted(signal),
                STOP_SIGNALS.join(", ")
            ),
        ));
    }
    let mut used = lifecycle.shutdown_delay;
    if let Some(pre_stop) = &lifecycle.pre_stop {
        let command = &pre_stop.exec.command;
        if command.is_empty() || command[0].is_empty() {
            errors.push(FieldError::new(
                "spec.lifecycle.preStop.exec.command",
                "must name a program, such as [/bin/sh, -c, \"echo bye > /proc/1/fd/1\"]",
            ));
        }
        no_nul_in_each("spec.lifecycle.preStop.exec.command", command, errors);
        if let Some(timeout) = pre_stop.timeout
            && (timeout < Duration::from_secs(1) || timeout > stop_timeout)
        {
            errors.push(FieldError::new(
                "spec.lifecycle.preStop.timeout",
                format!(
                    "must be between 1s and spec.stopTimeout ({}), got {}",
                    humantime::format_duration(stop_timeout),
                    humantime::format_duration(timeout)
                ),
            ));
        }
        used += pre_stop.effective_timeout(stop_timeout);
    }
    if used > stop_timeout {
        errors.push(FieldError::new(
            "spec.lifecycle",
            format!(
                "preStop.timeout and shutdownDelay together ({}) must fit within spec.stopTimeout \
                 ({}): raise stopTimeout or shorten them",
                humantime::format_duration(used),
                humantime::format_duration(stop_timeout)
            ),
        ));
    }
}

fn restart_schedule(schedule: &RestartSchedule, errors: &mut Vec<FieldError>) {
    if let Err(error) = crate::schedule::Schedule::parse(&schedule.cron, schedule.zone()) {
        errors.push(FieldError::new(
            format!("spec.restartSchedule.{}", error.field()),
            error.to_string(),
        ));
    }
}

fn stop_timeout(timeout: Duration, errors: &mut Vec<FieldError>) {
    let message = if timeout.subsec_nanos() != 0 {
        "must be a whole number of seconds (Docker's stop timeout is in seconds)"
    } else if timeout > MAX_STOP_TIMEOUT {
        "must be at most 10m"
    } else {
        return;
    };
    errors.push(FieldError::new(
        "spec.stopTimeout",
        format!("{message}, got {}", humantime::format_duration(timeout)),
    ));
}

fn restart_token(token: &str, errors: &mut Vec<FieldError>) {
    if token.chars().count() > MAX_RESTART_TOKEN_LENGTH {
        errors.push(FieldError::new(
            "spec.restartToken",
            format!("must be at most {MAX_RESTART_TOKEN_LENGTH} characters"),
        ));
    }
    // Printed by `rtctl describe` and recorded in status: control characters would garble it.
    if token.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "spec.restartToken",
            "must not contain control characters",
        ));
    }
}

/// Labels a `spec.nodeSelector` may require (the schema says so too).
const MAX_NODE_SELECTOR: usize = 16;

fn node(node: Option<&str>, errors: &mut Vec<FieldError>) {
    // Empty means "any node", as in the design's example; apply_defaults clears it.
    if let Some(node) = node.filter(|n| !n.is_empty() && !is_dns1123_subdomain(n)) {
        errors.push(FieldError::new(
            "spec.node",
            format!(
                "invalid node name {:?}: use at most {MAX_SUBDOMAIN_LENGTH} characters of \
                 dot-separated parts, each {DNS_LABEL_RULE}",
                Quoted(node)
            ),
        ));
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// Whether `text` is a DNS-1123 subdomain (at most 253 characters of
/// dot-separated labels): what `spec.node` and node names may be.
pub fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= MAX_SUBDOMAIN_LENGTH && text.split('.').all(is_dns1123_label)
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what shells and most programs accept as a variable name.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Kubernetes label/annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the
/// name at most 63 characters of `[A-Za-z0-9._-]` starting and ending alphanumeric.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let key = Quoted(key);
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return Err(format!(
            "{key:?}: the prefix before '/' must be a DNS subdomain such as \"rtmanager.dev\""
        ));
    }
    if name.is_empty() {
        return Err(format!("{key:?}: the name part must not be empty"));
    }
    if !is_label_text(name) {
        return Err(format!(
            "{key:?}: the name part must be at most {MAX_LABEL_LENGTH} characters of letters, \
             digits, '-', '_' and '.', starting and ending with a letter or digit (and at most \
             one '/')"
        ));
    }
    Ok(())
}

/// A label key (`[prefix/]name`), as selectors name it.
pub(super) fn label_key(key: &str) -> Result<(), String> {
    qualified_name(key)
}

/// A label value, as selectors name it.
pub(super) fn label_value_of(value: &str) -> Result<(), String> {
    label_value(value)
}

fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_text(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid value {:?}: must be empty or at most {MAX_LABEL_LENGTH} characters of \
             letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
            Quoted(value)
        ))
    }
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 characters.
fn is_label_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    (1..=MAX_LABEL_LENGTH).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| alnum(b) || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// A Docker image reference, following the grammar of distribution/reference:
/// `[host[:port]/]component(/component)*[:tag][@sha256:<64 hex>]`.
pub fn image_reference(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    if reference.len() > MAX_IMAGE_LENGTH {
        return Err(format!("must be at most {MAX_IMAGE_LENGTH} characters"));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("the digest must start with \"sha256:\"")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(
                "the digest must be sha256: followed by 64 lowercase hex digits".to_owned(),
            );
        }
    }
    // A ':' after the last '/' starts the tag; one before it is a registry port.
    let (name, tag) = match rest.rfind(':') {
        Some(colon) if !rest[colon..].contains('/') => (&rest[..colon], Some(&rest[colon + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        image_tag(tag)?;
    }
    if name.is_empty() {
        return Err("the repository name is missing".to_owned());
    }
    // As in Docker: the first component is a registry when it looks like a host (has '.' or
    // ':', is "localhost", or has upper case, which repository paths never have).
    let path = match name.split_once('/') {
        Some((first, remainder))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            registry_host(first)?;
            remainder
        }
        _ => name,
    };
    path.split('/').try_for_each(path_component)
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn image_tag(tag: &str) -> Result<(), String> {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    if (1..=128).contains(&bytes.len())
        && bytes.first().is_some_and(word)
        && bytes.iter().all(|b| word(b) || matches!(b, b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {:?}: use at most 128 letters, digits, '_', '.' and '-', not \
             starting with '.' or '-'",
            Quoted(tag)
        ))
    }
}

/// `host[:port]`, the host a DNS name, an IPv4 address or a bracketed IPv6 address.
fn registry_host(domain: &str) -> Result<(), String> {
    let invalid = || format!("invalid registry host {:?}", Quoted(domain));
    let (host_ok, port) = if let Some(bracketed) = domain.strip_prefix('[') {
        let (ipv6, after) = bracketed.split_once(']').ok_or_else(invalid)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(invalid)?),
        };
        (ipv6.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        let component = |part: &str| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
                && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        };
        (host.split('.').all(component), port)
    };
    if !host_ok {
        return Err(invalid());
    }
    match port {
        Some(port)
            if !port.bytes().all(|b| b.is_ascii_digit())
                || !matches!(port.parse::<u16>(), Ok(1..)) =>
        {
            Err(format!(
                "invalid registry port {:?} in {:?}",
                Quoted(port),
                Quoted(domain)
            ))
        }
        _ => Ok(()),
    }
}

/// `[a-z0-9]+` runs joined by one separator: '.', '_', "__" or any number of '-'.
fn path_component(component: &str) -> Result<(), String> {
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository name component {:?} must be lowercase",
            Quoted(component)
        ));
    }
    let invalid = || {
        format!(
            "invalid repository name component {:?}: use lowercase letters and digits, \
             separated by '.', '_', '__' or dashes",
            Quoted(component)
        )
    };
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(alnum) || !component.ends_with(alnum) {
        return Err(invalid());
    }
    let mut separator = String::new();
    for c in component.chars() {
        if alnum(c) {
            let allowed = separator.is_empty()
                || matches!(separator.as_str(), "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !allowed {
                return Err(invalid());
            }
            separator.clear();
        } else if matches!(c, '.' | '_' | '-') {
            separator.push(c);
        } else {
            return Err(invalid());
        }
    }
    Ok(())
}

/// Joins errors as one line for people: `a: x; b: y`.
pub(crate) fn join(errors: &[FieldError]) -> String {
    let mut line = String::new();
    for (index, error) in errors.iter().enumerate() {
        if index > 0 {
            line.push_str("; ");
        }
        let _ = write!(line, "{error}");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::game;
    use super::*;
    use crate::model::HostPortSpec;

    /// A document that uses every field, valid, so each table row breaks exactly one rule.
    fn valid() -> GameRuntime {
        game("arena-1")
            .label("tier", "ranked")
            .label("rtmanager.dev/team", "")
            .annotation("rtmanager.dev/source-ref", "REQ-42 (any text)")
            .hostname("arena-1")
            .command(&["/bin/engine"])
            .args(&["--port", "7000"])
            .env("SEED", "42")
            .env("_DEBUG", "")
            .port(7000, Some(17000))
            .port_with(7000, Some(17000), Protocol::Udp, Some("127.0.0.1"))
            .port_with(7001, None, Protocol::Tcp, Some("::1"))
            .memory("64Mi")
            .cpus("0.5")
            .stop_timeout(Duration::from_secs(10))
            .restart_token("REQ-42")
            .node("node-a.example")
            .pids(256)
            .add_capability("NET_BIND_SERVICE")
            .add_capability("CHOWN")
            .run_as(1000, Some(1000))
            .read_only_root_filesystem()
            .health_check(super::super::ProbeKind::Http {
                port: 8080,
                path: "/healthz".into(),
            })
            .build()
    }

    fn check(doc: &mut GameRuntime) -> &mut HealthCheck {
        doc.spec.health_check.as_mut().expect("valid() has a check")
    }

    #[test]
    fn a_document_using_every_field_is_valid() {
        assert_eq!(validate(&valid()), Ok(()));
    }

    #[test]
    fn a_minimal_document_is_valid() {
        assert_eq!(validate(&game("g").build()), Ok(()));
    }

    #[test]
    fn each_rule_reports_the_path_of_the_field_it_rejects() {
        type Break = fn(&mut GameRuntime);
        let rows: Vec<(&str, Break)> = vec![
            ("apiVersion", |d| d.api_version = "rtmanager.dev/v1".into()),
            ("kind", |d| d.kind = "Pod".into()),
            ("metadata.name", |d| d.metadata.name = "Arena_1".into()),
            ("metadata.labels[\"bad key!\"]", |d| {
                d.metadata.labels.insert("bad key!".into(), "x".into());
            }),
            ("metadata.labels[\"tier\"]", |d| {
                d.metadata.labels.insert("tier".into(), "-ranked".into());
            }),
            ("metadata.annotations[\"a/b/c\"]", |d| {
                d.metadata.annotations.insert("a/b/c".into(), "x".into());
            }),
            ("spec.image", |d| d.spec.image = "Engine:1".into()),
            ("spec.hostname", |d| {
                d.spec.hostname = Some("arena.1".into())
            }),
            ("spec.command[0]", |d| {
                d.spec.command[0] = "/bin/\0engine".into()
            }),
            ("spec.args[1]", |d| d.spec.args[1] = "7\0".into()),
            ("spec.env[1].name", |d| d.spec.env[1].name = "1ST".into()),
            ("spec.env[1].name", |d| d.spec.env[1].name = "SEED".into()),
            ("spec.env[0].value", |d| {
                d.spec.env[0].value = "4\u{0}2".into()
            }),
            ("spec.ports[2].containerPort", |d| {
                d.spec.ports[2].container_port = 0
            }),
            ("spec.ports[2].containerPort", |d| {
                d.spec.ports[2].container_port = 7000
            }),
            ("spec.ports[2].hostPort", |d| {
                d.spec.ports[2].host_port = Some(HostPortSpec::Port(0))
            }),
            ("spec.ports[2].hostPort", |d| {
                d.spec.ports[2].host_port = Some(HostPortSpec::Port(17000))
            }),
            ("spec.ports[1].hostIp", |d| {
                d.spec.ports[1].host_ip = Some("localhost".into())
            }),
            ("spec.resources.memory", |d| {
                d.spec.resources.memory = Some(Memory::from_bytes(1 << 20))
            }),
            ("spec.resources.cpus", |d| {
                d.spec.resources.cpus = Some("5m".parse().unwrap())
            }),
            ("spec.stopTimeout", |d| {
                d.spec.stop_timeout = Duration::from_millis(1500)
            }),
            ("spec.stopTimeout", |d| {
                d.spec.stop_timeout = Duration::from_secs(601)
            }),
            ("spec.restartToken", |d| {
                d.spec.restart_token = "a".repeat(254)
            }),
            ("spec.restartToken", |d| {
                d.spec.restart_token = "line\nbreak".into()
            }),
            ("spec.node", |d| d.spec.node = Some("Node_A".into())),
            ("spec.resources.memory", |d| {
                d.spec.resources.memory = Some("1000000Gi".parse().unwrap())
            }),
            ("spec.resources.cpus", |d| {
                d.spec.resources.cpus = Some("1024".parse().unwrap())
            }),
            ("spec.logging.maxSize", |d| {
                d.spec.logging.max_size = Some("512Ki".parse().unwrap())
            }),
            ("spec.logging.maxSize", |d| {
                d.spec.logging.max_size = Some("2Gi".parse().unwrap())
            }),
            ("spec.logging.maxFiles", |d| {
                d.spec.logging.max_files = Some(0)
            }),
            ("spec.logging.maxFiles", |d| {
                d.spec.logging.max_files = Some(101)
            }),
            ("spec.resources.pids", |d| d.spec.resources.pids = Some(7)),
            ("spec.resources.pids", |d| {
                d.spec.resources.pids = Some(MAX_PIDS + 1)
            }),
            ("spec.securityContext.capabilities.add[1]", |d| {
                d.spec.security_context.capabilities.add[1] = "CAP_CHOWN".into()
            }),
            ("spec.securityContext.capabilities.add[1]", |d| {
                d.spec.security_context.capabilities.add[1] = "ALL".into()
            }),
            ("spec.securityContext.capabilities.add[1]", |d| {
                d.spec.security_context.capabilities.add[1] = "NET_BIND_SERVICE".into()
            }),
            ("spec.securityContext.runAsUser", |d| {
                d.spec.security_context.run_as_user = Some(u32::MAX)
            }),
            ("spec.securityContext.runAsGroup", |d| {
                d.spec.security_context.run_as_group = Some(1 << 31)
            }),
            ("spec.securityContext.runAsGroup", |d| {
                d.spec.security_context.run_as_user = None
            }),
            ("spec.healthCheck", |d| check(d).http = None),
            ("spec.healthCheck", |d| {
                check(d).tcp = Some(super::super::TcpProbe { port: 7000 })
            }),
            ("spec.healthCheck.http.port", |d| {
                check(d).http.as_mut().unwrap().port = 0
            }),
            ("spec.healthCheck.http.path", |d| {
                check(d).http.as_mut().unwrap().path = "healthz".into()
            }),
            ("spec.healthCheck.http.path", |d| {
                check(d).http.as_mut().unwrap().path = "/a b".into()
            }),
            ("spec.healthCheck.http.path", |d| {
                check(d).http.as_mut().unwrap().path = format!("/{}", "a".repeat(1024))
            }),
            ("spec.healthCheck.exec.command", |d| {
                let check = check(d);
                check.http = None;
                check.exec = Some(super::super::ExecProbe { command: vec![] });
            }),
            ("spec.healthCheck.exec.command[1]", |d| {
                let check = check(d);
                check.http = None;
                check.exec = Some(super::super::ExecProbe {
                    command: vec!["/bin/check".into(), "a\0b".into()],
                });
            }),
            ("spec.healthCheck.interval", |d| {
                let check = check(d);
                check.interval = Duration::from_millis(500);
                check.timeout = Duration::from_millis(200);
            }),
            ("spec.healthCheck.interval", |d| {
                let check = check(d);
                check.interval = Duration::from_secs(3601);
                check.startup_timeout = Duration::from_secs(3600);
            }),
            ("spec.healthCheck.timeout", |d| {
                check(d).timeout = Duration::from_secs(6)
            }),
            ("spec.healthCheck.timeout", |d| {
                check(d).timeout = Duration::from_millis(50)
            }),
            ("spec.healthCheck.startPeriod", |d| {
                check(d).start_period = Duration::from_secs(3601)
            }),
            ("spec.healthCheck.startupTimeout", |d| {
                check(d).startup_timeout = Duration::from_secs(4)
            }),
            ("spec.healthCheck.failureThreshold", |d| {
                check(d).failure_threshold = 0
            }),
            ("spec.healthCheck.failureThreshold", |d| {
                check(d).failure_threshold = 101
            }),
        ];
        for (path, break_rule) in rows {
            let mut doc = valid();
            break_rule(&mut doc);
            let errors = validate(&doc).expect_err(path);
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, [path], "{errors:?}");
        }
    }

    #[test]
    fn all_errors_are_collected() {
        let mut doc = valid();
        doc.kind = "Pod".into();
        doc.spec.image = String::new();
        doc.spec.ports[0].container_port = 0;
        let errors = validate(&doc).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["kind", "spec.image", "spec.ports[0].containerPort"]);
        assert_eq!(
            join(&errors),
            "kind: must be \"GameRuntime\", got \"Pod\"; spec.image: must not be empty; \
             spec.ports[0].containerPort: must be between 1 and 65535"
        );
    }

    #[test]
    fn limits_at_the_edges_are_accepted() {
        let mut doc = valid();
        doc.spec.stop_timeout = MAX_STOP_TIMEOUT;
        doc.spec.restart_token = "t".repeat(253);
        doc.spec.resources.memory = Some("6Mi".parse().unwrap());
        doc.spec.resources.cpus = Some("10m".parse().unwrap());
        doc.spec.ports[0].container_port = 65535;
        doc.spec.ports[0].host_port = Some(HostPortSpec::Port(1));
        doc.metadata.name = "a".repeat(63);
        doc.spec.node = Some(String::new());
        doc.spec.hostname = Some(String::new());
        doc.spec.stop_timeout = Duration::ZERO;
        assert_eq!(validate(&doc), Ok(()));
        doc.spec.resources.memory = Some(MAX_MEMORY);
        doc.spec.resources.cpus = Some("512".parse().unwrap());
        doc.spec.resources.pids = Some(MIN_PIDS);
        doc.spec.security_context.run_as_user = Some(0);
        doc.spec.security_context.run_as_group = Some(2_147_483_647);
        assert_eq!(validate(&doc), Ok(()));
        doc.spec.resources.pids = Some(MAX_PIDS);
        assert_eq!(validate(&doc), Ok(()));
    }

    #[test]
    fn capability_messages_say_how_to_write_the_name() {
        for name in CAPABILITIES {
            assert_eq!(validate_capability(name), Ok(()), "{name}");
        }
        let cases = [
            ("cap_net_raw", "write \"NET_RAW\""),
            ("net_bind_service", "write \"NET_BIND_SERVICE\""),
            ("ALL", "name each capability"),
            ("SUPERPOWERS", "not a Linux capability"),
            ("", "not a Linux capability"),
        ];
        for (name, message) in cases {
            let err = validate_capability(name).expect_err(name);
            assert!(err.contains(message), "{name:?}: {err}");
        }
    }

    #[test]
    fn names_are_dns_labels_and_the_message_says_what_is_allowed() {
        for good in ["g", "game-7f3a", "0", "a-b-c", &"x".repeat(63)] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-g",
            "g-",
            "Game",
            "g_1",
            "g.1",
            "a/b",
            "..",
            "../etc",
            "g 1",
            "g\n",
            "g\0",
            "ü",
            &"x".repeat(64),
        ] {
            let message = validate_name(bad).expect_err(bad);
            assert!(
                message.contains("lowercase letters (a-z), digits (0-9) and '-'"),
                "{message}"
            );
            assert!(
                message.contains(&format!("{bad:?}")),
                "the message quotes the name: {message}"
            );
        }
    }

    #[test]
    fn image_references_follow_dockers_grammar() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let good = [
            "engine".to_owned(),
            "engine:1".to_owned(),
            "rtmanager-test/engine:1".to_owned(),
            "registry.example/galaxy/engine:1.4.2".to_owned(),
            "localhost/engine".to_owned(),
            "localhost:5000/engine:latest".to_owned(),
            "Registry.Example:443/a/b/c".to_owned(),
            "10.0.0.1:5000/engine".to_owned(),
            "[::1]:5000/engine:v1".to_owned(),
            "galaxy/a.b__c-d---e/f_g.h:TAG_1.0-rc".to_owned(),
            format!("engine@{digest}"),
            format!("registry.example/engine:1@{digest}"),
        ];
        for reference in &good {
            assert_eq!(image_reference(reference), Ok(()), "{reference}");
        }
        let bad: [(String, &str); 16] = [
            (String::new(), "must not be empty"),
            ("engine 1".into(), "whitespace"),
            ("engine:".into(), "invalid tag"),
            ("engine:.1".into(), "invalid tag"),
            (format!("engine:{}", "t".repeat(129)), "invalid tag"),
            ("Engine".into(), "must be lowercase"),
            ("galaxy/Engine:1".into(), "must be lowercase"),
            (
                "galaxy//engine".into(),
                "invalid repository name component \"\"",
            ),
            ("galaxy/-engine".into(), "invalid repository name component"),
            (
                "galaxy/engine___x".into(),
                "invalid repository name component",
            ),
            (
                "galaxy/engine._x".into(),
                "invalid repository name component",
            ),
            ("registry.example:0/engine".into(), "invalid registry port"),
            ("-registry.example/engine".into(), "invalid registry host"),
            ("engine@sha256:abc".into(), "64 lowercase hex"),
            ("engine@md5:abc".into(), "must start with \"sha256:\""),
            (format!("{}:1", "a".repeat(254)), "at most 255"),
        ];
        for (reference, message) in &bad {
            let err = image_reference(reference).expect_err(reference);
            assert!(err.contains(message), "{reference:?}: {err}");
        }
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_syntax() {
        for key in ["tier", "rtmanager.dev/op-source", "a.b_c-D", "x/Y"] {
            assert_eq!(qualified_name(key), Ok(()), "{key}");
        }
        for key in [
            "",
            "/tier",
            "a/",
            "a/b/c",
            "Bad.Prefix/x",
            "-a",
            "a b",
            &"k".repeat(64),
        ] {
            assert!(qualified_name(key).is_err(), "{key:?}");
        }
        for value in ["", "ranked", "A.b-c_1", &"v".repeat(63)] {
            assert_eq!(label_value(value), Ok(()), "{value}");
        }
        for value in ["-x", "x-", "a b", "a/b", &"v".repeat(64)] {
            assert!(label_value(value).is_err(), "{value:?}");
        }
    }

    #[test]
    fn field_error_displays_path_then_message() {
        let error = FieldError::new("spec.ports[1].hostPort", "must be between 1 and 65535");
        assert_eq!(
            error.to_string(),
            "spec.ports[1].hostPort: must be between 1 and 65535"
        );
    }
}
