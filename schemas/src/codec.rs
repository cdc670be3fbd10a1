//! Confluent wire format through a schema registry: `0x00`, 4-byte schema id, Avro body.
//! Encoding registers the record's schema under `<topic>-<full record name>` on first use.
//! Decoding reads the body with the writer's schema (fetched by id) and resolves it to the schema
//! this build committed for that record ([`resolve`]), so records written by older or newer
//! producers load as long as the change was backward compatible (`schemas check`).

use crate::records::{ALL_RECORDS, Message};
use crate::topics::Topic;
use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("avro: {0}")]
    Avro(String),
}

/// Why a payload could not be turned into a [`Message`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not Confluent-framed Avro, or bytes that do not fit the writer schema. Never retried.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// The registry does not know the schema id. Never retried.
    #[error("unknown schema id: {0}")]
    UnknownSchema(String),
    /// A record type this build does not know. Never retried.
    #[error("unknown record type {0}")]
    UnknownRecord(String),
    /// A well-formed record whose content breaks the rules (e.g. an id that is not a UUID).
    #[error("invalid content: {0}")]
    Invalid(String),
    /// The registry could not be reached; worth retrying.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
}

impl DecodeError {
    /// Permanent errors go straight to the DLQ.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DecodeError::Unavailable(_))
    }
}

pub struct Codec {
    url: String,
    http: reqwest::Client,
    settings: SrSettings,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
}

impl Codec {
    /// `url` is the registry's Confluent API base, e.g. `http://127.0.0.1:8090/apis/ccompat/v7`.
    pub fn new(url: &str) -> Result<Self, EncodeError> {
        let url = url.trim_end_matches('/').to_owned();
        let settings = SrSettings::new_builder(url.clone())
            .set_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| EncodeError::Registry(e.to_string()))?;
        Ok(Self {
            url,
            http: reqwest::Client::builder().no_proxy().build().map_err(|e| EncodeError::Registry(e.to_string()))?,
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings.clone()),
            settings,
        })
    }

    pub fn subject(topic: Topic, full_name: &str) -> String {
        format!("{}-{}", topic.name(), full_name)
    }

    fn strategy(message: &Message) -> SubjectNameStrategy {
        SubjectNameStrategy::TopicRecordNameStrategyWithSchema(
            message.topic().name().to_owned(),
            SuppliedSchema::new(Some(message.full_name().to_owned()), SchemaType::Avro, message.avsc().to_owned()),
        )
    }

    /// Register every schema of the given topics (idempotent: the registry returns the same id).
    pub async fn register(&self, topics: &[Topic]) -> Result<usize, EncodeError> {
        let mut n = 0;
        for (full_name, avsc, topic) in ALL_RECORDS.iter().filter(|(_, _, t)| topics.contains(t)) {
            let schema = SuppliedSchema::new(Some((*full_name).to_owned()), SchemaType::Avro, (*avsc).to_owned());
            post_schema(&self.settings, Self::subject(*topic, full_name), schema)
                .await
                .map_err(|e| EncodeError::Registry(format!("{}: {e}", Self::subject(*topic, full_name))))?;
            n += 1;
        }
        Ok(n)
    }

    pub async fn encode(&self, message: &Message) -> Result<Vec<u8>, EncodeError> {
        let value = message.to_value().map_err(|e| EncodeError::Avro(e.to_string()))?;
        self.encoder.encode_value(value, &Self::strategy(message)).await.map_err(|e| {
            if e.retriable {
                self.encoder.remove_errors_from_cache();
            }
            EncodeError::Registry(e.to_string())
        })
    }

    pub async fn decode(&self, bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(DecodeError::Malformed(format!(
                "not Confluent-framed Avro ({} bytes, first byte {:?})",
                bytes.len(),
                bytes.first()
            )));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let writer = match self.decoder.get_schema(id).await {
            Ok(s) => s,
            Err(e) => return Err(self.classify(id, e).await),
        };
        decode_body(&writer.parsed, &bytes[5..]).map_err(|e| match e {
            DecodeError::Malformed(m) => DecodeError::Malformed(format!("schema id {id}: {m}")),
            other => other,
        })
    }

    /// Tell an unknown schema id from a body that does not fit a known schema, by asking the
    /// registry directly; anything unclear is treated as transient and retried. The question is
    /// asked also when the lookup failed in a way that may pass (a dropped keep-alive connection,
    /// a timeout, a 503): a registry that answers it settles an unknown id on the first attempt,
    /// one that knows the id means the lookup was the transient part.
    async fn classify(&self, id: u32, e: SRCError) -> DecodeError {
        self.decoder.remove_errors_from_cache();
        let text = e.to_string();
        let url = format!("{}/schemas/ids/{id}", self.url);
        match self.http.get(&url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                DecodeError::UnknownSchema(format!("the registry has no schema with id {id}"))
            }
            Ok(r) if r.status().is_success() && !e.retriable => {
                DecodeError::Malformed(format!("schema id {id}: {text}"))
            }
            Ok(r) if r.status().is_success() => DecodeError::Unavailable(text),
            Ok(r) => DecodeError::Unavailable(format!("registry answered {} for schema {id}", r.status())),
            Err(err) => DecodeError::Unavailable(format!("registry unreachable: {err} (lookup: {text})")),
        }
    }
}

/// The committed schema of every record this build knows, by full name: the reader side of
/// schema resolution.
static READER_SCHEMAS: LazyLock<HashMap<&'static str, Schema>> = LazyLock::new(|| {
    ALL_RECORDS
        .iter()
        .map(|(name, avsc, _)| (*name, Schema::parse_str(avsc).expect("committed .avsc parses (tested in records)")))
        .collect()
});

/// The schema this build reads `full_name` records with, if it knows the record.
pub fn reader_schema(full_name: &str) -> Option<&'static Schema> {
    READER_SCHEMAS.get(full_name)
}

/// Decode an Avro body (no framing) written with `writer`, resolved to our schema for the same
/// record. This is what [`Codec::decode`] does once it has the writer schema from the registry.
pub fn decode_body(writer: &Schema, body: &[u8]) -> Result<Message, DecodeError> {
    let name = writer
        .name()
        .map(|n| n.fullname(None))
        .ok_or_else(|| DecodeError::Malformed("the writer schema is not a named record".to_owned()))?;
    let reader = reader_schema(&name).ok_or_else(|| DecodeError::UnknownRecord(name.clone()))?;
    let value = resolve(writer, reader, body)?;
    Message::from_value(&name, value)
}

/// Avro schema resolution: read `body` with the schema it was written with, then shape the value
/// as `reader` expects (fields the writer lacked take the reader's default, fields the reader
/// lacks are dropped, `int` widens to `long`, ...). Fails when the bytes do not fit `writer` or
/// the two schemas cannot be resolved.
pub fn resolve(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<Value, DecodeError> {
    GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .and_then(|r| r.read_value(&mut &body[..]))
        .map_err(|e| DecodeError::Malformed(e.to_string()))
}
