//! Who may call: write keys on the ingest routes, admin tokens on the admin routes.
//!
//! Write keys identify an environment and are public by nature (they ship in web pages).
//! Admin tokens are secrets: only their SHA-256 hashes are stored, and a presented token is
//! looked up by its hash, so no stored secret is ever compared byte by byte.

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine as _;
use futures_util::future::LocalBoxFuture;
use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::server::AppState;
use crate::store::{Actor, AdminToken, EnvironmentId, TokenScope};

/// The write key in an HTTP Basic `Authorization` header (the user name; the password is
/// ignored), if there is one.
pub fn basic_write_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }

    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

/// The hex SHA-256 of an admin token or a write key, by which both are looked up: an
/// index lookup compares the hash, which a caller cannot steer byte by byte, never the
/// presented secret itself. Admin tokens are stored only in this form.
pub fn lookup_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Checks an identity-verification hash: `hash` must be the hex HMAC-SHA256 of `user_id`
/// under the environment's `secret`. The comparison takes the same time wherever the
/// bytes differ.
pub fn user_hash_is_valid(secret: &str, user_id: &str, hash: &str) -> bool {
    let Ok(expected) = hex::decode(hash.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(user_id.as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// A caller that presented a valid admin token.
#[derive(Debug, Clone)]
pub struct Admin {
    token: AdminToken,
}

impl Admin {
    /// Whether the token may act on every environment (and so create environments).
    pub fn is_global(&self) -> bool {
        self.token.scope() == TokenScope::All
    }

    /// The environment the token is limited to, if it is.
    pub fn environment(&self) -> Option<&EnvironmentId> {
        self.token.environment_id.as_ref()
    }

    /// How the audit log names this caller: the token's id and label.
    pub fn actor(&self) -> Actor {
        Actor(format!("token:{} ({})", self.token.id, self.token.label))
    }

    /// Checks that the token may act on `environment`.
    ///
    /// # Errors
    ///
    /// [`ApiError::Forbidden`] when the token is scoped to another environment.
    pub fn authorize(&self, environment: &EnvironmentId) -> Result<(), ApiError> {
        match &self.token.scope() {
            TokenScope::All => Ok(()),
            TokenScope::Environment(id) if id == environment => Ok(()),
            TokenScope::Environment(_) => Err(ApiError::Forbidden),
        }
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let token = bearer_token(req.headers());
        let state = req.app_data::<web::Data<AppState>>().cloned();

        Box::pin(async move {
            let token = token.ok_or(ApiError::MissingAdminToken)?;
            let state = state.ok_or_else(|| ApiError::Internal("no app state".into()))?;

            let stored = state.store.admin_token(&lookup_hash(&token)).await?;
            match stored {
                Some(token) => Ok(Self { token }),
                None => {
                    tracing::warn!(http.route = %"admin", "unknown admin token presented");
                    Err(ApiError::InvalidAdminToken)
                }
            }
        })
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    #[test]
    fn the_write_key_is_the_basic_user_name() {
        // base64("wk_123:") — the form Segment's libraries send.
        assert_eq!(
            basic_write_key(&headers("Basic d2tfMTIzOg==")),
            Some("wk_123".into())
        );
        // base64("wk_123") without the colon, as some hand-written clients send.
        assert_eq!(
            basic_write_key(&headers("basic d2tfMTIz")),
            Some("wk_123".into())
        );
    }

    #[test]
    fn broken_basic_headers_yield_no_key() {
        for value in ["Basic", "Basic !!!", "Bearer d2tfMTIzOg==", "Basic Og=="] {
            assert_eq!(basic_write_key(&headers(value)), None, "{value}");
        }
    }

    #[test]
    fn user_hashes_are_checked_against_the_secret() {
        // The published HMAC-SHA256 test vector: key "key", this message.
        let user_id = "The quick brown fox jumps over the lazy dog";
        let hash = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";

        assert!(user_hash_is_valid("key", user_id, hash));
        assert!(user_hash_is_valid("key", user_id, &hash.to_uppercase()));
        assert!(!user_hash_is_valid("key", "another user", hash));
        assert!(!user_hash_is_valid("other key", user_id, hash));
        assert!(!user_hash_is_valid("key", user_id, &hash[..62]));
        assert!(!user_hash_is_valid("key", user_id, "not hex"));
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc".into()));
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&headers("Basic abc")), None);
    }
}
