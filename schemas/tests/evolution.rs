//! One real evolution: `shop.order.OrderRejected` gained an optional `code`. Records and stored
//! events written before it still load, through the same resolution the codec uses.

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use domain::order::OrderEvent;
use domain::values::OrderId;
use schemas::codec::{decode_body, reader_schema, resolve};
use schemas::compat::check_backward;
use schemas::records::{OrderRejected, Record};
use schemas::{Message, convert};

const V1: &str = include_str!("fixtures/OrderRejected.v1.avsc");

fn v1() -> Schema {
    Schema::parse_str(V1).unwrap()
}

fn v1_record(order_id: &str, reason: &str) -> Vec<u8> {
    let value = Value::Record(vec![
        ("order_id".into(), Value::String(order_id.into())),
        ("reason".into(), Value::String(reason.into())),
    ]);
    GenericDatumWriter::builder(&v1()).build().unwrap().write_value_to_vec(value).unwrap()
}

#[test]
fn the_change_passes_the_evolution_rule() {
    assert_eq!(check_backward(V1, OrderRejected::AVSC), Ok(()));
}

#[test]
fn an_old_kafka_record_decodes_with_no_code() {
    let bytes = v1_record("o1", "out of stock");
    let message = decode_body(&v1(), &bytes).unwrap();
    assert_eq!(
        message,
        Message::OrderRejected(OrderRejected { order_id: "o1".into(), reason: "out of stock".into(), code: None })
    );
}

#[test]
fn a_new_record_round_trips_its_code() {
    let sent = Message::OrderRejected(OrderRejected {
        order_id: "o1".into(),
        reason: "payment declined".into(),
        code: Some("PAYMENT_DECLINED".into()),
    });
    let writer = reader_schema(OrderRejected::FULL_NAME).unwrap();
    let bytes =
        GenericDatumWriter::builder(writer).build().unwrap().write_value_to_vec(sent.to_value().unwrap()).unwrap();
    assert_eq!(decode_body(writer, &bytes).unwrap(), sent);

    let none = Message::OrderRejected(OrderRejected { order_id: "o2".into(), reason: "timeout".into(), code: None });
    let bytes =
        GenericDatumWriter::builder(writer).build().unwrap().write_value_to_vec(none.to_value().unwrap()).unwrap();
    assert_eq!(decode_body(writer, &bytes).unwrap(), none);
}

/// A consumer still built with v1 reads a v2 record: the new field is dropped, nothing fails.
#[test]
fn an_old_reader_drops_the_new_field() {
    let new = Message::OrderRejected(OrderRejected {
        order_id: "o1".into(),
        reason: "no stock".into(),
        code: Some("INSUFFICIENT_STOCK".into()),
    });
    let writer = reader_schema(OrderRejected::FULL_NAME).unwrap();
    let bytes =
        GenericDatumWriter::builder(writer).build().unwrap().write_value_to_vec(new.to_value().unwrap()).unwrap();
    let value = resolve(writer, &v1(), &bytes).unwrap();
    assert_eq!(
        value,
        Value::Record(vec![
            ("order_id".into(), Value::String("o1".into())),
            ("reason".into(), Value::String("no stock".into()))
        ])
    );
}

/// The saga's outbox keeps records as JSON: rows written before `code` existed still load.
#[test]
fn an_old_outbox_row_loads_with_no_code() {
    let row = serde_json::json!({ "order_id": "o1", "reason": "out of stock" });
    let message = Message::from_json(OrderRejected::FULL_NAME, row).unwrap();
    assert_eq!(
        message,
        Message::OrderRejected(OrderRejected { order_id: "o1".into(), reason: "out of stock".into(), code: None })
    );
}

/// Events stored by the order service before the change still deserialize and still go out.
#[test]
fn an_old_stored_domain_event_still_loads_and_converts() {
    let stored = r#"{"OrderRejected":{"reason":"out of stock"}}"#;
    let event: OrderEvent = serde_json::from_str(stored).unwrap();
    let id = OrderId::new();
    let Message::OrderRejected(record) = convert::order_event(id, &event) else { panic!("not an OrderRejected") };
    assert_eq!(record, OrderRejected { order_id: id.to_string(), reason: "out of stock".into(), code: None });
}

#[test]
fn an_unknown_record_is_reported_as_such() {
    let other = Schema::parse_str(&V1.replace("OrderRejected", "OrderVanished")).unwrap();
    let err = decode_body(&other, &v1_record("o1", "x")).unwrap_err();
    assert_eq!(err, schemas::DecodeError::UnknownRecord("shop.order.OrderVanished".into()));
}

#[test]
fn bytes_that_do_not_fit_the_writer_are_malformed() {
    let err = decode_body(&v1(), &[0x07]).unwrap_err();
    assert!(matches!(err, schemas::DecodeError::Malformed(_)), "{err:?}");
}
