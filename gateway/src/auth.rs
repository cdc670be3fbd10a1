//! Bearer tokens from Keycloak (realm `shop`), checked at the edge.
//!
//! - [`Verifier`]: RS256 signatures against the realm's JWKS (cached; fetched again, at most
//!   every [`REFETCH_AT_MOST_EVERY`], when a token names an unknown `kid`), then `iss`, `aud`,
//!   `exp`/`nbf` with a small leeway. Anything else (no `kid`, `alg: none`, HS256, bad base64,
//!   a tampered payload) is 401.
//! - [`authenticate`]: the middleware in front of `/api`. No `Authorization` header makes the
//!   request anonymous (the catalog is public); a header that does not hold a valid bearer token
//!   is refused. The [`Caller`] goes into the request's extensions, and from there to the
//!   services in a caller token the gateway signs (see [`crate::extract::Incoming`] and
//!   `runtime::identity`).
//! - [`User`] and [`Admin`]: route guards as extractors (401 without a token, 403 without the role).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use runtime::http::ApiError;
use runtime::identity::{ADMIN_ROLE, Caller, bearer_token};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// Fetching the JWKS again for an unknown `kid` happens at most this often, so garbage `kid`s
/// cannot make the gateway hammer Keycloak.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The realm's issuer, exactly as in tokens' `iss`.
    pub issuer: String,
    /// Where the realm publishes its signing keys.
    pub jwks_url: String,
    /// Must be among the token's `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

pub const ISSUER_VAR: &str = "SHOP_JWT_ISSUER";
pub const JWKS_URL_VAR: &str = "SHOP_JWT_JWKS_URL";
pub const AUDIENCE_VAR: &str = "SHOP_JWT_AUDIENCE";
pub const LEEWAY_VAR: &str = "SHOP_JWT_LEEWAY_SECONDS";

/// The local stack's Keycloak.
impl Default for AuthConfig {
    fn default() -> Self {
        Self::for_issuer("http://127.0.0.1:8180/realms/shop")
    }
}

impl AuthConfig {
    /// Keycloak's layout: the JWKS under the issuer; audience `shop-api`.
    pub fn for_issuer(issuer: &str) -> Self {
        let issuer = issuer.trim_end_matches('/').to_owned();
        Self {
            jwks_url: format!("{issuer}/protocol/openid-connect/certs"),
            issuer,
            audience: "shop-api".into(),
            leeway: Duration::from_secs(5),
        }
    }

    /// [`AuthConfig::default`] unless the variables above say otherwise.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let issuer = var(ISSUER_VAR).unwrap_or_else(|| AuthConfig::default().issuer);
        let jwks_url = var(JWKS_URL_VAR)
            .unwrap_or_else(|| format!("{}/protocol/openid-connect/certs", issuer.trim_end_matches('/')));
        let leeway = match var(LEEWAY_VAR) {
            None => 5,
            Some(raw) => {
                raw.trim().parse().map_err(|_| anyhow::anyhow!("{LEEWAY_VAR} must be seconds, not {raw:?}"))?
            }
        };
        Ok(Self {
            issuer,
            jwks_url,
            audience: var(AUDIENCE_VAR).unwrap_or_else(|| "shop-api".into()),
            leeway: Duration::from_secs(leeway),
        })
    }
}

/// Why a token was refused; the message goes to the client (it tells nothing secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token keys could not be fetched: {0}")]
    KeysUnavailable(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let AuthError::KeysUnavailable(_) = self {
            tracing::warn!(error = %self, "cannot check tokens");
            return ApiError::unavailable("the identity provider is unavailable, try again later").into_response();
        }
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, self.to_string()).into_response();
        response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        response
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    preferred_username: String,
    #[serde(default)]
    realm_access: RealmAccess,
}

#[derive(Debug, Default, Deserialize)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// Checks tokens; clones share the key cache.
#[derive(Clone)]
pub struct Verifier {
    config: Arc<AuthConfig>,
    http: reqwest::Client,
    keys: Arc<RwLock<Keys>>,
    /// Held while fetching, so concurrent unknown `kid`s cause one fetch.
    fetching: Arc<Mutex<()>>,
}

impl Verifier {
    pub fn new(config: AuthConfig, http: reqwest::Client) -> Self {
        Self {
            config: Arc::new(config),
            http,
            keys: Arc::new(RwLock::new(Keys { by_kid: HashMap::new(), fetched: None })),
            fetching: Arc::new(Mutex::new(())),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The caller a valid token names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        // `alg: none` and unknown algorithms fail right here: jsonwebtoken has no such variants.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(AuthError::UnknownKey)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| invalid(&e))?;
        let Claims { sub, preferred_username, realm_access } = data.claims;
        if sub.trim().is_empty() {
            return Err(AuthError::Invalid("empty subject".into()));
        }
        Ok(Caller::User { id: sub, name: preferred_username, roles: realm_access.roles })
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.keys.read().await.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let _one_fetch = self.fetching.lock().await;
        {
            let keys = self.keys.read().await;
            if let Some(key) = keys.by_kid.get(kid) {
                return Ok(key.clone()); // fetched by whoever held the lock before us
            }
            if keys.fetched.is_some_and(|at| at.elapsed() < REFETCH_AT_MOST_EVERY) {
                return Err(AuthError::UnknownKey);
            }
        }
        let fetched = self.fetch_keys().await;
        let mut keys = self.keys.write().await;
        keys.fetched = Some(Instant::now());
        keys.by_kid = fetched?;
        keys.by_kid.get(kid).cloned().ok_or(AuthError::UnknownKey)
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, AuthError> {
        let unavailable =
            |e: &dyn std::fmt::Display| AuthError::KeysUnavailable(format!("{}: {e}", self.config.jwks_url));
        let answer = self.http.get(&self.config.jwks_url).send().await.map_err(|e| unavailable(&e))?;
        let answer = answer.error_for_status().map_err(|e| unavailable(&e))?;
        let set: JwkSet = answer.json().await.map_err(|e| unavailable(&e))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            // Encryption keys and keys of other types are of no use here.
            let signing = !matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption));
            if let (Some(kid), true, Ok(key)) = (&jwk.common.key_id, signing, DecodingKey::from_jwk(jwk)) {
                by_kid.insert(kid.clone(), key);
            }
        }
        tracing::info!(keys = by_kid.len(), url = %self.config.jwks_url, "token signing keys fetched");
        Ok(by_kid)
    }
}

fn invalid(e: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind as K;
    let why = match e.kind() {
        K::ExpiredSignature => "expired",
        K::ImmatureSignature => "not valid yet",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::InvalidSignature => "bad signature",
        K::MissingRequiredClaim(_) => "a required claim is missing",
        K::InvalidAlgorithm => "wrong algorithm",
        K::Json(_) => "malformed or missing claims",
        _ => "malformed",
    };
    AuthError::Invalid(why.into())
}

/// The `/api` middleware: puts the [`Caller`] into the request, or refuses it.
pub async fn authenticate(State(verifier): State<Verifier>, mut request: Request, next: Next) -> Response {
    let caller = match request.headers().get(AUTHORIZATION) {
        None => Caller::Anonymous,
        Some(value) => {
            let token = value.to_str().ok().and_then(bearer_token);
            let Some(token) = token else {
                return AuthError::NotBearer.into_response();
            };
            match verifier.verify(token).await {
                Ok(caller) => caller,
                Err(e) => {
                    tracing::info!(reason = %e, "token refused");
                    return e.into_response();
                }
            }
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn caller_of(parts: &Parts) -> Caller {
    parts.extensions.get::<Caller>().cloned().unwrap_or(Caller::Anonymous)
}

fn login_required() -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required").into_response();
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// A route guard: any signed-in user.
#[derive(Debug, Clone)]
pub struct User(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        match caller_of(parts) {
            caller @ Caller::User { .. } => Ok(User(caller)),
            _ => Err(login_required()),
        }
    }
}

/// A route guard: a user with the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let User(caller) = User::from_request_parts(parts, state).await?;
        if caller.has_role(ADMIN_ROLE) {
            Ok(Admin(caller))
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "this needs the admin role").into_response())
        }
    }
}
