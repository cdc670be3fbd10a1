//! `schemas check`: every `.avsc` in the working tree against every earlier committed version of
//! it in git, and no record type that ever existed may disappear.
//!
//! Versions are those reachable from a revision (`HEAD` by default; `--against origin/main` in CI
//! checks a branch against what main already shipped). A file that moved keeps its history: an
//! old path whose record full name now lives in another file is checked against that file.

use super::{Incompatibility, check_backward, full_name_of};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The check could not run (as opposed to finding an incompatibility).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0} is not inside a git repository, so there is no history to check against ({1})")]
    NotARepo(PathBuf, String),
    #[error("unknown revision {0:?}")]
    UnknownRevision(String),
    #[error("could not run git: {0}")]
    Git(String),
    #[error("could not read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// One committed version of a schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Abbreviated commit id.
    pub rev: String,
    /// Path relative to the schema directory at that commit.
    pub path: String,
    pub text: String,
}

/// The verdict on one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reads every earlier version (`earlier` distinct texts, the current one included if
    /// committed; 0 for a new schema). `unparsable`
    /// earlier versions were skipped: a commit that never parsed can never have written data.
    Ok { earlier: usize, unparsable: usize },
    /// The working-tree file itself is not a valid schema.
    Invalid(String),
    /// Cannot read data written with `version` (the newest such) and `more` others.
    Incompatible { version: Version, reason: Incompatibility, more: usize },
    /// The file is gone and no other file defines its record: its old data could no longer load.
    Deleted { last: Version },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Path relative to the schema directory.
    pub path: String,
    pub full_name: Option<String>,
    pub verdict: Verdict,
}

impl Finding {
    pub fn is_ok(&self) -> bool {
        matches!(self.verdict, Verdict::Ok { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, name) = (&self.path, self.full_name.as_deref().unwrap_or("?"));
        match &self.verdict {
            Verdict::Ok { earlier: 0, .. } => write!(f, "OK            {path} ({name}): new, no earlier version"),
            Verdict::Ok { earlier, unparsable } => {
                write!(f, "OK            {path} ({name}): reads all {earlier} earlier version(s)")?;
                match unparsable {
                    0 => Ok(()),
                    n => write!(f, ", skipped {n} that did not parse"),
                }
            }
            Verdict::Invalid(e) => write!(f, "INCOMPATIBLE  {path}: not a valid schema: {e}"),
            Verdict::Incompatible { version, reason, more } => {
                write!(f, "INCOMPATIBLE  {path} ({name}) vs {}:{}: {reason}", version.rev, version.path)?;
                match more {
                    0 => Ok(()),
                    n => write!(f, " (and {n} older version(s))"),
                }
            }
            Verdict::Deleted { last } => write!(
                f,
                "INCOMPATIBLE  {path} ({name}): deleted, but data written with it (last at {}) could no longer be read",
                last.rev
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.findings.iter().all(Finding::is_ok)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        let bad = self.findings.iter().filter(|x| !x.is_ok()).count();
        write!(f, "{} schema(s) checked, {bad} incompatible", self.findings.len())
    }
}

/// Check the `.avsc` files under `dir` (working tree) against their versions reachable from
/// `against` (default `HEAD`; an empty repository has no history yet).
pub fn check(dir: &Path, against: Option<&str>) -> Result<Report, CheckError> {
    let git = Git::open(dir)?;
    let rev = match against {
        Some(rev) => Some(git.verify(rev)?.ok_or_else(|| CheckError::UnknownRevision(rev.to_owned()))?),
        None => git.verify("HEAD")?,
    };
    let current = current_files(dir)?;
    let history = match &rev {
        Some(rev) => git.history(rev)?,
        None => BTreeMap::new(),
    };
    Ok(judge(&current, &history))
}

/// The pure part of [`check`]: `current` maps paths to working-tree texts, `history` paths to
/// their committed versions, newest first.
pub fn judge(current: &BTreeMap<String, String>, history: &BTreeMap<String, Vec<Version>>) -> Report {
    let current_names: BTreeMap<String, &String> =
        current.iter().filter_map(|(path, text)| Some((full_name_of(text)?, path))).collect();
    let mut writers: BTreeMap<&String, Vec<&Version>> = current.keys().map(|p| (p, Vec::new())).collect();
    let mut findings = Vec::new();
    for (path, versions) in history {
        if let Some(list) = writers.get_mut(path) {
            list.extend(versions);
            continue;
        }
        let Some(last) = versions.first() else { continue };
        let name = versions.iter().find_map(|v| full_name_of(&v.text));
        match name.as_ref().and_then(|n| current_names.get(n)) {
            Some(moved_to) => writers.get_mut(*moved_to).expect("current path").extend(versions),
            None => findings.push(Finding {
                path: path.clone(),
                full_name: name,
                verdict: Verdict::Deleted { last: last.clone() },
            }),
        }
    }
    for (path, mut versions) in writers {
        let text = &current[path];
        // The same text committed again (or reverted to) needs checking once.
        let mut seen = BTreeSet::new();
        versions.retain(|v| seen.insert(v.text.as_str()));
        let earlier = versions.len();
        versions.retain(|v| v.text != *text);
        let verdict = match apache_avro::Schema::parse_str(text) {
            Err(e) => Verdict::Invalid(e.to_string()),
            Ok(_) => {
                let results: Vec<_> = versions.iter().map(|v| (*v, check_backward(&v.text, text))).collect();
                let unparsable =
                    results.iter().filter(|(_, r)| matches!(r, Err(Incompatibility::UnparsableOld(_)))).count();
                let mut failures = results.into_iter().filter_map(|(v, r)| match r {
                    Err(Incompatibility::UnparsableOld(_)) | Ok(()) => None,
                    Err(e) => Some((v, e)),
                });
                match failures.next() {
                    Some((version, reason)) => {
                        Verdict::Incompatible { version: version.clone(), reason, more: failures.count() }
                    }
                    None => Verdict::Ok { earlier: earlier - unparsable, unparsable },
                }
            }
        };
        findings.push(Finding { path: path.clone(), full_name: full_name_of(text), verdict });
    }
    findings.sort_by(|a, b| a.path.cmp(&b.path));
    Report { findings }
}

/// Every `.avsc` under `dir`, by path relative to it (`/`-separated).
fn current_files(dir: &Path) -> Result<BTreeMap<String, String>, CheckError> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) -> Result<(), CheckError> {
        let entries = std::fs::read_dir(dir).map_err(|e| CheckError::Io(dir.to_owned(), e))?;
        for entry in entries {
            let path = entry.map_err(|e| CheckError::Io(dir.to_owned(), e))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "avsc") {
                let text = std::fs::read_to_string(&path).map_err(|e| CheckError::Io(path.clone(), e))?;
                let rel = path.strip_prefix(root).unwrap_or(&path);
                let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                out.insert(rel, text);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// git, run in the schema directory so that paths are relative to it.
struct Git<'a> {
    dir: &'a Path,
}

impl<'a> Git<'a> {
    fn open(dir: &'a Path) -> Result<Self, CheckError> {
        if !dir.is_dir() {
            return Err(CheckError::Io(dir.to_owned(), std::io::ErrorKind::NotFound.into()));
        }
        let git = Git { dir };
        let out = git.run(&["rev-parse", "--is-inside-work-tree"])?;
        if !out.status.success() {
            return Err(CheckError::NotARepo(dir.to_owned(), String::from_utf8_lossy(&out.stderr).trim().to_owned()));
        }
        Ok(git)
    }

    fn run(&self, args: &[&str]) -> Result<std::process::Output, CheckError> {
        Command::new("git")
            .args(["-c", "core.quotePath=false"])
            .args(args)
            .current_dir(self.dir)
            .output()
            .map_err(|e| CheckError::Git(e.to_string()))
    }

    /// Stdout of a git command that must succeed.
    fn text(&self, args: &[&str]) -> Result<String, CheckError> {
        let out = self.run(args)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(CheckError::Git(format!("git {}: {}", args.join(" "), stderr.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The commit id `rev` names, or `None` if it names none (e.g. `HEAD` before the first commit).
    fn verify(&self, rev: &str) -> Result<Option<String>, CheckError> {
        let out = self.run(&["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")])?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }

    /// Every `.avsc` path ever committed under the directory up to `rev`, with its versions,
    /// newest first.
    fn history(&self, rev: &str) -> Result<BTreeMap<String, Vec<Version>>, CheckError> {
        let paths = self.text(&["log", "--no-renames", "--format=", "--name-only", "--relative", rev, "--", "."])?;
        let paths: BTreeSet<&str> = paths.lines().filter(|p| p.ends_with(".avsc")).collect();
        let mut history = BTreeMap::new();
        for path in paths {
            let mut versions = Vec::new();
            for commit in self.text(&["log", "--format=%h", rev, "--", path])?.lines() {
                // Fails for the commit that deleted the file: nothing to read there.
                let out = self.run(&["show", &format!("{commit}:./{path}")])?;
                if out.status.success() {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    versions.push(Version { rev: commit.to_owned(), path: path.to_owned(), text });
                }
            }
            history.insert(path.to_owned(), versions);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","namespace":"shop.t","fields":[{"name":"a","type":"int"}]}"#;
    const V2_LONG: &str = r#"{"type":"record","name":"R","namespace":"shop.t","fields":[{"name":"a","type":"long"}]}"#;
    const V2_BAD: &str = r#"{"type":"record","name":"R","namespace":"shop.t","fields":[{"name":"a","type":"string"}]}"#;

    fn version(rev: &str, path: &str, text: &str) -> Version {
        Version { rev: rev.into(), path: path.into(), text: text.into() }
    }

    fn map<V: Clone>(items: &[(&str, V)]) -> BTreeMap<String, V> {
        items.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn a_moved_file_is_checked_against_its_old_path() {
        let current = map(&[("b/R.avsc", V2_LONG.to_owned())]);
        let history = map(&[("a/R.avsc", vec![version("1111111", "a/R.avsc", V1)])]);
        let report = judge(&current, &history);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.findings[0].verdict, Verdict::Ok { earlier: 1, unparsable: 0 });

        let current = map(&[("b/R.avsc", V2_BAD.to_owned())]);
        assert!(!judge(&current, &history).is_ok());
    }

    #[test]
    fn a_deleted_record_is_reported() {
        let history = map(&[("a/R.avsc", vec![version("2222222", "a/R.avsc", V1)])]);
        let report = judge(&BTreeMap::new(), &history);
        assert!(!report.is_ok());
        assert!(report.to_string().contains("a/R.avsc (shop.t.R): deleted"), "{report}");
    }

    #[test]
    fn every_earlier_version_is_checked_not_only_the_last() {
        // int -> long -> int: the last step alone is a promotion back, but long data cannot be read as int.
        let current = map(&[("R.avsc", V1.to_owned())]);
        let history = map(&[("R.avsc", vec![version("3333333", "R.avsc", V2_LONG), version("4444444", "R.avsc", V1)])]);
        let report = judge(&current, &history);
        assert!(
            matches!(&report.findings[0].verdict, Verdict::Incompatible { version, .. } if version.rev == "3333333"),
            "{report}"
        );
    }
}
