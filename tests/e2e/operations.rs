//! Operators: sagas searched over all of them (order id or its beginning, customer, status,
//! time), paged on the server with counts over everything the filter matches; actions refused
//! where they do not apply (with why), previewed in bulk, and admin only. (An action that does
//! apply, on a saga held at a step, is in the fault tests.)

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().expect("items").iter().map(|s| s["id"].as_str().expect("id").to_owned()).collect()
}

/// The saga is over and has nothing left in flight (commits and confirmations acknowledged).
fn quiet(s: &Value) -> bool {
    s["status"] == "CONFIRMED"
        && s["payment"] == "CONFIRMED"
        && s["lines"].as_array().is_some_and(|ls| ls.iter().all(|l| l["state"] == "COMMITTED"))
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn operators_find_sagas_by_business_ids_and_page_through_them() {
    let customer = new_customer().await;
    let product = new_product(100, 50).await;
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = place_order(&customer, &[(&product, 1)]).await;
        assert_eq!(final_order(&order).await["status"], "CONFIRMED");
        orders.push(order);
    }

    let (status, page) = get(&format!("/api/sagas?order_id={}", orders[0])).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), [orders[0].clone()]);
    let row = &page["items"][0];
    assert_eq!((row["status"].as_str(), row["customer_id"].as_str()), (Some("CONFIRMED"), Some(customer.as_str())));
    assert!(row["started_at"].is_string() && row["duration_ms"].as_i64().is_some_and(|d| d >= 0), "{row}");
    assert!(row["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{row}");
    // The beginning of an id finds it too (UUIDv7: the first characters are its time).
    let (_, page) = get(&format!("/api/sagas?order_id={}", &orders[0][..30])).await;
    assert!(ids(&page).contains(&orders[0]), "{page}");

    // By customer: newest first, counted over all; paged two at a time.
    let (_, page) = get(&format!("/api/sagas?customer_id={customer}")).await;
    let newest_first: Vec<String> = orders.iter().rev().cloned().collect();
    assert_eq!(ids(&page), newest_first);
    assert_eq!((page["total"].as_i64(), page["counts"]["CONFIRMED"].as_i64()), (Some(3), Some(3)), "{page}");
    let (_, first) = get(&format!("/api/sagas?customer_id={customer}&limit=2")).await;
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (_, second) = get(&format!("/api/sagas?customer_id={customer}&limit=2&after={next}")).await;
    assert_eq!([ids(&first), ids(&second)].concat(), newest_first);
    assert!(second["next"].is_null(), "{second}");

    // A status filter keeps the counts of the other statuses; a time range in the future finds none.
    let (_, rejected) = get(&format!("/api/sagas?customer_id={customer}&status=REJECTED")).await;
    assert_eq!((ids(&rejected).len(), rejected["total"].as_i64()), (0, Some(0)));
    assert_eq!(rejected["counts"]["CONFIRMED"].as_i64(), Some(3), "{rejected}");
    let (_, later) = get(&format!("/api/sagas?customer_id={customer}&from=2999-01-01T00:00:00Z")).await;
    assert_eq!(ids(&later).len(), 0);

    for bad in ["status=DONE", "limit=0", "limit=x", "colour=red", "after=garbage", "customer_id=x", "from=today"] {
        let (status, body) = get(&format!("/api/sagas?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {body}");
    }
}

#[tokio::test]
#[ignore = "needs the running stack: ./stack test"]
async fn actions_are_refused_where_they_do_not_apply_and_previewed_in_bulk() {
    let customer = new_customer().await;
    let product = new_product(100, 5).await;
    let order = place_order(&customer, &[(&product, 1)]).await;
    eventually(&format!("/api/sagas/{order}"), SETTLE, quiet).await;

    let why = json!({ "reason": "checking the operator API" });
    let (status, body) = post(&format!("/api/sagas/{order}/retry"), why.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("nothing to retry"), "{body}");
    let (status, body) = post(&format!("/api/sagas/{order}/compensate"), why.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(&format!("/api/sagas/{order}/retry"), json!({ "reason": " " })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let unknown = uuid::Uuid::now_v7();
    let (status, body) = post(&format!("/api/sagas/{unknown}/retry"), why.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let r = send(http_as(Some("alice")).post(format!("{}/api/sagas/{order}/retry", gateway())).json(&why)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let bulk = |preview: bool| {
        json!({ "action": "retry", "reason": "after the outage", "preview": preview,
                "filter": { "customer_id": customer } })
    };
    let (status, preview) = post("/api/sagas/actions", bulk(true)).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!((preview["matched"].as_i64(), preview["applied"].as_i64()), (Some(1), Some(0)), "{preview}");
    assert_eq!(preview["sample"], json!([order]));
    let (_, done) = post("/api/sagas/actions", bulk(false)).await;
    assert_eq!((done["matched"].as_i64(), done["applied"].as_i64()), (Some(1), Some(0)), "{done}");
    assert_eq!(done["refused"][0]["id"], order.as_str(), "{done}");
    // Nothing was recorded for refused actions.
    let (_, saga) = get(&format!("/api/sagas/{order}")).await;
    let history = saga["history"].to_string();
    assert!(!history.contains("retried by"), "{history}");
}
