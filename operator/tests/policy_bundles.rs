//! The shipped bundles load from their folders, activate with every test
//! passing, and allow every example request.

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use paver::core::policy::{RuleKind, activate, evaluate};

#[test]
fn every_shipped_bundle_activates_with_all_tests_passing() {
    let dirs = common::bundle_dirs();
    let names: Vec<&str> = dirs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec!["compliance", "finops", "reliability", "scorecard", "security"]
    );
    for (dir_name, dir) in &dirs {
        let (name, spec) = common::load_bundle(dir);
        assert_eq!(&name, dir_name);
        assert!(spec.match_.is_some(), "{name} is global (match: {{}})");
        let a = activate(&name, &spec, chrono::Utc::now());
        assert!(a.errors.is_empty(), "{name}: {:?}", a.errors);
        assert!(!a.tests.is_empty(), "{name} has tests");
        let failed: Vec<_> = a.tests.iter().filter(|t| !t.pass).collect();
        assert!(failed.is_empty(), "{name}: failing tests {failed:?}");
        assert!(a.compiled.is_some());
    }
}

#[test]
fn examples_are_allowed_by_the_shipped_bundles() {
    let (set, _) = common::activated();
    let examples = common::examples();
    assert!(examples.len() >= 5);
    for (name, request) in &examples {
        let route = request["spec"]["route"].as_str().expect("route");
        let ns = request["metadata"]["namespace"].as_str().expect("namespace");
        let labels: BTreeMap<String, String> =
            serde_json::from_value(request["metadata"]["labels"].clone()).unwrap_or_default();
        let (bundles, missing) = set.applicable(route, &[], ns, &labels);
        assert!(missing.is_empty());
        assert_eq!(bundles.len(), 5, "every shipped bundle is global");
        let monthly = common::monthly_estimate(request);
        let input = common::input_for(request, monthly).prepare().expect("input");
        let out = evaluate(
            &bundles,
            &input,
            &RuleKind::ALL,
            &format!("{ns}/{name}"),
            &labels,
            Utc::now(),
        )
        .expect("evaluates");
        assert!(out.violations.is_empty(), "{name} denied: {:#?}", out.violations);
        assert!(!out.checks.is_empty());
        assert!(
            out.checks
                .iter()
                .all(|c| !c.message.is_empty() && c.source == "bundle/scorecard")
        );
        if name == "payment-gateway" {
            assert_eq!(out.approval_reasons.len(), 2, "{:?}", out.approval_reasons);
            assert!(
                out.approval_reasons
                    .iter()
                    .any(|r| r.starts_with("security: a PCI-scoped service"))
            );
            // The real estimate (the shipped price table) crosses the budget.
            assert!(monthly > 5000.0, "payment-gateway is estimated at {monthly}");
            let budget = format!(
                "finops: the estimate of {} USD/month exceeds the production budget of 5000 USD/month",
                monthly.ceil()
            );
            assert!(
                out.approval_reasons.iter().any(|r| r == &budget),
                "{budget:?} in {:?}",
                out.approval_reasons
            );
            assert!(
                out.checks.iter().all(|c| c.pass),
                "the gateway scores gold: {:?}",
                out.checks
            );
        } else {
            assert!(
                out.approval_reasons.is_empty(),
                "{name}: {:?}",
                out.approval_reasons
            );
        }
    }
}
