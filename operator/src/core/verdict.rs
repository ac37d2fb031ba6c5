//! The one decision both shells print: a request walked through validate,
//! estimate, policy, approval and render against a [`Catalog`].

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use paver_crds::{Approval, Decision, PaveRoute, PolicyBundle, ServiceRequest};
use serde::Serialize;
use serde_json::Value;

use super::{
    FieldError,
    estimate::{Estimate, estimate},
    policy::{Activation, BundleSet, PolicyInput, PolicyOutcome, RuleSet},
    render::{RenderOptions, Rendered, render},
    validate::{CompiledRoute, select_route, validate_request},
};

/// Routes and bundles in force: what a request is judged against.
#[derive(Default)]
pub struct Catalog {
    routes: BTreeMap<String, Arc<CompiledRoute>>,
    route_errors: BTreeMap<String, Vec<FieldError>>,
    pub bundles: BundleSet,
}

/// Why a request cannot go ahead, or that it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// The request or its route is unusable (schema errors, unknown route, ...).
    Invalid,
    /// A bundle the route needs has no good version.
    PolicyUnavailable,
    /// Policy denies it.
    Denied,
    /// Allowed, but policy asks for an approval of this generation.
    NeedsApproval,
    /// An approver rejected this generation.
    ApprovalRejected,
    /// Allowed (and approved where needed).
    Allowed,
}

impl Outcome {
    /// The CLI's exit status: 0 allowed, 1 denied, 2 unusable input.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Allowed | Outcome::NeedsApproval => 0,
            Outcome::Denied | Outcome::ApprovalRejected => 1,
            Outcome::Invalid | Outcome::PolicyUnavailable => 2,
        }
    }
}

/// The approval that let a request through, or rejected it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApprovalRef {
    pub name: String,
    pub approver: String,
    pub reason: String,
    pub generation: i64,
}

/// Everything decided about one request.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `namespace/name`.
    pub request: String,
    pub outcome: Outcome,
    /// Input errors, each naming its field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Notes that do not block (e.g. the route is deprecated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// `name@version` of the route used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip)]
    pub route_version: Option<String>,
    /// Parameters with the route's defaults applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    pub policy: PolicyOutcome,
    /// Bundles the route names that have no good version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_bundles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    #[serde(skip)]
    pub rendered: Option<Rendered>,
    /// Render error, when rendering failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_error: Option<String>,
}
