//! The operator: thin shells around the core. Each resource has its own
//! module; `status` is the only place a ServiceRequest's status is built.
//!
//! Write discipline (the throughput budget is 3 API writes and 2
//! reconciles per request): the request watcher passes only changes of
//! generation or deletion, so Paver's own status writes never wake it; a
//! status or Scorecard is written only when it differs from what is there.

pub mod bundle;
pub mod census;
pub mod claims;
pub mod config;
pub mod events;
pub mod http;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod namespace;
pub mod projects;
pub mod request;
pub mod resync;
pub mod revision;
pub mod rollout;
pub mod route;
pub mod run;
pub mod scorecards;
pub mod status;
pub mod watch;
pub mod would_deny;

use std::sync::Arc;

use kube::{
    Client, ResourceExt,
    api::DynamicObject,
    runtime::reflector::{ObjectRef, Store},
};
use paver_crds::{Approval, ServiceRequest, SyncStatus};
use tokio::sync::RwLock;

use crate::{
    core::{render::RenderOptions, verdict::Catalog},
    git::WriterHandle,
};

pub use config::OperatorConfig;
pub use run::run;

pub use paver_crds::{FIELD_MANAGER, FINALIZER};

/// Errors of a reconcile, with their sources. Transient ones (the API
/// server or the network) are retried with backoff; permanent ones (what
/// the API server refuses as it is) wait for a change to the request.
/// Problems with the request itself never get here: they are conditions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to call the Kubernetes API: {0}")]
    Kube(#[source] Box<kube::Error>),
    #[error("failed to encode the {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// Whether trying again later may succeed without a change to the
    /// object: the API server unavailable, overloaded, timing out or in a
    /// conflict, or the connection failing.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(e) => match e.as_ref() {
                kube::Error::Api(status) => matches!(status.code, 408 | 409 | 429 | 500..),
                _ => true,
            },
            Error::Encode { .. } | Error::MissingField(_) => false,
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Encode { .. } => "encode",
            Error::MissingField(_) => "missing_field",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one writer of status, for every kind: a server-side apply of
/// `status` to the status subresource of `name` under Paver's field
/// manager, counted as an API write of `<plural>/status`.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: &impl serde::Serialize,
    metrics: &metrics::Metrics,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(FIELD_MANAGER).force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await?;
    metrics.wrote(&format!("{}/status", K::plural(&())), "apply");
    Ok(())
}

/// Every object `api` lists, read 500 at a time: the API server answers a
/// page from its watch cache, and no one response body holds thousands of
/// requests at once. `page` gets each page's objects.
pub async fn list_pages<K>(api: &kube::Api<K>, mut page: impl FnMut(Vec<K>)) -> kube::Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let list = api.list(&params).await?;
        page(list.items);
        match list.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Every object `api` lists, read a page at a time ([`list_pages`]).
pub async fn list_all<K>(api: &kube::Api<K>) -> kube::Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    list_pages(api, |items| out.extend(items)).await?;
    Ok(out)
}

/// What the caches keep of an object: no managedFields and no client-side
/// apply copy (both are large, and Paver reads neither), so memory stays
/// flat with many requests.
fn slim<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Shared state of the controllers.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub catalog: RwLock<Catalog>,
    pub writer: WriterHandle,
    pub metrics: metrics::Metrics,
    pub events: events::Events,
    /// Whether the Argo CD Application CRD is installed.
    pub argocd: bool,
    /// Every Approval, to find the one for a request's generation.
    pub approvals: Store<Approval>,
    /// What each Scorecard reports, to write only what changed.
    pub scorecards: scorecards::SeenScorecards,
    /// The route each request is on (the request cache keeps metadata only).
    pub routes: index::RouteIndex,
    /// When each request's next drift check is due.
    pub resync: resync::Resync,
    /// Argo CD Applications Paver rendered (label-selected).
    pub applications: Store<DynamicObject>,
    /// Consecutive failed reconciles of each request that is failing now
    /// (the backoff of its next retry); a reconcile that succeeds clears it.
    pub failures: std::sync::Mutex<std::collections::HashMap<paver_crds::RequestKey, u32>>,
    /// Which requests each bundle with an `enforceAfter` ahead would deny.
    pub would_deny: would_deny::WouldDeny,
    /// Which request owns each output directory and Application.
    pub claims: claims::Claims,
}

pub use paver_crds::vocab::labels::{
    APPLICATION_SELECTOR, REQUEST_NAME as REQUEST_NAME_LABEL, REQUEST_NAMESPACE as REQUEST_NAMESPACE_LABEL,
};

/// An Argo CD resource (`Application`, `AppProject`) for the dynamic API.
pub fn argocd_resource(kind: &str) -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", kind))
}

/// The request an Application was rendered for.
pub fn application_request(app: &DynamicObject) -> Option<ObjectRef<ServiceRequest>> {
    let labels = app.labels();
    let ns = labels.get(REQUEST_NAMESPACE_LABEL)?;
    let name = labels.get(REQUEST_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Argo CD's report on an Application, as a request's `status.sync`.
pub fn sync_status(app: &DynamicObject) -> SyncStatus {
    let status = &app.data["status"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut messages: Vec<String> = [&status["operationState"]["message"], &status["health"]["message"]]
        .into_iter()
        .map(text)
        .filter(|m| !m.is_empty())
        .collect();
    // Argo CD 3 keeps no health message on the Application itself: name the
    // resources that are not Healthy, with their own message (what a
    // developer can act on), and the Application's error conditions.
    let empty = Vec::new();
    for r in status["resources"].as_array().unwrap_or(&empty) {
        let health = text(&r["health"]["status"]);
        if health.is_empty() || health == "Healthy" {
            continue;
        }
        let what = format!(
            "{} {}/{}",
            text(&r["kind"]),
            text(&r["namespace"]),
            text(&r["name"])
        );
        messages.push(match text(&r["health"]["message"]) {
            m if m.is_empty() => format!("{what} is {health}"),
            m => format!("{what} is {health}: {m}"),
        });
    }
    for c in status["conditions"].as_array().unwrap_or(&empty) {
        if text(&c["type"]).ends_with("Error") {
            messages.push(format!("{}: {}", text(&c["type"]), text(&c["message"])));
        }
    }
    let message = messages.join("; ");
    let or_unknown = |s: String| if s.is_empty() { "Unknown".to_string() } else { s };
    SyncStatus {
        application: format!("{}/{}", app.namespace().unwrap_or_default(), app.name_any()),
        status: or_unknown(text(&status["sync"]["status"])),
        health: or_unknown(text(&status["health"]["status"])),
        revision: text(&status["sync"]["revision"]),
        message,
    }
}

impl Context {
    /// How renders are stamped with the output repository.
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            repo_url: self.config.repo_url.clone(),
            revision: self.config.branch.clone(),
            destination_server: self.config.argocd_destination_server.clone(),
        }
    }

    /// The request's Argo CD Application, found by Paver's labels on it.
    pub fn application(&self, sr: &ServiceRequest) -> Option<Arc<DynamicObject>> {
        let ns = sr.namespace()?;
        let name = sr.name_any();
        self.applications.state().into_iter().find(|app| {
            let labels = app.labels();
            labels.get(REQUEST_NAMESPACE_LABEL) == Some(&ns) && labels.get(REQUEST_NAME_LABEL) == Some(&name)
        })
    }
}

/// The Deployments, StatefulSets and DaemonSets among an Application's
/// resources, with the health Argo CD keeps for each (`health` is empty
/// when Argo CD keeps resource health out of the Application: Argo CD 3
/// without `controller.resource.health.persist`).
pub fn workloads(app: &DynamicObject) -> Vec<serde_json::Value> {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    app.data["status"]["resources"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| {
                    matches!(
                        r["kind"].as_str(),
                        Some("Deployment" | "StatefulSet" | "DaemonSet")
                    )
                })
                .map(|r| {
                    serde_json::json!({
                        "kind": text(&r["kind"]),
                        "namespace": text(&r["namespace"]),
                        "name": text(&r["name"]),
                        "health": text(&r["health"]["status"]),
                        "message": text(&r["health"]["message"]),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub type Ctx = Arc<Context>;

#[cfg(test)]
mod tests {
    use kube::api::DynamicObject;
    use serde_json::json;

    use super::sync_status;

    #[test]
    fn unhealthy_resources_are_named_in_the_message() {
        let ar = super::argocd_resource("Application");
        let mut app = DynamicObject::new("shop-web", &ar).within("argocd");
        app.data = json!({"status": {
            "sync": {"status": "Synced", "revision": "abc"},
            "health": {"status": "Degraded"},
            "resources": [
                {"kind": "Service", "namespace": "shop", "name": "web", "health": {"status": "Healthy"}},
                {"kind": "Deployment", "namespace": "shop", "name": "web",
                 "health": {"status": "Degraded", "message": "Deployment \"web\" exceeded its progress deadline"}},
                {"kind": "ConfigMap", "namespace": "shop", "name": "web-config"}
            ],
            "conditions": [{"type": "ComparisonError", "message": "repository not accessible"}]
        }});
        let s = sync_status(&app);
        assert_eq!(s.application, "argocd/shop-web");
        assert_eq!(s.health, "Degraded");
        assert_eq!(
            s.message,
            "Deployment shop/web is Degraded: Deployment \"web\" exceeded its progress deadline; \
             ComparisonError: repository not accessible"
        );
    }
}
