//! Helpers shared by the policy integration tests: the shipped bundles, the
//! example requests, and the input Paver builds for them.
#![allow(dead_code)]

#[path = "../../../e2e/tests/support/prereq.rs"]
mod prereq;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use paver::{
    content,
    core::policy::{BundleSet, CompiledBundle, PolicyInput, RouteDoc},
};
use paver_crds::PolicyBundleSpec;
use serde_json::{Value, json};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every shipped bundle folder, by name.
pub fn bundle_dirs() -> Vec<(String, PathBuf)> {
    let dir = repo_root().join("policy-bundles");
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("policy-bundles/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("bundle.yaml").is_file())
        .map(|p| (p.file_name().expect("name").to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

pub fn load_bundle(dir: &Path) -> (String, PolicyBundleSpec) {
    let bundle = content::load_bundle_dir(dir).expect("bundle loads");
    (
        bundle.metadata.name.clone().expect("bundle has a name"),
        bundle.spec,
    )
}

/// The example ServiceRequests as JSON objects, by file stem.
pub fn examples() -> Vec<(String, Value)> {
    let dir = repo_root().join("examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable example");
            for doc in content::yaml_documents(&text, &path.display().to_string()).expect("valid YAML") {
                out.push((
                    path.file_stem().expect("stem").to_string_lossy().into_owned(),
                    doc,
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The monthly estimate Paver computes for `request` (a ServiceRequest as
/// JSON) with the shipped routes' price tables: the real estimator on the
/// parameters with the route's defaults (on the parameters as given when a
/// variant no longer validates). The payment gateway's is over the 5000
/// USD production budget.
pub fn monthly_estimate(request: &Value) -> f64 {
    use paver::core::{
        estimate::estimate,
        verdict::{Catalog, Unprepared, prepare_request},
    };
    let sr: paver_crds::ServiceRequest = serde_json::from_value(request.clone()).expect("a ServiceRequest");
    let (catalog, problems) = Catalog::from_content(
        content::Content::embedded().expect("embedded content"),
        chrono::Utc::now(),
    );
    assert!(problems.is_empty(), "{problems:?}");
    match prepare_request(&catalog, &sr) {
        Ok(prepared) => prepared.estimate.monthly,
        Err(Unprepared { route, errors, .. }) => {
            let route = route.unwrap_or_else(|| panic!("no route for the request: {errors:?}"));
            estimate(
                route.route.spec.cost.as_ref(),
                &sr.spec.parameters,
                sr.spec.environment.as_str(),
            )
            .expect("the estimate computes")
            .monthly
        }
    }
}

/// The input Paver builds for a request (without route defaults: the
/// examples spell out what the policies read).
pub fn input_for(request: &Value, monthly: f64) -> PolicyInput {
    let route = request["spec"]["route"].as_str().unwrap_or_default();
    PolicyInput {
        request: request.clone(),
        parameters: request["spec"]["parameters"].clone(),
        route: RouteDoc::new(
            json!({"apiVersion": "paver.dev/v1alpha1", "kind": "PaveRoute", "metadata": {"name": route}}),
        )
        .expect("route converts"),
        estimate: json!({"monthly": monthly, "currency": "USD", "items": []}),
        rendered: Some(
            [
                (
                    "deployment.yaml".to_string(),
                    "kind: Deployment\nlivenessProbe: {}\nreadinessProbe: {}\n".to_string(),
                ),
                (
                    "networkpolicy.yaml".to_string(),
                    "kind: NetworkPolicy\n".to_string(),
                ),
            ]
            .into(),
        ),
        git: Some(json!({"last_commit_by_owner_days": 12})),
        cluster: Some(json!({"sync": "Synced", "health": "Healthy"})),
    }
}

/// All shipped bundles activated, or a panic naming what failed.
pub fn activated() -> (BundleSet, Vec<std::sync::Arc<CompiledBundle>>) {
    let mut set = BundleSet::new();
    let mut all = Vec::new();
    for (_, dir) in bundle_dirs() {
        let (name, spec) = load_bundle(&dir);
        let report = set.update(&name, &spec, chrono::Utc::now());
        assert!(
            report.activated,
            "bundle {name} did not activate: {:?} {:?}",
            report.errors, report.tests
        );
        all.push(set.get(&name).expect("activated"));
    }
    (set, all)
}

/// A working `opa` binary: $OPA, `opa` on PATH, the one `e2e/bin.sh build`
/// caches (what CI builds), then `go install`'s.
pub fn find_opa() -> Option<PathBuf> {
    let works = |p: &Path| {
        Command::new(p)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut candidates: Vec<PathBuf> = std::env::var_os("OPA").map(PathBuf::from).into_iter().collect();
    candidates.push(PathBuf::from("opa"));
    // The one `e2e/bin.sh build` caches (what CI builds), then `go install`'s.
    let cache = std::env::var_os("PAVER_E2E_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/paver-e2e")));
    if let Some(cache) = cache {
        candidates.push(cache.join("opa-v1.22.2/opa"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join("go/bin/opa"));
    }
    candidates.into_iter().find(|p| works(p))
}

/// The `opa` binary for test `test`; without one, under CI (`CI` set) the
/// test fails saying how to get it, elsewhere this prints why it skips and
/// returns `None`.
pub fn opa_or_skip(test: &str) -> Option<PathBuf> {
    let opa = find_opa();
    if opa.is_none() {
        let msg = prereq::report(
            test,
            "no opa binary ($OPA, PATH, ~/.cache/paver-e2e/opa-v1.22.2, ~/go/bin/opa)",
            "e2e/bin.sh build",
        );
        assert!(!prereq::required(), "{msg}");
        eprintln!("{msg}");
    }
    opa
}
