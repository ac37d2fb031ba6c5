//! Validation: compiling a route (schema, version, templates), choosing the
//! route a request names, and checking a request against it with the
//! schema's defaults applied.
//!
//! A route's schema is user input. It is compiled with a retriever that
//! refuses every external `$ref` (no HTTP, no files), so a schema cannot make
//! Paver read `/etc` or call out; references inside the schema
//! (`#/$defs/...`) work.

use std::fmt;

use jsonschema::{Retrieve, Uri, Validator, error::ValidationErrorKind};
use paver_crds::{Lifecycle, PaveRoute, ServiceRequest, ServiceRequestSpec};
use serde_json::{Map, Value};

use super::{FieldError, render};

/// A route ready for use: its schema compiled, its version parsed and its
/// templates parsed into a minijinja environment.
///
/// Templates from a Git source are expected to have been added to
/// `spec.templates.inline` before compiling.
pub struct CompiledRoute {
    /// The route as given.
    pub route: PaveRoute,
    /// `metadata.name`.
    pub name: String,
    /// `spec.version`, parsed.
    pub version: semver::Version,
    validator: Option<Validator>,
    pub(crate) env: minijinja::Environment<'static>,
}

impl fmt::Debug for CompiledRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledRoute")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

impl CompiledRoute {
    /// `name@version`, as commit trailers and messages show it.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The JSON Schema of `spec.parameters`, if the route has one.
    pub fn schema(&self) -> Option<&Value> {
        self.route.spec.parameters.as_ref()
    }
}

/// A request that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// `spec.parameters` with the schema's defaults applied.
    pub parameters: Value,
    /// Things the user should know that do not block (e.g. a deprecated route).
    pub warnings: Vec<String>,
}

/// Refuses every external reference: route schemas must be self-contained.
struct RefuseExternal;

impl Retrieve for RefuseExternal {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("external $ref {uri} is not allowed: route schemas must be self-contained").into())
    }
}

/// Compiles a route: parses its version, compiles its parameter schema
/// (refusing external references) and parses its templates. Every problem
/// is returned, each naming the route field.
pub fn compile(route: PaveRoute) -> Result<CompiledRoute, Vec<FieldError>> {
    let mut errors = Vec::new();
    let name = route.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::new("metadata.name", "a route needs a name"));
    }
    let version = semver::Version::parse(route.spec.version.trim())
        .map_err(|e| {
            errors.push(FieldError::new(
                "spec.version",
                format!("failed to parse version {:?} as semver: {e}", route.spec.version),
            ))
        })
        .ok();
    let validator = match &route.spec.parameters {
        None => None,
        Some(schema) => match jsonschema::options()
            .with_retriever(RefuseExternal)
            .should_validate_formats(true)
            .build(schema)
        {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.instance_path().as_str();
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!(" at {at}")
                };
                errors.push(FieldError::new(
                    "spec.parameters",
                    format!("failed to compile the parameter schema{at}: {e}"),
                ));
                None
            }
        },
    };
    let env = render::template_env(&route).map_err(|e| errors.extend(e)).ok();
    match (version, env) {
        (Some(version), Some(env)) if errors.is_empty() => Ok(CompiledRoute {
            route,
            name,
            version,
            validator,
            env,
        }),
        _ => Err(errors),
    }
}

/// Chooses the route a request names: the highest non-retired version of
/// `spec.route` that satisfies `spec.routeVersion` (any version when absent).
pub fn select_route<'a>(
    routes: &'a [CompiledRoute],
    spec: &ServiceRequestSpec,
) -> Result<&'a CompiledRoute, FieldError> {
    let candidates: Vec<&CompiledRoute> = routes.iter().filter(|r| r.name == spec.route).collect();
    if candidates.is_empty() {
        let mut known: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        known.sort_unstable();
        known.dedup();
        return Err(FieldError::new(
            "spec.route",
            format!(
                "unknown route {:?}; known routes: {}",
                spec.route,
                known.join(", ")
            ),
        ));
    }
    let range = match spec.route_version.as_deref().map(str::trim) {
        None | Some("") => semver::VersionReq::STAR,
        Some(text) => semver::VersionReq::parse(text).map_err(|e| {
            FieldError::new(
                "spec.routeVersion",
                format!("failed to parse {text:?} as a semver range: {e}"),
            )
        })?,
    };
    let mut available: Vec<&semver::Version> = candidates.iter().map(|r| &r.version).collect();
    available.sort();
    let matching: Vec<&CompiledRoute> = candidates
        .into_iter()
        .filter(|r| range.matches(&r.version))
        .collect();
    if matching.is_empty() {
        let available: Vec<String> = available.iter().map(|v| v.to_string()).collect();
        return Err(FieldError::new(
            "spec.routeVersion",
            format!(
                "no version of route {:?} satisfies {range}; available: {}",
                spec.route,
                available.join(", ")
            ),
        ));
    }
    let best = matching
        .iter()
        .filter(|r| r.route.spec.lifecycle != Lifecycle::Retired)
        .max_by(|a, b| a.version.cmp(&b.version));
    match best {
        Some(route) => Ok(route),
        None => {
            let retired: Vec<String> = matching.iter().map(|r| r.id()).collect();
            Err(FieldError::new(
                "spec.route",
                format!(
                    "route {} is retired and accepts no new requests",
                    retired.join(", ")
                ),
            ))
        }
    }
}

/// Checks a request's own fields and its parameters against the route's
/// schema (defaults applied first). All problems are returned together.
pub fn validate_request(req: &ServiceRequest, route: &CompiledRoute) -> Result<Validated, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_name(
        &mut errors,
        "metadata.name",
        req.metadata.name.as_deref().unwrap_or(""),
    );
    check_name(
        &mut errors,
        "metadata.namespace",
        req.metadata.namespace.as_deref().unwrap_or(""),
    );
    check_name(&mut errors, "spec.team", &req.spec.team);
    if req.spec.owner.trim().is_empty() {
        errors.push(FieldError::new(
            "spec.owner",
            "must name the person or group accountable for the service",
        ));
    }

    let mut parameters = match &req.spec.parameters {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    };
    if let Some(schema) = route.schema() {
        apply_defaults(schema, schema, &mut parameters, 0);
    }
    if let Some(validator) = &route.validator {
        let mut schema_errors: Vec<FieldError> = validator
            .iter_errors(&parameters)
            .map(|e| schema_error(&parameters, &e))
            .collect();
        schema_errors.sort_by(|a, b| a.field.cmp(&b.field));
        schema_errors.dedup();
        errors.extend(schema_errors);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut warnings = Vec::new();
    if route.route.spec.lifecycle == Lifecycle::Deprecated {
        warnings.push(format!(
            "route {} is deprecated; move to a newer version or another route before it is retired",
            route.id()
        ));
    }
    Ok(Validated { parameters, warnings })
}

/// A DNS-1123 label: what Paver uses as a path segment and in object names.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn check_name(errors: &mut Vec<FieldError>, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if !is_dns_label(value) {
        errors.push(FieldError::new(
            field,
            format!(
                "{value:?} is not usable as a path segment and name: expected at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
            ),
        ));
    }
}

/// Turns a JSON pointer into the parameters into a dotted field path,
/// using `[n]` for array indices.
fn field_path(root: &Value, pointer: &str) -> String {
    let mut out = String::from("spec.parameters");
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                out.push_str(&format!("[{seg}]"));
                node = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            other => {
                out.push('.');
                out.push_str(&seg);
                node = other.and_then(|v| v.get(&seg));
            }
        }
    }
    out
}

fn schema_error(parameters: &Value, e: &jsonschema::ValidationError<'_>) -> FieldError {
    let path = field_path(parameters, e.instance_path().as_str());
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let prop = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            FieldError::new(format!("{path}.{prop}"), "is required")
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => FieldError::new(
            format!("{path}.{}", unexpected.join(",")),
            "is not a known parameter here (check the spelling against the route's schema)",
        ),
        _ => FieldError::new(path, e.to_string()),
    }
}

const MAX_DEFAULTS_DEPTH: usize = 32;

/// Resolves a local `$ref` (`#/...`) against the root schema; other refs
/// are left alone (compile refuses external ones).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut schema = schema;
    for _ in 0..MAX_DEFAULTS_DEPTH {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(pointer) => match root.pointer(pointer) {
                Some(target) => schema = target,
                None => break,
            },
            None => break,
        }
    }
    schema
}

/// Applies `default`s from `properties` (recursively, into nested objects
/// and array items). A missing object property without a default is
/// created when its own defaults fill every property it requires.
pub fn apply_defaults(root: &Value, schema: &Value, value: &mut Value, depth: usize) {
    if depth > MAX_DEFAULTS_DEPTH {
        return;
    }
    let schema = resolve(root, schema);
    if let (Some(items), Value::Array(values)) = (schema.get("items"), &mut *value) {
        for v in values {
            apply_defaults(root, items, v, depth + 1);
        }
        return;
    }
    let (Some(props), Value::Object(obj)) = (schema.get("properties").and_then(Value::as_object), value)
    else {
        return;
    };
    for (key, prop) in props {
        let prop_schema = resolve(root, prop);
        match obj.get_mut(key) {
            Some(existing) => apply_defaults(root, prop_schema, existing, depth + 1),
            None => {
                if let Some(default) = prop_schema.get("default") {
                    let mut v = default.clone();
                    apply_defaults(root, prop_schema, &mut v, depth + 1);
                    obj.insert(key.clone(), v);
                } else if prop_schema.get("properties").is_some() {
                    let mut v = Value::Object(Map::new());
                    apply_defaults(root, prop_schema, &mut v, depth + 1);
                    let required_met = prop_schema
                        .get("required")
                        .and_then(Value::as_array)
                        .is_none_or(|req| req.iter().filter_map(Value::as_str).all(|r| v.get(r).is_some()));
                    if required_met {
                        obj.insert(key.clone(), v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
pub(crate) mod tests;
