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
        select_route(&routes, &spec, None)
            .expect("any")
            .version
            .to_string(),
        "2.0.0"
    );
    spec.route_version = Some("^1".into());
    assert_eq!(
        select_route(&routes, &spec, None)
            .expect("^1")
            .version
            .to_string(),
        "1.4.2"
    );
    spec.route_version = Some("^3".into());
    let unselected = select_route(&routes, &spec, None).expect_err("none");
    assert!(unselected.no_match);
    let err = unselected.error;
    assert_eq!(err.field, "spec.routeVersion");
    assert!(err.message.contains("1.0.0, 1.4.2, 1.5.0, 2.0.0"), "{err}");
    spec.route_version = Some("=1.5.0".into());
    let err = select_route(&routes, &spec, None).expect_err("retired").error;
    assert_eq!(err.field, "spec.route");
    assert!(err.message.contains("retired"), "{err}");
    spec.route_version = Some("not a range".into());
    assert_eq!(
        select_route(&routes, &spec, None)
            .expect_err("bad range")
            .error
            .field,
        "spec.routeVersion"
    );
    spec.route = "nope".into();
    let err = select_route(&routes, &spec, None).expect_err("unknown").error;
    assert_eq!(err.field, "spec.route");
    assert!(err.message.contains("known routes: other, svc"), "{err}");
}

/// The head (the version the PaveRoute's spec publishes) bounds what is
/// offered: versions above it are withdrawn, and a retired head retires
/// every version.
#[test]
fn the_head_withdraws_higher_versions_and_retires_the_route() {
    let routes = vec![
        compiled("svc", "1.0.0", Lifecycle::Active),
        compiled("svc", "1.4.0", Lifecycle::Active),
        compiled("svc", "2.0.0", Lifecycle::Active),
    ];
    let mut spec = request(json!({})).spec;
    let head = semver::Version::new(1, 4, 0);
    let pick = select_route(&routes, &spec, Some(&head)).expect("1.4.0");
    assert_eq!(pick.version, head);
    spec.route_version = Some("^2".into());
    let unselected = select_route(&routes, &spec, Some(&head)).expect_err("2.0.0 is withdrawn");
    assert!(unselected.no_match);
    assert!(
        unselected.error.message.contains("available: 1.0.0, 1.4.0"),
        "{unselected:?}"
    );
    let retired = vec![
        compiled("svc", "1.0.0", Lifecycle::Active),
        compiled("svc", "2.0.0", Lifecycle::Retired),
    ];
    spec.route_version = Some("^1".into());
    let err = select_route(&retired, &spec, None).expect_err("the route is retired");
    assert!(!err.no_match);
    assert!(err.error.message.contains("svc@2.0.0 is retired"), "{err:?}");
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

/// A schema whose defaults contain themselves twice (through `$ref: "#"`)
/// built 2^33 objects for every request; the route is refused when it is
/// compiled, naming where.
#[test]
fn defaults_that_expand_without_bound_are_refused_at_compile() {
    let schema = json!({
        "type": "object",
        "properties": {"a": {"$ref": "#"}, "b": {"$ref": "#"}, "n": {"type": "integer", "default": 1}}
    });
    let start = std::time::Instant::now();
    let errors =
        compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema))).expect_err("unbounded defaults");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.parameters");
    assert!(
        errors[0]
            .message
            .starts_with("the schema's defaults would create more than 10000 values for a request without parameters (at #/properties/"),
        "{}",
        errors[0].message
    );
}

/// Defaults are counted for each request too: here each array item gets
/// 21 values (an object holding 20 numbers), fine for a few items and
/// refused for 1,000.
#[test]
fn defaults_created_for_a_request_are_bounded() {
    let schema = json!({
        "type": "object",
        "properties": {"list": {"type": "array", "items": {"$ref": "#/$defs/item"}}},
        "$defs": {"item": {"type": "object", "properties": {"p": {"default": (0..20).collect::<Vec<u32>>()}}}}
    });
    let r = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema))).expect("compile");
    let few = validate_request(&request(json!({"list": [{}, {}]})), &r).expect("valid");
    assert_eq!(few.parameters["list"][1]["p"][19], 19);
    let many: Vec<Value> = (0..1000).map(|_| json!({})).collect();
    let errors = refused(validate_request(&request(json!({"list": many})), &r));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.parameters");
    assert_eq!(
        errors[0].message,
        "applying the defaults of route svc@1.0.0's schema would create more than 10000 values \
         (at #/$defs/item/properties/p); set the parameters there yourself, or ask for the route to be fixed"
    );
}

/// The errors of a refused request (a valid one is not printed: it is large).
fn refused(result: Result<Validated, Vec<FieldError>>) -> Vec<FieldError> {
    match result {
        Ok(_) => panic!("the request was valid"),
        Err(errors) => errors,
    }
}

/// A 3.9 MB image string was ALLOWED: parameters are bounded in size, string
/// length, nesting and array length, each error naming its field.
#[test]
fn parameters_are_bounded_in_size() {
    let r = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema()))).expect("compile");
    let image = "r".repeat(3_900_000);
    let errors = refused(validate_request(
        &request(json!({"compute": {"image": image}})),
        &r,
    ));
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("spec.parameters", "3900024 bytes as JSON, more than 262144"),
            (
                "spec.parameters.compute.image",
                "3900000 characters, more than 16384"
            ),
        ]
    );

    let deps: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({"d": deep});
    }
    let errors = refused(validate_request(
        &request(json!({"compute": {"image": "x"}, "deps": deps, "deep": deep})),
        &r,
    ));
    let fields: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        fields,
        [
            format!(
                "spec.parameters.deep{}: nests deeper than 32 levels",
                ".d".repeat(32)
            ),
            "spec.parameters.deps: 1001 items, more than 1000".to_string(),
        ]
    );

    // Many fields over the limits: 20 named, the rest counted.
    let strings: Map<String, Value> = (0..30)
        .map(|i| (format!("s{i:02}"), json!("y".repeat(16_385))))
        .collect();
    let errors = refused(validate_request(&request(Value::Object(strings)), &r));
    assert_eq!(errors.len(), 21, "{errors:?}");
    assert_eq!(errors[1].field, "spec.parameters.s00");
    assert_eq!(errors[20].message, "and 11 more fields over Paver's size limits");

    // At the limits: valid.
    let ok = json!({"compute": {"image": "i".repeat(16_384)}, "deps": (0..1000).map(|_| json!({})).collect::<Vec<_>>()});
    validate_request(&request(ok), &r).expect("at the limits");
}

/// `paver.dev/data-classification: "pci "` is no valid label value: the API
/// server refuses the object, so the request is invalid, not judged as not PCI.
#[test]
fn labels_are_read_as_the_api_server_reads_them() {
    let r = compiled("svc", "1.0.0", Lifecycle::Active);
    let mut req = request(json!({}));
    req.metadata.labels = Some([("paver.dev/data-classification".to_string(), "pci ".to_string())].into());
    let errors = refused(validate_request(&req, &r));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].field,
        "metadata.labels[\"paver.dev/data-classification\"]"
    );
    assert!(
        errors[0].message.contains("is not a valid label value"),
        "{}",
        errors[0]
    );
    req.metadata.labels = Some([("paver.dev/data-classification".to_string(), "pci".to_string())].into());
    validate_request(&req, &r).expect("a valid label");
}

/// 15,000 unknown keys were one error naming them all (94 KB): now three
/// named and the rest counted; schema errors and every message are bounded.
#[test]
fn schema_errors_are_bounded() {
    let r = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema()))).expect("compile");
    let mut compute: Map<String, Value> = (0..15_000).map(|i| (format!("k{i}"), json!(1))).collect();
    compute.insert("image".into(), json!("x"));
    let schema_closed = {
        let mut s = schema();
        s["properties"]["compute"]["additionalProperties"] = json!(false);
        s
    };
    let closed = compile(route("svc", "1.0.0", Lifecycle::Active, Some(schema_closed))).expect("compile");
    let errors = refused(validate_request(&request(json!({"compute": compute})), &closed));
    let found: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found[0].starts_with("spec.parameters.compute.k0: is not a known parameter"),
        "{found:?}"
    );
    assert_eq!(
        found[3],
        "spec.parameters.compute: and 14997 more keys that are not known parameters here"
    );

    let deps: Vec<Value> = (0..100).map(|_| json!({"retries": "x"})).collect();
    let errors = refused(validate_request(
        &request(json!({"compute": {"image": "x"}, "deps": deps})),
        &r,
    ));
    assert_eq!(errors.len(), 21, "{errors:?}");
    assert_eq!(
        errors[20].message,
        "and 80 more errors against route svc@1.0.0's schema"
    );

    // A thousand objects of four unknown keys each: still a bounded list.
    let deps: Vec<Value> = (0..1000)
        .map(|_| json!({"a": 1, "b": 2, "c": 3, "d": 4}))
        .collect();
    let mut closed_deps = schema();
    closed_deps["properties"]["deps"]["items"]["additionalProperties"] = json!(false);
    let closed_deps = compile(route("svc", "1.0.0", Lifecycle::Active, Some(closed_deps))).expect("compile");
    let errors = refused(validate_request(
        &request(json!({"compute": {"image": "x"}, "deps": deps})),
        &closed_deps,
    ));
    assert_eq!(errors.len(), 20 + 5 + 1, "{errors:?}");
    assert_eq!(
        errors[25].message,
        "and 3975 more errors against route svc@1.0.0's schema"
    );

    let long = FieldError::new("f".repeat(10_000), "m".repeat(100_000));
    assert!(
        long.field.len() <= crate::MAX_ERROR_FIELD_BYTES,
        "{}",
        long.field.len()
    );
    assert!(
        long.message.len() <= crate::MAX_ERROR_MESSAGE_BYTES,
        "{}",
        long.message.len()
    );
    assert!(long.message.ends_with("more bytes)"), "{}", &long.message[1000..]);
}
