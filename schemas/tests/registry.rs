//! Against a running schema registry (`cargo test -p schemas -- --ignored`; URL from
//! `SHOP_SCHEMA_REGISTRY_URL`): a record framed with the id of the OLD `OrderRejected` schema
//! decodes through [`Codec`] into today's type.

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
use schemas::records::{OrderRejected, Record};
use schemas::{Codec, Message};

const V1: &str = include_str!("fixtures/OrderRejected.v1.avsc");

fn url() -> String {
    std::env::var("SHOP_SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:8090/apis/ccompat/v7".into())
}

fn framed(id: u32, body: Vec<u8>) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend(id.to_be_bytes());
    bytes.extend(body);
    bytes
}

#[tokio::test]
#[ignore = "needs a schema registry"]
async fn an_old_framed_record_decodes_into_the_new_type() {
    let settings = SrSettings::new_builder(url()).no_proxy().build().unwrap();
    // A throwaway subject, so the real subjects' version history is left alone.
    let subject = format!("schemas-evolution-test-{}-{}", uuid::Uuid::new_v4(), OrderRejected::FULL_NAME);
    let register = |avsc: &str| {
        post_schema(&settings, subject.clone(), SuppliedSchema::new(None, SchemaType::Avro, avsc.to_owned()))
    };
    let v1 = register(V1).await.unwrap();
    let v2 = register(OrderRejected::AVSC).await.unwrap();
    assert_ne!(v1.id, v2.id);

    let body = GenericDatumWriter::builder(&Schema::parse_str(V1).unwrap())
        .build()
        .unwrap()
        .write_value_to_vec(Value::Record(vec![
            ("order_id".into(), Value::String("o1".into())),
            ("reason".into(), Value::String("out of stock".into())),
        ]))
        .unwrap();
    let codec = Codec::new(&url()).unwrap();
    let message = codec.decode(&framed(v1.id, body)).await.unwrap();
    assert_eq!(
        message,
        Message::OrderRejected(OrderRejected { order_id: "o1".into(), reason: "out of stock".into(), code: None })
    );

    let sent = Message::OrderRejected(OrderRejected {
        order_id: "o2".into(),
        reason: "declined".into(),
        code: Some("PAYMENT_DECLINED".into()),
    });
    let body = GenericDatumWriter::builder(&Schema::parse_str(OrderRejected::AVSC).unwrap())
        .build()
        .unwrap()
        .write_value_to_vec(sent.to_value().unwrap())
        .unwrap();
    assert_eq!(codec.decode(&framed(v2.id, body)).await.unwrap(), sent);
}

/// Forwards connections to the registry, except that it closes the first `drop_first` of them
/// unanswered: what a lookup meets when a keep-alive connection dies under it. Returns its
/// base URL.
async fn flaky_front(drop_first: usize) -> String {
    let registry = reqwest::Url::parse(&url()).unwrap();
    let upstream = format!("{}:{}", registry.host_str().unwrap(), registry.port_or_known_default().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let (mut inbound, _) = listener.accept().await.unwrap();
            seen += 1;
            if seen <= drop_first {
                drop(inbound);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let mut through = registry;
    through.set_port(Some(front.port())).unwrap();
    through.as_str().to_owned()
}

#[tokio::test]
#[ignore = "needs a schema registry"]
async fn a_failed_lookup_is_settled_by_asking_the_registry() {
    use schemas::DecodeError;
    // An id no registry issued: the lookup's connection dies, the direct question gets the 404,
    // so the record is known to be poison at once instead of being retried.
    let codec = Codec::new(&flaky_front(1).await).unwrap();
    match codec.decode(&framed(999_999, b"junk".to_vec())).await {
        Err(DecodeError::UnknownSchema(m)) => assert!(m.contains("999999"), "{m}"),
        other => panic!("expected an unknown schema id, got {other:?}"),
    }

    // A known id whose lookup died: transient, retried, and the retry decodes.
    let settings = SrSettings::new_builder(url()).no_proxy().build().unwrap();
    let subject = format!("schemas-lookup-test-{}-{}", uuid::Uuid::new_v4(), OrderRejected::FULL_NAME);
    let id =
        post_schema(&settings, subject, SuppliedSchema::new(None, SchemaType::Avro, OrderRejected::AVSC.to_owned()))
            .await
            .unwrap()
            .id;
    let sent = Message::OrderRejected(OrderRejected { order_id: "o3".into(), reason: "late".into(), code: None });
    let body = GenericDatumWriter::builder(&Schema::parse_str(OrderRejected::AVSC).unwrap())
        .build()
        .unwrap()
        .write_value_to_vec(sent.to_value().unwrap())
        .unwrap();
    let codec = Codec::new(&flaky_front(1).await).unwrap();
    let first = codec.decode(&framed(id, body.clone())).await;
    assert!(matches!(&first, Err(e) if !e.is_permanent()), "a dropped lookup of a known id is transient: {first:?}");
    assert_eq!(codec.decode(&framed(id, body)).await.unwrap(), sent);
}
