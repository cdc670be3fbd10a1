//! Schema evolution rules. A committed schema may only change so that the new version, as the
//! reader, can still read everything written with any earlier version (BACKWARD, transitive):
//! events are stored and replayed for ever, and Kafka keeps old records on the topics.
//!
//! [`check_backward`] judges one (old, new) pair of `.avsc` texts; [`history`] walks git to apply
//! it to every earlier version of every schema (`schemas check`).

pub mod history;

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

/// Why a new schema may not replace an old one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatibility {
    #[error("the new schema does not parse: {0}")]
    UnparsableNew(String),
    #[error("the old schema does not parse: {0}")]
    UnparsableOld(String),
    /// Resolution matches records by name, and the registry subject contains it: a rename is a
    /// new record type, and old data of the old type would no longer load.
    #[error("full name changed from {old} to {new}")]
    Renamed { old: String, new: String },
    #[error("cannot read old data: {0}")]
    CannotRead(String),
    /// Some old data resolves, some would fail (e.g. an enum symbol or union branch removed).
    #[error("can read only part of the old data (an enum symbol or union branch was removed?)")]
    Partial,
}

/// Can a reader using `new` read every datum written with `old`?
pub fn check_backward(old: &str, new_text: &str) -> Result<(), Incompatibility> {
    let new = Schema::parse_str(new_text).map_err(|e| Incompatibility::UnparsableNew(e.to_string()))?;
    let old = Schema::parse_str(old).map_err(|e| Incompatibility::UnparsableOld(e.to_string()))?;
    let (old_name, new_name) = (full_name(&old), full_name(&new));
    if old_name != new_name {
        let show = |n: Option<String>| n.unwrap_or_else(|| "(unnamed)".to_owned());
        return Err(Incompatibility::Renamed { old: show(old_name), new: show(new_name) });
    }
    // The checker follows field aliases but apache-avro's resolution (what the codec runs) does
    // not, so judge the new schema as the decoder will see it.
    let unaliased = without_aliases(new_text);
    match SchemaCompatibility::can_read(&old, unaliased.as_ref().unwrap_or(&new)) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(Incompatibility::Partial),
        Err(e) if unaliased.is_some() && SchemaCompatibility::can_read(&old, &new).is_ok() => Err(
            Incompatibility::CannotRead(format!("{} (aliases do not count: the decoder ignores them)", describe(&e))),
        ),
        Err(e) => Err(Incompatibility::CannotRead(describe(&e))),
    }
}

/// The schema with every `aliases` attribute of a named type or field removed; `None` if it had none.
fn without_aliases(avsc: &str) -> Option<Schema> {
    fn strip(json: &mut serde_json::Value) -> bool {
        match json {
            serde_json::Value::Object(map) => {
                let mut stripped = map.contains_key("name") && map.remove("aliases").is_some();
                for (key, value) in map.iter_mut() {
                    if key != "default" {
                        stripped |= strip(value);
                    }
                }
                stripped
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |acc, v| strip(v) | acc),
            _ => false,
        }
    }
    let mut json: serde_json::Value = serde_json::from_str(avsc).ok()?;
    strip(&mut json).then(|| Schema::parse(&json).ok()).flatten()
}

/// The Avro full name (`namespace.Name`) of a schema text's top-level type, if it parses and is named.
pub fn full_name_of(avsc: &str) -> Option<String> {
    Schema::parse_str(avsc).ok().as_ref().and_then(full_name)
}

fn full_name(schema: &Schema) -> Option<String> {
    schema.name().map(|n| n.fullname(None))
}

/// apache-avro renders type mismatches with whole `Debug` dumps of both schemas; keep one line.
fn describe(e: &CompatibilityError) -> String {
    match e {
        CompatibilityError::FieldTypeMismatch(field, inner) => format!("field '{field}': {}", describe(inner)),
        CompatibilityError::MissingDefaultValue(field) => {
            format!("field '{field}' is new and has no default, so old data has no value for it")
        }
        CompatibilityError::WrongType { writer_schema_type, reader_schema_type } => {
            format!("{} cannot be read as {}", kind(writer_schema_type), kind(reader_schema_type))
        }
        other => other.to_string(),
    }
}

/// `"Record(RecordSchema { ..."` -> `"record"`.
fn kind(debug: &str) -> String {
    debug.split(|c: char| !c.is_alphanumeric()).next().unwrap_or(debug).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> String {
        format!(r#"{{"type":"record","name":"R","namespace":"shop.t","fields":[{fields}]}}"#)
    }

    #[test]
    fn an_unchanged_schema_is_compatible() {
        let s = record(r#"{"name":"a","type":"int"}"#);
        assert_eq!(check_backward(&s, &s), Ok(()));
    }

    #[test]
    fn a_type_change_names_the_field_and_both_types() {
        let err = check_backward(&record(r#"{"name":"a","type":"int"}"#), &record(r#"{"name":"a","type":"boolean"}"#))
            .unwrap_err();
        assert_eq!(err.to_string(), "cannot read old data: field 'a': int cannot be read as boolean");
    }

    #[test]
    fn a_namespace_change_is_a_rename() {
        let old = record(r#"{"name":"a","type":"int"}"#);
        let new = old.replace("shop.t", "shop.u");
        assert_eq!(
            check_backward(&old, &new),
            Err(Incompatibility::Renamed { old: "shop.t.R".into(), new: "shop.u.R".into() })
        );
    }

    #[test]
    fn removing_an_enum_symbol_is_only_partially_compatible() {
        let e = |symbols: &str| {
            record(&format!(r#"{{"name":"e","type":{{"type":"enum","name":"E","symbols":{symbols}}}}}"#))
        };
        assert_eq!(check_backward(&e(r#"["A","B"]"#), &e(r#"["A"]"#)), Err(Incompatibility::Partial));
        assert_eq!(check_backward(&e(r#"["A"]"#), &e(r#"["A","B"]"#)), Ok(()));
    }

    #[test]
    fn a_broken_new_schema_is_reported_as_such() {
        assert!(matches!(check_backward(&record(""), "{"), Err(Incompatibility::UnparsableNew(_))));
    }
}
