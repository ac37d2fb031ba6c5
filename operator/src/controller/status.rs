//! Builds a ServiceRequest's status from a verdict and what the shells saw
//! (the commit, Argo CD). Pure: the only writer of request status calls it
//! and writes the result only when it differs from what is there.

use paver_crds::{
    Condition, EstimateStatus, Phase, RenderStatus, ServiceRequestStatus, SyncStatus, find_condition,
    set_condition, truncate_message,
};

use crate::core::verdict::{Outcome, Verdict};

pub use paver_crds::vocab::conditions::{
    APPROVED, COMMITTED, POLICY_COMPLIANT, READY, RENDERED, SYNCED, VALIDATED,
};

/// The longest Argo CD message kept in a request's status, in bytes.
/// Every condition message is also cut at
/// [`MAX_CONDITION_MESSAGE_BYTES`](paver_crds::MAX_CONDITION_MESSAGE_BYTES)
/// (by `set_condition`), and policy output at 1 KiB a message and 100 a
/// list (`core::policy::MAX_MESSAGE_BYTES`, `MAX_FINDINGS`).
pub const MAX_SYNC_MESSAGE_BYTES: usize = 4 * 1024;

/// What happened when the render was handed to the Git writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitState {
    /// Nothing was handed over (the request did not get that far).
    NotAttempted,
    /// The render is at `revision` on the remote; `changed` when this
    /// reconcile made the commit.
    Committed { revision: String, changed: bool },
    /// The push failed; the writer retries on the next reconcile.
    Failed(String),
}

fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        status: "Unknown".into(),
        ..Condition::new(type_, false, reason, message)
    }
}

fn join_findings(findings: &[paver_crds::Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("{}/{}: {}", f.bundle, f.rule, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What Argo CD reports on the request's committed render, as a rollout
/// step reads it: Healthy once synced at that commit and Healthy, Degraded
/// when Degraded at it, waiting otherwise (saying for what).
pub fn rollout_health(status: &ServiceRequestStatus) -> crate::core::rollout::Health {
    use crate::core::rollout::Health;
    let Some(render) = &status.render else {
        return Health::Waiting("nothing committed".into());
    };
    let Some(sync) = &status.sync else {
        return Health::Waiting("no Argo CD report".into());
    };
    if sync.revision != render.revision {
        return Health::Waiting(format!("Argo CD has not synced {}", render.short_revision));
    }
    match (sync.status.as_str(), sync.health.as_str()) {
        (_, "Degraded") => {
            let mut m = sync.message.clone();
            truncate_message(&mut m, 300);
            Health::Degraded(m)
        }
        ("Synced", "Healthy") => Health::Healthy,
        (s, h) => Health::Waiting(format!("{s}/{h}")),
    }
}

/// Whether a commit that changed files although the render did not is a
/// restore of hand edits (drift).
pub fn is_drift(prev: Option<&RenderStatus>, verdict: &Verdict, commit: &CommitState) -> bool {
    matches!(commit, CommitState::Committed { changed: true, .. })
        && match (prev, &verdict.rendered) {
            (Some(prev), Some(now)) => !prev.revision.is_empty() && prev.digest == now.digest,
            _ => false,
        }
}

/// The status a request should have: each condition computed on its own
/// from the verdict and the facts, set where it changed (transition times
/// kept otherwise), then the phase they add up to.
pub fn request_status(
    prev: &ServiceRequestStatus,
    verdict: &Verdict,
    commit: &CommitState,
    sync: Option<&SyncStatus>,
    argocd: bool,
    generation: i64,
    now: &str,
) -> ServiceRequestStatus {
    // Argo CD's message names every resource that is not healthy: kept
    // short, in status.sync and in the Synced and Ready conditions.
    let sync = sync.cloned().map(|mut s| {
        truncate_message(&mut s.message, MAX_SYNC_MESSAGE_BYTES);
        s
    });
    let sync = sync.as_ref();
    let render = render_status(prev, verdict, commit, generation);
    let committed_rev = render.as_ref().map(|r| r.revision.as_str()).unwrap_or_default();
    let committed_now = matches!(commit, CommitState::Committed { .. })
        || (matches!(commit, CommitState::NotAttempted) && render.is_some());
    let failed_commit = matches!(commit, CommitState::Failed(_));
    let (synced_condition, synced, healthy) = synced(argocd, sync, committed_rev);
    let ready = ready(
        argocd,
        sync,
        committed_rev,
        committed_now && !failed_commit,
        committed_now,
        synced && healthy,
    );

    let mut conditions = prev.conditions.clone();
    let has = |type_: &str| find_condition(&prev.conditions, type_).is_some();
    let computed = [
        Some(validated(verdict)),
        Some(policy_compliant(verdict)),
        Some(approved(verdict, generation)),
        rendered(verdict, has(RENDERED)),
        committed(prev, verdict, commit, has(COMMITTED)),
        Some(synced_condition),
        Some(ready.0),
    ];
    for c in computed.into_iter().flatten() {
        set_condition(
            &mut conditions,
            Condition {
                observed_generation: Some(generation),
                ..c
            },
            now,
        );
    }

    let phase = match verdict.outcome {
        // What was committed before stays (status.render says where), but the
        // request as it stands now is rejected, e.g. after a bundle went to enforce.
        Outcome::Invalid | Outcome::Denied | Outcome::ApprovalRejected => Phase::Rejected,
        Outcome::PolicyUnavailable => Phase::Pending,
        Outcome::NeedsApproval => Phase::AwaitingApproval,
        Outcome::RenderFailed => Phase::Failed,
        _ if failed_commit => Phase::Pending,
        _ if synced => Phase::Synced,
        _ if render.is_some() => Phase::Rendered,
        _ => Phase::Pending,
    };
    let policy = &verdict.policy;
    ServiceRequestStatus {
        phase,
        conditions,
        violations: policy.violations.clone(),
        warnings: policy.warnings.clone(),
        dryrun: policy.dryrun.clone(),
        waived: policy.waived.clone(),
        approval_reasons: policy.approval_reasons.clone(),
        estimate: verdict.estimate.as_ref().map(|e| EstimateStatus {
            monthly: e.monthly,
            currency: e.currency.clone(),
        }),
        render,
        sync: sync.cloned(),
        observed_generation: Some(generation),
    }
}

/// `status.render`: where the request's output is. A commit of this
/// reconcile replaces it; otherwise it stays what it was.
fn render_status(
    prev: &ServiceRequestStatus,
    verdict: &Verdict,
    commit: &CommitState,
    generation: i64,
) -> Option<RenderStatus> {
    match (commit, &verdict.rendered) {
        (CommitState::Committed { revision, .. }, Some(r)) => Some(RenderStatus {
            revision: revision.clone(),
            short_revision: revision.chars().take(8).collect(),
            path: r.dir.clone(),
            route_version: verdict.route_version.clone().unwrap_or_default(),
            route_revision: verdict.route_revision.clone().unwrap_or_default(),
            bundle_versions: verdict.policy.bundle_versions.clone(),
            files: r.files.len() as u32,
            digest: r.digest.clone(),
            generation,
        }),
        _ => prev.render.clone(),
    }
}

fn validated(verdict: &Verdict) -> Condition {
    if verdict.errors.is_empty() {
        let mut msg = format!("valid for route {}", verdict.route.as_deref().unwrap_or_default());
        for n in &verdict.notices {
            msg.push_str("; ");
            msg.push_str(n);
        }
        Condition::new(VALIDATED, true, "Valid", msg)
    } else {
        let msg = verdict
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let reason = if verdict.no_matching_version {
            "NoMatchingRouteVersion"
        } else {
            "InvalidSpec"
        };
        Condition::new(VALIDATED, false, reason, msg)
    }
}

fn policy_compliant(verdict: &Verdict) -> Condition {
    let policy = &verdict.policy;
    match verdict.outcome {
        Outcome::Invalid => unknown(POLICY_COMPLIANT, "NotEvaluated", "the request is not valid"),
        Outcome::PolicyUnavailable => unknown(
            POLICY_COMPLIANT,
            "PolicyUnavailable",
            match &verdict.policy_error {
                Some(e) => format!("{e}; the request waits (an evaluation error never allows it)"),
                None => format!(
                    "no good version of bundle(s) {} (none compiled and passed its tests); waiting",
                    verdict.missing_bundles.join(", ")
                ),
            },
        ),
        Outcome::Denied => Condition::new(
            POLICY_COMPLIANT,
            false,
            "PolicyViolation",
            format!(
                "{} violation(s): {}",
                policy.violations.len(),
                join_findings(&policy.violations)
            ),
        ),
        _ if policy.warnings.is_empty() => {
            Condition::new(POLICY_COMPLIANT, true, "Compliant", "no violations")
        }
        _ => Condition::new(
            POLICY_COMPLIANT,
            true,
            "CompliantWithWarnings",
            format!(
                "{} warning(s): {}",
                policy.warnings.len(),
                join_findings(&policy.warnings)
            ),
        ),
    }
}

fn approved(verdict: &Verdict, generation: i64) -> Condition {
    match (&verdict.outcome, &verdict.approval) {
        (Outcome::NeedsApproval, _) => Condition::new(
            APPROVED,
            false,
            "AwaitingApproval",
            format!(
                "policy asks for approval of generation {generation}: {}; create an Approval naming this request and generation",
                verdict.policy.approval_reasons.join("; ")
            ),
        ),
        (Outcome::ApprovalRejected, Some(a)) => Condition::new(
            APPROVED,
            false,
            "Rejected",
            format!(
                "generation {} rejected by {}: {}",
                a.generation, a.approver, a.reason
            ),
        ),
        (Outcome::Allowed | Outcome::RenderFailed, Some(a)) => Condition::new(
            APPROVED,
            true,
            "Approved",
            format!(
                "generation {} approved by {}: {}",
                a.generation, a.approver, a.reason
            ),
        ),
        (Outcome::Allowed | Outcome::RenderFailed, None) => {
            Condition::new(APPROVED, true, "NotRequired", "policy asks for no approval")
        }
        _ => unknown(APPROVED, "NotEvaluated", "policy did not allow the request"),
    }
}

/// None: leave the condition as it is (nothing was rendered this time, and
/// the request has one already).
fn rendered(verdict: &Verdict, has_one: bool) -> Option<Condition> {
    if let Some(r) = &verdict.rendered {
        Some(Condition::new(
            RENDERED,
            true,
            "Rendered",
            format!("{} file(s) in {}", r.files.len(), r.dir),
        ))
    } else if let Some(e) = &verdict.render_error {
        Some(Condition::new(RENDERED, false, "RenderFailed", e.clone()))
    } else if !has_one {
        Some(unknown(
            RENDERED,
            "NotRendered",
            "the request has not been rendered",
        ))
    } else {
        None
    }
}

/// None: leave the condition as it is (nothing was committed this time).
fn committed(
    prev: &ServiceRequestStatus,
    verdict: &Verdict,
    commit: &CommitState,
    has_one: bool,
) -> Option<Condition> {
    match commit {
        CommitState::Committed { revision, .. } => Some(if is_drift(prev.render.as_ref(), verdict, commit) {
            Condition::new(
                COMMITTED,
                true,
                "DriftRestored",
                format!("rendered files had been edited in the repository; restored at {revision}"),
            )
        } else {
            Condition::new(COMMITTED, true, "Committed", format!("revision {revision}"))
        }),
        CommitState::Failed(e) => Some(Condition::new(
            COMMITTED,
            false,
            "PushFailed",
            format!("{e}; retrying with backoff"),
        )),
        CommitState::NotAttempted if !has_one => Some(unknown(
            COMMITTED,
            "NotCommitted",
            "nothing has been committed for this request",
        )),
        CommitState::NotAttempted => None,
    }
}

/// The Synced condition, whether the committed revision is synced, and
/// whether the Application is healthy.
fn synced(argocd: bool, sync: Option<&SyncStatus>, committed_rev: &str) -> (Condition, bool, bool) {
    match (argocd, sync) {
        (false, _) => (
            unknown(
                SYNCED,
                "ArgoCDNotInstalled",
                "the Argo CD Application CRD is not installed; the request stops at Rendered",
            ),
            false,
            false,
        ),
        (true, None) => (
            unknown(
                SYNCED,
                "WaitingForArgoCD",
                "Argo CD has not reported on the Application yet",
            ),
            false,
            false,
        ),
        (true, Some(s)) => {
            let at_rev = !committed_rev.is_empty() && s.revision == committed_rev;
            let ok = s.status == "Synced" && at_rev;
            let msg = if ok {
                format!("{} synced at {}", s.application, committed_rev)
            } else if s.status == "Synced" {
                format!(
                    "{} synced at {} but Paver pushed {}",
                    s.application, s.revision, committed_rev
                )
            } else {
                format!("{} is {}: {}", s.application, s.status, s.message)
            };
            let condition = Condition::new(SYNCED, ok, if ok { "Synced" } else { "OutOfSync" }, msg);
            (condition, ok, s.health == "Healthy")
        }
    }
}

/// Ready: committed (and, with Argo CD, synced and healthy).
fn ready(
    argocd: bool,
    sync: Option<&SyncStatus>,
    committed_rev: &str,
    committed_ok: bool,
    committed_now: bool,
    synced_and_healthy: bool,
) -> (Condition, bool) {
    let ready = committed_ok && (!argocd || synced_and_healthy);
    let msg = if ready {
        if argocd {
            "synced and healthy".to_string()
        } else {
            format!("committed at {committed_rev}")
        }
    } else if let (true, Some(s)) = (argocd && committed_now, sync) {
        format!("health {}: {}", s.health, s.message)
    } else {
        "not committed yet".to_string()
    };
    let reason = if ready {
        "Ready"
    } else if argocd && committed_now {
        "NotHealthy"
    } else {
        "NotReady"
    };
    (Condition::new(READY, ready, reason, msg), ready)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use paver_crds::{Approval, ApprovalSpec, Decision, ServiceRequest};

    use super::*;
    use crate::{
        content::{Content, parse_requests},
        core::{render::RenderOptions, verdict::Catalog, verdict::decide_request},
    };

    fn catalog() -> Catalog {
        let (catalog, problems) =
            Catalog::from_content(Content::embedded().expect("embedded content"), chrono::Utc::now());
        assert!(problems.is_empty(), "{problems:?}");
        catalog
    }

    fn example(name: &str, generation: i64) -> ServiceRequest {
        let path = format!("{}/../examples/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).expect("example");
        let mut sr = parse_requests(&text, name).expect("parse").remove(0);
        sr.metadata.generation = Some(generation);
        sr.metadata.uid = Some("uid-1".into());
        sr
    }

    fn approval(generation: i64, decision: Decision) -> Approval {
        let mut a = Approval::new(
            "ok",
            ApprovalSpec {
                request: "payment-gateway".into(),
                generation,
                approver: "alice".into(),
                reason: "reviewed".into(),
                decision,
            },
        );
        a.metadata.namespace = Some("payments".into());
        a
    }

    fn status_of(v: &Verdict, commit: &CommitState, generation: i64) -> ServiceRequestStatus {
        request_status(
            &ServiceRequestStatus::default(),
            v,
            commit,
            None,
            false,
            generation,
            "t0",
        )
    }

    fn committed() -> CommitState {
        CommitState::Committed {
            revision: "0123456789abcdef".into(),
            changed: true,
        }
    }

    /// A bundle that errors only for some inputs: the request it errors on
    /// is held (PolicyUnavailable, never committed) with the error in its
    /// condition; the others are judged as before.
    #[test]
    fn an_evaluation_error_holds_the_request_never_allows_it() {
        let mut cat = catalog();
        let fragile = paver_crds::PolicyBundleSpec {
            version: "1.0.0".into(),
            match_: Some(Default::default()),
            modules: vec![paver_crds::RegoModule {
                name: "fragile.rego".into(),
                source: "package paver.fragile\n\ndeny contains \"too many\" if {\n  \
                         n := input.parameters.compute.replicas\n  100 / (n - 2) > 1000\n}\n"
                    .into(),
            }],
            ..Default::default()
        };
        let report = cat.bundles.update("fragile", &fragile, chrono::Utc::now());
        assert!(report.activated, "{report:?}");
        let opts = RenderOptions::default();
        // orders-api has 2 replicas: 100 / 0.
        let held = decide_request(&cat, &example("orders-api", 1), &[], &opts, Utc::now());
        assert_eq!(held.outcome, Outcome::PolicyUnavailable);
        assert!(held.rendered.is_none(), "nothing to commit");
        let error = held.policy_error.clone().expect("the error is kept");
        assert!(error.contains("fragile"), "{error}");
        let st = status_of(&held, &CommitState::NotAttempted, 1);
        assert_eq!(st.phase, Phase::Pending);
        let c = find_condition(&st.conditions, POLICY_COMPLIANT).expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", "PolicyUnavailable")
        );
        assert!(c.message.contains(&error), "{}", c.message);
        let v = find_condition(&st.conditions, VALIDATED).expect("condition");
        assert!(v.is_true(), "the request itself is valid: {v:?}");
        // storefront-web has 3: judged, not held.
        let judged = decide_request(&cat, &example("storefront-web", 1), &[], &opts, Utc::now());
        assert_ne!(
            judged.outcome,
            Outcome::PolicyUnavailable,
            "{:?}",
            judged.policy_error
        );
    }

    #[test]
    fn approval_counts_only_for_its_generation() {
        let cat = catalog();
        let sr = example("payment-gateway", 4);
        let opts = RenderOptions::default();
        let waiting = decide_request(&cat, &sr, &[approval(3, Decision::Approve)], &opts, Utc::now());
        assert_eq!(waiting.outcome, Outcome::NeedsApproval);
        let st = status_of(&waiting, &CommitState::NotAttempted, 4);
        assert_eq!(st.phase, Phase::AwaitingApproval);
        let approved = find_condition(&st.conditions, APPROVED).expect("approved condition");
        assert_eq!(
            (approved.status.as_str(), approved.reason.as_str()),
            ("False", "AwaitingApproval")
        );

        let ok = decide_request(&cat, &sr, &[approval(4, Decision::Approve)], &opts, Utc::now());
        assert_eq!(ok.outcome, Outcome::Allowed);
        assert!(ok.rendered.is_some());
        let st = status_of(&ok, &committed(), 4);
        assert_eq!(st.phase, Phase::Rendered);
        assert_eq!(
            st.render.as_ref().map(|r| r.short_revision.as_str()),
            Some("01234567")
        );
        assert!(find_condition(&st.conditions, READY).is_some_and(|c| c.is_true()));

        let both = [approval(4, Decision::Approve), approval(4, Decision::Reject)];
        let rejected = decide_request(&cat, &sr, &both, &opts, Utc::now());
        assert_eq!(rejected.outcome, Outcome::ApprovalRejected);
        assert_eq!(
            status_of(&rejected, &CommitState::NotAttempted, 4).phase,
            Phase::Rejected
        );
    }

    #[test]
    fn denied_generation_keeps_earlier_output_and_reports_violations() {
        let cat = catalog();
        let mut sr = example("orders-api", 1);
        let opts = RenderOptions::default();
        let v1 = decide_request(&cat, &sr, &[], &opts, Utc::now());
        assert_eq!(v1.outcome, Outcome::Allowed);
        let rendered = status_of(&v1, &committed(), 1);

        // Same generation, policy now denies (e.g. a bundle went to enforce): the
        // request is Rejected, what was committed stays and status.render names it.
        sr.spec.environment = paver_crds::Environment::Production;
        sr.spec.parameters["compute"]["replicas"] = 1.into();
        let denied = decide_request(&cat, &sr, &[], &opts, Utc::now());
        assert_eq!(denied.outcome, Outcome::Denied);
        let st = request_status(
            &rendered,
            &denied,
            &CommitState::NotAttempted,
            None,
            false,
            1,
            "t1",
        );
        assert_eq!(st.phase, Phase::Rejected);
        assert!(!st.violations.is_empty());
        assert_eq!(st.render, rendered.render);
        // A new generation that is denied is Rejected; the render status still names the old commit.
        let st = request_status(
            &rendered,
            &denied,
            &CommitState::NotAttempted,
            None,
            false,
            2,
            "t1",
        );
        assert_eq!(st.phase, Phase::Rejected);
        let pc = find_condition(&st.conditions, POLICY_COMPLIANT).expect("policy condition");
        assert!(pc.message.contains("reliability/"), "{}", pc.message);
    }

    #[test]
    fn same_inputs_give_equal_status_so_nothing_is_written() {
        let cat = catalog();
        let sr = example("orders-api", 1);
        let v = decide_request(&cat, &sr, &[], &RenderOptions::default(), Utc::now());
        let first = status_of(&v, &committed(), 1);
        let unchanged = CommitState::Committed {
            revision: "0123456789abcdef".into(),
            changed: false,
        };
        let again = request_status(&first, &v, &unchanged, None, false, 1, "t9");
        assert_eq!(first, again);
    }

    #[test]
    fn drift_and_push_failure_are_reported() {
        let cat = catalog();
        let sr = example("orders-api", 1);
        let v = decide_request(&cat, &sr, &[], &RenderOptions::default(), Utc::now());
        let first = status_of(&v, &committed(), 1);
        let restored = CommitState::Committed {
            revision: "fedcba9876543210".into(),
            changed: true,
        };
        assert!(is_drift(first.render.as_ref(), &v, &restored));
        let st = request_status(&first, &v, &restored, None, false, 1, "t2");
        assert_eq!(
            find_condition(&st.conditions, COMMITTED).map(|c| c.reason.as_str()),
            Some("DriftRestored")
        );

        let failed = CommitState::Failed("failed to push: connection refused".into());
        let st = request_status(
            &ServiceRequestStatus::default(),
            &v,
            &failed,
            None,
            false,
            1,
            "t3",
        );
        assert_eq!(st.phase, Phase::Pending);
        let c = find_condition(&st.conditions, COMMITTED).expect("committed condition");
        assert_eq!(c.reason, "PushFailed");
        assert!(c.message.contains("connection refused"));
    }

    #[test]
    fn argo_cd_sync_at_the_pushed_revision_means_synced() {
        let cat = catalog();
        let sr = example("orders-api", 1);
        let v = decide_request(&cat, &sr, &[], &RenderOptions::default(), Utc::now());
        let mut sync = SyncStatus {
            application: "argocd/commerce-orders-api".into(),
            status: "Synced".into(),
            health: "Healthy".into(),
            revision: "0123456789abcdef".into(),
            message: String::new(),
        };
        let st = request_status(
            &ServiceRequestStatus::default(),
            &v,
            &committed(),
            Some(&sync),
            true,
            1,
            "t",
        );
        assert_eq!(st.phase, Phase::Synced);
        assert!(find_condition(&st.conditions, READY).is_some_and(|c| c.is_true()));
        sync.revision = "old".into();
        sync.health = "Degraded".into();
        sync.message = "Deployment exceeded its progress deadline".into();
        let st = request_status(
            &ServiceRequestStatus::default(),
            &v,
            &committed(),
            Some(&sync),
            true,
            1,
            "t",
        );
        assert_eq!(st.phase, Phase::Rendered);
        let ready = find_condition(&st.conditions, READY).expect("ready");
        assert!(
            !ready.is_true() && ready.message.contains("progress deadline"),
            "{}",
            ready.message
        );
        let without_argo = request_status(
            &ServiceRequestStatus::default(),
            &v,
            &committed(),
            None,
            false,
            1,
            "t",
        );
        let synced = find_condition(&without_argo.conditions, SYNCED).expect("synced");
        assert_eq!(synced.reason, "ArgoCDNotInstalled");
    }

    /// 900 schema violations and a 100 KB Argo CD message: every condition
    /// stays under Kubernetes' 32 KiB, the status far under etcd's 1.5 MiB.
    #[test]
    fn a_requests_status_is_bounded_whatever_its_errors() {
        let cat = catalog();
        let mut sr = example("orders-api", 1);
        sr.spec.parameters["repository"]["requiredChecks"] = (0..900).collect();
        let v = decide_request(&cat, &sr, &[], &RenderOptions::default(), Utc::now());
        // The validation lists 20 errors and counts the rest.
        assert!((20..=30).contains(&v.errors.len()), "{}", v.errors.len());
        let sync = SyncStatus {
            application: "argocd/commerce-orders-api".into(),
            status: "OutOfSync".into(),
            health: "Degraded".into(),
            revision: "old".into(),
            message: "Deployment is Degraded; ".repeat(4000),
        };
        let st = request_status(
            &ServiceRequestStatus::default(),
            &v,
            &CommitState::NotAttempted,
            Some(&sync),
            true,
            1,
            "t",
        );
        for c in &st.conditions {
            assert!(
                c.message.len() <= paver_crds::MAX_CONDITION_MESSAGE_BYTES,
                "{}: {}",
                c.type_,
                c.message.len()
            );
        }
        let validated = find_condition(&st.conditions, VALIDATED).expect("validated");
        // Bounded where the errors are made (20 named, the rest counted),
        // and in any case by the condition's own cut.
        assert!(validated.message.contains(" more "), "{}", validated.message);
        assert!(
            st.sync
                .as_ref()
                .is_some_and(|s| s.message.len() <= MAX_SYNC_MESSAGE_BYTES)
        );
        let bytes = serde_json::to_vec(&st).expect("serializes").len();
        assert!(bytes < 128 * 1024, "{bytes} bytes");
    }
}
