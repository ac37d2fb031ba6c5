//! Every shipped route renders every example request into manifests that
//! deserialize strictly into their Kubernetes types.

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::{
    Resource,
    api::{
        apps::v1::Deployment,
        autoscaling::v2::HorizontalPodAutoscaler,
        batch::v1::CronJob,
        core::v1::{ConfigMap, Service, ServiceAccount},
        networking::v1::{Ingress, NetworkPolicy},
        policy::v1::PodDisruptionBudget,
    },
};
use paver::{
    content,
    core::{
        estimate::estimate,
        render::{APPLICATION_FILE, MANIFESTS_DIR, RenderOptions, Rendered, render},
        validate::{CompiledRoute, compile, select_route, validate_request},
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn routes() -> Vec<CompiledRoute> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(root().join("routes"))
        .expect("routes/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let route = content::load_route_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let compiled = compile(route).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
        out.push(compiled);
    }
    out
}

fn options() -> RenderOptions {
    RenderOptions {
        repo_url: "https://git.example.com/platform/gitops.git".into(),
        revision: "main".into(),
        destination_server: None,
    }
}

fn render_example(routes: &[CompiledRoute], file: &str) -> Rendered {
    let path = root().join("examples").join(file);
    let text = std::fs::read_to_string(&path).expect("example");
    let req = content::parse_requests(&text, file).expect("parse").remove(0);
    let route = select_route(routes, &req.spec, None).unwrap_or_else(|e| panic!("{file}: {}", e.error));
    let validated = validate_request(&req, route).unwrap_or_else(|e| panic!("{file}: {e:#?}"));
    let est = estimate(
        route.route.spec.cost.as_ref(),
        &validated.parameters,
        req.spec.environment.as_str(),
    )
    .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(est.monthly > 0.0, "{file}: estimate is zero");
    render(route, &req, &validated.parameters, &est, &options()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Fields in `original` that `typed` does not have: what the typed object
/// silently dropped (unknown or misspelled fields).
fn lost_fields(original: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = format!("{path}.{k}");
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(w) => lost_fields(v, w, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, v) in a.iter().enumerate() {
                match b.get(i) {
                    Some(w) => lost_fields(v, w, &format!("{path}[{i}]"), out),
                    None => out.push(format!("{path}[{i}]")),
                }
            }
        }
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a != b => out.push(format!("{path} ({a} became {b})")),
        _ => {}
    }
}

fn strict<T: Resource + DeserializeOwned + Serialize>(doc: &Value, file: &str) {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: not a {}: {e}", T::KIND));
    let back = serde_json::to_value(&typed).expect("serialize");
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{file}: {} has unknown fields: {lost:?}",
        T::KIND
    );
}

fn check_manifest(doc: &Value, file: &str) {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api, kind) {
        ("apps/v1", "Deployment") => strict::<Deployment>(doc, file),
        ("batch/v1", "CronJob") => strict::<CronJob>(doc, file),
        ("v1", "Service") => strict::<Service>(doc, file),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc, file),
        ("v1", "ConfigMap") => strict::<ConfigMap>(doc, file),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => strict::<HorizontalPodAutoscaler>(doc, file),
        ("policy/v1", "PodDisruptionBudget") => strict::<PodDisruptionBudget>(doc, file),
        ("networking.k8s.io/v1", "NetworkPolicy") => strict::<NetworkPolicy>(doc, file),
        ("networking.k8s.io/v1", "Ingress") => strict::<Ingress>(doc, file),
        other => panic!("{file}: unexpected manifest kind {other:?}"),
    }
    let labels = &doc["metadata"]["labels"];
    for key in [
        "paver.dev/team",
        "paver.dev/service",
        "paver.dev/environment",
        "paver.dev/cost-center",
        "paver.dev/request-id",
        "app.kubernetes.io/managed-by",
    ] {
        assert!(labels[key].is_string(), "{file}: missing FinOps label {key}");
    }
}

const EXAMPLES: &[(&str, &str)] = &[
    ("orders-api.yaml", "microservice"),
    ("storefront-web.yaml", "web-frontend"),
    ("clickstream-etl.yaml", "data-pipeline"),
    ("invoice-reconciler.yaml", "batch-job"),
    ("payment-gateway.yaml", "pci-payment-service"),
];

#[test]
fn every_route_is_shipped_and_compiles() {
    let routes = routes();
    let mut names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = EXAMPLES.iter().map(|(_, r)| *r).collect();
    expected.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn every_example_renders_strict_manifests() {
    let routes = routes();
    for (file, route) in EXAMPLES {
        let rendered = render_example(&routes, file);
        let manifests = format!("{}/{MANIFESTS_DIR}/", rendered.dir);
        let mut kinds = BTreeMap::new();
        for (path, text) in &rendered.files {
            assert!(
                path.starts_with(&format!("{}/", rendered.dir)),
                "{path} outside {}",
                rendered.dir
            );
            if !(path.ends_with(".yaml") || path.ends_with(".yml")) {
                continue;
            }
            let docs = content::yaml_documents(text, path).unwrap_or_else(|e| panic!("{e}\n{text}"));
            if path.starts_with(&manifests) {
                for doc in &docs {
                    check_manifest(doc, path);
                    *kinds
                        .entry(doc["kind"].as_str().unwrap_or_default().to_string())
                        .or_insert(0) += 1;
                }
            }
        }
        assert!(kinds.contains_key("NetworkPolicy"), "{file} ({route}): {kinds:?}");
        assert!(
            kinds.contains_key("Deployment") || kinds.contains_key("CronJob"),
            "{file} ({route}): no workload in {kinds:?}"
        );
        let app = &rendered.files[&format!("{}/{APPLICATION_FILE}", rendered.dir)];
        let app: Value = serde_yaml::from_str(app).expect("application yaml");
        assert_eq!(app["kind"], "Application");
        assert_eq!(
            app["spec"]["source"]["path"],
            format!("{}/{MANIFESTS_DIR}", rendered.dir)
        );
        assert!(
            rendered.files.keys().any(|p| p.ends_with("/CODEOWNERS")),
            "{file}: no CODEOWNERS"
        );
        assert!(
            rendered
                .files
                .keys()
                .any(|p| p.ends_with("/.github/workflows/ci.yaml")),
            "{file}: no CI"
        );
        assert!(
            rendered.files.keys().any(|p| p.ends_with("/slo.yaml")),
            "{file}: no SLO"
        );
    }
}

#[test]
fn renders_are_byte_deterministic() {
    let routes = routes();
    for (file, _) in EXAMPLES {
        let a = render_example(&routes, file);
        let b = render_example(&routes, file);
        assert_eq!(a, b, "{file}");
        assert_eq!(a.digest.len(), 64);
    }
}

#[test]
fn payment_gateway_layout() {
    let routes = routes();
    let rendered = render_example(&routes, "payment-gateway.yaml");
    assert_eq!(rendered.dir, "payments/payments/payment-gateway");
    for f in [
        "manifests/deployment.yaml",
        "manifests/hpa.yaml",
        "manifests/pdb.yaml",
        "manifests/ingress.yaml",
    ] {
        assert!(
            rendered.files.contains_key(&format!("{}/{f}", rendered.dir)),
            "missing {f}: {:?}",
            rendered.files.keys()
        );
    }
    let deployment = &rendered.files["payments/payments/payment-gateway/manifests/deployment.yaml"];
    // Autoscaling owns the replica count.
    assert!(!deployment.contains("replicas:"), "{deployment}");
    assert!(deployment.contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
}

/// `PAVER_DUMP=/tmp/out cargo test --test routes_render dump` writes the
/// rendered examples out for a human to read.
#[test]
fn dump() {
    let Some(out) = std::env::var_os("PAVER_DUMP") else {
        return;
    };
    let routes = routes();
    for (file, _) in EXAMPLES {
        for (path, text) in render_example(&routes, file).files {
            let target = PathBuf::from(&out).join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::write(target, text).expect("write");
        }
    }
}

#[test]
fn shipped_schemas_name_bad_fields() {
    let routes = routes();
    let text = std::fs::read_to_string(root().join("examples/orders-api.yaml")).expect("example");
    let mut req = content::parse_requests(&text, "orders-api.yaml")
        .expect("parse")
        .remove(0);
    req.spec.parameters["compute"]["replicas"] = serde_json::json!("three");
    req.spec.parameters["compute"]["memoryGB"] = serde_json::json!(2);
    req.spec.parameters["networking"]["dependencies"][0]["url"] = serde_json::json!("inventory:8080");
    let route = select_route(&routes, &req.spec, None).expect("route");
    let errors = validate_request(&req, route).expect_err("invalid");
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    for expected in [
        "spec.parameters.compute.replicas",
        "spec.parameters.compute.memoryGB",
        "spec.parameters.networking.dependencies[0].url",
    ] {
        assert!(fields.contains(&expected), "{expected} not in {errors:#?}");
    }
}
