//! The warn-first rollout, counted: which requests each bundle with an
//! `enforceAfter` ahead would deny once it enforces, by team, as their last
//! reconcile judged them (`PolicyOutcome::pending_enforcement`). Written to
//! the bundle's `status.wouldDeny` and `status.wouldDenyByTeam` (the
//! `WOULD-DENY` column of `kubectl get policybundles`) when a count changes.
//!
//! The index holds a request key and a team per pending request (a few
//! dozen bytes each); it fills again as requests reconcile after a restart.

use std::{collections::BTreeMap, sync::Mutex, time::Duration};

use chrono::Utc;
use kube::Api;
use paver_crds::{PolicyBundle, PolicyBundleStatus, RequestKey};
use tracing::warn;

use super::{Ctx, apply_status};

/// How often changed counts are written.
pub const WRITE_EVERY: Duration = Duration::from_secs(10);

/// Counts for one bundle: the total and by team.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u32,
    pub by_team: BTreeMap<String, u32>,
}

#[derive(Default)]
pub struct WouldDeny {
    /// Bundle → request → its team.
    pending: Mutex<BTreeMap<String, BTreeMap<RequestKey, String>>>,
}

impl WouldDeny {
    /// The request (of `team`) would be denied by exactly `bundles`.
    pub fn record(&self, key: &RequestKey, team: &str, bundles: &[String]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (bundle, requests) in pending.iter_mut() {
            if !bundles.contains(bundle) {
                requests.remove(key);
            }
        }
        for bundle in bundles {
            pending
                .entry(bundle.clone())
                .or_default()
                .insert(key.clone(), team.to_string());
        }
        pending.retain(|_, requests| !requests.is_empty());
    }

    /// The request is gone.
    pub fn forget(&self, key: &RequestKey) {
        self.record(key, "", &[]);
    }

    /// The counts of `bundle`.
    pub fn counts(&self, bundle: &str) -> Counts {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = Counts::default();
        for team in pending.get(bundle).into_iter().flat_map(|r| r.values()) {
            counts.total = counts.total.saturating_add(1);
            let n = counts.by_team.entry(team.clone()).or_insert(0);
            *n = n.saturating_add(1);
        }
        counts
    }
}

/// `prev` with the would-deny fields of `counts` (none when the bundle has
/// no `enforceAfter` ahead).
pub fn with_counts(prev: &PolicyBundleStatus, counts: Option<&Counts>) -> PolicyBundleStatus {
    PolicyBundleStatus {
        would_deny: counts.map(|c| c.total),
        would_deny_by_team: counts.map(|c| c.by_team.clone()).unwrap_or_default(),
        ..prev.clone()
    }
}

/// Writes each bundle's counts when they differ from its status, every
/// [`WRITE_EVERY`]. Runs for the life of the operator.
pub async fn run(ctx: Ctx) {
    let api: Api<PolicyBundle> = Api::all(ctx.client.clone());
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Utc::now();
        let bundles: Vec<(String, bool)> = {
            let catalog = ctx.catalog.read().await;
            catalog
                .bundles
                .names()
                .filter_map(|n| catalog.bundles.get(n))
                .map(|b| {
                    let ahead =
                        b.mode == paver_crds::PolicyMode::Enforce && b.enforce_after.is_some_and(|t| now < t);
                    (b.name.clone(), ahead)
                })
                .collect()
        };
        for (name, ahead) in bundles {
            let counts = ahead.then(|| ctx.would_deny.counts(&name));
            let bundle = match api.get_opt(&name).await {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    warn!(bundle = %name, error = %e, "failed to read bundle for its would-deny count");
                    continue;
                }
            };
            let prev = bundle.status.unwrap_or_default();
            let status = with_counts(&prev, counts.as_ref());
            if status != prev
                && let Err(e) = apply_status(&api, &name, &status, &ctx.metrics).await
            {
                warn!(bundle = %name, error = %e, "failed to write the would-deny count");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_last_verdict_of_each_request() {
        let w = WouldDeny::default();
        let (a, b, c) = (
            RequestKey::new("t1", "a"),
            RequestKey::new("t1", "b"),
            RequestKey::new("t2", "c"),
        );
        w.record(&a, "payments", &["security".into()]);
        w.record(&b, "payments", &["security".into(), "finops".into()]);
        w.record(&c, "search", &["security".into()]);
        assert_eq!(
            w.counts("security"),
            Counts {
                total: 3,
                by_team: [("payments".to_string(), 2), ("search".to_string(), 1)].into()
            }
        );
        assert_eq!(w.counts("finops").total, 1);
        // b was fixed; c was deleted.
        w.record(&b, "payments", &[]);
        w.forget(&c);
        assert_eq!(
            w.counts("security"),
            Counts {
                total: 1,
                by_team: [("payments".to_string(), 1)].into()
            }
        );
        assert_eq!(w.counts("finops"), Counts::default());
        let s = with_counts(&PolicyBundleStatus::default(), Some(&w.counts("security")));
        assert_eq!((s.would_deny, s.would_deny_by_team.len()), (Some(1), 1));
        assert_eq!(with_counts(&s, None), PolicyBundleStatus::default());
    }
}
