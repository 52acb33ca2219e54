//! `rtctl patch`: change one game by a JSON merge patch (RFC 7386, the default) or a JSON
//! patch (RFC 6902), given as JSON or YAML; the patch functions are in [`rfc`].
//!
//! The patch is made to the stored document as `rtctl get NAME -o json` prints it without
//! its status; the result goes through apply's checks (see [`mutate`](super::mutate)), so a
//! patch can no more add an unknown field or an invalid value than a file can. The status is
//! the controller's: a patch that touches it is refused. A patch that sets
//! `metadata.resourceVersion` pins it (a change since is a conflict); otherwise a lost race
//! re-reads the game and patches it again.

mod rfc;

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;

use super::apply::{Action, stale};
use super::client::Client;
use super::error::{CliError, Outcome, one_line};
use super::mutate::{self, Write as Plan};
use super::request::request_ref;
use super::resource::Names;
use rtm_core::model::GameRuntime;
use rtm_core::model::parse::{MAX_DOCUMENT_BYTES, to_yaml};

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PatchType {
    /// RFC 7386 JSON merge patch: objects merge, `null` removes, the rest replaces.
    Merge,
    /// RFC 6902 JSON patch: a list of add, remove, replace, move, copy and test operations.
    Json,
}

/// What `patch -o` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PatchOutput {
    /// The patched document as YAML.
    Yaml,
    /// The patched document as JSON.
    Json,
    /// gameruntime/NAME.
    Name,
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PatchArgs {
    /// The game: NAME, gameruntime/NAME or `gr NAME`.
    #[arg(value_name = "NAME", required = true, num_args = 1..=2)]
    pub(crate) names: Vec<String>,
    /// The patch, as JSON or YAML.
    #[arg(
        short = 'p',
        long,
        value_name = "PATCH",
        required_unless_present = "patch_file",
        conflicts_with = "patch_file"
    )]
    pub(crate) patch: Option<String>,
    /// A file holding the patch (- for stdin).
    #[arg(long, value_name = "FILE")]
    pub(crate) patch_file: Option<PathBuf>,
    /// merge (RFC 7386, the default) or json (RFC 6902).
    #[arg(long = "type", value_enum, default_value = "merge")]
    pub(crate) kind: PatchType,
    /// Check the patched document and show it, writing nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the patched document (yaml, json) or its name, instead of what was done.
    #[arg(short = 'o', long, value_enum)]
    pub(crate) output: Option<PatchOutput>,
    /// The request id the controller records as the operations' source_ref (correlation id).
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

/// Reads the patch text (JSON is YAML, so one reader serves both) into a JSON value.
fn read_patch(args: &PatchArgs) -> Result<Value, CliError> {
    let (text, source) = match (&args.patch, &args.patch_file) {
        (Some(text), _) => (text.clone(), "-p".to_owned()),
        (None, Some(path)) => {
            let source = path.display().to_string();
            let text = if path.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(std::io::stdin().lock(), MAX_DOCUMENT_BYTES as u64),
                    &mut text,
                )
                .map_err(|e| CliError::invalid(format!("cannot read the patch from stdin: {e}")))?;
                text
            } else {
                crate::input::read_small(path, MAX_DOCUMENT_BYTES)
                    .map_err(|why| CliError::invalid(format!("cannot use the patch file: {why}")))?
            };
            (text, source)
        }
        (None, None) => {
            return Err(CliError::usage(
                "rtctl patch needs -p PATCH or --patch-file",
            ));
        }
    };
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(CliError::invalid(format!(
            "the patch ({source}) is larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    serde_yaml::from_str::<Value>(&text).map_err(|e| {
        CliError::invalid(format!(
            "the patch ({source}) is neither JSON nor YAML: {} (invalid_request); nothing was \
             written",
            one_line(&e.to_string())
        ))
    })
}

/// Refuses a patch that reaches into `status` (the controller's).
fn check_not_status(patch: &Value, kind: PatchType) -> Result<(), CliError> {
    let touches = match kind {
        PatchType::Merge => patch.get("status").is_some(),
        PatchType::Json => rfc::touched_paths(patch)
            .iter()
            .any(|path| path == "/status" || path.starts_with("/status/")),
    };
    if touches {
        return Err(CliError::invalid(
            "the patch touches status, which only the controller writes; patch metadata or spec \
             (nothing was written)",
        ));
    }
    Ok(())
}

/// The patched document, checked as apply checks a file. Pure: the live document and the
/// patch in, the document to plan out.
pub(crate) fn patched(
    live: &GameRuntime,
    patch: &Value,
    kind: PatchType,
) -> Result<GameRuntime, CliError> {
    let name = live.metadata.name.as_str();
    let mut value = serde_json::to_value(live)
        .map_err(|e| CliError::internal(format!("cannot turn gameruntime/{name} to JSON: {e}")))?;
    if let Value::Object(fields) = &mut value {
        fields.remove("status");
    }
    match kind {
        PatchType::Merge => rfc::merge_patch(&mut value, patch),
        PatchType::Json => rfc::json_patch(&mut value, patch).map_err(|e| {
            let why = if e.test_failed {
                "a test did not hold"
            } else {
                "the patch cannot be applied"
            };
            CliError::invalid(format!(
                "gameruntime/{name}: {why}: {} (invalid_request); nothing was written",
                one_line(&e.to_string())
            ))
        })?,
    }
    if value.get("status").is_some_and(|s| !s.is_null()) {
        return Err(CliError::invalid(
            "the patched document has a status, which only the controller writes; nothing was \
             written",
        ));
    }
    let text = serde_json::to_string(&value)
        .map_err(|e| CliError::internal(format!("cannot print the patched document: {e}")))?;
    mutate::parse_one(&text, &format!("patched gameruntime/{name}"))
}

pub(crate) async fn patch(
    client: &Client,
    args: &PatchArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let names = Names::parse(&args.names)?.games("patch")?;
    let [name] = names.as_slice() else {
        return Err(CliError::usage(
            "rtctl patch takes one game: NAME, gameruntime/NAME or `gr NAME`",
        ));
    };
    let patch = read_patch(args)?;
    check_not_status(&patch, args.kind)?;
    let source_ref = request_ref(&args.source_ref, "patch")?;
    // A resourceVersion the patch sets is a precondition: a game changed since is stale.
    let plan = Plan {
        name,
        source_ref: &source_ref,
        dry_run: args.dry_run,
        expected: None,
    };
    let done = mutate::read_modify_write(client, &plan, |live| {
        let doc = patched(live, &patch, args.kind)?;
        let asked = doc.metadata.resource_version.as_deref();
        if asked.is_some() && asked != live.metadata.resource_version.as_deref() {
            let expected = asked.and_then(|rv| rv.parse().ok()).ok_or_else(|| {
                CliError::invalid(format!(
                    "the patch sets metadata.resourceVersion to {asked:?}, which is not a number"
                ))
            })?;
            let current = live
                .metadata
                .resource_version
                .as_deref()
                .and_then(|rv| rv.parse().ok())
                .unwrap_or_default();
            return Err(stale(name, expected, current));
        }
        Ok(doc)
    })
    .await?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    match args.output {
        None => {
            let what = match done.action {
                Action::Unchanged => "unchanged",
                _ => "patched",
            };
            writeln!(out, "gameruntime/{name} {what}{suffix}")?;
        }
        Some(PatchOutput::Name) => writeln!(out, "gameruntime/{name}")?,
        Some(PatchOutput::Yaml) => out.write_all(to_yaml(&done.doc).as_bytes())?,
        Some(PatchOutput::Json) => {
            let text = serde_json::to_string_pretty(&done.doc)
                .map_err(|e| CliError::internal(format!("cannot print JSON: {e}")))?;
            writeln!(out, "{text}")?;
        }
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;
    use serde_json::json;

    fn live() -> GameRuntime {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n  \
             labels: {tier: casual}\nspec:\n  image: rtmanager-test/engine:1\n",
        )
        .unwrap()
        .remove(0);
        doc.metadata.resource_version = Some("42".into());
        doc.metadata.generation = Some(2);
        doc
    }

    #[test]
    fn a_merge_patch_changes_and_removes_fields() {
        let doc = patched(
            &live(),
            &json!({"metadata": {"labels": {"tier": null, "team": "a"}}, "spec": {"state": "Stopped"}}),
            PatchType::Merge,
        )
        .unwrap();
        assert_eq!(
            doc.metadata.labels,
            [("team".to_owned(), "a".to_owned())].into()
        );
        assert_eq!(doc.spec.state, rtm_core::model::DesiredState::Stopped);
    }

    #[test]
    fn a_json_patch_is_applied_and_a_failed_test_names_its_index() {
        let doc = patched(
            &live(),
            &json!([{"op": "test", "path": "/spec/image", "value": "rtmanager-test/engine:1"},
                    {"op": "replace", "path": "/spec/image", "value": "rtmanager-test/engine:2"}]),
            PatchType::Json,
        )
        .unwrap();
        assert_eq!(doc.spec.image, "rtmanager-test/engine:2");
        let error = patched(
            &live(),
            &json!([{"op": "test", "path": "/spec/image", "value": "other:1"}]),
            PatchType::Json,
        )
        .unwrap_err();
        assert_eq!(error.exit_code(), 3);
        assert!(error.to_string().contains("operation 0 (test)"), "{error}");
    }

    #[test]
    fn the_result_is_checked_as_a_file_would_be() {
        for (patch, kind, says) in [
            (
                json!({"spec": {"imagee": "x"}}),
                PatchType::Merge,
                "spec.imagee",
            ),
            (
                json!({"spec": {"image": null}}),
                PatchType::Merge,
                "spec.image",
            ),
            (
                json!([{"op": "add", "path": "/metadata/labels/bad key", "value": "x"}]),
                PatchType::Json,
                "metadata.labels",
            ),
        ] {
            let error = patched(&live(), &patch, kind).unwrap_err();
            assert_eq!(error.exit_code(), 3, "{patch}: {error}");
            assert!(error.to_string().contains(says), "{patch}: {error}");
        }
    }

    #[test]
    fn patches_of_status_are_refused() {
        assert!(
            check_not_status(&json!({"status": {"phase": "Running"}}), PatchType::Merge).is_err()
        );
        assert!(
            check_not_status(
                &json!([{"op": "add", "path": "/status/phase", "value": "x"}]),
                PatchType::Json
            )
            .is_err()
        );
        assert!(check_not_status(&json!({"spec": {"state": "Stopped"}}), PatchType::Merge).is_ok());
    }
}
