//! Label selectors of `get -l`: `tier=ranked,region!=eu,canary,!legacy`.

use std::collections::BTreeMap;

use crate::error::CliError;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A conjunction of requirements (`tier=ranked,region!=eu,canary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(pub(crate) Vec<Requirement>);

impl Selector {
    pub(crate) fn parse(text: &str) -> Result<Selector, CliError> {
        let bad = |part: &str, why: &str| {
            CliError::usage(format!(
                "invalid label selector {text:?} at {part:?}: {why}; write it like \
                 tier=ranked,region!=eu,canary,!legacy"
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
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad(part, "empty requirement"));
            }
            let requirement = if let Some((key, value)) = part.split_once("!=") {
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
            let (key, value) = match &requirement {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, Some(v)),
                Requirement::Exists(k) | Requirement::NotExists(k) => (k, None),
            };
            if !key_ok(key) {
                return Err(bad(part, "a key is letters, digits, '-', '_', '.' and '/'"));
            }
            if value.is_some_and(|v| !value_ok(v)) {
                return Err(bad(part, "a value is letters, digits, '-', '_' and '.'"));
            }
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
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
        for bad in ["", "a,,b", "=x", "a=b c", "a=(x)"] {
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
    }
}
