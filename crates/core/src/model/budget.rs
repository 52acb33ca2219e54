//! The `GameDisruptionBudget` document: how many of the games its selector matches may be
//! unavailable at once because of voluntary disruptions. The shape, its validation and its
//! arithmetic; `records::budgets` stores it, the controller takes its slots.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{FieldError, validate_name};
use super::{API_VERSION, ObjectMeta};

/// The `kind` of a disruption budget document.
pub const BUDGET_KIND: &str = "GameDisruptionBudget";

/// A disruption budget: before a voluntary disruption of a game its selector matches, the
/// game's controller takes one of the budget's slots; the slot is held until the game is
/// Ready again on its new spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GameDisruptionBudget {
    /// Always `rtmanager.dev/v1alpha1`.
    pub api_version: String,
    /// Always `GameDisruptionBudget`.
    pub kind: String,
    /// The budget's name, labels and annotations.
    pub metadata: ObjectMeta,
    /// Which games, and how many of them may be down.
    pub spec: BudgetSpec,
}

/// What a budget covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// The games it covers, by their labels; an empty selector covers every game.
    pub selector: LabelSelector,
    /// How many covered games may be unavailable at once through voluntary disruptions: a
    /// number (`2`; 0 allows none) or a percentage of the covered games (`"20%"`, rounded
    /// up).
    pub max_unavailable: MaxUnavailable,
}

/// A Kubernetes-style label selector: every `matchLabels` pair and every
/// `matchExpressions` requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels a game must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One set-based requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelRequirement {
    /// The label's key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: LabelOperator,
    /// The values of `In` and `NotIn` (at least one); none for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The operator of a set-based requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LabelOperator {
    /// The label is one of the values.
    In,
    /// The label is absent or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether a game with `labels` is covered.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match requirement.operator {
                    LabelOperator::In => value.is_some_and(|v| requirement.values.contains(v)),
                    LabelOperator::NotIn => value.is_none_or(|v| !requirement.values.contains(v)),
                    LabelOperator::Exists => value.is_some(),
                    LabelOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl fmt::Display for LabelSelector {
    /// The selector in `rtctl -l` syntax (`tier=casual,region in (eu,us)`); `<all>` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        for requirement in &self.match_expressions {
            let values = requirement.values.join(",");
            parts.push(match requirement.operator {
                LabelOperator::In => format!("{} in ({values})", requirement.key),
                LabelOperator::NotIn => format!("{} notin ({values})", requirement.key),
                LabelOperator::Exists => requirement.key.clone(),
                LabelOperator::DoesNotExist => format!("!{}", requirement.key),
            });
        }
        if parts.is_empty() {
            f.write_str("<all>")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// `maxUnavailable`: a count or a percentage of the covered games.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxUnavailable {
    /// At most this many.
    Count(u32),
    /// At most this percentage (0-100) of the covered games, rounded up.
    Percent(u32),
}

impl MaxUnavailable {
    /// How many of `covered` games may be down at once.
    pub fn allowed(self, covered: usize) -> usize {
        match self {
            MaxUnavailable::Count(count) => count as usize,
            MaxUnavailable::Percent(percent) => (covered * percent as usize).div_ceil(100),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Count(count) => write!(f, "{count}"),
            MaxUnavailable::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxUnavailable::Count(count) => serializer.serialize_u32(*count),
            MaxUnavailable::Percent(_) => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MaxUnavailable;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of games, such as 2, or a percentage, such as \"20%\"")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<MaxUnavailable, E> {
                u32::try_from(value)
                    .map(MaxUnavailable::Count)
                    .map_err(|_| E::custom(format!("{value} is too large")))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<MaxUnavailable, E> {
                u64::try_from(value)
                    .map_err(|_| E::custom(format!("{value} is negative: give 0 or more")))
                    .and_then(|value| self.visit_u64(value))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MaxUnavailable, E> {
                let invalid = || {
                    E::custom(format!(
                        "{text:?} is neither a number nor a percentage such as \"20%\""
                    ))
                };
                match text.strip_suffix('%') {
                    Some(number) => number
                        .trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|percent| *percent <= 100)
                        .map(MaxUnavailable::Percent)
                        .ok_or_else(invalid),
                    None => text
                        .trim()
                        .parse::<u32>()
                        .map(MaxUnavailable::Count)
                        .map_err(|_| invalid()),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for MaxUnavailable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxUnavailable".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A number of games (2) or a percentage of the covered games (\"20%\").",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^[0-9]{1,3}%$"}
            ]
        })
    }
}

impl GameDisruptionBudget {
    /// A budget with the current `apiVersion` and `kind`.
    pub fn new(
        name: impl Into<String>,
        selector: LabelSelector,
        max_unavailable: MaxUnavailable,
    ) -> Self {
        GameDisruptionBudget {
            api_version: API_VERSION.to_owned(),
            kind: BUDGET_KIND.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                ..ObjectMeta::default()
            },
            spec: BudgetSpec {
                selector,
                max_unavailable,
            },
        }
    }

    /// The budget's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Whether it covers `game`.
    pub fn covers(&self, game: &super::GameRuntime) -> bool {
        self.spec.selector.matches(&game.metadata.labels)
    }
}

/// Checks a budget: every rule it breaks, each naming its field.
pub fn validate_budget(budget: &GameDisruptionBudget) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if budget.api_version != API_VERSION {
        errors.push(FieldError::new(
            "apiVersion",
            format!("must be {API_VERSION}, not {:?}", budget.api_version),
        ));
    }
    if budget.kind != BUDGET_KIND {
        errors.push(FieldError::new(
            "kind",
            format!("must be {BUDGET_KIND}, not {:?}", budget.kind),
        ));
    }
    if let Err(message) = validate_name(&budget.metadata.name) {
        errors.push(FieldError::new("metadata.name", message));
    }
    super::validate::labels_of("metadata.labels", &budget.metadata.labels, &mut errors);
    super::validate::labels_of(
        "spec.selector.matchLabels",
        &budget.spec.selector.match_labels,
        &mut errors,
    );
    for (i, requirement) in budget.spec.selector.match_expressions.iter().enumerate() {
        let path = format!("spec.selector.matchExpressions[{i}]");
        if let Err(message) = super::validate::label_key(&requirement.key) {
            errors.push(FieldError::new(format!("{path}.key"), message));
        }
        let needs_values = matches!(
            requirement.operator,
            LabelOperator::In | LabelOperator::NotIn
        );
        if needs_values && requirement.values.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.values"),
                "In and NotIn need at least one value",
            ));
        }
        if !needs_values && !requirement.values.is_empty() {
            errors.push(FieldError::new(
                format!("{path}.values"),
                "Exists and DoesNotExist take no values",
            ));
        }
        for (j, value) in requirement.values.iter().enumerate() {
            if let Err(message) = super::validate::label_value_of(value) {
                errors.push(FieldError::new(format!("{path}.values[{j}]"), message));
            }
        }
    }
    if let MaxUnavailable::Count(count) = budget.spec.max_unavailable
        && count > MAX_BUDGET_SLOTS
    {
        errors.push(FieldError::new(
            "spec.maxUnavailable",
            format!("{count} is more than {MAX_BUDGET_SLOTS}; give a percentage for large fleets"),
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The most slots a budget may have as a count: slots are etcd keys, read on every
/// voluntary disruption of a covered game.
pub const MAX_BUDGET_SLOTS: u32 = 10_000;

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
    fn percentages_round_up_and_counts_stand() {
        assert_eq!(MaxUnavailable::Percent(20).allowed(8), 2);
        assert_eq!(MaxUnavailable::Percent(20).allowed(10), 2);
        assert_eq!(MaxUnavailable::Percent(20).allowed(11), 3);
        assert_eq!(MaxUnavailable::Percent(0).allowed(11), 0);
        assert_eq!(MaxUnavailable::Percent(100).allowed(7), 7);
        assert_eq!(MaxUnavailable::Count(2).allowed(0), 2);
    }

    #[test]
    fn max_unavailable_reads_numbers_and_percentages() {
        let read = |text: &str| serde_yaml::from_str::<MaxUnavailable>(text);
        assert_eq!(read("2").unwrap(), MaxUnavailable::Count(2));
        assert_eq!(read("'20%'").unwrap(), MaxUnavailable::Percent(20));
        assert_eq!(read("'3'").unwrap(), MaxUnavailable::Count(3));
        for bad in ["-1", "'120%'", "'x%'", "'two'", "1.5"] {
            assert!(read(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(
            serde_yaml::to_string(&MaxUnavailable::Percent(20)).unwrap(),
            "20%\n"
        );
        assert_eq!(
            serde_yaml::to_string(&MaxUnavailable::Count(2)).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: labels(&[("tier", "casual")]),
            match_expressions: vec![
                LabelRequirement {
                    key: "region".into(),
                    operator: LabelOperator::In,
                    values: vec!["eu".into(), "us".into()],
                },
                LabelRequirement {
                    key: "canary".into(),
                    operator: LabelOperator::DoesNotExist,
                    values: vec![],
                },
            ],
        };
        assert!(selector.matches(&labels(&[("tier", "casual"), ("region", "eu")])));
        assert!(!selector.matches(&labels(&[("tier", "casual"), ("region", "ap")])));
        assert!(!selector.matches(&labels(&[("tier", "casual")])));
        assert!(!selector.matches(&labels(&[
            ("tier", "casual"),
            ("region", "us"),
            ("canary", "1")
        ])));
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert_eq!(
            selector.to_string(),
            "tier=casual,region in (eu,us),!canary"
        );
    }

    #[test]
    fn validation_names_each_field() {
        let mut budget = GameDisruptionBudget::new(
            "Bad_Name",
            LabelSelector {
                match_labels: labels(&[("tier", "")]),
                match_expressions: vec![LabelRequirement {
                    key: "region".into(),
                    operator: LabelOperator::In,
                    values: vec![],
                }],
            },
            MaxUnavailable::Count(MAX_BUDGET_SLOTS + 1),
        );
        budget.kind = "Budget".into();
        let paths: Vec<String> = validate_budget(&budget)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "kind",
                "metadata.name",
                "spec.selector.matchExpressions[0].values",
                "spec.maxUnavailable"
            ]
        );
    }
}
