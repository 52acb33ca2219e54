//! The imperative-looking commands, all declarative underneath: `restart` (a new
//! `spec.restartToken`), `stop` / `start` (`spec.state`), `delete`, and `wait`, with the
//! `--wait` that follows the controller's status and history until the request is done.
//!
//! Every write goes through [`Documents`](rtm_core::records::Documents) with optimistic concurrency
//! (re-read and retry on conflict) and carries the request annotations
//! (`rtmanager.dev/op-source: admin_cli`, `rtmanager.dev/source-ref: <ref>`), which the
//! controller records in the history of the operation it runs for the change.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{
    WRITE_ATTEMPTS, backoff, check_ref, generate_ref, landed, rv_of, stamp_request,
};
use super::error::{CliError, Outcome};
use super::input::read_inputs;
use super::output::{note, short_id, warn};
use super::session::{MultiWatch, Session, WatchItem, check_name};
use rtm_core::ErrorCode;
use rtm_core::model::{
    ANNOTATION_SOURCE_REF, ConditionStatus, DesiredState, GameRuntime, GameRuntimeStatus, OpKind,
    Phase,
};
use rtm_core::records::documents::DocumentError;
use rtm_core::records::history::HistoryEntry;
use rtm_core::store::{KeyValue, Listing, Revision, WatchEvent};

const DEFAULT_ACTION_TIMEOUT: &str = "2m";

/// Attempts at writing a restart request when others write the game at the same time. A
/// restart request conflicts only with other writers of the same document, and a crowd of
/// `rtctl restart`s of one game (each one write) is normal: enough attempts, about a second
/// apart at most, for a few dozen of them to all land.
const RESTART_WRITE_ATTEMPTS: u32 = 15;

/// How long `restart --wait` waits for its restart to begin before it looks at who holds the
/// game's lease and says so (once): longer than a usual operation of another request holds it.
const LEASE_NOTICE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, clap::Args)]
pub struct RestartArgs {
    /// The game.
    pub name: String,
    /// The request id (correlation id) the controller records as the restart's source_ref;
    /// generated when absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub source_ref: Option<String>,
    /// Follow the restart until its history entry has an outcome; fail if it failed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The game.
    pub name: String,
    /// The request id (correlation id) the controller records; generated when absent.
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub source_ref: Option<String>,
    /// Wait until the controller reports the phase for this change.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Games to delete.
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub names: Vec<String>,
    /// Delete the games named in these files, directories or - (stdin).
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Succeed for games that do not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Wait until the controller has removed the containers (their status is gone).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = DEFAULT_ACTION_TIMEOUT, value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Games to wait for.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// phase=PHASE, condition=TYPE[=True|False|Unknown], or delete.
    #[arg(long = "for", value_name = "CONDITION")]
    pub condition: WaitFor,
    /// How long to wait, for all the games together.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    Phase(Phase),
    Condition {
        type_: String,
        status: ConditionStatus,
    },
    Delete,
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
            "{text:?} is not phase=PHASE, condition=TYPE[=STATUS] or delete (e.g. \
             --for=phase=Running, --for=condition=Ready)"
        ))
    }
}

/// A written (or already right) document.
struct Modified {
    doc: GameRuntime,
    changed: bool,
}

/// Reads the game, lets `change` edit it (returning whether it changed anything) and writes
/// it back with the request annotations, re-reading and retrying when someone else wrote
/// first.
async fn modify(
    session: &Session,
    name: &str,
    source_ref: &str,
    attempts: u32,
    mut change: impl FnMut(&mut GameRuntime) -> bool,
) -> Result<Modified, CliError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut doc = session.require(name).await?;
        let Some(rv) = rv_of(&doc) else {
            return Err(CliError::internal(format!(
                "gameruntime/{name} was read without a resourceVersion; this is a bug"
            )));
        };
        if !change(&mut doc) {
            return Ok(Modified {
                doc,
                changed: false,
            });
        }
        stamp_request(&mut doc, source_ref);
        match session.update(&doc, rv).await {
            Ok(written) => {
                return Ok(Modified {
                    doc: written,
                    changed: true,
                });
            }
            Err(e @ DocumentError::Conflict { .. }) => {
                if attempt >= attempts {
                    return Err(session.doc_error(e, &format!("writing gameruntime/{name}")));
                }
                backoff(attempt).await;
            }
            Err(DocumentError::Store(e)) if e.outcome_unknown() => {
                if let Some(live) = landed(session, &doc, source_ref).await {
                    return Ok(Modified {
                        doc: live,
                        changed: true,
                    });
                }
                return Err(session.store_error(e, &format!("writing gameruntime/{name}")));
            }
            Err(e) => return Err(session.doc_error(e, &format!("writing gameruntime/{name}"))),
        }
    }
}

fn request_ref(given: &Option<String>, what: &str) -> Result<String, CliError> {
    match given {
        Some(source_ref) => {
            check_ref(source_ref)?;
            Ok(source_ref.clone())
        }
        None => Ok(generate_ref(what)),
    }
}

/// A restart token: when it was asked for, plus randomness so two requests in one second
/// still differ.
pub fn new_restart_token() -> String {
    format!(
        "{}-{:08x}",
        rtm_core::model::Timestamp::now(),
        rand::random::<u32>()
    )
}

pub async fn restart(
    session: &Session,
    args: &RestartArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    let source_ref = request_ref(&args.source_ref, "restart")?;
    let mut token = String::new();
    let modified = modify(
        session,
        &args.name,
        &source_ref,
        RESTART_WRITE_ATTEMPTS,
        |doc| {
            // A fresh token per attempt: each write is a request of its own.
            token = new_restart_token();
            doc.spec.restart_token = token.clone();
            true
        },
    )
    .await?;
    writeln!(
        out,
        "gameruntime/{} restart requested (ref {source_ref})",
        args.name
    )?;
    out.flush()?;
    if modified.doc.spec.state == DesiredState::Stopped {
        note(&format!(
            "note: gameruntime/{name} is Stopped (spec.state): the controller records the restart \
             without starting a container; `rtctl start {name}` starts it",
            name = args.name
        ));
    }
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let after = rv_of(&modified.doc).unwrap_or_default();
    let mut waiter = RestartWaiter::new(&args.name, &source_ref, &token, after);
    let deadline = Instant::now() + args.timeout;
    wait_for(
        session,
        &args.name,
        Follow {
            history: true,
            from: Some(after),
            lease: true,
        },
        &mut waiter,
        Deadline {
            at: deadline,
            total: args.timeout,
        },
        &format!(
            "the restart of gameruntime/{} (ref {source_ref})",
            args.name
        ),
        &format!(
            "the restart stays requested: follow it with `rtctl history {}` or `rtctl get {} -w`",
            args.name, args.name
        ),
        out,
        interrupt,
    )
    .await?;
    Ok(Outcome::Success)
}

pub async fn set_state(
    session: &Session,
    args: &StateArgs,
    state: DesiredState,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    check_name(&args.name)?;
    let verb = match state {
        DesiredState::Running => "start",
        DesiredState::Stopped => "stop",
    };
    let source_ref = request_ref(&args.source_ref, verb)?;
    let modified = modify(session, &args.name, &source_ref, WRITE_ATTEMPTS, |doc| {
        if doc.spec.state == state {
            false
        } else {
            doc.spec.state = state;
            true
        }
    })
    .await?;
    if modified.changed {
        writeln!(
            out,
            "gameruntime/{} {verb} requested (ref {source_ref})",
            args.name
        )?;
    } else {
        writeln!(
            out,
            "gameruntime/{} unchanged (spec.state is already {state})",
            args.name
        )?;
    }
    out.flush()?;
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let target = match state {
        DesiredState::Running => Phase::Running,
        DesiredState::Stopped => Phase::Stopped,
    };
    let mut waiter = PhaseWaiter {
        name: args.name.clone(),
        target,
        min_generation: modified.doc.metadata.generation,
        fail_op: Some(verb),
        phase: PhaseTracker::default(),
    };
    wait_for(
        session,
        &args.name,
        Follow::default(),
        &mut waiter,
        Deadline {
            at: Instant::now() + args.timeout,
            total: args.timeout,
        },
        &format!("gameruntime/{} to be {target}", args.name),
        &format!(
            "spec.state stays {state}: follow it with `rtctl get {} -w` or `rtctl describe {}`",
            args.name, args.name
        ),
        out,
        interrupt,
    )
    .await?;
    Ok(Outcome::Success)
}

pub async fn delete(
    session: &Session,
    args: &DeleteArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    let names: Vec<String> = if args.files.is_empty() {
        args.names.clone()
    } else {
        read_inputs(&args.files, args.recursive)?
            .into_iter()
            .map(|input| input.doc.metadata.name)
            .collect()
    };
    for name in &names {
        check_name(name)?;
    }
    let mut deleted = Vec::new();
    for name in &names {
        match session.delete(name).await {
            Ok(()) => {
                writeln!(out, "gameruntime/{name} deleted")?;
                deleted.push(name.clone());
            }
            Err(CliError::NotFound { .. }) if args.ignore_not_found => {}
            Err(e) => return Err(e),
        }
    }
    out.flush()?;
    if !args.wait {
        return Ok(Outcome::Success);
    }
    let deadline = Deadline {
        at: Instant::now() + args.timeout,
        total: args.timeout,
    };
    for name in &deleted {
        let mut waiter = GoneWaiter {
            name: name.clone(),
            doc_gone: false,
            status_gone: false,
            phase: PhaseTracker::default(),
        };
        wait_for(
            session,
            name,
            Follow::default(),
            &mut waiter,
            deadline,
            &format!("the controller to remove gameruntime/{name}"),
            "the document is deleted; the controller removes the container when it gets to it \
             (see `rtctl get -w`)",
            out,
            interrupt,
        )
        .await?;
    }
    Ok(Outcome::Success)
}

pub async fn wait(
    session: &Session,
    args: &WaitArgs,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<Outcome, CliError> {
    for name in &args.names {
        check_name(name)?;
    }
    let deadline = Deadline {
        at: Instant::now() + args.timeout,
        total: args.timeout,
    };
    for name in &args.names {
        let (mut waiter, what): (Box<dyn Waiter>, String) = match &args.condition {
            WaitFor::Phase(phase) => (
                Box::new(PhaseWaiter {
                    name: name.clone(),
                    target: *phase,
                    min_generation: None,
                    fail_op: None,
                    phase: PhaseTracker::quiet(),
                }),
                format!("gameruntime/{name} to be {phase}"),
            ),
            WaitFor::Condition { type_, status } => (
                Box::new(ConditionWaiter {
                    name: name.clone(),
                    type_: type_.clone(),
                    status: *status,
                }),
                format!("condition {type_}={status} of gameruntime/{name}"),
            ),
            WaitFor::Delete => (
                Box::new(GoneWaiter {
                    name: name.clone(),
                    doc_gone: false,
                    status_gone: false,
                    phase: PhaseTracker::quiet(),
                }),
                format!("gameruntime/{name} to be deleted and removed"),
            ),
        };
        if args.condition != WaitFor::Delete {
            session.require(name).await?;
        }
        wait_for(
            session,
            name,
            Follow::default(),
            waiter.as_mut(),
            deadline,
            &what,
            &format!("see `rtctl describe {name}`"),
            out,
            interrupt,
        )
        .await?;
    }
    Ok(Outcome::Success)
}

/// A shared deadline for one command's waits.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    total: Duration,
}

/// Which of a game's keys an observation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Doc,
    Status,
    History,
    Lease,
}

/// What [`wait_for`] follows besides the document and the status.
#[derive(Debug, Clone, Copy, Default)]
struct Follow {
    /// The game's history entries.
    history: bool,
    /// Start at this revision (the waiter's own write), so every later revision of each key
    /// is observed, not only the newest.
    from: Option<Revision>,
    /// The game's lease key; the waiter is asked for a notice about it now and then
    /// ([`Waiter::lease_notice`]).
    lease: bool,
}

/// Decides from a game's keys, as they change, whether the wait is over.
trait Waiter {
    /// `kv` is the key's new value (`None`: absent or deleted). `Ok(Some(line))` ends the wait
    /// with a last line to print.
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError>;

    /// A line for stderr about the game's lease when the wait seems held up by it.
    fn lease_notice(&mut self) -> Option<String> {
        None
    }
}

/// Follows one game's document, status (and history, lease) keys until `waiter` is satisfied,
/// the deadline passes or the user interrupts.
#[allow(clippy::too_many_arguments)]
async fn wait_for(
    session: &Session,
    name: &str,
    follow: Follow,
    waiter: &mut dyn Waiter,
    deadline: Deadline,
    what: &str,
    hint: &str,
    out: &mut dyn Write,
    interrupt: &CancellationToken,
) -> Result<(), CliError> {
    let keys = session.keys();
    let doc_key = keys.gameruntime(name);
    let status_key = keys.status(name);
    let history_prefix = keys.history(name);
    let lease_key = keys.lease(name);
    // Listing order: document, status, then history and lease when followed.
    let mut prefixes = vec![doc_key.clone(), status_key.clone()];
    if follow.history {
        prefixes.push(history_prefix.clone());
    }
    if follow.lease {
        prefixes.push(lease_key.clone());
    }
    let classify = |key: &str| {
        if key == doc_key {
            Some(Which::Doc)
        } else if key == status_key {
            Some(Which::Status)
        } else if follow.history && key.starts_with(&history_prefix) {
            Some(Which::History)
        } else if follow.lease && key == lease_key {
            Some(Which::Lease)
        } else {
            // The prefix of g1 also covers g10's keys.
            None
        }
    };
    let feed = |listings: &[Listing],
                waiter: &mut dyn Waiter,
                out: &mut dyn Write|
     -> Result<Option<String>, CliError> {
        let find = |key: &str| {
            listings
                .iter()
                .flat_map(|l| l.items.iter())
                .find(|kv| kv.key == key)
                .cloned()
        };
        for (which, key) in [(Which::Doc, &doc_key), (Which::Status, &status_key)]
            .into_iter()
            .chain(follow.lease.then_some((Which::Lease, &lease_key)))
        {
            if let Some(done) = waiter.observe(which, find(key).as_ref(), out)? {
                return Ok(Some(done));
            }
        }
        for kv in listings.iter().flat_map(|l| l.items.iter()) {
            if classify(&kv.key) == Some(Which::History)
                && let Some(done) = waiter.observe(Which::History, Some(kv), out)?
            {
                return Ok(Some(done));
            }
        }
        Ok(None)
    };

    let follow_keys = async {
        let (mut watch, listings, _) =
            MultiWatch::start_at(session, prefixes.clone(), follow.from).await?;
        if let Some(done) = feed(&listings, waiter, out)? {
            return Ok(done);
        }
        let mut lease_check = follow.lease.then(|| Instant::now() + LEASE_NOTICE_AFTER);
        loop {
            let item = match lease_check {
                Some(at) => tokio::select! {
                    item = watch.next() => item?,
                    () = tokio::time::sleep_until(at) => {
                        match waiter.lease_notice() {
                            Some(notice) => {
                                note(&format!("note: {notice}"));
                                lease_check = None;
                            }
                            None => lease_check = Some(at + LEASE_NOTICE_AFTER),
                        }
                        continue;
                    }
                },
                None => watch.next().await?,
            };
            match item {
                WatchItem::Batch(batch) => {
                    for event in &batch {
                        let Some(which) = classify(event.key()) else {
                            continue;
                        };
                        let kv = match event {
                            WatchEvent::Put(kv) => Some(kv),
                            WatchEvent::Delete { .. } => None,
                        };
                        if let Some(done) = waiter.observe(which, kv, out)? {
                            return Ok(done);
                        }
                    }
                }
                WatchItem::Relisted(listings) => {
                    if let Some(done) = feed(&listings, waiter, out)? {
                        return Ok(done);
                    }
                }
            }
        }
    };
    let result: Result<String, CliError> = tokio::select! {
        result = tokio::time::timeout_at(deadline.at, follow_keys) => match result {
            Ok(result) => result,
            Err(_) => Err(CliError::Timeout {
                what: what.to_owned(),
                after: humantime::format_duration(deadline.total).to_string(),
                hint: hint.to_owned(),
            }),
        },
        () = interrupt.cancelled() => Err(CliError::Interrupted {
            what: what.to_owned(),
            hint: hint.to_owned(),
        }),
    };
    let done = match result {
        // A wait held up by someone else's lease says whose, in its last line too.
        Err(CliError::Timeout { what, after, hint }) if follow.lease => {
            let hint = match waiter.lease_notice() {
                Some(notice) => format!("{notice}; {hint}"),
                None => hint,
            };
            return Err(CliError::Timeout { what, after, hint });
        }
        other => other?,
    };
    writeln!(out, "{done}")?;
    out.flush()?;
    Ok(())
}

/// Prints a game's phase when it changes.
#[derive(Debug, Default)]
struct PhaseTracker {
    last: Option<Phase>,
    quiet: bool,
}

impl PhaseTracker {
    fn quiet() -> PhaseTracker {
        PhaseTracker {
            last: None,
            quiet: true,
        }
    }

    fn see(
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

fn decode_status(kv: &KeyValue) -> Option<GameRuntimeStatus> {
    match rtm_core::records::status::decode(kv) {
        Ok(status) => Some(status),
        Err(e) => {
            warn(&format!("ignoring an unreadable status: {e}"));
            None
        }
    }
}

fn deleted_while_waiting(name: &str, what: &str) -> CliError {
    CliError::Conflict {
        message: format!(
            "gameruntime/{name} was deleted while waiting for {what}; nothing is left to wait for"
        ),
    }
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
}

impl Waiter for RestartWaiter {
    fn observe(
        &mut self,
        which: Which,
        kv: Option<&KeyValue>,
        out: &mut dyn Write,
    ) -> Result<Option<String>, CliError> {
        let name = self.name.clone();
        match (which, kv) {
            (Which::Doc, None) => Err(deleted_while_waiting(&name, "its restart")),
            (Which::Doc, Some(kv)) => {
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
                Ok(None)
            }
            (Which::Lease, kv) => {
                self.lease = kv.cloned();
                Ok(None)
            }
            (Which::Status, Some(kv)) => {
                let Some(status) = decode_status(kv) else {
                    return Ok(None);
                };
                self.phase.see(&name, &status, out)?;
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
            (Which::History, Some(kv)) if kv.create_revision > self.after => {
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
                writeln!(out, "gameruntime/{name}: {}", progress_line(&entry))?;
                out.flush()?;
                if entry.outcome == rtm_core::model::Outcome::Failure
                    && entry.error_code == Some(ErrorCode::Aborted)
                {
                    if entry.op_kind == OpKind::Restart {
                        self.restart_seen = false;
                        note(&format!(
                            "note: the restart of gameruntime/{name} (ref {}) was aborted by \
                             recovery (a controller stopped in the middle of it); the request \
                             stays pending, following it to its real outcome",
                            entry.source_ref
                        ));
                    }
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
                match entry.outcome {
                    rtm_core::model::Outcome::InProgress => Ok(None),
                    rtm_core::model::Outcome::Success => Ok(Some(format!(
                        "gameruntime/{name} restarted{}{}",
                        match containers_changed(&entry) {
                            Some(change) => format!(": container {change}"),
                            None => String::new(),
                        },
                        self.merged(&entry.source_ref)
                    ))),
                    rtm_core::model::Outcome::Failure => Err(CliError::OperationFailed {
                        op: op.into(),
                        name,
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

struct PhaseWaiter {
    name: String,
    target: Phase,
    /// The status must describe at least this generation (our write), not an older one.
    min_generation: Option<i64>,
    /// For stop/start: a Failed phase for our generation ends the wait as this operation's
    /// failure.
    fail_op: Option<&'static str>,
    phase: PhaseTracker,
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

struct GoneWaiter {
    name: String,
    doc_gone: bool,
    status_gone: bool,
    phase: PhaseTracker,
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

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::ErrorCode;
    use rtm_core::model::{OpSource, Outcome as OpOutcome};

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

    fn kv(key: &str, value: Vec<u8>, mod_revision: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            create_revision: mod_revision,
            mod_revision,
            version: 1,
            lease: 0,
        }
    }

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
    fn restart_tokens_differ() {
        assert_ne!(new_restart_token(), new_restart_token());
    }
}
