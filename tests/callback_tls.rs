//! The listener with built-in TLS (rustls), certificate from rcgen.

mod callback_support;

use std::time::Duration;

use callback_support::*;
use calld::callback::{CallState, load_tls};
use calld::config::TlsConfig;

#[tokio::test]
async fn notification_over_https() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
    let tls = load_tls(&TlsConfig {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
    })
    .unwrap();

    let jwks = JwksServer::start(&[key("a")]).await;
    let mut h = Harness::start_on(jwks, |_| {}, 8, Some(tls)).await;
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/api/calls?calldRun=tls-run",
        h.addr.port()
    );
    let r = client
        .post(&url)
        .bearer_auth(good_token())
        .body(notification("tls-call", "established").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let got = h.rx.try_recv().unwrap();
    assert_eq!(got.run_id.as_deref(), Some("tls-run"));
    assert_eq!(got.events[0].call_id.as_deref(), Some("tls-call"));
    assert_eq!(got.events[0].state, Some(CallState::Established));

    // a bad token is still refused over TLS
    let r = client
        .post(&url)
        .bearer_auth("x.y.z")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);

    // plain HTTP to the TLS port gets no HTTP answer, and the port keeps serving
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/api/calls", h.addr.port()))
        .timeout(Duration::from_secs(30))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let r = client
        .get(format!("https://localhost:{}/healthz", h.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    h.shutdown().await.unwrap();
}

#[test]
fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = TlsConfig {
        cert_file: dir.path().join("nope.pem"),
        key_file: dir.path().join("nope.key"),
    };
    let err = format!("{:#}", load_tls(&missing).unwrap_err());
    assert!(err.contains("callback.tls.certFile"), "{err}");

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, ck.cert.pem()).unwrap();
    // the certificate given as the key: no key in it
    let err = format!(
        "{:#}",
        load_tls(&TlsConfig {
            cert_file: cert_file.clone(),
            key_file: cert_file.clone(),
        })
        .unwrap_err()
    );
    assert!(err.contains("callback.tls.keyFile"), "{err}");
    assert!(!err.contains("BEGIN"), "{err}");

    // a key that does not match the certificate
    let other = rcgen::KeyPair::generate().unwrap();
    let key_file = dir.path().join("other.key");
    let secret_pem = other.serialize_pem();
    std::fs::write(&key_file, &secret_pem).unwrap();
    let err = format!(
        "{:#}",
        load_tls(&TlsConfig {
            cert_file,
            key_file
        })
        .unwrap_err()
    );
    assert!(err.contains("do not form a usable pair"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");

    // an empty certificate file
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = format!(
        "{:#}",
        load_tls(&TlsConfig {
            cert_file: empty.clone(),
            key_file: empty
        })
        .unwrap_err()
    );
    assert!(err.contains("no PEM certificate"), "{err}");
}
