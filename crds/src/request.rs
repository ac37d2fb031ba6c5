//! `ServiceRequest`: a developer's request for a service on a route.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::free_form_object,
    condition::{Condition, conditions_schema},
};

/// A developer's request for a service built from a PaveRoute.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "ServiceRequest",
    namespaced,
    shortname = "sr",
    category = "paver",
    status = "ServiceRequestStatus",
    printcolumn = r#"{"name":"ROUTE","type":"string","jsonPath":".spec.route"}"#,
    printcolumn = r#"{"name":"TEAM","type":"string","jsonPath":".spec.team"}"#,
    printcolumn = r#"{"name":"PHASE","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"REVISION","type":"string","jsonPath":".status.render.shortRevision"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequestSpec {
    /// Name of the PaveRoute to build from.
    pub route: String,
    /// Semver range the route's version must satisfy (e.g. `^1.2`); any version when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_version: Option<String>,
    /// Team that owns the service; the first segment of the output path.
    pub team: String,
    /// Person or group accountable for the service (e.g. an email).
    pub owner: String,
    /// Cost center the service's spend is charged to.
    #[serde(default)]
    pub cost_center: String,
    /// `development`, `staging` or `production`.
    pub environment: Environment,
    /// Route parameters, validated against the route's JSON Schema.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "free_form_object")]
    pub parameters: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Deployment environment of a request.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Environment {
    /// For developers' own use.
    #[default]
    Development,
    /// Pre-production.
    Staging,
    /// Serves real users.
    Production,
}

impl Environment {
    /// The name as written in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Not yet processed, or waiting on something (a route, a bundle).
    #[default]
    Pending,
    /// Invalid or denied by policy; see conditions and violations.
    Rejected,
    /// Allowed by policy, waiting for an Approval of the current generation.
    AwaitingApproval,
    /// Rendered and committed to the output repository.
    Rendered,
    /// Argo CD synced the committed revision.
    Synced,
    /// Could not be rendered or committed; see conditions.
    Failed,
}

/// Observed state of a ServiceRequest.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRequestStatus {
    /// Pending, Rejected, AwaitingApproval, Rendered, Synced or Failed.
    #[serde(default)]
    pub phase: Phase,
    /// Conditions Validated, PolicyCompliant, Approved, Rendered, Committed, Synced and Ready.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Policy violations that block the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Finding>,
    /// Policy warnings (including deny results of bundles in warn mode, and
    /// of enforce bundles before their enforceAfter: "becomes a violation on ...").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Finding>,
    /// Findings of bundles in dryrun mode: reported, never blocking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dryrun: Vec<Finding>,
    /// Findings an exception waives, each naming the exception and its expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<Finding>,
    /// Why policy asks for an approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval_reasons: Vec<String>,
    /// Monthly cost estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateStatus>,
    /// What was rendered and committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub render: Option<RenderStatus>,
    /// What Argo CD reports for the request's Application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One policy result naming its bundle and rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Bundle that produced it.
    pub bundle: String,
    /// Rule id.
    pub rule: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Severity given by the rule (e.g. `high`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Path of the offending field (e.g. `parameters.database.encrypted`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Monthly cost estimate.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EstimateStatus {
    /// Total per month.
    pub monthly: f64,
    /// ISO currency code.
    pub currency: String,
}

/// What Paver rendered and committed for the request.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenderStatus {
    /// Commit SHA in the output repository.
    pub revision: String,
    /// First 8 characters of the revision, for `kubectl get`.
    pub short_revision: String,
    /// Directory of the request's files in the output repository.
    pub path: String,
    /// Version of the route used.
    pub route_version: String,
    /// The PaveRouteRevision holding that version (immutable: the exact
    /// templates this render came from).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_revision: String,
    /// Bundles evaluated, as `name@version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundle_versions: Vec<String>,
    /// Number of files rendered.
    pub files: u32,
    /// Content hash of the rendered files, to tell whether a render changed.
    #[serde(default)]
    pub digest: String,
    /// The metadata.generation that was rendered.
    #[serde(default)]
    pub generation: i64,
}

/// Argo CD's view of the request's Application.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// Name of the Argo CD Application (namespace/name).
    pub application: String,
    /// `Synced`, `OutOfSync` or `Unknown`.
    pub status: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing`, `Suspended` or `Unknown`.
    pub health: String,
    /// The request's revision (`render.revision`) once the commit Argo CD synced
    /// contains it (Argo CD syncs the branch head), else the commit Argo CD synced.
    #[serde(default)]
    pub revision: String,
    /// Argo CD's last operation or health message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
