//! Reading one YAML document into a `Value` on a budget, so that an alias bomb is refused
//! after a bounded amount of work and memory instead of exhausting both.
//!
//! An alias (`*a`) repeats everything its anchor (`&a`) holds, and serde_yaml expands it while
//! building a `Value`. Its own guard counts alias jumps only (at most 100 per event of the
//! document), not what each jump repeats: a 100 KB document whose 20,000 aliases each repeat
//! a 20,000-item list asks for 400 million values, and `serde_yaml::Value::deserialize`
//! allocated until the process died (rtctl, and the controller reading the document back
//! from etcd). This reader builds the same `Value` (same scalars, tags and duplicate-key
//! refusal as serde_yaml's own visitor) but charges every node it creates against a budget,
//! and refuses lists and mappings nested deeper than a limit: the scan before parsing
//! (`shape.rs`) bounds the nesting of the text, this the nesting of what aliases repeat.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde::de::{Error as _, VariantAccess};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// What one node costs besides the bytes of its scalar. Printed, every node takes at least
/// one byte more than its text (a separator, an indicator or a newline), so a document whose
/// stored form fits in `n` bytes costs at most `2 * n`: a budget of twice the document limit
/// refuses nothing that could be stored.
const NODE_COST: usize = 2;

/// Why a document could not be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// Not YAML (or a duplicate key).
    Yaml(serde_yaml::Error),
    /// Its nodes, aliases expanded, cost more than the limit.
    TooLarge,
    /// Its lists and mappings, aliases expanded, nest deeper than the limit.
    TooDeep,
}

/// Reads one document, failing once its nodes cost more than `limit` or its collections
/// nest more than `max_depth` deep.
pub(super) fn read_value(
    deserializer: serde_yaml::Deserializer<'_>,
    limit: usize,
    max_depth: usize,
) -> Result<Value, ReadError> {
    let budget = Budget {
        left: Cell::new(limit),
        exhausted: Cell::new(false),
        max_depth,
        too_deep: Cell::new(false),
    };
    let root = Node {
        budget: &budget,
        depth: 0,
    };
    root.deserialize(deserializer).map_err(|error| {
        if budget.exhausted.get() {
            ReadError::TooLarge
        } else if budget.too_deep.get() {
            ReadError::TooDeep
        } else {
            ReadError::Yaml(error)
        }
    })
}

struct Budget {
    left: Cell<usize>,
    exhausted: Cell<bool>,
    max_depth: usize,
    too_deep: Cell<bool>,
}

impl Budget {
    fn spend<E: de::Error>(&self, scalar_bytes: usize) -> Result<(), E> {
        let cost = NODE_COST.saturating_add(scalar_bytes);
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => {
                self.exhausted.set(true);
                Err(E::custom("the expanded document is too large"))
            }
        }
    }
}

/// The visitor and seed for one node at `depth` (the collections around it); children get
/// one deeper, sharing the budget.
#[derive(Clone, Copy)]
struct Node<'b> {
    budget: &'b Budget,
    depth: usize,
}

impl Node<'_> {
    /// The seed for the items of the collection this node is, refusing past the depth limit.
    fn children<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.budget.max_depth {
            self.budget.too_deep.set(true);
            return Err(E::custom("the expanded document nests too deeply"));
        }
        self.budget.spend(0)?;
        Ok(Node {
            budget: self.budget,
            depth,
        })
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        self.budget.spend(0)?;
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        self.budget.spend(0)?;
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        self.budget.spend(0)?;
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        self.budget.spend(0)?;
        Ok(Value::Number(value.into()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        self.budget.spend(value.len())?;
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        self.budget.spend(value.len())?;
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.children()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.children()?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(child)? {
            if mapping.contains_key(&key) {
                return Err(A::Error::custom(duplicate_key(&key)));
            }
            let value = map.next_value_seed(child)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        // serde_yaml presents a tagged node (`!thing value`) as an enum: the tag, then the
        // value.
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(A::Error::custom("empty YAML tag is not allowed"));
        }
        self.budget.spend(tag.len())?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// serde_yaml's own wording for a key given twice in one mapping.
fn duplicate_key(key: &Value) -> String {
    match key {
        Value::Null => "duplicate entry with null key".to_owned(),
        Value::Bool(value) => format!("duplicate entry with key `{value}`"),
        Value::Number(value) => format!("duplicate entry with key {value}"),
        Value::String(value) => format!("duplicate entry with key {value:?}"),
        Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_) => {
            "duplicate entry in YAML map".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    fn read(text: &str, limit: usize) -> Result<Value, ReadError> {
        read_value(serde_yaml::Deserializer::from_str(text), limit, 128)
    }

    fn serde_yaml_value(text: &str) -> Result<Value, serde_yaml::Error> {
        Value::deserialize(serde_yaml::Deserializer::from_str(text))
    }

    #[test]
    fn reads_the_same_value_as_serde_yaml() {
        let text = "a: [1, -2, 3.5, true, null, ~, '', x]\nb: &b {c: !tag d, e: !!str 7}\n\
                    f: *b\n<<: {g: 1}\nh: 18446744073709551615\n";
        assert_eq!(
            read(text, usize::MAX).unwrap(),
            serde_yaml_value(text).unwrap()
        );
    }

    #[test]
    fn duplicate_keys_are_refused_in_serde_yaml_s_words() {
        let text = "a: 1\na: 2\n";
        match read(text, usize::MAX) {
            Err(ReadError::Yaml(ours)) => {
                assert_eq!(
                    ours.to_string(),
                    serde_yaml_value(text).unwrap_err().to_string()
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_alias_bomb_stops_at_the_budget() {
        let leaf = format!("[{}]", vec!["a"; 20_000].join(","));
        let text = format!("x: &x {leaf}\ny: [{}]\n", vec!["*x"; 20_000].join(","));
        let started = std::time::Instant::now();
        assert!(matches!(read(&text, 512 * 1024), Err(ReadError::TooLarge)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn the_budget_counts_every_node_and_scalar_byte() {
        // A sequence, two scalars of 1 and 3 bytes: 3 nodes * 2 + 4 bytes = 10.
        assert!(read("[a, bcd]", 10).is_ok());
        assert!(matches!(read("[a, bcd]", 9), Err(ReadError::TooLarge)));
    }
}
