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

/// A route and one of its versions.
pub type RouteAt = (Arc<str>, Arc<str>);

/// What a request's last reconcile saw, for the route census and rollouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The route and version of its committed render, if any.
    pub rendered: Option<RouteAt>,
    /// Its `spec.routeVersion` (empty when it has none).
    pub range: Arc<str>,
    /// What Argo CD reports on that render.
    pub health: crate::core::rollout::Health,
}

/// Requests per version, per route.
pub type Census = HashMap<Arc<str>, HashMap<Arc<str>, u32>>;

/// Request → the route its spec names, and the route version its
/// committed render is on.
#[derive(Debug, Default)]
pub struct RouteIndex {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    routes: HashMap<RequestKey, Arc<str>>,
    /// What the last reconcile of each request since the operator started saw.
    seen: HashMap<RequestKey, Seen>,
    /// Every route name and version once, shared by the entries naming it.
    names: HashSet<Arc<str>>,
}

impl Inner {
    fn intern(&mut self, s: &str) -> Arc<str> {
        match self.names.get(s) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(s);
                self.names.insert(name.clone());
                name
            }
        }
    }
}

impl RouteIndex {
    /// Records the route `sr` is on now.
    pub fn set(&self, sr: &ServiceRequest) {
        let key = RequestKey::of(sr);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.routes.get(&key).is_some_and(|r| **r == *sr.spec.route) {
            return;
        }
        let name = inner.intern(&sr.spec.route);
        inner.routes.insert(key, name);
    }

    /// Records, after a reconcile, the route and version of the request's
    /// committed render (`None`: nothing committed), its `routeVersion` and
    /// what Argo CD reports on the render.
    pub fn set_seen(
        &self,
        key: &RequestKey,
        rendered: Option<(&str, &str)>,
        range: &str,
        health: crate::core::rollout::Health,
    ) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let same = inner.seen.get(key).is_some_and(|s| {
            s.rendered.as_ref().map(|(a, b)| (&**a, &**b)) == rendered
                && *s.range == *range
                && s.health == health
        });
        if same {
            return;
        }
        let seen = Seen {
            rendered: rendered.map(|(route, version)| (inner.intern(route), inner.intern(version))),
            range: inner.intern(range),
            health,
        };
        inner.seen.insert(key.clone(), seen);
    }

    /// What the last reconcile of request `key` saw, if it was reconciled
    /// since the operator started.
    pub fn seen(&self, key: &RequestKey) -> Option<Seen> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.seen.get(key).cloned()
    }

    /// Requests per version of `route`, by their committed renders, and
    /// whether every one of `requests` has been reconciled since the
    /// operator started (until then the counts are incomplete).
    pub fn census(&self, requests: &[RequestKey]) -> (Census, bool) {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut counts = Census::new();
        for (route, version) in inner.seen.values().filter_map(|s| s.rendered.as_ref()) {
            *counts
                .entry(route.clone())
                .or_default()
                .entry(version.clone())
                .or_default() += 1;
        }
        let complete = requests.iter().all(|k| inner.seen.contains_key(k));
        (counts, complete)
    }

    /// Forgets a request that is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let key = RequestKey::new(namespace, name);
        inner.routes.remove(&key);
        inner.seen.remove(&key);
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
    fn the_census_counts_committed_renders_by_version() {
        use crate::core::rollout::Health;
        let index = RouteIndex::default();
        let keys: Vec<RequestKey> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| RequestKey::new("shop", n))
            .collect();
        let set = |k: &RequestKey, r: Option<(&str, &str)>| index.set_seen(k, r, "", Health::Healthy);
        set(&keys[0], Some(("microservice", "1.0.0")));
        set(&keys[1], Some(("microservice", "2.0.0")));
        set(&keys[2], Some(("microservice", "2.0.0")));
        let (counts, complete) = index.census(&keys);
        assert!(!complete, "d was never reconciled");
        let ms = &counts[&Arc::<str>::from("microservice")];
        assert_eq!(ms[&Arc::<str>::from("2.0.0")], 2);
        assert_eq!(ms[&Arc::<str>::from("1.0.0")], 1);
        set(&keys[3], None);
        set(&keys[0], Some(("microservice", "2.0.0")));
        let (counts, complete) = index.census(&keys);
        assert!(complete);
        let ms = &counts[&Arc::<str>::from("microservice")];
        assert_eq!(ms.get(&Arc::<str>::from("1.0.0")), None);
        assert_eq!(ms[&Arc::<str>::from("2.0.0")], 3);
        index.forget("shop", "b");
        let (counts, _) = index.census(&keys[2..]);
        assert_eq!(
            counts[&Arc::<str>::from("microservice")][&Arc::<str>::from("2.0.0")],
            2
        );
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
