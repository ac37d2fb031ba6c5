//! Prometheus metrics (`/metrics`), prefixed `paver_`.
//!
//! The dashboard (`charts/paver/files/grafana-dashboard.json`) and the
//! alerts (`charts/paver/files/prometheus-rules.yaml`) read these; the e2e
//! (`e2e/tests/observability.rs`) runs every query of both against a real
//! Prometheus scraping the operator.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use paver_crds::{
    Phase, RequestKey, ServiceRequestStatus, find_condition,
    vocab::conditions::{COMMITTED, POLICY_COMPLIANT, READY},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{MetricType, counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
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

/// Labels of a policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub outcome: String,
    pub team: String,
}

/// Labels of a failed Git operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GitFailureLabels {
    pub operation: String,
    pub error: String,
}

/// Labels of a service's Scorecard level.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    pub namespace: String,
    pub name: String,
    pub team: String,
    pub level: String,
}

/// Labels of a policy bundle.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BundleLabels {
    pub bundle: String,
}

/// Labels of a count of requests in one phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
    pub team: String,
}

/// Labels of a per-team figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamLabels {
    pub team: String,
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
    /// The process's resident set (VmRSS), read at each scrape.
    pub resident: Gauge,
    /// 1 while this replica holds the leader Lease (or runs without
    /// leader election), 0 otherwise. Set by `run`.
    pub leader: Gauge,
    /// ServiceRequest reconciles running now (at most `--concurrency`).
    pub reconciles_in_flight: Gauge,
    /// Changes handed to the Git writer and not answered yet.
    pub git_pending: Gauge,
    /// Git commits and deletions that failed since the last one that
    /// succeeded (see [`Metrics::git`]).
    pub git_consecutive_failures: Gauge,
    pub git_failures: Family<GitFailureLabels, Counter>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub levels: Family<LevelLabels, Gauge>,
    pub bundle_in_force: Family<BundleLabels, Gauge>,
    pub bundle_latest_failed: Family<BundleLabels, Gauge>,
    /// Each request's phase as its last reconcile wrote it: the
    /// `paver_requests*` gauges, counted at each scrape.
    pub requests: Arc<Requests>,
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
        let resident = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "The operator process's resident set size (VmRSS) at this scrape: the Rust heap \
             (paver_allocator_bytes) plus libgit2's and the TLS library's allocations, stacks and \
             code",
            resident.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease (or runs without leader election), 0 otherwise",
            leader.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "ServiceRequest reconciles running now (at most --concurrency; at the limit, more wait \
             in the controller's queue)",
            reconciles_in_flight.clone(),
        );
        let git_pending = Gauge::default();
        registry.register(
            "git_writer_pending",
            "Changes handed to the Git writer and not answered yet: waiting for a batch, or in \
             the batch being committed and pushed",
            git_pending.clone(),
        );
        let git_consecutive_failures = Gauge::default();
        registry.register(
            "git_consecutive_failures",
            "Git commits and deletions that failed since the last one that succeeded (0 once one \
             is pushed): above 0 while the output repository cannot be fetched or pushed",
            git_consecutive_failures.clone(),
        );
        let git_failures = Family::<GitFailureLabels, Counter>::default();
        registry.register(
            "git_failures",
            "Failed Git operations by what failed: fetch, push, rejected (the remote kept \
             refusing the push), credentials, open, change, git, writer",
            git_failures.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "policy_decisions",
            "Decisions on requests by outcome (allowed, denied, needs_approval, approval_rejected, \
             invalid, policy_unavailable, render_failed) and team; every reconcile decides, \
             resyncs included",
            decisions.clone(),
        );
        let levels = Family::<LevelLabels, Gauge>::default();
        registry.register(
            "scorecard_level",
            "1 for the level each service's Scorecard reports (none when not even the lowest passes)",
            levels.clone(),
        );
        let bundle_in_force = Family::<BundleLabels, Gauge>::default();
        registry.register(
            "policy_bundle_in_force",
            "1 while a good version of the bundle is in force (its latest or its last good one), \
             0 when none is: the requests it applies to wait, PolicyUnavailable",
            bundle_in_force.clone(),
        );
        let bundle_latest_failed = Family::<BundleLabels, Gauge>::default();
        registry.register(
            "policy_bundle_latest_failed",
            "1 when the bundle's latest generation was not activated (it did not compile, its \
             tests failed or it cannot be read), 0 when it is in force",
            bundle_latest_failed.clone(),
        );
        let requests = Arc::new(Requests::new(leader.clone()));
        registry.register_collector(Box::new(requests.clone()));
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
            resident,
            leader,
            reconciles_in_flight,
            git_pending,
            git_consecutive_failures,
            git_failures,
            decisions,
            levels,
            bundle_in_force,
            bundle_latest_failed,
            requests,
        }
    }
}

/// Holds a gauge one higher while it lives: what is in flight.
#[must_use]
pub struct InFlight(Gauge);

impl InFlight {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
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

    /// Counts one Git operation and its duration. A commit or deletion
    /// that failed adds one to `paver_git_consecutive_failures`; one that
    /// succeeded sets it back to 0.
    pub fn git(&self, operation: &str, outcome: &str, seconds: f64) {
        let labels = GitLabels {
            operation: operation.into(),
            outcome: outcome.into(),
        };
        self.git_operations.get_or_create(&labels).inc();
        self.git_duration.get_or_create(&labels).observe(seconds);
        if matches!(operation, "commit" | "delete") {
            if outcome == "failed" {
                self.git_consecutive_failures.inc();
            } else {
                self.git_consecutive_failures.set(0);
            }
        }
    }

    /// Counts one failed Git commit or deletion, its duration and what
    /// failed (`error`, [`crate::git::Error::label`]).
    pub fn git_failed(&self, operation: &str, error: &str, seconds: f64) {
        self.git(operation, "failed", seconds);
        self.git_failures
            .get_or_create(&GitFailureLabels {
                operation: operation.into(),
                error: error.into(),
            })
            .inc();
    }

    /// Counts one decision on a request of `team`.
    pub fn decided(&self, outcome: &str, team: &str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                outcome: outcome.into(),
                team: team.into(),
            })
            .inc();
    }

    /// What bundle `name` has in force after an activation attempt.
    pub fn bundle(&self, name: &str, in_force: bool, latest_failed: bool) {
        let labels = BundleLabels { bundle: name.into() };
        self.bundle_in_force
            .get_or_create(&labels)
            .set(i64::from(in_force));
        self.bundle_latest_failed
            .get_or_create(&labels)
            .set(i64::from(latest_failed));
    }

    /// Bundle `name` is gone.
    pub fn forget_bundle(&self, name: &str) {
        let labels = BundleLabels { bundle: name.into() };
        self.bundle_in_force.remove(&labels);
        self.bundle_latest_failed.remove(&labels);
    }

    /// A leadership term ended (the Lease was lost, or the process stops):
    /// what the leader reported of the objects it reconciled goes, so that
    /// a standby reports none of it (sums over replicas count each request
    /// once, and no alert stays on a replica that no longer leads). The
    /// next term reports them again as its watches list and its first
    /// reconciles run. Call after setting `leader` to 0.
    pub fn end_term(&self) {
        self.requests.clear();
        self.scores.clear();
        self.levels.clear();
        self.bundle_in_force.clear();
        self.bundle_latest_failed.clear();
        self.git_consecutive_failures.set(0);
    }

    /// The resident set of this process, from `/proc/self/status` (left as
    /// it was where that cannot be read).
    fn read_resident(&self) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(kib) = vm_rss_kib(&status) {
            self.resident.set(kib.saturating_mul(1024));
        }
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
        self.read_resident();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `VmRSS` of a `/proc/<pid>/status`, in KiB.
fn vm_rss_kib(status: &str) -> Option<i64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The phases, in the order of the lifecycle, as their label names them.
const PHASES: [(Phase, &str); 6] = [
    (Phase::Pending, "Pending"),
    (Phase::AwaitingApproval, "AwaitingApproval"),
    (Phase::Rejected, "Rejected"),
    (Phase::Failed, "Failed"),
    (Phase::Rendered, "Rendered"),
    (Phase::Synced, "Synced"),
];

fn phase_index(phase: Phase) -> usize {
    PHASES.iter().position(|(p, _)| *p == phase).unwrap_or(0)
}

/// Each request's phase, team and wait as its last reconcile wrote them
/// (a few dozen bytes a request), counted into gauges at each scrape:
///
/// - `paver_requests{phase,team}`: requests in each phase (every phase of
///   every team with a request, 0 included);
/// - `paver_requests_policy_unavailable{team}`: requests held because
///   policy could not decide (their PolicyCompliant condition says
///   PolicyUnavailable);
/// - `paver_requests_pending_since_timestamp_seconds{team}`: since when the
///   team's longest-waiting Pending request has waited to be committed
///   (absent while none waits). A request is Pending when it is valid but
///   not committed at its current generation: policy unavailable, or the
///   push failing. The alert on it says "stuck for more than 10 minutes"
///   as `time() - min(...) > 600`.
///
/// Right after a restart: every request is reconciled once at start, which
/// records it; a request's wait is read from its status (the conditions
/// that say why it waits, and since when), so it survives restarts. A
/// deleted request is forgotten when its reconcile finds it deleting or
/// gone. Only a leader reports them (a standby's table is cleared by
/// [`Metrics::end_term`], and not reported in any case): with two
/// replicas, sums over instances count each request once.
#[derive(Debug)]
pub struct Requests {
    table: Mutex<HashMap<RequestKey, RequestState>>,
    /// `paver_leader`.
    leader: Gauge,
}

#[derive(Debug)]
struct RequestState {
    team: Box<str>,
    phase: Phase,
    policy_unavailable: bool,
    /// Unix seconds; `Some` while Pending.
    pending_since: Option<i64>,
}

/// When a request whose status is Pending started waiting: the latest
/// transition among the conditions that say why (PolicyCompliant,
/// Committed and Ready, those not True). The latest, so that a request
/// that was rejected for a while before it got stuck counts from when it
/// got stuck.
fn waiting_since(status: &ServiceRequestStatus) -> Option<i64> {
    [POLICY_COMPLIANT, COMMITTED, READY]
        .iter()
        .filter_map(|t| find_condition(&status.conditions, t))
        .filter(|c| !c.is_true())
        .filter_map(|c| chrono::DateTime::parse_from_rfc3339(&c.last_transition_time).ok())
        .map(|t| t.timestamp())
        .max()
}

/// What the scrape reports of the requests.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    /// Team → requests per phase (in [`PHASES`] order).
    phases: BTreeMap<String, [i64; 6]>,
    /// Team → requests held for policy.
    policy_unavailable: BTreeMap<String, i64>,
    /// Team → the earliest `pending_since`.
    pending_since: BTreeMap<String, i64>,
}

impl Requests {
    fn new(leader: Gauge) -> Self {
        Requests {
            table: Mutex::default(),
            leader,
        }
    }

    /// Forgets every request (the leadership term ended).
    fn clear(&self) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        *table = HashMap::new();
    }

    /// Records the status the reconcile of request `key` (of `team`) wrote
    /// or found, at `now` (unix seconds).
    pub fn record(&self, key: &RequestKey, team: &str, status: &ServiceRequestStatus, now: i64) {
        let policy_unavailable = find_condition(&status.conditions, POLICY_COMPLIANT)
            .is_some_and(|c| c.reason == "PolicyUnavailable");
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let before = table.get(key).and_then(|s| s.pending_since);
        let pending_since = (status.phase == Phase::Pending)
            .then(|| before.unwrap_or_else(|| waiting_since(status).unwrap_or(now).min(now)));
        match table.get_mut(key) {
            Some(state) => {
                if *state.team != *team {
                    state.team = team.into();
                }
                state.phase = status.phase;
                state.policy_unavailable = policy_unavailable;
                state.pending_since = pending_since;
            }
            None => {
                table.insert(
                    key.clone(),
                    RequestState {
                        team: team.into(),
                        phase: status.phase,
                        policy_unavailable,
                        pending_since,
                    },
                );
            }
        }
    }

    /// The request is being deleted, or gone.
    pub fn forget(&self, key: &RequestKey) {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.remove(key);
    }

    fn counts(&self) -> Counts {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts = Counts::default();
        for state in table.values() {
            let team = &*state.team;
            if !counts.phases.contains_key(team) {
                counts.phases.insert(team.to_string(), [0; 6]);
                counts.policy_unavailable.insert(team.to_string(), 0);
            }
            if let Some(n) = counts.phases.get_mut(team) {
                n[phase_index(state.phase)] += 1;
            }
            if state.policy_unavailable
                && let Some(n) = counts.policy_unavailable.get_mut(team)
            {
                *n += 1;
            }
            if let Some(since) = state.pending_since {
                counts
                    .pending_since
                    .entry(team.to_string())
                    .and_modify(|s| *s = (*s).min(since))
                    .or_insert(since);
            }
        }
        counts
    }
}

/// Encodes `family` under `name` unless it is empty.
fn encode_gauges<L>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    family: &Family<L, Gauge>,
) -> std::fmt::Result
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
{
    if family.is_empty() {
        return Ok(());
    }
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    family.encode(metric)
}

impl Collector for Requests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if self.leader.get() == 0 {
            return Ok(());
        }
        let counts = self.counts();
        let phases = Family::<PhaseLabels, Gauge>::default();
        for (team, n) in &counts.phases {
            for ((_, phase), n) in PHASES.iter().zip(n) {
                phases
                    .get_or_create(&PhaseLabels {
                        phase: (*phase).into(),
                        team: team.clone(),
                    })
                    .set(*n);
            }
        }
        let per_team = |map: &BTreeMap<String, i64>| {
            let family = Family::<TeamLabels, Gauge>::default();
            for (team, v) in map {
                family.get_or_create(&TeamLabels { team: team.clone() }).set(*v);
            }
            family
        };
        encode_gauges(
            &mut encoder,
            "requests",
            "ServiceRequests by phase and team, as their last reconcile wrote them",
            &phases,
        )?;
        encode_gauges(
            &mut encoder,
            "requests_policy_unavailable",
            "Requests held because policy could not decide (PolicyCompliant is \
             PolicyUnavailable: a bundle with no good version, or an evaluation error), by team",
            &per_team(&counts.policy_unavailable),
        )?;
        encode_gauges(
            &mut encoder,
            "requests_pending_since_timestamp_seconds",
            "Unix time since which the team's longest-waiting Pending request (valid, not \
             committed at its current generation: policy unavailable or the push failing) has \
             waited; absent while none waits",
            &per_team(&counts.pending_since),
        )
    }
}

#[cfg(test)]
mod tests {
    use paver_crds::Condition;

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

    fn condition(type_: &str, status: &str, reason: &str, at: &str) -> Condition {
        Condition {
            status: status.into(),
            last_transition_time: at.into(),
            ..Condition::new(type_, false, reason, "")
        }
    }

    fn status(phase: Phase, conditions: Vec<Condition>) -> ServiceRequestStatus {
        ServiceRequestStatus {
            phase,
            conditions,
            ..Default::default()
        }
    }

    /// The sample lines of `name` (with labels) in `text`.
    fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    }

    const T0: &str = "2026-12-01T10:00:00Z";
    const T0_UNIX: i64 = 1_796_119_200;

    #[test]
    fn requests_are_counted_by_phase_and_team_and_forgotten() {
        let m = Metrics::default();
        m.leader.set(1);
        assert!(
            samples(&m.encode(), "paver_requests").is_empty(),
            "nothing before a reconcile"
        );
        let (a, b, c) = (
            RequestKey::new("shop", "a"),
            RequestKey::new("shop", "b"),
            RequestKey::new("pay", "c"),
        );
        let rendered = status(Phase::Rendered, vec![]);
        m.requests.record(&a, "shop", &rendered, T0_UNIX);
        m.requests.record(&b, "shop", &rendered, T0_UNIX);
        m.requests
            .record(&c, "pay", &status(Phase::Rejected, vec![]), T0_UNIX);
        let text = m.encode();
        let lines = samples(&text, "paver_requests");
        assert!(
            lines.contains(&"paver_requests{phase=\"Rendered\",team=\"shop\"} 2"),
            "{text}"
        );
        assert!(
            lines.contains(&"paver_requests{phase=\"Pending\",team=\"shop\"} 0"),
            "every phase of a team, 0 included: {text}"
        );
        assert!(lines.contains(&"paver_requests{phase=\"Rejected\",team=\"pay\"} 1"));
        assert_eq!(lines.len(), 12, "6 phases for each of 2 teams: {lines:?}");
        assert!(
            samples(&text, "paver_requests_policy_unavailable")
                .contains(&"paver_requests_policy_unavailable{team=\"shop\"} 0")
        );
        assert!(samples(&text, "paver_requests_pending_since_timestamp_seconds").is_empty());

        // A request changing phase moves; one changing team moves too; a
        // deleted one goes, and a team with no request left goes with it.
        m.requests
            .record(&b, "shop", &status(Phase::Synced, vec![]), T0_UNIX);
        m.requests
            .record(&c, "shop", &status(Phase::Rendered, vec![]), T0_UNIX);
        let text = m.encode();
        let lines = samples(&text, "paver_requests");
        assert!(lines.contains(&"paver_requests{phase=\"Rendered\",team=\"shop\"} 2"));
        assert!(lines.contains(&"paver_requests{phase=\"Synced\",team=\"shop\"} 1"));
        assert!(!text.contains("team=\"pay\""), "{text}");
        for k in [&a, &b, &c] {
            m.requests.forget(k);
        }
        assert!(samples(&m.encode(), "paver_requests").is_empty());
    }

    #[test]
    fn a_standby_reports_nothing_of_the_last_term() {
        let m = Metrics::default();
        m.leader.set(1);
        let key = RequestKey::new("shop", "a");
        m.requests
            .record(&key, "shop", &status(Phase::Pending, vec![]), T0_UNIX);
        m.scores
            .get_or_create(&ServiceLabels {
                namespace: "shop".into(),
                name: "a".into(),
                team: "shop".into(),
            })
            .set(80);
        m.bundle("security", true, false);
        m.git_failed("commit", "fetch", 0.1);
        assert!(!samples(&m.encode(), "paver_requests").is_empty());
        // Not leading: the table is not reported even before it is cleared.
        m.leader.set(0);
        assert!(samples(&m.encode(), "paver_requests").is_empty());
        m.end_term();
        m.leader.set(1);
        let text = m.encode();
        for name in [
            "paver_requests",
            "paver_requests_pending_since_timestamp_seconds",
            "paver_scorecard_score",
            "paver_policy_bundle_in_force",
        ] {
            assert!(samples(&text, name).is_empty(), "{name} left:\n{text}");
        }
        assert!(text.contains("paver_git_consecutive_failures 0"), "{text}");
    }

    #[test]
    fn a_pending_request_waits_from_when_its_status_says() {
        let m = Metrics::default();
        m.leader.set(1);
        let key = RequestKey::new("shop", "stuck");
        // Rejected at T0, then fixed; its push fails from T0 + 5 min: it
        // waits from then (Committed's transition), not from T0 (Ready's).
        let failing = status(
            Phase::Pending,
            vec![
                condition(POLICY_COMPLIANT, "True", "Compliant", T0),
                condition(COMMITTED, "False", "PushFailed", "2026-12-01T10:05:00Z"),
                condition(READY, "False", "NotReady", T0),
            ],
        );
        m.requests.record(&key, "shop", &failing, T0_UNIX + 3600);
        let since = T0_UNIX + 300;
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "paver_requests_pending_since_timestamp_seconds{{team=\"shop\"}} {since}"
            )),
            "{text}"
        );
        // Still Pending, now for policy: the wait goes on from the start,
        // and the request counts as held for policy.
        let held = status(
            Phase::Pending,
            vec![
                condition(
                    POLICY_COMPLIANT,
                    "Unknown",
                    "PolicyUnavailable",
                    "2026-12-01T11:00:00Z",
                ),
                condition(COMMITTED, "False", "PushFailed", "2026-12-01T10:05:00Z"),
            ],
        );
        m.requests.record(&key, "shop", &held, T0_UNIX + 3700);
        let text = m.encode();
        assert!(text.contains(&format!(
            "paver_requests_pending_since_timestamp_seconds{{team=\"shop\"}} {since}"
        )));
        assert!(text.contains("paver_requests_policy_unavailable{team=\"shop\"} 1"));
        // The oldest wait of a team is its earliest.
        let other = RequestKey::new("shop", "newer");
        m.requests
            .record(&other, "shop", &status(Phase::Pending, vec![]), T0_UNIX + 4000);
        assert!(m.encode().contains(&format!(
            "paver_requests_pending_since_timestamp_seconds{{team=\"shop\"}} {since}"
        )));
        // Committed: no longer waiting; Pending again later starts anew.
        m.requests
            .record(&key, "shop", &status(Phase::Rendered, vec![]), T0_UNIX + 4100);
        m.requests.forget(&other);
        assert!(samples(&m.encode(), "paver_requests_pending_since_timestamp_seconds").is_empty());
        m.requests
            .record(&key, "shop", &status(Phase::Pending, vec![]), T0_UNIX + 5000);
        assert!(m.encode().contains(&format!(
            "paver_requests_pending_since_timestamp_seconds{{team=\"shop\"}} {}",
            T0_UNIX + 5000
        )));
        // A transition time in the future (clock skew) counts as now.
        let skewed = RequestKey::new("shop", "skewed");
        m.requests.forget(&key);
        let ahead = status(
            Phase::Pending,
            vec![condition(
                COMMITTED,
                "False",
                "PushFailed",
                "2027-01-01T00:00:00Z",
            )],
        );
        m.requests.record(&skewed, "shop", &ahead, T0_UNIX);
        assert!(m.encode().contains(&format!(
            "paver_requests_pending_since_timestamp_seconds{{team=\"shop\"}} {T0_UNIX}"
        )));
    }

    #[test]
    fn consecutive_git_failures_reset_on_success() {
        let m = Metrics::default();
        m.git_failed("commit", "fetch", 0.1);
        m.git_failed("delete", "push", 0.1);
        m.git("push", "committed", 0.1);
        assert_eq!(m.git_consecutive_failures.get(), 2, "a push alone resets nothing");
        let text = m.encode();
        assert!(
            text.contains("paver_git_failures_total{operation=\"commit\",error=\"fetch\"} 1"),
            "{text}"
        );
        assert!(text.contains("paver_git_operations_total{operation=\"commit\",outcome=\"failed\"} 1"));
        assert!(text.contains("paver_git_consecutive_failures 2"));
        m.git("commit", "unchanged", 0.1);
        assert_eq!(m.git_consecutive_failures.get(), 0);
    }

    #[test]
    fn gauges_in_flight_leader_bundles_and_levels() {
        let m = Metrics::default();
        let text = m.encode();
        for name in [
            "paver_leader 0",
            "paver_reconciles_in_flight 0",
            "paver_git_writer_pending 0",
            "paver_git_consecutive_failures 0",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        m.leader.set(1);
        {
            let _a = InFlight::new(&m.reconciles_in_flight);
            let _b = InFlight::new(&m.reconciles_in_flight);
            assert_eq!(m.reconciles_in_flight.get(), 2);
        }
        assert_eq!(m.reconciles_in_flight.get(), 0);
        m.bundle("security", true, true);
        m.decided("denied", "shop");
        let text = m.encode();
        assert!(text.contains("paver_leader 1"));
        assert!(text.contains("paver_policy_bundle_in_force{bundle=\"security\"} 1"));
        assert!(text.contains("paver_policy_bundle_latest_failed{bundle=\"security\"} 1"));
        assert!(text.contains("paver_policy_decisions_total{outcome=\"denied\",team=\"shop\"} 1"));
        m.forget_bundle("security");
        assert!(!m.encode().contains("bundle=\"security\""));
    }

    #[test]
    fn resident_memory_is_read_from_proc() {
        assert_eq!(
            vm_rss_kib("Name:\tpaver\nVmHWM:\t  9000 kB\nVmRSS:\t   71234 kB\n"),
            Some(71234)
        );
        assert_eq!(vm_rss_kib("Name:\tpaver\n"), None);
        if std::path::Path::new("/proc/self/status").exists() {
            let m = Metrics::default();
            m.encode();
            assert!(m.resident.get() > 1024 * 1024, "{}", m.resident.get());
        }
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
