//! The README's reference tables stay true to the code.

use rtmanager::ErrorCode;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable")
}

#[test]
fn error_code_table_matches_the_code() {
    let text = readme();
    let start = text
        .find("| code | meaning |")
        .expect("README has the error-code table");
    let rows: Vec<(String, String)> = text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].trim_matches('`').to_owned(), cells[1].to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str().to_owned(), code.meaning().to_owned()))
        .collect();
    assert_eq!(
        rows, expected,
        "update the README's error-code table from ErrorCode"
    );
}

#[test]
fn rtctl_exit_code_table_matches_rtctl_help() {
    let text = readme();
    let start = text
        .find("| exit | meaning |")
        .expect("README has the rtctl exit-code table");
    let rows: Vec<(String, String)> = text[start..]
        .lines()
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            (cells[0].to_owned(), cells[1].replace('`', ""))
        })
        .collect();
    let help: Vec<(String, String)> = rtmanager::cli::error::EXIT_CODES_HELP
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (code, meaning) = line.split_once(char::is_whitespace)?;
            code.parse::<u8>().ok()?;
            Some((code.to_owned(), meaning.trim().to_owned()))
        })
        .collect();
    assert_eq!(
        rows, help,
        "update the README's rtctl exit-code table from EXIT_CODES_HELP"
    );
}
