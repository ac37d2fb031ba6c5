//! `PaveRouteRevision` and `PolicyBundleRevision`: the versions of a route
//! or bundle that were good, kept as their own objects (Crossplane's
//! CompositionRevision pattern).
//!
//! Paver writes one when a route compiles or a bundle activates, named
//! `<owner>-<first 10 hex digits of the spec's hash>` and owned by the
//! route or bundle (deleted with it). The owner's `status.activeRevision`
//! names the one in force. A restarted operator, or a second replica,
//! that finds the latest spec broken puts that revision in force instead,
//! so a broken update never takes a route or bundle out of service.
//!
//! A revision's `route`/`bundle` and `hash` cannot change (CEL); its
//! `spec` is checked against `hash` before it is used, so an edited
//! revision is refused rather than enforced. Only the operator writes them
//! (manifests/rbac.yaml).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{bundle::PolicyBundleSpec, route::PaveRouteSpec};

/// A good version of a PaveRoute, kept so it stays in force when a later
/// version is broken.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "PaveRouteRevision",
    shortname = "routerev",
    category = "paver",
    printcolumn = r#"{"name":"ROUTE","type":"string","jsonPath":".spec.route"}"#,
    printcolumn = r#"{"name":"VERSION","type":"string","jsonPath":".spec.spec.version"}"#,
    printcolumn = r#"{"name":"GENERATION","type":"integer","jsonPath":".spec.generation"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PaveRouteRevisionSpec {
    /// The PaveRoute this is a version of (cannot change).
    #[schemars(length(max = 253), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a revision's route cannot change"}]))]
    pub route: String,
    /// The route's `metadata.generation` when this content last went into force.
    pub generation: i64,
    /// SHA-256 of the canonical JSON of `spec` (hex; cannot change).
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a revision's hash cannot change"}]))]
    pub hash: String,
    /// The route's spec as it was put in force.
    pub spec: PaveRouteSpec,
}

/// A good version of a PolicyBundle (compiled, tests passed), kept so it
/// stays in force when a later version is broken.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "PolicyBundleRevision",
    shortname = "pbrev",
    category = "paver",
    printcolumn = r#"{"name":"BUNDLE","type":"string","jsonPath":".spec.bundle"}"#,
    printcolumn = r#"{"name":"VERSION","type":"string","jsonPath":".spec.spec.version"}"#,
    printcolumn = r#"{"name":"GENERATION","type":"integer","jsonPath":".spec.generation"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBundleRevisionSpec {
    /// The PolicyBundle this is a version of (cannot change).
    #[schemars(length(max = 253), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a revision's bundle cannot change"}]))]
    pub bundle: String,
    /// The bundle's `metadata.generation` when this content last went into force.
    pub generation: i64,
    /// SHA-256 of the canonical JSON of `spec` (hex; cannot change).
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "a revision's hash cannot change"}]))]
    pub hash: String,
    /// The bundle's spec as it was put in force.
    pub spec: PolicyBundleSpec,
}
