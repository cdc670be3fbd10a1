//! `schemas check` end to end: the binary against throwaway git repositories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE: &str = include_str!("fixtures/evolution/base.avsc");
const GOOD: &str = include_str!("fixtures/evolution/good/optional_field_with_null_default.avsc");
const ALSO_GOOD: &str = include_str!("fixtures/evolution/good/int_promoted_to_long.avsc");
const BAD: &str = include_str!("fixtures/evolution/bad/required_field_without_default.avsc");
const SCHEMA: &str = "schemas/avro/fixture/Widget.avsc";

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("schemas-check-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A git repository whose only history is what each test commits.
struct Repo(TempDir);

impl Repo {
    fn new() -> Self {
        let repo = Repo(TempDir::new());
        repo.git(&["init", "--quiet"]);
        repo
    }

    fn path(&self) -> &Path {
        &self.0.0
    }

    fn git(&self, args: &[&str]) {
        let out = Command::new("git")
            .args(["-c", "user.name=test", "-c", "user.email=test@example.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "-m", message]);
    }

    fn check(&self, args: &[&str]) -> Output {
        schemas_check(self.path(), args)
    }
}

fn schemas_check(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_schemas"))
        .arg("check")
        .args(args)
        .current_dir(cwd)
        // Never let git find a repository above the temporary directory.
        .env("GIT_CEILING_DIRECTORIES", cwd.parent().unwrap())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_incompatible_change_fails_and_a_compatible_one_passes() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1");

    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("OK            fixture/Widget.avsc (shop.fixture.Widget)"), "{}", stdout(&out));

    repo.write(SCHEMA, BAD);
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("INCOMPATIBLE  fixture/Widget.avsc"), "{}", stdout(&out));
    assert!(stdout(&out).contains("'note' is new and has no default"), "{}", stdout(&out));

    repo.write(SCHEMA, GOOD);
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_new_version_must_read_every_earlier_one_not_only_the_last() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1: count is an int");
    repo.write(SCHEMA, ALSO_GOOD);
    repo.commit("v2: count is a long");
    assert_eq!(repo.check(&[]).status.code(), Some(0));

    // Back to int: reads v1 data, but not the longs v2 wrote.
    repo.write(SCHEMA, BASE);
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("long cannot be read as int"), "{}", stdout(&out));
}

#[test]
fn a_committed_bad_change_fails_too() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1");
    repo.write(SCHEMA, BAD);
    repo.commit("v2, incompatible");
    assert_eq!(repo.check(&[]).status.code(), Some(1));
}

#[test]
fn against_counts_only_the_versions_that_revision_reaches() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1");
    repo.git(&["tag", "shipped"]);
    repo.write(SCHEMA, ALSO_GOOD);
    repo.commit("work in progress: count is a long");

    // Back to int: HEAD's history has the long version, what shipped does not.
    repo.write(SCHEMA, BASE);
    assert_eq!(repo.check(&[]).status.code(), Some(1));
    assert_eq!(repo.check(&["--against", "shipped"]).status.code(), Some(0));
}

#[test]
fn deleting_a_schema_is_reported_and_moving_it_is_not() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1");

    std::fs::rename(repo.path().join(SCHEMA), repo.path().join("schemas/avro/Widget.avsc")).unwrap();
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    std::fs::remove_file(repo.path().join("schemas/avro/Widget.avsc")).unwrap();
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("fixture/Widget.avsc (shop.fixture.Widget): deleted"), "{}", stdout(&out));
}

#[test]
fn a_new_schema_in_an_empty_repository_is_ok() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    let out = repo.check(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("new, no earlier version"), "{}", stdout(&out));
}

#[test]
fn outside_a_repository_it_says_so() {
    let dir = TempDir::new();
    let out = schemas_check(&dir.0, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a git repository"), "{out:?}");
}

#[test]
fn an_unknown_revision_is_an_error_not_a_pass() {
    let repo = Repo::new();
    repo.write(SCHEMA, BASE);
    repo.commit("v1");
    let out = repo.check(&["--against", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown revision"), "{out:?}");
}

/// This workspace's own schemas obey the rule (skipped where the sources are not a git checkout).
#[test]
fn the_committed_schemas_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    match schemas::compat::history::check(&dir, None) {
        Ok(report) => assert!(report.is_ok(), "{report}"),
        Err(schemas::compat::history::CheckError::NotARepo(..)) => eprintln!("not a git checkout: skipped"),
        Err(e) => panic!("{e}"),
    }
}
