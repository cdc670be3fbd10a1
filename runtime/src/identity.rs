//! Who is calling, proven by a token: the gateway checks the client's bearer token (Keycloak)
//! and signs a short-lived caller token for the service it forwards to; a service calling
//! another signs one for itself. Services believe only that token, so nothing behind the
//! gateway trusts a header it cannot verify: a request straight to a service's port with
//! made-up identity headers is refused (401), like one without a token.
//!
//! The token is a JWT (HS256) in `Authorization: Bearer`, signed with the key every service is
//! given ([`CallerKey`], `SHOP_CALLER_KEY`), for the audience [`AUDIENCE`], valid for
//! [`TOKEN_TTL`]. Its claims say what kind of caller it is ([`Caller`]): a user (subject, name,
//! realm roles), an anonymous client of the gateway, or a service (which sees everything, like
//! an admin). The issuer names who signed it, for logs.
//!
//! Only `/health` and `/metrics` answer without a token: probes and scrapes carry none.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const ADMIN_ROLE: &str = "admin";
pub const CUSTOMER_ROLE: &str = "customer";

/// Who a caller token is for.
pub const AUDIENCE: &str = "shop-services";
/// How long a caller token is valid: one forwarded call, its retries and a long-poll.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Clock difference tolerated between signer and verifier.
const LEEWAY_S: u64 = 5;
pub use crate::config::{DEFAULT_CALLER_KEY, MIN_CALLER_KEY_BYTES};
/// Paths that answer without a token.
pub const OPEN_PATHS: [&str; 2] = ["/health", "/metrics"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Another service, on its own behalf.
    Internal,
    /// Through the gateway, without a token.
    Anonymous,
    /// Through the gateway, with a valid user token.
    User { id: String, name: String, roles: Vec<String> },
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        matches!(self, Caller::User { roles, .. } if roles.iter().any(|r| r == role))
    }

    /// Sees and may do everything: another service, or a user with the admin role.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Caller::Internal) || self.has_role(ADMIN_ROLE)
    }

    /// 403 unless [`Caller::is_privileged`]: what every operator endpoint checks first.
    pub fn require_privileged(&self) -> Result<(), ApiError> {
        if self.is_privileged() {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "operators only: this needs the admin role"))
        }
    }

    /// Who acted, for histories and audit records: the user's name, else their id.
    pub fn who(&self) -> String {
        match self {
            Caller::User { name, id, .. } if !name.is_empty() => name.clone(),
            Caller::User { id, .. } => id.clone(),
            Caller::Internal => "an internal caller".to_owned(),
            Caller::Anonymous => "anonymous".to_owned(),
        }
    }

    /// The user's id, if the caller is a user.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Caller::User { id, .. } => Some(id),
            _ => None,
        }
    }

    /// May this caller read or act on something owned by `owner`? Privileged callers may; a user
    /// only on what is theirs; nobody on what has no owner (except privileged callers).
    pub fn may_access(&self, owner: Option<&str>) -> bool {
        self.is_privileged() || matches!((self.user_id(), owner), (Some(me), Some(owner)) if me == owner)
    }

    /// Whose documents a listing may show: `None` = everyone's.
    pub fn owner_scope(&self) -> Option<&str> {
        if self.is_privileged() { None } else { Some(self.user_id().unwrap_or_default()) }
    }
}

/// A caller token's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// Who signed: `gateway`, or the calling service's name.
    iss: String,
    aud: String,
    /// The user's id; the service's name for [`Kind::Service`]; empty when anonymous.
    sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    kind: Kind,
    iat: u64,
    exp: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Service,
    Anonymous,
    User,
}

/// Why a request's caller token was not accepted; the 401's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a caller token (Authorization: Bearer) is required")]
    Missing,
    #[error("the caller token is not valid: {0}")]
    Invalid(String),
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

/// The shared secret caller tokens are signed and checked with. Cheap to clone: every request a
/// service serves, and every call it makes, holds it.
#[derive(Clone)]
pub struct CallerKey(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerKey(..)")
    }
}

impl CallerKey {
    /// A key from its secret, which must have at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(secret: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_CALLER_KEY_BYTES,
            "SHOP_CALLER_KEY must have at least {MIN_CALLER_KEY_BYTES} bytes, it has {}",
            secret.len()
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_S;
        Ok(Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })))
    }

    /// For tools and tests that call services directly: `SHOP_CALLER_KEY`, else the local
    /// stack's key.
    pub fn from_env() -> anyhow::Result<Self> {
        let key = std::env::var("SHOP_CALLER_KEY").ok().filter(|k| !k.trim().is_empty());
        Self::new(key.as_deref().unwrap_or(DEFAULT_CALLER_KEY).as_bytes())
    }

    /// The key of the settings (`SHOP_CALLER_KEY`).
    pub fn from_settings(settings: &crate::Settings) -> anyhow::Result<Self> {
        Self::new(settings.caller_key.as_bytes())
    }

    /// A token saying `caller` is calling, signed by `issuer`, valid for [`TOKEN_TTL`].
    pub fn sign(&self, caller: &Caller, issuer: &str) -> String {
        self.sign_at(caller, issuer, unix_now())
    }

    fn sign_at(&self, caller: &Caller, issuer: &str, now: u64) -> String {
        let (kind, sub, name, roles) = match caller {
            Caller::Internal => (Kind::Service, issuer.to_owned(), String::new(), Vec::new()),
            Caller::Anonymous => (Kind::Anonymous, String::new(), String::new(), Vec::new()),
            Caller::User { id, name, roles } => (Kind::User, id.clone(), name.clone(), roles.clone()),
        };
        let claims = Claims {
            iss: issuer.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub,
            name,
            roles,
            kind,
            iat: now,
            exp: now + TOKEN_TTL.as_secs(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The `Authorization` value for a call on behalf of `caller`.
    pub fn authorization(&self, caller: &Caller, issuer: &str) -> HeaderValue {
        HeaderValue::try_from(format!("Bearer {}", self.sign(caller, issuer)))
            .expect("a JWT is made of header-safe characters")
    }

    /// The caller a token proves.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?
            .claims;
        Ok(match claims.kind {
            Kind::Service => Caller::Internal,
            Kind::Anonymous => Caller::Anonymous,
            Kind::User if claims.sub.is_empty() => {
                return Err(TokenError::Invalid("a user token without a subject".into()));
            }
            Kind::User => Caller::User { id: claims.sub, name: claims.name, roles: claims.roles },
        })
    }

    /// The caller of a request, from its `Authorization: Bearer` header.
    pub fn caller_of(&self, headers: &axum::http::HeaderMap) -> Result<Caller, TokenError> {
        let value = headers.get(header::AUTHORIZATION).ok_or(TokenError::Missing)?;
        let token = value.to_str().ok().and_then(bearer_token).ok_or(TokenError::Missing)?;
        self.verify(token)
    }
}

/// The token of an `Authorization: Bearer <token>` value, the scheme in any case.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Middleware of every service: a request other than [`OPEN_PATHS`] must carry a valid caller
/// token (else 401 with `WWW-Authenticate: Bearer`); the [`Caller`] it proves goes into the
/// request's extensions for handlers to take.
pub async fn require_caller(key: CallerKey, mut request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    match key.caller_of(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => {
            tracing::warn!(error = %e, path = request.uri().path(), "refused a call without a valid caller token");
            let mut response = ApiError::from(e).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Handlers take the caller [`require_caller`] proved; without that middleware in front there is
/// no caller, and the request is refused rather than trusted.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| TokenError::Missing.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(secret: &str) -> CallerKey {
        CallerKey::new(secret.as_bytes()).unwrap()
    }

    fn alice() -> Caller {
        Caller::User { id: "u1".into(), name: "alice".into(), roles: vec!["customer".into(), "offline_access".into()] }
    }

    #[test]
    fn a_token_proves_its_caller() {
        let k = key(DEFAULT_CALLER_KEY);
        for caller in [Caller::Internal, Caller::Anonymous, alice()] {
            assert_eq!(k.verify(&k.sign(&caller, "gateway")), Ok(caller));
        }
    }

    #[test]
    fn forged_stale_or_foreign_tokens_prove_nothing() {
        let k = key(DEFAULT_CALLER_KEY);
        let other = key("another-key-of-at-least-thirty-two-bytes");
        assert!(matches!(k.verify(&other.sign(&alice(), "gateway")), Err(TokenError::Invalid(_))));
        let stale = k.sign_at(&alice(), "gateway", unix_now() - TOKEN_TTL.as_secs() - LEEWAY_S - 1);
        assert!(matches!(k.verify(&stale), Err(TokenError::Invalid(_))));
        // Another audience's token signed with the same secret (a user's token reused) is refused.
        let foreign = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": "gateway", "aud": "account", "sub": "u1", "kind": "user", "exp": unix_now() + 60}),
            &EncodingKey::from_secret(DEFAULT_CALLER_KEY.as_bytes()),
        )
        .unwrap();
        assert!(matches!(k.verify(&foreign), Err(TokenError::Invalid(_))));
        let mut tampered = k.sign(&alice(), "gateway");
        tampered.insert(tampered.len() / 2, 'x');
        assert!(k.verify(&tampered).is_err());
        assert!(CallerKey::new(b"short").is_err());
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        for bad in ["", "Bearer", "Bearer ", "Basic abc", "abc", "Token abc"] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn identity_headers_alone_are_no_caller() {
        let k = key(DEFAULT_CALLER_KEY);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("u1"));
        headers.insert("x-user-roles", HeaderValue::from_static("admin"));
        assert_eq!(k.caller_of(&headers), Err(TokenError::Missing));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer not-a-token"));
        assert!(matches!(k.caller_of(&headers), Err(TokenError::Invalid(_))));
        headers.insert(header::AUTHORIZATION, k.authorization(&alice(), "gateway"));
        assert_eq!(k.caller_of(&headers), Ok(alice()));
    }

    #[test]
    fn owners_and_admins_get_access() {
        let user = |id: &str, role: &str| Caller::User { id: id.into(), name: id.into(), roles: vec![role.into()] };
        let alice = user("a", CUSTOMER_ROLE);
        assert!(alice.may_access(Some("a")));
        assert!(!alice.may_access(Some("b")));
        assert!(!alice.may_access(None));
        assert!(!Caller::Anonymous.may_access(Some("a")));
        assert!(!Caller::Anonymous.may_access(None));
        assert!(user("x", ADMIN_ROLE).may_access(Some("a")));
        assert!(Caller::Internal.may_access(None));
        assert_eq!(alice.owner_scope(), Some("a"));
        assert_eq!(Caller::Anonymous.owner_scope(), Some(""));
        assert_eq!(Caller::Internal.owner_scope(), None);
    }
}
