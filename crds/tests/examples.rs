//! Every file under `examples/` is a ServiceRequest that deserializes strictly.

use std::path::Path;

use paver_crds::ServiceRequest;

#[test]
fn examples_deserialize() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable example");
        let sr: ServiceRequest = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not a ServiceRequest: {e}", path.display()));
        assert!(
            sr.metadata.namespace.is_some(),
            "{} names its namespace",
            path.display()
        );
        assert!(
            sr.spec.parameters.is_object(),
            "{} has parameters",
            path.display()
        );
        names.push(sr.spec.route.clone());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "batch-job",
            "data-pipeline",
            "microservice",
            "pci-payment-service",
            "web-frontend"
        ],
        "one example per shipped route"
    );
}
