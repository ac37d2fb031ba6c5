//! `PolicyBundle`: a versioned set of Rego modules.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{LabelSelector, optional_free_form_object},
    condition::{Condition, conditions_schema},
};

/// A versioned set of Rego modules (Rego v1, evaluated with regorus) that
/// Paver evaluates against ServiceRequests: rules `deny`, `warn`,
/// `needs_approval` and `checks`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[kube(
    group = "paver.dev",
    version = "v1alpha1",
    kind = "PolicyBundle",
    shortname = "pb",
    category = "paver",
    status = "PolicyBundleStatus",
    printcolumn = r#"{"name":"VERSION","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"MODE","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"ACTIVE","type":"string","jsonPath":".status.activeVersion"}"#,
    printcolumn = r#"{"name":"TESTS","type":"string","jsonPath":".status.conditions[?(@.type==\"TestsPassed\")].status"}"#,
    printcolumn = r#"{"name":"ENFORCES","type":"string","jsonPath":".spec.enforceAfter"}"#,
    printcolumn = r#"{"name":"WOULD-DENY","type":"integer","jsonPath":".status.wouldDeny"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBundleSpec {
    /// Semantic version of the bundle; recorded on every commit it judged.
    pub version: String,
    /// Teams or people who own the bundle and answer for its rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// What the bundle enforces and why.
    #[serde(default)]
    pub description: String,
    /// `enforce` (deny blocks), `warn` (deny reported as warnings) or `dryrun` (evaluated, reported, never blocks).
    #[serde(default)]
    pub mode: PolicyMode,
    /// RFC 3339 instant before which an `enforce` bundle behaves as `warn` (warn-first rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce_after: Option<String>,
    /// Rego modules (Rego v1 syntax).
    pub modules: Vec<RegoModule>,
    /// JSON document available to the modules as `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_free_form_object")]
    pub data: Option<serde_json::Value>,
    /// Rego test modules: every `test_` rule must be true or the bundle is not activated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<RegoModule>,
    /// Which requests the bundle applies to besides those whose route names it; absent means only those.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<BundleMatch>,
    /// Waivers: named rules do not apply to the named requests until the waiver expires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<PolicyException>,
    /// Allow builtins whose result is not a function of the input
    /// (`time.now_ns`, `rand.intn`, `uuid.rfc4122`, `opa.runtime`): refused
    /// by default, so a verdict can be reproduced from its input (policy
    /// gets time from `input`, e.g. an exception's expiry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_nondeterministic_builtins: bool,
}

/// How a bundle's `deny` results count.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PolicyMode {
    /// Deny results block the request.
    #[default]
    Enforce,
    /// Deny results are reported as warnings.
    Warn,
    /// Evaluated and reported in status only; never blocks or warns.
    Dryrun,
}

/// One Rego source file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegoModule {
    /// File name, used in error messages (e.g. `security.rego`).
    pub name: String,
    /// Rego source.
    pub source: String,
}

/// Which requests a bundle applies to; every criterion given must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleMatch {
    /// Route names; any route when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Namespaces; any namespace when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Labels of the ServiceRequest; any labels when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// A waiver of some rules for some requests, until it expires.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyException {
    /// Name of the waiver, for reports.
    pub name: String,
    /// The request it applies to, as `namespace/name`; see also `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Labels of the requests it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Rule ids waived; `*` waives all of the bundle's rules.
    pub rules: Vec<String>,
    /// Why the waiver was granted.
    pub reason: String,
    /// RFC 3339 instant after which the waiver no longer applies.
    pub expires: String,
}

/// Observed state of a PolicyBundle.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBundleStatus {
    /// Conditions `Compiled`, `TestsPassed` and `Active`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The version in force: the last one that compiled and passed its tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    /// The PolicyBundleRevision holding the version in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// Results of the bundle's tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_results: Vec<TestResult>,
    /// Compile and load errors, with module and line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<BundleError>,
    /// The metadata.generation last processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many requests the bundle would deny once `spec.enforceAfter`
    /// passes (until then their deny findings are warnings), as their last
    /// reconcile judged them. Absent when the bundle has no `enforceAfter`
    /// ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_deny: Option<u32>,
    /// `wouldDeny` by team (`spec.team` of the requests).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub would_deny_by_team: BTreeMap<String, u32>,
}

/// The result of one `test_` rule.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// Test rule name, qualified by package.
    pub name: String,
    /// Whether the rule evaluated to true.
    pub pass: bool,
    /// Why it failed, when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// An error found while loading a bundle.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BundleError {
    /// Module the error is in.
    pub module: String,
    /// 1-based line, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl BundleError {
    /// `module:line:column`, as far as it is known.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}", self.module),
            (Some(l), None) => format!("{}:{l}", self.module),
            _ => self.module.clone(),
        }
    }
}
