//! The route census: how many requests are on each version of each route
//! (`status.versions`, `status.requests` of a PaveRoute, under a field
//! manager of its own), and the collection of route revisions no request
//! uses once they are older than the retention.
//!
//! It runs every `--route-status-interval` on the leader, once every
//! request has been reconciled since the operator started (before that, a
//! request on an old version may not be counted yet), and writes a route's
//! status only when its counts changed. Revisions are listed for
//! collection when a route's counts change, and every route's hourly.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::reflector::Store,
};
use paver_crds::{CENSUS_FIELD_MANAGER, PaveRoute, RequestKey, RouteVersionStatus};
use tracing::{info, warn};

use super::{Ctx, Result, index::Trigger, request::RequestMeta, revision};

/// How often every route's revisions are listed for collection when its
/// counts did not change (a route whose counts or versions changed is
/// collected at once): revision ages count in days, and a list holds
/// every revision's whole spec.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Runs the census until the term ends.
pub async fn run(ctx: Ctx, requests: Store<RequestMeta>, trigger: Trigger) {
    let mut tick = tokio::time::interval(ctx.config.route_status_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut collected: Option<std::time::Instant> = None;
    loop {
        tick.tick().await;
        let due = collected.is_none_or(|t| t.elapsed() >= COLLECT_EVERY);
        match census(&ctx, &requests, &trigger, due).await {
            Ok(true) if due => collected = Some(std::time::Instant::now()),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "the route census failed; next time"),
        }
    }
}

/// The `status.versions` of a route: every version the catalog holds
/// (`held`, highest first, with its revision) and every version a
/// committed render is on, each with its count.
pub fn versions_status(
    held: &[(semver::Version, Option<String>)],
    counts: Option<&HashMap<Arc<str>, u32>>,
) -> Vec<RouteVersionStatus> {
    let mut out: BTreeMap<VersionKey, RouteVersionStatus> = BTreeMap::new();
    for (version, revision) in held {
        out.insert(
            VersionKey::of(&version.to_string()),
            RouteVersionStatus {
                version: version.to_string(),
                revision: revision.clone().unwrap_or_default(),
                requests: 0,
            },
        );
    }
    for (version, n) in counts.into_iter().flatten() {
        out.entry(VersionKey::of(version))
            .or_insert_with(|| RouteVersionStatus {
                version: version.to_string(),
                ..Default::default()
            })
            .requests = *n;
    }
    out.into_values().rev().collect()
}

/// `status.requests`: `2.0.0=15 1.0.0=5`.
pub fn requests_column(versions: &[RouteVersionStatus]) -> String {
    versions
        .iter()
        .map(|v| format!("{}={}", v.version, v.requests))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Orders versions by semver (text that is not one sorts below, by text).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum VersionKey {
    Text(String),
    Semver(semver::Version),
}

impl VersionKey {
    fn of(s: &str) -> Self {
        semver::Version::parse(s).map_or_else(|_| VersionKey::Text(s.to_string()), VersionKey::Semver)
    }
}

/// One census over every route; whether it ran (every request was
/// reconciled since start). Revisions are collected for every route when
/// `collect_all`, else for the routes whose counts changed.
async fn census(
    ctx: &Ctx,
    requests: &Store<RequestMeta>,
    trigger: &Trigger,
    collect_all: bool,
) -> Result<bool> {
    let keys: Vec<RequestKey> = requests.state().iter().map(|m| RequestKey::of(&**m)).collect();
    let (counts, complete) = ctx.routes.census(&keys);
    if !complete {
        // Counts before every request was reconciled would be wrong.
        return Ok(false);
    }
    let api: Api<DeserializeGuard<PaveRoute>> = Api::all(ctx.client.clone());
    for route in api.list(&ListParams::default()).await?.items {
        let Ok(route) = route.0 else { continue };
        let name = route.name_any();
        let held: Vec<(semver::Version, Option<String>)> = ctx
            .catalog
            .read()
            .await
            .versions(&name)
            .into_iter()
            .map(|r| (r.version.clone(), r.revision.clone()))
            .collect();
        let versions = versions_status(&held, counts.get(name.as_str()));
        let status = route.status.clone().unwrap_or_default();
        let changed = status.versions != versions;
        if changed {
            let requests = requests_column(&versions);
            let patch = serde_json::json!({
                "apiVersion": paver_crds::API_VERSION,
                "kind": "PaveRoute",
                "status": {"versions": versions, "requests": requests},
            });
            Api::<PaveRoute>::all(ctx.client.clone())
                .patch_status(
                    &name,
                    &PatchParams::apply(CENSUS_FIELD_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
            ctx.metrics.wrote("paveroutes/status", "apply");
        }
        if collect_all || changed {
            collect(ctx, &route, &versions).await?;
        }
        if let Err(e) = super::rollout::tick(ctx, requests, trigger, &route).await {
            warn!(route = %name, error = %e, "the rollout tick failed; next time");
        }
    }
    Ok(true)
}

/// Deletes the route's revisions that no request uses, that hold neither
/// its head nor a version a request is on, once they are older than the
/// retention (and beyond the newest few whatever their age); then holds
/// the versions that are left.
async fn collect(ctx: &Ctx, route: &PaveRoute, versions: &[RouteVersionStatus]) -> Result<()> {
    let name = route.name_any();
    let head = ctx
        .catalog
        .read()
        .await
        .head(&name)
        .and_then(|r| r.revision.clone());
    let mut keep: BTreeSet<String> = versions
        .iter()
        .filter(|v| v.requests > 0 && !v.revision.is_empty())
        .map(|v| v.revision.clone())
        .collect();
    keep.extend(head);
    keep.extend(route.status.as_ref().and_then(|s| s.active_revision.clone()));
    // A rollout's versions stay, whoever is on them: a halted step returns to `from`.
    if let Some(r) = route.status.as_ref().and_then(|s| s.rollout.as_ref()) {
        keep.extend(
            versions
                .iter()
                .filter(|v| v.version == r.from || v.version == r.to)
                .filter(|v| !v.revision.is_empty())
                .map(|v| v.revision.clone()),
        );
    }
    let revisions = revision::list::<PaveRoute>(ctx, &name).await?;
    let retention = i64::try_from(ctx.config.route_revision_retention.as_secs()).unwrap_or(i64::MAX);
    let prune = crate::core::revision::unused_to_prune(
        &revisions,
        &name,
        &keep,
        chrono::Utc::now().timestamp(),
        retention,
    );
    if prune.is_empty() {
        return Ok(());
    }
    let api: Api<paver_crds::PaveRouteRevision> = Api::all(ctx.client.clone());
    for old in &prune {
        match api.delete(old, &DeleteParams::default()).await {
            Ok(_) => ctx.metrics.wrote("paverouterevisions", "delete"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                warn!(route = %name, revision = %old, error = %e, "failed to delete an unused revision")
            }
        }
    }
    info!(route = %name, revisions = ?prune, "deleted revisions no request uses, past the retention");
    super::route::hold_older_versions(ctx, &name, route.uid().as_deref()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_listed_highest_first_with_their_counts() {
        let held = vec![
            (semver::Version::new(2, 0, 0), Some("ms-b".to_string())),
            (semver::Version::new(1, 10, 0), Some("ms-a".to_string())),
        ];
        let counts: HashMap<Arc<str>, u32> = [
            (Arc::from("2.0.0"), 15),
            (Arc::from("1.9.0"), 2),
            (Arc::from("1.10.0"), 5),
        ]
        .into();
        let versions = versions_status(&held, Some(&counts));
        let listed: Vec<(&str, &str, u32)> = versions
            .iter()
            .map(|v| (v.version.as_str(), v.revision.as_str(), v.requests))
            .collect();
        // 1.9.0 is no longer held (collected, or withdrawn) but renders are on it.
        assert_eq!(
            listed,
            [("2.0.0", "ms-b", 15), ("1.10.0", "ms-a", 5), ("1.9.0", "", 2)]
        );
        assert_eq!(requests_column(&versions), "2.0.0=15 1.10.0=5 1.9.0=2");
        assert_eq!(requests_column(&versions_status(&held, None)), "2.0.0=0 1.10.0=0");
    }
}
