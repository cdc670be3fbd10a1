//! Customer: a registered shopper.

use crate::values::{CustomerId, Email, Name};
use crate::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: Option<CustomerId>,
    pub name: Name,
    pub email: Email,
    /// The identity (token subject) the profile belongs to; `None` for customers registered
    /// before owners were recorded, or by an internal caller.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone)]
pub enum CustomerCommand {
    Register { customer_id: CustomerId, name: Name, email: Email, owner: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: CustomerId,
        name: Name,
        email: Email,
        /// Absent in events stored before owners were recorded.
        #[serde(default)]
        owner: Option<String>,
    },
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered { .. } => "CustomerRegistered",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    #[error("customer {0} is already registered")]
    AlreadyRegistered(CustomerId),
}

impl Aggregate for Customer {
    const TYPE: &'static str = "Customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn decide(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            CustomerCommand::Register { customer_id, name, email, owner } => match self.id {
                Some(id) => Err(CustomerError::AlreadyRegistered(id)),
                None => Ok(vec![CustomerEvent::CustomerRegistered { customer_id, name, email, owner }]),
            },
        }
    }

    fn apply(&mut self, event: CustomerEvent) {
        match event {
            CustomerEvent::CustomerRegistered { customer_id, name, email, owner } => {
                self.id = Some(customer_id);
                self.name = name;
                self.email = email;
                self.owner = owner;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::given;
    use proptest::prelude::*;

    proptest! {
        /// Whatever registrations follow, the first one stands: a profile is never overwritten.
        #[test]
        fn the_first_registration_stands(names in proptest::collection::vec("[a-z]{1,12}", 1..10)) {
            let mut state = Customer::default();
            let first = CustomerId::new();
            for (i, n) in names.iter().enumerate() {
                let id = if i == 0 { first } else { CustomerId::new() };
                let cmd = CustomerCommand::Register {
                    customer_id: id,
                    name: Name::parse("name", n).unwrap(),
                    email: Email::parse(&format!("{n}@example.com")).unwrap(),
                    owner: None,
                };
                if let Ok((next, _)) = state.execute(cmd) { state = next; }
                prop_assert_eq!(state.id, Some(first));
                prop_assert_eq!(state.name.as_str(), names[0].as_str());
            }
        }
    }

    fn register(id: CustomerId) -> CustomerCommand {
        CustomerCommand::Register {
            customer_id: id,
            name: Name::parse("name", "Alice").unwrap(),
            email: Email::parse("alice@example.com").unwrap(),
            owner: Some("alice-subject".into()),
        }
    }

    #[test]
    fn registers_once() {
        let id = CustomerId::new();
        let (state, events) = Customer::default().execute(register(id)).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(state.id, Some(id));
        assert_eq!(state.decide(register(id)), Err(CustomerError::AlreadyRegistered(id)));
    }

    #[test]
    fn given_registered_state_holds_profile() {
        let id = CustomerId::new();
        let state: Customer = given(vec![CustomerEvent::CustomerRegistered {
            customer_id: id,
            name: Name::parse("name", "Bob").unwrap(),
            email: Email::parse("bob@example.com").unwrap(),
            owner: None,
        }]);
        assert_eq!(state.name.as_str(), "Bob");
    }

    #[test]
    fn events_stored_before_owners_still_load() {
        let event = CustomerEvent::CustomerRegistered {
            customer_id: CustomerId::new(),
            name: Name::parse("name", "Carol").unwrap(),
            email: Email::parse("carol@example.com").unwrap(),
            owner: Some("carol-subject".into()),
        };
        let mut stored = serde_json::to_value(&event).unwrap();
        stored["CustomerRegistered"].as_object_mut().unwrap().remove("owner").unwrap();
        let CustomerEvent::CustomerRegistered { owner, .. } = serde_json::from_value(stored).unwrap();
        assert_eq!(owner, None);
    }
}
