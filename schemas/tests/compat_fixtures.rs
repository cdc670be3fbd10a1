//! The evolution rule against hand-made fixtures: `fixtures/evolution/{good,bad}/*.avsc` are
//! changes of `base.avsc`; the checker must flag exactly the bad ones, and what it accepts must
//! really resolve at runtime.

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use schemas::codec::resolve;
use schemas::compat::{Incompatibility, check_backward};
use std::path::{Path, PathBuf};

fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evolution").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

fn base() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evolution/base.avsc")).unwrap()
}

#[test]
fn compatible_changes_pass() {
    for (name, new) in fixtures("good") {
        assert_eq!(check_backward(&base(), &new), Ok(()), "{name}");
    }
}

#[test]
fn incompatible_changes_are_flagged() {
    for (name, new) in fixtures("bad") {
        let err = check_backward(&base(), &new).expect_err(&name);
        println!("{name}: {err}");
        if name.starts_with("namespace") {
            assert!(matches!(err, Incompatibility::Renamed { .. }), "{name}: {err}");
        } else {
            assert!(matches!(err, Incompatibility::CannotRead(_)), "{name}: {err}");
        }
    }
}

#[test]
fn the_reasons_name_the_field() {
    let bad = |file: &str| {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evolution/bad").join(file),
        )
        .unwrap();
        check_backward(&base(), &text).unwrap_err().to_string()
    };
    assert!(bad("required_field_without_default.avsc").contains("'note' is new and has no default"));
    assert!(bad("int_changed_to_string.avsc").contains("field 'count': int cannot be read as string"));
    // Valid Avro, but apache-avro's resolution ignores aliases, so the decoder could not read it.
    assert!(bad("field_renamed_with_alias.avsc").contains("aliases do not count"));
}

/// What the checker accepts, Avro resolution must really do: old data loads with the new schema.
#[test]
fn accepted_changes_resolve_old_data() {
    let old = Schema::parse_str(&base()).unwrap();
    let datum = Value::Record(vec![("id".into(), Value::String("w1".into())), ("count".into(), Value::Int(7))]);
    let bytes = GenericDatumWriter::builder(&old).build().unwrap().write_value_to_vec(datum).unwrap();
    for (name, new) in fixtures("good") {
        let new = Schema::parse_str(&new).unwrap();
        let value = resolve(&old, &new, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Value::Record(fields) = value else { panic!("{name}: not a record") };
        assert_eq!(fields[0], ("id".into(), Value::String("w1".into())), "{name}");
        assert!(matches!(fields.get(1), None | Some((_, Value::Int(7) | Value::Long(7)))), "{name}: {fields:?}");
    }
}
