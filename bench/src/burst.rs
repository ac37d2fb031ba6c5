//! End to end on the real control plane (e2e/cluster.sh): a burst of
//! ServiceRequests created at once (or a trickle, one every 200 ms), timed
//! from each create to the moment the request reports phase `Rendered` for
//! its current generation — "Committed": the operator pushes the commit
//! before it writes that status.
//!
//! Counted on both sides: the operator's own `/metrics` (reconciles, API
//! writes) and the API server's `apiserver_request_total` (write verbs on
//! `paver.dev` and on Events, less the creates this program made). Then the
//! operator's peak and idle memory, the commits on the output repository,
//! and the same counts over a quiet period in which nothing changes.
//!
//! The operator is the release `paver operator` binary, run as a process
//! under the operator's own identity (the in-cluster Deployment is scaled
//! to 0: kwok would only pretend to run it).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::{Api, Client, api::PostParams, runtime::watcher};
use paver_crds::{ServiceRequest, request::Phase};
use paver_testbed::Cluster;
use serde::Serialize;
use serde_json::Value;

use crate::{
    env,
    stats::{Summary, fmt_us},
};

const NAMESPACE: &str = "paver-bench";

#[derive(clap::Args)]
pub struct Args {
    /// Requests created at once (the burst).
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// Creates in flight at a time.
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// Quiet period after the burst (nothing changes), in seconds.
    #[arg(long, default_value_t = 600)]
    quiet_seconds: u64,
    /// Instead of a burst: create this many requests one every
    /// `--trickle-interval-ms` (low-load latency), no quiet period.
    #[arg(long)]
    trickle: Option<usize>,
    #[arg(long, default_value_t = 200)]
    trickle_interval_ms: u64,
    /// While the requests are created, keep a bundle of this many rules
    /// activating (a new version as soon as the last is in force; it
    /// matches no request): reconcile latency under heavy activations.
    #[arg(long)]
    activate_rules: Option<usize>,
    /// The operator binary (a release build).
    #[arg(long)]
    paver: Option<PathBuf>,
    /// The operator's --resync.
    #[arg(long, default_value = "5m")]
    resync: String,
    /// State dir for e2e/cluster.sh (default: a fresh temporary dir).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Keep the state dir (logs) after stopping the cluster.
    #[arg(long)]
    keep_state: bool,
    /// Give up waiting for all requests to be Committed after this long.
    #[arg(long, default_value_t = 900)]
    timeout_seconds: u64,
    /// After the burst (and its quiet period), publish microservice
    /// 2.0.0 (a template change, no rollout policy: every request moves at
    /// once) and time until every request is Committed at 2.0.0.
    #[arg(long)]
    bump_route: bool,
}

/// The version `--bump-route` publishes.
const BUMP_VERSION: &str = "2.0.0";

/// microservice 2.0.0 published over the burst's requests.
#[derive(Serialize)]
struct RouteBump {
    version: &'static str,
    /// Requests Committed at the new version within the timeout.
    committed: usize,
    /// Apply of the new version → every request Committed at it.
    all_committed_s: Option<f64>,
    commits: u64,
    requests_per_commit: Option<f64>,
    /// The operator's API writes per request moved.
    api_writes_per_request: f64,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: env::Header,
    mode: &'static str,
    requests: usize,
    create_concurrency: usize,
    trickle_interval_ms: Option<u64>,
    resync: String,
    cluster_startup_s: Option<f64>,
    /// First create issued to last create answered.
    create_wall_s: f64,
    create_errors: usize,
    /// Requests that reached Committed before the timeout.
    committed: usize,
    /// First create to all Committed (None: not all within the timeout).
    all_committed_s: Option<f64>,
    /// The last request Committed, seconds after the first create.
    last_committed_s: Option<f64>,
    /// Requests last seen Failed or Rejected.
    failed: usize,
    /// Create issued → Committed, per request.
    latency: Summary,
    /// `[seconds since first create, committed, creates answered, operator RSS MiB]` every 250 ms.
    timeline: Vec<(f64, usize, usize, f64)>,
    operator: OperatorFigures,
    apiserver: ApiserverFigures,
    commits: u64,
    requests_per_commit: Option<f64>,
    /// Where the 2 cores went from the first create to all Committed:
    /// CPU seconds per process (utime + stime from /proc), and that wall time.
    cpu_seconds: BTreeMap<String, f64>,
    cpu_wall_s: f64,
    /// The operator's own duration histograms over the burst: seconds
    /// summed and count, by `family{labels}`.
    operator_time: BTreeMap<String, (f64, f64)>,
    quiet: Option<Quiet>,
    activations: Option<Activations>,
    route_bump: Option<RouteBump>,
}

/// The bundle kept activating during the run (`--activate-rules`).
#[derive(Serialize)]
struct Activations {
    rules: usize,
    /// Versions put in force while requests were created.
    count: usize,
    /// Apply of a version → its status reports it (observedGeneration).
    apply_to_active: Summary,
}

/// Applies versions 1.0.k of the synthetic bundle one after another, each
/// once the last is in force, until `stop`; each apply→in-force time.
async fn keep_activating(
    client: Client,
    rules: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    use kube::api::{Patch, PatchParams};
    use paver_crds::PolicyBundle;
    let api: Api<PolicyBundle> = Api::all(client);
    let mut times = Vec::new();
    let mut k = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        k += 1;
        let mut b = crate::policy::synthetic_bundle(rules, &format!("1.0.{k}"), "paver-bench-none");
        b.metadata.managed_fields = None;
        let mut doc = serde_json::to_value(&b)?;
        doc["apiVersion"] = "paver.dev/v1alpha1".into();
        doc["kind"] = "PolicyBundle".into();
        let t = Instant::now();
        let applied = api
            .patch(
                "synthetic",
                &PatchParams::apply("paver-bench").force(),
                &Patch::Apply(&doc),
            )
            .await?;
        let generation = applied.metadata.generation;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let b = api.get_status("synthetic").await?;
            if b.status.as_ref().and_then(|s| s.observed_generation) == generation {
                if b.status.as_ref().and_then(|s| s.active_version.as_deref()) != Some(&format!("1.0.{k}")) {
                    bail!("synthetic 1.0.{k} was not activated: {:?}", b.status);
                }
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("synthetic 1.0.{k} not reported within 120 s");
            }
        }
        times.push(t.elapsed());
    }
    Ok(times)
}

#[derive(Serialize, Default)]
struct OperatorFigures {
    reconciles: f64,
    reconciles_per_request: f64,
    api_writes: f64,
    api_writes_per_request: f64,
    /// `resource/verb` → writes during the burst.
    api_writes_by: BTreeMap<String, f64>,
    rss_before_mib: f64,
    /// VmHWM after the burst.
    peak_rss_mib: f64,
    /// VmRSS 10 s after all were Committed.
    idle_rss_mib: f64,
}

#[derive(Serialize, Default)]
struct ApiserverFigures {
    /// Write verbs on paver.dev and Events, less this program's creates.
    writes: f64,
    writes_per_request: f64,
    /// `group/resource[/subresource] VERB` → count (the creates not subtracted).
    by: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Quiet {
    seconds: u64,
    reconciles: f64,
    operator_api_writes: f64,
    operator_api_writes_by: BTreeMap<String, f64>,
    apiserver_writes: f64,
    apiserver_by: BTreeMap<String, f64>,
    commits: u64,
    idle_rss_mib_end: f64,
}

// ------------------------------------------------------------- cluster --

/// Paver installed on the shared test-bed's cluster (`testbed/`, as the
/// e2e suite installs it), with the Deployment scaled to 0 (the operator
/// runs as a local process), and the benchmark's namespace bound to `team`.
fn install_paver(cluster: &Cluster, team: &str) -> anyhow::Result<()> {
    println!("installing Paver (CRDs, manifests/, Deployment scaled to 0)");
    cluster.install_paver()?;
    cluster.kubectl_retry(
        &[
            "-n",
            "paver-system",
            "scale",
            "deployment",
            "paver-operator",
            "--replicas=0",
        ],
        5,
    )?;
    // Admission and the operator refuse a request claiming another team.
    cluster.team_namespace(NAMESPACE, team)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------ operator --

/// The `paver operator` process; SIGTERM on drop.
struct Operator {
    child: Child,
    metrics_url: String,
    log: PathBuf,
}

impl Operator {
    fn start(cluster: &Cluster, paver: &Path, resync: &str) -> anyhow::Result<Operator> {
        let dir = cluster.state.join("operator");
        std::fs::create_dir_all(&dir)?;
        let user_file = dir.join("git-username");
        std::fs::write(&user_file, cluster.try_var("GIT_USER")?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = cluster.state.join("logs/paver-operator.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(paver)
            .arg("operator")
            .args(["--repo-url", cluster.try_var("GIT_URL")?])
            .arg("--git-username-file")
            .arg(&user_file)
            .args(["--git-token-file", cluster.try_var("GIT_TOKEN_FILE")?])
            .arg("--workdir")
            .arg(dir.join("repo"))
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(["--lease-namespace", "paver-system", "--resync", resync])
            .env("KUBECONFIG", cluster.try_var("PAVER_E2E_OPERATOR_KUBECONFIG")?)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("failed to start {}", paver.display()))?;
        println!(
            "started {} operator (pid {}, log {})",
            paver.display(),
            child.id(),
            log.display()
        );
        Ok(Operator {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the operator exited ({status}):\n{}",
                    tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
                );
            }
            if curl(&format!("{}/readyz", self.metrics_url), None).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator was not ready within {timeout:?} (log {})",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metrics(&self) -> anyhow::Result<OperatorCounters> {
        let text = curl(&format!("{}/metrics", self.metrics_url), None)?;
        let mut c = OperatorCounters::default();
        for sample in parse_metrics(&text) {
            match sample.name.as_str() {
                "paver_reconciles_total" if sample.label("controller") == Some("servicerequest") => {
                    c.reconciles += sample.value;
                }
                "paver_api_writes_total" => {
                    c.api_writes += sample.value;
                    let key = format!(
                        "{}/{}",
                        sample.label("resource").unwrap_or("?"),
                        sample.label("verb").unwrap_or("?")
                    );
                    *c.by.entry(key).or_default() += sample.value;
                }
                _ => {}
            }
        }
        Ok(c)
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> (f64, f64) {
        proc_memory(self.pid())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // SIGTERM: a clean stop that releases the lease.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's (VmRSS, VmHWM) in MiB, NaN where /proc does not say.
pub fn proc_memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU seconds of the operator, this program and the control plane's processes.
fn cpu_snapshot(cluster: &Cluster, operator: &Operator) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(c) = cpu_seconds(operator.pid()) {
        out.insert("paver operator".to_string(), c);
    }
    if let Some(c) = cpu_seconds(std::process::id()) {
        out.insert("paver-bench (creates, watch)".to_string(), c);
    }
    for name in [
        "kube-apiserver",
        "etcd",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "git-http",
    ] {
        let pid = std::fs::read_to_string(cluster.state.join(format!("pids/{name}.pid")))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(c) = pid.and_then(cpu_seconds) {
            out.insert(name.to_string(), c);
        }
    }
    out
}

/// `_sum` and `_count` of the operator's duration histograms.
fn histogram_sums(text: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for s in parse_metrics(text) {
        let (base, is_sum) = if let Some(b) = s.name.strip_suffix("_seconds_sum") {
            (b, true)
        } else if let Some(b) = s.name.strip_suffix("_seconds_count") {
            (b, false)
        } else {
            continue;
        };
        let labels: Vec<String> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "outcome")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let key = if labels.is_empty() {
            base.to_string()
        } else {
            format!("{base}{{{}}}", labels.join(","))
        };
        let e = out.entry(key).or_default();
        if is_sum {
            e.0 += s.value;
        } else {
            e.1 += s.value;
        }
    }
    out
}

fn curl(url: &str, bearer: Option<(&str, &str)>) -> anyhow::Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-fsS", "--max-time", "20"]);
    if let Some((token, ca)) = bearer {
        cmd.args(["--cacert", ca, "-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = cmd.arg(url).output().context("failed to run curl")?;
    if !out.status.success() {
        bail!("GET {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------- metrics --

#[derive(Default, Clone)]
struct OperatorCounters {
    reconciles: f64,
    api_writes: f64,
    by: BTreeMap<String, f64>,
}

impl OperatorCounters {
    fn since(&self, before: &OperatorCounters) -> OperatorCounters {
        OperatorCounters {
            reconciles: self.reconciles - before.reconciles,
            api_writes: self.api_writes - before.api_writes,
            by: diff_maps(&self.by, &before.by),
        }
    }
}

#[derive(Default, Clone)]
struct ApiserverCounters {
    writes: f64,
    by: BTreeMap<String, f64>,
}

impl ApiserverCounters {
    fn since(&self, before: &ApiserverCounters) -> ApiserverCounters {
        ApiserverCounters {
            writes: self.writes - before.writes,
            by: diff_maps(&self.by, &before.by),
        }
    }
}

fn diff_maps(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

const WRITE_VERBS: [&str; 5] = ["POST", "PUT", "PATCH", "APPLY", "DELETE"];

fn apiserver_metrics(cluster: &Cluster) -> anyhow::Result<ApiserverCounters> {
    let token = cluster.admin_token()?;
    let url = format!("{}/metrics", cluster.try_var("PAVER_E2E_APISERVER")?);
    let text = curl(&url, Some((&token, cluster.try_var("PAVER_E2E_CA_FILE")?)))?;
    let mut c = ApiserverCounters::default();
    for s in parse_metrics(&text) {
        if s.name != "apiserver_request_total" {
            continue;
        }
        let verb = s.label("verb").unwrap_or("");
        let group = s.label("group").unwrap_or("");
        let resource = s.label("resource").unwrap_or("");
        if !WRITE_VERBS.contains(&verb) || (group != "paver.dev" && resource != "events") {
            continue;
        }
        c.writes += s.value;
        let sub = s.label("subresource").unwrap_or("");
        let group = if group.is_empty() { "core" } else { group };
        let key = if sub.is_empty() {
            format!("{group}/{resource} {verb}")
        } else {
            format!("{group}/{resource}/{sub} {verb}")
        };
        *c.by.entry(key).or_default() += s.value;
    }
    Ok(c)
}

struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Prometheus text format, samples only (no escapes in our label values).
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => match line.split_once(' ') {
                Some((h, v)) => (h, v.trim()),
                None => continue,
            },
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, v)| (k.trim().to_string(), v.trim_end_matches('"').to_string()))
                    .collect();
                (name.to_string(), labels)
            }
            None => (head.to_string(), Vec::new()),
        };
        out.push(Sample { name, labels, value });
    }
    out
}

// ---------------------------------------------------------------- git --

/// A bare mirror of the output repository: commits on main.
struct Mirror {
    dir: tempfile::TempDir,
    url: String,
}

impl Mirror {
    fn new(url: String) -> anyhow::Result<Mirror> {
        let dir = tempfile::tempdir()?;
        git(&["init", "-q", "--bare"], dir.path())?;
        Ok(Mirror { dir, url })
    }

    fn commits(&self) -> anyhow::Result<u64> {
        git(
            &["fetch", "-q", "--prune", &self.url, "+refs/heads/*:refs/heads/*"],
            self.dir.path(),
        )?;
        let heads = git(
            &["for-each-ref", "--format=%(refname)", "refs/heads"],
            self.dir.path(),
        )?;
        if heads.trim().is_empty() {
            return Ok(0);
        }
        let count = git(&["rev-list", "--count", "--all"], self.dir.path())?;
        Ok(count.trim().parse()?)
    }
}

fn git(args: &[&str], dir: &Path) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .context("failed to run git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------ requests --

fn request_template(root: &Path) -> anyhow::Result<ServiceRequest> {
    let path = root.join("examples/orders-api.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("failed to read {}", path.display()))?;
    paver::content::parse_requests(&text, &path.display().to_string())?
        .into_iter()
        .next()
        .context("no request in examples/orders-api.yaml")
}

/// A copy of the template with its own name (and repository name).
fn request(template: &ServiceRequest, i: usize) -> ServiceRequest {
    let name = format!("svc-{i:05}");
    let mut req = template.clone();
    req.metadata = kube::api::ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(NAMESPACE.to_string()),
        labels: template.metadata.labels.clone(),
        annotations: template.metadata.annotations.clone(),
        ..Default::default()
    };
    req.status = None;
    if let Some(repo) = req
        .spec
        .parameters
        .get_mut("repository")
        .and_then(Value::as_object_mut)
    {
        repo.insert("name".into(), Value::String(name));
    }
    req
}

fn is_committed(req: &ServiceRequest) -> bool {
    req.status.as_ref().is_some_and(|s| {
        matches!(s.phase, Phase::Rendered | Phase::Synced)
            && s.observed_generation.is_some()
            && s.observed_generation == req.metadata.generation
    })
}

fn is_failed(req: &ServiceRequest) -> bool {
    req.status
        .as_ref()
        .is_some_and(|s| matches!(s.phase, Phase::Failed | Phase::Rejected))
}

#[derive(Default)]
struct Seen {
    committed: HashMap<String, Instant>,
    failed: HashMap<String, bool>,
    /// When each request was first seen Committed at [`BUMP_VERSION`].
    bumped: HashMap<String, Instant>,
}

/// Watches the bench namespace; records when each request is first Committed.
async fn start_watcher(
    client: Client,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let api: Api<ServiceRequest> = Api::namespaced(client, NAMESPACE);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(event)) => {
                    let obj = match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => o,
                        watcher::Event::InitDone => {
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    let now = Instant::now();
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if is_committed(&obj) {
                        seen.committed.entry(name.clone()).or_insert(now);
                        let on = obj.status.as_ref().and_then(|s| s.render.as_ref());
                        if on.is_some_and(|r| r.route_version == BUMP_VERSION) {
                            seen.bumped.entry(name.clone()).or_insert(now);
                        }
                    }
                    seen.failed.insert(name, is_failed(&obj));
                }
                Ok(None) => break,
                Err(e) => {
                    eprintln!("watch error (retrying): {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .context("the watch did not sync within 60 s")?
        .ok();
    Ok(handle)
}

async fn create_one(api: &Api<ServiceRequest>, req: &ServiceRequest) -> anyhow::Result<()> {
    let mut last = None;
    for attempt in 0..5u64 {
        match api.create(&PostParams::default(), req).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(()),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("create failed"), Into::into))
}

// ----------------------------------------------------------------- run --

pub fn run(root: &Path, args: &Args) -> anyhow::Result<Value> {
    let mode = if args.trickle.is_some() {
        "trickle"
    } else {
        "burst"
    };
    let header = env::header(
        if args.trickle.is_some() {
            "trickle"
        } else {
            "burst"
        },
        root,
        None,
    );
    env::print_header(&header);
    if !header.versions.release_build {
        eprintln!("warning: paver-bench is a debug build (the operator binary is what is measured)");
    }
    let paver = args
        .paver
        .clone()
        .unwrap_or_else(|| root.join("target/release/paver"));
    if !paver.exists() {
        bail!(
            "{} does not exist: cargo build --release -p paver",
            paver.display()
        );
    }
    let tmp;
    let state = match &args.state {
        Some(s) => s.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("paver-bench-").tempdir()?;
            tmp.path().join("state")
        }
    };
    println!(
        "starting the control plane (e2e/cluster.sh up, state {})",
        state.display()
    );
    let mut cluster = Cluster::up(state.clone())?;
    cluster.keep_state = args.keep_state;
    let startup = std::fs::read_to_string(state.join("startup-seconds"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    install_paver(&cluster, &request_template(root)?.spec.team)?;
    let mut operator = Operator::start(&cluster, &paver, &args.resync)?;
    operator.wait_ready(Duration::from_secs(120))?;
    println!("operator ready");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(root, args, mode, header, startup, &cluster, &operator));
    drop(operator);
    drop(cluster);
    let report = result?;
    Ok(serde_json::to_value(report)?)
}

async fn measure(
    root: &Path,
    args: &Args,
    mode: &'static str,
    header: env::Header,
    startup: Option<f64>,
    cluster: &Cluster,
    operator: &Operator,
) -> anyhow::Result<Report> {
    let n = args.trickle.unwrap_or(args.requests);
    let template = request_template(root)?;
    let client = cluster.admin_client().await?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = start_watcher(client.clone(), seen.clone()).await?;
    let mirror = Mirror::new(cluster.git_url_with_credentials()?)?;

    // Let the operator settle (its first list, lease) before the baseline.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let commits_before = mirror.commits()?;
    let op_before = operator.metrics()?;
    let api_before = apiserver_metrics(cluster)?;
    let (rss_before, _) = operator.memory();
    let cpu_before = cpu_snapshot(cluster, operator);
    let hist_before = histogram_sums(&curl(&format!("{}/metrics", operator.metrics_url), None)?);

    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    println!(
        "{mode}: creating {n} ServiceRequests in {NAMESPACE}{}",
        if mode == "trickle" {
            format!(" one every {} ms", args.trickle_interval_ms)
        } else {
            format!(", {} in flight", args.create_concurrency)
        }
    );

    let stop_activating = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let activating = args
        .activate_rules
        .map(|rules| tokio::spawn(keep_activating(client.clone(), rules, stop_activating.clone())));
    // The creates run in a task; this task samples the timeline.
    let creator = {
        let api = api.clone();
        let created = created.clone();
        let answered = answered.clone();
        let template = template.clone();
        let trickle = args
            .trickle
            .map(|_| Duration::from_millis(args.trickle_interval_ms));
        let concurrency = args.create_concurrency.max(1);
        tokio::spawn(async move {
            let one = |i: usize| {
                let api = api.clone();
                let created = created.clone();
                let answered = answered.clone();
                let req = request(&template, i);
                async move {
                    let name = req.metadata.name.clone().unwrap_or_default();
                    created
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name.clone(), Instant::now());
                    let r = create_one(&api, &req).await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    r.map_err(|e| (name, e))
                }
            };
            let results: Vec<Result<(), (String, anyhow::Error)>> = match trickle {
                Some(every) => {
                    let mut tick = tokio::time::interval(every);
                    let mut handles = Vec::new();
                    for i in 0..n {
                        tick.tick().await;
                        handles.push(tokio::spawn(one(i)));
                    }
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(h.await.unwrap_or_else(|e| Err((String::new(), e.into()))));
                    }
                    out
                }
                None => {
                    futures::stream::iter(0..n)
                        .map(one)
                        .buffer_unordered(concurrency)
                        .collect()
                        .await
                }
            };
            results
        })
    };

    let deadline = t0 + Duration::from_secs(args.timeout_seconds);
    let mut timeline = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut create_wall = None;
    let mut last_print = Instant::now();
    loop {
        tick.tick().await;
        let done = seen.lock().unwrap_or_else(|e| e.into_inner()).committed.len();
        let ans = answered.load(std::sync::atomic::Ordering::Relaxed);
        if ans >= n && create_wall.is_none() {
            create_wall = Some(t0.elapsed());
        }
        let (rss, _) = operator.memory();
        timeline.push((t0.elapsed().as_secs_f64(), done, ans, rss));
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:>6.1}s: {ans}/{n} created, {done} Committed, operator RSS {rss:.0} MiB",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if done >= n {
            break;
        }
        if Instant::now() > deadline {
            println!("timed out after {} s: {done}/{n} Committed", args.timeout_seconds);
            break;
        }
    }
    let cpu_wall = t0.elapsed().as_secs_f64();
    stop_activating.store(true, std::sync::atomic::Ordering::Relaxed);
    let activations = match (activating, args.activate_rules) {
        (Some(task), Some(rules)) => {
            let times = task.await??;
            let a = Activations {
                rules,
                count: times.len(),
                apply_to_active: Summary::of(&times),
            };
            println!(
                "  {} activations of a {rules}-rule bundle meanwhile: apply→in force p50 {}  max {}",
                a.count,
                fmt_us(a.apply_to_active.median_us),
                fmt_us(a.apply_to_active.max_us)
            );
            Some(a)
        }
        _ => None,
    };
    let cpu_after = cpu_snapshot(cluster, operator);
    let cpu: BTreeMap<String, f64> = cpu_after
        .iter()
        .map(|(k, v)| (k.clone(), v - cpu_before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let hist_after = histogram_sums(&curl(&format!("{}/metrics", operator.metrics_url), None)?);
    let operator_time: BTreeMap<String, (f64, f64)> = hist_after
        .iter()
        .map(|(k, (sum, count))| {
            let (s0, c0) = hist_before.get(k).copied().unwrap_or_default();
            (k.clone(), (sum - s0, count - c0))
        })
        .filter(|(_, (_, c))| *c > 0.0)
        .collect();
    let results = creator.await?;
    let create_wall = create_wall.unwrap_or_else(|| t0.elapsed());
    let create_errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    for (name, e) in create_errors.iter().take(5) {
        eprintln!("create {name} failed: {e:#}");
    }

    let (latencies, first_commit_wall, last_committed) = {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let created = created.lock().unwrap_or_else(|e| e.into_inner());
        let mut lat = Vec::new();
        let mut last: Option<Instant> = None;
        for (name, at) in &seen.committed {
            if let Some(c) = created.get(name) {
                lat.push(at.saturating_duration_since(*c));
            }
            last = Some(last.map_or(*at, |l| l.max(*at)));
        }
        let first_create = created.values().min().copied().unwrap_or(t0);
        (lat, first_create, last)
    };
    let committed = latencies.len();
    let last_committed_s =
        last_committed.map(|l| l.saturating_duration_since(first_commit_wall).as_secs_f64());
    let all_committed_s = (committed >= n).then_some(last_committed_s).flatten();
    let failed = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .failed
        .values()
        .filter(|f| **f)
        .count();
    let latency = Summary::of(&latencies);

    // Idle: 10 s after the last one was Committed.
    println!("all Committed or timed out; 10 s idle before the counts");
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The operator's whole /metrics after the burst (durations by stage,
    // Git operations), for the profile: kept with --keep-state.
    if let Ok(text) = curl(&format!("{}/metrics", operator.metrics_url), None) {
        let _ = std::fs::write(cluster.state.join("operator-metrics-after-burst.txt"), text);
    }
    let op_after = operator.metrics()?.since(&op_before);
    let api_after_raw = apiserver_metrics(cluster)?;
    let api_after = api_after_raw.since(&api_before);
    let (idle_rss, peak_rss) = operator.memory();
    let commits_after = mirror.commits()?;
    let commits = commits_after.saturating_sub(commits_before);

    let nf = n as f64;
    let apiserver_writes = api_after.writes - nf;
    let report_operator = OperatorFigures {
        reconciles: op_after.reconciles,
        reconciles_per_request: op_after.reconciles / nf,
        api_writes: op_after.api_writes,
        api_writes_per_request: op_after.api_writes / nf,
        api_writes_by: op_after.by.clone(),
        rss_before_mib: rss_before,
        peak_rss_mib: peak_rss,
        idle_rss_mib: idle_rss,
    };
    let report_apiserver = ApiserverFigures {
        writes: apiserver_writes,
        writes_per_request: apiserver_writes / nf,
        by: api_after.by.clone(),
    };

    println!();
    println!("{mode}: {n} requests, {} in flight", args.create_concurrency);
    println!("  creates answered        {:.1} s", create_wall.as_secs_f64());
    match all_committed_s {
        Some(s) => println!("  all Committed           {s:.1} s after the first create"),
        None => println!(
            "  Committed               {committed}/{n} within {} s",
            args.timeout_seconds
        ),
    }
    println!(
        "  create→Committed        p50 {}  p99 {}  max {}",
        fmt_us(latency.median_us),
        fmt_us(latency.p99_us),
        fmt_us(latency.max_us)
    );
    println!(
        "  reconciles/request      {:.2}  ({} total)",
        op_after.reconciles / nf,
        op_after.reconciles
    );
    println!(
        "  API writes/request      operator {:.2}, API server {:.2}  ({:?})",
        op_after.api_writes / nf,
        apiserver_writes / nf,
        op_after.by
    );
    println!("  API server writes by    {:?}", api_after.by);
    println!("  commits                 {commits}");
    println!("  CPU seconds over {cpu_wall:.1} s: {cpu:?}");
    for (k, (sum, count)) in &operator_time {
        println!(
            "  operator time           {k}: {sum:.1} s over {count} (mean {})",
            fmt_us(sum / count * 1e6)
        );
    }
    println!(
        "  operator RSS            before {rss_before:.1} MiB, peak {peak_rss:.1} MiB, idle {idle_rss:.1} MiB"
    );
    if failed > 0 {
        println!("  Failed/Rejected         {failed}");
    }

    let quiet = if mode == "burst" && args.quiet_seconds > 0 {
        println!("\nquiet: {} s with nothing changed", args.quiet_seconds);
        let op_q0 = operator.metrics()?;
        let api_q0 = apiserver_metrics(cluster)?;
        let commits_q0 = mirror.commits()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(args.quiet_seconds) {
            let left = Duration::from_secs(args.quiet_seconds).saturating_sub(t.elapsed());
            tokio::time::sleep(left.min(Duration::from_secs(60))).await;
            let c = operator.metrics()?.since(&op_q0);
            println!(
                "  {:>4.0}s: reconciles {}, operator writes {}",
                t.elapsed().as_secs_f64(),
                c.reconciles,
                c.api_writes
            );
        }
        let op_q = operator.metrics()?.since(&op_q0);
        let api_q = apiserver_metrics(cluster)?.since(&api_q0);
        let commits_q = mirror.commits()?.saturating_sub(commits_q0);
        let (rss_end, _) = operator.memory();
        println!(
            "  quiet totals: reconciles {}, operator writes {}, API server writes {} {:?}, commits {commits_q}",
            op_q.reconciles, op_q.api_writes, api_q.writes, api_q.by
        );
        Some(Quiet {
            seconds: args.quiet_seconds,
            reconciles: op_q.reconciles,
            operator_api_writes: op_q.api_writes,
            operator_api_writes_by: op_q.by,
            apiserver_writes: api_q.writes,
            apiserver_by: api_q.by,
            commits: commits_q,
            idle_rss_mib_end: rss_end,
        })
    } else {
        None
    };
    let route_bump = if args.bump_route {
        Some(bump_route(args, &client, &seen, &mirror, operator, n).await?)
    } else {
        None
    };
    watch.abort();

    Ok(Report {
        header,
        mode,
        requests: n,
        create_concurrency: args.create_concurrency,
        trickle_interval_ms: args.trickle.map(|_| args.trickle_interval_ms),
        resync: args.resync.clone(),
        cluster_startup_s: startup,
        create_wall_s: create_wall.as_secs_f64(),
        create_errors: create_errors.len(),
        committed,
        all_committed_s,
        last_committed_s,
        failed,
        latency,
        timeline,
        operator: report_operator,
        apiserver: report_apiserver,
        commits,
        requests_per_commit: (commits > 0).then(|| committed as f64 / commits as f64),
        cpu_seconds: cpu,
        cpu_wall_s: cpu_wall,
        operator_time,
        quiet,
        activations,
        route_bump,
    })
}

/// Publishes microservice [`BUMP_VERSION`] (the SLO template changed) and
/// waits for every request to be Committed at it.
async fn bump_route(
    args: &Args,
    client: &Client,
    seen: &Arc<Mutex<Seen>>,
    mirror: &Mirror,
    operator: &Operator,
    n: usize,
) -> anyhow::Result<RouteBump> {
    let routes: Api<paver_crds::PaveRoute> = Api::all(client.clone());
    let mut route = routes.get("microservice").await?;
    env::microservice_v2(&mut route)?;
    ensure!(
        route.spec.version == BUMP_VERSION,
        "the bump publishes {BUMP_VERSION}"
    );
    route.metadata.managed_fields = None;
    route.metadata.resource_version = None;
    route.status = None;
    let commits0 = mirror.commits()?;
    let op0 = operator.metrics()?;
    println!("\nroute bump: publishing microservice {BUMP_VERSION} over {n} requests");
    let t0 = Instant::now();
    routes
        .patch(
            "microservice",
            &kube::api::PatchParams::apply("paver-bench").force(),
            &kube::api::Patch::Apply(&route),
        )
        .await?;
    let deadline = t0 + Duration::from_secs(args.timeout_seconds);
    let mut last_print = Instant::now();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = seen.lock().unwrap_or_else(|e| e.into_inner()).bumped.len();
        if done >= n || Instant::now() > deadline {
            break done;
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {:>6.1}s: {done}/{n} Committed at {BUMP_VERSION}",
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
    };
    let all = (done >= n).then(|| t0.elapsed().as_secs_f64());
    let commits = mirror.commits()?.saturating_sub(commits0);
    let writes = operator.metrics()?.since(&op0).api_writes;
    match all {
        Some(s) => println!(
            "  every request Committed at {BUMP_VERSION} {s:.1} s after the apply; {commits} commits"
        ),
        None => println!(
            "  {done}/{n} Committed at {BUMP_VERSION} within {} s",
            args.timeout_seconds
        ),
    }
    Ok(RouteBump {
        version: BUMP_VERSION,
        committed: done,
        all_committed_s: all,
        commits,
        requests_per_commit: (commits > 0).then(|| done as f64 / commits as f64),
        api_writes_per_request: writes / n.max(1) as f64,
    })
}
