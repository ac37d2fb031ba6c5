//! Compiling a bundle: load modules and data into a regorus engine, refuse
//! what regorus would only notice at request time, run the tests.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use paver_crds::{
    BundleError, BundleMatch, LabelSelector, PolicyBundleSpec, PolicyException, PolicyMode, RegoModule,
    TestResult,
};
use regorus::{
    Engine, Source, Value,
    unstable::{Lexer, Rule, RuleHead, TokenKind},
    utils::limits::ExecutionTimerConfig,
};

use super::{EVAL_TIME_LIMIT, check::check_modules, outcome::RuleKind, program::RuleProgram};

/// A bundle that compiled, passed its tests and is ready to evaluate.
/// Evaluation clones the prepared engine; nothing is parsed again.
#[derive(Clone)]
pub struct CompiledBundle {
    /// Bundle name (metadata.name).
    pub name: String,
    /// Bundle version (spec.version).
    pub version: String,
    /// How `deny` results count.
    pub mode: PolicyMode,
    /// Before this instant an `enforce` bundle behaves as `warn`.
    pub enforce_after: Option<DateTime<Utc>>,
    /// Which requests the bundle applies to besides those whose route names it.
    pub match_: Option<BundleMatch>,
    /// Waivers, with their expiry parsed.
    pub exceptions: Vec<CompiledException>,
    /// Packages of the bundle's modules, e.g. `data.paver.security`, sorted.
    pub packages: Vec<String>,
    /// The rules Paver reads that the modules declare, sorted by package and kind.
    pub(super) rules: Vec<BundleRule>,
    /// Modules and data loaded, already prepared by activation's evaluation:
    /// evaluates the bundle when it has no VM program.
    pub(super) engine: Engine,
    /// The rules compiled for regorus's VM, which evaluates requests.
    pub(super) program: Option<RuleProgram>,
    /// Why the bundle has no VM program, when the VM compiler refused it.
    pub interpreted_because: Option<String>,
}

/// A rule Paver reads, as one package declares it.
#[derive(Clone, Debug)]
pub(super) struct BundleRule {
    /// `data.<package>`.
    pub package: String,
    pub kind: RuleKind,
    /// `data.<package>.<rule>`: what is evaluated, and named in findings and errors.
    pub path: String,
}

impl std::fmt::Debug for CompiledBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledBundle")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("enforce_after", &self.enforce_after)
            .field("packages", &self.packages)
            .finish_non_exhaustive()
    }
}

impl CompiledBundle {
    /// `name@version`, as recorded on commits.
    pub fn name_version(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Whether `deny` results block at `now` (enforce mode, past `enforceAfter`).
    pub fn enforcing(&self, now: DateTime<Utc>) -> bool {
        self.mode == PolicyMode::Enforce && self.enforce_after.is_none_or(|t| now >= t)
    }

    /// What evaluates requests: `vm` or `interpreter`.
    pub fn evaluator(&self) -> &'static str {
        if self.program.is_some() {
            "vm"
        } else {
            "interpreter"
        }
    }

    /// The same bundle evaluated by regorus's interpreter: to compare the
    /// two evaluators (tests, benchmarks).
    pub fn interpreted(&self) -> CompiledBundle {
        CompiledBundle {
            program: None,
            interpreted_because: Some("asked for the interpreter".into()),
            ..self.clone()
        }
    }
}

/// A waiver with its expiry parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledException {
    pub name: String,
    /// `namespace/name` of the request it applies to.
    pub request: Option<String>,
    /// Labels of the requests it applies to.
    pub selector: Option<LabelSelector>,
    /// Rule ids waived; `*` waives all.
    pub rules: Vec<String>,
    pub reason: String,
    pub expires: DateTime<Utc>,
}

impl CompiledException {
    /// Whether the waiver covers `rule` for the request at `now`.
    pub fn applies(
        &self,
        rule: &str,
        request_ref: &str,
        labels: &BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> bool {
        now < self.expires
            && self.rules.iter().any(|r| r == "*" || r == rule)
            && (self.request.as_deref() == Some(request_ref)
                || self.selector.as_ref().is_some_and(|s| s.matches(labels)))
    }
}

/// The outcome of activating a bundle: the compiled bundle when it compiled
/// and every test passed, and the report either way.
#[derive(Debug, Default)]
pub struct Activation {
    pub compiled: Option<CompiledBundle>,
    /// Compile, load and activation-time evaluation errors.
    pub errors: Vec<BundleError>,
    /// One result per `test_` rule.
    pub tests: Vec<TestResult>,
}

/// The longest an exception may run, from activation to its `expires`:
/// a waiver is looked at again at least once a year.
pub const MAX_EXCEPTION_DAYS: i64 = 365;

/// The time activation may spend evaluating a bundle: each of its rules
/// once and all of its tests, together (each evaluation also stops at
/// [`EVAL_TIME_LIMIT`]). Without it, twelve tests each stopped at the 2 s
/// limit took 24 s. The shipped bundles' tests take under 10 ms
/// (BENCHMARKS.md); 10 s is five evaluations at their limit, and an
/// activation that needs more is a bundle to split.
pub const ACTIVATION_TIME_BUDGET: Duration = Duration::from_secs(10);

/// What is left of [`ACTIVATION_TIME_BUDGET`] (or another budget) as a
/// bundle's rules and tests are evaluated.
struct TimeBudget {
    started: Instant,
    total: Duration,
}

impl TimeBudget {
    fn new(total: Duration) -> Self {
        TimeBudget {
            started: Instant::now(),
            total,
        }
    }

    fn spent(&self) -> bool {
        self.started.elapsed() >= self.total
    }

    /// Sets `engine`'s time limit for its next evaluation: [`EVAL_TIME_LIMIT`]
    /// or what is left of the budget, whichever is less.
    fn limit_next(&self, engine: &mut Engine) {
        let left = self.total.saturating_sub(self.started.elapsed());
        set_time_limit(engine, EVAL_TIME_LIMIT.min(left).max(Duration::from_millis(1)));
    }

    /// The error activation reports when the budget ran out evaluating `what`.
    fn error(&self, module: &str, line: u32, what: &str, done: usize, of: usize) -> BundleError {
        BundleError {
            module: module.to_string(),
            line: Some(line),
            column: None,
            message: format!(
                "stopped at {what} ({done} of {of} evaluated): evaluating the bundle's rules once and \
                 running its tests took more than their budget of {} s in total; make the slow rules or \
                 tests faster, or split the bundle",
                self.total.as_secs_f64()
            ),
        }
    }
}

/// Compiles `spec`, refuses what OPA's compiler refuses, evaluates every
/// rule once against an empty input (the time limit), and runs its tests,
/// all within [`ACTIVATION_TIME_BUDGET`]. The bundle is activated only when
/// there is no error and every test passes. `now` bounds its exceptions'
/// lifetime ([`MAX_EXCEPTION_DAYS`]).
pub fn activate(name: &str, spec: &PolicyBundleSpec, now: DateTime<Utc>) -> Activation {
    activate_within(name, spec, now, ACTIVATION_TIME_BUDGET)
}

/// [`activate`] with `budget` for evaluating the rules and tests.
pub(super) fn activate_within(
    name: &str,
    spec: &PolicyBundleSpec,
    now: DateTime<Utc>,
    budget: Duration,
) -> Activation {
    let mut errors = Vec::new();
    let enforce_after = spec.enforce_after.as_deref().and_then(|t| {
        parse_time(t)
            .map_err(|e| {
                errors.push(field_error(
                    "spec.enforceAfter",
                    format!("failed to parse enforceAfter: {e}"),
                ))
            })
            .ok()
    });
    let exceptions = spec
        .exceptions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| compile_exception(i, e, now).map_err(|err| errors.push(err)).ok())
        .collect();
    if spec.modules.is_empty() {
        errors.push(field_error(
            "spec.modules",
            "a bundle needs at least one Rego module".into(),
        ));
    }
    let Some((engine, test_engine)) = load(spec, &mut errors) else {
        return Activation {
            compiled: None,
            errors,
            tests: Vec::new(),
        };
    };
    let mut engine = engine;
    let mut test_engine = test_engine;
    let policy_rules = rule_heads(&mut engine);
    // What OPA's compiler refuses (`opa check --strict`), over the modules
    // and their tests: refused before anything is evaluated. Paver's own
    // refusals of a bundle's shape follow only for a bundle OPA accepts.
    errors.extend(check_errors(&mut test_engine, true));
    if errors.is_empty() {
        errors.extend(shape_errors(&policy_rules, spec.data.as_ref()));
        if !spec.allow_nondeterministic_builtins {
            errors.extend(nondeterministic_calls(&mut engine));
        }
    }
    if !errors.is_empty() {
        return Activation {
            compiled: None,
            errors,
            tests: Vec::new(),
        };
    }
    engine.set_input(Value::new_object());
    let budget = TimeBudget::new(budget);
    // Each rule once, however many definitions it has (2,000 definitions of
    // `deny` evaluated 2,000 times took 22 s).
    let mut evaluated = BTreeSet::new();
    let to_evaluate: Vec<(String, &RuleHeadInfo)> = policy_rules
        .iter()
        .filter(|r| !r.is_func)
        .map(|r| (format!("{}.{}", r.package, r.name), r))
        .filter(|(path, _)| evaluated.insert(path.clone()))
        .collect();
    for (i, (path, rule)) in to_evaluate.iter().enumerate() {
        budget.limit_next(&mut engine);
        let result = engine.eval_rule(path.clone());
        if budget.spent() {
            errors.push(budget.error(&rule.module, rule.line, path, i + 1, to_evaluate.len()));
            break;
        }
        if let Err(e) = result {
            errors.push(parse_regorus_error(&rule.module, &e.to_string()));
        }
    }
    set_time_limit(&mut engine, EVAL_TIME_LIMIT);
    if !policy_rules
        .iter()
        .any(|r| !r.is_func && RuleKind::from_rule_name(&r.name).is_some())
    {
        errors.push(field_error(
            "spec.modules",
            "the bundle declares none of the rules Paver reads (deny, warn, needs_approval, checks): \
             it would be active and judge nothing"
                .into(),
        ));
    }
    let tests = if budget.spent() {
        Vec::new()
    } else {
        let (tests, error) = run_test_rules(&mut test_engine, spec, &budget);
        errors.extend(error);
        tests
    };
    if !errors.is_empty() || tests.iter().any(|t| !t.pass) {
        return Activation {
            compiled: None,
            errors,
            tests,
        };
    }
    let packages: BTreeSet<String> = policy_rules.iter().map(|r| r.package.clone()).collect();
    let rules: BTreeSet<(String, RuleKind)> = policy_rules
        .iter()
        .filter_map(|r| RuleKind::from_rule_name(&r.name).map(|k| (r.package.clone(), k)))
        .collect();
    let rules: Vec<BundleRule> = rules
        .into_iter()
        .map(|(package, kind)| BundleRule {
            path: format!("{package}.{}", kind.rule_name()),
            package,
            kind,
        })
        .collect();
    let entry_points: Vec<String> = rules.iter().map(|r| r.path.clone()).collect();
    // A bundle without any of Paver's rules was refused above.
    let (program, interpreted_because) = match RuleProgram::compile(&engine, &entry_points) {
        Ok(p) => (Some(p), None),
        Err(e) => (None, Some(format!("the VM compiler refused the bundle: {e}"))),
    };
    let compiled = CompiledBundle {
        name: name.to_string(),
        version: spec.version.clone(),
        mode: spec.mode,
        enforce_after,
        match_: spec.match_.clone(),
        exceptions,
        packages: packages.into_iter().collect(),
        rules,
        engine,
        program,
        interpreted_because,
    };
    Activation {
        compiled: Some(compiled),
        errors,
        tests,
    }
}

/// What would make a bundle fail open by its shape, refused at activation
/// (with a bundle that declares none of the rules Paver reads, checked
/// after its rules are evaluated once):
/// - a rule with a ref head under one of those names (`deny.critical
///   contains ...`): OPA reads it as part of `deny`, Paver would not;
/// - `data` holding a value at the path of one of the bundle's own rules
///   (`{"paver": {"security": {"deny": []}}}`): OPA refuses the bundle,
///   and the data would shadow the rule.
fn shape_errors(rules: &[RuleHeadInfo], data: Option<&serde_json::Value>) -> Vec<BundleError> {
    let mut errors = Vec::new();
    let names: Vec<&str> = RuleKind::ALL.iter().map(|k| k.rule_name()).collect();
    let at = |r: &RuleHeadInfo, message: String| BundleError {
        module: r.module.clone(),
        line: Some(r.line),
        column: None,
        message,
    };
    for r in rules.iter().filter(|r| !r.is_func) {
        let first = r.name.split('.').next().unwrap_or(&r.name);
        if !names.contains(&r.name.as_str()) && names.contains(&first) {
            errors.push(at(
                r,
                format!(
                    "rule {:?} has a ref head under {first:?}: Paver reads only the rule {first:?} itself; \
                     write `{first} contains {{...}}` (with an \"id\" saying which kind) instead",
                    r.name
                ),
            ));
        }
        let path: Vec<&str> = r
            .package
            .trim_start_matches("data.")
            .split('.')
            .chain(r.name.split('.'))
            .collect();
        let mut at_path = data;
        for segment in &path {
            at_path = at_path.and_then(|v| v.get(segment));
        }
        if at_path.is_some() {
            errors.push(at(
                r,
                format!(
                    "the bundle's data defines data.{}, the path of its own rule {:?} (OPA refuses \
                     such a bundle: the data would shadow the rule)",
                    path.join("."),
                    r.name
                ),
            ));
        }
    }
    errors
}

/// Runs a bundle's tests the way `opa test` does, for `paver test`:
/// compile errors, then one result per `test_` rule.
pub fn run_tests(spec: &PolicyBundleSpec) -> (Vec<BundleError>, Vec<TestResult>) {
    let mut errors = Vec::new();
    let Some((_, mut test_engine)) = load(spec, &mut errors) else {
        return (errors, Vec::new());
    };
    errors.extend(check_errors(&mut test_engine, true));
    if !errors.is_empty() {
        return (errors, Vec::new());
    }
    let (tests, error) = run_test_rules(&mut test_engine, spec, &TimeBudget::new(ACTIVATION_TIME_BUDGET));
    errors.extend(error);
    (errors, tests)
}

/// Checks Rego modules as `opa check` does (`opa check --strict` with
/// `strict`): parse errors, then OPA's compile errors (regorus's
/// `check_modules`), each with its module, line, column and OPA's code.
/// Activation refuses a bundle with any of them (strict).
pub fn opa_check(modules: &[RegoModule], strict: bool) -> Vec<BundleError> {
    let mut engine = new_engine();
    let mut errors = Vec::new();
    for m in modules {
        if let Some(err) = nesting_error(m) {
            errors.push(err);
        } else if let Err(e) = engine.add_policy(m.name.clone(), m.source.clone()) {
            let mut err = parse_regorus_error(&m.name, &e.to_string());
            err.message = format!("rego_parse_error: {}", err.message);
            errors.push(err);
        }
    }
    if !errors.is_empty() {
        return errors;
    }
    check_errors(&mut engine, strict)
}

/// Brackets (`[`, `{`, `(`) a module may nest. regorus's parser takes time
/// exponential in the nesting of arrays and objects (20 levels: 2.6 s, 30:
/// over a minute); the shipped bundles nest 8.
pub const MAX_REGO_NESTING: usize = 16;

/// A module nesting brackets deeper than [`MAX_REGO_NESTING`], refused
/// before regorus parses it. Strings and comments are skipped (regorus's
/// lexer reads them); a module the lexer refuses is left to the parser.
fn nesting_error(module: &RegoModule) -> Option<BundleError> {
    let source = Source::from_contents(module.name.clone(), module.source.clone()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut depth = 0usize;
    while let Ok(token) = lexer.next_token() {
        match (token.0, token.1.text()) {
            (TokenKind::Eof, _) => break,
            (TokenKind::Symbol, "[" | "{" | "(") => {
                depth += 1;
                if depth > MAX_REGO_NESTING {
                    return Some(BundleError {
                        module: module.name.clone(),
                        line: Some(token.1.line),
                        column: Some(token.1.col),
                        message: format!(
                            "brackets nest deeper than {MAX_REGO_NESTING} levels here; flatten the \
                             expression (bind parts to variables or rules)"
                        ),
                    });
                }
            }
            (TokenKind::Symbol, "]" | "}" | ")") => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// OPA's compile errors for the modules loaded into `engine`.
fn check_errors(engine: &mut Engine, strict: bool) -> Vec<BundleError> {
    check_modules(engine.get_modules(), strict)
        .into_iter()
        .map(|e| BundleError {
            module: e.file,
            line: Some(e.line),
            column: Some(e.col),
            message: format!("{}: {}", e.code, e.message),
        })
        .collect()
}

fn field_error(field: &str, message: String) -> BundleError {
    BundleError {
        module: field.to_string(),
        line: None,
        column: None,
        message,
    }
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc))
}

fn compile_exception(
    i: usize,
    e: &PolicyException,
    now: DateTime<Utc>,
) -> Result<CompiledException, BundleError> {
    let field = format!("spec.exceptions[{i}]");
    let expires = parse_time(&e.expires).map_err(|err| {
        field_error(
            &field,
            format!("failed to parse expires of exception {:?}: {err}", e.name),
        )
    })?;
    if e.request.is_none() && e.selector.is_none() {
        return Err(field_error(
            &field,
            format!("exception {:?} names neither a request nor a selector", e.name),
        ));
    }
    if let Some(r) = &e.request
        && r.split('/').filter(|s| !s.is_empty()).count() != 2
    {
        return Err(field_error(
            &field,
            format!(
                "exception {:?}: request must be namespace/name, got {r:?}",
                e.name
            ),
        ));
    }
    if e.rules.is_empty() {
        return Err(field_error(
            &field,
            format!("exception {:?} waives no rules (use \"*\" for all)", e.name),
        ));
    }
    if let Some(selector) = &e.selector
        && selector.match_labels.is_empty()
        && selector.match_expressions.is_empty()
    {
        return Err(field_error(
            &field,
            format!(
                "exception {:?}: an empty selector matches every request; name the labels it waives for",
                e.name
            ),
        ));
    }
    if expires - now > chrono::Duration::days(MAX_EXCEPTION_DAYS) {
        return Err(field_error(
            &field,
            format!(
                "exception {:?} expires {}, more than {MAX_EXCEPTION_DAYS} days from now ({}): an exception \
                 is reviewed at least once a year; set expires within a year and renew it then",
                e.name,
                e.expires,
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    Ok(CompiledException {
        name: e.name.clone(),
        request: e.request.clone(),
        selector: e.selector.clone(),
        rules: e.rules.clone(),
        reason: e.reason.clone(),
        expires,
    })
}

fn new_engine() -> Engine {
    let mut engine = Engine::new();
    // Rego v1 is regorus's default; say so for the reader.
    engine.set_rego_v0(false);
    set_time_limit(&mut engine, EVAL_TIME_LIMIT);
    engine
}

/// How long each of `engine`'s evaluations may run.
fn set_time_limit(engine: &mut Engine, limit: Duration) {
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
}

/// Loads data and modules into a policy engine, and the same plus the test
/// modules into a test engine. `None` when anything failed to load.
fn load(spec: &PolicyBundleSpec, errors: &mut Vec<BundleError>) -> Option<(Engine, Engine)> {
    let mut engine = new_engine();
    if let Some(data) = &spec.data {
        if !data.is_object() {
            errors.push(field_error(
                "spec.data",
                "data must be a JSON object (it is loaded at the data root)".into(),
            ));
        } else {
            match <Value as serde::Deserialize>::deserialize(data) {
                Ok(value) => {
                    if let Err(e) = engine.add_data(value) {
                        errors.push(field_error("spec.data", format!("failed to load data: {e}")));
                    }
                }
                Err(e) => errors.push(field_error("spec.data", format!("failed to load data: {e}"))),
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut add = |engine: &mut Engine, module: &RegoModule, errors: &mut Vec<BundleError>| {
        if !seen.insert(module.name.clone()) {
            errors.push(BundleError {
                module: module.name.clone(),
                line: None,
                column: None,
                message: "duplicate module name".into(),
            });
        } else if let Some(err) = nesting_error(module) {
            errors.push(err);
        } else if let Err(e) = engine.add_policy(module.name.clone(), module.source.clone()) {
            errors.push(parse_regorus_error(&module.name, &e.to_string()));
        }
    };
    for module in &spec.modules {
        add(&mut engine, module, errors);
    }
    let mut test_engine = engine.clone();
    for module in &spec.tests {
        add(&mut test_engine, module, errors);
    }
    errors.is_empty().then_some((engine, test_engine))
}

/// One result per `test_` rule of the bundle's test modules, and the error
/// when `budget` ran out (the test it stopped at fails, those after it are
/// not run and fail).
fn run_test_rules(
    test_engine: &mut Engine,
    spec: &PolicyBundleSpec,
    budget: &TimeBudget,
) -> (Vec<TestResult>, Option<BundleError>) {
    let test_modules: BTreeSet<&str> = spec.tests.iter().map(|m| m.name.as_str()).collect();
    let mut names = BTreeSet::new();
    let tests: Vec<(String, String, u32)> = rule_heads(test_engine)
        .into_iter()
        .filter(|r| !r.is_func && r.name.starts_with("test_") && test_modules.contains(r.module.as_str()))
        .map(|r| (format!("{}.{}", r.package, r.name), r.module, r.line))
        .filter(|(path, _, _)| names.insert(path.clone()))
        .collect();
    test_engine.set_input(Value::new_object());
    test_engine.set_gather_prints(true);
    let count = tests.len();
    let mut stopped: Option<BundleError> = None;
    let results = tests
        .into_iter()
        .enumerate()
        .map(|(i, (path, module, line))| {
            if let Some(error) = &stopped {
                return TestResult {
                    name: path,
                    pass: false,
                    message: format!("not run: {}", error.message),
                };
            }
            budget.limit_next(test_engine);
            let result = test_engine.eval_rule(path.clone());
            let prints = test_engine.take_prints().unwrap_or_default();
            if budget.spent() {
                let error = budget.error(&module, line, &path, i + 1, count);
                let message = format!("test stopped: {}", error.message);
                stopped = Some(error);
                return TestResult {
                    name: path,
                    pass: false,
                    message,
                };
            }
            let (pass, mut message) = match result {
                Ok(Value::Bool(true)) => (true, String::new()),
                Ok(Value::Undefined) => (false, "test failed (a condition did not hold)".to_string()),
                Ok(other) => (false, format!("test must be true, got {other}")),
                Err(e) => {
                    let err = parse_regorus_error(&module, &e.to_string());
                    let at = err
                        .line
                        .map(|l| format!("{}:{l}: ", err.module))
                        .unwrap_or_default();
                    (false, format!("test errored: {at}{}", err.message))
                }
            };
            if !pass && !prints.is_empty() {
                message = format!("{message}; printed: {}", prints.join(" | "));
            }
            TestResult {
                name: path,
                pass,
                message,
            }
        })
        .collect();
    set_time_limit(test_engine, EVAL_TIME_LIMIT);
    (results, stopped)
}

/// One rule head found in a loaded module.
#[derive(Debug)]
struct RuleHeadInfo {
    module: String,
    /// `data.<package>`.
    package: String,
    /// Name relative to the package, e.g. `deny` or `test_x`.
    name: String,
    is_func: bool,
    line: u32,
}

fn rule_heads(engine: &mut Engine) -> Vec<RuleHeadInfo> {
    let mut out = Vec::new();
    for module in engine.get_modules() {
        let module_name = module.package.span.source.get_path().clone();
        let package = format!("data.{}", module.package.refr.span().text());
        for rule in &module.policy {
            let span = rule.span();
            let (refr, is_func) = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. },
                    ..
                } => (refr, false),
                Rule::Spec {
                    head: RuleHead::Func { refr, .. },
                    ..
                } => (refr, true),
                Rule::Default { refr, args, .. } => (refr, !args.is_empty()),
            };
            let text = refr.span().text();
            let name = text.split('[').next().unwrap_or(text).trim().to_string();
            out.push(RuleHeadInfo {
                module: module_name.clone(),
                package: package.clone(),
                name,
                is_func,
                line: span.line,
            });
        }
    }
    out
}

/// Builtins whose result is not a function of the input: a verdict that
/// used one cannot be reproduced (by `paver validate`, by OPA, by the next
/// resync).
const NONDETERMINISTIC: [&str; 5] = [
    "time.now_ns",
    "rand.intn",
    "uuid.rfc4122",
    "opa.runtime",
    "net.lookup_ip_addr",
];

/// Every call of a [`NONDETERMINISTIC`] builtin in the bundle's modules,
/// with its line.
fn nondeterministic_calls(engine: &mut Engine) -> Vec<BundleError> {
    let mut errors = Vec::new();
    for module in engine.get_modules() {
        let source = module.package.span.source.clone();
        let path = source.get_path().clone();
        let mut lexer = Lexer::new(&source);
        // The dotted name being read (`time`, `.`, `now_ns`) and its line.
        let mut name: Option<(String, u32)> = None;
        let mut after_dot = false;
        while let Ok(token) = lexer.next_token() {
            let text = token.1.text();
            match token.0 {
                TokenKind::Eof => break,
                TokenKind::Ident => {
                    name = match (name.take(), after_dot) {
                        (Some((n, line)), true) => Some((format!("{n}.{text}"), line)),
                        _ => Some((text.to_string(), token.1.line)),
                    };
                    after_dot = false;
                }
                TokenKind::Symbol if text == "." && name.is_some() => after_dot = true,
                TokenKind::Symbol if text == "(" => {
                    if let Some((called, line)) = name.take()
                        && NONDETERMINISTIC.contains(&called.as_str())
                    {
                        errors.push(BundleError {
                            module: path.clone(),
                            line: Some(line),
                            column: None,
                            message: format!(
                                "{called} is not a function of the input, so a verdict using it cannot be \
                                 reproduced; take the time or identity from input (or set \
                                 spec.allowNondeterministicBuiltins: true)"
                            ),
                        });
                    }
                    after_dot = false;
                }
                _ => {
                    name = None;
                    after_dot = false;
                }
            }
        }
    }
    errors
}

/// Turns regorus's error text (`--> file:line:col` … `error: message`)
/// into a [`BundleError`]; `module` is used when the text names none.
pub(super) fn parse_regorus_error(module: &str, text: &str) -> BundleError {
    let mut found_module = module.to_string();
    let (mut line, mut column) = (None, None);
    if let Some(loc) = text.lines().find_map(|l| l.trim_start().strip_prefix("--> ")) {
        let mut parts = loc.rsplitn(3, ':');
        let (col, l, file) = (parts.next(), parts.next(), parts.next());
        if let (Some(l), Some(file)) = (l, file)
            && let Ok(n) = l.parse::<u32>()
        {
            line = Some(n);
            column = col.and_then(|c| c.trim().parse::<u32>().ok());
            found_module = file.to_string();
        }
    }
    let message = match text.find("error: ") {
        Some(i) => {
            let rest = &text[i + "error: ".len()..];
            let mut lines = rest.lines();
            let first = lines.next().unwrap_or_default().trim().to_string();
            let chain: Vec<&str> = lines
                .filter_map(|l| l.trim_start().strip_prefix("--> "))
                .collect();
            if chain.is_empty() {
                first
            } else {
                format!("{first} {}", chain.join(" -> "))
            }
        }
        None => text.trim().to_string(),
    };
    BundleError {
        module: found_module,
        line,
        column,
        message,
    }
}
