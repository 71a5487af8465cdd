//! Parsing Graph's `commsNotifications` bodies (pure: bytes in, events out).
//!
//! Graph is liberal in what it sends (legacy `resource` instead of
//! `resourceUrl`, `resourceData` as an object or an array, result codes as
//! strings or numbers, call states added over time), so the parser accepts
//! every shape GRAPH.md describes and tolerates values it does not know. It
//! refuses only bodies that are not notifications at all: not JSON, not an
//! object, no `value` array, an item that is not an object, or an
//! `@odata.type` naming something other than `commsNotifications`.

use serde_json::{Map, Value};

/// One accepted POST: what the listener hands to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The `calldRun` query value of the request (the daemon appends it to
    /// every callbackUri), so a notification can be matched to its run even
    /// when the create response was lost.
    pub run_id: Option<String>,
    /// The `calldAttempt` query value: which create of the run carried this
    /// callbackUri (the daemon appends it next to `calldRun`).
    pub attempt: Option<u32>,
    /// The `tid` claim of the validated bearer token; `None` only when token
    /// validation is switched off.
    pub tenant_id: Option<String>,
    /// The call events of the body, in the order Graph sent them.
    pub events: Vec<CallEvent>,
    /// With [`CallbackOptions::ack_timeout`](crate::callback::CallbackOptions)
    /// set, the listener answers 202 only once the daemon calls
    /// [`Ack::done`] (after recording the events durably); otherwise it is
    /// inert. Ignored by `==`.
    pub ack: Ack,
}

/// The daemon's "recorded" for one [`Inbound`]. Dropping it without
/// [`Ack::done`] (the daemon stopping) makes the listener answer 503, so
/// Graph delivers the notification again; [`Ack::refuse`] makes it answer
/// 401 (the token's tenant is not the run's).
#[derive(Clone, Default)]
#[allow(clippy::type_complexity)]
pub struct Ack(
    Option<std::sync::Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<AckVerdict>>>>>,
);

/// What the daemon made of one [`Inbound`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// Recorded (or not ours): 202.
    Recorded,
    /// Signed for another tenant than its run's: 401, nothing recorded.
    WrongTenant,
}

impl Ack {
    /// An ack the listener waits for, and its receiving end.
    pub fn channel() -> (Ack, tokio::sync::oneshot::Receiver<AckVerdict>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Ack(Some(std::sync::Arc::new(std::sync::Mutex::new(Some(tx))))),
            rx,
        )
    }

    fn send(&self, v: AckVerdict) {
        if let Some(slot) = &self.0
            && let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            let _ = tx.send(v);
        }
    }

    /// The events are recorded: the listener may answer 202.
    pub fn done(&self) {
        self.send(AckVerdict::Recorded);
    }

    /// The notification was refused (wrong tenant): the listener answers 401.
    pub fn refuse(&self) {
        self.send(AckVerdict::WrongTenant);
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(awaited)"
        } else {
            "Ack"
        })
    }
}

impl PartialEq for Ack {
    fn eq(&self, _: &Ack) -> bool {
        true
    }
}

impl Eq for Ack {}

/// One change of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// The Graph call id: the path segment after `/calls/` in `resourceUrl`
    /// (or `resource`), else the `id` / `@odata.id` of the resource data.
    pub call_id: Option<String>,
    pub change_type: ChangeType,
    pub state: Option<CallState>,
    pub result_info: Option<ResultInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
    /// A value this version does not know (or none at all: empty string).
    Unknown(String),
}

impl ChangeType {
    pub fn parse(s: &str) -> ChangeType {
        match s.to_ascii_lowercase().as_str() {
            "created" => ChangeType::Created,
            "updated" => ChangeType::Updated,
            "deleted" => ChangeType::Deleted,
            _ => ChangeType::Unknown(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Deleted => "deleted",
            ChangeType::Unknown(s) => s,
        }
    }
}

/// Graph's `callState`, plus whatever a later Graph version may add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    Incoming,
    Establishing,
    /// beta only
    Ringing,
    Established,
    Hold,
    Transferring,
    TransferAccepted,
    Redirecting,
    Terminating,
    Terminated,
    UnknownFutureValue,
    Unknown(String),
}

impl CallState {
    pub fn parse(s: &str) -> CallState {
        match s.to_ascii_lowercase().as_str() {
            "incoming" => CallState::Incoming,
            "establishing" => CallState::Establishing,
            "ringing" => CallState::Ringing,
            "established" => CallState::Established,
            "hold" => CallState::Hold,
            "transferring" => CallState::Transferring,
            "transferaccepted" => CallState::TransferAccepted,
            "redirecting" => CallState::Redirecting,
            "terminating" => CallState::Terminating,
            "terminated" => CallState::Terminated,
            "unknownfuturevalue" => CallState::UnknownFutureValue,
            _ => CallState::Unknown(s.to_string()),
        }
    }

    /// Graph's spelling (camelCase); an unknown value as received.
    pub fn as_str(&self) -> &str {
        match self {
            CallState::Incoming => "incoming",
            CallState::Establishing => "establishing",
            CallState::Ringing => "ringing",
            CallState::Established => "established",
            CallState::Hold => "hold",
            CallState::Transferring => "transferring",
            CallState::TransferAccepted => "transferAccepted",
            CallState::Redirecting => "redirecting",
            CallState::Terminating => "terminating",
            CallState::Terminated => "terminated",
            CallState::UnknownFutureValue => "unknownFutureValue",
            CallState::Unknown(s) => s,
        }
    }
}

/// Graph's `resultInfo`. A code or subcode that is missing or not an
/// integer (in a string or a number) is recorded as 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultInfo {
    pub code: i64,
    pub subcode: i64,
    pub message: Option<String>,
}

/// Why a body is not a notification. The text is safe to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("body is not JSON: {0}")]
    Json(String),
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("@odata.type {0:?} is not #microsoft.graph.commsNotifications")]
    WrongType(String),
    #[error("body has no \"value\" array")]
    NoValue,
    #[error("value[{0}] is not an object")]
    ItemNotAnObject(usize),
}

/// Parse a notification body into call events.
///
/// Items about a call's sub-resources (`/calls/{id}/participants`,
/// `/calls/{id}/operations/{op}`, ...) are not call state changes and yield
/// no event: a participant `deleted` must not read as the call ending.
pub fn parse_notification(body: &[u8]) -> Result<Vec<CallEvent>, ParseError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages quote no input, only positions: safe to return.
        ParseError::Json(e.to_string())
    })?;
    let obj = doc.as_object().ok_or(ParseError::NotAnObject)?;
    if let Some(t) = obj.get("@odata.type") {
        let ok = t
            .as_str()
            .is_some_and(|s| s.to_ascii_lowercase().ends_with("commsnotifications"));
        if !ok {
            let shown = match t {
                Value::String(s) => truncate(s, 80),
                other => truncate(&other.to_string(), 80),
            };
            return Err(ParseError::WrongType(shown));
        }
    }
    let items = obj
        .get("value")
        .and_then(Value::as_array)
        .ok_or(ParseError::NoValue)?;
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item = item.as_object().ok_or(ParseError::ItemNotAnObject(i))?;
        parse_item(item, &mut events);
    }
    Ok(events)
}

fn parse_item(item: &Map<String, Value>, out: &mut Vec<CallEvent>) {
    let change_type =
        ChangeType::parse(item.get("changeType").and_then(Value::as_str).unwrap_or(""));
    let resource = item
        .get("resourceUrl")
        .and_then(Value::as_str)
        .or_else(|| item.get("resource").and_then(Value::as_str));
    let from_url = resource.map(call_ref);
    if let Some(CallRef::SubResource) = from_url {
        return;
    }
    let url_id = match from_url {
        Some(CallRef::Call(id)) => Some(id),
        _ => None,
    };

    let datas: Vec<&Map<String, Value>> = match item.get("resourceData") {
        Some(Value::Object(o)) => vec![o],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if datas.is_empty() {
        out.push(CallEvent {
            call_id: url_id,
            change_type,
            state: None,
            result_info: None,
        });
        return;
    }
    for data in datas {
        if !is_call_data(data) {
            continue;
        }
        let call_id = url_id.clone().or_else(|| data_call_id(data));
        out.push(CallEvent {
            call_id,
            change_type: change_type.clone(),
            state: data
                .get("state")
                .and_then(Value::as_str)
                .map(CallState::parse),
            result_info: data
                .get("resultInfo")
                .and_then(Value::as_object)
                .map(parse_result_info),
        });
    }
}

#[derive(Debug, PartialEq)]
enum CallRef {
    Call(String),
    SubResource,
    /// No `/calls/` segment: the id may still come from the resource data.
    NotACallUrl,
}

/// `/communications/calls/{id}` (or `/app/calls/{id}`, a full URL, a
/// trailing slash or a query) names the call `{id}`; anything below it is a
/// sub-resource.
fn call_ref(resource: &str) -> CallRef {
    let path = resource.split(['?', '#']).next().unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let Some(pos) = segments
        .iter()
        .rposition(|s| s.eq_ignore_ascii_case("calls"))
    else {
        return CallRef::NotACallUrl;
    };
    match &segments[pos + 1..] {
        [id] => CallRef::Call((*id).to_string()),
        [] => CallRef::NotACallUrl,
        _ => CallRef::SubResource,
    }
}

fn is_call_data(data: &Map<String, Value>) -> bool {
    match data.get("@odata.type").and_then(Value::as_str) {
        None => true,
        Some(t) => t.eq_ignore_ascii_case("#microsoft.graph.call"),
    }
}

fn data_call_id(data: &Map<String, Value>) -> Option<String> {
    if let Some(id) = data.get("id").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    match data.get("@odata.id").and_then(Value::as_str).map(call_ref) {
        Some(CallRef::Call(id)) => Some(id),
        _ => None,
    }
}

fn parse_result_info(o: &Map<String, Value>) -> ResultInfo {
    ResultInfo {
        code: o.get("code").and_then(int_value).unwrap_or(0),
        subcode: o.get("subcode").and_then(int_value).unwrap_or(0),
        message: o.get("message").and_then(Value::as_str).map(str::to_string),
    }
}

/// An integer given as a JSON number or a string (`"7505"`, `" 200 "`).
fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The meaning, in words, of a Graph call end code (`resultInfo`), for
/// `status` and `history`. Based on the codes listed in GRAPH.md; codes it
/// does not know are described by their class.
pub fn describe_result(code: i64, subcode: i64) -> &'static str {
    match (code, subcode) {
        (200, 4097 | 4521 | 18503) => "the other party ended the call",
        (200, 5000..=5030) => "the conversation ended",
        (200, 7000 | 10550) => "the call was ended by the bot",
        (200, 540000 | 560000) => "the PSTN user hung up",
        (200, _) => "the call ended normally",
        (408, _) => "no answer (the call timed out)",
        (410, _) => "media failure (the media path could not be established)",
        (480, _) => "the callee is unreachable",
        (486, _) => "the callee is busy",
        (487, _) => "the call was canceled before it was answered",
        (603, _) => "the callee declined the call",
        (403, _) => "refused: not permitted",
        (404, _) => "not found",
        (500, _) => "Graph internal error",
        (503, _) => "Graph service unavailable",
        (400..=499, _) => "the call failed (request error)",
        (500..=599, _) => "the call failed (server error)",
        (600..=699, _) => "the call failed (refused by the callee)",
        _ => "unknown result code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTABLISHED: &str =
        include_str!("../../tests/fixtures/graph/seed/01-notification-established.json");
    const ESTABLISHING: &str =
        include_str!("../../tests/fixtures/graph/seed/01-notification-establishing.json");

    fn one(body: &str) -> CallEvent {
        let mut ev = parse_notification(body.as_bytes()).unwrap();
        assert_eq!(ev.len(), 1, "{ev:?}");
        ev.pop().unwrap()
    }

    #[test]
    fn seed_established() {
        assert_eq!(
            one(ESTABLISHED),
            CallEvent {
                call_id: Some("57DAB8B1894C409AB240BD8BEAE78896".into()),
                change_type: ChangeType::Updated,
                state: Some(CallState::Established),
                result_info: None,
            }
        );
    }

    #[test]
    fn seed_establishing() {
        assert_eq!(
            one(ESTABLISHING),
            CallEvent {
                call_id: Some("57DAB8B1894C409AB240BD8BEAE78896".into()),
                change_type: ChangeType::Updated,
                state: Some(CallState::Establishing),
                result_info: None,
            }
        );
    }

    #[test]
    fn terminated_with_numeric_codes_and_resource_url() {
        let body = r##"{"@odata.type":"#microsoft.graph.commsNotifications","value":[{
            "@odata.type":"#microsoft.graph.commsNotification","changeType":"deleted",
            "resourceUrl":"/communications/calls/abc-123",
            "resourceData":{"@odata.type":"#microsoft.graph.call","state":"terminated",
              "resultInfo":{"@odata.type":"#microsoft.graph.resultInfo","code":200,"subcode":5001,"message":"bye"}}}]}"##;
        assert_eq!(
            one(body),
            CallEvent {
                call_id: Some("abc-123".into()),
                change_type: ChangeType::Deleted,
                state: Some(CallState::Terminated),
                result_info: Some(ResultInfo {
                    code: 200,
                    subcode: 5001,
                    message: Some("bye".into())
                }),
            }
        );
    }

    #[test]
    fn string_codes() {
        let body = r#"{"value":[{"changeType":"deleted","resourceUrl":"/communications/calls/x",
            "resourceData":{"state":"terminated","resultInfo":{"code":"480","subcode":" 10037 "}}}]}"#;
        let ev = one(body);
        assert_eq!(
            ev.result_info,
            Some(ResultInfo {
                code: 480,
                subcode: 10037,
                message: None
            })
        );
    }

    #[test]
    fn unparseable_codes_become_zero() {
        let body = r#"{"value":[{"changeType":"deleted","resourceUrl":"/communications/calls/x",
            "resourceData":{"state":"terminated","resultInfo":{"code":"abc","subcode":1.5,"message":7}}}]}"#;
        assert_eq!(
            one(body).result_info,
            Some(ResultInfo {
                code: 0,
                subcode: 0,
                message: None
            })
        );
    }

    #[test]
    fn integral_float_codes_are_accepted() {
        let body = r#"{"value":[{"resourceUrl":"/communications/calls/x",
            "resourceData":{"resultInfo":{"code":408.0,"subcode":8537}}}]}"#;
        let ri = one(body).result_info.unwrap();
        assert_eq!((ri.code, ri.subcode), (408, 8537));
    }

    #[test]
    fn resource_data_array_gives_one_event_each() {
        let body = r#"{"value":[{"changeType":"updated","resourceUrl":"/communications/calls/c1",
            "resourceData":[{"state":"establishing"},{"state":"established"}]}]}"#;
        let ev = parse_notification(body.as_bytes()).unwrap();
        let states: Vec<_> = ev.iter().map(|e| e.state.clone().unwrap()).collect();
        assert_eq!(
            states,
            vec![CallState::Establishing, CallState::Established]
        );
        assert!(ev.iter().all(|e| e.call_id.as_deref() == Some("c1")));
    }

    #[test]
    fn several_items_keep_their_order() {
        let body = r#"{"value":[
            {"changeType":"updated","resourceUrl":"/communications/calls/a","resourceData":{"state":"established"}},
            {"changeType":"created","resource":"/app/calls/b","resourceData":{"state":"incoming"}}]}"#;
        let ev = parse_notification(body.as_bytes()).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].call_id.as_deref(), Some("a"));
        assert_eq!(ev[1].call_id.as_deref(), Some("b"));
        assert_eq!(ev[1].change_type, ChangeType::Created);
        assert_eq!(ev[1].state, Some(CallState::Incoming));
    }

    #[test]
    fn unknown_state_and_change_type_are_kept() {
        let body = r#"{"value":[{"changeType":"teleported","resourceUrl":"/communications/calls/a",
            "resourceData":{"state":"levitating"}}]}"#;
        let ev = one(body);
        assert_eq!(ev.change_type, ChangeType::Unknown("teleported".into()));
        assert_eq!(ev.state, Some(CallState::Unknown("levitating".into())));
        assert_eq!(ev.state.unwrap().as_str(), "levitating");
    }

    #[test]
    fn every_known_state_round_trips() {
        for s in [
            "incoming",
            "establishing",
            "ringing",
            "established",
            "hold",
            "transferring",
            "transferAccepted",
            "redirecting",
            "terminating",
            "terminated",
            "unknownFutureValue",
        ] {
            let st = CallState::parse(s);
            assert!(!matches!(st, CallState::Unknown(_)), "{s}");
            assert_eq!(st.as_str(), s);
        }
    }

    #[test]
    fn legacy_resource_field() {
        let body = r#"{"value":[{"changeType":"updated","resource":"/app/calls/LEGACY",
            "resourceData":{"state":"hold"}}]}"#;
        let ev = one(body);
        assert_eq!(ev.call_id.as_deref(), Some("LEGACY"));
        assert_eq!(ev.state, Some(CallState::Hold));
    }

    #[test]
    fn resource_url_takes_precedence_over_resource() {
        let body = r#"{"value":[{"resourceUrl":"/communications/calls/new","resource":"/app/calls/old"}]}"#;
        assert_eq!(one(body).call_id.as_deref(), Some("new"));
    }

    #[test]
    fn call_id_from_full_url_with_query_and_slash() {
        assert_eq!(
            call_ref("https://graph.microsoft.com/v1.0/communications/calls/id1/?x=1"),
            CallRef::Call("id1".into())
        );
        assert_eq!(call_ref("/communications/calls"), CallRef::NotACallUrl);
        assert_eq!(call_ref("/something/else"), CallRef::NotACallUrl);
        assert_eq!(
            call_ref("/communications/calls/id1/participants"),
            CallRef::SubResource
        );
    }

    #[test]
    fn call_id_from_resource_data_when_url_missing() {
        let body = r#"{"value":[{"changeType":"updated",
            "resourceData":{"@odata.id":"/communications/calls/fromdata","state":"established"}}]}"#;
        assert_eq!(one(body).call_id.as_deref(), Some("fromdata"));
        let body = r#"{"value":[{"changeType":"updated","resourceData":{"id":"plainid"}}]}"#;
        assert_eq!(one(body).call_id.as_deref(), Some("plainid"));
        let body = r#"{"value":[{"changeType":"updated"}]}"#;
        assert_eq!(one(body).call_id, None);
    }

    #[test]
    fn participant_and_operation_updates_are_not_call_events() {
        let body = r##"{"value":[
            {"changeType":"deleted","resourceUrl":"/communications/calls/c1/participants",
             "resourceData":[{"@odata.type":"#microsoft.graph.participant","id":"p1"}]},
            {"changeType":"updated","resourceUrl":"/communications/calls/c1/operations/o1",
             "resourceData":{"@odata.type":"#microsoft.graph.playPromptOperation","status":"completed"}},
            {"changeType":"updated","resourceUrl":"/communications/calls/c1",
             "resourceData":[{"@odata.type":"#microsoft.graph.participant"},{"state":"established"}]}]}"##;
        let ev = parse_notification(body.as_bytes()).unwrap();
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].state, Some(CallState::Established));
    }

    #[test]
    fn empty_value_is_a_valid_notification() {
        assert_eq!(parse_notification(br#"{"value":[]}"#).unwrap(), vec![]);
    }

    #[test]
    fn not_notifications() {
        use ParseError::*;
        type Check = fn(&ParseError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"", |e| matches!(e, Json(_))),
            (b"{", |e| matches!(e, Json(_))),
            (b"\xff\xfe", |e| matches!(e, Json(_))),
            (b"[]", |e| matches!(e, NotAnObject)),
            (b"42", |e| matches!(e, NotAnObject)),
            (b"{}", |e| matches!(e, NoValue)),
            (br#"{"value":{}}"#, |e| matches!(e, NoValue)),
            (br#"{"value":[1]}"#, |e| matches!(e, ItemNotAnObject(0))),
            (
                br##"{"@odata.type":"#microsoft.graph.changeNotificationCollection","value":[]}"##,
                |e| matches!(e, WrongType(_)),
            ),
            (br#"{"@odata.type":5,"value":[]}"#, |e| {
                matches!(e, WrongType(_))
            }),
        ];
        for (body, check) in cases {
            let err = parse_notification(body).unwrap_err();
            assert!(check(&err), "{:?}: {err:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn wrong_type_message_is_bounded() {
        let long = "x".repeat(10_000);
        let body = format!(r#"{{"@odata.type":"{long}","value":[]}}"#);
        let msg = parse_notification(body.as_bytes()).unwrap_err().to_string();
        assert!(msg.len() < 200, "{}", msg.len());
    }

    #[test]
    fn describe_codes() {
        assert_eq!(describe_result(200, 4097), "the other party ended the call");
        assert_eq!(
            describe_result(200, 18503),
            "the other party ended the call"
        );
        assert_eq!(describe_result(200, 5000), "the conversation ended");
        assert_eq!(describe_result(200, 5030), "the conversation ended");
        assert_eq!(describe_result(200, 5031), "the call ended normally");
        assert_eq!(describe_result(200, 7000), "the call was ended by the bot");
        assert_eq!(describe_result(200, 10550), "the call was ended by the bot");
        assert_eq!(describe_result(200, 540000), "the PSTN user hung up");
        assert_eq!(describe_result(200, 560000), "the PSTN user hung up");
        assert_eq!(describe_result(408, 8537), "no answer (the call timed out)");
        assert!(describe_result(410, 0).contains("media"));
        assert_eq!(describe_result(480, 10037), "the callee is unreachable");
        assert_eq!(describe_result(486, 0), "the callee is busy");
        assert_eq!(describe_result(603, 0), "the callee declined the call");
        assert_eq!(describe_result(500, 1005), "Graph internal error");
        assert_eq!(describe_result(499, 0), "the call failed (request error)");
        assert_eq!(describe_result(0, 0), "unknown result code");
        assert_eq!(describe_result(-1, 5), "unknown result code");
    }
}
