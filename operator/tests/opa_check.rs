//! Paver refuses exactly what OPA's compiler refuses: every module of the
//! corpus in `tests/opa-check/` (a `.rego` file, or a folder of modules
//! checked together) is checked by real OPA (`opa check`, `opa check
//! --strict`) and by Paver (`paver::core::policy::opa_check`, what bundle
//! activation runs, strict). They must agree on accept/refuse and on every
//! error's line, column, code and message (OPA's first line of it: for a
//! built-in's arity OPA goes on to list the argument types, Paver the counts).
//!
//! The shipped bundles (modules and tests together) are checked the same
//! way, as real-world bundles OPA accepts.
//!
//! The corpus names say what OPA does with each case: `ok-` passes both,
//! `bad-` fails `opa check`, `strict-` passes `opa check` and fails
//! `opa check --strict`; the test checks OPA agrees with the name too.
//!
//! Needs an `opa` binary (see `common::find_opa`); without one it fails
//! under CI (`CI` set) and elsewhere prints why it skipped.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use paver::core::policy::opa_check;
use paver_crds::RegoModule;
use serde_json::Value;

/// One error, as both sides report it: (module file name, line, column,
/// code, first line of the message).
type Found = BTreeSet<(String, u32, u32, String, String)>;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opa-check");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rego"))
        .collect();
    cases.sort();
    cases
}

fn modules(case: &Path) -> Vec<(String, PathBuf)> {
    if case.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(case)
            .expect("case folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "rego"))
            .collect();
        files.sort();
        files.into_iter().map(|p| (file_name(&p), p)).collect()
    } else {
        vec![(file_name(case), case.to_path_buf())]
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().expect("a file name").to_string_lossy().into_owned()
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().to_string()
}

fn opa_errors(opa: &Path, case: &Path, strict: bool) -> Found {
    let mut args = vec!["check", "--format", "json"];
    if strict {
        args.push("--strict");
    }
    // Run from the case's folder so OPA names modules as Paver does.
    let (cwd, targets): (&Path, Vec<String>) = if case.is_dir() {
        (case, modules(case).into_iter().map(|(n, _)| n).collect())
    } else {
        (case.parent().expect("the corpus folder"), vec![file_name(case)])
    };
    let out = Command::new(opa)
        .args(&args)
        .args(&targets)
        .current_dir(cwd)
        .output()
        .expect("opa runs");
    if out.status.success() {
        return Found::new();
    }
    // The JSON report goes to stderr when the check fails.
    let report = String::from_utf8_lossy(&out.stderr);
    let doc: Value = serde_json::from_str(&report).unwrap_or_else(|e| {
        panic!(
            "opa check {}: not JSON ({e}):\n{report}\n{}",
            case.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| {
            let loc = &e["location"];
            (
                loc["file"].as_str().unwrap_or_default().to_string(),
                loc["row"].as_u64().unwrap_or_default() as u32,
                loc["col"].as_u64().unwrap_or_default() as u32,
                e["code"].as_str().unwrap_or_default().to_string(),
                first_line(e["message"].as_str().unwrap_or_default()),
            )
        })
        .collect()
}

fn paver_errors(case: &Path, strict: bool) -> Found {
    let modules: Vec<RegoModule> = modules(case)
        .into_iter()
        .map(|(name, path)| RegoModule {
            name,
            source: std::fs::read_to_string(path).expect("module"),
        })
        .collect();
    opa_check(&modules, strict)
        .into_iter()
        .map(|e| {
            let (code, message) = e.message.split_once(": ").unwrap_or(("", &e.message));
            // OPA's first line of an arity error is `<builtin>: arity mismatch`.
            let message = match message.split_once(" (have ") {
                Some((m, _)) if m.ends_with("arity mismatch") => m.to_string(),
                _ => first_line(message),
            };
            (
                e.module,
                e.line.unwrap_or_default(),
                e.column.unwrap_or_default(),
                code.to_string(),
                message,
            )
        })
        .collect()
}

#[test]
fn paver_refuses_what_opa_check_refuses() {
    let Some(opa) = common::opa_or_skip("opa_check") else {
        return;
    };
    let cases = corpus();
    let mut disagreements = Vec::new();
    // The shipped bundles (modules and tests) are real-world cases OPA accepts.
    let shipped: Vec<PathBuf> = common::bundle_dirs().into_iter().map(|(_, dir)| dir).collect();
    for dir in &shipped {
        for strict in [false, true] {
            let (theirs, ours) = (opa_errors(&opa, dir, strict), paver_errors(dir, strict));
            if !theirs.is_empty() || theirs != ours {
                disagreements.push(format!(
                    "shipped bundle {} (strict: {strict}):\n  opa:   {theirs:?}\n  paver: {ours:?}",
                    dir.display()
                ));
            }
        }
    }
    let (mut refused, mut refused_strict, mut errors) = (0, 0, 0);
    for case in &cases {
        let name = file_name(case);
        for strict in [false, true] {
            let theirs = opa_errors(&opa, case, strict);
            let ours = paver_errors(case, strict);
            let mode = if strict { "opa check --strict" } else { "opa check" };
            let expect_refused = name.starts_with("bad-") || (strict && name.starts_with("strict-"));
            assert_eq!(
                !theirs.is_empty(),
                expect_refused,
                "{name}: the corpus name says {} under `{mode}`, OPA says {theirs:?}",
                if expect_refused { "refused" } else { "accepted" }
            );
            if !theirs.is_empty() {
                if strict {
                    refused_strict += 1;
                } else {
                    refused += 1;
                }
                errors += theirs.len();
            }
            if theirs != ours {
                disagreements.push(format!(
                    "{name} ({mode}):\n  opa:   {theirs:?}\n  paver: {ours:?}"
                ));
            }
        }
    }
    eprintln!(
        "opa_check: {} cases ({} files of modules) and {} shipped bundles, {refused} refused by `opa check`, \
         {refused_strict} by `opa check --strict`, {errors} errors compared, {} disagreements, against {}",
        cases.len(),
        cases.iter().map(|c| modules(c).len()).sum::<usize>(),
        shipped.len(),
        disagreements.len(),
        opa.display()
    );
    assert!(
        cases.len() >= 80,
        "the corpus holds {} cases, fewer than 80",
        cases.len()
    );
    assert!(
        disagreements.is_empty(),
        "Paver and OPA disagree on {} of {} checks:\n{}",
        disagreements.len(),
        cases.len() * 2,
        disagreements.join("\n")
    );
}
