//! Reading documents from YAML (files given to `rtctl`, keys read back from etcd) and writing
//! them back: size limits, syntax, field paths, validation, defaults, in that order.

use std::collections::HashMap;
use std::ops::Range;

use serde_yaml::Value;

use super::GameRuntime;
use super::budget::{BUDGET_KIND, GameDisruptionBudget, validate_budget};
use super::validate::{FieldError, join, validate};
use crate::ErrorCode;

mod bounded;
mod shape;

/// The largest single document: far above any real game (a few KiB), and small enough that
/// a runaway generator or a pasted binary is refused before it reaches the parser or etcd
/// (whose default request limit is 1.5 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The largest file `rtctl apply -f` reads: room for thousands of games in one fleet file.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// What one document may cost while it is read, its aliases expanded (see [`bounded`]): twice
/// [`MAX_DOCUMENT_BYTES`], which refuses nothing whose stored form fits, and keeps an alias
/// bomb to a few tens of MB and milliseconds.
const MAX_EXPANDED_COST: usize = 2 * MAX_DOCUMENT_BYTES;

/// How deeply lists and mappings may nest in one document, aliases expanded. A GameRuntime
/// goes 4 deep (the document, `spec`, `spec.ports`, one port); 32 leaves room for fields to
/// come and stays far below serde_yaml's recursion limit of 128. Checked by a scan of the text
/// before the parser sees it (see [`shape`]): the parser's scanner spends time quadratic in the
/// depth of flow nesting before any limit of its own applies.
pub const MAX_NESTING: usize = 32;

/// The most nodes (scalars, aliases, lists and mappings) one document's text may hold. A
/// stored node takes at least 4 bytes (`- a` and its line break), so a document with more
/// could not be stored within [`MAX_DOCUMENT_BYTES`] unless most of its nodes vanished on the
/// way (empty merges); real documents hold tens.
pub const MAX_NODES: usize = MAX_DOCUMENT_BYTES / 4;

/// Why a document could not be read. Document numbers are stored 0-based and shown 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The whole input is larger than [`MAX_FILE_BYTES`].
    #[error("the input is {size} bytes, more than the limit of {limit} bytes")]
    FileTooLarge {
        /// The input's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// One document is larger than [`MAX_DOCUMENT_BYTES`]; checked before parsing it.
    #[error("document {}: {size} bytes, more than the limit of {limit} bytes", .document + 1)]
    TooLarge {
        /// Which document of the input (0-based).
        document: usize,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// Its aliases (`*name`) expand to more than a document may hold; refused while it is
    /// read, before it takes the memory it asks for.
    #[error(
        "document {}: with its aliases expanded it would be larger than {limit} bytes (an \
         alias, *name, repeats everything its anchor, &name, holds)",
        .document + 1
    )]
    Expands {
        /// Which document of the input (0-based).
        document: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// Lists and mappings nest deeper than [`MAX_NESTING`]: found by a scan of the text before
    /// parsing (`line` set, 1-based in the whole input), or while reading, counting what
    /// aliases repeat.
    #[error(
        "document {}: {}lists and mappings nest more than {limit} levels deep (the limit; a \
         GameRuntime needs 4), counting what aliases repeat",
        .document + 1,
        line_prefix(*.line)
    )]
    TooDeep {
        /// Which document of the input (0-based).
        document: usize,
        /// Where the scan found it, when the scan did.
        line: Option<usize>,
        /// The limit in levels.
        limit: usize,
    },

    /// The text holds more than [`MAX_NODES`] nodes; found by a scan before parsing. `line` is
    /// where the count passed the limit, 1-based in the whole input.
    #[error(
        "document {}: line {line}: more than {limit} values (scalars, aliases, lists and \
         mappings), the limit for one document",
        .document + 1
    )]
    TooManyNodes {
        /// Which document of the input (0-based).
        document: usize,
        /// Where the count passed the limit.
        line: usize,
        /// The limit in nodes.
        limit: usize,
    },

    /// The document's stored form (what etcd keeps and `rtctl get -o yaml` prints: aliases
    /// and merge keys expanded, defaults filled in, one item per line) is larger than
    /// [`MAX_DOCUMENT_BYTES`]: it could be written but never read back.
    #[error(
        "{}: stored (aliases and merge keys expanded, defaults filled in, one item per line) \
         it would be {size} bytes, more than the limit of {limit} bytes",
        label(*.document, Some(.name))
    )]
    StoredTooLarge {
        /// Which document of the input (0-based).
        document: usize,
        /// The game it names.
        name: String,
        /// Its stored size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// Not YAML. `line` is 1-based in the whole input.
    #[error("document {}: {}{message}", .document + 1, line_prefix(*.line))]
    Syntax {
        /// Which document of the input (0-based).
        document: usize,
        /// Where, when the YAML reader knows.
        line: Option<usize>,
        /// What the YAML reader said.
        message: String,
    },

    /// YAML, but a field is unknown, missing or of the wrong type. `path` is the full dotted
    /// path of the field (`spec.imagee`), empty when the document itself has the wrong shape.
    #[error("{}: {}{message}", label(*.document, .name.as_deref()), path_prefix(.path))]
    Field {
        /// Which document of the input (0-based).
        document: usize,
        /// The game it names, when that much could be read.
        name: Option<String>,
        /// The field's dotted path.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// Well-formed, but breaks validation rules (all of them are listed).
    #[error("{}: {}", label(*.document, .name.as_deref()), join(.errors))]
    Invalid {
        /// Which document of the input (0-based).
        document: usize,
        /// The game it names, when the name itself is valid.
        name: Option<String>,
        /// Every rule it breaks.
        errors: Vec<FieldError>,
    },

    /// Two documents of one input name the same game; applying both would be a race between
    /// them.
    #[error("{}: metadata.name: {name:?} is already used by document {}", label(*.document, Some(.name)), .first + 1)]
    DuplicateName {
        /// The later document (0-based).
        document: usize,
        /// The name both use.
        name: String,
        /// The document that used it first (0-based).
        first: usize,
    },

    /// [`parse_document`] wants exactly one document.
    #[error("expected exactly one document, found {found}")]
    NotOneDocument {
        /// How many documents the input holds.
        found: usize,
    },

    /// The bytes are not UTF-8 text.
    #[error("the input is not UTF-8 text")]
    NotUtf8,
}

impl ParseError {
    /// The stable error code: a document the user wrote is wrong.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }

    /// The 0-based index of the offending document, when one is to blame.
    pub fn document(&self) -> Option<usize> {
        match self {
            ParseError::TooLarge { document, .. }
            | ParseError::Expands { document, .. }
            | ParseError::TooDeep { document, .. }
            | ParseError::TooManyNodes { document, .. }
            | ParseError::StoredTooLarge { document, .. }
            | ParseError::Syntax { document, .. }
            | ParseError::Field { document, .. }
            | ParseError::Invalid { document, .. }
            | ParseError::DuplicateName { document, .. } => Some(*document),
            ParseError::FileTooLarge { .. }
            | ParseError::NotOneDocument { .. }
            | ParseError::NotUtf8 => None,
        }
    }
}

fn label(document: usize, name: Option<&str>) -> String {
    match name {
        Some(name) if !name.is_empty() => {
            format!(
                "document {} ({})",
                document + 1,
                shorten(&name.escape_debug().to_string())
            )
        }
        _ => format!("document {}", document + 1),
    }
}

/// The longest text from the input a message repeats (a name, a field path, serde's message
/// with the unknown variant it quotes): a 200 KB name must not come back as a 200 KB error
/// line, which rtctl prints and the controller logs. Validation quotes values briefly itself.
const MAX_ECHO_CHARS: usize = 200;

/// `text`, cut after [`MAX_ECHO_CHARS`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

fn line_prefix(line: Option<usize>) -> String {
    line.map(|line| format!("line {line}: "))
        .unwrap_or_default()
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Reads every document of a multi-document YAML input (`---`-separated), skipping empty
/// ones, and returns them validated and with defaults applied. Stops at the first bad
/// document.
pub fn parse_documents(text: &str) -> Result<Vec<GameRuntime>, ParseError> {
    read_documents(text, Kinds::GamesOnly)?
        .into_iter()
        .map(|object| match object {
            Object::Game(doc) => Ok(doc),
            Object::Budget(_) => unreachable!("GamesOnly reads every document as a GameRuntime"),
        })
        .collect()
}

/// A document of any kind rtmanager stores.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per document of a file, moved once into its kind's list: boxing a game \
              would save nothing worth an allocation per document"
)]
pub enum Object {
    /// A `GameRuntime`.
    Game(GameRuntime),
    /// A `GameDisruptionBudget`.
    Budget(GameDisruptionBudget),
}

impl Object {
    /// The document's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Game(_) => super::KIND,
            Object::Budget(_) => BUDGET_KIND,
        }
    }

    /// The document's name.
    pub fn name(&self) -> &str {
        match self {
            Object::Game(doc) => &doc.metadata.name,
            Object::Budget(budget) => &budget.metadata.name,
        }
    }
}

/// Like [`parse_documents`], for an input that may mix kinds: each document is read as the
/// kind its `kind` field names (`GameRuntime` when absent or unknown, so the error names
/// the field). Two documents of one kind may not share a name.
pub fn parse_objects(text: &str) -> Result<Vec<Object>, ParseError> {
    read_documents(text, Kinds::Any)
}

/// Which kinds [`read_documents`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kinds {
    GamesOnly,
    Any,
}

fn read_documents(text: &str, kinds: Kinds) -> Result<Vec<Object>, ParseError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ParseError::FileTooLarge {
            size: text.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    // Sizes and shapes first, so a document too large, too deep or of too many nodes is refused
    // before the YAML parser sees any of it (serde_yaml may read ahead past the document it
    // yields).
    let limits = shape::Limits {
        depth: MAX_NESTING,
        nodes: MAX_NODES,
    };
    let mut lines_before = 0;
    let mut scanned_to = 0;
    for (document, span) in document_spans(text).into_iter().enumerate() {
        if span.len() > MAX_DOCUMENT_BYTES {
            return Err(ParseError::TooLarge {
                document,
                size: span.len(),
                limit: MAX_DOCUMENT_BYTES,
            });
        }
        lines_before += shape::line_breaks(&text[scanned_to..span.start]);
        scanned_to = span.start;
        shape::check(&text[span], limits).map_err(|refusal| match refusal {
            shape::Refusal::TooDeep { line } => ParseError::TooDeep {
                document,
                line: Some(lines_before + line),
                limit: MAX_NESTING,
            },
            shape::Refusal::TooManyNodes { line } => ParseError::TooManyNodes {
                document,
                line: lines_before + line,
                limit: MAX_NODES,
            },
        })?;
    }
    let mut docs = Vec::new();
    let mut first_use: HashMap<(&'static str, String), usize> = HashMap::new();
    for (document, deserializer) in serde_yaml::Deserializer::from_str(text).enumerate() {
        // Returning on the first error matters: after a syntax error serde_yaml's iterator
        // yields the same error forever.
        let value =
            bounded::read_value(deserializer, MAX_EXPANDED_COST, MAX_NESTING).map_err(|err| {
                match err {
                    bounded::ReadError::Yaml(err) => syntax_error(document, &err),
                    bounded::ReadError::TooLarge => ParseError::Expands {
                        document,
                        limit: MAX_DOCUMENT_BYTES,
                    },
                    bounded::ReadError::TooDeep => ParseError::TooDeep {
                        document,
                        line: None,
                        limit: MAX_NESTING,
                    },
                }
            })?;
        let is_budget =
            kinds == Kinds::Any && value.get("kind").and_then(Value::as_str) == Some(BUDGET_KIND);
        let object = if is_budget {
            budget_from_value(document, value)?.map(Object::Budget)
        } else {
            from_value(document, value)?.map(Object::Game)
        };
        let Some(object) = object else {
            continue;
        };
        let used = (object.kind(), object.name().to_owned());
        if let Some(first) = first_use.get(&used) {
            return Err(ParseError::DuplicateName {
                document,
                name: used.1,
                first: *first,
            });
        }
        first_use.insert(used, document);
        docs.push(object);
    }
    Ok(docs)
}

/// Reads exactly one document (what the controller reads back from etcd), validated and with
/// defaults applied.
pub fn parse_document(bytes: &[u8]) -> Result<GameRuntime, ParseError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ParseError::TooLarge {
            document: 0,
            size: bytes.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8)?;
    let mut docs = parse_documents(text)?;
    let found = docs.len();
    match docs.pop() {
        Some(doc) if found == 1 => Ok(doc),
        _ => Err(ParseError::NotOneDocument { found }),
    }
}

/// The YAML form of a document: what is stored in etcd and what `rtctl get -o yaml` prints.
/// Parsing it back gives an equal document.
pub fn to_yaml(doc: &GameRuntime) -> String {
    serde_yaml::to_string(doc).expect(
        "a GameRuntime always serializes: every map has string keys, every value a text form",
    )
}

/// One document's value → a checked `GameRuntime`; `None` for an empty document (`---` with
/// nothing after it).
fn from_value(document: usize, mut value: Value) -> Result<Option<GameRuntime>, ParseError> {
    if value.is_null() {
        return Ok(None);
    }
    // `<<: *defaults` merge keys are common in hand-written fleet files.
    value
        .apply_merge()
        .map_err(|err| syntax_error(document, &err))?;
    let name = value
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut doc: GameRuntime =
        serde_path_to_error::deserialize(value).map_err(|err| field_error(document, name, &err))?;
    validate(&doc).map_err(|errors| ParseError::Invalid {
        document,
        name: Some(doc.metadata.name.clone()),
        errors,
    })?;
    doc.apply_defaults();
    // The limit holds for what is stored, not only for what was written: a flow list of
    // one-letter args (`[a,a,a,...]`, 2 bytes an item) prints as `- a` lines three times as
    // long, and a document that fits in a file but not in its stored form would be written
    // to etcd and then refused by every reader.
    let size = to_yaml(&doc).len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(ParseError::StoredTooLarge {
            document,
            name: doc.metadata.name,
            size,
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(Some(doc))
}

/// One document's value → a checked `GameDisruptionBudget`.
fn budget_from_value(
    document: usize,
    mut value: Value,
) -> Result<Option<GameDisruptionBudget>, ParseError> {
    if value.is_null() {
        return Ok(None);
    }
    value
        .apply_merge()
        .map_err(|err| syntax_error(document, &err))?;
    let name = value
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let budget: GameDisruptionBudget =
        serde_path_to_error::deserialize(value).map_err(|err| field_error(document, name, &err))?;
    validate_budget(&budget).map_err(|errors| ParseError::Invalid {
        document,
        name: Some(budget.metadata.name.clone()),
        errors,
    })?;
    Ok(Some(budget))
}

fn syntax_error(document: usize, err: &serde_yaml::Error) -> ParseError {
    let mut message = err.to_string();
    let line = err.location().map(|location| {
        // The line is reported on its own; keep the message free of the duplicate.
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        message = message.replace(&suffix, "");
        location.line()
    });
    ParseError::Syntax {
        document,
        line,
        message: shorten(&message),
    }
}

fn field_error(
    document: usize,
    name: Option<String>,
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> ParseError {
    let mut path = err.path().to_string();
    if path == "." {
        path.clear();
    }
    let message = err.inner().to_string();
    // serde reports a missing field at the map that lacks it; point at the field itself.
    // (Unknown fields already come with their own name in the path: `spec.imagee`.)
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        path = if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        };
    }
    ParseError::Field {
        document,
        name,
        path: shorten(&path),
        message: shorten(&message),
    }
}

/// The byte span of each document of a YAML stream, found without parsing it.
///
/// YAML allows `---` (document start) and `...` (document end) markers only at column 0, and
/// forbids lines starting with them inside a document, even inside block or quoted scalars.
/// So a line scan finds the same boundaries the parser will, and the spans line up with
/// serde_yaml's documents: comments and `%` directives before a `---` belong to that
/// document, and a trailing `---` is an (empty) document of its own, as for serde_yaml.
fn document_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    // Whether the current span holds a document yet (a `---` or content), as opposed to only
    // blank lines, comments and directives.
    let mut has_document = false;
    for line in text.split_inclusive('\n') {
        let end = offset + line.len();
        if is_marker(line, "---") {
            if has_document {
                spans.push(start..offset);
                start = offset;
            }
            has_document = true;
        } else if is_marker(line, "...") {
            if has_document {
                spans.push(start..end);
            }
            start = end;
            has_document = false;
        } else if !has_document {
            let trimmed = line.trim_start_matches('\u{feff}').trim();
            has_document =
                !(trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('%'));
        }
        offset = end;
    }
    if has_document {
        spans.push(start..text.len());
    }
    spans
}

/// A `---` or `...` at column 0 followed by whitespace or the end of the line.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixtures::game;
    use super::super::{
        Condition, ConditionStatus, DesiredState, GameRuntimeStatus, Phase, Protocol, RestartPolicy,
    };
    use super::*;

    const MINIMAL: &str = "\
apiVersion: rtmanager.dev/v1alpha1
kind: GameRuntime
metadata:
  name: g1
spec:
  image: rtmanager-test/engine:1
";

    /// Every field set, including a status as the controller writes it.
    const FULL: &str = r#"
apiVersion: rtmanager.dev/v1alpha1
kind: GameRuntime
metadata:
  name: game-7f3a
  labels: {tier: ranked}
  annotations:
    rtmanager.dev/op-source: admin_cli
    rtmanager.dev/source-ref: REQ-42
  generation: 3
  resourceVersion: "1234"
  creationTimestamp: 2024-05-01T12:00:00Z
spec:
  image: registry.example/galaxy/engine:1.4.2
  state: Stopped
  hostname: lobby-7f3a
  command: [/bin/engine]
  args: ["--port", "7000"]
  env:
    - {name: SEED, value: "42"}
    - {name: EMPTY}
  ports:
    - {containerPort: 7000, hostPort: 17000, protocol: TCP}
    - {containerPort: 7001, protocol: UDP, hostIp: 127.0.0.1}
  resources: {memory: 1.5Gi, cpus: 1.5}
  stopTimeout: 1m30s
  restartPolicy: OnFailure
  restartToken: REQ-42
  node: node-a
status:
  phase: Running
  observedGeneration: 3
  containerId: 9f2c
  imageRef: registry.example/galaxy/engine:1.4.2
  hostname: lobby-7f3a
  node: node-a
  restartCount: 2
  observedRestartToken: REQ-42
  lastExitCode: 137
  oomKilled: true
  message: restarted by admin
  phaseSince: 2024-05-01T12:01:00Z
  conditions:
    - {type: Ready, status: "True", reason: ContainerRunning, message: "", lastTransitionTime: 2024-05-01T12:01:00Z}
  lastOperation: {opKind: restart, outcome: success, sourceRef: REQ-42, finishedAt: 2024-05-01T12:01:00Z}
"#;

    fn parse_one(text: &str) -> Result<GameRuntime, ParseError> {
        parse_document(text.as_bytes())
    }

    /// MINIMAL with `line` added under `spec:`.
    fn with_spec_line(line: &str) -> String {
        format!("{MINIMAL}  {line}\n")
    }

    #[test]
    fn minimal_document_gets_every_default() {
        let doc = parse_one(MINIMAL).unwrap();
        assert_eq!(doc.metadata.name, "g1");
        assert_eq!(doc.spec.hostname.as_deref(), Some("g1"));
        assert_eq!(doc.spec.stop_timeout, Duration::from_secs(30));
        assert_eq!(doc.spec.state, DesiredState::Running);
        assert_eq!(doc.spec.restart_policy, RestartPolicy::Always);
        assert_eq!(doc.spec.restart_token, "");
        assert_eq!(doc.status, None);
    }

    #[test]
    fn full_document_reads_every_field() {
        let doc = parse_one(FULL).unwrap();
        assert_eq!(doc.metadata.labels["tier"], "ranked");
        assert_eq!(
            doc.metadata.annotations[super::super::ANNOTATION_SOURCE_REF],
            "REQ-42"
        );
        assert_eq!(doc.metadata.generation, Some(3));
        assert_eq!(doc.metadata.resource_version.as_deref(), Some("1234"));
        assert_eq!(
            doc.metadata
                .creation_timestamp
                .map(|t| t.to_string())
                .as_deref(),
            Some("2024-05-01T12:00:00Z")
        );
        let spec = &doc.spec;
        assert_eq!(spec.state, DesiredState::Stopped);
        assert_eq!(spec.hostname.as_deref(), Some("lobby-7f3a"));
        assert_eq!(spec.args, ["--port", "7000"]);
        assert_eq!(spec.env[1].value, "");
        assert_eq!(spec.ports[1].protocol, Protocol::Udp);
        assert_eq!(spec.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(spec.resources.memory.map(|m| m.bytes()), Some(3 << 29));
        assert_eq!(
            spec.resources.cpus.map(|c| c.nano_cpus()),
            Some(1_500_000_000)
        );
        assert_eq!(spec.stop_timeout, Duration::from_secs(90));
        assert_eq!(spec.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(spec.node.as_deref(), Some("node-a"));
        let status = doc.status.as_ref().unwrap();
        assert_eq!(status.phase, Phase::Running);
        assert!(status.oom_killed);
        assert_eq!(status.conditions[0].status, ConditionStatus::True);
        assert_eq!(
            status
                .last_operation
                .as_ref()
                .unwrap()
                .source_ref
                .as_deref(),
            Some("REQ-42")
        );
    }

    #[test]
    fn to_yaml_round_trips_quantities_durations_and_status() {
        for text in [MINIMAL, FULL] {
            let doc = parse_one(text).unwrap();
            let yaml = to_yaml(&doc);
            let back = parse_one(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(back, doc, "{yaml}");
            assert_eq!(to_yaml(&back), yaml, "printing is stable");
        }
        let yaml = to_yaml(&parse_one(FULL).unwrap());
        assert!(yaml.contains("memory: 1536Mi\n"), "{yaml}");
        assert!(yaml.contains("cpus: '1.5'\n"), "{yaml}");
        assert!(yaml.contains("stopTimeout: 1m 30s\n"), "{yaml}");
        assert!(
            yaml.starts_with("apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\n"),
            "{yaml}"
        );
    }

    #[test]
    fn builder_documents_round_trip() {
        let mut doc = game("g2")
            .stopped()
            .env("A", "1")
            .port(7000, None)
            .memory("100M")
            .cpus("250m")
            .stop_timeout(Duration::ZERO)
            .build();
        doc.apply_defaults();
        doc.status = Some(GameRuntimeStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::False,
                reason: "Stopped".into(),
                message: "stopped on request".into(),
                last_transition_time: None,
            }],
            ..GameRuntimeStatus::default()
        });
        assert_eq!(parse_one(&to_yaml(&doc)).unwrap(), doc);
    }

    #[test]
    fn the_design_examples_spec_parses() {
        let text = r#"
apiVersion: rtmanager.dev/v1alpha1
kind: GameRuntime
metadata:
  name: game-7f3a            # the game id: DNS-1123 label, <= 63 chars
  labels: {tier: ranked}
  annotations: {}
spec:
  image: registry.example/galaxy/engine:1.4.2   # the image_ref
  state: Running             # Running | Stopped  (desired)
  hostname: game-7f3a        # defaults to metadata.name; stable across recreates
  command: []                # optional
  args: []
  env: [{name: SEED, value: "42"}]
  ports: [{containerPort: 7000, hostPort: 17000, protocol: TCP}]
  resources: {memory: 512Mi, cpus: "1.5"}
  stopTimeout: 30s           # humantime; SIGTERM, then SIGKILL after this
  restartPolicy: Always      # Always | OnFailure | Never
  restartToken: ""           # bump it (rtctl restart) to ask for a restart
  node: ""                   # optional: which controller node runs it
"#;
        let doc = parse_one(text).unwrap();
        assert_eq!(doc.spec.node, None, "node: \"\" means any node");
        assert_eq!(
            doc.spec.resources.memory.map(|m| m.bytes()),
            Some(512 << 20)
        );
    }

    fn field(result: Result<GameRuntime, ParseError>) -> (String, String) {
        match result {
            Err(ParseError::Field { path, message, .. }) => (path, message),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_full_path() {
        let err = parse_one(&MINIMAL.replace("image:", "imagee:")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "document 1 (g1): spec.imagee: unknown field `imagee`, expected one of `image`,"
            ),
            "{err}"
        );
        let (path, _) = field(parse_one(&MINIMAL.replace("  name:", "  nmae:")));
        assert_eq!(path, "metadata.nmae");
        let (path, _) = field(parse_one(&format!("{MINIMAL}extra: 1\n")));
        assert_eq!(path, "extra");
        let (path, _) = field(parse_one(&with_spec_line(
            "ports: [{containerPort: 1, hostport: 2}]",
        )));
        assert_eq!(path, "spec.ports[0].hostport");
        let (path, _) = field(parse_one(&with_spec_line("resources: {memroy: 1Gi}")));
        assert_eq!(path, "spec.resources.memroy");
        let (path, _) = field(parse_one(&format!("{MINIMAL}status: {{phse: Running}}\n")));
        assert_eq!(path, "status.phse");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let cases = [
            (
                "ports: [{containerPort: x}]",
                "spec.ports[0].containerPort",
                "invalid type",
            ),
            (
                "ports: [{containerPort: 70000}]",
                "spec.ports[0].containerPort",
                "must be between 1 and 65535, got 70000",
            ),
            (
                "ports: [{containerPort: 1, hostPort: -1}]",
                "spec.ports[0].hostPort",
                "must be between 1 and 65535",
            ),
            (
                "ports: [{containerPort: 1, protocol: tcp}]",
                "spec.ports[0].protocol",
                "unknown variant `tcp`",
            ),
            (
                "state: running",
                "spec.state",
                "unknown variant `running`, expected `Running` or `Stopped`",
            ),
            (
                "restartPolicy: sometimes",
                "spec.restartPolicy",
                "unknown variant",
            ),
            (
                "resources: {memory: 64K}",
                "spec.resources.memory",
                "unknown unit \"K\"",
            ),
            (
                "resources: {cpus: 0}",
                "spec.resources.cpus",
                "greater than 0",
            ),
            (
                "stopTimeout: 30",
                "spec.stopTimeout",
                "a duration with a unit",
            ),
            (
                "stopTimeout: soon",
                "spec.stopTimeout",
                "invalid duration \"soon\"",
            ),
            (
                "command: /bin/engine",
                "spec.command",
                "invalid type: string",
            ),
            (
                "env: [{name: A, value: 1}]",
                "spec.env[0].value",
                "invalid type: integer",
            ),
        ];
        for (line, expected_path, expected_message) in cases {
            let (path, message) = field(parse_one(&with_spec_line(line)));
            assert_eq!(path, expected_path, "{line}");
            assert!(message.contains(expected_message), "{line}: {message}");
        }
        let (path, _) = field(parse_one(
            &MINIMAL.replace("rtmanager-test/engine:1", "[1]"),
        ));
        assert_eq!(path, "spec.image");
    }

    #[test]
    fn missing_fields_name_the_field_itself() {
        let (path, message) = field(parse_one(
            &MINIMAL.replace("  image: rtmanager-test/engine:1\n", "  state: Running\n"),
        ));
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("spec.image", "missing field `image`")
        );
        let (path, _) = field(parse_one(&MINIMAL.replace("kind: GameRuntime\n", "")));
        assert_eq!(path, "kind");
        let (path, _) = field(parse_one("- just\n- a list\n"));
        assert_eq!(path, "", "the document as a whole has the wrong shape");
    }

    #[test]
    fn validation_errors_name_the_document_and_game() {
        let text = format!(
            "{MINIMAL}---\n{}",
            MINIMAL.replace("g1", "game-a") + "  ports: [{containerPort: 0}]\n"
        );
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "document 2 (game-a): spec.ports[0].containerPort: must be between 1 and 65535"
        );
        assert_eq!(err.document(), Some(1));
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        match err {
            ParseError::Invalid { name, errors, .. } => {
                assert_eq!(name.as_deref(), Some("game-a"));
                assert_eq!(errors[0].path, "spec.ports[0].containerPort");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn multi_document_files_report_the_one_based_index_of_the_bad_document() {
        let good = |name: &str| MINIMAL.replace("g1", name);
        let text = format!(
            "{}---\n{}---\n{}",
            good("a"),
            good("b"),
            good("c").replace("image:", "imagee:")
        );
        let err = parse_documents(&text).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("document 3 (c): spec.imagee: unknown field"),
            "{err}"
        );

        // A syntax error in document 2 stops parsing (serde_yaml would repeat it forever).
        let text = format!("{}---\nspec: : :\n---\n{}", good("a"), good("c"));
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.document(), Some(1), "{err}");
        match &err {
            ParseError::Syntax { line, message, .. } => {
                assert_eq!(
                    *line,
                    Some(8),
                    "line numbers count from the top of the file"
                );
                assert!(!message.contains("at line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("document 2: line 8: "), "{err}");
    }

    #[test]
    fn empty_documents_are_skipped() {
        assert_eq!(parse_documents("").unwrap(), []);
        assert_eq!(parse_documents("# nothing here\n").unwrap(), []);
        let docs = parse_documents(&format!(
            "---\n{MINIMAL}---\n---\n{}---\n",
            MINIMAL.replace("g1", "g2")
        ))
        .unwrap();
        let names: Vec<&str> = docs.iter().map(GameRuntime::name).collect();
        assert_eq!(names, ["g1", "g2"]);
    }

    #[test]
    fn duplicate_names_in_one_input_are_rejected() {
        let err = parse_documents(&format!("{MINIMAL}---\n{MINIMAL}")).unwrap_err();
        assert_eq!(
            err,
            ParseError::DuplicateName {
                document: 1,
                name: "g1".into(),
                first: 0
            }
        );
        assert_eq!(
            err.to_string(),
            "document 2 (g1): metadata.name: \"g1\" is already used by document 1"
        );
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = format!("{MINIMAL}  <<: {{state: Stopped}}\n");
        assert_eq!(parse_one(&text).unwrap().spec.state, DesiredState::Stopped);
    }

    /// A document of about `size` bytes whose last line is broken YAML: if it were parsed, the
    /// error would be a syntax error, not TooLarge.
    fn oversized(name: &str, size: usize) -> String {
        let mut text = MINIMAL.replace("g1", name) + "  args:\n";
        while text.len() < size {
            text.push_str(
                "    - aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
            );
        }
        text + "  : : broken\n"
    }

    #[test]
    fn an_oversized_document_is_refused_before_parsing() {
        let big = oversized("big", MAX_DOCUMENT_BYTES + 1);
        match parse_documents(&big).unwrap_err() {
            ParseError::TooLarge {
                document: 0,
                size,
                limit,
            } => {
                assert_eq!(size, big.len());
                assert_eq!(limit, MAX_DOCUMENT_BYTES);
            }
            other => panic!("{other:?}"),
        }
        let text = format!("{MINIMAL}---\n{big}");
        let err = parse_documents(&text).unwrap_err();
        assert!(
            matches!(err, ParseError::TooLarge { document: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("document 2: "), "{err}");
        assert!(matches!(
            parse_document(big.as_bytes()),
            Err(ParseError::TooLarge { document: 0, .. })
        ));
    }

    #[test]
    fn aliases_that_expand_past_the_limit_are_refused_while_reading() {
        // 2,000 aliases of a 2,000-item list: 4 million values from 14 KB.
        let text = with_spec_line(&format!(
            "args: &x [{}]\n  command: [{}]",
            vec!["a"; 2_000].join(","),
            vec!["*x"; 2_000].join(",")
        ));
        let err = parse_one(&text).unwrap_err();
        assert_eq!(
            err,
            ParseError::Expands {
                document: 0,
                limit: MAX_DOCUMENT_BYTES
            }
        );
        assert!(
            err.to_string()
                .starts_with("document 1: with its aliases expanded")
        );
    }

    #[test]
    fn a_document_whose_stored_form_would_not_fit_is_refused() {
        // 2 bytes an item here, `  - a\n` (6 bytes) stored: 60,000 items (fewer than MAX_NODES)
        // are 120 KB written and 360 KB stored.
        let text = with_spec_line(&format!("args: [{}]", vec!["a"; 60_000].join(",")));
        assert!(text.len() < MAX_DOCUMENT_BYTES);
        match parse_one(&text).unwrap_err() {
            ParseError::StoredTooLarge {
                document: 0,
                name,
                size,
                limit: MAX_DOCUMENT_BYTES,
            } => {
                assert_eq!(name, "g1");
                assert!(size > MAX_DOCUMENT_BYTES, "{size}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_small_documents_may_add_up_past_the_document_limit() {
        let text: String = (0..500)
            .map(|i| {
                format!(
                    "---\n{}",
                    oversized(&format!("g{i}"), 600).replace("  : : broken\n", "")
                )
            })
            .collect();
        assert!(text.len() > MAX_DOCUMENT_BYTES);
        assert_eq!(parse_documents(&text).unwrap().len(), 500);
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let text = "#".repeat(MAX_FILE_BYTES + 1);
        assert_eq!(
            parse_documents(&text).unwrap_err(),
            ParseError::FileTooLarge {
                size: MAX_FILE_BYTES + 1,
                limit: MAX_FILE_BYTES
            }
        );
    }

    #[test]
    fn parse_document_wants_exactly_one_utf8_document() {
        assert_eq!(
            parse_document(b"").unwrap_err(),
            ParseError::NotOneDocument { found: 0 }
        );
        let two = format!("{MINIMAL}---\n{}", MINIMAL.replace("g1", "g2"));
        assert_eq!(
            parse_document(two.as_bytes()).unwrap_err(),
            ParseError::NotOneDocument { found: 2 }
        );
        assert_eq!(
            parse_document(b"apiVersion: \xff\n").unwrap_err(),
            ParseError::NotUtf8
        );
        assert_eq!(ParseError::NotUtf8.code(), ErrorCode::InvalidRequest);
    }

    #[test]
    fn json_is_read_too() {
        let json = serde_json::to_string(&parse_one(FULL).unwrap()).unwrap();
        assert_eq!(parse_one(&json).unwrap(), parse_one(FULL).unwrap());
    }

    mod round_trip {
        use proptest::prelude::*;

        use super::super::super::fixtures::game;
        use super::*;

        /// Text full of what the scan before parsing looks at: YAML's indicators, quotes,
        /// comment marks, line breaks.
        fn tricky() -> impl Strategy<Value = String> {
            "[\\[\\]{}#&*!|>'\",:?% @`a-z0-9\n-]{0,24}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// The limits on nesting and nodes refuse no real document: whatever the strings
            /// hold, its stored form and its JSON form read back as itself.
            #[test]
            fn documents_of_any_text_read_back_from_their_stored_and_json_forms(
                args in prop::collection::vec(tricky(), 0..8),
                command in prop::collection::vec(tricky(), 0..3),
                env in prop::collection::vec(tricky(), 0..4),
                label in tricky(),
            ) {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let command: Vec<&str> = command.iter().map(String::as_str).collect();
                let mut builder = game("g1")
                    .args(&args)
                    .command(&command)
                    .annotation("rtmanager.dev/note", &label);
                for (i, value) in env.iter().enumerate() {
                    builder = builder.env(&format!("V{i}"), value);
                }
                let mut doc = builder.build();
                doc.apply_defaults();
                let yaml = to_yaml(&doc);
                prop_assert_eq!(parse_document(yaml.as_bytes()), Ok(doc.clone()), "{}", yaml);
                let json = serde_json::to_string(&doc).expect("a document prints as JSON");
                prop_assert_eq!(parse_document(json.as_bytes()), Ok(doc), "{}", json);
            }
        }
    }

    #[test]
    fn document_spans_follow_yaml_markers() {
        fn spans(text: &str) -> Vec<&str> {
            document_spans(text)
                .into_iter()
                .map(|span| &text[span])
                .collect()
        }
        assert_eq!(spans(""), Vec::<&str>::new());
        assert_eq!(spans("# c\n\n"), Vec::<&str>::new());
        assert_eq!(spans("a: 1\n"), ["a: 1\n"]);
        assert_eq!(
            spans("# c\n%YAML 1.2\n---\na: 1\n---\nb: 2"),
            ["# c\n%YAML 1.2\n---\na: 1\n", "---\nb: 2"]
        );
        assert_eq!(spans("a: 1\n---\n"), ["a: 1\n", "---\n"]);
        assert_eq!(
            spans("a: 1\n...\n---\nb: 2\n"),
            ["a: 1\n...\n", "---\nb: 2\n"]
        );
        assert_eq!(
            spans("--- |\n  ---\n  x\n---x: 1\n"),
            ["--- |\n  ---\n  x\n---x: 1\n"]
        );
        assert_eq!(
            spans("a: 1\r\n--- \r\nb: 2\r\n"),
            ["a: 1\r\n", "--- \r\nb: 2\r\n"]
        );
    }
}
