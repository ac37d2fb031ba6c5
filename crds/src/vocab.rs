//! Paver's vocabulary, defined once: the names every part (core, operator,
//! CLI, tests) spells the same way — the API version, the field manager,
//! the finalizer, label keys, condition types and the request key.

use std::fmt;

use kube::ResourceExt;

/// `apiVersion` of every Paver resource.
pub const API_VERSION: &str = "paver.dev/v1alpha1";

/// The field manager of every server-side apply Paver makes.
pub const FIELD_MANAGER: &str = "paver";
/// The field manager of the route census (`status.versions` and
/// `status.requests` of a PaveRoute), apart from the route's other status.
pub const CENSUS_FIELD_MANAGER: &str = "paver-census";
/// The field manager of a PaveRoute's `status.rollout`.
pub const ROLLOUT_FIELD_MANAGER: &str = "paver-rollout";

/// The finalizer that removes a request's directory before it goes.
pub const FINALIZER: &str = "paver.dev/cleanup";

/// The PaveRoute annotation that steers its rollout: `pause`, `resume` or
/// `abort` (removed once carried out).
pub const ROLLOUT_ANNOTATION: &str = "paver.dev/rollout";

/// Label keys Paver writes on what it renders and on Scorecards.
pub mod annotations {
    /// Who created a ServiceRequest: set at admission from the creating
    /// user, kept through updates (manifests/admission); written into every
    /// commit as `Paver-Requested-By`, and that user may not approve it.
    pub const REQUESTED_BY: &str = "paver.dev/requested-by";
}

pub mod labels {
    /// The request's team.
    pub const TEAM: &str = "paver.dev/team";
    /// The service (the request's name).
    pub const SERVICE: &str = "paver.dev/service";
    /// The request's environment.
    pub const ENVIRONMENT: &str = "paver.dev/environment";
    /// The request's cost center (FinOps).
    pub const COST_CENTER: &str = "paver.dev/cost-center";
    /// The request's uid.
    pub const REQUEST_ID: &str = "paver.dev/request-id";
    /// The route a request is on; on a PaveRouteRevision, its route.
    pub const ROUTE: &str = "paver.dev/route";
    /// On a PolicyBundleRevision, its bundle.
    pub const BUNDLE: &str = "paver.dev/bundle";
    /// On a rendered Application: the namespace of its request.
    pub const REQUEST_NAMESPACE: &str = "paver.dev/request-namespace";
    /// On a rendered Application: the name of its request.
    pub const REQUEST_NAME: &str = "paver.dev/request-name";
    /// `app.kubernetes.io/managed-by`, set to [`MANAGED_BY_PAVER`].
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`] on everything Paver renders.
    pub const MANAGED_BY_PAVER: &str = "paver";
    /// Selects the Applications Paver rendered.
    pub const APPLICATION_SELECTOR: &str = "app.kubernetes.io/managed-by=paver";
}

/// A ServiceRequest's condition types, in the order a request passes them.
pub mod conditions {
    pub const VALIDATED: &str = "Validated";
    pub const POLICY_COMPLIANT: &str = "PolicyCompliant";
    pub const APPROVED: &str = "Approved";
    pub const RENDERED: &str = "Rendered";
    pub const COMMITTED: &str = "Committed";
    pub const SYNCED: &str = "Synced";
    pub const READY: &str = "Ready";
}

/// A request's key, `namespace/name`, in one allocation: how verdicts,
/// commit trailers, logs and the operator's per-request tables name a
/// request. A Scorecard, named after its request, has the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey(Box<str>);

impl RequestKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        RequestKey(format!("{namespace}/{name}").into_boxed_str())
    }

    /// The key of `obj` (a request, or a Scorecard named after its request).
    pub fn of<K: ResourceExt>(obj: &K) -> Self {
        Self::new(&obj.namespace().unwrap_or_default(), &obj.name_any())
    }

    /// Namespace and name (neither holds a '/').
    pub fn parts(&self) -> (&str, &str) {
        self.0.split_once('/').unwrap_or(("", &self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestKey;

    #[test]
    fn a_key_is_namespace_slash_name() {
        let key = RequestKey::new("shop", "orders");
        assert_eq!(key.to_string(), "shop/orders");
        assert_eq!(key.parts(), ("shop", "orders"));
        assert_ne!(key, RequestKey::new("shop", "web"));
    }
}
