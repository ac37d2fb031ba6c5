//! `Scorecard`: production-readiness of one service, derived, never self-attested.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The scorecard of one ServiceRequest (same name, owned by it): checks
/// derived from the request, its rendered output, the Git history and the cluster.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "Scorecard",
    namespaced,
    shortname = "sc",
    category = "paver",
    status = "ScorecardStatus",
    printcolumn = r#"{"name":"TEAM","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"ROUTE","type":"string","jsonPath":".spec.route"}"#,
    printcolumn = r#"{"name":"SCORE","type":"integer","jsonPath":".status.score"}"#,
    printcolumn = r#"{"name":"LEVEL","type":"string","jsonPath":".status.level"}"#,
    printcolumn = r#"{"name":"PASSED","type":"integer","jsonPath":".status.passed"}"#,
    printcolumn = r#"{"name":"FAILED","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScorecardSpec {
    /// The ServiceRequest scored (same namespace and name).
    pub request: String,
    /// Team that owns the service.
    pub team: String,
    /// Route the service was built from.
    pub route: String,
}

/// Result of a scoring.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScorecardStatus {
    /// Share of checks passed, 0–100.
    pub score: u32,
    /// `none`, `bronze`, `silver` or `gold`: the highest level whose checks, and all lower levels' checks, pass.
    pub level: String,
    /// Checks passed.
    pub passed: u32,
    /// Checks failed.
    pub failed: u32,
    /// Every check.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// When the checks were evaluated (RFC 3339).
    #[serde(default)]
    pub evaluated_at: String,
}

/// One scorecard check.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Check id (e.g. `probes-configured`).
    pub id: String,
    /// Category, e.g. `security`, `reliability`, `cost`, `slo`, `ownership`, `cluster`.
    pub category: String,
    /// Level the check belongs to: `bronze`, `silver` or `gold`.
    pub level: String,
    /// Whether it passed.
    pub pass: bool,
    /// What was found.
    pub message: String,
    /// Where it came from: `bundle/<name>` or `paver` for built-in checks.
    pub source: String,
}
