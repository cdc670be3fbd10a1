//! Service discovery through etcd: each instance registers `<root>/services/<name>/<instance-id>`
//! = its base URL under a lease that a heartbeat keeps alive, and callers resolve names with a
//! [`Resolver`] that watches `<root>/services/` and keeps the live instances in memory.
//!
//! - A crashed instance disappears when its lease runs out ([`LEASE_TTL`]); a graceful shutdown
//!   revokes the lease, so its key goes at once.
//! - Nothing here is needed to run: with etcd unreachable (or discovery switched off) callers
//!   fall back to their configured URLs, and the background tasks keep trying to reach etcd.

use anyhow::Context as _;
use etcd_client::{Certificate, Client, ConnectOptions, EventType, GetOptions, PutOptions, TlsOptions, WatchOptions};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The key space of the whole system in etcd; tests use their own.
pub const ROOT: &str = "/shop";
/// How long a registration outlives its last heartbeat.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// Heartbeats per lease period: one lost heartbeat does not drop the instance.
const HEARTBEATS_PER_TTL: u32 = 3;
/// Any single etcd call gives up after this long (etcd down must not stall a service).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before trying etcd again after a failure.
const RECONNECT_AFTER: Duration = Duration::from_secs(2);

/// A connection to etcd (cheap to clone) and the key root everything lives under.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    root: String,
}

impl Etcd {
    /// Connect (lazily: a down etcd shows up on the first call, not here). `url`: one or more
    /// endpoints, comma-separated, `http://` or `https://`; an `https://` endpoint's certificate
    /// must chain to `ca_file` (PEM; `SHOP_ETCD_CA_FILE`).
    pub async fn connect(url: &str, root: &str, ca_file: Option<&str>) -> anyhow::Result<Self> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        if let Some(file) = ca_file {
            let pem = std::fs::read(file).with_context(|| format!("etcd CA file {file}"))?;
            options = options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        }
        let endpoints: Vec<&str> = url.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        let client = tokio::time::timeout(CALL_TIMEOUT, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| anyhow::anyhow!("connecting to etcd at {url} timed out"))??;
        Ok(Self { client, root: root.trim_end_matches('/').to_owned() })
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>/services/`: every registration is below it.
    pub fn services_prefix(&self) -> String {
        format!("{}/services/", self.root)
    }

    /// The key of one instance.
    pub fn instance_key(&self, name: &str, instance_id: &str) -> String {
        format!("{}{name}/{instance_id}", self.services_prefix())
    }

    /// Is etcd answering?
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut client = self.client.clone();
        timed(client.get(format!("{}/", self.root), Some(GetOptions::new().with_count_only()))).await?;
        Ok(())
    }
}

/// Run one etcd call with [`CALL_TIMEOUT`].
pub async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("etcd did not answer within {CALL_TIMEOUT:?}"),
    }
}

/// The instance id a service registers under, unique per address: a restarted instance takes
/// over its own key.
pub fn instance_id(advertise_url: &str) -> String {
    let host_port = advertise_url.split("://").nth(1).unwrap_or(advertise_url);
    host_port.trim_end_matches('/').replace('/', "_")
}

/// One instance's registration, kept alive by a background heartbeat until [`Registration::stop`].
pub struct Registration {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Registration {
    /// Register `name` at `url` and keep it registered: the heartbeat renews the lease, and when
    /// etcd was away long enough for the lease to expire (or was not there at start) it
    /// registers again with a new lease.
    pub fn start(etcd: Etcd, name: &str, instance_id: &str, url: &str, ttl: Duration) -> Self {
        let stop = CancellationToken::new();
        let key = etcd.instance_key(name, instance_id);
        let task = tokio::spawn(keep_registered(etcd, key, url.to_owned(), ttl, stop.clone()));
        Self { stop, task }
    }

    /// Stop the heartbeat and revoke the lease: the instance disappears from resolvers now
    /// rather than after the TTL.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), self.task).await;
    }
}

async fn keep_registered(etcd: Etcd, key: String, url: String, ttl: Duration, stop: CancellationToken) {
    let mut warned = false;
    loop {
        let lease = match register_once(&etcd, &key, &url, ttl).await {
            Ok(lease) => {
                tracing::info!(%key, %url, lease, ttl_s = ttl.as_secs(), "registered in etcd");
                warned = false;
                lease
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(error = format!("{e:#}"), %key, "cannot register in etcd; retrying in the background");
                    warned = true;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_AFTER) => continue,
                }
            }
        };
        let lost = tokio::select! {
            () = stop.cancelled() => None,
            e = heartbeat(&etcd, lease, ttl) => Some(e),
        };
        match lost {
            None => {
                let mut client = etcd.client();
                match timed(client.lease_revoke(lease)).await {
                    Ok(_) => tracing::info!(%key, "deregistered from etcd"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), %key, "revoking the lease failed; it expires"),
                }
                return;
            }
            Some(e) => {
                tracing::warn!(error = format!("{e:#}"), %key, "etcd heartbeat lost; registering again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {},
                }
            }
        }
    }
}

async fn register_once(etcd: &Etcd, key: &str, url: &str, ttl: Duration) -> anyhow::Result<i64> {
    let mut client = etcd.client();
    let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = timed(client.lease_grant(ttl_s, None)).await?.id();
    timed(client.put(key, url, Some(PutOptions::new().with_lease(lease)))).await?;
    Ok(lease)
}

/// Renew `lease` every `ttl / HEARTBEATS_PER_TTL`; returns why it stopped (an error, or the
/// lease being gone on the server).
async fn heartbeat(etcd: &Etcd, lease: i64, ttl: Duration) -> anyhow::Error {
    let mut client = etcd.client();
    let (mut keeper, mut answers) = match timed(client.lease_keep_alive(lease)).await {
        Ok(pair) => pair,
        Err(e) => return e,
    };
    let every = ttl / HEARTBEATS_PER_TTL;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = timed(keeper.keep_alive()).await {
            return e;
        }
        match timed(answers.message()).await {
            Ok(Some(answer)) if answer.ttl() > 0 => {}
            Ok(Some(_)) => return anyhow::anyhow!("lease {lease} expired on the server"),
            Ok(None) => return anyhow::anyhow!("keep-alive stream closed"),
            Err(e) => return e,
        }
    }
}

/// Live instances of every service, from a watch on `<root>/services/`, and round-robin picks.
/// Cheap to clone; clones share the list.
#[derive(Clone, Default)]
pub struct Resolver {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// name -> instance id -> base URL
    instances: RwLock<HashMap<String, BTreeMap<String, String>>>,
    /// Round-robin position per name.
    next: RwLock<HashMap<String, Arc<AtomicUsize>>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").field("instances", &self.snapshot()).finish()
    }
}

impl Resolver {
    /// A resolver that never knows anyone: every caller uses its configured URL.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A fixed list of instances, never updated (router tests, tools): name -> base URLs.
    pub fn fixed<'a>(instances: impl IntoIterator<Item = (&'a str, Vec<String>)>) -> Self {
        let resolver = Self::default();
        {
            let mut map = resolver.inner.instances.write().expect("resolver lock");
            for (name, urls) in instances {
                let of_name = map.entry(name.to_owned()).or_default();
                for (i, url) in urls.into_iter().enumerate() {
                    of_name.insert(format!("{i:04}"), url.trim_end_matches('/').to_owned());
                }
            }
        }
        resolver
    }

    /// Follow the registrations in `etcd` until `stop`. The list is empty (so callers use
    /// their fallback) until etcd answers, and again while it is unreachable.
    pub fn watch(etcd: Etcd, stop: CancellationToken) -> Self {
        let resolver = Self::default();
        let inner = resolver.inner.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                let result = tokio::select! {
                    () = stop.cancelled() => return,
                    r = follow(&etcd, &inner) => r,
                };
                if let Err(e) = result {
                    if !warned {
                        tracing::warn!(error = format!("{e:#}"), "service registry unreachable; using configured URLs");
                        warned = true;
                    }
                    inner.instances.write().expect("resolver lock").clear();
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_AFTER) => {},
                }
            }
        });
        resolver
    }

    /// Base URLs of `name`'s live instances, sorted by instance id.
    pub fn instances(&self, name: &str) -> Vec<String> {
        let instances = self.inner.instances.read().expect("resolver lock");
        instances.get(name).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Every registration: name -> instance id -> base URL.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let instances = self.inner.instances.read().expect("resolver lock");
        instances.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The instances of `name` to try, in order: all of them, starting at the next one in
    /// round-robin order; or only `fallback` when none is registered.
    pub fn candidates(&self, name: &str, fallback: &str) -> Vec<String> {
        let mut instances = self.instances(name);
        if instances.is_empty() {
            return vec![fallback.trim_end_matches('/').to_owned()];
        }
        let counter = {
            let next = self.inner.next.read().expect("resolver lock");
            next.get(name).cloned()
        };
        let counter = counter.unwrap_or_else(|| {
            let mut next = self.inner.next.write().expect("resolver lock");
            next.entry(name.to_owned()).or_default().clone()
        });
        let start = counter.fetch_add(1, Ordering::Relaxed) % instances.len();
        instances.rotate_left(start);
        instances
    }
}

/// Load every registration, then apply changes as they come, until an error.
async fn follow(etcd: &Etcd, inner: &Inner) -> anyhow::Result<()> {
    let prefix = etcd.services_prefix();
    let mut client = etcd.client();
    let listing = timed(client.get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = listing.header().map_or(0, |h| h.revision());
    let mut fresh: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for kv in listing.kvs() {
        if let (Ok(key), Ok(url)) = (kv.key_str(), kv.value_str())
            && let Some((name, id)) = split_key(&prefix, key)
        {
            fresh.entry(name.to_owned()).or_default().insert(id.to_owned(), url.to_owned());
        }
    }
    let count: usize = fresh.values().map(BTreeMap::len).sum();
    *inner.instances.write().expect("resolver lock") = fresh;
    tracing::info!(instances = count, "service registry loaded");
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = timed(client.watch(prefix.clone(), Some(options))).await?;
    while let Some(answer) = stream.message().await? {
        if answer.canceled() {
            anyhow::bail!("watch cancelled: {}", answer.cancel_reason());
        }
        let mut instances = inner.instances.write().expect("resolver lock");
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let Some((name, id)) = kv.key_str().ok().and_then(|k| split_key(&prefix, k)) else { continue };
            match event.event_type() {
                EventType::Put => {
                    let url = kv.value_str().unwrap_or_default().to_owned();
                    tracing::info!(service = name, instance = id, %url, "instance registered");
                    instances.entry(name.to_owned()).or_default().insert(id.to_owned(), url);
                }
                EventType::Delete => {
                    tracing::info!(service = name, instance = id, "instance gone");
                    if let Some(of_name) = instances.get_mut(name) {
                        of_name.remove(id);
                        if of_name.is_empty() {
                            instances.remove(name);
                        }
                    }
                }
            }
        }
    }
    anyhow::bail!("watch stream ended")
}

/// `<prefix><name>/<id>` -> (name, id).
fn split_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let (name, id) = key.strip_prefix(prefix)?.split_once('/')?;
    (!name.is_empty() && !id.is_empty()).then_some((name, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_into_name_and_instance() {
        let prefix = "/shop/services/";
        assert_eq!(split_key(prefix, "/shop/services/product/127.0.0.1:8082"), Some(("product", "127.0.0.1:8082")));
        assert_eq!(split_key(prefix, "/shop/services/product/"), None);
        assert_eq!(split_key(prefix, "/shop/config/x/y"), None);
        assert_eq!(instance_id("http://127.0.0.1:8082/"), "127.0.0.1:8082");
    }

    #[test]
    fn candidates_rotate_and_fall_back() {
        let resolver = Resolver::disabled();
        assert_eq!(resolver.candidates("product", "http://fallback:1/"), vec!["http://fallback:1"]);
        {
            let mut instances = resolver.inner.instances.write().unwrap();
            let of_product = instances.entry("product".into()).or_default();
            of_product.insert("a".into(), "http://a".into());
            of_product.insert("b".into(), "http://b".into());
        }
        let firsts: Vec<String> = (0..4).map(|_| resolver.candidates("product", "x")[0].clone()).collect();
        assert_eq!(firsts, ["http://a", "http://b", "http://a", "http://b"]);
        assert_eq!(resolver.candidates("product", "x").len(), 2);
        assert_eq!(resolver.candidates("customer", "http://c"), vec!["http://c"]);
    }
}
