//! Bearer token validation for Graph notifications (pure: token, keys, rules
//! and the current time in; a verdict out).
//!
//! Rules (GRAPH.md "Notifications", SPEC 6): RS256/RS384/RS512 only (never
//! `none`, never an HMAC algorithm, whatever the key set holds), a signature
//! from an RSA key of the OpenID configuration's JWKS, `iss` in the
//! configured issuers, `aud` = the app's client id, a `tid` claim, `exp`
//! required and `nbf` honoured, both with a leeway for clock skew.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Algorithms a notification token may use. Everything else is refused
/// before any key is looked at.
pub const ALLOWED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512];

/// Longest bearer token looked at; Microsoft's are around 1.5 KiB.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct TokenRules {
    /// The app's client id: the only accepted `aud`.
    pub audience: String,
    /// Accepted `iss` values (exact match).
    pub issuers: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: i64,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `tid` claim.
    pub tenant_id: String,
    pub issuer: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
}

/// Why a token was refused. `reason()` is the short text sent back in a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm not allowed")]
    Algorithm,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token has no expiry")]
    NoExpiry,
    #[error("token audience is not this app")]
    Audience,
    #[error("token issuer is not accepted")]
    Issuer,
    #[error("token has no tenant (tid)")]
    MissingTenant,
}

impl TokenError {
    /// A stable label, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::Malformed => "malformed",
            TokenError::Algorithm => "algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::Signature => "signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::NoExpiry => "no_expiry",
            TokenError::Audience => "audience",
            TokenError::Issuer => "issuer",
            TokenError::MissingTenant => "missing_tenant",
        }
    }
}

/// One verification key from a JWKS.
#[derive(Clone)]
struct PublicKey {
    key: DecodingKey,
    /// The key's `alg`, when the JWKS states one: a token must then use it.
    alg: Option<Algorithm>,
}

/// The RSA signing keys of a JWKS, by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, PublicKey>,
    /// Keys without a `kid`; tried for tokens that name none.
    anonymous: Vec<PublicKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.by_kid.keys().collect();
        kids.sort();
        f.debug_struct("KeySet")
            .field("kids", &kids)
            .field("anonymous", &self.anonymous.len())
            .finish()
    }
}

impl KeySet {
    /// Parse a JWKS document (`{"keys": [...]}`). Keys that are not RSA
    /// signing keys, or cannot be read, are skipped: one odd key must not
    /// make calld refuse every notification.
    pub fn from_jwks(body: &[u8]) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut set = KeySet::default();
        for k in keys {
            let s = |name: &str| k.get(name).and_then(Value::as_str);
            if s("kty") != Some("RSA") || s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let (Some(n), Some(e)) = (s("n"), s("e")) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_rsa_components(n, e) else {
                continue;
            };
            let alg = match s("alg") {
                None => None,
                Some(a) => match a.parse::<Algorithm>() {
                    Ok(a) if ALLOWED_ALGORITHMS.contains(&a) => Some(a),
                    _ => continue, // an RSA key declared for something else
                },
            };
            let pk = PublicKey { key, alg };
            match s("kid") {
                Some(kid) => {
                    set.by_kid.insert(kid.to_string(), pk);
                }
                None => set.anonymous.push(pk),
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// The header facts needed before verification: the algorithm (already
/// checked against [`ALLOWED_ALGORITHMS`]) and the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Read and check a token's header without verifying anything else.
pub fn peek_header(token: &str) -> Result<TokenHeader, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
        return Err(TokenError::Malformed);
    }
    // `alg: none` and unknown algorithms fail here: jsonwebtoken's
    // `Algorithm` has no such variant.
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::Json(_) if header_names_other_alg(token) => {
            TokenError::Algorithm
        }
        _ => TokenError::Malformed,
    })?;
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(TokenError::Algorithm);
    }
    Ok(TokenHeader {
        alg: header.alg,
        kid: header.kid,
    })
}

/// Whether a header that jsonwebtoken cannot read still is a JSON object
/// with an `alg` (so the refusal can say "algorithm", e.g. for `none`).
fn header_names_other_alg(token: &str) -> bool {
    use base64::Engine;
    let Some(h) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("alg").is_some())
}

/// Verify a token completely: header, signature against `keys`, claims
/// against `rules` at time `now` (seconds since the epoch).
pub fn verify(
    token: &str,
    keys: &KeySet,
    rules: &TokenRules,
    now: i64,
) -> Result<Verified, TokenError> {
    let claims = verify_signature(token, keys)?;
    check_claims(&claims, rules, now)
}

/// Check the header and the signature against `keys`; return the claims,
/// not yet checked (see [`check_claims`]).
pub fn verify_signature(token: &str, keys: &KeySet) -> Result<Value, TokenError> {
    let header = peek_header(token)?;
    match &header.kid {
        Some(kid) => {
            let pk = keys.by_kid.get(kid).ok_or(TokenError::UnknownKey)?;
            verify_with(token, header.alg, pk)
        }
        None => {
            if keys.anonymous.is_empty() && keys.by_kid.is_empty() {
                return Err(TokenError::UnknownKey);
            }
            keys.anonymous
                .iter()
                .chain(keys.by_kid.values())
                .find_map(|pk| verify_with(token, header.alg, pk).ok())
                .ok_or(TokenError::Signature)
        }
    }
}

fn verify_with(token: &str, alg: Algorithm, pk: &PublicKey) -> Result<Value, TokenError> {
    if pk.alg.is_some_and(|a| a != alg) {
        return Err(TokenError::Signature);
    }
    // Signature only: the claims are checked by `check_claims`, with the
    // time passed in.
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    match jsonwebtoken::decode::<Value>(token, &pk.key, &v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm
            | jsonwebtoken::errors::ErrorKind::InvalidKeyFormat
            | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => TokenError::Signature,
            _ => TokenError::Malformed,
        }),
    }
}

/// Check the claims of a token whose signature is valid.
pub fn check_claims(claims: &Value, rules: &TokenRules, now: i64) -> Result<Verified, TokenError> {
    let obj = claims.as_object().ok_or(TokenError::Malformed)?;
    let issuer = obj
        .get("iss")
        .and_then(Value::as_str)
        .filter(|iss| rules.issuers.iter().any(|i| i == iss))
        .ok_or(TokenError::Issuer)?;
    let aud_ok = match obj.get("aud") {
        Some(Value::String(a)) => *a == rules.audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&rules.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    let exp = obj
        .get("exp")
        .and_then(seconds)
        .ok_or(TokenError::NoExpiry)?;
    if now > exp.saturating_add(rules.leeway_secs) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = obj.get("nbf") {
        let nbf = seconds(nbf).ok_or(TokenError::Malformed)?;
        if nbf > now.saturating_add(rules.leeway_secs) {
            return Err(TokenError::NotYetValid);
        }
    }
    let tid = obj
        .get("tid")
        .and_then(Value::as_str)
        .filter(|t| !t.trim().is_empty())
        .ok_or(TokenError::MissingTenant)?;
    Ok(Verified {
        tenant_id: tid.to_string(),
        issuer: issuer.to_string(),
        expires_at: exp,
    })
}

/// A NumericDate: integer or fractional seconds.
fn seconds(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> TokenRules {
        TokenRules {
            audience: "client-1".into(),
            issuers: vec!["https://api.botframework.com".into()],
            leeway_secs: 60,
        }
    }

    fn claims() -> Value {
        json!({"iss": "https://api.botframework.com", "aud": "client-1", "exp": 1000, "nbf": 500, "tid": "t1"})
    }

    fn with(key: &str, v: Value) -> Value {
        let mut c = claims();
        c[key] = v;
        c
    }

    fn without(key: &str) -> Value {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(key);
        c
    }

    #[test]
    fn valid_claims() {
        let v = check_claims(&claims(), &rules(), 900).unwrap();
        assert_eq!(v.tenant_id, "t1");
        assert_eq!(v.expires_at, 1000);
    }

    #[test]
    fn expiry_with_leeway() {
        assert!(check_claims(&claims(), &rules(), 1060).is_ok());
        assert_eq!(
            check_claims(&claims(), &rules(), 1061),
            Err(TokenError::Expired)
        );
        assert_eq!(
            check_claims(&without("exp"), &rules(), 0),
            Err(TokenError::NoExpiry)
        );
        assert_eq!(
            check_claims(&with("exp", json!("1000")), &rules(), 0),
            Err(TokenError::NoExpiry)
        );
        assert!(check_claims(&with("exp", json!(1000.5)), &rules(), 1000).is_ok());
    }

    #[test]
    fn not_before_with_leeway() {
        assert!(check_claims(&claims(), &rules(), 440).is_ok());
        assert_eq!(
            check_claims(&claims(), &rules(), 439),
            Err(TokenError::NotYetValid)
        );
        assert!(check_claims(&without("nbf"), &rules(), 0).is_ok());
        assert_eq!(
            check_claims(&with("nbf", json!("x")), &rules(), 900),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn audience() {
        assert_eq!(
            check_claims(&with("aud", json!("other")), &rules(), 900),
            Err(TokenError::Audience)
        );
        assert_eq!(
            check_claims(&without("aud"), &rules(), 900),
            Err(TokenError::Audience)
        );
        assert!(check_claims(&with("aud", json!(["x", "client-1"])), &rules(), 900).is_ok());
        assert_eq!(
            check_claims(&with("aud", json!(["x"])), &rules(), 900),
            Err(TokenError::Audience)
        );
    }

    #[test]
    fn issuer() {
        assert_eq!(
            check_claims(&with("iss", json!("https://evil.example")), &rules(), 900),
            Err(TokenError::Issuer)
        );
        assert_eq!(
            check_claims(&without("iss"), &rules(), 900),
            Err(TokenError::Issuer)
        );
        // exact match only: no prefix, no trailing slash games
        assert_eq!(
            check_claims(
                &with("iss", json!("https://api.botframework.com/")),
                &rules(),
                900
            ),
            Err(TokenError::Issuer)
        );
    }

    #[test]
    fn tenant() {
        assert_eq!(
            check_claims(&without("tid"), &rules(), 900),
            Err(TokenError::MissingTenant)
        );
        assert_eq!(
            check_claims(&with("tid", json!("  ")), &rules(), 900),
            Err(TokenError::MissingTenant)
        );
        assert_eq!(
            check_claims(&with("tid", json!(5)), &rules(), 900),
            Err(TokenError::MissingTenant)
        );
    }

    #[test]
    fn claims_not_an_object() {
        assert_eq!(
            check_claims(&json!([1]), &rules(), 0),
            Err(TokenError::Malformed)
        );
    }

    fn b64(v: &Value) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn headers() {
        let tok = |h: Value| format!("{}.{}.sig", b64(&h), b64(&claims()));
        assert_eq!(peek_header(""), Err(TokenError::Missing));
        assert_eq!(peek_header("abc"), Err(TokenError::Malformed));
        assert_eq!(peek_header("a.b.c.d"), Err(TokenError::Malformed));
        assert_eq!(peek_header("!!.b.c"), Err(TokenError::Malformed));
        assert_eq!(
            peek_header(&tok(json!({"alg": "none", "typ": "JWT"}))),
            Err(TokenError::Algorithm)
        );
        assert_eq!(
            peek_header(&tok(json!({"alg": "HS256"}))),
            Err(TokenError::Algorithm)
        );
        assert_eq!(
            peek_header(&tok(json!({"alg": "ES256"}))),
            Err(TokenError::Algorithm)
        );
        assert_eq!(
            peek_header(&tok(json!({"alg": "PS256"}))),
            Err(TokenError::Algorithm)
        );
        assert_eq!(
            peek_header(&tok(json!({"typ": "JWT"}))),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            peek_header(&tok(json!({"alg": "RS256", "kid": "k1"}))),
            Ok(TokenHeader {
                alg: Algorithm::RS256,
                kid: Some("k1".into())
            })
        );
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(peek_header(&huge), Err(TokenError::Malformed));
    }

    #[test]
    fn jwks_parsing_skips_what_it_cannot_use() {
        // Only the shapes matter here (n/e are decoded, not used); signature
        // verification is covered by the HTTP tests.
        let jwks = json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "ms1", "x5t": "ms1", "n": "sXchDaQebHnP", "e": "AQAB",
             "x5c": ["MIIB"], "endorsements": ["msteams"]},
            {"kty": "RSA", "kid": "noe", "n": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "a", "y": "b"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "HS256", "kid": "confused", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "alg": "RS512", "kid": "rs512", "n": "AQAB", "e": "AQAB"},
            "not an object",
        ]});
        let set = KeySet::from_jwks(jwks.to_string().as_bytes()).unwrap();
        assert!(set.contains_kid("ms1"));
        assert!(set.contains_kid("rs512"));
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(KeySet::from_jwks(b"{}").is_err());
        assert!(KeySet::from_jwks(b"nope").is_err());
        assert!(KeySet::from_jwks(br#"{"keys":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn unknown_kid_and_empty_set() {
        let tok = format!(
            "{}.{}.c2ln",
            b64(&json!({"alg": "RS256", "kid": "nope"})),
            b64(&claims())
        );
        assert_eq!(
            verify(&tok, &KeySet::default(), &rules(), 900),
            Err(TokenError::UnknownKey)
        );
        let tok = format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&claims()));
        assert_eq!(
            verify(&tok, &KeySet::default(), &rules(), 900),
            Err(TokenError::UnknownKey)
        );
    }
}
