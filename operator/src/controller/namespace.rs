//! Namespaces shell: keeps the catalog's team bindings (each namespace's
//! `paver.dev/team` label) in step with the cluster; a binding that changes
//! re-reconciles the requests in that namespace.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Namespace;
use kube::{ResourceExt, runtime::reflector::Store};
use paver_crds::{RequestKey, vocab::labels};
use tokio::sync::watch;

use super::{
    Ctx,
    index::{Trigger, trigger_requests},
    request::RequestMeta,
};

/// The team bindings' handler for [`super::watch::guarded_watch`].
pub struct Namespaces {
    pub ctx: Ctx,
    pub requests: Store<RequestMeta>,
    pub trigger: Trigger,
    pub ready: watch::Sender<bool>,
    /// Where teams whose bindings changed go, to have their AppProject
    /// rewritten (with Argo CD installed).
    pub projects: Option<super::projects::ProjectQueue>,
}

impl Namespaces {
    async fn bind(&mut self, namespace: &str, team: Option<&str>) {
        let (changed, before) = {
            let mut catalog = self.ctx.catalog.write().await;
            let before = catalog.teams.team_of(namespace).map(str::to_string);
            (catalog.teams.bind(namespace, team), before)
        };
        if changed && let Some(projects) = &self.projects {
            for t in before.iter().map(String::as_str).chain(team) {
                let _ = projects.send(super::projects::ProjectMsg::Team(t.to_string()));
            }
        }
        if changed && *self.ready.borrow() {
            trigger_requests(&self.ctx, &self.requests, &self.trigger, |_, ns, _| {
                ns == namespace
            });
        }
    }
}

impl super::watch::Handler for Namespaces {
    type K = Namespace;
    const KIND: &'static str = "namespace";

    async fn apply(&mut self, ns: Namespace) {
        let team = ns.labels().get(labels::TEAM).cloned();
        self.bind(&ns.name_any(), team.as_deref()).await;
    }

    async fn delete(&mut self, key: RequestKey) {
        self.bind(key.parts().1, None).await;
    }

    /// A Namespace is the API server's own type; it always reads.
    async fn invalid(&mut self, _key: RequestKey, _error: String) {}

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        let gone: Vec<String> = self
            .ctx
            .catalog
            .read()
            .await
            .teams
            .namespaces()
            .filter(|ns| !listed.contains(&RequestKey::new("", ns)))
            .map(str::to_string)
            .collect();
        for ns in gone {
            self.bind(&ns, None).await;
        }
        if let Some(projects) = &self.projects {
            let _ = projects.send(super::projects::ProjectMsg::Sweep);
        }
        let _ = self.ready.send(true);
    }
}
