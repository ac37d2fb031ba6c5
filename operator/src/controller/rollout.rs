//! Route rollouts, the shell around `core::rollout`: on each census tick a
//! route with `spec.rollout` starts rolling out a new head (after writing
//! its preview to `status.rollout.preview`), advances, halts or completes
//! on what Argo CD reports on the requests its current step moved, and
//! carries out the `paver.dev/rollout` annotation. The catalog's gate
//! follows the status; when it moves, the route's requests are reconciled
//! (the ones a halted step returns are committed at the version before).

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{events::EventType, reflector::Store},
};
use paver_crds::{
    PaveRoute, PreviewSummary, ROLLOUT_ANNOTATION, ROLLOUT_FIELD_MANAGER, RequestKey, RolloutStatus,
    ServiceRequest,
};
use tracing::{info, warn};

use super::{
    Ctx, Result,
    index::{Trigger, trigger_requests},
    request::RequestMeta,
};
use crate::core::{
    preview::{self as core_preview, Change},
    rollout::{self, Command, Health},
};

/// The most requests a preview names as failing.
const MAX_FAILING_NAMED: usize = 20;

/// One tick of `route`'s rollout.
pub async fn tick(
    ctx: &Ctx,
    requests: &Store<RequestMeta>,
    trigger: &Trigger,
    route: &PaveRoute,
) -> Result<()> {
    let Some(policy) = route.spec.rollout.as_ref() else {
        return Ok(());
    };
    let name = route.name_any();
    // The head in force must be this spec (a broken one is not rolled out).
    if ctx.catalog.read().await.route_version(&name) != Some(route.spec.version.as_str()) {
        return Ok(());
    }
    let status = route.status.clone().unwrap_or_default();
    let command = match route.annotations().get(ROLLOUT_ANNOTATION) {
        None => None,
        Some(text) => match Command::parse(text) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(route = %name, error = %e, "ignoring the rollout annotation");
                None
            }
        },
    };
    let now = chrono::Utc::now();
    let next = match rollout::start(&route.spec, &status, now) {
        Some(mut started) => {
            started.preview = Some(preview(ctx, &name).await?);
            let note = format!(
                "rolling out {} to the requests on {}: {}",
                started.to,
                started.from,
                started.preview.as_ref().map(summary_line).unwrap_or_default()
            );
            Some((started, Some((false, "RolloutStarted", note))))
        }
        None => match &status.rollout {
            Some(r) if r.to == route.spec.version => {
                let members = members(ctx, requests, route, r);
                rollout::advance(policy, r, command, &members, now)
                    .map(|(n, t)| (n, t.map(|t| (t.warning, t.reason, t.message))))
            }
            _ => None,
        },
    };
    if let Some((next, event)) = next {
        write(ctx, &name, &next).await?;
        info!(route = %name, rollout = %next.summary, message = %next.message, "rollout");
        if let Some((warning, reason, note)) = event {
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            if let Err(e) = ctx
                .events
                .publish(route.object_ref(&()), type_, reason, "Rollout", note)
                .await
            {
                warn!(route = %name, error = %e, "failed to publish a rollout Event");
            }
        }
        let mut with = status.clone();
        with.rollout = Some(next);
        gate(ctx, requests, trigger, route, &with).await;
    }
    if command.is_some() {
        let patch = serde_json::json!({"metadata": {"annotations": {ROLLOUT_ANNOTATION: null}}});
        Api::<PaveRoute>::all(ctx.client.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.metrics.wrote("paveroutes", "patch");
    }
    Ok(())
}

/// Puts the gate `status` implies on the route's head; when it moved, the
/// route's requests are reconciled.
pub async fn gate(
    ctx: &Ctx,
    requests: &Store<RequestMeta>,
    trigger: &Trigger,
    route: &PaveRoute,
    status: &paver_crds::PaveRouteStatus,
) {
    let name = route.name_any();
    let gate = rollout::gate(&route.spec, status);
    if ctx.catalog.write().await.set_gate(&name, gate) {
        trigger_requests(ctx, requests, trigger, |r, _, _| r == name);
    }
}

/// The requests the rollout's current step moves, with their health: those
/// on the route whose `routeVersion` admits the new version and whose first
/// step is the current one.
fn members(
    ctx: &Ctx,
    requests: &Store<RequestMeta>,
    route: &PaveRoute,
    r: &RolloutStatus,
) -> Vec<(String, Health)> {
    let Some(policy) = &route.spec.rollout else {
        return Vec::new();
    };
    let Ok(to) = semver::Version::parse(&r.to) else {
        return Vec::new();
    };
    let name = route.name_any();
    let mut out = Vec::new();
    for meta in requests.state() {
        let key = RequestKey::of(&*meta);
        let Some(seen) = ctx.routes.seen(&key) else {
            continue;
        };
        if ctx.routes.route(key.parts().0, key.parts().1).as_deref() != Some(name.as_str()) {
            continue;
        }
        let admits = seen.range.is_empty()
            || semver::VersionReq::parse(&seen.range).is_ok_and(|range| range.matches(&to));
        if !admits
            || rollout::step_of(&policy.steps, &key.to_string(), meta.labels()) != Some(r.step as usize)
        {
            continue;
        }
        let health = match &seen.rendered {
            Some((_, v)) if **v == *r.to => seen.health.clone(),
            Some((_, v)) => Health::Waiting(format!("still on {v}")),
            None => Health::Waiting("nothing committed".into()),
        };
        out.push((key.to_string(), health));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The preview of the head's rollout over every request on route `name`
/// (read from the API server, a page at a time), on a blocking thread.
async fn preview(ctx: &Ctx, name: &str) -> Result<PreviewSummary> {
    let mut all = super::list_all(&Api::<ServiceRequest>::all(ctx.client.clone())).await?;
    all.retain(|r| r.spec.route == name);
    let (ctx, name) = (ctx.clone(), name.to_string());
    let summary = tokio::task::spawn_blocking(move || {
        let catalog = ctx.catalog.blocking_read();
        let p = core_preview::preview(
            &catalog,
            &catalog,
            &all,
            std::slice::from_ref(&name),
            &ctx.render_options(),
            chrono::Utc::now(),
            2,
        );
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PreviewSummary {
            requests: count(p.summary.requests),
            changed: count(p.summary.changed),
            unchanged: count(p.summary.unchanged),
            would_fail: count(p.summary.would_fail),
            failing: p
                .entries
                .iter()
                .filter(|e| e.change == Change::WouldFail)
                .take(MAX_FAILING_NAMED)
                .map(|e| e.request.clone())
                .collect(),
        }
    })
    .await
    .unwrap_or_default();
    Ok(summary)
}

fn summary_line(p: &PreviewSummary) -> String {
    format!(
        "{} changed, {} unchanged, {} would fail ({} requests)",
        p.changed, p.unchanged, p.would_fail, p.requests
    )
}

async fn write(ctx: &Ctx, name: &str, rollout: &RolloutStatus) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": paver_crds::API_VERSION,
        "kind": "PaveRoute",
        "status": {"rollout": rollout},
    });
    Api::<PaveRoute>::all(ctx.client.clone())
        .patch_status(
            name,
            &PatchParams::apply(ROLLOUT_FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.metrics.wrote("paveroutes/status", "apply");
    Ok(())
}
