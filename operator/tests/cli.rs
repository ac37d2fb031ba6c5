//! The `paver` binary as a developer uses it: verdicts, exit codes, render
//! output, bundle tests, and clear errors on bad input.

use std::{path::PathBuf, process::Command};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn paver(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_paver"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run paver");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write fixture");
    path.display().to_string()
}

fn example_with(replace: &str, with: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/orders-api.yaml")).expect("example");
    assert!(text.contains(replace), "fixture text {replace:?} present");
    text.replace(replace, with)
}

/// manifests/ (embedded in the binary) and the Helm chart hold what
/// `make pack` makes of routes/ and policy-bundles/.
#[test]
fn packed_manifests_are_fresh() {
    let (want_routes, want_bundles) = paver::cli::packed(&root()).expect("pack routes and bundles");
    for dir in ["manifests", "charts/paver/files"] {
        for (file, want) in [
            ("routes.yaml", &want_routes),
            ("policy-bundles.yaml", &want_bundles),
        ] {
            let have = std::fs::read_to_string(root().join(dir).join(file)).unwrap_or_default();
            assert!(&have == want, "{dir}/{file} is stale: run `make pack`");
        }
    }
}

/// The install's NetworkPolicy covers the operator's Pods and its one
/// port, and admits only the labelled scraping namespaces: a rename of a
/// label or a port in the Deployment that left the policy selecting
/// nothing (so every Pod could reach /metrics again) fails here.
#[test]
fn the_operator_port_is_open_only_to_scraping_namespaces() {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(root().join("manifests/deployment.yaml")).expect("read");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (deploy, policy) = (kind("Deployment"), kind("NetworkPolicy"));
    let pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("labels");
    let selector = policy["spec"]["podSelector"]["matchLabels"]
        .as_object()
        .expect("podSelector");
    assert!(!selector.is_empty(), "the policy selects every Pod");
    for (k, v) in selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "podSelector {k}={v} does not match the operator Pods"
        );
    }
    assert_eq!(policy["metadata"]["namespace"], deploy["metadata"]["namespace"]);
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().expect("ingress rules");
    let ports: Vec<&str> = deploy["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for rule in ingress {
        for from in rule["from"]
            .as_array()
            .expect("a rule without `from` admits everyone")
        {
            assert_eq!(
                from,
                &serde_json::json!({"namespaceSelector": {"matchLabels": {"paver.dev/scrape-metrics": "true"}}}),
                "only the labelled namespaces are admitted"
            );
        }
        for port in rule["ports"].as_array().expect("ports") {
            let name = port["port"].as_str().expect("a named port");
            assert!(
                ports.contains(&name),
                "port {name} is not the operator container's"
            );
        }
    }
}

/// The binary allocates with jemalloc under the settings of
/// .cargo/config.toml (glibc's malloc ignores `MALLOC_CONF` and prints
/// nothing; a build that lost the settings prints other values).
#[test]
fn binary_runs_on_jemalloc_with_one_arena() {
    let out = Command::new(env!("CARGO_BIN_EXE_paver"))
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .expect("run paver");
    let stats = String::from_utf8_lossy(&out.stderr);
    for want in [
        "opt.narenas: 1\n",
        "opt.dirty_decay_ms: 1000 ",
        "opt.muzzy_decay_ms: 0 ",
        "opt.background_thread: true ",
    ] {
        assert!(
            stats.contains(want),
            "jemalloc's statistics lack {want:?}:\n{}",
            stats.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn payment_gateway_verdict_names_route_estimate_and_approval() {
    let (code, out, err) = paver(&["validate", "-f", "examples/payment-gateway.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("payments/payment-gateway: ALLOWED, NEEDS APPROVAL"),
        "{out}"
    );
    assert!(out.contains("pci-payment-service@"), "{out}");
    assert!(out.contains("USD/month"), "{out}");
    assert!(out.contains("needs approval because"), "{out}");
}

#[test]
fn every_example_is_allowed_and_json_is_machine_readable() {
    let mut args = vec!["validate", "-o", "json", "-f"];
    let files = [
        "orders-api",
        "storefront-web",
        "clickstream-etl",
        "invoice-reconciler",
        "payment-gateway",
    ]
    .map(|n| format!("examples/{n}.yaml"));
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = paver(&args);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json output");
    let verdicts = doc["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 5);
    for v in verdicts {
        assert!(
            ["allowed", "needsApproval"].contains(&v["outcome"].as_str().unwrap_or("")),
            "{v}"
        );
        assert!(v["estimate"]["monthly"].as_f64().unwrap_or(0.0) > 0.0, "{v}");
    }
}

#[test]
fn denied_request_exits_1_naming_bundle_and_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let denied = example_with("replicas: 2", "replicas: 1");
    let denied = denied.replace("environment: staging", "environment: production");
    let file = write(&dir, "denied.yaml", &denied);
    let (code, out, err) = paver(&["validate", "-f", &file]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("DENIED") && out.contains("violations:") && out.contains("reliability/"),
        "{out}"
    );
}

#[test]
fn schema_violation_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(&dir, "bad.yaml", &example_with("replicas: 2", "replicas: lots"));
    let (code, out, err) = paver(&["validate", "-f", &file]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("INVALID") && out.contains("spec.parameters.compute.replicas"),
        "{out}"
    );
}

#[test]
fn unusable_files_exit_2_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "malformed.yaml",
            "kind: ServiceRequest\nspec: [unclosed\n".to_string(),
            "invalid YAML",
        ),
        (
            "configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".to_string(),
            "ConfigMap",
        ),
        (
            "missing-route.yaml",
            example_with("route: microservice", "route: no-such-route"),
            "no-such-route",
        ),
        (
            "huge.yaml",
            format!("a: \"{}\"\n", "x".repeat(5 * 1024 * 1024)),
            "larger than",
        ),
    ];
    for (name, text, expect) in cases {
        let file = write(&dir, name, &text);
        let (code, out, err) = paver(&["validate", "-f", &file]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(
            format!("{out}{err}").contains(expect),
            "{name}: expected {expect:?} in {out}{err}"
        );
    }
    let (code, _, err) = paver(&["validate", "-f", "no/such/file.yaml"]);
    assert_eq!(code, 2);
    assert!(err.contains("no/such/file.yaml"), "{err}");
}

#[test]
fn render_writes_the_full_file_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let (code, out, err) = paver(&[
        "render",
        "-f",
        "examples/payment-gateway.yaml",
        "--out",
        &out_dir.display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let base = out_dir.join("payments/payments/payment-gateway");
    for file in [
        "argocd-application.yaml",
        "CODEOWNERS",
        ".github/workflows/ci.yaml",
        "manifests/deployment.yaml",
    ] {
        assert!(base.join(file).is_file(), "{file} rendered; stderr: {err}");
    }
    assert!(
        err.contains("file(s) in payments/payments/payment-gateway"),
        "{err}"
    );
}

#[test]
fn bundle_tests_pass_and_a_failing_bundle_fails() {
    let (code, out, err) = paver(&["test", "policy-bundles"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.lines().last().unwrap_or("").ends_with(" 0 failed"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let b = dir.path().join("broken");
    std::fs::create_dir_all(&b).expect("mkdir");
    std::fs::write(b.join("bundle.yaml"), "apiVersion: paver.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: broken}\nspec: {version: 0.1.0}\n").expect("write");
    std::fs::write(
        b.join("p.rego"),
        "package paver.broken\n\ndeny contains \"always\" if { true }\n",
    )
    .expect("write");
    std::fs::write(b.join("p_test.rego"), "package paver.broken_test\n\nimport data.paver.broken\n\ntest_never_denies if { count(broken.deny) == 0 }\n").expect("write");
    let (code, out, _) = paver(&["test", &b.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL") && out.contains("test_never_denies") && out.contains("0 passed, 1 failed"),
        "{out}"
    );

    std::fs::write(
        b.join("p.rego"),
        "package paver.broken\n\ndeny contains msg if {\n  msg := \n}\n",
    )
    .expect("write");
    let (code, out, _) = paver(&["test", &b.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ERROR p.rego:"), "{out}");
}

#[test]
fn paver_test_lints_routes_for_unescaped_values() {
    let (code, out, err) = paver(&["test", "routes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("route microservice@"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("microservice");
    copy_dir(&root().join("routes/microservice"), &copy);
    let cm = copy.join("templates/manifests/configmap.yaml");
    let text = std::fs::read_to_string(&cm).expect("read");
    std::fs::write(&cm, format!("{text}\n# {{{{ owner | safe }}}}\n")).expect("write");
    let (code, out, _) = paver(&["test", &copy.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("LINT  manifests/configmap.yaml:") && out.contains("safe"),
        "{out}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A request whose render fails is not a success: `paver validate` and
/// `paver render` exit 2 and say why, as the operator marks it Failed.
#[test]
fn a_render_that_fails_exits_2_in_validate_and_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let route = write(
        &dir,
        "route.yaml",
        "apiVersion: paver.dev/v1alpha1\nkind: PaveRoute\nmetadata: {name: broken-render}\n\
         spec:\n  version: 1.0.0\n  templates:\n    inline:\n      - path: out.yaml\n        \
         content: \"replicas: {{ parameters.replicas // 0 }}\"\n",
    );
    let request = write(
        &dir,
        "request.yaml",
        "apiVersion: paver.dev/v1alpha1\nkind: ServiceRequest\nmetadata: {name: web, namespace: shop}\n\
         spec:\n  route: broken-render\n  team: shop\n  owner: shop@example.com\n  \
         environment: development\n  parameters: {replicas: 2}\n",
    );
    // No bundles: policy allows it, so only the render can fail.
    let bundles = dir.path().join("no-bundles");
    std::fs::create_dir(&bundles).expect("mkdir");
    let bundles = bundles.display().to_string();
    let run = |command: &str| paver(&[command, "--routes", &route, "--bundles", &bundles, "-f", &request]);
    let (code, out, err) = run("validate");
    assert_eq!(code, 2, "validate: {out}{err}");
    assert!(out.contains("shop/web: ALLOWED, RENDER FAILED"), "{out}");
    assert!(out.contains("render:"), "the render error is printed: {out}");
    let (code, out, err) = run("render");
    assert_eq!(code, 2, "render: {out}{err}");
    assert!(err.contains("nothing rendered for shop/web"), "{err}");
}

/// A bundle or route given twice is refused: offline the second would
/// silently replace the first.
#[test]
fn a_bundle_or_route_given_twice_is_refused() {
    let (code, out, err) = paver(&["test", "policy-bundles", "policy-bundles/security"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bundle \"security\" is defined twice"), "{err}");
    let (code, out, err) = paver(&[
        "validate",
        "--routes",
        "routes",
        "--routes",
        "routes/microservice",
        "-f",
        "examples/orders-api.yaml",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("route \"microservice\" is defined twice"), "{err}");
}

/// Symbolic links never carry a write or a read outside where it belongs:
/// not under `--out`, not in a route's folder.
#[test]
fn symlinks_under_out_and_in_routes_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("payments/payments")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, out.join("payments/payments/payment-gateway")).expect("symlink");
    let (code, _, err) = paver(&[
        "render",
        "-f",
        "examples/payment-gateway.yaml",
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&outside).expect("read").count(),
        0,
        "nothing written through the link"
    );

    // A route whose templates/ folder is a link to files elsewhere.
    let routes = dir.path().join("routes/linked");
    std::fs::create_dir_all(&routes).expect("mkdir");
    std::fs::copy(
        root().join("routes/microservice/route.yaml"),
        routes.join("route.yaml"),
    )
    .expect("copy");
    std::os::unix::fs::symlink(
        root().join("routes/microservice/templates"),
        routes.join("templates"),
    )
    .expect("symlink");
    let (code, _, err) = paver(&[
        "validate",
        "--routes",
        &dir.path().join("routes").display().to_string(),
        "-f",
        "examples/orders-api.yaml",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("symbolic links are not allowed"), "{err}");
}

/// A folder of request files is validated file by file, as
/// `kubectl apply -f examples/` would apply them.
#[test]
fn validate_reads_every_request_of_a_folder() {
    let (code, out, err) = paver(&["validate", "-f", "examples/"]);
    assert_eq!(code, 0, "{out}{err}");
    for request in [
        "commerce/orders-api",
        "data/clickstream-etl",
        "finance/invoice-reconciler",
        "payments/payment-gateway",
        "web/storefront-web",
    ] {
        assert!(out.contains(&format!("{request}: ALLOWED")), "{request} in {out}");
    }
    let empty = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = paver(&["validate", "-f", &empty.path().display().to_string()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds no .yaml or .yml file"), "{err}");
}

/// `paver diff` previews a new version of a route against request files:
/// the unpinned request's files change (the diff shows the template
/// change), the one pinned to 1.x stays, one the new schema refuses would
/// fail (exit 1), and `-o json` gives the same summary.
#[test]
fn diff_previews_a_new_route_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let route = std::fs::read_to_string(root().join("routes/microservice/route.yaml")).expect("route");
    assert!(
        route.contains("version: \"1.0.0\""),
        "the shipped route is at 1.0.0"
    );
    let new_dir = dir.path().join("microservice");
    std::fs::create_dir(&new_dir).expect("mkdir");
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for entry in walk(from) {
            let rel = entry.strip_prefix(from).expect("under");
            let target = to.join(rel);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&entry, &target).expect("copy");
        }
    };
    copy(&root().join("routes/microservice"), &new_dir);
    let new_route = route
        .replace("version: \"1.0.0\"", "version: \"2.0.0\"")
        .replace("maximum: 100, default: 2}", "maximum: 3, default: 2}");
    assert_ne!(new_route, route, "the schema line is there to change");
    std::fs::write(new_dir.join("route.yaml"), &new_route).expect("write");
    let slo = new_dir.join("templates/slo.yaml");
    let text = std::fs::read_to_string(&slo).expect("slo template");
    std::fs::write(&slo, format!("{text}# reviewed for 2.0.0\n")).expect("write");

    let moves = write(
        &dir,
        "moves.yaml",
        &example_with("name: orders-api", "name: orders-moves"),
    );
    let pinned = write(
        &dir,
        "pinned.yaml",
        &example_with("name: orders-api", "name: orders-pinned").replace(
            "  route: microservice\n",
            "  route: microservice\n  routeVersion: \"^1.0\"\n",
        ),
    );
    let text = example_with("name: orders-api", "name: orders-big");
    let big = write(&dir, "big.yaml", &text.replacen("replicas: ", "replicas: 5 #", 1));
    let new = new_dir.display().to_string();
    let (code, out, err) = paver(&["diff", "--route", &new, "-f", &moves, "-f", &pinned, "-f", &big]);
    assert_eq!(code, 1, "a request would fail: {out}\n{err}");
    assert!(
        out.contains("1 changed, 1 unchanged, 1 would fail (3 requests)"),
        "{out}"
    );
    assert!(out.contains("commerce/orders-moves: "), "{out}");
    assert!(
        out.contains("(microservice@1.0.0 -> microservice@2.0.0)"),
        "{out}"
    );
    assert!(out.contains("+# reviewed for 2.0.0"), "{out}");
    assert!(out.contains("commerce/orders-big: WOULD FAIL"), "{out}");
    assert!(out.contains("spec.parameters.compute.replicas"), "{out}");
    assert!(
        !out.contains("orders-pinned: "),
        "an unchanged request is listed only with --stat: {out}"
    );
    let (_, out, _) = paver(&["diff", "--route", &new, "-f", &pinned, "--stat"]);
    assert!(
        out.contains("commerce/orders-pinned: unchanged (microservice@1.0.0)"),
        "{out}"
    );
    let (code, out, _) = paver(&["diff", "--route", &new, "-f", &moves, "-o", "json"]);
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["summary"]["changed"], 1, "{doc}");
    assert_eq!(doc["entries"][0]["after"], "microservice@2.0.0");
    let (code, _, err) = paver(&["diff", "--route", &new]);
    assert_eq!(code, 2);
    assert!(err.contains("give the requests to preview with -f"), "{err}");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
