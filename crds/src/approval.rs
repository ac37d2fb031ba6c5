//! `Approval`: a person's decision on one generation of a request.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A decision on one generation of a ServiceRequest that policy marked as
/// needing approval. Approving generation 3 does not approve generation 4.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "Approval",
    namespaced,
    category = "paver",
    printcolumn = r#"{"name":"REQUEST","type":"string","jsonPath":".spec.request"}"#,
    printcolumn = r#"{"name":"GENERATION","type":"integer","jsonPath":".spec.generation"}"#,
    printcolumn = r#"{"name":"DECISION","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"APPROVER","type":"string","jsonPath":".spec.approver"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// Name of the ServiceRequest, in the Approval's namespace.
    pub request: String,
    /// The request's metadata.generation this decision is for.
    pub generation: i64,
    /// Who decided; the admission policy requires it to be the creating user.
    pub approver: String,
    /// Why.
    pub reason: String,
    /// `approve` or `reject`.
    #[serde(default)]
    pub decision: Decision,
}

/// An approver's decision.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// The generation may be rendered.
    #[default]
    Approve,
    /// The generation is rejected.
    Reject,
}
