//! The CustomResourceDefinitions of `GameRuntime` and `GameDisruptionBudget`, their schemas
//! generated from the Rust types so the two cannot drift (tests compare them with the
//! committed `crds/gameruntime.yaml` and `crds/gamedisruptionbudget.yaml`).
//!
//! schemars gives an OpenAPI 3 schema; Kubernetes wants a *structural* one, so the output is
//! post-processed: everything inlined, every node typed, enums as plain string enums, no
//! `additionalProperties: false` next to `properties` (Kubernetes prunes unknown fields
//! instead), and `metadata` left to the API server.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::budget::BUDGET_KIND;
use super::{API_VERSION, GameDisruptionBudget, GameRuntime, KIND};

/// The first line of each committed CRD.
const HEADER: &str =
    "# Generated from the Rust types by `rtctl crd`; a test fails when it drifts.\n";

/// Formats Kubernetes validates or documents; schemars' `uint16`, `uint32`... are not among
/// them (the `minimum: 0` it emits next to them carries the meaning).
const KUBERNETES_FORMATS: [&str; 8] = [
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "password",
];

/// What differs between the CRDs of the two kinds.
struct Definition {
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    /// Whether the kind has a status subresource (a budget has no status).
    status: bool,
    columns: Value,
    schema: Value,
}

/// The CRD of `GameRuntime` as JSON.
pub(crate) fn custom_resource_definition() -> Value {
    definition(Definition {
        kind: KIND,
        plural: "gameruntimes",
        singular: "gameruntime",
        short_names: &["gr"],
        status: true,
        columns: json!([
            { "name": "State", "type": "string", "jsonPath": ".spec.state" },
            { "name": "Phase", "type": "string", "jsonPath": ".status.phase" },
            { "name": "Restarts", "type": "integer", "jsonPath": ".status.restartCount" },
            { "name": "Image", "type": "string", "jsonPath": ".spec.image" },
            { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
        ]),
        schema: open_api_schema::<GameRuntime>(),
    })
}

/// The CRD of `GameDisruptionBudget` as JSON.
pub(crate) fn budget_custom_resource_definition() -> Value {
    definition(Definition {
        kind: BUDGET_KIND,
        plural: "gamedisruptionbudgets",
        singular: "gamedisruptionbudget",
        short_names: &["gdb"],
        status: false,
        columns: json!([
            { "name": "Max-Unavailable", "type": "string", "jsonPath": ".spec.maxUnavailable" },
            { "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" },
        ]),
        schema: open_api_schema::<GameDisruptionBudget>(),
    })
}

/// A CRD: `apiextensions.k8s.io/v1`, cluster-scoped, one served and stored version (with a
/// status subresource when the kind has one) and the columns `kubectl get` would print.
fn definition(d: Definition) -> Value {
    let (group, version) = API_VERSION.split_once('/').unwrap_or((API_VERSION, ""));
    let mut served = json!({
        "name": version,
        "served": true,
        "storage": true,
        "additionalPrinterColumns": d.columns,
        "schema": { "openAPIV3Schema": d.schema },
    });
    if d.status {
        served["subresources"] = json!({ "status": {} });
    }
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{}.{group}", d.plural) },
        "spec": {
            "group": group,
            "names": {
                "kind": d.kind,
                "listKind": format!("{}List", d.kind),
                "plural": d.plural,
                "singular": d.singular,
                "shortNames": d.short_names,
            },
            "scope": "Cluster",
            "versions": [served],
        },
    });
    sorted(crd)
}

fn to_yaml(crd: &Value) -> String {
    let yaml = serde_yaml::to_string(crd).expect("a JSON value always serializes to YAML");
    format!("{HEADER}{yaml}")
}

/// The GameRuntime CRD as YAML, with the header line saying where it comes from.
pub fn crd_yaml() -> String {
    to_yaml(&custom_resource_definition())
}

/// The GameDisruptionBudget CRD as YAML, with the header line.
pub fn budget_crd_yaml() -> String {
    to_yaml(&budget_custom_resource_definition())
}

/// The structural schema of a document of type `T`.
fn open_api_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    if let Value::Object(root) = &mut schema {
        root.remove("title");
        root.remove("$schema");
        root.remove("components");
        if let Some(Value::Object(properties)) = root.get_mut("properties") {
            // The API server owns metadata's schema; a CRD may only say it is an object.
            properties.insert("metadata".to_owned(), json!({ "type": "object" }));
        }
    }
    make_structural(&mut schema);
    schema
}

/// Rewrites one schema node and its children into the structural form.
fn make_structural(node: &mut Value) {
    let Value::Object(object) = node else { return };
    merge_string_enum_alternatives(object);
    merge_int_or_string(object);
    if object.contains_key("properties")
        && object.get("additionalProperties") == Some(&Value::Bool(false))
    {
        object.remove("additionalProperties");
    }
    if object
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !KUBERNETES_FORMATS.contains(&f))
    {
        object.remove("format");
    }
    // Kubernetes rejects `default: null`; absent already means "not set".
    if object.get("default") == Some(&Value::Null) {
        object.remove("default");
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        properties.values_mut().for_each(make_structural);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = object.get_mut(key) {
            make_structural(child);
        }
    }
}

/// schemars describes an enum whose variants have doc comments as `oneOf` one-value string
/// enums (to keep each description); Kubernetes wants one `type: string` with an `enum`.
fn merge_string_enum_alternatives(object: &mut Map<String, Value>) {
    for keyword in ["oneOf", "anyOf"] {
        let Some(Value::Array(alternatives)) = object.get(keyword) else {
            continue;
        };
        let values: Option<Vec<Value>> = alternatives
            .iter()
            .map(|alternative| {
                let is_string = alternative.get("type") == Some(&json!("string"));
                match alternative.get("enum") {
                    Some(Value::Array(values)) if is_string => Some(values.clone()),
                    _ => None,
                }
            })
            .collect::<Option<Vec<Vec<Value>>>>()
            .map(|lists| lists.into_iter().flatten().collect());
        if let Some(values) = values {
            object.remove(keyword);
            object.insert("type".to_owned(), json!("string"));
            object.insert("enum".to_owned(), Value::Array(values));
        }
    }
}

/// A value that is a number or a string (`maxUnavailable: 2` or `"20%"`): schemars says
/// `anyOf` integer, string; Kubernetes' structural form is `x-kubernetes-int-or-string`.
fn merge_int_or_string(object: &mut Map<String, Value>) {
    let Some(Value::Array(alternatives)) = object.get("anyOf") else {
        return;
    };
    let mut types: Vec<&str> = alternatives
        .iter()
        .filter_map(|a| a.get("type").and_then(Value::as_str))
        .collect();
    types.sort_unstable();
    if alternatives.len() == 2 && types == ["integer", "string"] {
        object.remove("anyOf");
        object.insert("x-kubernetes-int-or-string".to_owned(), Value::Bool(true));
    }
}

/// The same value with every object's keys sorted, so the output does not depend on whether
/// some crate in the build turned on serde_json's `preserve_order`.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(String, Value)> = object.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::game;
    use super::super::{
        Condition, ConditionStatus, GameRuntimeStatus, LastOperation, OpKind, Outcome, Timestamp,
    };
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/gameruntime.yaml");
    const COMMITTED_BUDGET: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crds/gamedisruptionbudget.yaml"
    );

    #[test]
    fn committed_budget_crd_matches_the_types() {
        let generated = budget_crd_yaml();
        if std::env::var("RTM_BLESS").as_deref() == Ok("1") {
            std::fs::write(COMMITTED_BUDGET, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED_BUDGET).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/gamedisruptionbudget.yaml differs from the schema of the Rust types; \
             regenerate it with `RTM_BLESS=1 cargo test -p rtm-core --lib \
             committed_budget_crd_matches_the_types` and commit the result"
        );
    }

    #[test]
    fn the_budget_schema_is_structural() {
        let crd = budget_custom_resource_definition();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        assert_structural(schema, "");
        assert!(crd["spec"]["versions"][0].get("subresources").is_none());
        assert_eq!(
            crd["metadata"]["name"],
            "gamedisruptionbudgets.rtmanager.dev"
        );
    }

    #[test]
    fn committed_crd_matches_the_types() {
        let generated = crd_yaml();
        if std::env::var("RTM_BLESS").as_deref() == Ok("1") {
            std::fs::write(COMMITTED, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "crds/gameruntime.yaml differs from the schema of the Rust types; regenerate it \
             with `RTM_BLESS=1 cargo test -p rtm-core --lib committed_crd_matches_the_types` (or \
             `rtctl crd > crds/gameruntime.yaml`) and commit the result"
        );
    }

    fn schema() -> Value {
        custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Kubernetes' structural-schema rules, as far as our types can break them.
    fn assert_structural(node: &Value, path: &str) {
        let object = node
            .as_object()
            .unwrap_or_else(|| panic!("{path}: not an object: {node}"));
        for forbidden in [
            "$ref",
            "$defs",
            "definitions",
            "$schema",
            "oneOf",
            "anyOf",
            "allOf",
            "const",
        ] {
            assert!(
                !object.contains_key(forbidden),
                "{path}: has {forbidden}: {node}"
            );
        }
        assert!(
            object.get("type").is_some_and(Value::is_string)
                || object.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
            "{path}: no type: {node}"
        );
        if object.contains_key("properties") {
            assert!(
                !object.contains_key("additionalProperties"),
                "{path}: both properties and additionalProperties"
            );
        }
        if let Some(Value::Object(properties)) = object.get("properties") {
            for (name, child) in properties {
                assert_structural(child, &format!("{path}.{name}"));
            }
        }
        if let Some(items) = object.get("items") {
            assert_structural(items, &format!("{path}[]"));
        }
        if let Some(values @ Value::Object(_)) = object.get("additionalProperties") {
            assert_structural(values, &format!("{path}{{}}"));
        }
    }

    #[test]
    fn schema_is_structural() {
        assert_structural(&schema(), "");
    }

    #[test]
    fn schema_has_the_documented_shape() {
        let schema = schema();
        let properties = &schema["properties"];
        assert_eq!(properties["apiVersion"]["type"], "string");
        assert_eq!(properties["kind"]["type"], "string");
        assert_eq!(properties["metadata"], json!({ "type": "object" }));
        assert_eq!(properties["spec"]["required"], json!(["image"]));
        assert_eq!(
            properties["spec"]["properties"]["state"]["enum"],
            json!(["Running", "Stopped"])
        );
        assert_eq!(
            properties["spec"]["properties"]["stopTimeout"]["default"],
            "30s"
        );
        assert_eq!(properties["status"]["type"], "object");
        let status = &properties["status"]["properties"];
        assert_eq!(status["phase"]["enum"].as_array().unwrap().len(), 8);
        assert_eq!(status["phaseSince"]["format"], "date-time");
        assert_eq!(
            status["lastOperation"]["properties"]["opKind"]["enum"][0],
            "start"
        );
        assert_eq!(
            properties["spec"]["properties"]["resources"]["properties"]["memory"]["pattern"],
            r"^[0-9]+(\.[0-9]+)?(k|M|G|Ki|Mi|Gi)?$"
        );
        let crd = custom_resource_definition();
        assert_eq!(crd["metadata"]["name"], "gameruntimes.rtmanager.dev");
        assert_eq!(crd["spec"]["scope"], "Cluster");
        assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
        assert_eq!(
            crd["spec"]["versions"][0]["subresources"],
            json!({ "status": {} })
        );
        assert!(crd_yaml().starts_with(HEADER));
    }

    /// Walks a serialized document alongside the schema: Kubernetes would prune any field the
    /// schema does not list, and reject a value of another type.
    fn assert_schema_covers(value: &Value, schema: &Value, path: &str) {
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            assert!(value.is_i64() || value.is_u64() || value.is_string(), "{path}");
            return;
        }
        let expected = schema["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: untyped schema"));
        let actual = match value {
            Value::Null => return,
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        assert_eq!(actual, expected, "{path}");
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            assert!(
                allowed.contains(value),
                "{path}: {value} not in {allowed:?}"
            );
        }
        match value {
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    assert_schema_covers(item, &schema["items"], &format!("{path}[{index}]"));
                }
            }
            Value::Object(fields) if path != ".metadata" => {
                for (name, field) in fields {
                    let child = schema["properties"]
                        .get(name)
                        .or_else(|| schema.get("additionalProperties"))
                        .unwrap_or_else(|| panic!("{path}.{name} is not in the schema"));
                    assert_schema_covers(field, child, &format!("{path}.{name}"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn schema_covers_every_field_a_full_document_serializes() {
        let at = Some(Timestamp::from_unix_seconds(1_714_564_800));
        let mut doc = game("g1")
            .label("tier", "ranked")
            .command(&["/bin/engine"])
            .args(&["-v"])
            .env("SEED", "42")
            .port_with(
                7000,
                Some(17000),
                super::super::Protocol::Udp,
                Some("127.0.0.1"),
            )
            .memory("64Mi")
            .cpus("0.5")
            .restart_token("r1")
            .node("node-a")
            .build();
        doc.apply_defaults();
        doc.metadata.generation = Some(1);
        doc.status = Some(GameRuntimeStatus {
            observed_generation: Some(1),
            container_id: Some("c".into()),
            image_ref: Some("i".into()),
            hostname: Some("g1".into()),
            node: Some("node-a".into()),
            restart_count: 1,
            observed_restart_token: Some("r1".into()),
            last_exit_code: Some(137),
            oom_killed: true,
            message: Some("m".into()),
            phase_since: at,
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "R".into(),
                message: "M".into(),
                last_transition_time: at,
            }],
            last_operation: Some(LastOperation {
                op_kind: OpKind::Restart,
                outcome: Outcome::Failure,
                error_code: Some("start_failed".into()),
                error_message: Some("e".into()),
                source_ref: Some("REQ-1".into()),
                finished_at: at,
            }),
            ..GameRuntimeStatus::default()
        });
        assert_schema_covers(&serde_json::to_value(&doc).unwrap(), &schema(), "");
    }
}
