//! Bearer tokens of the realm's dev users, from Keycloak's password grant, renewed in the
//! background well before they expire: a run longer than a token's lifetime (300 s by
//! default) must not start failing with 401 half-way.

use anyhow::{Context, bail};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The dev users of realm `shop`; each one's password is its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum User {
    Alice,
    Bob,
    Admin,
}

impl User {
    pub const ALL: [User; 3] = [User::Alice, User::Bob, User::Admin];
    /// The users that own customers and place orders; the gateway's rate limit is per user,
    /// so the load is split between them.
    pub const CUSTOMERS: [User; 2] = [User::Alice, User::Bob];

    pub const fn name(self) -> &'static str {
        match self {
            User::Alice => "alice",
            User::Bob => "bob",
            User::Admin => "admin",
        }
    }

    const fn index(self) -> usize {
        match self {
            User::Alice => 0,
            User::Bob => 1,
            User::Admin => 2,
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// Renew at this share of a token's lifetime: a 300 s token is renewed after 200 s, leaving
/// 100 s for Keycloak to answer (and for retries) before the old one runs out.
const RENEW_AT: f64 = 2.0 / 3.0;
const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The current `Authorization` value of each user. Cloning a `HeaderValue` only bumps a
/// reference count, so every request can take the freshest one.
pub struct Tokens {
    current: Arc<[RwLock<HeaderValue>; 3]>,
    renewers: Vec<JoinHandle<()>>,
}

impl Tokens {
    /// Signs every user in, then keeps their tokens fresh until dropped.
    pub async fn sign_in(http: &reqwest::Client, keycloak: &str) -> anyhow::Result<Self> {
        let url = format!("{}/realms/shop/protocol/openid-connect/token", keycloak.trim_end_matches('/'));
        let mut first = Vec::new();
        for user in User::ALL {
            first.push(grant(http, &url, user).await?);
        }
        let current: Arc<[RwLock<HeaderValue>; 3]> = Arc::new([0, 1, 2].map(|i| RwLock::new(first[i].0.clone())));
        let renewers = User::ALL
            .into_iter()
            .map(|user| {
                let (http, url, current) = (http.clone(), url.clone(), current.clone());
                let mut lifetime = first[user.index()].1;
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(lifetime.mul_f64(RENEW_AT)).await;
                        loop {
                            match grant(&http, &url, user).await {
                                Ok((value, life)) => {
                                    *current[user.index()].write().unwrap_or_else(|e| e.into_inner()) = value;
                                    lifetime = life;
                                    break;
                                }
                                Err(e) => {
                                    eprintln!(
                                        "orders-bench: renewing {}'s token failed ({e:#}); retrying",
                                        user.name()
                                    );
                                    tokio::time::sleep(RETRY_EVERY).await;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Ok(Tokens { current, renewers })
    }

    /// `Bearer …` for `user`, current as of now.
    pub fn bearer(&self, user: User) -> HeaderValue {
        self.current[user.index()].read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        for r in &self.renewers {
            r.abort();
        }
    }
}

/// One password grant: the header value and how long it is good for.
async fn grant(http: &reqwest::Client, url: &str, user: User) -> anyhow::Result<(HeaderValue, Duration)> {
    // The dev users' names and passwords are plain lower-case words: nothing to escape.
    let name = user.name();
    let form = format!("grant_type=password&client_id=shop-web&username={name}&password={name}");
    let answer = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body = answer.text().await.unwrap_or_default();
        bail!("token for {name}: {status} {body}");
    }
    let t: TokenAnswer = answer.json().await.with_context(|| format!("token answer for {name}"))?;
    let value = HeaderValue::from_str(&format!("Bearer {}", t.access_token)).context("token is not a header value")?;
    // A missing or absurd lifetime: renew every minute or so rather than never.
    let lifetime = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(15, 24 * 3600));
    Ok((value, lifetime))
}
