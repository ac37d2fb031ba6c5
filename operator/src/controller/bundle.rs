//! PolicyBundle shell: activate each new generation (compile, run tests,
//! evaluate every rule once), keep the last good version in the catalog,
//! and report on the bundle's status.

use std::collections::HashSet;

use kube::{Api, ResourceExt, core::DeserializeGuard, runtime::reflector::Store};
use paver_crds::{
    BundleError, Condition, PolicyBundle, PolicyBundleSpec, PolicyBundleStatus, RequestKey, TestResult,
    now_rfc3339, set_condition, truncate_message,
};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    Ctx, Result, apply_status,
    index::{Trigger, trigger_requests},
    request::RequestMeta,
    revision,
    watch::Generations,
};
use crate::core::policy::{Activation, BundleReport, MAX_FINDINGS, MAX_MESSAGE_BYTES};

/// The status a bundle should have after an activation attempt.
pub fn bundle_status(
    prev: &PolicyBundleStatus,
    bundle: &PolicyBundle,
    report: &BundleReport,
    active_revision: Option<&str>,
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
            .map(|e| format!("{}: {}", e.location(), e.message))
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
    let revision = active_revision
        .map(|r| format!(" (revision {r})"))
        .unwrap_or_default();
    let active_msg = match (&active_version, active) {
        (Some(v), true) => format!("version {v}{revision} is enforced"),
        (Some(v), false) => {
            format!("version {version} was not activated; the last good version {v}{revision} stays in force")
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
        active_revision: active_version.as_ref().and(active_revision.map(str::to_string)),
        active_version,
        test_results: bounded_tests(&report.tests),
        errors: bounded_errors(&report.errors),
        observed_generation: generation,
        // Counted from the requests' verdicts (`would_deny`), not here.
        would_deny: prev.would_deny,
        would_deny_by_team: prev.would_deny_by_team.clone(),
    }
}

/// `status.errors`: at most [`MAX_FINDINGS`] errors (the last one counts
/// those left out), each message and module name cut at
/// [`MAX_MESSAGE_BYTES`], as policy output is: a bundle with thousands of
/// errors (or one 10 MB module name) must not push its status past etcd's
/// object limit.
fn bounded_errors(errors: &[BundleError]) -> Vec<BundleError> {
    let mut out: Vec<BundleError> = errors.iter().take(MAX_FINDINGS).cloned().collect();
    if errors.len() > MAX_FINDINGS {
        out.truncate(MAX_FINDINGS - 1);
        out.push(BundleError {
            module: "spec".into(),
            message: format!(
                "{} more errors not shown (at most {MAX_FINDINGS} are kept)",
                errors.len() - out.len()
            ),
            ..Default::default()
        });
    }
    for e in &mut out {
        truncate_message(&mut e.message, MAX_MESSAGE_BYTES);
        truncate_message(&mut e.module, MAX_MESSAGE_BYTES / 4);
    }
    out
}

/// `status.testResults`, bounded like [`bounded_errors`]; the last entry
/// fails when any test it counts failed.
fn bounded_tests(tests: &[TestResult]) -> Vec<TestResult> {
    let mut out: Vec<TestResult> = tests.iter().take(MAX_FINDINGS).cloned().collect();
    if tests.len() > MAX_FINDINGS {
        out.truncate(MAX_FINDINGS - 1);
        let rest = &tests[out.len()..];
        let failed = rest.iter().filter(|t| !t.pass).count();
        out.push(TestResult {
            name: format!("{} more tests", rest.len()),
            pass: failed == 0,
            message: format!("{failed} of them failed (at most {MAX_FINDINGS} results are kept)"),
        });
    }
    for t in &mut out {
        truncate_message(&mut t.message, MAX_MESSAGE_BYTES);
        truncate_message(&mut t.name, MAX_MESSAGE_BYTES / 4);
    }
    out
}

/// Compiles, tests and builds `spec` as bundle `name`: on a blocking
/// thread, not on the async workers (the lease renewal and probes run
/// there), and without the catalog's lock (every reconcile reads the
/// catalog): a large bundle takes seconds.
async fn activate(name: &str, spec: &PolicyBundleSpec) -> Activation {
    let (name, spec) = (name.to_string(), spec.clone());
    tokio::task::spawn_blocking(move || crate::core::policy::activate(&name, &spec, chrono::Utc::now()))
        .await
        .unwrap_or_else(|e| Activation {
            errors: vec![paver_crds::BundleError {
                module: "activation".into(),
                message: format!("activation did not finish: {e}"),
                ..Default::default()
            }],
            ..Default::default()
        })
}

/// Puts bundle `name`'s last good revision in force when nothing of it is
/// (a restarted operator whose bundle's latest version is broken). The
/// revision's name, if one was put in force.
async fn fall_back(ctx: &Ctx, name: &str, uid: Option<&str>, active: Option<&str>) -> Option<String> {
    if ctx.catalog.read().await.bundles.get(name).is_some() {
        return None;
    }
    let rev = revision::last_good::<PolicyBundle>(ctx, name, uid, active).await?;
    let activation = activate(name, &rev.spec).await;
    let report = ctx
        .catalog
        .write()
        .await
        .bundles
        .install(name, &rev.spec, activation);
    if report.activated {
        info!(bundle = %name, revision = %rev.name, version = %rev.spec.version, "the latest version is broken: its last good revision is in force");
        Some(rev.name)
    } else {
        warn!(bundle = %name, revision = %rev.name, errors = ?report.errors, "the last good revision no longer activates");
        None
    }
}

/// Activates `bundle` in the catalog (a version that fails leaves the one
/// before in force, from the last good revision after a restart), keeps a
/// good version as a revision, and writes its status if it changed.
/// Returns whether the update was put in force, and the revision in force.
pub async fn apply(
    ctx: &Ctx,
    bundle: &PolicyBundle,
    in_force: Option<String>,
) -> Result<(bool, Option<String>)> {
    let name = bundle.name_any();
    let prev = bundle.status.clone().unwrap_or_default();
    let activation = activate(&name, &bundle.spec).await;
    let mut revision = in_force.or_else(|| prev.active_revision.clone());
    if activation.compiled.is_none()
        && let Some(r) = fall_back(ctx, &name, bundle.uid().as_deref(), revision.as_deref()).await
    {
        revision = Some(r);
    }
    let (report, active) = {
        let mut catalog = ctx.catalog.write().await;
        let report = catalog.bundles.install(&name, &bundle.spec, activation);
        (report, catalog.bundles.get(&name))
    };
    ctx.metrics.bundle(&name, active.is_some(), !report.activated);
    if report.activated {
        let evaluator = active.as_ref().map(|b| b.evaluator()).unwrap_or_default();
        let interpreted_because = active.as_ref().and_then(|b| b.interpreted_because.clone());
        info!(bundle = %name, version = %bundle.spec.version, evaluator, interpreted_because, "bundle activated");
        revision = match revision::record(ctx, bundle, prev.active_revision.as_deref()).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(bundle = %name, error = %e, "failed to keep the bundle's version as a revision");
                None
            }
        };
    } else {
        warn!(bundle = %name, version = %bundle.spec.version, errors = report.errors.len(), "bundle not activated; keeping last good version");
    }
    let status = bundle_status(&prev, bundle, &report, revision.as_deref(), &now_rfc3339());
    if status != prev {
        let api: Api<PolicyBundle> = Api::all(ctx.client.clone());
        apply_status(&api, &name, &status, &ctx.metrics).await?;
    }
    Ok((report.activated, status.active_revision))
}

/// Keeps the catalog's bundles in step with the cluster (through
/// [`super::watch::guarded_watch`]); a bundle put in force or removed
/// re-reconciles the requests it applies to.
pub struct Bundles {
    pub ctx: Ctx,
    pub requests: Store<RequestMeta>,
    pub trigger: Trigger,
    pub ready: watch::Sender<bool>,
    /// The generation last activated (or refused), by bundle name.
    pub seen: Generations,
    /// The revision in force, by bundle name.
    pub revisions: std::collections::BTreeMap<String, String>,
}

impl Bundles {
    async fn forget(&mut self, name: &str) {
        let mut catalog = self.ctx.catalog.write().await;
        // Which requests it touched is known only before it goes.
        trigger_requests(&self.ctx, &self.requests, &self.trigger, |route, ns, labels| {
            catalog.bundle_touches(name, route, ns, labels)
        });
        catalog.bundles.remove(name);
        self.ctx.metrics.forget_bundle(name);
        self.seen.forget(name);
        self.revisions.remove(name);
    }
}

impl super::watch::Handler for Bundles {
    type K = PolicyBundle;
    const KIND: &'static str = "bundle";

    async fn apply(&mut self, bundle: PolicyBundle) {
        let name = bundle.name_any();
        if !self.seen.changed(&name, bundle.metadata.generation) {
            return;
        }
        let in_force = self.revisions.get(&name).cloned();
        let changed = match apply(&self.ctx, &bundle, in_force).await {
            Ok((changed, revision)) => {
                match revision {
                    Some(r) => self.revisions.insert(name.clone(), r),
                    None => self.revisions.remove(&name),
                };
                changed
            }
            Err(e) => {
                warn!(bundle = %name, error = %e, "failed to report bundle status");
                true
            }
        };
        self.seen.record(&name, bundle.metadata.generation);
        if changed && *self.ready.borrow() {
            let catalog = self.ctx.catalog.read().await;
            trigger_requests(&self.ctx, &self.requests, &self.trigger, |route, ns, labels| {
                catalog.bundle_touches(&name, route, ns, labels)
            });
        }
    }

    async fn delete(&mut self, key: RequestKey) {
        self.forget(key.parts().1).await;
    }

    async fn invalid(&mut self, key: RequestKey, error: String) {
        let name = key.parts().1;
        self.seen.forget(name);
        // After a restart nothing of it is in force yet: its last good revision.
        if !self.revisions.contains_key(name) {
            let uid = revision::uid_of::<PolicyBundle>(&self.ctx, name).await;
            if let Some(r) = fall_back(&self.ctx, name, uid.as_deref(), None).await {
                self.revisions.insert(name.to_string(), r);
                if *self.ready.borrow() {
                    let catalog = self.ctx.catalog.read().await;
                    trigger_requests(&self.ctx, &self.requests, &self.trigger, |route, ns, labels| {
                        catalog.bundle_touches(name, route, ns, labels)
                    });
                }
            }
        }
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            Condition::new(
                "Active",
                false,
                "Unreadable",
                format!("the bundle cannot be read ({error}); the last good version stays in force"),
            ),
            &now_rfc3339(),
        );
        let active_version = self
            .ctx
            .catalog
            .read()
            .await
            .bundles
            .get(name)
            .map(|b| b.version.clone());
        self.ctx.metrics.bundle(name, active_version.is_some(), true);
        let status = PolicyBundleStatus {
            conditions,
            active_version,
            active_revision: self.revisions.get(name).cloned(),
            ..Default::default()
        };
        let api: Api<DeserializeGuard<PolicyBundle>> = Api::all(self.ctx.client.clone());
        if let Err(e) = apply_status(&api, name, &status, &self.ctx.metrics).await {
            warn!(bundle = %name, error = %e, "failed to report bundle status");
        }
    }

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        for name in self.seen.gone(&listed) {
            self.forget(&name).await;
        }
        let _ = self.ready.send(true);
    }
}

#[cfg(test)]
mod tests {
    use paver_crds::{MAX_CONDITION_MESSAGE_BYTES, PolicyBundleSpec};

    use super::*;

    /// A bundle with thousands of large errors and tests: its status stays
    /// small enough for etcd (1.5 MiB an object), its condition messages
    /// under Kubernetes' 32 KiB.
    #[test]
    fn a_bundles_status_is_bounded_whatever_its_errors_and_tests() {
        let big = "m".repeat(10_000);
        let report = BundleReport {
            errors: (0..5000)
                .map(|i| BundleError {
                    module: format!("m{i}.rego"),
                    line: Some(1),
                    column: None,
                    message: big.clone(),
                })
                .collect(),
            tests: (0..5000)
                .map(|i| TestResult {
                    name: format!("data.t.test_{i}"),
                    pass: i % 2 == 0,
                    message: big.clone(),
                })
                .collect(),
            ..Default::default()
        };
        let bundle = PolicyBundle::new("b", PolicyBundleSpec::default());
        let status = bundle_status(&PolicyBundleStatus::default(), &bundle, &report, None, "t");
        let bytes = serde_json::to_vec(&status).expect("serializes").len();
        assert!(bytes < 400 * 1024, "{bytes} bytes");
        assert_eq!(status.errors.len(), MAX_FINDINGS);
        assert_eq!(
            status.errors[MAX_FINDINGS - 1].message,
            "4901 more errors not shown (at most 100 are kept)"
        );
        assert!(status.errors[0].message.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(status.test_results.len(), MAX_FINDINGS);
        let last = &status.test_results[MAX_FINDINGS - 1];
        assert_eq!((last.name.as_str(), last.pass), ("4901 more tests", false));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.message.len() <= MAX_CONDITION_MESSAGE_BYTES)
        );
    }
}
