//! `rtm-bench`: the benchmark program. Every scenario measures the
//! controller side by side with a baseline in the same run (these machines
//! are noisy, so ratios mean more than absolute figures), prints a table
//! and writes `target/bench/<scenario>.json`. See BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --bin rtm-bench -- restart-overhead | apply-latency | scale | adoption | all
//! ```
//!
//! Thin: the scenarios live in `src/bin/rtm_bench/`.

mod rtm_bench;

fn main() -> std::process::ExitCode {
    rtm_bench::main()
}
