//! The callback port end to end: forged, malformed, oversized and random
//! requests sent to the real daemon are refused or ignored, none of them
//! changes the ledger, and the daemon stays up (a later call completes).

mod lifecycle_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lifecycle_support::*;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const VICTIM: &str = "+14255550130";
const LATER: &str = "+14255550131";

/// POSTs and returns the status, or the transport error (a server may reset
/// a connection whose body it refuses to read).
async fn try_post(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<u16, String> {
    let mut req = client.post(url).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

fn with(claims: Value, key: &str, value: Value) -> Value {
    let mut c = claims;
    c[key] = value;
    c
}

/// A random JSON value (keys from a-z, so never a notification's `value`
/// in practice).
fn random_json(rng: &mut impl Rng, depth: u32) -> Value {
    let pick = if depth >= 4 {
        rng.random_range(0..4)
    } else {
        rng.random_range(0..6)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => {
            let n = rng.random_range(0..20);
            json!((0..n).map(|_| rng.random::<char>()).collect::<String>())
        }
        4 => Value::Array(
            (0..rng.random_range(0..6))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.random_range(0..6) {
                let k: String = (0..rng.random_range(1..8))
                    .map(|_| rng.random_range(b'a'..=b'z') as char)
                    .collect();
                m.insert(k, random_json(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_oversized_and_random_requests_change_nothing() {
    let emu = start_emulator(&format!(
        r#"
calls: {{ answerAfter: 100ms, length: 300ms }}
targets: {{ "{VICTIM}": {{ outcome: answer, after: 1h }} }}
"#
    ))
    .await;
    let mut d = Daemon::new(&emu, None, "");
    d.write_spec("victim", &spec(VICTIM, ""));
    d.start().await;
    // The victim's call rings (for an hour): one notification recorded.
    d.wait_run("victim", "establishing", |r| r["state"] == "establishing")
        .await;
    let before = d.history("victim");
    let create = creates_for(&emu, VICTIM).remove(0);
    let url = create.body["callbackUri"].as_str().unwrap().to_string();
    let call_id = create.call_id.unwrap();
    // What a forger wants recorded: the call ended, unanswered.
    let forged = serde_json::to_vec(&notification(
        &call_id,
        "terminated",
        Some((480, 10037, "forged")),
    ))
    .unwrap();
    let http = http();
    let key = emulator_key();
    let good = good_claims();

    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good.to_string())
    );
    let now = unix_now();
    let expired = json!({
        "iss": ISSUER, "aud": CLIENT_ID, "tid": TENANT,
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
    });
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        ("not a JWT", Some("not-a-jwt".into()), 401),
        ("expired", Some(mint_with(key, &key.kid, &expired)), 401),
        (
            "another key, the emulator's kid",
            Some(mint_with(stranger_key(), &key.kid, &good)),
            401,
        ),
        (
            "another key, its own kid",
            Some(mint_with(stranger_key(), &stranger_key().kid, &good)),
            401,
        ),
        (
            "wrong audience",
            Some(mint_with(
                key,
                &key.kid,
                &with(good.clone(), "aud", json!("someone-else")),
            )),
            401,
        ),
        (
            "wrong issuer",
            Some(mint_with(
                key,
                &key.kid,
                &with(good.clone(), "iss", json!("https://evil.example")),
            )),
            401,
        ),
        ("alg none", Some(alg_none), 401),
    ];
    for (what, token, want) in &cases {
        let got = try_post(
            &http,
            &url,
            token.as_deref(),
            Some("application/json"),
            forged.clone(),
        )
        .await;
        assert_eq!(got, Ok(*want), "{what}");
    }

    // 2 MiB: a forged notification padded with a long field, validly signed.
    let mut big = notification(&call_id, "terminated", Some((480, 10037, "big")));
    big["pad"] = json!("x".repeat(2 * 1024 * 1024));
    let got = try_post(
        &http,
        &url,
        Some(&good_token()),
        Some("application/json"),
        serde_json::to_vec(&big).unwrap(),
    )
    .await;
    assert!(
        matches!(got, Ok(413) | Err(_)),
        "2 MiB body answered {got:?}"
    );
    // Malformed JSON, validly signed.
    let got = try_post(
        &http,
        &url,
        Some(&good_token()),
        Some("application/json"),
        forged[..forged.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(got, Ok(400), "malformed JSON");

    // 10,000 random bodies: random bytes, random JSON, cut-off
    // notifications; no token, a garbage token or a valid one.
    let statuses: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let token = good_token();
    let mut tasks = tokio::task::JoinSet::new();
    const TOTAL: u64 = 10_000;
    const WORKERS: u64 = 16;
    for w in 0..WORKERS {
        let (http, url, token, forged, statuses) = (
            http.clone(),
            url.clone(),
            token.clone(),
            forged.clone(),
            statuses.clone(),
        );
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + w);
            for _ in 0..TOTAL / WORKERS {
                let body: Vec<u8> = match rng.random_range(0..3) {
                    0 => (0..rng.random_range(0..2048))
                        .map(|_| rng.random::<u8>())
                        .collect(),
                    1 => serde_json::to_vec(&random_json(&mut rng, 0)).unwrap(),
                    _ => forged[..rng.random_range(0..forged.len())].to_vec(),
                };
                let tok = match rng.random_range(0..3) {
                    0 => None,
                    1 => Some("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_string()),
                    _ => Some(token.clone()),
                };
                let ct = match rng.random_range(0..3) {
                    0 => None,
                    1 => Some("text/plain"),
                    _ => Some("application/json"),
                };
                let got = try_post(&http, &url, tok.as_deref(), ct, body).await;
                let key = match got {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("error: {e}"),
                };
                *statuses.lock().unwrap().entry(key).or_default() += 1;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    eprintln!("random bodies, answers: {statuses:?}");
    assert_eq!(statuses.values().sum::<usize>(), TOTAL as usize);
    for (status, n) in &statuses {
        assert!(
            ["400", "401", "413", "415"].contains(&status.as_str()),
            "{n} random bodies answered {status}"
        );
    }

    // Nothing changed, and the daemon is up.
    assert!(d.alive(), "the daemon died:\n{}", d.log_tail());
    assert_eq!(d.history("victim"), before, "the ledger changed");
    // A later real call still completes.
    d.write_spec("later", &spec(LATER, ""));
    let later = d.wait_finished("later").await;
    assert_eq!(later["outcome"], "completed", "{later:#}");
    assert_eq!(d.history("victim"), before, "the ledger changed");
    // And a genuine notification for the victim is still taken: the
    // forgeries were refused for what they were, not for where they went.
    let genuine = notification(&call_id, "established", None);
    assert_eq!(notify(&http, &url, &genuine).await, 202);
    d.wait_run("victim", "established", |r| r["state"] == "established")
        .await;
}
