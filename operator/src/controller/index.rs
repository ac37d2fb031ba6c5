//! Which route each request is on, as its last reconcile read it.
//!
//! The request cache keeps metadata only (a whole ServiceRequest with its
//! parameters and status cost about 6 KiB per request in the cache, 60 MiB
//! at 10,000 requests); a reconcile reads the request itself. Route and
//! bundle changes need to know which requests they touch, which the
//! metadata does not say: this index does, at a few dozen bytes a request.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use std::collections::BTreeMap;

use kube::{
    ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use paver_crds::ServiceRequest;
use tokio::sync::mpsc;

use super::{Ctx, request::RequestMeta};

/// Where route, bundle, Approval, Scorecard and Application changes send the
/// requests they touch, to be reconciled.
pub type Trigger = mpsc::UnboundedSender<ObjectRef<ServiceRequest>>;

/// Requests that `pred` selects by route, namespace and labels,
/// re-reconciled. A request whose route is not known yet (not reconciled
/// since the operator started) is re-reconciled too.
pub fn trigger_requests(
    ctx: &Ctx,
    store: &Store<RequestMeta>,
    trigger: &Trigger,
    pred: impl Fn(&str, &str, &BTreeMap<String, String>) -> bool,
) {
    for meta in store.state() {
        let r = request_ref(&*meta);
        let ns = r.namespace.as_deref().unwrap_or_default();
        let selected = match ctx.routes.route(ns, &r.name) {
            Some(route) => pred(&route, ns, meta.labels()),
            None => true,
        };
        if selected {
            let _ = trigger.send(r);
        }
    }
}

/// Request → the route its spec names.
#[derive(Debug, Default)]
pub struct RouteIndex {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: HashMap<RequestKey, Arc<str>>,
    /// Every route name once, shared by the entries naming it.
    names: HashSet<Arc<str>>,
}

impl RouteIndex {
    /// Records the route `sr` is on now.
    pub fn set(&self, sr: &ServiceRequest) {
        let key = RequestKey::of(sr);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.routes.get(&key).is_some_and(|r| **r == *sr.spec.route) {
            return;
        }
        let name = match inner.names.get(sr.spec.route.as_str()) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(sr.spec.route.as_str());
                inner.names.insert(name.clone());
                name
            }
        };
        inner.routes.insert(key, name);
    }

    /// Forgets a request that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.routes.remove(&RequestKey::new(namespace, name));
    }

    /// The route of request `namespace/name`; `None` before its first reconcile.
    pub fn route(&self, namespace: &str, name: &str) -> Option<Arc<str>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.routes.get(&RequestKey::new(namespace, name)).cloned()
    }
}

/// A request's reference by namespace and name only (no resourceVersion or
/// uid to keep): what the triggers send. A Scorecard, named after its
/// request, gives the same reference.
pub fn request_ref<K: ResourceExt>(obj: &K) -> ObjectRef<ServiceRequest> {
    ObjectRef::new(&obj.name_any()).within(&obj.namespace().unwrap_or_default())
}

/// The tables kept per request (this index, the Scorecard digests) are
/// keyed by [`RequestKey`]: `namespace/name` in one allocation. An
/// `ObjectRef` is 96 bytes with two more allocations, which at 10,000
/// requests is about a megabyte per table.
pub use paver_crds::RequestKey;

/// The reference a trigger sends for the request of `key`.
pub fn key_ref(key: &RequestKey) -> ObjectRef<ServiceRequest> {
    let (ns, name) = key.parts();
    ObjectRef::new(name).within(ns)
}

#[cfg(test)]
mod tests {
    use paver_crds::ServiceRequestSpec;

    use super::*;

    fn request(ns: &str, name: &str, route: &str) -> ServiceRequest {
        let mut sr = ServiceRequest::new(
            name,
            ServiceRequestSpec {
                route: route.into(),
                ..Default::default()
            },
        );
        sr.metadata.namespace = Some(ns.into());
        sr
    }

    #[test]
    fn routes_follow_the_last_reconcile_and_names_are_shared() {
        let index = RouteIndex::default();
        assert_eq!(index.route("shop", "orders"), None);
        index.set(&request("shop", "orders", "microservice"));
        index.set(&request("shop", "web", "microservice"));
        assert_eq!(index.route("shop", "orders").as_deref(), Some("microservice"));
        let (a, b) = (
            index.route("shop", "orders").unwrap_or_else(|| Arc::from("")),
            index.route("shop", "web").unwrap_or_else(|| Arc::from("")),
        );
        assert!(Arc::ptr_eq(&a, &b), "one copy of the route name");
        index.set(&request("shop", "orders", "web-frontend"));
        assert_eq!(index.route("shop", "orders").as_deref(), Some("web-frontend"));
        index.forget("shop", "orders");
        assert_eq!(index.route("shop", "orders"), None);
        assert_eq!(index.route("shop", "web").as_deref(), Some("microservice"));
    }

    #[test]
    fn a_key_names_its_request() {
        let sr = request("shop", "orders", "microservice");
        assert_eq!(RequestKey::of(&sr), RequestKey::new("shop", "orders"));
        assert_ne!(RequestKey::of(&sr), RequestKey::new("shop", "web"));
        assert_eq!(key_ref(&RequestKey::of(&sr)), request_ref(&sr));
        assert_eq!(
            key_ref(&RequestKey::of(&sr)),
            ObjectRef::new("orders").within("shop")
        );
    }
}
