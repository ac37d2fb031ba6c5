//! regorus's VM, which evaluates requests, and its interpreter, which
//! checks and tests bundles, give the same verdict on the shipped bundles:
//! on every example and on thousands of variants of them, each breaking
//! one field (removed, null, or of another type) or one fact of the
//! checks input.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use paver::core::policy::{CompiledBundle, PolicyInput, RuleKind, evaluate};
use serde_json::{Value, json};

/// Every path to a value inside `doc`, as JSON pointers.
fn pointers(doc: &Value, at: String, out: &mut Vec<String>) {
    match doc {
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let p = format!("{at}/{k}");
            out.push(p.clone());
            pointers(v, p, out);
        }),
        Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| {
            let p = format!("{at}/{i}");
            out.push(p.clone());
            pointers(v, p, out);
        }),
        _ => {}
    }
}

/// `doc` with the value at `pointer` replaced, or removed when `value` is `None`.
fn mutate(doc: &Value, pointer: &str, value: Option<&Value>) -> Value {
    let mut doc = doc.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    match (doc.pointer_mut(parent), value) {
        (Some(Value::Object(map)), None) => {
            map.remove(key);
        }
        (Some(Value::Array(items)), None) => {
            if let Ok(i) = key.parse::<usize>()
                && i < items.len()
            {
                items.remove(i);
            }
        }
        (_, Some(v)) => {
            if let Some(slot) = doc.pointer_mut(pointer) {
                *slot = v.clone();
            }
        }
        _ => {}
    }
    doc
}

/// The examples' inputs and their variants: each field of the request's
/// spec removed, null, or replaced by a value of every other JSON type;
/// each checks fact (rendered files, Git and cluster facts) removed or odd.
fn inputs() -> Vec<(String, PolicyInput)> {
    let replacements = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(1e9),
        json!(""),
        json!("*"),
        json!([]),
        json!({}),
    ];
    let mut out = Vec::new();
    for (name, request) in common::examples() {
        let monthly = common::monthly_estimate(&request);
        out.push((name.clone(), common::input_for(&request, monthly)));
        let mut paths = Vec::new();
        pointers(&request["spec"], "/spec".into(), &mut paths);
        for path in &paths {
            let removed = mutate(&request, path, None);
            out.push((
                format!("{name} without {path}"),
                common::input_for(&removed, monthly),
            ));
            for v in &replacements {
                let changed = mutate(&request, path, Some(v));
                out.push((format!("{name} {path}={v}"), common::input_for(&changed, monthly)));
            }
        }
        for monthly in [0.0, 4999.0, 5001.0, 1e7] {
            out.push((
                format!("{name} at {monthly} USD"),
                common::input_for(&request, monthly),
            ));
        }
        let base = common::input_for(&request, monthly);
        let mut variant = |label: &str, f: &dyn Fn(&mut PolicyInput)| {
            let mut input = base.clone();
            f(&mut input);
            out.push((format!("{name} {label}"), input));
        };
        variant("no rendered files", &|i| i.rendered = None);
        variant("empty rendered files", &|i| i.rendered = Some(BTreeMap::new()));
        variant("no git facts", &|i| i.git = None);
        variant("git facts of the wrong type", &|i| {
            i.git = Some(json!({"last_commit_by_owner_days": "soon"}))
        });
        variant("no cluster facts", &|i| i.cluster = None);
        variant("out of sync", &|i| {
            i.cluster = Some(json!({"sync": "OutOfSync", "health": "Degraded"}))
        });
    }
    out
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

#[test]
fn vm_and_interpreter_agree_on_the_shipped_bundles() {
    let (_, bundles) = common::activated();
    for b in &bundles {
        assert_eq!(b.evaluator(), "vm", "{}: {:?}", b.name, b.interpreted_because);
    }
    let interpreted: Vec<std::sync::Arc<CompiledBundle>> = bundles
        .iter()
        .map(|b| std::sync::Arc::new(b.interpreted()))
        .collect();
    let inputs = inputs();
    let (mut compared, mut errors, mut findings, mut some_in_scalar) = (0, 0, 0, 0);
    let mut differences = Vec::new();
    for (label, input) in &inputs {
        let prepared = input.prepare().expect("input converts");
        for (vm, interp) in bundles.iter().zip(&interpreted) {
            let run = |b: &std::sync::Arc<CompiledBundle>| {
                evaluate(
                    std::slice::from_ref(b),
                    &prepared,
                    &RuleKind::ALL,
                    "team/svc",
                    &BTreeMap::new(),
                    now(),
                )
            };
            let (ours, theirs) = (run(vm), run(interp));
            compared += 1;
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) if a == b => {
                    findings += a.violations.len() + a.warnings.len() + a.approval_reasons.len();
                }
                (Err(_), Err(_)) => errors += 1,
                // `some x in <not a collection>`: the interpreter raises an
                // error, the VM (like OPA, see opa_parity) iterates nothing.
                (Ok(_), Err(e)) if e.to_string().contains("`some .. in collection` expects") => {
                    some_in_scalar += 1
                }
                _ => differences.push(format!(
                    "{} on {label}:\n  vm:          {ours:?}\n  interpreter: {theirs:?}",
                    vm.name
                )),
            }
        }
    }
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for d in &differences {
        let kind = d
            .lines()
            .nth(1)
            .map(|l| l.split(" at ").next().unwrap_or(l).chars().take(160).collect())
            .unwrap_or_default();
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        differences.is_empty(),
        "{} of {compared} bundle/input pairs differ, by what the VM said: {kinds:#?}\nthe first:\n{}",
        differences.len(),
        differences.iter().take(3).cloned().collect::<Vec<_>>().join("\n")
    );
    // The variants must exercise the rules, not only pass through them.
    assert!(inputs.len() > 1000, "{} inputs", inputs.len());
    assert!(
        findings > inputs.len(),
        "{findings} findings over {} inputs",
        inputs.len()
    );
    eprintln!(
        "vm_parity: {compared} bundle/input pairs agree ({} inputs, {findings} findings, {errors} errors on both; \
         {some_in_scalar} where only the interpreter refuses `some .. in` over a scalar)",
        inputs.len()
    );
}
