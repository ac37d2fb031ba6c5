//! BENCHMARKS.md from the JSON files the other subcommands write: the
//! machine, versions and date; the targets of the benchmarks issue as the
//! headline (met or missed, by how much, and what limits each); the
//! per-part tables; and a chart of requests Committed over time for each
//! burst, as an SVG image next to it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use plotters::prelude::*;
use serde_json::{Value, json};

use crate::stats::fmt_us;

#[derive(clap::Args)]
pub struct Args {
    /// Where the JSON files are (policy.json, render.json, git.json,
    /// burst-1000.json, burst-10000.json, trickle.json; whichever exist).
    #[arg(long)]
    dir: PathBuf,
    /// The Markdown file to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Where the charts go, relative to the Markdown file's directory.
    #[arg(long, default_value = "bench")]
    charts: PathBuf,
    /// Profiles taken by hand (heap, perf), appended as they are when the
    /// file exists: what a target's figures cannot show on their own.
    #[arg(long, default_value = "bench/profiles.md")]
    profiles: PathBuf,
}

fn load(dir: &Path, name: &str) -> anyhow::Result<Option<Value>> {
    let path = dir.join(name);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("failed to parse {}", path.display())
    })?))
}

fn f(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("?")
}

/// A burst's count divided by the requests Committed (all of them in a
/// complete run; a run that timed out is counted per request it finished).
fn per_committed(v: &Value, path: &str) -> Option<f64> {
    let committed = f(v, "/committed")?;
    (committed > 0.0)
        .then(|| f(v, path).map(|x| x / committed))
        .flatten()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        return f64::NAN;
    }
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        (xs[m - 1] + xs[m]) / 2.0
    }
}

fn thousands(n: f64) -> String {
    let n = n.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A latency in µs: seconds from 1 s up.
fn lat(us: f64) -> String {
    if us >= 1e6 { secs(us / 1e6) } else { fmt_us(us) }
}

fn secs(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} s")
    } else if x >= 10.0 {
        format!("{x:.1} s")
    } else {
        format!("{x:.2} s")
    }
}

/// "met" / "missed" for a value that must stay at or under `limit`.
fn stand_max(value: f64, limit: f64) -> String {
    if value.is_nan() {
        "not measured".into()
    } else if value <= limit {
        format!("**met** ({:.0}% of the limit)", value / limit * 100.0)
    } else {
        format!(
            "**missed** by {:.2}× ({:+.0}%)",
            value / limit,
            (value / limit - 1.0) * 100.0
        )
    }
}

struct Row {
    what: String,
    target: String,
    measured: String,
    stands: String,
    limits: String,
}

pub fn run(args: &Args) -> anyhow::Result<Value> {
    let policy = load(&args.dir, "policy.json")?;
    let render = load(&args.dir, "render.json")?;
    let git = load(&args.dir, "git.json")?;
    let b1k = load(&args.dir, "burst-1000.json")?;
    let b10k = load(&args.dir, "burst-10000.json")?;
    let trickle = load(&args.dir, "trickle.json")?;
    let trickle_act = load(&args.dir, "trickle-activate.json")?;
    let preview = load(&args.dir, "preview.json")?;
    let all: Vec<(&str, &Value)> = [
        ("policy", &policy),
        ("render", &render),
        ("git", &git),
        ("burst 1,000", &b1k),
        ("burst 10,000", &b10k),
        ("trickle", &trickle),
        ("trickle, bundle activating", &trickle_act),
        ("preview", &preview),
    ]
    .into_iter()
    .filter_map(|(n, v)| v.as_ref().map(|v| (n, v)))
    .collect();
    if all.is_empty() {
        anyhow::bail!("no benchmark JSON files in {}", args.dir.display());
    }

    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let chart_dir = out_dir.join(&args.charts);
    std::fs::create_dir_all(&chart_dir)?;
    let mut charts = Vec::new();
    for run in [&b1k, &b10k] {
        let Some(run) = run else { continue };
        let n = f(run, "/requests").unwrap_or(0.0);
        let label = thousands(n);
        let file = format!("burst-{n}.svg");
        chart(run, &label, &chart_dir.join(&file))?;
        charts.push((label, args.charts.join(&file)));
    }

    let mut md = String::new();
    let first = all[0].1;
    writeln!(md, "# Paver benchmarks\n")?;
    writeln!(
        md,
        "Written by `make bench` (`paver-bench report`) from the figures of `paver-bench` \
         (bench/). Absolute times are for this machine only; the ratios and per-request counts \
         are the headline. Rerun: `make bench` (needs the e2e binaries: `make e2e-bins`).\n"
    )?;
    writeln!(
        md,
        "**Machine:** {} CPUs, {}/{}. **Date:** {}. **Versions:** Paver {} ({}), regorus {}, OPA {}, {}{}.\n",
        f(first, "/machine/cpus").unwrap_or(0.0),
        s(first, "/machine/os"),
        s(first, "/machine/arch"),
        s(first, "/date"),
        s(first, "/versions/paver"),
        s(first, "/versions/paver_commit"),
        s(first, "/versions/regorus"),
        policy.as_ref().map_or("?", |p| s(p, "/versions/opa")),
        s(first, "/versions/rustc"),
        if first.pointer("/versions/release_build") == Some(&Value::Bool(true)) {
            ", release build"
        } else {
            ", DEBUG BUILD (figures meaningless)"
        }
    )?;
    writeln!(
        md,
        "| run | date (UTC) | Paver commit | CPUs | load average at start |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- |")?;
    for (name, v) in &all {
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            s(v, "/date"),
            s(v, "/versions/paver_commit"),
            f(v, "/machine/cpus").unwrap_or(0.0),
            v.pointer("/machine/loadavg_at_start")
                .and_then(Value::as_str)
                .map_or("?".into(), |l| l
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "))
        )?;
    }
    writeln!(md)?;

    // ------------------------------------------------------------ headline
    let mut rows = Vec::new();
    if let Some(p) = &policy {
        rows.push(policy_row(p));
    }
    for (run, limit) in [(&b1k, 30.0), (&b10k, 300.0)] {
        let Some(run) = run else { continue };
        let n = f(run, "/requests").unwrap_or(0.0);
        let label = thousands(n);
        let committed = f(run, "/committed").unwrap_or(0.0);
        let create = f(run, "/create_wall_s").unwrap_or(f64::NAN);
        let (measured, stands) = match f(run, "/all_committed_s") {
            Some(t) => (secs(t), stand_max(t, limit)),
            None => (
                format!(
                    "{} of {} Committed in {}",
                    thousands(committed),
                    thousands(n),
                    secs(f(run, "/last_committed_s").unwrap_or(f64::NAN))
                ),
                "**missed** (not all Committed)".into(),
            ),
        };
        let all_s = f(run, "/all_committed_s").unwrap_or(f64::NAN);
        rows.push(Row {
            what: format!("{label} requests created at once: all Committed"),
            target: format!("< {}", secs(limit)),
            measured,
            stands,
            limits: burst_limits(run, n, create, all_s),
        });
    }
    let bursts: Vec<(String, &Value)> = [&b1k, &b10k]
        .into_iter()
        .filter_map(|v| {
            v.as_ref()
                .map(|v| (thousands(f(v, "/requests").unwrap_or(0.0)), v))
        })
        .collect();
    if !bursts.is_empty() {
        let rec: Vec<String> = bursts
            .iter()
            .map(|(l, v)| {
                format!(
                    "{:.2} ({l})",
                    per_committed(v, "/operator/reconciles").unwrap_or(f64::NAN)
                )
            })
            .collect();
        let worst = bursts
            .iter()
            .filter_map(|(_, v)| per_committed(v, "/operator/reconciles"))
            .fold(f64::NAN, f64::max);
        rows.push(Row {
            what: "Reconciles per Committed request (burst)".into(),
            target: "≤ 2".into(),
            measured: rec.join(", "),
            stands: stand_max(worst, 2.0),
            limits: "One reconcile per create: the operator's own status, Event and Scorecard writes \
                     do not trigger another."
                .into(),
        });
        let writes: Vec<String> = bursts
            .iter()
            .map(|(l, v)| {
                format!(
                    "operator {:.2}, API server {:.2} ({l})",
                    per_committed(v, "/operator/api_writes").unwrap_or(f64::NAN),
                    per_committed(v, "/apiserver/writes").unwrap_or(f64::NAN)
                )
            })
            .collect();
        let worst = bursts
            .iter()
            .flat_map(|(_, v)| {
                [
                    per_committed(v, "/operator/api_writes"),
                    per_committed(v, "/apiserver/writes"),
                ]
            })
            .flatten()
            .fold(f64::NAN, f64::max);
        let by = bursts[0]
            .1
            .pointer("/operator/api_writes_by")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        rows.push(Row {
            what: "API writes per Committed request (burst)".into(),
            target: "≤ 3".into(),
            measured: writes.join("; "),
            stands: stand_max(worst, 3.0),
            limits: format!(
                "Three writes by design: the status apply, one Event, the Scorecard apply ({} run: {by}); \
                 the finalizer is added by a MutatingAdmissionPolicy inside the create. The API server's \
                 count is its write verbs on paver.dev and Events less the bench's creates.",
                bursts[0].0
            ),
        });
    }
    if let Some(t) = &trickle {
        let p99 = f(t, "/latency/p99_us").unwrap_or(f64::NAN) / 1e6;
        rows.push(Row {
            what: format!(
                "Create→Committed at low load ({} requests, one every {} ms), p99",
                f(t, "/requests").unwrap_or(0.0),
                f(t, "/trickle_interval_ms").unwrap_or(0.0)
            ),
            target: "< 2 s".into(),
            measured: format!(
                "p99 {}, p50 {}",
                secs(p99),
                secs(f(t, "/latency/median_us").unwrap_or(f64::NAN) / 1e6)
            ),
            stands: stand_max(p99, 2.0),
            limits: "The Git writer's batching window and one push to the loopback Git server per batch \
                     (see the Git writer table: a push and commit are tens of ms) plus the status write."
                .into(),
        });
    }
    if let Some(big) = b10k.as_ref().or(b1k.as_ref()) {
        let n = f(big, "/requests").unwrap_or(0.0);
        let peak = f(big, "/operator/peak_rss_mib").unwrap_or(f64::NAN);
        rows.push(Row {
            what: format!("Operator peak resident memory, {} requests", thousands(n)),
            target: "< 100 MiB at 10,000".into(),
            measured: format!(
                "peak {peak:.0} MiB, idle {:.0} MiB with all cached (before the burst {:.0} MiB)",
                f(big, "/operator/idle_rss_mib").unwrap_or(f64::NAN),
                f(big, "/operator/rss_before_mib").unwrap_or(f64::NAN)
            ),
            stands: if n < 10_000.0 {
                format!("{} (measured at {} only)", stand_max(peak, 100.0), thousands(n))
            } else {
                stand_max(peak, 100.0)
            },
            limits: format!(
                "{:.1} KiB per request from before the burst to the peak: the reconciles in flight while \
                 the backlog drains (up to 256, each holding its request and render until its commit lands), \
                 what is kept per request (author facts of each directory, route index, resync queue, \
                 Scorecard digests, request metadata) and libgit2's push walk (its object cache capped at \
                 1 MiB); about 28 MiB of the resident memory is the mapped binary. The profiles under \
                 \"Profiles taken by hand\" split it.",
                (peak - f(big, "/operator/rss_before_mib").unwrap_or(f64::NAN)) * 1024.0 / n
            ),
        });
    }
    let quiet: Vec<(&str, &Value)> = bursts
        .iter()
        // A quiet period after a burst that did not finish is not quiet.
        .filter(|(_, v)| f(v, "/all_committed_s").is_some())
        .filter_map(|(l, v)| v.get("quiet").filter(|q| !q.is_null()).map(|q| (l.as_str(), q)))
        .collect();
    for (label, q) in &quiet {
        let secs_q = f(q, "/seconds").unwrap_or(0.0);
        let writes = f(q, "/apiserver_writes").unwrap_or(f64::NAN);
        let op_writes = f(q, "/operator_api_writes").unwrap_or(f64::NAN);
        let commits = f(q, "/commits").unwrap_or(f64::NAN);
        let ok = writes == 0.0 && op_writes == 0.0 && commits == 0.0;
        rows.push(Row {
            what: format!("Nothing changed for {} after the {label} burst", secs(secs_q)),
            target: "0 writes, 0 commits".into(),
            measured: format!(
                "API server writes {writes}, operator writes {op_writes}, commits {commits}; reconciles {}",
                f(q, "/reconciles").unwrap_or(f64::NAN)
            ),
            stands: if ok { "**met**".into() } else { "**missed**".into() },
            limits: format!(
                "{}{}.",
                match f(q, "/reconciles") {
                    Some(r) if r > 0.0 => format!(
                        "The resync (every 5 min) re-reconciled {} times and found nothing to write",
                        thousands(r)
                    ),
                    _ => "No resync (every 5 min) fell in this window".to_string(),
                },
                if secs_q < 600.0 {
                    format!(
                        "; the issue asks for 10 minutes of quiet: this run had {} to fit the time",
                        secs(secs_q)
                    )
                } else {
                    String::new()
                }
            ),
        });
    }

    writeln!(md, "## Headline: the targets\n")?;
    writeln!(
        md,
        "| what | target | measured | where it stands | what limits it |"
    )?;
    writeln!(md, "| --- | --- | --- | --- | --- |")?;
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.what, r.target, r.measured, r.stands, r.limits
        )?;
    }
    writeln!(md)?;

    for (label, path) in &charts {
        writeln!(
            md,
            "![Requests Committed over time, {label} created at once]({})\n",
            path.display()
        )?;
    }

    if !bursts.is_empty() || trickle.is_some() {
        e2e_section(&mut md, &bursts, trickle.as_ref(), trickle_act.as_ref())?;
    }
    if let Some(p) = &policy {
        policy_section(&mut md, p)?;
    }
    if let Some(r) = &render {
        render_section(&mut md, r)?;
    }
    if let Some(g) = &git {
        git_section(&mut md, g)?;
    }
    if preview.is_some()
        || b1k
            .as_ref()
            .is_some_and(|b| b.get("route_bump").is_some_and(|r| !r.is_null()))
    {
        writeln!(md, "## Route versions\n")?;
    }
    if let Some(p) = &preview {
        preview_section(&mut md, p)?;
    }
    if let Some(bump) = b1k
        .as_ref()
        .and_then(|b| b.get("route_bump"))
        .filter(|r| !r.is_null())
    {
        bump_section(
            &mut md,
            bump,
            f(b1k.as_ref().unwrap_or(&Value::Null), "/requests").unwrap_or(0.0),
        )?;
    }
    if let Ok(profiles) = std::fs::read_to_string(&args.profiles) {
        writeln!(md, "## Profiles taken by hand\n")?;
        writeln!(
            md,
            "From `{}`, not written by this run.\n",
            args.profiles.display()
        )?;
        md.push_str(profiles.trim_end());
        md.push('\n');
    }

    std::fs::write(&args.out, &md).with_context(|| format!("failed to write {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    for (_, p) in &charts {
        println!("wrote {}", out_dir.join(p).display());
    }
    Ok(json!({
        "out": args.out.display().to_string(),
        "charts": charts.iter().map(|(_, p)| p.display().to_string()).collect::<Vec<_>>(),
    }))
}

fn policy_row(p: &Value) -> Row {
    let examples = p
        .get("examples")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ratios: Vec<f64> = examples.iter().filter_map(|e| f(e, "/ratio_median")).collect();
    let med = median(ratios.clone());
    let lo = ratios.iter().copied().fold(f64::NAN, f64::min);
    let hi = ratios.iter().copied().fold(f64::NAN, f64::max);
    // What dominates Paver's evaluation: the costliest rule across examples.
    let mut top: Vec<(String, f64, f64)> = Vec::new();
    for e in &examples {
        let Some((name, us, total)) = costliest_rule(e) else {
            continue;
        };
        top.push((name, us, total));
    }
    let mut names: Vec<&str> = top.iter().map(|t| t.0.as_str()).collect();
    names.sort();
    names.dedup();
    let dominant = names
        .iter()
        .max_by_key(|n| top.iter().filter(|t| t.0 == **n).count())
        .copied()
        .unwrap_or("?");
    let shares: Vec<f64> = top
        .iter()
        .filter(|t| t.0 == dominant && t.2 > 0.0)
        .map(|t| t.1 / t.2)
        .collect();
    let input: Vec<f64> = examples
        .iter()
        .filter_map(|e| {
            let glue = f(e, "/paver_build_input/median_us")? + f(e, "/paver_prepare/median_us")?;
            Some(glue / f(e, "/paver/median_us")?)
        })
        .collect();
    let speedup: Vec<f64> = examples
        .iter()
        .filter_map(|e| {
            Some(f(e, "/paver_evaluate_interpreter/median_us")? / f(e, "/paver_evaluate/median_us")?)
        })
        .collect();
    let evaluators: Vec<&str> = examples
        .iter()
        .filter_map(|e| e.get("evaluators").and_then(Value::as_object))
        .flat_map(|m| m.values().filter_map(Value::as_str))
        .collect();
    let on_vm = evaluators.iter().filter(|e| **e == "vm").count();
    Row {
        what: "Policy stage (input + every matching bundle, all four rule sets) vs OPA, median".into(),
        target: "≤ 0.35× OPA".into(),
        measured: format!(
            "{med:.2}× (examples {lo:.2}× to {hi:.2}×; {} examples)",
            ratios.len()
        ),
        stands: stand_max(med, 0.35),
        limits: format!(
            "Rules run on regorus's VM ({on_vm} of {} bundle evaluations; a patched regorus 0.14.1, \
             vendor/README.md), {:.1}× faster than its interpreter on the same input (median over examples). \
             Building and converting the input is {:.0}% of Paver's time (input.route is converted once per \
             route). Of the rules, `{dominant}` alone is {:.0}% of the rule evaluation time in the examples \
             where it is the costliest rule ({} of {}); see the per-rule column below.",
            evaluators.len(),
            median(speedup),
            median(input) * 100.0,
            median(shares) * 100.0,
            top.iter().filter(|t| t.0 == dominant).count(),
            top.len()
        ),
    }
}

/// What the burst's time went to: the create rate or the operator's
/// throughput, and where the CPU went.
fn burst_limits(run: &Value, n: f64, create: f64, all_s: f64) -> String {
    let committed = f(run, "/committed").unwrap_or(0.0);
    let last = f(run, "/last_committed_s").unwrap_or(all_s);
    let mut out = if (all_s - create) < 0.25 * all_s {
        format!(
            "The create rate: the bench's {} creates were answered in {} and the last request was \
             Committed {} later: the operator keeps up.",
            thousands(n),
            secs(create),
            secs((all_s - create).max(0.0))
        )
    } else {
        format!(
            "The operator's throughput: the {} creates were answered in {} ({:.0}/s) but requests were \
             Committed at {:.0}/s on average ({} commits, {} requests per commit).",
            thousands(n),
            secs(create),
            n / create,
            committed / last,
            f(run, "/commits").unwrap_or(0.0),
            f(run, "/requests_per_commit").map_or("-".into(), |x| format!("{x:.0}"))
        )
    };
    if let Some(cpu) = run.get("cpu_seconds").and_then(Value::as_object) {
        let wall = f(run, "/cpu_wall_s").unwrap_or(f64::NAN);
        let mut parts: Vec<(String, f64)> = cpu
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = parts.iter().map(|p| p.1).sum();
        let _ = write!(
            out,
            " CPU over those {}: {:.0} s of the machine's {:.0} core-seconds used — {}.",
            secs(wall),
            total,
            wall * f(run, "/cpus").or(f(run, "/machine/cpus")).unwrap_or(2.0),
            parts
                .iter()
                .take(4)
                .map(|(k, v)| format!("{k} {v:.0} s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if f(run, "/all_committed_s").is_none() {
        out.push_str(" Not all were Committed: see this run's profile under the end-to-end table.");
    }
    let _ = write!(
        out,
        " p50 create→Committed {}, p99 {}.",
        lat(f(run, "/latency/median_us").unwrap_or(f64::NAN)),
        lat(f(run, "/latency/p99_us").unwrap_or(f64::NAN))
    );
    out
}

/// The costliest `bundle.rule` of an example: (name, median µs, sum over all rule sets).
fn costliest_rule(e: &Value) -> Option<(String, f64, f64)> {
    let by = e.get("paver_evaluate_by_rule").and_then(Value::as_object)?;
    let mut total = 0.0;
    let mut best = (String::new(), 0.0);
    for (name, us) in by {
        let us = us.as_f64().unwrap_or(0.0);
        total += us;
        if us > best.1 {
            best = (name.clone(), us);
        }
    }
    Some((best.0, best.1, total))
}

fn e2e_section(
    md: &mut String,
    bursts: &[(String, &Value)],
    trickle: Option<&Value>,
    trickle_act: Option<&Value>,
) -> anyhow::Result<()> {
    writeln!(md, "## End to end on the real control plane\n")?;
    writeln!(
        md,
        "`paver-bench burst`: e2e/cluster.sh (etcd, kube-apiserver, kube-controller-manager, \
         kube-scheduler, kwok, a smart-HTTP Git server, all on loopback); Paver installed from \
         manifests/ with its Deployment scaled to 0 and the release `paver operator` run as a \
         process under the operator's own identity (`--resync 5m`). N copies of \
         examples/orders-api.yaml (own names) are created by the kube client, N in flight as shown; \
         \"Committed\" is the first watch event with phase Rendered for the current generation (the \
         commit is pushed before that status is written). Writes are counted by the operator \
         (`paver_api_writes_total`) and by the API server (`apiserver_request_total`, write verbs \
         on paver.dev and Events, less the bench's own creates).\n"
    )?;
    let mut cols: Vec<(String, &Value)> = bursts.iter().map(|(l, v)| (format!("burst {l}"), *v)).collect();
    if let Some(t) = trickle {
        cols.push(("trickle".into(), t));
    }
    if let Some(t) = trickle_act {
        cols.push(("trickle, a bundle activating".into(), t));
    }
    write!(md, "| |")?;
    for (c, _) in &cols {
        write!(md, " {c} |")?;
    }
    writeln!(md)?;
    writeln!(md, "|---{}", "|---".repeat(cols.len()) + "|")?;
    type Cell = fn(&Value) -> String;
    let rows: Vec<(&str, Cell)> = vec![
        ("requests", |v| thousands(f(v, "/requests").unwrap_or(0.0))),
        ("creates in flight", |v| {
            if v.get("trickle_interval_ms").and_then(Value::as_f64).is_some() {
                format!("one every {} ms", f(v, "/trickle_interval_ms").unwrap_or(0.0))
            } else {
                format!("{}", f(v, "/create_concurrency").unwrap_or(0.0))
            }
        }),
        ("creates answered after", |v| {
            secs(f(v, "/create_wall_s").unwrap_or(f64::NAN))
        }),
        ("Committed", |v| {
            format!(
                "{} of {}",
                thousands(f(v, "/committed").unwrap_or(0.0)),
                thousands(f(v, "/requests").unwrap_or(0.0))
            )
        }),
        ("all Committed after the first create", |v| {
            f(v, "/all_committed_s").map_or("not all".into(), secs)
        }),
        ("create→Committed p50", |v| {
            lat(f(v, "/latency/median_us").unwrap_or(f64::NAN))
        }),
        ("create→Committed p99", |v| {
            lat(f(v, "/latency/p99_us").unwrap_or(f64::NAN))
        }),
        ("create→Committed max", |v| {
            lat(f(v, "/latency/max_us").unwrap_or(f64::NAN))
        }),
        ("bundle activations meanwhile", |v| {
            v.get("activations")
                .filter(|a| !a.is_null())
                .map_or("-".into(), |a| {
                    format!(
                        "{} of a {}-rule bundle; apply→in force p50 {}, max {}",
                        f(a, "/count").unwrap_or(0.0),
                        thousands(f(a, "/rules").unwrap_or(0.0)),
                        lat(f(a, "/apply_to_active/median_us").unwrap_or(f64::NAN)),
                        lat(f(a, "/apply_to_active/max_us").unwrap_or(f64::NAN))
                    )
                })
        }),
        ("Failed or Rejected", |v| {
            format!("{}", f(v, "/failed").unwrap_or(0.0))
        }),
        ("reconciles per Committed request", |v| {
            format!(
                "{:.2}",
                per_committed(v, "/operator/reconciles").unwrap_or(f64::NAN)
            )
        }),
        ("API writes per Committed request (operator)", |v| {
            format!(
                "{:.2}",
                per_committed(v, "/operator/api_writes").unwrap_or(f64::NAN)
            )
        }),
        ("API writes per Committed request (API server)", |v| {
            format!("{:.2}", per_committed(v, "/apiserver/writes").unwrap_or(f64::NAN))
        }),
        ("operator writes by resource/verb", |v| {
            map_cell(v.pointer("/operator/api_writes_by"))
        }),
        ("API server writes (incl. the creates)", |v| {
            map_cell(v.pointer("/apiserver/by"))
        }),
        ("commits", |v| format!("{}", f(v, "/commits").unwrap_or(0.0))),
        ("requests per commit", |v| {
            f(v, "/requests_per_commit").map_or("-".into(), |x| format!("{x:.1}"))
        }),
        ("operator RSS before", |v| {
            format!("{:.0} MiB", f(v, "/operator/rss_before_mib").unwrap_or(f64::NAN))
        }),
        ("operator peak RSS (VmHWM)", |v| {
            format!("{:.0} MiB", f(v, "/operator/peak_rss_mib").unwrap_or(f64::NAN))
        }),
        ("operator idle RSS, all cached", |v| {
            format!("{:.0} MiB", f(v, "/operator/idle_rss_mib").unwrap_or(f64::NAN))
        }),
        ("quiet period", |v| {
            v.get("quiet").filter(|q| !q.is_null()).map_or("-".into(), |q| {
                let s = secs(f(q, "/seconds").unwrap_or(0.0));
                if f(v, "/all_committed_s").is_some() {
                    s
                } else {
                    format!("{s} (the burst had not finished: not quiet)")
                }
            })
        }),
        ("quiet: reconciles", |v| quiet_cell(v, "/reconciles")),
        ("quiet: operator API writes", |v| {
            quiet_cell(v, "/operator_api_writes")
        }),
        ("quiet: API server writes", |v| quiet_cell(v, "/apiserver_writes")),
        ("quiet: commits", |v| quiet_cell(v, "/commits")),
        ("quiet: operator RSS at the end", |v| {
            v.get("quiet").filter(|q| !q.is_null()).map_or("-".into(), |q| {
                format!("{:.0} MiB", f(q, "/idle_rss_mib_end").unwrap_or(f64::NAN))
            })
        }),
        ("control plane startup", |v| {
            f(v, "/cluster_startup_s").map_or("?".into(), secs)
        }),
    ];
    for (name, cell) in rows {
        write!(md, "| {name} |")?;
        for (_, v) in &cols {
            write!(md, " {} |", cell(v))?;
        }
        writeln!(md)?;
    }
    writeln!(md)?;
    for (label, v) in &cols {
        let Some(cpu) = v.get("cpu_seconds").and_then(Value::as_object) else {
            continue;
        };
        let wall = f(v, "/cpu_wall_s").unwrap_or(f64::NAN);
        writeln!(
            md,
            "Profile of the {label} run, first create to all Committed or the timeout ({}): CPU seconds per process \
             (/proc utime + stime), and the operator's own duration histograms (seconds summed over \
             the run; stages overlap, reconciles run concurrently).\n",
            secs(wall)
        )?;
        if let Some(note) = v.get("profile_note").and_then(Value::as_str) {
            writeln!(md, "{note}\n")?;
        }
        writeln!(md, "| process | CPU seconds | cores busy on average |")?;
        writeln!(md, "|---|---|---|")?;
        let mut parts: Vec<(&String, f64)> =
            cpu.iter().map(|(k, x)| (k, x.as_f64().unwrap_or(0.0))).collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (k, x) in parts {
            writeln!(md, "| {k} | {x:.1} | {:.2} |", x / wall)?;
        }
        writeln!(md)?;
        if let Some(t) = v.get("operator_time").and_then(Value::as_object) {
            writeln!(md, "| operator stage | count | seconds summed | mean |")?;
            writeln!(md, "|---|---|---|---|")?;
            for (k, x) in t {
                let sum = x.get(0).and_then(Value::as_f64).unwrap_or(0.0);
                let count = x.get(1).and_then(Value::as_f64).unwrap_or(0.0);
                writeln!(
                    md,
                    "| `{k}` | {} | {sum:.1} | {} |",
                    thousands(count),
                    fmt_us(sum / count * 1e6)
                )?;
            }
            writeln!(md)?;
        }
    }
    Ok(())
}

fn quiet_cell(v: &Value, path: &str) -> String {
    v.get("quiet")
        .filter(|q| !q.is_null())
        .and_then(|q| f(q, path))
        .map_or("-".into(), |x| format!("{x}"))
}

fn map_cell(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}: {}", thousands(v.as_f64().unwrap_or(0.0))))
                .collect::<Vec<_>>()
                .join("<br>")
        })
        .unwrap_or_else(|| "-".into())
}

fn policy_section(md: &mut String, p: &Value) -> anyhow::Result<()> {
    writeln!(md, "## Policy stage against OPA\n")?;
    writeln!(
        md,
        "`paver-bench policy`: per example request, Paver's whole policy stage ({}) against OPA {} \
         (`opa bench` on a prepared query over the same modules, data and input; and OPA's `--e2e` \
         server path). Ratio = Paver median / OPA median. Per-rule medians are regorus evaluating \
         one rule set alone.\n",
        s(p, "/settings/paver_timed"),
        s(p, "/versions/opa")
    )?;
    writeln!(
        md,
        "| example | route | bundles | Paver p50 | Paver p99 | OPA p50 | OPA p99 | ratio p50 | ratio p99 | \
         vs OPA e2e p50 | input build + convert p50 | evaluate p50, VM / interpreter | costliest rule set |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for e in p.get("examples").and_then(Value::as_array).into_iter().flatten() {
        let (best_name, best_us, total) = costliest_rule(e).unwrap_or_default();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× | {:.2}× | {} + {} | {} / {} | `{}` {} ({:.0}% of the rule sets' sum) |",
            s(e, "/example"),
            s(e, "/route"),
            e.get("bundles").and_then(Value::as_array).map_or(0, Vec::len),
            fmt_us(f(e, "/paver/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/paver/p99_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/opa/bench_median_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/opa/bench_p99_us").unwrap_or(f64::NAN)),
            f(e, "/ratio_median").unwrap_or(f64::NAN),
            f(e, "/ratio_p99").unwrap_or(f64::NAN),
            f(e, "/ratio_e2e_median").unwrap_or(f64::NAN),
            fmt_us(f(e, "/paver_build_input/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/paver_prepare/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/paver_evaluate/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/paver_evaluate_interpreter/median_us").unwrap_or(f64::NAN)),
            best_name,
            fmt_us(best_us),
            best_us / total * 100.0,
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "Cold: the first evaluation in a fresh process, and bundle activation (compile + tests):\n"
    )?;
    writeln!(
        md,
        "| example | Paver first evaluation | OPA first eval | OPA compile | OPA process start to result |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for e in p.get("examples").and_then(Value::as_array).into_iter().flatten() {
        writeln!(
            md,
            "| {} | {} | {} | {:.1} ms | {:.1} ms |",
            s(e, "/example"),
            fmt_us(f(e, "/paver_cold_us").unwrap_or(f64::NAN)),
            fmt_us(f(e, "/opa/cold_eval_us").unwrap_or(f64::NAN)),
            f(e, "/opa/cold_compile_ms").unwrap_or(f64::NAN),
            f(e, "/opa/cold_process_ms").unwrap_or(f64::NAN),
        )?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "| bundle | modules | tests | activate p50 (incl. tests) | tests alone p50 | first activation |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for a in p
        .get("activation")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            s(a, "/bundle"),
            f(a, "/modules").unwrap_or(0.0),
            f(a, "/tests").unwrap_or(0.0),
            fmt_us(f(a, "/activate/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(a, "/tests_only/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(a, "/activate_first_us").unwrap_or(f64::NAN)),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn render_section(md: &mut String, r: &Value) -> anyhow::Result<()> {
    writeln!(md, "## Render\n")?;
    writeln!(
        md,
        "`paver-bench render`: each shipped route's example rendered back to back on one thread \
         ({} timed renders).\n",
        f(r, "/iterations").unwrap_or(0.0)
    )?;
    writeln!(
        md,
        "| route | example | files | bytes | p50 | p99 | renders/s | files/s | first render |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for x in r.get("routes").and_then(Value::as_array).into_iter().flatten() {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s(x, "/route"),
            s(x, "/example"),
            f(x, "/files").unwrap_or(0.0),
            thousands(f(x, "/bytes").unwrap_or(0.0)),
            fmt_us(f(x, "/render/median_us").unwrap_or(f64::NAN)),
            fmt_us(f(x, "/render/p99_us").unwrap_or(f64::NAN)),
            thousands(f(x, "/renders_per_sec").unwrap_or(0.0)),
            thousands(f(x, "/files_per_sec").unwrap_or(0.0)),
            fmt_us(f(x, "/first_render_us").unwrap_or(f64::NAN)),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn bump_section(md: &mut String, b: &Value, n: f64) -> anyhow::Result<()> {
    writeln!(
        md,
        "`paver-bench burst --bump-route`: after the {} burst and its quiet period, microservice \
         2.0.0 (a template change, no rollout policy: a 100% rollout at once) is applied; every \
         request re-rendered and Committed at 2.0.0:\n",
        thousands(n)
    )?;
    writeln!(
        md,
        "| requests | apply → all Committed at 2.0.0 | commits | requests/commit | operator writes/request |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {} | {} | {} | {} | {:.2} |\n",
        thousands(f(b, "/committed").unwrap_or(0.0)),
        f(b, "/all_committed_s").map_or("not all within the timeout".to_string(), secs),
        f(b, "/commits").unwrap_or(0.0),
        f(b, "/requests_per_commit").map_or("-".to_string(), |x| format!("{x:.1}")),
        f(b, "/api_writes_per_request").unwrap_or(f64::NAN),
    )?;
    Ok(())
}

fn preview_section(md: &mut String, p: &Value) -> anyhow::Result<()> {
    writeln!(
        md,
        "`paver-bench preview`: microservice 2.0.0 (a template change) previewed over {} copies of \
         the orders-api example, a fifth pinned to `^1.0`: two decisions (validate, estimate, \
         policy, render) and a file-by-file unified diff per request, on {} thread(s) — \
         `core::preview`, what `paver diff` and the operator's rollout run. Target: under 30 s \
         for 10,000 requests on 2 cores.\n",
        thousands(f(p, "/requests").unwrap_or(0.0)),
        f(p, "/threads").unwrap_or(0.0)
    )?;
    writeln!(
        md,
        "| requests | changed | unchanged | would fail | time | requests/s | diffs | peak RSS | target |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    let seconds = f(p, "/seconds").unwrap_or(f64::NAN);
    let per_10k = seconds * 10_000.0 / f(p, "/requests").unwrap_or(f64::NAN);
    writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} | {:.1} MiB | {:.0} MiB | {} |\n",
        thousands(f(p, "/requests").unwrap_or(0.0)),
        thousands(f(p, "/changed").unwrap_or(0.0)),
        thousands(f(p, "/unchanged").unwrap_or(0.0)),
        thousands(f(p, "/would_fail").unwrap_or(0.0)),
        secs(seconds),
        thousands(f(p, "/requests_per_sec").unwrap_or(0.0)),
        f(p, "/diff_bytes").unwrap_or(0.0) / (1024.0 * 1024.0),
        f(p, "/peak_rss_mib").unwrap_or(f64::NAN),
        stand_max(per_10k, 30.0),
    )?;
    Ok(())
}

fn git_section(md: &mut String, g: &Value) -> anyhow::Result<()> {
    writeln!(md, "## Git writer\n")?;
    writeln!(
        md,
        "`paver-bench git`: the operator's Git writer (window {} ms, at most {} changes per commit) \
         fed {} sequential changes, then a burst of {} (and the same burst again, unchanged), \
         {:.1} files per change.\n",
        f(g, "/writer/window_ms").unwrap_or(0.0),
        f(g, "/writer/max_batch").unwrap_or(0.0),
        f(g, "/sequential").unwrap_or(0.0),
        f(g, "/burst").unwrap_or(0.0),
        f(g, "/files_per_change").unwrap_or(0.0)
    )?;
    writeln!(
        md,
        "| target | scenario | changes | commits | changes/commit | commits/s | changes/s | commit p50 | push p50 | latency p50 | latency p99 | HTTP requests/commit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for t in g.get("targets").and_then(Value::as_array).into_iter().flatten() {
        for scenario in ["sequential", "burst", "burst_unchanged"] {
            let Some(x) = t.get(scenario) else { continue };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} ms | {:.0} ms | {} | {} | {} |",
                s(t, "/target"),
                scenario.replace('_', " "),
                f(x, "/changes").unwrap_or(0.0),
                f(x, "/commits").unwrap_or(0.0),
                f(x, "/changes_per_commit").map_or("-".into(), |v| format!("{v:.1}")),
                f(x, "/commits_per_sec").unwrap_or(f64::NAN),
                f(x, "/changes_per_sec").unwrap_or(f64::NAN),
                f(x, "/commit_ms_median").unwrap_or(f64::NAN),
                f(x, "/push_ms_median").unwrap_or(f64::NAN),
                fmt_us(f(x, "/latency/median_us").unwrap_or(f64::NAN)),
                fmt_us(f(x, "/latency/p99_us").unwrap_or(f64::NAN)),
                f(x, "/http_requests_per_commit").map_or("-".into(), |v| format!("{v:.1}")),
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

/// Requests Committed (and creates answered) against seconds since the first create.
fn chart(run: &Value, label: &str, path: &Path) -> anyhow::Result<()> {
    let points: Vec<(f64, f64, f64)> = run
        .get("timeline")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let p = p.as_array()?;
            Some((p.first()?.as_f64()?, p.get(1)?.as_f64()?, p.get(2)?.as_f64()?))
        })
        .collect();
    let n = f(run, "/requests").unwrap_or(1.0).max(1.0);
    let xmax = points.last().map_or(1.0, |p| p.0).max(1.0);
    let root = SVGBackend::new(path, (800, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            format!("{label} ServiceRequests created at once: Committed over time"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax * 1.02, 0f64..n * 1.05)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.configure_mesh()
        .x_desc("seconds since the first create")
        .y_desc("requests")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| {
            if xmax < 5.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    c.draw_series(LineSeries::new(
        points.iter().map(|p| (p.0, p.2)),
        RED.stroke_width(2),
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .label("created (answered by the API server)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    c.draw_series(LineSeries::new(
        points.iter().map(|p| (p.0, p.1)),
        BLUE.stroke_width(2),
    ))
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .label("Committed (pushed, status Rendered)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
