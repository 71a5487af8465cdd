//! Graph's rules for a create-call body, and the application roles a body
//! needs. Pure: a JSON value in, a verdict out.
//!
//! Property names, `@odata.type` values and enum members come from the
//! schema extracts in `tests/fixtures/graph/`, compiled in, so the emulator
//! checks what Graph's metadata says rather than what calld renders.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::errors::GraphError;

/// The Graph API version of the endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    Beta,
}

impl ApiVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1.0",
            ApiVersion::Beta => "beta",
        }
    }
}

/// Properties the service sets; a create that sends one is refused.
pub const SERVER_GENERATED: &[&str] = &[
    "id",
    "state",
    "direction",
    "resultInfo",
    "myParticipantId",
    "mediaState",
    "callRoutes",
    "toneInfo",
    "transcription",
    // read-only beta properties
    "activeModalities",
    "answeredBy",
    "terminationReason",
];

/// Graph's limit of VoIP users in one group call.
pub const MAX_VOIP_USER_TARGETS: usize = 5;

/// What the schema extracts say, once per process.
struct Schema {
    v1_call_properties: BTreeSet<String>,
    beta_call_properties: BTreeSet<String>,
    modalities: BTreeSet<String>,
    media_config_types: BTreeSet<String>,
    meeting_info_types: BTreeSet<String>,
    identity_kinds: BTreeSet<String>,
}

const V1_SCHEMA: &str = include_str!("../../tests/fixtures/graph/call-schema-v1.0.json");
const BETA_SCHEMA: &str = include_str!("../../tests/fixtures/graph/call-schema-beta.json");

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let v1: Value = serde_json::from_str(V1_SCHEMA).expect("the v1.0 schema extract is JSON");
        let beta: Value =
            serde_json::from_str(BETA_SCHEMA).expect("the beta schema extract is JSON");
        let defs = &v1["definitions"];
        let props = |def: &Value| -> Vec<(String, Value)> {
            def["properties"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let mut v1_call_properties: BTreeSet<String> = props(&defs["microsoft.graph.call"])
            .into_iter()
            .filter(|(_, v)| v["x-navigationProperty"] != Value::Bool(true))
            .map(|(k, _)| k)
            .collect();
        // `id` is inherited from microsoft.graph.entity.
        v1_call_properties.extend(
            props(&defs["microsoft.graph.entity"])
                .into_iter()
                .map(|(k, _)| k),
        );
        let mut beta_call_properties: BTreeSet<String> =
            beta["x-current-beta-property-names"]["types"]["microsoft.graph.call"]["properties"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        beta_call_properties.insert("id".to_string());
        let strings = |v: &Value| -> BTreeSet<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let modalities = strings(&defs["microsoft.graph.modality"]["enum"])
            .into_iter()
            .filter(|m| m != "unknownFutureValue" && m != "unknown")
            .collect();
        let odata = |base: &str| -> BTreeSet<String> {
            strings(&defs[base]["x-derivedTypes"])
                .into_iter()
                .map(|t| format!("#{t}"))
                .collect()
        };
        let media_config_types = odata("microsoft.graph.mediaConfig");
        let meeting_info_types = odata("microsoft.graph.meetingInfo");
        let identity_kinds = props(&defs["microsoft.graph.identitySet"])
            .into_iter()
            .chain(props(&defs["microsoft.graph.communicationsIdentitySet"]))
            .filter(|(_, v)| v["$ref"] == "#/definitions/microsoft.graph.identity")
            .map(|(k, _)| k)
            .collect();
        Schema {
            v1_call_properties,
            beta_call_properties,
            modalities,
            media_config_types,
            meeting_info_types,
            identity_kinds,
        }
    })
}

/// The kind of call a valid body asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// One target (VoIP or PSTN).
    PeerToPeer,
    /// Several targets.
    Group,
    /// Joining a meeting (`meetingInfo`).
    Meeting,
}

/// What the rest of the emulator needs to know about a valid body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallShape {
    pub kind: CallKind,
    /// The source joins as a guest (`source.identity.guest`, or a `user`
    /// with `identityProvider: None` as in the 2019 seed).
    pub guest: bool,
    pub app_hosted_media: bool,
    /// The id of each target's identity, in order.
    pub target_ids: Vec<String>,
    /// For meetings: the chat thread id and join meeting id, when present.
    pub meeting_keys: Vec<String>,
    /// The body's `tenantId`.
    pub tenant_id: Option<String>,
}

fn bad(message: impl Into<String>) -> GraphError {
    GraphError::bad_request(message)
}

fn is_present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// `Some(object)` for a present object, an error for a present non-object.
fn object_at<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a Map<String, Value>>, GraphError> {
    match is_present(map.get(key)) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(bad(format!("{what} must be an object."))),
    }
}

fn string_at<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, GraphError> {
    match is_present(map.get(key)) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{what} must be a string."))),
    }
}

/// Checks a create-call body against Graph's rules (400 on the first broken one).
pub fn check_create(body: &Value, api: ApiVersion) -> Result<CallShape, GraphError> {
    let schema = schema();
    let Value::Object(call) = body else {
        return Err(bad(
            "The request body must be a JSON object of type microsoft.graph.call.",
        ));
    };

    // Property names: known to the metadata, annotations aside.
    let known = match api {
        ApiVersion::V1 => &schema.v1_call_properties,
        ApiVersion::Beta => &schema.beta_call_properties,
    };
    for key in call.keys() {
        if let Some(annotation) = key.strip_prefix('@') {
            if annotation == "odata.type" {
                match call.get(key).and_then(Value::as_str) {
                    Some("#microsoft.graph.call") => continue,
                    other => {
                        return Err(bad(format!(
                            "A type named '{}' could not be resolved; expected '#microsoft.graph.call'.",
                            other.unwrap_or("(not a string)")
                        )));
                    }
                }
            }
            continue;
        }
        if !known.contains(key) {
            return Err(bad(format!(
                "The property '{key}' does not exist on type 'microsoft.graph.call'. \
                 Make sure to only use property names that are defined by the type."
            )));
        }
    }
    for key in SERVER_GENERATED {
        if call.contains_key(*key) {
            return Err(bad(format!(
                "The property '{key}' is read-only and cannot be set when creating a call."
            )));
        }
    }

    // callbackUri: required, https, or http to a loopback host.
    let callback = string_at(call, "callbackUri", "callbackUri")?
        .ok_or_else(|| bad("callbackUri is required."))?;
    check_callback_uri(callback)?;

    // mediaConfig: required, a known derived type.
    let media = object_at(call, "mediaConfig", "mediaConfig")?
        .ok_or_else(|| bad("mediaConfig is required."))?;
    let media_type = string_at(media, "@odata.type", "mediaConfig.@odata.type")?
        .ok_or_else(|| bad("mediaConfig must specify its @odata.type."))?;
    if !schema.media_config_types.contains(media_type) {
        return Err(bad(format!(
            "mediaConfig has an unknown @odata.type '{media_type}'; expected one of {}.",
            list(&schema.media_config_types)
        )));
    }
    let app_hosted_media = media_type == "#microsoft.graph.appHostedMediaConfig";
    if app_hosted_media {
        string_at(media, "blob", "mediaConfig.blob")?
            .ok_or_else(|| bad("mediaConfig.blob is required for app-hosted media."))?;
    } else if let Some(prefetch) = is_present(media.get("preFetchMedia")) {
        let items = prefetch
            .as_array()
            .ok_or_else(|| bad("mediaConfig.preFetchMedia must be an array."))?;
        for (i, item) in items.iter().enumerate() {
            let item = item
                .as_object()
                .ok_or_else(|| bad(format!("mediaConfig.preFetchMedia[{i}] must be an object.")))?;
            string_at(item, "uri", "mediaInfo.uri")?
                .ok_or_else(|| bad(format!("mediaConfig.preFetchMedia[{i}].uri is required.")))?;
        }
    }

    // requestedModalities: known values (absent is accepted, as in the seed).
    if let Some(m) = is_present(call.get("requestedModalities")) {
        let values = m
            .as_array()
            .ok_or_else(|| bad("requestedModalities must be an array."))?;
        if values.is_empty() {
            return Err(bad("requestedModalities must name at least one modality."));
        }
        for v in values {
            let s = v.as_str().unwrap_or_default();
            if !schema.modalities.contains(s) {
                return Err(bad(format!(
                    "requestedModalities has an unknown value {v}; expected one of {}.",
                    list(&schema.modalities)
                )));
            }
        }
    }

    // source: optional (Graph v1.0 takes the caller from the token for
    // peer-to-peer VoIP calls and meeting joins, as Microsoft's examples
    // and the Graph SDKs send it); when given, with an identity set.
    let guest = match object_at(call, "source", "source")? {
        None => false,
        Some(source) => {
            let identity = object_at(source, "identity", "source.identity")?
                .ok_or_else(|| bad("source.identity is required."))?;
            check_identity_set(identity, "source.identity")?;
            identity.get("guest").is_some_and(Value::is_object)
                || identity
                    .get("user")
                    .and_then(|u| u.get("identityProvider"))
                    .and_then(Value::as_str)
                    .is_some_and(|p| p.eq_ignore_ascii_case("None"))
        }
    };

    let tenant_id = string_at(call, "tenantId", "tenantId")?.map(str::to_string);
    string_at(call, "subject", "subject")?;
    let chat = object_at(call, "chatInfo", "chatInfo")?;
    object_at(call, "callOptions", "callOptions")?;

    // Either targets or meetingInfo.
    let targets = is_present(call.get("targets"));
    let meeting = object_at(call, "meetingInfo", "meetingInfo")?;
    let (kind, target_ids, meeting_keys) = match (targets, meeting) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "A call can have either targets or meetingInfo, not both.",
            ));
        }
        (None, None) => {
            return Err(bad(
                "Either targets (a peer-to-peer or group call) or meetingInfo (a meeting join) is required.",
            ));
        }
        (Some(targets), None) => {
            let items = targets
                .as_array()
                .ok_or_else(|| bad("targets must be an array."))?;
            if items.is_empty() {
                return Err(bad("targets must name at least one participant."));
            }
            let mut ids = Vec::new();
            let mut voip_users = 0;
            for (i, t) in items.iter().enumerate() {
                let what = format!("targets[{i}]");
                let t = t.as_object().ok_or_else(|| {
                    bad(format!(
                        "{what} must be an invitationParticipantInfo object."
                    ))
                })?;
                let ident = object_at(t, "identity", &format!("{what}.identity"))?
                    .ok_or_else(|| bad(format!("{what}.identity is required.")))?;
                let id = check_identity_set(ident, &format!("{what}.identity"))?;
                if ident.get("user").is_some_and(Value::is_object) {
                    voip_users += 1;
                }
                if let Some(phone) = ident.get("phone").and_then(|p| p.get("id")) {
                    let phone = phone.as_str().unwrap_or_default();
                    if !is_e164(phone) {
                        return Err(bad(format!(
                            "{what}.identity.phone.id '{phone}' is not a phone number in E.164 format (+ and 7 to 15 digits)."
                        )));
                    }
                }
                ids.push(id);
            }
            if voip_users > MAX_VOIP_USER_TARGETS {
                return Err(bad(format!(
                    "A group call can invite at most {MAX_VOIP_USER_TARGETS} VoIP users; this one has {voip_users}."
                )));
            }
            let kind = if items.len() > 1 {
                CallKind::Group
            } else {
                CallKind::PeerToPeer
            };
            (kind, ids, Vec::new())
        }
        (None, Some(meeting)) => {
            let mtype = string_at(meeting, "@odata.type", "meetingInfo.@odata.type")?
                .ok_or_else(|| bad("meetingInfo must specify its @odata.type."))?;
            if !schema.meeting_info_types.contains(mtype) {
                return Err(bad(format!(
                    "meetingInfo has an unknown @odata.type '{mtype}'; expected one of {}.",
                    list(&schema.meeting_info_types)
                )));
            }
            let mut keys = Vec::new();
            match mtype {
                "#microsoft.graph.organizerMeetingInfo" => {
                    let organizer = object_at(meeting, "organizer", "meetingInfo.organizer")?
                        .ok_or_else(|| {
                            bad("meetingInfo.organizer is required for organizerMeetingInfo.")
                        })?;
                    check_identity_set(organizer, "meetingInfo.organizer")?;
                    let chat = chat.ok_or_else(|| {
                        bad("chatInfo is required to join a meeting with organizerMeetingInfo.")
                    })?;
                    let thread = string_at(chat, "threadId", "chatInfo.threadId")?
                        .ok_or_else(|| bad("chatInfo.threadId is required to join a meeting."))?;
                    keys.push(thread.to_string());
                }
                "#microsoft.graph.joinMeetingIdMeetingInfo" => {
                    let id = string_at(meeting, "joinMeetingId", "meetingInfo.joinMeetingId")?
                        .ok_or_else(|| bad("meetingInfo.joinMeetingId is required."))?;
                    string_at(meeting, "passcode", "meetingInfo.passcode")?;
                    keys.push(id.to_string());
                }
                _ => {
                    string_at(meeting, "token", "meetingInfo.token")?
                        .ok_or_else(|| bad("meetingInfo.token is required."))?;
                }
            }
            (CallKind::Meeting, Vec::new(), keys)
        }
    };

    Ok(CallShape {
        kind,
        guest,
        app_hosted_media,
        target_ids,
        meeting_keys,
        tenant_id,
    })
}

/// https, or http to a loopback host (local use, as SPEC 5 allows).
pub fn check_callback_uri(uri: &str) -> Result<(), GraphError> {
    let url = url::Url::parse(uri).map_err(|e| {
        bad(format!(
            "callbackUri '{uri}' is not a valid absolute URI: {e}."
        ))
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        _ => Err(bad(format!(
            "callbackUri '{uri}' must use https (http is accepted only for a loopback host)."
        ))),
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// An identity set must hold at least one known identity with an `id`
/// (extra keys pass: the types are open). Returns that id.
fn check_identity_set(set: &Map<String, Value>, what: &str) -> Result<String, GraphError> {
    let kinds = &schema().identity_kinds;
    for (key, value) in set {
        if !kinds.contains(key) || value.is_null() {
            continue;
        }
        let ident = value
            .as_object()
            .ok_or_else(|| bad(format!("{what}.{key} must be an identity object.")))?;
        match ident.get("id") {
            Some(Value::String(id)) if !id.is_empty() => return Ok(id.clone()),
            _ => return Err(bad(format!("{what}.{key}.id is required."))),
        }
    }
    Err(bad(format!(
        "{what} must hold one of the identities {}.",
        list(kinds)
    )))
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

fn list(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The application roles a call needs: each entry is satisfied by any one
/// of its roles.
pub fn required_roles(shape: &CallShape) -> Vec<&'static [&'static str]> {
    let mut needs: Vec<&'static [&'static str]> = Vec::new();
    match shape.kind {
        CallKind::PeerToPeer => {
            needs.push(&["Calls.Initiate.All", "Calls.InitiateGroupCall.All"]);
        }
        CallKind::Group => needs.push(&["Calls.InitiateGroupCall.All"]),
        CallKind::Meeting if shape.guest => needs.push(&["Calls.JoinGroupCallAsGuest.All"]),
        CallKind::Meeting => needs.push(&["Calls.JoinGroupCall.All"]),
    }
    if shape.app_hosted_media {
        needs.push(&["Calls.AccessMedia.All"]);
    }
    needs
}

/// The roles missing from `granted` (compared case-insensitively); empty
/// when the call is allowed. Each missing need is named by its first role.
pub fn missing_roles(shape: &CallShape, granted: &[String]) -> Vec<&'static str> {
    required_roles(shape)
        .into_iter()
        .filter(|any_of| {
            !any_of
                .iter()
                .any(|need| granted.iter().any(|g| g.eq_ignore_ascii_case(need)))
        })
        .map(|any_of| any_of[0])
        .collect()
}

/// 403 `7505` when both the token's `tid` and the body's `tenantId` are
/// GUIDs and differ (placeholder tenant ids, as in the seed, pass).
pub fn check_tenant(token_tid: &str, body_tenant: Option<&str>) -> Result<(), GraphError> {
    let Some(body_tenant) = body_tenant else {
        return Ok(());
    };
    let (Ok(a), Ok(b)) = (
        uuid::Uuid::parse_str(token_tid),
        uuid::Uuid::parse_str(body_tenant),
    ) else {
        return Ok(());
    };
    if a == b {
        Ok(())
    } else {
        Err(GraphError::new(
            403,
            "7505",
            format!(
                "Request denied: the token's tenant {token_tid} does not match the call's tenantId {body_tenant}."
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p2p() -> Value {
        json!({
            "callbackUri": "https://bot.contoso.com/api/calls",
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
            "source": {"identity": {"application": {"id": "app"}}},
            "targets": [{"identity": {"user": {"id": "u1"}}}],
            "requestedModalities": ["audio"],
            "tenantId": "t"
        })
    }

    fn err(body: &Value) -> GraphError {
        check_create(body, ApiVersion::V1).unwrap_err()
    }

    #[test]
    fn schema_is_read_from_the_extract() {
        let s = schema();
        assert!(s.v1_call_properties.contains("callbackUri"));
        assert!(s.v1_call_properties.contains("id"));
        assert!(!s.v1_call_properties.contains("participants"));
        assert!(s.beta_call_properties.contains("ringingTimeoutInSeconds"));
        assert!(!s.v1_call_properties.contains("ringingTimeoutInSeconds"));
        assert!(s.modalities.contains("videoBasedScreenSharing"));
        assert!(!s.modalities.contains("unknownFutureValue"));
        assert!(
            s.media_config_types
                .contains("#microsoft.graph.appHostedMediaConfig")
        );
        assert!(
            s.meeting_info_types
                .contains("#microsoft.graph.joinMeetingIdMeetingInfo")
        );
        for k in [
            "user",
            "application",
            "phone",
            "guest",
            "applicationInstance",
        ] {
            assert!(s.identity_kinds.contains(k), "{k}");
        }
        assert!(!s.identity_kinds.contains("endpointType"));
    }

    #[test]
    fn a_p2p_call_is_accepted() {
        let shape = check_create(&p2p(), ApiVersion::V1).unwrap();
        assert_eq!(shape.kind, CallKind::PeerToPeer);
        assert_eq!(shape.target_ids, vec!["u1"]);
        assert!(!shape.guest && !shape.app_hosted_media);
        assert_eq!(
            missing_roles(&shape, &["calls.initiate.all".into()]),
            Vec::<&str>::new()
        );
        assert_eq!(
            missing_roles(&shape, &["Calls.InitiateGroupCall.All".into()]),
            Vec::<&str>::new()
        );
        assert_eq!(missing_roles(&shape, &[]), vec!["Calls.Initiate.All"]);
    }

    #[test]
    fn each_rule_is_enforced() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|b| b["colour"] = json!("blue")),
                "'colour' does not exist",
            ),
            (Box::new(|b| b["id"] = json!("x")), "'id' is read-only"),
            (
                Box::new(|b| b["state"] = json!("x")),
                "'state' is read-only",
            ),
            (
                Box::new(|b| b["toneInfo"] = json!({})),
                "'toneInfo' is read-only",
            ),
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("callbackUri");
                }),
                "callbackUri is required",
            ),
            (
                Box::new(|b| b["callbackUri"] = json!("http://bot.contoso.com/x")),
                "must use https",
            ),
            (
                Box::new(|b| b["callbackUri"] = json!("not a uri")),
                "not a valid absolute URI",
            ),
            (
                Box::new(|b| b["callbackUri"] = json!(7)),
                "must be a string",
            ),
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("mediaConfig");
                }),
                "mediaConfig is required",
            ),
            (
                Box::new(|b| {
                    b["mediaConfig"] = json!({"@odata.type": "#microsoft.graph.fooMediaConfig"})
                }),
                "unknown @odata.type",
            ),
            (
                Box::new(|b| b["mediaConfig"] = json!({})),
                "must specify its @odata.type",
            ),
            (
                Box::new(|b| {
                    b["mediaConfig"] =
                        json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig"})
                }),
                "blob is required",
            ),
            (
                Box::new(|b| b["requestedModalities"] = json!(["smell"])),
                "unknown value",
            ),
            (
                Box::new(|b| b["requestedModalities"] = json!([])),
                "at least one modality",
            ),
            (
                Box::new(|b| b["source"] = json!({"languageId": "en-US"})),
                "source.identity is required",
            ),
            (
                Box::new(|b| b["source"] = json!({"identity": {}})),
                "must hold one of the identities",
            ),
            (
                Box::new(|b| b["source"] = json!({"identity": {"user": {"displayName": "x"}}})),
                "source.identity.user.id is required",
            ),
            (
                Box::new(|b| {
                    b.as_object_mut().unwrap().remove("targets");
                }),
                "Either targets",
            ),
            (
                Box::new(|b| b["targets"] = json!([])),
                "at least one participant",
            ),
            (
                Box::new(|b| b["targets"] = json!([{"identity": {"foo": {"id": "x"}}}])),
                "must hold one of the identities",
            ),
            (
                Box::new(|b| b["targets"] = json!([{"hidden": true}])),
                "targets[0].identity is required",
            ),
            (
                Box::new(|b| b["targets"] = json!([{"identity": {"phone": {"id": "12345"}}}])),
                "E.164",
            ),
            (
                Box::new(|b| {
                    b["meetingInfo"] =
                        json!({"@odata.type": "#microsoft.graph.tokenMeetingInfo", "token": "t"})
                }),
                "not both",
            ),
            (
                Box::new(|b| {
                    b["targets"] = json!(
                        (0..6)
                            .map(|i| json!({"identity": {"user": {"id": format!("u{i}")}}}))
                            .collect::<Vec<_>>()
                    )
                }),
                "at most 5 VoIP users",
            ),
            (
                Box::new(|b| b["@odata.type"] = json!("#microsoft.graph.participant")),
                "could not be resolved",
            ),
        ];
        for (mutate, needle) in cases {
            let mut body = p2p();
            mutate(&mut body);
            let e = err(&body);
            assert_eq!(e.status, 400, "{needle}");
            assert_eq!(e.code, "BadRequest");
            assert!(
                e.message.contains(needle),
                "expected `{needle}` in `{}`",
                e.message
            );
        }
    }

    #[test]
    fn lenient_where_graph_is() {
        let mut b = p2p();
        b.as_object_mut().unwrap().remove("requestedModalities");
        b["callbackUri"] = json!("http://127.0.0.1:9000/cb?calldRun=1");
        b["@odata.type"] = json!("#microsoft.graph.call");
        b["targets"][0]["identity"]["user"]["identityProvider"] = json!("AAD");
        b["subject"] = Value::Null;
        check_create(&b, ApiVersion::V1).unwrap();
        b["callbackUri"] = json!("http://localhost/cb");
        check_create(&b, ApiVersion::V1).unwrap();
        b["callbackUri"] = json!("http://[::1]:80/cb");
        check_create(&b, ApiVersion::V1).unwrap();
        // Beta-only properties pass on beta, not on v1.0.
        b["ringingTimeoutInSeconds"] = json!(30);
        check_create(&b, ApiVersion::Beta).unwrap();
        assert!(err(&b).message.contains("ringingTimeoutInSeconds"));
    }

    #[test]
    fn meetings_and_roles() {
        let mut b = p2p();
        b.as_object_mut().unwrap().remove("targets");
        b["meetingInfo"] = json!({
            "@odata.type": "#microsoft.graph.organizerMeetingInfo",
            "organizer": {"user": {"id": "o"}}
        });
        assert!(err(&b).message.contains("chatInfo is required"));
        b["chatInfo"] = json!({"threadId": "19:x@thread.v2", "messageId": "0"});
        let shape = check_create(&b, ApiVersion::V1).unwrap();
        assert_eq!(shape.kind, CallKind::Meeting);
        assert_eq!(shape.meeting_keys, vec!["19:x@thread.v2"]);
        assert_eq!(missing_roles(&shape, &[]), vec!["Calls.JoinGroupCall.All"]);

        b["source"]["identity"] = json!({"guest": {"id": "g", "displayName": "Bot"}});
        let shape = check_create(&b, ApiVersion::V1).unwrap();
        assert!(shape.guest);
        assert_eq!(
            missing_roles(&shape, &["Calls.JoinGroupCall.All".into()]),
            vec!["Calls.JoinGroupCallAsGuest.All"]
        );

        b["meetingInfo"] = json!({"@odata.type": "#microsoft.graph.joinMeetingIdMeetingInfo"});
        assert!(err(&b).message.contains("joinMeetingId is required"));
        b["meetingInfo"]["joinMeetingId"] = json!("1234567890");
        b.as_object_mut().unwrap().remove("chatInfo");
        let shape = check_create(&b, ApiVersion::V1).unwrap();
        assert_eq!(shape.meeting_keys, vec!["1234567890"]);

        let mut g = p2p();
        g["targets"] = json!([
            {"identity": {"user": {"id": "u1"}}},
            {"identity": {"phone": {"id": "+12345678890"}}}
        ]);
        g["mediaConfig"] =
            json!({"@odata.type": "#microsoft.graph.appHostedMediaConfig", "blob": "b"});
        let shape = check_create(&g, ApiVersion::V1).unwrap();
        assert_eq!(shape.kind, CallKind::Group);
        assert_eq!(
            missing_roles(&shape, &["Calls.Initiate.All".into()]),
            vec!["Calls.InitiateGroupCall.All", "Calls.AccessMedia.All"]
        );
        assert!(
            missing_roles(
                &shape,
                &[
                    "CALLS.INITIATEGROUPCALL.ALL".into(),
                    "calls.accessmedia.all".into()
                ]
            )
            .is_empty()
        );
    }

    #[test]
    fn tenant_mismatch_only_between_guids() {
        let a = "72f988bf-86f1-41af-91ab-2d7cd011db47";
        let b = "49bfc225-8482-4ab8-94e7-76b48fdb9849";
        assert!(check_tenant(a, Some(b)).is_err_and(|e| e.status == 403 && e.code == "7505"));
        assert!(check_tenant(a, Some(&a.to_uppercase())).is_ok());
        assert!(check_tenant(a, Some("tenantId-value")).is_ok());
        assert!(check_tenant("contoso", Some(b)).is_ok());
        assert!(check_tenant(a, None).is_ok());
    }

    #[test]
    fn nothing_panics_on_odd_json() {
        for body in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"targets": "x"}),
            json!({"source": [], "callbackUri": "https://x", "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig", "preFetchMedia": [1]}}),
        ] {
            assert_eq!(err(&body).status, 400);
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z@.#:/+0-9]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("callbackUri".to_string()),
                        Just("mediaConfig".to_string()),
                        Just("source".to_string()),
                        Just("identity".to_string()),
                        Just("targets".to_string()),
                        Just("meetingInfo".to_string()),
                        Just("@odata.type".to_string()),
                        Just("user".to_string()),
                        Just("id".to_string()),
                        "[a-z]{1,8}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_json_gets_a_verdict_not_a_panic(body in arb_json()) {
            for api in [ApiVersion::V1, ApiVersion::Beta] {
                if let Err(e) = check_create(&body, api) {
                    proptest::prop_assert_eq!(e.status, 400);
                    proptest::prop_assert!(!e.message.is_empty());
                }
            }
        }

        #[test]
        fn unknown_property_names_are_refused(name in "[a-z][a-zA-Z]{2,12}") {
            proptest::prop_assume!(!schema().v1_call_properties.contains(&name));
            let mut body = p2p();
            body[name.as_str()] = json!(1);
            let e = check_create(&body, ApiVersion::V1).unwrap_err();
            proptest::prop_assert!(e.message.contains(&name), "{}", e.message);
        }
    }
}
