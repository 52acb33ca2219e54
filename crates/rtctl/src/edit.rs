//! `rtctl edit`: opens one game in the user's editor (`$KUBE_EDITOR`, else `$EDITOR`, else
//! `vi`) as `rtctl get NAME -o yaml` prints it, and writes what was saved the way apply
//! writes a file (see [`mutate`](super::mutate)), with a compare on the resourceVersion read
//! before the editor opened.
//!
//! Saved unchanged (comments and layout aside) or empty: nothing is written. Saved invalid:
//! the editor opens again with the errors as `#` lines at the top; saved invalid again
//! without a change, it stops (exit 3) and keeps the file. Saved valid but the game changed
//! meanwhile: nothing is overwritten; the file is kept and the message says how to apply it
//! (exit 5). The status and the store's fields may be left as they are: apply ignores them.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::apply::{Action, plan, rv_of};
use super::client::Client;
use super::error::{CliError, Outcome, one_line};
use super::mutate::{self, Write as Plan};
use super::output::note;
use super::request::request_ref;
use super::resource::Names;
use rtm_core::model::parse::to_yaml;
use rtm_core::model::{GameRuntime, Timestamp};
use rtm_core::store::Revision;

/// The file formats of `edit -o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EditFormat {
    /// YAML, as `get -o yaml` prints it.
    Yaml,
    /// JSON, as `get -o json` prints it.
    Json,
}

impl EditFormat {
    fn extension(self) -> &'static str {
        match self {
            EditFormat::Yaml => "yaml",
            EditFormat::Json => "json",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EditArgs {
    /// The game: NAME, gameruntime/NAME or `gr NAME`.
    #[arg(value_name = "NAME", required = true, num_args = 1..=2)]
    pub(crate) names: Vec<String>,
    /// The format of the file the editor opens.
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub(crate) output: EditFormat,
    /// The request id the controller records as the operations' source_ref (correlation id).
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

/// What to do with the text the editor saved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Nothing changed (or the file was emptied): write nothing.
    Cancelled,
    /// Not a valid game: open the editor again showing these errors.
    Invalid(String),
    /// The same invalid text saved again: stop, keeping the file.
    GaveUp,
    /// Valid, but renames the game: refused.
    Renamed(String),
    /// Write it.
    Save(Box<GameRuntime>),
}

/// Judges the text saved (`body`: without the header rtctl wrote) against the live document
/// the edit began from. `last_invalid`: the body of the previous round when that was invalid.
pub(crate) fn judge(
    original: &GameRuntime,
    body: &str,
    format: EditFormat,
    source: &str,
    last_invalid: Option<&str>,
) -> Verdict {
    if last_invalid == Some(body) {
        return Verdict::GaveUp;
    }
    // YAML ignores comments itself; JSON has none, so the lines rtctl and the user marked
    // with # are left out before it is read.
    let text = match format {
        EditFormat::Yaml => body.to_owned(),
        EditFormat::Json => body
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let meaningful = text
        .lines()
        .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'));
    if !meaningful {
        return Verdict::Cancelled;
    }
    let doc = match mutate::parse_one(&text, source) {
        Ok(doc) => doc,
        Err(error) => return Verdict::Invalid(error.to_string()),
    };
    let name = &original.metadata.name;
    if doc.metadata.name != *name {
        return Verdict::Renamed(format!(
            "metadata.name cannot change (from {name:?} to {:?}) in rtctl edit; to copy the \
             game, rename it in a file and apply that",
            doc.metadata.name
        ));
    }
    match plan(&doc, Some(original), Timestamp::now()).0 {
        Action::Unchanged => Verdict::Cancelled,
        _ => Verdict::Save(Box::new(doc)),
    }
}

/// The comment lines above the document: how to edit it, and the errors of the last round.
fn header(name: &str, errors: Option<&str>) -> String {
    let mut text = String::new();
    if let Some(errors) = errors {
        text.push_str(&format!(
            "# rtctl edit could not write gameruntime/{name}:\n#   error (invalid_request): \
             {}\n# Fix the \
             document below and save; save it again unchanged to stop (the file is kept).\n#\n",
            one_line(errors)
        ));
    }
    text.push_str(&format!(
        "# Edit gameruntime/{name} and save to write it; save it unchanged or empty to cancel.\n\
         # Lines starting with # are ignored. The status, resourceVersion, generation and\n\
         # creationTimestamp are not written; the write fails if the game changes meanwhile.\n#\n"
    ));
    text
}

/// The editor's command line: `$KUBE_EDITOR`, else `$EDITOR`, else `vi`, split on
/// whitespace (so `EDITOR="code --wait"` works).
fn editor(env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    ["KUBE_EDITOR", "EDITOR"]
        .iter()
        .filter_map(|var| env(var))
        .map(|value| {
            value
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|words| !words.is_empty())
        .unwrap_or_else(|| vec!["vi".to_owned()])
}

fn run_editor(path: &Path) -> Result<(), CliError> {
    let words = editor(|var| std::env::var(var).ok());
    let shown = words.join(" ");
    let status = std::process::Command::new(&words[0])
        .args(&words[1..])
        .arg(path)
        .status()
        .map_err(|e| {
            CliError::usage(format!(
                "cannot run the editor {shown:?} ($KUBE_EDITOR, $EDITOR, else vi): {e}; set \
                 EDITOR to an editor on the PATH (nothing was written)"
            ))
        })?;
    if !status.success() {
        return Err(CliError::usage(format!(
            "the editor {shown:?} failed ({status}); nothing was written"
        )));
    }
    Ok(())
}

/// The temporary file of one edit, removed unless kept.
struct EditFile {
    path: PathBuf,
    keep: bool,
}

impl EditFile {
    fn create(name: &str, format: EditFormat, text: &str) -> Result<EditFile, CliError> {
        let path = std::env::temp_dir().join(format!(
            "rtctl-edit-{name}-{:08x}.{}",
            rand::random::<u32>(),
            format.extension()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| file_error(&path, &e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| file_error(&path, &e))?;
        Ok(EditFile { path, keep: false })
    }

    fn write(&self, text: &str) -> Result<(), CliError> {
        std::fs::write(&self.path, text).map_err(|e| file_error(&self.path, &e))
    }

    fn read(&self) -> Result<String, CliError> {
        std::fs::read_to_string(&self.path).map_err(|e| file_error(&self.path, &e))
    }

    /// Keeps the file and names it.
    fn keep(&mut self) -> String {
        self.keep = true;
        self.path.display().to_string()
    }
}

impl Drop for EditFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn file_error(path: &Path, error: &std::io::Error) -> CliError {
    CliError::internal(format!(
        "cannot use the temporary file {} for the edit: {error}; check TMPDIR",
        path.display()
    ))
}

fn render(doc: &GameRuntime, format: EditFormat) -> Result<String, CliError> {
    match format {
        EditFormat::Yaml => Ok(to_yaml(doc)),
        EditFormat::Json => serde_json::to_string_pretty(doc)
            .map(|text| text + "\n")
            .map_err(|e| CliError::internal(format!("cannot print JSON: {e}"))),
    }
}

pub(crate) async fn edit(
    client: &Client,
    args: &EditArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let names = Names::parse(&args.names)?.games("edit")?;
    let [name] = names.as_slice() else {
        return Err(CliError::usage(
            "rtctl edit takes one game: NAME, gameruntime/NAME or `gr NAME`",
        ));
    };
    let source_ref = request_ref(&args.source_ref, "edit")?;
    let original = client.require(name).await?;
    let Some(read_at) = rv_of(&original) else {
        return Err(CliError::internal(format!(
            "gameruntime/{name} was read without a resourceVersion; this is a bug"
        )));
    };
    let mut shown = original.clone();
    shown.status = client.status(name).await?;
    let mut header_text = header(name, None);
    let mut file = EditFile::create(
        name,
        args.output,
        &(header_text.clone() + &render(&shown, args.output)?),
    )?;
    let source = format!("edited gameruntime/{name}");
    let mut last_invalid: Option<String> = None;
    let edited = loop {
        run_editor(&file.path)?;
        let text = file.read()?;
        let body = text.strip_prefix(&header_text).unwrap_or(&text).to_owned();
        match judge(
            &original,
            &body,
            args.output,
            &source,
            last_invalid.as_deref(),
        ) {
            Verdict::Cancelled => {
                note("Edit cancelled, no changes made.");
                return Ok(Outcome::Success);
            }
            Verdict::Invalid(errors) => {
                header_text = header(name, Some(&errors));
                file.write(&(header_text.clone() + &body))?;
                last_invalid = Some(body);
            }
            Verdict::GaveUp => {
                let path = file.keep();
                return Err(CliError::invalid(format!(
                    "gameruntime/{name}: the edit is still invalid, so nothing was written; it is \
                     kept in {path} with the errors at the top: fix it and run `rtctl apply -f \
                     {path}`"
                )));
            }
            Verdict::Renamed(why) => {
                let path = file.keep();
                return Err(CliError::invalid(format!(
                    "gameruntime/{name}: {why}; nothing was written (the edit is kept in {path})"
                )));
            }
            Verdict::Save(doc) => break (*doc, body),
        }
    };
    let (doc, body) = edited;
    let plan = Plan {
        name,
        source_ref: &source_ref,
        dry_run: false,
        expected: Some(read_at),
    };
    match mutate::read_modify_write(client, &plan, |_| Ok(doc.clone())).await {
        Ok(_) => {
            writeln!(out, "gameruntime/{name} edited")?;
            Ok(Outcome::Success)
        }
        Err(error) => {
            // The user's work is not lost: the file stays, as a file apply reads.
            let _ = file.write(&body);
            let path = file.keep();
            Err(kept(error, name, read_at, &path))
        }
    }
}

/// Adds to a failed write where the edit is kept and how to apply it.
fn kept(error: CliError, name: &str, read_at: Revision, path: &str) -> CliError {
    match error {
        CliError::Conflict { message } if message.contains("was changed since") => {
            CliError::Conflict {
                message: format!(
                    "gameruntime/{name} was changed by someone else while it was being edited \
                     (it was at resourceVersion {read_at}); nothing was overwritten. The edit is \
                     kept in {path}: see what differs with `rtctl diff -f {path}`, then write it \
                     with `rtctl apply -f {path}` once you removed its metadata.resourceVersion \
                     line (or add --force to overwrite the other change)"
                ),
            }
        }
        CliError::Conflict { message } => CliError::Conflict {
            message: format!("{message}; the edit is kept in {path} (`rtctl apply -f {path}`)"),
        },
        CliError::Invalid { message } => CliError::Invalid {
            message: format!("{message}; the edit is kept in {path} (`rtctl apply -f {path}`)"),
        },
        CliError::NotFound { .. } => CliError::Missing {
            message: format!(
                "gameruntime/{name} was deleted while it was being edited; the edit is kept in \
                 {path}: `rtctl apply -f {path}` (without its metadata.resourceVersion line) \
                 creates it again"
            ),
        },
        other => {
            note(&format!("note: the edit is kept in {path}"));
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_core::model::parse::parse_documents;

    fn live() -> GameRuntime {
        let mut doc = parse_documents(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n\
             spec:\n  image: rtmanager-test/engine:1\n",
        )
        .unwrap()
        .remove(0);
        doc.metadata.resource_version = Some("42".into());
        doc.metadata.generation = Some(2);
        doc.metadata.creation_timestamp = Some(Timestamp::from_unix_seconds(1_700_000_000));
        doc
    }

    fn judged(body: &str, last_invalid: Option<&str>) -> Verdict {
        judge(&live(), body, EditFormat::Yaml, "edit.yaml", last_invalid)
    }

    #[test]
    fn unchanged_reformatted_commented_or_empty_text_cancels() {
        let text = to_yaml(&live());
        assert_eq!(judged(&text, None), Verdict::Cancelled);
        assert_eq!(
            judged(&format!("# a note\n{text}\n\n"), None),
            Verdict::Cancelled
        );
        assert_eq!(judged("", None), Verdict::Cancelled);
        assert_eq!(judged("# only comments\n\n", None), Verdict::Cancelled);
        // The status and the store's fields are not the user's to change.
        let mut with_status = live();
        with_status.status = Some(Default::default());
        with_status.metadata.generation = Some(9);
        assert_eq!(judged(&to_yaml(&with_status), None), Verdict::Cancelled);
        let json = serde_json::to_string_pretty(&live()).unwrap();
        assert_eq!(
            judge(
                &live(),
                &format!("# header\n{json}"),
                EditFormat::Json,
                "e.json",
                None
            ),
            Verdict::Cancelled
        );
    }

    #[test]
    fn a_change_is_saved_and_an_invalid_one_reopens_until_saved_again_unchanged() {
        let changed = to_yaml(&live()).replace("engine:1", "engine:2");
        assert!(
            matches!(judged(&changed, None), Verdict::Save(doc) if doc.spec.image.ends_with(":2"))
        );
        let invalid = to_yaml(&live()).replace("image:", "imagee:");
        let Verdict::Invalid(errors) = judged(&invalid, None) else {
            panic!("expected invalid");
        };
        assert!(errors.contains("spec.imagee: unknown field"), "{errors}");
        assert_eq!(judged(&invalid, Some(&invalid)), Verdict::GaveUp);
        assert!(matches!(judged(&changed, Some(&invalid)), Verdict::Save(_)));
        let renamed = to_yaml(&live()).replace("name: g1", "name: g2");
        assert!(matches!(judged(&renamed, None), Verdict::Renamed(_)));
    }

    #[test]
    fn the_editor_comes_from_kube_editor_then_editor_then_vi() {
        let env = |kube: Option<&str>, editor: Option<&str>| {
            let (kube, editor) = (kube.map(str::to_owned), editor.map(str::to_owned));
            move |var: &str| match var {
                "KUBE_EDITOR" => kube.clone(),
                "EDITOR" => editor.clone(),
                _ => None,
            }
        };
        assert_eq!(
            editor(env(Some("  "), Some("sed -i s/a/b/"))),
            ["sed", "-i", "s/a/b/"]
        );
        assert_eq!(editor(env(Some("nano -w"), Some("ed"))), ["nano", "-w"]);
        assert_eq!(editor(env(None, None)), ["vi"]);
    }
}
