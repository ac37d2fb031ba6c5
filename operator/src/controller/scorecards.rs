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

use kube::runtime::reflector::ObjectRef;
use paver_crds::{Scorecard, ScorecardStatus, ServiceRequest};
use tokio::sync::mpsc::UnboundedSender;

use super::index::{RequestKey, key_ref};

/// Scorecards are named after their request: the request's reference →
/// what its Scorecard reports (a digest of its status without
/// `evaluatedAt`) and the team its score is labelled with on /metrics.
#[derive(Debug, Default)]
pub struct SeenScorecards {
    digests: RwLock<HashMap<RequestKey, Seen>>,
}

#[derive(Debug)]
struct Seen {
    digest: u64,
    team: Box<str>,
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
        digests
            .get(&RequestKey::new(namespace, name))
            .is_some_and(|seen| seen.digest == digest(status))
    }

    /// Records what `sc` reports; returns the team it was seen with before
    /// when that was another one.
    fn saw(&self, sc: &Scorecard) -> Option<Box<str>> {
        let seen = Seen {
            digest: sc.status.as_ref().map_or(0, digest),
            team: sc.spec.team.as_str().into(),
        };
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests
            .insert(RequestKey::of(sc), seen)
            .map(|before| before.team)
            .filter(|team| **team != *sc.spec.team)
    }

    /// Forgets the Scorecard of `key`; returns its team, if it was known.
    fn forget(&self, key: &RequestKey) -> Option<Box<str>> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests.remove(key).map(|seen| seen.team)
    }

    /// Keep only the requests in `listed` (after a relist); returns the
    /// ones dropped, with their teams.
    fn retain(&self, listed: &HashSet<RequestKey>) -> Vec<(RequestKey, Box<str>)> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<RequestKey> = digests.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        gone.into_iter()
            .filter_map(|k| digests.remove(&k).map(|seen| (k, seen.team)))
            .collect()
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
}

fn score_labels(key: &RequestKey, team: &str) -> super::metrics::ServiceLabels {
    let (namespace, name) = key.parts();
    super::metrics::ServiceLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
        team: team.to_string(),
    }
}

impl Scorecards {
    /// The Scorecard of `key` is gone: so is its score, and its request
    /// (if it still exists) writes it again.
    fn gone(&self, key: &RequestKey, team: Option<Box<str>>) {
        if let Some(team) = team {
            self.ctx.metrics.scores.remove(&score_labels(key, &team));
        }
        let _ = self.trigger.send(key_ref(key));
    }
}

impl super::watch::Handler for Scorecards {
    type K = Scorecard;
    const KIND: &'static str = "scorecard";

    /// Also `paver_scorecard_score`, from every Scorecard listed or
    /// changed: present after a restart for the ones nothing rewrites.
    async fn apply(&mut self, sc: Scorecard) {
        let key = RequestKey::of(&sc);
        if let Some(old_team) = self.ctx.scorecards.saw(&sc) {
            self.ctx.metrics.scores.remove(&score_labels(&key, &old_team));
        }
        let score = sc.status.as_ref().map_or(0, |s| i64::from(s.score));
        self.ctx
            .metrics
            .scores
            .get_or_create(&score_labels(&key, &sc.spec.team))
            .set(score);
    }

    async fn delete(&mut self, key: RequestKey) {
        let team = self.ctx.scorecards.forget(&key);
        self.gone(&key, team);
    }

    /// Paver's own object, unreadable (edited by hand): its request writes
    /// it again.
    async fn invalid(&mut self, key: RequestKey, _error: String) {
        self.delete(key).await;
    }

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        // Deleted while the watch was down.
        for (key, team) in self.ctx.scorecards.retain(&listed) {
            self.gone(&key, Some(team));
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
        assert_eq!(seen.forget(&RequestKey::of(&sc)).as_deref(), Some(""));
        assert!(!seen.reports("team", "svc", &status));

        // The team its score is labelled with is kept beside the digest,
        // and a new team hands back the old one (its label goes).
        sc.spec.team = "a".into();
        assert_eq!(seen.saw(&sc), None);
        assert_eq!(seen.saw(&sc), None, "same team");
        sc.spec.team = "b".into();
        assert_eq!(seen.saw(&sc).as_deref(), Some("a"));
        seen.forget(&RequestKey::of(&sc));

        // A relist that no longer lists a Scorecard hands back its request.
        let mut kept = Scorecard::new("kept", Default::default());
        kept.metadata.namespace = Some("team".into());
        seen.saw(&sc);
        seen.saw(&kept);
        let gone = seen.retain(&HashSet::from([RequestKey::of(&kept)]));
        assert_eq!(gone.len(), 1);
        assert_eq!(key_ref(&gone[0].0), ObjectRef::new("svc").within("team"));
        assert!(!seen.reports("team", "svc", &status));
    }
}
