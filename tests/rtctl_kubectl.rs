//! rtctl as a kubectl user drives it: resource-type words and `TYPE/NAME`, selectors (set-based
//! too) and `--all` on every verb, several names with each one reported, machine output that
//! scripts and jq read (a List unless exactly one name, watch lines one JSON object each),
//! output shaping (jsonpath, custom columns, sort, label columns), `wait` on what already holds
//! and on what comes, and the shell completion the script asks rtctl for — the real binary
//! against the real etcd of `scripts/services`, each test under its own prefix. Status records
//! are written through the store types, as the controller would. Ignored by a bare `cargo
//! test`; `scripts/test` runs them, and a missing etcd fails them.

use rtm_testkit as common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rtm_core::model::{GameRuntimeStatus, Phase};
use rtm_core::records::status;
use rtm_core::store::etcd::EtcdStore;
use rtm_core::store::{Keys, Store, Txn};

use common::rtctl::Rtctl;
use common::{etcd, unique_keys};

const RTCTL: &str = env!("CARGO_BIN_EXE_rtctl");

/// Bound on one rtctl run that should answer at once.
const RUN: Duration = Duration::from_secs(30);
/// Bound on waiting for a line a watch prints.
const WAIT: Duration = Duration::from_secs(15);

mod exit {
    pub const USAGE: i32 = 2;
    pub const NOT_FOUND: i32 = 4;
    pub const TIMEOUT: i32 = 9;
}

struct World {
    store: Arc<EtcdStore>,
    keys: Keys,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(test: &str) -> World {
        World {
            store: etcd().await,
            keys: unique_keys(test),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    fn rtctl(&self) -> Rtctl {
        Rtctl::new(RTCTL, &self.keys, RUN)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.rtctl().ok(args)
    }

    /// Applies games: (name, tier, region).
    fn apply(&self, games: &[(&str, &str, &str)]) {
        let docs: Vec<String> = games
            .iter()
            .map(|(name, tier, region)| {
                format!(
                    "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: \
                     {name}\n  labels: {{tier: {tier}, region: {region}}}\nspec:\n  image: \
                     rtmanager-test/engine:1\n"
                )
            })
            .collect();
        let path = self.dir.path().join("games.yaml");
        std::fs::write(&path, docs.join("---\n")).expect("write the games");
        self.ok(&["apply", "-f", path.to_str().expect("a UTF-8 path")]);
    }

    async fn put_status(&self, name: &str, phase: Phase, restarts: u32) {
        let status = GameRuntimeStatus {
            phase,
            restart_count: restarts,
            ..GameRuntimeStatus::default()
        };
        let txn = Txn::new().put(self.keys.status(name), status::encode(&status));
        self.store.txn(txn).await.expect("write a status");
    }

    /// A shell running `script` with rtctl on PATH and this world's connection.
    fn sh(&self, script: &str) -> std::process::Output {
        let bin_dir = std::path::Path::new(RTCTL)
            .parent()
            .expect("rtctl lives in a directory");
        let mut shell = Command::new("bash");
        shell.arg("-c").arg(script).env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
        for (key, value) in self.rtctl().command().get_envs() {
            if let Some(value) = value {
                shell.env(key, value);
            }
        }
        shell.output().expect("bash runs")
    }

    async fn done(self) {
        common::wipe(self.store.as_ref(), &self.keys).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn type_words_and_type_slash_name_reach_every_kind_and_every_missing_name_is_said() {
    let w = World::new("kubectl-types").await;
    w.apply(&[("g1", "ranked", "eu"), ("g2", "casual", "us")]);
    let rtctl = w.rtctl();

    // The row, and exit 0, by every spelling of the type.
    for args in [
        &["get", "gameruntime", "g1"][..],
        &["get", "gameruntimes", "g1"],
        &["get", "gr", "g1"],
        &["get", "gameruntime/g1"],
        &["get", "gr/g1"],
    ] {
        let out = rtctl.ok(args);
        assert!(
            out.contains("g1 ") && !out.contains("g2"),
            "{args:?}: {out}"
        );
    }
    let described = rtctl.ok(&["describe", "gameruntime/g1"]);
    assert!(described.contains("g1"), "{described}");
    let both = rtctl.ok(&["describe", "g1", "gr/g2"]);
    assert!(both.contains("g1") && both.contains("g2"), "{both}");

    // Several names, one missing: the others are printed, each missing one said, exit 4.
    let said = rtctl.fails(&["get", "g1", "nope-a", "g2", "nope-b"], exit::NOT_FOUND);
    assert!(
        said.stdout.contains("g1 ") && said.stdout.contains("g2 "),
        "{said:?}"
    );
    assert!(
        said.stderr.contains("nope-a") && said.stderr.contains("nope-b"),
        "{said:?}"
    );
    let said = rtctl.fails(&["describe", "nope", "g2"], exit::NOT_FOUND);
    assert!(
        said.stdout.contains("g2") && said.stderr.contains("nope"),
        "{said:?}"
    );

    // An unknown type, and kinds mixed in one command, are usage errors.
    let said = rtctl.fails(&["get", "pods/x"], exit::USAGE);
    assert!(
        said.stderr.contains("gameruntime (gameruntimes, gr)"),
        "{said:?}"
    );
    let said = rtctl.fails(&["get", "gr/g1", "node/n1"], exit::USAGE);
    assert!(said.stderr.contains("one type at a time"), "{said:?}");
    // Nodes and budgets by their words (none registered: a listing says so, a name is 4).
    assert_eq!(rtctl.run(&["get", "nodes"]).code, Some(0));
    rtctl.fails(&["get", "node/n1"], exit::NOT_FOUND);
    rtctl.fails(&["describe", "gdb/casual"], exit::NOT_FOUND);
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn machine_output_is_a_list_unless_one_name_and_names_feed_xargs() {
    let w = World::new("kubectl-machine").await;
    w.apply(&[
        ("a1", "ranked", "eu"),
        ("a2", "ranked", "us"),
        ("a3", "casual", "eu"),
        ("a4", "casual", "ap"),
    ]);
    let rtctl = w.rtctl();
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_str(&rtctl.ok(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    // One match of a selector is still a List; one name is the object.
    let listed = json(&["get", "-l", "tier=ranked,region=eu", "-o", "json"]);
    assert_eq!(listed["kind"], "GameRuntimeList", "{listed}");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let one = json(&["get", "a1", "-o", "json"]);
    assert_eq!(one["kind"], "GameRuntime", "{one}");
    let two = json(&["get", "a1", "a2", "-o", "json"]);
    assert_eq!(two["items"].as_array().map(Vec::len), Some(2), "{two}");
    let none = json(&["get", "-l", "tier=none", "-o", "json"]);
    assert_eq!(none["items"], serde_json::json!([]), "{none}");

    // Set-based selectors.
    let names = |selector: &str| rtctl.ok(&["get", "-l", selector, "-o", "name"]);
    assert_eq!(
        names("region in (eu,ap)"),
        "gameruntime/a1\ngameruntime/a3\ngameruntime/a4\n"
    );
    assert_eq!(names("region notin (eu),tier=casual"), "gameruntime/a4\n");
    let bad = rtctl.fails(&["get", "-l", "region in eu"], exit::USAGE);
    assert!(bad.stderr.contains("parentheses"), "{bad:?}");

    // The kubectl pipe: names of a selector to delete, one by one.
    let piped = w.sh("rtctl get -o name -l tier=casual | xargs rtctl delete");
    assert!(piped.status.success(), "{piped:?}");
    assert_eq!(
        text(&piped.stdout),
        "gameruntime/a3 deleted\ngameruntime/a4 deleted\n",
        "{piped:?}"
    );
    assert_eq!(
        rtctl.ok(&["get", "-o", "name"]),
        "gameruntime/a1\ngameruntime/a2\n"
    );

    // A delete of several names goes on past a missing one, and says it.
    let said = rtctl.fails(&["delete", "gone", "a2"], exit::NOT_FOUND);
    assert!(said.stdout.contains("gameruntime/a2 deleted"), "{said:?}");
    assert!(said.stderr.contains("gone"), "{said:?}");
    // Zero matches: said, and exit 0, on every verb that takes -l.
    for verb in ["restart", "stop", "start", "delete", "describe", "wait"] {
        let mut args = vec![verb, "-l", "tier=none"];
        if verb == "wait" {
            args.push("--for=phase=Running");
        }
        let said = rtctl.fails(&args, 0);
        assert!(
            said.stderr.contains("No resources found"),
            "{verb}: {said:?}"
        );
    }
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn jsonpath_custom_columns_sort_and_label_columns_shape_the_output() {
    let w = World::new("kubectl-shape").await;
    w.apply(&[
        ("s1", "ranked", "eu"),
        ("s2", "casual", "us"),
        ("s3", "ranked", "ap"),
    ]);
    w.put_status("s1", Phase::Running, 5).await;
    w.put_status("s2", Phase::Pending, 0).await;
    w.put_status("s3", Phase::Running, 12).await;
    let rtctl = w.rtctl();

    assert_eq!(
        rtctl.ok(&["get", "-o", "jsonpath={.items[*].metadata.name}"]),
        "s1 s2 s3\n"
    );
    assert_eq!(
        rtctl.ok(&[
            "get",
            "-o",
            "jsonpath={range .items[?(@.status.phase==\"Running\")]}{.metadata.name}:{.status.restartCount}{\"\\n\"}{end}",
        ]),
        "s1:5\ns3:12\n"
    );
    assert_eq!(
        rtctl.ok(&["get", "s2", "-o", "jsonpath={.status.phase}"]),
        "Pending\n"
    );
    let columns = rtctl.ok(&[
        "get",
        "-o",
        "custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier,RESTARTS:.status.restartCount",
        "--sort-by=.status.restartCount",
    ]);
    assert_eq!(
        columns,
        "NAME   TIER     RESTARTS\ns2     casual   0\ns1     ranked   5\ns3     ranked   12\n",
        "numbers sort as numbers"
    );
    let sorted = rtctl.ok(&["get", "-o", "name", "--sort-by={.metadata.labels.region}"]);
    assert_eq!(sorted, "gameruntime/s3\ngameruntime/s1\ngameruntime/s2\n");
    let labelled = rtctl.ok(&["get", "-L", "region", "--show-labels", "--no-headers", "s1"]);
    let cells: Vec<&str> = labelled.split_whitespace().collect();
    assert_eq!(
        cells[cells.len() - 2..],
        ["eu", "region=eu,tier=ranked"],
        "{labelled}"
    );
    let header = rtctl.ok(&["get", "-L", "tier,region"]);
    assert!(
        header
            .lines()
            .next()
            .unwrap_or("")
            .ends_with("TIER     REGION"),
        "{header}"
    );
    assert_eq!(
        rtctl.ok(&[
            "get",
            "-o",
            "name",
            "--field-selector",
            "status.phase=Running,metadata.labels.region!=ap"
        ]),
        "gameruntime/s1\n"
    );
    let bad = rtctl.fails(&["get", "--field-selector", "status.phase"], exit::USAGE);
    assert!(bad.stderr.contains("PATH=VALUE"), "{bad:?}");
    let bad = rtctl.fails(&["get", "-o", "jsonpath={.items["], exit::USAGE);
    assert!(bad.stderr.contains("invalid jsonpath template"), "{bad:?}");
    let bad = rtctl.fails(&["get", "-o", "yml"], exit::USAGE);
    assert!(bad.stderr.contains("custom-columns="), "{bad:?}");
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn watch_lines_are_one_json_object_each_that_jq_reads_from_the_first_listing_on() {
    let w = World::new("kubectl-watch").await;
    w.apply(&[("w1", "ranked", "eu")]);
    let mut command = w.rtctl().command();
    command
        .args(["get", "-w", "-o", "json", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("rtctl starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut next = || {
        let line = lines.recv_timeout(WAIT).expect("a watch line in time");
        seen.push(line.clone());
        line
    };
    let first = next();
    w.put_status("w1", Phase::Running, 1).await;
    let mut second = next();
    // The first status write may show as one line or (if the document write lands late)
    // after another: wait for the Running one.
    while !second.contains("Running") {
        second = next();
    }
    w.ok(&["delete", "w1"]);
    let mut third = next();
    while !third.contains("DELETED") {
        third = next();
    }
    child.kill().ok();
    child.wait().ok();

    // Every line is one JSON object with a type and the game: jq reads them as they come.
    let lines = seen.join("\n");
    let path = w.dir.path().join("watch.jsonl");
    std::fs::write(&path, &lines).expect("keep the lines");
    let jq = Command::new("jq")
        .args([
            "-r",
            "[.type, .object.metadata.name, (.object.status.phase // \"-\")] | join(\" \")",
        ])
        .arg(&path)
        .output()
        .expect("jq runs (scripts/services installs it)");
    assert!(
        jq.status.success(),
        "jq could not read the lines: {jq:?}\n{lines}"
    );
    let read = text(&jq.stdout);
    assert!(first.starts_with("{\"type\":\"ADDED\""), "{first}");
    assert!(read.starts_with("ADDED w1 -\n"), "{read}");
    assert!(read.contains("MODIFIED w1 Running\n"), "{read}");
    assert!(read.contains("DELETED w1"), "{read}");

    // `-o name` says the event on the first listing too.
    let mut command = w.rtctl().command();
    w.apply(&[("w2", "ranked", "eu")]);
    command
        .args(["get", "-w", "-o", "name", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("rtctl starts");
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("a line");
    child.kill().ok();
    child.wait().ok();
    assert_eq!(line, "ADDED gameruntime/w2\n");
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn wait_looks_once_at_what_holds_and_follows_creates_and_jsonpaths() {
    let w = World::new("kubectl-wait").await;
    w.apply(&[("t1", "ranked", "eu"), ("t2", "ranked", "us")]);
    w.put_status("t1", Phase::Running, 0).await;
    w.put_status("t2", Phase::Running, 0).await;
    let rtctl = w.rtctl();

    // What already holds passes with a zero timeout; what does not times out at once.
    let said = rtctl.fails(&["wait", "t1", "--for=phase=Running", "--timeout", "0s"], 0);
    assert!(
        said.stdout.contains("gameruntime/t1 is Running"),
        "{said:?}"
    );
    rtctl.fails(
        &["wait", "t1", "--for=phase=Stopped", "--timeout", "0s"],
        exit::TIMEOUT,
    );
    // -l over several games, each reported.
    let said = rtctl.fails(
        &[
            "wait",
            "-l",
            "tier=ranked",
            "--for=jsonpath={.status.phase}=Running",
            "--timeout",
            "0s",
        ],
        0,
    );
    assert_eq!(said.stdout.lines().count(), 2, "{said:?}");
    rtctl.fails(
        &[
            "wait",
            "--all",
            "--for=jsonpath=.status.phase=Stopped",
            "--timeout",
            "0s",
        ],
        exit::TIMEOUT,
    );
    rtctl.fails(
        &[
            "wait",
            "t1",
            "--for=jsonpath={.metadata.labels.tier}",
            "--timeout",
            "0s",
        ],
        0,
    );

    // --for=create: waits for a game that does not exist yet.
    let mut command = w.rtctl().command();
    command
        .args(["wait", "t3", "--for=create", "--timeout", "20s"])
        .stdout(Stdio::piped());
    let child = command.spawn().expect("rtctl starts");
    w.apply(&[("t3", "casual", "eu")]);
    let output = child.wait_with_output().expect("rtctl ends");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(text(&output.stdout), "gameruntime/t3 created\n");
    w.done().await;
}

#[tokio::test]
#[ignore = "needs etcd: run scripts/test"]
async fn bash_completion_offers_names_types_label_keys_and_flags_from_rtctl_itself() {
    let w = World::new("kubectl-complete").await;
    w.apply(&[
        ("arena-1", "ranked", "eu"),
        ("arena-2", "casual", "us"),
        ("lobby", "casual", "us"),
    ]);
    let complete = |words: &str| {
        let script = format!(
            "source <(rtctl completion bash)\nCOMP_WORDS=({words})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
             _clap_complete_rtctl rtctl \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = w.sh(&script);
        assert!(output.status.success(), "{words}: {output:?}");
        text(&output.stdout)
    };
    assert_eq!(complete("rtctl describe arena"), "arena-1\narena-2\n");
    assert_eq!(complete("rtctl restart l"), "lobby\n");
    assert_eq!(complete("rtctl get gr/a"), "gr/arena-1\ngr/arena-2\n");
    let types = complete("rtctl get g");
    assert!(
        types.contains("gameruntime\n") && types.contains("gdb\n"),
        "{types}"
    );
    assert_eq!(complete("rtctl stop -l ''"), "region=\ntier=\n");
    assert_eq!(
        complete("rtctl stop -l tier="),
        "tier=casual\ntier=ranked\n"
    );
    let flags = complete("rtctl wait --t");
    assert!(flags.contains("--timeout"), "{flags}");
    w.done().await;
}
