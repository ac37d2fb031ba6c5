//! PaveRoute shell: compile each new generation into the catalog and
//! report on the route's status.

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use paver_crds::{Condition, PaveRoute, PaveRouteStatus, now_rfc3339, set_condition};
use serde_json::json;

use super::{Ctx, FIELD_MANAGER, Result};
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
    let errors = ctx.catalog.write().await.upsert_route(route.clone());
    let prev = route.status.clone().unwrap_or_default();
    let status = route_status(&prev, route, &errors, &now_rfc3339());
    if status != prev {
        let api: Api<PaveRoute> = Api::all(ctx.client.clone());
        let patch = json!({"apiVersion": "paver.dev/v1alpha1", "kind": "PaveRoute", "status": status});
        api.patch_status(
            &route.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.wrote("paveroutes/status", "apply");
    }
    Ok(())
}
