//! PaveRoute shell: compile each new generation into the catalog and
//! report on the route's status.

use std::collections::HashSet;

use kube::{Api, ResourceExt, core::DeserializeGuard, runtime::reflector::Store};
use paver_crds::{Condition, PaveRoute, PaveRouteStatus, RequestKey, now_rfc3339, set_condition};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{
    Ctx, Result, apply_status,
    index::{Trigger, trigger_requests},
    request::RequestMeta,
    revision,
    watch::Generations,
};
use crate::core::FieldError;

/// Which version of a route is in force, and the revision holding it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InForce {
    pub version: Option<String>,
    pub revision: Option<String>,
}

/// The status a route should have after compiling it.
pub fn route_status(
    prev: &PaveRouteStatus,
    route: &PaveRoute,
    errors: &[FieldError],
    in_force: &InForce,
    now: &str,
) -> PaveRouteStatus {
    let mut conditions = prev.conditions.clone();
    let c = if errors.is_empty() {
        Condition::new(
            "Ready",
            true,
            "Compiled",
            format!("version {} is in use", route.spec.version),
        )
    } else {
        let msg = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let kept = match (&in_force.version, &in_force.revision) {
            (Some(v), Some(r)) => format!("version {v} (revision {r}) stays in force"),
            (Some(v), None) => format!("version {v} stays in force"),
            (None, _) => "no earlier version is good: its requests wait".to_string(),
        };
        Condition::new(
            "Ready",
            false,
            "InvalidRoute",
            format!("version {} is refused: {msg}; {kept}", route.spec.version),
        )
    };
    set_condition(
        &mut conditions,
        Condition {
            observed_generation: route.metadata.generation,
            ..c
        },
        now,
    );
    PaveRouteStatus {
        conditions,
        observed_generation: route.metadata.generation,
        active_version: in_force.version.clone(),
        active_revision: in_force.revision.clone(),
        // The census's fields, as they are (it writes them itself).
        versions: prev.versions.clone(),
        requests: prev.requests.clone(),
        rollout: prev.rollout.clone(),
    }
}

/// Puts route `name`'s last good revision in force when nothing of it is
/// (a restarted operator whose route's latest version is broken). The
/// revision's name, if one was put in force.
async fn fall_back(ctx: &Ctx, name: &str, uid: Option<&str>, active: Option<&str>) -> Option<String> {
    if ctx.catalog.read().await.route_version(name).is_some() {
        return None;
    }
    let rev = revision::last_good::<PaveRoute>(ctx, name, uid, active).await?;
    let mut good = PaveRoute::new(name, rev.spec);
    good.metadata.uid = uid.map(str::to_string);
    match crate::core::verdict::compile_route(good) {
        Ok(compiled) => {
            let compiled = compiled.with_revision(rev.name.clone());
            ctx.catalog.write().await.install_route(name, Ok(compiled));
            info!(route = %name, revision = %rev.name, "the latest version is broken: its last good revision is in force");
            Some(rev.name)
        }
        Err(errors) => {
            warn!(route = %name, revision = %rev.name, errors = ?errors, "the last good revision no longer compiles");
            None
        }
    }
}

/// Compiles `route` into the catalog (a version that does not compile
/// leaves the one before in force, from the last good revision after a
/// restart), keeps a good version as a revision, and writes the route's
/// status if it changed. Returns the revision in force.
pub async fn apply(ctx: &Ctx, route: &PaveRoute, in_force: Option<String>) -> Result<Option<String>> {
    let name = route.name_any();
    let prev = route.status.clone().unwrap_or_default();
    // Compiled before the catalog's lock is taken: reconciles read the catalog.
    let compiled = crate::core::verdict::compile_route(route.clone())
        .map(|c| c.with_revision(revision::name_for(route)));
    let mut revision = in_force.or_else(|| prev.active_revision.clone());
    if compiled.is_err()
        && let Some(r) = fall_back(ctx, &name, route.uid().as_deref(), revision.as_deref()).await
    {
        revision = Some(r);
    }
    let errors = {
        // The head and its rollout's gate together: no reconcile sees the
        // new head before the gate that holds requests back from it.
        let gate = crate::core::rollout::gate(&route.spec, &prev);
        let mut catalog = ctx.catalog.write().await;
        let ok = compiled.is_ok();
        let errors = catalog.install_route(&name, compiled);
        if ok {
            catalog.set_gate(&name, gate);
        }
        errors
    };
    if errors.is_empty() {
        revision = match revision::record(ctx, route, prev.active_revision.as_deref()).await {
            Ok(r) => Some(r),
            Err(e) => {
                warn!(route = %name, error = %e, "failed to keep the route's version as a revision");
                None
            }
        };
    }
    if let Err(e) = hold_older_versions(ctx, &name, route.uid().as_deref()).await {
        warn!(route = %name, error = %e, "cannot read the route's revisions: only its head version is held");
    }
    let version = ctx.catalog.read().await.route_version(&name).map(str::to_string);
    let in_force = InForce {
        revision: version.as_ref().and(revision),
        version,
    };
    let status = route_status(&prev, route, &errors, &in_force, &now_rfc3339());
    if status != prev {
        let api: Api<PaveRoute> = Api::all(ctx.client.clone());
        apply_status(&api, &name, &status.without_census(), &ctx.metrics).await?;
    }
    Ok(in_force.revision)
}

/// Holds route `name`'s older versions beside its head in the catalog, as
/// its revisions keep them (one per version below the head: what requests
/// pinned there render with). Compiles only when the revisions held
/// changed. Whether they did.
pub async fn hold_older_versions(ctx: &Ctx, name: &str, uid: Option<&str>) -> Result<bool> {
    let Some(head) = ctx.catalog.read().await.head(name).map(|r| r.version.clone()) else {
        return Ok(false);
    };
    let revisions = revision::list::<PaveRoute>(ctx, name).await?;
    let held = crate::core::revision::versions_held(&revisions, name, uid, &head, |s| s.version.as_str());
    let wanted: Vec<(semver::Version, Option<String>)> = held
        .iter()
        .map(|(v, r)| (v.clone(), Some(r.name.clone())))
        .collect();
    let holding: Vec<(semver::Version, Option<String>)> = ctx
        .catalog
        .read()
        .await
        .versions(name)
        .into_iter()
        .filter(|r| r.version != head)
        .map(|r| (r.version.clone(), r.revision.clone()))
        .collect();
    if wanted == holding {
        return Ok(false);
    }
    let mut compiled = Vec::new();
    for (version, rev) in held {
        let mut old = PaveRoute::new(name, rev.spec.clone());
        old.metadata.uid = uid.map(str::to_string);
        match crate::core::verdict::compile_route(old) {
            Ok(c) => compiled.push(c.with_revision(rev.name.clone())),
            Err(errors) => {
                warn!(route = %name, %version, revision = %rev.name, ?errors, "an older version no longer compiles: not held")
            }
        }
    }
    info!(route = %name, versions = ?compiled.iter().map(|c| c.version().to_string()).collect::<Vec<_>>(), "holding the route's older versions");
    ctx.catalog.write().await.set_older_versions(name, compiled);
    Ok(true)
}

/// The status of a route Paver cannot read: not Ready, saying why; the
/// catalog keeps the version it had.
pub fn unreadable_status(error: &str, in_force: &InForce, now: &str) -> PaveRouteStatus {
    let mut conditions = Vec::new();
    let kept = match &in_force.version {
        Some(v) => format!("version {v} stays in force"),
        None => "no earlier version is good: its requests wait".to_string(),
    };
    set_condition(
        &mut conditions,
        Condition::new(
            "Ready",
            false,
            "Unreadable",
            format!("the route cannot be read ({error}); {kept}"),
        ),
        now,
    );
    PaveRouteStatus {
        conditions,
        observed_generation: None,
        active_version: in_force.version.clone(),
        active_revision: in_force.revision.clone(),
        ..Default::default()
    }
}

/// Keeps the catalog's routes in step with the cluster (through
/// [`super::watch::guarded_watch`]); a route that changed re-reconciles the
/// requests on it.
pub struct Routes {
    pub ctx: Ctx,
    pub requests: Store<RequestMeta>,
    pub trigger: Trigger,
    pub ready: watch::Sender<bool>,
    /// The generation last compiled, by route name.
    pub seen: Generations,
    /// The revision in force, by route name.
    pub revisions: std::collections::BTreeMap<String, String>,
}

impl Routes {
    async fn forget(&mut self, name: &str) {
        self.ctx.catalog.write().await.remove_route(name);
        self.seen.forget(name);
        self.revisions.remove(name);
        trigger_requests(&self.ctx, &self.requests, &self.trigger, |route, _, _| {
            route == name
        });
    }
}

impl super::watch::Handler for Routes {
    type K = PaveRoute;
    const KIND: &'static str = "route";

    async fn apply(&mut self, route: PaveRoute) {
        let name = route.name_any();
        if !self.seen.changed(&name, route.metadata.generation) {
            return;
        }
        let in_force = self.revisions.get(&name).cloned();
        match apply(&self.ctx, &route, in_force).await {
            Ok(Some(r)) => {
                self.revisions.insert(name.clone(), r);
            }
            Ok(None) => {
                self.revisions.remove(&name);
            }
            Err(e) => warn!(route = %name, error = %e, "failed to report route status"),
        }
        self.seen.record(&name, route.metadata.generation);
        if *self.ready.borrow() {
            trigger_requests(&self.ctx, &self.requests, &self.trigger, |r, _, _| r == name);
        }
    }

    async fn delete(&mut self, key: RequestKey) {
        self.forget(key.parts().1).await;
    }

    async fn invalid(&mut self, key: RequestKey, error: String) {
        let name = key.parts().1;
        // Compiled again once it can be read.
        self.seen.forget(name);
        let api: Api<DeserializeGuard<PaveRoute>> = Api::all(self.ctx.client.clone());
        // After a restart nothing of it is in force yet: its last good revision.
        if !self.revisions.contains_key(name) {
            let uid = revision::uid_of::<PaveRoute>(&self.ctx, name).await;
            if let Some(r) = fall_back(&self.ctx, name, uid.as_deref(), None).await {
                self.revisions.insert(name.to_string(), r);
                trigger_requests(&self.ctx, &self.requests, &self.trigger, |r, _, _| r == name);
            }
        }
        let in_force = InForce {
            version: self
                .ctx
                .catalog
                .read()
                .await
                .route_version(name)
                .map(str::to_string),
            revision: self.revisions.get(name).cloned(),
        };
        let status = unreadable_status(&error, &in_force, &now_rfc3339());
        if let Err(e) = apply_status(&api, name, &status, &self.ctx.metrics).await {
            warn!(route = %name, error = %e, "failed to report route status");
        }
    }

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        for name in self.seen.gone(&listed) {
            self.forget(&name).await;
        }
        let _ = self.ready.send(true);
    }
}
