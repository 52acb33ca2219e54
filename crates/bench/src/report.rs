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
    /// A 95 % confidence interval of the ratio, where the scenario can compute one.
    pub(crate) interval: Option<(f64, f64)>,
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
            interval: None,
        }
    }

    /// The ratio's 95 % confidence interval.
    pub(crate) fn interval(mut self, interval: Option<(f64, f64)>) -> Row {
        self.interval = interval;
        self
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
            "ratio_ci95": self.interval.map(|(low, high)| json!([low, high])),
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
                    match (row.ratio(), row.interval) {
                        (Some(r), Some((low, high))) => format!("{r:.2} [{low:.2}, {high:.2}]"),
                        (Some(r), None) => format!("{r:.2}"),
                        (None, _) => "-".into(),
                    },
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
        let rank = |p: f64| nearest_rank(&sorted, p);
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

/// The nearest-rank `p`th percentile of `sorted` (not empty, in order).
fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[index.clamp(1, sorted.len()) - 1]
}

/// How many resamplings a ratio's interval is drawn from.
const BOOTSTRAP_ROUNDS: usize = 4000;

/// A 95 % confidence interval of (controller's `p`th percentile) / (baseline's), by the
/// percentile bootstrap over the interleaved pairs: pair i is the i-th sample of each kind,
/// taken side by side, so a slow stretch of the machine weighs on both. Each round draws as
/// many pairs as there are, with replacement, from a fixed seed (the same samples give the
/// same interval). `None` with fewer than 10 pairs.
pub(crate) fn ratio_interval(
    controller: &[Duration],
    baseline: &[Duration],
    p: f64,
) -> Option<(f64, f64)> {
    let n = controller.len().min(baseline.len());
    if n < 10 {
        return None;
    }
    let mut random = SplitMix(0x05ee_d0fb_0075_u64);
    let mut ratios: Vec<f64> = (0..BOOTSTRAP_ROUNDS)
        .map(|_| {
            let (mut ours, mut theirs): (Vec<Duration>, Vec<Duration>) = (0..n)
                .map(|_| {
                    let i = random.below(n);
                    (controller[i], baseline[i])
                })
                .unzip();
            ours.sort();
            theirs.sort();
            nearest_rank(&ours, p).as_secs_f64() / nearest_rank(&theirs, p).as_secs_f64().max(1e-9)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    Some((nearest_rank(&ratios, 2.5), nearest_rank(&ratios, 97.5)))
}

/// A small seeded generator (SplitMix64) for the bootstrap: reproducible, no state shared.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0; the slight bias of the modulo is far below the
    /// bootstrap's own error).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_interval_holds_the_ratio_and_narrows_with_more_pairs() {
        // Controller 10 % slower than the baseline, both with the same spread.
        let spread = |n: usize, scale: f64| -> Vec<Duration> {
            (0..n)
                .map(|i| {
                    Duration::from_secs_f64(
                        scale * (0.25 + 0.05 * ((i * 7919) % 100) as f64 / 100.0),
                    )
                })
                .collect()
        };
        let (few, many) = (30, 300);
        let narrow = ratio_interval(&spread(many, 1.1), &spread(many, 1.0), 50.0).unwrap();
        let wide = ratio_interval(&spread(few, 1.1), &spread(few, 1.0), 50.0).unwrap();
        assert!(narrow.0 <= 1.1 && 1.1 <= narrow.1, "{narrow:?}");
        assert!(wide.0 <= 1.1 && 1.1 <= wide.1, "{wide:?}");
        assert!(
            narrow.1 - narrow.0 <= wide.1 - wide.0,
            "{narrow:?} vs {wide:?}"
        );
        // The same samples give the same interval; too few give none.
        assert_eq!(
            ratio_interval(&spread(few, 1.1), &spread(few, 1.0), 95.0),
            ratio_interval(&spread(few, 1.1), &spread(few, 1.0), 95.0)
        );
        assert_eq!(ratio_interval(&spread(9, 1.0), &spread(9, 1.0), 50.0), None);
    }

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
