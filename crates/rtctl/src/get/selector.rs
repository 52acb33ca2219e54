//! Label selectors of `-l`: equality-based (`tier=ranked`, `tier==ranked`, `region!=eu`),
//! set-based (`region in (eu, us)`, `tier notin (casual)`), existence (`canary`, `!legacy`),
//! comma-separated, all of them must hold.

use std::collections::BTreeMap;

use crate::error::CliError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A conjunction of requirements (`tier=ranked,region!=eu,canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(pub(crate) Vec<Requirement>);

impl Selector {
    pub(crate) fn parse(text: &str) -> Result<Selector, CliError> {
        let bad = |part: &str, why: &str| {
            CliError::usage(format!(
                "invalid label selector {text:?} at {part:?}: {why}; write it like \
                 tier=ranked,region!=eu,region in (eu,us),tier notin (casual),canary,!legacy"
            ))
        };
        let key_ok = |key: &str| {
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        };
        let value_ok = |value: &str| {
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let mut requirements = Vec::new();
        for part in crate::shape::jsonpath::split_outside(text, ',')
            .into_iter()
            .map(str::trim)
        {
            if part.is_empty() {
                return Err(bad(part, "empty requirement"));
            }
            let requirement = if let Some((key, values, negated)) = set_based(part) {
                let values = values
                    .map_err(|why| bad(part, why))?
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                if negated {
                    Requirement::NotIn(key.to_owned(), values)
                } else {
                    Requirement::In(key.to_owned(), values)
                }
            } else if part.contains('(') || part.contains(')') {
                return Err(bad(
                    part,
                    "a set is written `KEY in (A,B)` or `KEY notin (A,B)`",
                ));
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some((key, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                Requirement::Equals(key.trim().to_owned(), value.trim().to_owned())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let (key, values): (&String, Vec<&String>) = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v]),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, Vec::new()),
                Requirement::In(k, vs) | Requirement::NotIn(k, vs) => (k, vs.iter().collect()),
            };
            if !key_ok(key) {
                return Err(bad(part, "a key is letters, digits, '-', '_', '.' and '/'"));
            }
            if values.iter().any(|v| !value_ok(v)) {
                return Err(bad(part, "a value is letters, digits, '-', '_' and '.'"));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// The label keys the selector names (for completion and notes).
    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _) => k.as_str(),
            })
            .collect()
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
        })
    }
}

/// The values of a set-based requirement, or why they do not parse.
type SetValues<'p> = Result<Vec<&'p str>, &'static str>;

/// `KEY in (A,B)` or `KEY notin (A,B)`: the key, the values (or why they do not parse), and
/// whether it is `notin`; `None` when the part is not set-based.
fn set_based(part: &str) -> Option<(&str, SetValues<'_>, bool)> {
    let (key, negated, rest) =
        [(" notin ", true), (" in ", false)]
            .into_iter()
            .find_map(|(word, negated)| {
                let at = part.find(word)?;
                Some((part[..at].trim(), negated, part[at + word.len()..].trim()))
            })?;
    let values = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or("the values of a set go in parentheses: KEY in (A,B)")
        .and_then(|inner| {
            let values: Vec<&str> = inner.split(',').map(str::trim).collect();
            if values.iter().any(|v| v.is_empty()) {
                Err("a set holds one value or more, comma-separated")
            } else {
                Ok(values)
            }
        });
    Some((key, values, negated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_parse_every_requirement_kind() {
        let selector = Selector::parse("tier=ranked, region!=eu,canary,!legacy,app==x").unwrap();
        assert_eq!(
            selector.0,
            [
                Requirement::Equals("tier".into(), "ranked".into()),
                Requirement::NotEquals("region".into(), "eu".into()),
                Requirement::Exists("canary".into()),
                Requirement::NotExists("legacy".into()),
                Requirement::Equals("app".into(), "x".into()),
            ]
        );
        let set = Selector::parse("region in (eu, us),tier notin (casual),app").unwrap();
        assert_eq!(
            set.0,
            [
                Requirement::In("region".into(), vec!["eu".into(), "us".into()]),
                Requirement::NotIn("tier".into(), vec!["casual".into()]),
                Requirement::Exists("app".into()),
            ]
        );
        assert_eq!(set.keys(), ["region", "tier", "app"]);
        for bad in [
            "",
            "a,,b",
            "=x",
            "a=b c",
            "a=(x)",
            "region in eu",
            "region in (eu,)",
            "region in ()",
            "region notin (a b)",
        ] {
            let error = Selector::parse(bad).unwrap_err();
            assert!(matches!(error, CliError::Usage { .. }), "{bad}: {error}");
        }
    }

    #[test]
    fn selectors_match_all_their_requirements() {
        let selector = Selector::parse("tier=ranked,region!=eu,canary,!legacy").unwrap();
        assert!(selector.matches(&labels(&[("tier", "ranked"), ("canary", "")])));
        assert!(selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", "1"),
            ("region", "us")
        ])));
        assert!(
            !selector.matches(&labels(&[("tier", "ranked")])),
            "canary missing"
        );
        assert!(!selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", ""),
            ("region", "eu")
        ])));
        assert!(!selector.matches(&labels(&[
            ("tier", "ranked"),
            ("canary", ""),
            ("legacy", "")
        ])));
        assert!(Selector::default().matches(&labels(&[])));
        let set = Selector::parse("region in (eu,us),tier notin (casual)").unwrap();
        assert!(set.matches(&labels(&[("region", "eu")])));
        assert!(set.matches(&labels(&[("region", "us"), ("tier", "ranked")])));
        assert!(!set.matches(&labels(&[("region", "ap")])), "not in the set");
        assert!(!set.matches(&labels(&[])), "in needs the key");
        assert!(!set.matches(&labels(&[("region", "eu"), ("tier", "casual")])));
    }
}
