//! The README's reference tables stay true to the code.

use rtm_core::ErrorCode;

/// The first two cells of each row of the README table whose header row is
/// `header`, without Markdown code marks.
fn table(header: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let start = text
        .find(header)
        .unwrap_or_else(|| panic!("README has a table headed {header:?}"));
    text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().replace('`', ""))
                .collect();
            (cells[0].clone(), cells[1].clone())
        })
        .collect()
}

#[test]
fn error_code_table_matches_the_code() {
    let expected: Vec<(String, String)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), code.meaning().to_owned()))
        .collect();
    assert_eq!(
        table("| code | meaning |"),
        expected,
        "update the README's error-code table from ErrorCode"
    );
}

#[test]
fn rtctl_exit_code_table_matches_rtctl_help() {
    let help: Vec<(String, String)> = rtctl::error::EXIT_CODES_HELP
        .lines()
        .filter_map(|line| {
            let (code, meaning) = line.trim().split_once(char::is_whitespace)?;
            code.parse::<u8>().ok()?;
            Some((code.to_owned(), meaning.trim().to_owned()))
        })
        .collect();
    assert_eq!(
        table("| exit | meaning |"),
        help,
        "update the README's rtctl exit-code table from EXIT_CODES_HELP"
    );
}

/// The commands `rtctl --help` lists, as the binary prints them.
fn rtctl_commands() -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rtctl"))
        .arg("--help")
        .output()
        .expect("rtctl runs");
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|command| command != "help")
        .collect()
}

#[test]
fn every_rtctl_command_is_in_the_readme_reference() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let start = text
        .find("| command | what it does |")
        .expect("README has the rtctl table");
    // Each row's first cell (`\|` inside a cell is a literal bar, not a cell's end).
    let usages: Vec<String> = text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let line = line.replace("\\|", " ");
            line.trim_start_matches('|')
                .split('|')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let words: std::collections::BTreeSet<String> = usages
        .iter()
        .flat_map(|usage| {
            usage
                .split(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .filter(|w| !w.is_empty() && !w.starts_with('-'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let commands = rtctl_commands();
    assert!(
        commands.len() > 20,
        "rtctl --help lists its commands: {commands:?}"
    );
    let missing: Vec<&String> = commands.iter().filter(|c| !words.contains(*c)).collect();
    assert!(
        missing.is_empty(),
        "the README's rtctl table has no row for {missing:?}"
    );
}
