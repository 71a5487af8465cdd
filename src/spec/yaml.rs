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
///
/// A spec file is read in one pass over the parser's events
/// ([`parse_plain`]); anything that pass does not handle exactly as
/// serde-saphyr would (errors, anchors, aliases, tags, merge keys,
/// duplicate keys, scalars that may be numbers, deep or large documents)
/// is parsed again by serde-saphyr, which gives the same tree or the
/// located error, with its budget.
pub fn parse_documents(text: &str) -> Result<Vec<Option<Node>>, YamlError> {
    match parse_plain(text) {
        Some(docs) => Ok(docs),
        None => parse_documents_serde(text),
    }
}

/// Limits of [`parse_plain`]: beyond them serde-saphyr (and its budget)
/// decides.
const PLAIN_MAX_DEPTH: usize = 20;
const PLAIN_MAX_NODES: usize = 20_000;
const PLAIN_MAX_DOCUMENTS: usize = 100;
const PLAIN_MAX_MAP_ENTRIES: usize = 256;

/// An open collection while [`parse_plain`] builds the tree.
enum Open {
    Seq(Pos, Vec<Node>),
    /// The entries so far and the key waiting for its value.
    Map(Pos, Vec<(Key, Node)>, Option<Key>),
}

/// The documents of `text` straight from granit-parser's events (the parser
/// serde-saphyr reads), with serde-saphyr's positions and its resolution of
/// plain scalars; `None` when the text holds anything this pass leaves to
/// serde-saphyr (see [`parse_documents`]). Never a different tree: the tests
/// compare both on every corpus file.
pub(crate) fn parse_plain(text: &str) -> Option<Vec<Option<Node>>> {
    use granit_parser::{Event, Parser};
    if text.contains('\u{feff}') {
        return None;
    }
    let mut options = granit_parser::Options::default();
    options.emit_comments = false;
    options.flow_nesting_limit = PLAIN_MAX_DEPTH;
    options.block_nesting_limit = PLAIN_MAX_DEPTH + 1;
    options.simple_key_max_lookahead = 1024;
    let mut stack: Vec<Open> = Vec::new();
    let mut docs = Vec::new();
    let mut documents = 0usize;
    let mut nodes = 0usize;
    for event in Parser::new_from_str_with_options(text, options) {
        let (event, span) = event.ok()?;
        let pos = Pos {
            line: span.start.line() as u64,
            column: span.start.col() as u64 + 1,
        };
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => continue,
            Event::DocumentStart(_, version) => {
                documents += 1;
                if version.is_some() || documents > PLAIN_MAX_DOCUMENTS {
                    return None;
                }
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                if anchor != 0 || tag.is_some() {
                    return None;
                }
                Node {
                    pos,
                    value: plain_scalar(value, style)?,
                }
            }
            Event::SequenceStart(_, anchor, ref tag) | Event::MappingStart(_, anchor, ref tag) => {
                if anchor != 0 || tag.is_some() || stack.len() >= PLAIN_MAX_DEPTH {
                    return None;
                }
                stack.push(if matches!(event, Event::SequenceStart(..)) {
                    Open::Seq(pos, Vec::new())
                } else {
                    Open::Map(pos, Vec::new(), None)
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop()? {
                Open::Seq(pos, items) => Node {
                    pos,
                    value: Value::Seq(items),
                },
                Open::Map(..) => return None,
            },
            Event::MappingEnd => match stack.pop()? {
                Open::Map(pos, entries, None) => Node {
                    pos,
                    value: Value::Map(entries),
                },
                _ => return None,
            },
            // aliases, anchors, comments: serde-saphyr's
            _ => return None,
        };
        nodes += 1;
        if nodes > PLAIN_MAX_NODES {
            return None;
        }
        match stack.last_mut() {
            None => {
                if node.value != Value::Null {
                    docs.push(Some(node));
                }
            }
            Some(Open::Seq(_, items)) => items.push(node),
            Some(Open::Map(_, entries, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    let mut node = node;
                    let name = match std::mem::take(&mut node.value) {
                        Value::String(s) => s,
                        Value::Int(i) => i.to_string(),
                        Value::Null => "null".to_string(),
                        _ => return None,
                    };
                    if name == "<<"
                        || entries.len() >= PLAIN_MAX_MAP_ENTRIES
                        || entries.iter().any(|(k, _)| k.name == name)
                    {
                        return None;
                    }
                    *pending = Some(Key {
                        pos: node.pos,
                        name,
                    });
                }
            },
        }
    }
    stack.is_empty().then_some(docs)
}

/// A scalar as serde-saphyr's `deserialize_any` gives it, for the scalars
/// whose type is certain; `None` for the others (booleans' neighbours,
/// anything that may parse as a number other than a plain decimal).
fn plain_scalar(
    value: std::borrow::Cow<'_, str>,
    style: granit_parser::ScalarStyle,
) -> Option<Value> {
    if style != granit_parser::ScalarStyle::Plain {
        return Some(Value::String(value.into_owned()));
    }
    let t: &str = &value;
    if matches!(t, "" | "~" | "null" | "Null" | "NULL") {
        return Some(Value::Null);
    }
    let bytes = t.as_bytes();
    let first = bytes[0];
    if matches!(bytes[bytes.len() - 1], b' ' | b'\t' | b'\r' | b'\n')
        || matches!(first, b' ' | b'\t' | b'\r' | b'\n')
    {
        return None;
    }
    if first.is_ascii_alphabetic() {
        // YAML 1.1 booleans, and words Rust's float parser knows
        let maybe = t.len() <= 8 && {
            let l = t.to_ascii_lowercase();
            matches!(
                l.as_str(),
                "true"
                    | "yes"
                    | "y"
                    | "on"
                    | "false"
                    | "no"
                    | "n"
                    | "off"
                    | "inf"
                    | "infinity"
                    | "nan"
            )
        };
        if maybe {
            return None;
        }
        return Some(Value::String(value.into_owned()));
    }
    if !first.is_ascii_digit() {
        // `+1`, `-1`, `.5`, `.inf` are numbers; `/x`, `$x`, `(x` are not
        return (!matches!(first, b'+' | b'-' | b'.')).then(|| Value::String(value.into_owned()));
    }
    if bytes.len() <= 18
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || first != b'0')
    {
        return t.parse().ok().map(Value::Int);
    }
    if first == b'0' && matches!(bytes.get(1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        return None;
    }
    // a digit then a character no decimal number has: a string (`10m`,
    // `0 9 * * 1-5`, a GUID, a date-time)
    const DECIMAL: &[u8] = b"0123456789+-._eE:";
    if bytes.iter().any(|b| !DECIMAL.contains(b)) {
        return Some(Value::String(value.into_owned()));
    }
    None
}

/// [`parse_documents`] by serde-saphyr alone.
pub(crate) fn parse_documents_serde(text: &str) -> Result<Vec<Option<Node>>, YamlError> {
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

    /// [`parse_plain`] gives serde-saphyr's tree whenever it gives one.
    fn same_as_serde(text: &str) -> bool {
        match parse_plain(text) {
            Some(plain) => {
                let serde = parse_documents_serde(text);
                assert_eq!(Ok(&plain), serde.as_ref(), "{text:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_one_pass_parse_is_serde_saphyrs_on_every_yaml_file_of_the_repository() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "target" || name.starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, out);
                } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &mut files);
        assert!(files.len() > 20, "{files:?}");
        let mut plain = 0;
        for f in &files {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            plain += usize::from(same_as_serde(&text));
        }
        // most real files take the one-pass path
        assert!(plain * 2 > files.len(), "{plain} of {}", files.len());
    }

    #[test]
    fn the_one_pass_parse_takes_or_leaves_each_kind_of_scalar_as_serde_saphyr_reads_it() {
        // taken: the tree must be serde-saphyr's
        for text in [
            "a: 1\nb: x\nc: \"1\"\nd: '2'\ne: ~\nf:\ng: null\nh: NULL\n",
            "a:\n- x\n- 12\n- [1, b, {c: d}]\n",
            "d: 10m\nj: 30s\nguid: 72f988bf-86f1-41af-91ab-2d7cd011db47\nat: 2027-01-01T09:00:00\n",
            "p: /x\nq: $y\nr: 0 9 * * 1-5\ns: 1 2\nt: 0\nu: 123456789012345678\n",
            "desc: >-\n  folded\n  text\nlit: |\n  a\n   b\nmulti: one\n  two\n",
            "# c\n---\na: 1 # x\n...\n---\n---\nb: [x, z]\n",
            "1: a\n\"k\": b\n~: c\n",
            "plain scalar\n",
            "- a\n- - b\n  - c\n",
            "a: Yesterday\nb: nothing\nc: information\nd: Nancy\ne: off-site\n",
            "",
            "# only a comment\n",
        ] {
            assert!(same_as_serde(text), "left to serde-saphyr: {text:?}");
        }
        // left to serde-saphyr: booleans, numbers other than plain
        // decimals, anchors, aliases, tags, merge keys, duplicates, errors
        for text in [
            "a: yes\n",
            "a: On\n",
            "a: n\n",
            "a: true\n",
            "a: .inf\n",
            "a: inf\n",
            "a: NaN\n",
            "a: Infinity\n",
            "a: -1\n",
            "a: +1\n",
            "a: 1.5\n",
            "a: 1e3\n",
            "a: 0x1f\n",
            "a: 0o7\n",
            "a: 017\n",
            "a: 1_000\n",
            "a: 12:30\n",
            "a: 1234567890123456789\n",
            "a: &x 1\nb: *x\n",
            "a: !!str 1\n",
            "<<: {a: 1}\n",
            "a: 1\na: 2\n",
            "a: [1\n",
            "true: x\n",
            "[a]: b\n",
            "%YAML 1.2\n---\na: 1\n",
            "\u{feff}a: 1\n",
        ] {
            assert!(
                !same_as_serde(text),
                "taken by the one-pass parse: {text:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Random documents from spec-like fragments: whenever the one-pass
        /// parse takes one, its tree is serde-saphyr's.
        #[test]
        fn the_one_pass_parse_agrees_with_serde_saphyr(
            lines in proptest::collection::vec(
                (0usize..4, proptest::sample::select(vec![
                    "a:", "b: x", "c: 1", "d: \"q\"", "- x", "- y: 1", "e: [1, x]", "f: {g: h}",
                    "h: 10m", "i: yes", "j: 0", "k: 1.5", "l: ~", "m: >-", "n: |", "text line",
                    "# note", "---", "...", "o: &a 1", "p: *a", "q: !!str 2", "<<: {r: 1}",
                    "s: 'it''s'", "t: 72f988bf-86f1", "u: -", "v:  x  ", "w: a # c", "\tx: 1",
                    "y: [", "z: }", "a:", "b: x", "?", ": v", "- - 1", "c: 2027-01-01T09:00:00",
                ])),
                0..14,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(indent, l)| format!("{}{l}\n", "  ".repeat(*indent)))
                .collect();
            same_as_serde(&text);
        }
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
