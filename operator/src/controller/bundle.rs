//! PolicyBundle shell: activate each new generation (compile, run tests,
//! evaluate every rule once), keep the last good version in the catalog,
//! and report on the bundle's status.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use paver_crds::{Condition, PolicyBundle, PolicyBundleStatus, now_rfc3339, set_condition};
use serde_json::json;
use tracing::{info, warn};

use super::{Ctx, FIELD_MANAGER, Result};
use crate::core::policy::BundleReport;

/// The status a bundle should have after an activation attempt.
pub fn bundle_status(
    prev: &PolicyBundleStatus,
    bundle: &PolicyBundle,
    report: &BundleReport,
    now: &str,
) -> PolicyBundleStatus {
    let generation = bundle.metadata.generation;
    let mut conditions = prev.conditions.clone();
    let mut set = |c: Condition| {
        set_condition(
            &mut conditions,
            Condition {
                observed_generation: generation,
                ..c
            },
            now,
        );
    };
    let version = &bundle.spec.version;
    if report.errors.is_empty() {
        set(Condition::new(
            "Compiled",
            true,
            "Compiled",
            format!("version {version} compiled"),
        ));
    } else {
        let msg = report
            .errors
            .iter()
            .map(|e| match e.line {
                Some(line) => format!("{}:{}: {}", e.module, line, e.message),
                None => format!("{}: {}", e.module, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ");
        set(Condition::new("Compiled", false, "CompileError", msg));
    }
    let failed: Vec<&str> = report
        .tests
        .iter()
        .filter(|t| !t.pass)
        .map(|t| t.name.as_str())
        .collect();
    if !report.errors.is_empty() {
        set(Condition {
            status: "Unknown".into(),
            ..Condition::new("TestsPassed", false, "NotRun", "the bundle did not compile")
        });
    } else if failed.is_empty() {
        set(Condition::new(
            "TestsPassed",
            true,
            "Passed",
            format!("{} test(s) passed", report.tests.len()),
        ));
    } else {
        set(Condition::new(
            "TestsPassed",
            false,
            "TestsFailed",
            format!(
                "{} of {} test(s) failed: {}",
                failed.len(),
                report.tests.len(),
                failed.join(", ")
            ),
        ));
    }
    let active = report.activated;
    let active_version = report.active_version.clone();
    let active_msg = match (&active_version, active) {
        (Some(v), true) => format!("version {v} is enforced"),
        (Some(v), false) => {
            format!("version {version} was not activated; the last good version {v} stays in force")
        }
        (None, _) => format!(
            "version {version} was not activated and no earlier version is good; matching requests wait"
        ),
    };
    set(Condition::new(
        "Active",
        active,
        if active { "Activated" } else { "KeptLastGood" },
        active_msg,
    ));
    PolicyBundleStatus {
        conditions,
        active_version,
        test_results: report.tests.clone(),
        errors: report.errors.clone(),
        observed_generation: generation,
    }
}

/// Activates `bundle` in the catalog and writes its status if it changed.
/// Returns whether the update was put in force.
pub async fn apply(ctx: &Ctx, bundle: &PolicyBundle) -> Result<bool> {
    let name = bundle.name_any();
    let (report, active) = {
        let mut catalog = ctx.catalog.write().await;
        let report = catalog.bundles.update(&name, &bundle.spec);
        (report, catalog.bundles.get(&name))
    };
    if report.activated {
        let evaluator = active.as_ref().map(|b| b.evaluator()).unwrap_or_default();
        let interpreted_because = active.as_ref().and_then(|b| b.interpreted_because.clone());
        info!(bundle = %name, version = %bundle.spec.version, evaluator, interpreted_because, "bundle activated");
    } else {
        warn!(bundle = %name, version = %bundle.spec.version, errors = report.errors.len(), "bundle not activated; keeping last good version");
    }
    let prev = bundle.status.clone().unwrap_or_default();
    let status = bundle_status(&prev, bundle, &report, &now_rfc3339());
    if status != prev {
        let api: Api<PolicyBundle> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "paver.dev/v1alpha1", "kind": "PolicyBundle", "status": status});
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.wrote("policybundles/status", "apply");
    }
    Ok(report.activated)
}
