//! Prometheus metrics (`/metrics`), prefixed `paver_`.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of a reconcile outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
    pub outcome: String,
}

/// Labels of a violation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub bundle: String,
    pub rule: String,
    pub team: String,
}

/// Labels of a Git operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitLabels {
    pub operation: String,
    pub outcome: String,
}

/// Labels of a service's score.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: String,
    pub name: String,
    pub team: String,
}

/// Labels of an allocator statistic.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocatorLabels {
    pub stat: String,
}

/// Reads one of jemalloc's statistics.
type ReadStat = fn() -> tikv_jemalloc_ctl::Result<usize>;

/// Labels of an API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub resource: String,
    pub verb: String,
}

fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

/// Every metric Paver exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    pub policy_eval_duration: Histogram,
    pub decision_duration: Histogram,
    pub violations: Family<ViolationLabels, Counter>,
    pub git_operations: Family<GitLabels, Counter>,
    pub git_duration: Family<GitLabels, Histogram>,
    pub scores: Family<ServiceLabels, Gauge>,
    pub api_writes: Family<WriteLabels, Counter>,
    pub drift_restored: Counter,
    /// jemalloc's statistics, read at each scrape.
    pub allocator: Family<AllocatorLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("paver");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and outcome",
            reconciles.clone(),
        );
        let reconcile_duration =
            Family::<ReconcileLabels, Histogram>::new_with_constructor(|| Histogram::new(duration_buckets()));
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller and outcome",
            reconcile_duration.clone(),
        );
        let policy_eval_duration = Histogram::new(duration_buckets());
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time to evaluate every matching bundle for one request (the policy stage alone)",
            policy_eval_duration.clone(),
        );
        let decision_duration = Histogram::new(duration_buckets());
        registry.register(
            "decision_duration_seconds",
            "Time of one request's whole decision: validate, estimate, policy, render",
            decision_duration.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "violations",
            "Policy violations newly found (not on the request's status before), by bundle, rule and team",
            violations.clone(),
        );
        let git_operations = Family::<GitLabels, Counter>::default();
        registry.register(
            "git_operations",
            "Git commits and pushes by outcome",
            git_operations.clone(),
        );
        let git_duration =
            Family::<GitLabels, Histogram>::new_with_constructor(|| Histogram::new(duration_buckets()));
        registry.register(
            "git_duration_seconds",
            "Git commit and push durations",
            git_duration.clone(),
        );
        let scores = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "scorecard_score",
            "Scorecard score per service (0-100)",
            scores.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes Paver made to the Kubernetes API",
            api_writes.clone(),
        );
        let drift_restored = Counter::default();
        registry.register(
            "drift_restored",
            "Rendered files edited by hand and restored",
            drift_restored.clone(),
        );
        let allocator = Family::<AllocatorLabels, Gauge>::default();
        registry.register(
            "allocator_bytes",
            "jemalloc's statistics at this scrape: allocated (the live heap), active (the pages \
             holding it), resident (what the allocator keeps in RAM, its metadata included), \
             mapped, retained (address space kept, not in RAM) and metadata",
            allocator.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciles,
            reconcile_duration,
            policy_eval_duration,
            decision_duration,
            violations,
            git_operations,
            git_duration,
            scores,
            api_writes,
            drift_restored,
            allocator,
        }
    }
}

impl Metrics {
    /// Counts one reconcile and its duration.
    pub fn reconciled(&self, controller: &str, outcome: &str, seconds: f64) {
        let labels = ReconcileLabels {
            controller: controller.into(),
            outcome: outcome.into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one API write.
    pub fn wrote(&self, resource: &str, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                resource: resource.into(),
                verb: verb.into(),
            })
            .inc();
    }

    /// Counts one Git operation and its duration.
    pub fn git(&self, operation: &str, outcome: &str, seconds: f64) {
        let labels = GitLabels {
            operation: operation.into(),
            outcome: outcome.into(),
        };
        self.git_operations.get_or_create(&labels).inc();
        self.git_duration.get_or_create(&labels).observe(seconds);
    }

    /// Refreshes the allocator gauges (left as they were when jemalloc's
    /// statistics cannot be read). Resident minus allocated is what the
    /// allocator holds beyond the live heap: pages not returned yet and
    /// partly used ones.
    fn read_allocator(&self) {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        if epoch::advance().is_err() {
            return;
        }
        let reads: [(&str, ReadStat); 6] = [
            ("allocated", stats::allocated::read),
            ("active", stats::active::read),
            ("resident", stats::resident::read),
            ("mapped", stats::mapped::read),
            ("retained", stats::retained::read),
            ("metadata", stats::metadata::read),
        ];
        for (stat, read) in reads {
            if let Ok(bytes) = read() {
                self.allocator
                    .get_or_create(&AllocatorLabels { stat: stat.into() })
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.read_allocator();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_prefix() {
        let m = Metrics::default();
        m.reconciled("servicerequest", "ok", 0.01);
        m.wrote("servicerequests/status", "patch");
        let text = m.encode();
        assert!(
            text.contains("paver_reconciles_total{controller=\"servicerequest\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("paver_api_writes_total"), "{text}");
    }

    #[test]
    fn allocator_statistics_are_exported() {
        let text = Metrics::default().encode();
        for stat in [
            "allocated",
            "active",
            "resident",
            "mapped",
            "retained",
            "metadata",
        ] {
            assert!(
                text.contains(&format!("paver_allocator_bytes{{stat=\"{stat}\"}} ")),
                "{stat} missing:\n{text}"
            );
        }
        let resident = text
            .lines()
            .find_map(|l| l.strip_prefix("paver_allocator_bytes{stat=\"resident\"} "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        assert!(resident.is_some_and(|r| r > 0), "{text}");
    }
}
