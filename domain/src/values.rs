//! Value types that parse and reject: once built, they are valid.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::num::NonZeroU32;
use uuid::Uuid;

/// A rejected value, with a message fit for an API client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn parse(s: &str) -> Result<Self, InvalidValue> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| InvalidValue::new(stringify!($name), format!("not a UUID: {s:?}")))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self(Uuid::nil())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A customer; also the id of the customer's payment account.
    CustomerId
);
id_type!(
    /// A product of the catalog.
    ProductId
);
id_type!(
    /// An order; also the id of its saga.
    OrderId
);

/// ISO-4217-like currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let bytes = s.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(InvalidValue::new("currency", format!("expected three upper-case letters, got {s:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in through `parse`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl Default for Currency {
    fn default() -> Self {
        Currency::EUR
    }
}

impl TryFrom<String> for Currency {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money in minor units (cents). Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Money {
    pub cents: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(cents: i64, currency: Currency) -> Self {
        Self { cents, currency }
    }

    /// A price or credit: zero or more.
    pub fn non_negative(cents: i64, currency: Currency) -> Result<Self, InvalidValue> {
        if cents < 0 {
            return Err(InvalidValue::new("amount", format!("must not be negative, got {cents}")));
        }
        Ok(Self { cents, currency })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02} {}", self.cents / 100, (self.cents % 100).abs(), self.currency)
    }
}

/// A positive number of items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(NonZeroU32);

impl Quantity {
    /// The largest quantity one line or one stock delivery may hold.
    pub const MAX: u32 = 1_000_000;

    pub fn new(n: i64) -> Result<Self, InvalidValue> {
        if n <= 0 {
            return Err(InvalidValue::new("quantity", format!("must be positive, got {n}")));
        }
        if n > i64::from(Self::MAX) {
            return Err(InvalidValue::new("quantity", format!("must be at most {}, got {n}", Self::MAX)));
        }
        let n = u32::try_from(n).map_err(|_| InvalidValue::new("quantity", "out of range"))?;
        NonZeroU32::new(n).map(Quantity).ok_or_else(|| InvalidValue::new("quantity", "must be positive"))
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-empty, trimmed, bounded text such as a person's or a product's name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub const MAX_LEN: usize = 200;

    pub fn parse(field: &'static str, s: &str) -> Result<Self, InvalidValue> {
        let t = s.trim();
        if t.is_empty() {
            return Err(InvalidValue::new(field, "must not be empty"));
        }
        if t.chars().count() > Self::MAX_LEN {
            return Err(InvalidValue::new(field, format!("must be at most {} characters", Self::MAX_LEN)));
        }
        if t.chars().any(char::is_control) {
            return Err(InvalidValue::new(field, "must not contain control characters"));
        }
        Ok(Name(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, checked for shape (one `@`, a dotted domain), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let t = s.trim().to_lowercase();
        let bad = || InvalidValue::new("email", format!("not an e-mail address: {s:?}"));
        let (local, domain) = t.split_once('@').ok_or_else(bad)?;
        let ok = !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && t.len() <= 254
            && !t.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok { Ok(Email(t)) } else { Err(bad()) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock keeping unit: 1–64 of A–Z, 0–9, `-`, `_`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let t = s.trim().to_uppercase();
        let ok = !t.is_empty()
            && t.len() <= 64
            && t.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Sku(t))
        } else {
            Err(InvalidValue::new("sku", format!("expected 1-64 of A-Z, 0-9, '-', '_', got {s:?}")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_rejects_zero_negative_and_huge() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert!(Quantity::new(i64::from(Quantity::MAX) + 1).is_err());
        assert_eq!(Quantity::new(7).map(Quantity::get), Ok(7));
    }

    #[test]
    fn currency_must_be_three_upper_case_letters() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"EUR\"");
        assert!(serde_json::from_str::<Currency>("\"eu\"").is_err());
    }

    #[test]
    fn email_is_lower_cased_and_checked() {
        assert_eq!(Email::parse(" Alice@Example.COM ").map(|e| e.as_str().to_owned()), Ok("alice@example.com".into()));
        for bad in ["", "alice", "a@b", "@x.org", "a@@x.org", "a b@x.org", "a@.x"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("name", "  Alice ").map(|n| n.as_str().to_owned()), Ok("Alice".into()));
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", &"x".repeat(201)).is_err());
    }

    #[test]
    fn money_displays_minor_units() {
        assert_eq!(Money::new(12345, Currency::EUR).to_string(), "123.45 EUR");
        assert!(Money::non_negative(-1, Currency::EUR).is_err());
    }
}
