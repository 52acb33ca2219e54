//! JSONPath templates of `-o jsonpath=…`, `--sort-by`, custom columns and `wait
//! --for=jsonpath=…`: text with `{…}` expressions evaluated against the object as JSON.
//!
//! An expression is a path (`.metadata.name`, `$.items[0]`, `..image`, `['a.b']`, `[*]`,
//! `[1:3]`, `[-1]`, `[?(@.status.phase=="Running")]`, `[?(@.labels)]`), several paths
//! separated by commas, a quoted literal (`{"\n"}`), or `range PATH` … `end`, which
//! evaluates what lies between once per value of the path, paths inside starting from that
//! value (`$` is always the whole object). A path that finds nothing prints nothing; strings
//! print bare, other values as compact JSON, several values separated by spaces.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Paths(Vec<Path>),
    Range(Path, Vec<Part>),
}

/// A path: where it starts, then its steps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Path {
    from_root: bool,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    AnyChild,
    Descend(Option<String>),
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Union(Vec<Selector>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Field(String),
    Index(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Path,
    test: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(Path),
}

/// Why a template does not parse: the template and what is wrong, for a usage error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError(pub(crate) String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Parses a template: text with `{…}` expressions, at most [`MAX_DEPTH`] brackets deep.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        let bad = |why: &str| TemplateError(format!("invalid jsonpath template {text:?}: {why}"));
        if nesting(text) > MAX_DEPTH {
            // Filters nest by recursion: a bound keeps a template from exhausting the stack.
            return Err(bad(&format!("it nests deeper than {MAX_DEPTH} brackets")));
        }
        let mut stack: Vec<(Path, Vec<Part>)> = Vec::new();
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                None => {
                    parts.push(Part::Text(rest.to_owned()));
                    break;
                }
                Some(open) => {
                    if open > 0 {
                        parts.push(Part::Text(rest[..open].to_owned()));
                    }
                    let close =
                        closing_brace(&rest[open..]).ok_or_else(|| bad("a '{' is not closed"))?;
                    let expr = rest[open + 1..open + close].trim();
                    rest = &rest[open + close + 1..];
                    if let Some(path) = expr.strip_prefix("range ") {
                        let path = parse_path(path.trim()).map_err(|why| bad(&why))?;
                        stack.push((path, std::mem::take(&mut parts)));
                    } else if expr == "end" {
                        let (path, outer) = stack
                            .pop()
                            .ok_or_else(|| bad("an {end} without its {range}"))?;
                        let body = std::mem::replace(&mut parts, outer);
                        parts.push(Part::Range(path, body));
                    } else if let Some(literal) = string_literal(expr) {
                        parts.push(Part::Text(literal.map_err(|why| bad(&why))?));
                    } else {
                        let paths = split_outside(expr, ',')
                            .into_iter()
                            .map(|p| parse_path(p.trim()))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|why| bad(&why))?;
                        parts.push(Part::Paths(paths));
                    }
                }
            }
        }
        if !stack.is_empty() {
            return Err(bad("a {range} without its {end}"));
        }
        Ok(Template { parts })
    }

    /// A template from a path alone, braces optional (`.status.phase` or
    /// `{.status.phase}`), as `--sort-by` and custom columns take it.
    pub(crate) fn parse_path_or_template(text: &str) -> Result<Template, TemplateError> {
        let text = text.trim();
        if text.starts_with('{') {
            Template::parse(text)
        } else {
            Template::parse(&format!("{{{text}}}"))
        }
    }

    /// The text the template makes of `root`.
    pub(crate) fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_parts(&self.parts, root, root, &mut out);
        out
    }

    /// Every value the template's expressions find in `root` (its text left out): what a
    /// sort key or a column is made of.
    pub(crate) fn values<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut found = Vec::new();
        collect_parts(&self.parts, root, root, &mut found);
        found
    }
}

fn render_parts(parts: &[Part], root: &Value, here: &Value, out: &mut String) {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Paths(paths) => {
                let values: Vec<&Value> = paths.iter().flat_map(|p| p.find(root, here)).collect();
                let texts: Vec<String> = values.iter().map(|v| text_of(v)).collect();
                out.push_str(&texts.join(" "));
            }
            Part::Range(path, body) => {
                for value in path.find(root, here) {
                    render_parts(body, root, value, out);
                }
            }
        }
    }
}

fn collect_parts<'v>(parts: &[Part], root: &'v Value, here: &'v Value, found: &mut Vec<&'v Value>) {
    for part in parts {
        match part {
            Part::Text(_) => {}
            Part::Paths(paths) => found.extend(paths.iter().flat_map(|p| p.find(root, here))),
            Part::Range(path, body) => {
                for value in path.find(root, here) {
                    collect_parts(body, root, value, found);
                }
            }
        }
    }
}

/// How deep brackets, parentheses and braces may nest in a template.
pub(crate) const MAX_DEPTH: usize = 32;

/// How deep brackets, parentheses and braces nest in `text` (quotes skipped).
fn nesting(text: &str) -> usize {
    unquoted(text)
        .scan(0usize, |depth, (_, c)| {
            match c {
                '[' | '(' | '{' => *depth += 1,
                ']' | ')' | '}' => *depth = depth.saturating_sub(1),
                _ => {}
            }
            Some(*depth)
        })
        .max()
        .unwrap_or(0)
}

/// The characters of `text` that are outside quotes (`"…"`, `'…'`, with `\` escapes inside
/// them), with their byte offsets: what every scan of a template looks at.
fn unquoted(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut quote, mut escaped) = (None::<char>, false);
    text.char_indices().filter(move |&(_, c)| match quote {
        Some(q) => {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            false
        }
        None if c == '"' || c == '\'' => {
            quote = Some(c);
            false
        }
        None => true,
    })
}

/// How a found value prints: a string bare, anything else as compact JSON.
pub(crate) fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Where the `}` closing the `{` at the start of `text` is (quotes and nested brackets
/// skipped).
fn closing_brace(text: &str) -> Option<usize> {
    unquoted(text)
        .skip(1)
        .find(|&(_, c)| c == '}')
        .map(|(i, _)| i)
}

/// A quoted literal (`"\n"`, `'-'`), unescaped; `None` when `expr` is not one.
fn string_literal(expr: &str) -> Option<Result<String, String>> {
    let quote = expr.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    if expr.len() < 2 || !expr.ends_with(quote) {
        return Some(Err(format!("the literal {expr} is not closed")));
    }
    let inner = &expr[1..expr.len() - 1];
    let mut text = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some('r') => text.push('\r'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    Some(Ok(text))
}

/// Splits `text` at each `sep` that is outside brackets, parentheses, braces and quotes: the
/// one splitter of templates, custom columns, `--for=jsonpath=PATH=VALUE` and set-based
/// label selectors.
pub(crate) fn split_outside(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in unquoted(text) {
        match c {
            '[' | '(' | '{' => depth += 1,
            ']' | ')' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `text` split at its first `sep` outside brackets and quotes (see [`split_outside`]).
pub(crate) fn split_once_outside(text: &str, sep: char) -> (&str, Option<&str>) {
    let first = split_outside(text, sep)[0];
    match text.get(first.len() + sep.len_utf8()..) {
        Some(rest) if first.len() < text.len() => (first, Some(rest)),
        _ => (text, None),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '/'
}

/// Parses a path: `$`, `@` or nothing, then `.field`, `..field`, `.*`, `[…]` steps.
fn parse_path(text: &str) -> Result<Path, String> {
    let (from_root, mut rest) = if let Some(rest) = text.strip_prefix('$') {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('@') {
        (false, rest)
    } else {
        (false, text)
    };
    if rest.is_empty() && text.is_empty() {
        return Err("an empty expression {}".into());
    }
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("..") {
            let end = after
                .find(|c: char| !is_name_char(c))
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(end);
            if let Some(tail) = tail.strip_prefix('*') {
                steps.push(Step::Descend(None));
                rest = tail;
            } else {
                steps.push(Step::Descend((!name.is_empty()).then(|| name.to_owned())));
                rest = tail;
            }
        } else if let Some(after) = rest.strip_prefix('.') {
            if let Some(tail) = after.strip_prefix('*') {
                steps.push(Step::AnyChild);
                rest = tail;
                continue;
            }
            let end = after
                .find(|c: char| !is_name_char(c))
                .unwrap_or(after.len());
            if end == 0 {
                if after.is_empty() || after.starts_with('[') {
                    // `.` alone (the current value) or `.[0]`.
                    rest = after;
                    continue;
                }
                return Err(format!("a field name is missing at {rest:?}"));
            }
            steps.push(Step::Field(after[..end].to_owned()));
            rest = &after[end..];
        } else if rest.starts_with('[') {
            let close =
                matching_bracket(rest).ok_or_else(|| format!("a '[' is not closed in {text:?}"))?;
            steps.push(parse_bracket(rest[1..close].trim())?);
            rest = &rest[close + 1..];
        } else {
            return Err(format!(
                "unexpected {rest:?} (a path step starts with '.' or '[')"
            ));
        }
    }
    Ok(Path { from_root, steps })
}

fn matching_bracket(text: &str) -> Option<usize> {
    let mut depth = 0i32;
    unquoted(text).find_map(|(i, c)| {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => return None,
        }
        (depth == 0).then_some(i)
    })
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::AnyChild);
    }
    if let Some(filter) = inner.strip_prefix('?') {
        let filter = filter
            .trim()
            .strip_prefix('(')
            .and_then(|f| f.strip_suffix(')'))
            .ok_or_else(|| format!("a filter is written [?(…)], not [{inner}]"))?;
        return parse_filter(filter.trim()).map(Step::Filter);
    }
    if inner.contains(':') && !inner.starts_with(['\'', '"']) {
        let bounds: Vec<&str> = inner.split(':').map(str::trim).collect();
        if bounds.len() > 3 {
            return Err(format!("a slice is [start:end:step], not [{inner}]"));
        }
        let number = |text: &str| -> Result<Option<i64>, String> {
            if text.is_empty() {
                Ok(None)
            } else {
                text.parse()
                    .map(Some)
                    .map_err(|_| format!("{text:?} in [{inner}] is not a number"))
            }
        };
        return Ok(Step::Slice(
            number(bounds[0])?,
            number(bounds.get(1).copied().unwrap_or(""))?,
            number(bounds.get(2).copied().unwrap_or(""))?,
        ));
    }
    let selectors = split_outside(inner, ',')
        .into_iter()
        .map(|one| {
            let one = one.trim();
            if let Some(Ok(name)) = string_literal(one) {
                Ok(Selector::Field(name))
            } else if let Ok(index) = one.parse::<i64>() {
                Ok(Selector::Index(index))
            } else {
                Err(format!(
                    "[{inner}]: write an index, a slice, * or a quoted name"
                ))
            }
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(match selectors.as_slice() {
        [Selector::Field(name)] => Step::Field(name.clone()),
        [Selector::Index(index)] => Step::Index(*index),
        _ => Step::Union(selectors),
    })
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    for (token, op) in [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ] {
        if let Some(at) = find_outside_quotes(text, token) {
            let left = parse_path(text[..at].trim())?;
            let right = text[at + token.len()..].trim();
            let operand = if right.starts_with('@') || right.starts_with('$') {
                Operand::Path(parse_path(right)?)
            } else if let Some(literal) = string_literal(right) {
                Operand::Literal(Value::String(literal?))
            } else {
                Operand::Literal(
                    serde_json::from_str(right)
                        .map_err(|_| format!("{right:?} in a filter is not a value"))?,
                )
            };
            return Ok(Filter {
                left,
                test: Some((op, operand)),
            });
        }
    }
    Ok(Filter {
        left: parse_path(text)?,
        test: None,
    })
}

fn find_outside_quotes(text: &str, token: &str) -> Option<usize> {
    unquoted(text)
        .find(|&(i, _)| text[i..].starts_with(token))
        .map(|(i, _)| i)
}

impl Path {
    /// The values the path finds, from `root` when it starts with `$`, else from `here`.
    fn find<'v>(&self, root: &'v Value, here: &'v Value) -> Vec<&'v Value> {
        let mut current = vec![if self.from_root { root } else { here }];
        for step in &self.steps {
            let mut next = Vec::new();
            for value in current {
                step.apply(root, value, &mut next);
            }
            current = next;
        }
        current
    }
}

fn index_of(len: usize, index: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let index = if index < 0 { len + index } else { index };
    (0..len)
        .contains(&index)
        .then(|| usize::try_from(index).ok())
        .flatten()
}

impl Step {
    fn apply<'v>(&self, root: &'v Value, value: &'v Value, out: &mut Vec<&'v Value>) {
        match self {
            Step::Field(name) => out.extend(value.get(name)),
            Step::AnyChild => match value {
                Value::Array(items) => out.extend(items),
                Value::Object(map) => out.extend(map.values()),
                _ => {}
            },
            Step::Descend(name) => descend(value, name.as_deref(), out),
            Step::Index(index) => {
                if let Value::Array(items) = value {
                    out.extend(index_of(items.len(), *index).map(|i| &items[i]));
                }
            }
            Step::Slice(start, end, step) => {
                if let Value::Array(items) = value {
                    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
                    let clamp = |bound: i64| {
                        let bound = if bound < 0 { len + bound } else { bound };
                        bound.clamp(0, len)
                    };
                    let (from, to) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(len)));
                    let step = step.unwrap_or(1).max(1);
                    let mut i = from;
                    while i < to {
                        out.extend(usize::try_from(i).ok().and_then(|i| items.get(i)));
                        i += step;
                    }
                }
            }
            Step::Union(selectors) => {
                for selector in selectors {
                    match selector {
                        Selector::Field(name) => out.extend(value.get(name)),
                        Selector::Index(index) => {
                            if let Value::Array(items) = value {
                                out.extend(index_of(items.len(), *index).map(|i| &items[i]));
                            }
                        }
                    }
                }
            }
            Step::Filter(filter) => {
                let items: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    Value::Object(map) => map.values().collect(),
                    _ => Vec::new(),
                };
                out.extend(items.into_iter().filter(|item| filter.holds(root, item)));
            }
        }
    }
}

fn descend<'v>(value: &'v Value, name: Option<&str>, out: &mut Vec<&'v Value>) {
    match name {
        Some(name) => out.extend(value.get(name)),
        None => out.push(value),
    }
    match value {
        Value::Array(items) => items.iter().for_each(|v| descend(v, name, out)),
        Value::Object(map) => map.values().for_each(|v| descend(v, name, out)),
        _ => {}
    }
}

impl Filter {
    fn holds(&self, root: &Value, item: &Value) -> bool {
        let left = self.left.find(root, item);
        let Some((op, operand)) = &self.test else {
            return left.iter().any(|v| !v.is_null());
        };
        let right: Vec<&Value> = match operand {
            Operand::Literal(value) => vec![value],
            Operand::Path(path) => path.find(root, item),
        };
        if *op == Op::Ne {
            // Holds where no value is equal, a missing one included.
            return !left
                .iter()
                .any(|l| right.iter().any(|r| compare(l, Op::Eq, r)));
        }
        left.iter()
            .any(|l| right.iter().any(|r| compare(l, *op, r)))
    }
}

fn compare(left: &Value, op: Op, right: &Value) -> bool {
    let order = match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        // A number kept as text in one of them (`"3"` against `3`): compared as numbers.
        (Value::String(a), Value::Number(b)) => a
            .parse::<f64>()
            .ok()
            .and_then(|a| a.partial_cmp(&b.as_f64()?)),
        (Value::Number(a), Value::String(b)) => b
            .parse::<f64>()
            .ok()
            .and_then(|b| a.as_f64()?.partial_cmp(&b)),
        (a, b) => (a == b).then_some(std::cmp::Ordering::Equal),
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => order == Some(Equal),
        Op::Ne => order != Some(Equal),
        Op::Lt => order == Some(Less),
        Op::Le => matches!(order, Some(Less | Equal)),
        Op::Gt => order == Some(Greater),
        Op::Ge => matches!(order, Some(Greater | Equal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({
            "kind": "GameRuntimeList",
            "items": [
                {"metadata": {"name": "a", "labels": {"tier": "ranked", "app.kubernetes.io/name": "x"}},
                 "spec": {"ports": [{"containerPort": 7777, "hostPort": 17000}, {"containerPort": 27015}]},
                 "status": {"phase": "Running", "restartCount": 2}},
                {"metadata": {"name": "b", "labels": {}},
                 "spec": {"ports": []},
                 "status": {"phase": "Pending", "restartCount": 0}},
                {"metadata": {"name": "c"}, "spec": {}, "status": null},
            ]
        })
    }

    fn render(template: &str) -> String {
        Template::parse(template)
            .unwrap_or_else(|e| panic!("{template}: {e}"))
            .render(&list())
    }

    #[test]
    fn paths_find_what_they_name() {
        let cases = [
            ("{.kind}", "GameRuntimeList"),
            ("{$.kind}", "GameRuntimeList"),
            ("{.items[*].metadata.name}", "a b c"),
            ("{.items[0].metadata.name}", "a"),
            ("{.items[-1].metadata.name}", "c"),
            ("{.items[5].metadata.name}", ""),
            ("{.items[0:2].metadata.name}", "a b"),
            ("{.items[::2].metadata.name}", "a c"),
            ("{.items[0,2].metadata.name}", "a c"),
            ("{.items[0].metadata.labels['app.kubernetes.io/name']}", "x"),
            ("{.items[0].metadata.labels.tier}", "ranked"),
            (
                "{.items[0].spec.ports[0]}",
                r#"{"containerPort":7777,"hostPort":17000}"#,
            ),
            ("{..containerPort}", "7777 27015"),
            (
                "{.items[?(@.status.phase==\"Running\")].metadata.name}",
                "a",
            ),
            (
                "{.items[?(@.status.phase!='Running')].metadata.name}",
                "b c",
            ),
            ("{.items[?(@.status.restartCount>1)].metadata.name}", "a"),
            ("{.items[?(@.status.restartCount<=0)].metadata.name}", "b"),
            ("{.items[?(@.metadata.labels)].metadata.name}", "a b"),
            ("{.items[*].status.restartCount}", "2 0"),
            ("{.items[0].metadata.name,.items[1].metadata.name}", "a b"),
            ("names: {.items[*].metadata.name}!", "names: a b c!"),
            (
                "{range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}",
                "a=Running\nb=Pending\nc=\n",
            ),
            (
                "{range .items[?(@.spec.ports)]}[{range .spec.ports[*]}{.containerPort};{end}]{end}",
                "[7777;27015;][]",
            ),
            (
                "{range .items[0:1]}{$.kind}/{.metadata.name}{end}",
                "GameRuntimeList/a",
            ),
            ("{.items[0].nothing.here}", ""),
            ("{.items[0].status.*}", "Running 2"),
            ("plain text", "plain text"),
        ];
        for (template, expected) in cases {
            assert_eq!(render(template), expected, "{template}");
        }
    }

    #[test]
    fn broken_templates_are_refused_with_the_reason() {
        let deep = format!("{{.items{}{}}}", "[?(@.a".repeat(40), ")]".repeat(40));
        for (template, why) in [
            (deep.as_str(), "nests deeper than 32"),
            ("{.items[0}", "not closed"),
            ("{.metadata.name", "not closed"),
            ("{range .items[*]}{.x}", "without its {end}"),
            ("{end}", "without its {range}"),
            ("{.items[a]}", "quoted name"),
            ("{.items[?(@.x == )]}", "not a value"),
            ("{metadata}", "a path step starts"),
            ("{.items[1:2:3:4]}", "[start:end:step]"),
        ] {
            let error = Template::parse(template).unwrap_err();
            assert!(error.0.contains(why), "{template}: {error}");
            assert!(error.0.contains(template), "{template}: {error}");
        }
    }

    #[test]
    fn a_bare_path_is_a_template_too() {
        let template = Template::parse_path_or_template(".status.phase").unwrap();
        let item = &list()["items"][0];
        assert_eq!(template.render(item), "Running");
        assert_eq!(template.values(item), [&json!("Running")]);
        let braced = Template::parse_path_or_template("{.metadata.name}").unwrap();
        assert_eq!(braced.render(item), "a");
    }
}
