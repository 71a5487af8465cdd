//! Following each call to its end (issue 5), end to end: the real `calld`
//! in live mode against the in-process Graph emulator. Outcomes are read
//! with `calld history --format json`; times are only checked as lower
//! bounds.

mod lifecycle_support;

use lifecycle_support::*;
use serde_json::{Value, json};

const ANSWERS: &str = "+14255550101";
const DECLINES: &str = "+14255550102";
const NO_ANSWER: &str = "+14255550103";

fn attempts(run: &Value) -> Vec<Value> {
    run["attempts"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_declined_and_unanswered_calls_end_with_the_emulators_result() {
    let emu = start_emulator(&format!(
        r#"
calls:
  answerAfter: 300ms
  length: 700ms
  result: {{ code: 200, subcode: 4097, message: "The other party ended the call." }}
targets:
  "{DECLINES}": {{ outcome: decline, after: 200ms }}
  "{NO_ANSWER}": {{ outcome: noAnswer, after: 300ms }}
"#
    ))
    .await;
    let mut d = Daemon::new(&emu, None, "");
    d.write_spec("answered", &spec(ANSWERS, ""));
    d.write_spec("declined", &spec(DECLINES, ""));
    d.write_spec("unanswered", &spec(NO_ANSWER, ""));
    d.start().await;

    let answered = d.wait_finished("answered").await;
    assert_eq!(answered["outcome"], "completed", "{answered:#}");
    assert_eq!(
        states(&answered),
        ["establishing", "established", "terminating", "terminated"],
        "recorded in the order the emulator sent them"
    );
    assert_eq!(
        answered["resultInfo"],
        json!({"code": 200, "subcode": 4097, "message": "The other party ended the call."})
    );
    assert!(!answered["establishedAt"].is_null());
    let a = attempts(&answered);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["httpStatus"], 201);
    assert_eq!(a[0]["callId"], answered["callId"]);
    // The state times follow the arrival order.
    let times: Vec<_> = answered["callStates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ts(&s["at"]))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let declined = d.wait_finished("declined").await;
    assert_eq!(declined["outcome"], "notEstablished", "{declined:#}");
    assert_eq!(states(&declined), ["establishing", "terminated"]);
    assert_eq!(declined["resultInfo"]["code"], 603);
    assert_eq!(declined["resultInfo"]["subcode"], 0);
    assert!(declined["establishedAt"].is_null());

    let unanswered = d.wait_finished("unanswered").await;
    assert_eq!(unanswered["outcome"], "notEstablished", "{unanswered:#}");
    assert_eq!(unanswered["resultInfo"]["code"], 408);
    assert_eq!(unanswered["resultInfo"]["subcode"], 10057);

    // One create request per spec: no retry was asked for.
    for phone in [ANSWERS, DECLINES, NO_ANSWER] {
        assert_eq!(creates_for(&emu, phone).len(), 1, "{phone}");
    }
    assert!(d.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_gives_exactly_three_creates_each_two_seconds_after_the_previous_try_ended() {
    let emu = start_emulator(&format!(
        r#"targets: {{ "{DECLINES}": {{ outcome: decline, after: 100ms }} }}"#
    ))
    .await;
    let mut d = Daemon::new(&emu, None, "");
    d.write_spec(
        "stubborn",
        &spec(DECLINES, "retry: { attempts: 2, interval: 2s }"),
    );
    d.start().await;

    let run = d.wait_finished("stubborn").await;
    assert_eq!(run["outcome"], "notEstablished", "{run:#}");
    assert_eq!(run["resultInfo"]["code"], 603);
    let creates = creates_for(&emu, DECLINES);
    assert_eq!(creates.len(), 3, "1 + retry.attempts creates");
    assert!(creates.iter().all(|c| c.status == Some(201)));
    // The same run (same calldRun), three calls, each marked with its
    // attempt (calldAttempt=1, 2, 3) so late notifications find their own.
    let uri = creates[0].body["callbackUri"].as_str().unwrap().to_string();
    assert!(uri.contains(run["id"].as_str().unwrap()));
    for (i, c) in creates.iter().enumerate() {
        let expected = uri.replace("calldAttempt=1", &format!("calldAttempt={}", i + 1));
        assert_eq!(c.body["callbackUri"].as_str(), Some(expected.as_str()));
    }

    let a = attempts(&run);
    assert_eq!(a.len(), 3, "{run:#}");
    let ended: Vec<&Value> = run["callStates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "terminated")
        .collect();
    assert_eq!(ended.len(), 3, "{run:#}");
    for i in 0..3 {
        assert_eq!(ended[i]["callId"], a[i]["callId"], "try {i}'s call ended");
        assert_eq!(
            Some(a[i]["callId"].as_str().unwrap()),
            creates[i].call_id.as_deref()
        );
    }
    let interval = jiff::SignedDuration::from_secs(2);
    for i in 1..3 {
        let prev_end = ts(&ended[i - 1]["at"]);
        let started = ts(&a[i]["startedAt"]);
        assert!(
            started >= prev_end + interval,
            "try {} started {started}, previous ended {prev_end}",
            i + 1
        );
        let received: jiff::Timestamp = creates[i].time.parse().unwrap();
        assert!(received >= prev_end + interval);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_up_after_and_keep_alive_are_sent_on_schedule() {
    const LONG: &str = "+14255550107";
    let emu = start_emulator("calls: { answerAfter: 200ms, length: 10m }").await;
    let mut d = Daemon::new(
        &emu,
        None,
        "daemon: { debounce: 20ms, keepAliveInterval: 1s }",
    );
    d.write_spec("long", &spec(LONG, "hangupAfter: 5s"));
    d.start().await;

    let run = d.wait_finished("long").await;
    assert_eq!(run["outcome"], "completed", "{run:#}");
    assert_eq!(
        run["resultInfo"]["subcode"], 7000,
        "ended by the bot: {run:#}"
    );
    let established = ts(&run["establishedAt"]);
    let call_id = run["callId"].as_str().unwrap();

    let deletes = requests_for(&emu, "delete", call_id);
    assert!(!deletes.is_empty(), "no DELETE for {call_id}");
    let deleted: jiff::Timestamp = deletes[0].time.parse().unwrap();
    assert!(
        deleted >= established + jiff::SignedDuration::from_secs(5),
        "DELETE at {deleted}, established at {established}"
    );
    assert_eq!(deletes[0].status, Some(204));

    // keepAlive every second while established: the k-th no sooner than
    // k seconds after `established`.
    let keep_alives = requests_for(&emu, "keepAlive", call_id);
    assert!(
        keep_alives.len() >= 2,
        "keepAlives: {keep_alives:?}\n{}",
        d.log_tail()
    );
    for (k, r) in keep_alives.iter().enumerate() {
        let at: jiff::Timestamp = r.time.parse().unwrap();
        let due = established + jiff::SignedDuration::from_secs(k as i64 + 1);
        assert!(at >= due, "keepAlive {} at {at}, due {due}", k + 1);
        if at < deleted {
            assert_eq!(r.status, Some(200), "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_duplicated_and_late_notifications_give_the_same_final_record() {
    const MESSY: &str = "+14255550105";
    const TIDY: &str = "+14255550106";
    // No notifications from the emulator: the test sends them.
    let emu = start_emulator("notifications: false").await;
    let mut d = Daemon::new(&emu, None, "");
    d.write_spec("messy", &spec(MESSY, ""));
    d.write_spec("tidy", &spec(TIDY, ""));
    d.start().await;
    for name in ["messy", "tidy"] {
        d.wait_run(name, "placed", |r| r["state"] == "placed").await;
    }
    let target = |phone: &str| {
        let c = creates_for(&emu, phone).remove(0);
        (
            c.body["callbackUri"].as_str().unwrap().to_string(),
            c.call_id.unwrap(),
        )
    };
    let (messy_url, messy_call) = target(MESSY);
    let (tidy_url, tidy_call) = target(TIDY);
    assert!(messy_url.contains("calldRun="), "{messy_url}");
    let end = Some((200, 5001, "The conversation has ended."));
    let http = http();

    // In order.
    for (state, result) in [
        ("establishing", None),
        ("established", None),
        ("terminating", None),
        ("terminated", end),
    ] {
        let body = notification(&tidy_call, state, result);
        assert_eq!(notify(&http, &tidy_url, &body).await, 202);
    }
    // Out of order and duplicated.
    let messy_seq = [
        ("established", None),
        ("establishing", None),
        ("established", None),
        ("establishing", None),
        ("terminating", None),
        ("terminated", end),
    ];
    for (state, result) in messy_seq {
        let body = notification(&messy_call, state, result);
        assert_eq!(notify(&http, &messy_url, &body).await, 202);
    }
    let tidy = d.wait_finished("tidy").await;
    let messy = d.wait_finished("messy").await;
    assert_eq!(tidy["outcome"], "completed", "{tidy:#}");
    assert_eq!(final_record(&messy), final_record(&tidy));
    let finished_at = messy["updatedAt"].clone();

    // Late: after the outcome, again and again, matched by the call id
    // alone (no calldRun) for half of them.
    let late = [
        ("established", None),
        ("terminated", end),
        ("establishing", None),
        ("terminated", Some((408, 10057, "late and wrong"))),
    ];
    for (i, (state, result)) in late.iter().enumerate() {
        let url = if i % 2 == 0 {
            &messy_url
        } else {
            &d.callback_url()
        };
        let body = notification(&messy_call, state, *result);
        assert_eq!(notify(&http, url, &body).await, 202);
    }
    // Duplicates are idempotent: an exact re-delivery (same call, state and
    // resultInfo) adds no row. Distinct: established, establishing,
    // terminating, terminated 200/5001, terminated 408/10057.
    let total = 5;
    let messy = d
        .wait_run("messy", "every late notification recorded", |r| {
            r["callStates"].as_array().unwrap().len() == total
        })
        .await;
    assert_eq!(final_record(&messy), final_record(&tidy), "{messy:#}");
    assert_eq!(
        messy["updatedAt"], finished_at,
        "late news left the run alone"
    );
    let expected = [
        "established",
        "establishing",
        "terminating",
        "terminated",
        "terminated",
    ];
    assert_eq!(
        states(&messy),
        expected,
        "every distinct notification is history"
    );
    assert_eq!(
        messy["resultInfo"],
        json!({"code": 200, "subcode": 5001, "message": "The conversation has ended."})
    );
}
