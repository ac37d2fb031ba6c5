//! `PaveRoute`: a versioned golden template.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{LabelSelector, optional_free_form_object},
    condition::{Condition, conditions_schema},
};

/// A versioned golden template that ServiceRequests name in `spec.route`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "PaveRoute",
    shortname = "route",
    category = "paver",
    status = "PaveRouteStatus",
    printcolumn = r#"{"name":"VERSION","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"ACTIVE","type":"string","jsonPath":".status.activeVersion"}"#,
    printcolumn = r#"{"name":"REQUESTS","type":"string","jsonPath":".status.requests"}"#,
    printcolumn = r#"{"name":"ROLLOUT","type":"string","jsonPath":".status.rollout.summary"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"LIFECYCLE","type":"string","jsonPath":".spec.lifecycle"}"#,
    printcolumn = r#"{"name":"OWNER","type":"string","jsonPath":".spec.owner"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PaveRouteSpec {
    /// Semantic version of this route (e.g. `1.4.0`); requests may pin a range with `routeVersion`.
    pub version: String,
    /// What the route builds, for the developer choosing one.
    #[serde(default)]
    pub description: String,
    /// Team or person that owns the route.
    #[serde(default)]
    pub owner: String,
    /// `active`, `deprecated` (requests get a warning) or `retired` (no new requests).
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// JSON Schema for the request's `spec.parameters`; its defaults are applied before policy and render.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form_object")]
    pub parameters: Option<serde_json::Value>,
    /// Files to render: paths and contents are minijinja templates.
    #[serde(default)]
    pub templates: RouteTemplates,
    /// Where and how rendered output is written.
    #[serde(default)]
    pub output: RouteOutput,
    /// PolicyBundles that apply to every request on this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_bundles: Vec<String>,
    /// How the monthly cost estimate is computed from the parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostModel>,
    /// Scorecard level definitions; bronze, silver and gold by check level when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scorecard: Option<ScorecardLevels>,
    /// How a new version reaches the requests that do not pin an older one:
    /// in steps, each gated on its requests reaching Synced/Healthy in Argo
    /// CD. Without it, every such request moves at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutPolicy>,
}

/// Steps that move a new version to the requests on the route.
///
/// A step names a share of the requests (`percent`, by a stable hash of
/// namespace/name, so a share only grows) and/or a label selector; the
/// requests a step moves are those it names that no earlier step did. A
/// step whose requests all reach Synced/Healthy at the new version within
/// `healthDeadline` is done, and the next starts after its `pause`. A
/// request of the step that goes Degraded, or a step past its deadline,
/// halts the rollout and returns that step's requests to the version before.
///
/// The annotation `paver.dev/rollout` on the PaveRoute steers it: `pause`,
/// `resume` (also retries a halted step), `abort` (every request back to
/// the version before).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    /// The steps, in order; the last should reach 100 percent (a rollout
    /// whose steps end below it leaves the rest on the version before).
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<RolloutStep>,
    /// How long a step's requests have to reach Synced/Healthy, e.g. `5m`.
    #[serde(default = "default_health_deadline")]
    pub health_deadline: String,
}

fn default_health_deadline() -> String {
    "10m".into()
}

/// One step of a rollout.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStep {
    /// Share of the route's requests moved by the end of this step (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<u8>,
    /// Requests whose labels match are moved in this step too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// How long to wait after the step is healthy before the next, e.g. `30s`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pause: String,
}

/// Lifecycle stage of a route.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Lifecycle {
    /// Accepts new requests.
    #[default]
    Active,
    /// Accepts requests with a warning to move on.
    Deprecated,
    /// Accepts no new requests.
    Retired,
}

/// The route's template files.
///
/// Inline only: a route folder in Git (`route.yaml` + `templates/`) becomes
/// inline templates with `paver pack`, so the route object, and each
/// revision of it, holds every byte it renders with and needs no fetch.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTemplates {
    /// Templates given inline in the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inline: Vec<TemplateFile>,
}

/// One template file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFile {
    /// Output path relative to the request's directory; a minijinja template itself.
    pub path: String,
    /// File contents; a minijinja template.
    pub content: String,
    /// Optional minijinja expression; the file is rendered only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// Where the route writes its output.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteOutput {
    /// Directory pattern inside the output repository; defaults to `{{ team }}/{{ namespace }}/{{ name }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The Argo CD Application rendered beside the files; none is rendered when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationTemplate>,
}

/// The Argo CD Application Paver renders for each request on the route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTemplate {
    /// Argo CD project. Empty (the shipped routes): the team's own
    /// AppProject, `paver-<team>`, which the operator keeps limited to the
    /// team's namespaces and the output repository. Any other value is used
    /// as it is (a project the platform manages itself).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// Namespace the Application object lives in; `argocd` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Cluster and namespace Argo CD deploys to.
    #[serde(default)]
    pub destination: ApplicationDestination,
    /// Argo CD sync policy.
    #[serde(default)]
    pub sync_policy: SyncPolicy,
}

/// Argo CD destination.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDestination {
    /// Cluster API server URL; `https://kubernetes.default.svc` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server: String,
    /// Target namespace (a template); the request's namespace when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Argo CD sync policy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncPolicy {
    /// Sync automatically when the repository changes.
    #[serde(default)]
    pub automated: bool,
    /// Delete cluster objects that are no longer in the repository.
    #[serde(default)]
    pub prune: bool,
    /// Revert changes made in the cluster by hand.
    #[serde(default)]
    pub self_heal: bool,
    /// Argo CD sync options, e.g. `CreateNamespace=true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_options: Vec<String>,
}

/// A price table: the monthly estimate is the sum of its items.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostModel {
    /// ISO currency code of the prices; `USD` when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub currency: String,
    /// Priced items.
    #[serde(default)]
    pub items: Vec<CostItem>,
}

/// One line of the price table.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostItem {
    /// Name of the item, e.g. `compute` or `database`.
    pub name: String,
    /// Minijinja expression over `parameters` and `environment` giving the quantity (e.g. `parameters.compute.replicas * parameters.compute.cpu`).
    pub quantity: String,
    /// Monthly price of one unit.
    pub unit_price: f64,
    /// Optional minijinja expression; the item counts only when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// Scorecard level definitions.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScorecardLevels {
    /// Levels from lowest to highest.
    pub levels: Vec<LevelDefinition>,
}

/// One scorecard level.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LevelDefinition {
    /// Level name, e.g. `bronze`.
    pub name: String,
    /// Check ids this level requires; when empty, every check whose `level` is this name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
}

/// Observed state of a PaveRoute.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaveRouteStatus {
    /// Conditions: `Ready` when the route's schema and templates load.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The metadata.generation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version in force: the latest that compiled (an update that does
    /// not compile leaves the one before in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    /// The PaveRouteRevision holding the version in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Every version requests can be on, highest first: the head and the
    /// older versions kept as revisions, with how many requests' committed
    /// renders are on each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<RouteVersionStatus>,
    /// Requests per version, for `kubectl get paveroutes` (e.g. `2.0.0=15 1.0.0=5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// The rollout of the latest version, under `spec.rollout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// Where a rollout stands.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The version requests are moved from (the last one fully rolled out).
    pub from: String,
    /// The version being rolled out.
    pub to: String,
    /// The step in progress (0-based); equal to the number of steps once complete.
    pub step: u32,
    /// `Progressing`, `Paused`, `Halted`, `Aborted` or `Complete`.
    pub state: RolloutState,
    /// When the current step started (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_started_at: String,
    /// When the current step's requests were all healthy (its pause runs from then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_healthy_at: String,
    /// Why it halted, or what it waits for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The preview of `to` against the requests on the route, written before
    /// the first step: `N changed, N unchanged, N would fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewSummary>,
    /// For `kubectl get paveroutes`, e.g. `1.0.0->2.0.0 step 2/3 Progressing`.
    #[serde(default)]
    pub summary: String,
}

/// The state of a rollout.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum RolloutState {
    /// A step is open, waiting for its requests to be healthy.
    #[default]
    Progressing,
    /// Paused by the annotation: the open steps stay open, no new one opens.
    Paused,
    /// A step's request went Degraded or missed the deadline: that step's
    /// requests are back at `from`.
    Halted,
    /// Aborted by the annotation: every request is back at `from`.
    Aborted,
    /// Every step healthy: the route's requests are on `to`.
    Complete,
}

/// The counts of a route version's preview.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSummary {
    /// Requests on the route.
    pub requests: u32,
    /// Requests whose rendered files the version changes.
    pub changed: u32,
    /// Requests it leaves byte for byte (pinned to an older version, or untouched).
    pub unchanged: u32,
    /// Requests that render today and would not with it.
    pub would_fail: u32,
    /// The requests that would fail, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
}

impl PaveRouteStatus {
    /// The status without what the route census writes (`versions`,
    /// `requests`, `rollout`), which has a field manager of its own.
    pub fn without_census(&self) -> PaveRouteStatus {
        PaveRouteStatus {
            versions: Vec::new(),
            requests: None,
            rollout: None,
            ..self.clone()
        }
    }
}

/// One version of a route that requests can be on.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteVersionStatus {
    /// The semver version.
    pub version: String,
    /// The PaveRouteRevision holding it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revision: String,
    /// Requests whose committed render is on this version.
    pub requests: u32,
}
