//! The token source against a fake token endpoint on loopback.

mod graph_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use calld::config::{CertificateRef, GraphConfig, SecretRef};
use calld::graph::auth::{
    AuthError, ClientCertificate, Credential, TokenSource, TokenSourceConfig,
};
use calld::graph::{GraphClientOptions, http_client};
use graph_support::*;

fn config(fake: &Fake, secret: Option<SecretRef>, cert: Option<CertificateRef>) -> GraphConfig {
    GraphConfig {
        base_url: Some(fake.base_url()),
        authority_url: Some(fake.base_url()),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT_ID.into()),
        client_secret: secret,
        certificate: cert,
        ..GraphConfig::default()
    }
}

fn http(cfg: &GraphConfig) -> reqwest::Client {
    http_client(&GraphClientOptions::from_config(cfg)).unwrap()
}

fn source(cfg: &GraphConfig) -> TokenSource {
    TokenSource::new(
        http(cfg),
        TokenSourceConfig::from_graph_config(cfg).unwrap(),
    )
}

#[tokio::test]
async fn secret_from_env_file_and_systemd_credential() {
    let fake = Fake::start().await;
    *fake.state.expected_secret.lock().unwrap() = Some(SECRET.into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), format!("{SECRET}\n")).unwrap();
    std::fs::write(dir.path().join("graph-secret"), SECRET).unwrap();
    // SAFETY: these variables are set once, here, and read only by this test.
    unsafe {
        std::env::set_var("CALLD_GRAPH_TEST_SECRET", SECRET);
        std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
    }
    let refs = [
        SecretRef::Env("CALLD_GRAPH_TEST_SECRET".into()),
        SecretRef::File(dir.path().join("secret.txt")),
        SecretRef::Credential("graph-secret".into()),
    ];
    for (i, r) in refs.into_iter().enumerate() {
        let src = source(&config(&fake, Some(r.clone()), None));
        let t = src.token().await.unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(fake.token_count(), i + 1);
        let form = fake.state.token_forms.lock().unwrap()[i].clone();
        assert_eq!(form["grant_type"], "client_credentials");
        assert_eq!(form["client_id"], CLIENT_ID);
        assert_eq!(form["client_secret"], SECRET);
        assert_eq!(form["scope"], format!("{}/.default", fake.base_url()));
        assert!(!form.contains_key("client_assertion"));
        // Roles and tenant are readable.
        assert!(t.has_role("calls.initiate.all"));
        assert_eq!(t.tenant_id(), Some(TENANT));
        assert!(t.bearer().starts_with("ey"));
        // Debug of everything holding the secret or the token hides them.
        for d in [
            format!("{src:?}"),
            format!("{t:?}"),
            format!("{:?}", src.config()),
        ] {
            assert!(!d.contains(SECRET), "{d}");
            assert!(!d.contains(t.bearer()), "{d}");
        }
    }
}

#[tokio::test]
async fn wrong_secret_gives_the_aadsts_error_without_the_secret() {
    let fake = Fake::start().await;
    *fake.state.expected_secret.lock().unwrap() = Some("the-right-one".into());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), SECRET).unwrap();
    let cfg = config(&fake, Some(SecretRef::File(dir.path().join("s"))), None);
    let err = source(&cfg).token().await.unwrap_err();
    assert!(matches!(err, AuthError::Aad { status: 401, .. }), "{err:?}");
    assert_eq!(err.aadsts().as_deref(), Some("AADSTS7000215"));
    let text = format!("{err} {err:?}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn an_error_page_echoing_the_secret_is_scrubbed() {
    let fake = Fake::start().await;
    fake.script_token([Scripted::status(
        502,
        &format!("<html>bad gateway; request was client_secret={SECRET}</html>"),
    )]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s"), SECRET).unwrap();
    let cfg = config(&fake, Some(SecretRef::File(dir.path().join("s"))), None);
    let err = source(&cfg).token().await.unwrap_err();
    assert!(
        matches!(err, AuthError::BadResponse { status: 502, .. }),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(text.contains("bad gateway"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn unreachable_token_endpoint_is_a_clear_error() {
    let fake = Fake::start().await;
    let mut cfg = config(&fake, None, None);
    cfg.client_secret = None;
    let addr = closed_port().await;
    let tcfg = TokenSourceConfig {
        token_url: format!("http://{addr}/{TENANT}/oauth2/v2.0/token"),
        client_id: CLIENT_ID.into(),
        scope: "x/.default".into(),
        credential: Credential::Secret(calld::config::Secret::new(SECRET)),
    };
    let err = TokenSource::new(http(&cfg), tcfg)
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unreachable(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(SECRET));
}

async fn certificate_round_trip(key_file: &str) {
    let fake = Fake::start().await;
    let cert_pem = std::fs::read(fixture("cert.pem")).unwrap();
    *fake.state.expected_cert.lock().unwrap() =
        Some((cert_pem, CERT_X5T_S256.into(), CERT_X5T.into()));
    let cref = CertificateRef {
        key_file: fixture(key_file),
        cert_file: fixture("cert.pem"),
    };
    let cfg = config(&fake, None, Some(cref.clone()));
    let src = source(&cfg);
    let t = src
        .token()
        .await
        .unwrap_or_else(|e| panic!("{key_file}: {e}"));
    assert!(t.has_role("Calls.Initiate.All"));
    let form = fake.state.token_forms.lock().unwrap()[0].clone();
    assert!(!form.contains_key("client_secret"));
    let assertion = &form["client_assertion"];
    // The fake verified it; check the claims it may not look at too.
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(assertion)
        .unwrap()
        .claims;
    assert_eq!(claims["aud"], fake.token_url());
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    // Thumbprints as openssl computes them.
    let cert = ClientCertificate::load(&cref).unwrap();
    assert_eq!(cert.thumbprint_sha256(), CERT_X5T_S256);
    assert_eq!(cert.thumbprint_sha1(), CERT_X5T);
    // No key material in Debug.
    let key_text = std::fs::read_to_string(fixture(key_file)).unwrap();
    let key_line = key_text.lines().nth(1).unwrap();
    for d in [format!("{cert:?}"), format!("{src:?}")] {
        assert!(!d.contains(key_line), "{d}");
    }
    // A fresh jti each time: a second fetch sends a different assertion.
    let form_jti = claims["jti"].as_str().unwrap().to_string();
    src.invalidate(&t);
    src.token().await.unwrap();
    let second = fake.state.token_forms.lock().unwrap()[1]["client_assertion"].clone();
    let c2 = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&second)
        .unwrap()
        .claims;
    assert_ne!(c2["jti"].as_str().unwrap(), form_jti);
}

#[tokio::test]
async fn certificate_with_a_pkcs8_key() {
    certificate_round_trip("key-pkcs8.pem").await;
}

#[tokio::test]
async fn certificate_with_a_pkcs1_key() {
    certificate_round_trip("key-pkcs1.pem").await;
}

#[tokio::test]
async fn the_fake_refuses_an_assertion_signed_by_another_key() {
    // Guards the guard: the fake's verification can fail.
    let cert = std::fs::read(fixture("cert.pem")).unwrap();
    let other = ClientCertificate::from_pem(
        &std::fs::read(fixture("other-key.pem")).unwrap(),
        &std::fs::read(fixture("cert.pem")).unwrap(),
    );
    // Loading refuses the mismatch outright...
    let err = other.unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    // ...and a correct assertion for a different audience fails verification.
    let good =
        ClientCertificate::from_pem(&std::fs::read(fixture("key-pkcs8.pem")).unwrap(), &cert)
            .unwrap();
    let a = good
        .assertion(
            CLIENT_ID,
            "https://elsewhere/token",
            jiff::Timestamp::now(),
            "j",
        )
        .unwrap();
    assert!(verify_assertion(&a, &cert, CERT_X5T_S256, CERT_X5T, "https://here/token").is_err());
    assert!(
        verify_assertion(
            &a,
            &cert,
            CERT_X5T_S256,
            CERT_X5T,
            "https://elsewhere/token"
        )
        .is_ok()
    );
}

#[test]
fn certificate_errors_name_the_problem_and_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = CertificateRef {
        key_file: dir.path().join("nope.pem"),
        cert_file: fixture("cert.pem"),
    };
    let e = ClientCertificate::load(&missing).unwrap_err().to_string();
    assert!(e.contains("keyFile") && e.contains("nope.pem"), "{e}");

    let enc = dir.path().join("enc.pem");
    std::fs::write(
        &enc,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = ClientCertificate::load(&CertificateRef {
        key_file: enc,
        cert_file: fixture("cert.pem"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("encrypted"), "{e}");

    // Key and certificate swapped.
    let e = ClientCertificate::load(&CertificateRef {
        key_file: fixture("cert.pem"),
        cert_file: fixture("key-pkcs8.pem"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no PRIVATE KEY"), "{e}");
    // The error never quotes the key.
    let e = ClientCertificate::load(&CertificateRef {
        key_file: fixture("key-pkcs8.pem"),
        cert_file: fixture("key-pkcs8.pem"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("no CERTIFICATE"), "{e}");
    let key_text = std::fs::read_to_string(fixture("key-pkcs8.pem")).unwrap();
    assert!(!e.contains(key_text.lines().nth(1).unwrap()));

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "hello").unwrap();
    let e = ClientCertificate::load(&CertificateRef {
        key_file: garbage,
        cert_file: fixture("cert.pem"),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("PRIVATE KEY"), "{e}");
}

fn clocked(fake: &Fake, clock: &ManualClock) -> TokenSource {
    TokenSource::with_clock(
        http(&GraphConfig::default()),
        TokenSourceConfig {
            token_url: fake.token_url(),
            client_id: CLIENT_ID.into(),
            scope: format!("{}/.default", fake.base_url()),
            credential: Credential::Secret(calld::config::Secret::new(SECRET)),
        },
        clock.clock(),
    )
}

#[tokio::test]
async fn token_is_cached_and_refreshed_before_expiry() {
    let fake = Fake::start().await;
    let clock = ManualClock::new();
    let src = clocked(&fake, &clock);
    let t1 = src.token().await.unwrap();
    let t1b = src.token().await.unwrap();
    assert!(Arc::ptr_eq(&t1, &t1b));
    assert_eq!(fake.token_count(), 1);
    // 3600 s token: still cached at 54 min...
    clock.advance(Duration::from_secs(54 * 60));
    assert!(Arc::ptr_eq(&t1, &src.token().await.unwrap()));
    assert_eq!(fake.token_count(), 1);
    // ...refreshed 5 min before expiry.
    clock.advance(Duration::from_secs(60 + 1));
    let t2 = src.token().await.unwrap();
    assert_eq!(fake.token_count(), 2);
    assert_ne!(t1.bearer(), t2.bearer());
    assert!(t2.expires_at() > t1.expires_at());
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_at_ninety_percent() {
    let fake = Fake::start().await;
    fake.state.token_expires_in.store(100, Ordering::SeqCst);
    let clock = ManualClock::new();
    let src = clocked(&fake, &clock);
    src.token().await.unwrap();
    clock.advance(Duration::from_secs(89));
    src.token().await.unwrap();
    assert_eq!(fake.token_count(), 1);
    clock.advance(Duration::from_secs(2));
    src.token().await.unwrap();
    assert_eq!(fake.token_count(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_still_valid_token_until_it_expires() {
    let fake = Fake::start().await;
    let clock = ManualClock::new();
    let src = clocked(&fake, &clock);
    let t1 = src.token().await.unwrap();
    clock.advance(Duration::from_secs(57 * 60));
    fake.script_token([Scripted::status(503, "busy"), Scripted::status(503, "busy")]);
    let t = src.token().await.unwrap();
    assert!(Arc::ptr_eq(&t, &t1));
    assert_eq!(fake.token_count(), 2);
    clock.advance(Duration::from_secs(4 * 60));
    let err = src.token().await.unwrap_err();
    assert!(
        matches!(err, AuthError::BadResponse { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(fake.token_count(), 3);
    // The endpoint recovers: a new token.
    let t3 = src.token().await.unwrap();
    assert_ne!(t3.bearer(), t1.bearer());
}

#[tokio::test]
async fn invalidate_forces_one_refresh_and_ignores_stale_tokens() {
    let fake = Fake::start().await;
    let clock = ManualClock::new();
    let src = clocked(&fake, &clock);
    let t1 = src.token().await.unwrap();
    src.invalidate(&t1);
    let t2 = src.token().await.unwrap();
    assert_eq!(fake.token_count(), 2);
    // A second 401 for the old token (from a request that was in flight)
    // does not throw away the new one.
    src.invalidate(&t1);
    let t3 = src.token().await.unwrap();
    assert!(Arc::ptr_eq(&t2, &t3));
    assert_eq!(fake.token_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_in_flight_under_twenty_concurrent_callers() {
    let fake = Fake::start().await;
    fake.state.token_delay_ms.store(100, Ordering::SeqCst);
    let clock = ManualClock::new();
    let src = Arc::new(clocked(&fake, &clock));
    for round in 1..=2 {
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = src.clone();
                tokio::spawn(async move { s.token().await.unwrap() })
            })
            .collect();
        let mut tokens = Vec::new();
        for t in tasks {
            tokens.push(t.await.unwrap());
        }
        assert_eq!(fake.token_count(), round, "round {round}");
        assert_eq!(src.fetch_count(), round as u64);
        assert!(tokens.iter().all(|t| Arc::ptr_eq(t, &tokens[0])));
        // Expire it: the next round must refresh exactly once again.
        clock.advance(Duration::from_secs(3600));
    }
}

#[tokio::test]
async fn bad_token_responses_are_errors() {
    let fake = Fake::start().await;
    let clock = ManualClock::new();
    let src = clocked(&fake, &clock);
    fake.script_token([
        Scripted::status(200, "not json"),
        Scripted::status(200, r#"{"access_token":"","expires_in":3600}"#),
        Scripted::status(
            200,
            r#"{"access_token":"a","token_type":"mac","expires_in":3600}"#,
        ),
        Scripted::status(400, ""),
    ]);
    for _ in 0..4 {
        let e = src.token().await.unwrap_err();
        assert!(matches!(e, AuthError::BadResponse { .. }), "{e:?}");
    }
    // An opaque (non-JWT) token is fine: roles unknown.
    fake.script_token([Scripted::status(
        200,
        r#"{"access_token":"opaque","token_type":"Bearer","expires_in":"3600"}"#,
    )]);
    let t = src.token().await.unwrap();
    assert_eq!(t.roles(), None);
    assert_eq!(t.missing_roles(&["Calls.Initiate.All"]), None);
}
