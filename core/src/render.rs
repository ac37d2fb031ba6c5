//! Rendering: a route's templates plus a validated request become the files
//! of the request's directory in the output repository, and the Argo CD
//! Application that syncs them.
//!
//! Output layout (inside the repository):
//! ```text
//! <dir>/                         dir = output.path, default {{ team }}/{{ namespace }}/{{ name }}
//! <dir>/manifests/...            Kubernetes objects: what Argo CD syncs
//! <dir>/argocd-application.yaml  the Application, pointing at <dir>/manifests
//! <dir>/...                      everything else (CI pipeline, CODEOWNERS, SLO docs)
//! ```
//! Template paths are relative to `<dir>`; the route's templates decide
//! what goes under `manifests/`.
//!
//! The template engine is sandboxed: a fuel budget per file, no loader
//! (includes and imports reach only the route's own templates), and every
//! printed value escaped for the file it lands in ([`super::escape`]: YAML,
//! GitHub workflows, CODEOWNERS, JSON), with each rendered YAML file parsed
//! before it is accepted. Undefined values are semi-strict: printing or iterating
//! an undefined value fails (a typo must not render an empty field into a
//! manifest), while `{% if parameters.x %}` on an optional value is false.
//! Template files with a path segment starting with `_` are partials for
//! `include`/`import`, never written.

use std::collections::BTreeMap;

use base64::Engine as _;
use minijinja::{
    Environment, ErrorKind, UndefinedBehavior,
    value::{Serde, Value as JinjaValue},
};
use paver_crds::{PaveRoute, ServiceRequest, vocab::labels};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{FieldError, escape, estimate::Estimate, validate::CompiledRoute};
// The one path rule, also the Git writer's and `paver render --out`'s.
pub use super::paths::check_relative_path;

/// Fuel for rendering one template (its content, path or `when`).
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// How deep a template may nest (minijinja counts a macro call or include
/// as about ten levels, a loop or `if` as one). minijinja's own limit, 500,
/// lets a recursive macro overflow a 2 MiB thread stack (a tokio worker's,
/// or a test's) in an unoptimized build; this one stops it with an error.
pub const TEMPLATE_RECURSION_LIMIT: usize = 150;
/// The output directory when the route names none.
pub const DEFAULT_OUTPUT_PATH: &str = "{{ team }}/{{ namespace }}/{{ name }}";
/// Where the Kubernetes manifests live inside the request's directory.
pub const MANIFESTS_DIR: &str = "manifests";
/// The Argo CD Application's file inside the request's directory. The
/// shipped app of apps (manifests/argocd) syncs every file whose name ends
/// so, so no template may write one: only Paver's own, at the directory's
/// root, is an Application.
pub const APPLICATION_FILE: &str = "argocd-application.yaml";

/// Argo CD's finalizer that deletes an Application's resources with it:
/// on every Application Paver renders, and removed by the operator from
/// an Application it renames (its workloads go to the new one).
pub const RESOURCES_FINALIZER: &str = "resources-finalizer.argocd.argoproj.io";

/// The cluster Argo CD runs in, as Argo CD names it: the destination
/// when neither the operator nor the route names another.
pub const IN_CLUSTER_SERVER: &str = "https://kubernetes.default.svc";

/// What a path may use — the output directory, a template's path, the
/// Application's destination namespace: the request's identity (its name,
/// its namespace, the team that namespace is bound to, its environment)
/// and the route's. Never its parameters, owner or cost center: what a
/// requester writes does not choose where its files go or where they
/// deploy.
pub const PATH_VARIABLES: [&str; 5] = ["name", "namespace", "team", "environment", "route"];

/// The most one rendered file may hold: a Kubernetes object cannot exceed
/// about 1.5 MiB in etcd, so a bigger manifest is a mistake, and the
/// bound stops a template (a loop of literal text, a repeated string)
/// before it has used more memory than this.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The most one request's render may hold, all files together: 130 times
/// the largest shipped example (15 KB). The operator holds up to 256
/// renders at once, so hostile requests cost it at most 512 MiB.
pub const MAX_RENDER_BYTES: usize = 2 << 20;

/// Values the caller knows and the route does not.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// URL of the output repository, for the Application's `repoURL`.
    pub repo_url: String,
    /// Branch Argo CD follows, for the Application's `targetRevision`.
    pub revision: String,
    /// When set, the Application's `destination.server` whatever the route
    /// says: the API server as Argo CD reaches it (e.g. a hub Argo CD
    /// deploying to this cluster, or one running outside any Pod, where
    /// `https://kubernetes.default.svc` means nothing).
    pub destination_server: Option<String>,
}

/// The files of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rendered {
    /// The request's directory inside the repository.
    pub dir: String,
    /// Path relative to the repository root (always under `dir`) → content.
    pub files: BTreeMap<String, String>,
    /// Hex SHA-256 over the sorted paths and contents.
    pub digest: String,
    /// The Argo CD Application rendered with the files, if the route has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<RenderedApplication>,
}

/// Who the rendered Application is and where it deploys: what the
/// operator checks against the team's namespaces and other requests'
/// Applications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedApplication {
    pub name: String,
    pub namespace: String,
    pub destination_namespace: String,
}

impl RenderedApplication {
    /// `namespace/name`: what one request at most may own.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The Application's name for the request `namespace/name`:
/// `<namespace>.<name>`. A namespace has no dot (it is a DNS label), so
/// the first dot tells where it ends and two requests never share a name
/// (`<namespace>-<name>`, the name before, made `a-b/c` and `a/b-c` one
/// Application). Past 253 characters (a namespace of 63 and a name of
/// 253 can reach 317) the name is cut and ends in 16 hex digits of the
/// SHA-256 of `namespace/name`.
pub fn application_name(namespace: &str, name: &str) -> String {
    const MAX: usize = 253;
    let full = format!("{namespace}.{name}");
    if full.len() <= MAX {
        return full;
    }
    let hash = hex(&Sha256::digest(format!("{namespace}/{name}").as_bytes()));
    let keep = MAX - 17;
    let cut = full[..keep].trim_end_matches(['.', '-']);
    format!("{cut}-{}", &hash[..16])
}

/// Why a request could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("failed to render template {template}: {message}")]
    Template { template: String, message: String },
    #[error("failed to write template {template} to {path:?}: {reason}")]
    Path {
        template: String,
        path: String,
        reason: String,
    },
    #[error("failed to render the output directory {path:?}: {reason}")]
    OutputDir { path: String, reason: String },
    #[error("failed to write {path}: both {first} and {second} render to it")]
    Collision {
        path: String,
        first: String,
        second: String,
    },
    #[error("failed to build the Argo CD Application: {0}")]
    Application(String),
    #[error(
        "failed to render template {template}: it renders more than {limit} bytes{}",
        if *total { ", what is left of the request's render budget (MAX_RENDER_BYTES, 2 MiB)" } else { " (MAX_FILE_BYTES, 1 MiB per file)" }
    )]
    TooLarge {
        template: String,
        limit: usize,
        total: bool,
    },
}

fn describe(e: &minijinja::Error) -> String {
    if e.kind() == ErrorKind::OutOfFuel {
        let at = e.name().map(|n| format!(" (in {n})")).unwrap_or_default();
        return format!(
            "the template did more work than allowed (out of fuel){at}; is there an endless loop?"
        );
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn to_plain(value: &JinjaValue, filter: &str) -> Result<Value, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            format!("{filter} got an undefined value"),
        ));
    }
    serde_json::to_value(value)
        .map(sorted)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("{filter}: {e}")))
}

/// YAML with sorted keys and no trailing newline; pair with `indent`.
fn to_yaml(value: &JinjaValue) -> Result<JinjaValue, minijinja::Error> {
    let plain = to_plain(value, "to_yaml")?;
    let text = serde_yaml::to_string(&plain)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("to_yaml: {e}")))?;
    Ok(JinjaValue::from_safe_string(
        text.trim_end_matches('\n').to_string(),
    ))
}

/// Compact JSON with sorted keys: also the safe way to quote a string in YAML.
fn to_json(value: &JinjaValue) -> Result<JinjaValue, minijinja::Error> {
    let plain = to_plain(value, "to_json")?;
    serde_json::to_string(&plain)
        .map(JinjaValue::from_safe_string)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("to_json: {e}")))
}

/// Base64 (its alphabet needs no escaping in any file Paver writes).
fn b64encode(value: String) -> JinjaValue {
    JinjaValue::from_safe_string(base64::engine::general_purpose::STANDARD.encode(value))
}

/// Lowercase letters, digits and single dashes; at most 63 characters.
pub fn slugify(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(63);
    out.trim_end_matches('-').to_string()
}

/// A valid Kubernetes label value built from any string: invalid characters
/// become `-`; over-long values are cut and suffixed with a short hash.
pub fn label_value(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trim = |s: &str| s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_string();
    let cleaned = trim(&cleaned);
    if cleaned.len() <= 63 {
        return cleaned;
    }
    let hash = hex(&Sha256::digest(value.as_bytes()))[..8].to_string();
    format!("{}-{hash}", trim(&cleaned[..54]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `https://user:token@host/x` → `https://host/x`: a URL as it may be
/// shown or written anywhere (the rendered Application's `repoURL`, error
/// messages). Argo CD takes repository credentials from its own Secrets.
/// Over HTTP(S) all user info goes (a token may stand alone as the user);
/// over SSH the user stays (it names the account, `git@`) and a password
/// goes.
pub fn without_credentials(url: &str) -> String {
    // A query or fragment has no meaning to Git and can carry a token
    // (`?private_token=`): never copied.
    let url = url.split(['?', '#']).next().unwrap_or(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if scheme.to_ascii_lowercase().starts_with("http") {
                return format!("{scheme}://{host}/{path}");
            }
            let user = userinfo.split(':').next().unwrap_or_default();
            return format!("{scheme}://{user}@{host}/{path}");
        }
        return url.to_string();
    }
    // scp-like `user[:password]@host:path`: the user stays, a password goes.
    if let Some((userinfo, rest)) = url.split_once('@')
        && !userinfo.contains('/')
        && let Some((user, _password)) = userinfo.split_once(':')
    {
        return format!("{user}@{rest}");
    }
    url.to_string()
}

fn is_partial(path: &str) -> bool {
    path.split('/').any(|s| s.starts_with('_'))
}

fn base_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
    // Errors name the undefined value (`parameters.replicas` is
    // undefined) in release builds too; minijinja keeps that for debug
    // builds unless asked. It costs nothing until an error is made.
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_auto_escape_callback(escape::for_template);
    env.set_formatter(escape::format);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_json", to_json);
    env.add_filter("b64encode", b64encode);
    env.add_filter("slugify", |v: String| slugify(&v));
    env.add_filter("label_value", |v: String| label_value(&v));
    env
}

/// Parses a route's templates (contents, paths, `when` expressions) into
/// the environment renders use. Problems name the route field.
pub(crate) fn template_env(route: &PaveRoute) -> Result<Environment<'static>, Vec<FieldError>> {
    let mut env = base_env();
    let mut errors = Vec::new();
    let scratch = base_env();
    for (i, t) in route.spec.templates.inline.iter().enumerate() {
        let field = |what: &str| format!("spec.templates.inline[{i}].{what}");
        if env.get_template(&t.path).is_ok() {
            errors.push(FieldError::new(
                field("path"),
                format!("template {} is given twice", t.path),
            ));
            continue;
        }
        errors.extend(path_template_error(&scratch, field("path"), "path ", &t.path));
        if let Some(when) = &t.when
            && let Err(e) = scratch.compile_expression(when)
        {
            errors.push(FieldError::new(
                field("when"),
                format!("failed to parse {when:?}: {}", describe(&e)),
            ));
        }
        if let Err(e) = env.add_template_owned(t.path.clone(), t.content.clone()) {
            errors.push(FieldError::new(
                field("content"),
                format!("failed to parse template {}: {}", t.path, describe(&e)),
            ));
        }
    }
    let destination = route.spec.output.application.as_ref().map(|a| {
        (
            "spec.output.application.destination.namespace",
            &a.destination.namespace,
        )
    });
    let output = route.spec.output.path.as_ref().map(|p| ("spec.output.path", p));
    for (field, source) in output.into_iter().chain(destination) {
        errors.extend(path_template_error(&scratch, field.to_string(), "", source));
    }
    if errors.is_empty() { Ok(env) } else { Err(errors) }
}

/// Why `source`, a path template (`what` names it in the message), is
/// refused, if it is: it does not parse, or it uses more than
/// [`PATH_VARIABLES`].
fn path_template_error(
    scratch: &Environment<'static>,
    field: String,
    what: &str,
    source: &str,
) -> Option<FieldError> {
    let used = match scratch.template_from_str(source) {
        Ok(tpl) => tpl.undeclared_variables(false),
        Err(e) => {
            return Some(FieldError::new(
                field,
                format!("failed to parse {what}{source:?}: {}", describe(&e)),
            ));
        }
    };
    let mut others: Vec<&str> = used
        .iter()
        .map(String::as_str)
        .filter(|v| !PATH_VARIABLES.contains(v))
        .collect();
    if others.is_empty() {
        return None;
    }
    others.sort_unstable();
    Some(FieldError::new(
        field,
        format!(
            "{source:?} uses {}: a path or destination may use only {} (what a request \
             writes cannot choose where its files go or where they deploy)",
            others.join(", "),
            PATH_VARIABLES.join(", ")
        ),
    ))
}

/// The request's identity, the only context a path is rendered with
/// ([`PATH_VARIABLES`]); a path reaching anything else through an
/// `include` finds it undefined.
fn identity(ctx: &Value) -> JinjaValue {
    let only: serde_json::Map<String, Value> = PATH_VARIABLES
        .iter()
        .map(|k| (k.to_string(), ctx[*k].clone()))
        .collect();
    JinjaValue::from(Serde(&Value::Object(only)))
}

/// The FinOps label set every rendered object carries.
pub fn finops_labels(req: &ServiceRequest) -> BTreeMap<String, String> {
    let name = req.metadata.name.clone().unwrap_or_default();
    let namespace = req.metadata.namespace.clone().unwrap_or_default();
    let request_id = req
        .metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("{namespace}.{name}"));
    BTreeMap::from([
        (labels::TEAM.to_string(), label_value(&req.spec.team)),
        (labels::SERVICE.to_string(), label_value(&name)),
        (
            labels::ENVIRONMENT.to_string(),
            req.spec.environment.as_str().to_string(),
        ),
        (
            labels::COST_CENTER.to_string(),
            label_value(&req.spec.cost_center),
        ),
        (labels::REQUEST_ID.to_string(), label_value(&request_id)),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_PAVER.to_string(),
        ),
    ])
}

fn context(route: &CompiledRoute, req: &ServiceRequest, parameters: &Value, estimate: &Estimate) -> Value {
    let mut request = serde_json::to_value(req).unwrap_or(Value::Null);
    if let Some(obj) = request.as_object_mut() {
        // Status and server bookkeeping would make renders depend on their own results.
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    json!({
        "name": req.metadata.name.clone().unwrap_or_default(),
        "namespace": req.metadata.namespace.clone().unwrap_or_default(),
        "team": req.spec.team,
        "owner": req.spec.owner,
        "environment": req.spec.environment.as_str(),
        "costCenter": req.spec.cost_center,
        "route": { "name": route.name, "version": route.version.to_string() },
        "parameters": parameters,
        "estimate": estimate,
        "request": request,
        "labels": finops_labels(req),
    })
}

fn render_str(
    env: &Environment<'static>,
    source: &str,
    ctx: &JinjaValue,
) -> Result<String, minijinja::Error> {
    env.render_str(source, ctx)
}

/// Renders a request on a route. `parameters` are the validated parameters
/// (defaults applied), `estimate` the request's estimate.
pub fn render(
    route: &CompiledRoute,
    req: &ServiceRequest,
    parameters: &Value,
    estimate: &Estimate,
    options: &RenderOptions,
) -> Result<Rendered, RenderError> {
    let env = &route.env;
    let mut ctx = context(route, req, parameters, estimate);
    let pattern = route
        .route
        .spec
        .output
        .path
        .as_deref()
        .unwrap_or(DEFAULT_OUTPUT_PATH);
    let ident = identity(&ctx);
    let dir = render_str(env, pattern, &ident).map_err(|e| RenderError::OutputDir {
        path: shown_path(pattern),
        reason: describe(&e),
    })?;
    let dir = dir.trim().trim_end_matches('/').to_string();
    check_relative_path(&dir)
        .and_then(|()| {
            if dir.split('/').next() == Some(req.spec.team.as_str()) {
                return Ok(());
            }
            Err(format!(
                "a request of team {:?} writes only under {}/ (spec.output.path {pattern:?}): \
                 another team's folder, or the platform's, is not its to write",
                req.spec.team, req.spec.team
            ))
        })
        .map_err(|reason| RenderError::OutputDir {
            path: shown_path(&dir),
            reason,
        })?;
    ctx["dir"] = Value::String(dir.clone());
    ctx["manifestsDir"] = Value::String(format!("{dir}/{MANIFESTS_DIR}"));
    let jctx = JinjaValue::from(Serde(&ctx));

    let mut files = BTreeMap::new();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut total = 0;
    for t in &route.route.spec.templates.inline {
        if is_partial(&t.path) {
            continue;
        }
        let template_err = |e: minijinja::Error| RenderError::Template {
            template: t.path.clone(),
            message: describe(&e),
        };
        if let Some(when) = &t.when {
            let expr = env.compile_expression(when).map_err(template_err)?;
            if !expr.eval(&jctx).map_err(template_err)?.is_true() {
                continue;
            }
        }
        let mut out = Bounded::new(MAX_FILE_BYTES.min(MAX_RENDER_BYTES - total));
        let captured = env
            .get_template(&t.path)
            .and_then(|tpl| tpl.render_captured_to(&jctx, &mut out))
            .map_err(|e| match out.over {
                true => RenderError::TooLarge {
                    template: t.path.clone(),
                    limit: out.limit,
                    total: out.limit < MAX_FILE_BYTES,
                },
                false => template_err(e),
            })?;
        let quoted = escape::quoted(captured.state());
        drop(captured);
        total += out.buf.len();
        let content = String::from_utf8(out.buf).map_err(|e| RenderError::Template {
            template: t.path.clone(),
            message: format!("the rendered file is not UTF-8: {e}"),
        })?;
        if content.trim().is_empty() {
            continue;
        }
        if quoted
            && escape::is_yaml(&t.path)
            && let Err(e) = escape::check_yaml(&content)
        {
            return Err(RenderError::Template {
                template: t.path.clone(),
                message: format!(
                    "the rendered file is not valid YAML: {e} (a value that is not a plain word \
                     is written as a quoted string; print it outside quotes)"
                ),
            });
        }
        let rel = render_str(env, &t.path, &ident).map_err(template_err)?;
        let rel = rel.trim();
        check_relative_path(rel)
            .and_then(|()| {
                if !rel.rsplit('/').next().unwrap_or(rel).ends_with(APPLICATION_FILE) {
                    return Ok(());
                }
                Err(format!(
                    "a file named *{APPLICATION_FILE} is an Argo CD Application to the app of apps; \
                     only Paver writes one, at the request directory's root"
                ))
            })
            .map_err(|reason| RenderError::Path {
                template: t.path.clone(),
                path: shown_path(rel),
                reason,
            })?;
        insert(
            &mut files,
            &mut sources,
            format!("{dir}/{rel}"),
            &t.path,
            format!("{}\n", content.trim_end()),
        )?;
    }
    let application = match application(route, req, &dir, options, env, &ident)? {
        Some((app, text)) => {
            insert(
                &mut files,
                &mut sources,
                format!("{dir}/{APPLICATION_FILE}"),
                "the Argo CD Application",
                text,
            )?;
            Some(app)
        }
        None => None,
    };
    let digest = digest(&files);
    Ok(Rendered {
        dir,
        files,
        digest,
        application,
    })
}

/// The team's Argo CD AppProject: `paver-<team>`, or, for a team whose
/// name is not a DNS label (upper case, `_`, longer than 57), its
/// slug and 8 hex digits of its SHA-256, so two teams never share one.
pub fn project_name(team: &str) -> String {
    let slug = slugify(team);
    if slug == team && !slug.is_empty() && slug.len() <= 57 {
        return format!("paver-{team}");
    }
    let hash = hex(&Sha256::digest(team.as_bytes()));
    let cut: String = slug.chars().take(48).collect();
    format!("paver-{}-{}", cut.trim_end_matches('-'), &hash[..8]).replace("--", "-")
}

/// The AppProject that fences a team's Applications: sources only from
/// the output repository, destinations only the team's namespaces on
/// `server`, no cluster-scoped resources, and not the namespace's
/// ResourceQuota or LimitRange (the platform's). Argo CD then refuses to
/// sync anything a team's folder puts elsewhere, whatever a template wrote.
pub fn app_project(
    team: &str,
    namespaces: &[&str],
    repo_url: &str,
    server: &str,
    argocd_namespace: &str,
) -> Value {
    let destinations: Vec<Value> = namespaces
        .iter()
        .map(|ns| json!({"server": server, "namespace": ns}))
        .collect();
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {
            "name": project_name(team),
            "namespace": argocd_namespace,
            "labels": {
                labels::TEAM: label_value(team),
                labels::MANAGED_BY: labels::MANAGED_BY_PAVER,
            },
            // The team exactly (the label is cut to a label value): how a
            // restarted operator finds the projects of teams that are gone.
            "annotations": { labels::TEAM: team },
        },
        "spec": {
            "description": format!("Paver: the Applications of team {team}, limited to its namespaces"),
            "sourceRepos": [without_credentials(repo_url)],
            "destinations": destinations,
            "clusterResourceWhitelist": [],
            "namespaceResourceBlacklist": [
                {"group": "", "kind": "ResourceQuota"},
                {"group": "", "kind": "LimitRange"},
            ],
        },
    })
}

/// A path as an error shows it: at most 200 bytes (a refused path can be
/// as long as a template makes it), then how much was cut.
fn shown_path(path: &str) -> String {
    let mut shown = path.to_string();
    paver_crds::truncate_message(&mut shown, 200);
    shown
}

/// A template's output, refused past `limit` bytes (see [`MAX_FILE_BYTES`]).
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Bounded {
            buf: Vec::new(),
            limit,
            over: false,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(std::io::Error::other("render budget exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn insert(
    files: &mut BTreeMap<String, String>,
    sources: &mut BTreeMap<String, String>,
    path: String,
    source: &str,
    content: String,
) -> Result<(), RenderError> {
    if let Some(first) = sources.get(&path) {
        return Err(RenderError::Collision {
            path,
            first: first.clone(),
            second: source.to_string(),
        });
    }
    sources.insert(path.clone(), source.to_string());
    // Rendering grows the string by doubling; the files are held until
    // their commit lands (hundreds of requests at once in a burst), so
    // without the slack.
    let mut content = content;
    content.shrink_to_fit();
    files.insert(path, content);
    Ok(())
}

/// Hex SHA-256 over the files in path order, each framed by its lengths.
pub fn digest(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (path, content) in files {
        hasher.update((path.len() as u64).to_be_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(content.as_bytes());
    }
    hex(&hasher.finalize())
}

fn application(
    route: &CompiledRoute,
    req: &ServiceRequest,
    dir: &str,
    options: &RenderOptions,
    env: &Environment<'static>,
    ctx: &JinjaValue,
) -> Result<Option<(RenderedApplication, String)>, RenderError> {
    let Some(app) = &route.route.spec.output.application else {
        return Ok(None);
    };
    let name = req.metadata.name.clone().unwrap_or_default();
    let namespace = req.metadata.namespace.clone().unwrap_or_default();
    let or = |s: &str, default: &str| {
        if s.is_empty() {
            default.to_string()
        } else {
            s.to_string()
        }
    };
    let destination_namespace = if app.destination.namespace.is_empty() {
        namespace.clone()
    } else {
        render_str(env, &app.destination.namespace, ctx)
            .map_err(|e| {
                RenderError::Application(format!(
                    "failed to render destination.namespace: {}",
                    describe(&e)
                ))
            })?
            .trim()
            .to_string()
    };
    let mut app_labels = finops_labels(req);
    app_labels.insert(labels::REQUEST_NAMESPACE.into(), label_value(&namespace));
    app_labels.insert(labels::REQUEST_NAME.into(), label_value(&name));
    app_labels.insert(labels::ROUTE.into(), label_value(&route.name));
    let mut sync_policy = json!({});
    if app.sync_policy.automated {
        sync_policy["automated"] =
            json!({ "prune": app.sync_policy.prune, "selfHeal": app.sync_policy.self_heal });
    }
    if !app.sync_policy.sync_options.is_empty() {
        sync_policy["syncOptions"] = json!(app.sync_policy.sync_options);
    }
    let rendered = RenderedApplication {
        name: application_name(&namespace, &name),
        namespace: or(&app.namespace, "argocd"),
        destination_namespace: destination_namespace.clone(),
    };
    let doc = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": rendered.name,
            "namespace": rendered.namespace,
            "labels": app_labels,
            "annotations": { labels::ROUTE: route.id() },
            "finalizers": [RESOURCES_FINALIZER],
        },
        "spec": {
            "project": or(&app.project, &project_name(&req.spec.team)),
            "source": {
                "repoURL": without_credentials(&options.repo_url),
                "targetRevision": or(&options.revision, "HEAD"),
                "path": format!("{dir}/{MANIFESTS_DIR}"),
            },
            "destination": {
                "server": match &options.destination_server {
                    Some(server) if !server.is_empty() => server.clone(),
                    _ => or(&app.destination.server, IN_CLUSTER_SERVER),
                },
                "namespace": destination_namespace,
            },
            "syncPolicy": sync_policy,
        },
    });
    serde_yaml::to_string(&sorted(doc))
        .map(|text| Some((rendered, text)))
        .map_err(|e| RenderError::Application(e.to_string()))
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
