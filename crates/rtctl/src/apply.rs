//! `rtctl apply` and `rtctl diff`: make the stored documents match files, or show how they
//! differ.
//!
//! Both compare the same thing: labels, annotations and spec. They ignore `status` (the
//! controller's), the fields etcd and apply keep (`generation`, `resourceVersion`,
//! `creationTimestamp`) and the per-request annotations `rtmanager.dev/op-source` and
//! `rtmanager.dev/source-ref`, which apply sets on every write it makes (and
//! `rtmanager.dev/force-disruption`, which a write by apply drops). A file that leaves
//! `spec.restartToken` empty keeps the live token: a restart requested with `rtctl restart`
//! is not undone (nor repeated) by the next apply. So `rtctl get NAME -o yaml` applied back is
//! `unchanged`.
//!
//! `--dry-run` (`=client`, the bare flag) reads the live documents and shows what apply would
//! do; `--dry-run=server` also asks etcd, in a transaction that compares and writes nothing,
//! whether each write's compare would hold (the document still absent, or still at the
//! revision read or pinned), so it meets the conflicts a real apply would; `--dry-run=none`
//! applies.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use similar::TextDiff;

use super::client::{Client, check_name};
use super::error::{CliError, Outcome, one_line};
use super::input::{Input, Inputs, read_objects};
use super::output::note;
use rtm_core::model::parse::to_yaml;
use rtm_core::model::{
    ANNOTATION_FORCE, ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, GameRuntime, OpSource, Timestamp,
};
use rtm_core::records::documents::DocumentError;
use rtm_core::store::{KeyValue, Revision};

/// Attempts at a write that races with other writers (each re-reads the live document).
pub(crate) const WRITE_ATTEMPTS: u32 = 5;
/// First pause between attempts, doubled each time up to [`RETRY_PAUSE_MAX`], plus up to as
/// much jitter.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between attempts: a writer that lost many races in a row (a crowd of
/// `rtctl restart`s of one game) keeps trying about once a second, not ever more rarely.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApplyArgs {
    /// Files, directories (their *.yaml, *.yml, *.json) or - for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub(crate) files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
    /// Write nothing: `client` (bare --dry-run) validates and shows what would change;
    /// `server` also makes every check etcd makes of a real write (the revision compares);
    /// `none` applies.
    #[arg(
        long,
        value_enum,
        value_name = "client|server|none",
        num_args = 0..=1,
        default_missing_value = "client",
        require_equals = true
    )]
    pub(crate) dry_run: Option<DryRun>,
    /// Overwrite whatever is stored, ignoring a metadata.resourceVersion in the files.
    #[arg(long)]
    pub(crate) force: bool,
    /// The request id the controller records as the operations' source_ref (correlation id).
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DiffArgs {
    /// Files, directories (their *.yaml, *.yml, *.json) or - for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub(crate) files: Vec<PathBuf>,
    /// Read directories' subdirectories too.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
}

/// The `--dry-run` modes of apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DryRun {
    /// Validate, read the live documents and show what would happen.
    Client,
    /// As `client`, and ask etcd whether each write's compare (the document absent, or at the
    /// revision read or pinned) holds, with a transaction that writes nothing.
    Server,
    /// A real apply.
    None,
}

impl ApplyArgs {
    /// The dry-run mode, `None` for a real apply.
    fn dry_run(&self) -> Option<DryRun> {
        self.dry_run.filter(|mode| *mode != DryRun::None)
    }

    /// The suffix of each line a dry run prints.
    fn suffix(&self) -> &'static str {
        match self.dry_run() {
            None => "",
            Some(DryRun::Server) => " (server dry run)",
            Some(_) => " (dry run)",
        }
    }
}

/// What apply does with one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Created,
    Configured,
    Unchanged,
}

impl Action {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }
}

/// The document apply would store for `applied`, given what is live, and what that is.
/// Request annotations are not set here (see [`stamp_request`]).
pub(crate) fn plan(
    applied: &GameRuntime,
    live: Option<&GameRuntime>,
    now: Timestamp,
) -> (Action, GameRuntime) {
    let mut desired = applied.clone();
    desired.status = None;
    desired.metadata.generation = None;
    desired.metadata.resource_version = None;
    match live {
        None => {
            desired.metadata.creation_timestamp = Some(now);
            (Action::Created, desired)
        }
        Some(live) => {
            desired.metadata.creation_timestamp = live.metadata.creation_timestamp;
            if desired.spec.restart_token.is_empty() {
                desired.spec.restart_token = live.spec.restart_token.clone();
            }
            let action = if comparable(&desired) == comparable(live) {
                Action::Unchanged
            } else {
                Action::Configured
            };
            (action, desired)
        }
    }
}

/// What apply and diff compare: no status, no store bookkeeping, no request annotations.
pub(crate) fn comparable(doc: &GameRuntime) -> GameRuntime {
    let mut doc = doc.clone();
    doc.status = None;
    doc.metadata.generation = None;
    doc.metadata.resource_version = None;
    doc.metadata.creation_timestamp = None;
    doc.metadata.annotations.remove(ANNOTATION_OP_SOURCE);
    doc.metadata.annotations.remove(ANNOTATION_SOURCE_REF);
    doc.metadata.annotations.remove(ANNOTATION_FORCE);
    doc
}

/// Marks a document about to be written as asked for by an admin through rtctl, with the
/// request's correlation id.
pub(crate) fn stamp_request(doc: &mut GameRuntime, source_ref: &str) {
    // A force names the generation of the write that set it; this write makes another one.
    doc.metadata.annotations.remove(ANNOTATION_FORCE);
    doc.metadata.annotations.insert(
        ANNOTATION_OP_SOURCE.to_owned(),
        OpSource::AdminCli.as_str().to_owned(),
    );
    doc.metadata
        .annotations
        .insert(ANNOTATION_SOURCE_REF.to_owned(), source_ref.to_owned());
}

/// A correlation id for a request that was not given one: `rtctl-<what>-<time>-<random>`.
pub(crate) fn generate_ref(what: &str) -> String {
    format!(
        "rtctl-{what}-{}-{:08x}",
        Timestamp::now().unix_seconds(),
        rand::random::<u32>()
    )
}

/// Checks a `--ref` value: it becomes an annotation and a history field printed to people.
pub(crate) fn check_ref(source_ref: &str) -> Result<(), CliError> {
    if source_ref.is_empty()
        || source_ref.chars().count() > 253
        || source_ref.chars().any(char::is_control)
    {
        return Err(CliError::invalid(format!(
            "invalid --ref {source_ref:?}: it must be 1 to 253 characters without control \
             characters, like REQ-42"
        )));
    }
    Ok(())
}

/// A pause before retry `attempt` (1-based): doubling, with jitter so racing writers spread.
pub(crate) async fn backoff(attempt: u32) {
    let base =
        (RETRY_PAUSE * 2u32.saturating_pow(attempt.saturating_sub(1).min(10))).min(RETRY_PAUSE_MAX);
    let jitter = base.mul_f64(rand::random::<f64>());
    tokio::time::sleep(base + jitter).await;
}

pub(crate) async fn apply(
    client: &Client,
    args: &ApplyArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if let Some(source_ref) = &args.source_ref {
        check_ref(source_ref)?;
    }
    // Every document of every file is parsed and validated before anything is written.
    let Inputs {
        games: inputs,
        budgets,
    } = read_objects(&args.files, args.recursive)?;
    let source_ref = args
        .source_ref
        .clone()
        .unwrap_or_else(|| generate_ref("apply"));
    check_host_ports(client, &inputs).await?;
    let total = inputs.len() + budgets.len();
    // Budgets first: a budget applied with the games it covers guards their changes.
    for (done, input) in budgets.iter().enumerate() {
        let action = super::budget::apply_one(client, input, args.dry_run().is_some())
            .await
            .map_err(|e| partial(e, done, total))?;
        let suffix = args.suffix();
        writeln!(
            out,
            "gamedisruptionbudget/{} {}{suffix}",
            input.budget.name(),
            action.as_str()
        )?;
    }
    for (done, input) in inputs.iter().enumerate() {
        let done = done + budgets.len();
        let action = apply_one(client, input, args, &source_ref)
            .await
            .map_err(|e| partial(e, done, total))?;
        let suffix = args.suffix();
        writeln!(
            out,
            "gameruntime/{} {}{suffix}",
            input.doc.metadata.name,
            action.as_str()
        )?;
    }
    Ok(Outcome::Success)
}

/// Refuses, before anything is written, a document that would be a new
/// claimant of a host port another game asks for on a node they share
/// (either names no node, or both name the same one), or that two of the
/// applied documents both ask for. The controller refuses it anyway
/// (`rtm_core::ports`); here the user hears it at once, naming the owner. A
/// document that already asks for the port is left to the controller,
/// which knows who claimed it first.
pub(crate) async fn check_host_ports(client: &Client, inputs: &[Input]) -> Result<(), CliError> {
    use rtm_core::ports::host_ports;
    if inputs.iter().all(|i| host_ports(&i.doc.spec).is_empty()) {
        return Ok(());
    }
    let listed = client
        .documents()
        .list()
        .await
        .map_err(|e| client.doc_error(e, "listing gameruntimes to check host ports"))?;
    let share_a_node = |a: &GameRuntime, b: &GameRuntime| match (&a.spec.node, &b.spec.node) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    for (index, input) in inputs.iter().enumerate() {
        let doc = &input.doc;
        let name = doc.metadata.name.as_str();
        let live = listed.items.iter().find(|d| d.metadata.name == name);
        for port in host_ports(&doc.spec) {
            if live.is_some_and(|l| share_a_node(l, doc) && host_ports(&l.spec).contains(&port)) {
                continue;
            }
            let stored = listed
                .items
                .iter()
                .filter(|other| other.metadata.name != name);
            let applied = inputs[..index]
                .iter()
                .map(|i| &i.doc)
                .filter(|other| other.metadata.name != name);
            if let Some(owner) = stored
                .chain(applied)
                .find(|other| share_a_node(other, doc) && host_ports(&other.spec).contains(&port))
            {
                return Err(CliError::Conflict {
                    message: format!(
                        "{}: document {} ({name}): host port {port} belongs to game {} \
                         (port_conflict); choose another hostPort, or free it in {}'s spec",
                        input.source, input.index, owner.metadata.name, owner.metadata.name
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Adds to a failure how far apply got, when it got anywhere.
fn partial(error: CliError, done: usize, total: usize) -> CliError {
    if done == 0 || total <= 1 {
        return error;
    }
    let note = format!(" ({done} of {total} documents were applied before this one)");
    match error {
        CliError::Conflict { message } => CliError::Conflict {
            message: message + &note,
        },
        CliError::Invalid { message } => CliError::Invalid {
            message: message + &note,
        },
        CliError::Internal { message } => CliError::Internal {
            message: message + &note,
        },
        CliError::Unavailable {
            endpoints,
            doing,
            detail,
            outcome_unknown,
        } => CliError::Unavailable {
            endpoints,
            doing,
            detail: detail + &note,
            outcome_unknown,
        },
        other => other,
    }
}

/// Applies one document: plans it against the live one and writes it, re-reading and
/// retrying when someone else wrote first (unless the file pinned a resourceVersion).
async fn apply_one(
    client: &Client,
    input: &Input,
    args: &ApplyArgs,
    source_ref: &str,
) -> Result<Action, CliError> {
    let name = input.doc.metadata.name.as_str();
    let explicit_rv = explicit_rv(input, args)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let live = match read_live(client, name).await? {
            Live::Readable(live) => live.map(|doc| *doc),
            Live::Corrupt { kv, reason } => {
                match replace_corrupt(client, input, args, source_ref, &kv, &reason).await? {
                    Some(action) => return Ok(action),
                    None if attempt >= WRITE_ATTEMPTS => return Err(kept_changing(&kv)),
                    None => {
                        backoff(attempt).await;
                        continue;
                    }
                }
            }
        };
        let (action, mut desired) = plan(&input.doc, live.as_ref(), Timestamp::now());
        let live_rv = live.as_ref().and_then(rv_of);
        if let (Some(expected), Some(current)) = (explicit_rv, live_rv)
            && action == Action::Configured
            && expected != current
        {
            return Err(stale(name, expected, current));
        }
        if action == Action::Unchanged || args.dry_run() == Some(DryRun::Client) {
            return Ok(action);
        }
        if args.dry_run() == Some(DryRun::Server) {
            let expected = match action {
                Action::Created => None,
                _ => explicit_rv.or(live_rv),
            };
            match compare_holds(client, name, expected).await? {
                true => return Ok(action),
                // Someone else wrote (or created, or deleted) it since it was read: look again,
                // as the real apply would.
                false if explicit_rv.is_none() && attempt < WRITE_ATTEMPTS => {
                    backoff(attempt).await;
                    continue;
                }
                false => {
                    let current = client.get(name).await?.as_ref().and_then(rv_of);
                    return Err(match explicit_rv {
                        Some(expected) => stale(name, expected, current.unwrap_or_default()),
                        None => CliError::Conflict {
                            message: format!(
                                "gameruntime/{name} kept changing while the server dry run                                  compared it; run it again"
                            ),
                        },
                    });
                }
            }
        }
        stamp_request(&mut desired, source_ref);
        let written = match (action, live_rv) {
            (Action::Created, _) => client.create(&desired).await,
            (_, Some(current)) => {
                client
                    .update(&desired, explicit_rv.unwrap_or(current))
                    .await
            }
            (_, None) => {
                return Err(CliError::internal(format!(
                    "gameruntime/{name} was read without a resourceVersion; this is a bug"
                )));
            }
        };
        match written {
            Ok(_) => return Ok(action),
            Err(DocumentError::Conflict { .. }) if explicit_rv.is_some() => {
                let expected = explicit_rv.unwrap_or_default();
                let current = client.get(name).await?.as_ref().and_then(rv_of);
                return Err(stale(name, expected, current.unwrap_or_default()));
            }
            // Someone else wrote (or created, or deleted) it meanwhile: look again.
            Err(
                e @ (DocumentError::Conflict { .. }
                | DocumentError::AlreadyExists { .. }
                | DocumentError::NotFound { .. }),
            ) => {
                if attempt >= WRITE_ATTEMPTS {
                    return Err(client.doc_error(e, &format!("writing gameruntime/{name}")));
                }
                backoff(attempt).await;
            }
            Err(DocumentError::Store(e)) if e.outcome_unknown() => {
                if landed(client, &desired, source_ref).await.is_some() {
                    return Ok(action);
                }
                return Err(client.store_error(e, &format!("writing gameruntime/{name}")));
            }
            Err(e) => return Err(client.doc_error(e, &format!("writing gameruntime/{name}"))),
        }
    }
}

/// The failure of `apply --force` when the unreadable key changed under it every time.
fn kept_changing(kv: &KeyValue) -> CliError {
    CliError::Conflict {
        message: format!(
            "{} kept changing while apply --force replaced it; try again",
            kv.key
        ),
    }
}

/// The `metadata.resourceVersion` a file pins (without `--force`): the revision an update
/// must find.
fn explicit_rv(input: &Input, args: &ApplyArgs) -> Result<Option<Revision>, CliError> {
    let name = input.doc.metadata.name.as_str();
    match (&input.doc.metadata.resource_version, args.force) {
        (Some(rv), false) => Ok(Some(rv.parse::<Revision>().map_err(|_| {
            CliError::invalid(format!(
                "{}: document {} ({name}): metadata.resourceVersion {rv:?} is not a number; \
                 remove it or copy it from `rtctl get {name} -o yaml`",
                input.source, input.index
            ))
        })?)),
        _ => Ok(None),
    }
}

/// The stored document as apply sees it.
enum Live {
    /// Absent (`None`) or a valid document.
    Readable(Option<Box<GameRuntime>>),
    /// A value that is not a valid GameRuntime, with why.
    Corrupt { kv: KeyValue, reason: String },
}

async fn read_live(client: &Client, name: &str) -> Result<Live, CliError> {
    check_name(name)?;
    let Some(kv) = client.raw(&client.keys().gameruntime(name)).await? else {
        return Ok(Live::Readable(None));
    };
    match client.documents().decode(&kv) {
        Ok(doc) => Ok(Live::Readable(Some(Box::new(doc)))),
        Err(DocumentError::Corrupt { message, .. }) => Ok(Live::Corrupt {
            kv,
            reason: message,
        }),
        Err(e) => Err(client.doc_error(e, &format!("reading gameruntime/{name}"))),
    }
}

/// Replaces an unreadable stored value with the applied document, with `--force` only, and
/// only if the key is still the value that was read (its mod revision): a writer that fixed
/// it meanwhile is not clobbered. `None`: the key changed meanwhile, look again.
async fn replace_corrupt(
    client: &Client,
    input: &Input,
    args: &ApplyArgs,
    source_ref: &str,
    kv: &KeyValue,
    reason: &str,
) -> Result<Option<Action>, CliError> {
    let name = input.doc.metadata.name.as_str();
    if !args.force {
        return Err(CliError::Corrupt {
            message: format!(
                "gameruntime/{name} is invalid: the value stored at {} is not a valid \
                 GameRuntime ({}); apply does not overwrite what it cannot read: rerun with \
                 --force to replace it (`rtctl apply --force -f {}`), or remove it with `rtctl \
                 delete {name}`",
                kv.key,
                one_line(reason),
                input.source
            ),
        });
    }
    // A new document in place of the unreadable one (nothing of it can be kept).
    let (_, mut desired) = plan(&input.doc, None, Timestamp::now());
    if args.dry_run().is_some() {
        if args.dry_run() == Some(DryRun::Server)
            && !compare_holds(client, name, Some(kv.mod_revision)).await?
        {
            return Ok(None);
        }
        note(&format!(
            "note: gameruntime/{name}: apply --force would replace the unreadable value at {}",
            kv.key
        ));
        return Ok(Some(Action::Configured));
    }
    stamp_request(&mut desired, source_ref);
    match client.update(&desired, kv.mod_revision).await {
        Ok(_) => {
            note(&format!(
                "note: gameruntime/{name}: replaced the unreadable value at {} ({})",
                kv.key,
                one_line(reason)
            ));
            Ok(Some(Action::Configured))
        }
        Err(DocumentError::Conflict { .. } | DocumentError::NotFound { .. }) => Ok(None),
        Err(DocumentError::Store(e)) if e.outcome_unknown() => {
            if landed(client, &desired, source_ref).await.is_some() {
                return Ok(Some(Action::Configured));
            }
            Err(client.store_error(e, &format!("writing gameruntime/{name}")))
        }
        Err(e) => Err(client.doc_error(e, &format!("writing gameruntime/{name}"))),
    }
}

/// Asks etcd, in a transaction that writes nothing, whether the compare of the write apply
/// would make holds: the document absent (`expected` `None`) or at revision `expected`.
async fn compare_holds(
    client: &Client,
    name: &str,
    expected: Option<Revision>,
) -> Result<bool, CliError> {
    use rtm_core::store::{Compare, Txn};
    let key = client.keys().gameruntime(name);
    let compare = match expected {
        None => Compare::Absent { key },
        Some(revision) => Compare::ModRevision { key, revision },
    };
    let outcome = client
        .store()
        .txn(Txn::new().when(compare))
        .await
        .map_err(|e| client.store_error(e, &format!("comparing gameruntime/{name}")))?;
    Ok(outcome.succeeded)
}

/// After a write whose answer was lost (a timeout, a dropped connection): the stored document
/// if it is the one we wrote, so a write that did land is not reported as failed.
pub(crate) async fn landed(
    client: &Client,
    desired: &GameRuntime,
    source_ref: &str,
) -> Option<GameRuntime> {
    let live = client.get(&desired.metadata.name).await.ok()??;
    let ours = live
        .metadata
        .annotations
        .get(ANNOTATION_SOURCE_REF)
        .map(String::as_str)
        == Some(source_ref)
        && comparable(&live) == comparable(desired);
    ours.then_some(live)
}

pub(crate) fn rv_of(doc: &GameRuntime) -> Option<Revision> {
    doc.metadata.resource_version.as_deref()?.parse().ok()
}

pub(crate) fn stale(name: &str, expected: Revision, current: Revision) -> CliError {
    CliError::Conflict {
        message: format!(
            "gameruntime/{name} was changed since resourceVersion {expected} (it is now at \
             {current}); re-read it with `rtctl get {name} -o yaml`, redo your change and apply \
             again, or apply with --force to overwrite"
        ),
    }
}

pub(crate) async fn diff(
    client: &Client,
    args: &DiffArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let Inputs {
        games: inputs,
        budgets,
    } = read_objects(&args.files, args.recursive)?;
    let mut outcome = Outcome::Success;
    for input in &budgets {
        if let Some(text) = super::budget::diff_one(client, input).await? {
            out.write_all(text.as_bytes())?;
            outcome = Outcome::Differences;
        }
    }
    for input in &inputs {
        let name = input.doc.metadata.name.as_str();
        let live = client.get(name).await?;
        let (_, desired) = plan(&input.doc, live.as_ref(), Timestamp::now());
        if let Some(text) = unified_diff(name, live.as_ref(), &desired) {
            out.write_all(text.as_bytes())?;
            outcome = Outcome::Differences;
        }
    }
    Ok(outcome)
}

/// The unified diff of the live document against the one apply would write (labels,
/// annotations and spec, as YAML), or `None` when apply would leave it unchanged.
pub(crate) fn unified_diff(
    name: &str,
    live: Option<&GameRuntime>,
    desired: &GameRuntime,
) -> Option<String> {
    let old = live.map(|l| to_yaml(&comparable(l)));
    yaml_diff("gameruntime", name, old, &to_yaml(&comparable(desired)))
}

/// The unified diff of `kind/name` from its live YAML (`None`: there is none) to the
/// applied one, or `None` when they agree: what `diff` prints for every kind.
pub(crate) fn yaml_diff(
    kind: &str,
    name: &str,
    live: Option<String>,
    applied: &str,
) -> Option<String> {
    let old_header = match live {
        Some(_) => format!("live/{kind}/{name}"),
        None => "/dev/null".to_owned(),
    };
    let old = live.unwrap_or_default();
    if old == applied {
        return None;
    }
    Some(
        TextDiff::from_lines(&old, applied)
            .unified_diff()
            .context_radius(3)
            .header(&old_header, &format!("applied/{kind}/{name}"))
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;

    fn doc(extra_spec: &str) -> GameRuntime {
        parse_documents(&format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n\
             spec:\n  image: rtmanager-test/engine:1\n{extra_spec}"
        ))
        .unwrap()
        .remove(0)
    }

    fn stored(mut doc: GameRuntime) -> GameRuntime {
        doc.metadata.generation = Some(3);
        doc.metadata.resource_version = Some("42".into());
        doc.metadata.creation_timestamp = Some(Timestamp::from_unix_seconds(1_700_000_000));
        stamp_request(&mut doc, "REQ-1");
        doc
    }

    #[test]
    fn a_new_document_is_created_with_a_creation_timestamp() {
        let now = Timestamp::from_unix_seconds(1_800_000_000);
        let (action, desired) = plan(&doc(""), None, now);
        assert_eq!(action, Action::Created);
        assert_eq!(desired.metadata.creation_timestamp, Some(now));
    }

    #[test]
    fn what_get_prints_applies_back_unchanged() {
        let live = stored(doc(""));
        let mut printed = live.clone();
        printed.status = Some(Default::default());
        let (action, _) = plan(&printed, Some(&live), Timestamp::now());
        assert_eq!(action, Action::Unchanged);
        assert_eq!(unified_diff("g1", Some(&live), &printed), None);
    }

    #[test]
    fn a_changed_spec_is_configured_and_keeps_the_creation_timestamp() {
        let live = stored(doc(""));
        let (action, desired) = plan(&doc("  state: Stopped\n"), Some(&live), Timestamp::now());
        assert_eq!(action, Action::Configured);
        assert_eq!(
            desired.metadata.creation_timestamp,
            live.metadata.creation_timestamp
        );
    }

    #[test]
    fn an_empty_restart_token_keeps_the_live_one() {
        let live = stored(doc("  restartToken: t-1\n"));
        let (action, desired) = plan(&doc(""), Some(&live), Timestamp::now());
        assert_eq!(action, Action::Unchanged);
        assert_eq!(desired.spec.restart_token, "t-1");
        let (action, _) = plan(&doc("  restartToken: t-2\n"), Some(&live), Timestamp::now());
        assert_eq!(action, Action::Configured);
    }

    #[test]
    fn the_diff_is_unified_and_names_both_sides() {
        let live = stored(doc(""));
        let applied = doc("  state: Stopped\n");
        let text = unified_diff("g1", Some(&live), &applied).unwrap();
        assert!(
            text.starts_with("--- live/gameruntime/g1\n+++ applied/gameruntime/g1\n@@ "),
            "{text}"
        );
        assert!(
            text.contains("\n-  state: Running\n+  state: Stopped\n"),
            "{text}"
        );
        assert!(!text.contains("resourceVersion"), "{text}");
        assert!(!text.contains("source-ref"), "{text}");

        let created = unified_diff("g1", None, &applied).unwrap();
        assert!(created.starts_with("--- /dev/null\n"), "{created}");
        assert!(
            created.contains("+  image: rtmanager-test/engine:1\n"),
            "{created}"
        );
    }

    fn force_args() -> ApplyArgs {
        ApplyArgs {
            files: Vec::new(),
            recursive: false,
            dry_run: None,
            force: true,
            source_ref: None,
        }
    }

    async fn client_with_garbage() -> (
        std::sync::Arc<rtm_core::store::memory::MemoryStore>,
        Client,
        KeyValue,
    ) {
        use rtm_core::store::{Keys, Store, Txn};
        let store = std::sync::Arc::new(rtm_core::store::memory::MemoryStore::new());
        let keys = Keys::default();
        let client = Client::new(
            store.clone(),
            keys.clone(),
            "memory".into(),
            Duration::from_secs(1),
        );
        let key = keys.gameruntime("g1");
        store
            .txn(Txn::new().put(key.clone(), b"\xffgarbage".to_vec()))
            .await
            .unwrap();
        let kv = store.get(&key).await.unwrap().unwrap();
        (store, client, kv)
    }

    fn input() -> Input {
        Input {
            doc: doc(""),
            source: "g1.yaml".into(),
            index: 1,
        }
    }

    #[tokio::test]
    async fn apply_force_replaces_a_corrupt_document_it_read() {
        let (_store, client, kv) = client_with_garbage().await;
        let action = replace_corrupt(&client, &input(), &force_args(), "REQ-1", &kv, "bad")
            .await
            .unwrap();
        assert_eq!(action, Some(Action::Configured));
        let doc = client.get("g1").await.unwrap().unwrap();
        assert_eq!(doc.spec.image, "rtmanager-test/engine:1");
    }

    #[tokio::test]
    async fn apply_force_does_not_clobber_a_write_made_after_it_read_the_corrupt_key() {
        use rtm_core::store::{Store, Txn};
        let (store, client, kv) = client_with_garbage().await;
        // Someone else writes the key between our read and our write.
        store
            .txn(Txn::new().put(kv.key.clone(), b"someone else's".to_vec()))
            .await
            .unwrap();
        let action = replace_corrupt(&client, &input(), &force_args(), "REQ-1", &kv, "bad")
            .await
            .unwrap();
        assert_eq!(action, None, "look again rather than overwrite");
        let now = store.get(&kv.key).await.unwrap().unwrap();
        assert_eq!(now.value, b"someone else's");
    }

    #[tokio::test]
    async fn plain_apply_refuses_a_corrupt_document_naming_the_key_and_force() {
        let (_store, client, kv) = client_with_garbage().await;
        let mut args = force_args();
        args.force = false;
        let error = replace_corrupt(&client, &input(), &args, "REQ-1", &kv, "bad")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&kv.key) && message.contains("--force"),
            "{message}"
        );
        assert_eq!(error.exit_code(), super::super::error::exit::CORRUPT);
    }

    #[test]
    fn dry_run_takes_an_optional_mode_after_an_equals_sign() {
        let mode = |args: &[&str]| -> Option<DryRun> {
            let cli = crate::parse_from(["rtctl", "apply"].iter().chain(args)).unwrap();
            match cli.command {
                crate::Command::Apply(args) => args.dry_run(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(mode(&["--dry-run", "-f", "x.yaml"]), Some(DryRun::Client));
        assert_eq!(mode(&["-f", "x.yaml", "--dry-run"]), Some(DryRun::Client));
        assert_eq!(mode(&["--dry-run=client", "-f", "x"]), Some(DryRun::Client));
        assert_eq!(mode(&["--dry-run=server", "-f", "x"]), Some(DryRun::Server));
        assert_eq!(mode(&["--dry-run=none", "-f", "x"]), None);
        assert_eq!(mode(&["-f", "x"]), None);
        for bad in [
            &["--dry-run=maybe", "-f", "x"][..],
            &["--dry-run", "server", "-f", "x"],
        ] {
            assert!(
                crate::parse_from(["rtctl", "apply"].iter().chain(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refs_are_checked_and_generated_ones_pass() {
        assert!(check_ref("REQ-42").is_ok());
        assert!(check_ref(&generate_ref("restart")).is_ok());
        assert!(check_ref("").is_err());
        assert!(check_ref("a\nb").is_err());
        assert!(check_ref(&"x".repeat(254)).is_err());
    }
}
