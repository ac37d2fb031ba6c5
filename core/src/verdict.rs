//! The one decision both shells print: a request walked through validate,
//! estimate, policy, approval and render against a [`Catalog`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use paver_crds::{Approval, Decision, PaveRoute, ScorecardStatus, ServiceRequest};
use serde::Serialize;
use serde_json::Value;

use super::{
    FieldError,
    estimate::{Estimate, estimate},
    observed::{Observed, builtin},
    policy::{BundleSet, PolicyInput, PolicyOutcome, PreparedInput, RouteDoc, RuleKind, evaluate},
    render::{RenderOptions, Rendered, render},
    score::score,
    validate::{CompiledRoute, compile, select_route, validate_request},
};
use crate::content::Content;

/// Routes and bundles in force: what a request is judged against.
///
/// A route may be held at several versions: its head (the version its
/// PaveRoute's spec publishes now) and the older versions still kept as
/// revisions, which requests pinned by `routeVersion` keep rendering with.
#[derive(Default)]
pub struct Catalog {
    /// Every version of every route held, heads and older ones.
    routes: Vec<CompiledRoute>,
    /// `input.route` of each version (the route without its templates),
    /// built once, by `name@version`.
    route_docs: BTreeMap<String, RouteDoc>,
    /// The head version of each route.
    heads: BTreeMap<String, semver::Version>,
    /// Routes whose head is rolling out: who may be on it yet.
    gates: BTreeMap<String, crate::rollout::Gate>,
    /// Routes whose latest version does not compile, with why.
    route_errors: BTreeMap<String, Vec<FieldError>>,
    pub bundles: BundleSet,
    /// Which team each namespace is bound to.
    pub teams: TeamBindings,
}

/// Which team each namespace is bound to: the namespace's `paver.dev/team`
/// label, set by whoever may create namespaces (the platform team). A
/// request may only claim its namespace's team, so the team's path, its
/// FinOps labels and its policy can only be reached from its namespaces.
/// The same rule is enforced at admission (manifests/admission.yaml).
#[derive(Clone, Debug, Default)]
pub enum TeamBindings {
    /// Not checked: the CLI, judging request files offline.
    #[default]
    Unchecked,
    /// The cluster's bindings (namespace → team); a namespace missing here
    /// is bound to no team, and nothing in it goes ahead.
    Namespaces(BTreeMap<String, String>),
}

impl TeamBindings {
    /// Why a request in `namespace` may not claim `team`, naming the field.
    pub fn check(&self, namespace: &str, team: &str) -> Result<(), FieldError> {
        let Some(bound) = self.bound() else {
            return Ok(());
        };
        let label = paver_crds::vocab::labels::TEAM;
        match bound.get(namespace) {
            Some(t) if t == team => Ok(()),
            Some(t) => Err(FieldError::new(
                "spec.team",
                format!(
                    "namespace {namespace} is bound to team {t:?} ({label}); a request in it cannot claim team {team:?}"
                ),
            )),
            None => Err(FieldError::new(
                "metadata.namespace",
                format!(
                    "namespace {namespace} is bound to no team: the platform team labels it \
                     (kubectl label namespace {namespace} {label}={team})"
                ),
            )),
        }
    }

    /// Why a request of `team` may not deploy into `namespace` (its
    /// Application's destination): only the team's own namespaces.
    pub fn check_destination(&self, namespace: &str, team: &str) -> Result<(), String> {
        let Some(bound) = self.bound() else {
            return Ok(());
        };
        match bound.get(namespace) {
            Some(t) if t == team => Ok(()),
            Some(t) => Err(format!(
                "the Application would deploy into namespace {namespace}, which belongs to team {t:?}: \
                 a request of team {team:?} deploys only into its team's namespaces"
            )),
            None => Err(format!(
                "the Application would deploy into namespace {namespace}, which is bound to no team: \
                 a request of team {team:?} deploys only into its team's namespaces ({})",
                paver_crds::vocab::labels::TEAM
            )),
        }
    }

    /// Binds `namespace` to `team` (None: unbinds it); from then on
    /// bindings are checked. Whether it changed.
    pub fn bind(&mut self, namespace: &str, team: Option<&str>) -> bool {
        if let TeamBindings::Unchecked = self {
            *self = TeamBindings::Namespaces(BTreeMap::new());
        }
        let TeamBindings::Namespaces(bound) = self else {
            return false;
        };
        match team {
            Some(t) if bound.get(namespace).map(String::as_str) != Some(t) => {
                bound.insert(namespace.to_string(), t.to_string());
                true
            }
            None => bound.remove(namespace).is_some(),
            Some(_) => false,
        }
    }

    /// Namespace → team, when bindings are checked.
    fn bound(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            TeamBindings::Namespaces(bound) => Some(bound),
            TeamBindings::Unchecked => None,
        }
    }

    /// The team `namespace` is bound to.
    pub fn team_of(&self, namespace: &str) -> Option<&str> {
        self.bound()?.get(namespace).map(String::as_str)
    }

    /// The namespaces bound to `team`, sorted.
    pub fn namespaces_of<'a>(&'a self, team: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.bound()
            .into_iter()
            .flat_map(|b| b.iter())
            .filter(move |(_, t)| t.as_str() == team)
            .map(|(ns, _)| ns.as_str())
    }

    /// Every bound namespace (each namespace with a team).
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.bound()
            .into_iter()
            .flat_map(|b| b.keys().map(String::as_str))
    }
}

impl Catalog {
    /// A catalog of every route and bundle in `content`, and the problems
    /// found loading them (a route that does not compile, a bundle whose
    /// tests fail), one line each.
    pub fn from_content(content: Content, now: DateTime<Utc>) -> (Catalog, Vec<String>) {
        let mut catalog = Catalog::default();
        let mut problems = Vec::new();
        for route in content.routes {
            let name = route.name_any();
            for e in catalog.upsert_route(route) {
                problems.push(format!("route {name}: {e}"));
            }
        }
        for bundle in content.bundles {
            let name = bundle.name_any();
            let report = catalog.bundles.update(&name, &bundle.spec, now);
            for e in &report.errors {
                problems.push(format!("bundle {name}: {}: {}", e.location(), e.message));
            }
            for t in report.tests.iter().filter(|t| !t.pass) {
                problems.push(format!("bundle {name}: test {} failed {}", t.name, t.message));
            }
        }
        (catalog, problems)
    }

    /// Compiles `route` and puts it in force, replacing the route of the
    /// same name. A route that does not compile leaves the version in force
    /// before it (its requests are told why when there is none) and its
    /// errors are returned.
    pub fn upsert_route(&mut self, route: PaveRoute) -> Vec<FieldError> {
        let name = route.name_any();
        self.install_route(&name, compile_route(route))
    }

    /// Puts in force what [`compile_route`] made of route `name` (compile it
    /// first, away from whatever guards this catalog) as its head. The
    /// versions held before stay, as older versions, until
    /// [`Catalog::set_older_versions`] says which are kept.
    pub fn install_route(
        &mut self,
        name: &str,
        compiled: Result<CompiledRouteDoc, Vec<FieldError>>,
    ) -> Vec<FieldError> {
        let name = name.to_string();
        match compiled {
            Ok(CompiledRouteDoc(doc, compiled)) => {
                let version = compiled.version.clone();
                self.routes.retain(|r| !(r.name == name && r.version == version));
                self.route_docs.insert(compiled.id(), doc);
                self.routes.push(compiled);
                self.route_errors.remove(&name);
                self.heads.insert(name, version);
                Vec::new()
            }
            // The version in force before (if any) stays in force.
            Err(errors) => {
                self.route_errors.insert(name, errors.clone());
                errors
            }
        }
    }

    /// Holds exactly `older` besides route `name`'s head: the versions its
    /// revisions keep (one each; one at the head's version is left out,
    /// the head is that version).
    pub fn set_older_versions(&mut self, name: &str, older: Vec<CompiledRouteDoc>) {
        let head = self.heads.get(name).cloned();
        let dropped: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.name == name && Some(&r.version) != head.as_ref())
            .map(CompiledRoute::id)
            .collect();
        for id in &dropped {
            self.route_docs.remove(id);
        }
        self.routes
            .retain(|r| r.name != name || Some(&r.version) == head.as_ref());
        for CompiledRouteDoc(doc, compiled) in older {
            if compiled.name != name
                || Some(&compiled.version) == head.as_ref()
                || self
                    .routes
                    .iter()
                    .any(|r| r.name == name && r.version == compiled.version)
            {
                continue;
            }
            self.route_docs.insert(compiled.id(), doc);
            self.routes.push(compiled);
        }
    }

    /// The head version of route `name` (what its spec publishes, or the
    /// last good one when that does not compile), if any.
    pub fn route_version(&self, name: &str) -> Option<&str> {
        self.head(name).map(|r| r.route.spec.version.as_str())
    }

    /// Sets (or with `None` lifts) the gate on route `name`'s head while
    /// it rolls out. Whether it changed.
    pub fn set_gate(&mut self, name: &str, gate: Option<crate::rollout::Gate>) -> bool {
        let changed = self.gates.get(name) != gate.as_ref();
        match gate {
            Some(g) => self.gates.insert(name.to_string(), g),
            None => self.gates.remove(name),
        };
        changed
    }

    /// The head of route `name`.
    pub fn head(&self, name: &str) -> Option<&CompiledRoute> {
        let head = self.heads.get(name)?;
        self.routes.iter().find(|r| r.name == name && r.version == *head)
    }

    /// Every version of route `name` held, highest first.
    pub fn versions(&self, name: &str) -> Vec<&CompiledRoute> {
        let mut versions: Vec<&CompiledRoute> = self.routes.iter().filter(|r| r.name == name).collect();
        versions.sort_by(|a, b| b.version.cmp(&a.version));
        versions
    }

    /// Takes a route out of force, every version of it.
    pub fn remove_route(&mut self, name: &str) {
        for r in self.routes.iter().filter(|r| r.name == name) {
            self.route_docs.remove(&r.id());
        }
        self.routes.retain(|r| r.name != name);
        self.heads.remove(name);
        self.gates.remove(name);
        self.route_errors.remove(name);
    }

    /// The routes in force.
    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// Whether bundle `name` applies to a request on `route` in `namespace`
    /// with `labels` (so a change to it must re-evaluate the request).
    pub fn bundle_touches(
        &self,
        name: &str,
        route: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let mut route_bundles: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.name == route)
            .flat_map(|r| r.route.spec.policy_bundles.iter().cloned())
            .collect();
        route_bundles.sort();
        route_bundles.dedup();
        let (found, missing) = self.bundles.applicable(route, &route_bundles, namespace, labels);
        found.iter().any(|b| b.name == name) || missing.iter().any(|m| m == name)
    }
}

/// A route compiled, with its `input.route` document.
pub struct CompiledRouteDoc(RouteDoc, CompiledRoute);

impl CompiledRouteDoc {
    /// Names the PaveRouteRevision this version was compiled from.
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.1.revision = Some(revision.into());
        self
    }

    /// The version compiled.
    pub fn version(&self) -> &semver::Version {
        &self.1.version
    }
}

/// Compiles a route (its schema, its templates) and converts its
/// `input.route` document: all of [`Catalog::upsert_route`]'s work.
pub fn compile_route(route: PaveRoute) -> Result<CompiledRouteDoc, Vec<FieldError>> {
    let doc = RouteDoc::new(route_doc(&route)).map_err(|e| vec![FieldError::new("spec", e.to_string())])?;
    compile(route).map(|compiled| CompiledRouteDoc(doc, compiled))
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
    /// Allowed, but the route's templates failed to render it (the
    /// operator's phase Failed).
    RenderFailed,
}

impl Outcome {
    /// The CLI's exit status: 0 allowed, 1 denied, 2 unusable input or a
    /// render that failed (what the operator reports as Rejected, Pending or
    /// Failed is never 0).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Allowed | Outcome::NeedsApproval => 0,
            Outcome::Denied | Outcome::ApprovalRejected => 1,
            Outcome::Invalid | Outcome::PolicyUnavailable | Outcome::RenderFailed => 2,
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
    /// The PaveRouteRevision of the version used, when the shell named it.
    #[serde(skip)]
    pub route_revision: Option<String>,
    /// The request's `routeVersion` matches no version held: it keeps its
    /// last render.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_matching_version: bool,
    /// Parameters with the route's defaults applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    pub policy: PolicyOutcome,
    /// Bundles the route names that have no good version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_bundles: Vec<String>,
    /// Why policy could not be evaluated (a rule's runtime error, the time
    /// limit): the request is held, never allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRef>,
    #[serde(skip)]
    pub rendered: Option<Rendered>,
    /// Render error, when rendering failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub render_error: Option<String>,
    /// The policy input the decision was evaluated on, kept for the
    /// Scorecard's `checks` (built once per request).
    #[serde(skip)]
    pub input: Option<PreparedInput>,
    /// How long the policy stage took (input conversion and every bundle),
    /// when the request got that far.
    #[serde(skip)]
    pub policy_time: Option<std::time::Duration>,
}

impl Verdict {
    /// A request held without a decision (PolicyUnavailable), saying why:
    /// what a shell reports when the decision itself could not run.
    pub fn unavailable(request: String, why: String) -> Self {
        let mut v = Verdict::new(request);
        v.outcome = Outcome::PolicyUnavailable;
        v.policy_error = Some(why);
        v
    }

    fn new(request: String) -> Self {
        Verdict {
            request,
            outcome: Outcome::Invalid,
            errors: Vec::new(),
            notices: Vec::new(),
            route: None,
            route_version: None,
            route_revision: None,
            no_matching_version: false,
            parameters: None,
            estimate: None,
            policy: PolicyOutcome::default(),
            missing_bundles: Vec::new(),
            policy_error: None,
            approval: None,
            rendered: None,
            render_error: None,
            input: None,
            policy_time: None,
        }
    }

    fn invalid(mut self, errors: Vec<FieldError>) -> Self {
        self.outcome = Outcome::Invalid;
        self.errors = errors;
        self
    }
}

/// `input.route`: the route without status, server bookkeeping or templates.
pub fn route_doc(route: &PaveRoute) -> Value {
    let mut doc = serde_json::to_value(route).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("templates");
        }
    }
    doc
}

/// `input.request`: the request as policy sees it, no status, no server bookkeeping.
pub fn request_doc(req: &ServiceRequest) -> Value {
    let mut doc = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    doc
}

/// Who created the request, as admission recorded it.
pub fn requested_by(req: &ServiceRequest) -> Option<&str> {
    req.annotations()
        .get(paver_crds::vocab::annotations::REQUESTED_BY)
        .map(String::as_str)
        .filter(|u| !u.is_empty())
}

/// The decision of the approvers on the request's current generation:
/// a rejection wins over an approval; approvals of other generations do
/// not count, nor does the requester approving their own request (which
/// admission refuses; this holds should that policy be missing). The
/// names of the Approvals left out for that.
fn approval_decision(
    req: &ServiceRequest,
    approvals: &[Approval],
) -> (Option<(Decision, ApprovalRef)>, Vec<String>) {
    let generation = req.metadata.generation.unwrap_or(0);
    let name = req.name_any();
    let ns = req.namespace();
    let requester = requested_by(req);
    let mut own = Vec::new();
    let mut current: Vec<&Approval> = approvals
        .iter()
        .filter(|a| a.spec.request == name && a.spec.generation == generation && a.namespace() == ns)
        .filter(|a| {
            let self_approval =
                a.spec.decision == Decision::Approve && Some(a.spec.approver.as_str()) == requester;
            if self_approval {
                own.push(a.name_any());
            }
            !self_approval
        })
        .collect();
    current.sort_by_key(|a| (a.spec.decision != Decision::Reject, a.name_any()));
    let decision = current.first().map(|a| {
        (
            a.spec.decision,
            ApprovalRef {
                name: a.name_any(),
                approver: a.spec.approver.clone(),
                reason: a.spec.reason.clone(),
                generation,
            },
        )
    });
    (decision, own)
}

/// A request walked up to policy: its route, its parameters with the
/// route's defaults applied, its estimate, and the policy input built from
/// them (`input.request`, `.parameters`, `.route`, `.estimate`).
pub struct Prepared<'c> {
    pub route: &'c CompiledRoute,
    pub parameters: Value,
    pub estimate: Estimate,
    /// Notes that do not block (e.g. the route is deprecated).
    pub notices: Vec<String>,
    pub input: PolicyInput,
}

/// Why a request cannot reach policy: the errors, each naming its field,
/// and the route it was judged against when one was found.
pub struct Unprepared<'c> {
    pub route: Option<&'c CompiledRoute>,
    pub errors: Vec<FieldError>,
    /// Its `routeVersion` matches no version held.
    pub no_match: bool,
}

/// Whether a decision applies the gates of routes rolling out (what the
/// operator commits) or judges every request as if each rollout were
/// complete (the preview of where a rollout goes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Gates {
    #[default]
    Apply,
    Open,
}

/// Selects the request's route, validates its parameters (defaults
/// applied), estimates its cost and builds the policy input: everything
/// [`decide_request`] does before policy, for whoever needs that much.
pub fn prepare_request<'c>(
    catalog: &'c Catalog,
    req: &ServiceRequest,
) -> Result<Prepared<'c>, Unprepared<'c>> {
    prepare_request_with(catalog, req, Gates::Apply)
}

/// The version a request is on while its route's head rolls out: a request
/// the rollout has not reached stays on the highest version it matches
/// below the head (one whose range matches only the head is on it).
fn gated<'c>(
    catalog: &'c Catalog,
    req: &ServiceRequest,
    route: &'c CompiledRoute,
) -> Option<(&'c CompiledRoute, String)> {
    let gate = catalog.gates.get(&route.name)?;
    let key = paver_crds::RequestKey::of(req).to_string();
    if route.version != gate.to || gate.admits(&key, req.labels()) {
        return None;
    }
    let below = catalog
        .routes
        .iter()
        .filter(|r| r.name == route.name && r.version < gate.to)
        .map(|r| &r.version)
        .max()?;
    let held = select_route(&catalog.routes, &req.spec, Some(below)).ok()?;
    let note = format!(
        "on {} while {} rolls out (a later step of its rollout moves this request)",
        held.id(),
        route.id()
    );
    Some((held, note))
}

/// [`prepare_request`], applying the routes' rollout gates or not.
pub fn prepare_request_with<'c>(
    catalog: &'c Catalog,
    req: &ServiceRequest,
    gates: Gates,
) -> Result<Prepared<'c>, Unprepared<'c>> {
    let unprepared = |route, errors| Unprepared {
        route,
        errors,
        no_match: false,
    };
    // A route whose latest version is broken is judged with the version
    // in force before; with none, its requests are told why.
    let in_force = catalog.routes.iter().any(|r| r.name == req.spec.route);
    if let Some(errors) = catalog.route_errors.get(&req.spec.route)
        && !in_force
    {
        let detail = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(unprepared(
            None,
            vec![FieldError::new(
                "spec.route",
                format!("route {:?} is not usable: {detail}", req.spec.route),
            )],
        ));
    }
    let head = catalog.heads.get(&req.spec.route);
    let mut route = select_route(&catalog.routes, &req.spec, head).map_err(|u| Unprepared {
        route: None,
        errors: vec![u.error],
        no_match: u.no_match,
    })?;
    let mut held = None;
    if gates == Gates::Apply
        && let Some((r, note)) = gated(catalog, req, route)
    {
        route = r;
        held = Some(note);
    }
    catalog
        .teams
        .check(&req.namespace().unwrap_or_default(), &req.spec.team)
        .map_err(|e| unprepared(Some(route), vec![e]))?;
    let mut validated = validate_request(req, route).map_err(|errors| unprepared(Some(route), errors))?;
    // A deprecated head deprecates the route for requests on its older versions too.
    if let Some(h) = catalog.head(&route.name)
        && h.version != route.version
        && h.route.spec.lifecycle == paver_crds::Lifecycle::Deprecated
        && route.route.spec.lifecycle != paver_crds::Lifecycle::Deprecated
    {
        validated.warnings.push(format!(
            "route {} is deprecated (as of {}); move to another route before it is retired",
            route.name,
            h.id()
        ));
    }
    if let Some(note) = held {
        validated.warnings.push(note);
    } else if let Some(head) = head.filter(|h| **h != route.version) {
        validated.warnings.push(format!(
            "on {} as routeVersion {:?} asks; the route's latest version is {head}",
            route.id(),
            req.spec.route_version.as_deref().unwrap_or_default().trim()
        ));
    }
    let estimate = estimate(
        route.route.spec.cost.as_ref(),
        &validated.parameters,
        req.spec.environment.as_str(),
    )
    .map_err(|e| unprepared(Some(route), vec![e]))?;
    let input = PolicyInput {
        request: request_doc(req),
        parameters: validated.parameters.clone(),
        route: catalog.route_docs.get(&route.id()).cloned().unwrap_or_default(),
        estimate: serde_json::to_value(&estimate).unwrap_or(Value::Null),
        ..Default::default()
    };
    Ok(Prepared {
        route,
        parameters: validated.parameters,
        estimate,
        notices: validated.warnings,
        input,
    })
}

/// Walks a request through validate, estimate, policy, approval and
/// render. Renders when policy allows it (also while it awaits approval,
/// so the CLI can show the files; the operator commits only `Allowed`).
pub fn decide_request(
    catalog: &Catalog,
    req: &ServiceRequest,
    approvals: &[Approval],
    options: &RenderOptions,
    now: DateTime<Utc>,
) -> Verdict {
    decide_request_with(catalog, req, approvals, options, now, Gates::Apply)
}

/// [`decide_request`], applying the routes' rollout gates or not.
pub fn decide_request_with(
    catalog: &Catalog,
    req: &ServiceRequest,
    approvals: &[Approval],
    options: &RenderOptions,
    now: DateTime<Utc>,
    gates: Gates,
) -> Verdict {
    let key = paver_crds::RequestKey::of(req).to_string();
    let mut v = Verdict::new(key.clone());

    let prepared = match prepare_request_with(catalog, req, gates) {
        Ok(p) => p,
        Err(Unprepared {
            route,
            errors,
            no_match,
        }) => {
            v.route = route.map(CompiledRoute::id);
            v.route_version = route.map(|r| r.version.to_string());
            v.no_matching_version = no_match;
            return v.invalid(errors);
        }
    };
    let Prepared {
        route,
        parameters,
        estimate,
        notices,
        input,
    } = prepared;
    v.route = Some(route.id());
    v.route_version = Some(route.version.to_string());
    v.route_revision = route.revision.clone();
    v.notices = notices;

    let (bundles, missing) = catalog.bundles.applicable(
        &route.name,
        &route.route.spec.policy_bundles,
        &req.namespace().unwrap_or_default(),
        req.labels(),
    );
    v.parameters = Some(parameters);
    v.estimate = Some(estimate);
    let policy_started = std::time::Instant::now();
    let evaluated = input.prepare().and_then(|prepared| {
        let outcome = evaluate(
            &bundles,
            &prepared,
            &[RuleKind::Deny, RuleKind::Warn, RuleKind::NeedsApproval],
            &key,
            req.labels(),
            now,
        );
        v.input = Some(prepared);
        outcome
    });
    v.policy_time = Some(policy_started.elapsed());
    match evaluated {
        Ok(outcome) => v.policy = outcome,
        Err(e) => {
            // An evaluation error never fails open: the request waits.
            v.outcome = Outcome::PolicyUnavailable;
            v.policy_error = Some(e.to_string());
            return v;
        }
    }
    if !missing.is_empty() {
        v.missing_bundles = missing;
        v.outcome = Outcome::PolicyUnavailable;
        return v;
    }
    if !v.policy.violations.is_empty() {
        v.outcome = Outcome::Denied;
        return v;
    }
    v.outcome = Outcome::Allowed;
    if !v.policy.approval_reasons.is_empty() {
        let (decision, own) = approval_decision(req, approvals);
        for name in own {
            v.notices.push(format!(
                "Approval {name} does not count: its approver requested this generation (an approver may not approve their own request)"
            ));
        }
        match decision {
            Some((Decision::Reject, a)) => {
                v.approval = Some(a);
                v.outcome = Outcome::ApprovalRejected;
                return v;
            }
            Some((Decision::Approve, a)) => v.approval = Some(a),
            None => v.outcome = Outcome::NeedsApproval,
        }
    }
    let (Some(parameters), Some(estimate)) = (&v.parameters, &v.estimate) else {
        return v;
    };
    let rendered = render(route, req, parameters, estimate, options).map_err(|e| e.to_string());
    let rendered = rendered.and_then(|r| match &r.application {
        Some(app) => catalog
            .teams
            .check_destination(&app.destination_namespace, &req.spec.team)
            .map(|()| r),
        None => Ok(r),
    });
    match rendered {
        Ok(rendered) => v.rendered = Some(rendered),
        Err(e) => {
            v.render_error = Some(e);
            // Awaiting approval stays that (approving is still the next step).
            if v.outcome == Outcome::Allowed {
                v.outcome = Outcome::RenderFailed;
            }
        }
    }
    v
}

/// The Scorecard of a rendered request: the `checks` of every bundle that
/// applies, evaluated on the decision's input with the rendered files and
/// what the shells observed (Git, Argo CD) added, plus Paver's own checks
/// from those facts, scored against the route's levels.
pub fn scorecard_for(
    catalog: &Catalog,
    req: &ServiceRequest,
    verdict: &Verdict,
    observed: &Observed,
    now: DateTime<Utc>,
) -> ScorecardStatus {
    let route = catalog.routes.iter().find(|r| Some(r.id()) == verdict.route);
    let mut checks = observed.checks();
    if let Some(route) = route {
        let (bundles, _) = catalog.bundles.applicable(
            &route.name,
            &route.route.spec.policy_bundles,
            &req.namespace().unwrap_or_default(),
            req.labels(),
        );
        let (git, cluster) = (observed.git(), observed.cluster());
        let evaluated = match &verdict.input {
            Some(input) => input
                .with_facts(
                    verdict.rendered.as_ref().map(|r| &r.files),
                    Some(&git),
                    Some(&cluster),
                )
                .and_then(|p| {
                    evaluate(
                        &bundles,
                        &p,
                        &[RuleKind::Checks],
                        &verdict.request,
                        req.labels(),
                        now,
                    )
                })
                .map_err(|e| e.to_string()),
            None => Err("the request was not evaluated by policy".to_string()),
        };
        match evaluated {
            Ok(outcome) => checks.extend(outcome.checks),
            Err(e) => checks.push(builtin("policy-evaluated", "scorecard", "bronze", false, e)),
        }
    }
    let levels = route.and_then(|r| r.route.spec.scorecard.as_ref());
    score(
        &checks,
        levels,
        &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

#[cfg(test)]
mod tests {
    use paver_crds::Lifecycle;
    use serde_json::json;

    use super::{Catalog, TeamBindings, prepare_request};
    use crate::validate::tests::{request, route};

    #[test]
    fn a_broken_route_update_leaves_the_version_before_in_force() {
        let mut catalog = Catalog::default();
        let mut r = route("svc", "1.0.0", Lifecycle::Active, None);
        assert!(catalog.upsert_route(r.clone()).is_empty());
        r.spec.version = "2.0.0".into();
        r.spec.templates.inline = vec![paver_crds::TemplateFile {
            path: "x.yaml".into(),
            content: "{{ unclosed".into(),
            when: None,
        }];
        let errors = catalog.upsert_route(r.clone());
        assert!(!errors.is_empty());
        assert_eq!(catalog.route_version("svc"), Some("1.0.0"));
        let mut req = request(json!({"replicas": 2}));
        req.spec.route = "svc".into();
        let prepared = prepare_request(&catalog, &req)
            .map_err(|u| u.errors)
            .expect("judged with 1.0.0");
        assert_eq!(prepared.route.route.spec.version, "1.0.0");
        // With nothing in force before, its requests are told why.
        let mut fresh = Catalog::default();
        assert!(!fresh.upsert_route(r).is_empty());
        let errors = prepare_request(&fresh, &req).err().expect("unusable").errors;
        assert!(errors[0].message.contains("is not usable"), "{errors:?}");
        assert_eq!(fresh.route_version("svc"), None);
    }

    /// Versions coexist: the head and the older versions held. A request
    /// pinned by `routeVersion` stays on the older one (saying so); one
    /// whose range matches nothing is flagged; one without a range is on
    /// the head; dropping an older version leaves the head alone.
    #[test]
    fn pinned_requests_stay_on_the_version_they_ask_for() {
        let mut catalog = Catalog::default();
        let v1 = route("svc", "1.2.0", Lifecycle::Active, None);
        let mut v2 = v1.clone();
        v2.spec.version = "2.0.0".into();
        assert!(catalog.upsert_route(v2).is_empty());
        let Ok(older) = super::compile_route(v1) else {
            panic!("1.2.0 does not compile")
        };
        catalog.set_older_versions("svc", vec![older.with_revision("svc-abc")]);
        assert_eq!(catalog.route_version("svc"), Some("2.0.0"));
        let held: Vec<String> = catalog
            .versions("svc")
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(held, ["2.0.0", "1.2.0"]);
        let decide = |req: &paver_crds::ServiceRequest| {
            super::decide_request(&catalog, req, &[], &Default::default(), chrono::Utc::now())
        };
        let mut req = request(json!({"replicas": 2}));
        req.spec.route = "svc".into();
        assert_eq!(decide(&req).route.as_deref(), Some("svc@2.0.0"));
        req.spec.route_version = Some("^1.0".into());
        let pinned = decide(&req);
        assert_eq!(pinned.route.as_deref(), Some("svc@1.2.0"));
        assert_eq!(pinned.route_revision.as_deref(), Some("svc-abc"));
        assert!(
            pinned
                .notices
                .iter()
                .any(|n| n.contains("latest version is 2.0.0")),
            "{:?}",
            pinned.notices
        );
        req.spec.route_version = Some("^3".into());
        let none = decide(&req);
        assert_eq!(none.outcome, super::Outcome::Invalid);
        assert!(none.no_matching_version, "{:?}", none.errors);
        // A deprecated head warns the pinned ones too.
        let deprecated = route("svc", "2.0.0", Lifecycle::Deprecated, None);
        assert!(catalog.upsert_route(deprecated).is_empty());
        req.spec.route_version = Some("^1.0".into());
        let warned = super::decide_request(&catalog, &req, &[], &Default::default(), chrono::Utc::now());
        assert_eq!(warned.route.as_deref(), Some("svc@1.2.0"));
        assert!(
            warned
                .notices
                .iter()
                .any(|n| n.contains("route svc is deprecated (as of svc@2.0.0)")),
            "{:?}",
            warned.notices
        );
        catalog.set_older_versions("svc", Vec::new());
        let held: Vec<String> = catalog
            .versions("svc")
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(held, ["2.0.0"]);
    }

    /// The requester approving their own request does not count (admission
    /// refuses it; this holds without that policy); a rejection by them
    /// does, and another approver's approval does.
    #[test]
    fn the_requester_cannot_approve_their_own_request() {
        let mut req = request(json!({}));
        req.metadata.generation = Some(3);
        req.metadata.annotations = Some(
            [(
                paver_crds::vocab::annotations::REQUESTED_BY.to_string(),
                "dev".to_string(),
            )]
            .into(),
        );
        let approval = |name: &str, approver: &str, decision: paver_crds::Decision| {
            let mut a = paver_crds::Approval::new(
                name,
                paver_crds::ApprovalSpec {
                    request: "orders-api".into(),
                    generation: 3,
                    approver: approver.into(),
                    reason: "ticket".into(),
                    decision,
                },
            );
            a.metadata.namespace = Some("commerce".into());
            a
        };
        let own = approval("own", "dev", paver_crds::Decision::Approve);
        let (decision, ignored) = super::approval_decision(&req, std::slice::from_ref(&own));
        assert!(decision.is_none());
        assert_eq!(ignored, ["own"]);
        let other = approval("lead", "lead", paver_crds::Decision::Approve);
        let (decision, _) = super::approval_decision(&req, &[own.clone(), other]);
        assert_eq!(decision.map(|(_, a)| a.approver), Some("lead".to_string()));
        let withdraw = approval("withdraw", "dev", paver_crds::Decision::Reject);
        let (decision, ignored) = super::approval_decision(&req, &[own, withdraw]);
        assert_eq!(decision.map(|(d, _)| d), Some(paver_crds::Decision::Reject));
        assert_eq!(ignored, ["own"]);
        assert_eq!(super::requested_by(&req), Some("dev"));
    }

    /// A route's Application deploys only into the team's namespaces: a
    /// destination another team's, or no team's, fails the render.
    #[test]
    fn an_application_deploys_only_into_the_teams_namespaces() {
        let mut r = route("svc", "1.0.0", Lifecycle::Active, None);
        let mut app = paver_crds::ApplicationTemplate::default();
        app.destination.namespace =
            "{{ namespace }}{% if environment == 'production' %}-prod{% endif %}".into();
        r.spec.output.application = Some(app);
        let mut catalog = Catalog::default();
        assert!(catalog.upsert_route(r).is_empty());
        catalog.teams.bind("commerce", Some("commerce"));
        catalog.teams.bind("commerce-prod", Some("payments"));
        let mut req = request(json!({"replicas": 2}));
        req.spec.route = "svc".into();
        let decide = |req: &paver_crds::ServiceRequest, catalog: &Catalog| {
            super::decide_request(catalog, req, &[], &Default::default(), chrono::Utc::now())
        };
        let v = decide(&req, &catalog);
        assert_eq!(v.outcome, super::Outcome::Allowed, "{:?}", v.render_error);
        let app = v.rendered.and_then(|r| r.application).expect("application");
        assert_eq!(app.destination_namespace, "commerce");

        req.spec.environment = paver_crds::Environment::Production;
        let v = decide(&req, &catalog);
        assert_eq!(v.outcome, super::Outcome::RenderFailed);
        let why = v.render_error.unwrap_or_default();
        assert!(
            why.contains("namespace commerce-prod, which belongs to team \"payments\""),
            "{why}"
        );
        catalog.teams.bind("commerce-prod", None);
        let why = decide(&req, &catalog).render_error.unwrap_or_default();
        assert!(why.contains("bound to no team"), "{why}");
        // Offline (no bindings), the CLI renders it.
        let offline = Catalog {
            teams: TeamBindings::Unchecked,
            ..catalog
        };
        assert!(decide(&req, &offline).rendered.is_some());
    }

    #[test]
    fn a_request_claims_only_its_namespaces_team() {
        assert!(TeamBindings::Unchecked.check("shop", "anyone").is_ok());
        let mut teams = TeamBindings::default();
        assert!(teams.bind("shop", Some("commerce")));
        assert!(!teams.bind("shop", Some("commerce")), "unchanged");
        assert!(teams.check("shop", "commerce").is_ok());
        let other = teams.check("shop", "payments").expect_err("another team");
        assert_eq!(other.field, "spec.team");
        assert!(other.message.contains("bound to team \"commerce\""), "{other}");
        let unbound = teams.check("scratch", "commerce").expect_err("no binding");
        assert_eq!(unbound.field, "metadata.namespace");
        assert!(
            unbound
                .message
                .contains("kubectl label namespace scratch paver.dev/team=commerce")
        );
        assert!(teams.bind("web", Some("web")));
        assert!(teams.bind("shop-eu", Some("commerce")));
        assert_eq!(teams.namespaces().collect::<Vec<_>>(), ["shop", "shop-eu", "web"]);
        assert_eq!(
            teams.namespaces_of("commerce").collect::<Vec<_>>(),
            ["shop", "shop-eu"]
        );
        assert_eq!(teams.team_of("web"), Some("web"));
        assert!(teams.bind("shop-eu", None));
        assert!(teams.bind("shop", None));
        assert!(teams.check("shop", "commerce").is_err());
        assert_eq!(TeamBindings::Unchecked.namespaces().count(), 0);
    }
}
