use paver_crds::{PaveRouteSpec, ServiceRequestSpec};
use serde_json::json;

use super::*;

pub(crate) fn route(name: &str, version: &str, lifecycle: Lifecycle, schema: Option<Value>) -> PaveRoute {
    let mut r = PaveRoute::new(
        name,
        PaveRouteSpec {
            version: version.into(),
            lifecycle,
            parameters: schema,
            ..Default::default()
        },
    );
    r.metadata.name = Some(name.into());
    r
}

fn compiled(name: &str, version: &str, lifecycle: Lifecycle) -> CompiledRoute {
    compile(route(name, version, lifecycle, None)).expect("compile")
}

pub(crate) fn request(parameters: Value) -> ServiceRequest {
    let mut req = ServiceRequest::new(
        "orders-api",
        ServiceRequestSpec {
            route: "svc".into(),
            team: "commerce".into(),
            owner: "team@example.com".into(),
            cost_center: "CC-1".into(),
            parameters,
            ..Default::default()
        },
    );
    req.metadata.namespace = Some("commerce".into());
    req
}

fn schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["compute"],
        "properties": {
            "compute": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 1, "default": 2},
                    "autoscaling": {"$ref": "#/$defs/autoscaling"}
                }
            },
            "observability": {
                "type": "object",
                "properties": {"slo": {"type": "object", "properties": {"availability": {"type": "number", "default": 99.5}}}}
            },
            "database": {"type": "object", "required": ["engine"], "properties": {"engine": {"type": "string"}, "encrypted": {"default": true}}},
            "deps": {"type": "array", "items": {"type": "object", "properties": {"retries": {"type": "integer", "default": 2}}}}
        },
        "$defs": {"autoscaling": {"type": "object", "properties": {"enabled": {"type": "boolean", "default": false}}}}
    })
}

#[test]
fn applies_nested_defaults() {
    let r = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema()))).expect("compile");
    let v = validate_request(&request(json!({"compute": {"image": "x"}, "deps": [{}]})), &r).expect("valid");
    assert_eq!(v.parameters["compute"]["replicas"], 2);
    assert_eq!(v.parameters["compute"]["autoscaling"]["enabled"], false);
    assert_eq!(v.parameters["observability"]["slo"]["availability"], 99.5);
    assert_eq!(v.parameters["deps"][0]["retries"], 2);
    // An object with required fields and no default is not invented.
    assert!(v.parameters.get("database").is_none());
    assert!(v.warnings.is_empty());
}

#[test]
fn schema_errors_name_every_field() {
    let r = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema()))).expect("compile");
    let params = json!({"compute": {"replicas": 0}, "typo": 1, "deps": [{"retries": "x"}]});
    let errors = validate_request(&request(params), &r).expect_err("invalid");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"spec.parameters.compute.image"), "{errors:?}");
    assert!(fields.contains(&"spec.parameters.compute.replicas"), "{errors:?}");
    assert!(fields.contains(&"spec.parameters.typo"), "{errors:?}");
    assert!(fields.contains(&"spec.parameters.deps[0].retries"), "{errors:?}");
    let replicas = errors
        .iter()
        .find(|e| e.field == "spec.parameters.compute.replicas")
        .expect("replicas");
    assert!(replicas.message.contains("minimum"), "{replicas}");
}

#[test]
fn request_fields_are_checked_together() {
    let r = compiled("svc", "1.0.0", Lifecycle::Active);
    let mut req = request(json!({}));
    req.metadata.name = Some("Bad_Name".into());
    req.metadata.namespace = None;
    req.spec.team = "../etc".into();
    req.spec.owner = " ".into();
    let errors = validate_request(&req, &r).expect_err("invalid");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["metadata.name", "metadata.namespace", "spec.team", "spec.owner"]
    );
}

#[test]
fn deprecated_route_warns() {
    let r = compiled("svc", "1.0.0", Lifecycle::Deprecated);
    let v = validate_request(&request(json!({})), &r).expect("valid");
    assert!(v.warnings[0].contains("deprecated"), "{:?}", v.warnings);
}

#[test]
fn selects_highest_matching_non_retired_version() {
    let routes = vec![
        compiled("svc", "1.0.0", Lifecycle::Active),
        compiled("svc", "1.4.2", Lifecycle::Active),
        compiled("svc", "1.5.0", Lifecycle::Retired),
        compiled("svc", "2.0.0", Lifecycle::Active),
        compiled("other", "9.0.0", Lifecycle::Active),
    ];
    let mut spec = request(json!({})).spec;
    assert_eq!(
        select_route(&routes, &spec).expect("any").version.to_string(),
        "2.0.0"
    );
    spec.route_version = Some("^1".into());
    assert_eq!(
        select_route(&routes, &spec).expect("^1").version.to_string(),
        "1.4.2"
    );
    spec.route_version = Some("^3".into());
    let err = select_route(&routes, &spec).expect_err("none");
    assert_eq!(err.field, "spec.routeVersion");
    assert!(err.message.contains("1.0.0, 1.4.2, 1.5.0, 2.0.0"), "{err}");
    spec.route_version = Some("=1.5.0".into());
    let err = select_route(&routes, &spec).expect_err("retired");
    assert_eq!(err.field, "spec.route");
    assert!(err.message.contains("retired"), "{err}");
    spec.route_version = Some("not a range".into());
    assert_eq!(
        select_route(&routes, &spec).expect_err("bad range").field,
        "spec.routeVersion"
    );
    spec.route = "nope".into();
    let err = select_route(&routes, &spec).expect_err("unknown");
    assert_eq!(err.field, "spec.route");
    assert!(err.message.contains("known routes: other, svc"), "{err}");
}

#[test]
fn bad_version_and_schema_are_named() {
    let errors =
        compile(route("svc", "one", Lifecycle::Active, Some(json!({"type": 12})))).expect_err("invalid");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["spec.version", "spec.parameters"]);
}

#[test]
fn external_refs_are_refused_not_fetched() {
    for target in [
        "http://127.0.0.1:9/schema.json",
        "https://example.com/s.json",
        "file:///etc/passwd",
    ] {
        let schema = json!({"type": "object", "properties": {"x": {"$ref": target}}});
        let start = std::time::Instant::now();
        let errors = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema))).expect_err(target);
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(errors[0].field, "spec.parameters");
        assert!(
            errors[0].message.contains("not allowed"),
            "{target}: {}",
            errors[0].message
        );
    }
}
