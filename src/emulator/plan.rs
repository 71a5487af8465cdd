//! What a created call does (answered or not, when, how it ends) and the
//! notification bodies it produces. Pure.

use std::time::Duration;

use serde_json::{Value, json};

use super::config::{EmulatorConfig, Outcome, ResultInfo};
use super::validate::{CallKind, CallShape};

/// `resultInfo` of a call the bot hung up (DELETE).
pub fn ended_by_bot() -> ResultInfo {
    ResultInfo::new(200, 7000, "The conversation has ended by bot.")
}

/// The scripted course of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPlan {
    /// `establishing`, after `answer_after` `established`, after `length`
    /// `terminating` then `terminated` with `result`.
    Answer {
        answer_after: Duration,
        length: Duration,
        result: ResultInfo,
    },
    /// `establishing`, after `after` `terminated` with `result`.
    NotAnswered {
        outcome: Outcome,
        after: Duration,
        result: ResultInfo,
    },
}

/// Decides the course of a call from its shape and the configuration.
///
/// - Peer-to-peer: the target's configured outcome, else answered.
/// - Group: answered unless every target is configured not to answer (then
///   the first target's outcome); the first configured answering target's
///   timing applies.
/// - Meeting: keyed by the chat thread id or join meeting id, else answered.
pub fn plan_call(shape: &CallShape, config: &EmulatorConfig) -> CallPlan {
    let keys: &[String] = match shape.kind {
        CallKind::Meeting => &shape.meeting_keys,
        _ => &shape.target_ids,
    };
    let configured: Vec<_> = keys.iter().map(|k| config.target(k)).collect();
    let chosen = match shape.kind {
        CallKind::Group => {
            let all_refuse = configured
                .iter()
                .all(|c| c.is_some_and(|c| c.outcome != Outcome::Answer));
            if all_refuse {
                configured.first().copied().flatten()
            } else {
                configured
                    .iter()
                    .flatten()
                    .find(|c| c.outcome == Outcome::Answer)
                    .copied()
            }
        }
        _ => configured.iter().flatten().next().copied(),
    };
    let calls = &config.calls;
    match chosen {
        None => CallPlan::Answer {
            answer_after: calls.answer_after,
            length: calls.length,
            result: calls.result.clone(),
        },
        Some(t) if t.outcome == Outcome::Answer => CallPlan::Answer {
            answer_after: t.after.unwrap_or(calls.answer_after),
            length: t.length.unwrap_or(calls.length),
            result: t.result.clone().unwrap_or_else(|| calls.result.clone()),
        },
        Some(t) => CallPlan::NotAnswered {
            outcome: t.outcome,
            after: t.after.unwrap_or(calls.answer_after),
            result: t
                .result
                .clone()
                .unwrap_or_else(|| t.outcome.default_result(calls)),
        },
    }
}

/// A `commsNotifications` body for one state of a call.
///
/// `changeType` is `deleted` for `terminated`, else `updated`; `resultInfo`
/// is present with the final state. `etag` grows with each notification.
pub fn notification(
    call_id: &str,
    state: &str,
    result: Option<&ResultInfo>,
    etag: u32,
    codes_as_strings: bool,
) -> Value {
    let resource = format!("/communications/calls/{call_id}");
    let mut data = json!({
        "@odata.type": "#microsoft.graph.call",
        "@odata.id": resource,
        "@odata.etag": format!("W/\"{etag}\""),
        "id": call_id,
        "state": state,
        "direction": "outgoing",
    });
    if let Some(r) = result {
        data["resultInfo"] = if codes_as_strings {
            json!({
                "@odata.type": "#microsoft.graph.resultInfo",
                "code": r.code.to_string(),
                "subcode": r.subcode.to_string(),
                "message": r.message,
            })
        } else {
            json!({
                "@odata.type": "#microsoft.graph.resultInfo",
                "code": r.code,
                "subcode": r.subcode,
                "message": r.message,
            })
        };
    }
    json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": if state == "terminated" { "deleted" } else { "updated" },
            "resourceUrl": resource,
            "resourceData": data,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::config::TargetConfig;

    fn shape(kind: CallKind, ids: &[&str]) -> CallShape {
        CallShape {
            kind,
            guest: false,
            app_hosted_media: false,
            target_ids: if kind == CallKind::Meeting {
                vec![]
            } else {
                ids.iter().map(|s| s.to_string()).collect()
            },
            meeting_keys: if kind == CallKind::Meeting {
                ids.iter().map(|s| s.to_string()).collect()
            } else {
                vec![]
            },
            tenant_id: None,
        }
    }

    fn config() -> EmulatorConfig {
        let mut c = EmulatorConfig::default();
        let t = |outcome, after: Option<u64>| TargetConfig {
            outcome,
            after: after.map(Duration::from_millis),
            length: None,
            result: None,
        };
        c.targets
            .insert("+15550001".into(), t(Outcome::Decline, Some(300)));
        c.targets.insert("+15550002".into(), t(Outcome::Busy, None));
        c.targets
            .insert("ANSWERS".into(), t(Outcome::Answer, Some(50)));
        c.targets
            .insert("19:m@thread.v2".into(), t(Outcome::Unreachable, None));
        c
    }

    #[test]
    fn unknown_targets_answer_with_the_defaults() {
        let p = plan_call(&shape(CallKind::PeerToPeer, &["someone"]), &config());
        assert_eq!(
            p,
            CallPlan::Answer {
                answer_after: Duration::from_secs(1),
                length: Duration::from_secs(5),
                result: ResultInfo::new(200, 5001, "The conversation has ended."),
            }
        );
    }

    #[test]
    fn p2p_outcomes_and_their_codes() {
        let c = config();
        match plan_call(&shape(CallKind::PeerToPeer, &["+15550001"]), &c) {
            CallPlan::NotAnswered {
                outcome,
                after,
                result,
            } => {
                assert_eq!(outcome, Outcome::Decline);
                assert_eq!(after, Duration::from_millis(300));
                assert_eq!((result.code, result.subcode), (603, 0));
            }
            p => panic!("{p:?}"),
        }
        match plan_call(&shape(CallKind::PeerToPeer, &["answers"]), &c) {
            CallPlan::Answer { answer_after, .. } => {
                assert_eq!(answer_after, Duration::from_millis(50))
            }
            p => panic!("{p:?}"),
        }
        let codes = |o: Outcome| {
            let r = o.default_result(&c.calls);
            (r.code, r.subcode)
        };
        assert_eq!(codes(Outcome::NoAnswer), (408, 10057));
        assert_eq!(codes(Outcome::Busy), (486, 0));
        assert_eq!(codes(Outcome::Unreachable), (480, 10037));
        assert_eq!(codes(Outcome::Answer), (200, 5001));
    }

    #[test]
    fn group_calls_answer_unless_everyone_refuses() {
        let c = config();
        assert!(matches!(
            plan_call(&shape(CallKind::Group, &["+15550001", "nobody"]), &c),
            CallPlan::Answer { .. }
        ));
        assert!(matches!(
            plan_call(&shape(CallKind::Group, &["+15550001", "answers"]), &c),
            CallPlan::Answer { answer_after, .. } if answer_after == Duration::from_millis(50)
        ));
        assert!(matches!(
            plan_call(&shape(CallKind::Group, &["+15550002", "+15550001"]), &c),
            CallPlan::NotAnswered {
                outcome: Outcome::Busy,
                ..
            }
        ));
    }

    #[test]
    fn meetings_are_keyed_by_thread_or_meeting_id() {
        let c = config();
        assert!(matches!(
            plan_call(&shape(CallKind::Meeting, &["19:m@thread.v2"]), &c),
            CallPlan::NotAnswered {
                outcome: Outcome::Unreachable,
                ..
            }
        ));
        assert!(matches!(
            plan_call(&shape(CallKind::Meeting, &["19:other@thread.v2"]), &c),
            CallPlan::Answer { .. }
        ));
    }

    #[test]
    fn notification_bodies() {
        let n = notification("abc", "establishing", None, 1, false);
        assert_eq!(n["@odata.type"], "#microsoft.graph.commsNotifications");
        let item = &n["value"][0];
        assert_eq!(item["changeType"], "updated");
        assert_eq!(item["resourceUrl"], "/communications/calls/abc");
        assert_eq!(item["resourceData"]["@odata.type"], "#microsoft.graph.call");
        assert_eq!(item["resourceData"]["state"], "establishing");
        assert!(item["resourceData"].get("resultInfo").is_none());

        let r = ResultInfo::new(408, 10057, "timeout");
        let n = notification("abc", "terminated", Some(&r), 3, false);
        assert_eq!(n["value"][0]["changeType"], "deleted");
        assert_eq!(n["value"][0]["resourceData"]["resultInfo"]["code"], 408);
        let n = notification("abc", "terminated", Some(&r), 3, true);
        assert_eq!(
            n["value"][0]["resourceData"]["resultInfo"]["subcode"],
            "10057"
        );
    }
}
