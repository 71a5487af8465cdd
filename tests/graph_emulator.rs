//! The Graph client against the real built-in emulator (its own token
//! endpoint, body checks, roles and faults), on loopback.

mod graph_support;

use std::sync::Arc;
use std::time::Duration;

use calld::config::{ApiVersion, CertificateRef, GraphConfig, SecretRef};
use calld::emulator::{self, EmulatorConfig, EmulatorHandle, ScriptedFault};
use calld::graph::auth::{TokenSource, TokenSourceConfig};
use calld::graph::{
    CallOpOutcome, CreateOutcome, GraphClient, GraphClientOptions, RetryPolicy, http_client,
};
use graph_support::{CLIENT_ID, TENANT, fixture};

async fn start(yaml: &str) -> EmulatorHandle {
    let cfg = EmulatorConfig::from_yaml(yaml).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    emulator::start(cfg, l).await.unwrap()
}

fn graph_config(em: &EmulatorHandle, dir: &std::path::Path) -> GraphConfig {
    let secret = dir.join("secret");
    std::fs::write(&secret, "emulator-secret").unwrap();
    GraphConfig {
        base_url: Some(em.base_url()),
        authority_url: Some(em.base_url()),
        tenant_id: Some(TENANT.into()),
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(SecretRef::File(secret)),
        ..GraphConfig::default()
    }
}

fn client(cfg: &GraphConfig, tweak: impl FnOnce(&mut GraphClientOptions)) -> GraphClient {
    let mut opts = GraphClientOptions::from_config(cfg);
    opts.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        max_total_wait: Duration::from_secs(5),
    };
    tweak(&mut opts);
    let http = http_client(&opts).unwrap();
    let tokens = TokenSource::new(
        http.clone(),
        TokenSourceConfig::from_graph_config(cfg).unwrap(),
    );
    GraphClient::new(http, Arc::new(tokens), opts)
}

fn body() -> serde_json::Value {
    serde_json::json!({
        "@odata.type": "#microsoft.graph.call",
        "callbackUri": "https://bot.contoso.com/api/calls?calldRun=test",
        "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
        "source": {"identity": {"application": {"id": "8A34A46B-3D17-4ADC-8DCE-DC4E7D572698"}}},
        "targets": [{"identity": {"user": {"id": "550fae72-d251-43ec-868c-373732c2704f"}}}],
        "requestedModalities": ["audio"],
        "tenantId": TENANT
    })
}

#[tokio::test]
async fn create_hang_up_and_keep_alive_against_the_emulator() {
    let em = start("notifications: false").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = graph_config(&em, dir.path());
    let base = em.base_url();
    let forms = [
        (ApiVersion::V1, false, "/v1.0/communications/calls"),
        (ApiVersion::Beta, false, "/beta/communications/calls"),
        (ApiVersion::V1, true, "/beta/app/calls"),
    ];
    for (i, (version, legacy, path)) in forms.into_iter().enumerate() {
        let c = client(&cfg, |o| {
            o.api_version = version;
            o.legacy_app_endpoint = legacy;
        });
        let url = c.create_url();
        assert_eq!(url, format!("{base}{path}"));
        let r = c.create_call(&url, &body()).await;
        let CreateOutcome::Placed { call_id, state, .. } = &r.outcome else {
            panic!("{path}: {:?}", r.outcome)
        };
        assert_eq!(state.as_deref(), Some("establishing"));
        let got = em.received();
        assert_eq!(got.len(), i + 1);
        assert_eq!(got[i].path, path);
        assert_eq!(
            got[i].client_request_id.as_deref(),
            Some(r.attempts[0].client_request_id.as_str())
        );
        assert_eq!(
            r.attempts[0].request_id.as_deref(),
            Some(got[i].request_id.as_str())
        );

        // The emulator's token carries its roles.
        let t = c.tokens().token().await.unwrap();
        assert!(t.has_role("Calls.Initiate.All"), "{:?}", t.roles());
        assert_eq!(t.missing_roles(&["Calls.JoinGroupCall.All"]), Some(vec![]));

        assert_eq!(c.keep_alive(call_id).await.outcome, CallOpOutcome::Done);
        assert_eq!(c.hang_up(call_id).await.outcome, CallOpOutcome::Done);
        let after = c.keep_alive(call_id).await;
        assert!(
            matches!(after.outcome, CallOpOutcome::Gone { .. }),
            "{:?}",
            after.outcome
        );
    }
}

#[tokio::test]
async fn certificate_assertion_accepted_by_the_emulator() {
    let yaml = format!(
        "notifications: false\nclients:\n  - id: {CLIENT_ID}\n    certificate: {}\n",
        fixture("cert.pem").display()
    );
    let em = start(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = graph_config(&em, dir.path());
    cfg.client_secret = None;
    cfg.certificate = Some(CertificateRef {
        key_file: fixture("key-pkcs1.pem"),
        cert_file: fixture("cert.pem"),
    });
    let c = client(&cfg, |_| {});
    let r = c.create_call(&c.create_url(), &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Placed { .. }),
        "{:?}",
        r.outcome
    );

    // A credential the emulator refuses (wrong secret) gives an AADSTS
    // error, and the create fails without reaching Graph.
    let other_dir = tempfile::tempdir().unwrap();
    let yaml =
        format!("notifications: false\nclients:\n  - id: {CLIENT_ID}\n    secret: the-right-one\n");
    let em2 = start(&yaml).await;
    let c2 = client(&graph_config(&em2, other_dir.path()), |_| {});
    let r = c2.create_call(&c2.create_url(), &body()).await;
    let CreateOutcome::Failed { reason } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert!(reason.contains("AADSTS"), "{reason}");
    assert!(!reason.contains("emulator-secret"), "{reason}");
    assert!(em2.received().is_empty());
}

#[tokio::test]
async fn emulator_faults_follow_the_retry_rules() {
    let em = start("notifications: false\nfaults: { retryAfter: 10ms }").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = graph_config(&em, dir.path());
    let c = client(&cfg, |o| o.request_timeout = Duration::from_millis(500));
    let url = c.create_url();

    // Throttled and unavailable with Retry-After: retried, then placed.
    em.set_fault_script(vec![ScriptedFault::Throttle, ScriptedFault::Unavailable]);
    let r = c.create_call(&url, &body()).await;
    assert!(
        matches!(r.outcome, CreateOutcome::Placed { .. }),
        "{:?}",
        r.outcome
    );
    assert_eq!(em.received().len(), 3);
    assert_eq!(
        r.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(429), Some(503), Some(201)]
    );

    // Anything that may have created the call: unknown, sent exactly once.
    for fault in [
        ScriptedFault::UnavailableNoRetryAfter,
        ScriptedFault::ServerError,
        ScriptedFault::Drop,
        ScriptedFault::Hang,
    ] {
        em.reset();
        em.set_fault_script(vec![fault]);
        let r = c.create_call(&url, &body()).await;
        assert!(
            matches!(r.outcome, CreateOutcome::Unknown { .. }),
            "{fault:?}: {:?}",
            r.outcome
        );
        assert_eq!(em.received().len(), 1, "{fault:?} was re-sent");
        assert_eq!(r.attempts.len(), 1);
    }
}

#[tokio::test]
async fn emulator_refusals_are_rejected_with_graphs_error() {
    let yaml = format!(
        "notifications: false\nclients:\n  - id: {CLIENT_ID}\n    roles: [Calls.JoinGroupCall.All]\n"
    );
    let em = start(&yaml).await;
    let dir = tempfile::tempdir().unwrap();
    let c = client(&graph_config(&em, dir.path()), |_| {});
    let url = c.create_url();

    // The token shows the missing permission before anything is sent...
    let t = c.tokens().token().await.unwrap();
    assert_eq!(
        t.missing_roles(&["Calls.Initiate.All"]),
        Some(vec!["Calls.Initiate.All"])
    );
    // ...and Graph (the emulator) refuses with 403.
    let r = c.create_call(&url, &body()).await;
    let CreateOutcome::Rejected { status, error } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(*status, 403);
    assert!(error.code.is_some() && error.message.is_some(), "{error:?}");
    assert!(error.request_id.is_some());

    // A body Graph would refuse: 400 with code and message.
    let mut bad = body();
    bad.as_object_mut().unwrap().remove("mediaConfig");
    let r = c.create_call(&url, &bad).await;
    let CreateOutcome::Rejected { status, error } = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    assert_eq!(*status, 400);
    assert!(
        error
            .message
            .as_deref()
            .unwrap_or("")
            .contains("mediaConfig"),
        "{error:?}"
    );
    assert_eq!(em.received().len(), 2);
}
