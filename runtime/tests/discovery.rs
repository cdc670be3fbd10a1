//! Service registry and central configuration on the real etcd of the stack. Each test works
//! under its own key root and deletes it at the end.

use etcd_client::{DeleteOptions, PutOptions};
use runtime::config::Profile;
use runtime::discovery::{Etcd, Registration, Resolver};
use runtime::live_config::LiveConfig;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn etcd_url() -> String {
    std::env::var("SHOP_ETCD_URL").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

/// A connection under a fresh root, deleted when the test is done.
struct Scratch {
    etcd: Etcd,
    stop: CancellationToken,
}

impl Scratch {
    async fn new() -> Self {
        let root = format!("/test-{}", uuid::Uuid::new_v4().simple());
        Self { etcd: Etcd::connect(&etcd_url(), &root, None).await.expect("etcd"), stop: CancellationToken::new() }
    }

    async fn put(&self, key: &str, value: &str) {
        let mut client = self.etcd.client();
        client.put(format!("{}{key}", self.etcd.root()), value, None).await.expect("put");
    }

    async fn exists(&self, key: &str) -> bool {
        let mut client = self.etcd.client();
        let answer = client.get(format!("{}{key}", self.etcd.root()), None).await.expect("get");
        !answer.kvs().is_empty()
    }

    async fn cleanup(self) {
        self.stop.cancel();
        let mut client = self.etcd.client();
        let root = format!("{}/", self.etcd.root());
        let _ = client.delete(root, Some(DeleteOptions::new().with_prefix())).await;
    }
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn registered_instances_are_resolved_round_robin_and_leave_on_stop() {
    let s = Scratch::new().await;
    let resolver = Resolver::watch(s.etcd.clone(), s.stop.clone());
    assert_eq!(resolver.candidates("svc", "http://fallback:1"), ["http://fallback:1"], "nobody registered yet");
    let ttl = Duration::from_secs(5);
    let a = Registration::start(s.etcd.clone(), "svc", "a", "http://127.0.0.1:1001", ttl);
    let b = Registration::start(s.etcd.clone(), "svc", "b", "http://127.0.0.1:1002", ttl);
    until("two instances", Duration::from_secs(5), || resolver.instances("svc").len() == 2).await;
    let firsts: Vec<String> = (0..4).map(|_| resolver.candidates("svc", "http://fallback:1")[0].clone()).collect();
    assert_eq!(firsts.iter().filter(|u| *u == "http://127.0.0.1:1001").count(), 2, "{firsts:?}");
    assert_eq!(firsts.iter().filter(|u| *u == "http://127.0.0.1:1002").count(), 2, "{firsts:?}");

    // Heartbeats keep them past their TTL.
    tokio::time::sleep(ttl + Duration::from_secs(2)).await;
    assert_eq!(resolver.instances("svc").len(), 2);

    // A graceful stop revokes the lease: gone at once, not after the TTL.
    let stopped = Instant::now();
    a.stop().await;
    until("a gone", Duration::from_secs(2), || resolver.instances("svc") == ["http://127.0.0.1:1002"]).await;
    assert!(stopped.elapsed() < ttl);
    b.stop().await;
    until("all gone", Duration::from_secs(2), || resolver.instances("svc").is_empty()).await;
    assert_eq!(resolver.candidates("svc", "http://fallback:1"), ["http://fallback:1"]);
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn an_instance_whose_heartbeat_stops_drops_out_when_its_lease_expires() {
    let s = Scratch::new().await;
    let resolver = Resolver::watch(s.etcd.clone(), s.stop.clone());
    let alive = Registration::start(s.etcd.clone(), "svc", "alive", "http://127.0.0.1:2001", Duration::from_secs(5));
    // A crashed instance: registered under a 2 s lease that nobody renews.
    let mut client = s.etcd.client();
    let lease = client.lease_grant(2, None).await.expect("lease").id();
    let key = s.etcd.instance_key("svc", "crashed");
    client.put(key, "http://127.0.0.1:2002", Some(PutOptions::new().with_lease(lease))).await.expect("put");
    until("both seen", Duration::from_secs(5), || resolver.instances("svc").len() == 2).await;
    let seen = Instant::now();
    until("crashed one expired", Duration::from_secs(6), || resolver.instances("svc") == ["http://127.0.0.1:2001"])
        .await;
    assert!(seen.elapsed() >= Duration::from_millis(500), "dropped before its lease could have expired");
    alive.stop().await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn configuration_is_seeded_layered_and_watched() {
    let s = Scratch::new().await;
    let service = "svc-config";
    // Present before the service starts: etcd beats the files, the service's scope beats global.
    s.put("/config/dev/global/http.timeout_ms", "4321").await;
    s.put("/config/dev/global/rate_limit.burst", "11").await;
    s.put(&format!("/config/dev/{service}/rate_limit.burst"), "22").await;
    s.put(&format!("/config/dev/{service}/database.url"), "postgres://from-etcd/db").await;

    let config = LiveConfig::start(service, Profile::Dev, Some(s.etcd.clone()), s.stop.clone()).await;
    let t = config.current();
    assert_eq!(t.http_timeout, Duration::from_millis(4321), "etcd over defaults.toml");
    assert_eq!(t.rate_limit_burst, 22, "the service's own scope over global");
    assert_eq!(t.log_level, "info,sqlx=warn,rdkafka=warn,mongodb=warn,hyper=warn", "dev.toml");
    assert_eq!(config.start_value("database.url"), Some("postgres://from-etcd/db"));
    // Absent keys were seeded from the files; present ones kept.
    assert!(s.exists("/config/dev/global/log.level").await);
    let mut client = s.etcd.client();
    let kept = client.get(format!("{}/config/dev/global/http.timeout_ms", s.etcd.root()), None).await.unwrap();
    assert_eq!(kept.kvs()[0].value_str().unwrap(), "4321");

    // A live change is seen without a restart.
    let mut changes = config.subscribe();
    s.put(&format!("/config/dev/{service}/http.timeout_ms"), "777").await;
    tokio::time::timeout(Duration::from_secs(5), changes.changed()).await.expect("change seen").unwrap();
    assert_eq!(config.current().http_timeout, Duration::from_millis(777));
    s.put("/config/dev/global/features.shiny", "true").await;
    until("feature on", Duration::from_secs(5), || config.current().feature("shiny")).await;

    // A key read at start only keeps its start value (a restart is needed; logged).
    s.put(&format!("/config/dev/{service}/database.url"), "postgres://elsewhere/db").await;
    s.put(&format!("/config/dev/{service}/rate_limit.per_second"), "3").await;
    until("later change seen", Duration::from_secs(5), || config.current().rate_limit_per_second == 3).await;
    assert_eq!(config.start_value("database.url"), Some("postgres://from-etcd/db"));

    // Deleting the etcd value falls back to the files.
    let mut client = s.etcd.client();
    client.delete(format!("{}/config/dev/{service}/http.timeout_ms", s.etcd.root()), None).await.unwrap();
    until("back to global etcd", Duration::from_secs(5), || {
        config.current().http_timeout == Duration::from_millis(4321)
    })
    .await;
    s.cleanup().await;
}

#[tokio::test]
async fn without_etcd_the_files_and_environment_are_used() {
    // Nothing listens on this port: start-up must not fail or hang.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let started = Instant::now();
    let etcd = Etcd::connect(&url, "/nowhere", None).await.ok();
    let config = LiveConfig::start("gateway", Profile::Dev, etcd, CancellationToken::new()).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(config.current().http_timeout, Duration::from_secs(10), "defaults.toml [gateway]");
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn an_instance_whose_lease_was_lost_registers_again() {
    let s = Scratch::new().await;
    let resolver = Resolver::watch(s.etcd.clone(), s.stop.clone());
    let ttl = Duration::from_secs(3);
    let registration = Registration::start(s.etcd.clone(), "svc", "a", "http://127.0.0.1:3001", ttl);
    until("registered", Duration::from_secs(5), || resolver.instances("svc").len() == 1).await;
    // The lease disappears behind the instance's back (as when etcd lost its state).
    let mut client = s.etcd.client();
    let key = s.etcd.instance_key("svc", "a");
    let lease = client.get(key, None).await.unwrap().kvs()[0].lease();
    client.lease_revoke(lease).await.expect("revoke");
    until("dropped", Duration::from_secs(2), || resolver.instances("svc").is_empty()).await;
    until("back", Duration::from_secs(8), || resolver.instances("svc") == ["http://127.0.0.1:3001"]).await;
    registration.stop().await;
    s.cleanup().await;
}
