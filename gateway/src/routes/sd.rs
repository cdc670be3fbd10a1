//! `GET /internal/sd`: the registered instances as Prometheus HTTP service discovery targets
//! (`[{"targets": ["host:port"], "labels": {"service": "..."}}]`), so Prometheus scrapes what
//! runs rather than a fixed list. A service with no registered instance (etcd down, or a build
//! that does not register) is listed at its configured URL, as callers would reach it. Off when
//! the feature flag `service_discovery_targets` is.

use crate::downstream::Service;
use crate::state::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use runtime::http::ApiError;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const FEATURE: &str = "service_discovery_targets";

pub fn router() -> Router<AppState> {
    Router::new().route("/internal/sd", get(targets))
}

async fn targets(State(s): State<AppState>) -> Response {
    if !s.feature(FEATURE) {
        return ApiError::not_found("service discovery targets are switched off").into_response();
    }
    let mut registered = s.downstreams.resolver().snapshot();
    for service in Service::ALL {
        registered.entry(service.name().to_owned()).or_insert_with(|| {
            let url = s.downstreams.base_url(service).to_owned();
            BTreeMap::from([(url.clone(), url)])
        });
    }
    Json(sd_groups(&registered)).into_response()
}

/// One target group per instance, labelled with its service.
pub fn sd_groups(registered: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Value> {
    let mut groups = Vec::new();
    for (service, instances) in registered {
        for url in instances.values() {
            let host_port = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
            let host_port = host_port.split('/').next().unwrap_or(host_port);
            groups.push(json!({ "targets": [host_port], "labels": { "service": service } }));
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_per_instance_with_its_service() {
        let registered = BTreeMap::from([(
            "product".to_owned(),
            BTreeMap::from([
                ("a".to_owned(), "http://127.0.0.1:8082".to_owned()),
                ("b".to_owned(), "http://127.0.0.1:9999/".to_owned()),
            ]),
        )]);
        assert_eq!(
            sd_groups(&registered),
            vec![
                json!({ "targets": ["127.0.0.1:8082"], "labels": { "service": "product" } }),
                json!({ "targets": ["127.0.0.1:9999"], "labels": { "service": "product" } }),
            ]
        );
    }
}
