//! Builds a ServiceRequest's status from a verdict and what the shells saw
//! (the commit, Argo CD). Pure: the only writer of request status calls it
//! and writes the result only when it differs from what is there.

use paver_crds::{
    Condition, EstimateStatus, Phase, RenderStatus, ServiceRequestStatus, SyncStatus, find_condition,
    set_condition,
};

use crate::core::verdict::{Outcome, Verdict};

/// Condition types, in the order a request passes them.
pub const VALIDATED: &str = "Validated";
pub const POLICY_COMPLIANT: &str = "PolicyCompliant";
pub const APPROVED: &str = "Approved";
pub const RENDERED: &str = "Rendered";
pub const COMMITTED: &str = "Committed";
pub const SYNCED: &str = "Synced";
pub const READY: &str = "Ready";

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

/// Whether a commit that changed files although the render did not is a
/// restore of hand edits (drift).
pub fn is_drift(prev: Option<&RenderStatus>, verdict: &Verdict, commit: &CommitState) -> bool {
    matches!(commit, CommitState::Committed { changed: true, .. })
        && match (prev, &verdict.rendered) {
            (Some(prev), Some(now)) => !prev.revision.is_empty() && prev.digest == now.digest,
            _ => false,
        }
}

/// The status a request should have.
pub fn request_status(
    prev: &ServiceRequestStatus,
    verdict: &Verdict,
    commit: &CommitState,
    sync: Option<&SyncStatus>,
    argocd: bool,
    generation: i64,
    now: &str,
) -> ServiceRequestStatus {
    let mut conditions = prev.conditions.clone();
    macro_rules! set {
        ($c:expr) => {{
            set_condition(
                &mut conditions,
                Condition {
                    observed_generation: Some(generation),
                    ..$c
                },
                now,
            );
        }};
    }
    let route = verdict.route.clone().unwrap_or_default();

    // Validated
    if verdict.errors.is_empty() {
        let mut msg = format!("valid for route {route}");
        for n in &verdict.notices {
            msg.push_str("; ");
            msg.push_str(n);
        }
        set!(Condition::new(VALIDATED, true, "Valid", msg));
    } else {
        let msg = verdict
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        set!(Condition::new(VALIDATED, false, "InvalidSpec", msg));
    }

    // PolicyCompliant
    let policy = &verdict.policy;
    match verdict.outcome {
        Outcome::Invalid => set!(unknown(
            POLICY_COMPLIANT,
            "NotEvaluated",
            "the request is not valid"
        )),
        Outcome::PolicyUnavailable => set!(unknown(
            POLICY_COMPLIANT,
            "PolicyUnavailable",
            format!(
                "no good version of bundle(s) {} (none compiled and passed its tests); waiting",
                verdict.missing_bundles.join(", ")
            ),
        )),
        Outcome::Denied => set!(Condition::new(
            POLICY_COMPLIANT,
            false,
            "PolicyViolation",
            format!(
                "{} violation(s): {}",
                policy.violations.len(),
                join_findings(&policy.violations)
            ),
        )),
        _ if policy.warnings.is_empty() => set!(Condition::new(
            POLICY_COMPLIANT,
            true,
            "Compliant",
            "no violations"
        )),
        _ => set!(Condition::new(
            POLICY_COMPLIANT,
            true,
            "CompliantWithWarnings",
            format!(
                "{} warning(s): {}",
                policy.warnings.len(),
                join_findings(&policy.warnings)
            ),
        )),
    }

    // Approved
    match (&verdict.outcome, &verdict.approval) {
        (Outcome::NeedsApproval, _) => set!(Condition::new(
            APPROVED,
            false,
            "AwaitingApproval",
            format!(
                "policy asks for approval of generation {generation}: {}; create an Approval naming this request and generation",
                policy.approval_reasons.join("; ")
            ),
        )),
        (Outcome::ApprovalRejected, Some(a)) => set!(Condition::new(
            APPROVED,
            false,
            "Rejected",
            format!(
                "generation {} rejected by {}: {}",
                a.generation, a.approver, a.reason
            ),
        )),
        (Outcome::Allowed, Some(a)) => set!(Condition::new(
            APPROVED,
            true,
            "Approved",
            format!(
                "generation {} approved by {}: {}",
                a.generation, a.approver, a.reason
            ),
        )),
        (Outcome::Allowed, None) => set!(Condition::new(
            APPROVED,
            true,
            "NotRequired",
            "policy asks for no approval"
        )),
        _ => set!(unknown(
            APPROVED,
            "NotEvaluated",
            "policy did not allow the request"
        )),
    }

    // Rendered
    if let Some(r) = &verdict.rendered {
        set!(Condition::new(
            RENDERED,
            true,
            "Rendered",
            format!("{} file(s) in {}", r.files.len(), r.dir)
        ));
    } else if let Some(e) = &verdict.render_error {
        set!(Condition::new(RENDERED, false, "RenderFailed", e.clone()));
    } else if find_condition(&conditions, RENDERED).is_none() {
        set!(unknown(
            RENDERED,
            "NotRendered",
            "the request has not been rendered"
        ));
    }

    // Committed, and the render status that goes with it.
    let mut render = prev.render.clone();
    match commit {
        CommitState::Committed { revision, .. } => {
            let drift = is_drift(prev.render.as_ref(), verdict, commit);
            if let Some(r) = &verdict.rendered {
                render = Some(RenderStatus {
                    revision: revision.clone(),
                    short_revision: revision.chars().take(8).collect(),
                    path: r.dir.clone(),
                    route_version: verdict.route_version.clone().unwrap_or_default(),
                    bundle_versions: policy.bundle_versions.clone(),
                    files: r.files.len() as u32,
                    digest: r.digest.clone(),
                    generation,
                });
            }
            if drift {
                set!(Condition::new(
                    COMMITTED,
                    true,
                    "DriftRestored",
                    format!("rendered files had been edited in the repository; restored at {revision}"),
                ));
            } else {
                set!(Condition::new(
                    COMMITTED,
                    true,
                    "Committed",
                    format!("revision {revision}")
                ));
            }
        }
        CommitState::Failed(e) => {
            set!(Condition::new(
                COMMITTED,
                false,
                "PushFailed",
                format!("{e}; retrying with backoff")
            ))
        }
        CommitState::NotAttempted => {
            if find_condition(&conditions, COMMITTED).is_none() {
                set!(unknown(
                    COMMITTED,
                    "NotCommitted",
                    "nothing has been committed for this request"
                ));
            }
        }
    }

    // Synced and Ready
    let committed_rev = render.as_ref().map(|r| r.revision.clone()).unwrap_or_default();
    let committed_now = matches!(commit, CommitState::Committed { .. })
        || (matches!(commit, CommitState::NotAttempted) && render.is_some());
    let (synced, healthy) = match (argocd, sync) {
        (false, _) => {
            set!(unknown(
                SYNCED,
                "ArgoCDNotInstalled",
                "the Argo CD Application CRD is not installed; the request stops at Rendered",
            ));
            (false, false)
        }
        (true, None) => {
            set!(unknown(
                SYNCED,
                "WaitingForArgoCD",
                "Argo CD has not reported on the Application yet"
            ));
            (false, false)
        }
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
            set!(Condition::new(
                SYNCED,
                ok,
                if ok { "Synced" } else { "OutOfSync" },
                msg
            ));
            (ok, s.health == "Healthy")
        }
    };
    let failed_commit = matches!(commit, CommitState::Failed(_));
    let ready = committed_now && !failed_commit && (!argocd || (synced && healthy));
    let ready_msg = if ready {
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
    set!(Condition::new(
        READY,
        ready,
        if ready {
            "Ready"
        } else if argocd && committed_now {
            "NotHealthy"
        } else {
            "NotReady"
        },
        ready_msg,
    ));

    let phase = match verdict.outcome {
        // What was committed before stays (status.render says where), but the
        // request as it stands now is rejected, e.g. after a bundle went to enforce.
        Outcome::Invalid | Outcome::Denied | Outcome::ApprovalRejected => Phase::Rejected,
        Outcome::PolicyUnavailable => Phase::Pending,
        Outcome::NeedsApproval => Phase::AwaitingApproval,
        _ if verdict.render_error.is_some() => Phase::Failed,
        _ if failed_commit => Phase::Pending,
        _ if synced => Phase::Synced,
        _ if render.is_some() => Phase::Rendered,
        _ => Phase::Pending,
    };

    ServiceRequestStatus {
        phase,
        conditions,
        violations: policy.violations.clone(),
        warnings: policy.warnings.clone(),
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
        let (catalog, problems) = Catalog::from_content(Content::embedded().expect("embedded content"));
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
}
