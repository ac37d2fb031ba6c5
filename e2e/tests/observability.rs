//! Observability that works: the Grafana dashboard and the Prometheus alert
//! rules the chart ships (`charts/paver/files/`), run against a real
//! Prometheus (Debian's `prometheus`) that scrapes the e2e operator every
//! second and evaluates the rules every second.
//!
//! The rule file passes `promtool check rules`; every alert expression is
//! valid and every rule evaluates without error; every query of every
//! dashboard panel (its variables substituted) returns data for this
//! scenario's requests: one rendered (with a Scorecard), one denied (a
//! violation), one held because policy cannot decide (a bundle that fails
//! to evaluate on it), and one whose push fails while the Git server is
//! stopped; and the push-failure alert fires while it is stopped, then
//! resolves once it is back.
//!
//! Without `prometheus`/`promtool` it fails under CI (`CI` set) and skips
//! elsewhere, naming the package and the command that installs it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use kube::{Api, api::DeleteParams};
use paver_crds::{Phase, PolicyBundle, ServiceRequest};
use serde_json::Value;

use crate::{
    Env,
    argocd::Skipped,
    namespace,
    support::{self, example, free_port, repo_root, run, wait_for, wait_phase},
};

const NS: &str = "e2e-obs";
/// A bundle that fails to evaluate on requests labelled `e2e/divisor: "0"`.
const BUNDLE: &str = "e2e-obs-fragile";
const DASHBOARD: &str = "charts/paver/files/grafana-dashboard.json";
const RULES: &str = "charts/paver/files/prometheus-rules.yaml";
/// The alert that must fire while the Git server is stopped.
const PUSH_ALERT: &str = "PaverGitPushFailing";
/// What the test's copy of the rules has instead of each rule's `for:`
/// (minutes in the shipped file); the expressions are the shipped ones.
const TEST_FOR: &str = "2s";
/// How the dashboard's variables are substituted (Grafana's
/// `$__rate_interval` is at least four scrape intervals; 1 s here).
const RATE_INTERVAL: &str = "1m";
const RANGE: &str = "15m";

/// Why Prometheus cannot run here, or `None`.
fn prometheus_missing() -> Option<String> {
    for bin in ["prometheus", "promtool"] {
        let ok = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Some(support::prereq::report(
                "observability",
                &format!("{bin} is not installed (Debian package prometheus)"),
                "e2e/deps.sh install",
            ));
        }
    }
    None
}

/// One query of a dashboard panel.
#[derive(Debug)]
struct PanelQuery {
    panel: String,
    expr: String,
}

/// Every panel's queries (rows' nested panels included), after checking
/// that each panel and query reads the `${datasource}` variable.
fn panel_queries(dashboard: &Value) -> Result<Vec<PanelQuery>> {
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) -> Result<()> {
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            if let Some(nested) = p["panels"].as_array() {
                walk(nested, out)?;
            }
            if p["type"] == "row" {
                continue;
            }
            ensure!(
                p["datasource"]["uid"] == "${datasource}",
                "panel {title:?} does not read the datasource variable: {}",
                p["datasource"]
            );
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
            ensure!(!targets.is_empty(), "panel {title:?} has no query");
            for t in targets {
                ensure!(
                    t["datasource"]["uid"] == "${datasource}",
                    "a query of panel {title:?} does not read the datasource variable"
                );
                let expr = t["expr"]
                    .as_str()
                    .with_context(|| format!("a query of panel {title:?} has no expr"))?;
                out.push(PanelQuery {
                    panel: title.clone(),
                    expr: expr.to_string(),
                });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default(),
        &mut out,
    )?;
    Ok(out)
}

/// A panel's expression with Grafana's variables substituted: the time
/// variables by fixed durations, `$team` by this scenario's team.
fn substitute(expr: &str, team: &str) -> Result<String> {
    let mut s = expr.to_string();
    for (var, value) in [
        ("${__rate_interval}", RATE_INTERVAL),
        ("$__rate_interval", RATE_INTERVAL),
        ("${__interval}", "15s"),
        ("$__interval", "15s"),
        ("${__range}", RANGE),
        ("$__range", RANGE),
        ("${team}", team),
        ("$team", team),
    ] {
        s = s.replace(var, value);
    }
    ensure!(!s.contains('$'), "a variable is left in {s}");
    Ok(s)
}

/// One alert of the rule file.
#[derive(Debug)]
struct Alert {
    name: String,
    expr: String,
}

/// The alerts of the shipped rule file, after checking that each has a
/// `for`, a severity, a summary, a description and a runbook hint.
fn alerts(rules: &serde_yaml::Value) -> Result<Vec<Alert>> {
    let mut out = Vec::new();
    let groups = rules["groups"].as_sequence().context("no groups: at the top")?;
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().into_iter().flatten())
    {
        let name = rule["alert"].as_str().context("a rule that is not an alert")?;
        for (what, v) in [
            ("expr", &rule["expr"]),
            ("for", &rule["for"]),
            ("labels.severity", &rule["labels"]["severity"]),
            ("annotations.summary", &rule["annotations"]["summary"]),
            ("annotations.description", &rule["annotations"]["description"]),
            ("annotations.runbook", &rule["annotations"]["runbook"]),
        ] {
            ensure!(
                v.as_str().is_some_and(|s| !s.trim().is_empty()),
                "alert {name} has no {what}"
            );
        }
        out.push(Alert {
            name: name.to_string(),
            expr: rule["expr"].as_str().unwrap_or_default().to_string(),
        });
    }
    ensure!(!out.is_empty(), "no alerts in {RULES}");
    Ok(out)
}

/// The shipped rules with every `for:` shortened to [`TEST_FOR`], nothing
/// else changed (the expressions are compared with the shipped ones).
fn with_short_for(rules: &serde_yaml::Value) -> Result<serde_yaml::Value> {
    let mut copy = rules.clone();
    for group in copy["groups"].as_sequence_mut().context("groups")? {
        for rule in group["rules"].as_sequence_mut().context("rules")? {
            rule["for"] = TEST_FOR.into();
        }
    }
    let (a, b) = (alerts(rules)?, alerts(&copy)?);
    ensure!(
        a.iter().map(|x| &x.expr).eq(b.iter().map(|x| &x.expr)),
        "the test's rules changed an expression"
    );
    Ok(copy)
}

/// A Prometheus process on a free loopback port; stopped on drop.
struct Prometheus {
    child: Option<Child>,
    url: String,
}

impl Prometheus {
    /// Scrapes `target` (`host:port`) every second and evaluates `rules`
    /// every second; its data and log live in `dir`.
    fn start(dir: &Path, target: &str, rules: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: paver\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )?;
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start prometheus")?;
        Ok(Prometheus {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    /// GET `path` with `params` (URL-encoded); the JSON answer's `data`,
    /// or its error.
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "10", "--get"]);
        for (k, v) in params {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        cmd.arg(format!("{}{path}", self.url));
        let body = tokio::task::spawn_blocking(move || run(&mut cmd)).await??;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("{}: {}", v["errorType"], v["error"]);
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self
            .get("/api/v1/query", &[("query", expr)])
            .await
            .with_context(|| format!("query {expr}"))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The value of a query returning one sample (`None` if none).
    async fn value(&self, expr: &str) -> Result<Option<f64>> {
        let result = self.query(expr).await?;
        ensure!(result.len() <= 1, "{expr} gave {} samples", result.len());
        Ok(result
            .first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Waits until `expr`'s single value satisfies `ok`.
    async fn wait_value(&self, what: &str, expr: &str, ok: impl Fn(f64) -> bool + Copy) -> Result<f64> {
        let last = std::sync::Mutex::new(None);
        let seen = &last;
        wait_for(what, Duration::from_secs(60), move || async move {
            let v = self.value(expr).await?;
            if let Ok(mut l) = seen.lock() {
                *l = v;
            }
            Ok(v.filter(|v| ok(*v)))
        })
        .await
        .with_context(|| format!("{expr} was {:?}", last.lock().ok().and_then(|l| *l)))
    }

    /// The active alerts (pending or firing) named `name`.
    async fn alerts(&self, name: &str) -> Result<Vec<Value>> {
        let data = self.get("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["labels"]["alertname"] == name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until alert `name` fires (with the labels `labels`, if any).
    async fn wait_firing(&self, name: &str, labels: &[(&str, &str)], timeout: Duration) -> Result<()> {
        wait_for(&format!("alert {name} to fire"), timeout, move || async move {
            let firing = self
                .alerts(name)
                .await?
                .into_iter()
                .any(|a| a["state"] == "firing" && labels.iter().all(|(k, v)| a["labels"][*k] == *v));
            Ok(firing.then_some(()))
        })
        .await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            for _ in 0..50 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fragile_bundle() -> String {
    format!(
        r#"apiVersion: paver.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: {BUNDLE}
spec:
  version: "1.0.0"
  owners: [platform-team@example.com]
  description: e2e observability, fails to evaluate on a request labelled e2e/divisor=0
  mode: enforce
  match:
    namespaces: [{NS}]
  modules:
    - name: fragile.rego
      source: |
        package paver.e2e_obs_fragile
        import rego.v1
        deny contains "too many" if {{
          100 / to_number(input.request.metadata.labels["e2e/divisor"]) > 1000
        }}
"#
    )
}

/// The repository's copy of `rel`.
fn shipped(rel: &str) -> Result<(PathBuf, String)> {
    let path = repo_root().join(rel);
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    Ok((path, text))
}

/// The shipped dashboard and alerts against Prometheus scraping the e2e
/// operator (see the module's comment). The test's copy of the rules
/// shortens each `for:` to [`TEST_FOR`] so an alert fires within the
/// scenario; the expressions are the shipped ones, unchanged.
pub async fn dashboard_and_alerts_work_against_prometheus(env: &mut Env) -> Result<()> {
    if let Some(reason) = prometheus_missing() {
        if support::prereq::required() {
            bail!(reason);
        }
        return Err(Skipped(reason).into());
    }
    let (rules_path, rules_text) = shipped(RULES)?;
    let checked = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules_path))?;
    ensure!(checked.contains("SUCCESS"), "promtool check rules:\n{checked}");
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules_text)?;
    let shipped_alerts = alerts(&rules)?;
    ensure!(
        shipped_alerts.iter().any(|a| a.name == PUSH_ALERT),
        "no {PUSH_ALERT} in {RULES}"
    );
    let (_, dashboard_text) = shipped(DASHBOARD)?;
    let dashboard: Value = serde_json::from_str(&dashboard_text)?;
    ensure!(
        dashboard["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let vars = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    ensure!(
        var("datasource").is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let team_var = var("team").context("no team variable")?;
    let queries = panel_queries(&dashboard)?;
    let exprs: Vec<(String, String)> = queries
        .iter()
        .map(|q| Ok((q.panel.clone(), substitute(&q.expr, NS)?)))
        .collect::<Result<_>>()?;

    let (c, client) = (&env.cluster, &env.client);
    namespace(c, NS)?;
    c.apply(&fragile_bundle())?;
    let bundles: Api<PolicyBundle> = Api::all(client.clone());
    wait_for(
        "the fragile bundle to be in force",
        Duration::from_secs(30),
        || {
            let bundles = bundles.clone();
            async move {
                let b = bundles.get(BUNDLE).await?;
                Ok(b.status
                    .and_then(|s| s.active_version)
                    .filter(|v| v == "1.0.0")
                    .map(drop))
            }
        },
    )
    .await?;

    // Prometheus first, so the counters' increases are seen.
    let dir = c.state.join("prometheus");
    let test_rules = dir.join("rules.yaml");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&test_rules, serde_yaml::to_string(&with_short_for(&rules)?)?)?;
    let target = env
        .operator
        .metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let prom = Prometheus::start(&dir, &target, &test_rules)?;
    let prom = &prom;
    wait_for(
        "Prometheus to be ready",
        Duration::from_secs(60),
        move || async move { Ok(prom.get("/api/v1/status/buildinfo", &[]).await.ok().map(drop)) },
    )
    .await
    .with_context(|| format!("log: {}", dir.join("prometheus.log").display()))?;
    prom.wait_value("the operator to be scraped", "up{job=\"paver\"}", |v| v == 1.0)
        .await?;

    c.apply(&example("orders-api.yaml", NS, "obs-ok", |_| {})?)?;
    c.apply(&example("orders-api.yaml", NS, "obs-denied", |v| {
        v["spec"]["parameters"]["networking"]["dependencies"][0]["circuitBreaker"] = false.into();
    })?)?;
    c.apply(&example("orders-api.yaml", NS, "obs-held", |v| {
        v["metadata"]["labels"]["e2e/divisor"] = "0".into();
    })?)?;
    wait_phase(client, NS, "obs-ok", Phase::Rendered).await?;
    wait_phase(client, NS, "obs-denied", Phase::Rejected).await?;
    let held = wait_phase(client, NS, "obs-held", Phase::Pending).await?;
    let reason = held
        .status
        .unwrap_or_default()
        .conditions
        .iter()
        .find(|c| c.type_ == "PolicyCompliant")
        .map(|c| c.reason.clone());
    ensure!(
        reason.as_deref() == Some("PolicyUnavailable"),
        "obs-held is Pending for {reason:?}"
    );

    // Every alert expression is valid PromQL, and every rule evaluates
    // without error once Prometheus has run it.
    for a in &shipped_alerts {
        prom.query(&a.expr)
            .await
            .with_context(|| format!("alert {}", a.name))?;
    }
    let n_alerts = shipped_alerts.len();
    wait_for(
        "every rule to be evaluated",
        Duration::from_secs(30),
        move || async move {
            let data = prom.get("/api/v1/rules", &[]).await?;
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            ensure!(rules.len() == n_alerts, "{} rules loaded", rules.len());
            if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
                bail!("rule {} fails: {}", bad["name"], bad["lastError"]);
            }
            Ok(rules.iter().all(|r| r["health"] == "ok").then_some(()))
        },
    )
    .await?;

    // No false alarm while the Git server is up.
    prom.wait_value(
        "no Git failure before the outage",
        "max(paver_git_consecutive_failures)",
        |v| v == 0.0,
    )
    .await?;
    ensure!(
        prom.alerts(PUSH_ALERT).await?.is_empty(),
        "{PUSH_ALERT} is active while the Git server is up"
    );

    // The Git server stops: a new request's push fails, and so does every
    // resync's drift check. Restarted whatever happens (the scenarios
    // share it).
    c.git_stop()?;
    let stopped = Instant::now();
    let outage = async {
        c.apply(&example("orders-api.yaml", NS, "obs-outage", |_| {})?)?;
        let api: Api<ServiceRequest> = Api::namespaced(client.clone(), NS);
        wait_for("obs-outage to say PushFailed", Duration::from_secs(60), || {
            let api = api.clone();
            async move {
                let sr = api.get("obs-outage").await?;
                let status = sr.status.unwrap_or_default();
                Ok(status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Committed" && c.reason == "PushFailed")
                    .map(drop))
            }
        })
        .await?;

        // Every panel query returns data, at one moment.
        let empty = std::sync::Mutex::new(Vec::new());
        let (exprs, none) = (&exprs, &empty);
        let all = wait_for(
            "every panel query to return data",
            Duration::from_secs(90),
            move || async move {
                let mut missing = Vec::new();
                for (panel, expr) in exprs {
                    let result = prom
                        .query(expr)
                        .await
                        .with_context(|| format!("panel {panel:?}"))?;
                    if result.is_empty() {
                        missing.push(format!("{panel:?}: {expr}"));
                    }
                }
                let done = missing.is_empty();
                if let Ok(mut n) = none.lock() {
                    *n = missing;
                }
                Ok(done.then_some(()))
            },
        )
        .await;
        if let Err(e) = all {
            let missing = empty.lock().map(|m| m.join("\n  ")).unwrap_or_default();
            bail!("{e:#}; no data for:\n  {missing}");
        }
        // The team variable's values (label_values(paver_requests, team)).
        let definition = team_var["definition"].as_str().unwrap_or_default();
        ensure!(
            definition == "label_values(paver_requests, team)",
            "team variable: {definition}"
        );
        let teams = prom
            .get("/api/v1/label/team/values", &[("match[]", "paver_requests")])
            .await?;
        ensure!(
            teams.as_array().is_some_and(|t| t.iter().any(|t| t == NS)),
            "team values: {teams}"
        );

        // What the new metrics say about this scenario's requests.
        let t = format!("team=\"{NS}\"");
        for (phase, n) in [("Rendered", 1.0), ("Rejected", 1.0), ("Pending", 2.0)] {
            prom.wait_value(
                &format!("{n} {phase}"),
                &format!("sum(paver_requests{{{t},phase=\"{phase}\"}})"),
                |v| v == n,
            )
            .await?;
        }
        prom.wait_value(
            "one request held for policy",
            &format!("paver_requests_policy_unavailable{{{t}}}"),
            |v| v == 1.0,
        )
        .await?;
        let waited = prom
            .wait_value(
                "the oldest Pending request's wait",
                &format!("time() - min(paver_requests_pending_since_timestamp_seconds{{{t}}})"),
                |v| v >= 0.0,
            )
            .await?;
        ensure!(waited < 600.0, "waited {waited} s");
        prom.wait_value(
            "a violation counted",
            &format!(
                "sum(paver_violations_total{{{t},bundle=\"reliability\",rule=\"dependency-resilience\"}})"
            ),
            |v| v >= 1.0,
        )
        .await?;
        prom.wait_value(
            "a denial counted",
            &format!("sum(paver_policy_decisions_total{{{t},outcome=\"denied\"}})"),
            |v| v >= 1.0,
        )
        .await?;
        prom.wait_value(
            "obs-ok's score",
            &format!("paver_scorecard_score{{namespace=\"{NS}\",name=\"obs-ok\"}}"),
            |v| v > 0.0,
        )
        .await?;
        prom.wait_value(
            "obs-ok's level",
            &format!("count(paver_scorecard_level{{namespace=\"{NS}\",name=\"obs-ok\"}} == 1)"),
            |v| v == 1.0,
        )
        .await?;
        prom.wait_value(
            "the fragile bundle in force",
            &format!("paver_policy_bundle_in_force{{bundle=\"{BUNDLE}\"}}"),
            |v| v == 1.0,
        )
        .await?;
        prom.wait_value(
            "consecutive Git failures",
            "max(paver_git_consecutive_failures)",
            |v| v >= 1.0,
        )
        .await?;

        prom.wait_firing(PUSH_ALERT, &[], Duration::from_secs(90)).await?;
        let fired = stopped.elapsed();
        prom.wait_firing("PaverPolicyUnavailable", &[("team", NS)], Duration::from_secs(30))
            .await?;
        anyhow::Ok(fired)
    }
    .await;
    c.git_start()?;
    let fired = outage?;
    let restarted = Instant::now();
    eprintln!(
        "     {PUSH_ALERT} fired {:.1}s after the Git server stopped ({} panel queries, {} alerts checked)",
        fired.as_secs_f64(),
        exprs.len(),
        shipped_alerts.len()
    );
    wait_phase(client, NS, "obs-outage", Phase::Rendered).await?;
    wait_for(
        &format!("{PUSH_ALERT} to resolve"),
        Duration::from_secs(60),
        move || async move { Ok(prom.alerts(PUSH_ALERT).await?.is_empty().then_some(())) },
    )
    .await?;
    eprintln!(
        "     {PUSH_ALERT} resolved {:.1}s after the Git server was back",
        restarted.elapsed().as_secs_f64()
    );

    // Leave nothing that keeps reconciling for the scenarios after this one.
    bundles.delete(BUNDLE, &DeleteParams::default()).await?;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), NS);
    for name in ["obs-ok", "obs-denied", "obs-held", "obs-outage"] {
        api.delete(name, &DeleteParams::default()).await?;
    }
    wait_for(
        "this scenario's requests to be gone",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                Ok(api
                    .list(&Default::default())
                    .await?
                    .items
                    .is_empty()
                    .then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}
