//! Paver's custom resources (`paver.dev/v1alpha1`) and the CRD YAML
//! generated from them. Both the operator and the end-to-end tests use
//! these types; `crds/*.yaml` is generated from them and checked by a test.

pub mod approval;
pub mod bundle;
pub mod common;
pub mod condition;
pub mod request;
pub mod revision;
pub mod route;
pub mod scorecard;
pub mod vocab;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use approval::{Approval, ApprovalSpec, Decision};
pub use bundle::{
    BundleError, BundleMatch, PolicyBundle, PolicyBundleSpec, PolicyBundleStatus, PolicyException,
    PolicyMode, RegoModule, TestResult,
};
pub use common::{LabelSelector, LabelSelectorRequirement};
pub use condition::{
    Condition, MAX_CONDITION_MESSAGE_BYTES, find_condition, now_rfc3339, set_condition, truncate_message,
};
pub use request::{
    Environment, EstimateStatus, Finding, Phase, RenderStatus, ServiceRequest, ServiceRequestSpec,
    ServiceRequestStatus, SyncStatus,
};
pub use revision::{
    PaveRouteRevision, PaveRouteRevisionSpec, PolicyBundleRevision, PolicyBundleRevisionSpec,
};
pub use route::{
    ApplicationDestination, ApplicationTemplate, CostItem, CostModel, LevelDefinition, Lifecycle, PaveRoute,
    PaveRouteSpec, PaveRouteStatus, PreviewSummary, RolloutPolicy, RolloutState, RolloutStatus, RolloutStep,
    RouteOutput, RouteTemplates, RouteVersionStatus, ScorecardLevels, SyncPolicy, TemplateFile,
};
pub use scorecard::{CheckResult, Scorecard, ScorecardSpec, ScorecardStatus};
pub use vocab::{
    API_VERSION, CENSUS_FIELD_MANAGER, FIELD_MANAGER, FINALIZER, ROLLOUT_ANNOTATION, ROLLOUT_FIELD_MANAGER,
    RequestKey,
};

/// The API group of every Paver resource.
pub const GROUP: &str = "paver.dev";

/// Every CRD with the file name it is written to under `crds/`.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("paveroutes.yaml", PaveRoute::crd()),
        ("policybundles.yaml", PolicyBundle::crd()),
        ("servicerequests.yaml", ServiceRequest::crd()),
        ("approvals.yaml", Approval::crd()),
        ("scorecards.yaml", scorecard_crd()),
        ("paverouterevisions.yaml", PaveRouteRevision::crd()),
        ("policybundlerevisions.yaml", PolicyBundleRevision::crd()),
    ]
    .into_iter()
    .map(|(file, crd)| (file, kubernetes_formats(crd)))
    .collect()
}

/// schemars names Rust's unsigned integers `format: uint32`, which the API
/// server does not know (every `kubectl apply` then warns). They become
/// `int64` with `minimum: 0`, which says the same in formats it knows.
fn kubernetes_formats(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let unsigned = map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| f.starts_with("uint"));
                if unsigned {
                    map.insert("format".into(), "int64".into());
                    map.entry("minimum").or_insert(0.into());
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    // Round-tripping our own generated CRD through JSON cannot fail.
    let mut value = serde_json::to_value(&crd).expect("CRD serializes");
    walk(&mut value);
    serde_json::from_value(value).expect("CRD deserializes")
}

/// The Scorecard CRD has no status subresource: the operator is its only
/// writer, and one server-side apply then writes spec and status together
/// (one API write per scoring instead of two). Users get read-only RBAC.
fn scorecard_crd() -> CustomResourceDefinition {
    let mut crd = Scorecard::crd();
    for version in &mut crd.spec.versions {
        version.subresources = None;
    }
    crd
}

/// One CRD as the YAML written to `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    // Serializing a CRD built from our own types cannot fail.
    serde_yaml::to_string(crd).unwrap_or_else(|e| format!("# failed to serialize CRD: {e}\n"))
}

/// All CRDs as one YAML stream, as `paver crds` prints it.
pub fn stream() -> String {
    all()
        .iter()
        .map(|(_, crd)| format!("---\n{}", to_yaml(crd)))
        .collect()
}
