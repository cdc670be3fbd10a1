//! TLS and logins, as production connects: the local stack's PostgreSQL and Kafka also offer
//! TLS with a CA the launcher made for the data folder (`<data>/tls/ca.crt`), PostgreSQL with a
//! user that may log in only over TLS and Kafka with a SASL_SSL listener that takes SCRAM logins
//! (`tools/stack/ports.toml`, `[tls]`). A service pointed at them by its settings alone works.

use crate::harness::{brokers, service_http, unique};
use e2e_tests::{data_dir, repo};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct Table {
    tls: Logins,
}

#[derive(serde::Deserialize)]
struct Logins {
    postgres_user: String,
    postgres_password: String,
    kafka_user: String,
    kafka_password: String,
}

fn logins() -> Logins {
    let text = std::fs::read_to_string(repo().join("tools/stack/ports.toml")).expect("ports.toml");
    toml::from_str::<Table>(&text).expect("ports.toml has a [tls] table").tls
}

fn ca() -> PathBuf {
    let ca = data_dir().join("tls/ca.crt");
    assert!(ca.exists(), "no {} (./stack up makes it)", ca.display());
    ca
}

/// The TLS-only user's URL for `database` with the given `sslmode` (and the stack's CA).
fn postgres_url(database: &str, sslmode: &str, root: &std::path::Path) -> String {
    let l = logins();
    format!(
        "postgres://{}:{}@{}/{database}?sslmode={sslmode}&sslrootcert={}",
        l.postgres_user,
        l.postgres_password,
        runtime::config::local("postgres"),
        root.display()
    )
}

/// The SASL_SSL listener with the given password.
fn sasl_ssl(password: &str) -> String {
    format!(
        "sasl_ssl://{}:{password}@{}?ssl.ca.location={}",
        logins().kafka_user,
        runtime::config::local("kafka_sasl_ssl"),
        ca().display()
    )
}

async fn ssl_of_this_session(pool: &PgPool) -> (bool, String) {
    sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("pg_stat_ssl")
}

#[tokio::test]
#[ignore = "needs the running stack"]
async fn postgres_verifies_the_server_and_refuses_the_tls_user_in_plain_text() {
    let ca = ca();
    let pool = PgPool::connect(&postgres_url("postgres", "verify-full", &ca)).await.expect("verify-full with the CA");
    let (ssl, version) = ssl_of_this_session(&pool).await;
    assert!(ssl, "the session is not encrypted");
    assert!(version.starts_with("TLSv1."), "{version}");

    // Plain text: the server refuses this user (pg_hba: hostnossl … reject), 28000.
    let refused = PgPool::connect(&postgres_url("postgres", "disable", &ca)).await.expect_err("plain text");
    let code = refused.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("28000"), "{refused}");

    // Verification is real: a server certificate the given roots did not sign is refused.
    let other_roots = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    if other_roots.exists() {
        let error = PgPool::connect(&postgres_url("postgres", "verify-full", &other_roots))
            .await
            .expect_err("a server the roots do not vouch for");
        assert!(error.as_database_error().is_none(), "refused by the server, not the client: {error}");
    }
    // The options parse the way the services read their setting.
    let options = PgConnectOptions::from_str(&postgres_url("shop_x", "verify-full", &ca)).expect("options");
    assert_eq!(options.get_database(), Some("shop_x"));
}

#[tokio::test]
#[ignore = "needs the running stack"]
async fn kafka_takes_a_scram_login_over_tls_and_refuses_others() {
    let secure = sasl_ssl(&logins().kafka_password);
    let topic = unique("tls-test");
    messaging::kafka::create_missing(
        &secure,
        &[messaging::kafka::TopicSpec { name: topic.clone(), partitions: 1, config: vec![] }],
    )
    .await
    .expect("topic created over SASL_SSL");
    let producer = messaging::kafka::producer(&secure).expect("producer");
    producer
        .send(rdkafka::producer::FutureRecord::to(&topic).key("k").payload("over TLS"), Duration::from_secs(20))
        .await
        .map_err(|(e, _)| e)
        .expect("produced over SASL_SSL");
    let records = messaging::topic::read(&secure, &topic, &Default::default(), true, Duration::from_secs(30))
        .await
        .expect("read over SASL_SSL");
    assert_eq!(records.iter().map(|r| r.payload.as_deref()).collect::<Vec<_>>(), [Some(&b"over TLS"[..])]);
    // The same record through the plain listener: one broker, two ways in.
    let plain = messaging::topic::read(&brokers(), &topic, &Default::default(), true, Duration::from_secs(30))
        .await
        .expect("read in plain text");
    assert_eq!(plain.len(), 1);

    // The client sees only a failed transport; the broker's log says why it refused.
    let log = data_dir().join("logs/kafka.log");
    for (what, address, reason) in [
        ("a wrong password", sasl_ssl("not-the-password"), "invalid credentials with SASL mechanism SCRAM-SHA-512"),
        ("plain text to the TLS port", runtime::config::local("kafka_sasl_ssl"), "SSL handshake failed"),
    ] {
        let seen = std::fs::metadata(&log).map_or(0, |m| m.len());
        let error = messaging::topic::names(&address).await.expect_err(what);
        println!("{what}: {error:#}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read(&log).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(usize::try_from(seen).expect("size")..).unwrap_or_default());
            if new.lines().any(|l| l.contains("Failed authentication") && l.contains(reason)) {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: the broker logged no refusal ({reason})");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A customer service started with TLS settings alone (its database over `verify-full` as the
/// TLS-only user, Kafka over SASL_SSL) registers a customer, whose event reaches the topic.
#[tokio::test]
#[ignore = "needs the running stack"]
async fn a_service_runs_over_tls_by_configuration() {
    let ca = ca();
    let database = "shop_customer_tls";
    let (_child, base) = start(
        "customer-service",
        &[
            ("SHOP_DATABASE_URL", &postgres_url(database, "verify-full", &ca)),
            ("SHOP_KAFKA_BROKERS", &sasl_ssl(&logins().kafka_password)),
        ],
    )
    .await;
    let email = format!("{}@example.com", unique("tls"));
    let r = service_http()
        .post(format!("{base}/customers"))
        .json(&json!({ "name": "Over TLS", "email": email }))
        .send()
        .await
        .expect("POST /customers");
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().expect("id").to_owned();

    // Its event on the topic (read in plain text), sent by its relay over SASL_SSL.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records =
            messaging::topic::read(&brokers(), "customer.events", &Default::default(), true, Duration::from_secs(30))
                .await
                .expect("customer.events");
        if records.iter().any(|r| r.key_text().as_deref() == Some(id.as_str())) {
            break;
        }
        assert!(Instant::now() < deadline, "customer {id}'s event never reached customer.events");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And its database sessions are encrypted, as the TLS-only user.
    let admin = PgPool::connect(&format!("{}/postgres", runtime::config::local_postgres())).await.expect("admin");
    let encrypted: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1 AND a.usename = $2",
    )
    .bind(database)
    .bind(logins().postgres_user)
    .fetch_all(&admin)
    .await
    .expect("sessions");
    assert!(!encrypted.is_empty() && encrypted.iter().all(|e| *e), "sessions of {database}: {encrypted:?}");
}

/// The gateway fetches the realm's keys over HTTPS (Keycloak's TLS port, the stack's CA given
/// the standard OpenSSL way, `SSL_CERT_FILE`): a signed-in call passes. Without the CA the
/// certificate is not trusted, the keys cannot be fetched and the call is refused.
#[tokio::test]
#[ignore = "needs the running stack"]
async fn the_gateway_fetches_the_realm_keys_over_https() {
    let ca = ca();
    let jwks =
        format!("https://{}/realms/shop/protocol/openid-connect/certs", runtime::config::local("keycloak_https"));
    let other_roots = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    for (roots, expected) in [(ca.as_path(), StatusCode::OK), (other_roots.as_path(), StatusCode::SERVICE_UNAVAILABLE)]
    {
        let (_child, base) =
            start("gateway", &[("SHOP_JWT_JWKS_URL", jwks.as_str()), ("SSL_CERT_FILE", &roots.display().to_string())])
                .await;
        let r = crate::harness::http().get(format!("{base}/api/customers")).send().await.expect("GET");
        assert_eq!(
            r.status(),
            expected,
            "with the roots of {}: {}",
            roots.display(),
            r.text().await.unwrap_or_default()
        );
    }
}

/// Discovery and central configuration over TLS: etcd's TLS port with the stack's CA answers;
/// without the CA the connection is refused.
#[tokio::test]
#[ignore = "needs the running stack"]
async fn etcd_over_tls_with_the_ca() {
    let url = format!("https://{}", runtime::config::local("etcd_tls"));
    let ca = ca().display().to_string();
    let etcd = runtime::discovery::Etcd::connect(&url, "/tls-test", Some(&ca)).await.expect("connect");
    etcd.ping().await.expect("etcd answers over TLS");
    let untrusted = match runtime::discovery::Etcd::connect(&url, "/tls-test", None).await {
        Ok(etcd) => etcd.ping().await.err(),
        Err(e) => Some(e),
    };
    assert!(untrusted.is_some(), "etcd answered a client that does not trust its certificate");
}

/// The read models' server over TLS: the driver's `tls=true&tlsCAFile=` reaches FerretDB's TLS
/// port; without the CA the server is not trusted.
#[tokio::test]
#[ignore = "needs the running stack"]
async fn mongodb_over_tls_with_the_ca() {
    let address = runtime::config::local("mongo_tls");
    let uri = |extra: &str| {
        format!("mongodb://{address}/?directConnection=true&serverSelectionTimeoutMS=3000&tls=true{extra}")
    };
    let ping = |uri: String| async move {
        let client = mongodb::Client::with_uri_str(&uri).await?;
        client.database("admin").run_command(mongodb::bson::doc! { "ping": 1 }).await
    };
    ping(uri(&format!("&tlsCAFile={}", ca().display()))).await.expect("ping over TLS");
    assert!(ping(uri("")).await.is_err(), "FerretDB answered a client that does not trust its certificate");
}

/// Start a binary of the stack on a free port with `env` (discovery off: no one else should find
/// it); answers once its `/health` does. The process ends with the returned guard.
async fn start(name: &str, env: &[(&str, &str)]) -> (Service, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let mut command = Command::new(binary(name));
    command
        .env("SHOP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SHOP_DISCOVERY", "off")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = Service(command.spawn().unwrap_or_else(|e| panic!("{name}: {e}")));
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while service_http().get(format!("{base}/health")).send().await.map_or(true, |r| !r.status().is_success()) {
        assert!(child.0.try_wait().expect("wait").is_none(), "{name} exited");
        assert!(started.elapsed() < Duration::from_secs(90), "{name} did not become healthy");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (child, base)
}

/// The service binary the stack runs (`./stack up --release` records its profile).
fn binary(name: &str) -> PathBuf {
    let profile = std::fs::read_to_string(data_dir().join("run/build-profile")).unwrap_or_default();
    let profile = if profile.trim() == "release" { "release" } else { "debug" };
    repo().join("target").join(profile).join(name)
}

/// A child process killed when the test ends, however it ends.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
