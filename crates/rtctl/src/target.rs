//! Which games a verb acts on: names, `-l SELECTOR` or `--all` (exactly one of them), shared
//! by the bulk verbs (`restart`, `stop`, `start`, `delete`) and `rollout`.

use super::client::{Client, check_name};
use super::error::{CliError, Outcome};
use super::get::Selector;
use super::output::{error_line, note};
use super::resource;

/// The games a verb acts on.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Targets {
    /// The games, by name (`NAME`, `gameruntime/NAME`, or a type word then names).
    #[arg(
        conflicts_with_all = ["selector", "all"],
        value_parser = resource::game_word,
        value_name = "NAME",
        add = crate::complete::game_names()
    )]
    pub(crate) names: Vec<String>,
    /// Every game whose labels match: key=value, key!=value, key in (a,b), key notin (a,b),
    /// key (exists), !key; comma-separated, all must hold.
    #[arg(short = 'l', long, value_name = "SELECTOR", conflicts_with = "all", add = crate::complete::label_selectors())]
    pub(crate) selector: Option<String>,
    /// Every game.
    #[arg(long)]
    pub(crate) all: bool,
}

impl Targets {
    /// Targets naming one game (the form tests and single-game callers build).
    #[cfg(test)]
    pub(crate) fn one(name: &str) -> Targets {
        Targets {
            names: vec![name.to_owned()],
            ..Targets::default()
        }
    }

    /// Whether the command line named games one by one (not -l or --all).
    pub(crate) fn by_name(&self) -> bool {
        self.selector.is_none() && !self.all
    }

    /// The names given, a leading type word (`rtctl stop gr a b`) left out.
    pub(crate) fn names(&self) -> &[String] {
        match self.names.split_first() {
            Some((first, rest)) if resource::is_game_type_word(first) => rest,
            _ => &self.names,
        }
    }

    /// Checks the command line: exactly one of names, `-l` and `--all`; valid names and
    /// selector.
    pub(crate) fn check(&self, verb: &str) -> Result<Option<Selector>, CliError> {
        let given = usize::from(!self.names().is_empty())
            + usize::from(self.selector.is_some())
            + usize::from(self.all);
        if given != 1 {
            return Err(CliError::usage(format!(
                "rtctl {verb} takes game names, -l SELECTOR or --all (exactly one of them), \
                 e.g. `rtctl {verb} arena-1` or `rtctl {verb} -l tier=casual`"
            )));
        }
        for name in self.names() {
            check_name(name)?;
        }
        self.selector.as_deref().map(Selector::parse).transpose()
    }

    /// The names of the games to act on, in name order for -l and --all (as given
    /// otherwise). A selector or --all reads one listing of the documents; names are not
    /// looked up here (the verb reports a missing one on its line).
    pub(crate) async fn resolve(
        &self,
        client: &Client,
        verb: &str,
    ) -> Result<Vec<String>, CliError> {
        let selector = self.check(verb)?;
        if self.by_name() {
            return Ok(self.names().to_vec());
        }
        let selector = selector.unwrap_or_default();
        let list = client
            .documents()
            .list()
            .await
            .map_err(|e| client.doc_error(e, "listing gameruntimes"))?;
        if !list.invalid.is_empty() && !selector.0.is_empty() {
            for invalid in &list.invalid {
                note(&format!(
                    "note: the value stored at {} cannot be read, so the selector cannot match \
                     it: left out",
                    invalid.key
                ));
            }
        }
        let mut names: Vec<String> = list
            .items
            .iter()
            .filter(|doc| selector.matches(&doc.metadata.labels))
            .map(|doc| doc.metadata.name.clone())
            .collect();
        if selector.0.is_empty() {
            // --all: an unreadable document is still a game (delete removes it).
            names.extend(list.invalid.iter().filter_map(|invalid| {
                client
                    .keys()
                    .name_of(&client.keys().gameruntimes(), &invalid.key)
                    .map(str::to_owned)
            }));
            names.sort();
        }
        Ok(names)
    }
}

/// Ends a listing of named objects of which `missing` were not found: each but the last said
/// on its own `error:` line, the last the command's error (exit 4), after what was printed.
pub(crate) fn missing_names(
    missing: &[&String],
    out: &mut dyn std::io::Write,
    not_found: impl Fn(&str) -> CliError,
) -> Result<(), CliError> {
    let [before @ .., last] = missing else {
        return Ok(());
    };
    out.flush()?;
    for name in before {
        error_line(&not_found(name));
    }
    Err(not_found(last))
}

/// Runs `one` for each game, reporting each failure as its own `error:` line on stderr, and
/// answers the worst outcome. No game at all prints `No resources found` (exit 0).
pub(crate) async fn each<F>(names: &[String], mut one: F) -> Outcome
where
    F: AsyncFnMut(&str) -> Result<Outcome, CliError>,
{
    if names.is_empty() {
        note("No resources found");
        return Outcome::Success;
    }
    let mut worst = Outcome::Success;
    for name in names {
        let outcome = match one(name).await {
            Ok(outcome) => outcome,
            Err(error) => {
                error_line(&error);
                Outcome::Exit(error.exit_code())
            }
        };
        worst = worst.worst(outcome);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        crate::parse_from(std::iter::once("rtctl").chain(args.iter().copied()))
    }

    #[test]
    fn exactly_one_of_names_selector_and_all_is_taken() {
        assert!(Targets::one("g1").check("restart").is_ok());
        let selector = Targets {
            selector: Some("tier=casual,!canary".into()),
            ..Targets::default()
        };
        let parsed = selector.check("restart").unwrap().unwrap();
        assert!(parsed.matches(&[("tier".to_owned(), "casual".to_owned())].into()));
        let none = Targets::default().check("restart").unwrap_err();
        assert!(matches!(none, CliError::Usage { .. }), "{none}");
        let bad = Targets {
            selector: Some("a b".into()),
            ..Targets::default()
        };
        assert!(matches!(bad.check("stop"), Err(CliError::Usage { .. })));
        // clap refuses the mixes before any of this runs.
        for mixed in [
            &["restart", "g1", "-l", "a=b"][..],
            &["stop", "g1", "--all"],
            &["start", "-l", "a=b", "--all"],
            &["delete", "g1", "--all"],
            &["rollout", "status", "g1", "-l", "a=b"],
        ] {
            assert!(parse(mixed).is_err(), "{mixed:?}");
        }
        for fine in [
            &["restart", "-l", "tier=casual", "--force"][..],
            &["stop", "--all", "--force"],
            &["start", "g1", "g2"],
            &["delete", "-l", "tier=casual", "--force"],
            &["rollout", "undo", "--all"],
            &["rollout", "status", "-l", "a=b", "-w", "--timeout", "1m"],
        ] {
            assert!(parse(fine).is_ok(), "{fine:?}");
        }
    }
}
