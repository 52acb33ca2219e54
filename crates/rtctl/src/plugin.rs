//! Plugins: `rtctl foo ARGS…`, where `foo` is no rtctl command and an executable `rtctl-foo`
//! is on `PATH`, runs that program with ARGS (on Unix it replaces rtctl, so signals and the
//! exit code are the plugin's own); `rtctl plugin list` lists the `rtctl-*` programs on
//! `PATH`.
//!
//! Words after the first that are not flags name longer plugins first: `rtctl foo bar x`
//! runs `rtctl-foo-bar x` when there is one, else `rtctl-foo bar x`. A plugin is looked for
//! only when the first argument is a word (not a flag) and no built-in command has that name,
//! so a plugin can never replace a built-in command; the environment passes unchanged.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::error::{CliError, Outcome};
use super::output::{note, warn};

/// The prefix of a plugin program's name.
const PLUGIN_PREFIX: &str = "rtctl-";

/// `rtctl plugin ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub(crate) enum PluginCommand {
    /// List the rtctl-* programs on PATH (warning about those that cannot run: shadowed by a
    /// built-in command or by an earlier PATH entry).
    #[command(after_help = "Examples:\n  rtctl plugin list")]
    List,
}

/// A plugin found for a command line: the program and the arguments it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<OsString>,
}

/// The names of rtctl's own commands (hidden ones and `help` included).
pub(crate) fn builtin_names() -> Vec<String> {
    let command = super::command();
    let mut names: Vec<String> = command
        .get_subcommands()
        .flat_map(|sub| {
            std::iter::once(sub.get_name().to_owned())
                .chain(sub.get_all_aliases().map(str::to_owned))
        })
        .collect();
    names.push("help".into());
    names
}

/// The plugin `args` (the process's, program name first) ask for, if they ask for one.
pub(crate) fn find(args: &[OsString], path: Option<&OsStr>, builtins: &[String]) -> Option<Found> {
    let first = args.get(1)?.to_str()?;
    if first.starts_with('-') || builtins.iter().any(|b| b == first) {
        return None;
    }
    // The words that may form the plugin's name: up to the first flag.
    let words: Vec<&str> = args[1..]
        .iter()
        .map_while(|a| a.to_str())
        .take_while(|w| !w.starts_with('-') && !w.is_empty() && !w.contains(['/', '\\']))
        .collect();
    for count in (1..=words.len()).rev() {
        let name = format!("{PLUGIN_PREFIX}{}", words[..count].join("-"));
        if let Some(program) = on_path(&name, path) {
            return Some(Found {
                program,
                args: args[1 + count..].to_vec(),
            });
        }
    }
    None
}

/// The first executable file called `name` in the directories of `path`.
fn on_path(name: &str, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else {
        return false;
    };
    if !metadata.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        metadata.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    true
}

/// Runs the plugin the process's arguments ask for, if any: `None` when they ask for none
/// (clap then parses them). On Unix a plugin that starts never returns here.
pub(crate) fn dispatch(args: &[OsString]) -> Option<ExitCode> {
    // Cheap test first: most command lines start with a built-in command or a flag.
    let first = args.get(1)?.to_str()?;
    if first.starts_with('-') {
        return None;
    }
    let builtins = builtin_names();
    let found = find(args, std::env::var_os("PATH").as_deref(), &builtins)?;
    Some(run(&found))
}

#[cfg(unix)]
fn run(found: &Found) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let error = std::process::Command::new(&found.program)
        .args(&found.args)
        .exec();
    super::report(&cannot_run(&found.program, &error))
}

#[cfg(not(unix))]
fn run(found: &Found) -> ExitCode {
    match std::process::Command::new(&found.program)
        .args(&found.args)
        .status()
    {
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(error) => super::report(&cannot_run(&found.program, &error)),
    }
}

fn cannot_run(program: &Path, error: &std::io::Error) -> CliError {
    CliError::usage(format!(
        "cannot run the plugin {}: {error}; check that it is an executable program",
        program.display()
    ))
}

/// One `rtctl-*` program on PATH and why it would not run, if it would not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) program: PathBuf,
    pub(crate) shadowed: Option<String>,
}

/// The `rtctl-*` executables in the directories of `path`, in PATH order then by name.
pub(crate) fn scan(path: Option<&OsStr>, builtins: &[String]) -> Vec<Listed> {
    let Some(path) = path else {
        return Vec::new();
    };
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    let mut listed = Vec::new();
    for dir in std::env::split_paths(path).filter(|d| !d.as_os_str().is_empty()) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.len() > PLUGIN_PREFIX.len() && n.starts_with(PLUGIN_PREFIX))
            .collect();
        names.sort();
        for name in names {
            let program = dir.join(&name);
            if !is_executable(&program) {
                continue;
            }
            let verb = name[PLUGIN_PREFIX.len()..]
                .split('-')
                .next()
                .unwrap_or_default();
            let shadowed = if builtins.iter().any(|b| b == verb) {
                Some(format!(
                    "{} is never run: `rtctl {verb}` is a built-in command",
                    program.display()
                ))
            } else {
                seen.iter().find(|(n, _)| *n == name).map(|(_, first)| {
                    format!(
                        "{} is never run: {} comes first on PATH",
                        program.display(),
                        first.display()
                    )
                })
            };
            if shadowed.is_none() {
                seen.push((name.clone(), program.clone()));
            }
            listed.push(Listed { program, shadowed });
        }
    }
    listed
}

/// `rtctl plugin ...`.
pub(crate) fn plugin_command(
    command: &PluginCommand,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    match command {
        PluginCommand::List => {
            let listed = scan(std::env::var_os("PATH").as_deref(), &builtin_names());
            if listed.is_empty() {
                note("No rtctl-* plugins found on PATH.");
            }
            for plugin in &listed {
                writeln!(out, "{}", plugin.program.display())?;
            }
            out.flush()?;
            for warning in listed.iter().filter_map(|p| p.shadowed.as_deref()) {
                warn(warning);
            }
            Ok(Outcome::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }

    fn args(words: &[&str]) -> Vec<OsString> {
        std::iter::once("rtctl")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn path_of(dirs: &[&Path]) -> OsString {
        std::env::join_paths(dirs).unwrap()
    }

    #[test]
    fn the_longest_plugin_name_wins_and_gets_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let foo = script(dir.path(), "rtctl-foo");
        let foo_bar = script(dir.path(), "rtctl-foo-bar");
        let path = path_of(&[dir.path()]);
        let builtins = builtin_names();
        let found = find(&args(&["foo", "bar", "x"]), Some(&path), &builtins).unwrap();
        assert_eq!(found.program, foo_bar);
        assert_eq!(found.args, [OsString::from("x")]);
        let found = find(&args(&["foo", "baz", "--flag"]), Some(&path), &builtins).unwrap();
        assert_eq!(found.program, foo);
        assert_eq!(found.args, args(&["baz", "--flag"])[1..]);
    }

    #[test]
    fn built_in_commands_flags_and_missing_plugins_are_left_to_clap() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "rtctl-get");
        script(dir.path(), "rtctl-foo");
        let path = path_of(&[dir.path()]);
        let builtins = builtin_names();
        assert!(find(&args(&["get"]), Some(&path), &builtins).is_none());
        assert!(find(&args(&["--prefix", "foo"]), Some(&path), &builtins).is_none());
        assert!(find(&args(&["nope"]), Some(&path), &builtins).is_none());
        assert!(find(&args(&["foo"]), None, &builtins).is_none());
        assert!(builtins.iter().any(|b| b == "plugin"), "{builtins:?}");
    }

    #[test]
    fn the_list_warns_about_shadowed_plugins() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        script(first.path(), "rtctl-hello");
        script(second.path(), "rtctl-hello");
        script(second.path(), "rtctl-get-more");
        std::fs::write(second.path().join("rtctl-notexec"), "").unwrap();
        let path = path_of(&[first.path(), second.path()]);
        let listed = scan(Some(&path), &builtin_names());
        assert_eq!(listed.len(), 3, "{listed:?}");
        assert_eq!(listed[0].program, first.path().join("rtctl-hello"));
        assert!(listed[0].shadowed.is_none());
        assert!(
            listed[1]
                .shadowed
                .as_deref()
                .unwrap()
                .contains("built-in command"),
            "{listed:?}"
        );
        assert!(
            listed[2]
                .shadowed
                .as_deref()
                .unwrap()
                .contains("comes first on PATH"),
            "{listed:?}"
        );
    }
}
