//! Evaluating bundles against a prepared input and folding their rule
//! output into one deterministic [`PolicyOutcome`].

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use paver_crds::{CheckResult, Finding, PolicyMode};
use regorus::{Engine, Value, rvm::RegoVM};
use serde_json::Value as Json;

use super::{
    CompiledBundle, PolicyError, PreparedInput,
    compile::{BundleRule, parse_regorus_error},
    program::RuleProgram,
};

/// Rule id given to rule output of the wrong shape.
pub const INVALID_OUTPUT_RULE: &str = "invalid-output";
/// Rule id of a `needs_approval` reason reported as a finding (warn and
/// dryrun bundles report approvals instead of requiring them).
pub const NEEDS_APPROVAL_RULE: &str = "needs-approval";

/// The rules Paver reads from every package of a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    Deny,
    Warn,
    NeedsApproval,
    Checks,
}

impl RuleKind {
    /// What admission reads: everything but `checks`.
    pub const ADMISSION: [RuleKind; 3] = [RuleKind::Deny, RuleKind::Warn, RuleKind::NeedsApproval];
    /// Every rule kind.
    pub const ALL: [RuleKind; 4] = [
        RuleKind::Deny,
        RuleKind::Warn,
        RuleKind::NeedsApproval,
        RuleKind::Checks,
    ];

    /// The rule's name in Rego.
    pub fn rule_name(self) -> &'static str {
        match self {
            RuleKind::Deny => "deny",
            RuleKind::Warn => "warn",
            RuleKind::NeedsApproval => "needs_approval",
            RuleKind::Checks => "checks",
        }
    }

    pub(super) fn from_rule_name(name: &str) -> Option<RuleKind> {
        RuleKind::ALL.into_iter().find(|k| k.rule_name() == name)
    }
}

/// Everything policy said about one request, sorted and deduplicated.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyOutcome {
    /// `deny` results of enforcing bundles: they block the request.
    pub violations: Vec<Finding>,
    /// `warn` results, and `deny` results of bundles in warn mode or before `enforceAfter`.
    pub warnings: Vec<Finding>,
    /// Results of dryrun bundles: reported, never blocking.
    pub dryrun: Vec<Finding>,
    /// Findings an unexpired exception covers.
    pub waived: Vec<Finding>,
    /// `needs_approval` reasons of enforcing bundles, as `<bundle>: <reason>`.
    pub approval_reasons: Vec<String>,
    /// `checks` results, for the scorecard.
    pub checks: Vec<CheckResult>,
    /// `name@version` of every bundle evaluated.
    pub bundle_versions: Vec<String>,
    /// Bundles that would deny the request once their `enforceAfter`
    /// passes (their deny results warn until then), sorted.
    pub pending_enforcement: Vec<String>,
}

impl PolicyOutcome {
    /// Whether nothing blocks the request.
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Where a bundle's deny/warn/approval output goes, from its mode at `now`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Routing {
    Enforce,
    Warn,
    Dryrun,
}

/// Evaluates `rules` of every bundle against `input`. `request_ref`
/// (`namespace/name`) and `labels` select exceptions; `now` decides
/// `enforceAfter` and exception expiry. A rule that fails to evaluate
/// (runtime error, time limit) fails the whole evaluation: the caller must
/// not treat the request as compliant.
pub fn evaluate(
    bundles: &[Arc<CompiledBundle>],
    input: &PreparedInput,
    rules: &[RuleKind],
    request_ref: &str,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<PolicyOutcome, PolicyError> {
    let mut out = PolicyOutcome::default();
    for bundle in bundles {
        let routing = match bundle.mode {
            PolicyMode::Dryrun => Routing::Dryrun,
            _ if bundle.enforcing(now) => Routing::Enforce,
            _ => Routing::Warn,
        };
        // An enforce bundle before its enforceAfter: its deny results warn until then.
        let becomes_violation = bundle
            .enforce_after
            .filter(|at| bundle.mode == PolicyMode::Enforce && now < *at);
        let selected: Vec<&BundleRule> = bundle.rules.iter().filter(|r| rules.contains(&r.kind)).collect();
        let paths: Vec<&str> = selected.iter().map(|r| r.path.as_str()).collect();
        let values = Evaluator::new(bundle, input)?
            .eval_all(&paths)
            .map_err(|(i, message)| PolicyError::Evaluate {
                bundle: bundle.name.clone(),
                rule: paths.get(i).copied().unwrap_or("data").to_string(),
                message,
            })?;
        for (BundleRule { package, kind, path }, value) in selected.into_iter().zip(values) {
            let default_id = package.rsplit('.').next().unwrap_or(package);
            for item in elements(&value) {
                let item = serde_json::to_value(item).unwrap_or(Json::Null);
                let finding = |item: &Json| to_finding(&bundle.name, default_id, path, item);
                match (kind, routing) {
                    (RuleKind::Checks, _) => out.checks.push(to_check(&bundle.name, path, &item)),
                    (RuleKind::Deny, Routing::Enforce) => out.violations.push(finding(&item)),
                    // The warn-first rollout, visible: what will block, and from when.
                    (RuleKind::Deny, Routing::Warn) if let Some(at) = becomes_violation => {
                        out.pending_enforcement.push(bundle.name.clone());
                        let mut f = finding(&item);
                        f.message = format!(
                            "{} (becomes a violation on {})",
                            f.message,
                            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        );
                        out.warnings.push(f)
                    }
                    (RuleKind::Deny | RuleKind::Warn, Routing::Enforce | Routing::Warn) => {
                        out.warnings.push(finding(&item))
                    }
                    (RuleKind::Deny | RuleKind::Warn, Routing::Dryrun) => out.dryrun.push(finding(&item)),
                    (RuleKind::NeedsApproval, Routing::Enforce) => {
                        out.approval_reasons
                            .push(format!("{}: {}", bundle.name, to_reason(path, &item)))
                    }
                    (RuleKind::NeedsApproval, Routing::Warn) => {
                        out.warnings.push(approval_finding(bundle, path, &item))
                    }
                    (RuleKind::NeedsApproval, Routing::Dryrun) => {
                        out.dryrun.push(approval_finding(bundle, path, &item))
                    }
                }
            }
        }
        waive(bundle, &mut out, request_ref, labels, now);
        out.bundle_versions.push(bundle.name_version());
    }
    normalize(&mut out);
    Ok(out)
}

/// One bundle's rules being evaluated against one input: on the VM when
/// the bundle has a program, else on a clone of its interpreter.
enum Evaluator<'a> {
    Vm(&'a RuleProgram, Box<RegoVM>),
    Interpreter(Box<Engine>),
}

impl<'a> Evaluator<'a> {
    fn new(bundle: &'a CompiledBundle, input: &PreparedInput) -> Result<Self, PolicyError> {
        Ok(match &bundle.program {
            Some(program) => {
                let mut vm = program.vm().map_err(|message| PolicyError::Evaluate {
                    bundle: bundle.name.clone(),
                    rule: "data".into(),
                    message,
                })?;
                vm.set_input(input.0.clone());
                Evaluator::Vm(program, Box::new(vm))
            }
            None => {
                let mut engine = bundle.engine.clone();
                engine.set_input(input.0.clone());
                Evaluator::Interpreter(Box::new(engine))
            }
        })
    }

    /// The values of the rules at `paths`, in order, in one evaluation (the
    /// rules they share are evaluated once). An error gives the index of
    /// the rule that failed and a message naming the module and line.
    fn eval_all(&mut self, paths: &[&str]) -> Result<Vec<Value>, (usize, String)> {
        match self {
            Evaluator::Vm(program, vm) => program.eval_all(vm, paths),
            Evaluator::Interpreter(engine) => paths
                .iter()
                .enumerate()
                .map(|(i, path)| {
                    engine.eval_rule(path.to_string()).map_err(|e| {
                        let err = parse_regorus_error("", &e.to_string());
                        let at = err
                            .line
                            .map(|l| format!(" at {}:{l}", err.module))
                            .unwrap_or_default();
                        (i, format!("{}{at}", err.message))
                    })
                })
                .collect(),
        }
    }
}

/// The members of a set (or array) result; an undefined rule has none; any
/// other value is one (malformed) member.
fn elements(value: &Value) -> Vec<&Value> {
    match value {
        Value::Undefined => Vec::new(),
        Value::Set(set) => set.iter().collect(),
        Value::Array(array) => array.iter().collect(),
        other => vec![other],
    }
}

fn opt_string(item: &Json, key: &str) -> Result<Option<String>, ()> {
    match item.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

fn to_finding(bundle: &str, default_id: &str, path: &str, item: &Json) -> Finding {
    let parsed = match item {
        Json::String(msg) => Ok((default_id.to_string(), msg.clone(), None, None)),
        Json::Object(_) => match (
            opt_string(item, "id"),
            opt_string(item, "msg"),
            opt_string(item, "severity"),
            opt_string(item, "path"),
        ) {
            (Ok(id), Ok(Some(msg)), Ok(severity), Ok(field)) => Ok((
                id.filter(|i| !i.is_empty())
                    .unwrap_or_else(|| default_id.to_string()),
                msg,
                severity,
                field,
            )),
            _ => Err(()),
        },
        _ => Err(()),
    };
    match parsed {
        Ok((rule, message, severity, path)) => Finding {
            bundle: bundle.to_string(),
            rule,
            message,
            severity,
            path,
        },
        Err(()) => Finding {
            bundle: bundle.to_string(),
            rule: INVALID_OUTPUT_RULE.to_string(),
            message: format!(
                "{path} produced {item}, expected a string or an object with a string \"msg\" \
                 (and optional string \"id\", \"severity\", \"path\")"
            ),
            severity: None,
            path: None,
        },
    }
}

fn to_reason(path: &str, item: &Json) -> String {
    match item {
        Json::String(s) => s.clone(),
        Json::Object(o) => match o.get("msg") {
            Some(Json::String(s)) => s.clone(),
            _ => format!("{path} produced {item}, expected a string"),
        },
        _ => format!("{path} produced {item}, expected a string"),
    }
}

fn approval_finding(bundle: &CompiledBundle, path: &str, item: &Json) -> Finding {
    Finding {
        bundle: bundle.name.clone(),
        rule: NEEDS_APPROVAL_RULE.to_string(),
        message: format!("would need approval: {}", to_reason(path, item)),
        severity: None,
        path: None,
    }
}

fn to_check(bundle: &str, path: &str, item: &Json) -> CheckResult {
    let field = |k: &str| item.get(k).and_then(Json::as_str).map(str::to_string);
    let source = format!("bundle/{bundle}");
    match (
        field("id"),
        field("category"),
        field("level"),
        item.get("pass").and_then(Json::as_bool),
        field("msg"),
    ) {
        (Some(id), Some(category), Some(level), Some(pass), Some(message))
            if matches!(level.as_str(), "bronze" | "silver" | "gold") =>
        {
            CheckResult {
                id,
                category,
                level,
                pass,
                message,
                source,
            }
        }
        _ => CheckResult {
            id: INVALID_OUTPUT_RULE.to_string(),
            category: "policy".to_string(),
            level: "bronze".to_string(),
            pass: false,
            message: format!(
                "{path} produced {item}, expected {{\"id\", \"category\", \"level\" (bronze|silver|gold), \"pass\" (bool), \"msg\"}}"
            ),
            source,
        },
    }
}

/// Moves this bundle's findings that an unexpired exception covers to `waived`.
fn waive(
    bundle: &CompiledBundle,
    out: &mut PolicyOutcome,
    request_ref: &str,
    labels: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) {
    if bundle.exceptions.is_empty() {
        return;
    }
    let exception_for = |f: &Finding| {
        (f.bundle == bundle.name)
            .then(|| {
                bundle
                    .exceptions
                    .iter()
                    .find(|e| e.applies(&f.rule, request_ref, labels, now))
            })
            .flatten()
    };
    for list in [&mut out.violations, &mut out.warnings, &mut out.dryrun] {
        let mut kept = Vec::new();
        for mut f in std::mem::take(list) {
            match exception_for(&f) {
                // Waived, saying by which exception and until when.
                Some(e) => {
                    f.message = format!(
                        "{} (waived by exception {} until {})",
                        f.message,
                        e.name,
                        e.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                    out.waived.push(f);
                }
                None => kept.push(f),
            }
        }
        *list = kept;
    }
}

/// Longest text (bytes) a finding's message, an approval reason or a
/// check's message keeps; ids, paths and severities keep a quarter of it.
/// A rule's output goes into the request's status, Events and the
/// Scorecard: etcd refuses an object over 1.5 MiB, and a person reads a
/// line, not a megabyte. 100 findings at the limit stay near 100 KiB.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Most findings (or reasons, or checks) of one kind kept per request; the
/// rest are counted in a last entry.
pub const MAX_FINDINGS: usize = 100;

fn bound(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("... ({dropped} more bytes)"));
}

fn bound_finding(f: &mut Finding) {
    bound(&mut f.message, MAX_MESSAGE_BYTES);
    bound(&mut f.rule, MAX_MESSAGE_BYTES / 4);
    for field in [&mut f.path, &mut f.severity].into_iter().flatten() {
        bound(field, MAX_MESSAGE_BYTES / 4);
    }
}

/// Keeps at most [`MAX_FINDINGS`] entries of `list`: the first ones, and a
/// last one `counted` makes of those left out.
fn cap<T>(list: &mut Vec<T>, counted: impl FnOnce(&[T]) -> T) {
    if list.len() > MAX_FINDINGS {
        let last = counted(&list[MAX_FINDINGS - 1..]);
        list.truncate(MAX_FINDINGS - 1);
        list.push(last);
    }
}

fn bound_list(list: &mut Vec<Finding>) {
    list.iter_mut().for_each(bound_finding);
    cap(list, |rest| {
        let bundles: BTreeSet<&str> = rest.iter().map(|f| f.bundle.as_str()).collect();
        Finding {
            bundle: bundles.into_iter().collect::<Vec<_>>().join(", "),
            rule: "more-findings".into(),
            message: format!(
                "{} more findings not shown (at most {MAX_FINDINGS} are kept)",
                rest.len()
            ),
            ..Default::default()
        }
    });
}

fn normalize(out: &mut PolicyOutcome) {
    for list in [
        &mut out.violations,
        &mut out.warnings,
        &mut out.dryrun,
        &mut out.waived,
    ] {
        list.sort();
        list.dedup();
    }
    out.approval_reasons.sort();
    out.approval_reasons.dedup();
    out.checks.sort_by(|a, b| {
        (&a.source, &a.id, &a.level, &a.category, a.pass, &a.message).cmp(&(
            &b.source,
            &b.id,
            &b.level,
            &b.category,
            b.pass,
            &b.message,
        ))
    });
    out.checks.dedup();
    out.bundle_versions.sort();
    out.bundle_versions.dedup();
    out.pending_enforcement.sort();
    out.pending_enforcement.dedup();
    for list in [
        &mut out.violations,
        &mut out.warnings,
        &mut out.dryrun,
        &mut out.waived,
    ] {
        bound_list(list);
    }
    out.approval_reasons
        .iter_mut()
        .for_each(|r| bound(r, MAX_MESSAGE_BYTES));
    cap(&mut out.approval_reasons, |rest| {
        format!(
            "{} more reasons not shown (at most {MAX_FINDINGS} are kept)",
            rest.len()
        )
    });
    for c in &mut out.checks {
        bound(&mut c.message, MAX_MESSAGE_BYTES);
        bound(&mut c.id, MAX_MESSAGE_BYTES / 4);
    }
    out.checks.truncate(2 * MAX_FINDINGS);
}
