//! What changed between two specs of a game, in a line per field: the short diff a history
//! entry keeps for a recreate the document asked for (`rtctl history`, `describe`).
//!
//! Paths are the YAML field names (`image`, `resources.memory`, `ports`); an environment
//! variable is named (`env[MODE]`) but its value never shown, since values may be secrets
//! and the history is read by more people than the documents.

use serde_json::Value;

use super::GameRuntimeSpec;

/// The most lines kept; more are summed up in a last line (`… and 3 more`).
pub const MAX_CHANGES: usize = 8;

/// The longest value shown; a longer one ends in `…`.
const MAX_VALUE: usize = 48;

/// The fields that differ from `before` to `after`, in the order of their names, at most [`MAX_CHANGES`]
/// lines: `image: engine:1 → engine:2`, `env[MODE] changed`, `logging: (none) → {…}`.
pub fn spec_changes(before: &GameRuntimeSpec, after: &GameRuntimeSpec) -> Vec<String> {
    let (Ok(before), Ok(after)) = (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    walk("", &before, &after, &mut changes);
    if changes.len() > MAX_CHANGES {
        let more = changes.len() - (MAX_CHANGES - 1);
        changes.truncate(MAX_CHANGES - 1);
        changes.push(format!("… and {more} more"));
    }
    changes
}

fn walk(path: &str, before: &Value, after: &Value, changes: &mut Vec<String>) {
    if before == after {
        return;
    }
    if path == "env" {
        return env_changes(before, after, changes);
    }
    let empty = serde_json::Map::new();
    let fields = |value: &'_ Value| match value {
        Value::Object(map) => Some(map.clone()),
        Value::Null => Some(empty.clone()),
        _ => None,
    };
    match (fields(before), fields(after)) {
        (Some(b), Some(a)) => {
            // The later spec's fields (serde_json's maps keep them sorted), then those it
            // dropped.
            for (key, value) in &a {
                walk(
                    &join(path, key),
                    b.get(key).unwrap_or(&Value::Null),
                    value,
                    changes,
                );
            }
            for (key, value) in b.iter().filter(|(key, _)| !a.contains_key(*key)) {
                walk(&join(path, key), value, &Value::Null, changes);
            }
        }
        _ => changes.push(format!("{path}: {} → {}", show(before), show(after))),
    }
}

/// `env[NAME] added|removed|changed`, in the later spec's order.
fn env_changes(before: &Value, after: &Value, changes: &mut Vec<String>) {
    let vars = |list: &Value| -> Vec<(String, Value)> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|var| {
                let name = var.get("name").and_then(Value::as_str).unwrap_or("?");
                (
                    name.to_owned(),
                    var.get("value").cloned().unwrap_or(Value::Null),
                )
            })
            .collect()
    };
    let (before, after) = (vars(before), vars(after));
    let find = |list: &[(String, Value)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    for (name, value) in &after {
        match find(&before, name) {
            None => changes.push(format!("env[{name}] added")),
            Some(old) if old != *value => changes.push(format!("env[{name}] changed")),
            Some(_) => {}
        }
    }
    for (name, _) in before.iter().filter(|(n, _)| find(&after, n).is_none()) {
        changes.push(format!("env[{name}] removed"));
    }
    let order = |list: &[(String, Value)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if changes.is_empty() && order(&before) != order(&after) {
        changes.push("env reordered".to_owned());
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A value on one short line: strings bare, absent as `(none)`, the rest as compact JSON.
fn show(value: &Value) -> String {
    let text = match value {
        Value::Null => return "(none)".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() <= MAX_VALUE {
        return text;
    }
    let cut: String = text.chars().take(MAX_VALUE - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse::parse_documents;

    fn spec(body: &str) -> GameRuntimeSpec {
        let yaml = format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: g1\n\
             spec:\n{body}"
        );
        parse_documents(&yaml).unwrap().remove(0).spec
    }

    #[test]
    fn an_identical_spec_has_no_changes() {
        let a = spec("  image: engine:1\n");
        assert!(spec_changes(&a, &a.clone()).is_empty());
    }

    #[test]
    fn scalars_show_both_values_and_nested_fields_their_path() {
        let a = spec("  image: engine:1\n  resources: {memory: 128Mi}\n");
        let b = spec("  image: engine:2\n  resources: {memory: 256Mi}\n");
        assert_eq!(
            spec_changes(&a, &b),
            [
                "image: engine:1 → engine:2",
                "resources.memory: 128Mi → 256Mi"
            ]
        );
    }

    #[test]
    fn an_added_or_dropped_field_reads_none_on_its_missing_side() {
        let a = spec("  image: engine:1\n");
        let b = spec("  image: engine:1\n  logging: {maxSize: 20Mi}\n");
        let changes = spec_changes(&a, &b);
        assert_eq!(changes, ["logging.maxSize: (none) → 20Mi"], "{changes:?}");
        assert_eq!(spec_changes(&b, &a), ["logging.maxSize: 20Mi → (none)"]);
    }

    #[test]
    fn environment_values_are_never_shown() {
        let a = spec(
            "  image: e\n  env:\n  - {name: MODE, value: secret-a}\n  - {name: OLD, value: x}\n",
        );
        let b = spec(
            "  image: e\n  env:\n  - {name: MODE, value: secret-b}\n  - {name: NEW, value: y}\n",
        );
        let changes = spec_changes(&a, &b);
        assert_eq!(
            changes,
            ["env[MODE] changed", "env[NEW] added", "env[OLD] removed"]
        );
        assert!(!changes.concat().contains("secret"));
    }

    #[test]
    fn long_values_and_many_changes_are_cut() {
        let long = "x".repeat(100);
        let a = spec("  image: e\n");
        let b = spec(&format!("  image: {long}\n"));
        let changes = spec_changes(&a, &b);
        assert!(
            changes[0].ends_with('…') && changes[0].chars().count() < 70,
            "{changes:?}"
        );
        let vars: String = (0..12)
            .map(|i| format!("  - {{name: V{i}, value: v}}\n"))
            .collect();
        let c = spec(&format!("  image: e\n  env:\n{vars}"));
        let changes = spec_changes(&a, &c);
        assert_eq!(changes.len(), MAX_CHANGES);
        assert_eq!(changes[MAX_CHANGES - 1], "… and 5 more");
    }
}
