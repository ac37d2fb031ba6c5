//! One watch loop for the kinds Paver keeps in step with the cluster
//! (PaveRoutes and PolicyBundles into the catalog, Scorecards into their
//! digests). It retries with backoff, tells a handler what was applied and
//! deleted, hands it the keys of the first list and of every relist (so it
//! finds what went away while the watch was down), and survives an object
//! it cannot deserialize: that one is reported to the handler, and the
//! initial list — which the ServiceRequest controller waits for — still
//! completes (Stackable's `DeserializeGuard`, Linkerd's guarded watch).

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Debug,
    future::Future,
};

use futures::StreamExt;
use kube::{
    Api, Resource,
    core::DeserializeGuard,
    runtime::{WatchStreamExt, watcher},
};
use paver_crds::RequestKey;
use serde::de::DeserializeOwned;
use tracing::warn;

/// What a watched kind does with its events.
pub trait Handler: Send {
    type K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static;
    /// How logs name the kind (`route`, `bundle`, `scorecard`).
    const KIND: &'static str;

    /// An object was created or changed (also for each object of a list).
    fn apply(&mut self, obj: Self::K) -> impl Future<Output = ()> + Send;

    /// An object was deleted.
    fn delete(&mut self, key: RequestKey) -> impl Future<Output = ()> + Send;

    /// An object that cannot be read as `K` (its metadata could be): what
    /// was in force for it stays so; say why where its owner looks.
    fn invalid(&mut self, key: RequestKey, error: String) -> impl Future<Output = ()> + Send;

    /// A list (the first, or a relist after the watch broke) is complete:
    /// `listed` holds every object in it, readable or not; what the handler
    /// knows that is not listed was deleted meanwhile.
    fn listed(&mut self, listed: HashSet<RequestKey>) -> impl Future<Output = ()> + Send;
}

/// The generation last handled of each cluster-scoped object, by name:
/// an apply whose spec did not change is skipped, and a relist tells what
/// is gone. Routes and bundles keep one each.
#[derive(Debug, Default)]
pub struct Generations(BTreeMap<String, Option<i64>>);

impl Generations {
    /// Whether `name` at `generation` is not the one last handled.
    pub fn changed(&self, name: &str, generation: Option<i64>) -> bool {
        self.0.get(name) != Some(&generation)
    }

    pub fn record(&mut self, name: &str, generation: Option<i64>) {
        self.0.insert(name.to_string(), generation);
    }

    pub fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }

    /// The names handled before that a complete list no longer holds.
    pub fn gone(&self, listed: &HashSet<RequestKey>) -> Vec<String> {
        self.0
            .keys()
            .filter(|n| !listed.contains(&RequestKey::new("", n)))
            .cloned()
            .collect()
    }
}

/// Runs `handler` on every event of `api`'s watch, for as long as the
/// operator runs.
pub async fn guarded_watch<H: Handler>(api: Api<DeserializeGuard<H::K>>, mut handler: H) {
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listed = HashSet::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(kind = H::KIND, error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(obj) => {
                listed.insert(RequestKey::of(&obj));
                dispatch(&mut handler, obj).await;
            }
            watcher::Event::Apply(obj) => dispatch(&mut handler, obj).await,
            watcher::Event::Delete(obj) => handler.delete(RequestKey::of(&obj)).await,
            watcher::Event::InitDone => handler.listed(std::mem::take(&mut listed)).await,
        }
    }
}

async fn dispatch<H: Handler>(handler: &mut H, obj: DeserializeGuard<H::K>) {
    let key = RequestKey::of(&obj);
    match obj.0 {
        Ok(obj) => handler.apply(obj).await,
        Err(invalid) => {
            warn!(kind = H::KIND, object = %key, error = %invalid.error, "cannot read this object; keeping what is in force for it");
            handler.invalid(key, invalid.error).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use paver_crds::PaveRoute;
    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        applied: Vec<String>,
        invalid: Vec<(RequestKey, String)>,
    }

    impl Handler for Recorder {
        type K = PaveRoute;
        const KIND: &'static str = "route";

        async fn apply(&mut self, obj: PaveRoute) {
            self.applied.push(obj.metadata.name.unwrap_or_default());
        }
        async fn delete(&mut self, _key: RequestKey) {}
        async fn invalid(&mut self, key: RequestKey, error: String) {
            self.invalid.push((key, error));
        }
        async fn listed(&mut self, _listed: HashSet<RequestKey>) {}
    }

    /// An object the types cannot read goes to `invalid` with its name and
    /// why; a readable one to `apply`. Neither stops the watch.
    #[tokio::test]
    async fn an_unreadable_object_is_reported_not_fatal() {
        let good = json!({"apiVersion": "paver.dev/v1alpha1", "kind": "PaveRoute",
            "metadata": {"name": "web"}, "spec": {"version": "1.0.0"}});
        let bad = json!({"apiVersion": "paver.dev/v1alpha1", "kind": "PaveRoute",
            "metadata": {"name": "broken"}, "spec": {"version": 7, "templates": "not a list"}});
        let mut recorder = Recorder::default();
        for obj in [bad, good] {
            let guard: DeserializeGuard<PaveRoute> = serde_json::from_value(obj).expect("metadata reads");
            dispatch(&mut recorder, guard).await;
        }
        assert_eq!(recorder.applied, ["web"]);
        assert_eq!(recorder.invalid.len(), 1);
        assert_eq!(recorder.invalid[0].0.to_string(), "/broken");
        assert!(!recorder.invalid[0].1.is_empty());
    }
}
