//! Man pages: `rtctl __man DIR` writes one page per command — `rtctl.1`, `rtctl-get.1`,
//! `rtctl-config-set-context.1`, … — generated from the same clap definitions as `--help`,
//! so they cannot drift from the command line.
//!
//! Install them with `rtctl __man /usr/local/share/man/man1` (or `scripts/install-man`),
//! then `man rtctl-get`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{CliError, Outcome};

/// `rtctl __man DIR` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ManArgs {
    /// The directory to write the pages into (created when missing), e.g.
    /// /usr/local/share/man/man1.
    pub(crate) dir: PathBuf,
}

/// Every page: file name and roff text, the top-level command's first.
pub(crate) fn pages() -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut command = super::command().disable_help_subcommand(true);
    // Building fills in the display names (`rtctl-get`) the page names are made of.
    command.build();
    let mut pages = Vec::new();
    collect(command, &mut pages)?;
    Ok(pages)
}

fn collect(command: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> Result<(), CliError> {
    let man = clap_mangen::Man::new(command.clone());
    let mut text = Vec::new();
    man.render(&mut text)
        .map_err(|e| CliError::internal(format!("cannot render a man page: {e}")))?;
    pages.push((man.get_filename(), text));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub.clone(), pages)?;
    }
    Ok(())
}

/// `rtctl __man DIR`.
pub(crate) fn man(args: &ManArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    write_pages(&args.dir)?;
    writeln!(out, "Wrote the man pages into {}.", args.dir.display())?;
    Ok(Outcome::Success)
}

fn write_pages(dir: &Path) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::usage(format!(
            "cannot write the man pages into {}: {e}; pick a directory you may write",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    for (name, text) in pages()? {
        std::fs::write(dir.join(name), text).map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page names every command should get: `rtctl`, `rtctl-get`, ….
    fn expected(command: &clap::Command, prefix: &str, names: &mut Vec<String>) {
        names.push(prefix.to_owned());
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            expected(sub, &format!("{prefix}-{}", sub.get_name()), names);
        }
    }

    #[test]
    fn every_command_gets_a_page_naming_it_and_the_top_page_lists_them() {
        let mut names = Vec::new();
        expected(&crate::command(), "rtctl", &mut names);
        assert!(names.contains(&"rtctl-config-view".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("__man")), "{names:?}");
        let pages = pages().unwrap();
        for name in &names {
            let file = format!("{name}.1");
            let (_, text) = pages
                .iter()
                .find(|(f, _)| *f == file)
                .unwrap_or_else(|| panic!("no page {file}"));
            let text = String::from_utf8_lossy(text);
            // roff escapes the dashes of the name.
            assert!(
                text.contains(name) || text.contains(&name.replace('-', "\\-")),
                "{file} does not name {name}"
            );
        }
        let top = pages
            .iter()
            .find(|(f, _)| f == "rtctl.1")
            .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
            .unwrap();
        let top_level = crate::command();
        for sub in top_level.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("rtctl-{}", sub.get_name()).replace('-', "\\-");
            assert!(top.contains(&name), "rtctl.1 does not list {name}");
        }
    }

    #[test]
    fn pages_are_written_into_a_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("man1");
        write_pages(&target).unwrap();
        assert!(target.join("rtctl.1").is_file());
        assert!(target.join("rtctl-get.1").is_file());
    }
}
