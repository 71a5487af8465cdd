//! Rendering a validated spec into Graph's create-call request (SPEC 1.2).

use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};

use super::model::*;
use crate::config::ApiVersion;
use crate::schedule::Trigger;

/// One create-call request: what `calld render` prints per spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Request {
    pub name: String,
    pub method: &'static str,
    pub url: String,
    pub body: Json,
}

/// `{baseUrl}/v1.0/communications/calls`, `{baseUrl}/beta/communications/calls`,
/// or the seed's deprecated `{baseUrl}/beta/app/calls`.
pub fn calls_url(base_url: &str, api: ApiVersion, legacy_app_endpoint: bool) -> String {
    let base = base_url.trim_end_matches('/');
    if legacy_app_endpoint {
        format!("{base}/beta/app/calls")
    } else {
        format!("{base}/{}/communications/calls", api.as_str())
    }
}

/// The full request for a spec.
pub fn request(spec: &Spec, base_url: &str, api: ApiVersion, legacy_app_endpoint: bool) -> Request {
    Request {
        name: spec.name.clone(),
        method: "POST",
        url: calls_url(base_url, api, legacy_app_endpoint),
        body: body(spec),
    }
}

/// The create-call body: Graph's property names, `@odata.type` on the
/// polymorphic values, identities passed through, the `graph:` merge patch
/// applied last.
pub fn body(spec: &Spec) -> Json {
    let call = &spec.call;
    let mut b = Map::new();
    b.insert("callbackUri".into(), json!(call.callback_uri));
    if let Some(t) = &call.tenant_id {
        b.insert("tenantId".into(), json!(t));
    }
    if let Some(s) = &call.subject {
        b.insert("subject".into(), json!(s));
    }
    if let Some(src) = &call.source {
        let mut source = Map::new();
        source.insert("identity".into(), src.identity.to_value());
        source.extend(src.extra.to_map());
        b.insert("source".into(), Json::Object(source));
    }
    if let CallKind::Targets(targets) = &call.kind {
        let list: Vec<Json> = targets
            .iter()
            .map(|t| json!({ "identity": { t.kind.key(): t.identity.to_value() } }))
            .collect();
        b.insert("targets".into(), Json::Array(list));
    }
    b.insert(
        "requestedModalities".into(),
        Json::Array(call.modalities.iter().map(|m| json!(m.as_str())).collect()),
    );
    b.insert("mediaConfig".into(), media_config(&call.media));
    if let Some(chat) = &call.chat {
        b.insert("chatInfo".into(), chat.to_value());
    }
    if let CallKind::Meeting(m) = &call.kind {
        b.insert("meetingInfo".into(), meeting_info(m));
    }
    let mut body = Json::Object(b);
    if let Some(patch) = &spec.graph_patch {
        merge_patch(&mut body, &patch.to_value());
    }
    body
}

fn media_config(media: &Media) -> Json {
    match media {
        Media::ServiceHosted { prefetch } if prefetch.is_empty() => {
            json!({ "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" })
        }
        Media::ServiceHosted { prefetch } => json!({
            "@odata.type": "#microsoft.graph.serviceHostedMediaConfig",
            "preFetchMedia": prefetch
                .iter()
                .map(|p| json!({ "uri": p.uri, "resourceId": p.resource_id }))
                .collect::<Vec<_>>(),
        }),
        Media::AppHosted { blob: Some(blob) } => {
            json!({ "@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": blob })
        }
        Media::AppHosted { blob: None } => {
            json!({ "@odata.type": "#microsoft.graph.appHostedMediaConfig" })
        }
    }
}

fn meeting_info(meeting: &Meeting) -> Json {
    match meeting {
        Meeting::Organizer { organizer } => json!({
            "@odata.type": "#microsoft.graph.organizerMeetingInfo",
            "organizer": organizer.to_value(),
        }),
        Meeting::JoinMeetingId { id, passcode } => {
            let mut m = Map::new();
            m.insert(
                "@odata.type".into(),
                json!("#microsoft.graph.joinMeetingIdMeetingInfo"),
            );
            m.insert("joinMeetingId".into(), json!(id));
            match passcode {
                Some(Some(p)) => {
                    m.insert("passcode".into(), json!(p));
                }
                Some(None) => {
                    m.insert("passcode".into(), Json::Null);
                }
                None => {}
            }
            Json::Object(m)
        }
    }
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a
/// key, anything else replaces.
pub fn merge_patch(target: &mut Json, patch: &Json) {
    let Json::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Json::Object(Map::new());
    }
    let Json::Object(map) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Json::Null), value);
        }
    }
}

/// The callbackUri with `calldRun=<run id>` appended to its query, so a
/// notification can be matched to its run even when the create response was
/// lost.
pub fn callback_uri_for_run(callback_uri: &str, run_id: &str) -> String {
    match url::Url::parse(callback_uri) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("calldRun", run_id);
            url.to_string()
        }
        // validated specs always hold a URL; keep the text otherwise
        Err(_) => callback_uri.to_string(),
    }
}

/// The body for one run: the spec's body with the run's callbackUri.
pub fn body_for_run(spec: &Spec, run_id: &str) -> Json {
    let mut b = body(spec);
    let uri = b
        .get("callbackUri")
        .and_then(Json::as_str)
        .map(|u| callback_uri_for_run(u, run_id));
    if let (Some(uri), Some(obj)) = (uri, b.as_object_mut()) {
        obj.insert("callbackUri".into(), Json::String(uri));
    }
    b
}

/// The revision as calld computed it before version 2 of the revision
/// format: SHA-256 over the rendered body (configuration values included),
/// the schedule, retry and hangupAfter. Only used to recognise ledger rows
/// written by an older calld (docs/runs.md, "Upgrading"); a spec's revision
/// is [`super::revision::of_document`].
pub fn legacy_revision(spec: &Spec) -> String {
    let schedule = spec.schedule.as_ref().map(|s| {
        json!({
            "trigger": match &s.trigger {
                Trigger::At(t) => format!("at {t}"),
                Trigger::Cron(c) => format!("cron {}", c.as_str()),
            },
            "timezone": s.timezone_name,
            "deadline": s.deadline.map(|d| d.as_millis() as u64),
            "concurrency": s.concurrency.as_str(),
            "jitter": s.jitter.map(|d| d.as_millis() as u64),
            "until": s.until.map(|t| t.to_string()),
        })
    });
    let normal = json!({
        "body": sorted(&body(spec)),
        "schedule": schedule,
        "retry": { "attempts": spec.retry.attempts, "interval": spec.retry.interval.as_millis() as u64 },
        "hangupAfter": spec.hangup_after.map(|d| d.as_millis() as u64),
    });
    let bytes = serde_json::to_vec(&normal).expect("JSON values serialise");
    hex::encode(Sha256::digest(bytes))
}

/// A copy with object keys sorted, recursively.
fn sorted(v: &Json) -> Json {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Json::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1]});
        merge_patch(&mut t, &json!({"a": {"b": 1}, "n": {"x": null}}));
        assert_eq!(t, json!({"a": {"b": 1}, "n": {}}));
    }

    #[test]
    fn urls() {
        assert_eq!(
            calls_url("https://graph.microsoft.com/", ApiVersion::V1, false),
            "https://graph.microsoft.com/v1.0/communications/calls"
        );
        assert_eq!(
            calls_url("https://graph.microsoft.com", ApiVersion::Beta, false),
            "https://graph.microsoft.com/beta/communications/calls"
        );
        assert_eq!(
            calls_url("https://graph.microsoft.com", ApiVersion::V1, true),
            "https://graph.microsoft.com/beta/app/calls"
        );
    }

    #[test]
    fn run_id_is_appended_to_the_query() {
        assert_eq!(
            callback_uri_for_run("https://bot.contoso.com/api/calls", "r1"),
            "https://bot.contoso.com/api/calls?calldRun=r1"
        );
        assert_eq!(
            callback_uri_for_run("https://bot.contoso.com/api/calls?x=1", "r 1"),
            "https://bot.contoso.com/api/calls?x=1&calldRun=r+1"
        );
    }
}
