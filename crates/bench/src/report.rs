//! What a scenario reports: rows of "controller vs baseline" figures with
//! their ratio and target, printed as a table and written as JSON, plus
//! free-form details (breakdowns, parameters) for the JSON only.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) metric: String,
    pub(crate) controller: Figure,
    pub(crate) baseline: Option<Figure>,
    /// What the figure should be; `None` when it is informative only.
    pub(crate) target: Option<Target>,
}

/// A measured value and its unit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Figure {
    Millis(f64),
    Seconds(f64),
    MiB(f64),
    Count(f64),
}

impl Figure {
    pub(crate) fn ms(d: Duration) -> Figure {
        Figure::Millis(d.as_secs_f64() * 1000.0)
    }

    pub(crate) fn value(self) -> f64 {
        match self {
            Figure::Millis(v) | Figure::Seconds(v) | Figure::MiB(v) | Figure::Count(v) => v,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Figure::Millis(_) => "ms",
            Figure::Seconds(_) => "s",
            Figure::MiB(_) => "MiB",
            Figure::Count(_) => "",
        }
    }

    fn text(self) -> String {
        match self {
            Figure::Count(v) if v.fract() == 0.0 => format!("{v:.0}"),
            Figure::Count(v) => format!("{v:.2}"),
            Figure::Millis(v) if v < 10.0 => format!("{v:.2} ms"),
            Figure::Millis(v) => format!("{v:.1} ms"),
            Figure::Seconds(v) => format!("{v:.2} s"),
            Figure::MiB(v) => format!("{v:.1} MiB"),
        }
    }
}

/// A pass/fail bound.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// controller / baseline at most this.
    RatioAtMost(f64),
    /// The controller's figure at most this (in its own unit).
    AtMost(f64),
}

impl Target {
    fn text(self, unit: &str) -> String {
        match self {
            Target::RatioAtMost(r) => format!("ratio ≤ {r:.2}"),
            Target::AtMost(v) if unit.is_empty() => format!("≤ {v}"),
            Target::AtMost(v) => format!("≤ {v} {unit}"),
        }
    }
}

impl Row {
    pub(crate) fn new(metric: impl Into<String>, controller: Figure) -> Row {
        Row {
            metric: metric.into(),
            controller,
            baseline: None,
            target: None,
        }
    }

    pub(crate) fn baseline(mut self, baseline: Figure) -> Row {
        self.baseline = Some(baseline);
        self
    }

    pub(crate) fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        let baseline = self.baseline?.value();
        (baseline > 0.0).then(|| self.controller.value() / baseline)
    }

    pub(crate) fn passed(&self) -> Option<bool> {
        Some(match self.target? {
            Target::RatioAtMost(bound) => self.ratio()? <= bound,
            Target::AtMost(bound) => self.controller.value() <= bound,
        })
    }

    fn json(&self) -> Value {
        json!({
            "metric": self.metric,
            "controller": self.controller.value(),
            "baseline": self.baseline.map(Figure::value),
            "unit": self.controller.unit(),
            "ratio": self.ratio(),
            "target": self.target.map(|t| t.text(self.controller.unit())),
            "passed": self.passed(),
        })
    }
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) rows: Vec<Row>,
    pub(crate) details: Map<String, Value>,
    pub(crate) notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_owned(),
            rows: Vec::new(),
            details: Map::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(crate) fn detail(&mut self, key: &str, value: Value) {
        self.details.insert(key.to_owned(), value);
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The table, as printed.
    pub(crate) fn table(&self) -> String {
        let header = ["metric", "controller", "baseline", "ratio", "target", ""];
        let lines: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.metric.clone(),
                    row.controller.text(),
                    row.baseline.map(Figure::text).unwrap_or_else(|| "-".into()),
                    row.ratio()
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(|| "-".into()),
                    row.target
                        .map(|t| t.text(row.controller.unit()))
                        .unwrap_or_default(),
                    match row.passed() {
                        Some(true) => "ok".into(),
                        Some(false) => "MISSED".into(),
                        None => String::new(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = format!("\n== {} ==\n", self.scenario);
        let mut push = |cells: &[String]| {
            let mut text = String::new();
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                let pad = width - cell.chars().count();
                if i == 0 {
                    let _ = write!(text, "{cell}{}  ", " ".repeat(pad));
                } else {
                    let _ = write!(text, "{}{cell}  ", " ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        push(&header.map(str::to_owned));
        for line in &lines {
            push(line);
        }
        for note in &self.notes {
            out.push_str("  note: ");
            out.push_str(note);
            out.push('\n');
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "finished_at": rtm_core::model::Timestamp::now().to_string(),
            "machine": machine(),
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "notes": self.notes,
            "details": self.details,
        })
    }

    /// Writes `<dir>/<scenario>.json`.
    pub(crate) fn write(&self, dir: &Path) -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(&self.json()).unwrap_or_default();
        std::fs::write(&path, text + "\n")?;
        Ok(path)
    }
}

/// Cores and memory of this machine, for the record.
fn machine() -> Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total_kb = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0);
    // Other work on the machine shows here: these figures are only
    // comparable between runs with a similar load.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({ "cores": cores, "memory_mib": total_kb / 1024, "load_average": load })
}

/// Summary statistics of latency samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    pub(crate) p50: Duration,
    pub(crate) p95: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) mean: Duration,
}

impl Stats {
    /// Nearest-rank percentiles; `None` without samples.
    pub(crate) fn of(samples: &[Duration]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| {
            let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[index.clamp(1, sorted.len()) - 1]
        };
        let total: Duration = sorted.iter().sum();
        Some(Stats {
            n: sorted.len(),
            p50: rank(50.0),
            p95: rank(95.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: total / u32::try_from(sorted.len()).unwrap_or(u32::MAX),
        })
    }

    pub(crate) fn json(&self) -> Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        json!({
            "n": self.n,
            "p50_ms": ms(self.p50),
            "p95_ms": ms(self.p95),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "mean_ms": ms(self.mean),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let stats = Stats::of(&samples).expect("samples");
        assert_eq!(stats.p50, Duration::from_millis(50));
        assert_eq!(stats.p95, Duration::from_millis(95));
        assert_eq!(stats.p99, Duration::from_millis(99));
        assert_eq!(stats.max, Duration::from_millis(100));
    }

    #[test]
    fn ratio_targets_pass_and_fail() {
        let row = Row::new("x", Figure::Millis(110.0))
            .baseline(Figure::Millis(100.0))
            .target(Target::RatioAtMost(1.10));
        assert_eq!(row.passed(), Some(true));
        let row = Row::new("x", Figure::Millis(120.0))
            .baseline(Figure::Millis(100.0))
            .target(Target::RatioAtMost(1.10));
        assert_eq!(row.passed(), Some(false));
    }
}
