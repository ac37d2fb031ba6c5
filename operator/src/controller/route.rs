//! PaveRoute shell: compile each new generation into the catalog and
//! report on the route's status.

use std::collections::HashSet;

use kube::{Api, ResourceExt, core::DeserializeGuard, runtime::reflector::Store};
use paver_crds::{Condition, PaveRoute, PaveRouteStatus, RequestKey, now_rfc3339, set_condition};
use tokio::sync::watch;
use tracing::warn;

use super::{
    Ctx, Result, apply_status,
    index::{Trigger, trigger_requests},
    request::RequestMeta,
    watch::Generations,
};
use crate::core::FieldError;

/// The status a route should have after compiling it.
pub fn route_status(
    prev: &PaveRouteStatus,
    route: &PaveRoute,
    errors: &[FieldError],
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
        Condition::new("Ready", false, "InvalidRoute", msg)
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
    }
}

/// Compiles `route` into the catalog and writes its status if it changed.
pub async fn apply(ctx: &Ctx, route: &PaveRoute) -> Result<()> {
    // Compiled before the catalog's lock is taken: reconciles read the catalog.
    let compiled = crate::core::verdict::compile_route(route.clone());
    let errors = ctx
        .catalog
        .write()
        .await
        .install_route(&route.name_any(), compiled);
    let prev = route.status.clone().unwrap_or_default();
    let status = route_status(&prev, route, &errors, &now_rfc3339());
    if status != prev {
        let api: Api<PaveRoute> = Api::all(ctx.client.clone());
        apply_status(&api, &route.name_any(), &status, &ctx.metrics).await?;
    }
    Ok(())
}

/// The status of a route Paver cannot read: not Ready, saying why; the
/// catalog keeps the version it had.
pub fn unreadable_status(error: &str, now: &str) -> PaveRouteStatus {
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        Condition::new(
            "Ready",
            false,
            "Unreadable",
            format!("the route cannot be read ({error}); the version in force before stays"),
        ),
        now,
    );
    PaveRouteStatus {
        conditions,
        observed_generation: None,
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
}

impl Routes {
    async fn forget(&mut self, name: &str) {
        self.ctx.catalog.write().await.remove_route(name);
        self.seen.forget(name);
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
        if let Err(e) = apply(&self.ctx, &route).await {
            warn!(route = %name, error = %e, "failed to report route status");
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
        let status = unreadable_status(&error, &now_rfc3339());
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
