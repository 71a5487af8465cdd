//! Shared by the callback tests and the callback benchmark: RSA test keys, a
//! token minter, a test OpenID/JWKS server on loopback, and a listener
//! harness. Nothing here talks to any host but 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use calld::callback::{CallbackOptions, CallbackState, CallbackStats, Inbound, KeyCache, serve};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub const CLIENT_ID: &str = "9ecd52e5-6592-42b7-b562-093f37f13bde";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const ISSUER: &str = "https://api.botframework.com";

/// An RSA key pair with a key id.
pub struct TestKey {
    pub kid: String,
    pub private: RsaPrivateKey,
    pub encoding: EncodingKey,
}

impl TestKey {
    pub fn generate(kid: &str) -> TestKey {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
        let der = private.to_pkcs1_der().expect("pkcs1 der");
        TestKey {
            kid: kid.to_string(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            private,
        }
    }

    /// This key as a JWKS entry, shaped like Microsoft's.
    pub fn jwk(&self) -> Value {
        let public = self.private.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            "endorsements": ["msteams"],
        })
    }

    /// The public key in PEM (PKCS#1), for the HS256 key-confusion attack.
    pub fn public_pem(&self) -> String {
        self.private
            .to_public_key()
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .expect("pem")
    }
}

/// Keys are slow to make in a debug build: make each once per process.
pub fn key(name: &str) -> &'static TestKey {
    static KEYS: OnceLock<Mutex<std::collections::HashMap<String, &'static TestKey>>> =
        OnceLock::new();
    let map = KEYS.get_or_init(Default::default);
    let mut m = map.lock().unwrap();
    m.entry(name.to_string())
        .or_insert_with(|| Box::leak(Box::new(TestKey::generate(name))))
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Claims Graph's notification tokens carry, valid for an hour.
pub fn good_claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "tid": TENANT,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "serviceurl": "https://pma-prod.example/",
    })
}

/// Sign `claims` with `key` (RS256, the key's kid).
pub fn mint(key: &TestKey, claims: &Value) -> String {
    mint_with(key, Some(&key.kid), Algorithm::RS256, claims)
}

pub fn mint_with(key: &TestKey, kid: Option<&str>, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

/// A valid token signed by key "a".
pub fn good_token() -> String {
    mint(key("a"), &good_claims())
}

/// The test OpenID configuration + JWKS server.
#[derive(Clone)]
pub struct JwksServer {
    pub addr: SocketAddr,
    inner: Arc<JwksInner>,
}

struct JwksInner {
    keys: Mutex<Vec<Value>>,
    /// When set, the JWKS answers 500.
    fail: Mutex<bool>,
    /// When set, the JWKS answers this document instead.
    replace: Mutex<Option<Value>>,
    jwks_hits: AtomicUsize,
}

impl JwksServer {
    pub async fn start(keys: &[&TestKey]) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(JwksInner {
            keys: Mutex::new(keys.iter().map(|k| k.jwk()).collect()),
            fail: Mutex::new(false),
            replace: Mutex::new(None),
            jwks_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(
                "/v1/.well-known/OpenIdConfiguration",
                get(move || async move {
                    Json(json!({
                        "issuer": ISSUER,
                        "jwks_uri": format!("http://{addr}/v1/keys"),
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }))
                }),
            )
            .route("/v1/keys", get(jwks))
            .with_state(inner.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        JwksServer { addr, inner }
    }

    pub fn open_id_config_url(&self) -> String {
        format!("http://{}/v1/.well-known/OpenIdConfiguration", self.addr)
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        *self.inner.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    pub fn set_failing(&self, fail: bool) {
        *self.inner.fail.lock().unwrap() = fail;
    }

    pub fn set_document(&self, doc: Option<Value>) {
        *self.inner.replace.lock().unwrap() = doc;
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.inner.jwks_hits.load(Ordering::SeqCst)
    }
}

async fn jwks(State(inner): State<Arc<JwksInner>>) -> Response {
    inner.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if *inner.fail.lock().unwrap() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    if let Some(doc) = inner.replace.lock().unwrap().clone() {
        return Json(doc).into_response();
    }
    let keys = inner.keys.lock().unwrap().clone();
    Json(json!({ "keys": keys })).into_response()
}

/// A running listener with everything a test looks at.
pub struct Harness {
    pub addr: SocketAddr,
    pub jwks: JwksServer,
    pub rx: mpsc::Receiver<Inbound>,
    pub stats: Arc<CallbackStats>,
    pub keys: Option<Arc<KeyCache>>,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Harness {
    /// Listener trusting a JWKS with key "a", path `/api/calls`.
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}, 1024).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut CallbackOptions), capacity: usize) -> Harness {
        let jwks = JwksServer::start(&[key("a")]).await;
        Harness::start_on(jwks, tweak, capacity, None).await
    }

    pub async fn start_on(
        jwks: JwksServer,
        tweak: impl FnOnce(&mut CallbackOptions),
        capacity: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Harness {
        let mut opts = CallbackOptions::new(CLIENT_ID);
        opts.issuers = vec![ISSUER.into(), "https://graph.microsoft.com".into()];
        opts.open_id_config_url = jwks.open_id_config_url();
        opts.path = Some("/api/calls".into());
        tweak(&mut opts);
        let (tx, rx) = mpsc::channel(capacity);
        let state = CallbackState::new(opts, tx).unwrap();
        let stats = state.stats();
        let keys = state.keys();
        if let Some(k) = &keys {
            // load the keys before the first request, as the daemon does
            let _ = k.refresh().await;
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, state, async move {
            let _ = stopped.await;
        }));
        Harness {
            addr,
            jwks,
            rx,
            stats,
            keys,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    /// Stop the listener and wait for it.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task).await.unwrap()
    }
}

/// A notification body like Graph's, for call `call_id` in `state`.
pub fn notification(call_id: &str, state: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.commsNotifications",
        "value": [{
            "@odata.type": "#microsoft.graph.commsNotification",
            "changeType": "updated",
            "resourceUrl": format!("/communications/calls/{call_id}"),
            "resourceData": {
                "@odata.type": "#microsoft.graph.call",
                "@odata.id": format!("/communications/calls/{call_id}"),
                "state": state,
            }
        }]
    })
}
