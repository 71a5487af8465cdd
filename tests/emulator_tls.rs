//! `calld emulator` for Microsoft's own clients (issue 11, item 5), with
//! the real binary on loopback: HTTPS from `--tls-cert/--tls-key` (and from
//! `tls:` in its configuration), Azure AD's tenant discovery document, the
//! token endpoint with Graph's own scope and the extra fields MSAL sends,
//! and create/get/delete with a body as the Graph SDKs serialise it. (The
//! Python interop test, `tests/interop/test_sdk.py`, runs the SDKs
//! themselves; `.ci/run` runs it.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

struct Emulator {
    child: Child,
    port: u16,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(args: &[&str]) -> Emulator {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_calld"))
        .env_remove("CALLD_CONFIG")
        .args(["emulator", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the emulator did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Emulator { child, port }
}

fn cert(dir: &Path) -> (String, String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (
        cert.display().to_string(),
        key.display().to_string(),
        ck.cert.pem(),
    )
}

fn client(pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Discovery, a token for Graph's own scope, and a create/get/delete of an
/// SDK-shaped body, over HTTPS at `base`.
async fn round_trip(c: &reqwest::Client, base: &str) {
    let doc: Value = c
        .get(format!(
            "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], json!(format!("{base}/{TENANT}/v2.0")));
    let token_url = doc["token_endpoint"].as_str().unwrap().to_string();
    assert_eq!(token_url, format!("{base}/{TENANT}/oauth2/v2.0/token"));
    assert!(doc["jwks_uri"].as_str().unwrap().starts_with(base));
    assert!(
        doc["authorization_endpoint"]
            .as_str()
            .unwrap()
            .starts_with(base)
    );

    // as MSAL sends it: Graph's scope, client_info, claims
    let r = c
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "8a34a46b-3d17-4adc-8dce-dc4e7d572698"),
            ("client_secret", "s3cret"),
            ("scope", "https://graph.microsoft.com/.default"),
            ("client_info", "1"),
            (
                "claims",
                r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: Value = r.json().await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();

    // as the Graph SDKs serialise a create: no root @odata.type, identity
    // sets annotated, no source
    let body = json!({
        "callbackUri": "https://bot.contoso.com/callback",
        "targets": [{
            "@odata.type": "#microsoft.graph.invitationParticipantInfo",
            "identity": {
                "@odata.type": "#microsoft.graph.communicationsIdentitySet",
                "user": { "@odata.type": "#microsoft.graph.identity", "id": "112f7296-5fa4-42ca-bae8-6a692b15d4b8", "displayName": "John" }
            }
        }],
        "requestedModalities": ["audio"],
        "mediaConfig": { "@odata.type": "#microsoft.graph.serviceHostedMediaConfig" },
        "tenantId": TENANT,
    });
    let r = c
        .post(format!("{base}/v1.0/communications/calls"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let call: Value = r.json().await.unwrap();
    let id = call["id"].as_str().unwrap().to_string();
    assert_eq!(call["state"], json!("establishing"));
    let r = c
        .get(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["id"], json!(id));
    let r = c
        .delete(format!("{base}/v1.0/communications/calls/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn https_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = cert(dir.path());
    let emu = start(&["--tls-cert", &cert, "--tls-key", &key]);
    let c = client(&pem);
    round_trip(&c, &format!("https://127.0.0.1:{}", emu.port)).await;
    // plain HTTP gets no HTTP answer
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/.well-known/openid-configuration",
            emu.port
        ))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn https_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = cert(dir.path());
    let config = dir.path().join("emulator.yaml");
    std::fs::write(
        &config,
        format!("tls:\n  certFile: {cert}\n  keyFile: {key}\n"),
    )
    .unwrap();
    let emu = start(&["--config", &config.display().to_string()]);
    let c = client(&pem);
    round_trip(&c, &format!("https://localhost:{}", emu.port)).await;
}

#[test]
fn a_key_without_a_certificate_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_calld"))
        .args(["emulator", "--tls-key", "key.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
