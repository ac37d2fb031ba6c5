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
    SyncStatus, now_rfc3339, vocab::labels,
};
use serde_json::json;
use tracing::{info, instrument, warn};

use super::{
    Ctx, Error, FIELD_MANAGER, FINALIZER, Result,
    status::{self, CommitState, request_status},
};
use crate::{
    core::{
        observed::Observed,
        render::RESOURCES_FINALIZER,
        verdict::{Outcome, Verdict, decide_request, scorecard_for},
    },
    git::Change,
};

/// How long to wait before retrying a failed push.
const PUSH_RETRY: Duration = Duration::from_secs(10);

/// `namespace/name` of a request (or of its metadata): its [`RequestKey`].
pub fn key<K: ResourceExt>(sr: &K) -> String {
    paver_crds::RequestKey::of(sr).to_string()
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

/// The trailers every commit for this request carries: the request, its
/// route and bundles, who asked (as admission recorded it), who approved
/// (with the Approval and the generation) and the decision.
pub fn trailers(sr: &ServiceRequest, verdict: &Verdict) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = vec![
        ("Paver-Request".into(), key(sr)),
        ("Paver-Request-UID".into(), sr.uid().unwrap_or_default()),
        (
            "Paver-Generation".into(),
            sr.metadata.generation.unwrap_or(0).to_string(),
        ),
        ("Paver-Route".into(), verdict.route.clone().unwrap_or_default()),
        ("Paver-Bundles".into(), verdict.policy.bundle_versions.join(", ")),
    ];
    if let Some(user) = crate::core::verdict::requested_by(sr) {
        t.push(("Paver-Requested-By".into(), user.to_string()));
    }
    let decision = match &verdict.approval {
        Some(a) if verdict.outcome == Outcome::Allowed => {
            t.push((
                "Paver-Approved-By".into(),
                format!(
                    "{} (Approval {}, generation {})",
                    a.approver, a.name, a.generation
                ),
            ));
            format!("approved ({})", verdict.policy.approval_reasons.join("; "))
        }
        _ => "allowed".to_string(),
    };
    t.push(("Paver-Decision".into(), decision));
    // A trailer is one line (the writer refuses others): user names and
    // policy's reasons are input.
    for (_, value) in &mut t {
        if value.contains(['\n', '\r']) {
            *value = value.replace(['\n', '\r'], " ");
        }
        paver_crds::truncate_message(value, 512);
    }
    t
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
    let in_flight = super::metrics::InFlight::new(&ctx.metrics.reconciles_in_flight);
    let result = read_and_reconcile(&meta, &ctx).await;
    drop(in_flight);
    if result.is_ok() {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.is_empty() {
            failures.remove(&paver_crds::RequestKey::of(&*meta));
        }
    }
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
        ctx.metrics
            .requests
            .forget(&paver_crds::RequestKey::new(&ns, &name));
        return Ok(Action::await_change());
    };
    super::slim(&mut sr);
    ctx.routes.set(&sr);
    reconcile_inner(&sr, ctx, &api).await
}

/// One reconcile, in phases: decide (the core's verdict), commit (the Git
/// writer), observe (Argo CD), status (the core's status, written only when
/// it changed), score (the Scorecard, only when committed).
async fn reconcile_inner(sr: &ServiceRequest, ctx: &Ctx, api: &Api<ServiceRequest>) -> Result<Action> {
    if sr.metadata.deletion_timestamp.is_some() {
        return cleanup(sr, ctx, api).await;
    }
    ensure_finalizer(sr, ctx, api).await?;
    let prev = sr.status.clone().unwrap_or_default();
    let mut verdict = decide(sr, ctx, &prev).await;
    ctx.would_deny.record(
        &paver_crds::RequestKey::of(sr),
        &sr.spec.team,
        &verdict.policy.pending_enforcement,
    );
    let (commit, authors) = commit(sr, ctx, &prev, &mut verdict).await;
    let (sync, workloads) = observe(sr, ctx, &prev, &commit).await;
    let generation = sr.metadata.generation.unwrap_or(0);
    let status = request_status(
        &prev,
        &verdict,
        &commit,
        sync.as_ref(),
        ctx.argocd,
        generation,
        &now_rfc3339(),
    );
    let drift = status::is_drift(prev.render.as_ref(), &verdict, &commit);
    write(sr, ctx, api, &prev, &status, drift).await?;
    ctx.routes.set_seen(
        &paver_crds::RequestKey::of(sr),
        status
            .render
            .as_ref()
            .map(|r| (sr.spec.route.as_str(), r.route_version.as_str())),
        sr.spec.route_version.as_deref().unwrap_or_default().trim(),
        status::rollout_health(&status),
    );
    ctx.metrics.requests.record(
        &paver_crds::RequestKey::of(sr),
        &sr.spec.team,
        &status,
        Utc::now().timestamp(),
    );
    if let CommitState::Committed { revision, .. } = &commit
        && verdict.rendered.is_some()
    {
        let observed = Observed {
            committed: Some(revision.clone()),
            drift,
            sync,
            workloads,
            authors: authors.unwrap_or_default(),
            owner: sr.spec.owner.clone(),
            now: Utc::now().timestamp(),
        };
        let scorecard = {
            let catalog = ctx.catalog.read().await;
            scorecard_for(&catalog, sr, &verdict, &observed, Utc::now())
        };
        apply_scorecard(ctx, sr, scorecard).await?;
    }
    Ok(match commit {
        CommitState::Failed(_) => Action::requeue(PUSH_RETRY),
        _ => {
            ctx.resync.schedule(sr);
            Action::await_change()
        }
    })
}

/// The finalizer goes on before anything is committed, so a deletion always
/// removes what was.
async fn ensure_finalizer(sr: &ServiceRequest, ctx: &Ctx, api: &Api<ServiceRequest>) -> Result<()> {
    if sr.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = sr.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": sr.resource_version()}});
    api.patch(&sr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.wrote("servicerequests", "patch");
    Ok(())
}

/// Decide: the core's verdict against the catalog in force, with the
/// request's approvals. Violations the request's status did not hold yet
/// are counted by bundle, rule and team (a resync finding the same ones
/// again counts nothing).
async fn decide(sr: &ServiceRequest, ctx: &Ctx, prev: &ServiceRequestStatus) -> Verdict {
    let approvals = approvals_for(ctx, sr);
    // Policy (up to its 2 s limit) and the render run on a blocking
    // thread: the async workers keep renewing the lease, answering probes
    // and reading watches while a hostile bundle or template uses its
    // budget.
    let verdict = {
        let (ctx, sr) = (ctx.clone(), sr.clone());
        tokio::task::spawn_blocking(move || {
            let catalog = ctx.catalog.blocking_read();
            let started = std::time::Instant::now();
            let v = decide_request(&catalog, &sr, &approvals, &ctx.render_options(), Utc::now());
            ctx.metrics
                .decision_duration
                .observe(started.elapsed().as_secs_f64());
            if let Some(policy) = v.policy_time {
                ctx.metrics.policy_eval_duration.observe(policy.as_secs_f64());
            }
            v
        })
        .await
    };
    let verdict = match verdict {
        Ok(v) => v,
        // A panic in the core is a bug; the request is held, not allowed.
        Err(e) => Verdict::unavailable(key(sr), format!("the decision failed: {e}")),
    };
    ctx.metrics.decided(outcome_label(verdict.outcome), &sr.spec.team);
    for f in new_violations(&prev.violations, &verdict.policy.violations) {
        ctx.metrics
            .violations
            .get_or_create(&super::metrics::ViolationLabels {
                bundle: f.bundle.clone(),
                rule: f.rule.clone(),
                team: sr.spec.team.clone(),
            })
            .inc();
    }
    verdict
}

/// How `paver_policy_decisions_total` names an outcome.
fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Invalid => "invalid",
        Outcome::PolicyUnavailable => "policy_unavailable",
        Outcome::Denied => "denied",
        Outcome::NeedsApproval => "needs_approval",
        Outcome::ApprovalRejected => "approval_rejected",
        Outcome::Allowed => "allowed",
        Outcome::RenderFailed => "render_failed",
    }
}

/// The violations in `now` that `before` (the request's status) did not hold.
fn new_violations<'a>(
    before: &'a [paver_crds::Finding],
    now: &'a [paver_crds::Finding],
) -> impl Iterator<Item = &'a paver_crds::Finding> {
    now.iter().filter(move |f| !before.contains(f))
}

/// Commit: an allowed render goes to the Git writer (policy changes never
/// delete output: nothing else commits). Returns what happened and who last
/// committed to the request's directory, as the writer read it right after
/// the batch.
async fn commit(
    sr: &ServiceRequest,
    ctx: &Ctx,
    prev: &ServiceRequestStatus,
    verdict: &mut Verdict,
) -> (CommitState, Option<BTreeMap<String, i64>>) {
    let generation = sr.metadata.generation.unwrap_or(0);
    let provenance = trailers(sr, verdict);
    let summary = format!(
        "render {} (generation {generation}) with {}",
        key(sr),
        verdict.route.clone().unwrap_or_default()
    );
    let allowed = matches!(verdict.outcome, Outcome::Allowed);
    let Some(rendered) = verdict.rendered.as_mut().filter(|_| allowed) else {
        return (CommitState::NotAttempted, None);
    };
    let app = rendered.application.as_ref().map(|a| a.key());
    if let Err(owner) = ctx.claims.claim(&key(sr), &rendered.dir, app.as_deref()) {
        // Nothing of another request's is touched: the request is told
        // whose directory or Application it names, and renders nothing.
        verdict.rendered = None;
        verdict.render_error = Some(owner);
        verdict.outcome = Outcome::RenderFailed;
        return (CommitState::NotAttempted, None);
    }
    if ctx.argocd
        && let Some(app) = &rendered.application
        && let Err(e) = orphan_renamed(ctx, sr, app).await
    {
        warn!(error = %e, "could not hand a renamed Application's workloads over");
        return (CommitState::Failed(e), None);
    }
    // The files travel to the writer and stay with the verdict (the
    // Scorecard reads them) as one copy while the commit is in flight.
    let files = Arc::new(std::mem::take(&mut rendered.files));
    let moved_from = prev
        .render
        .as_ref()
        .map(|r| r.path.clone())
        .filter(|p| !p.is_empty() && *p != rendered.dir);
    let change = Change {
        key: key(sr),
        dir: rendered.dir.clone(),
        files: files.clone(),
        delete: false,
        moved_from,
        trailers: provenance,
        summary,
    };
    let started = std::time::Instant::now();
    let submitted = {
        let _waiting = super::metrics::InFlight::new(&ctx.metrics.git_pending);
        ctx.writer.submit(change).await
    };
    // The writer has dropped its copy by the time it answers.
    rendered.files = Arc::try_unwrap(files).unwrap_or_else(|shared| (*shared).clone());
    match submitted {
        Ok(r) => {
            ctx.claims.settle(&key(sr), &rendered.dir);
            let outcome = if r.changed { "committed" } else { "unchanged" };
            ctx.metrics
                .git("commit", outcome, started.elapsed().as_secs_f64());
            ctx.metrics.git("push", outcome, r.metrics.push.as_secs_f64());
            let state = CommitState::Committed {
                revision: r.revision.unwrap_or_default(),
                changed: r.changed,
            };
            (state, Some(r.authors))
        }
        Err(e) => {
            ctx.metrics
                .git_failed("commit", e.label(), started.elapsed().as_secs_f64());
            let already = prev.render.as_ref().is_some_and(|r| {
                r.digest == rendered.digest && r.generation == generation && r.path == rendered.dir
            });
            if already {
                // This exact render is committed: only the resync's drift
                // check failed. Status stays as it is (no write per request
                // during a Git outage); the next resync checks again.
                warn!(error = %e, "could not check the committed render for drift");
                (CommitState::NotAttempted, None)
            } else {
                warn!(error = %e, "failed to commit render");
                (CommitState::Failed(e.to_string()), None)
            }
        }
    }
}

/// Before a render renames the request's Application (Paver 0.1 named it
/// `<namespace>-<name>`, now `<namespace>.<name>`), the old Application,
/// if it is there and was rendered for this request, lets go of its
/// resources: its cascading finalizer is removed, so when the app of apps
/// prunes it the workloads stay, and the new Application takes them over
/// at its first sync instead of deleting and recreating them. Nothing is
/// committed until that is done. One lookup by name in the Application
/// cache, not a scan of it (every reconcile passes here).
async fn orphan_renamed(
    ctx: &Ctx,
    sr: &ServiceRequest,
    app: &crate::core::render::RenderedApplication,
) -> std::result::Result<(), String> {
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    let ar = super::argocd_resource("Application");
    let legacy = kube::runtime::reflector::ObjectRef::new_with(&format!("{ns}-{name}"), ar.clone())
        .within(&app.namespace);
    let Some(old) = ctx.applications.get(&legacy) else {
        return Ok(());
    };
    let labels = old.labels();
    let mine = labels.get(super::REQUEST_NAMESPACE_LABEL) == Some(&ns)
        && labels.get(super::REQUEST_NAME_LABEL) == Some(&name);
    if !mine || !old.finalizers().iter().any(|f| f == RESOURCES_FINALIZER) {
        return Ok(());
    }
    let finalizers: Vec<&String> = old
        .finalizers()
        .iter()
        .filter(|f| *f != RESOURCES_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": old.resource_version()}});
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &old.namespace().unwrap_or_default(), &ar);
    match api
        .patch(&old.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => {
            return Err(format!(
                "the request's Application is renamed to {}/{}; the old one, {}/{}, keeps its \
                     workloads only once its {RESOURCES_FINALIZER} is removed, which failed: {e} \
                     (the operator needs `patch` on Applications: manifests/argocd/rbac.yaml)",
                app.namespace,
                app.name,
                old.namespace().unwrap_or_default(),
                old.name_any()
            ));
        }
    }
    ctx.metrics.wrote("applications", "patch");
    info!(old = %old.name_any(), new = %app.name, "renamed Application: its workloads are handed to the new one");
    Ok(())
}

/// Observe: what Argo CD reports on the request's Application, and its
/// workloads (one lookup for both).
async fn observe(
    sr: &ServiceRequest,
    ctx: &Ctx,
    prev: &ServiceRequestStatus,
    commit: &CommitState,
) -> (Option<SyncStatus>, Vec<serde_json::Value>) {
    let application = if ctx.argocd { ctx.application(sr) } else { None };
    let Some(app) = application.as_deref() else {
        return (None, Vec::new());
    };
    let mut sync = super::sync_status(app);
    // Argo CD syncs the branch head; the request's output is at the commit
    // that last changed its directory. A head that contains that commit has
    // synced this request's revision (later commits are other requests').
    let ours = match commit {
        CommitState::Committed { revision, .. } => Some(revision.clone()),
        _ => prev.render.as_ref().map(|r| r.revision.clone()),
    };
    if let Some(ours) = ours
        && !sync.revision.is_empty()
        && sync.revision != ours
        && ctx.writer.contains(&sync.revision, &ours).await.unwrap_or(false)
    {
        sync.revision = ours;
    }
    (Some(sync), super::workloads(app))
}

/// Write: the status when it changed (an Event when the phase did), and a
/// Warning Event for restored drift.
async fn write(
    sr: &ServiceRequest,
    ctx: &Ctx,
    api: &Api<ServiceRequest>,
    prev: &ServiceRequestStatus,
    status: &ServiceRequestStatus,
    drift: bool,
) -> Result<()> {
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
    if status != prev {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(changed = ?changed_fields(prev, status), "writing the status");
        }
        super::apply_status(api, &sr.name_any(), status, &ctx.metrics).await?;
        if status.phase != prev.phase || sr.status.is_none() {
            announce(ctx, sr, status).await;
        }
    }
    Ok(())
}

/// The status fields (conditions by type) that differ: why a status is
/// written, in the debug log.
fn changed_fields(prev: &ServiceRequestStatus, now: &ServiceRequestStatus) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(prev), serde_json::to_value(now))
    else {
        return Vec::new();
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut changed: Vec<String> = keys
        .into_iter()
        .filter(|k| *k != "conditions" && a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    for c in &now.conditions {
        if prev.conditions.iter().find(|p| p.type_ == c.type_) != Some(c) {
            changed.push(format!("conditions[{}]", c.type_));
        }
    }
    changed
}

/// Writes the request's Scorecard when its content differs from what is there.
async fn apply_scorecard(ctx: &Ctx, sr: &ServiceRequest, mut status: ScorecardStatus) -> Result<()> {
    let ns = sr.namespace().unwrap_or_default();
    let name = sr.name_any();
    if ctx.scorecards.reports(&ns, &name, &status) {
        return Ok(());
    }
    tracing::debug!(score = status.score, level = %status.level, "writing the Scorecard");
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
        (labels::TEAM.to_string(), sr.spec.team.clone()),
        (labels::ROUTE.to_string(), sr.spec.route.clone()),
    ]));
    sc.status = Some(status);
    let api: Api<Scorecard> = Api::namespaced(ctx.client.clone(), &ns);
    let mut value = serde_json::to_value(&sc).map_err(|source| Error::Encode {
        what: "Scorecard",
        source,
    })?;
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
    // Kubernetes keeps at most 1 KiB of an Event's note; cut at a character
    // boundary (`String::truncate` panics inside a multi-byte character,
    // which a bundle's message may put there).
    paver_crds::truncate_message(&mut note, 1000);
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
    ctx.would_deny.forget(&paver_crds::RequestKey::of(sr));
    ctx.metrics.requests.forget(&paver_crds::RequestKey::of(sr));
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
            moved_from: None,
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
        let submitted = {
            let _waiting = super::metrics::InFlight::new(&ctx.metrics.git_pending);
            ctx.writer.submit(change).await
        };
        if let Err(e) = submitted {
            ctx.metrics
                .git_failed("delete", e.label(), started.elapsed().as_secs_f64());
            warn!(error = %e, "failed to remove the request's directory; retrying");
            return Ok(Action::requeue(PUSH_RETRY));
        }
        ctx.metrics
            .git("delete", "committed", started.elapsed().as_secs_f64());
    }
    ctx.claims.release(&key(sr));
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

/// First and longest wait before retrying a request whose reconcile failed.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Transient errors retry with exponential backoff per request (1 s, 2 s,
/// 4 s, ... up to 5 min); permanent ones wait for a change to the request.
pub fn error_policy(meta: Arc<RequestMeta>, error: &Error, ctx: Ctx) -> Action {
    let key = paver_crds::RequestKey::of(&*meta);
    let failures = {
        let mut table = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = table.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    if !error.is_transient() {
        warn!(%error, kind = error.label(), failures, "reconcile failed; waiting for a change to the request");
        return Action::await_change();
    }
    let wait = retry_after(failures);
    warn!(%error, kind = error.label(), failures, retry_in = ?wait, "reconcile failed; retrying");
    Action::requeue(wait)
}

/// The wait before retry number `failures` (1 for the first).
fn retry_after(failures: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits say who asked, who approved and the decision, each trailer
    /// on one line whatever a user name or a policy reason holds.
    #[test]
    fn trailers_name_the_requester_the_approver_and_the_decision() {
        let mut sr = ServiceRequest::new("pay", Default::default());
        sr.metadata.namespace = Some("payments".into());
        sr.metadata.generation = Some(2);
        sr.metadata.annotations = Some(
            [(
                paver_crds::vocab::annotations::REQUESTED_BY.to_string(),
                "dev\nInjected: x".to_string(),
            )]
            .into(),
        );
        let mut v = Verdict::unavailable("payments/pay".into(), String::new());
        v.outcome = Outcome::Allowed;
        v.policy.approval_reasons = vec!["production\nchange".into(), "pci".into()];
        v.approval = Some(crate::core::verdict::ApprovalRef {
            name: "cab-2".into(),
            approver: "lead".into(),
            reason: "ok".into(),
            generation: 2,
        });
        let t = trailers(&sr, &v);
        let get = |k: &str| t.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Paver-Requested-By"), Some("dev Injected: x"));
        assert_eq!(
            get("Paver-Approved-By"),
            Some("lead (Approval cab-2, generation 2)")
        );
        assert_eq!(get("Paver-Decision"), Some("approved (production change; pci)"));
        assert!(t.iter().all(|(_, v)| !v.contains('\n')));
        v.approval = None;
        v.policy.approval_reasons.clear();
        let t = trailers(&sr, &v);
        assert!(t.iter().any(|(k, v)| k == "Paver-Decision" && v == "allowed"));
        assert!(!t.iter().any(|(k, _)| k == "Paver-Approved-By"));
    }

    #[test]
    fn changed_fields_name_what_a_status_write_changes() {
        let before = ServiceRequestStatus {
            phase: Phase::Rendered,
            conditions: vec![paver_crds::Condition {
                type_: "Ready".into(),
                status: "False".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut after = before.clone();
        assert!(changed_fields(&before, &after).is_empty());
        after.phase = Phase::Synced;
        after.conditions[0].status = "True".into();
        assert_eq!(changed_fields(&before, &after), ["phase", "conditions[Ready]"]);
    }

    #[test]
    fn violations_count_once_not_at_every_resync() {
        let finding = |rule: &str| paver_crds::Finding {
            bundle: "security".into(),
            rule: rule.into(),
            message: "m".into(),
            ..Default::default()
        };
        let (a, b) = (finding("a"), finding("b"));
        assert_eq!(new_violations(&[], std::slice::from_ref(&a)).count(), 1);
        assert_eq!(
            new_violations(std::slice::from_ref(&a), std::slice::from_ref(&a)).count(),
            0,
            "a resync finding the same violation again counts nothing"
        );
        let both = [a.clone(), b.clone()];
        assert_eq!(
            new_violations(std::slice::from_ref(&a), &both).collect::<Vec<_>>(),
            [&b]
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 4, 9, 10, 40].map(|n| retry_after(n).as_secs()).to_vec();
        assert_eq!(waits, [1, 2, 4, 8, 256, 300, 300]);
    }

    #[test]
    fn api_refusals_wait_for_a_change_and_outages_retry() {
        let api = |code: u16| {
            Error::from(kube::Error::Api(
                kube::core::Status::failure("x", "y").with_code(code).boxed(),
            ))
        };
        assert!(api(503).is_transient() && api(409).is_transient() && api(429).is_transient());
        assert!(!api(422).is_transient() && !api(403).is_transient());
        assert!(!Error::MissingField("metadata.uid").is_transient());
    }

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
}
