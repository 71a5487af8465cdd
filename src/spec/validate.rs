//! From a positioned YAML document to a validated [`Spec`] (SPEC 1.1, 1.3).
//!
//! Every finding carries `file:line:column`, the key path and a message
//! that says what to write instead. Validation is pure: the current time and
//! the configuration defaults are passed in.

use jiff::Timestamp;
use serde_json::{Map, Value as Json};
use std::time::Duration;

use super::compact::JsonObject;
use super::diag::{Diagnostic, Severity};
use super::model::*;
use super::yaml::{Key, Node, Pos, Value};
use crate::config::Defaults;
use crate::duration::parse_duration;
use crate::schedule::{self, Concurrency, CronExpr, Schedule, Trigger};

/// What validation needs from outside the spec file.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub defaults: &'a Defaults,
    /// `callback.publicUrl`: the callbackUri of specs that set none.
    pub public_url: Option<&'a str>,
    /// For "`at` is in the past" warnings.
    pub now: Timestamp,
}

/// Keys of a spec document.
pub const SPEC_KEYS: &[&str] = &[
    "name",
    "description",
    "suspend",
    "subject",
    "tenantId",
    "callbackUri",
    "source",
    "targets",
    "modalities",
    "media",
    "chat",
    "meeting",
    "schedule",
    "retry",
    "hangupAfter",
    "graph",
];

/// Properties of Graph's call object that Graph generates; never sent.
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
    "callChainId",
    "incomingContext",
    "answeredBy",
    "activeModalities",
    "terminationReason",
];

/// Graph names people write where calld has its own key.
const GRAPH_NAME_HINTS: &[(&str, &str)] = &[
    ("requestedModalities", "modalities"),
    ("mediaConfig", "media"),
    ("chatInfo", "chat"),
    ("meetingInfo", "meeting"),
    ("callOptions", "graph: { callOptions: ... }"),
];

const SOURCE_KEYS: &[&str] = &[
    "identity",
    "languageId",
    "region",
    "countryCode",
    "endpointType",
];
/// participantInfo.endpointType members (Graph's endpointType enum).
const ENDPOINT_TYPES: &[&str] = &[
    "default",
    "voicemail",
    "skypeForBusiness",
    "skypeForBusinessVoipPhone",
    "unknownFutureValue",
];
/// identitySet keys Graph knows (communications identities included).
pub(crate) const IDENTITY_SET_KEYS: &[&str] = &[
    "application",
    "applicationInstance",
    "user",
    "guest",
    "phone",
    "device",
    "encrypted",
    "onPremises",
    "assertedIdentity",
    "azureCommunicationServicesUser",
];
/// Identity properties Graph types as strings (identity and
/// communicationsUserIdentity).
const IDENTITY_STRING_KEYS: &[&str] = &["id", "displayName", "tenantId"];
const MEDIA_KEYS: &[&str] = &["prefetch", "appHosted"];
const PREFETCH_KEYS: &[&str] = &["uri", "resourceId"];
const APP_HOSTED_KEYS: &[&str] = &["blob"];
const CHAT_KEYS: &[&str] = &["threadId", "messageId", "replyChainMessageId"];
const MEETING_KEYS: &[&str] = &[
    "organizer",
    "joinUrl",
    "joinMeetingId",
    "passcode",
    "asGuest",
];
const GUEST_KEYS: &[&str] = &["displayName", "id"];
const SCHEDULE_KEYS: &[&str] = &[
    "at",
    "cron",
    "timezone",
    "deadline",
    "concurrency",
    "jitter",
    "until",
];
const RETRY_KEYS: &[&str] = &["attempts", "interval"];

/// Graph's limit on VoIP targets of a group call.
pub const MAX_VOIP_GROUP_TARGETS: usize = 5;
/// Upper bound on `retry.attempts`: more would ring someone all day.
pub const MAX_RETRY_ATTEMPTS: u32 = 10;

/// Collects findings for one document.
pub(crate) struct Checker<'a> {
    pub file: &'a str,
    pub diags: Vec<Diagnostic>,
}

/// A mapping's entries by key, after unknown keys were reported.
struct Fields<'n> {
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| *v)
    }
    fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k.pos)
    }
    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The closest allowed key, for "did you mean".
fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    allowed
        .iter()
        .map(|a| (strsim_distance(&lower, &a.to_ascii_lowercase()), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance (keys are short).
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n)
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// E.164: `+` then 7 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Whether a callbackUri is acceptable: https, or http to a loopback host.
pub fn check_callback_uri(uri: &str) -> Result<(), String> {
    let parsed = url::Url::parse(uri)
        .map_err(|e| format!("`{uri}` is not a URL ({e}); write https://host/path"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback_host(&parsed) => Ok(()),
        "http" => Err(format!(
            "`{uri}` uses http: Graph only posts notifications to https URLs \
             (http is allowed for loopback hosts only, for local tests)"
        )),
        other => Err(format!(
            "`{uri}` has scheme `{other}`: write an https:// URL"
        )),
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl<'a> Checker<'a> {
    pub(crate) fn new(file: &'a str) -> Self {
        Checker {
            file,
            diags: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(
            self.file,
            pos,
            Severity::Error,
            path,
            message,
        ));
    }

    pub(crate) fn warning(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(
            self.file,
            pos,
            Severity::Warning,
            path,
            message,
        ));
    }

    fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// A mapping's fields; unknown keys are reported (with a suggestion).
    fn fields<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            let what = if path.is_empty() {
                "a call spec".to_string()
            } else {
                format!("`{path}`")
            };
            self.error(
                node.pos,
                path,
                format!(
                    "{what} must be a mapping (key: value lines), not {}",
                    node.value.kind()
                ),
            );
            return None;
        };
        let mut fields = Fields {
            entries: Vec::new(),
        };
        for (key, value) in entries {
            if allowed.contains(&key.name.as_str()) {
                fields.entries.push((key, value));
                continue;
            }
            let key_path = join(path, &key.name);
            let message = if path.is_empty() && SERVER_GENERATED.contains(&key.name.as_str()) {
                format!(
                    "`{}` is generated by Graph and cannot be set in a spec; remove it",
                    key.name
                )
            } else if let Some((_, ours)) = GRAPH_NAME_HINTS
                .iter()
                .find(|(g, _)| path.is_empty() && *g == key.name)
            {
                format!("unknown key `{}`: calld calls it `{ours}`", key.name)
            } else if let Some(near) = closest(&key.name, allowed) {
                format!("unknown key `{}`: did you mean `{near}`?", key.name)
            } else {
                format!(
                    "unknown key `{}`: allowed here are {}",
                    key.name,
                    allowed.join(", ")
                )
            };
            self.error(key.pos, &key_path, message);
        }
        Some(fields)
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::String(s) => Some(s.clone()),
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A string, also accepting a plain number (ids like `messageId: 0`).
    fn string_or_number(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::String(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn non_empty_string(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.string(node, path)?;
        if s.trim().is_empty() {
            self.error(node.pos, path, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("expected true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let s = match &node.value {
            Value::String(s) => s.clone(),
            Value::Int(_) => {
                self.error(
                    node.pos,
                    path,
                    "a duration needs a unit: write 90s, 5m, 1h30m or 2d",
                );
                return None;
            }
            other => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a duration such as 5m, found {}", other.kind()),
                );
                return None;
            }
        };
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(node.pos, path, e);
                None
            }
        }
    }

    /// An identity object (`{id, displayName, ...}`): a mapping of scalars,
    /// passed through with every key.
    fn identity_object(&mut self, node: &Node, path: &str) -> Option<Map<String, Json>> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected an identity mapping such as {{ id: ..., displayName: ... }}, found {}", node.value.kind()),
            );
            return None;
        };
        let before = self.diags.len();
        let mut out = Map::new();
        for (k, v) in entries {
            match &v.value {
                Value::Seq(_) | Value::Map(_) => {
                    self.error(
                        v.pos,
                        &join(path, &k.name),
                        "identity values must be plain values",
                    );
                }
                // Graph types these as Edm.String: a number would be sent
                // as a JSON number and refused
                Value::Int(_) | Value::Float(_) | Value::Bool(_)
                    if IDENTITY_STRING_KEYS.contains(&k.name.as_str()) =>
                {
                    self.error(
                        v.pos,
                        &join(path, &k.name),
                        format!(
                            "`{}` must be a string, found {}: write it in quotes",
                            k.name,
                            v.value.kind()
                        ),
                    );
                }
                value => {
                    out.insert(k.name.clone(), value.to_json());
                }
            }
        }
        (self.diags.len() == before).then_some(out)
    }

    /// An identitySet: `{ user: {...} }`, `{ application: {...} }`, ...
    fn identity_set(&mut self, node: &Node, path: &str) -> Option<Map<String, Json>> {
        let fields = self.fields(node, path, IDENTITY_SET_KEYS)?;
        // (an unknown key was reported already: no second error for it)
        if matches!(&node.value, Value::Map(entries) if entries.is_empty()) {
            self.error(
                node.pos,
                path,
                "an identity set needs one identity, such as application: { id: ... }",
            );
            return None;
        }
        let mut out = Map::new();
        for (key, value) in &fields.entries {
            let p = join(path, &key.name);
            if let Some(obj) = self.identity_object(value, &p) {
                self.check_identity_id(&key.name, &obj, value.pos, &p);
                out.insert(key.name.clone(), Json::Object(obj));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// Id checks by identity kind: E.164 phones (error), GUID-shaped user and
    /// application ids (warning).
    fn check_identity_id(&mut self, kind: &str, obj: &Map<String, Json>, pos: Pos, path: &str) {
        let id = obj.get("id");
        match kind {
            "phone" => match id.and_then(Json::as_str) {
                Some(id) if is_e164(id) => {}
                Some(id) => self.error(
                    pos,
                    &join(path, "id"),
                    format!("`{id}` is not an E.164 phone number: write + and 7 to 15 digits, such as \"+12345678890\" (in quotes)"),
                ),
                None => self.error(pos, path, "a phone identity needs an id in E.164, such as \"+12345678890\""),
            },
            "user" | "application" | "applicationInstance" => match id {
                Some(Json::String(id)) if is_guid(id) => {}
                Some(Json::String(id)) => self.warning(
                    pos,
                    &join(path, "id"),
                    format!("`{id}` is not GUID-shaped; Graph expects an Entra object id here"),
                ),
                Some(_) => self.error(pos, &join(path, "id"), "the id must be a string"),
                None => self.error(pos, path, format!("{} {kind} identity needs an id", if kind == "user" { "a" } else { "an" })),
            },
            _ => {}
        }
    }
}

/// A validated document, or nothing when it had errors (they are in the
/// checker). `default_name` is the file path without its extension.
pub(crate) fn validate_document(
    ck: &mut Checker,
    doc: &Node,
    default_name: Option<&str>,
    ctx: &Context,
) -> Option<Spec> {
    let f = ck.fields(doc, "", SPEC_KEYS)?;

    let name = match f.get("name") {
        Some(n) => ck
            .non_empty_string(n, "name")
            .and_then(|s| match check_name(&s) {
                Ok(()) => Some(normal_name(&s)),
                Err(e) => {
                    ck.error(n.pos, "name", e);
                    None
                }
            }),
        None => match default_name {
            // a name taken from the file's path obeys the same rule
            Some(d) => match check_name(d) {
                Ok(()) => Some(normal_name(d)),
                Err(e) => {
                    ck.error(
                        doc.pos,
                        "name",
                        format!(
                            "the file's path gives the spec name {d:?}, which is refused: {e}; \
                             rename the file or set `name:`"
                        ),
                    );
                    None
                }
            },
            None => {
                ck.error(
                    doc.pos,
                    "name",
                    "a file with several documents needs `name:` in each of them",
                );
                None
            }
        },
    };
    let description = f
        .get("description")
        .and_then(|n| ck.string(n, "description"));
    let suspend = f
        .get("suspend")
        .and_then(|n| ck.bool(n, "suspend"))
        .unwrap_or(false);
    let subject = f.get("subject").and_then(|n| ck.string(n, "subject"));
    let mut tenant_id = f
        .get("tenantId")
        .and_then(|n| ck.non_empty_string(n, "tenantId"));

    let callback_uri = match f.get("callbackUri") {
        Some(n) => ck
            .string(n, "callbackUri")
            .map(|u| (u, n.pos, "callbackUri")),
        None => ctx
            .public_url
            .map(|u| (u.to_string(), doc.pos, "callbackUri")),
    };
    let callback_uri = match callback_uri {
        Some((uri, pos, path)) => match check_callback_uri(&uri) {
            Ok(()) => Some(uri),
            Err(e) => {
                ck.error(pos, path, e);
                None
            }
        },
        None => {
            ck.error(
                doc.pos,
                "callbackUri",
                "no callbackUri: set `callbackUri:` here or `callback.publicUrl` in the configuration",
            );
            None
        }
    };

    // source: the spec's, else `meeting.asGuest` (a complete source), else
    // the configuration's default, else none: Graph takes the caller from
    // the token for peer-to-peer VoIP calls and meeting joins (the scenario
    // rules below say where one is needed). Outer `None`: it had errors.
    let as_guest_given = f.get("meeting").is_some_and(
        |m| matches!(&m.value, Value::Map(e) if e.iter().any(|(k, _)| k.name == "asGuest")),
    );
    let mut source_from_defaults = false;
    let mut source: Option<Option<Participant>> = match f.get("source") {
        Some(n) => source(ck, n, "source").map(Some),
        None if as_guest_given => Some(None),
        None => match &ctx.defaults.source {
            Some(json) => {
                source_from_defaults = true;
                let node = json_to_node(json, doc.pos);
                let before = ck.diags.len();
                let s = source(ck, &node, "defaults.source");
                for d in &mut ck.diags[before..] {
                    d.message
                        .push_str(" (from the configuration's defaults.source)");
                }
                s.map(Some)
            }
            None => Some(None),
        },
    };

    let mut chat = f.get("chat").and_then(|n| chat(ck, n, "chat"));

    // targets xor meeting
    let kind = match (f.get("targets"), f.get("meeting")) {
        (Some(_), Some(m)) => {
            ck.error(
                f.key_pos("meeting").unwrap_or(m.pos),
                "meeting",
                "set either `targets` (place a call) or `meeting` (join one), not both",
            );
            None
        }
        (None, None) => {
            ck.error(
                doc.pos,
                "",
                "nothing to call: set `targets:` (who to call) or `meeting:` (which meeting to join)",
            );
            None
        }
        (Some(t), None) => targets(ck, t, "targets").map(CallKind::Targets),
        (None, Some(m)) => match meeting(ck, m, "meeting", f.has("chat")) {
            Some(joined) => {
                if let Some(tid) = joined.tenant_id {
                    tenant_id.get_or_insert(tid);
                }
                if let Some(c) = joined.chat {
                    chat = Some(c);
                }
                if let Some(guest) = joined.as_guest {
                    let identity = Map::from_iter([("guest".to_string(), Json::Object(guest))]);
                    match source.as_mut() {
                        Some(Some(src)) => src.identity = identity.into(),
                        Some(None) => {
                            source = Some(Some(Participant {
                                identity: identity.into(),
                                extra: JsonObject::empty(),
                            }))
                        }
                        None => {}
                    }
                }
                if matches!(joined.meeting, Meeting::Organizer { .. }) && chat.is_none() {
                    ck.error(
                        m.pos,
                        "meeting.organizer",
                        "joining by organizer needs `chat: { threadId: ..., messageId: ... }` (or use meeting.joinUrl)",
                    );
                }
                Some(CallKind::Meeting(joined.meeting))
            }
            None => None,
        },
    };

    let tenant_id = tenant_id.or_else(|| ctx.defaults.tenant_id.clone());
    if let (Some(CallKind::Targets(t)), Some(src)) = (&kind, &source) {
        scenario_rules(
            ck,
            &f,
            doc.pos,
            t,
            src.as_ref(),
            source_from_defaults,
            tenant_id.is_some(),
        );
    }
    let modalities = match f.get("modalities") {
        Some(n) => modalities(ck, n, "modalities"),
        None => Some(vec![Modality::Audio]),
    };
    let media = match f.get("media") {
        Some(n) => media(ck, n, "media"),
        None => Some(Media::ServiceHosted {
            prefetch: Vec::new(),
        }),
    };
    let schedule = match f.get("schedule") {
        Some(n) => schedule_of(ck, n, "schedule", ctx).map(Some),
        None => Some(None),
    };
    let retry = match f.get("retry") {
        Some(n) => retry(ck, n, "retry"),
        None => Some(Retry::default()),
    };
    let hangup_after = match f.get("hangupAfter") {
        Some(n) => ck.duration(n, "hangupAfter").map(Some),
        None => Some(None),
    };
    let graph_patch = match f.get("graph") {
        Some(n) => graph_patch(ck, n, "graph").map(Some),
        None => Some(None),
    };

    if let Some(CallKind::Targets(t)) = &kind {
        let voip = t.iter().filter(|t| t.kind != IdentityKind::Phone).count();
        if t.len() > 1 && voip > MAX_VOIP_GROUP_TARGETS {
            ck.warning(
                f.get("targets").map(|n| n.pos).unwrap_or(doc.pos),
                "targets",
                format!(
                    "{voip} VoIP targets: Graph allows at most {MAX_VOIP_GROUP_TARGETS} in a group call; \
                     split the spec or join a meeting instead"
                ),
            );
        }
    }

    if ck.has_errors() {
        return None;
    }
    let call = Call {
        subject,
        tenant_id,
        callback_uri: callback_uri?,
        source: source?,
        kind: kind?,
        modalities: modalities?,
        media: media?,
        chat: chat.map(JsonObject::from),
    };
    let mut spec = Spec {
        name: name?,
        file: ck.file.to_string(),
        line: doc.pos.line,
        description,
        suspend,
        permissions: call.permissions(),
        call,
        schedule: schedule?,
        retry: retry?,
        hangup_after: hangup_after?,
        graph_patch: graph_patch?.map(JsonObject::from),
        revision: String::new(),
    };
    if let (Some(_), Some(node)) = (&spec.graph_patch, f.get("graph")) {
        let key_pos = f.key_pos("graph").unwrap_or(node.pos);
        check_after_patch(ck, &spec, node, key_pos);
        if ck.has_errors() {
            return None;
        }
    }
    spec.revision = super::revision::of_document(doc);
    Some(spec)
}

/// Graph's rules for calls to targets (Create call, v1.0): a PSTN call
/// comes from a resource account (`applicationInstance`) in a tenant; a
/// group call without a source is unusual (Microsoft's examples send the
/// application).
fn scenario_rules(
    ck: &mut Checker,
    f: &Fields,
    doc_pos: Pos,
    targets: &[Target],
    source: Option<&Participant>,
    from_defaults: bool,
    has_tenant: bool,
) {
    use super::bodycheck::{PSTN_APPLICATION, PSTN_NO_SOURCE, PSTN_NO_TENANT};
    let pstn = targets.iter().any(|t| t.kind == IdentityKind::Phone);
    let (base, suffix) = if from_defaults {
        (
            "defaults.source",
            " (from the configuration's defaults.source)",
        )
    } else {
        ("source", "")
    };
    let source_node = f.get("source");
    let pos_at = |keys: &[&str]| -> Pos {
        source_node
            .and_then(|n| key_pos_at(n, keys))
            .or_else(|| source_node.map(|n| n.pos))
            .unwrap_or(doc_pos)
    };
    if pstn {
        match source {
            Some(p) if p.identity.contains_key("applicationInstance") => {}
            Some(p) if p.identity.contains_key("application") => ck.error(
                pos_at(&["identity", "application"]),
                &format!("{base}.identity.application"),
                format!("{PSTN_APPLICATION}{suffix}"),
            ),
            Some(_) => ck.error(
                pos_at(&["identity"]),
                &format!("{base}.identity"),
                format!("{PSTN_NO_SOURCE}{suffix}"),
            ),
            None => ck.error(doc_pos, "source", PSTN_NO_SOURCE),
        }
        if !has_tenant {
            ck.error(doc_pos, "tenantId", PSTN_NO_TENANT);
        }
    } else if targets.len() > 1 && source.is_none() {
        ck.warning(
            f.get("targets").map(|n| n.pos).unwrap_or(doc_pos),
            "source",
            "a group call without a source: Microsoft's group-call examples always send the \
             application; write `source: { identity: { application: { id: <your app id> } } }` \
             (or set defaults.source)",
        );
    }
}

/// The position of the key at `keys` under `node`, if it is there.
fn key_pos_at(node: &Node, keys: &[&str]) -> Option<Pos> {
    let (first, rest) = keys.split_first()?;
    let Value::Map(entries) = &node.value else {
        return None;
    };
    let (k, v) = entries.iter().find(|(k, _)| k.name == *first)?;
    if rest.is_empty() {
        Some(k.pos)
    } else {
        key_pos_at(v, rest)
    }
}

/// The final body (after the `graph:` merge patch) against Graph's rules
/// and metadata; each finding points at the `graph:` key that caused it.
fn check_after_patch(ck: &mut Checker, spec: &Spec, graph: &Node, graph_key: Pos) {
    use super::bodycheck::{Seg, check_body, path_string};
    let body = super::render::body(spec);
    // only what the patch caused: findings the unpatched body has too were
    // reported by the typed checks already
    let unpatched = {
        let mut plain = spec.clone();
        plain.graph_patch = None;
        check_body(&super::render::body(&plain))
    };
    for finding in check_body(&body) {
        if unpatched
            .iter()
            .any(|u| u.path == finding.path && u.message == finding.message)
        {
            continue;
        }
        // the deepest key of the patch on the finding's path
        let mut pos = graph_key;
        let mut path = "graph".to_string();
        let mut node = graph;
        for seg in &finding.path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(entries)) => entries
                    .iter()
                    .find(|(key, _)| key.name == *k)
                    .map(|(key, v)| (key.pos, join(&path, k), v)),
                (Seg::Index(i), Value::Seq(items)) => {
                    items.get(*i).map(|v| (v.pos, index(&path, *i), v))
                }
                _ => None,
            };
            match next {
                Some((p, name, v)) => {
                    pos = p;
                    path = name;
                    node = v;
                }
                None => break,
            }
        }
        let at = path_string(&finding.path);
        let message = if at.is_empty() || path == join("graph", &at) {
            format!("after the graph: merge patch: {}", finding.message)
        } else {
            format!("after the graph: merge patch, {at}: {}", finding.message)
        };
        match finding.severity {
            Severity::Error => ck.error(pos, &path, message),
            Severity::Warning => ck.warning(pos, &path, message),
        }
    }
}

/// Spec names, wherever they come from (`name:` or the file's path):
/// printable on one line, no surrounding spaces, at most 200 characters.
/// Names are compared after Unicode NFC normalisation ([`normal_name`]).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim() != name {
        return Err("a name must not start or end with spaces".into());
    }
    if name.chars().any(char::is_control) {
        return Err(
            "a name must not contain control characters (a name is shown on one line)".into(),
        );
    }
    // line and paragraph separators, and marks that reorder the line
    if name.chars().any(|c| {
        matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    }) {
        return Err("a name must not contain line separators or direction marks (a name is shown on one line)".into());
    }
    if name.chars().count() > 200 {
        return Err("a name must be at most 200 characters".into());
    }
    Ok(())
}

/// A name as calld compares and stores it: Unicode NFC, so `café` typed
/// with a combining accent and with a precomposed one is one name.
pub fn normal_name(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfc().collect()
}

/// Converts configuration JSON (`defaults.source`) into a node to validate
/// it with the same rules as a spec's.
fn json_to_node(json: &Json, pos: Pos) -> Node {
    let value = match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or(Value::Float(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Seq(items.iter().map(|i| json_to_node(i, pos)).collect()),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    (
                        Key {
                            pos,
                            name: k.clone(),
                        },
                        json_to_node(v, pos),
                    )
                })
                .collect(),
        ),
    };
    Node { pos, value }
}

fn source(ck: &mut Checker, node: &Node, path: &str) -> Option<Participant> {
    let f = ck.fields(node, path, SOURCE_KEYS)?;
    let identity = match f.get("identity") {
        Some(n) => ck.identity_set(n, &join(path, "identity")),
        None => {
            ck.error(
                node.pos,
                &join(path, "identity"),
                "the source needs an identity, such as identity: { application: { id: ... } }",
            );
            None
        }
    };
    // participantInfo's strings; an explicit null is sent as null (Graph's
    // PSTN examples send `countryCode: null` and the like)
    let mut extra = Map::new();
    for key in ["languageId", "region", "countryCode", "endpointType"] {
        let Some(n) = f.get(key) else { continue };
        let p = join(path, key);
        if matches!(n.value, Value::Null) {
            extra.insert(key.to_string(), Json::Null);
            continue;
        }
        let Some(s) = ck.string(n, &p) else { continue };
        if key == "endpointType" && !ENDPOINT_TYPES.contains(&s.as_str()) {
            ck.error(
                n.pos,
                &p,
                format!(
                    "unknown endpointType `{s}`: use {}",
                    ENDPOINT_TYPES.join(", ")
                ),
            );
            continue;
        }
        extra.insert(key.to_string(), Json::String(s));
    }
    Some(Participant {
        identity: identity?.into(),
        extra: extra.into(),
    })
}

fn targets(ck: &mut Checker, node: &Node, path: &str) -> Option<Vec<Target>> {
    let Value::Seq(items) = &node.value else {
        ck.error(
            node.pos,
            path,
            format!(
                "`targets` must be a list (- user: ...), not {}",
                node.value.kind()
            ),
        );
        return None;
    };
    if items.is_empty() {
        ck.error(
            node.pos,
            path,
            "`targets` is empty: list at least one, such as - phone: \"+12345678890\"",
        );
        return None;
    }
    let allowed: Vec<&str> = IdentityKind::ALL.iter().map(|k| k.key()).collect();
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(f) = ck.fields(item, &p, &allowed) else {
            ok = false;
            continue;
        };
        let unknown_reported = matches!(&item.value, Value::Map(e) if e.len() > f.entries.len());
        if f.entries.len() != 1 && !(f.entries.is_empty() && unknown_reported) {
            ck.error(
                item.pos,
                &p,
                format!("each target is exactly one of {}", allowed.join(", ")),
            );
            ok = false;
            continue;
        }
        if f.entries.is_empty() {
            ok = false;
            continue;
        }
        let (key, value) = f.entries[0];
        let kind = *IdentityKind::ALL
            .iter()
            .find(|k| k.key() == key.name)
            .expect("allowed key");
        let kp = join(&p, &key.name);
        let identity = match (&value.value, kind) {
            // `phone: "+1..."` is shorthand for `{ id: "+1..." }`
            (Value::String(id), IdentityKind::Phone) => Some(Map::from_iter([(
                "id".to_string(),
                Json::String(id.clone()),
            )])),
            (Value::Int(_), IdentityKind::Phone) => {
                ck.error(
                    value.pos,
                    &kp,
                    "write the phone number in quotes with its +, such as \"+12345678890\"",
                );
                None
            }
            _ => ck.identity_object(value, &kp),
        };
        match identity {
            Some(identity) => {
                let before = ck.diags.len();
                ck.check_identity_id(kind.key(), &identity, value.pos, &kp);
                if kind == IdentityKind::Guest
                    && !identity.contains_key("displayName")
                    && !identity.contains_key("id")
                {
                    ck.error(
                        value.pos,
                        &kp,
                        "a guest target needs an id or a displayName",
                    );
                }
                ok &= !ck.diags[before..].iter().any(Diagnostic::is_error);
                out.push(Target {
                    kind,
                    identity: identity.into(),
                });
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn modalities(ck: &mut Checker, node: &Node, path: &str) -> Option<Vec<Modality>> {
    let Value::Seq(items) = &node.value else {
        ck.error(
            node.pos,
            path,
            "`modalities` must be a list such as [audio, video]",
        );
        return None;
    };
    if items.is_empty() {
        ck.error(
            node.pos,
            path,
            "`modalities` is empty: Graph needs at least one; write [audio] or leave it out",
        );
        return None;
    }
    let names: Vec<&str> = Modality::ALL.iter().map(|m| m.as_str()).collect();
    let mut out: Vec<Modality> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(s) = ck.string(item, &p) else {
            continue;
        };
        match Modality::ALL.iter().find(|m| m.as_str() == s) {
            Some(m) if out.contains(m) => ck.error(item.pos, &p, format!("`{s}` is listed twice")),
            Some(m) => out.push(*m),
            None => ck.error(
                item.pos,
                &p,
                format!("unknown modality `{s}`: use {}", names.join(", ")),
            ),
        }
    }
    (out.len() == items.len()).then_some(out)
}

fn media(ck: &mut Checker, node: &Node, path: &str) -> Option<Media> {
    let f = ck.fields(node, path, MEDIA_KEYS)?;
    match (f.get("prefetch"), f.get("appHosted")) {
        (Some(_), Some(a)) => {
            ck.error(
                a.pos,
                &join(path, "appHosted"),
                "set either media.prefetch (service-hosted media) or media.appHosted, not both",
            );
            None
        }
        (None, None) => Some(Media::ServiceHosted {
            prefetch: Vec::new(),
        }),
        (Some(p), None) => {
            let pp = join(path, "prefetch");
            let Value::Seq(items) = &p.value else {
                ck.error(
                    p.pos,
                    &pp,
                    "`prefetch` must be a list of { uri, resourceId }",
                );
                return None;
            };
            let mut out: Vec<Prefetch> = Vec::new();
            let mut ok = true;
            for (i, item) in items.iter().enumerate() {
                let ip = index(&pp, i);
                let Some(f) = ck.fields(item, &ip, PREFETCH_KEYS) else {
                    ok = false;
                    continue;
                };
                let uri = match f.get("uri") {
                    Some(n) => ck.string(n, &join(&ip, "uri")).and_then(|u| {
                        match url::Url::parse(&u) {
                            Ok(parsed) if parsed.scheme() == "https" => Some(u),
                            _ => {
                                ck.error(n.pos, &join(&ip, "uri"), format!("`{u}` must be an https URL of a WAV file (mono, 16-bit, 16 kHz)"));
                                None
                            }
                        }
                    }),
                    None => {
                        ck.error(item.pos, &join(&ip, "uri"), "missing uri: the https URL of the WAV file to prefetch");
                        None
                    }
                };
                let resource_id = match f.get("resourceId") {
                    Some(n) => ck.non_empty_string(n, &join(&ip, "resourceId")).and_then(|r| {
                        if out.iter().any(|p| p.resource_id.eq_ignore_ascii_case(&r)) {
                            ck.error(n.pos, &join(&ip, "resourceId"), format!("resourceId `{r}` is used twice: each prefetched file needs its own"));
                            None
                        } else {
                            Some(r)
                        }
                    }),
                    None => {
                        ck.error(item.pos, &join(&ip, "resourceId"), "missing resourceId: a GUID naming this media file");
                        None
                    }
                };
                match (uri, resource_id) {
                    (Some(uri), Some(resource_id)) => out.push(Prefetch { uri, resource_id }),
                    _ => ok = false,
                }
            }
            ok.then_some(Media::ServiceHosted { prefetch: out })
        }
        (None, Some(a)) => {
            let ap = join(path, "appHosted");
            let f = ck.fields(a, &ap, APP_HOSTED_KEYS)?;
            match f.get("blob") {
                Some(b) => ck
                    .non_empty_string(b, &join(&ap, "blob"))
                    .map(|blob| Media::AppHosted { blob: Some(blob) }),
                None => {
                    ck.warning(
                        a.pos,
                        &join(&ap, "blob"),
                        "no blob: Graph connects app-hosted media to the media platform the blob \
                         describes (two of Microsoft's published examples omit it); write \
                         `blob: <your media platform's configuration>`",
                    );
                    Some(Media::AppHosted { blob: None })
                }
            }
        }
    }
}

fn chat(ck: &mut Checker, node: &Node, path: &str) -> Option<Map<String, Json>> {
    let f = ck.fields(node, path, CHAT_KEYS)?;
    let mut out = Map::new();
    for (key, value) in &f.entries {
        let p = join(path, &key.name);
        match &value.value {
            // an explicit null is sent as null
            Value::Null => {
                out.insert(key.name.clone(), Json::Null);
            }
            _ => {
                if let Some(s) = ck.string_or_number(value, &p) {
                    out.insert(key.name.clone(), Json::String(s));
                }
            }
        }
    }
    if !matches!(out.get("threadId"), Some(Json::String(t)) if !t.trim().is_empty()) {
        ck.error(
            node.pos,
            &join(path, "threadId"),
            "chat needs a threadId, such as \"19:meeting_...@thread.v2\"",
        );
        return None;
    }
    Some(out)
}

/// A meeting to join, with what its form implies.
struct Joined {
    meeting: Meeting,
    chat: Option<Map<String, Json>>,
    tenant_id: Option<String>,
    as_guest: Option<Map<String, Json>>,
}

fn meeting(ck: &mut Checker, node: &Node, path: &str, spec_has_chat: bool) -> Option<Joined> {
    let f = ck.fields(node, path, MEETING_KEYS)?;
    let forms: Vec<&str> = ["organizer", "joinUrl", "joinMeetingId"]
        .into_iter()
        .filter(|k| f.has(k))
        .collect();
    if forms.len() != 1 {
        let msg = if forms.is_empty() {
            "say which meeting: set one of meeting.organizer (with chat), meeting.joinUrl or meeting.joinMeetingId".to_string()
        } else {
            format!(
                "set only one of meeting.organizer, meeting.joinUrl, meeting.joinMeetingId (found {})",
                forms.join(", ")
            )
        };
        ck.error(node.pos, path, msg);
        return None;
    }
    let as_guest = match f.get("asGuest") {
        Some(n) => {
            let gp = join(path, "asGuest");
            let gf = ck.fields(n, &gp, GUEST_KEYS)?;
            let mut guest = Map::new();
            match gf.get("displayName") {
                Some(d) => {
                    guest.insert(
                        "displayName".into(),
                        Json::String(ck.non_empty_string(d, &join(&gp, "displayName"))?),
                    );
                }
                None => {
                    ck.error(
                        n.pos,
                        &join(&gp, "displayName"),
                        "a guest needs a displayName, shown to the meeting",
                    );
                    return None;
                }
            }
            if let Some(id) = gf.get("id") {
                guest.insert(
                    "id".into(),
                    Json::String(ck.non_empty_string(id, &join(&gp, "id"))?),
                );
            }
            Some(guest)
        }
        None => None,
    };
    if f.has("passcode") && !f.has("joinMeetingId") {
        ck.error(
            f.key_pos("passcode").unwrap_or(node.pos),
            &join(path, "passcode"),
            "a passcode goes with meeting.joinMeetingId",
        );
        return None;
    }
    if let Some(n) = f.get("organizer") {
        let organizer = ck.identity_set(n, &join(path, "organizer"))?;
        return Some(Joined {
            meeting: Meeting::Organizer {
                organizer: organizer.into(),
            },
            chat: None,
            tenant_id: None,
            as_guest,
        });
    }
    if let Some(n) = f.get("joinMeetingId") {
        let id = ck.string_or_number(n, &join(path, "joinMeetingId"))?;
        let passcode = match f.get("passcode") {
            // sent as `"passcode": null`, as Graph's example does
            Some(p) if matches!(p.value, Value::Null) => Some(None),
            Some(p) => Some(Some(ck.string_or_number(p, &join(path, "passcode"))?)),
            None => None,
        };
        return Some(Joined {
            meeting: Meeting::JoinMeetingId { id, passcode },
            chat: None,
            tenant_id: None,
            as_guest,
        });
    }
    let n = f.get("joinUrl")?;
    let url = ck.string(n, &join(path, "joinUrl"))?;
    match super::joinurl::parse_join_url(&url) {
        Ok(super::joinurl::JoinUrl::MeetupJoin {
            thread_id,
            message_id,
            tenant_id,
            organizer_id,
        }) => {
            if spec_has_chat {
                ck.error(
                    n.pos,
                    &join(path, "joinUrl"),
                    "the joinUrl already names the chat: remove `chat:` or use meeting.organizer",
                );
                return None;
            }
            let mut chat = Map::new();
            chat.insert("threadId".into(), Json::String(thread_id));
            chat.insert("messageId".into(), Json::String(message_id));
            let mut user = Map::new();
            user.insert("id".into(), Json::String(organizer_id));
            if let Some(t) = &tenant_id {
                user.insert("tenantId".into(), Json::String(t.clone()));
            }
            let organizer = Map::from_iter([("user".to_string(), Json::Object(user))]);
            Some(Joined {
                meeting: Meeting::Organizer {
                    organizer: organizer.into(),
                },
                chat: Some(chat),
                tenant_id,
                as_guest,
            })
        }
        Ok(super::joinurl::JoinUrl::MeetingId { id, passcode }) => Some(Joined {
            meeting: Meeting::JoinMeetingId {
                id,
                passcode: passcode.map(Some),
            },
            chat: None,
            tenant_id: None,
            as_guest,
        }),
        Err(e) => {
            ck.error(n.pos, &join(path, "joinUrl"), e);
            None
        }
    }
}

fn schedule_of(ck: &mut Checker, node: &Node, path: &str, ctx: &Context) -> Option<Schedule> {
    let f = ck.fields(node, path, SCHEDULE_KEYS)?;
    let tz_name = match f.get("timezone") {
        Some(n) => ck.string(n, &join(path, "timezone"))?,
        None => ctx
            .defaults
            .timezone
            .clone()
            .unwrap_or_else(|| "UTC".to_string()),
    };
    let timezone = match schedule::parse_timezone(&tz_name) {
        Ok(tz) => tz,
        Err(e) => {
            let pos = f.get("timezone").map(|n| n.pos).unwrap_or(node.pos);
            ck.error(pos, &join(path, "timezone"), e);
            return None;
        }
    };
    let time = |ck: &mut Checker, key: &str| -> Option<Option<Timestamp>> {
        match f.get(key) {
            None => Some(None),
            Some(n) => {
                let s = ck.string(n, &join(path, key))?;
                match schedule::parse_time(&s, &timezone) {
                    Ok(t) => Some(Some(t)),
                    Err(e) => {
                        ck.error(n.pos, &join(path, key), e);
                        None
                    }
                }
            }
        }
    };
    let trigger = match (f.get("at"), f.get("cron")) {
        (Some(_), Some(c)) => {
            ck.error(
                c.pos,
                &join(path, "cron"),
                "set either schedule.at (once) or schedule.cron (repeating), not both",
            );
            None
        }
        (None, None) => {
            ck.error(node.pos, path, "a schedule needs `at:` (once, such as 2026-12-01T09:00:00+01:00) or `cron:` (such as \"0 9 * * Mon-Fri\")");
            None
        }
        (Some(a), None) => {
            let at = time(ck, "at")?.expect("present");
            if at < ctx.now {
                ck.warning(a.pos, &join(path, "at"), format!("{at} is in the past: this run will not be placed (it is recorded as missed once past its deadline)"));
            }
            Some(Trigger::At(at))
        }
        (None, Some(c)) => {
            let text = ck.string(c, &join(path, "cron"))?;
            match parse_cron_memo(&text) {
                Ok(expr) => Some(Trigger::Cron(expr)),
                Err(e) => {
                    ck.error(c.pos, &join(path, "cron"), e);
                    None
                }
            }
        }
    };
    let deadline = match f.get("deadline") {
        Some(n) => {
            let s = ck.string(n, &join(path, "deadline"))?;
            match schedule::parse_deadline(&s) {
                Ok(d) => Some(d),
                Err(e) => {
                    ck.error(n.pos, &join(path, "deadline"), e);
                    None
                }
            }
        }
        None => Some(Some(schedule::DEFAULT_DEADLINE)),
    };
    let concurrency = match f.get("concurrency") {
        Some(n) => {
            let s = ck.string(n, &join(path, "concurrency"))?;
            match s.parse::<Concurrency>() {
                Ok(c) => Some(c),
                Err(e) => {
                    ck.error(n.pos, &join(path, "concurrency"), e);
                    None
                }
            }
        }
        None => Some(Concurrency::default()),
    };
    let jitter = match f.get("jitter") {
        Some(n) => Some(Some(ck.duration(n, &join(path, "jitter"))?)),
        None => Some(None),
    };
    let until = time(ck, "until");
    if let (Some(Some(u)), Some(n)) = (until, f.get("until"))
        && u < ctx.now
    {
        {
            ck.warning(
                n.pos,
                &join(path, "until"),
                format!("{u} is in the past: no run will be placed"),
            );
        }
    }
    Some(Schedule {
        trigger: trigger?,
        timezone,
        timezone_name: tz_name,
        deadline: deadline?,
        concurrency: concurrency?,
        jitter: jitter?,
        until: until?,
    })
}

/// [`CronExpr::parse`], memoised per thread. Parsing a cron line is the
/// costliest step of validating a spec (croner checks each field on its own,
/// then the whole line), and a calls directory repeats a few lines many
/// times. A clone shares the parsed pattern. Bounded: cleared at 1,024 lines.
fn parse_cron_memo(text: &str) -> Result<CronExpr, String> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static MEMO: RefCell<HashMap<String, Result<CronExpr, String>>> =
            RefCell::new(HashMap::new());
    }
    MEMO.with(|memo| {
        if let Some(hit) = memo.borrow().get(text) {
            return hit.clone();
        }
        let parsed = CronExpr::parse(text);
        let mut memo = memo.borrow_mut();
        if memo.len() >= 1024 {
            memo.clear();
        }
        memo.insert(text.to_string(), parsed.clone());
        parsed
    })
}

fn retry(ck: &mut Checker, node: &Node, path: &str) -> Option<Retry> {
    let f = ck.fields(node, path, RETRY_KEYS)?;
    let mut r = Retry::default();
    if let Some(n) = f.get("attempts") {
        match &n.value {
            Value::Int(i) if (0..=i64::from(MAX_RETRY_ATTEMPTS)).contains(i) => {
                r.attempts = *i as u32
            }
            _ => {
                ck.error(
                    n.pos,
                    &join(path, "attempts"),
                    format!("attempts must be a whole number from 0 to {MAX_RETRY_ATTEMPTS}"),
                );
                return None;
            }
        }
    }
    if let Some(n) = f.get("interval") {
        r.interval = ck.duration(n, &join(path, "interval"))?;
    }
    Some(r)
}

fn graph_patch(ck: &mut Checker, node: &Node, path: &str) -> Option<Map<String, Json>> {
    let Value::Map(entries) = &node.value else {
        ck.error(
            node.pos,
            path,
            "`graph` must be a mapping: a JSON merge patch applied to the request body",
        );
        return None;
    };
    let mut ok = true;
    for (k, _) in entries {
        if SERVER_GENERATED.contains(&k.name.as_str()) {
            ck.error(
                k.pos,
                &join(path, &k.name),
                format!(
                    "`{}` is generated by Graph and cannot be sent; remove it",
                    k.name
                ),
            );
            ok = false;
        }
    }
    match node.value.to_json() {
        Json::Object(map) if ok => Some(map),
        _ => None,
    }
}
