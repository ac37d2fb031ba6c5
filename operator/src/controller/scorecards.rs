//! What Paver last saw of each Scorecard: a digest of its status, not the
//! object. Paver writes a Scorecard only when its checks changed, and
//! recreates one deleted by hand; neither needs the object itself, and a
//! cache of whole Scorecards cost about 8 KiB per request (80 MiB at
//! 10,000 requests).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::RwLock,
};

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use paver_crds::{Scorecard, ScorecardStatus, ServiceRequest};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

/// `namespace/name` → digest of the status without `evaluatedAt`.
#[derive(Debug, Default)]
pub struct SeenScorecards {
    digests: RwLock<HashMap<String, u64>>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// A digest of what a Scorecard reports, leaving out when it was evaluated.
pub fn digest(status: &ScorecardStatus) -> u64 {
    let mut h = DefaultHasher::new();
    (status.score, &status.level, status.passed, status.failed).hash(&mut h);
    for c in &status.checks {
        // Every field of a check, so any change is seen.
        serde_json::to_string(c).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

impl SeenScorecards {
    /// Whether the Scorecard `namespace/name` already reports `status`.
    pub fn reports(&self, namespace: &str, name: &str, status: &ScorecardStatus) -> bool {
        let digests = self.digests.read().unwrap_or_else(|e| e.into_inner());
        digests.get(&key(namespace, name)) == Some(&digest(status))
    }

    fn saw(&self, sc: &Scorecard) {
        let digest = sc.status.as_ref().map_or(0, digest);
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests.insert(key(&sc.namespace().unwrap_or_default(), &sc.name_any()), digest);
    }

    fn forget(&self, sc: &Scorecard) -> bool {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests
            .remove(&key(&sc.namespace().unwrap_or_default(), &sc.name_any()))
            .is_some()
    }

    /// Keep only the keys in `listed` (after a relist); returns the ones
    /// dropped.
    fn retain(&self, listed: &std::collections::HashSet<String>) -> Vec<String> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = digests.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        for k in &gone {
            digests.remove(k);
        }
        gone
    }
}

/// The request a Scorecard key belongs to (Scorecards are named after
/// their request).
fn request_of(key: &str) -> Option<ObjectRef<ServiceRequest>> {
    let (ns, name) = key.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// Watch Scorecards into `seen`; a deleted one wakes its request, which
/// writes it again.
pub async fn watch(
    api: Api<Scorecard>,
    seen: &SeenScorecards,
    trigger: UnboundedSender<ObjectRef<ServiceRequest>>,
) {
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listed = std::collections::HashSet::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "scorecard watch failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed.clear(),
            watcher::Event::InitApply(sc) => {
                listed.insert(key(&sc.namespace().unwrap_or_default(), &sc.name_any()));
                seen.saw(&sc);
            }
            watcher::Event::InitDone => {
                // Deleted while the watch was down.
                for gone in seen.retain(&listed) {
                    if let Some(r) = request_of(&gone) {
                        let _ = trigger.send(r);
                    }
                }
                listed = Default::default();
            }
            watcher::Event::Apply(sc) => seen.saw(&sc),
            watcher::Event::Delete(sc) => {
                seen.forget(&sc);
                if let Some(ns) = sc.namespace() {
                    let _ = trigger.send(ObjectRef::new(&sc.spec.request).within(&ns));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use paver_crds::CheckResult;

    use super::*;

    #[test]
    fn digest_ignores_only_the_evaluation_time() {
        let status = ScorecardStatus {
            score: 50,
            level: "bronze".into(),
            passed: 1,
            failed: 1,
            checks: vec![CheckResult::default()],
            evaluated_at: "2026-01-01T00:00:00Z".into(),
        };
        let later = ScorecardStatus {
            evaluated_at: "2026-02-01T00:00:00Z".into(),
            ..status.clone()
        };
        assert_eq!(digest(&status), digest(&later));
        let mut changed = status.clone();
        changed.checks[0].message = "now failing".into();
        assert_ne!(digest(&status), digest(&changed));

        let seen = SeenScorecards::default();
        let mut sc = Scorecard::new("svc", Default::default());
        sc.metadata.namespace = Some("team".into());
        sc.status = Some(status.clone());
        assert!(!seen.reports("team", "svc", &status));
        seen.saw(&sc);
        assert!(seen.reports("team", "svc", &later));
        assert!(!seen.reports("team", "svc", &changed));
        assert!(seen.forget(&sc));
        assert!(!seen.reports("team", "svc", &status));
    }
}
