//! Signed cookies: the browser session (`aetherv_session`) and the short-lived state of a login
//! in progress (`aetherv_login`).
//!
//! A cookie value is `base64url(json payload) "." base64url(HMAC-SHA256(purpose, payload))`. The
//! purpose label is part of the MAC input, so a login cookie can never pass as a session cookie.
//! Verification is constant-time; a tampered, expired or unreadable cookie is simply absent.
//! Payloads carry no secrets (they are signed, not encrypted): the session holds the subject,
//! name, role, expiry, a random session id and the id of the key that signed it; the login cookie holds the state, nonce and PKCE verifier of one
//! login attempt, which are only useful together with the browser that holds it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Principal, Role};

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "aetherv_session";

/// Name of the cookie that carries a login in progress.
pub const LOGIN_COOKIE: &str = "aetherv_login";

/// The longest a browser session lasts (`SESSION_MAX_AGE`'s default); a session never outlives
/// the ID token it was made from.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// How long a started login may take before its cookie expires.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Shortest accepted signing key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// Longest cookie value we try to verify, in bytes.
const MAX_COOKIE_BYTES: usize = 4096;

/// What a signed value is for; part of the MAC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The browser session.
    Session,
    /// A login in progress.
    Login,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"aetherv-session\0",
            Purpose::Login => b"aetherv-login\0",
        }
    }
}

/// The signing key is shorter than [`MIN_KEY_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session key must be at least {MIN_KEY_BYTES} bytes, got {0}")]
pub struct ShortKeyError(pub usize);

/// The HMAC-SHA256 key that signs cookies. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct SessionKey {
    mac: Hmac<Sha256>,
    id: String,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

impl SessionKey {
    /// A key from secret bytes; refuses keys shorter than [`MIN_KEY_BYTES`].
    pub fn new(key: &[u8]) -> Result<Self, ShortKeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(ShortKeyError(key.len()));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| ShortKeyError(key.len()))?;
        Ok(Self::from_mac(mac))
    }

    fn from_mac(mac: Hmac<Sha256>) -> Self {
        // The key id is a MAC of a fixed label: it names the key without revealing it.
        let mut id_mac = mac.clone();
        id_mac.update(b"aetherv-session-key-id\0");
        let digest = id_mac.finalize().into_bytes();
        let id = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Self { mac, id }
    }

    /// The key id written into every session this key signs (12 hex digits). Rotating
    /// `SESSION_KEY` changes it, which is how an operator ends every session at once.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A random 32-byte key: sessions then end when the process restarts.
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = [0_u8; MIN_KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let mac = Hmac::<Sha256>::new_from_slice(&bytes)
            .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
        bytes.fill(0);
        Self::from_mac(mac)
    }

    fn tag(&self, purpose: Purpose, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(purpose.label());
        mac.update(payload);
        mac
    }

    /// Signs `payload`: `base64url(payload).base64url(mac)`.
    #[must_use]
    pub fn sign(&self, purpose: Purpose, payload: &[u8]) -> String {
        let tag = self.tag(purpose, payload).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The payload of a value made by [`SessionKey::sign`] with the same key and purpose.
    #[must_use]
    pub fn verify(&self, purpose: Purpose, value: &str) -> Option<Vec<u8>> {
        if value.len() > MAX_COOKIE_BYTES {
            return None;
        }
        let (payload, tag) = value.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // `verify_slice` compares in constant time.
        self.tag(purpose, &payload).verify_slice(&tag).ok()?;
        Some(payload)
    }

    /// Signs `payload` as JSON.
    pub fn sign_json<T: Serialize>(&self, purpose: Purpose, payload: &T) -> Option<String> {
        let bytes = serde_json::to_vec(payload).ok()?;
        Some(self.sign(purpose, &bytes))
    }

    /// Verifies and parses a value made by [`SessionKey::sign_json`].
    #[must_use]
    pub fn verify_json<T: DeserializeOwned>(&self, purpose: Purpose, value: &str) -> Option<T> {
        let bytes = self.verify(purpose, value)?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The payload of the session cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The principal's subject.
    pub sub: String,
    /// The principal's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The role granted at login (`reader`, `writer` or `admin`).
    pub role: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// A random id of this session, so logout can end exactly this one.
    #[serde(default)]
    pub sid: String,
    /// The id of the key that signed it ([`SessionKey::id`]).
    #[serde(default)]
    pub kid: String,
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_role(role: &str) -> Option<Role> {
    match role {
        "reader" => Some(Role::Reader),
        "writer" => Some(Role::Writer),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

/// A session cookie value for `principal`, valid until `now + lifetime`.
#[must_use]
pub fn encode_session(
    key: &SessionKey,
    principal: &Principal,
    now: u64,
    lifetime: Duration,
) -> Option<String> {
    let mut sid = [0_u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut sid);
    let claims = SessionClaims {
        sub: principal.subject.clone(),
        name: principal.name.clone(),
        role: principal.role.as_str().to_owned(),
        exp: now.saturating_add(lifetime.as_secs()),
        sid: URL_SAFE_NO_PAD.encode(sid),
        kid: key.id().to_owned(),
    };
    key.sign_json(Purpose::Session, &claims)
}

/// The claims of a session cookie value, if it is genuine, signed by `key` (its key id
/// matches) and not expired at `now`.
#[must_use]
pub fn decode_session_claims(key: &SessionKey, value: &str, now: u64) -> Option<SessionClaims> {
    let claims: SessionClaims = key.verify_json(Purpose::Session, value)?;
    if claims.exp <= now || claims.kid != key.id() || claims.sid.is_empty() {
        return None;
    }
    Some(claims)
}

/// The principal of a session cookie value, if it is genuine and not expired at `now`.
#[must_use]
pub fn decode_session(key: &SessionKey, value: &str, now: u64) -> Option<Principal> {
    principal_of(decode_session_claims(key, value, now)?)
}

/// The principal a session's claims name (`None` for an unknown role).
#[must_use]
pub fn principal_of(claims: SessionClaims) -> Option<Principal> {
    Some(Principal {
        subject: claims.sub,
        name: claims.name,
        role: parse_role(&claims.role)?,
    })
}

/// Sessions ended by logout on this replica, remembered until they would have expired anyway,
/// so a copy of a logged-out cookie stops working at once. Bounded: when full, the entry that
/// expires first is forgotten first. Each operation costs O(log n).
#[derive(Debug, Default)]
pub struct EndedSessions {
    inner: std::sync::Mutex<Ended>,
}

#[derive(Debug, Default)]
struct Ended {
    by_sid: std::collections::HashMap<String, u64>,
    by_expiry: std::collections::BTreeSet<(u64, String)>,
}

/// How many ended sessions one replica remembers.
pub const MAX_ENDED_SESSIONS: usize = 100_000;

impl EndedSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ended> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers that session `sid`, valid until `exp`, has ended.
    pub fn end(&self, sid: &str, exp: u64, now: u64) {
        let mut ended = self.lock();
        while let Some(first) = ended.by_expiry.first().cloned() {
            if first.0 > now && ended.by_sid.len() < MAX_ENDED_SESSIONS {
                break;
            }
            ended.by_expiry.remove(&first);
            ended.by_sid.remove(&first.1);
        }
        if let Some(old) = ended.by_sid.insert(sid.to_owned(), exp) {
            ended.by_expiry.remove(&(old, sid.to_owned()));
        }
        ended.by_expiry.insert((exp, sid.to_owned()));
    }

    /// Whether session `sid` was ended by logout.
    #[must_use]
    pub fn is_ended(&self, sid: &str) -> bool {
        self.lock().by_sid.contains_key(sid)
    }

    /// How many ended sessions are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().by_sid.len()
    }

    /// Whether none is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The value of the cookie `name` in the request's `Cookie` headers.
#[must_use]
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, `Secure` when `secure`.
///
/// `value` must be cookie-safe (our signed values are base64url and `.` only).
#[must_use]
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Max-Age={}; Path=/; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Set-Cookie` value that deletes the cookie `name`.
#[must_use]
pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::new(&[byte; 32]).unwrap()
    }

    fn alice() -> Principal {
        Principal {
            subject: "u-1".into(),
            name: Some("alice".into()),
            role: Role::Writer,
        }
    }

    #[test]
    fn key_ids_name_keys_and_a_session_must_carry_its_keys_id() {
        assert_eq!(key(7).id(), key(7).id());
        assert_ne!(key(7).id(), key(8).id());
        assert_eq!(key(7).id().len(), 12);
        // Genuinely signed, but naming another key id (or none, as before key ids): refused.
        let k = key(7);
        for kid in ["", "000000000000"] {
            let claims = SessionClaims {
                sub: "u-1".into(),
                name: None,
                role: "admin".into(),
                exp: 2000,
                sid: "s".into(),
                kid: kid.into(),
            };
            let value = k.sign_json(Purpose::Session, &claims).unwrap();
            assert_eq!(decode_session(&k, &value, 1000), None, "kid {kid:?}");
        }
        // Each session gets its own id.
        let a = encode_session(&k, &alice(), 1000, SESSION_LIFETIME).unwrap();
        let b = encode_session(&k, &alice(), 1000, SESSION_LIFETIME).unwrap();
        let sid = |v: &str| decode_session_claims(&k, v, 1000).unwrap().sid;
        assert_ne!(sid(&a), sid(&b));
    }

    #[test]
    fn ended_sessions_are_remembered_until_expiry_and_bounded() {
        let ended = EndedSessions::default();
        ended.end("a", 100, 10);
        assert!(ended.is_ended("a"));
        assert!(!ended.is_ended("b"));
        // Expired entries are dropped on the next insert.
        ended.end("b", 300, 200);
        assert!(!ended.is_ended("a"));
        assert_eq!(ended.len(), 1);
        for i in 0..MAX_ENDED_SESSIONS + 5 {
            ended.end(&format!("s{i}"), 1_000 + i as u64, 200);
        }
        assert_eq!(ended.len(), MAX_ENDED_SESSIONS);
        // The newest survive; the first to expire went first.
        assert!(ended.is_ended(&format!("s{}", MAX_ENDED_SESSIONS + 4)));
        assert!(!ended.is_ended("b"));
    }

    #[test]
    fn round_trip() {
        let k = key(7);
        let value = encode_session(&k, &alice(), 1000, SESSION_LIFETIME).unwrap();
        assert_eq!(decode_session(&k, &value, 1000), Some(alice()));
        assert_eq!(
            decode_session(&k, &value, 1000 + SESSION_LIFETIME.as_secs() - 1),
            Some(alice())
        );
        // A random key round-trips too.
        let r = SessionKey::random();
        let value = encode_session(&r, &alice(), 5, SESSION_LIFETIME).unwrap();
        assert_eq!(decode_session(&r, &value, 6), Some(alice()));
    }

    #[test]
    fn tampered_values_are_refused() {
        let k = key(7);
        let value = encode_session(&k, &alice(), 1000, SESSION_LIFETIME).unwrap();
        let (payload, tag) = value.split_once('.').unwrap();
        // Raise the role in the payload, keep the tag.
        let mut claims: SessionClaims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        claims.role = "admin".into();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(decode_session(&k, &forged, 1000), None);
        // Flip one character of the tag.
        let mut chars: Vec<char> = value.chars().collect();
        let last = chars.len() - 1;
        chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
        let flipped: String = chars.into_iter().collect();
        assert_eq!(decode_session(&k, &flipped, 1000), None);
        // A login cookie signed with the same key is not a session.
        let login = k.sign(
            Purpose::Login,
            URL_SAFE_NO_PAD.decode(payload).unwrap().as_slice(),
        );
        assert_eq!(decode_session(&k, &login, 1000), None);
    }

    #[test]
    fn expired_values_are_refused() {
        let k = key(7);
        let value = encode_session(&k, &alice(), 1000, Duration::from_secs(60)).unwrap();
        assert!(decode_session(&k, &value, 1059).is_some());
        assert_eq!(decode_session(&k, &value, 1060), None);
        assert_eq!(decode_session(&k, &value, 999_999), None);
    }

    #[test]
    fn wrong_key_is_refused() {
        let value = encode_session(&key(7), &alice(), 1000, SESSION_LIFETIME).unwrap();
        assert_eq!(decode_session(&key(8), &value, 1000), None);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let k = key(7);
        let good_tag = k.sign(Purpose::Session, b"not json");
        let too_long = "a".repeat(MAX_COOKIE_BYTES + 1);
        for value in [
            "",
            ".",
            "..",
            "abc",
            "abc.def",
            "!!!.???",
            "e30.",
            good_tag.as_str(),
            too_long.as_str(),
            "€.€",
        ] {
            assert_eq!(decode_session(&k, value, 1000), None, "{value:?}");
        }
        // A genuine signature over a payload with an unknown role.
        let odd = k
            .sign_json(
                Purpose::Session,
                &SessionClaims {
                    sub: "x".into(),
                    name: None,
                    role: "root".into(),
                    exp: 2000,
                    sid: "s".into(),
                    kid: k.id().to_owned(),
                },
            )
            .unwrap();
        assert_eq!(decode_session(&k, &odd, 1000), None);
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(SessionKey::new(&[1; 31]).unwrap_err(), ShortKeyError(31));
        assert!(SessionKey::new(b"").is_err());
        assert!(SessionKey::new(&[1; 64]).is_ok());
        assert_eq!(format!("{:?}", key(9)), "SessionKey(***)");
    }

    #[test]
    fn cookies_are_found_and_formatted() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; aetherv_session=xyz"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("aetherv_login=abc"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, LOGIN_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        let set = set_cookie(SESSION_COOKIE, "v", SESSION_LIFETIME, true);
        let set = set.to_str().unwrap();
        for part in [
            "aetherv_session=v",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Secure",
        ] {
            assert!(set.contains(part), "{set}");
        }
        let plain = set_cookie(SESSION_COOKIE, "v", SESSION_LIFETIME, false);
        assert!(!plain.to_str().unwrap().contains("Secure"));
        assert!(
            clear_cookie(SESSION_COOKIE, false)
                .to_str()
                .unwrap()
                .contains("Max-Age=0")
        );
    }
}
