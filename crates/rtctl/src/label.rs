//! `rtctl label` and `rtctl annotate`: set (`KEY=VALUE`) and remove (`KEY-`) labels or
//! annotations of games named, picked by `-l` or all, each written as apply writes (see
//! [`mutate`](super::mutate)), and reported on its own line.
//!
//! As with kubectl, the games come first and the changes after them: a word holding `=` or
//! ending in `-` is a change (a game name can do neither). Changing the value of a key the
//! game already has needs `--overwrite`; removing a key the game lacks is no error. The
//! annotations rtctl stamps on every write (`rtmanager.dev/op-source`,
//! `rtmanager.dev/source-ref`) and the force annotation of `restart --force` / `stop
//! --force` are not for `annotate`: apply ignores them in files for the same reason, since
//! every write sets or drops them itself.

use std::collections::BTreeMap;
use std::io::Write;

use super::apply::Action;
use super::error::{CliError, Outcome};
use super::mutate::{self, Write as Plan};
use super::request::request_ref;
use super::resource::Names;
use super::target::{Targets, each};
use crate::client::Client;
use rtm_core::model::{
    ANNOTATION_FORCE, ANNOTATION_OP_SOURCE, ANNOTATION_SOURCE_REF, GameRuntime, validate_label,
};

/// The arguments `label` and `annotate` share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetaArgs {
    /// The games (NAME, gameruntime/NAME, or `gr NAME…`), then the changes: KEY=VALUE sets,
    /// KEY- removes.
    #[arg(value_name = "NAME… KEY=VALUE… KEY-", required = true)]
    pub(crate) words: Vec<String>,
    /// Every game whose labels match: key=value, key!=value, key (exists), !key;
    /// comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "all")]
    pub(crate) selector: Option<String>,
    /// Every game.
    #[arg(long)]
    pub(crate) all: bool,
    /// Allow changing the value of a key the game already has.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// Show what would change, writing nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Change the game only if it is still at this metadata.resourceVersion (one game only).
    #[arg(long, value_name = "RV")]
    pub(crate) resource_version: Option<String>,
    /// The request id the controller records as the operations' source_ref (correlation id).
    #[arg(long = "ref", value_name = "SOURCE_REF")]
    pub(crate) source_ref: Option<String>,
}

/// Which map of the metadata a verb changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Labels,
    Annotations,
}

impl Field {
    fn verb(self) -> &'static str {
        match self {
            Field::Labels => "label",
            Field::Annotations => "annotate",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Field::Labels => "labeled",
            Field::Annotations => "annotated",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Field::Labels => "label",
            Field::Annotations => "annotation",
        }
    }

    fn map(self, doc: &mut GameRuntime) -> &mut BTreeMap<String, String> {
        match self {
            Field::Labels => &mut doc.metadata.labels,
            Field::Annotations => &mut doc.metadata.annotations,
        }
    }
}

/// One change of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Set { key: String, value: String },
    Remove { key: String },
}

impl Change {
    fn key(&self) -> &str {
        match self {
            Change::Set { key, .. } | Change::Remove { key } => key,
        }
    }
}

/// Whether a word is a change (`k=v`, `k-`) rather than a game.
fn is_change(word: &str) -> bool {
    word.contains('=') || word.ends_with('-')
}

/// Splits the positional words into game words and checked changes.
pub(crate) fn split_words(
    words: &[String],
    field: Field,
) -> Result<(Vec<String>, Vec<Change>), CliError> {
    let verb = field.verb();
    let first_change = words
        .iter()
        .position(|w| is_change(w))
        .unwrap_or(words.len());
    let (names, changes) = words.split_at(first_change);
    if changes.is_empty() {
        return Err(CliError::usage(format!(
            "rtctl {verb}: no changes given; after the games write KEY=VALUE to set or KEY- to \
             remove, e.g. `rtctl {verb} arena-1 tier=ranked`"
        )));
    }
    let mut parsed: Vec<Change> = Vec::new();
    for word in changes {
        let change = parse_change(word, field)?;
        if parsed.iter().any(|c| c.key() == change.key()) {
            return Err(CliError::usage(format!(
                "rtctl {verb}: {} {:?} is changed twice; give each key once",
                field.what(),
                change.key()
            )));
        }
        parsed.push(change);
    }
    Ok((names.to_vec(), parsed))
}

/// Reads and checks one `KEY=VALUE` or `KEY-`.
pub(crate) fn parse_change(word: &str, field: Field) -> Result<Change, CliError> {
    let verb = field.verb();
    let what = field.what();
    let change = if let Some((key, value)) = word.split_once('=') {
        Change::Set {
            key: key.to_owned(),
            value: value.to_owned(),
        }
    } else if let Some(key) = word.strip_suffix('-') {
        Change::Remove {
            key: key.to_owned(),
        }
    } else {
        return Err(CliError::usage(format!(
            "rtctl {verb}: {word:?} comes after a change, so it must be one too (KEY=VALUE or \
             KEY-); give the games first"
        )));
    };
    let key = change.key();
    if key.is_empty() {
        return Err(CliError::usage(format!(
            "rtctl {verb}: {word:?} names no {what} key; write KEY=VALUE or KEY-"
        )));
    }
    if field == Field::Annotations
        && [
            ANNOTATION_OP_SOURCE,
            ANNOTATION_SOURCE_REF,
            ANNOTATION_FORCE,
        ]
        .contains(&key)
    {
        return Err(CliError::invalid(format!(
            "annotation {key:?} is rtmanager's: rtctl sets it on every write (--ref gives the \
             source-ref; restart --force and stop --force set the force annotation); nothing \
             was written"
        )));
    }
    // Keys follow label syntax for both; values only for labels (annotation values are free
    // text, bounded by the document's size).
    let value = match (&change, field) {
        (Change::Set { value, .. }, Field::Labels) => value.as_str(),
        _ => "",
    };
    validate_label(key, value).map_err(|message| {
        CliError::invalid(format!(
            "rtctl {verb}: {word:?}: {message} (invalid_request); nothing was written"
        ))
    })?;
    Ok(change)
}

/// Makes the changes to one map. `Err(key)`: a key whose value would change without
/// `overwrite`.
pub(crate) fn apply_changes(
    map: &mut BTreeMap<String, String>,
    changes: &[Change],
    overwrite: bool,
) -> Result<(), String> {
    for change in changes {
        match change {
            Change::Set { key, value } => {
                match map.get(key) {
                    Some(old) if old != value && !overwrite => return Err(key.clone()),
                    _ => {}
                }
                map.insert(key.clone(), value.clone());
            }
            Change::Remove { key } => {
                map.remove(key);
            }
        }
    }
    Ok(())
}

/// What changed between two maps, for the dry run: `k=v (was w)`, `k=v (new)`, `k- (was w)`.
pub(crate) fn describe_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> String {
    let mut parts = Vec::new();
    for (key, value) in after {
        match before.get(key) {
            Some(old) if old == value => {}
            Some(old) => parts.push(format!("{key}={value} (was {old:?})")),
            None => parts.push(format!("{key}={value} (new)")),
        }
    }
    for (key, old) in before {
        if !after.contains_key(key) {
            parts.push(format!("{key}- (was {old:?})"));
        }
    }
    parts.join(", ")
}

/// `rtctl label` (`field` labels) and `rtctl annotate` (annotations).
pub(crate) async fn label(
    client: &Client,
    args: &MetaArgs,
    field: Field,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let verb = field.verb();
    let (words, changes) = split_words(&args.words, field)?;
    let names = Names::parse(&words)?.games(verb)?;
    let targets = Targets {
        names,
        selector: args.selector.clone(),
        all: args.all,
    };
    let expected = args
        .resource_version
        .as_deref()
        .map(mutate::parse_revision)
        .transpose()?;
    if expected.is_some() && !(targets.by_name() && targets.names.len() == 1) {
        return Err(CliError::usage(format!(
            "rtctl {verb} --resource-version takes exactly one game by name"
        )));
    }
    let source_ref = request_ref(&args.source_ref, verb)?;
    let names = targets.resolve(client, verb).await?;
    let outcome = each(&names, async |name: &str| {
        let plan = Plan {
            name,
            source_ref: &source_ref,
            dry_run: args.dry_run,
            expected,
        };
        let done = mutate::read_modify_write(client, &plan, |live| {
            let mut doc = live.clone();
            apply_changes(field.map(&mut doc), &changes, args.overwrite).map_err(|key| {
                CliError::invalid(format!(
                    "gameruntime/{name} already has {} {key:?} (= {:?}); rerun with \
                     --overwrite to change it (nothing was written to it)",
                    field.what(),
                    live_value(live, field, &key)
                ))
            })?;
            mutate::recheck(&doc, &format!("gameruntime/{name}"))
        })
        .await?;
        let line = match (done.action, args.dry_run) {
            (Action::Unchanged, _) => format!("gameruntime/{name} unchanged"),
            (_, false) => format!("gameruntime/{name} {}", field.done()),
            (_, true) => {
                let mut live = done.live.clone();
                let mut doc = done.doc.clone();
                format!(
                    "gameruntime/{name} {} (dry run): {}",
                    field.done(),
                    describe_changes(field.map(&mut live), field.map(&mut doc))
                )
            }
        };
        writeln!(out, "{line}")?;
        Ok(Outcome::Success)
    })
    .await;
    Ok(outcome)
}

fn live_value(live: &GameRuntime, field: Field, key: &str) -> String {
    let mut live = live.clone();
    field.map(&mut live).get(key).cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    fn set(key: &str, value: &str) -> Change {
        Change::Set {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn games_come_first_then_the_changes() {
        let (names, changes) = split_words(
            &words("gr g1 g2 tier=ranked team- rtmanager.dev/x="),
            Field::Labels,
        )
        .unwrap();
        assert_eq!(names, ["gr", "g1", "g2"]);
        assert_eq!(
            changes,
            [
                set("tier", "ranked"),
                Change::Remove { key: "team".into() },
                set("rtmanager.dev/x", ""),
            ]
        );
        let (names, _) = split_words(&words("a=b"), Field::Labels).unwrap();
        assert!(names.is_empty(), "-l and --all give no names");
    }

    #[test]
    fn bad_changes_are_refused_before_anything_is_read() {
        let cases: &[(&str, Field, u8)] = &[
            ("g1", Field::Labels, 2),
            ("g1 a=b g2", Field::Labels, 2),
            ("g1 =b", Field::Labels, 2),
            ("g1 a=b a-", Field::Labels, 2),
            ("g1 bad_key!=x", Field::Labels, 3),
            ("g1 tier=not/valid", Field::Labels, 3),
            ("g1 rtmanager.dev/source-ref=x", Field::Annotations, 3),
            ("g1 rtmanager.dev/force-disruption-", Field::Annotations, 3),
        ];
        for (line, field, code) in cases {
            let error = split_words(&words(line), *field).unwrap_err();
            assert_eq!(error.exit_code(), *code, "{line}: {error}");
        }
        // Annotation values are free text.
        assert!(split_words(&words("g1 note=any/text:here"), Field::Annotations).is_ok());
    }

    #[test]
    fn overwriting_a_value_needs_overwrite_and_removing_an_absent_key_is_fine() {
        let mut map: BTreeMap<String, String> = [("tier".to_owned(), "casual".to_owned())].into();
        assert_eq!(
            apply_changes(&mut map, &[set("tier", "ranked")], false),
            Err("tier".to_owned())
        );
        assert_eq!(map["tier"], "casual");
        apply_changes(&mut map, &[set("tier", "casual")], false).expect("same value is no change");
        apply_changes(
            &mut map,
            &[set("tier", "ranked"), Change::Remove { key: "nope".into() }],
            true,
        )
        .unwrap();
        assert_eq!(map["tier"], "ranked");
        let before = map.clone();
        apply_changes(
            &mut map,
            &[set("team", "a"), Change::Remove { key: "tier".into() }],
            false,
        )
        .unwrap();
        assert_eq!(
            describe_changes(&before, &map),
            "team=a (new), tier- (was \"ranked\")"
        );
    }
}
