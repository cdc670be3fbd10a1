//! How a client reaches Kafka, from one string (`SHOP_KAFKA_BROKERS`, a tool's `--brokers`):
//!
//! - `host:port[,host:port…]`: plain text, no login (the local stack's default);
//! - `<protocol>://[user:password@]host:port[,host:port…][?property=value&…]`, where the
//!   protocol is librdkafka's `security.protocol` (`ssl`, `sasl_ssl`, `sasl_plaintext`,
//!   `plaintext`), the user and password (percent-encoded) are the SASL login, and each query
//!   pair is set on the client as is (percent-decoded): `ssl.ca.location=/etc/kafka/ca.crt`,
//!   `sasl.mechanism=SCRAM-SHA-256`, …
//!
//! With a login the mechanism is SCRAM-SHA-512 unless the query names another. For example
//! `sasl_ssl://shop:secret@kafka-1:9094,kafka-2:9094?ssl.ca.location=/etc/kafka/ca.crt`.
//! A `sasl_` address without a login takes it from `SHOP_KAFKA_SASL_USERNAME`,
//! `SHOP_KAFKA_SASL_PASSWORD` (and `SHOP_KAFKA_SASL_MECHANISM`), the way libpq and sqlx take
//! `PGUSER`/`PGPASSWORD`: a password from a secret then never has to be percent-encoded.
//! Every Kafka client of the workspace starts from [`client_config`], so every one of them
//! (services, relay, DLQ tools, auditor, benchmarks, tests) connects the same way.

use anyhow::{Context, bail, ensure};
use percent_encoding::percent_decode_str;
use rdkafka::ClientConfig;

const PROTOCOLS: [&str; 4] = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
/// The SASL mechanism a login uses unless the query names one.
pub const DEFAULT_MECHANISM: &str = "SCRAM-SHA-512";

/// A client configuration with the brokers, the security protocol, the login and the extra
/// properties that `brokers` gives; callers add their own settings to it.
pub fn client_config(brokers: &str) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig::new();
    for (key, value) in properties(brokers)? {
        config.set(key, value);
    }
    Ok(config)
}

/// The librdkafka properties `brokers` stands for, in order.
pub fn properties(brokers: &str) -> anyhow::Result<Vec<(String, String)>> {
    properties_with(brokers, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The environment variables a `sasl_` address without a login takes it from.
pub const USERNAME_VAR: &str = "SHOP_KAFKA_SASL_USERNAME";
pub const PASSWORD_VAR: &str = "SHOP_KAFKA_SASL_PASSWORD";
pub const MECHANISM_VAR: &str = "SHOP_KAFKA_SASL_MECHANISM";

fn properties_with(brokers: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<(String, String)>> {
    let brokers = brokers.trim();
    let Some((scheme, rest)) = brokers.split_once("://") else {
        ensure!(!brokers.is_empty(), "no Kafka brokers given");
        return Ok(vec![("bootstrap.servers".into(), brokers.into())]);
    };
    let protocol = scheme.to_ascii_lowercase();
    ensure!(
        PROTOCOLS.contains(&protocol.as_str()),
        "Kafka address {:?}: the protocol must be one of {}, not {scheme:?}",
        redacted(brokers),
        PROTOCOLS.join(", ")
    );
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (login, hosts) = match authority.rsplit_once('@') {
        Some((login, hosts)) => (Some(login), hosts),
        None => (None, authority),
    };
    let hosts = hosts.trim_end_matches('/');
    ensure!(!hosts.is_empty(), "Kafka address {:?} names no broker", redacted(brokers));
    let mut out =
        vec![("bootstrap.servers".to_owned(), hosts.to_owned()), ("security.protocol".to_owned(), protocol.clone())];
    let sasl = protocol.starts_with("sasl_");
    if let Some(login) = login {
        ensure!(
            sasl,
            "Kafka address {:?}: a user and password need a sasl_ protocol (sasl_ssl or sasl_plaintext)",
            redacted(brokers)
        );
        let (user, password) = login.split_once(':').unwrap_or((login, ""));
        out.push(("sasl.username".into(), decode(user).context("the Kafka user")?));
        out.push(("sasl.password".into(), decode(password).context("the Kafka password")?));
    } else if sasl {
        let user = env(USERNAME_VAR).with_context(|| {
            format!("Kafka address {:?}: a sasl_ address needs a login, in it or in {USERNAME_VAR}", redacted(brokers))
        })?;
        out.push(("sasl.username".into(), user));
        out.push(("sasl.password".into(), env(PASSWORD_VAR).unwrap_or_default()));
    }
    let mut mechanism = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("Kafka address {:?}: {pair:?} is not property=value", redacted(brokers));
        };
        let key = decode(key)?;
        mechanism |= key == "sasl.mechanism" || key == "sasl.mechanisms";
        out.push((key, decode(value)?));
    }
    if sasl && !mechanism {
        out.push(("sasl.mechanism".into(), env(MECHANISM_VAR).unwrap_or_else(|| DEFAULT_MECHANISM.into())));
    }
    Ok(out)
}

/// `brokers` with its password replaced by `***`, for logs and errors.
pub fn redacted(brokers: &str) -> String {
    let Some((scheme, rest)) = brokers.split_once("://") else {
        return brokers.to_owned();
    };
    let (authority, query) = match rest.split_once('?') {
        Some((a, q)) => (a, format!("?{q}")),
        None => (rest, String::new()),
    };
    match authority.rsplit_once('@') {
        Some((login, hosts)) => {
            let user = login.split_once(':').map_or(login, |(user, _)| user);
            format!("{scheme}://{user}:***@{hosts}{query}")
        }
        None => brokers.to_owned(),
    }
}

fn decode(text: &str) -> anyhow::Result<String> {
    Ok(percent_decode_str(text).decode_utf8().context("not UTF-8 once percent-decoded")?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(brokers: &str) -> Vec<(String, String)> {
        properties_with(brokers, |_| None).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_plain_list_is_plain_text() {
        assert_eq!(
            props("127.0.0.1:9092,kafka-2:9092"),
            pairs(&[("bootstrap.servers", "127.0.0.1:9092,kafka-2:9092")])
        );
    }

    #[test]
    fn a_login_over_tls_with_a_ca() {
        assert_eq!(
            props("SASL_SSL://shop:s%40cret%3Ax@k1:9094,k2:9094?ssl.ca.location=/etc/ca%20dir/ca.crt"),
            pairs(&[
                ("bootstrap.servers", "k1:9094,k2:9094"),
                ("security.protocol", "sasl_ssl"),
                ("sasl.username", "shop"),
                ("sasl.password", "s@cret:x"),
                ("ssl.ca.location", "/etc/ca dir/ca.crt"),
                ("sasl.mechanism", DEFAULT_MECHANISM),
            ])
        );
    }

    #[test]
    fn the_query_may_name_the_mechanism_and_tls_needs_no_login() {
        let p = props("sasl_plaintext://u:p@k:9092?sasl.mechanism=SCRAM-SHA-256");
        assert_eq!(p.iter().filter(|(k, _)| k == "sasl.mechanism").count(), 1);
        assert!(p.contains(&("sasl.mechanism".into(), "SCRAM-SHA-256".into())));
        assert_eq!(props("ssl://k:9093"), pairs(&[("bootstrap.servers", "k:9093"), ("security.protocol", "ssl")]));
    }

    #[test]
    fn mistakes_are_named_without_the_password() {
        for (bad, says) in [
            ("tls://k:1", "protocol must be one of"),
            ("ssl://u:pw@k:1", "need a sasl_ protocol"),
            ("sasl_ssl://u:pw@", "names no broker"),
            ("sasl_ssl://u:pw@k:1?ssl.ca.location", "is not property=value"),
            ("sasl_ssl://k:1", "needs a login"),
            ("", "no Kafka brokers"),
        ] {
            let error = format!("{:#}", properties_with(bad, |_| None).unwrap_err());
            assert!(error.contains(says), "{bad:?}: {error}");
            assert!(!error.contains("pw"), "{bad:?} shows the password: {error}");
        }
    }

    #[test]
    fn a_login_not_in_the_address_comes_from_the_environment() {
        let env = |name: &str| match name {
            USERNAME_VAR => Some("order".to_owned()),
            PASSWORD_VAR => Some("p@ss:w/rd".to_owned()),
            MECHANISM_VAR => Some("SCRAM-SHA-256".to_owned()),
            _ => None,
        };
        assert_eq!(
            properties_with("sasl_ssl://k:9093?ssl.ca.location=/ca.crt", env).unwrap(),
            pairs(&[
                ("bootstrap.servers", "k:9093"),
                ("security.protocol", "sasl_ssl"),
                ("sasl.username", "order"),
                ("sasl.password", "p@ss:w/rd"),
                ("ssl.ca.location", "/ca.crt"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
            ])
        );
        // A login in the address wins; plain text takes none.
        assert!(properties_with("sasl_ssl://u:p@k:9093", env).unwrap().contains(&("sasl.username".into(), "u".into())));
        assert_eq!(properties_with("k:9092", env).unwrap().len(), 1);
    }

    #[test]
    fn redaction_keeps_everything_but_the_password() {
        assert_eq!(redacted("sasl_ssl://shop:secret@k:9094?x=1"), "sasl_ssl://shop:***@k:9094?x=1");
        assert_eq!(redacted("k:9092"), "k:9092");
        assert_eq!(redacted("ssl://k:9093"), "ssl://k:9093");
    }
}
