//! The emulator's RSA signing key: access tokens, notification tokens, and
//! the JWKS that lets anyone check them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One RS256 key pair with its key id.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// `kid` of every token it signs and of its JWK.
    pub kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

impl SigningKey {
    fn from_private(key: &rsa::RsaPrivateKey) -> anyhow::Result<Self> {
        let der = key
            .to_pkcs1_der()
            .context("cannot encode the signing key")?;
        let n = key.n().to_bytes_be();
        let e = key.e().to_bytes_be();
        let kid = hex::encode(&Sha256::digest(&n)[..12]);
        Ok(SigningKey {
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            decoding: DecodingKey::from_rsa_raw_components(&n, &e),
            kid,
            n: URL_SAFE_NO_PAD.encode(&n),
            e: URL_SAFE_NO_PAD.encode(&e),
        })
    }

    /// A new 2048-bit key.
    pub fn generate() -> anyhow::Result<Self> {
        let mut rng = rsa::rand_core::OsRng;
        let key = rsa::RsaPrivateKey::new(&mut rng, 2048).context("cannot generate an RSA key")?;
        Self::from_private(&key)
    }

    /// A PEM RSA private key, PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the signing key {}", path.display()))?;
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&text)
            .or_else(|_| {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                rsa::RsaPrivateKey::from_pkcs1_pem(&text)
            })
            .map_err(|_| {
                anyhow::anyhow!(
                    "{}: not a PEM RSA private key (PKCS#8 or PKCS#1)",
                    path.display()
                )
            })?;
        Self::from_private(&key)
    }

    /// The key shared by every emulator of this process that has no
    /// configured key (generating RSA keys is slow; tests start many).
    pub fn process_default() -> anyhow::Result<Arc<SigningKey>> {
        static KEY: Mutex<Option<Arc<SigningKey>>> = Mutex::new(None);
        let mut slot = KEY.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = &*slot {
            return Ok(k.clone());
        }
        let k = Arc::new(Self::generate()?);
        *slot = Some(k.clone());
        Ok(k)
    }

    /// Signs claims as an RS256 JWT with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("cannot sign a token")
    }

    /// The public key, for checking the emulator's own tokens.
    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The JWK of the public key.
    pub fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": self.n,
            "e": self.e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_verify_against_the_jwk() {
        let key = SigningKey::process_default().unwrap();
        let token = key
            .sign(&json!({"aud": "x", "exp": jsonwebtoken::get_current_timestamp() + 60}))
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk()).unwrap();
        let dk = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
        v.set_audience(&["x"]);
        let data = jsonwebtoken::decode::<Value>(&token, &dk, &v).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(key.kid.as_str()));
        // The same key object twice: generated once per process.
        assert!(Arc::ptr_eq(&key, &SigningKey::process_default().unwrap()));
        assert!(!format!("{key:?}").contains(&key.n));
    }
}
