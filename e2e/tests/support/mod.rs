//! The pieces the end-to-end scenarios drive: the shared test-bed's real
//! control plane and Git server (`testbed/`, from `e2e/cluster.sh`), the
//! `paver operator` process, and the output repository over smart HTTP.

use std::{
    future::Future,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use kube::{Api, Client};
use paver_crds::{Phase, ServiceRequest};

pub mod prereq;

/// The cluster and helpers the benchmarks use too (the `testbed/` crate).
pub use paver_testbed::{Cluster, free_port, repo_root, run};

/// What the suite cannot run without, as `(what is missing, the command
/// that provides it)`: the binaries of `e2e/bin.sh build` and the Debian
/// packages of the control plane and the Git server. Empty when all is here.
pub fn missing_prerequisites() -> Vec<(String, String)> {
    let mut missing = Vec::new();
    let check = Command::new(repo_root().join("e2e/bin.sh"))
        .arg("check")
        .stdout(Stdio::null())
        .output();
    match check {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push((
            String::from_utf8_lossy(&out.stderr).trim().replace('\n', ", "),
            "e2e/bin.sh build".to_string(),
        )),
        Err(e) => missing.push((
            format!("e2e/bin.sh check did not run: {e}"),
            "e2e/bin.sh build".into(),
        )),
    }
    let packages = prereq::missing_packages(false);
    if !packages.is_empty() {
        missing.push((
            format!("Debian packages {}", packages.join(" ")),
            "e2e/deps.sh install".to_string(),
        ));
    }
    missing
}

/// What the e2e adds to the shared test-bed's cluster.
pub trait ClusterExt {
    /// The output repository on the cluster's Git server.
    fn remote(&self) -> Remote;
}

impl ClusterExt for Cluster {
    fn remote(&self) -> Remote {
        Remote {
            url: self.git_url_with_credentials().unwrap_or_default(),
        }
    }
}

/// The `paver operator` process, run as the operator's identity.
pub struct Operator {
    child: Option<Child>,
    pub metrics: String,
    pub log: PathBuf,
    args: Vec<String>,
    kubeconfig: String,
}

impl Operator {
    pub fn start(cluster: &Cluster, resync: &str) -> Result<Self> {
        Self::start_with(cluster, resync, &[])
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_paver"))
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start paver operator")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no chance to finish anything or release the lease.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Whether the process is still running (it has not exited, crashed
    /// or been killed since it was started).
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until /readyz answers 200: the process leads (or runs without
    /// leader election) and has listed what it reconciles against.
    pub async fn wait_ready(&self) -> Result<()> {
        let url = self.metrics.replace("/metrics", "/readyz");
        wait_for("the operator to be ready", Duration::from_secs(60), || {
            let url = url.clone();
            async move { Ok(http_get(&url).await.is_ok().then_some(())) }
        })
        .await
    }

    /// A counter family from /metrics: each label set's line, for messages.
    pub async fn counter_lines(&self, name: &str) -> Result<Vec<String>> {
        let text = http_get(&self.metrics).await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .map(str::to_string)
            .collect())
    }

    /// Sum of a counter family from /metrics (all label sets).
    pub async fn counter(&self, name: &str) -> Result<f64> {
        Ok(self
            .counter_lines(name)
            .await?
            .iter()
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A clean stop (SIGTERM) releases the lease.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
        }
        if let Some(mut child) = self.child.take() {
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

/// Plain HTTP GET on loopback (the metrics endpoint) with curl.
async fn http_get(url: &str) -> Result<String> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || run(Command::new("curl").args(["-fsS", "--max-time", "5", &url])))
        .await?
}

/// The output repository on the Git server.
pub struct Remote {
    url: String,
}

/// A fresh clone of the output repository.
pub struct Clone {
    pub dir: tempfile::TempDir,
}

impl Remote {
    pub fn clone_repo(&self) -> Result<Clone> {
        let dir = tempfile::tempdir()?;
        run(Command::new("git")
            .args(["clone", "-q", &self.url])
            .arg(dir.path())
            .env("GIT_TERMINAL_PROMPT", "0"))?;
        Ok(Clone { dir })
    }

    /// The commit at the tip of `main` on the server.
    pub fn head(&self) -> Result<String> {
        let out = run(Command::new("git")
            .args(["ls-remote", &self.url, "refs/heads/main"])
            .env("GIT_TERMINAL_PROMPT", "0"))?;
        Ok(out.split_whitespace().next().unwrap_or_default().to_string())
    }
}

impl Clone {
    pub fn git(&self, args: &[&str]) -> Result<String> {
        run(Command::new("git")
            .arg("-C")
            .arg(self.dir.path())
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0"))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Commits after `base`, oldest first, as (sha, full message).
    pub fn commits_since(&self, base: &str) -> Result<Vec<(String, String)>> {
        let log = self.git(&[
            "log",
            "--reverse",
            "--format=%H%x00%B%x01",
            &format!("{base}..HEAD"),
        ])?;
        Ok(log
            .split('\u{1}')
            .filter_map(|entry| entry.trim_start().split_once('\0'))
            .map(|(sha, body)| (sha.to_string(), body.to_string()))
            .collect())
    }

    /// Commits whose message carries `Paver-Request: <key>`, oldest first,
    /// as (sha, full message).
    pub fn commits_for(&self, key: &str) -> Result<Vec<(String, String)>> {
        let log = self.git(&["log", "--reverse", "--format=%H%x00%B%x01"])?;
        Ok(log
            .split('\u{1}')
            .filter_map(|entry| entry.trim_start().split_once('\0'))
            .filter(|(_, body)| body.lines().any(|l| l.trim() == format!("Paver-Request: {key}")))
            .map(|(sha, body)| (sha.to_string(), body.to_string()))
            .collect())
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` naming `what`
/// and the last error seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what}{}",
                if last.is_empty() {
                    String::new()
                } else {
                    format!(" (last error: {last})")
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the request reports `phase` for its current generation.
pub async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> Result<ServiceRequest> {
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let res = wait_for(
        &format!("{ns}/{name} to be {phase:?}"),
        Duration::from_secs(60),
        || {
            let (api, seen) = (api.clone(), seen.clone());
            async move {
                let Some(sr) = api.get_opt(name).await? else {
                    return Ok(None);
                };
                let status = sr.status.clone().unwrap_or_default();
                if let Ok(mut s) = seen.lock() {
                    *s = format!(
                        "{:?} at generation {:?}; conditions: {}",
                        status.phase,
                        status.observed_generation,
                        serde_json::to_string(&status.conditions).unwrap_or_default()
                    );
                }
                Ok(
                    (status.phase == phase && status.observed_generation == sr.metadata.generation)
                        .then_some(sr),
                )
            }
        },
    )
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    res.with_context(|| format!("{ns}/{name} last seen {seen}"))
}

/// An example request from `examples/`, renamed into `ns` and claiming the
/// team `ns` is bound to (the scenarios' namespaces are bound to the team
/// of their own name), with `edit` applied to its YAML value.
pub fn example(
    file: &str,
    ns: &str,
    name: &str,
    edit: impl FnOnce(&mut serde_yaml::Value),
) -> Result<String> {
    let text = std::fs::read_to_string(repo_root().join("examples").join(file))?;
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text)?;
    v["metadata"]["namespace"] = ns.into();
    v["metadata"]["name"] = name.into();
    v["spec"]["team"] = ns.into();
    edit(&mut v);
    Ok(serde_yaml::to_string(&v)?)
}

/// Why Argo CD cannot run here, or `None` when `e2e/bin.sh build-argocd`
/// has built it and redis-server is installed.
pub fn argocd_missing() -> Option<String> {
    let paths = Command::new(repo_root().join("e2e/bin.sh")).arg("paths").output();
    let dir = paths.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("ARGOCD_BIN_DIR="))
            .map(PathBuf::from)
    });
    let Some(dir) = dir else {
        return Some("`e2e/bin.sh paths` names no ARGOCD_BIN_DIR".into());
    };
    if !dir.join("argocd").exists() || !dir.join("module-dir").exists() {
        return Some(prereq::report(
            "argocd",
            &format!("Argo CD is not built in {}", dir.display()),
            "e2e/bin.sh build-argocd",
        ));
    }
    let redis = Command::new("sh")
        .args(["-c", "command -v redis-server"])
        .stdout(Stdio::null())
        .status();
    if !redis.is_ok_and(|s| s.success()) {
        return Some(prereq::report(
            "argocd",
            "redis-server is not installed",
            "e2e/deps.sh install",
        ));
    }
    None
}

impl Operator {
    /// [`Operator::start`] with more flags (kept across restarts).
    pub fn start_with(cluster: &Cluster, resync: &str, extra: &[String]) -> Result<Self> {
        let dir = cluster.state.join("operator");
        std::fs::create_dir_all(&dir)?;
        let user_file = dir.join("git-username");
        std::fs::write(&user_file, cluster.var("GIT_USER"))?;
        let port = free_port();
        let mut args = vec![
            "operator".to_string(),
            "--repo-url".into(),
            cluster.var("GIT_URL"),
            "--git-username-file".into(),
            user_file.display().to_string(),
            "--git-token-file".into(),
            cluster.var("GIT_TOKEN_FILE"),
            "--workdir".into(),
            dir.join("repo").display().to_string(),
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
            "--lease-namespace".into(),
            "paver-system".into(),
            "--resync".into(),
            resync.into(),
        ];
        args.extend(extra.iter().cloned());
        let mut op = Self {
            child: None,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log: cluster.state.join("logs/paver-operator.log"),
            args,
            kubeconfig: cluster.var("PAVER_E2E_OPERATOR_KUBECONFIG"),
        };
        op.spawn()?;
        Ok(op)
    }
}
