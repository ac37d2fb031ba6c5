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
/// `evaluatedAt`) and the team and level its score and level are labelled
/// with on /metrics.
#[derive(Debug, Default)]
pub struct SeenScorecards {
    digests: RwLock<HashMap<RequestKey, Seen>>,
}

#[derive(Debug)]
struct Seen {
    digest: u64,
    /// The labels of `paver_scorecard_score` and `paver_scorecard_level`.
    labels: Labels,
}

/// What a Scorecard's metrics are labelled with besides its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub team: Box<str>,
    pub level: Box<str>,
}

impl Labels {
    fn of(sc: &Scorecard) -> Self {
        Labels {
            team: sc.spec.team.as_str().into(),
            level: sc
                .status
                .as_ref()
                .map(|s| s.level.as_str())
                .filter(|l| !l.is_empty())
                .unwrap_or(paver_core::score::NO_LEVEL)
                .into(),
        }
    }
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

    /// Records what `sc` reports; returns the labels it was seen with
    /// before when they were others.
    fn saw(&self, sc: &Scorecard) -> Option<Labels> {
        let seen = Seen {
            digest: sc.status.as_ref().map_or(0, digest),
            labels: Labels::of(sc),
        };
        let now = seen.labels.clone();
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests
            .insert(RequestKey::of(sc), seen)
            .map(|before| before.labels)
            .filter(|before| *before != now)
    }

    /// Forgets the Scorecard of `key`; returns its labels, if it was known.
    fn forget(&self, key: &RequestKey) -> Option<Labels> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        digests.remove(key).map(|seen| seen.labels)
    }

    /// Keep only the requests in `listed` (after a relist); returns the
    /// ones dropped, with their labels.
    fn retain(&self, listed: &HashSet<RequestKey>) -> Vec<(RequestKey, Labels)> {
        let mut digests = self.digests.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<RequestKey> = digests.keys().filter(|k| !listed.contains(*k)).cloned().collect();
        gone.into_iter()
            .filter_map(|k| digests.remove(&k).map(|seen| (k, seen.labels)))
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

fn level_labels(key: &RequestKey, labels: &Labels) -> super::metrics::LevelLabels {
    let (namespace, name) = key.parts();
    super::metrics::LevelLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
        team: labels.team.to_string(),
        level: labels.level.to_string(),
    }
}

impl Scorecards {
    /// The Scorecard of `key` is gone: so are its score and level, and its
    /// request (if it still exists) writes it again.
    fn gone(&self, key: &RequestKey, labels: Option<Labels>) {
        if let Some(labels) = labels {
            self.forget_metrics(key, &labels);
        }
        let _ = self.trigger.send(key_ref(key));
    }

    fn forget_metrics(&self, key: &RequestKey, labels: &Labels) {
        let metrics = &self.ctx.metrics;
        metrics.scores.remove(&score_labels(key, &labels.team));
        metrics.levels.remove(&level_labels(key, labels));
    }
}

impl super::watch::Handler for Scorecards {
    type K = Scorecard;
    const KIND: &'static str = "scorecard";

    /// Also `paver_scorecard_score` and `paver_scorecard_level`, from
    /// every Scorecard listed or changed: present after a restart for the
    /// ones nothing rewrites.
    async fn apply(&mut self, sc: Scorecard) {
        let key = RequestKey::of(&sc);
        if let Some(before) = self.ctx.scorecards.saw(&sc) {
            self.forget_metrics(&key, &before);
        }
        let score = sc.status.as_ref().map_or(0, |s| i64::from(s.score));
        let metrics = &self.ctx.metrics;
        metrics
            .scores
            .get_or_create(&score_labels(&key, &sc.spec.team))
            .set(score);
        metrics
            .levels
            .get_or_create(&level_labels(&key, &Labels::of(&sc)))
            .set(1);
    }

    async fn delete(&mut self, key: RequestKey) {
        let labels = self.ctx.scorecards.forget(&key);
        self.gone(&key, labels);
    }

    /// Paver's own object, unreadable (edited by hand): its request writes
    /// it again.
    async fn invalid(&mut self, key: RequestKey, _error: String) {
        self.delete(key).await;
    }

    async fn listed(&mut self, listed: HashSet<RequestKey>) {
        // Deleted while the watch was down.
        for (key, labels) in self.ctx.scorecards.retain(&listed) {
            self.gone(&key, Some(labels));
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
        let labels = |team: &str, level: &str| Labels {
            team: team.into(),
            level: level.into(),
        };
        assert_eq!(seen.forget(&RequestKey::of(&sc)), Some(labels("", "bronze")));
        assert!(!seen.reports("team", "svc", &status));

        // The team and level its score and level are labelled with are
        // kept beside the digest, and a new team or level hands back the
        // old ones (their labels go).
        sc.spec.team = "a".into();
        assert_eq!(seen.saw(&sc), None);
        assert_eq!(seen.saw(&sc), None, "same team and level");
        sc.spec.team = "b".into();
        assert_eq!(seen.saw(&sc), Some(labels("a", "bronze")));
        if let Some(s) = sc.status.as_mut() {
            s.level = "silver".into();
        }
        assert_eq!(seen.saw(&sc), Some(labels("b", "bronze")));
        sc.status = None;
        assert_eq!(seen.saw(&sc), Some(labels("b", "silver")));
        assert_eq!(
            seen.forget(&RequestKey::of(&sc)),
            Some(labels("b", "none")),
            "no status: no level"
        );

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
