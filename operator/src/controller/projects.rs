//! One Argo CD AppProject per team, `paver-<team>`, kept to the team's
//! namespaces (its `paver.dev/team` bindings) and the output repository:
//! what a team's folder holds syncs only into the team's namespaces, with
//! no cluster-scoped resources, whatever a template wrote
//! (`core::render::app_project`).
//!
//! The namespace watch sends the teams whose bindings changed; this task
//! reads the project and writes it only when it differs (a restart writes
//! nothing), and deletes it when the team has no namespace left. It lives
//! in Argo CD's namespace, `argocd` (manifests/argocd/rbac.yaml lets the
//! operator manage AppProjects there and nowhere else).

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Ctx, FIELD_MANAGER};
use crate::core::render::{IN_CLUSTER_SERVER, app_project, project_name};

/// Where Argo CD keeps its AppProjects.
pub const ARGOCD_NAMESPACE: &str = "argocd";

/// What the namespace watch asks of this task.
#[derive(Debug)]
pub enum ProjectMsg {
    /// Bring one team's AppProject up to date.
    Team(String),
    /// The bindings are listed: delete the AppProjects of teams that have
    /// no namespace any more (unbound while no operator ran).
    Sweep,
}

/// Where the namespace watch sends its requests.
pub type ProjectQueue = mpsc::UnboundedSender<ProjectMsg>;

fn api(ctx: &Ctx) -> Api<DynamicObject> {
    Api::namespaced_with(
        ctx.client.clone(),
        ARGOCD_NAMESPACE,
        &super::argocd_resource("AppProject"),
    )
}

/// Brings each team sent on `teams` to its AppProject, retrying a team
/// whose write failed when the next team arrives or after 10 s.
pub async fn run(ctx: Ctx, mut teams: mpsc::UnboundedReceiver<ProjectMsg>) {
    let mut failed: std::collections::BTreeSet<String> = Default::default();
    loop {
        let next = if failed.is_empty() {
            teams.recv().await
        } else {
            match tokio::time::timeout(std::time::Duration::from_secs(10), teams.recv()).await {
                Ok(msg) => msg,
                Err(_) => failed.pop_first().map(ProjectMsg::Team),
            }
        };
        let team = match next {
            None => return,
            Some(ProjectMsg::Team(team)) => team,
            Some(ProjectMsg::Sweep) => {
                match sweep(&ctx).await {
                    Ok(gone) => failed.extend(gone),
                    Err(e) => warn!(error = %e, "could not list the teams' AppProjects"),
                }
                continue;
            }
        };
        match sync(&ctx, &team).await {
            Ok(()) => {
                failed.remove(&team);
            }
            Err(e) => {
                warn!(team = %team, error = %e, "could not write the team's AppProject; retrying");
                failed.insert(team);
            }
        }
    }
}

/// The teams whose AppProject Paver wrote but that have no namespace now:
/// each is synced (so deleted) in turn by the caller.
async fn sweep(ctx: &Ctx) -> kube::Result<Vec<String>> {
    use paver_crds::vocab::labels;
    let selector = format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_PAVER);
    let projects = api(ctx)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?;
    let catalog = ctx.catalog.read().await;
    Ok(projects
        .items
        .iter()
        .filter_map(|p| p.annotations().get(labels::TEAM).cloned())
        .filter(|team| catalog.teams.namespaces_of(team).next().is_none())
        .collect())
}

/// Writes, or deletes, one team's AppProject so it matches its bindings.
async fn sync(ctx: &Ctx, team: &str) -> kube::Result<()> {
    let namespaces: Vec<String> = {
        let catalog = ctx.catalog.read().await;
        catalog.teams.namespaces_of(team).map(str::to_string).collect()
    };
    let api = api(ctx);
    let name = project_name(team);
    let current = api.get_opt(&name).await?;
    if namespaces.is_empty() {
        if current.is_some() {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => ctx.metrics.wrote("appprojects", "delete"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            info!(team, project = %name, "team has no namespace left: AppProject deleted");
        }
        return Ok(());
    }
    let refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    let server = ctx
        .config
        .argocd_destination_server
        .clone()
        .unwrap_or_else(|| IN_CLUSTER_SERVER.into());
    let want = app_project(team, &refs, &ctx.config.repo_url, &server, ARGOCD_NAMESPACE);
    if let Some(current) = &current
        && same_spec(&current.data["spec"], &want["spec"])
        && current.metadata.labels.as_ref()
            == serde_json::from_value(want["metadata"]["labels"].clone())
                .ok()
                .as_ref()
        && current
            .annotations()
            .get(paver_crds::vocab::labels::TEAM)
            .map(String::as_str)
            == Some(team)
    {
        return Ok(());
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&want),
    )
    .await?;
    ctx.metrics.wrote("appprojects", "apply");
    info!(team, project = %name, namespaces = ?namespaces, "AppProject written");
    Ok(())
}

/// Whether the project already holds what Paver writes (Argo CD adds
/// fields of its own, which do not count).
fn same_spec(current: &serde_json::Value, want: &serde_json::Value) -> bool {
    let want = want.as_object().into_iter().flatten();
    want.into_iter().all(|(k, v)| match (k.as_str(), &current[k]) {
        // An empty list may come back absent.
        (_, serde_json::Value::Null) => v.as_array().is_some_and(Vec::is_empty),
        (_, c) => c == v,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn what_argo_cd_adds_does_not_count_as_a_change() {
        let want = json!({"sourceRepos": ["r"], "clusterResourceWhitelist": [], "destinations": [{"namespace": "a"}]});
        let back =
            json!({"sourceRepos": ["r"], "destinations": [{"namespace": "a"}], "orphanedResources": null});
        assert!(super::same_spec(&back, &want));
        let moved = json!({"sourceRepos": ["r"], "destinations": [{"namespace": "b"}]});
        assert!(!super::same_spec(&moved, &want));
    }
}
