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
