//! The policy stage, Paver against OPA.
//!
//! Paver, per example request, timed as one unit: the input document built
//! from the request the way the operator builds it (the request without
//! status, the defaulted parameters, the route document, the estimate, the
//! rendered files, Git and cluster facts), converted once into a regorus
//! value (`PolicyInput::prepare`), then `evaluate` over every bundle that
//! applies with all four rule sets (deny, warn, needs_approval, checks),
//! folded into the `PolicyOutcome` the operator records.
//!
//! OPA gets the same modules and data (the packed bundles Paver embeds,
//! written to a directory), the same input document (`PolicyInput::to_json`)
//! and one query that reads exactly the rules Paver reads: every declared
//! `deny`/`warn`/`needs_approval`/`checks` rule of every package of every
//! applicable bundle, gathered into one object by a wrapper rule
//! (`data.paver_bench.result`), so the e2e mode hits a prepared path
//! (`POST /v1/data/paver_bench/result`) instead of parsing a query per call.
//! `opa bench` (in-process) evaluates a prepared query with the input
//! parsed before its loop and discards the result; Paver's figure includes
//! building and converting the input and turning results into findings.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Instant,
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use kube::ResourceExt;
use paver::core::{
    policy::{CompiledBundle, PolicyInput, PolicyOutcome, RouteDoc, RuleKind, activate, evaluate, run_tests},
    verdict::{Catalog, request_doc, route_doc},
};
use paver_crds::{PolicyBundle, ServiceRequest};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    env,
    stats::{self, Summary, fmt_us},
};

#[derive(clap::Args)]
pub struct Args {
    /// Timed iterations per example (after warmup).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Untimed iterations before timing.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Activations timed per bundle.
    #[arg(long, default_value_t = 20)]
    activations: usize,
    /// The OPA binary (default: $OPA, the e2e cache's opa-v1.22.2, `opa` on PATH).
    #[arg(long, env = "OPA")]
    opa: Option<PathBuf>,
    /// Deny rules of the synthetic bundle whose activation is also timed
    /// (a large third-party bundle).
    #[arg(long, default_value_t = 2000)]
    synthetic_rules: usize,
    /// Skip OPA entirely.
    #[arg(long)]
    no_opa: bool,
    /// Skip `opa bench --e2e` (the OPA server over loopback HTTP).
    #[arg(long)]
    no_e2e: bool,
    /// Turn off regorus's compiled-regex/glob cache (what Paver did before
    /// it enabled regorus's `cache` feature), to measure its effect.
    #[arg(long)]
    no_regex_cache: bool,
    /// Write OPA's directories (modules, data, wrapper rule) and input files
    /// here (a new or empty directory) and keep them, to rerun `opa bench`
    /// by hand on exactly what was measured (default: a temporary directory).
    #[arg(long)]
    opa_dir: Option<PathBuf>,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: env::Header,
    settings: Settings,
    examples: Vec<ExampleReport>,
    activation: Vec<ActivationReport>,
    /// Building the whole catalog from the embedded content (every route
    /// compiled, every bundle activated with its tests), once, cold.
    catalog_build_ms: f64,
}

#[derive(Serialize)]
struct Settings {
    iterations: usize,
    warmup: usize,
    activations: usize,
    regex_cache: bool,
    paver_timed: &'static str,
    opa_timed: &'static str,
    ratio: &'static str,
}

#[derive(Serialize)]
struct ExampleReport {
    example: String,
    request: String,
    route: String,
    bundles: Vec<String>,
    /// `package.rule` paths evaluated (Paver and OPA alike).
    rules: Vec<String>,
    input_bytes: usize,
    /// The whole stage: build input + prepare + evaluate all four rule sets.
    paver: Summary,
    /// The parts, each timed on its own loop.
    paver_build_input: Summary,
    paver_prepare: Summary,
    paver_evaluate: Summary,
    /// The same `evaluate` on regorus's interpreter instead of its VM
    /// (`CompiledBundle::interpreted`), for perspective.
    paver_evaluate_interpreter: Summary,
    /// What evaluated each bundle in `paver` (`vm` or `interpreter`).
    evaluators: BTreeMap<String, String>,
    /// `evaluate` of one bundle and one rule set at a time: median µs by
    /// `bundle.rule` (rule sets a bundle does not declare cost ~nothing).
    paver_evaluate_by_rule: BTreeMap<String, f64>,
    /// First whole stage on a freshly built catalog, in µs.
    paver_cold_us: f64,
    /// Results Paver folded (violations + warnings + dryrun + waived + approvals + checks).
    paver_results: usize,
    opa: Option<OpaFigures>,
    /// paver.median / opa.median (in-process `opa bench`).
    ratio_median: Option<f64>,
    /// paver.p99 / opa.p99.
    ratio_p99: Option<f64>,
    /// paver.median / opa e2e server handler median (decode input + eval + encode).
    ratio_e2e_median: Option<f64>,
}

#[derive(Serialize, Default)]
struct OpaFigures {
    query: String,
    /// `opa bench`, in-process: iterations, mean (ns/op), and the median and
    /// p99 of OPA's own `timer_rego_query_eval_ns` histogram.
    bench_n: u64,
    bench_mean_us: f64,
    bench_median_us: f64,
    bench_p99_us: f64,
    /// `opa bench --e2e`: POST to a local OPA server. Round trip mean as
    /// the client sees it; median and p99 of the server's own handler
    /// timer (decode the input, evaluate, encode the result).
    e2e_n: Option<u64>,
    e2e_roundtrip_mean_us: Option<f64>,
    e2e_handler_median_us: Option<f64>,
    e2e_handler_p99_us: Option<f64>,
    /// One `opa eval --metrics` process: its wall time, OPA's own compile
    /// and first query evaluation timers.
    cold_process_ms: f64,
    cold_compile_ms: Option<f64>,
    cold_eval_us: Option<f64>,
    /// Set members OPA returned across all rules read.
    results: usize,
}

#[derive(Serialize)]
struct ActivationReport {
    bundle: String,
    modules: usize,
    tests: usize,
    /// `activate` (compile, activation-time evaluation of every rule, tests).
    activate: Summary,
    /// The first activation in this process.
    activate_first_us: f64,
    /// `run_tests` alone (load + tests), for perspective.
    tests_only: Summary,
}

/// Everything one evaluation needs, computed outside the timed region.
struct Case {
    key: String,
    req: ServiceRequest,
    parameters: Value,
    route: RouteDoc,
    estimate: Value,
    rendered: BTreeMap<String, String>,
    git: Value,
    cluster: Value,
    bundles: Vec<Arc<CompiledBundle>>,
    route_name: String,
}

impl Case {
    fn new(catalog: &Catalog, req: &ServiceRequest, now: DateTime<Utc>) -> anyhow::Result<Case> {
        let walked = env::walk(catalog, req)?;
        let ns = req.namespace().unwrap_or_default();
        let (bundles, missing) = catalog.bundles.applicable(
            &walked.route.name,
            &walked.route.route.spec.policy_bundles,
            &ns,
            req.labels(),
        );
        if !missing.is_empty() {
            bail!("bundles without a good version: {missing:?}");
        }
        // Facts shaped as the operator builds them after a commit and a sync.
        let git = json!({
            "last_commit_by_author": {"paver@example.com": now.timestamp() - 3600},
            "now": now.timestamp(),
        });
        let cluster = json!({
            "application": format!("{ns}.{}", req.name_any()),
            "sync": "Synced",
            "health": "Healthy",
            "revision": "0123456789abcdef0123456789abcdef01234567",
            "message": "",
            "workloads": [{"kind": "Deployment", "namespace": ns, "name": req.name_any(), "health": "Healthy", "message": ""}],
        });
        Ok(Case {
            key: format!("{ns}/{}", req.name_any()),
            req: req.clone(),
            parameters: walked.parameters,
            route: RouteDoc::new(route_doc(&walked.route.route))?,
            estimate: serde_json::to_value(&walked.estimate)?,
            rendered: walked.rendered.files,
            git,
            cluster,
            bundles,
            route_name: walked.route.id(),
        })
    }

    /// The input as the operator builds it from the request.
    fn input(&self) -> PolicyInput {
        PolicyInput {
            request: request_doc(&self.req),
            parameters: self.parameters.clone(),
            route: self.route.clone(),
            estimate: self.estimate.clone(),
            rendered: Some(self.rendered.clone()),
            git: Some(self.git.clone()),
            cluster: Some(self.cluster.clone()),
        }
    }

    /// The whole stage.
    fn stage(&self, now: DateTime<Utc>) -> anyhow::Result<PolicyOutcome> {
        let prepared = self.input().prepare()?;
        Ok(evaluate(
            &self.bundles,
            &prepared,
            &RuleKind::ALL,
            &self.key,
            self.req.labels(),
            now,
        )?)
    }
}

fn results(o: &PolicyOutcome) -> usize {
    o.violations.len()
        + o.warnings.len()
        + o.dryrun.len()
        + o.waived.len()
        + o.approval_reasons.len()
        + o.checks.len()
}

/// The rules a module declares that Paver reads, as `data.<package>.<rule>`.
fn declared_rules(source: &str) -> anyhow::Result<Vec<String>> {
    let mut package = None;
    let mut rules = Vec::new();
    for line in source.lines() {
        if let Some(p) = line.strip_prefix("package ") {
            package = Some(p.trim().to_string());
            continue;
        }
        for kind in RuleKind::ALL {
            let name = kind.rule_name();
            if let Some(rest) = line.strip_prefix(name)
                && rest.starts_with([' ', '[', ':', '=', '\t'])
            {
                let Some(p) = &package else {
                    bail!("rule {name} before any package line");
                };
                rules.push(format!("data.{p}.{name}"));
            }
        }
    }
    rules.sort();
    rules.dedup();
    Ok(rules)
}

/// A directory OPA loads: every applicable bundle's modules and their data
/// merged at the data root (Paver loads each bundle's data at its root),
/// plus the wrapper rule the query reads.
fn opa_dir(dir: &Path, bundles: &[&PolicyBundle], input: &Value) -> anyhow::Result<Vec<String>> {
    let mut data = serde_json::Map::new();
    let mut rules = Vec::new();
    for b in bundles {
        let bdir = dir.join(b.name_any());
        std::fs::create_dir_all(&bdir)?;
        for m in &b.spec.modules {
            let file = if m.name.ends_with(".rego") {
                m.name.clone()
            } else {
                format!("{}.rego", m.name)
            };
            std::fs::write(bdir.join(file), &m.source)?;
            rules.extend(declared_rules(&m.source)?);
        }
        if let Some(Value::Object(d)) = &b.spec.data {
            for (k, v) in d {
                if data.insert(k.clone(), v.clone()).is_some() {
                    bail!("two bundles both define data.{k}: OPA would merge what Paver keeps apart");
                }
            }
        }
    }
    std::fs::write(
        dir.join("data.json"),
        serde_json::to_string(&Value::Object(data))?,
    )?;
    let fields: Vec<String> = rules.iter().map(|r| format!("  {r:?}: {r},")).collect();
    std::fs::write(
        dir.join("paver_bench.rego"),
        format!(
            "package paver_bench\n\n# Every rule Paver reads, in one document.\nresult := {{\n{}\n}}\n",
            fields.join("\n")
        ),
    )?;
    std::fs::write(input_path(dir), serde_json::to_string(input)?)?;
    Ok(rules)
}

/// The input file, beside (not inside) the directory OPA loads.
fn input_path(dir: &Path) -> PathBuf {
    dir.with_extension("input.json")
}

fn run_opa(opa: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(opa)
        .args(args)
        .output()
        .with_context(|| format!("failed to run {}", opa.display()))?;
    if !out.status.success() {
        bail!(
            "opa {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("opa printed something other than JSON")
}

/// (n, mean µs, median µs, p99 µs) from `opa bench --format json`.
fn bench_figures(v: &Value, timer: &str) -> (u64, f64, f64, f64) {
    let n = v["N"].as_u64().unwrap_or(0);
    let t = v["T"].as_f64().unwrap_or(f64::NAN);
    let extra = |k: &str| {
        v["Extra"][format!("histogram_{timer}_{k}")]
            .as_f64()
            .unwrap_or(f64::NAN)
            / 1000.0
    };
    (n, t / n.max(1) as f64 / 1000.0, extra("median"), extra("99%"))
}

fn opa_figures(opa: &Path, dir: &Path, e2e: bool) -> anyhow::Result<OpaFigures> {
    let d = dir.display().to_string();
    let input = input_path(dir).display().to_string();
    let query = "data.paver_bench.result";
    let common = ["-d", &d, "-i", &input];

    let started = Instant::now();
    let mut eval_args = vec!["eval", "--format", "json", "--metrics"];
    eval_args.extend(common);
    eval_args.push(query);
    let cold = run_opa(opa, &eval_args)?;
    let cold_process_ms = started.elapsed().as_secs_f64() * 1000.0;
    let metric = |k: &str| cold["metrics"][k].as_f64();
    let value = &cold["result"][0]["expressions"][0]["value"];
    let results = value
        .as_object()
        .map(|o| o.values().map(|v| v.as_array().map_or(1, Vec::len)).sum())
        .unwrap_or(0);

    let mut bench_args = vec!["bench", "--format", "json", "--count", "1"];
    bench_args.extend(common);
    bench_args.push(query);
    let bench = run_opa(opa, &bench_args)?;
    let (bench_n, bench_mean_us, bench_median_us, bench_p99_us) =
        bench_figures(&bench, "timer_rego_query_eval_ns");

    let mut f = OpaFigures {
        query: query.into(),
        bench_n,
        bench_mean_us,
        bench_median_us,
        bench_p99_us,
        cold_process_ms,
        cold_compile_ms: metric("timer_rego_module_compile_ns")
            .or_else(|| metric("timer_query_compile_stage_check_safety_ns"))
            .map(|ns| ns / 1e6),
        cold_eval_us: metric("timer_rego_query_eval_ns").map(|ns| ns / 1000.0),
        results,
        ..Default::default()
    };
    if e2e {
        let mut e2e_args = vec!["bench", "--e2e", "--format", "json", "--count", "1"];
        e2e_args.extend(common);
        e2e_args.push(query);
        let v = run_opa(opa, &e2e_args)?;
        // The server's own handler timer, per request.
        let (n, mean, median, p99) = bench_figures(&v, "timer_server_handler_ns");
        f.e2e_n = Some(n);
        f.e2e_roundtrip_mean_us = Some(mean);
        f.e2e_handler_median_us = Some(median).filter(|m| m.is_finite());
        f.e2e_handler_p99_us = Some(p99).filter(|m| m.is_finite());
    }
    Ok(f)
}

pub fn find_opa(arg: Option<&Path>) -> Option<PathBuf> {
    let works = |p: &Path| {
        Command::new(p)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut candidates: Vec<PathBuf> = arg.map(Path::to_path_buf).into_iter().collect();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cache/paver-e2e/opa-v1.22.2/opa"));
    }
    candidates.push(PathBuf::from("opa"));
    candidates.into_iter().find(|p| works(p))
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|b| *b > 0.0 && b.is_finite()).map(|b| a / b)
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<Value> {
    let opa = if args.no_opa {
        None
    } else {
        Some(find_opa(args.opa.as_deref()).context(
            "no working OPA binary ($OPA, ~/.cache/paver-e2e/opa-v1.22.2/opa, opa on PATH); pass --no-opa to skip",
        )?)
    };
    let header = env::header("policy", root, opa.as_deref());
    env::print_header(&header);
    if args.no_regex_cache {
        regorus::cache::configure(regorus::cache::Config { regex: 0, glob: 0 });
        println!("regorus regex/glob cache OFF\n");
    }

    let started = Instant::now();
    let (content, catalog) = env::catalog()?;
    let catalog_build_ms = started.elapsed().as_secs_f64() * 1000.0;
    let now = Utc::now();
    let examples = env::examples(root)?;
    let tmp = tempfile::tempdir()?;
    let opa_root = args.opa_dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    if args.opa_dir.is_some() && std::fs::read_dir(&opa_root).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "--opa-dir {} is not empty: OPA would load whatever else is there",
            opa_root.display()
        );
    }

    let mut reports = Vec::new();
    for (stem, req) in &examples {
        // Cold: the first stage on a catalog built just now.
        let (_, fresh) = env::catalog()?;
        let cold_case = Case::new(&fresh, req, now)?;
        let t = Instant::now();
        let cold_outcome = cold_case.stage(now)?;
        let paver_cold_us = t.elapsed().as_secs_f64() * 1e6;
        drop(fresh);

        let case = Case::new(&catalog, req, now)?;
        let outcome = case.stage(now)?;
        if outcome != cold_outcome {
            bail!("{stem}: cold and warm evaluations disagree");
        }
        let paver = stats::time(args.warmup, args.iterations, || case.stage(now));
        let paver_build_input = stats::time(args.warmup, args.iterations, || case.input());
        let input = case.input();
        let paver_prepare = stats::time(args.warmup, args.iterations, || input.prepare());
        let prepared = input.prepare()?;
        let paver_evaluate = stats::time(args.warmup, args.iterations, || {
            evaluate(
                &case.bundles,
                &prepared,
                &RuleKind::ALL,
                &case.key,
                case.req.labels(),
                now,
            )
        });
        let interpreted: Vec<Arc<CompiledBundle>> =
            case.bundles.iter().map(|b| Arc::new(b.interpreted())).collect();
        let on_interpreter = || {
            evaluate(
                &interpreted,
                &prepared,
                &RuleKind::ALL,
                &case.key,
                case.req.labels(),
                now,
            )
        };
        if on_interpreter()? != outcome {
            bail!("{stem}: regorus's VM and interpreter disagree");
        }
        let paver_evaluate_interpreter = stats::time(args.warmup / 4, args.iterations / 4, on_interpreter);
        let evaluators = case
            .bundles
            .iter()
            .map(|b| (b.name.clone(), b.evaluator().to_string()))
            .collect();
        let mut paver_evaluate_by_rule = BTreeMap::new();
        for b in &case.bundles {
            for kind in RuleKind::ALL {
                let one = [b.clone()];
                let s = stats::time(args.warmup / 4, args.iterations / 4, || {
                    evaluate(&one, &prepared, &[kind], &case.key, case.req.labels(), now)
                });
                paver_evaluate_by_rule.insert(format!("{}.{}", b.name, kind.rule_name()), s.median_us);
            }
        }

        let names: Vec<String> = case.bundles.iter().map(|b| b.name.clone()).collect();
        let specs: Vec<&PolicyBundle> = content
            .bundles
            .iter()
            .filter(|b| names.contains(&b.name_any()))
            .collect();
        let dir = opa_root.join(stem);
        std::fs::create_dir_all(&dir)?;
        let input_json = input.to_json();
        let rules = opa_dir(&dir, &specs, &input_json)?;
        let opa_fig = match &opa {
            Some(opa) => Some(opa_figures(opa, &dir, !args.no_e2e).with_context(|| format!("{stem}: opa"))?),
            None => None,
        };
        let r = ExampleReport {
            example: stem.clone(),
            request: case.key.clone(),
            route: case.route_name.clone(),
            bundles: names,
            rules,
            input_bytes: serde_json::to_string(&input_json)?.len(),
            paver,
            paver_build_input,
            paver_prepare,
            paver_evaluate,
            paver_evaluate_interpreter,
            evaluators,
            paver_evaluate_by_rule,
            paver_cold_us,
            paver_results: results(&outcome),
            ratio_median: ratio(paver.median_us, opa_fig.as_ref().map(|o| o.bench_median_us)),
            ratio_p99: ratio(paver.p99_us, opa_fig.as_ref().map(|o| o.bench_p99_us)),
            ratio_e2e_median: ratio(
                paver.median_us,
                opa_fig.as_ref().and_then(|o| o.e2e_handler_median_us),
            ),
            opa: opa_fig,
        };
        print_example(&r);
        reports.push(r);
    }

    println!("\nbundle activation (compile + activation-time evaluation + tests):");
    let mut activation = Vec::new();
    let synthetic = synthetic_bundle(args.synthetic_rules, "1.0.0", "paver-bench-none");
    for b in content.bundles.iter().chain(std::iter::once(&synthetic)) {
        let name = b.name_any();
        let t = Instant::now();
        let first = activate(&name, &b.spec, chrono::Utc::now());
        let activate_first_us = t.elapsed().as_secs_f64() * 1e6;
        if first.compiled.is_none() {
            bail!("bundle {name} does not activate: {:?}", first.errors);
        }
        let a = ActivationReport {
            bundle: name.clone(),
            modules: b.spec.modules.len(),
            tests: first.tests.len(),
            activate: stats::time(1, args.activations, || {
                activate(&name, &b.spec, chrono::Utc::now())
            }),
            activate_first_us,
            tests_only: stats::time(1, args.activations, || run_tests(&b.spec)),
        };
        println!(
            "  {:<12} {} modules, {:>2} tests: activate median {:>9}  p99 {:>9}  first {:>9}  (tests alone {})",
            a.bundle,
            a.modules,
            a.tests,
            fmt_us(a.activate.median_us),
            fmt_us(a.activate.p99_us),
            fmt_us(a.activate_first_us),
            fmt_us(a.tests_only.median_us)
        );
        activation.push(a);
    }
    println!("  whole catalog from the embedded content, cold: {catalog_build_ms:.1} ms");

    print_summary(&reports);
    let report = Report {
        header,
        settings: Settings {
            iterations: args.iterations,
            warmup: args.warmup,
            activations: args.activations,
            regex_cache: !args.no_regex_cache,
            paver_timed: "build PolicyInput from the request + PolicyInput::prepare + evaluate(all applicable bundles, deny/warn/needs_approval/checks; on regorus's VM)",
            opa_timed: "opa bench: prepared query data.paver_bench.result (an object of every rule Paver reads), input parsed before the loop, result discarded; median/p99 of timer_rego_query_eval_ns. e2e: POST /v1/data/paver_bench/result to a local OPA server; median/p99 of timer_server_handler_ns, round trip mean",
            ratio: "paver median / opa bench median (and p99 / p99)",
        },
        examples: reports,
        activation,
        catalog_build_ms,
    };
    Ok(serde_json::to_value(report)?)
}

fn print_example(r: &ExampleReport) {
    println!(
        "{} ({}, {} bundles, {} rules, input {} B)",
        r.example,
        r.route,
        r.bundles.len(),
        r.rules.len(),
        r.input_bytes
    );
    println!(
        "  paver  stage median {:>9}  p99 {:>9}   [build {} + prepare {} + evaluate {}]  cold {}  results {}",
        fmt_us(r.paver.median_us),
        fmt_us(r.paver.p99_us),
        fmt_us(r.paver_build_input.median_us),
        fmt_us(r.paver_prepare.median_us),
        fmt_us(r.paver_evaluate.median_us),
        fmt_us(r.paver_cold_us),
        r.paver_results
    );
    let on_vm = r.evaluators.values().filter(|e| *e == "vm").count();
    println!(
        "         evaluate on the interpreter instead: median {} ({:.1}x the VM's); {on_vm} of {} bundles on the VM",
        fmt_us(r.paver_evaluate_interpreter.median_us),
        r.paver_evaluate_interpreter.median_us / r.paver_evaluate.median_us.max(f64::MIN_POSITIVE),
        r.evaluators.len()
    );
    let parts: Vec<String> = r
        .paver_evaluate_by_rule
        .iter()
        .filter(|(_, us)| **us >= 1.0)
        .map(|(k, us)| format!("{k} {}", fmt_us(*us)))
        .collect();
    println!("         by rule: {}", parts.join(", "));
    if let Some(o) = &r.opa {
        println!(
            "  opa    eval  median {:>9}  p99 {:>9}   mean {}  (n={})  cold: eval {} compile {} process {:.0} ms  results {}",
            fmt_us(o.bench_median_us),
            fmt_us(o.bench_p99_us),
            fmt_us(o.bench_mean_us),
            o.bench_n,
            o.cold_eval_us.map_or("-".into(), fmt_us),
            o.cold_compile_ms.map_or("-".into(), |m| format!("{m:.1} ms")),
            o.cold_process_ms,
            o.results
        );
        if let (Some(m), Some(mean)) = (o.e2e_handler_median_us, o.e2e_roundtrip_mean_us) {
            println!(
                "  opa    e2e   handler median {:>9}  p99 {:>9}   round trip mean {}",
                fmt_us(m),
                o.e2e_handler_p99_us.map_or("-".into(), fmt_us),
                fmt_us(mean)
            );
        }
        if o.results != r.paver_results {
            println!(
                "  NOTE: OPA returned {} set members, Paver folded {} results",
                o.results, r.paver_results
            );
        }
    }
}

fn print_summary(reports: &[ExampleReport]) {
    println!(
        "\n{:<22} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "example", "paver p50", "paver p99", "opa p50", "opa p99", "ratio50", "ratio99", "vs e2e"
    );
    for r in reports {
        let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}x"));
        println!(
            "{:<22} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
            r.example,
            fmt_us(r.paver.median_us),
            fmt_us(r.paver.p99_us),
            r.opa.as_ref().map_or("-".into(), |o| fmt_us(o.bench_median_us)),
            r.opa.as_ref().map_or("-".into(), |o| fmt_us(o.bench_p99_us)),
            f(r.ratio_median),
            f(r.ratio_p99),
            f(r.ratio_e2e_median)
        );
    }
    println!("target: paver ≤ 0.35x opa (ratio50)");
}

/// A third-party-sized bundle: `rules` definitions of `deny`, each on a
/// parameter of its own, over 10 modules, with one test; it matches only
/// `namespace`, so putting it in force re-judges no other request.
pub fn synthetic_bundle(rules: usize, version: &str, namespace: &str) -> paver_crds::PolicyBundle {
    use paver_crds::{BundleMatch, PolicyBundle, PolicyBundleSpec, PolicyMode, RegoModule};
    let modules = (0..10)
        .map(|m| {
            let mut source = String::from("package paver.synthetic\n\nimport rego.v1\n\nparams := object.get(input, \"parameters\", {})\n");
            for i in (m..rules).step_by(10) {
                source.push_str(&format!(
                    "\ndeny contains {{\"id\": \"limit-{i}\", \"msg\": \"limit{i} is above {i}\"}} if {{\n\tparams.limit{i} > {i}\n}}\n"
                ));
            }
            RegoModule {
                name: format!("synthetic-{m}.rego"),
                source,
            }
        })
        .collect();
    let test = RegoModule {
        name: "synthetic_test.rego".into(),
        source: "package paver.synthetic_test\n\nimport rego.v1\n\nimport data.paver.synthetic\n\n\
                 test_over_limit if count(synthetic.deny) == 1 with input as {\"parameters\": {\"limit1\": 5}}\n\n\
                 test_under_limit if count(synthetic.deny) == 0 with input as {\"parameters\": {\"limit1\": 1}}\n"
            .into(),
    };
    PolicyBundle::new(
        "synthetic",
        PolicyBundleSpec {
            version: version.into(),
            owners: vec!["bench@example.com".into()],
            description: format!("{rules} synthetic deny rules (paver-bench)"),
            mode: PolicyMode::Enforce,
            modules,
            tests: vec![test],
            match_: Some(BundleMatch {
                namespaces: vec![namespace.into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}
