//! Comparing rendered Graph bodies with published ones in golden tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use serde_json::Value as Json;

/// Every difference between `a` (what calld rendered) and `b` (what
/// `other` says, e.g. "seed" or "published"), as `path: ...` lines
/// (object key order ignored, array order kept).
pub fn json_diff(path: &str, a: &Json, b: &Json, other: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Json::Object(x), Json::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => json_diff(&p, l, r, other, out),
                    (Some(l), None) => out.push(format!("{p}: rendered {l}, {other} has none")),
                    (None, Some(r)) => out.push(format!("{p}: rendered none, {other} has {r}")),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Json::Array(x), Json::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), l, r, other, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: rendered {a}, {other} has {b}")),
    }
}
