//! The final create-call body, after the `graph:` merge patch, against
//! Graph's rules and its metadata (SPEC 1.2; issue 11, item 3).
//!
//! Pure: a JSON body in, findings out. The typed spec model already holds
//! these rules for what calld renders itself; this check is for what a
//! `graph:` patch may have changed: a property name or JSON type Graph's
//! metadata does not have at that position (the v1.0 schema extract in
//! `tests/fixtures/graph/`, compiled in), a server-generated property, an
//! empty `targets`, a missing or non-https `callbackUri`, a missing
//! `mediaConfig`, and the source rules of a PSTN call.
//!
//! A property that only Graph's beta metadata knows (`removeFromDefaultAudioGroup`
//! on a mediaConfig, `allowConversationWithoutHost` on a meetingInfo, which
//! Microsoft's v1.0 examples send) is a warning, not an error.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};

use super::diag::Severity;

const V1_SCHEMA: &str = include_str!("../../tests/fixtures/graph/call-schema-v1.0.json");
const BETA_SCHEMA: &str = include_str!("../../tests/fixtures/graph/call-schema-beta.json");

const CALL: &str = "microsoft.graph.call";
const IDENTITY: &str = "microsoft.graph.identity";

/// One step of a path into the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// One finding about the final body.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Where in the body (empty: the body itself).
    pub path: Vec<Seg>,
    pub severity: Severity,
    pub message: String,
}

/// A path as calld prints it: `targets[0].identity`.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Graph's metadata, as the walk needs it.
pub struct GraphSchema {
    defs: Map<String, Json>,
    /// Property names by type in the current beta metadata.
    beta_names: Map<String, Json>,
}

/// The compiled-in schema extracts, parsed once.
pub fn schema() -> &'static GraphSchema {
    static SCHEMA: OnceLock<GraphSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let v1: Json = serde_json::from_str(V1_SCHEMA).expect("the v1.0 schema extract is JSON");
        let beta: Json =
            serde_json::from_str(BETA_SCHEMA).expect("the beta schema extract is JSON");
        GraphSchema {
            defs: v1["definitions"].as_object().cloned().unwrap_or_default(),
            beta_names: beta["x-current-beta-property-names"]["types"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    })
}

use super::validate::SERVER_GENERATED;

impl GraphSchema {
    fn def(&self, name: &str) -> Option<&Json> {
        self.defs.get(name)
    }

    /// The type and its base types, nearest first.
    fn chain(&self, name: &str) -> Vec<String> {
        let mut out = vec![name.to_string()];
        let mut cur = name.to_string();
        while let Some(base) = self
            .def(&cur)
            .and_then(|d| d.get("x-baseType"))
            .and_then(Json::as_str)
        {
            out.push(base.to_string());
            cur = base.to_string();
        }
        out
    }

    fn derives_from(&self, derived: &str, base: &str) -> bool {
        self.chain(derived).iter().any(|t| t == base)
    }

    fn property(&self, ty: &str, key: &str) -> Option<&Json> {
        self.chain(ty)
            .into_iter()
            .find_map(|t| self.def(&t).and_then(|d| d["properties"].get(key)))
    }

    fn flag(&self, ty: &str, flag: &str) -> bool {
        self.def(ty).and_then(|d| d.get(flag)) == Some(&Json::Bool(true))
    }

    fn derived_types(&self, ty: &str) -> Vec<String> {
        self.def(ty)
            .and_then(|d| d.get("x-derivedTypes"))
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the beta metadata has `key` on `ty` or one of its bases.
    fn in_beta(&self, ty: &str, key: &str) -> bool {
        self.chain(ty).iter().any(|t| {
            self.beta_names
                .get(t)
                .and_then(|d| d.get("properties"))
                .and_then(Json::as_array)
                .is_some_and(|a| a.iter().any(|p| p.as_str() == Some(key)))
        })
    }

    /// Walks `body` as a `microsoft.graph.call`.
    pub fn walk_call(&self, body: &Json) -> Vec<Finding> {
        let mut out = Vec::new();
        self.check_type(body, CALL, &mut Vec::new(), &mut out);
        out
    }

    fn check_prop(&self, v: &Json, prop: &Json, path: &mut Vec<Seg>, out: &mut Vec<Finding>) {
        if v.is_null() {
            if prop.get("nullable") == Some(&Json::Bool(false)) {
                push(
                    out,
                    path,
                    Severity::Error,
                    "null where Graph does not allow it",
                );
            }
            return;
        }
        if let Some(r) = prop.get("$ref").and_then(Json::as_str) {
            let name = r.trim_start_matches("#/definitions/");
            return self.check_type(v, name, path, out);
        }
        let wrong = |what: &str| format!("expected {what}, found {}", kind(v));
        match prop.get("type").and_then(Json::as_str) {
            Some("string") if !v.is_string() => {
                push(out, path, Severity::Error, wrong("a string"));
            }
            Some("boolean") if !v.is_boolean() => {
                push(out, path, Severity::Error, wrong("true or false"));
            }
            Some("integer") if !(v.is_i64() || v.is_u64()) => {
                push(out, path, Severity::Error, wrong("a whole number"));
            }
            Some("array") => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        path.push(Seg::Index(i));
                        self.check_prop(item, &prop["items"], path, out);
                        path.pop();
                    }
                }
                None => push(out, path, Severity::Error, wrong("a list")),
            },
            _ => {}
        }
    }

    fn check_type(&self, v: &Json, declared: &str, path: &mut Vec<Seg>, out: &mut Vec<Finding>) {
        let Some(def) = self.def(declared) else {
            return;
        };
        if let Some(members) = def.get("enum").and_then(Json::as_array) {
            let flags = def.get("x-isFlags") == Some(&Json::Bool(true));
            match v.as_str() {
                Some(s) => {
                    let ok = |m: &str| members.iter().any(|e| e.as_str() == Some(m));
                    let valid = if flags {
                        s.split(',').all(|m| ok(m.trim()))
                    } else {
                        ok(s)
                    };
                    if !valid {
                        let names: Vec<&str> = members.iter().filter_map(Json::as_str).collect();
                        push(
                            out,
                            path,
                            Severity::Error,
                            format!("`{s}` is not one of {}", names.join(", ")),
                        );
                    }
                }
                None => push(
                    out,
                    path,
                    Severity::Error,
                    format!("expected a string, found {}", kind(v)),
                ),
            }
            return;
        }
        let Some(obj) = v.as_object() else {
            push(
                out,
                path,
                Severity::Error,
                format!("expected a mapping, found {}", kind(v)),
            );
            return;
        };
        let ty = match obj.get("@odata.type") {
            Some(Json::String(t)) => {
                let name = t.strip_prefix('#').unwrap_or(t);
                if self.def(name).is_none() {
                    push(
                        out,
                        path,
                        Severity::Error,
                        format!("@odata.type `{t}` is not a Graph type"),
                    );
                    return;
                }
                if !self.derives_from(name, declared) {
                    push(
                        out,
                        path,
                        Severity::Error,
                        format!("@odata.type `{t}` does not derive from {declared}"),
                    );
                    return;
                }
                name.to_string()
            }
            Some(other) => {
                push(
                    out,
                    path,
                    Severity::Error,
                    format!("@odata.type must be a string, found {}", kind(other)),
                );
                return;
            }
            None => declared.to_string(),
        };
        if self.flag(&ty, "x-abstract") {
            let derived: Vec<String> = self
                .derived_types(&ty)
                .iter()
                .map(|d| format!("#{d}"))
                .collect();
            push(
                out,
                path,
                Severity::Error,
                format!(
                    "{ty} needs an @odata.type naming one of {}",
                    derived.join(", ")
                ),
            );
            return;
        }
        let open_identity = self.flag(&ty, "x-openType") && self.derives_from(&ty, IDENTITY);
        for (key, value) in obj {
            if key == "@odata.type" {
                continue;
            }
            path.push(Seg::Key(key.clone()));
            if ty == CALL && SERVER_GENERATED.contains(&key.as_str()) {
                push(
                    out,
                    path,
                    Severity::Error,
                    format!("`{key}` is generated by Graph and cannot be sent"),
                );
                path.pop();
                continue;
            }
            // an identitySet without @odata.type: Graph reads the
            // communicationsIdentitySet keys (phone, guest, ...) from it
            let found = self
                .property(&ty, key)
                .map(|p| (ty.clone(), p))
                .or_else(|| {
                    self.derived_types(&ty)
                        .into_iter()
                        .find_map(|d| self.property(&d, key).map(|p| (d.clone(), p)))
                });
            match found {
                Some((_, prop)) if prop.get("x-navigationProperty") == Some(&Json::Bool(true)) => {
                    push(
                        out,
                        path,
                        Severity::Error,
                        format!("`{key}` is a relationship of the call, not part of a create"),
                    );
                }
                Some((_, prop)) => self.check_prop(value, prop, path, out),
                None if open_identity => {
                    if value.is_object() || value.is_array() {
                        push(
                            out,
                            path,
                            Severity::Error,
                            "identity values must be plain values",
                        );
                    }
                }
                None if self.in_beta(&ty, key) => push(
                    out,
                    path,
                    Severity::Warning,
                    format!(
                        "`{key}` is only in Graph's beta metadata for {ty}: the v1.0 endpoint may ignore or refuse it"
                    ),
                ),
                None => push(
                    out,
                    path,
                    Severity::Error,
                    format!("{ty} has no property `{key}`"),
                ),
            }
            path.pop();
        }
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

fn push(out: &mut Vec<Finding>, path: &[Seg], severity: Severity, message: impl Into<String>) {
    out.push(Finding {
        path: path.to_vec(),
        severity,
        message: message.into(),
    });
}

fn key(k: &str) -> Vec<Seg> {
    vec![Seg::Key(k.to_string())]
}

/// Graph's create-call rules on a final body (beyond the schema walk).
pub fn check_rules(body: &Json) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(b) = body.as_object() else {
        push(&mut out, &[], Severity::Error, "the body must be a mapping");
        return out;
    };
    match b.get("callbackUri") {
        None | Some(Json::Null) => push(
            &mut out,
            &key("callbackUri"),
            Severity::Error,
            "the body has no callbackUri: Graph needs the https URL it posts notifications to",
        ),
        Some(Json::String(u)) => {
            if let Err(e) = super::validate::check_callback_uri(u) {
                push(&mut out, &key("callbackUri"), Severity::Error, e);
            }
        }
        Some(_) => {} // the walk reports the type
    }
    match b.get("mediaConfig") {
        None | Some(Json::Null) => push(
            &mut out,
            &key("mediaConfig"),
            Severity::Error,
            "the body has no mediaConfig: Graph needs #microsoft.graph.serviceHostedMediaConfig or #microsoft.graph.appHostedMediaConfig",
        ),
        Some(Json::Object(m)) => {
            if m.get("@odata.type").and_then(Json::as_str)
                == Some("#microsoft.graph.appHostedMediaConfig")
                && !matches!(m.get("blob"), Some(Json::String(_)))
            {
                push(
                    &mut out,
                    &key("mediaConfig"),
                    Severity::Warning,
                    "app-hosted media without a blob: Graph connects the call's media to the \
                     media platform the blob describes (two of Microsoft's published examples \
                     omit it)",
                );
            }
        }
        Some(_) => {}
    }
    match b.get("requestedModalities") {
        None | Some(Json::Null) => push(
            &mut out,
            &key("requestedModalities"),
            Severity::Error,
            "the body has no requestedModalities: Graph needs at least one, such as [\"audio\"]",
        ),
        Some(Json::Array(a)) if a.is_empty() => push(
            &mut out,
            &key("requestedModalities"),
            Severity::Error,
            "requestedModalities is empty: Graph needs at least one, such as [\"audio\"]",
        ),
        _ => {}
    }
    let meeting = matches!(b.get("meetingInfo"), Some(Json::Object(_)));
    let targets = b.get("targets").and_then(Json::as_array);
    match (meeting, targets) {
        (false, None) => push(
            &mut out,
            &key("targets"),
            Severity::Error,
            "the body has neither targets nor meetingInfo: nothing to call",
        ),
        (false, Some(t)) if t.is_empty() => push(
            &mut out,
            &key("targets"),
            Severity::Error,
            "targets is empty and there is no meetingInfo: nothing to call",
        ),
        (true, Some(t)) if !t.is_empty() => push(
            &mut out,
            &key("targets"),
            Severity::Error,
            "a meeting join (meetingInfo) cannot also invite targets",
        ),
        _ => {}
    }
    let pstn = targets.is_some_and(|t| {
        t.iter()
            .any(|t| t.get("identity").and_then(|i| i.get("phone")).is_some())
    });
    if pstn {
        let identity = b
            .get("source")
            .and_then(|s| s.get("identity"))
            .and_then(Json::as_object);
        match identity {
            Some(i) if i.contains_key("applicationInstance") => {}
            Some(i) if i.contains_key("application") => push(
                &mut out,
                &[
                    Seg::Key("source".into()),
                    Seg::Key("identity".into()),
                    Seg::Key("application".into()),
                ],
                Severity::Error,
                PSTN_APPLICATION,
            ),
            _ => push(&mut out, &key("source"), Severity::Error, PSTN_NO_SOURCE),
        }
        if !matches!(b.get("tenantId"), Some(Json::String(t)) if !t.trim().is_empty()) {
            push(&mut out, &key("tenantId"), Severity::Error, PSTN_NO_TENANT);
        }
    }
    out
}

/// The schema walk and the rules, errors first.
pub fn check_body(body: &Json) -> Vec<Finding> {
    let mut out = schema().walk_call(body);
    out.extend(check_rules(body));
    // one finding per path and message
    let mut seen = BTreeSet::new();
    out.retain(|f| seen.insert((path_string(&f.path), f.message.clone())));
    out.sort_by_key(|f| f.severity != Severity::Error);
    out
}

pub(crate) const PSTN_APPLICATION: &str = "`application` cannot be the source of a call to a phone number (PSTN): \
     Graph places PSTN calls from a resource account; write \
     `applicationInstance: { id: <object id of the resource account>, displayName: ... }` instead \
     (its app must be the one in the token, else Graph answers 7507 \"Call source identity invalid\")";
pub(crate) const PSTN_NO_SOURCE: &str = "a call to a phone number (PSTN) needs the resource account as its source: write \
     `source: { identity: { applicationInstance: { id: <object id of the resource account>, displayName: ... } } }` \
     (here or in the configuration's defaults.source)";
pub(crate) const PSTN_NO_TENANT: &str = "a call to a phone number (PSTN) needs `tenantId:` (the tenant of the resource account), \
     here or `defaults.tenantId` in the configuration";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Json {
        json!({
            "callbackUri": "https://bot.contoso.com/api/calls",
            "targets": [{ "identity": { "user": { "id": "x" } } }],
            "requestedModalities": ["audio"],
            "mediaConfig": { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" },
        })
    }

    #[test]
    fn a_good_body_has_no_findings() {
        assert_eq!(check_body(&good()), vec![]);
    }

    #[test]
    fn beta_only_properties_are_warnings() {
        let mut b = good();
        b["mediaConfig"]["removeFromDefaultAudioGroup"] = json!(false);
        let f = check_body(&b);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            path_string(&f[0].path),
            "mediaConfig.removeFromDefaultAudioGroup"
        );
    }

    #[test]
    fn rules_and_walk_catch_broken_bodies() {
        let cases: Vec<(Json, &str, &str)> = vec![
            (
                json!({"callbackUri": null}),
                "callbackUri",
                "no callbackUri",
            ),
            (
                json!({"callbackUri": "ftp://x/y"}),
                "callbackUri",
                "scheme `ftp`",
            ),
            (json!({"targets": []}), "targets", "targets is empty"),
            (
                json!({"mediaConfig": null}),
                "mediaConfig",
                "no mediaConfig",
            ),
            (
                json!({"mediaConfig": {"@odata.type": null}}),
                "mediaConfig",
                "needs an @odata.type",
            ),
            (
                json!({"requestedModalities": []}),
                "requestedModalities",
                "empty",
            ),
            (
                json!({"requestedModalities": ["smell"]}),
                "requestedModalities[0]",
                "not one of",
            ),
            (
                json!({"state": "established"}),
                "state",
                "generated by Graph",
            ),
            (
                json!({"callOptions": {"@odata.type": "#microsoft.graph.outgoingCallOptions", "hideBotAfterEscalation": "yes"}}),
                "callOptions.hideBotAfterEscalation",
                "true or false",
            ),
            (json!({"subjct": "x"}), "subjct", "no property `subjct`"),
            (
                json!({"targets": [{"identity": {"phone": {"id": "+12345678901"}}}], "source": {"identity": {"application": {"id": "a"}}}}),
                "source.identity.application",
                "`application` cannot",
            ),
            (
                json!({"targets": [{"identity": {"phone": {"id": "+12345678901"}}}]}),
                "tenantId",
                "needs `tenantId:`",
            ),
        ];
        for (patch, path, msg) in cases {
            let mut b = good();
            super::super::render::merge_patch(&mut b, &patch);
            // merge_patch removes nulls: put them back where a case wants one
            if let Some(Json::Null) = patch.get("callbackUri") {
                b.as_object_mut().unwrap().remove("callbackUri");
            }
            let f = check_body(&b);
            assert!(
                f.iter().any(|f| f.severity == Severity::Error
                    && path_string(&f.path) == path
                    && f.message.contains(msg)),
                "{patch}: expected an error at {path} containing `{msg}`, got {f:#?}"
            );
        }
    }
}
