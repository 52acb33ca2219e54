//! `rtctl wait`, and what it and the verbs' `--wait` wait for: a phase, a condition, or a game
//! gone (document and status). The engine that follows the keys is [`engine`].

pub(crate) mod engine;

use std::io::Write;
use std::str::FromStr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::engine::{Deadline, Follow, Wait, Waiter, Which, wait_for};
use super::client::{Client, decode_status};
use super::error::{CliError, Outcome};
use super::shape::Template;
use super::shape::jsonpath::text_of;
use super::target::{Targets, each};
use rtm_core::model::{ConditionStatus, GameRuntime, GameRuntimeStatus, Phase};
use rtm_core::records::Documents;
use rtm_core::store::KeyValue;

/// The arguments of `rtctl wait`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// phase=PHASE, condition=TYPE[=True|False|Unknown], jsonpath=PATH[=VALUE], create or
    /// delete.
    #[arg(long = "for", value_name = "CONDITION")]
    pub(crate) condition: WaitFor,
    /// How long to wait, for all the games together; 0s looks once.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

const PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::Starting,
    Phase::Running,
    Phase::Stopping,
    Phase::Stopped,
    Phase::CrashLoopBackOff,
    Phase::Failed,
    Phase::Removing,
];

/// What `wait --for` waits for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WaitFor {
    Phase(Phase),
    Condition {
        type_: String,
        status: ConditionStatus,
    },
    Delete,
    /// The document exists.
    Create,
    /// A JSONPath finds a value (equal to the one given, when one is).
    JsonPath {
        path: Template,
        /// The text as given, for messages.
        text: String,
        value: Option<String>,
    },
}

impl FromStr for WaitFor {
    type Err = String;

    fn from_str(text: &str) -> Result<WaitFor, String> {
        let phases = || {
            PHASES
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if text == "delete" {
            return Ok(WaitFor::Delete);
        }
        if text == "create" {
            return Ok(WaitFor::Create);
        }
        if let Some(rest) = text.strip_prefix("jsonpath=") {
            let (path, value) = crate::shape::jsonpath::split_once_outside(rest, '=');
            if path.trim().is_empty() {
                return Err("jsonpath= needs a path, like jsonpath={.status.phase}=Running".into());
            }
            return Ok(WaitFor::JsonPath {
                path: Template::parse_path_or_template(path).map_err(|e| e.0)?,
                text: path.to_owned(),
                value: value.map(str::to_owned),
            });
        }
        if let Some(phase) = text.strip_prefix("phase=") {
            return PHASES
                .into_iter()
                .find(|p| p.as_str().eq_ignore_ascii_case(phase))
                .map(WaitFor::Phase)
                .ok_or_else(|| format!("unknown phase {phase:?}; one of {}", phases()));
        }
        if let Some(rest) = text.strip_prefix("condition=") {
            let (type_, status) = rest.split_once('=').unwrap_or((rest, "True"));
            let status = match status.to_ascii_lowercase().as_str() {
                "true" => ConditionStatus::True,
                "false" => ConditionStatus::False,
                "unknown" => ConditionStatus::Unknown,
                _ => {
                    return Err(format!(
                        "condition status {status:?} is not True, False or Unknown"
                    ));
                }
            };
            if type_.is_empty() {
                return Err("condition=TYPE needs a type, like condition=Ready".into());
            }
            return Ok(WaitFor::Condition {
                type_: type_.to_owned(),
                status,
            });
        }
        Err(format!(
            "{text:?} is not phase=PHASE, condition=TYPE[=STATUS], jsonpath=PATH[=VALUE], \
             create or delete (e.g. --for=phase=Running, --for=condition=Ready, \
             --for=jsonpath={{.status.phase}}=Running)"
        ))
    }
}

/// `rtctl wait`: waits for each game in turn, all within one deadline (each is looked at
/// once even when it has passed); each failure is reported on its line, the exit code is the
/// worst.
pub(crate) async fn wait(
    client: &Client,
    args: &WaitArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    if !args.targets.by_name() && args.condition == WaitFor::Create {
        return Err(CliError::usage(
            "rtctl wait --for=create takes game names: -l and --all match only games that exist",
        ));
    }
    let names = args.targets.resolve(client, "wait").await?;
    let deadline = Deadline::after(args.timeout);
    let outcome = each(&names, async |name: &str| {
        let (mut waiter, what) = goal(client, &args.condition, name);
        if !matches!(args.condition, WaitFor::Delete | WaitFor::Create) {
            client.require(name).await?;
        }
        wait_for(Wait {
            client,
            name,
            follow: Follow::default(),
            waiter: waiter.as_mut(),
            deadline,
            what,
            hint: format!("see `rtctl describe {name}`"),
            out: &mut *out,
            interrupt,
        })
        .await?;
        Ok(Outcome::Success)
    })
    .await;
    Ok(outcome)
}

/// The waiter for `--for` on one game, and how messages name what it waits for.
fn goal(client: &Client, condition: &WaitFor, name: &str) -> (Box<dyn Waiter>, String) {
    match condition {
        WaitFor::Create => (
            Box::new(CreateWaiter {
                name: name.to_owned(),
            }),
            format!("gameruntime/{name} to be created"),
        ),
        WaitFor::JsonPath { path, text, value } => (
            Box::new(JsonPathWaiter {
                name: name.to_owned(),
                documents: client.documents().clone(),
                path: path.clone(),
                value: value.clone(),
                doc: None,
                status: None,
            }),
            match value {
                Some(value) => format!("{text} of gameruntime/{name} to be {value:?}"),
                None => format!("{text} of gameruntime/{name} to be set"),
            },
        ),
        WaitFor::Phase(phase) => (
            Box::new(PhaseWaiter {
                name: name.to_owned(),
                target: *phase,
                min_generation: None,
                fail_op: None,
                phase: PhaseTracker::quiet(),
            }),
            format!("gameruntime/{name} to be {phase}"),
        ),
        WaitFor::Condition { type_, status } => (
            Box::new(ConditionWaiter {
                name: name.to_owned(),
                type_: type_.clone(),
                status: *status,
            }),
            format!("condition {type_}={status} of gameruntime/{name}"),
        ),
        WaitFor::Delete => (
            Box::new(GoneWaiter::new(name, PhaseTracker::quiet())),
            format!("gameruntime/{name} to be deleted and removed"),
        ),
    }
}

/// Prints a game's phase when it changes.
#[derive(Debug, Default)]
pub(crate) struct PhaseTracker {
    last: Option<Phase>,
    quiet: bool,
}

impl PhaseTracker {
    /// A tracker that prints nothing (`wait` prints only its last line).
    pub(crate) fn quiet() -> PhaseTracker {
        PhaseTracker {
            last: None,
            quiet: true,
        }
    }

    /// Prints the phase of `status` if it is new.
    pub(crate) fn see(
        &mut self,
        name: &str,
        status: &GameRuntimeStatus,
        out: &mut dyn Write,
    ) -> Result<(), CliError> {
        if self.last != Some(status.phase) {
            self.last = Some(status.phase);
            if !self.quiet {
                writeln!(out, "gameruntime/{name}: phase {}", status.phase)?;
                out.flush()?;
            }
        }
        Ok(())
    }
}

/// The failure of a wait whose game was deleted meanwhile.
pub(crate) fn deleted_while_waiting(name: &str, what: &str) -> CliError {
    CliError::Conflict {
        message: format!(
            "gameruntime/{name} was deleted while waiting for {what}; nothing is left to wait for"
        ),
    }
}

/// Waits for a phase, of the written generation when one is given.
pub(crate) struct PhaseWaiter {
    pub(crate) name: String,
    pub(crate) target: Phase,
    /// The status must describe at least this generation (our write), not an older one.
    pub(crate) min_generation: Option<i64>,
    /// For stop/start: a Failed phase for our generation ends the wait as this operation's
    /// failure.
    pub(crate) fail_op: Option<&'static str>,
    pub(crate) phase: PhaseTracker,
}

impl PhaseWaiter {
    fn current(&self, status: &GameRuntimeStatus) -> bool {
        match self.min_generation {
            Some(min) => status.observed_generation.is_some_and(|seen| seen >= min),
            None => true,
        }
    }
}

impl Waiter for PhaseWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        match (which, kv) {
            (Which::Doc, None) => Err(deleted_while_waiting(
                &self.name,
                &format!("phase {}", self.target),
            )),
            (Which::Status, Some(kv)) => {
                let Some(status) = decode_status(kv) else {
                    return Ok(None);
                };
                self.phase.see(&self.name, &status, out)?;
                if !self.current(&status) {
                    return Ok(None);
                }
                if status.phase == self.target {
                    return Ok(Some(format!(
                        "gameruntime/{} is {}",
                        self.name, self.target
                    )));
                }
                if let Some(op) = self.fail_op
                    && status.phase == Phase::Failed
                {
                    let last = status.last_operation.as_ref();
                    return Err(CliError::OperationFailed {
                        op: op.into(),
                        name: self.name.clone(),
                        code: last
                            .and_then(|l| l.error_code.clone())
                            .unwrap_or_else(|| "unknown".into()),
                        message: last
                            .and_then(|l| l.error_message.clone())
                            .or(status.message.clone())
                            .unwrap_or_else(|| "the game is Failed".into()),
                    });
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// Waits for a condition of the status to hold.
struct ConditionWaiter {
    name: String,
    type_: String,
    status: ConditionStatus,
}

impl Waiter for ConditionWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        _out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        match (which, kv) {
            (Which::Doc, None) => Err(deleted_while_waiting(
                &self.name,
                &format!("condition {}", self.type_),
            )),
            (Which::Status, Some(kv)) => {
                let holds = decode_status(kv).is_some_and(|status| {
                    status.conditions.iter().any(|c| {
                        c.type_.eq_ignore_ascii_case(&self.type_) && c.status == self.status
                    })
                });
                Ok(holds.then(|| {
                    format!(
                        "gameruntime/{} condition {}={}",
                        self.name, self.type_, self.status
                    )
                }))
            }
            _ => Ok(None),
        }
    }
}

/// Waits for a game to be gone: its document deleted and its status removed by the
/// controller.
pub(crate) struct GoneWaiter {
    name: String,
    doc_gone: bool,
    status_gone: bool,
    phase: PhaseTracker,
}

impl GoneWaiter {
    /// A waiter for `name`, telling its phase through `phase`.
    pub(crate) fn new(name: &str, phase: PhaseTracker) -> GoneWaiter {
        GoneWaiter {
            name: name.to_owned(),
            doc_gone: false,
            status_gone: false,
            phase,
        }
    }
}

impl Waiter for GoneWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        match which {
            Which::Doc => self.doc_gone = kv.is_none(),
            Which::Status => {
                self.status_gone = kv.is_none();
                if let Some(status) = kv.and_then(decode_status) {
                    self.phase.see(&self.name, &status, out)?;
                }
            }
            Which::History | Which::Lease => {}
        }
        Ok((self.doc_gone && self.status_gone)
            .then(|| format!("gameruntime/{} removed", self.name)))
    }
}

/// Waits for a document to exist.
struct CreateWaiter {
    name: String,
}

impl Waiter for CreateWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        _out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        Ok((which == Which::Doc && kv.is_some())
            .then(|| format!("gameruntime/{} created", self.name)))
    }
}

/// Waits for a JSONPath over the game (its document with its status, as `get -o json` prints
/// it) to find a value, or a value printing as the one given.
struct JsonPathWaiter {
    name: String,
    documents: Documents,
    path: Template,
    value: Option<String>,
    doc: Option<GameRuntime>,
    status: Option<GameRuntimeStatus>,
}

impl JsonPathWaiter {
    fn holds(&self) -> bool {
        let Some(doc) = &self.doc else {
            return false;
        };
        let mut doc = doc.clone();
        doc.status.clone_from(&self.status);
        let Ok(json) = serde_json::to_value(&doc) else {
            return false;
        };
        let found = self.path.values(&json);
        match &self.value {
            Some(value) => found.iter().any(|v| text_of(v) == *value),
            None => found.iter().any(|v| !v.is_null()),
        }
    }
}

impl Waiter for JsonPathWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        _out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        match which {
            Which::Doc => match kv {
                None => {
                    return Err(deleted_while_waiting(&self.name, "a JSONPath to match"));
                }
                Some(kv) => self.doc = self.documents.decode(kv).ok(),
            },
            Which::Status => self.status = kv.and_then(decode_status),
            Which::History | Which::Lease => return Ok(None),
        }
        Ok(self
            .holds()
            .then(|| format!("gameruntime/{} condition met", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::engine::key_value as kv;
    use super::*;

    #[test]
    fn wait_for_parses_phases_conditions_and_delete() {
        assert_eq!("phase=Running".parse(), Ok(WaitFor::Phase(Phase::Running)));
        assert_eq!("phase=stopped".parse(), Ok(WaitFor::Phase(Phase::Stopped)));
        assert_eq!(
            "condition=Ready".parse(),
            Ok(WaitFor::Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True
            })
        );
        assert_eq!(
            "condition=Ready=false".parse(),
            Ok(WaitFor::Condition {
                type_: "Ready".into(),
                status: ConditionStatus::False
            })
        );
        assert_eq!("delete".parse(), Ok(WaitFor::Delete));
        for bad in [
            "phase=Sleeping",
            "condition=",
            "condition=Ready=maybe",
            "ready",
        ] {
            assert!(bad.parse::<WaitFor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_phase_wait_needs_the_status_of_the_written_generation() {
        let status = |phase, generation| {
            let status = GameRuntimeStatus {
                phase,
                observed_generation: Some(generation),
                ..GameRuntimeStatus::default()
            };
            kv("s/g1", serde_json::to_vec(&status).unwrap(), 1)
        };
        let mut waiter = PhaseWaiter {
            name: "g1".into(),
            target: Phase::Stopped,
            min_generation: Some(3),
            fail_op: Some("stop"),
            phase: PhaseTracker::default(),
        };
        let mut out = Vec::new();
        assert_eq!(
            waiter
                .observe(Which::Status, Some(&status(Phase::Stopped, 2)), &mut out)
                .unwrap(),
            None
        );
        assert_eq!(
            waiter
                .observe(Which::Status, Some(&status(Phase::Stopping, 3)), &mut out)
                .unwrap(),
            None
        );
        assert!(
            waiter
                .observe(Which::Status, Some(&status(Phase::Stopped, 3)), &mut out)
                .unwrap()
                .is_some()
        );
        assert!(
            waiter
                .observe(Which::Status, Some(&status(Phase::Failed, 3)), &mut out)
                .is_err()
        );
        assert!(waiter.observe(Which::Doc, None, &mut out).is_err());
    }

    #[test]
    fn a_ready_wait_is_not_satisfied_by_a_running_game_that_is_still_starting() {
        let status = |phase, ready: ConditionStatus, reason: &str| {
            let status = GameRuntimeStatus {
                phase,
                conditions: vec![rtm_core::model::Condition {
                    type_: "Ready".into(),
                    status: ready,
                    reason: reason.into(),
                    message: String::new(),
                    last_transition_time: None,
                }],
                ..GameRuntimeStatus::default()
            };
            kv("s/g1", serde_json::to_vec(&status).unwrap(), 1)
        };
        let WaitFor::Condition {
            type_,
            status: want,
        } = "condition=Ready".parse().unwrap()
        else {
            panic!("condition=Ready parses as a condition");
        };
        let mut waiter = ConditionWaiter {
            name: "g1".into(),
            type_,
            status: want,
        };
        let mut out = Vec::new();
        for (phase, ready, reason) in [
            (Phase::Running, ConditionStatus::False, "Starting"),
            (Phase::Running, ConditionStatus::False, "HealthCheckFailing"),
            (Phase::Running, ConditionStatus::Unknown, "Starting"),
        ] {
            assert_eq!(
                waiter
                    .observe(Which::Status, Some(&status(phase, ready, reason)), &mut out)
                    .unwrap(),
                None,
                "{phase} with Ready={ready} ({reason}) is not Ready"
            );
        }
        // A status without the condition does not satisfy it either, whatever its phase.
        let bare = GameRuntimeStatus {
            phase: Phase::Running,
            ..GameRuntimeStatus::default()
        };
        let bare = kv("s/g1", serde_json::to_vec(&bare).unwrap(), 1);
        assert_eq!(
            waiter
                .observe(Which::Status, Some(&bare), &mut out)
                .unwrap(),
            None
        );
        assert_eq!(
            waiter
                .observe(
                    Which::Status,
                    Some(&status(
                        Phase::Running,
                        ConditionStatus::True,
                        "HealthCheckPassed"
                    )),
                    &mut out
                )
                .unwrap()
                .as_deref(),
            Some("gameruntime/g1 condition Ready=True")
        );
        assert!(out.is_empty(), "a condition wait prints only its last line");
    }
}
