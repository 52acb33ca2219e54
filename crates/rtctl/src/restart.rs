//! `rtctl restart`: a new `spec.restartToken` asks the controller for a recreate; with
//! `--wait` it follows the request (and any it was merged into) to its history outcome.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::apply::rv_of;
use super::client::decode_status;
use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::output::{note, short_id, warn};
use super::request::{DEFAULT_ACTION_TIMEOUT, modify, request_ref, tell_if_in_session};
use super::target::{Targets, each};
use super::wait::engine::{Deadline, Follow, Wait, Waiter, Which, wait_for};
use super::wait::{PhaseTracker, deleted_while_waiting};
use rtm_core::ErrorCode;
use rtm_core::model::{ANNOTATION_SOURCE_REF, DesiredState, OpKind, Phase};
use rtm_core::records::history::HistoryEntry;
use rtm_core::store::{KeyValue, Revision};

/// Attempts at writing a restart request when others write the game at the same time. A
/// restart request conflicts only with other writers of the same document, and a crowd of
/// `rtctl restart`s of one game (each one write) is normal: enough attempts, about a second
/// apart at most, for a few dozen of them to all land.
const RESTART_WRITE_ATTEMPTS: u32 = 15;

/// The arguments of `rtctl restart`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    pub(crate) targets: Targets,
    /// The request id (correlation id) the controller records as the restart's source_ref;
    /// generated when absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
    /// Restart now even while the game is in session (ends its match) or its disruption
    /// budgets are used up.
    #[arg(long)]
    pub(crate) force: bool,
    /// Follow the restart until its history entry has an outcome; fail if it failed.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits (for all the games together).
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
}

/// A restart token: when it was asked for, plus randomness so two requests in one second
/// still differ.
pub(crate) fn new_restart_token() -> String {
    format!(
        "{}-{:08x}",
        rtm_core::model::Timestamp::now(),
        rand::random::<u32>()
    )
}

/// `rtctl restart`: writes the request for each game, then with `--wait` follows it to its
/// end. One game named: its failure is the command's; several: one line each, the worst
/// exit code.
pub(crate) async fn restart(
    client: &Client,
    args: &RestartArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let source_ref = request_ref(&args.source_ref, "restart")?;
    let names = args.targets.resolve(client, "restart").await?;
    let deadline = Deadline::after(args.timeout);
    if let [name] = names.as_slice()
        && args.targets.by_name()
    {
        return restart_one(client, name, &source_ref, args, deadline, out, interrupt).await;
    }
    Ok(each(&names, async |name: &str| {
        restart_one(
            client,
            name,
            &source_ref,
            args,
            deadline,
            &mut *out,
            interrupt,
        )
        .await
    })
    .await)
}

async fn restart_one(
    client: &Client,
    name: &str,
    source_ref: &str,
    args: &RestartArgs,
    deadline: Deadline,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    check_name(name)?;
    let mut token = String::new();
    let modified = modify(
        client,
        name,
        source_ref,
        RESTART_WRITE_ATTEMPTS,
        args.force,
        |doc| {
            // A fresh token per attempt: each write is a request of its own.
            token = new_restart_token();
            doc.spec.restart_token = token.clone();
            true
        },
    )
    .await?;
    let forced = if args.force { ", forced" } else { "" };
    writeln!(
        out,
        "gameruntime/{name} restart requested (ref {source_ref}{forced})"
    )?;
    out.flush()?;
    if modified.doc.spec.state == DesiredState::Stopped {
        note(&format!(
            "note: gameruntime/{name} is Stopped (spec.state): the controller records the restart \
             without starting a container; `rtctl start {name}` starts it"
        ));
    } else if !args.force {
        tell_if_in_session(client, name, "the restart").await?;
    }
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let after = rv_of(&modified.doc).unwrap_or_default();
    let mut waiter = RestartWaiter::new(name, source_ref, &token, after);
    wait_for(Wait {
        client,
        name,
        follow: Follow {
            history: true,
            from: Some(after),
            lease: true,
        },
        waiter: &mut waiter,
        deadline,
        what: format!("the restart of gameruntime/{name} (ref {source_ref})"),
        hint: format!(
            "the restart stays requested: follow it with `rtctl history {name}` or `rtctl get \
             {name} -w`"
        ),
        out,
        interrupt,
    })
    .await?;
    Ok(Outcome::Success)
}

/// Follows a restart request to its end.
///
/// The request is the token we wrote. Tokens written after ours, before any restart honoured
/// ours, merge with it: the controller restarts once, for the newest token it read, and that
/// restart answers every request merged into it. So the waiter follows the chain — every
/// token and request ref the document carried from our write on (the watch delivers every
/// revision) — and ends at the first of:
///
/// - a `restart` entry created after our write whose ref is in the chain gets an outcome
///   (success, or failure with its code);
/// - a `start` entry of the chain finishes while no `restart` entry of it was seen (the
///   game had no container, so starting one answered the request);
/// - the status records a token of the chain (`observedRestartToken`): a Stopped game
///   (nothing to restart), or a new container that answered it (e.g. a controller finished,
///   or adopted, what a crashed one began).
///
/// An entry resolved `aborted` by recovery (a controller died in the middle of it) is not the
/// request's outcome: it is told on stderr and the waiter follows the request on (recovery
/// leaves the request pending, so a controller runs it again).
struct RestartWaiter {
    name: String,
    source_ref: String,
    /// The revision of our write: entries created before it belong to earlier requests.
    after: Revision,
    /// The restart tokens and request refs of the document from our write on.
    tokens: BTreeSet<String>,
    refs: BTreeSet<String>,
    /// What was last printed for each entry, so a rewrite without news prints nothing.
    seen: HashMap<String, (OpKind, rtm_core::model::Outcome)>,
    /// Whether a `restart` entry of the chain is under way (its inner start does not end the
    /// wait).
    restart_seen: bool,
    /// Whether any entry of the chain appeared (the request's operation began).
    began: bool,
    /// The game's lease key, as last seen.
    lease: Option<KeyValue>,
    phase: PhaseTracker,
}

impl RestartWaiter {
    fn new(name: &str, source_ref: &str, token: &str, after: Revision) -> RestartWaiter {
        RestartWaiter {
            name: name.to_owned(),
            source_ref: source_ref.to_owned(),
            after,
            tokens: BTreeSet::from([token.to_owned()]),
            refs: BTreeSet::from([source_ref.to_owned()]),
            seen: HashMap::new(),
            restart_seen: false,
            began: false,
            lease: None,
            phase: PhaseTracker::default(),
        }
    }

    /// " (merged into the restart of ref X)" when the answering request is not ours.
    fn merged(&self, source_ref: &str) -> String {
        if source_ref == self.source_ref {
            String::new()
        } else {
            format!(" (ours was merged into the restart of ref {source_ref})")
        }
    }

    /// Follows the chain: every token and request ref the document carries from our write on.
    fn see_document(&mut self, kv: &KeyValue) {
        if kv.mod_revision >= self.after
            && let Ok(doc) = rtm_core::model::parse::parse_document(&kv.value)
        {
            if !doc.spec.restart_token.is_empty() {
                self.tokens.insert(doc.spec.restart_token.clone());
            }
            if let Some(source_ref) = doc.metadata.annotations.get(ANNOTATION_SOURCE_REF) {
                self.refs.insert(source_ref.clone());
            }
        }
    }

    /// A status that records a token of the chain ends the wait.
    fn see_status(
        &mut self,
        kv: &KeyValue,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        let name = &self.name;
        let Some(status) = decode_status(kv) else {
            return Ok(None);
        };
        self.phase.see(name, &status, out)?;
        let recorded = status
            .observed_restart_token
            .as_ref()
            .is_some_and(|token| self.tokens.contains(token));
        if !recorded {
            return Ok(None);
        }
        if status.phase == Phase::Stopped {
            return Ok((!self.restart_seen).then(|| {
                format!(
                    "gameruntime/{name} is Stopped: the restart is recorded, there was no \
                     container to restart"
                )
            }));
        }
        // The controller records a token only for a new container that answers it.
        Ok(Some(format!(
            "gameruntime/{name} restarted{}",
            match status.container_id.as_deref() {
                Some(id) => format!(": container {}", short_id(id)),
                None => String::new(),
            }
        )))
    }

    /// A history entry of the chain: its progress is told; a restart's (or a lone start's)
    /// outcome ends the wait.
    fn see_entry(
        &mut self,
        kv: &KeyValue,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        let entry: HistoryEntry = match serde_json::from_slice(&kv.value) {
            Ok(entry) => entry,
            Err(e) => {
                warn(&format!(
                    "ignoring the unreadable history entry {}: {e}",
                    kv.key
                ));
                return Ok(None);
            }
        };
        if !self.refs.contains(&entry.source_ref) {
            return Ok(None);
        }
        self.began = true;
        let state = (entry.op_kind, entry.outcome);
        if self.seen.get(&kv.key) == Some(&state) {
            return Ok(None);
        }
        self.seen.insert(kv.key.clone(), state);
        writeln!(out, "gameruntime/{}: {}", self.name, progress_line(&entry))?;
        out.flush()?;
        if entry.outcome == rtm_core::model::Outcome::Failure
            && entry.error_code == Some(ErrorCode::Aborted)
        {
            self.see_aborted(&entry);
            return Ok(None);
        }
        let op = match entry.op_kind {
            OpKind::Restart => {
                self.restart_seen = true;
                "restart"
            }
            OpKind::Start if !self.restart_seen => "restart (a start)",
            _ => return Ok(None),
        };
        self.outcome(op, &entry)
    }

    /// An entry resolved `aborted` by recovery is not the outcome: the request stays pending.
    fn see_aborted(&mut self, entry: &HistoryEntry) {
        if entry.op_kind == OpKind::Restart {
            self.restart_seen = false;
            note(&format!(
                "note: the restart of gameruntime/{} (ref {}) was aborted by recovery (a \
                 controller stopped in the middle of it); the request stays pending, following \
                 it to its real outcome",
                self.name, entry.source_ref
            ));
        }
    }

    /// The end of the wait an entry that answers the request means, if it has an outcome.
    fn outcome(&self, op: &str, entry: &HistoryEntry) -> Result<Option<String>, CliError> {
        match entry.outcome {
            rtm_core::model::Outcome::InProgress => Ok(None),
            rtm_core::model::Outcome::Success => Ok(Some(format!(
                "gameruntime/{} restarted{}{}",
                self.name,
                match containers_changed(entry) {
                    Some(change) => format!(": container {change}"),
                    None => String::new(),
                },
                self.merged(&entry.source_ref)
            ))),
            rtm_core::model::Outcome::Failure => Err(CliError::OperationFailed {
                op: op.into(),
                name: self.name.clone(),
                code: entry
                    .error_code
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_else(|| "unknown".into()),
                message: format!(
                    "{}{}",
                    entry
                        .error_message
                        .as_deref()
                        .unwrap_or("no message recorded"),
                    self.merged(&entry.source_ref)
                ),
            }),
        }
    }
}

impl Waiter for RestartWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        match (which, kv) {
            (Which::Doc, None) => Err(deleted_while_waiting(&self.name, "its restart")),
            (Which::Doc, Some(kv)) => {
                self.see_document(kv);
                Ok(None)
            }
            (Which::Lease, kv) => {
                self.lease = kv.cloned();
                Ok(None)
            }
            (Which::Status, Some(kv)) => self.see_status(kv, out),
            (Which::History, Some(kv)) if kv.create_revision > self.after => {
                self.see_entry(kv, out)
            }
            _ => Ok(None),
        }
    }

    fn lease_notice(&mut self) -> Option<String> {
        if self.began {
            // Our restart holds the lease itself.
            return None;
        }
        let kv = self.lease.as_ref()?;
        Some(format!(
            "gameruntime/{} waits for its lease: {}",
            self.name,
            super::describe::lease_line(kv, None)
        ))
    }
}

/// `stop success (container 0123456789ab)`, `start failure: start_failed: boom`.
fn progress_line(entry: &HistoryEntry) -> String {
    let mut line = format!("{} {}", entry.op_kind, entry.outcome);
    if let Some(code) = entry.error_code {
        line.push_str(&format!(": {code}"));
        if let Some(message) = &entry.error_message {
            line.push_str(&format!(": {message}"));
        }
    }
    let container = entry
        .container_id_after
        .as_deref()
        .or(entry.container_id_before.as_deref());
    if let Some(id) = container {
        line.push_str(&format!(" (container {})", short_id(id)));
    }
    line
}

fn containers_changed(entry: &HistoryEntry) -> Option<String> {
    match (&entry.container_id_before, &entry.container_id_after) {
        (Some(before), Some(after)) => Some(format!("{} → {}", short_id(before), short_id(after))),
        (None, Some(after)) => Some(short_id(after).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::wait::engine::key_value as kv;
    use super::*;
    use rtm_core::model::{GameRuntimeStatus, OpSource, Outcome as OpOutcome};

    fn entry(kind: OpKind, source_ref: &str, outcome: OpOutcome) -> Vec<u8> {
        let mut entry = HistoryEntry::begin("g1", "op", kind, OpSource::AdminCli);
        entry.source_ref = source_ref.into();
        match outcome {
            OpOutcome::Success => entry.succeed(),
            OpOutcome::Failure => entry.fail(ErrorCode::StartFailed, "boom"),
            OpOutcome::InProgress => {}
        }
        serde_json::to_vec(&entry).unwrap()
    }

    fn restart_waiter() -> RestartWaiter {
        let mut waiter = RestartWaiter::new("g1", "REQ-1", "t-1", 10);
        waiter.phase = PhaseTracker::quiet();
        waiter
    }

    fn doc_kv(token: &str, source_ref: &str, mod_revision: Revision) -> KeyValue {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n  \
             annotations: {{rtmanager.dev/source-ref: {source_ref}}}\nspec:\n  image: x:1\n  \
             restartToken: {token}\n"
        );
        kv("d/g1", yaml.into_bytes(), mod_revision)
    }

    fn aborted(kind: OpKind, source_ref: &str) -> Vec<u8> {
        let mut entry = HistoryEntry::begin("g1", "op", kind, OpSource::AdminCli);
        entry.source_ref = source_ref.into();
        entry.fail(ErrorCode::Aborted, "interrupted");
        serde_json::to_vec(&entry).unwrap()
    }

    #[test]
    fn a_restart_merged_into_a_later_request_ends_with_the_later_restart() {
        let mut waiter = restart_waiter();
        let mut out = Vec::new();
        for (token, source_ref, rev) in [("t-1", "REQ-1", 10), ("t-2", "REQ-2", 11)] {
            let doc = doc_kv(token, source_ref, rev);
            assert_eq!(
                waiter.observe(Which::Doc, Some(&doc), &mut out).unwrap(),
                None
            );
        }
        // A request older than ours is not part of the chain.
        let older = kv(
            "h/1",
            entry(OpKind::Restart, "REQ-0", OpOutcome::Success),
            12,
        );
        assert_eq!(
            waiter
                .observe(Which::History, Some(&older), &mut out)
                .unwrap(),
            None
        );
        let theirs = kv(
            "h/2",
            entry(OpKind::Restart, "REQ-2", OpOutcome::Success),
            13,
        );
        let done = waiter
            .observe(Which::History, Some(&theirs), &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(
            done,
            "gameruntime/g1 restarted (ours was merged into the restart of ref REQ-2)"
        );
    }

    #[test]
    fn a_merged_restart_that_failed_fails_every_request_in_it() {
        let mut waiter = restart_waiter();
        let doc = doc_kv("t-2", "REQ-2", 11);
        waiter
            .observe(Which::Doc, Some(&doc), &mut Vec::new())
            .unwrap();
        let failed = kv(
            "h/2",
            entry(OpKind::Restart, "REQ-2", OpOutcome::Failure),
            13,
        );
        let error = waiter
            .observe(Which::History, Some(&failed), &mut Vec::new())
            .unwrap_err();
        assert_eq!(
            error.exit_code(),
            super::super::error::exit::OPERATION_FAILED
        );
    }

    #[test]
    fn an_aborted_restart_is_not_the_outcome_the_next_one_is() {
        let mut waiter = restart_waiter();
        let mut out = Vec::new();
        for (key, kind) in [("h/1", OpKind::Restart), ("h/2", OpKind::Start)] {
            let lost = kv(key, aborted(kind, "REQ-1"), 12);
            assert_eq!(
                waiter
                    .observe(Which::History, Some(&lost), &mut out)
                    .unwrap(),
                None,
                "{kind}"
            );
        }
        let redone = kv(
            "h/3",
            entry(OpKind::Restart, "REQ-1", OpOutcome::Success),
            14,
        );
        assert!(
            waiter
                .observe(Which::History, Some(&redone), &mut out)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn an_aborted_restart_then_a_status_with_the_token_is_a_restart() {
        let mut waiter = restart_waiter();
        let lost = kv("h/1", aborted(OpKind::Restart, "REQ-1"), 12);
        waiter
            .observe(Which::History, Some(&lost), &mut Vec::new())
            .unwrap();
        let running = status_kv(Phase::Running, "t-1");
        let done = waiter
            .observe(Which::Status, Some(&running), &mut Vec::new())
            .unwrap();
        assert_eq!(done.as_deref(), Some("gameruntime/g1 restarted"));
    }

    #[test]
    fn a_busy_lease_is_told_only_before_the_restart_begins() {
        let mut waiter = restart_waiter();
        assert_eq!(waiter.lease_notice(), None, "no lease key");
        let mut lease = kv(
            "l/g1",
            br#"{"holder":"someone","token":"x","opId":"op-9"}"#.to_vec(),
            9,
        );
        lease.lease = 0;
        waiter
            .observe(Which::Lease, Some(&lease), &mut Vec::new())
            .unwrap();
        let notice = waiter.lease_notice().unwrap();
        assert!(
            notice.contains("held by someone for operation op-9")
                && notice.contains("not attached to any etcd lease"),
            "{notice}"
        );
        let ours = kv(
            "h/1",
            entry(OpKind::Restart, "REQ-1", OpOutcome::InProgress),
            12,
        );
        waiter
            .observe(Which::History, Some(&ours), &mut Vec::new())
            .unwrap();
        assert_eq!(waiter.lease_notice(), None);
    }

    fn status_kv(phase: Phase, token: &str) -> KeyValue {
        let status = GameRuntimeStatus {
            phase,
            observed_restart_token: Some(token.into()),
            ..GameRuntimeStatus::default()
        };
        kv("s/g1", serde_json::to_vec(&status).unwrap(), 20)
    }

    #[test]
    fn a_restart_of_a_stopped_game_ends_when_the_status_records_the_token() {
        let mut waiter = restart_waiter();
        let mut out = Vec::new();
        let old = status_kv(Phase::Stopped, "t-0");
        assert_eq!(
            waiter.observe(Which::Status, Some(&old), &mut out).unwrap(),
            None
        );
        let stopped = status_kv(Phase::Stopped, "t-1");
        let done = waiter
            .observe(Which::Status, Some(&stopped), &mut out)
            .unwrap();
        assert!(done.unwrap().starts_with("gameruntime/g1 is Stopped"));
    }

    #[test]
    fn a_start_answers_a_restart_only_outside_a_restart() {
        let mut out = Vec::new();
        let start = kv("h/5", entry(OpKind::Start, "REQ-1", OpOutcome::Success), 12);
        let mut alone = restart_waiter();
        assert!(
            alone
                .observe(Which::History, Some(&start), &mut out)
                .unwrap()
                .is_some()
        );

        let mut inner = restart_waiter();
        let outer = kv(
            "h/4",
            entry(OpKind::Restart, "REQ-1", OpOutcome::InProgress),
            11,
        );
        assert_eq!(
            inner
                .observe(Which::History, Some(&outer), &mut out)
                .unwrap(),
            None
        );
        assert_eq!(
            inner
                .observe(Which::History, Some(&start), &mut out)
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_restart_wait_ends_on_its_own_finished_entry_only() {
        let mut waiter = restart_waiter();
        let mut out = Vec::new();
        let old = kv(
            "h/1",
            entry(OpKind::Restart, "REQ-1", OpOutcome::Success),
            5,
        );
        assert_eq!(
            waiter
                .observe(Which::History, Some(&old), &mut out)
                .unwrap(),
            None,
            "older than our write"
        );
        let other = kv(
            "h/2",
            entry(OpKind::Restart, "REQ-2", OpOutcome::Success),
            11,
        );
        assert_eq!(
            waiter
                .observe(Which::History, Some(&other), &mut out)
                .unwrap(),
            None
        );
        let inner = kv("h/3", entry(OpKind::Stop, "REQ-1", OpOutcome::Success), 12);
        assert_eq!(
            waiter
                .observe(Which::History, Some(&inner), &mut out)
                .unwrap(),
            None
        );
        let outer = kv(
            "h/4",
            entry(OpKind::Restart, "REQ-1", OpOutcome::Success),
            13,
        );
        let done = waiter
            .observe(Which::History, Some(&outer), &mut out)
            .unwrap();
        assert_eq!(done.as_deref(), Some("gameruntime/g1 restarted"));
        let printed = String::from_utf8(out).unwrap();
        assert_eq!(
            printed,
            "gameruntime/g1: stop success\ngameruntime/g1: restart success\n"
        );
    }

    #[test]
    fn a_failed_restart_is_an_operation_failure_with_its_code() {
        let mut waiter = restart_waiter();
        let outer = kv(
            "h/4",
            entry(OpKind::Restart, "REQ-1", OpOutcome::Failure),
            13,
        );
        let error = waiter
            .observe(Which::History, Some(&outer), &mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("start_failed: boom"), "{error}");
        assert_eq!(
            error.exit_code(),
            super::super::error::exit::OPERATION_FAILED
        );
    }

    #[test]
    fn restart_tokens_differ() {
        assert_ne!(new_restart_token(), new_restart_token());
    }
}
