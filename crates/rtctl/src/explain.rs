//! `rtctl explain TYPE[.field.path]`: the documentation of a resource's fields, read from the
//! schema the CustomResourceDefinitions carry (generated from the Rust types, so it says what
//! the doc comments of the types say).
//!
//! A field path walks through objects by property name, through arrays into their items and
//! through maps into their values (`gameruntime.spec.ports.containerPort`). The schema's
//! `$ref`, `allOf`, `anyOf`/`oneOf` (with `null`: nullable), `x-kubernetes-int-or-string`,
//! `enum` and `additionalProperties` are all understood, whether or not the generated CRD
//! still uses them.

use std::io::Write;

use serde_json::{Map, Value};

use super::error::{CliError, Outcome};
use super::resource::{Kind, known_types};

/// What `explain TYPE.metadata` says (the generated schema leaves metadata undescribed).
const METADATA: &str = "The object's identity: `name` (a DNS-1123 label, the key's last \
                        segment), `labels` and `annotations` (string maps); \
                        `generation`, `resourceVersion` and `creationTimestamp` are filled in \
                        from etcd when it is read.";

/// `rtctl explain` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ExplainArgs {
    /// The type and an optional field path: `gameruntime`, `gr.spec.ports`,
    /// `budget.spec.maxUnavailable`.
    #[arg(value_name = "TYPE[.FIELD...]")]
    pub(crate) path: String,
    /// Print the tree of every field below (names and types, no descriptions).
    #[arg(long)]
    pub(crate) recursive: bool,
}

/// The schema of one kind: its name, API version and the document's OpenAPI schema.
#[derive(Debug, Clone)]
pub(crate) struct KindSchema {
    kind: String,
    version: String,
    root: Value,
}

impl KindSchema {
    /// The schema of `kind`, from its CRD; a node has none (its record is the controllers').
    pub(crate) fn of(kind: Kind) -> Result<KindSchema, CliError> {
        let yaml = match kind {
            Kind::Game => rtm_core::model::crd_yaml(),
            Kind::Budget => rtm_core::model::crd::budget_crd_yaml(),
            Kind::Node => {
                return Err(CliError::usage(
                    "node has no schema to explain: node records are written by the \
                     controllers, not by people; see a node's fields with `rtctl describe \
                     node NAME` or `rtctl get nodes -o yaml`",
                ));
            }
        };
        // rtm-core hands out the CRDs as YAML only; parsing them back is cheap and exact.
        let crd: Value = serde_yaml::from_str(&yaml)
            .map_err(|e| CliError::internal(format!("the generated CRD does not parse: {e}")))?;
        let served = &crd["spec"]["versions"][0];
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let version = served["name"].as_str().unwrap_or_default();
        let mut root = served["schema"]["openAPIV3Schema"].clone();
        // A CRD leaves metadata's schema to the API server, so the generated one says only
        // "object"; say here what it holds.
        if let Some(Value::Object(metadata)) = root.pointer_mut("/properties/metadata") {
            metadata
                .entry("description")
                .or_insert_with(|| Value::from(METADATA));
        }
        if !root.is_object() {
            return Err(CliError::internal(
                "the generated CRD has no openAPIV3Schema",
            ));
        }
        Ok(KindSchema {
            kind: crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or(kind.kind_name())
                .to_owned(),
            version: format!("{group}/{version}"),
            root,
        })
    }
}

/// `rtctl explain`.
pub(crate) fn explain(args: &ExplainArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let mut words = args.path.split('.');
    let word = words.next().unwrap_or_default();
    let kind = Kind::from_word(word).ok_or_else(|| {
        CliError::usage(format!(
            "rtctl knows no resource type {word:?}; the types are {}",
            known_types()
        ))
    })?;
    let fields: Vec<&str> = words.collect();
    if fields.iter().any(|f| f.is_empty()) {
        return Err(CliError::usage(format!(
            "{:?} has an empty field name; write the path like gameruntime.spec.ports",
            args.path
        )));
    }
    let schema = KindSchema::of(kind)?;
    let text = render(&schema, kind.singular(), &fields, args.recursive)?;
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

/// The explanation of `fields` below the root of `schema` (`type_word` names the root in
/// messages).
pub(crate) fn render(
    schema: &KindSchema,
    type_word: &str,
    fields: &[&str],
    recursive: bool,
) -> Result<String, CliError> {
    let root = &schema.root;
    let mut node = resolve(root, root);
    let mut path = type_word.to_owned();
    for field in fields {
        let container = descend(root, &node);
        let properties = properties(root, &container);
        let Some((_, child)) = properties.iter().find(|(name, _)| name == field) else {
            let known: Vec<&str> = properties.iter().map(|(name, _)| name.as_str()).collect();
            let fix = if known.is_empty() {
                format!("{path} has no fields")
            } else {
                format!("its fields are {}", known.join(", "))
            };
            return Err(CliError::usage(format!(
                "{path} has no field {field:?}; {fix} (see `rtctl explain {path}`)"
            )));
        };
        node = resolve(root, child);
        path = format!("{path}.{field}");
    }

    let mut text = String::new();
    text.push_str(&format!("KIND:     {}\n", schema.kind));
    text.push_str(&format!("VERSION:  {}\n\n", schema.version));
    if !fields.is_empty() {
        let name = fields.last().copied().unwrap_or_default();
        text.push_str(&format!(
            "FIELD:    {name} <{}>\n\n",
            type_name(root, &node)
        ));
    }
    text.push_str("DESCRIPTION:\n");
    let description = describe(root, &node);
    if description.is_empty() {
        text.push_str("    <no description>\n");
    } else {
        text.push_str(&indent(&description, 4));
    }
    let container = descend(root, &node);
    let children = properties(root, &container);
    if children.is_empty() {
        return Ok(text);
    }
    text.push_str("\nFIELDS:\n");
    if recursive {
        tree(root, &container, 1, &mut text);
        return Ok(text);
    }
    let required = required(&container);
    for (name, child) in &children {
        let child = resolve(root, child);
        let marker = if required.contains(&name.as_str()) {
            " -required-"
        } else {
            ""
        };
        text.push_str(&format!(
            "  {name}\t<{}>{marker}\n",
            type_name(root, &child)
        ));
        let description = describe(root, &child);
        if description.is_empty() {
            text.push_str("    <no description>\n");
        } else {
            text.push_str(&indent(&description, 4));
        }
        text.push('\n');
    }
    Ok(text)
}

/// The field tree below `node`, `depth` levels indented.
fn tree(root: &Value, node: &Value, depth: usize, text: &mut String) {
    let required = required(node);
    for (name, child) in properties(root, node) {
        let child = resolve(root, &child);
        let marker = if required.contains(&name.as_str()) {
            " -required-"
        } else {
            ""
        };
        text.push_str(&format!(
            "{:width$}{name}\t<{}>{marker}\n",
            "",
            type_name(root, &child),
            width = depth * 2
        ));
        // A schema that refers back to itself would recurse forever; ours is finite, and
        // this bound keeps a future recursive type from hanging the command.
        if depth < 32 {
            tree(root, &descend(root, &child), depth + 1, text);
        }
    }
}

/// The node with `$ref` followed, `allOf` merged and a nullable `anyOf`/`oneOf` reduced to
/// its one non-null alternative (marked `nullable`).
fn resolve(root: &Value, node: &Value) -> Value {
    resolve_bounded(root, node, 0)
}

fn resolve_bounded(root: &Value, node: &Value, depth: usize) -> Value {
    let Value::Object(object) = node else {
        return node.clone();
    };
    if depth > 32 {
        return node.clone();
    }
    let mut merged = object.clone();
    if let Some(Value::String(reference)) = merged.remove("$ref") {
        if let Some(Value::Object(target)) = lookup(root, &reference) {
            let target = resolve_bounded(root, &Value::Object(target.clone()), depth + 1);
            merge_into(&mut merged, &target);
        }
    }
    if let Some(Value::Array(parts)) = merged.remove("allOf") {
        for part in parts {
            let part = resolve_bounded(root, &part, depth + 1);
            merge_into(&mut merged, &part);
        }
    }
    for keyword in ["anyOf", "oneOf"] {
        let Some(Value::Array(alternatives)) = merged.get(keyword) else {
            continue;
        };
        let is_null = |a: &Value| a.get("type") == Some(&Value::from("null"));
        let others: Vec<&Value> = alternatives.iter().filter(|a| !is_null(a)).collect();
        let nullable = others.len() < alternatives.len();
        if let [only] = others.as_slice() {
            let only = resolve_bounded(root, only, depth + 1);
            merged.remove(keyword);
            merge_into(&mut merged, &only);
            if nullable {
                merged.insert("nullable".into(), Value::Bool(true));
            }
        } else if nullable {
            merged.insert("nullable".into(), Value::Bool(true));
        }
    }
    Value::Object(merged)
}

/// Adds what `from` says to `into`, keeping what `into` says already (its description beats
/// the referenced type's) and joining the properties.
fn merge_into(into: &mut Map<String, Value>, from: &Value) {
    let Value::Object(from) = from else { return };
    for (key, value) in from {
        match (key.as_str(), into.get_mut(key)) {
            ("properties", Some(Value::Object(mine))) => {
                if let Value::Object(theirs) = value {
                    for (name, schema) in theirs {
                        mine.entry(name.clone()).or_insert_with(|| schema.clone());
                    }
                }
            }
            ("required", Some(Value::Array(mine))) => {
                if let Value::Array(theirs) = value {
                    for name in theirs {
                        if !mine.contains(name) {
                            mine.push(name.clone());
                        }
                    }
                }
            }
            (_, Some(_)) => {}
            (_, None) => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A local `$ref` (`#/definitions/X`, `#/$defs/X`, `#/components/schemas/X`).
fn lookup<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

/// Where the fields of `node` are: itself, or for an array its items, for a map its values.
fn descend(root: &Value, node: &Value) -> Value {
    let mut node = resolve(root, node);
    for _ in 0..8 {
        let next = if let Some(items) = node.get("items") {
            items.clone()
        } else if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
            if node.get("properties").is_some() {
                break;
            }
            values.clone()
        } else {
            break;
        };
        node = resolve(root, &next);
    }
    node
}

/// The properties of `node` (resolved), by name in order.
fn properties(root: &Value, node: &Value) -> Vec<(String, Value)> {
    let node = resolve(root, node);
    match node.get("properties") {
        Some(Value::Object(properties)) => {
            let mut list: Vec<(String, Value)> = properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            list.sort_by(|(a, _), (b, _)| a.cmp(b));
            list
        }
        _ => Vec::new(),
    }
}

fn required(node: &Value) -> Vec<&str> {
    match node.get("required") {
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The type as explain prints it: `string`, `integer`, `boolean`, `number`, `Object`,
/// `[]T`, `map[string]T`, `IntOrString`.
pub(crate) fn type_name(root: &Value, node: &Value) -> String {
    let node = resolve(root, node);
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "IntOrString".into();
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        ["array"] => match node.get("items") {
            Some(items) => format!("[]{}", type_name(root, items)),
            None => "[]Object".into(),
        },
        ["object"] | [] => {
            let has_properties =
                matches!(node.get("properties"), Some(Value::Object(p)) if !p.is_empty());
            match node.get("additionalProperties") {
                Some(values @ Value::Object(_)) if !has_properties => {
                    format!("map[string]{}", type_name(root, values))
                }
                _ if types.is_empty() && !has_properties => match alternatives(&node) {
                    Some(names) => names
                        .iter()
                        .map(|a| type_name(root, a))
                        .collect::<Vec<_>>()
                        .join("|"),
                    None => "Object".into(),
                },
                _ => "Object".into(),
            }
        }
        [one] => (*one).to_owned(),
        several => several.join("|"),
    }
}

fn alternatives(node: &Value) -> Option<&Vec<Value>> {
    ["anyOf", "oneOf"]
        .into_iter()
        .find_map(|k| node.get(k).and_then(Value::as_array))
}

/// The description of a field, with what the schema adds to it: the allowed values of an
/// enum, the default, and that null is allowed.
fn describe(root: &Value, node: &Value) -> String {
    let node = resolve(root, node);
    let mut text = node
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut extra = Vec::new();
    if let Some(Value::Array(values)) = node.get("enum") {
        let values: Vec<String> = values.iter().map(plain).collect();
        extra.push(format!("Allowed values: {}", values.join(", ")));
    }
    if let Some(default) = node.get("default") {
        extra.push(format!("Default: {}", plain(default)));
    }
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        extra.push("A number or a string.".into());
    }
    if node.get("nullable") == Some(&Value::Bool(true)) {
        extra.push("May be null (the same as absent).".into());
    }
    if !extra.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&extra.join("\n"));
    }
    text
}

/// A JSON value as written in YAML: strings bare, others as JSON.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|line| {
            if line.is_empty() {
                "\n".to_owned()
            } else {
                format!("{:by$}{line}\n", "")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn explain_game(fields: &[&str], recursive: bool) -> Result<String, CliError> {
        let schema = KindSchema::of(Kind::Game).unwrap();
        render(&schema, "gameruntime", fields, recursive)
    }

    /// Every property path of a schema that has a description, with that description.
    fn described_paths(
        node: &Value,
        path: &mut Vec<String>,
        found: &mut Vec<(Vec<String>, String)>,
    ) {
        let node = descend(node, node);
        let Some(Value::Object(properties)) = node.get("properties") else {
            return;
        };
        for (name, child) in properties {
            path.push(name.clone());
            if let Some(description) = child.get("description").and_then(Value::as_str) {
                found.push((path.clone(), description.to_owned()));
            }
            described_paths(child, path, found);
            path.pop();
        }
    }

    #[test]
    fn every_described_field_of_both_kinds_is_reachable_and_printed() {
        for (kind, word) in [(Kind::Game, "gameruntime"), (Kind::Budget, "budget")] {
            let schema = KindSchema::of(kind).unwrap();
            let mut found = Vec::new();
            described_paths(&schema.root, &mut Vec::new(), &mut found);
            assert!(found.len() > 10 || kind == Kind::Budget, "{found:?}");
            assert!(!found.is_empty());
            for (path, description) in found {
                let fields: Vec<&str> = path.iter().map(String::as_str).collect();
                let text = render(&schema, word, &fields, false)
                    .unwrap_or_else(|e| panic!("{word}.{}: {e}", path.join(".")));
                let first = description.lines().next().unwrap_or_default().trim();
                assert!(
                    text.contains(first),
                    "{word}.{} does not print {first:?}:\n{text}",
                    path.join(".")
                );
                // The parent lists it among its fields, with its description.
                let parent = render(&schema, word, &fields[..fields.len() - 1], false).unwrap();
                let name = fields.last().unwrap();
                assert!(parent.contains(&format!("  {name}\t<")), "{parent}");
                assert!(parent.contains(first), "{parent}");
            }
        }
    }

    #[test]
    fn ports_are_a_list_of_objects_with_container_and_host_port() {
        let text = explain_game(&["spec", "ports"], false).unwrap();
        assert!(
            text.starts_with("KIND:     GameRuntime\nVERSION:  rtmanager.dev/v1alpha1\n"),
            "{text}"
        );
        assert!(text.contains("FIELD:    ports <[]Object>"), "{text}");
        assert!(text.contains("\nFIELDS:\n"), "{text}");
        assert!(
            text.contains("  containerPort\t<integer> -required-"),
            "{text}"
        );
        assert!(text.contains("  hostPort\t<IntOrString>"), "{text}");
        // Through the array into one port.
        let one = explain_game(&["spec", "ports", "containerPort"], false).unwrap();
        assert!(one.contains("FIELD:    containerPort <integer>"), "{one}");
    }

    #[test]
    fn enums_list_their_values() {
        let text = explain_game(&["spec", "imagePullPolicy"], false).unwrap();
        assert!(
            text.contains("Allowed values: IfNotPresent, Always, Never"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_field_is_a_usage_error_naming_the_fields_there() {
        let error = explain_game(&["spec", "nope"], false).unwrap_err();
        assert!(matches!(error, CliError::Usage { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("gameruntime.spec has no field \"nope\""),
            "{message}"
        );
        assert!(message.contains("image"), "{message}");
        assert!(message.contains("ports"), "{message}");
    }

    #[test]
    fn recursive_prints_the_tree_without_descriptions() {
        let text = explain_game(&["spec"], true).unwrap();
        assert!(
            text.contains("\n  ports\t<[]Object>\n    containerPort\t<integer> -required-\n"),
            "{text}"
        );
        assert!(!text.contains("The container port"), "{text}");
        let description = explain_game(&["spec"], false).unwrap();
        assert!(description.len() > text.len() / 4);
    }

    #[test]
    fn metadata_says_what_it_holds() {
        let text = explain_game(&["metadata"], false).unwrap();
        assert!(text.contains("`labels` and `annotations`"), "{text}");
    }

    #[test]
    fn nodes_have_no_schema() {
        let error = KindSchema::of(Kind::Node).unwrap_err();
        assert!(matches!(error, CliError::Usage { .. }));
        assert!(error.to_string().contains("rtctl describe node"), "{error}");
    }

    #[test]
    fn refs_all_of_nullable_maps_and_int_or_string_are_understood() {
        let root = json!({
            "definitions": {
                "Port": {"type": "object", "description": "A port.",
                         "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            },
            "type": "object",
            "properties": {
                "port": {"$ref": "#/definitions/Port"},
                "maybe": {"anyOf": [{"$ref": "#/definitions/Port"}, {"type": "null"}]},
                "both": {"allOf": [{"$ref": "#/definitions/Port"},
                                   {"properties": {"m": {"type": "string"}}}]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "limit": {"x-kubernetes-int-or-string": true},
                "list": {"type": "array", "items": {"$ref": "#/definitions/Port"}},
            },
        });
        let schema = KindSchema {
            kind: "T".into(),
            version: "v".into(),
            root,
        };
        let top = render(&schema, "t", &[], false).unwrap();
        assert!(top.contains("  port\t<Object>\n    A port."), "{top}");
        assert!(top.contains("  maybe\t<Object>"), "{top}");
        assert!(top.contains("May be null"), "{top}");
        assert!(top.contains("  labels\t<map[string]string>"), "{top}");
        assert!(top.contains("  limit\t<IntOrString>"), "{top}");
        assert!(top.contains("  list\t<[]Object>"), "{top}");
        let both = render(&schema, "t", &["both"], false).unwrap();
        assert!(
            both.contains("  m\t<string>") && both.contains("  n\t<integer> -required-"),
            "{both}"
        );
        let list = render(&schema, "t", &["list", "n"], false).unwrap();
        assert!(list.contains("FIELD:    n <integer>"), "{list}");
    }
}
