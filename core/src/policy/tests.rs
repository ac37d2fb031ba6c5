use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use paver_crds::{BundleMatch, LabelSelector, PolicyBundleSpec, PolicyException, PolicyMode, RegoModule};
use serde_json::json;

use super::*;

fn module(name: &str, source: &str) -> RegoModule {
    RegoModule {
        name: name.into(),
        source: source.into(),
    }
}

const POLICY: &str = r#"package paver.demo

deny contains {"id": "no-public", "msg": "public is not allowed", "path": "parameters.public"} if input.parameters.public
deny contains "plain string" if input.parameters.plain
warn contains {"id": "small", "msg": "replicas are few"} if input.parameters.replicas < 2
needs_approval contains "big spender" if input.estimate.monthly > data.budget
checks contains {"id": "c1", "category": "security", "level": "bronze", "pass": true, "msg": "ok"}
"#;

const TESTS: &str = r#"package paver.demo_test

import data.paver.demo

test_public_denied if {
    count(demo.deny) == 1 with input as {"parameters": {"public": true}}
}

test_quiet if {
    count(demo.deny) == 0 with input as {"parameters": {}}
}
"#;

fn spec(modules: Vec<RegoModule>, tests: Vec<RegoModule>) -> PolicyBundleSpec {
    PolicyBundleSpec {
        version: "1.0.0".into(),
        modules,
        tests,
        data: Some(json!({"budget": 100})),
        ..Default::default()
    }
}

fn demo() -> PolicyBundleSpec {
    spec(
        vec![module("demo.rego", POLICY)],
        vec![module("demo_test.rego", TESTS)],
    )
}

fn compiled(spec: &PolicyBundleSpec) -> Arc<CompiledBundle> {
    let a = activate("demo", spec, now());
    assert!(a.errors.is_empty(), "{:?}", a.errors);
    Arc::new(a.compiled.expect("bundle activates"))
}

fn input(parameters: serde_json::Value, monthly: f64) -> PreparedInput {
    PolicyInput {
        request: json!({"metadata": {"name": "svc", "namespace": "team"}}),
        parameters,
        route: RouteDoc::new(json!({})).expect("converts"),
        estimate: json!({"monthly": monthly, "currency": "USD"}),
        ..Default::default()
    }
    .prepare()
    .expect("input converts")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

/// Every rule of `bundle` against `input`, for request `team/svc`.
fn try_eval(
    bundle: &Arc<CompiledBundle>,
    input: &PreparedInput,
    labels: &BTreeMap<String, String>,
) -> Result<PolicyOutcome, PolicyError> {
    evaluate(
        std::slice::from_ref(bundle),
        input,
        &RuleKind::ALL,
        "team/svc",
        labels,
        now(),
    )
}

fn eval(
    bundle: &Arc<CompiledBundle>,
    params: serde_json::Value,
    labels: &BTreeMap<String, String>,
) -> PolicyOutcome {
    try_eval(bundle, &input(params, 50.0), labels).expect("evaluates")
}

#[test]
fn compiled_bundle_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledBundle>();
}

#[test]
fn activates_and_reports_tests() {
    let a = activate("demo", &demo(), now());
    assert!(a.errors.is_empty());
    assert_eq!(a.tests.len(), 2);
    assert!(a.tests.iter().all(|t| t.pass), "{:?}", a.tests);
    assert_eq!(a.tests[0].name, "data.paver.demo_test.test_public_denied");
    let c = a.compiled.expect("activated");
    assert_eq!(c.packages, vec!["data.paver.demo".to_string()]);
    assert_eq!(c.name_version(), "demo@1.0.0");
}

#[test]
fn compile_error_names_module_and_line() {
    let s = spec(
        vec![
            module("ok.rego", POLICY),
            module("bad.rego", "package bad\n\ndeny contains x if {\n  x := \n}\n"),
        ],
        vec![],
    );
    let a = activate("demo", &s, now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors.len(), 1);
    assert_eq!(a.errors[0].module, "bad.rego");
    assert_eq!(a.errors[0].line, Some(4));
    assert!(!a.errors[0].message.contains("-->"), "{}", a.errors[0].message);
}

#[test]
fn rego_v0_syntax_is_refused() {
    let a = activate(
        "demo",
        &spec(
            vec![module("v0.rego", "package v0\n\ndeny[msg] { msg := \"x\" }\n")],
            vec![],
        ),
        now(),
    );
    assert!(a.compiled.is_none());
    assert!(a.errors[0].message.contains("`if` keyword"), "{:?}", a.errors);
}

#[test]
fn unsafe_variable_is_caught_at_activation() {
    let src = "package u\n\nallow if input.x == 1\n\ndeny contains x if {\n  input.a == 1\n  y == 1\n  x := \"a\"\n}\n";
    let a = activate("demo", &spec(vec![module("u.rego", src)], vec![]), now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors[0].module, "u.rego");
    assert_eq!(a.errors[0].line, Some(7));
    assert!(a.errors[0].message.contains("unsafe"), "{:?}", a.errors);
}

#[test]
fn rule_conflict_is_caught_at_activation() {
    let a = activate(
        "demo",
        &spec(vec![module("c.rego", "package c\n\nx := 1\nx := 2\n")], vec![]),
        now(),
    );
    assert!(a.compiled.is_none());
    assert!(a.errors[0].message.contains("conflict"), "{:?}", a.errors);
}

#[test]
fn recursive_functions_are_refused_not_run() {
    // regorus would overflow the stack on this; OPA refuses it at compile time.
    let src = "package r\n\nf(x) := g(x)\ng(x) := f(x + 1)\n\ndeny contains y if y := f(1)\n";
    let a = activate("demo", &spec(vec![module("r.rego", src)], vec![]), now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors[0].module, "r.rego");
    assert_eq!(
        a.errors[0].message,
        "rego_recursion_error: rule data.r.f is recursive: data.r.f -> data.r.g -> data.r.f"
    );
    assert_eq!((a.errors[0].line, a.errors[0].column), (Some(3), Some(1)));
    // So are recursive rules, as OPA refuses them.
    let a = activate(
        "demo",
        &spec(vec![module("r.rego", "package r\n\na if b\nb if a\n")], vec![]),
        now(),
    );
    assert!(a.errors[0].message.contains("is recursive"), "{:?}", a.errors);
}

#[test]
fn huge_comprehension_hits_the_time_limit() {
    let src = "package h\n\ndeny contains n if {\n  some i in numbers.range(1, 3000)\n  some j in numbers.range(1, 3000)\n  n := i * j\n  n < 0\n}\n";
    let start = std::time::Instant::now();
    let a = activate("demo", &spec(vec![module("h.rego", src)], vec![]), now());
    assert!(a.compiled.is_none());
    assert!(a.errors[0].message.contains("time limit"), "{:?}", a.errors);
    assert!(start.elapsed() < EVAL_TIME_LIMIT * 3);
}

#[test]
fn evaluation_on_the_vm_hits_the_time_limit() {
    // Fast on activation's empty input; slow only for a request's input.
    let src = "package h\n\ndeny contains n if {\n  some i in numbers.range(1, input.parameters.n)\n  some j in numbers.range(1, input.parameters.n)\n  n := i * j\n  n < 0\n}\n";
    let b = compiled(&spec(vec![module("h.rego", src)], vec![]));
    assert_eq!(b.evaluator(), "vm", "{:?}", b.interpreted_because);
    let start = std::time::Instant::now();
    let err = try_eval(&b, &input(json!({"n": 100_000}), 1.0), &BTreeMap::new())
        .expect_err("stopped by the time limit");
    assert!(err.to_string().contains("time limit"), "{err}");
    assert!(start.elapsed() < EVAL_TIME_LIMIT * 3);
}

#[test]
fn bundles_are_evaluated_on_the_vm() {
    let b = compiled(&demo());
    assert_eq!(b.evaluator(), "vm", "{:?}", b.interpreted_because);
    let i = b.interpreted();
    assert_eq!(i.evaluator(), "interpreter");
    let input = input(json!({"public": true, "plain": true, "replicas": 1}), 500.0);
    let run = |b: &Arc<CompiledBundle>| try_eval(b, &input, &BTreeMap::new()).expect("evaluates");
    let (vm, interpreter) = (run(&b), run(&Arc::new(i)));
    assert_eq!(vm, interpreter);
    assert_eq!(
        (vm.violations.len(), vm.warnings.len(), vm.approval_reasons.len()),
        (2, 1, 1)
    );
}

#[test]
fn failing_test_refuses_activation_and_keeps_last_good() {
    let mut set = BundleSet::new();
    let report = set.update("demo", &demo(), now());
    assert!(report.activated && report.tests_passed && report.compiled);
    assert_eq!(report.active_version.as_deref(), Some("1.0.0"));

    let mut broken = demo();
    broken.version = "2.0.0".into();
    broken.tests.push(module(
        "fail_test.rego",
        "package paver.fail_test\n\ntest_fails if {\n  print(\"seen\")\n  1 == 2\n}\n",
    ));
    let report = set.update("demo", &broken, now());
    assert!(report.compiled && !report.tests_passed && !report.activated);
    assert_eq!(report.active_version.as_deref(), Some("1.0.0"));
    let failed = report.tests.iter().find(|t| !t.pass).expect("a failed test");
    assert_eq!(failed.name, "data.paver.fail_test.test_fails");
    assert!(failed.message.contains("seen"), "{}", failed.message);
    assert_eq!(set.get("demo").expect("still good").version, "1.0.0");
    assert_eq!(set.failure("demo").expect("failure kept").version, "2.0.0");

    let mut uncompilable = demo();
    uncompilable.modules[0].source.push_str("\ndeny contains if {\n");
    let report = set.update("demo", &uncompilable, now());
    assert!(!report.compiled && !report.activated);
    assert_eq!(set.get("demo").expect("still good").version, "1.0.0");

    let mut fixed = demo();
    fixed.version = "2.0.1".into();
    assert!(set.update("demo", &fixed, now()).activated);
    assert!(set.failure("demo").is_none());
    set.remove("demo");
    assert!(set.get("demo").is_none());
}

#[test]
fn run_tests_reports_like_opa_test() {
    let (errors, tests) = run_tests(&demo());
    assert!(errors.is_empty());
    assert_eq!(tests.iter().filter(|t| t.pass).count(), 2);
}

#[test]
fn evaluates_findings_approvals_and_checks() {
    let b = compiled(&demo());
    let out = evaluate(
        &[b],
        &input(json!({"public": true, "plain": true, "replicas": 1}), 150.0),
        &RuleKind::ALL,
        "team/svc",
        &BTreeMap::new(),
        now(),
    )
    .expect("evaluates");
    let rules: Vec<&str> = out.violations.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        vec!["demo", "no-public"],
        "string findings take the package's last segment"
    );
    assert_eq!(out.violations[1].path.as_deref(), Some("parameters.public"));
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(out.approval_reasons, vec!["demo: big spender".to_string()]);
    assert_eq!(out.checks.len(), 1);
    assert_eq!(out.checks[0].source, "bundle/demo");
    assert_eq!(out.bundle_versions, vec!["demo@1.0.0".to_string()]);
    assert!(!out.allowed());
}

#[test]
fn rule_selection_limits_what_is_read() {
    let b = compiled(&demo());
    let out = evaluate(
        &[b],
        &input(json!({"public": true}), 150.0),
        &[RuleKind::Checks],
        "team/svc",
        &BTreeMap::new(),
        now(),
    )
    .expect("evaluates");
    assert!(out.violations.is_empty() && out.approval_reasons.is_empty());
    assert_eq!(out.checks.len(), 1);
}

#[test]
fn modes_and_enforce_after() {
    let params = json!({"public": true});
    let mut s = demo();
    s.mode = PolicyMode::Warn;
    let out = eval(&compiled(&s), params.clone(), &BTreeMap::new());
    assert!(out.violations.is_empty());
    assert_eq!(out.warnings.len(), 1);

    s.mode = PolicyMode::Dryrun;
    let out = eval(&compiled(&s), params.clone(), &BTreeMap::new());
    assert!(out.violations.is_empty() && out.warnings.is_empty());
    assert_eq!(out.dryrun.len(), 1);

    s.mode = PolicyMode::Enforce;
    s.enforce_after = Some((now() + Duration::days(1)).to_rfc3339());
    let b = compiled(&s);
    let out = eval(&b, params.clone(), &BTreeMap::new());
    assert!(out.violations.is_empty());
    assert_eq!(out.warnings.len(), 1, "before enforceAfter deny only warns");
    assert!(
        out.warnings[0]
            .message
            .ends_with("(becomes a violation on 2030-01-02T00:00:00Z)"),
        "the warning says when it starts to block: {:?}",
        out.warnings[0]
    );
    let later = evaluate(
        &[b],
        &input(params, 10.0),
        &RuleKind::ALL,
        "team/svc",
        &BTreeMap::new(),
        now() + Duration::days(2),
    )
    .expect("evaluates");
    assert_eq!(later.violations.len(), 1, "after enforceAfter deny blocks");

    s.enforce_after = Some("next tuesday".into());
    let a = activate("demo", &s, now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors[0].module, "spec.enforceAfter");
}

#[test]
fn warn_mode_reports_approvals_instead_of_requiring_them() {
    let mut s = demo();
    s.mode = PolicyMode::Warn;
    let b = compiled(&s);
    let out = evaluate(
        &[b],
        &input(json!({}), 1000.0),
        &RuleKind::ALL,
        "team/svc",
        &BTreeMap::new(),
        now(),
    )
    .expect("ok");
    assert!(out.approval_reasons.is_empty());
    assert_eq!(out.warnings[0].rule, NEEDS_APPROVAL_RULE);
}

fn exception(
    request: Option<&str>,
    selector: Option<LabelSelector>,
    rules: &[&str],
    expires: DateTime<Utc>,
) -> PolicyException {
    PolicyException {
        name: "waiver".into(),
        request: request.map(str::to_string),
        selector,
        rules: rules.iter().map(|r| r.to_string()).collect(),
        reason: "migration".into(),
        expires: expires.to_rfc3339(),
    }
}

#[test]
fn exceptions_waive_until_they_expire() {
    let params = json!({"public": true, "plain": true});
    let mut s = demo();
    s.exceptions = vec![exception(
        Some("team/svc"),
        None,
        &["no-public"],
        now() + Duration::hours(1),
    )];
    let out = eval(&compiled(&s), params.clone(), &BTreeMap::new());
    assert_eq!(out.waived.len(), 1);
    assert_eq!(out.waived[0].rule, "no-public");
    assert_eq!(out.violations.len(), 1, "the other rule still applies");

    s.exceptions = vec![exception(
        Some("other/svc"),
        None,
        &["*"],
        now() + Duration::hours(1),
    )];
    assert!(
        eval(&compiled(&s), params.clone(), &BTreeMap::new())
            .waived
            .is_empty(),
        "names another request"
    );

    s.exceptions = vec![exception(
        Some("team/svc"),
        None,
        &["*"],
        now() - Duration::seconds(1),
    )];
    let out = eval(&compiled(&s), params.clone(), &BTreeMap::new());
    assert!(out.waived.is_empty(), "expired");
    assert_eq!(out.violations.len(), 2);

    let selector = LabelSelector {
        match_labels: [("tier".to_string(), "legacy".to_string())].into(),
        ..Default::default()
    };
    s.exceptions = vec![exception(
        None,
        Some(selector),
        &["*"],
        now() + Duration::hours(1),
    )];
    let b = compiled(&s);
    let labels: BTreeMap<String, String> = [("tier".to_string(), "legacy".to_string())].into();
    let waived = eval(&b, params.clone(), &labels).waived;
    assert_eq!(waived.len(), 2);
    assert!(
        waived.iter().all(|f| f.message.contains("(waived by exception ")
            && f.message.ends_with("until 2030-01-01T01:00:00Z)")),
        "each waived finding names its exception and expiry: {waived:?}"
    );
    assert!(eval(&b, params, &BTreeMap::new()).waived.is_empty());

    s.exceptions = vec![exception(None, None, &["*"], now())];
    assert!(
        activate("demo", &s, now()).compiled.is_none(),
        "an exception must name a request or selector"
    );
    s.exceptions = vec![PolicyException {
        expires: "soon".into(),
        ..exception(Some("a/b"), None, &["*"], now())
    }];
    assert_eq!(activate("demo", &s, now()).errors[0].module, "spec.exceptions[0]");

    // An exception lives a year at most: 2999 is refused, 364 days is not.
    s.exceptions = vec![PolicyException {
        expires: "2999-01-01T00:00:00Z".into(),
        ..exception(Some("a/b"), None, &["*"], now())
    }];
    let a = activate("demo", &s, now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors[0].module, "spec.exceptions[0]");
    assert!(
        a.errors[0]
            .message
            .contains("more than 365 days from now (2030-01-01T00:00:00Z)"),
        "{:?}",
        a.errors
    );
    s.exceptions = vec![exception(Some("a/b"), None, &["*"], now() + Duration::days(364))];
    assert!(activate("demo", &s, now()).compiled.is_some());
}

#[test]
fn match_semantics() {
    let mut set = BundleSet::new();
    let mut routed = demo();
    routed.match_ = None;
    set.update("routed", &routed, now());
    let mut global = demo();
    global.match_ = Some(BundleMatch::default());
    set.update("global", &global, now());
    let mut narrow = demo();
    narrow.match_ = Some(BundleMatch {
        routes: vec!["microservice".into()],
        namespaces: vec!["payments".into()],
        label_selector: Some(LabelSelector {
            match_labels: [("pci".to_string(), "true".to_string())].into(),
            ..Default::default()
        }),
    });
    set.update("narrow", &narrow, now());
    let pci: BTreeMap<String, String> = [("pci".to_string(), "true".to_string())].into();
    let names = |(found, _): &(Vec<Arc<CompiledBundle>>, Vec<String>)| {
        found.iter().map(|b| b.name.clone()).collect::<Vec<_>>()
    };

    let r = set.applicable("microservice", &[], "payments", &pci);
    assert_eq!(names(&r), vec!["global", "narrow"]);
    let r = set.applicable("microservice", &[], "web", &pci);
    assert_eq!(names(&r), vec!["global"], "namespace criterion fails");
    let r = set.applicable("microservice", &[], "payments", &BTreeMap::new());
    assert_eq!(names(&r), vec!["global"], "selector criterion fails");
    let r = set.applicable("batch-job", &["routed".into(), "absent".into()], "payments", &pci);
    assert_eq!(names(&r), vec!["global", "routed"]);
    assert_eq!(r.1, vec!["absent".to_string()]);

    // A matching bundle that never activated holds requests back.
    let mut broken = demo();
    broken.match_ = Some(BundleMatch::default());
    broken.modules[0].source = "package x\n\ndeny contains".into();
    set.update("broken", &broken, now());
    assert_eq!(
        set.applicable("microservice", &[], "web", &pci).1,
        vec!["broken".to_string()]
    );
}

#[test]
fn output_is_deterministic() {
    let src = r#"package d

deny contains {"id": "b", "msg": "second"} if true
deny contains {"id": "a", "msg": "first"} if true
deny contains {"id": "a", "msg": "first"} if input.parameters.x
checks contains {"id": "z", "category": "c", "level": "gold", "pass": false, "msg": "m"}
checks contains {"id": "y", "category": "c", "level": "bronze", "pass": true, "msg": "m"}
"#;
    let b = compiled(&spec(vec![module("d.rego", src)], vec![]));
    let first = eval(&b, json!({"x": true}), &BTreeMap::new());
    for _ in 0..5 {
        assert_eq!(eval(&b, json!({"x": true}), &BTreeMap::new()), first);
    }
    let rules: Vec<&str> = first.violations.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, vec!["a", "b"]);
    assert_eq!(
        first.checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["y", "z"]
    );
}

#[test]
fn malformed_output_fails_closed() {
    let src = r#"package m

deny contains 42 if true
deny contains {"message": "no msg key"} if true
warn := "not a set"
needs_approval contains {"why": 1} if true
checks contains {"id": "c", "pass": "yes"} if true
"#;
    let b = compiled(&spec(vec![module("m.rego", src)], vec![]));
    let out = eval(&b, json!({}), &BTreeMap::new());
    assert_eq!(out.violations.len(), 2);
    assert!(out.violations.iter().all(|f| f.rule == INVALID_OUTPUT_RULE));
    assert!(
        out.violations.iter().any(|f| f.message.contains("produced 42")),
        "{:?}",
        out.violations
    );
    assert_eq!(out.warnings.len(), 1);
    assert_eq!(
        out.approval_reasons.len(),
        1,
        "a malformed approval still asks for one"
    );
    assert_eq!(out.checks.len(), 1);
    assert!(!out.checks[0].pass);
}

#[test]
fn runtime_errors_are_errors_not_panics() {
    let src = "package e\n\ndeny contains x if { x := 1 / input.parameters.zero }\n";
    let b = compiled(&spec(vec![module("e.rego", src)], vec![]));
    let err = try_eval(&b, &input(json!({"zero": 0}), 1.0), &BTreeMap::new()).expect_err("division by zero");
    let PolicyError::Evaluate {
        bundle,
        rule,
        message,
    } = &err
    else {
        panic!("unexpected {err:?}")
    };
    assert_eq!((bundle.as_str(), rule.as_str()), ("demo", "data.e.deny"));
    assert!(
        // The VM says "Cannot divide Number(1) and Number(0)", the interpreter "divide by zero".
        message.contains("divide") && message.contains("e.rego:3"),
        "{message}"
    );
    assert!(
        err.to_string()
            .starts_with("failed to evaluate data.e.deny of bundle demo")
    );
}

#[test]
fn data_must_be_an_object() {
    let mut s = demo();
    s.data = Some(json!([1, 2]));
    let a = activate("demo", &s, now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors[0].module, "spec.data");
}

#[test]
fn input_carries_check_facts_only_when_known() {
    let mut i = PolicyInput {
        request: json!({"a": 1}),
        ..Default::default()
    };
    assert!(i.to_json().get("rendered").is_none());
    i.rendered = Some([("k.yaml".to_string(), "x".to_string())].into());
    i.cluster = Some(json!({"sync": "Synced"}));
    let v = i.prepare().expect("converts");
    assert_eq!(serde_json::to_value(v.value()).expect("json"), i.to_json());
}

/// Shapes that would fail open are refused at activation, naming the
/// module and line: no rule Paver reads, a ref head under one of its rule
/// names, data shadowing a rule, an exception whose selector matches all.
#[test]
fn bundles_that_would_fail_open_by_their_shape_are_refused() {
    let refused = |spec: &PolicyBundleSpec, want: &str| {
        let a = activate("demo", spec, now());
        assert!(a.compiled.is_none(), "{want}: activated");
        assert!(
            a.errors.iter().any(|e| e.message.contains(want)),
            "{want} not in {:?}",
            a.errors
        );
        a
    };
    let nothing = spec(
        vec![module("n.rego", "package paver.n\n\nallow if input.x\n")],
        vec![],
    );
    refused(&nothing, "declares none of the rules Paver reads");

    let ref_head = spec(
        vec![module(
            "r.rego",
            "package paver.r\n\nwarn contains \"x\" if input.x\n\ndeny.critical contains \"y\" if input.y\n",
        )],
        vec![],
    );
    let a = refused(&ref_head, "ref head under \"deny\"");
    let e = a
        .errors
        .iter()
        .find(|e| e.message.contains("ref head"))
        .expect("error");
    assert_eq!((e.module.as_str(), e.line), ("r.rego", Some(5)));

    let mut shadowed = demo();
    shadowed.data = Some(json!({"budget": 100, "paver": {"demo": {"deny": []}}}));
    refused(&shadowed, "defines data.paver.demo.deny");

    let mut everyone = demo();
    everyone.exceptions = vec![exception(
        None,
        Some(LabelSelector::default()),
        &["*"],
        now() + Duration::days(365 * 900),
    )];
    let a = refused(&everyone, "an empty selector matches every request");
    assert_eq!(a.errors[0].module, "spec.exceptions[0]");
}

/// Builtins that are not functions of the input are refused at activation
/// (with the line), unless the bundle opts in.
#[test]
fn nondeterministic_builtins_are_refused_unless_allowed() {
    let src = "package paver.clock\n\nimport rego.v1\n\n# time.now_ns() in a comment is fine\ndeny contains \"late\" if {\n  time.now_ns() > 0\n}\n\nwarn contains sprintf(\"%d\", [rand.intn(\"x\", 10)]) if input.x\n";
    let mut s = spec(vec![module("clock.rego", src)], vec![]);
    let a = activate("demo", &s, now());
    assert!(a.compiled.is_none());
    let lines: Vec<(Option<u32>, bool)> = a
        .errors
        .iter()
        .map(|e| (e.line, e.message.contains("not a function of the input")))
        .collect();
    assert_eq!(lines, [(Some(7), true), (Some(10), true)], "{:?}", a.errors);
    s.allow_nondeterministic_builtins = true;
    assert!(activate("demo", &s, now()).compiled.is_some());
}

/// A rule's output is bounded before it reaches a status: a 100 KB message
/// keeps its first KiB, 500 findings keep 100 (the last one counting the
/// rest), and the request is still denied.
#[test]
fn huge_and_numerous_findings_are_bounded() {
    let src = "package paver.loud\n\nimport rego.v1\n\ndeny contains sprintf(\"%d %s\", [i, input.parameters.big]) if {\n  some i in numbers.range(1, 500)\n}\n\nneeds_approval contains sprintf(\"%d %s\", [i, input.parameters.big]) if {\n  some i in numbers.range(1, 500)\n}\n";
    let b = compiled(&spec(vec![module("loud.rego", src)], vec![]));
    let out = eval(&b, json!({"big": "x".repeat(100_000)}), &BTreeMap::new());
    assert_eq!(out.violations.len(), MAX_FINDINGS);
    let last = out.violations.last().expect("a last entry");
    assert_eq!(last.rule, "more-findings");
    assert!(last.message.starts_with("401 more findings"), "{}", last.message);
    let first = &out.violations[0];
    assert!(
        first.message.len() < MAX_MESSAGE_BYTES + 64,
        "{}",
        first.message.len()
    );
    assert!(
        first.message.ends_with("more bytes)"),
        "{}",
        &first.message[1000..]
    );
}

/// Seed 004's Rego, as OPA 1.22 refuses it: one stage at a time (OPA stops
/// after the stage of `var team assigned above`; with it fixed, the unused
/// `some repo` and the unsafe `key` surface together).
#[test]
fn seed_004_is_refused_with_opas_errors() {
    let src = "package paver.seed\n\ndeny contains msg if {\n\tsome repo\n\tteam := input.request.spec.team\n\tteam := input.request.metadata.labels.team\n\tinput.request.spec.parameters.tags[_] == key\n\tmsg := sprintf(\"%s: tag %s\", [team, key])\n}\n";
    let found = |src: &str| -> Vec<(Option<u32>, Option<u32>, String)> {
        let a = activate("seed", &spec(vec![module("seed.rego", src)], vec![]), now());
        assert!(a.compiled.is_none());
        a.errors
            .into_iter()
            .map(|e| (e.line, e.column, e.message))
            .collect()
    };
    assert_eq!(
        found(src),
        vec![(
            Some(6),
            Some(2),
            "rego_compile_error: var team assigned above".to_string()
        )]
    );
    let fixed = src.replace("\tteam := input.request.metadata.labels.team\n", "");
    assert_eq!(
        found(&fixed),
        vec![
            (
                Some(4),
                Some(2),
                "rego_compile_error: declared var repo unused".to_string()
            ),
            (
                Some(6),
                Some(2),
                "rego_unsafe_var_error: var key is unsafe".to_string()
            ),
        ]
    );
    // The unsafe variable behind a condition no empty input meets is found
    // by the compile check, not by evaluating the rule once.
    let comprehension = "package paver.c\n\ndeny contains \"t\" if {\n\tinput.never\n\tcount({key | input.request.spec.parameters.tags[_] == key}) > 0\n}\n";
    assert_eq!(
        found(comprehension),
        vec![(
            Some(5),
            Some(15),
            "rego_unsafe_var_error: var key is unsafe".to_string()
        )]
    );
}

/// Hostile Rego gets an error in time proportional to its size: regorus's
/// parser is exponential in bracket nesting, so deep nesting is refused
/// before it parses; ordering a long body for safety is quadratic at worst.
#[test]
fn hostile_rego_is_refused_or_checked_in_bounded_time() {
    let deep = format!(
        "package paver.d\n\ndeny contains x if {{\n  x := {}1{}\n}}\n",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    let a = activate("d", &spec(vec![module("d.rego", &deep)], vec![]), now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors.len(), 1, "{:?}", a.errors);
    assert_eq!((a.errors[0].line, a.errors[0].column), (Some(4), Some(23)));
    assert!(
        a.errors[0].message.contains("nest deeper than 16"),
        "{:?}",
        a.errors
    );

    // 1,000 comprehensions closing over one variable, and 3,000 literals
    // each binding what the one before it needs (the worst order): both
    // are OPA-valid and checked without error.
    let mut closures = String::from("package paver.c\n\ndeny contains y if {\n  y := input.a\n");
    for i in 0..1000 {
        closures.push_str(&format!("  c{i} := [z | z := y]\n  count(c{i}) > 0\n"));
    }
    closures.push_str("}\n");
    let mut chain = String::from("package paver.l\n\ndeny contains x0 if {\n");
    for i in (1..=3000).rev() {
        chain.push_str(&format!("  x{} = x{i}\n", i - 1));
    }
    chain.push_str("  x3000 = input.a\n}\n");
    for (name, src) in [("c.rego", closures), ("l.rego", chain)] {
        let errors = opa_check(&[module(name, &src)], true);
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
}

/// Two complete definitions of one rule that both hold give OPA an
/// `eval_conflict_error`; the evaluation must fail (the request is held
/// PolicyUnavailable), never pick one value and allow the request.
#[test]
fn conflicting_complete_definitions_fail_closed() {
    let src = "package paver.conflict\n\nallowed := true if input.parameters.a\n\nallowed := false if input.parameters.b\n\ndeny contains \"not allowed\" if not allowed\n";
    let b = compiled(&spec(vec![module("c.rego", src)], vec![]));
    assert_eq!(b.evaluator(), "vm", "{:?}", b.interpreted_because);
    for bundle in [b.clone(), Arc::new(b.interpreted())] {
        // One definition holds: its value decides.
        assert_eq!(
            eval(&bundle, json!({"b": true}), &BTreeMap::new())
                .violations
                .len(),
            1
        );
        assert!(eval(&bundle, json!({"a": true}), &BTreeMap::new()).allowed());
        // Both hold with different values: an error, on the VM as in the interpreter.
        let err = try_eval(
            &bundle,
            &input(json!({"a": true, "b": true}), 1.0),
            &BTreeMap::new(),
        )
        .expect_err("conflicting values are an error");
        let err = err.to_string();
        assert!(err.contains("conflict"), "{err}");
    }
}

/// `b := [a, a]`, `c := [b, b]`, ... `levels` times: a value of a few
/// hundred bytes whose text is 2^levels times longer.
fn shared_value(levels: usize) -> String {
    let mut src = String::from("  a0 := input.parameters.s\n");
    for i in 1..=levels {
        src.push_str(&format!("  a{i} := [a{0}, a{0}]\n", i - 1));
    }
    src
}

/// A builtin whose result would be far larger than its arguments is an
/// error naming the builtin and the limit, on the VM as in the
/// interpreter, before the result is built (vendor/README.md, 11-16).
#[test]
fn builtins_that_would_build_huge_results_fail_closed() {
    let long = "x".repeat(5000);
    let graph: serde_json::Map<String, serde_json::Value> = (0..25)
        .map(|i| {
            (
                format!("n{i}"),
                json!([format!("n{}", i + 1), format!("n{}", i + 2)]),
            )
        })
        .collect();
    let cases: Vec<(String, serde_json::Value, &str)> = vec![
        (
            "  x := numbers.range(1, input.parameters.n)\n".into(),
            json!({"n": 1_000_000_000u64}),
            "numbers.range: the range has 1000000000 elements, more than the limit of 100000",
        ),
        (
            "  x := numbers.range_step(0, input.parameters.n, 2)\n".into(),
            json!({"n": 1_000_000_000u64}),
            "numbers.range_step: the range has 500000001 elements, more than the limit of 100000",
        ),
        (
            "  x := net.cidr_expand(input.parameters.cidr)\n".into(),
            json!({"cidr": "0.0.0.0/0"}),
            "net.cidr_expand: the network has 4294967296 addresses, more than the limit of 100000",
        ),
        (
            "  x := sprintf(input.parameters.f, [1])\n".into(),
            json!({"f": "%999999999d"}),
            "sprintf: the width is 999999999 characters, more than the limit of 1000000",
        ),
        (
            "  x := replace(input.parameters.s, \"\", input.parameters.s)\n".into(),
            json!({"s": long}),
            "replace: the result would have 25010000 bytes, more than the limit of 16777216",
        ),
        (
            "  x := strings.replace_n({\"\": input.parameters.s}, input.parameters.s)\n".into(),
            json!({"s": long}),
            "strings.replace_n: the result would have 25010000 bytes, more than the limit of 16777216",
        ),
        (
            "  x := regex.replace(input.parameters.s, \"\", input.parameters.s)\n".into(),
            json!({"s": long}),
            "regex.replace: the result would have at least",
        ),
        (
            format!("{}  x := json.marshal(a23)\n", shared_value(23)),
            json!({"s": "0123456789"}),
            "json.marshal: the result would have at least",
        ),
        (
            format!("{}  x := sprintf(\"%v\", [a23])\n", shared_value(23)),
            json!({"s": "0123456789"}),
            "sprintf: the result would have at least",
        ),
        (
            "  x := json.marshal_with_options(input.parameters.list, {\"prefix\": input.parameters.p})\n"
                .into(),
            json!({"list": (0..1000).collect::<Vec<u32>>(), "p": "x".repeat(20_000)}),
            "json.marshal_with_options: the result would have 20045892 bytes, more than the limit of 16777216",
        ),
        (
            format!("{}  x := walk(a18)\n", shared_value(18)),
            json!({"s": "0123456789"}),
            "walk: the value has at least 100001 nodes, more than the limit of 100000",
        ),
        (
            "  x := graph.reachable_paths(input.parameters.graph, [\"n0\"])\n".into(),
            json!({"graph": graph}),
            "graph.reachable_paths: the paths have at least",
        ),
        (
            "  x := bits.lsh(1, input.parameters.n)\n".into(),
            json!({"n": 100_000_000u64}),
            "bits.lsh: the shift is 100000000 bits, more than the limit of 65536",
        ),
        (
            "  x := units.parse(input.parameters.u)\n".into(),
            json!({"u": "1e30000"}),
            "units.parse: the number has 30001 digits, more than the limit of 20000",
        ),
    ];
    for (body, params, expected) in cases {
        let src = format!("package paver.big\n\ndeny contains \"x\" if {{\n{body}  x == 0\n}}\n");
        let b = compiled(&spec(vec![module("big.rego", &src)], vec![]));
        // The VM compiler refuses `walk`; the interpreter evaluates such a bundle.
        if !expected.starts_with("walk") {
            assert_eq!(b.evaluator(), "vm", "{expected}: {:?}", b.interpreted_because);
        }
        let input = input(params, 1.0);
        for bundle in [b.clone(), Arc::new(b.interpreted())] {
            let start = std::time::Instant::now();
            let err =
                try_eval(&bundle, &input, &BTreeMap::new()).expect_err("a result over the limit is an error");
            let err = err.to_string();
            assert!(err.contains(expected), "{} {expected}: {err}", bundle.evaluator());
            eprintln!("{} {expected}: {:?}", bundle.evaluator(), start.elapsed());
            assert!(
                start.elapsed() < EVAL_TIME_LIMIT * 3,
                "{expected}: {:?}",
                start.elapsed()
            );
        }
    }
}

/// `numbers.range(1, 1e9)` aborted the process on a 24 GB allocation when
/// the bundle was activated; now activation refuses it, at its line.
#[test]
fn a_range_of_a_billion_is_refused_at_activation() {
    let src = "package paver.range\n\ndeny contains n if {\n  some n in numbers.range(1, 1e9)\n  n < 0\n}\n";
    let a = activate("range", &spec(vec![module("range.rego", src)], vec![]), now());
    assert!(a.compiled.is_none());
    assert_eq!(a.errors.len(), 1, "{:?}", a.errors);
    let e = &a.errors[0];
    assert_eq!((e.module.as_str(), e.line), ("range.rego", Some(4)), "{e:?}");
    assert_eq!(
        e.message,
        "numbers.range: the range has 1000000000 elements, more than the limit of 100000"
    );
}

/// Twelve tests each stopped at the 2 s limit took 24 s to activate; a
/// bundle's rules and tests now share one budget, and activation is refused
/// naming the test it stopped at. (A 3 s budget here; activation's is
/// [`compile::ACTIVATION_TIME_BUDGET`].)
#[test]
fn a_bundles_tests_share_one_time_budget() {
    let mut tests = String::from("package paver.slow_test\n");
    for name in ["a", "b", "c", "d"] {
        tests.push_str(&format!(
            "\ntest_{name} if {{\n  count([n | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); n := i * j; n < 0]) == 0\n}}\n"
        ));
    }
    let s = spec(
        vec![module("demo.rego", POLICY)],
        vec![module("slow_test.rego", &tests)],
    );
    let budget = std::time::Duration::from_secs(3);
    let start = std::time::Instant::now();
    let a = compile::activate_within("slow", &s, now(), budget);
    let elapsed = start.elapsed();
    assert!(a.compiled.is_none());
    assert!(elapsed < budget + EVAL_TIME_LIMIT / 2, "{elapsed:?}");
    assert_eq!(a.errors.len(), 1, "{:?}", a.errors);
    let e = &a.errors[0];
    assert_eq!((e.module.as_str(), e.line), ("slow_test.rego", Some(7)), "{e:?}");
    assert!(
        e.message.starts_with(
            "stopped at data.paver.slow_test.test_b (2 of 4 evaluated): evaluating the bundle's rules \
             once and running its tests took more than their budget of 3 s in total"
        ),
        "{}",
        e.message
    );
    let results: Vec<(&str, bool)> = a.tests.iter().map(|t| (t.name.as_str(), t.pass)).collect();
    assert_eq!(
        results,
        [
            ("data.paver.slow_test.test_a", false),
            ("data.paver.slow_test.test_b", false),
            ("data.paver.slow_test.test_c", false),
            ("data.paver.slow_test.test_d", false),
        ]
    );
    assert!(a.tests[0].message.contains("time limit"), "{:?}", a.tests[0]);
    assert!(
        a.tests[1].message.starts_with("test stopped: "),
        "{:?}",
        a.tests[1]
    );
    assert!(a.tests[3].message.starts_with("not run: "), "{:?}", a.tests[3]);
}
