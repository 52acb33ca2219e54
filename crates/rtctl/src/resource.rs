//! The resource types rtctl knows and how a command line names objects of them: the one home
//! of the type words (`gameruntime`, `gr`, `budget`, `node`, …) and of the `TYPE NAME…`,
//! `TYPE/NAME` and bare `NAME` forms every verb takes.
//!
//! A bare name is a game's (rtctl manages games first): `rtctl get arena-1` is
//! `rtctl get gameruntime/arena-1`. A first word that is a type word names the type of the
//! names after it (`rtctl get nodes n1 n2`), alone it means every object of the type
//! (`rtctl get budgets`). `TYPE/NAME` names one object and may be mixed with other
//! `TYPE/NAME`s and bare names. A game that happens to be named like a type word is reached
//! as `gameruntime/NAME`.

use std::fmt;

use super::error::CliError;

/// A resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `GameRuntime`: a game (the documents under `gameruntimes/`).
    Game,
    /// `GameDisruptionBudget` (under `budgets/`).
    Budget,
    /// A node: a Docker host's controller record (under `nodes/`).
    Node,
}

impl Kind {
    /// Every kind, in the order help texts list them.
    pub(crate) const ALL: [Kind; 3] = [Kind::Game, Kind::Budget, Kind::Node];

    /// The words that name the kind: singular, plural, short names.
    pub(crate) fn words(self) -> &'static [&'static str] {
        match self {
            Kind::Game => &["gameruntime", "gameruntimes", "gr"],
            Kind::Budget => &[
                "gamedisruptionbudget",
                "gamedisruptionbudgets",
                "budget",
                "budgets",
                "gdb",
            ],
            Kind::Node => &["node", "nodes", "no"],
        }
    }

    /// The kind a word names (case as typed, as kubectl's are: lower case).
    pub(crate) fn from_word(word: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.words().contains(&word))
    }

    /// The singular name, as `-o name` prints it (`gameruntime/arena-1`).
    pub(crate) fn singular(self) -> &'static str {
        self.words()[0]
    }

    /// The kind's name in YAML (`kind:`).
    pub(crate) fn kind_name(self) -> &'static str {
        match self {
            Kind::Game => "GameRuntime",
            Kind::Budget => "GameDisruptionBudget",
            Kind::Node => "Node",
        }
    }

    /// Checks a name of this kind before it becomes part of a key.
    pub(crate) fn check_name(self, name: &str) -> Result<(), CliError> {
        match self {
            Kind::Game | Kind::Budget => super::client::check_name(name),
            Kind::Node => super::node::check_node_name(name),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.singular())
    }
}

/// The types rtctl knows, for the error of an unknown one.
pub(crate) fn known_types() -> String {
    Kind::ALL
        .iter()
        .map(|kind| {
            let words = kind.words();
            format!("{} ({})", words[0], words[1..].join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unknown_type(word: &str) -> CliError {
    CliError::usage(format!(
        "rtctl knows no resource type {word:?}; the types are {}",
        known_types()
    ))
}

/// One object named on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Named {
    pub(crate) kind: Kind,
    pub(crate) name: String,
}

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// What the positional words of a verb name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Names {
    /// The type a leading type word gave (`get nodes`, `get gr a b`); `None` without one.
    pub(crate) kind: Option<Kind>,
    /// The objects named, in the order given.
    pub(crate) named: Vec<Named>,
}

impl Names {
    /// Parses the positional words: `[TYPE] NAME…` or `TYPE/NAME` and bare names mixed. Every
    /// name is checked for its kind; an unknown `TYPE/` or a type word among names exits 2.
    pub(crate) fn parse<S: AsRef<str>>(words: &[S]) -> Result<Names, CliError> {
        let mut words = words.iter().map(AsRef::as_ref).peekable();
        let kind = match words.peek() {
            Some(first) if !first.contains('/') => {
                let kind = Kind::from_word(first);
                if kind.is_some() {
                    words.next();
                }
                kind
            }
            _ => None,
        };
        let mut named = Vec::new();
        for word in words {
            let one = match word.split_once('/') {
                Some((_, _)) if kind.is_some() => {
                    return Err(CliError::usage(format!(
                        "{word:?}: after a type word, give bare names (`rtctl get {} NAME`), or \
                         leave the type word out and write TYPE/NAME",
                        kind.map_or("gameruntime", Kind::singular)
                    )));
                }
                Some((ty, name)) => match Kind::from_word(ty) {
                    Some(kind) => Named {
                        kind,
                        name: name.to_owned(),
                    },
                    // A word like a type's: a type rtctl does not know.
                    None if !ty.is_empty() && ty.chars().all(|c| c.is_ascii_lowercase()) => {
                        return Err(unknown_type(ty));
                    }
                    // Anything else (`../x`) is a name no object can have.
                    None => {
                        return Err(Kind::Game.check_name(word).err().unwrap_or_else(|| {
                            CliError::invalid(format!("{word:?} is not a name"))
                        }));
                    }
                },
                None => Named {
                    kind: kind.unwrap_or(Kind::Game),
                    name: word.to_owned(),
                },
            };
            if one.name.is_empty() && word.contains('/') {
                return Err(CliError::usage(format!(
                    "{word:?} names no object: write TYPE/NAME, e.g. gameruntime/arena-1"
                )));
            }
            one.kind.check_name(&one.name)?;
            named.push(one);
        }
        Ok(Names { kind, named })
    }

    /// The one kind the words are about: the type word's, else that of every name (games when
    /// none is named); an error naming the kinds when they mix.
    pub(crate) fn single_kind(&self, verb: &str) -> Result<Kind, CliError> {
        if let Some(kind) = self.kind {
            return Ok(kind);
        }
        let mut kinds: Vec<Kind> = self.named.iter().map(|n| n.kind).collect();
        kinds.sort();
        kinds.dedup();
        match kinds.as_slice() {
            [] => Ok(Kind::Game),
            [kind] => Ok(*kind),
            many => Err(CliError::usage(format!(
                "rtctl {verb} takes objects of one type at a time; these name {}",
                many.iter()
                    .map(|k| k.singular())
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))),
        }
    }

    /// The names, all of one kind (see [`Names::single_kind`]).
    pub(crate) fn of_one_kind(&self, verb: &str) -> Result<(Kind, Vec<String>), CliError> {
        let kind = self.single_kind(verb)?;
        Ok((kind, self.named.iter().map(|n| n.name.clone()).collect()))
    }

    /// The game names, refusing other kinds for verbs that act on games only.
    pub(crate) fn games(&self, verb: &str) -> Result<Vec<String>, CliError> {
        match self.of_one_kind(verb)? {
            (Kind::Game, names) => Ok(names),
            (kind, _) => Err(CliError::usage(format!(
                "rtctl {verb} acts on gameruntimes, not on {kind}s"
            ))),
        }
    }
}

/// A game's name as a verb that acts on games takes it (clap's value parser): `NAME`,
/// `gameruntime/NAME`, `gr/NAME`. Another kind's `TYPE/NAME`, or an unknown type, is refused;
/// whether the name is a valid one is checked later (exit 3, as ever).
pub(crate) fn game_word(word: &str) -> Result<String, String> {
    let Some((ty, name)) = word.split_once('/') else {
        return Ok(word.to_owned());
    };
    match Kind::from_word(ty) {
        Some(Kind::Game) => Ok(name.to_owned()),
        Some(kind) => Err(format!("this verb acts on gameruntimes, not on {kind}s")),
        None if !ty.is_empty() && ty.chars().all(|c| c.is_ascii_lowercase()) => {
            Err(unknown_type(ty).to_string())
        }
        None => Ok(word.to_owned()),
    }
}

/// Whether a word is a type word of games (`rtctl restart gr g1 g2`).
pub(crate) fn is_game_type_word(word: &str) -> bool {
    Kind::from_word(word) == Some(Kind::Game)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Names, CliError> {
        Names::parse(words)
    }

    fn named(kind: Kind, name: &str) -> Named {
        Named {
            kind,
            name: name.to_owned(),
        }
    }

    #[test]
    fn every_form_names_the_same_objects() {
        type Case<'c> = (&'c [&'c str], Option<Kind>, &'c [(Kind, &'c str)]);
        let cases: &[Case<'_>] = &[
            (&["g1"], None, &[(Kind::Game, "g1")]),
            (
                &["g1", "g2"],
                None,
                &[(Kind::Game, "g1"), (Kind::Game, "g2")],
            ),
            (
                &["gameruntime", "g1"],
                Some(Kind::Game),
                &[(Kind::Game, "g1")],
            ),
            (
                &["gr", "g1", "g2"],
                Some(Kind::Game),
                &[(Kind::Game, "g1"), (Kind::Game, "g2")],
            ),
            (&["gameruntimes"], Some(Kind::Game), &[]),
            (
                &["gameruntime/g1", "gr/g2"],
                None,
                &[(Kind::Game, "g1"), (Kind::Game, "g2")],
            ),
            (&["gameruntime/gr"], None, &[(Kind::Game, "gr")]),
            (&["budgets"], Some(Kind::Budget), &[]),
            (&["gdb/casual"], None, &[(Kind::Budget, "casual")]),
            (&["nodes", "n1"], Some(Kind::Node), &[(Kind::Node, "n1")]),
            (&["node/n1.eu"], None, &[(Kind::Node, "n1.eu")]),
            (&[], None, &[]),
        ];
        for (words, kind, expected) in cases {
            let names = parse(words).unwrap_or_else(|e| panic!("{words:?}: {e}"));
            assert_eq!(names.kind, *kind, "{words:?}");
            let expected: Vec<Named> = expected.iter().map(|(k, n)| named(*k, n)).collect();
            assert_eq!(names.named, expected, "{words:?}");
        }
    }

    #[test]
    fn unknown_types_and_bad_names_are_usage_errors_naming_the_types() {
        let error = parse(&["pod/g1"]).unwrap_err();
        assert!(matches!(error, CliError::Usage { .. }), "{error}");
        let text = error.to_string();
        for word in [
            "\"pod\"",
            "gameruntime (gameruntimes, gr)",
            "node (nodes, no)",
            "gdb",
        ] {
            assert!(text.contains(word), "{text}");
        }
        for bad in [&["gr/"][..], &["nodes", "node/n1"]] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}: {error}");
        }
        // A name that cannot be a key is invalid (3), as ever.
        for bad in [
            &["gr", "Bad_Name"][..],
            &["node/-n"],
            &["x y"],
            &[""],
            &["../x"],
            &["a.b/c"],
        ] {
            let error = parse(bad).unwrap_err();
            assert_eq!(error.exit_code(), 3, "{bad:?}: {error}");
        }
    }

    #[test]
    fn a_game_verb_takes_bare_and_typed_game_names() {
        assert_eq!(game_word("g1").unwrap(), "g1");
        assert_eq!(game_word("gameruntime/g1").unwrap(), "g1");
        assert_eq!(game_word("gr/g1").unwrap(), "g1");
        assert_eq!(game_word("../x").unwrap(), "../x", "left to the name check");
        assert!(game_word("node/n1").unwrap_err().contains("not on nodes"));
        assert!(
            game_word("pod/x")
                .unwrap_err()
                .contains("no resource type \"pod\"")
        );
    }

    #[test]
    fn one_kind_at_a_time() {
        let mixed = parse(&["gr/g1", "node/n1"]).unwrap();
        let error = mixed.single_kind("get").unwrap_err();
        assert!(
            error.to_string().contains("gameruntime and node"),
            "{error}"
        );
        assert_eq!(parse(&[]).unwrap().single_kind("get").unwrap(), Kind::Game);
        assert_eq!(
            parse(&["node/n1", "node/n2"])
                .unwrap()
                .of_one_kind("get")
                .unwrap(),
            (Kind::Node, vec!["n1".to_owned(), "n2".to_owned()])
        );
        let error = parse(&["budget", "b"]).unwrap().games("edit").unwrap_err();
        assert!(
            error.to_string().contains("not on gamedisruptionbudgets"),
            "{error}"
        );
    }
}
