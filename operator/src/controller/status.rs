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
        Outcome::Invalid | Outcome::Denied | Outcome::ApprovalRejected if render.is_none() => Phase::Rejected,
        Outcome::Invalid | Outcome::Denied | Outcome::ApprovalRejected
            if render.as_ref().is_some_and(|r| r.generation != generation) =>
        {
            Phase::Rejected
        }
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
