//! parsing: how long the document parser (`parse_documents`, what `rtctl apply -f` and the
//! controller's reads go through) takes to refuse hostile documents — nesting 100,000 levels
//! deep, too many values, alias bombs — and to accept large ones, against parsing a normal
//! document in the same run. No etcd or Docker: the parser alone.

use std::time::{Duration, Instant};

use rtm_core::model::{MAX_DOCUMENT_BYTES, parse_documents};
use serde::Deserialize;
use serde_json::json;

use super::harness::{Result, error};
use super::report::{Figure, Report, Row, Stats, Target};

#[derive(Debug, Clone, clap::Parser)]
pub(crate) struct Args {
    /// Parses of each input.
    #[arg(long, default_value_t = 20)]
    pub(crate) n: usize,
    /// Also time serde_yaml alone (one read into a `serde_yaml::Value`, no limits) on each
    /// input but the alias bomb: what the parser cost before its limits. Slow: ~20 s for
    /// some of the deep flow mappings in a release build.
    #[arg(long)]
    pub(crate) with_serde_yaml: bool,
}

/// Any document must be refused or accepted within this, in a release build (issue 11).
const BOUND_MS: f64 = 100.0;

const HEAD: &str = "\
apiVersion: rtmanager.dev/v1alpha1
kind: GameRuntime
metadata:
  name: bench-parse
  labels: {tier: ranked, region: eu}
spec:
  image: registry.example/galaxy/engine:1.4.2
";

/// A document as people write them: every common field.
fn normal() -> String {
    format!(
        "{HEAD}  state: Running\n  command: [/bin/engine]\n  args: [--port, \"7000\", --tick, \
         \"30\"]\n  env:\n    - {{name: SEED, value: \"42\"}}\n    - {{name: MODE, value: \
         ranked}}\n  ports:\n    - {{containerPort: 7000, hostPort: 17000, protocol: TCP}}\n  \
         resources: {{memory: 512Mi, cpus: \"1.5\"}}\n  stopTimeout: 30s\n  restartPolicy: \
         Always\n"
    )
}

/// One input: what it is, its text, whether the parser must accept it, and whether serde_yaml
/// may read it without limits (an alias bomb takes all the memory there is).
struct Input {
    what: &'static str,
    text: String,
    accepted: bool,
    unbounded_ok: bool,
}

impl Input {
    /// A document the parser must accept.
    fn accepted(what: &'static str, text: String) -> Input {
        Input {
            what,
            text,
            accepted: true,
            unbounded_ok: true,
        }
    }

    /// A document the parser must refuse.
    fn refused(what: &'static str, text: String) -> Input {
        Input {
            what,
            text,
            accepted: false,
            unbounded_ok: true,
        }
    }

    /// Not for serde_yaml without limits.
    fn bomb(self) -> Input {
        Input {
            unbounded_ok: false,
            ..self
        }
    }
}

fn inputs() -> Vec<Input> {
    let deep = 100_000;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let spec = |line: String| format!("{HEAD}  {line}\n");
    let long_args: String = (0..2_000)
        .map(|i| format!("    - \"{i:04}{}\"\n", "x".repeat(80)))
        .collect();
    let brackets = "[{".repeat(50_000);
    vec![
        Input::accepted("normal document", normal()),
        Input::accepted(
            "2,000 args of 85 bytes (accepted)",
            format!("{HEAD}  args:\n{long_args}"),
        ),
        Input::accepted(
            "100,000 brackets in a quoted arg (accepted)",
            spec(format!("args: ['{brackets}']")),
        ),
        Input::refused(
            "flow sequences 100,000 deep",
            spec(format!("args: {}", nested(deep))),
        ),
        Input::refused(
            "flow mappings {a: 50,000 deep",
            spec(format!(
                "args: {}x{}",
                "{a: ".repeat(50_000),
                "}".repeat(50_000)
            )),
        ),
        Input::refused("flow mappings {? 100,000 deep", "{?".repeat(deep)),
        Input::refused(
            "block sequences 100,000 deep",
            spec(format!("command:\n    {}x", "- ".repeat(deep))),
        ),
        Input::refused(
            "block sequences then flow, 50,000 deep",
            spec(format!(
                "args:\n    {}{}",
                "- ".repeat(20),
                "[{? ".repeat(deep / 2)
            )),
        ),
        Input::refused(
            "anchored flow levels, 50,000 deep",
            spec(format!("args: {}", "&a [".repeat(deep / 2))),
        ),
        Input::refused(
            "65,536 values in one list",
            spec(format!("args: [{}]", vec!["a"; 65_536].join(","))),
        ),
        Input::refused(
            "a list repeated by 20,000 aliases",
            spec(format!(
                "args: &x [{}]\n  command: [{}]",
                vec!["a"; 20_000].join(","),
                vec!["*x"; 20_000].join(",")
            )),
        )
        .bomb(),
    ]
}

pub(crate) async fn run(args: &Args) -> Result<Report> {
    if args.n == 0 {
        return Err(error("--n must be at least 1"));
    }
    let mut report = Report::new("parsing");
    let mut baseline = None;
    let mut details = serde_json::Map::new();
    for input in inputs() {
        if input.text.len() > MAX_DOCUMENT_BYTES {
            return Err(error(format!(
                "{}: {} bytes, over the document limit: it would measure the size check",
                input.what,
                input.text.len()
            )));
        }
        let mut samples = Vec::with_capacity(args.n);
        let mut outcome = String::new();
        for _ in 0..args.n {
            let started = Instant::now();
            let result = parse_documents(&input.text);
            samples.push(started.elapsed());
            outcome = match result {
                Ok(_) if input.accepted => "accepted".to_owned(),
                Err(e) if !input.accepted => e.to_string(),
                Ok(_) => return Err(error(format!("{}: accepted", input.what))),
                Err(e) => return Err(error(format!("{}: refused: {e}", input.what))),
            };
        }
        let stats = Stats::of(&samples).ok_or_else(|| error("no samples"))?;
        let serde_yaml_alone =
            (args.with_serde_yaml && input.unbounded_ok).then(|| serde_yaml_alone(&input.text));
        details.insert(
            input.what.to_owned(),
            json!({
                "bytes": input.text.len(),
                "outcome": outcome.chars().take(200).collect::<String>(),
                "stats": stats.json(),
                "serde_yaml_alone_ms": serde_yaml_alone.map(|d| d.as_secs_f64() * 1000.0),
            }),
        );
        let Some(normal) = baseline else {
            // The first input is the baseline of every row.
            baseline = Some(stats.p50);
            report.row(Row::new(
                format!("{} ({} bytes) p50", input.what, input.text.len()),
                Figure::ms(stats.p50),
            ));
            continue;
        };
        let verb = if input.accepted { "accept" } else { "refuse" };
        report.row(
            Row::new(format!("{verb}: {} max", input.what), Figure::ms(stats.max))
                .baseline(Figure::ms(normal))
                .target(Target::AtMost(BOUND_MS)),
        );
        if let Some(before) = serde_yaml_alone {
            report.row(Row::new(
                format!("  serde_yaml alone, {}", input.what),
                Figure::ms(before),
            ));
        }
    }
    report.note(format!(
        "N={} parses of each input through parse_documents (scan, read, validate, defaults, \
         stored-size check); max against the p50 of a normal document; target: every input \
         refused or accepted within {BOUND_MS} ms",
        args.n
    ));
    report.detail("n", json!(args.n));
    report.detail("inputs", serde_json::Value::Object(details));
    Ok(report)
}

/// One read of `text` into a `serde_yaml::Value`, without our limits (errors ignored: only
/// the time counts).
fn serde_yaml_alone(text: &str) -> Duration {
    let started = Instant::now();
    for document in serde_yaml::Deserializer::from_str(text) {
        if serde_yaml::Value::deserialize(document).is_err() {
            break;
        }
    }
    started.elapsed()
}
