//! The two patch formats of `rtctl patch`, as pure functions over JSON values: the JSON merge
//! patch of RFC 7386 and the JSON patch of RFC 6902 (with the JSON pointers of RFC 6901).

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch: an object merges key by key (`null` removes the key),
/// anything else replaces the target whole.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(changes) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(fields) = target else {
        unreachable!("the target was just made an object");
    };
    for (key, change) in changes {
        if change.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), change);
        }
    }
}

/// Why a JSON patch could not be applied: which operation (0-based) and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation {index} ({op}): {message}")]
pub(crate) struct PatchError {
    /// The operation's index in the patch, 0-based as RFC 6902 counts them.
    pub(crate) index: usize,
    /// The operation's `op` (`?` when it has none).
    pub(crate) op: String,
    /// What went wrong.
    pub(crate) message: String,
    /// A `test` that did not hold (the others are malformed patches or missing paths).
    pub(crate) test_failed: bool,
}

/// One operation of a JSON patch, read from its object.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
    Move { from: String, path: String },
    Copy { from: String, path: String },
    Test { path: String, value: Value },
}

/// The paths an operation reads or writes (`path`, and `from` for move and copy).
pub(crate) fn touched_paths(patch: &Value) -> Vec<String> {
    let Value::Array(ops) = patch else {
        return Vec::new();
    };
    ops.iter()
        .flat_map(|op| ["path", "from"].map(|field| op.get(field).and_then(Value::as_str)))
        .flatten()
        .map(str::to_owned)
        .collect()
}

/// Applies an RFC 6902 JSON patch (an array of operations) in order; on the first failure the
/// target is left as it was.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError {
            index: 0,
            op: "?".into(),
            message: "a JSON patch is an array of operations, like [{\"op\": \"replace\", \
                      \"path\": \"/spec/image\", \"value\": \"x:2\"}]"
                .into(),
            test_failed: false,
        });
    };
    let mut patched = target.clone();
    for (index, raw) in ops.iter().enumerate() {
        let op_name = raw
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let fail = |message: String, test_failed: bool| PatchError {
            index,
            op: op_name.clone(),
            message,
            test_failed,
        };
        let op = read_op(raw).map_err(|m| fail(m, false))?;
        apply_op(&mut patched, op).map_err(|(m, test)| fail(m, test))?;
    }
    *target = patched;
    Ok(())
}

fn read_op(raw: &Value) -> Result<Op, String> {
    let Value::Object(fields) = raw else {
        return Err("an operation is an object with op and path".into());
    };
    let text = |name: &str| -> Result<String, String> {
        match fields.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("{name} must be a string")),
            None => Err(format!("{name} is missing")),
        }
    };
    let value = || -> Result<Value, String> {
        fields
            .get("value")
            .cloned()
            .ok_or_else(|| "value is missing".to_owned())
    };
    let op = text("op")?;
    let path = text("path")?;
    Ok(match op.as_str() {
        "add" => Op::Add {
            path,
            value: value()?,
        },
        "remove" => Op::Remove { path },
        "replace" => Op::Replace {
            path,
            value: value()?,
        },
        "move" => Op::Move {
            from: text("from")?,
            path,
        },
        "copy" => Op::Copy {
            from: text("from")?,
            path,
        },
        "test" => Op::Test {
            path,
            value: value()?,
        },
        other => {
            return Err(format!(
                "unknown op {other:?}: use add, remove, replace, move, copy or test"
            ));
        }
    })
}

/// The reference tokens of a JSON pointer (`/a/b~1c` → `a`, `b/c`).
fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "path {pointer:?} is not a JSON pointer: it must be empty or start with /"
        ));
    };
    rest.split('/')
        .map(|token| {
            // ~1 first would turn "~01" into "/" instead of "~1".
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "path {pointer:?}: ~ must be followed by 0 or 1 (~0 is ~, ~1 is /)"
                        ));
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits without a leading zero (`-` is handled by the caller).
fn index_of(token: &str, len: usize, pointer: &str, end_ok: bool) -> Result<usize, String> {
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    let index: usize = if valid {
        token
            .parse()
            .map_err(|_| format!("path {pointer:?}: index {token} is too large"))?
    } else {
        return Err(format!("path {pointer:?}: {token:?} is not an array index"));
    };
    if index > len || (index == len && !end_ok) {
        return Err(format!(
            "path {pointer:?}: index {index} is out of range (the array has {len} items)"
        ));
    }
    Ok(index)
}

fn get<'v>(doc: &'v Value, pointer: &str) -> Result<&'v Value, String> {
    let mut at = doc;
    for token in tokens(pointer)? {
        at = match at {
            Value::Object(map) => map
                .get(&token)
                .ok_or_else(|| format!("path {pointer:?}: no member {token:?}"))?,
            Value::Array(items) => &items[index_of(&token, items.len(), pointer, false)?],
            _ => return Err(format!("path {pointer:?}: {token:?} is inside a scalar")),
        };
    }
    Ok(at)
}

/// The container holding the pointer's last token, and that token.
fn parent<'v>(doc: &'v mut Value, pointer: &str) -> Result<(&'v mut Value, String), String> {
    let mut tokens = tokens(pointer)?;
    let Some(last) = tokens.pop() else {
        return Err("the root has no parent".into());
    };
    let mut at = doc;
    for token in tokens {
        at = match at {
            Value::Object(map) => map
                .get_mut(&token)
                .ok_or_else(|| format!("path {pointer:?}: no member {token:?}"))?,
            Value::Array(items) => {
                let index = index_of(&token, items.len(), pointer, false)?;
                &mut items[index]
            }
            _ => return Err(format!("path {pointer:?}: {token:?} is inside a scalar")),
        };
    }
    Ok((at, last))
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    if pointer.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (container, last) = parent(doc, pointer)?;
    match container {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                index_of(&last, items.len(), pointer, true)?
            };
            items.insert(index, value);
        }
        _ => {
            return Err(format!(
                "path {pointer:?}: the parent is not an object or array"
            ));
        }
    }
    Ok(())
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, String> {
    if pointer.is_empty() {
        return Err("remove cannot remove the whole document".into());
    }
    let (container, last) = parent(doc, pointer)?;
    match container {
        Value::Object(map) => map
            .remove(&last)
            .ok_or_else(|| format!("path {pointer:?}: no member {last:?}")),
        Value::Array(items) => {
            let index = index_of(&last, items.len(), pointer, false)?;
            Ok(items.remove(index))
        }
        _ => Err(format!(
            "path {pointer:?}: the parent is not an object or array"
        )),
    }
}

/// Applies one operation; the error says whether it was a failed `test`.
fn apply_op(doc: &mut Value, op: Op) -> Result<(), (String, bool)> {
    let plain = |m: String| (m, false);
    match op {
        Op::Add { path, value } => add(doc, &path, value).map_err(plain),
        Op::Remove { path } => remove(doc, &path).map(drop).map_err(plain),
        Op::Replace { path, value } => {
            if path.is_empty() {
                *doc = value;
                return Ok(());
            }
            remove(doc, &path).map_err(plain)?;
            add(doc, &path, value).map_err(plain)
        }
        Op::Move { from, path } => {
            if path != from && path.starts_with(&format!("{from}/")) {
                return Err(plain(format!(
                    "cannot move {from:?} into its own child {path:?}"
                )));
            }
            let value = remove(doc, &from).map_err(plain)?;
            add(doc, &path, value).map_err(plain)
        }
        Op::Copy { from, path } => {
            let value = get(doc, &from).map_err(plain)?.clone();
            add(doc, &path, value).map_err(plain)
        }
        Op::Test { path, value } => {
            let found = get(doc, &path).map_err(plain)?;
            if *found == value {
                Ok(())
            } else {
                Err((
                    format!("test failed: {path:?} is {found}, not {value}"),
                    true,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged(target: Value, patch: Value) -> Value {
        let mut target = target;
        merge_patch(&mut target, &patch);
        target
    }

    #[test]
    fn merge_patch_follows_the_examples_of_rfc_7386() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merged(target.clone(), patch.clone()),
                expected,
                "{target} + {patch}"
            );
        }
    }

    fn patched(target: Value, patch: Value) -> Result<Value, PatchError> {
        let mut target = target;
        json_patch(&mut target, &patch)?;
        Ok(target)
    }

    #[test]
    fn json_patch_follows_the_examples_of_rfc_6902() {
        let ok = [
            // A.1 – A.7, A.10, A.16
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"baz":"qux","foo":"bar"}),
            ),
            (
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}]),
                json!({"foo":["bar","qux","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}]),
                json!({"foo":"bar"}),
            ),
            (
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}]),
                json!({"foo":["bar","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}]),
                json!({"baz":"boo","foo":"bar"}),
            ),
            (
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
                json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
            ),
            (
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
                json!({"foo":["all","cows","eat","grass"]}),
            ),
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
                json!({"foo":"bar","child":{"grandchild":{}}}),
            ),
            (
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
                json!({"foo":["bar",["abc","def"]]}),
            ),
            // A.8 and A.14: tests that hold, with ~0 and ~1 escapes.
            (
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
                json!({"baz":"qux","foo":["a",2,"c"]}),
            ),
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}]),
                json!({"/":9,"~1":10}),
            ),
            (
                json!({"a/b":1,"m~n":2}),
                json!([{"op":"copy","from":"/a~1b","path":"/m~0n"}]),
                json!({"a/b":1,"m~n":1}),
            ),
            (
                json!({"a":1}),
                json!([{"op":"replace","path":"","value":[1]}]),
                json!([1]),
            ),
        ];
        for (target, patch, expected) in ok {
            assert_eq!(
                patched(target.clone(), patch.clone()).unwrap(),
                expected,
                "{patch}"
            );
        }
    }

    #[test]
    fn a_failed_json_patch_names_its_operation_and_changes_nothing() {
        // A.9: a test that does not hold.
        let target = json!({"baz":"qux"});
        let error = patched(
            target.clone(),
            json!([{"op":"add","path":"/x","value":1},{"op":"test","path":"/baz","value":"bar"}]),
        )
        .unwrap_err();
        assert_eq!((error.index, error.test_failed), (1, true), "{error}");
        // A.15: "~01" compares as "~1", so the test of the number 10 against a string fails.
        let error = patched(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":"10"}]),
        )
        .unwrap_err();
        assert!(error.test_failed, "{error}");
        // A.12: adding to a nonexistent target.
        let error = patched(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
        )
        .unwrap_err();
        assert_eq!((error.index, error.test_failed), (0, false), "{error}");
        for bad in [
            json!([{"op":"remove","path":"/nope"}]),
            json!([{"op":"replace","path":"/nope","value":1}]),
            json!([{"op":"add","path":"/a/5","value":1}]),
            json!([{"op":"add","path":"/a/01","value":1}]),
            json!([{"op":"move","from":"/a","path":"/a/0"}]),
            json!([{"op":"frob","path":"/a"}]),
            json!([{"op":"add","path":"a","value":1}]),
            json!([{"op":"add","path":"/b"}]),
            json!([{"op":"test","path":"/a/~2","value":1}]),
            json!({"op":"add"}),
        ] {
            let mut target = json!({"a":[1]});
            assert!(json_patch(&mut target, &bad).is_err(), "{bad}");
            assert_eq!(target, json!({"a":[1]}), "{bad} left the target alone");
        }
    }

    #[test]
    fn touched_paths_lists_path_and_from() {
        let patch =
            json!([{"op":"move","from":"/status/x","path":"/spec/y"},{"op":"remove","path":"/a"}]);
        assert_eq!(touched_paths(&patch), ["/spec/y", "/status/x", "/a"]);
    }
}
