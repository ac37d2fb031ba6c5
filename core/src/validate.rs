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
pub struct CompiledRoute {
    /// The route as given.
    pub route: PaveRoute,
    /// `metadata.name`.
    pub name: String,
    /// `spec.version`, parsed.
    pub version: semver::Version,
    /// The PaveRouteRevision it was compiled from, when the shell named one.
    pub revision: Option<String>,
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
    if let (Some(schema), Some(_)) = (&route.spec.parameters, &validator)
        && let Err(at) = apply_defaults(schema, &mut Value::Object(Map::new()))
    {
        errors.push(FieldError::new(
            "spec.parameters",
            format!(
                "the schema's defaults would create more than {MAX_DEFAULTS_CREATED} values for a request \
                 without parameters (at {at}): defaults that contain themselves (through $ref) expand \
                 without bound; give the recursive property no default and no properties of its own \
                 to fill"
            ),
        ));
    }
    let env = render::template_env(&route).map_err(|e| errors.extend(e)).ok();
    match (version, env) {
        (Some(version), Some(env)) if errors.is_empty() => Ok(CompiledRoute {
            route,
            name,
            version,
            revision: None,
            validator,
            env,
        }),
        _ => Err(errors),
    }
}

/// Chooses the route a request names: the highest non-retired version of
/// `spec.route` that satisfies `spec.routeVersion` (any version when absent).
///
/// `head` is the version the PaveRoute's spec publishes now: versions above
/// it are withdrawn (a route set back from 2.0.0 to 1.4.0 offers 1.4.0 and
/// below), and a retired head retires the whole route. With no head, the
/// highest version given is the head.
pub fn select_route<'a>(
    routes: &'a [CompiledRoute],
    spec: &ServiceRequestSpec,
    head: Option<&semver::Version>,
) -> Result<&'a CompiledRoute, Unselected> {
    let all: Vec<&CompiledRoute> = routes.iter().filter(|r| r.name == spec.route).collect();
    if all.is_empty() {
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
        )
        .into());
    }
    let head = head.or_else(|| all.iter().map(|r| &r.version).max());
    let candidates: Vec<&CompiledRoute> = all
        .into_iter()
        .filter(|r| head.is_none_or(|h| r.version <= *h))
        .collect();
    if let Some(h) = candidates
        .iter()
        .find(|r| Some(&r.version) == head && r.route.spec.lifecycle == Lifecycle::Retired)
    {
        return Err(FieldError::new(
            "spec.route",
            format!("route {} is retired and accepts no new requests", h.id()),
        )
        .into());
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
        return Err(Unselected {
            error: FieldError::new(
                "spec.routeVersion",
                format!(
                    "no version of route {:?} satisfies {range}; available: {}",
                    spec.route,
                    available.join(", ")
                ),
            ),
            no_match: true,
        });
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
            )
            .into())
        }
    }
}

/// Why no route was selected: the error, naming its field, and whether it
/// is that `routeVersion` matches no version held (the request keeps its
/// last render; its Validated condition says `NoMatchingRouteVersion`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unselected {
    pub error: FieldError,
    pub no_match: bool,
}

impl From<FieldError> for Unselected {
    fn from(error: FieldError) -> Self {
        Unselected {
            error,
            no_match: false,
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
    // Label values decide which rules apply (`paver.dev/data-classification:
    // "pci "` is no PCI label): read them as the API server would have.
    errors.extend(crate::kubernetes::metadata_errors(&req.metadata));
    check_name(&mut errors, "spec.team", &req.spec.team);
    if req.spec.owner.trim().is_empty() {
        errors.push(FieldError::new(
            "spec.owner",
            "must name the person or group accountable for the service",
        ));
    }

    let size_errors = parameter_size_errors(&req.spec.parameters);
    if !size_errors.is_empty() {
        errors.extend(size_errors);
        return Err(errors);
    }
    let mut parameters = match &req.spec.parameters {
        Value::Null => Value::Object(Map::new()),
        other => other.clone(),
    };
    if let Some(schema) = route.schema()
        && let Err(at) = apply_defaults(schema, &mut parameters)
    {
        errors.push(FieldError::new(
            "spec.parameters",
            format!(
                "applying the defaults of route {}'s schema would create more than {MAX_DEFAULTS_CREATED} \
                 values (at {at}); set the parameters there yourself, or ask for the route to be fixed",
                route.id()
            ),
        ));
        return Err(errors);
    }
    if let Some(validator) = &route.validator {
        let mut schema_errors = Vec::new();
        let mut counts = Vec::new();
        for e in validator.iter_errors(&parameters) {
            let (named, count) = schema_error(&parameters, &e);
            schema_errors.extend(named);
            counts.extend(count);
        }
        schema_errors.sort_by(|a, b| a.field.cmp(&b.field));
        schema_errors.dedup();
        // Objects with unknown keys past those named are counted, a few
        // of them; everything past the bounds is one count.
        let more = schema_errors.len().saturating_sub(MAX_SCHEMA_ERRORS)
            + counts.len().saturating_sub(MAX_UNKNOWN_KEY_COUNTS);
        schema_errors.truncate(MAX_SCHEMA_ERRORS);
        counts.truncate(MAX_UNKNOWN_KEY_COUNTS);
        if more > 0 {
            counts.push(FieldError::new(
                "spec.parameters",
                format!("and {more} more errors against route {}'s schema", route.id()),
            ));
        }
        errors.extend(schema_errors);
        errors.extend(counts);
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

/// The largest `spec.parameters` a request may have, as JSON: the limit
/// Kubernetes puts on all of an object's annotations together. The shipped
/// examples' parameters are under 2 KiB.
pub const MAX_PARAMETERS_BYTES: usize = 256 * 1024;
/// The longest string (or object key) in `spec.parameters`, in characters:
/// an image reference is at most 4 KiB and a certificate chain about 10 KiB.
pub const MAX_STRING_CHARS: usize = 16 * 1024;
/// How deep `spec.parameters` may nest (as [`MAX_DEFAULTS_DEPTH`], the
/// depth to which defaults are applied); the shipped routes nest 4.
pub const MAX_PARAMETERS_DEPTH: usize = 32;
/// The most items an array in `spec.parameters` may hold.
pub const MAX_ARRAY_ITEMS: usize = 1000;
/// The most size errors reported for one request: the rest are counted.
const MAX_SIZE_ERRORS: usize = 20;
/// The most schema errors reported for one request: the rest are counted.
const MAX_SCHEMA_ERRORS: usize = 20;
/// The unknown keys of one object named, one error each; the rest are counted.
const MAX_UNKNOWN_KEYS_NAMED: usize = 3;
/// The objects whose further unknown keys are counted, one error each.
const MAX_UNKNOWN_KEY_COUNTS: usize = 5;

/// Where a request's parameters are larger than Paver reads, before
/// anything else looks at them: past [`MAX_PARAMETERS_BYTES`] as JSON, a
/// string or key past [`MAX_STRING_CHARS`], nesting past
/// [`MAX_PARAMETERS_DEPTH`], an array past [`MAX_ARRAY_ITEMS`]. A schema
/// may say less (`maxLength`, `maxItems`); these hold whatever it says.
fn parameter_size_errors(parameters: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut more = 0usize;
    let mut report = |errors: &mut Vec<FieldError>, field: String, message: String| {
        if errors.len() < MAX_SIZE_ERRORS {
            errors.push(FieldError::new(field, message));
        } else {
            more += 1;
        }
    };
    let bytes = serde_json::to_vec(parameters).map_or(0, |v| v.len());
    if bytes > MAX_PARAMETERS_BYTES {
        report(
            &mut errors,
            "spec.parameters".into(),
            format!("{bytes} bytes as JSON, more than {MAX_PARAMETERS_BYTES}"),
        );
    }
    let mut stack = vec![(String::from("spec.parameters"), parameters, 0usize)];
    while let Some((path, value, depth)) = stack.pop() {
        if depth > MAX_PARAMETERS_DEPTH {
            report(
                &mut errors,
                path,
                format!("nests deeper than {MAX_PARAMETERS_DEPTH} levels"),
            );
            continue;
        }
        match value {
            Value::String(text) => {
                let chars = text.chars().count();
                if chars > MAX_STRING_CHARS {
                    report(
                        &mut errors,
                        path,
                        format!("{chars} characters, more than {MAX_STRING_CHARS}"),
                    );
                }
            }
            Value::Array(items) => {
                if items.len() > MAX_ARRAY_ITEMS {
                    report(
                        &mut errors,
                        path.clone(),
                        format!("{} items, more than {MAX_ARRAY_ITEMS}", items.len()),
                    );
                }
                for (i, item) in items.iter().enumerate().take(MAX_ARRAY_ITEMS).rev() {
                    stack.push((format!("{path}[{i}]"), item, depth + 1));
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter().rev() {
                    let chars = key.chars().count();
                    if chars > MAX_STRING_CHARS {
                        let shown: String = key.chars().take(64).collect();
                        report(
                            &mut errors,
                            format!("{path}.{shown}..."),
                            format!("a key of {chars} characters, more than {MAX_STRING_CHARS}"),
                        );
                        continue;
                    }
                    stack.push((format!("{path}.{key}"), item, depth + 1));
                }
            }
            _ => {}
        }
    }
    if more > 0 {
        errors.push(FieldError::new(
            "spec.parameters",
            format!("and {more} more fields over Paver's size limits"),
        ));
    }
    errors
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

/// One schema error as field errors, and (second) the count of what it did
/// not name: an object of 15,000 unknown keys is three errors and a count,
/// not one error listing them all.
fn schema_error(
    parameters: &Value,
    e: &jsonschema::ValidationError<'_>,
) -> (Vec<FieldError>, Option<FieldError>) {
    let path = field_path(parameters, e.instance_path().as_str());
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            let prop = property
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| property.to_string());
            (
                vec![FieldError::new(format!("{path}.{prop}"), "is required")],
                None,
            )
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let named = unexpected
                .iter()
                .take(MAX_UNKNOWN_KEYS_NAMED)
                .map(|key| {
                    FieldError::new(
                        format!("{path}.{key}"),
                        "is not a known parameter here (check the spelling against the route's schema)",
                    )
                })
                .collect();
            let more = unexpected.len().saturating_sub(MAX_UNKNOWN_KEYS_NAMED);
            let count = (more > 0).then(|| {
                FieldError::new(
                    path,
                    format!("and {more} more keys that are not known parameters here"),
                )
            });
            (named, count)
        }
        _ => (vec![FieldError::new(path, e.to_string())], None),
    }
}

const MAX_DEFAULTS_DEPTH: usize = 32;

/// The most values a route's defaults may create for one request: each
/// value of a `default` copied in, and each object created to hold
/// defaults. [`MAX_DEFAULTS_DEPTH`] alone let a schema whose defaults recurse
/// twice through `$ref: "#"` build 2^33 objects. The shipped routes create
/// fewer than 30 for a request; 10,000 gives each of an array's
/// [`MAX_ARRAY_ITEMS`] items ten defaults.
pub const MAX_DEFAULTS_CREATED: usize = 10_000;

/// Resolves a local `$ref` (`#/...`) against the root schema; other refs
/// are left alone (compile refuses external ones). Returns the schema and
/// its JSON pointer in the root (`#/$defs/x`), starting from `pointer`.
fn resolve<'a>(root: &'a Value, schema: &'a Value, pointer: String) -> (&'a Value, String) {
    let (mut schema, mut pointer) = (schema, pointer);
    for _ in 0..MAX_DEFAULTS_DEPTH {
        match schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
        {
            Some(target) => match root.pointer(target) {
                Some(found) => (schema, pointer) = (found, format!("#{target}")),
                None => break,
            },
            None => break,
        }
    }
    (schema, pointer)
}

/// Applies `default`s from the properties of `schema` (a route's parameter
/// schema) to `value`, recursively, into nested objects and array items. A
/// missing object property without a default is created when its own
/// defaults fill every property it requires. Fails, with the JSON pointer of
/// the schema whose defaults were being applied, when that would create
/// more than [`MAX_DEFAULTS_CREATED`] values.
pub fn apply_defaults(schema: &Value, value: &mut Value) -> Result<(), String> {
    let mut defaults = Defaults {
        root: schema,
        created: 0,
    };
    defaults.apply(schema, "#".to_string(), value, 0)
}

/// Applies one schema's defaults, counting the values created.
struct Defaults<'a> {
    root: &'a Value,
    created: usize,
}

impl<'a> Defaults<'a> {
    /// Counts `n` values created; an error naming `pointer` past the budget.
    fn create(&mut self, n: usize, pointer: &str) -> Result<(), String> {
        self.created = self.created.saturating_add(n);
        if self.created > MAX_DEFAULTS_CREATED {
            return Err(pointer.to_string());
        }
        Ok(())
    }

    fn apply(
        &mut self,
        schema: &'a Value,
        pointer: String,
        value: &mut Value,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEFAULTS_DEPTH {
            return Ok(());
        }
        let (schema, pointer) = resolve(self.root, schema, pointer);
        if let (Some(items), Value::Array(values)) = (schema.get("items"), &mut *value) {
            for v in values {
                self.apply(items, format!("{pointer}/items"), v, depth + 1)?;
            }
            return Ok(());
        }
        let (Some(props), Value::Object(obj)) = (schema.get("properties").and_then(Value::as_object), value)
        else {
            return Ok(());
        };
        for (key, prop) in props {
            let at = format!(
                "{pointer}/properties/{}",
                key.replace('~', "~0").replace('/', "~1")
            );
            let (prop_schema, at) = resolve(self.root, prop, at);
            match obj.get_mut(key) {
                Some(existing) => self.apply(prop_schema, at, existing, depth + 1)?,
                None => {
                    if let Some(default) = prop_schema.get("default") {
                        self.create(count_values(default, MAX_DEFAULTS_CREATED + 1), &at)?;
                        let mut v = default.clone();
                        self.apply(prop_schema, at, &mut v, depth + 1)?;
                        obj.insert(key.clone(), v);
                    } else if prop_schema.get("properties").is_some() {
                        self.create(1, &at)?;
                        let mut v = Value::Object(Map::new());
                        self.apply(prop_schema, at, &mut v, depth + 1)?;
                        let required_met =
                            prop_schema
                                .get("required")
                                .and_then(Value::as_array)
                                .is_none_or(|req| {
                                    req.iter().filter_map(Value::as_str).all(|r| v.get(r).is_some())
                                });
                        if required_met {
                            obj.insert(key.clone(), v);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The values in `value` (itself, and everything it holds), counted up to
/// `limit`.
fn count_values(value: &Value, limit: usize) -> usize {
    let mut count = 0;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        count += 1;
        if count >= limit {
            break;
        }
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

#[cfg(test)]
#[path = "validate_tests.rs"]
pub(crate) mod tests;
