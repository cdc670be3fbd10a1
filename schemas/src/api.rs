//! Wire -> API: how a record that carries a whole read-model document reads as the public API's
//! shape ([`contract`]). The saga orchestrator answers `GET /sagas/{id}` with it and the
//! projectors store it as the `sagas` read model, so the two cannot drift apart.

use crate::records::SagaUpdated;
use chrono::{DateTime, SecondsFormat};

/// The API's time format: RFC 3339, UTC, milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl SagaUpdated {
    /// The saga's state as the list and the panel show it. Fails only on an id that is no UUID.
    pub fn state(&self) -> Result<contract::SagaState, uuid::Error> {
        Ok(contract::SagaState {
            id: uuid::Uuid::try_parse(&self.order_id)?,
            customer_id: uuid::Uuid::try_parse(&self.customer_id)?,
            status: self.status.clone(),
            step: self.step.clone(),
            reason: self.reason.clone(),
            payment: self.payment.clone(),
            total_cents: self.total_cents,
            currency: self.currency.clone(),
        })
    }

    /// The whole saga: state, each line's reservation and the history.
    pub fn to_api(&self) -> Result<contract::Saga, uuid::Error> {
        let lines = self
            .lines
            .iter()
            .map(|l| serde_json::json!({ "product_id": l.product_id, "quantity": l.quantity, "state": l.state }))
            .collect();
        let history = self
            .history
            .iter()
            .map(|h| contract::SagaEvent { at: rfc3339_ms(h.at_ms), step: h.step.clone(), what: h.what.clone() })
            .collect();
        Ok(contract::Saga { state: self.state()?, lines: serde_json::Value::Array(lines), history })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{SagaEntry, SagaLine};

    fn saga() -> SagaUpdated {
        SagaUpdated {
            order_id: "6f1c1d7e-0d3c-4a39-9a53-1f3f0c4b7a10".into(),
            customer_id: "1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0".into(),
            version: 3,
            status: "RUNNING".into(),
            step: "authorize_payment".into(),
            reason: None,
            payment: "NONE".into(),
            total_cents: 2500,
            currency: "EUR".into(),
            lines: vec![SagaLine { product_id: "p".into(), quantity: 2, state: "RESERVED".into() }],
            history: vec![SagaEntry { at_ms: 1_700_000_000_123, step: "reserve_stock".into(), what: "sent".into() }],
        }
    }

    #[test]
    fn a_saga_record_reads_as_the_apis_saga() {
        let api = saga().to_api().unwrap();
        let json = serde_json::to_value(&api).unwrap();
        assert_eq!(json["id"], "6f1c1d7e-0d3c-4a39-9a53-1f3f0c4b7a10");
        assert_eq!(json["lines"][0]["quantity"], 2);
        assert_eq!(json["history"][0]["at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["reason"], serde_json::Value::Null);
    }

    #[test]
    fn an_id_that_is_no_uuid_is_an_error() {
        let bad = SagaUpdated { customer_id: "alice".into(), ..saga() };
        assert!(bad.to_api().is_err());
    }
}
