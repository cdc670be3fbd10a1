//! Service discovery and central configuration on the running stack: a second product instance
//! joins, is SIGKILLed, and callers route around it until its lease runs out; the gateway's rate
//! limit follows a change in etcd without a restart.

use crate::harness::*;
use etcd_client::{Client, DeleteOptions, GetOptions};
use reqwest::StatusCode;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn etcd_url() -> String {
    std::env::var("SHOP_ETCD_URL").unwrap_or_else(|_| format!("http://{}", runtime::config::local("etcd")))
}

async fn etcd() -> Client {
    Client::connect([etcd_url()], None).await.expect("etcd")
}

/// Registered base URLs of a service.
async fn registered(name: &str) -> Vec<String> {
    let mut client = etcd().await;
    let answer = client
        .get(format!("/shop/services/{name}/"), Some(GetOptions::new().with_prefix()))
        .await
        .expect("listing the registry");
    answer.kvs().iter().map(|kv| kv.value_str().unwrap_or_default().to_owned()).collect()
}

fn binary(name: &str) -> std::path::PathBuf {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_owned();
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), Into::into);
    target.join("debug").join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// A service process this test started; SIGKILLed when dropped, whatever happened.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn a_killed_instance_drops_out_while_every_request_keeps_succeeding() {
    let customer = new_customer().await;
    let product = new_product(1, 10_000).await;
    eventually(&format!("/api/products/{product}"), SETTLE, |_| true).await;

    // A second product instance: same database and Kafka, its own port.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(std::env::temp_dir().join(format!("product-{port}.log"))).expect("log file");
    let second = Command::new(binary("product-service"))
        .env("SHOP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        // HTTP only: killed while in the consumer group, it would hold its share of
        // product.commands for the session timeout and stall the sagas of the tests beside it.
        .env("SHOP_CONSUMERS", "off")
        .env("SHOP_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting a second product-service");
    let mut second = Spawned(second);
    let start = Instant::now();
    loop {
        let instances = registered("product").await;
        if instances.len() >= 2 && instances.contains(&url) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "two product instances never registered: {instances:?}");
        assert!(second.0.try_wait().unwrap().is_none(), "the second product-service exited");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let health = http().get(format!("{url}/health")).send().await.expect("second instance health");
    assert_eq!(health.status(), StatusCode::OK);
    // Both instances serve: some product reads go to each.
    for _ in 0..4 {
        let (status, body) = get(&format!("/api/products/{product}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // SIGKILL: no deregistration; its key stays until the lease runs out.
    second.0.kill().expect("SIGKILL");
    second.0.wait().expect("reaped");
    let killed = Instant::now();
    assert!(registered("product").await.contains(&url), "the killed instance is still registered for now");

    let (mut reads, mut orders) = (0, 0);
    let mut gone_at = None;
    while killed.elapsed() < Duration::from_secs(30) {
        let (status, body) = get(&format!("/api/products/{product}")).await;
        assert_eq!(status, StatusCode::OK, "product read {reads} after the kill failed: {body}");
        reads += 1;
        if reads % 3 == 0 {
            let (status, body) = post(
                "/api/orders",
                serde_json::json!({ "customer_id": customer, "items": [{ "product_id": product, "quantity": 1 }] }),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED, "order {orders} after the kill failed: {body}");
            orders += 1;
        }
        if gone_at.is_none() && !registered("product").await.contains(&url) {
            gone_at = Some(killed.elapsed());
        }
        // Keep going a little after the lease ran out, and until enough requests went through
        // (a busy machine answers each more slowly: the window alone may hold too few).
        let enough = reads >= 20 && orders >= 5;
        if enough && gone_at.is_some_and(|at| killed.elapsed() > at + Duration::from_secs(2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_at = gone_at.expect("the killed instance's lease never ran out");
    assert!(reads >= 20 && orders >= 5, "too few requests: {reads} reads, {orders} orders");
    assert!(gone_at < Duration::from_secs(15), "lease ran out only after {gone_at:?}");
    assert_eq!(registered("product").await.len(), 1);
}

const RATE_LIMIT_KEYS: [&str; 2] =
    ["/shop/config/dev/gateway/rate_limit.per_second", "/shop/config/dev/gateway/rate_limit.burst"];

/// Puts the keys' original values back when dropped, also when the test fails.
struct RestoreConfig(Vec<(String, Option<String>)>);

impl RestoreConfig {
    async fn save(keys: &[&str]) -> Self {
        let mut client = etcd().await;
        let mut saved = Vec::new();
        for key in keys {
            let answer = client.get(*key, None).await.expect("reading the config");
            saved.push(((*key).to_owned(), answer.kvs().first().map(|kv| kv.value_str().unwrap().to_owned())));
        }
        Self(saved)
    }
}

impl Drop for RestoreConfig {
    fn drop(&mut self) {
        let saved = std::mem::take(&mut self.0);
        // Drop cannot await: restore on a runtime of its own.
        let restored = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                let mut client = etcd().await;
                for (key, value) in saved {
                    match value {
                        Some(v) => client.put(key, v, None).await.map(|_| ()),
                        None => client.delete(key, None::<DeleteOptions>).await.map(|_| ()),
                    }
                    .expect("restoring the config");
                }
            });
        })
        .join();
        if restored.is_err() && !std::thread::panicking() {
            panic!("restoring the gateway's rate limit failed");
        }
    }
}

/// This test's own client address: the limit counts per client IP, so its bucket is not the one
/// of the tests running beside it (they come from 127.0.0.1).
fn own_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

/// A request the gateway answers itself (400: not an id), so only the rate limit can refuse it.
async fn status_of(client: &reqwest::Client) -> StatusCode {
    client.get(format!("{}/api/products/not-an-id", gateway())).send().await.expect("GET").status()
}

const ALLOWED: StatusCode = StatusCode::BAD_REQUEST;

/// Low enough for this test to run out of its burst in a moment, high enough that the tests
/// running beside it (a fresh bucket of their own when the limit changes) are unlikely to
/// during the fraction of a second it is in force.
const LOW_BURST: u32 = 30;

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn the_gateway_follows_a_rate_limit_change_in_etcd_without_a_restart() {
    let client = own_client();
    let restore = RestoreConfig::save(&RATE_LIMIT_KEYS).await;
    assert_eq!(status_of(&client).await, ALLOWED);
    let mut etcd = etcd().await;
    etcd.put(RATE_LIMIT_KEYS[0], "1", None).await.unwrap();
    etcd.put(RATE_LIMIT_KEYS[1], LOW_BURST.to_string(), None).await.unwrap();
    // 200 requests a second: never refused under the usual limit (500 a second), out of the low
    // burst within a fraction of a second.
    let start = Instant::now();
    let mut sent = 0;
    loop {
        sent += 1;
        if status_of(&client).await == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no 429 after lowering the limit in etcd ({sent} sent)");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(restore);
    let start = Instant::now();
    loop {
        if status_of(&client).await == ALLOWED {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still refused after restoring the limit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A burst well past the low limit goes through again.
    for _ in 0..2 * LOW_BURST {
        assert_eq!(status_of(&client).await, ALLOWED);
    }
}
