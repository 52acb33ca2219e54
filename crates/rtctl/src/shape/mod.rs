//! Output shaping of `get`, for every kind: what `-o` asks (a built-in format, or
//! `jsonpath=…`, `jsonpath-file=…`, `custom-columns=…`, `custom-columns-file=…`), the order
//! of `--sort-by=<jsonpath>`, and the label columns of `-L key,…` and `--show-labels`.
//!
//! The shaped formats work on the objects as their JSON output has them: a template is
//! evaluated against the list (`{"kind": "GameRuntimeList", "items": […]}`), or against the
//! object itself when exactly one was asked for by name; a custom column against each
//! object.

pub(crate) mod jsonpath;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

pub(crate) use self::jsonpath::Template;
use crate::error::CliError;
use crate::get::OutputFormat;
use crate::output::Table;

/// The longest template or columns file read (a template is a line, not a document).
pub(crate) const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// What `-o` asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// A built-in format: table, wide, yaml, json, name.
    Builtin(OutputFormat),
    /// `jsonpath=TEMPLATE` (or `jsonpath-file=FILE`).
    JsonPath(Template),
    /// `custom-columns=HEADER:PATH,…` (or `custom-columns-file=FILE`).
    Columns(Vec<Column>),
}

impl Default for Output {
    fn default() -> Self {
        Output::Builtin(OutputFormat::Table)
    }
}

/// The `-o` values, for help texts and errors.
pub(crate) const OUTPUT_HELP: &str = "table, wide, yaml, json, name, jsonpath=TEMPLATE, \
                                      jsonpath-file=FILE, custom-columns=HEADER:PATH,…, \
                                      custom-columns-file=FILE";

impl Output {
    /// The built-in format, or `None` for a shaped one.
    pub(crate) fn builtin(&self) -> Option<OutputFormat> {
        match self {
            Output::Builtin(format) => Some(*format),
            _ => None,
        }
    }

    /// Whether the output is a document format a script reads whole (json, yaml, jsonpath):
    /// what cannot be printed in it is left out and said on stderr.
    pub(crate) fn is_documents(&self) -> bool {
        matches!(
            self,
            Output::Builtin(OutputFormat::Json | OutputFormat::Yaml) | Output::JsonPath(_)
        )
    }

    /// Whether it is the table or wide table (where `-L` and `--show-labels` add columns).
    pub(crate) fn is_table(&self) -> bool {
        matches!(
            self,
            Output::Builtin(OutputFormat::Table | OutputFormat::Wide)
        )
    }
}

/// Parses an `-o` value (clap's value parser).
pub(crate) fn parse_output(text: &str) -> Result<Output, String> {
    let builtin = match text {
        "table" => Some(OutputFormat::Table),
        "wide" => Some(OutputFormat::Wide),
        "yaml" => Some(OutputFormat::Yaml),
        "json" => Some(OutputFormat::Json),
        "name" => Some(OutputFormat::Name),
        _ => None,
    };
    if let Some(format) = builtin {
        return Ok(Output::Builtin(format));
    }
    let read =
        |path: &str| crate::input::read_small(std::path::Path::new(path), MAX_TEMPLATE_BYTES);
    let (kind, value) = text
        .split_once('=')
        .ok_or_else(|| format!("unknown output format {text:?}; the formats are {OUTPUT_HELP}"))?;
    match kind {
        "jsonpath" => Template::parse(value)
            .map(Output::JsonPath)
            .map_err(|e| e.0),
        "jsonpath-file" => Template::parse(read(value)?.trim_end_matches('\n'))
            .map(Output::JsonPath)
            .map_err(|e| e.0),
        "custom-columns" => parse_columns(value).map(Output::Columns),
        "custom-columns-file" => parse_columns_file(&read(value)?).map(Output::Columns),
        _ => Err(format!(
            "unknown output format {kind:?}; the formats are {OUTPUT_HELP}"
        )),
    }
}

/// One custom column: its header and the path of its values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub(crate) header: String,
    pub(crate) path: Template,
}

fn parse_column(header: &str, path: &str) -> Result<Column, String> {
    if header.is_empty() || path.trim().is_empty() {
        return Err(format!(
            "a custom column is HEADER:PATH (e.g. NAME:.metadata.name), not {header:?}:{path:?}"
        ));
    }
    Ok(Column {
        header: header.to_owned(),
        path: Template::parse_path_or_template(path).map_err(|e| e.0)?,
    })
}

/// `NAME:.metadata.name,PHASE:.status.phase`.
fn parse_columns(text: &str) -> Result<Vec<Column>, String> {
    if text.trim().is_empty() {
        return Err("custom-columns= needs HEADER:PATH,… (e.g. NAME:.metadata.name)".into());
    }
    jsonpath::split_outside(text, ',')
        .into_iter()
        .map(|spec| {
            let (header, path) = spec.split_once(':').ok_or_else(|| {
                format!("a custom column is HEADER:PATH (e.g. NAME:.metadata.name), not {spec:?}")
            })?;
            parse_column(header.trim(), path)
        })
        .collect()
}

/// A columns file: the headers on the first line, their paths on the second, separated by
/// blanks.
fn parse_columns_file(text: &str) -> Result<Vec<Column>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let (Some(headers), Some(paths)) = (lines.next(), lines.next()) else {
        return Err("a custom-columns file has two lines: the headers, then their paths".into());
    };
    let headers: Vec<&str> = headers.split_whitespace().collect();
    let paths: Vec<&str> = paths.split_whitespace().collect();
    if headers.len() != paths.len() {
        return Err(format!(
            "the custom-columns file has {} headers and {} paths",
            headers.len(),
            paths.len()
        ));
    }
    headers
        .iter()
        .zip(&paths)
        .map(|(h, p)| parse_column(h, p))
        .collect()
}

/// The cell of a custom column or a label for a missing value.
pub(crate) const NONE: &str = "<none>";

/// The cells of the custom columns for one object.
pub(crate) fn column_cells(columns: &[Column], item: &Value) -> Vec<String> {
    columns
        .iter()
        .map(|column| {
            let values = column.path.values(item);
            let texts: Vec<String> = values
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| jsonpath::text_of(v))
                .collect();
            if texts.is_empty() {
                NONE.to_owned()
            } else {
                texts.join(",")
            }
        })
        .collect()
}

/// A table for custom columns.
pub(crate) fn column_table(columns: &[Column]) -> Table {
    Table::with_headers(columns.iter().map(|c| c.header.clone()).collect())
}

/// Prints objects (as JSON values) in a shaped format: a jsonpath template over the list
/// (`list_kind`), or over the object when `single`; custom columns, a row each.
pub(crate) fn print_shaped(
    output: &Output,
    list_kind: &str,
    items: &[Value],
    single: bool,
    no_headers: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match output {
        Output::JsonPath(template) => {
            let text = match (single, items) {
                (true, [one]) => template.render(one),
                _ => template.render(&list_value(list_kind, items)),
            };
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        Output::Columns(columns) => {
            let mut table = column_table(columns);
            for item in items {
                table.row(column_cells(columns, item));
            }
            out.write_all(table.render_as(no_headers).as_bytes())?;
        }
        Output::Builtin(_) => {}
    }
    Ok(())
}

/// The list object the templates and `-o json` see.
pub(crate) fn list_value(list_kind: &str, items: &[Value]) -> Value {
    serde_json::json!({
        "apiVersion": rtm_core::model::API_VERSION,
        "kind": list_kind,
        "items": items,
    })
}

/// A watch line's object with `--output-watch-events`: `{"type": EVENT, "object": …}`, the
/// type first (as a struct: JSON maps here sort their keys).
#[derive(Debug, serde::Serialize)]
pub(crate) struct WatchEvent<'e> {
    #[serde(rename = "type")]
    pub(crate) event: &'e str,
    pub(crate) object: Value,
}

impl WatchEvent<'_> {
    /// As a value, for a template.
    pub(crate) fn to_value(&self) -> Value {
        serde_json::json!({ "type": self.event, "object": self.object })
    }

    /// As one compact JSON line's text.
    pub(crate) fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `--field-selector`: `path=value`, `path==value`, `path!=value`, comma-separated, all must
/// hold (`metadata.name=arena-1,status.phase!=Running`). A path is a dotted field path of the
/// object as JSON; a field that is absent compares as the empty string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldSelector(Vec<(Template, bool, String)>);

impl FieldSelector {
    /// Parses a field selector (clap's value parser).
    pub(crate) fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (path, equal, value) = if let Some((path, value)) = part.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) =
                part.split_once("==").or_else(|| part.split_once('='))
            {
                (path, true, value)
            } else {
                return Err(format!(
                    "invalid field selector {text:?} at {part:?}: write PATH=VALUE, PATH==VALUE \
                     or PATH!=VALUE, e.g. status.phase=Running,metadata.name!=arena-1"
                ));
            };
            let path = path.trim();
            if path.is_empty()
                || !path
                    .split('.')
                    .all(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(format!(
                    "invalid field selector {text:?}: {path:?} is not a field path like \
                     status.phase"
                ));
            }
            let template =
                Template::parse_path_or_template(&format!(".{path}")).map_err(|e| e.0)?;
            requirements.push((template, equal, value.trim().to_owned()));
        }
        Ok(FieldSelector(requirements))
    }

    /// Whether `object` (as JSON) has every field as asked.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = path.render(object);
            (found == *value) == *equal
        })
    }
}

/// Parses `--sort-by` (a path, braces optional).
pub(crate) fn parse_sort_by(text: &str) -> Result<Template, String> {
    Template::parse_path_or_template(text).map_err(|e| e.0)
}

/// Orders two objects by the value `sort_by` finds in each: numbers by value, strings
/// lexically, an object with no value first; equal ones keep their order (the sort is
/// stable).
pub(crate) fn compare_by(sort_by: &Template, a: &Value, b: &Value) -> Ordering {
    let key = |v: &Value| {
        sort_by
            .values(v)
            .into_iter()
            .find(|v| !v.is_null())
            .cloned()
    };
    match (key(a), key(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(&y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Sorts `items` by `sort_by` over the JSON of each (`json` makes it).
pub(crate) fn sort_by_path<T>(items: &mut [T], sort_by: &Template, json: impl Fn(&T) -> Value) {
    let mut keyed: Vec<(Value, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (json(item), i))
        .collect();
    keyed.sort_by(|(a, _), (b, _)| compare_by(sort_by, a, b));
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    apply_order(items, &order);
}

/// Puts `items` in `order` (a permutation of their indexes).
fn apply_order<T>(items: &mut [T], order: &[usize]) {
    let mut position: Vec<usize> = vec![0; order.len()];
    for (to, from) in order.iter().enumerate() {
        position[*from] = to;
    }
    for i in 0..items.len() {
        while position[i] != i {
            let target = position[i];
            items.swap(i, target);
            position.swap(i, target);
        }
    }
}

/// The label columns of `-L` and `--show-labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelColumns {
    /// `-L key,…`: a column per key, headed by the key in capitals, holding its value.
    pub(crate) keys: Vec<String>,
    /// `--show-labels`: a LABELS column with every label, `k=v,…`.
    pub(crate) all: bool,
}

impl LabelColumns {
    /// From the flags (`-L` may be given several times, each a comma-separated list).
    pub(crate) fn new(label_columns: &[String], show_labels: bool) -> LabelColumns {
        LabelColumns {
            keys: label_columns
                .iter()
                .flat_map(|keys| keys.split(','))
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            all: show_labels,
        }
    }

    /// The headers the columns add.
    pub(crate) fn headers(&self) -> Vec<String> {
        let mut headers: Vec<String> = self
            .keys
            .iter()
            .map(|key| key.rsplit('/').next().unwrap_or(key).to_uppercase())
            .collect();
        if self.all {
            headers.push("LABELS".to_owned());
        }
        headers
    }

    /// The cells the columns add for an object with `labels` (`None`: it has none to read).
    pub(crate) fn cells(&self, labels: Option<&BTreeMap<String, String>>) -> Vec<String> {
        let mut cells: Vec<String> = self
            .keys
            .iter()
            .map(|key| labels.and_then(|l| l.get(key)).cloned().unwrap_or_default())
            .collect();
        if self.all {
            cells.push(match labels {
                Some(labels) if !labels.is_empty() => labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => NONE.to_owned(),
            });
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_output_value_parses_or_names_the_formats() {
        assert_eq!(
            parse_output("wide").unwrap(),
            Output::Builtin(OutputFormat::Wide)
        );
        assert!(matches!(
            parse_output("jsonpath={.items[*].metadata.name}"),
            Ok(Output::JsonPath(_))
        ));
        let Ok(Output::Columns(columns)) =
            parse_output("custom-columns=NAME:.metadata.name,PORTS:.spec.ports[*].containerPort")
        else {
            panic!("custom columns");
        };
        assert_eq!(
            columns
                .iter()
                .map(|c| c.header.as_str())
                .collect::<Vec<_>>(),
            ["NAME", "PORTS"]
        );
        for bad in [
            "yml",
            "go-template={{.x}}",
            "custom-columns=NAME",
            "custom-columns=",
            "jsonpath={.x",
        ] {
            let error = parse_output(bad).unwrap_err();
            assert!(!error.is_empty(), "{bad}");
        }
        assert!(
            parse_output("yml")
                .unwrap_err()
                .contains("custom-columns=HEADER:PATH")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cols");
        std::fs::write(&file, "NAME   PHASE\n.metadata.name   {.status.phase}\n").unwrap();
        let Ok(Output::Columns(columns)) =
            parse_output(&format!("custom-columns-file={}", file.display()))
        else {
            panic!("columns file");
        };
        assert_eq!(columns.len(), 2);
        let missing = parse_output("jsonpath-file=/nonexistent/t").unwrap_err();
        assert!(missing.contains("cannot read /nonexistent/t"), "{missing}");
    }

    #[test]
    fn shaped_output_reads_the_list_or_the_one_object() {
        let items = [
            json!({"metadata": {"name": "a"}, "spec": {"ports": [{"containerPort": 1}, {"containerPort": 2}]}}),
            json!({"metadata": {"name": "b"}, "spec": {}}),
        ];
        let print = |output: &str, items: &[Value], single: bool| {
            let mut out = Vec::new();
            let output = parse_output(output).unwrap();
            print_shaped(&output, "GameRuntimeList", items, single, false, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            print("jsonpath={.items[*].metadata.name}", &items, false),
            "a b\n"
        );
        assert_eq!(
            print("jsonpath={.kind}", &items, false),
            "GameRuntimeList\n"
        );
        assert_eq!(print("jsonpath={.metadata.name}", &items[..1], true), "a\n");
        assert_eq!(
            print(
                "custom-columns=NAME:.metadata.name,PORTS:.spec.ports[*].containerPort",
                &items,
                false
            ),
            "NAME   PORTS\na      1,2\nb      <none>\n"
        );
    }

    #[test]
    fn field_selectors_compare_fields_and_refuse_what_is_not_a_path() {
        let game =
            json!({"metadata": {"name": "a"}, "status": {"phase": "Running", "restartCount": 3}});
        let holds = |text: &str| FieldSelector::parse(text).unwrap().matches(&game);
        assert!(holds("metadata.name=a"));
        assert!(holds("status.phase==Running,metadata.name!=b"));
        assert!(holds("status.restartCount=3"));
        assert!(!holds("status.phase!=Running"));
        assert!(holds("spec.node="), "an absent field is empty");
        assert!(!holds("spec.node=n1"));
        for bad in ["status.phase", "=x", "a..b=1", "a[0]=1", ""] {
            assert!(FieldSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sorting_is_by_value_stable_and_puts_missing_first() {
        let mut items = vec![
            json!({"n": "c", "r": 10}),
            json!({"n": "a", "r": 9}),
            json!({"n": "b"}),
            json!({"n": "d", "r": 9}),
        ];
        let by_r = parse_sort_by(".r").unwrap();
        sort_by_path(&mut items, &by_r, Clone::clone);
        let names: Vec<&str> = items.iter().map(|v| v["n"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["b", "a", "d", "c"],
            "9 before 10 (numbers), a before d (stable)"
        );
        let by_n = parse_sort_by("{.n}").unwrap();
        sort_by_path(&mut items, &by_n, Clone::clone);
        let names: Vec<&str> = items.iter().map(|v| v["n"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn label_columns_show_values_and_every_label() {
        let columns = LabelColumns::new(
            &["tier,app.kubernetes.io/name".into(), "region".into()],
            true,
        );
        assert_eq!(columns.headers(), ["TIER", "NAME", "REGION", "LABELS"]);
        let labels: BTreeMap<String, String> =
            [("tier".into(), "ranked".into()), ("b".into(), "2".into())].into();
        assert_eq!(
            columns.cells(Some(&labels)),
            ["ranked", "", "", "b=2,tier=ranked"]
        );
        assert_eq!(columns.cells(None), ["", "", "", "<none>"]);
        assert!(LabelColumns::new(&[], false).headers().is_empty());
    }
}
