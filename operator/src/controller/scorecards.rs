//! What Paver last saw of each Scorecard: a digest of its status, not the
//! object. Paver writes a Scorecard only when its checks changed, and
//! recreates one deleted by hand; neither needs the object itself, and a
//! cache of whole Scorecards cost about 8 KiB per request (80 MiB at
//! 10,000 requests).

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    sync::RwLock,
};

use kube::{ResourceExt, runtime::reflector::ObjectRef};
use paver_crds::{Scorecard, ScorecardStatus, ServiceRequest};
use tokio::sync::mpsc::UnboundedSender;

use super::index::{RequestKey, key_ref};

/// Scorecards are named after their request: the request's reference →
/// digest of its Scorecard's status without `evaluatedAt`.
#[derive(Debug, Default)]
pub struct SeenScorecards {
    digests: RwLock<HashMap<RequestKey, u64>>,
}

/// A digest of what a Scorecard reports, leaving out when it was evaluated.
pub fn digest(status: &ScorecardStatus) -> u64 {
    let mut h = DefaultHasher::new();
    (
        status.score,
        &status.level,
        status.passed,
        status.failed,
        &status.checks,
    )
        .hash(&mut h);
    h.finish()
}

impl SeenScorecards {
    /// Whether the Scorecard `namespace/name` already reports `status`.
    pub fn reports(&self, namespace: &str, name: &str, status: &ScorecardStatus) -> bool {
        let digests = self.digests.read().unwrap_or_else(|e| e.into_inner());
        digests.get(&RequestKey::new(namespace, name)) == Some(&digest(status))
    }

    fn saw(&self, sc: &Scorecard) {
        let digest = sc.status.as_ref().map_or(0, digest);
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests.insert(RequestKey::of(sc), digest);
    }

    fn forget(&self, key: &RequestKey) {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests.remove(key);
    }

    /// Keep only the requests in `listed` (after a relist); returns the
    /// ones dropped.
    fn retain(&self, listed: &HashSet<RequestKey>) -> Vec<ObjectRef<ServiceRequest>> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<_> = digests.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        for k in &gone {
            digests.remove(k);
        }
        gone.iter().map(key_ref).collect()
    }
}

/// Keeps `ctx.scorecards` in step with the Scorecards (through
/// [`super::watch::guarded_watch`]); a deleted one wakes its request, which
/// writes it again. `ready` turns true once the first list is in, so that
/// requests are not reconciled against an empty table (which would write
/// every Scorecard again after a restart).
pub struct Scorecards {
    pub ctx: super::Ctx,
    pub trigger: UnboundedSender<ObjectRef<ServiceRequest>>,
    pub ready: tokio::sync::watch::Sender<bool>,
    /// The team label of each Scorecard's score on /metrics (to remove it).
    pub teams: std::sync::Mutex<HashMap<RequestKey, String>>,
}

fn score_labels(namespace: &str, name: &str, team: &str) -> super::metrics::ServiceLabels {
    super::metrics::ServiceLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
        team: team.to_string(),
    }
}

impl Scorecards {
    fn forget_score(&self, key: &RequestKey) {
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(team) = teams.remove(key) {
            let (ns, name) = key.parts();
            self.ctx.metrics.scores.remove(&score_labels(ns, name, &team));
        }
    }
}

impl super::watch::Handler for Scorecards {
    type K = Scorecard;
    const KIND: &'static str = "scorecard";

    /// Also `paver_scorecard_score`, from every Scorecard listed or
    /// changed: present after a restart for the ones nothing rewrites.
    async fn apply(&mut self, sc: Scorecard) {
        self.ctx.scorecards.saw(&sc);
        let (ns, name) = (sc.namespace().unwrap_or_default(), sc.name_any());
        let team = sc.spec.team.clone();
        let mut teams = self.teams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = teams.insert(RequestKey::of(&sc), team.clone())
            && old != team
        {
            self.ctx.metrics.scores.remove(&score_labels(&ns, &name, &old));
        }
        let score = sc.status.as_ref().map_or(0, |s| i64::from(s.score));
        self.ctx
            .metrics
            .scores
            .get_or_create(&score_labels(&ns, &name, &team))
            .set(score);
    }

    /// A deleted Scorecard's score goes from /metrics; its request (if it
    /// still exists) writes it again.
    async fn delete(&mut self, key: RequestKey) {
        self.ctx.scorecards.forget(&key);
        self.forget_score(&key);
        let _ = self.trigger.send(key_ref(&key));
    }

    /// Paver's own object, unreadable (edited by hand): its request writes
    /// it again.
    async fn invalid(&mut self, key: RequestKey, _error: String) {
        self.delete(key).await;
    }

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        // Deleted while the watch was down.
        for gone in self.ctx.scorecards.retain(&listed) {
            self.forget_score(&RequestKey::new(
                gone.namespace.as_deref().unwrap_or_default(),
                &gone.name,
            ));
            let _ = self.trigger.send(gone);
        }
        self.ready.send_replace(true);
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
        seen.forget(&RequestKey::of(&sc));
        assert!(!seen.reports("team", "svc", &status));

        // A relist that no longer lists a Scorecard hands back its request.
        let mut kept = Scorecard::new("kept", Default::default());
        kept.metadata.namespace = Some("team".into());
        seen.saw(&sc);
        seen.saw(&kept);
        let gone = seen.retain(&HashSet::from([RequestKey::of(&kept)]));
        assert_eq!(gone, vec![ObjectRef::new("svc").within("team")]);
        assert!(!seen.reports("team", "svc", &status));
    }
}
