//! Confluent wire format through a schema registry: `0x00`, 4-byte schema id, Avro body.
//! Encoding registers the record's schema under `<topic>-<full record name>` on first use.

use crate::records::{ALL_RECORDS, Message};
use crate::topics::Topic;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};
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
        let decoded = match self.decoder.decode(Some(bytes)).await {
            Ok(d) => d,
            Err(e) => return Err(self.classify(id, e).await),
        };
        let name = decoded
            .name
            .map(|n| n.fullname(None))
            .ok_or_else(|| DecodeError::Malformed(format!("schema {id} is not a named record")))?;
        Message::from_value(&name, decoded.value)
    }

    /// Tell an unknown schema id from a body that does not fit a known schema, by asking the
    /// registry directly; anything unclear is treated as transient and retried.
    async fn classify(&self, id: u32, e: SRCError) -> DecodeError {
        self.decoder.remove_errors_from_cache();
        let text = e.to_string();
        if e.retriable {
            return DecodeError::Unavailable(text);
        }
        let url = format!("{}/schemas/ids/{id}", self.url);
        match self.http.get(&url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => {
                DecodeError::UnknownSchema(format!("the registry has no schema with id {id}"))
            }
            Ok(r) if r.status().is_success() => DecodeError::Malformed(format!("schema id {id}: {text}")),
            Ok(r) => DecodeError::Unavailable(format!("registry answered {} for schema {id}", r.status())),
            Err(err) => DecodeError::Unavailable(format!("registry unreachable: {err}")),
        }
    }
}
