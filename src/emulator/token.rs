//! The token endpoint's rules (client credentials, as Azure AD applies
//! them) and the access-token claims. Pure: time is passed in.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{ALL_CALL_ROLES, ClientConfig, EmulatorConfig};
use super::errors::AadError;
use crate::config::Secret;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Clock skew tolerated on client assertions (Azure AD allows 5 minutes).
const ASSERTION_SKEW_SECS: u64 = 300;

/// The claims of the access tokens the emulator issues (a subset of Azure
/// AD's v1 app tokens).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub appid: String,
    pub appidacr: String,
    pub idtyp: String,
    pub oid: String,
    pub sub: String,
    pub tid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub ver: String,
    pub uti: String,
}

/// A configured client, with its certificate's key loaded.
pub struct KnownClient {
    pub id: String,
    pub secret: Option<Secret>,
    pub cert_key: Option<DecodingKey>,
    pub roles: Vec<String>,
}

impl KnownClient {
    pub fn load(c: &ClientConfig, base_dir: Option<&Path>) -> anyhow::Result<Self> {
        let cert_key = match &c.certificate {
            None => None,
            Some(path) => {
                let path = match base_dir {
                    Some(dir) if path.is_relative() => dir.join(path),
                    _ => path.clone(),
                };
                let pem = std::fs::read(&path).with_context(|| {
                    format!(
                        "client {}: cannot read certificate {}",
                        c.id,
                        path.display()
                    )
                })?;
                Some(DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "client {}: {} is not a PEM RSA certificate or public key: {e}",
                        c.id,
                        path.display()
                    )
                })?)
            }
        };
        Ok(KnownClient {
            id: c.id.clone(),
            secret: c.secret.clone(),
            cert_key,
            roles: c
                .roles
                .clone()
                .unwrap_or_else(|| ALL_CALL_ROLES.iter().map(|r| r.to_string()).collect()),
        })
    }
}

/// What one token request is checked against.
pub struct TokenContext<'a> {
    /// The `{tenant}` segment of the token URL.
    pub tenant_in_path: &'a str,
    /// The base URLs this request may name (`http://127.0.0.1:PORT`, and the
    /// one from its `Host` header): the scope's resource and the
    /// assertion's audience must use one of them.
    pub bases: &'a [String],
    pub config: &'a EmulatorConfig,
    pub clients: &'a [KnownClient],
    /// Unix seconds.
    pub now: u64,
    /// A fresh unique id for `oid`/`uti`.
    pub unique: String,
}

fn missing(param: &str) -> AadError {
    AadError::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// Microsoft Graph's resource URIs (global and national clouds): the scope
/// MSAL, azure-identity and the Graph SDKs ask for
/// (`https://graph.microsoft.com/.default`), accepted besides the
/// emulator's own URL.
pub const GRAPH_RESOURCES: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
];

/// Whether `resource` is one of [`GRAPH_RESOURCES`] (trailing `/` aside).
pub fn is_graph_resource(resource: &str) -> bool {
    let r = resource.trim_end_matches('/');
    GRAPH_RESOURCES.iter().any(|g| g.eq_ignore_ascii_case(r))
}

/// Checks a client-credentials request; the claims of the token to issue.
pub fn check_token_request(
    ctx: &TokenContext<'_>,
    form: &HashMap<String, String>,
) -> Result<AccessClaims, AadError> {
    let param = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());

    if let Some(t) = &ctx.config.tenant_id
        && !t.eq_ignore_ascii_case(ctx.tenant_in_path)
    {
        return Err(AadError::new(
            400,
            "invalid_request",
            90002,
            format!("Tenant '{}' not found.", ctx.tenant_in_path),
        ));
    }
    let tid = ctx
        .config
        .tenant_id
        .clone()
        .unwrap_or_else(|| ctx.tenant_in_path.to_string());

    match param("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(AadError::new(
                400,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let client_id = param("client_id").ok_or_else(|| missing("client_id"))?;
    let scope = param("scope").ok_or_else(|| missing("scope"))?;
    let Some(resource) = scope.strip_suffix("/.default") else {
        return Err(AadError::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier."
            ),
        ));
    };
    let resource = resource.trim_end_matches('/');
    if !ctx.bases.iter().any(|b| b.eq_ignore_ascii_case(resource)) && !is_graph_resource(resource) {
        return Err(AadError::new(
            400,
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named {tid}. \
                 (The emulator serves {}.)",
                ctx.bases.first().map(String::as_str).unwrap_or_default()
            ),
        ));
    }

    let known = if ctx.clients.is_empty() {
        None
    } else {
        Some(
            ctx.clients
                .iter()
                .find(|c| c.id.eq_ignore_ascii_case(client_id))
                .ok_or_else(|| {
                    AadError::new(
                        400,
                        "unauthorized_client",
                        700016,
                        format!(
                            "Application with identifier '{client_id}' was not found in the directory '{tid}'."
                        ),
                    )
                })?,
        )
    };

    let secret = param("client_secret");
    let assertion = param("client_assertion");
    match (secret, assertion) {
        (None, None) => {
            return Err(AadError::new(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(AadError::new(
                400,
                "invalid_request",
                9002313,
                "Invalid request: send either client_secret or client_assertion, not both.",
            ));
        }
        (Some(secret), None) => {
            if let Some(k) = known {
                let ok = match (&k.secret, &k.cert_key) {
                    (Some(expected), _) => expected.expose() == secret,
                    (None, Some(_)) => false,
                    (None, None) => true,
                };
                if !ok {
                    return Err(AadError::new(
                        401,
                        "invalid_client",
                        7000215,
                        format!(
                            "Invalid client secret provided. Ensure the secret being sent in the \
                             request is the client secret value, not the client secret ID, for a \
                             secret added to app '{client_id}'."
                        ),
                    ));
                }
            }
        }
        (None, Some(assertion)) => {
            match param("client_assertion_type") {
                Some(JWT_BEARER) => {}
                None => return Err(missing("client_assertion_type")),
                Some(other) => {
                    return Err(AadError::new(
                        400,
                        "invalid_request",
                        9002313,
                        format!("Invalid client_assertion_type '{other}'; expected {JWT_BEARER}."),
                    ));
                }
            }
            let cert = match known {
                Some(k) if k.cert_key.is_none() && k.secret.is_some() => {
                    return Err(AadError::new(
                        401,
                        "invalid_client",
                        700027,
                        format!(
                            "Client assertion failed signature validation: no certificate is registered for app '{client_id}'."
                        ),
                    ));
                }
                Some(k) => k.cert_key.as_ref(),
                None => None,
            };
            let token_urls: Vec<String> = ctx
                .bases
                .iter()
                .map(|b| format!("{b}/{}/oauth2/v2.0/token", ctx.tenant_in_path))
                .collect();
            check_assertion(assertion, cert, client_id, &token_urls, ctx.now)?;
        }
    }

    let lifetime = ctx.config.token_lifetime.as_secs();
    Ok(AccessClaims {
        aud: resource.to_string(),
        iss: format!("https://sts.windows.net/{tid}/"),
        iat: ctx.now,
        nbf: ctx.now,
        exp: ctx.now + lifetime,
        appid: client_id.to_string(),
        appidacr: if assertion.is_some() { "2" } else { "1" }.to_string(),
        idtyp: "app".to_string(),
        oid: ctx.unique.clone(),
        sub: ctx.unique.clone(),
        tid,
        roles: known
            .map(|k| k.roles.clone())
            .unwrap_or_else(|| ALL_CALL_ROLES.iter().map(|r| r.to_string()).collect()),
        ver: "1.0".to_string(),
        uti: ctx.unique.clone(),
    })
}

/// A client assertion: signature (when a certificate is configured), then
/// `aud` = the token URL, `iss` = `sub` = the client id, `exp`/`nbf`.
fn check_assertion(
    assertion: &str,
    cert: Option<&DecodingKey>,
    client_id: &str,
    token_urls: &[String],
    now: u64,
) -> Result<(), AadError> {
    let malformed = |e: jsonwebtoken::errors::Error| {
        AadError::new(
            401,
            "invalid_client",
            50027,
            format!("The client assertion is not a well-formed JWT: {e}."),
        )
    };
    let claims: Value = match cert {
        Some(key) => {
            let header = jsonwebtoken::decode_header(assertion).map_err(malformed)?;
            let mut v = Validation::new(header.alg);
            v.algorithms = vec![Algorithm::RS256, Algorithm::PS256];
            v.validate_exp = false;
            v.validate_nbf = false;
            v.validate_aud = false;
            v.required_spec_claims.clear();
            jsonwebtoken::decode::<Value>(assertion, key, &v)
                .map_err(|e| {
                    AadError::new(
                        401,
                        "invalid_client",
                        700027,
                        format!("Client assertion failed signature validation: {e}."),
                    )
                })?
                .claims
        }
        None => {
            jsonwebtoken::dangerous::insecure_decode::<Value>(assertion)
                .map_err(malformed)?
                .claims
        }
    };
    let s = |k: &str| claims.get(k).and_then(Value::as_str);
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => token_urls.iter().any(|u| u.eq_ignore_ascii_case(a)),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|a| token_urls.iter().any(|u| u.eq_ignore_ascii_case(a))),
        _ => false,
    };
    if !aud_ok {
        return Err(AadError::new(
            401,
            "invalid_client",
            50013,
            format!(
                "Assertion audience claim does not match the required value; expected {}.",
                token_urls.first().map(String::as_str).unwrap_or_default()
            ),
        ));
    }
    let is_client = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case(client_id));
    if !is_client(s("iss")) || !is_client(s("sub")) {
        return Err(AadError::new(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter \
             (iss and sub must both be the client id).",
        ));
    }
    let exp = claims.get("exp").and_then(Value::as_u64);
    let nbf = claims.get("nbf").and_then(Value::as_u64);
    let in_range = match exp {
        None => false,
        Some(exp) => {
            exp + ASSERTION_SKEW_SECS > now && nbf.is_none_or(|n| n <= now + ASSERTION_SKEW_SECS)
        }
    };
    if !in_range {
        return Err(AadError::new(
            401,
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range (exp, nbf).",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::keys::SigningKey;
    use serde_json::json;

    const BASE: &str = "http://127.0.0.1:1234";
    const NOW: u64 = 1_800_000_000;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secret_form(client: &str, secret: &str) -> HashMap<String, String> {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", &format!("{BASE}/.default")),
        ])
    }

    fn check(
        config: &EmulatorConfig,
        clients: &[KnownClient],
        form: &HashMap<String, String>,
    ) -> Result<AccessClaims, AadError> {
        let bases = vec![BASE.to_string()];
        let ctx = TokenContext {
            tenant_in_path: "contoso",
            bases: &bases,
            config,
            clients,
            now: NOW,
            unique: "u".into(),
        };
        check_token_request(&ctx, form)
    }

    fn client(id: &str, secret: Option<&str>, roles: Option<&[&str]>) -> KnownClient {
        KnownClient {
            id: id.into(),
            secret: secret.map(Secret::new),
            cert_key: None,
            roles: roles
                .map(|r| r.iter().map(|s| s.to_string()).collect())
                .unwrap_or_else(|| ALL_CALL_ROLES.iter().map(|r| r.to_string()).collect()),
        }
    }

    #[test]
    fn any_client_by_default() {
        let c = check(
            &EmulatorConfig::default(),
            &[],
            &secret_form("any", "thing"),
        )
        .unwrap();
        assert_eq!(c.aud, BASE);
        assert_eq!(c.tid, "contoso");
        assert_eq!(c.appid, "any");
        assert_eq!(c.exp, NOW + 3600);
        assert_eq!(c.roles.len(), ALL_CALL_ROLES.len());
    }

    #[test]
    fn configured_clients() {
        let mut cfg = EmulatorConfig {
            tenant_id: Some("CONTOSO".into()),
            ..EmulatorConfig::default()
        };
        let clients = [client("app", Some("s3cret"), Some(&["Calls.Initiate.All"]))];
        let c = check(&cfg, &clients, &secret_form("APP", "s3cret")).unwrap();
        assert_eq!(c.roles, vec!["Calls.Initiate.All"]);
        assert_eq!(c.tid, "CONTOSO");
        let e = check(&cfg, &clients, &secret_form("app", "wrong")).unwrap_err();
        assert_eq!(
            (e.status, e.error, e.aadsts),
            (401, "invalid_client", 7000215)
        );
        assert!(!e.description.contains("wrong"));
        let e = check(&cfg, &clients, &secret_form("other", "s3cret")).unwrap_err();
        assert_eq!((e.status, e.aadsts), (400, 700016));
        cfg.tenant_id = Some("fabrikam".into());
        let e = check(&cfg, &clients, &secret_form("app", "s3cret")).unwrap_err();
        assert_eq!(e.aadsts, 90002);
    }

    #[test]
    fn request_shape_errors() {
        let cfg = EmulatorConfig::default();
        let mut f = secret_form("a", "b");
        f.remove("client_id");
        assert_eq!(check(&cfg, &[], &f).unwrap_err().aadsts, 900144);
        let mut f = secret_form("a", "b");
        f.insert("grant_type".into(), "password".into());
        assert_eq!(
            check(&cfg, &[], &f).unwrap_err().error,
            "unsupported_grant_type"
        );
        let mut f = secret_form("a", "b");
        f.insert("scope".into(), format!("{BASE}/Calls.Initiate.All"));
        assert_eq!(check(&cfg, &[], &f).unwrap_err().error, "invalid_scope");
        // Graph's own scope (what MSAL and the SDKs send) is accepted, and
        // becomes the audience; another resource is not
        for graph in [
            "https://graph.microsoft.com/.default",
            "https://graph.microsoft.us/.default",
        ] {
            let mut f = secret_form("a", "b");
            f.insert("scope".into(), graph.into());
            let claims = check(&cfg, &[], &f).expect(graph);
            assert_eq!(claims.aud, graph.trim_end_matches("/.default"));
        }
        let mut f = secret_form("a", "b");
        f.insert("scope".into(), "https://example.com/.default".into());
        assert_eq!(check(&cfg, &[], &f).unwrap_err().error, "invalid_resource");
        let mut f = secret_form("a", "b");
        f.remove("client_secret");
        assert_eq!(check(&cfg, &[], &f).unwrap_err().aadsts, 7000218);
    }

    fn assertion_form(client: &str, assertion: &str) -> HashMap<String, String> {
        form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("scope", &format!("{BASE}/.default")),
        ])
    }

    #[test]
    fn assertions_are_checked() {
        // The emulator's own key stands in for a client certificate here.
        let key = SigningKey::process_default().unwrap();
        let aud = format!("{BASE}/contoso/oauth2/v2.0/token");
        let sign = |claims: Value| key.sign(&claims).unwrap();
        let good = json!({"aud": aud, "iss": "app", "sub": "app", "exp": NOW + 600, "nbf": NOW, "jti": "1"});
        let cfg = EmulatorConfig::default();
        let mut clients = [client("app", None, None)];
        clients[0].cert_key = Some(key.decoding_key().clone());

        let c = check(&cfg, &clients, &assertion_form("app", &sign(good.clone()))).unwrap();
        assert_eq!(c.appidacr, "2");

        let mut bad_aud = good.clone();
        bad_aud["aud"] = json!("https://login.microsoftonline.com/contoso/oauth2/v2.0/token");
        let mut bad_iss = good.clone();
        bad_iss["iss"] = json!("other");
        let mut expired = good.clone();
        expired["exp"] = json!(NOW - 1000);
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        for (claims, code) in [
            (bad_aud, 50013),
            (bad_iss, 700021),
            (expired, 700024),
            (no_exp, 700024),
        ] {
            let e = check(&cfg, &clients, &assertion_form("app", &sign(claims))).unwrap_err();
            assert_eq!((e.status, e.aadsts), (401, code));
        }
        // A tampered signature fails with the certificate, passes without one.
        let token = sign(good);
        let mut tampered = token[..token.len() - 4].to_string();
        tampered.push_str(if token.ends_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        });
        let e = check(&cfg, &clients, &assertion_form("app", &tampered)).unwrap_err();
        assert_eq!(e.aadsts, 700027);
        check(&cfg, &[], &assertion_form("app", &tampered)).unwrap();
        // Not a JWT at all.
        let e = check(&cfg, &[], &assertion_form("app", "not.a.jwt")).unwrap_err();
        assert_eq!(e.aadsts, 50027);
        // A client with only a secret cannot use an assertion.
        let e = check(
            &cfg,
            &[client("app", Some("s"), None)],
            &assertion_form("app", &token),
        )
        .unwrap_err();
        assert_eq!(e.aadsts, 700027);
        // Wrong assertion type.
        let mut f = assertion_form("app", &token);
        f.insert("client_assertion_type".into(), "bearer".into());
        assert_eq!(check(&cfg, &[], &f).unwrap_err().status, 400);
    }
}
