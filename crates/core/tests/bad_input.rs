//! Hostile documents through the parser, as `rtctl apply -f` reads a file and the controller
//! reads a value back from etcd: every one is refused with `invalid_request`, a one-line
//! message that names what is wrong (and does not echo megabytes of input back), quickly, and
//! without a panic. The cheap, deterministic companion of the `parse_documents` fuzz target
//! (`scripts/fuzz`): these are the inputs a fuzzer is unlikely to build by itself.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rtm_core::ErrorCode;
use rtm_core::model::{
    GameRuntime, MAX_DOCUMENT_BYTES, MAX_FILE_BYTES, ParseError, parse_document, parse_documents,
    to_yaml,
};

/// Bound on refusing one input, in the unoptimized test build. Reading 16 MiB takes tens of
/// milliseconds; a refusal that takes seconds means the parser did the work the input asked
/// for (expanded an alias bomb, recursed into the nesting, parsed past a size limit).
const QUICK: Duration = Duration::from_secs(3);

/// Bound on an error message: enough for a path, a rule and a short quote of the value; a
/// 10 MB input must not come back as a 10 MB error line.
const MAX_MESSAGE_BYTES: usize = 4096;

const MINIMAL: &str = "\
apiVersion: rtmanager.dev/v1alpha1
kind: GameRuntime
metadata:
  name: g1
spec:
  image: rtmanager-test/engine:1
";

/// MINIMAL with `line` added under `spec:`.
fn with_spec(line: &str) -> String {
    format!("{MINIMAL}  {line}\n")
}

/// MINIMAL with `metadata.name` written as `name` (YAML text, quoted if need be).
fn named(name: &str) -> String {
    MINIMAL.replace("name: g1", &format!("name: {name}"))
}

enum Input {
    /// Through `parse_documents`, as rtctl reads a file.
    Text(String),
    /// Through `parse_document`, as the controller reads a value from etcd.
    Bytes(Vec<u8>),
}

/// One hostile input: what it is, the input, and a piece of the message it must be refused
/// with.
struct Case {
    what: String,
    input: Input,
    expect: &'static str,
}

fn text(what: impl Into<String>, text: impl Into<String>, expect: &'static str) -> Case {
    Case {
        what: what.into(),
        input: Input::Text(text.into()),
        expect,
    }
}

fn bytes(what: impl Into<String>, bytes: impl Into<Vec<u8>>, expect: &'static str) -> Case {
    Case {
        what: what.into(),
        input: Input::Bytes(bytes.into()),
        expect,
    }
}

/// Runs every case (all of them, so one failure shows every other one too) and fails naming
/// each case that was accepted, panicked, was slow, or was refused the wrong way.
fn all_refused(cases: Vec<Case>) {
    all_refused_within(cases, QUICK);
}

/// [`all_refused`], each case within `bound`.
fn all_refused_within(cases: Vec<Case>, bound: Duration) {
    let mut failures = Vec::new();
    for case in cases {
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| match &case.input {
            Input::Text(text) => parse_documents(text),
            Input::Bytes(bytes) => parse_document(bytes).map(|doc| vec![doc]),
        }));
        let took = started.elapsed();
        let what = &case.what;
        match result {
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{what}: panicked: {message}"));
            }
            Ok(Ok(docs)) => failures.push(format!("{what}: accepted: {}", names(&docs))),
            Ok(Err(error)) => {
                if let Some(problem) = wrongly_refused(&error, case.expect) {
                    failures.push(format!("{what}: {problem}"));
                }
            }
        }
        if took > bound {
            failures.push(format!("{what}: took {took:?}, more than {bound:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "hostile inputs handled wrongly:\n{}",
        failures.join("\n")
    );
}

/// What is wrong with how `error` refuses, if anything.
fn wrongly_refused(error: &ParseError, expect: &str) -> Option<String> {
    let message = error.to_string();
    let shown = || {
        let mut short: String = message.chars().take(300).collect();
        if short.len() < message.len() {
            short.push('…');
        }
        short
    };
    if error.code() != ErrorCode::InvalidRequest {
        Some(format!("refused with {:?}: {}", error.code(), shown()))
    } else if !message.contains(expect) {
        Some(format!("refused, but not with {expect:?}: {}", shown()))
    } else if message.len() > MAX_MESSAGE_BYTES {
        Some(format!(
            "the message is {} bytes long (more than {MAX_MESSAGE_BYTES}): {}",
            message.len(),
            shown()
        ))
    } else if message.contains('\n') {
        Some(format!("the message is not one line: {message:?}"))
    } else {
        None
    }
}

fn names(docs: &[GameRuntime]) -> String {
    let names: Vec<String> = docs
        .iter()
        .map(|doc| format!("{:?}", doc.metadata.name))
        .collect();
    format!("[{}]", names.join(", "))
}

/// `depth` nested flow sequences, `[[[...]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Bound on refusing a document of 100,000 levels in the unoptimized test build. The scan that
/// refuses it reads 200 KB once, in milliseconds; before it, the parser's scanner spent time
/// quadratic in the depth of flow nesting (minutes in this build, ~10 s in a release build
/// for `{a: ` nested 50,000 deep) before its recursion limit applied.
const DEEP_BOUND: Duration = Duration::from_secs(10);

/// The refusal of a document nested too deep, from its first line past the limit.
const TOO_DEEP: &str = "lists and mappings nest more than 32 levels deep (the limit";

#[test]
fn deeply_nested_yaml_is_refused_quickly_naming_the_limit() {
    assert_eq!(rtm_core::model::MAX_NESTING, 32, "TOO_DEEP names the limit");
    let depth = 100_000;
    let cases = vec![
        text(
            "flow sequences as spec.args",
            with_spec(&format!("args: {}", nested(depth))),
            "document 1: line 7: lists and mappings nest more than 32 levels deep",
        ),
        text(
            "the whole document nested",
            nested(depth),
            "document 1: line 1: lists and mappings nest more than 32 levels deep",
        ),
        bytes(
            "nested, read back from etcd",
            nested(depth).into_bytes(),
            TOO_DEEP,
        ),
        text("an unclosed nest", "[".repeat(depth), TOO_DEEP),
        // 4 bytes a level: 50,000 levels fill the document limit.
        text(
            "flow mappings as a label",
            MINIMAL.replace(
                "name: g1",
                &format!(
                    "name: g1\n  labels: {}x{}",
                    "{a: ".repeat(50_000),
                    "}".repeat(50_000)
                ),
            ),
            "document 1: line 5: lists and mappings nest more than 32 levels deep",
        ),
        text(
            "flow mappings of explicit keys, unclosed",
            "{?".repeat(depth),
            TOO_DEEP,
        ),
        // Each `- ` one column further in: a block sequence in a block sequence.
        text(
            "block sequences as spec.command",
            with_spec(&format!("command:\n    {}x", "- ".repeat(depth))),
            "document 1: line 8: lists and mappings nest more than 32 levels deep",
        ),
        // n levels of block mappings take n * n / 2 bytes of indentation: 700 fill a document.
        text(
            "block mappings, indented a space a level",
            format!(
                "{MINIMAL}{}",
                (0..700)
                    .map(|level| format!("{}a:\n", " ".repeat(level)))
                    .collect::<String>()
            ),
            "document 1: line 39: lists and mappings nest more than 32 levels deep",
        ),
        text(
            "block sequences, then flow collections inside them",
            with_spec(&format!(
                "args:\n    {}{}",
                "- ".repeat(20),
                "[{? ".repeat(depth / 2)
            )),
            TOO_DEEP,
        ),
        text(
            "anchored levels",
            with_spec(&format!("args: {}", "&a [".repeat(depth / 2))),
            TOO_DEEP,
        ),
        text(
            "tagged levels",
            with_spec(&format!("args: {}", "!t [".repeat(depth / 2))),
            TOO_DEEP,
        ),
        text(
            "an alias at every level",
            with_spec(&format!("x: &a 1\n  args: {}", "[*a, ".repeat(depth / 3))),
            TOO_DEEP,
        ),
        text(
            "pairs in flow sequences (each a mapping of its own)",
            with_spec(&format!("args: {}", "[a: ".repeat(depth / 2))),
            TOO_DEEP,
        ),
        // Within the limit in the text, past it once aliases are expanded: refused while
        // reading, before the parser's own recursion limit (128).
        text(
            "aliases that repeat a deep list inside a deep list",
            with_spec(&format!(
                "x: &deep {}\n  args: {}*deep{}",
                nested(30),
                "[".repeat(30),
                "]".repeat(30)
            )),
            "document 1: lists and mappings nest more than 32 levels deep",
        ),
    ];
    for case in &cases {
        if let Input::Text(text) = &case.input {
            assert!(
                text.len() <= MAX_DOCUMENT_BYTES,
                "{}: {}",
                case.what,
                text.len()
            );
        }
    }
    all_refused_within(cases, DEEP_BOUND);
}

#[test]
fn brackets_in_comments_and_strings_are_not_nesting() {
    let deep = "[{".repeat(50_000);
    let documents = [
        ("a comment line", format!("# {deep}\n{MINIMAL}")),
        (
            "a comment after a value",
            format!("{MINIMAL}  stopTimeout: 5s # {deep}\n"),
        ),
        (
            "a single-quoted string",
            with_spec(&format!("args: ['{deep}']")),
        ),
        (
            "a double-quoted string",
            with_spec(&format!("args: [\"{deep}\"]")),
        ),
        (
            "a block scalar",
            with_spec(&format!("args:\n  - |\n    {deep}\n    {deep}")),
        ),
        ("a plain scalar", with_spec(&format!("args:\n  - x{deep}"))),
    ];
    for (what, text) in documents {
        assert!(text.len() <= MAX_DOCUMENT_BYTES, "{what}: {}", text.len());
        let started = Instant::now();
        let parsed = parse_documents(&text);
        assert!(
            started.elapsed() < DEEP_BOUND,
            "{what}: took {:?}",
            started.elapsed()
        );
        let docs = parsed.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        assert_eq!(docs.len(), 1, "{what}");
        assert_eq!(
            parse_document(to_yaml(&docs[0]).as_bytes()).as_ref(),
            Ok(&docs[0]),
            "{what}: the stored form reads back"
        );
    }
}

#[test]
fn documents_of_too_many_values_are_refused_before_parsing() {
    let limit = rtm_core::model::MAX_NODES;
    assert_eq!(limit, 65_536, "the message names the limit");
    // `- a` lines: 6 bytes a value, 65,537 of them fit in no stored document.
    let many = with_spec(&format!("args: [{}]", vec!["a"; limit].join(",")));
    assert!(many.len() <= MAX_DOCUMENT_BYTES);
    all_refused(vec![text(
        "65,536 args and the rest of the document",
        many,
        "document 1: line 7: more than 65536 values (scalars, aliases, lists and mappings), the \
         limit for one document",
    )]);
}

/// `levels` anchors, each a list of `fanout` aliases of the one before: fanout^levels strings.
fn billion_laughs(levels: usize, fanout: usize) -> String {
    let mut text = format!("{MINIMAL}  args: &l0 [lol]\n");
    let mut previous = "l0".to_owned();
    for level in 1..=levels {
        let items = vec![format!("*{previous}"); fanout].join(", ");
        text.push_str(&format!("  x{level}: &l{level} [{items}]\n"));
        previous = format!("l{level}");
    }
    text.push_str(&format!("  command: *{previous}\n"));
    text
}

#[test]
fn alias_bombs_are_refused_before_they_expand() {
    // The nested bombs (billion laughs) are refused by serde_yaml's own guard, 100 alias
    // jumps per event of the document.
    // The quadratic bomb: a 20,000-item list repeated by 20,000 aliases is 400 million values
    // from a 100 KB document. serde_yaml's own guard (100 alias jumps per event) lets it
    // through; before the parser read documents on a budget, this took all of the machine's
    // memory and aborted rtctl (and the controller, reading it back from etcd).
    let quadratic = with_spec(&format!(
        "args: &x [{}]\n  command: [{}]",
        vec!["a"; 20_000].join(","),
        vec!["*x"; 20_000].join(",")
    ));
    assert!(quadratic.len() < MAX_DOCUMENT_BYTES);
    // One long string repeated: few values, many bytes.
    let long_string = with_spec(&format!(
        "args: [&s \"{}\"{}]",
        "x".repeat(100_000),
        ", *s".repeat(10_000)
    ));
    // As merge keys (`<<`), the way fleet files share defaults.
    let merged = MINIMAL.replace(
        "spec:\n",
        &format!(
            "  labels: &big {{{}}}\nspec:\n  <<: [{}]\n",
            (0..1_000)
                .map(|i| format!("k{i}: v"))
                .collect::<Vec<_>>()
                .join(", "),
            vec!["*big"; 5_000].join(", ")
        ),
    );
    all_refused(vec![
        text(
            "billion laughs, 9 levels of 10",
            billion_laughs(9, 10),
            "repetition limit exceeded",
        ),
        text(
            "billion laughs, 30 levels of 2",
            billion_laughs(30, 2),
            "repetition limit exceeded",
        ),
        bytes(
            "billion laughs read back from etcd",
            billion_laughs(9, 10).into_bytes(),
            "repetition limit exceeded",
        ),
        text(
            "a list repeated 20,000 times",
            quadratic.clone(),
            "aliases expanded",
        ),
        bytes(
            "a list repeated, read back from etcd",
            quadratic.into_bytes(),
            "aliases expanded",
        ),
        text(
            "a 100 KB string repeated 10,000 times",
            long_string,
            "aliases expanded",
        ),
        text("a mapping merged 5,000 times", merged, "aliases expanded"),
        // serde_yaml resolves it, to itself, until the reader's depth limit.
        text(
            "an alias to its own anchor",
            with_spec("args: &a [*a]"),
            TOO_DEEP,
        ),
        text(
            "an alias to no anchor",
            with_spec("args: *nowhere"),
            "unknown anchor",
        ),
    ]);
}

#[test]
fn a_few_aliases_still_work() {
    let text = MINIMAL.replace("name: g1", "name: g1\n  labels: &labels {tier: ranked}")
        + "  args: &args [--port, \"7000\"]\n  command: [*args]\n";
    // `command: [*args]` nests a list in a list: refused for its type, after expansion.
    let error = parse_documents(&text).unwrap_err();
    assert!(error.to_string().contains("spec.command[0]"), "{error}");
    let text = MINIMAL.replace("name: g1", "name: g1\n  labels: &labels {tier: ranked}")
        + "  env: [&seed {name: SEED, value: \"42\"}]\n  <<: {args: [a, b]}\n";
    let doc = parse_documents(&text).unwrap().remove(0);
    assert_eq!(doc.spec.args, ["a", "b"]);
    assert_eq!(doc.metadata.labels["tier"], "ranked");
}

/// A document of about `size` bytes: MINIMAL with args of `item`.
fn padded(size: usize, item: &str) -> String {
    let mut text = with_spec("args:");
    let line = format!("    - {item}\n");
    while text.len() < size {
        text.push_str(&line);
    }
    text
}

#[test]
fn oversized_documents_are_refused_before_they_are_parsed() {
    let ten_mb = padded(
        10 * 1024 * 1024,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let ten_mb_one_line = with_spec(&format!("args: [\"{}\"]", "a".repeat(10 * 1024 * 1024)));
    let unterminated = format!("{MINIMAL}  args: [\"{}", "a".repeat(10 * 1024 * 1024));
    let huge_file = format!("{MINIMAL}---\n{}", "#".repeat(MAX_FILE_BYTES));
    all_refused(vec![
        text(
            "a 10 MB document",
            ten_mb.clone(),
            "more than the limit of 262144 bytes",
        ),
        bytes(
            "a 10 MB value in etcd",
            ten_mb.into_bytes(),
            "more than the limit of 262144 bytes",
        ),
        text("a 10 MB line", ten_mb_one_line, "more than the limit"),
        text(
            "a 10 MB unterminated string",
            unterminated,
            "more than the limit",
        ),
        text(
            "a file over 16 MiB",
            huge_file,
            "more than the limit of 16777216 bytes",
        ),
        text(
            "a 10 MB name",
            named(&"a".repeat(10 * 1024 * 1024)),
            "more than the limit",
        ),
    ]);
}

#[test]
fn long_values_are_quoted_briefly_in_messages() {
    let long = "x".repeat(200_000);
    all_refused(vec![
        text("a 200 KB name", named(&long), "metadata.name"),
        bytes(
            "a 200 KB name from etcd",
            named(&long).into_bytes(),
            "metadata.name",
        ),
        text(
            "a 200 KB image",
            MINIMAL.replace("rtmanager-test/engine:1", &long),
            "spec.image",
        ),
        text(
            "a 200 KB hostname",
            with_spec(&format!("hostname: {long}")),
            "spec.hostname",
        ),
        text(
            "a 200 KB node",
            with_spec(&format!("node: {long}")),
            "spec.node",
        ),
        text(
            "a 200 KB label key",
            // An explicit key (`? `): libyaml refuses implicit keys over 1024 characters.
            MINIMAL.replace(
                "name: g1",
                &format!("name: g1\n  labels:\n    ? {long}\n    : x"),
            ),
            "metadata.labels",
        ),
        text(
            "a 200 KB label value",
            MINIMAL.replace("name: g1", &format!("name: g1\n  labels: {{a: {long}}}")),
            "metadata.labels",
        ),
        text(
            "a 200 KB annotation key",
            MINIMAL.replace(
                "name: g1",
                &format!("name: g1\n  annotations:\n    ? {long}\n    : x"),
            ),
            "metadata.annotations",
        ),
        text(
            "a 200 KB env name",
            with_spec(&format!("env: [{{name: {long}-}}]")),
            "spec.env[0].name",
        ),
        text(
            "a 200 KB host IP",
            with_spec(&format!("ports: [{{containerPort: 1, hostIp: {long}}}]")),
            "spec.ports[0].hostIp",
        ),
        text(
            "a 200 KB memory",
            with_spec(&format!("resources: {{memory: {long}}}")),
            "spec.resources.memory",
        ),
        text(
            "a 200 KB cpus",
            with_spec(&format!("resources: {{cpus: {long}}}")),
            "spec.resources.cpus",
        ),
        text(
            "a 200 KB stopTimeout",
            with_spec(&format!("stopTimeout: {long}")),
            "spec.stopTimeout",
        ),
        text(
            "a 200 KB restart policy",
            with_spec(&format!("restartPolicy: {long}")),
            "spec.restartPolicy",
        ),
        text(
            "a 200 KB unknown field",
            with_spec(&format!("? {long}\n  : 1")),
            "spec.",
        ),
        text(
            "a 200 KB apiVersion",
            MINIMAL.replace("rtmanager.dev/v1alpha1", &long),
            "apiVersion",
        ),
        text(
            "a 200 KB kind",
            MINIMAL.replace("kind: GameRuntime", &format!("kind: {long}")),
            "kind",
        ),
    ]);
}

#[test]
fn a_document_whose_stored_form_would_not_fit_is_refused() {
    // 2 bytes an item in a flow list, 8 bytes as the `    - a` lines etcd would keep: the
    // file fits in the limit, the stored form would not, and the controller could never have
    // read it back.
    let items = rtm_core::model::MAX_NODES - 100;
    let flow = with_spec(&format!("args: [{}]", vec!["a"; items].join(",")));
    assert!(flow.len() <= MAX_DOCUMENT_BYTES);
    all_refused(vec![text(
        "a flow list that prints three times as long",
        flow,
        "stored (aliases and merge keys expanded",
    )]);

    // Whatever is accepted reads back as itself, from its stored form.
    let largest = padded(MAX_DOCUMENT_BYTES - 100, "a");
    let doc = parse_documents(&largest).unwrap().remove(0);
    let stored = to_yaml(&doc);
    assert!(stored.len() <= MAX_DOCUMENT_BYTES, "{}", stored.len());
    assert_eq!(parse_document(stored.as_bytes()).unwrap(), doc);
}

#[test]
fn invalid_utf8_is_refused_as_not_text() {
    let doc = |bad: &[u8]| {
        let mut bytes = MINIMAL.as_bytes().to_vec();
        bytes.extend_from_slice(b"  args: [\"");
        bytes.extend_from_slice(bad);
        bytes.extend_from_slice(b"\"]\n");
        bytes
    };
    all_refused(vec![
        bytes("a lone 0xff", doc(b"\xff"), "not UTF-8"),
        bytes("a lone continuation byte", doc(b"\x80"), "not UTF-8"),
        bytes("an overlong '/'", doc(b"\xc0\xaf"), "not UTF-8"),
        bytes("an encoded surrogate", doc(b"\xed\xa0\x80"), "not UTF-8"),
        bytes(
            "a code point past U+10FFFF",
            doc(b"\xf4\x90\x80\x80"),
            "not UTF-8",
        ),
        bytes(
            "a sequence cut at the end",
            &b"metadata: \xe2\x82"[..],
            "not UTF-8",
        ),
        bytes(
            "UTF-16 with its BOM",
            &b"\xff\xfea\x00:\x00 \x00b\x00"[..],
            "not UTF-8",
        ),
        bytes(
            "Latin-1 bytes in the name",
            {
                let mut bytes = named("cafX").into_bytes();
                let at = bytes.iter().position(|b| *b == b'X').unwrap();
                bytes[at] = 0xe9;
                bytes
            },
            "not UTF-8",
        ),
    ]);
}

#[test]
fn nul_bytes_are_refused_wherever_they_are() {
    all_refused(vec![
        text(
            "a raw NUL in the stream",
            format!("{MINIMAL}\0"),
            "control characters are not allowed",
        ),
        text(
            "a raw NUL in the name",
            named("g\0x"),
            "control characters are not allowed",
        ),
        bytes(
            "a raw NUL read back from etcd",
            named("g\0x").into_bytes(),
            "control characters are not allowed",
        ),
        text(
            "an escaped NUL in the name",
            named("\"g\\0x\""),
            "metadata.name",
        ),
        text(
            "an escaped NUL in the image",
            MINIMAL.replace("rtmanager-test/engine:1", "\"rtmanager-test/engine:1\\0\""),
            "spec.image",
        ),
        text(
            "an escaped NUL in an arg",
            with_spec("args: [\"a\\0b\"]"),
            "spec.args[0]",
        ),
        text(
            "an escaped NUL in a command",
            with_spec("command: [\"/bin/engine\\0\"]"),
            "spec.command[0]",
        ),
        text(
            "an escaped NUL in an env value",
            with_spec("env: [{name: A, value: \"x\\0\"}]"),
            "spec.env[0].value",
        ),
        text(
            "an escaped NUL in an env name",
            with_spec("env: [{name: \"A\\0\"}]"),
            "spec.env[0].name",
        ),
        text(
            "an escaped NUL in a label",
            MINIMAL.replace("name: g1", "name: g1\n  labels: {a: \"b\\0\"}"),
            "metadata.labels",
        ),
        text(
            "an escaped NUL in a hostname",
            with_spec("hostname: \"g\\0\""),
            "spec.hostname",
        ),
        text(
            "an escaped NUL in the restart token",
            with_spec("restartToken: \"t\\0\""),
            "spec.restartToken",
        ),
        text(
            "an escaped NUL in a host IP",
            with_spec("ports: [{containerPort: 1, hostIp: \"127.0.0.1\\0\"}]"),
            "spec.ports[0].hostIp",
        ),
        text(
            "an escaped NUL in the node",
            with_spec("node: \"n\\0\""),
            "spec.node",
        ),
        text(
            "a NUL as the whole input",
            "\0",
            "control characters are not allowed",
        ),
    ]);
}

#[test]
fn port_numbers_out_of_range_are_refused_naming_the_field() {
    let port = |value: &str| with_spec(&format!("ports: [{{containerPort: {value}}}]"));
    let host_port = |value: &str| {
        with_spec(&format!(
            "ports: [{{containerPort: 7000, hostPort: {value}}}]"
        ))
    };
    all_refused(vec![
        text(
            "65536",
            port("65536"),
            "spec.ports[0].containerPort: must be between 1 and 65535",
        ),
        text(
            "0",
            port("0"),
            "spec.ports[0].containerPort: must be between 1 and 65535",
        ),
        text(
            "-1",
            port("-1"),
            "spec.ports[0].containerPort: must be between 1 and 65535",
        ),
        text(
            "i64::MAX",
            port("9223372036854775807"),
            "spec.ports[0].containerPort",
        ),
        text(
            "u64::MAX",
            port("18446744073709551615"),
            "spec.ports[0].containerPort",
        ),
        text(
            "2^64",
            port("18446744073709551616"),
            "spec.ports[0].containerPort",
        ),
        text(
            "a 1000-digit number",
            port(&"9".repeat(1000)),
            "spec.ports[0].containerPort",
        ),
        text(
            "-2^63 - 1",
            port("-9223372036854775809"),
            "spec.ports[0].containerPort",
        ),
        text("1e10", port("1e10"), "spec.ports[0].containerPort"),
        text("7000.5", port("7000.5"), "spec.ports[0].containerPort"),
        text(".inf", port(".inf"), "spec.ports[0].containerPort"),
        text(".nan", port(".nan"), "spec.ports[0].containerPort"),
        text("0x10000", port("0x10000"), "spec.ports[0].containerPort"),
        text("a string", port("\"7000\""), "spec.ports[0].containerPort"),
        text(
            "hostPort 65536",
            host_port("65536"),
            "spec.ports[0].hostPort: must be between 1 and 65535",
        ),
        text(
            "hostPort -17000",
            host_port("-17000"),
            "spec.ports[0].hostPort",
        ),
        text(
            "hostPort 2^64",
            host_port("18446744073709551616"),
            "spec.ports[0].hostPort",
        ),
        text("hostPort 0", host_port("0"), "spec.ports[0].hostPort"),
    ]);
}

#[test]
fn negative_and_absurd_durations_are_refused() {
    let timeout = |value: &str| with_spec(&format!("stopTimeout: {value}"));
    all_refused(vec![
        text("-5s", timeout("-5s"), "spec.stopTimeout"),
        text("\"-1m\"", timeout("\"-1m\""), "spec.stopTimeout"),
        text("- 5s (a list)", timeout("[-5s]"), "spec.stopTimeout"),
        text("a unicode minus", timeout("\u{2212}5s"), "spec.stopTimeout"),
        text("-30 without a unit", timeout("-30"), "spec.stopTimeout"),
        text("0.5s", timeout("0.5s"), "spec.stopTimeout"),
        text(
            "10m1s",
            timeout("10m1s"),
            "spec.stopTimeout: must be at most 10m",
        ),
        text("1000 years", timeout("1000years"), "spec.stopTimeout"),
        text(
            "overflowing seconds",
            timeout("99999999999999999999999s"),
            "spec.stopTimeout",
        ),
        text(
            "u64::MAX seconds",
            timeout("18446744073709551615s"),
            "spec.stopTimeout",
        ),
        text(
            "a 1000-digit duration",
            timeout(&format!("{}s", "9".repeat(1000))),
            "spec.stopTimeout",
        ),
        text("an empty duration", timeout("\"\""), "spec.stopTimeout"),
        text(
            "a duration without a number",
            timeout("s"),
            "spec.stopTimeout",
        ),
        text(
            "a negative timestamp",
            MINIMAL.replace(
                "name: g1",
                "name: g1\n  creationTimestamp: -2024-05-01T12:00:00Z",
            ),
            "metadata.creationTimestamp",
        ),
        text(
            "a timestamp in year 10000",
            MINIMAL.replace(
                "name: g1",
                "name: g1\n  creationTimestamp: 10000-01-01T00:00:00Z",
            ),
            "metadata.creationTimestamp",
        ),
    ]);
}

#[test]
fn names_that_only_look_like_valid_names_are_refused() {
    // Each looks like (or normalizes to) an ASCII DNS label, which is exactly what makes it
    // dangerous as an etcd key and a container name.
    let confusables = [
        ("Cyrillic a", "g\u{430}me"),
        ("Greek omicron", "r\u{3bf}om-1"),
        ("fullwidth letters", "\u{ff47}\u{ff41}\u{ff4d}\u{ff45}"),
        ("fullwidth digit", "game-\u{ff11}"),
        ("zero-width space", "game\u{200b}-1"),
        ("zero-width joiner", "ga\u{200d}me"),
        ("soft hyphen", "ga\u{ad}me"),
        ("combining acute", "game\u{301}"),
        ("dotless i", "\u{131}d"),
        ("Kelvin sign", "\u{212a}8s"),
        ("long s", "\u{17f}erver"),
        ("roman numeral one", "game-\u{2160}"),
        ("non-breaking hyphen", "game\u{2011}1"),
        ("en dash", "game\u{2013}1"),
        ("right-to-left override", "game\u{202e}1-"),
        ("byte-order mark", "\u{feff}game"),
        ("mathematical bold", "\u{1d420}ame"),
        ("ligature fi", "\u{fb01}eld"),
        ("upper case", "Game-1"),
        (
            "64 characters",
            "a123456789012345678901234567890123456789012345678901234567890123",
        ),
    ];
    let mut cases = Vec::new();
    for (what, name) in confusables {
        // Raw, in a YAML double-quoted scalar (Rust's `{:?}` escapes are not YAML's).
        let quoted = format!("\"{name}\"");
        cases.push(text(
            format!("name with {what}"),
            named(&quoted),
            "metadata.name",
        ));
        cases.push(bytes(
            format!("name with {what}, from etcd"),
            named(&quoted).into_bytes(),
            "metadata.name",
        ));
        cases.push(text(
            format!("hostname with {what}"),
            with_spec(&format!("hostname: {quoted}")),
            "spec.hostname",
        ));
        cases.push(text(
            format!("node with {what}"),
            with_spec(&format!("node: {quoted}")),
            "spec.node",
        ));
    }
    all_refused(cases);
}

#[test]
fn tags_are_ignored_and_not_stored() {
    for text in [format!("!GameRuntime\n{MINIMAL}"), named("!custom g1")] {
        let doc = parse_document(text.as_bytes()).unwrap();
        assert_eq!(doc.metadata.name, "g1");
        assert!(!to_yaml(&doc).contains('!'), "{}", to_yaml(&doc));
    }
}

#[test]
fn odd_yaml_is_refused_cleanly() {
    all_refused(vec![
        text(
            "binary data as the image",
            MINIMAL.replace("rtmanager-test/engine:1", "!!binary aGVsbG8="),
            "spec.image",
        ),
        text(
            "a non-string key in labels",
            MINIMAL.replace("name: g1", "name: g1\n  labels: {1: x}"),
            "metadata.labels",
        ),
        text(
            "a list as a label key",
            MINIMAL.replace("name: g1", "name: g1\n  labels: {[a]: x}"),
            "metadata.labels",
        ),
        text(
            "a duplicate key",
            MINIMAL.replace("name: g1", "name: g1\n  name: g2"),
            "duplicate entry",
        ),
        text("a null name", named("~"), "metadata.name"),
        text("a boolean name", named("true"), "metadata.name"),
        text("a number as the whole document", "42", "document 1"),
        text(
            "a complex key",
            format!("{MINIMAL}? [a, b]\n: c\n"),
            "document 1",
        ),
        text(
            "a YAML directive from the future",
            format!("%YAML 9.9\n---\n{MINIMAL}"),
            "document 1",
        ),
        text(
            "an undefined tag handle",
            format!("{MINIMAL}  args: [!e!x a]\n"),
            "document 1",
        ),
        text(
            "a tab for indentation",
            MINIMAL.replace("  image", "\timage"),
            "document 1",
        ),
        text(
            "a second document that is bad",
            format!("{MINIMAL}---\n{}", named("Bad")),
            "document 2 (Bad)",
        ),
        text(
            "100,000 empty documents then a bad one",
            format!("{}{}", "---\n".repeat(100_000), named("Bad")),
            "metadata.name",
        ),
    ]);
}
