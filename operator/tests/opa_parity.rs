//! Paver's regorus evaluation agrees with real OPA on the shipped bundles.
//! Needs an `opa` binary ($OPA, `opa` on PATH, the e2e cache's, or ~/go/bin/opa); without
//! one it fails under CI (`CI` set) and elsewhere prints why it skipped.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use chrono::Utc;
use paver::core::policy::{RuleKind, evaluate};
use serde_json::{Value, json};

fn run(opa: &Path, args: &[&str]) -> String {
    let out = Command::new(opa).args(args).output().expect("opa runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "opa {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sets a JSON pointer, creating objects along the way.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let mut cur = doc;
    for key in pointer.trim_start_matches('/').split('/') {
        if cur.is_array() {
            let i: usize = key.parse().expect("index");
            cur = &mut cur[i];
        } else {
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(key.to_string())
                .or_insert(Value::Null);
        }
    }
    *cur = value;
}

/// The examples, plus variants that break rules of every bundle.
fn cases() -> Vec<(String, Value, f64)> {
    let examples: BTreeMap<String, Value> = common::examples().into_iter().collect();
    let mut cases: Vec<(String, Value, f64)> = examples
        .iter()
        .map(|(n, v)| (n.clone(), v.clone(), common::monthly_estimate(v)))
        .collect();
    let p = "/spec/parameters";
    let mut broken = examples["payment-gateway"].clone();
    for (ptr, v) in [
        ("/database/encrypted", json!(false)),
        ("/cache/encrypted", json!(false)),
        ("/networking/ingress/waf", json!(false)),
        ("/security/iamPolicies/0/actions", json!(["s3:*", "*"])),
        ("/repository/visibility", json!("internal")),
        ("/repository/signedCommits", json!(false)),
        ("/compute/replicas", json!(1)),
        ("/compute/autoscaling/minReplicas", json!(1)),
        ("/networking/dependencies/0/circuitBreaker", json!(false)),
        ("/storage/buckets/0/encrypted", json!(false)),
        ("/repository/requiredChecks", json!([])),
    ] {
        set(&mut broken, &format!("{p}{ptr}"), v);
    }
    set(&mut broken, "/spec/costCenter", json!("payments"));
    let monthly = common::monthly_estimate(&broken);
    cases.push(("payment-gateway-broken".into(), broken, monthly));
    let mut orders = examples["orders-api"].clone();
    set(&mut orders, "/spec/environment", json!("production"));
    set(
        &mut orders,
        &format!("{p}/repository/branchProtection"),
        json!(false),
    );
    set(&mut orders, &format!("{p}/compute/probes/enabled"), json!(false));
    set(
        &mut orders,
        &format!("{p}/compute/podDisruptionBudget/enabled"),
        json!(false),
    );
    set(&mut orders, "/spec/team", json!(""));
    let monthly = common::monthly_estimate(&orders);
    cases.push(("orders-api-production".into(), orders, monthly));
    let mut dev = examples["storefront-web"].clone();
    set(&mut dev, "/spec/environment", json!("development"));
    set(
        &mut dev,
        &format!("{p}/networking/dependencies"),
        json!([{"name": "cart", "timeoutMs": 90000}]),
    );
    set(&mut dev, &format!("{p}/networking/ingress/tls"), json!(false));
    let monthly = common::monthly_estimate(&dev);
    cases.push(("storefront-web-development".into(), dev, monthly));
    // Collections that are not collections: OPA iterates nothing, as
    // Paver's evaluator (regorus's VM) does (see vm_parity).
    let mut scalars = examples["payment-gateway"].clone();
    set(&mut scalars, &format!("{p}/storage/buckets"), json!(null));
    set(
        &mut scalars,
        &format!("{p}/networking/dependencies"),
        json!("none"),
    );
    set(&mut scalars, &format!("{p}/security/iamPolicies"), json!(5));
    // Estimated as the gateway itself: the variant's collections are not valid input for the price table.
    let monthly = common::monthly_estimate(&examples["payment-gateway"]);
    cases.push(("payment-gateway-scalar-collections".into(), scalars, monthly));
    cases
}

type Sets = BTreeMap<&'static str, BTreeSet<String>>;

/// OPA's view: the rule sets of the bundle's package, normalized the way
/// Paver names findings (`id: msg`; plain strings take the package segment).
fn opa_sets(opa: &Path, dir: &Path, package: &str, input_file: &Path) -> Sets {
    let query = format!("data.paver.{package}");
    let out = run(
        opa,
        &[
            "eval",
            "--format",
            "json",
            "-d",
            &dir.display().to_string(),
            "-i",
            &input_file.display().to_string(),
            &query,
        ],
    );
    let doc: Value = serde_json::from_str(&out).expect("opa prints JSON");
    let pkg = &doc["result"][0]["expressions"][0]["value"];
    let finding = |v: &Value| match v {
        Value::String(s) => format!("{package}: {s}"),
        v => format!(
            "{}: {}",
            v["id"].as_str().unwrap_or(package),
            v["msg"].as_str().unwrap_or_default()
        ),
    };
    let items = |rule: &str| pkg[rule].as_array().cloned().unwrap_or_default();
    let mut sets = Sets::new();
    sets.insert("deny", items("deny").iter().map(finding).collect());
    sets.insert("warn", items("warn").iter().map(finding).collect());
    sets.insert(
        "needs_approval",
        items("needs_approval")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .collect(),
    );
    sets.insert(
        "checks",
        items("checks")
            .iter()
            .map(|c| {
                format!(
                    "{}/{}/{}/{}: {}",
                    c["id"].as_str().unwrap_or_default(),
                    c["category"].as_str().unwrap_or_default(),
                    c["level"].as_str().unwrap_or_default(),
                    c["pass"],
                    c["msg"].as_str().unwrap_or_default()
                )
            })
            .collect(),
    );
    sets
}

#[test]
fn paver_and_opa_agree_on_the_shipped_bundles() {
    let Some(opa) = common::opa_or_skip("opa_parity") else {
        return;
    };
    let (_, bundles) = common::activated();
    let dirs: BTreeMap<String, PathBuf> = common::bundle_dirs().into_iter().collect();
    for (name, dir) in &dirs {
        run(&opa, &["check", "--strict", &dir.display().to_string()]);
        let out = run(&opa, &["test", &dir.display().to_string()]);
        assert!(out.contains("PASS"), "{name}: {out}");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut compared = 0;
    for (case, request, monthly) in cases() {
        let input = common::input_for(&request, monthly);
        let input_file = tmp.path().join(format!("{case}.json"));
        std::fs::write(&input_file, serde_json::to_vec(&input.to_json()).expect("json"))
            .expect("write input");
        let prepared = input.prepare().expect("input");
        for bundle in &bundles {
            let ours = evaluate(
                std::slice::from_ref(bundle),
                &prepared,
                &RuleKind::ALL,
                "x/y",
                &BTreeMap::new(),
                Utc::now(),
            )
            .expect("evaluates");
            assert!(
                bundle.exceptions.is_empty() && bundle.enforcing(Utc::now()),
                "parity assumes plain enforce bundles"
            );
            let as_text = |fs: &[paver_crds::Finding]| {
                fs.iter().map(|f| format!("{}: {}", f.rule, f.message)).collect()
            };
            let mut paver = Sets::new();
            paver.insert("deny", as_text(&ours.violations));
            paver.insert("warn", as_text(&ours.warnings));
            let prefix = format!("{}: ", bundle.name);
            paver.insert(
                "needs_approval",
                ours.approval_reasons
                    .iter()
                    .map(|r| r.strip_prefix(&prefix).unwrap_or(r).to_string())
                    .collect(),
            );
            paver.insert(
                "checks",
                ours.checks
                    .iter()
                    .map(|c| format!("{}/{}/{}/{}: {}", c.id, c.category, c.level, c.pass, c.message))
                    .collect(),
            );
            let package = bundle.packages[0].trim_start_matches("data.paver.");
            let theirs = opa_sets(&opa, &dirs[&bundle.name], package, &input_file);
            assert_eq!(
                paver, theirs,
                "bundle {} on {case}: paver (left) and opa (right) differ",
                bundle.name
            );
            if case == "payment-gateway-broken" && bundle.name != "scorecard" {
                assert!(
                    !theirs["deny"].is_empty(),
                    "the broken case must break {} rules",
                    bundle.name
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 40);
    eprintln!(
        "opa_parity: {compared} bundle/input pairs agree with {}",
        opa.display()
    );
}
