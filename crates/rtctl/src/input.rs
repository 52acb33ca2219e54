//! The `-f FILE|DIR|-` inputs of apply, diff and delete: read every file, parse and validate
//! every document (GameRuntimes and GameDisruptionBudgets), and refuse the whole set when any
//! one is wrong, so nothing is half-applied.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{CliError, one_line};
use rtm_core::model::parse::{MAX_FILE_BYTES, Object, ParseError, parse_objects};
use rtm_core::model::{GameDisruptionBudget, GameRuntime};

/// File name endings read from a directory.
const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// One document and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    pub(crate) doc: GameRuntime,
    /// The file (`-` for stdin).
    pub(crate) source: String,
    /// 1-based index of the document within its file.
    pub(crate) index: usize,
}

/// One disruption budget document and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct BudgetInput {
    pub(crate) budget: GameDisruptionBudget,
}

/// Every document of the `-f` arguments, by kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inputs {
    pub(crate) games: Vec<Input>,
    pub(crate) budgets: Vec<BudgetInput>,
}

/// Reads and checks every GameRuntime of every `-f` argument (a GameDisruptionBudget among
/// them is skipped: the callers of this act on games only).
pub(crate) fn read_inputs(paths: &[PathBuf], recursive: bool) -> Result<Vec<Input>, CliError> {
    let inputs = read_objects(paths, recursive)?;
    if inputs.games.is_empty() {
        return Err(CliError::invalid(
            "no GameRuntime documents found in the given files; nothing was written",
        ));
    }
    Ok(inputs.games)
}

/// Reads and checks every document of every `-f` argument, GameRuntimes and
/// GameDisruptionBudgets. Directories contribute their `*.yaml`, `*.yml` and `*.json` files
/// in name order (and their subdirectories' with `recursive`).
pub(crate) fn read_objects(paths: &[PathBuf], recursive: bool) -> Result<Inputs, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            files.push(None);
        } else if path.is_dir() {
            let mut found = Vec::new();
            list_dir(path, recursive, &mut found)?;
            if found.is_empty() {
                return Err(CliError::invalid(format!(
                    "{} holds no .yaml, .yml or .json files; point -f at a file or a directory \
                     of manifests",
                    path.display()
                )));
            }
            files.extend(found.into_iter().map(Some));
        } else {
            files.push(Some(path.clone()));
        }
    }

    let mut inputs = Inputs::default();
    let mut first_use: HashMap<(&'static str, String), (String, usize)> = HashMap::new();
    let mut stdin_read = false;
    for file in files {
        let (source, text) = match file {
            None => {
                if stdin_read {
                    return Err(CliError::usage("-f - (stdin) can be given only once"));
                }
                stdin_read = true;
                ("-".to_owned(), read_stdin()?)
            }
            Some(path) => (path.display().to_string(), read_file(&path)?),
        };
        let objects = parse_objects(&text).map_err(|e| parse_error(&source, &e))?;
        for (i, object) in objects.into_iter().enumerate() {
            // parse_objects skips empty documents, so count the kept ones for the message;
            // its own errors carry the exact index.
            let index = i + 1;
            let name = object.name().to_owned();
            let used = (object.kind(), name.clone());
            if let Some((other, other_index)) = first_use.get(&used) {
                let what = if matches!(object, Object::Game(_)) {
                    "game"
                } else {
                    "budget"
                };
                return Err(CliError::invalid(format!(
                    "{source}: document {index} ({name}): metadata.name {name:?} is also used by \
                     document {other_index} of {other}; each {what} may appear once; nothing was \
                     written"
                )));
            }
            first_use.insert(used, (source.clone(), index));
            match object {
                Object::Game(doc) => inputs.games.push(Input {
                    doc,
                    source: source.clone(),
                    index,
                }),
                Object::Budget(budget) => inputs.budgets.push(BudgetInput { budget }),
            }
        }
    }
    if inputs.games.is_empty() && inputs.budgets.is_empty() {
        return Err(CliError::invalid(
            "no GameRuntime or GameDisruptionBudget documents found in the given files; nothing \
             was written",
        ));
    }
    Ok(inputs)
}

fn list_dir(dir: &Path, recursive: bool, found: &mut Vec<PathBuf>) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir).map_err(|e| read_error(dir, &e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, &e))?;
        paths.push(entry.path());
    }
    paths.sort();
    for path in paths {
        if path.is_dir() {
            if recursive {
                list_dir(&path, recursive, found)?;
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e))
        {
            found.push(path);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, CliError> {
    let file = std::fs::File::open(path).map_err(|e| read_error(path, &e))?;
    read_bounded(file, &path.display().to_string())
}

fn read_stdin() -> Result<String, CliError> {
    read_bounded(std::io::stdin().lock(), "- (stdin)")
}

/// Reads at most one byte past the limit, so a huge or endless input is refused without
/// holding it all in memory.
fn read_bounded(reader: impl Read, source: &str) -> Result<String, CliError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CliError::invalid(format!("cannot read {source}: {e}")))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(CliError::invalid(format!(
            "{source} is larger than {MAX_FILE_BYTES} bytes; split it into several files"
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| CliError::invalid(format!("{source} is not UTF-8 text; nothing was written")))
}

/// Reads a small file given to a flag (a template, a patch), refusing one over `limit` bytes
/// (a huge or endless one, `/dev/zero`, is not read whole) or not UTF-8; the reason as text.
pub(crate) fn read_small(path: &Path, limit: usize) -> Result<String, String> {
    let source = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {source}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {source}: {e}"))?;
    if bytes.len() > limit {
        return Err(format!("{source} is larger than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| format!("{source} is not UTF-8 text"))
}

fn read_error(path: &Path, error: &std::io::Error) -> CliError {
    CliError::invalid(format!(
        "cannot read {}: {error}; check the path given to -f",
        path.display()
    ))
}

/// `FILE: document N (name): field.path: what is wrong; nothing was written`.
pub(crate) fn parse_error(source: &str, error: &ParseError) -> CliError {
    CliError::invalid(format!(
        "{source}: {}; fix it and run again (nothing was written)",
        one_line(&error.to_string())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str) -> String {
        format!(
            "apiVersion: rtmanager.dev/v1alpha1\nkind: GameRuntime\nmetadata:\n  name: {name}\n\
             spec:\n  image: rtmanager-test/engine:1\n"
        )
    }

    #[test]
    fn directories_are_read_in_name_order_and_other_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yaml"), doc("b")).unwrap();
        std::fs::write(dir.path().join("a.yml"), doc("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.yaml"), doc("c")).unwrap();
        let names = |recursive| -> Vec<String> {
            read_inputs(&[dir.path().to_path_buf()], recursive)
                .unwrap()
                .into_iter()
                .map(|i| i.doc.metadata.name)
                .collect()
        };
        assert_eq!(names(false), ["a", "b"]);
        assert_eq!(names(true), ["a", "b", "c"]);
    }

    #[test]
    fn an_error_names_the_file_the_document_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.yaml");
        std::fs::write(
            &path,
            format!("{}---\n{}", doc("a"), doc("b").replace("image:", "imagee:")),
        )
        .unwrap();
        let error = read_inputs(std::slice::from_ref(&path), false).unwrap_err();
        assert!(matches!(error, CliError::Invalid { .. }));
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "{}: document 2 (b): spec.imagee: unknown field",
                path.display()
            )),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn the_same_game_in_two_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.yaml"), doc("a")).unwrap();
        std::fs::write(dir.path().join("2.yaml"), doc("a")).unwrap();
        let error = read_inputs(&[dir.path().to_path_buf()], false).unwrap_err();
        assert!(
            error.to_string().contains("also used by document 1"),
            "{error}"
        );
    }

    #[test]
    fn missing_files_and_empty_inputs_are_invalid() {
        let error = read_inputs(&[PathBuf::from("/nonexistent/x.yaml")], false).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/x.yaml"),
            "{error}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.yaml");
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(matches!(
            read_inputs(&[empty], false),
            Err(CliError::Invalid { .. })
        ));
    }
}
