use std::time::{Duration, Instant};

use paver_crds::{ApplicationTemplate, Lifecycle, TemplateFile};
use serde_json::json;

use super::*;
use crate::validate::{
    compile,
    tests::{request, route as bare_route},
};

fn file(path: &str, content: &str) -> TemplateFile {
    TemplateFile {
        path: path.into(),
        content: content.into(),
        when: None,
    }
}

fn route_with(files: Vec<TemplateFile>) -> PaveRoute {
    let mut r = bare_route("svc", "1.2.3", Lifecycle::Active, None);
    r.spec.templates.inline = files;
    r
}

fn try_render(files: Vec<TemplateFile>) -> Result<Rendered, RenderError> {
    let compiled = compile(route_with(files)).expect("compile");
    let req = request(json!({"replicas": 2}));
    render(
        &compiled,
        &req,
        &req.spec.parameters,
        &Estimate::default(),
        &RenderOptions::default(),
    )
}

fn render_one(content: &str) -> Result<String, RenderError> {
    let out = try_render(vec![file("out.txt", content)])?;
    Ok(out
        .files
        .get("commerce/commerce/orders-api/out.txt")
        .cloned()
        .unwrap_or_default())
}

#[test]
fn renders_context_and_helpers() {
    let out = render_one(
        "{{ name }} {{ namespace }} {{ team }} {{ environment }} {{ costCenter }} {{ route.name }}@{{ route.version }}\n\
         {{ {'b': 1, 'a': [1, 2]} | to_yaml }}\n{{ {'b': 1, 'a': 'x'} | to_json }}\n{{ 'hi' | b64encode }} {{ 'Hello, World!' | slugify }}\n\
         {{ labels['paver.dev/request-id'] }} {{ dir }} {{ parameters.replicas }}",
    )
    .expect("render");
    assert_eq!(
        out,
        "orders-api commerce commerce development CC-1 svc@1.2.3\na:\n- 1\n- 2\nb: 1\n{\"a\":\"x\",\"b\":1}\naGk= hello-world\n\
         commerce.orders-api commerce/commerce/orders-api 2\n"
    );
}

#[test]
fn undefined_values_fail_when_printed_but_not_when_tested() {
    let err = render_one("{{ parameters.replicaz }}").expect_err("undefined");
    assert!(err.to_string().contains("out.txt"), "{err}");
    assert_eq!(
        render_one("{% if parameters.nothing %}x{% endif %}y").expect("render"),
        "y\n"
    );
}

#[test]
fn skips_blank_and_when_false_and_partials() {
    let mut conditional = file("cond.yaml", "kind: X");
    conditional.when = Some("environment == 'production'".into());
    let out = try_render(vec![
        file("blank.yaml", "{% if false %}kind: X{% endif %}\n  \n"),
        conditional,
        file("_helpers.j2", "{% macro greet(n) %}hello {{ n }}{% endmacro %}"),
        file(
            "manifests/a.yaml",
            "{% from '_helpers.j2' import greet %}{{ greet(name) }}",
        ),
    ])
    .expect("render");
    let paths: Vec<&str> = out.files.keys().map(String::as_str).collect();
    assert_eq!(paths, ["commerce/commerce/orders-api/manifests/a.yaml"]);
    assert_eq!(
        out.files["commerce/commerce/orders-api/manifests/a.yaml"],
        "hello orders-api\n"
    );
}

#[test]
fn paths_are_templates_and_must_stay_inside() {
    let out = try_render(vec![file("manifests/{{ name }}.yaml", "x")]).expect("render");
    assert!(
        out.files
            .contains_key("commerce/commerce/orders-api/manifests/orders-api.yaml")
    );
    for bad in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "{{ '' }}",
        "a//b",
        "a\\b",
        "a/\u{0}b",
        "./a",
        "a/",
    ] {
        let err = try_render(vec![file(bad, "content")]).expect_err(bad);
        match &err {
            RenderError::Path { template, .. } => assert_eq!(template, bad),
            other => panic!("{bad}: unexpected {other}"),
        }
    }
}

#[test]
fn output_dir_must_stay_inside_the_repo() {
    for bad in ["../{{ name }}", "/{{ team }}", "{{ team }}//x", ""] {
        let mut r = route_with(vec![file("a", "x")]);
        r.spec.output.path = Some(bad.into());
        let compiled = compile(r).expect("compile");
        let req = request(json!({}));
        let err = render(
            &compiled,
            &req,
            &json!({}),
            &Estimate::default(),
            &RenderOptions::default(),
        )
        .expect_err(bad);
        assert!(matches!(err, RenderError::OutputDir { .. }), "{bad}: {err}");
    }
}

#[test]
fn endless_loops_run_out_of_fuel_quickly() {
    for body in [
        "{% for i in range(999999999) %}{{ i }}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for i in range(100000) %}{{ \"x\" * 100000 }}{% endfor %}",
    ] {
        let start = Instant::now();
        let err = render_one(body).expect_err(body);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{body}: took {:?}",
            start.elapsed()
        );
        let msg = err.to_string();
        assert!(msg.contains("out.txt"), "{msg}");
        assert!(
            [
                "fuel",
                "recursion",
                "too many elements",
                "more than 1048576 bytes"
            ]
            .iter()
            .any(|w| msg.contains(w)),
            "{msg}"
        );
    }
}

#[test]
fn includes_reach_only_route_templates() {
    for target in ["/etc/passwd", "../../../../etc/passwd", "file:///etc/passwd"] {
        let err = render_one(&format!("{{% include {target:?} %}}")).expect_err(target);
        assert!(err.to_string().contains("not found"), "{target}: {err}");
    }
}

#[test]
fn two_templates_writing_one_path_collide() {
    let err = try_render(vec![file("a-{{ 1 }}", "x"), file("a-1", "y")]).expect_err("collision");
    assert!(matches!(err, RenderError::Collision { .. }), "{err}");
}

#[test]
fn template_syntax_errors_are_named_at_compile() {
    let errors = compile(route_with(vec![file("ok", "x"), file("bad", "{% if %}")])).expect_err("syntax");
    assert_eq!(errors[0].field, "spec.templates.inline[1].content");
}

#[test]
fn renders_application_with_defaults() {
    let mut r = route_with(vec![file("manifests/a.yaml", "x")]);
    r.spec.output.application = Some(ApplicationTemplate::default());
    let compiled = compile(r).expect("compile");
    let mut req = request(json!({}));
    req.metadata.uid = Some("1234-abcd".into());
    let options = RenderOptions {
        repo_url: "https://git.example/out.git".into(),
        revision: "main".into(),
        destination_server: None,
    };
    let out = render(&compiled, &req, &json!({}), &Estimate::default(), &options).expect("render");
    let app: Value = serde_yaml::from_str(&out.files["commerce/commerce/orders-api/argocd-application.yaml"])
        .expect("yaml");
    assert_eq!(app["metadata"]["name"], "commerce.orders-api");
    assert_eq!(app["metadata"]["namespace"], "argocd");
    assert_eq!(app["metadata"]["labels"]["paver.dev/request-id"], "1234-abcd");
    assert_eq!(
        app["metadata"]["finalizers"][0],
        "resources-finalizer.argocd.argoproj.io"
    );
    assert_eq!(app["spec"]["project"], "paver-commerce");
    assert_eq!(
        app["spec"]["source"]["path"],
        "commerce/commerce/orders-api/manifests"
    );
    assert_eq!(app["spec"]["source"]["repoURL"], "https://git.example/out.git");
    assert_eq!(
        app["spec"]["destination"]["server"],
        "https://kubernetes.default.svc"
    );
    assert_eq!(app["spec"]["destination"]["namespace"], "commerce");
    let again = render(&compiled, &req, &json!({}), &Estimate::default(), &options).expect("render");
    assert_eq!(out.digest, again.digest);
}

#[test]
fn digest_changes_with_content() {
    let a = try_render(vec![file("a", "x")]).expect("a");
    let b = try_render(vec![file("a", "y")]).expect("b");
    assert_ne!(a.digest, b.digest);
}

#[test]
fn label_values_are_label_safe() {
    assert_eq!(label_value("CC 4021/finance"), "CC-4021-finance");
    assert_eq!(label_value("-x-"), "x");
    let long = label_value(&"a".repeat(100));
    assert!(long.len() <= 63, "{long}");
    assert_ne!(label_value(&"a".repeat(100)), label_value(&"a".repeat(101)));
}

#[test]
fn destination_server_option_overrides_the_route() {
    let mut r = route_with(vec![file("manifests/a.yaml", "x")]);
    let mut app = ApplicationTemplate::default();
    app.destination.server = "https://route.example:6443".into();
    r.spec.output.application = Some(app);
    let compiled = compile(r).expect("compile");
    let req = request(json!({}));
    let server = |destination_server: Option<String>| {
        let options = RenderOptions {
            repo_url: "https://git.example/out.git".into(),
            revision: "main".into(),
            destination_server,
        };
        let out = render(&compiled, &req, &json!({}), &Estimate::default(), &options).expect("render");
        let app: Value =
            serde_yaml::from_str(&out.files["commerce/commerce/orders-api/argocd-application.yaml"])
                .expect("yaml");
        app["spec"]["destination"]["server"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(server(None), "https://route.example:6443");
    assert_eq!(
        server(Some("https://127.0.0.1:6443".into())),
        "https://127.0.0.1:6443"
    );
}

/// Credentials in the output repository's URL never reach the rendered
/// Application (every team's folder would carry Paver's token).
#[test]
fn repository_credentials_stay_out_of_the_application() {
    let mut r = route_with(vec![file("manifests/a.yaml", "x")]);
    r.spec.output.application = Some(ApplicationTemplate::default());
    let compiled = compile(r).expect("compile");
    let options = RenderOptions {
        repo_url: "https://paver:s3cret-token@git.example/out.git".into(),
        revision: "main".into(),
        destination_server: None,
    };
    let out = render(
        &compiled,
        &request(json!({})),
        &json!({}),
        &Estimate::default(),
        &options,
    )
    .expect("render");
    let text = &out.files["commerce/commerce/orders-api/argocd-application.yaml"];
    assert!(
        !text.contains("s3cret-token") && !text.contains("paver@"),
        "{text}"
    );
    let app: Value = serde_yaml::from_str(text).expect("yaml");
    assert_eq!(app["spec"]["source"]["repoURL"], "https://git.example/out.git");
    assert_eq!(
        crate::render::without_credentials("ssh://git:pw@host:22/x.git"),
        "ssh://git@host:22/x.git"
    );
    assert_eq!(
        crate::render::without_credentials("https://ghp_token@github.com/o/r.git"),
        "https://github.com/o/r.git"
    );
    assert_eq!(crate::render::without_credentials("/local/path"), "/local/path");
    for (url, want) in [
        ("HTTPS://tok@git.example/o/r.git", "HTTPS://git.example/o/r.git"),
        ("git:s3cr3t@git.example:o/r.git", "git@git.example:o/r.git"),
        ("git@git.example:o/r.git", "git@git.example:o/r.git"),
        (
            "https://git.example/o/r.git?private_token=s3cr3t#x",
            "https://git.example/o/r.git",
        ),
    ] {
        assert_eq!(crate::render::without_credentials(url), want, "{url}");
    }
}

/// Renders `content` as the file `path` with `parameters`.
fn render_as(path: &str, content: &str, parameters: serde_json::Value) -> Result<String, RenderError> {
    let compiled = compile(route_with(vec![file(path, content)])).expect("compile");
    let req = request(parameters.clone());
    let out = render(
        &compiled,
        &req,
        &parameters,
        &Estimate::default(),
        &RenderOptions::default(),
    )?;
    Ok(out
        .files
        .get(&format!("commerce/commerce/orders-api/{path}"))
        .cloned()
        .unwrap_or_default())
}

#[test]
fn values_cannot_add_yaml_keys() {
    let hostile = "main\nevil: true\n# x";
    let out = render_as(
        "manifests/cm.yaml",
        "data:\n  branch: {{ parameters.v }}\n  image: {{ parameters.image }}\n",
        json!({"v": hostile, "image": "ghcr.io/acme/api:1.2.3"}),
    )
    .expect("render");
    let doc: serde_json::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(
        doc,
        json!({"data": {"branch": hostile, "image": "ghcr.io/acme/api:1.2.3"}}),
        "{out}"
    );
    // Plain words are written as they are, so existing renders are unchanged.
    assert!(out.contains("image: ghcr.io/acme/api:1.2.3\n"), "{out}");
    // Inside single quotes a value cannot close the quote.
    let out = render_as(
        "x.yaml",
        "if: 'refs/heads/{{ parameters.v }}'\n",
        json!({"v": "a' \n  run: curl x | sh #"}),
    );
    match out {
        Ok(text) => {
            let doc: serde_json::Value = serde_yaml::from_str(&text).expect("yaml");
            assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "{text}");
        }
        Err(e) => assert!(e.to_string().contains("not valid YAML"), "{e}"),
    }
}

#[test]
fn a_quoted_value_inside_quotes_is_refused_not_written() {
    let err = render_as(
        "x.yaml",
        "name: \"{{ parameters.v }}-config\"\n",
        json!({"v": "a\"b"}),
    )
    .expect_err("refused");
    assert!(
        err.to_string().contains("x.yaml") && err.to_string().contains("not valid YAML"),
        "{err}"
    );
}

#[test]
fn values_cannot_add_codeowners_rules_or_owners() {
    let ok = render_as(
        "CODEOWNERS",
        "* {{ parameters.o }}\n",
        json!({"o": "@acme/payments"}),
    )
    .expect("render");
    assert_eq!(ok, "* @acme/payments\n");
    for hostile in ["@a\n/ @evil", "@a @evil", "@a #", "x\\ y"] {
        let err =
            render_as("CODEOWNERS", "* {{ parameters.o }}\n", json!({"o": hostile})).expect_err(hostile);
        assert!(
            err.to_string().contains("CODEOWNERS") && err.to_string().contains("cannot be written"),
            "{err}"
        );
    }
}

#[test]
fn values_cannot_reach_a_workflow_shell_or_expression() {
    let content = "jobs:\n  build:\n    steps:\n      - run: make {{ parameters.v }}\n";
    assert!(
        render_as(".github/workflows/ci.yaml", content, json!({"v": "build"}))
            .expect("render")
            .contains("run: make build\n")
    );
    for hostile in [
        "$(curl x | sh)",
        "a; rm -rf /",
        "${{ secrets.X }}",
        "a b",
        "main\n  evil: x",
    ] {
        let err = render_as(".github/workflows/ci.yaml", content, json!({"v": hostile})).expect_err(hostile);
        assert!(err.to_string().contains("GitHub workflow"), "{err}");
    }
}

#[test]
fn to_json_and_to_yaml_are_written_as_they_are() {
    let out = render_as(
        "x.yaml",
        "a: {{ parameters.v | to_json }}\nb:\n  {{ parameters.m | to_yaml | indent(2) }}\n",
        json!({"v": "x: y", "m": {"k": "v\nw"}}),
    )
    .expect("render");
    let doc: serde_json::Value = serde_yaml::from_str(&out).expect("yaml");
    assert_eq!(doc, json!({"a": "x: y", "b": {"k": "v\nw"}}), "{out}");
}

/// A request's parameters cannot choose where its files go or where they
/// deploy: a path or destination that uses them is refused when the route
/// is compiled, naming the field.
#[test]
fn paths_and_destinations_use_only_the_requests_identity() {
    let mut r = route_with(vec![file("{{ parameters.dir }}/x.yaml", "x")]);
    let errors = compile(r.clone()).expect_err("template path from parameters");
    assert_eq!(errors[0].field, "spec.templates.inline[0].path");
    assert!(
        errors[0].message.contains("uses parameters"),
        "{}",
        errors[0].message
    );

    r.spec.templates.inline = vec![file("x.yaml", "x")];
    r.spec.output.path = Some("{{ team }}/{{ request.spec.owner }}".into());
    let errors = compile(r.clone()).expect_err("output path from the request");
    assert_eq!(errors[0].field, "spec.output.path");
    assert!(
        errors[0].message.contains("uses request"),
        "{}",
        errors[0].message
    );

    r.spec.output.path = Some("{{ team }}/{{ environment }}/{{ namespace }}/{{ name }}".into());
    let mut app = ApplicationTemplate::default();
    app.destination.namespace = "{{ parameters.namespace | default(namespace) }}".into();
    r.spec.output.application = Some(app);
    let errors = compile(r.clone()).expect_err("destination from parameters");
    assert_eq!(errors[0].field, "spec.output.application.destination.namespace");

    // The identity is enough for the paths routes really use.
    r.spec
        .output
        .application
        .as_mut()
        .expect("app")
        .destination
        .namespace = "{{ namespace }}-{{ environment }}".into();
    r.spec.templates.inline = vec![file("manifests/{{ route.name }}-{{ name }}.yaml", "x: 1")];
    let compiled = compile(r).expect("identity only");
    let req = request(json!({}));
    let out = render(
        &compiled,
        &req,
        &json!({}),
        &Estimate::default(),
        &RenderOptions::default(),
    )
    .expect("render");
    assert!(
        out.files
            .contains_key("commerce/development/commerce/orders-api/manifests/svc-orders-api.yaml"),
        "{:?}",
        out.files.keys()
    );
    let app = out.application.expect("application");
    assert_eq!(app.destination_namespace, "commerce-development");
    assert_eq!(app.name, "commerce.orders-api");
}

/// Only Paver's own Application file is an Application: a template
/// writing a file the app of apps would sync as one is refused.
#[test]
fn no_template_writes_an_application_file() {
    for path in [
        "argocd-application.yaml",
        "manifests/evil-argocd-application.yaml",
    ] {
        let err = try_render(vec![file(path, "kind: Application")]).expect_err(path);
        assert!(
            matches!(&err, RenderError::Path { reason, .. } if reason.contains("only Paver writes one")),
            "{path}: {err}"
        );
    }
    try_render(vec![file("manifests/argocd-application.yaml.txt", "x")]).expect("another name");
}

/// A render's output is bounded per file and per request while it is
/// written, whatever produces it (literal text in a loop, a repeated
/// string), so a route cannot grow the operator past its memory limit.
#[test]
fn renders_have_a_size_budget() {
    let big = "{% for i in range(20000) %}0123456789012345678901234567890123456789012345678901234567890123{% endfor %}";
    let err = try_render(vec![file("big.txt", big)]).expect_err("1.25 MiB file");
    assert!(
        matches!(&err, RenderError::TooLarge { total: false, limit, .. } if *limit == MAX_FILE_BYTES),
        "{err}"
    );
    let err = try_render(vec![file("s.yaml", "{{ 'x' * 5000000 }}")]).expect_err("5 MB string");
    assert!(matches!(err, RenderError::TooLarge { .. }), "{err}");

    // Three files of 0.9 MiB: each within its bound, together over the request's.
    let part = "{% for i in range(14000) %}0123456789012345678901234567890123456789012345678901234567890123{% endfor %}";
    let err = try_render(vec![
        file("a.txt", part),
        file("b.txt", part),
        file("c.txt", part),
    ])
    .expect_err("2.7 MiB render");
    assert!(
        matches!(&err, RenderError::TooLarge { template, total: true, .. } if template == "c.txt"),
        "{err}"
    );
    assert!(err.to_string().contains("render budget"), "{err}");
    try_render(vec![file("a.txt", part), file("b.txt", part)]).expect("1.8 MiB is within the budget");
}

#[test]
fn application_names_never_collide_and_fit() {
    assert_eq!(application_name("a-b", "c"), "a-b.c");
    assert_ne!(application_name("a-b", "c"), application_name("a", "b-c"));
    // A namespace has no dot, so the first dot ends it.
    assert_eq!(application_name("a", "b.c"), "a.b.c");
    let long = "n".repeat(253);
    let a = application_name(&"a".repeat(63), &long);
    let b = application_name(&"a".repeat(63), &format!("{}m", &long[..252]));
    assert!(a.len() <= 253 && b.len() <= 253, "{} {}", a.len(), b.len());
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("{}.", "a".repeat(63))), "{a}");
}

#[test]
fn each_team_has_its_own_project() {
    assert_eq!(project_name("payments"), "paver-payments");
    let odd = project_name("Payments_EU");
    assert!(
        odd.starts_with("paver-payments-eu-") && odd.len() == "paver-payments-eu-".len() + 8,
        "{odd}"
    );
    assert_ne!(
        project_name("payments-eu"),
        odd,
        "a team whose slug is another's gets its own"
    );
    assert!(project_name(&"t".repeat(63)).len() <= 63);
    let p = app_project(
        "payments",
        &["payments", "payments-prod"],
        "https://user:secret@git.example/out.git",
        "https://kubernetes.default.svc",
        "argocd",
    );
    assert_eq!(p["metadata"]["name"], "paver-payments");
    assert_eq!(p["spec"]["sourceRepos"], json!(["https://git.example/out.git"]));
    assert_eq!(
        p["spec"]["destinations"],
        json!([
            {"server": "https://kubernetes.default.svc", "namespace": "payments"},
            {"server": "https://kubernetes.default.svc", "namespace": "payments-prod"},
        ])
    );
    assert_eq!(p["spec"]["clusterResourceWhitelist"], json!([]));
}

/// A request writes only under its team's folder, whatever its route's
/// output path says: not another team's, not the platform's.
#[test]
fn a_request_writes_only_under_its_team() {
    for path in [
        "platform/{{ name }}",
        "other/{{ namespace }}/{{ name }}",
        "{{ namespace }}x/{{ name }}",
    ] {
        let mut r = route_with(vec![file("a.yaml", "x: 1")]);
        r.spec.output.path = Some(path.into());
        let compiled = compile(r).expect("compile");
        let req = request(json!({}));
        let err = render(
            &compiled,
            &req,
            &json!({}),
            &Estimate::default(),
            &RenderOptions::default(),
        )
        .expect_err(path);
        assert!(
            matches!(&err, RenderError::OutputDir { reason, .. } if reason.contains("writes only under commerce/")),
            "{path}: {err}"
        );
    }
}

/// A GitHub expression in a value never reaches a workflow, even through
/// `to_json` (whose output is otherwise written as it is).
#[test]
fn no_github_expression_reaches_a_workflow() {
    let compiled = compile(route_with(vec![file(
        ".github/workflows/ci.yaml",
        "env:\n  IMAGE: {{ parameters.image | to_json }}\n  SHA: {% raw %}${{ github.sha }}{% endraw %}\n",
    )]))
    .expect("compile");
    let render_with = |image: &str| {
        let req = request(json!({"image": image}));
        render(
            &compiled,
            &req,
            &req.spec.parameters,
            &Estimate::default(),
            &RenderOptions::default(),
        )
    };
    let ok = render_with("registry.example/web:1.0").expect("a plain image");
    let text = &ok.files["commerce/commerce/orders-api/.github/workflows/ci.yaml"];
    assert!(
        text.contains("${{ github.sha }}"),
        "the template's own expression stays: {text}"
    );
    let err = render_with("registry.example/web:${{ secrets.DEPLOY_TOKEN }}").expect_err("an expression");
    assert!(err.to_string().contains("`${{` expression"), "{err}");
    assert!(
        !err.to_string().contains("DEPLOY_TOKEN"),
        "the value is not echoed: {err}"
    );
}
