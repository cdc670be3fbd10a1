//! Who is calling: the gateway checks the bearer token and passes the caller on in trusted
//! headers ([`USER_ID`], [`USER_NAME`], [`USER_ROLES`]), after removing any a client sent.
//! Services sit on loopback (or a private network) behind it, so they take the headers as given.
//!
//! The gateway always sends [`USER_ROLES`] (empty for an anonymous request), so a request
//! without it comes from another service calling directly: [`Caller::Internal`], which sees
//! everything, like an admin.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use std::convert::Infallible;

/// The token's subject.
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// The token's `preferred_username`, for logs.
pub const USER_NAME: HeaderName = HeaderName::from_static("x-user-name");
/// The realm roles, comma-separated; present (maybe empty) on every request the gateway forwards.
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
/// All of them: what the gateway strips from client requests.
pub const HEADERS: [HeaderName; 3] = [USER_ID, USER_NAME, USER_ROLES];

pub const ADMIN_ROLE: &str = "admin";
pub const CUSTOMER_ROLE: &str = "customer";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Another service, not through the gateway.
    Internal,
    /// Through the gateway, without a token.
    Anonymous,
    /// Through the gateway, with a valid token.
    User { id: String, name: String, roles: Vec<String> },
}

impl Caller {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let Some(roles) = text(&USER_ROLES) else {
            return Caller::Internal;
        };
        match text(&USER_ID).filter(|id| !id.is_empty()) {
            None => Caller::Anonymous,
            Some(id) => Caller::User {
                id: id.to_owned(),
                name: text(&USER_NAME).unwrap_or_default().to_owned(),
                roles: roles.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect(),
            },
        }
    }

    /// The headers that describe this caller to a service ([`Caller::Internal`]: none).
    pub fn headers(&self) -> Vec<(HeaderName, String)> {
        match self {
            Caller::Internal => Vec::new(),
            Caller::Anonymous => vec![(USER_ROLES, String::new())],
            Caller::User { id, name, roles } => {
                vec![(USER_ID, id.clone()), (USER_NAME, name.clone()), (USER_ROLES, roles.join(","))]
            }
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        matches!(self, Caller::User { roles, .. } if roles.iter().any(|r| r == role))
    }

    /// Sees and may do everything: another service, or a user with the admin role.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Caller::Internal) || self.has_role(ADMIN_ROLE)
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

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Caller::from_headers(&parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(pairs: &[(HeaderName, &str)]) -> Caller {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), value.parse().unwrap());
        }
        Caller::from_headers(&headers)
    }

    #[test]
    fn headers_decide_the_caller() {
        assert_eq!(caller(&[]), Caller::Internal);
        assert_eq!(caller(&[(USER_ROLES, "")]), Caller::Anonymous);
        // An id without the roles header never came from the gateway: still internal.
        assert_eq!(caller(&[(USER_ID, "u1")]), Caller::Internal);
        let alice = caller(&[(USER_ID, "u1"), (USER_NAME, "alice"), (USER_ROLES, "customer, offline_access")]);
        assert_eq!(
            alice,
            Caller::User {
                id: "u1".into(),
                name: "alice".into(),
                roles: vec!["customer".into(), "offline_access".into()]
            }
        );
        for c in [Caller::Internal, Caller::Anonymous, alice] {
            let mut headers = HeaderMap::new();
            for (name, value) in c.headers() {
                headers.insert(name, value.parse().unwrap());
            }
            assert_eq!(Caller::from_headers(&headers), c);
        }
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
