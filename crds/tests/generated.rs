//! The CRD YAML under `crds/` must be what the code generates, every field
//! must carry a description for `kubectl explain`, and the schemas must be
//! structural (only free-form objects preserve unknown fields).

use std::path::Path;

use serde_json::Value;

#[test]
fn crd_files_are_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (file, crd) in paver_crds::all() {
        let want = paver_crds::to_yaml(&crd);
        let have = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if have != want {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/{} out of date with the Rust types; run `make crds`",
        stale.join(", crds/")
    );
    // The Helm chart installs the same files from its crds/.
    let chart = dir.join("../charts/paver/crds");
    let stale: Vec<_> = paver_crds::all()
        .into_iter()
        .filter(|(file, crd)| {
            std::fs::read_to_string(chart.join(file)).unwrap_or_default() != paver_crds::to_yaml(crd)
        })
        .map(|(file, _)| file)
        .collect();
    assert!(
        stale.is_empty(),
        "charts/paver/crds/{} out of date with the Rust types; run `make crds`",
        stale.join(", charts/paver/crds/")
    );
    // The install kustomization holds the same CRDs as one stream.
    let manifests = dir.join("../manifests/crds.yaml");
    assert!(
        std::fs::read_to_string(&manifests).unwrap_or_default() == paver_crds::stream(),
        "manifests/crds.yaml out of date with the Rust types; run `make crds`"
    );
}

fn walk(path: &str, schema: &Value, missing: &mut Vec<String>, open: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else { return };
    if obj.contains_key("$ref") || obj.contains_key("allOf") || obj.contains_key("anyOf") {
        missing.push(format!("{path}: not inlined ($ref/allOf/anyOf)"));
    }
    if obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        open.push(path.to_string());
    }
    if !obj.contains_key("type") && !obj.contains_key("x-kubernetes-int-or-string") {
        missing.push(format!("{path}: no type (not structural)"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            let desc = sub.get("description").and_then(Value::as_str).unwrap_or("");
            if desc.trim().is_empty() {
                missing.push(format!("{p}: no description"));
            }
            walk(&p, sub, missing, open);
        }
    }
    if let Some(items) = obj.get("items") {
        walk(&format!("{path}[]"), items, missing, open);
    }
    if let Some(add) = obj.get("additionalProperties") {
        walk(&format!("{path}{{}}"), add, missing, open);
    }
}

#[test]
fn every_field_is_described_and_structural() {
    let mut missing = Vec::new();
    let mut open = Vec::new();
    for (_, crd) in paver_crds::all() {
        let crd = serde_json::to_value(&crd).expect("crd to json");
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or("?").to_string();
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            for part in ["spec", "status"] {
                if let Some(sub) = schema["properties"].get(part) {
                    walk(&format!("{kind}.{part}"), sub, &mut missing, &mut open);
                }
            }
        }
    }
    assert!(missing.is_empty(), "schema problems:\n{}", missing.join("\n"));
    open.sort();
    assert_eq!(
        open,
        vec![
            "PaveRoute.spec.parameters",
            "PaveRouteRevision.spec.spec.parameters",
            "PolicyBundle.spec.data",
            "PolicyBundleRevision.spec.spec.data",
            "ServiceRequest.spec.parameters",
        ],
        "only free-form objects may preserve unknown fields"
    );
}

/// What `kubectl apply --dry-run=client` checks of a CRD: a well-formed
/// apiextensions.k8s.io/v1 object with names, scope, one storage version
/// with a schema, the status subresource and printer columns.
#[test]
fn stream_is_well_formed_crds() {
    let stream = paver_crds::stream();
    let mut kinds = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&stream) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("valid YAML document");
        assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(v["kind"], "CustomResourceDefinition");
        let plural = v["spec"]["names"]["plural"].as_str().expect("plural");
        assert_eq!(v["metadata"]["name"], format!("{plural}.paver.dev"));
        assert_eq!(v["spec"]["group"], "paver.dev");
        assert!(
            v["spec"]["names"]["categories"]
                .as_array()
                .expect("categories")
                .contains(&"paver".into())
        );
        let versions = v["spec"]["versions"].as_array().expect("versions");
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0]["name"], "v1alpha1");
        assert_eq!(versions[0]["storage"], true);
        assert_eq!(versions[0]["schema"]["openAPIV3Schema"]["type"], "object");
        let kind = v["spec"]["names"]["kind"].as_str().expect("kind").to_string();
        // Approvals have no status; Scorecards are written whole by the
        // operator in one apply; revisions are immutable records.
        if !matches!(
            kind.as_str(),
            "Approval" | "Scorecard" | "PaveRouteRevision" | "PolicyBundleRevision"
        ) {
            assert!(
                versions[0]["subresources"]["status"].is_object(),
                "{kind} has a status subresource"
            );
        }
        // Typed parse: the YAML is a CustomResourceDefinition k8s-openapi accepts.
        let _: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_json::from_value(v.clone()).expect("typed CRD");
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Approval",
            "PaveRoute",
            "PaveRouteRevision",
            "PolicyBundle",
            "PolicyBundleRevision",
            "Scorecard",
            "ServiceRequest"
        ]
    );
}

#[test]
fn printer_columns_match_the_design() {
    let columns = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
        crd.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .map(|cols| cols.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    use kube::CustomResourceExt;
    assert_eq!(
        columns(&paver_crds::ServiceRequest::crd()),
        ["ROUTE", "TEAM", "PHASE", "REVISION", "AGE"]
    );
    assert_eq!(
        columns(&paver_crds::Scorecard::crd()),
        ["TEAM", "ROUTE", "SCORE", "LEVEL", "PASSED", "FAILED", "AGE"]
    );
    assert_eq!(
        paver_crds::ServiceRequest::crd().spec.names.short_names,
        Some(vec!["sr".to_string()])
    );
    assert_eq!(
        paver_crds::Scorecard::crd().spec.names.short_names,
        Some(vec!["sc".to_string()])
    );
    assert_eq!(
        paver_crds::PolicyBundle::crd().spec.names.short_names,
        Some(vec!["pb".to_string()])
    );
    assert_eq!(
        paver_crds::PaveRoute::crd().spec.names.short_names,
        Some(vec!["route".to_string()])
    );
}
