//! Compact, shared JSON objects for the validated spec model (issue 12,
//! bounded memory).
//!
//! The model passes identities, chatInfo and the `graph:` patch through to
//! Graph as written. Held as `serde_json::Map`s (ordered maps of 80-byte
//! values) they were most of a spec's memory: one phone target took about
//! 550 bytes in 6 allocations, the configuration's default source about
//! 950 bytes in 10, copied into every spec. A [`JsonObject`] is the
//! object's compact JSON text, interned: the specs that say the same thing
//! (the default source, the same people called from many specs, the same
//! chat) share one allocation. Reading one parses the text; that happens
//! when a body is rendered or a rule looks at a key, never per decision.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value as Json};

/// A JSON object as compact text, immutable and shared (see the module
/// documentation). Key order is kept as written.
#[derive(Clone)]
pub struct JsonObject(Arc<str>);

/// Interned texts, and the size at which the ones no spec holds any more
/// are dropped (so the set stays within twice what is in use).
type Interned = Mutex<(HashSet<Arc<str>>, usize)>;

fn interned() -> &'static Interned {
    static SET: OnceLock<Interned> = OnceLock::new();
    SET.get_or_init(|| Mutex::new((HashSet::new(), 1024)))
}

fn intern(text: String) -> Arc<str> {
    let mut guard = interned().lock().unwrap_or_else(|p| p.into_inner());
    let (set, prune_at) = &mut *guard;
    if let Some(hit) = set.get(text.as_str()) {
        return hit.clone();
    }
    let shared: Arc<str> = text.into();
    set.insert(shared.clone());
    if set.len() >= *prune_at {
        set.retain(|s| Arc::strong_count(s) > 1);
        *prune_at = (set.len() * 2).max(1024);
    }
    shared
}

impl JsonObject {
    /// The object's compact text, shared with every equal text in use.
    pub fn new(map: &Map<String, Json>) -> JsonObject {
        let text = serde_json::to_string(map).expect("a JSON object serializes");
        JsonObject(intern(text))
    }

    /// `{}`.
    pub fn empty() -> JsonObject {
        JsonObject::new(&Map::new())
    }

    /// The object as a map, in the order written.
    pub fn to_map(&self) -> Map<String, Json> {
        serde_json::from_str(&self.0).expect("a JsonObject holds a JSON object")
    }

    /// The object as a JSON value.
    pub fn to_value(&self) -> Json {
        Json::Object(self.to_map())
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Option<Json> {
        self.to_map().remove(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.to_map().contains_key(key)
    }

    pub fn is_empty(&self) -> bool {
        &*self.0 == "{}"
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Map<String, Json>> for JsonObject {
    fn from(map: Map<String, Json>) -> JsonObject {
        JsonObject::new(&map)
    }
}

/// Equal when they hold the same object (key order aside, as for maps).
impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0 || self.to_map() == other.to_map()
    }
}

impl std::fmt::Debug for JsonObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Json) -> JsonObject {
        match v {
            Json::Object(m) => JsonObject::from(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn keeps_the_object_and_its_key_order() {
        let o = obj(
            json!({"id": "x", "displayName": "Heidi", "n": 1.5, "deep": {"b": [1, null], "a": true}}),
        );
        assert_eq!(
            o.as_str(),
            r#"{"id":"x","displayName":"Heidi","n":1.5,"deep":{"b":[1,null],"a":true}}"#
        );
        assert_eq!(o.get("displayName"), Some(json!("Heidi")));
        assert!(o.contains_key("deep") && !o.contains_key("tenantId"));
        assert_eq!(o.to_value()["deep"]["a"], json!(true));
        assert!(!o.is_empty() && JsonObject::empty().is_empty());
    }

    #[test]
    fn numbers_come_back_exactly() {
        // serde_json's `float_roundtrip`: the text holds the shortest form
        // of each float, and parsing it gives the same bits back
        for x in [
            0.1f64,
            1.0 / 3.0,
            2.2250738585072014e-308,
            5e-324,
            1.7976931348623157e308,
            9007199254740993.0,
            0.30000000000000004,
            123456.78901234567,
            // parsed one bit off without `float_roundtrip`
            1.0715660391465826e-75,
            -1.81996730402717e-179,
            -1.603964615428183e+143,
            -9.643915712060552e-234,
        ] {
            let o = obj(json!({ "x": x, "n": -7, "big": 18446744073709551615u64 }));
            assert_eq!(
                o.get("x").and_then(|v| v.as_f64()).map(f64::to_bits),
                Some(x.to_bits()),
                "{x}"
            );
            assert_eq!(o.get("n"), Some(json!(-7)));
            assert_eq!(o.get("big"), Some(json!(18446744073709551615u64)));
        }
    }

    #[test]
    fn equal_objects_share_one_text() {
        let a = obj(json!({"applicationInstance": {"id": "3d91", "displayName": "bot"}}));
        let b = obj(json!({"applicationInstance": {"id": "3d91", "displayName": "bot"}}));
        assert!(Arc::ptr_eq(&a.0, &b.0), "interned");
        // key order differs: not the same text, still the same object
        let c = obj(json!({"applicationInstance": {"displayName": "bot", "id": "3d91"}}));
        assert!(!Arc::ptr_eq(&a.0, &c.0));
        assert_eq!(a, c);
        assert_ne!(a, obj(json!({"applicationInstance": {"id": "other"}})));
    }

    #[test]
    fn texts_no_spec_holds_are_dropped() {
        // more distinct texts than the first prune size, none kept
        for i in 0..5_000 {
            drop(obj(json!({ "id": format!("prune-test-{i}") })));
        }
        let kept = obj(json!({"id": "prune-test-kept"}));
        let guard = interned().lock().unwrap();
        assert!(
            guard.0.len() < 5_000,
            "{} texts still interned",
            guard.0.len()
        );
        assert!(guard.0.contains(kept.as_str()));
    }
}
