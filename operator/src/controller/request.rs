//! ServiceRequest reconcile: gather inputs, call the core, commit through
//! the Git writer, write status and Scorecard only when they changed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{controller::Action, events::EventType},
};
use paver_crds::{
    Approval, Phase, Scorecard, ScorecardSpec, ScorecardStatus, ServiceRequest, ServiceRequestStatus,
    SyncStatus, now_rfc3339,
};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{
    Ctx, Error, FIELD_MANAGER, FINALIZER, Result,
    status::{self, CommitState, request_status},
};
use crate::{
    core::verdict::{Outcome, Verdict, decide_request, scorecard_for},
    git::Change,
};

/// How long to wait before retrying a failed push.
const PUSH_RETRY: Duration = Duration::from_secs(10);

/// `namespace/name` of a request (or of its metadata).
pub fn key<K: ResourceExt>(sr: &K) -> String {
    format!("{}/{}", sr.namespace().unwrap_or_default(), sr.name_any())
}

/// Approvals in the request's namespace that name it.
fn approvals_for(ctx: &Ctx, sr: &ServiceRequest) -> Vec<Approval> {
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    ctx.approvals
        .state()
        .iter()
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()) && a.spec.request == name)
        .map(|a| (**a).clone())
        .collect()
}

/// The trailers every commit for this request carries.
pub fn trailers(sr: &ServiceRequest, verdict: &Verdict) -> Vec<(String, String)> {
    vec![
        ("Paver-Request".into(), key(sr)),
        ("Paver-Request-UID".into(), sr.uid().unwrap_or_default()),
        (
            "Paver-Generation".into(),
            sr.metadata.generation.unwrap_or(0).to_string(),
        ),
        ("Paver-Route".into(), verdict.route.clone().unwrap_or_default()),
        ("Paver-Bundles".into(), verdict.policy.bundle_versions.join(", ")),
    ]
}

/// A request as the controller's cache knows it: metadata only.
pub type RequestMeta = PartialObjectMeta<ServiceRequest>;

/// What the request cache keeps of a request's metadata: what the watchers
/// and the controller read from it (name, namespace and labels to find it
/// and to match bundles, generation and deletion to decide whether to
/// reconcile). Its uid, resourceVersion, finalizers, annotations, owner
/// references and managed fields are left out, here and in every reference
/// the controller's queue makes from it: a reconcile reads the whole
/// request first.
pub fn slim_meta(meta: &mut RequestMeta) {
    let m = std::mem::take(&mut meta.metadata);
    meta.metadata = kube::api::ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        labels: m.labels,
        generation: m.generation,
        deletion_timestamp: m.deletion_timestamp,
        ..Default::default()
    };
    meta.types = None;
}

/// Reads the request (the cache keeps only its metadata) and reconciles it.
#[instrument(skip(meta, ctx), fields(request = %key(&*meta)))]
pub async fn reconcile(meta: Arc<RequestMeta>, ctx: Ctx) -> Result<Action> {
    let started = std::time::Instant::now();
    let result = read_and_reconcile(&meta, &ctx).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciled("servicerequest", outcome, started.elapsed().as_secs_f64());
    result
}

async fn read_and_reconcile(meta: &RequestMeta, ctx: &Ctx) -> Result<Action> {
    let ns = meta
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = meta.name_any();
    let api: Api<ServiceRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(mut sr) = api.get_opt(&name).await? else {
        ctx.routes.forget(&ns, &name);
        return Ok(Action::await_change());
    };
    super::slim(&mut sr);
    ctx.routes.set(&sr);
    reconcile_inner(&sr, ctx, &api).await
}

async fn reconcile_inner(sr: &ServiceRequest, ctx: &Ctx, api: &Api<ServiceRequest>) -> Result<Action> {
    if sr.metadata.deletion_timestamp.is_some() {
        return cleanup(sr, ctx, api).await;
    }
    if !sr.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = sr.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": sr.resource_version()}});
        api.patch(&sr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.metrics.wrote("servicerequests", "patch");
    }

    let generation = sr.metadata.generation.unwrap_or(0);
    let prev = sr.status.clone().unwrap_or_default();
    let approvals = approvals_for(ctx, sr);
    let mut verdict = {
        let catalog = ctx.catalog.read().await;
        let policy_started = std::time::Instant::now();
        let v = decide_request(&catalog, sr, &approvals, &ctx.render_options(), Utc::now());
        ctx.metrics
            .policy_eval_duration
            .observe(policy_started.elapsed().as_secs_f64());
        v
    };
    for f in &verdict.policy.violations {
        ctx.metrics
            .violations
            .get_or_create(&super::metrics::ViolationLabels {
                bundle: f.bundle.clone(),
                rule: f.rule.clone(),
                team: sr.spec.team.clone(),
            })
            .inc();
    }

    // Policy changes never delete output: only an allowed verdict commits.
    // Who last committed to the request's directory, as the writer read it right after the batch.
    let mut authors = None;
    let allowed = matches!(verdict.outcome, Outcome::Allowed);
    let provenance = trailers(sr, &verdict);
    let summary = format!(
        "render {} (generation {generation}) with {}",
        key(sr),
        verdict.route.clone().unwrap_or_default()
    );
    let commit = match verdict.rendered.as_mut() {
        Some(rendered) if allowed => {
            // The files travel to the writer and stay with the verdict (the
            // Scorecard reads them) as one copy while the commit is in flight.
            let files = Arc::new(std::mem::take(&mut rendered.files));
            let change = Change {
                key: key(sr),
                dir: rendered.dir.clone(),
                files: files.clone(),
                delete: false,
                trailers: provenance,
                summary,
            };
            let started = std::time::Instant::now();
            let submitted = ctx.writer.submit(change).await;
            // The writer has dropped its copy by the time it answers.
            rendered.files = Arc::try_unwrap(files).unwrap_or_else(|shared| (*shared).clone());
            match submitted {
                Ok(r) => {
                    authors = Some(r.authors.clone());
                    let outcome = if r.changed { "committed" } else { "unchanged" };
                    ctx.metrics
                        .git("commit", outcome, started.elapsed().as_secs_f64());
                    ctx.metrics.git("push", outcome, r.metrics.push.as_secs_f64());
                    CommitState::Committed {
                        revision: r.revision.unwrap_or_default(),
                        changed: r.changed,
                    }
                }
                Err(e) => {
                    ctx.metrics
                        .git("commit", "failed", started.elapsed().as_secs_f64());
                    let already = prev.render.as_ref().is_some_and(|r| {
                        r.digest == rendered.digest && r.generation == generation && r.path == rendered.dir
                    });
                    if already {
                        // This exact render is committed: only the resync's drift
                        // check failed. Status stays as it is (no write per request
                        // during a Git outage); the next resync checks again.
                        warn!(error = %e, "could not check the committed render for drift");
                        CommitState::NotAttempted
                    } else {
                        warn!(error = %e, "failed to commit render");
                        CommitState::Failed(e.to_string())
                    }
                }
            }
        }
        _ => CommitState::NotAttempted,
    };

    // One lookup for both what Argo CD reports and the workloads it lists.
    let application = if ctx.argocd { ctx.application(sr) } else { None };
    let mut sync = application.as_deref().map(super::sync_status);
    // Argo CD syncs the branch head; the request's output is at the commit
    // that last changed its directory. A head that contains that commit has
    // synced this request's revision (later commits are other requests').
    let ours = match &commit {
        CommitState::Committed { revision, .. } => Some(revision.clone()),
        _ => prev.render.as_ref().map(|r| r.revision.clone()),
    };
    if let (Some(s), Some(ours)) = (sync.as_mut(), ours)
        && !s.revision.is_empty()
        && s.revision != ours
        && ctx.writer.contains(&s.revision, &ours).await.unwrap_or(false)
    {
        s.revision = ours;
    }
    let new_status = request_status(
        &prev,
        &verdict,
        &commit,
        sync.as_ref(),
        ctx.argocd,
        generation,
        &now_rfc3339(),
    );
    let drift = status::is_drift(prev.render.as_ref(), &verdict, &commit);
    if drift {
        ctx.metrics.drift_restored.inc();
        publish(
            ctx,
            sr,
            EventType::Warning,
            "DriftRestored",
            "restored rendered files edited in the repository",
        )
        .await;
    }
    if new_status != prev {
        write_status(api, sr, &new_status, ctx).await?;
        if new_status.phase != prev.phase || sr.status.is_none() {
            announce(ctx, sr, &new_status).await;
        }
    }
    if let Some(rendered) = &verdict.rendered
        && matches!(commit, CommitState::Committed { .. })
    {
        let times = match authors {
            Some(times) => Some(times),
            None => git_times(ctx, &rendered.dir).await,
        };
        let facts = times.map_or_else(
            || json!({}),
            |t| git_facts(&t, &sr.spec.owner, Utc::now().timestamp()),
        );
        let cluster = cluster_facts(
            sync.as_ref(),
            application.as_deref().map(super::workloads).unwrap_or_default(),
        );
        let checks = {
            let catalog = ctx.catalog.read().await;
            scorecard_for(&catalog, sr, &verdict, &new_status, facts, cluster, Utc::now())
        };
        apply_scorecard(ctx, sr, checks).await?;
    }

    Ok(match commit {
        CommitState::Failed(_) => Action::requeue(PUSH_RETRY),
        _ => {
            ctx.resync.schedule(sr);
            Action::await_change()
        }
    })
}

/// The last commit time (unix seconds) of each author who touched `dir`.
async fn git_times(ctx: &Ctx, dir: &str) -> Option<BTreeMap<String, i64>> {
    match ctx.writer.last_commit_times_by_author(Some(dir)).await {
        Ok(times) => Some(times),
        Err(e) => {
            warn!(error = %e, "failed to read commit history for scorecard checks");
            None
        }
    }
}

/// `input.git` for the scorecard bundle: each author's last commit time,
/// `now`, and `last_commit_by_owner_days` (whole days since the request's
/// owner last committed in its directory; absent when they never did).
pub fn git_facts(times: &BTreeMap<String, i64>, owner: &str, now: i64) -> serde_json::Value {
    let mut facts = json!({ "last_commit_by_author": times, "now": now });
    let owner = owner.trim().to_ascii_lowercase();
    let last = times
        .iter()
        .filter(|(author, _)| author.to_ascii_lowercase() == owner)
        .map(|(_, t)| *t)
        .max();
    if let Some(last) = last {
        facts["last_commit_by_owner_days"] = json!((now - last).max(0) / 86_400);
    }
    facts
}

/// Facts about the cluster (Argo CD's view) for `input.cluster`.
fn cluster_facts(sync: Option<&SyncStatus>, workloads: Vec<serde_json::Value>) -> serde_json::Value {
    match sync {
        Some(s) => json!({
            "application": s.application,
            "sync": s.status,
            "health": s.health,
            "revision": s.revision,
            "message": s.message,
            "workloads": workloads,
        }),
        None => json!({}),
    }
}

async fn write_status(
    api: &Api<ServiceRequest>,
    sr: &ServiceRequest,
    status: &ServiceRequestStatus,
    ctx: &Ctx,
) -> Result<()> {
    let patch = json!({
        "apiVersion": "paver.dev/v1alpha1",
        "kind": "ServiceRequest",
        "status": status,
    });
    api.patch_status(
        &sr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.wrote("servicerequests/status", "apply");
    Ok(())
}

/// Writes the request's Scorecard when its content differs from what is there.
async fn apply_scorecard(ctx: &Ctx, sr: &ServiceRequest, mut status: ScorecardStatus) -> Result<()> {
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    if ctx.scorecards.reports(&ns, &name, &status) {
        return Ok(());
    }
    if status.evaluated_at.is_empty() {
        status.evaluated_at = now_rfc3339();
    }
    let owner = sr
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let mut sc = Scorecard::new(
        &name,
        ScorecardSpec {
            request: name.clone(),
            team: sr.spec.team.clone(),
            route: sr.spec.route.clone(),
        },
    );
    sc.metadata.namespace = Some(ns.clone());
    sc.metadata.owner_references = Some(vec![owner]);
    sc.metadata.labels = Some(BTreeMap::from([
        ("paver.dev/team".to_string(), sr.spec.team.clone()),
        ("paver.dev/route".to_string(), sr.spec.route.clone()),
    ]));
    ctx.metrics
        .scores
        .get_or_create(&super::metrics::ServiceLabels {
            namespace: ns.clone(),
            name: name.clone(),
            team: sr.spec.team.clone(),
        })
        .set(i64::from(status.score));
    sc.status = Some(status);
    let api: Api<Scorecard> = Api::namespaced(ctx.client.clone(), &ns);
    let mut value =
        serde_json::to_value(&sc).map_err(|e| Error::Git(format!("failed to encode scorecard: {e}")))?;
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("creationTimestamp");
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await?;
    ctx.metrics.wrote("scorecards", "apply");
    Ok(())
}

async fn publish(ctx: &Ctx, sr: &ServiceRequest, type_: EventType, reason: &str, note: impl Into<String>) {
    let mut note: String = note.into();
    note.truncate(1000);
    let published = ctx
        .events
        .publish(sr.object_ref(&()), type_, reason, "Reconcile", note)
        .await;
    if published.is_ok() {
        ctx.metrics.wrote("events", "create");
    }
}

/// One Event per phase transition: the audit trail beside the commit history.
async fn announce(ctx: &Ctx, sr: &ServiceRequest, status: &ServiceRequestStatus) {
    let (type_, reason, note) = match status.phase {
        Phase::Rejected => (EventType::Warning, "Rejected", summary(status)),
        Phase::Failed => (EventType::Warning, "Failed", summary(status)),
        Phase::AwaitingApproval => (
            EventType::Normal,
            "AwaitingApproval",
            status.approval_reasons.join("; "),
        ),
        Phase::Rendered => (
            EventType::Normal,
            "Committed",
            status
                .render
                .as_ref()
                .map(|r| format!("committed {} files at {}", r.files, r.revision))
                .unwrap_or_default(),
        ),
        Phase::Synced => (
            EventType::Normal,
            "Synced",
            "Argo CD synced the committed revision".into(),
        ),
        Phase::Pending => (EventType::Normal, "Pending", summary(status)),
    };
    info!(phase = ?status.phase, "request changed phase");
    publish(ctx, sr, type_, reason, note).await;
}

/// The message of the first condition that is not True.
fn summary(status: &ServiceRequestStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| !c.is_true())
        .map(|c| format!("{}: {}", c.reason, c.message))
        .unwrap_or_default()
}

/// Deletion: remove the request's directory in a commit, then let go.
async fn cleanup(sr: &ServiceRequest, ctx: &Ctx, api: &Api<ServiceRequest>) -> Result<Action> {
    if !sr.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    // The directory is where it was last committed; a request never rendered has none.
    if let Some(render) = sr.status.as_ref().and_then(|s| s.render.as_ref()) {
        let change = Change {
            key: key(sr),
            dir: render.path.clone(),
            files: Default::default(),
            delete: true,
            trailers: vec![
                ("Paver-Request".into(), key(sr)),
                ("Paver-Request-UID".into(), sr.uid().unwrap_or_default()),
                (
                    "Paver-Generation".into(),
                    sr.metadata.generation.unwrap_or(0).to_string(),
                ),
            ],
            summary: format!("remove {} (request deleted)", key(sr)),
        };
        let started = std::time::Instant::now();
        if let Err(e) = ctx.writer.submit(change).await {
            ctx.metrics
                .git("delete", "failed", started.elapsed().as_secs_f64());
            warn!(error = %e, "failed to remove the request's directory; retrying");
            return Ok(Action::requeue(PUSH_RETRY));
        }
        ctx.metrics
            .git("delete", "committed", started.elapsed().as_secs_f64());
    }
    let finalizers: Vec<String> = sr
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": sr.resource_version()}});
    match api
        .patch(&sr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => ctx.metrics.wrote("servicerequests", "patch"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.routes
        .forget(&sr.namespace().unwrap_or_default(), &sr.name_any());
    Ok(Action::await_change())
}

/// Transient errors retry with a short backoff.
pub fn error_policy(_sr: Arc<RequestMeta>, error: &Error, _ctx: Ctx) -> Action {
    warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_what_finds_and_wakes_a_request() {
        let meta: RequestMeta = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "orders", "namespace": "shop", "generation": 3,
                "uid": "0b7c1a9e-4a38-4c1e-9c3c-2f6f0c1f7d11", "resourceVersion": "4711",
                "creationTimestamp": "2026-11-23T10:00:00Z",
                "deletionTimestamp": "2026-11-23T11:00:00Z",
                "labels": {"tier": "gold"},
                "annotations": {"note": "x"},
                "finalizers": ["paver.dev/cleanup"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            }
        }))
        .expect("metadata");
        let mut slim = meta.clone();
        slim_meta(&mut slim);
        let m = &slim.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref()),
            (Some("orders"), Some("shop"))
        );
        assert_eq!(m.generation, Some(3));
        assert_eq!(m.deletion_timestamp, meta.metadata.deletion_timestamp);
        assert_eq!(slim.labels().get("tier").map(String::as_str), Some("gold"));
        assert_eq!(m.uid, None);
        assert_eq!(m.resource_version, None);
        assert_eq!(m.finalizers, None);
        assert_eq!(m.annotations, None);
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.creation_timestamp, None);
        assert!(slim.types.is_none());
        let r = kube::runtime::reflector::ObjectRef::from_obj(&slim);
        assert_eq!((r.extra.uid, r.extra.resource_version), (None, None));
    }

    #[test]
    fn owner_days_come_from_the_owners_commits_only() {
        let now = 1_000 * 86_400;
        let times = BTreeMap::from([
            ("paver@paver.dev".to_string(), now - 60),
            ("Team@Example.com".to_string(), now - 10 * 86_400 - 5),
        ]);
        let facts = git_facts(&times, "team@example.com", now);
        assert_eq!(facts["last_commit_by_owner_days"], 10);
        assert_eq!(facts["now"], now);
        let none = git_facts(&times, "someone@example.com", now);
        assert!(none.get("last_commit_by_owner_days").is_none(), "{none}");
    }
}
