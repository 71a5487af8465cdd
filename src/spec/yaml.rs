//! The one place calld reads YAML spec documents: into a positioned generic
//! tree ([`Node`]), every value carrying the line and column it came from.
//!
//! serde-saphyr parses with a resource budget (alias bombs, nesting depth,
//! node counts) so hostile input fails fast with a located error instead of
//! exhausting memory or stack.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;
use std::fmt;

/// A position in a file, 1-based; `0:0` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// YAML values as calld sees them. Mappings keep their key order and the
/// position of each key.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub pos: Pos,
    pub name: String,
}

impl Value {
    /// A word for the type, for "expected a string, found a list".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// This value as JSON, for pass-through parts (identities, `graph:`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::String(s) => s.clone().into(),
            Value::Seq(items) => items.iter().map(|n| n.value.to_json()).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.value.to_json()))
                    .collect(),
            ),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Iterative drop: a deeply nested tree must not overflow the stack.
        let mut stack = Vec::new();
        match &mut self.value {
            Value::Seq(items) => stack.append(items),
            Value::Map(entries) => stack.extend(entries.drain(..).map(|(_, v)| v)),
            _ => return,
        }
        while let Some(mut node) = stack.pop() {
            match &mut node.value {
                Value::Seq(items) => stack.append(items),
                Value::Map(entries) => stack.extend(entries.drain(..).map(|(_, v)| v)),
                _ => {}
            }
        }
    }
}

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .or(Ok(Value::Float(v as f64)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .or(Ok(Value::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .or(Ok(Value::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E: de::Error>(self, _v: &[u8]) -> Result<Value, E> {
        Err(E::custom("binary values are not supported in call specs"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
            let pos = pos_of(&item);
            items.push(Node {
                pos,
                value: item.value.0,
            });
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyValue>>()? {
            let key_pos = pos_of(&key);
            let value = map.next_value::<Spanned<NodeValue>>()?;
            let pos = pos_of(&value);
            entries.push((
                Key {
                    pos: key_pos,
                    name: key.value.0,
                },
                Node {
                    pos,
                    value: value.value.0,
                },
            ));
        }
        Ok(Value::Map(entries))
    }
}

/// Deserialize helper: a [`Value`] (the position comes from `Spanned`).
struct NodeValue(Value);

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(NodeValue)
    }
}

/// Deserialize helper: a mapping key, which must be a scalar.
struct KeyValue(String);

impl<'de> Deserialize<'de> for KeyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(ValueVisitor)? {
            Value::String(s) => Ok(KeyValue(s)),
            Value::Int(i) => Ok(KeyValue(i.to_string())),
            Value::Bool(b) => Ok(KeyValue(b.to_string())),
            Value::Float(f) => Ok(KeyValue(f.to_string())),
            Value::Null => Ok(KeyValue("null".into())),
            other => Err(de::Error::custom(format!(
                "a mapping key must be a plain word, not {}",
                other.kind()
            ))),
        }
    }
}

/// One YAML document, or the error that stopped parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// The parse budget: generous for call specs, tight against hostile input.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 24;
    budget.flow_nesting_limit = 24;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_nodes = 100_000;
    budget.max_documents = 1_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    options
}

/// Parses every document of a file into positioned trees. An empty document
/// is `None`.
pub fn parse_documents(text: &str) -> Result<Vec<Option<Node>>, YamlError> {
    let docs: Vec<Option<Spanned<NodeValue>>> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| {
            let pos = e
                .location()
                .map(|l| Pos {
                    line: l.line(),
                    column: l.column(),
                })
                .unwrap_or_default();
            YamlError {
                pos,
                message: clean_message(&e),
            }
        })?;
    Ok(docs
        .into_iter()
        .map(|d| {
            d.and_then(|s| {
                let pos = pos_of(&s);
                match s.value.0 {
                    Value::Null => None,
                    value => Some(Node { pos, value }),
                }
            })
        })
        .collect())
}

/// serde-saphyr's user-facing message, without its rendered snippet and
/// without the "line X column Y" it would prefix (calld prints its own
/// `file:line:col:`), and without the developer advice its default
/// formatter gives ("set DuplicateKeyPolicy in Options").
fn clean_message(e: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    let raw = serde_saphyr::UserMessageFormatter
        .format_message(e.without_snippet())
        .into_owned();
    let first = raw.lines().next().unwrap_or("").trim();
    let msg = strip_location(first);
    if msg.is_empty() {
        "invalid YAML".to_string()
    } else {
        msg.to_string()
    }
}

/// Drops a leading `error: ` / `line X column Y: ` and a trailing
/// ` at line X column Y`, whichever the library put in.
fn strip_location(text: &str) -> &str {
    let mut msg = text.trim();
    msg = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = msg.strip_prefix("line ")
        && let Some(colon) = rest.find(": ")
        && rest[..colon]
            .split(" column ")
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        msg = &rest[colon + 2..];
    }
    if let Some(i) = msg.find(" at line ") {
        msg = &msg[..i];
    }
    msg.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_nested_values_and_keys() {
        let docs =
            parse_documents("a: 1\nb:\n  - x\n  - { c: null }\n---\n---\nname: z\n").unwrap();
        // the empty document between the two `---` is dropped
        assert_eq!(docs.len(), 2, "{docs:#?}");
        let d0 = docs[0].as_ref().unwrap();
        let Value::Map(entries) = &d0.value else {
            panic!()
        };
        assert_eq!(entries[0].0.name, "a");
        assert_eq!(entries[0].0.pos, Pos { line: 1, column: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, column: 4 });
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[1].pos.line, 4);
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(inner[0].1.value, Value::Null);
        assert_eq!(inner[0].0.pos, Pos { line: 4, column: 7 });
        assert_eq!(docs[1].as_ref().unwrap().pos.line, 7);
    }

    #[test]
    fn errors_are_located() {
        let e = parse_documents("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(e.pos.line >= 2, "{e:?}");
        let e = parse_documents("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2, "{e:?}");
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        let text = "[".repeat(10_000) + &"]".repeat(10_000);
        let e = parse_documents(&text).unwrap_err();
        assert!(!e.message.is_empty());
        let text = "a:\n".to_string()
            + &(1..5000)
                .map(|i| format!("{}b:\n", " ".repeat(i)))
                .collect::<String>();
        assert!(parse_documents(&text).is_err());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        assert!(parse_documents(&text).is_err());
    }
}
