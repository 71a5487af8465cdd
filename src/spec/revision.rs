//! A spec's revision: the hash of what its document says (docs/runs.md,
//! "Run identity").
//!
//! The revision is computed from the parsed YAML document, never from the
//! validated model: the model holds values that come from the configuration
//! (`defaults.source`, `defaults.tenantId`, `callback.publicUrl`) and from
//! the machine (the sandbox's callback port), and none of those may change a
//! spec's identity. Key order, comments, whitespace, quoting styles and
//! anchors do not change it either (they are gone after parsing). The
//! top-level `name`, `description` and `suspend` keys are left out: a rename
//! keeps the revision (so it can carry the history), and a description or
//! suspend edit places nothing.

use sha2::{Digest, Sha256};

use super::yaml::{Node, Value};

/// Top-level keys that are not part of a revision.
pub const NOT_IN_REVISION: &[&str] = &["name", "description", "suspend"];

/// Marks the revision format, so a future change of the encoding cannot
/// collide with this one.
const FORMAT: &[u8] = b"calld-revision-2\n";

/// Hex SHA-256 of a spec document's normalised content.
pub fn of_document(doc: &Node) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT);
    match &doc.value {
        Value::Map(entries) => {
            let mut kept: Vec<_> = entries
                .iter()
                .filter(|(k, _)| !NOT_IN_REVISION.contains(&k.name.as_str()))
                .collect();
            kept.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            encode_map(&mut h, kept.into_iter().map(|(k, v)| (k.name.as_str(), v)));
        }
        other => encode(&mut h, other),
    }
    hex::encode(h.finalize())
}

/// A length-prefixed, tagged encoding: no two different values share one.
fn encode(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Int(i) => {
            h.update(b"i");
            h.update(i.to_be_bytes());
        }
        Value::Float(f) => {
            h.update(b"d");
            // -0.0 and 0.0 say the same; every NaN is one NaN
            let f = if *f == 0.0 {
                0.0
            } else if f.is_nan() {
                f64::NAN
            } else {
                *f
            };
            h.update(f.to_bits().to_be_bytes());
        }
        Value::String(s) => string(h, b's', s),
        Value::Seq(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_be_bytes());
            for item in items {
                encode(h, &item.value);
            }
        }
        Value::Map(entries) => {
            let mut sorted: Vec<_> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            encode_map(h, sorted.into_iter().map(|(k, v)| (k.name.as_str(), v)));
        }
    }
}

fn encode_map<'n>(h: &mut Sha256, entries: impl ExactSizeIterator<Item = (&'n str, &'n Node)>) {
    h.update(b"{");
    h.update((entries.len() as u64).to_be_bytes());
    for (k, v) in entries {
        string(h, b'k', k);
        encode(h, &v.value);
    }
}

fn string(h: &mut Sha256, tag: u8, s: &str) {
    h.update([tag]);
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse_documents;
    use super::*;

    fn rev(text: &str) -> String {
        let docs = parse_documents(text).unwrap();
        let doc = docs.into_iter().flatten().next().unwrap();
        of_document(&doc)
    }

    #[test]
    fn layout_comments_order_and_left_out_keys_keep_the_revision() {
        let a = rev("targets:\n  - user: { id: u1 }\nsubject: Hi\n");
        let b = rev(
            "# a comment\nname: other\ndescription: x\nsuspend: true\nsubject: \"Hi\"\ntargets: [ { user: { id: 'u1' } } ]\n",
        );
        assert_eq!(a, b);
    }

    #[test]
    fn the_call_changes_the_revision() {
        let a = rev("targets:\n  - user: { id: u1 }\nsubject: Hi\n");
        for other in [
            "targets:\n  - user: { id: u2 }\nsubject: Hi\n",
            "targets:\n  - user: { id: u1 }\nsubject: Ho\n",
            "targets:\n  - user: { id: u1 }\nsubject: Hi\nretry: { attempts: 1 }\n",
            "targets:\n  - user: { id: u1 }\nsubject: Hi\nhangupAfter: 1m\n",
            "targets:\n  - user: { id: u1 }\n  - user: { id: u2 }\nsubject: Hi\n",
        ] {
            assert_ne!(a, rev(other), "{other}");
        }
        // the encoding keeps types apart
        assert_ne!(rev("subject: '1'\n"), rev("subject: 1\n"));
        assert_ne!(rev("a: [x, y]\n"), rev("a: [xy]\n"));
    }
}
