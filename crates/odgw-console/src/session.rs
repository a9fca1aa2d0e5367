//! Sealed cookies: the reviewer's session and the short-lived state of a
//! login in progress, encrypted and authenticated with AES-256-GCM under a
//! key derived from odgw's master key.
//!
//! Nothing is kept on the server, so any replica sharing the master key
//! accepts a session another replica issued. A session ends when it
//! expires or its cookie is cleared at logout.

use aws_lc_rs::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    hkdf::{Salt, HKDF_SHA256},
    rand::{SecureRandom, SystemRandom},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use odgw_core::SecretString;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The session cookie (SameSite=Strict).
pub const SESSION_COOKIE: &str = "odgw_console";
/// The login-in-progress cookie. SameSite=Lax: it must come back with the
/// identity provider's cross-site redirect to the callback.
pub const LOGIN_COOKIE: &str = "odgw_console_login";
/// Longest sealed cookie accepted (browsers keep 4096 bytes per cookie).
const MAX_COOKIE_CHARS: usize = 4096;

/// What a cookie is for; bound into its associated data, so a login cookie
/// can never be replayed as a session.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    Session,
    Login,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Self::Session => b"odgw console session v1",
            Self::Login => b"odgw console login v1",
        }
    }
}

/// A signed-in reviewer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// The identity provider's `sub`.
    pub subject: String,
    /// The identity provider's `iss`.
    pub issuer: String,
    /// Seconds since the epoch after which the session is void.
    pub expires_at: u64,
    /// The token every state-changing form must carry (logout).
    pub csrf: String,
}

/// A login between the redirect to the identity provider and its callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LoginFlow {
    pub(crate) state: String,
    pub(crate) nonce: String,
    pub(crate) verifier: String,
    pub(crate) redirect_uri: String,
    pub(crate) expires_at: u64,
}

/// The cookie key could not be derived (the crypto library refused).
#[derive(Debug, thiserror::Error)]
#[error("the console cookie key could not be derived")]
pub struct KeyError;

/// The key that seals console cookies.
pub struct CookieKey(LessSafeKey);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey([redacted])")
    }
}

impl CookieKey {
    /// Derives the cookie key from odgw's master key (HKDF-SHA256 with its
    /// own label), so the cookie key is never the key that seals tenant keys.
    pub fn derive(master_key: &SecretString) -> Result<Self, KeyError> {
        let okm =
            Salt::new(HKDF_SHA256, b"odgw console cookies").extract(master_key.expose().as_bytes());
        let mut key = [0u8; 32];
        let derived = okm
            .expand(&[b"aes-256-gcm v1"], &AES_256_GCM)
            .and_then(|material| material.fill(&mut key))
            .and_then(|()| UnboundKey::new(&AES_256_GCM, &key));
        key.fill(0);
        derived
            .map(|k| Self(LessSafeKey::new(k)))
            .map_err(|_| KeyError)
    }

    /// `value` as cookie text: base64url(nonce ‖ ciphertext ‖ tag).
    pub(crate) fn seal<T: Serialize>(&self, purpose: Purpose, value: &T) -> Option<String> {
        let mut data = serde_json::to_vec(value).ok()?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.aad()),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(URL_SAFE_NO_PAD.encode(out))
    }

    /// The value sealed in `text`, if it was sealed by this key for `purpose`.
    pub(crate) fn open<T: DeserializeOwned>(&self, purpose: Purpose, text: &str) -> Option<T> {
        if text.len() > MAX_COOKIE_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(purpose.aad()), &mut sealed)
            .ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// `n` random bytes as base64url text (state, nonce, PKCE verifier, CSRF).
pub(crate) fn random_token(n: usize) -> Option<String> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: always HttpOnly and scoped to `/console`.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    max_age_secs: u64,
    same_site: &str,
    secure: bool,
) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{name}={value}; Path=/console; Max-Age={max_age_secs}; HttpOnly; SameSite={same_site}{secure}"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn key(text: &str) -> CookieKey {
        CookieKey::derive(&SecretString::new(text)).unwrap()
    }

    fn session() -> Session {
        Session {
            subject: "alice".into(),
            issuer: "https://idp/".into(),
            expires_at: 42,
            csrf: "c".into(),
        }
    }

    #[test]
    fn a_sealed_session_opens_with_the_same_key_and_purpose_only() {
        let k = key("master-a");
        let sealed = k.seal(Purpose::Session, &session()).unwrap();
        assert_eq!(
            k.open::<Session>(Purpose::Session, &sealed),
            Some(session())
        );
        assert_eq!(k.open::<Session>(Purpose::Login, &sealed), None);
        assert_eq!(
            key("master-b").open::<Session>(Purpose::Session, &sealed),
            None
        );
        // Any edit breaks it.
        let mut edited = sealed.clone().into_bytes();
        let last = edited.len() - 2;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap();
        assert_eq!(k.open::<Session>(Purpose::Session, &edited), None);
        assert!(!sealed.contains("alice"));
    }

    #[test]
    fn set_cookie_is_http_only_scoped_and_secure_on_request() {
        let plain = set_cookie(SESSION_COOKIE, "v", 60, "Strict", false);
        assert_eq!(
            plain,
            "odgw_console=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie(SESSION_COOKIE, "v", 60, "Strict", true).ends_with("; Secure"));
    }

    #[test]
    fn cookies_are_found_among_several_headers() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; odgw_console=xyz".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "odgw"), None);
    }
}
