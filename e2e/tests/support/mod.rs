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

/// The `paver operator` process, run as the operator's identity: the test
/// build's binary with the operator's kubeconfig, or — when
/// `PAVER_E2E_IMAGE` names the OCI archive `make image` writes (as
/// `make test` does) — the image, run with buildah in the shape of the
/// Deployment's Pod (see [`Pod`]).
pub struct Operator {
    child: Option<Child>,
    pub metrics: String,
    pub log: PathBuf,
    args: Vec<String>,
    launch: Launch,
}

enum Launch {
    Process { kubeconfig: String },
    Image(Pod),
}

/// The operator's image run as the Deployment runs it: uid 65532 with no
/// capabilities, the ServiceAccount's token from the TokenRequest API with
/// `ca.crt` and `namespace` at /var/run/secrets/kubernetes.io/serviceaccount
/// and `KUBERNETES_SERVICE_HOST`/`PORT` (so the client's in-cluster
/// configuration is what connects), the Git credentials written from the
/// `paver-git` Secret's keys to /etc/paver/git, the root filesystem mounted
/// read-only, and writable emptyDir-like volumes at /var/lib/paver and /tmp.
/// The host's network, as buildah's chroot isolation shares it.
pub struct Pod {
    container: String,
    rootfs: PathBuf,
    volumes: Vec<String>,
    env: Vec<String>,
}

/// The image archive the e2e runs the operator from, if it is asked to.
pub fn operator_image() -> Option<PathBuf> {
    std::env::var_os("PAVER_E2E_IMAGE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The operator's log filter: `PAVER_E2E_RUST_LOG`, else `info`.
fn log_filter() -> String {
    std::env::var("PAVER_E2E_RUST_LOG").unwrap_or_else(|_| "info".into())
}

fn buildah(args: &[&str]) -> Result<String> {
    run(Command::new("buildah")
        .arg("--storage-driver")
        .arg("vfs")
        .args(args))
}

impl Pod {
    /// Prepares the Pod's volumes and a working container of `image`.
    fn new(cluster: &Cluster, image: &std::path::Path, dir: &std::path::Path, port: u16) -> Result<Self> {
        let owned = |p: &std::path::Path, mode: u32| -> Result<()> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(p)?;
            std::os::unix::fs::chown(p, Some(65532), Some(65532))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
            Ok(())
        };
        // The projected ServiceAccount volume.
        let sa = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        let token = cluster.kubectl(&[
            "create",
            "token",
            "paver",
            "-n",
            "paver-system",
            "--duration",
            "24h",
        ])?;
        std::fs::write(sa.join("token"), token.trim())?;
        std::fs::copy(cluster.try_var("PAVER_E2E_CA_FILE")?, sa.join("ca.crt"))?;
        std::fs::write(sa.join("namespace"), "paver-system")?;
        // The Git credentials: the Secret the Deployment mounts, its keys as files.
        let git = dir.join("git-secret");
        std::fs::create_dir_all(&git)?;
        let token_file = cluster.try_var("GIT_TOKEN_FILE")?;
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "paver-git", "namespace": "paver-system"},
            "stringData": {
                "username": cluster.var("GIT_USER"),
                "token": std::fs::read_to_string(token_file)?.trim(),
            },
        });
        cluster.apply(&secret.to_string())?;
        let stored: serde_json::Value = serde_json::from_str(&cluster.kubectl(&[
            "get",
            "secret",
            "paver-git",
            "-n",
            "paver-system",
            "-o",
            "json",
        ])?)?;
        for key in ["username", "token"] {
            use base64::Engine as _;
            let encoded = stored["data"][key]
                .as_str()
                .with_context(|| format!("paver-git has no key {key}"))?;
            let path = git.join(key);
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, base64::engine::general_purpose::STANDARD.decode(encoded)?)?;
            std::os::unix::fs::chown(&path, Some(65532), Some(65532))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        }
        // emptyDirs.
        let (data, tmp) = (dir.join("var-lib-paver"), dir.join("tmp"));
        owned(&data, 0o755)?;
        owned(&tmp, 0o1777)?;
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir)?;

        let container = format!("paver-e2e-{port}");
        let _ = buildah(&["rm", &container]);
        buildah(&[
            "from",
            "--quiet",
            "--name",
            &container,
            &format!("oci-archive:{}", image.display()),
        ])
        .with_context(|| format!("buildah from {}", image.display()))?;
        let rootfs = PathBuf::from(buildah(&["mount", &container])?.trim());
        // A read-only root: the container's root bind-mounted read-only
        // onto itself (buildah run has no --read-only of its own).
        run(Command::new("mount").arg("--bind").arg(&rootfs).arg(&rootfs))?;
        run(Command::new("mount").args(["-o", "remount,bind,ro"]).arg(&rootfs))?;
        // buildah creates /run/.containerenv in every container it runs and
        // removes it afterwards, outside the container's volumes (on a
        // read-only /run that fails and buildah 1.28 loses the exit status):
        // /run is a writable mount of its own, as a kubelet's runtime has.
        run(Command::new("mount")
            .arg("--bind")
            .arg(&run_dir)
            .arg(rootfs.join("run")))?;
        let api = cluster.try_var("PAVER_E2E_APISERVER")?;
        let api_port = api.rsplit(':').next().unwrap_or_default().to_string();
        let volumes = vec![
            format!(
                "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                sa.display()
            ),
            format!("{}:/etc/paver/git:ro", git.display()),
            format!("{}:/var/lib/paver", data.display()),
            format!("{}:/tmp", tmp.display()),
        ];
        let env = [
            "KUBERNETES_SERVICE_HOST=127.0.0.1".to_string(),
            format!("KUBERNETES_SERVICE_PORT={api_port}"),
            "PAVER_WORKDIR=/var/lib/paver/repo".into(),
            "PAVER_GIT_USERNAME_FILE=/etc/paver/git/username".into(),
            "PAVER_GIT_TOKEN_FILE=/etc/paver/git/token".into(),
            format!("POD_NAME=paver-operator-{port}"),
            format!("RUST_LOG={}", log_filter()),
            "NO_COLOR=1".into(),
        ]
        .into();
        Ok(Pod {
            container,
            rootfs,
            volumes,
            env,
        })
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new("buildah");
        cmd.args([
            "--storage-driver",
            "vfs",
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
        ])
        .args(["--user", "65532:65532", "--cap-drop", "ALL"]);
        for v in &self.volumes {
            cmd.arg("--volume").arg(v);
        }
        for e in &self.env {
            cmd.arg("--env").arg(e);
        }
        cmd.arg(&self.container).arg("--").arg("/paver").args(args);
        cmd
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.rootfs.join("run")).status();
        let _ = Command::new("umount").arg(&self.rootfs).status();
        let _ = buildah(&["rm", &self.container]);
    }
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
        let mut cmd = match &self.launch {
            Launch::Process { kubeconfig } => {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_paver"));
                cmd.args(&self.args)
                    .env("KUBECONFIG", kubeconfig)
                    .env("RUST_LOG", log_filter())
                    .env("NO_COLOR", "1");
                cmd
            }
            Launch::Image(pod) => pod.command(&self.args),
        };
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("failed to start paver operator")?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no chance to finish anything or release the lease.
    pub fn kill(&mut self) -> Result<()> {
        self.signal("KILL");
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        if let Some(pattern) = self.image_process() {
            let gone = (0..100).any(|_| {
                let running = Command::new("pgrep").arg("-f").arg(&pattern).status();
                if running.is_ok_and(|s| s.success()) {
                    std::thread::sleep(Duration::from_millis(50));
                    false
                } else {
                    true
                }
            });
            if !gone {
                bail!("the operator's process in the image ({pattern}) outlived SIGKILL");
            }
        }
        Ok(())
    }

    /// Under buildah: a pattern matching only this operator's process.
    fn image_process(&self) -> Option<String> {
        let Launch::Image(_) = &self.launch else {
            return None;
        };
        let addr = self.args.iter().skip_while(|a| *a != "--metrics-addr").nth(1)?;
        Some(format!("^/paver operator .*--metrics-addr {addr}( |$)"))
    }

    /// Sends SIGNAL to the paver process itself (under buildah it is not
    /// the child this test spawned, but a process in the chroot).
    pub fn signal(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        match &self.launch {
            Launch::Process { .. } => {
                let _ = Command::new("kill")
                    .arg(format!("-{signal}"))
                    .arg(child.id().to_string())
                    .status();
            }
            Launch::Image(_) => {
                // The only process running /paver with this metrics port.
                if let Some(pattern) = self.image_process() {
                    let _ = Command::new("pkill")
                        .arg(format!("-{signal}"))
                        .arg("-f")
                        .arg(pattern)
                        .status();
                }
            }
        }
    }

    /// Waits up to `within` for the process to exit; its exit status, or
    /// None if it still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the operator runs from the image.
    pub fn runs_from_image(&self) -> bool {
        matches!(self.launch, Launch::Image(_))
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

    /// Waits until /readyz says the process leads (or runs without leader
    /// election) and has listed what it reconciles against. (A standby is
    /// ready too, saying so: that is not enough here.)
    pub async fn wait_ready(&self) -> Result<()> {
        let url = self.readyz();
        wait_for(
            "the operator to lead, caches synced",
            Duration::from_secs(60),
            || {
                let url = url.clone();
                async move {
                    Ok(http_get(&url)
                        .await
                        .is_ok_and(|body| body.starts_with("ready: leading"))
                        .then_some(()))
                }
            },
        )
        .await
    }

    /// The /readyz URL.
    pub fn readyz(&self) -> String {
        self.metrics.replace("/metrics", "/readyz")
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
            .fold(0.0, |sum, v| sum + v))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // A clean stop (SIGTERM) releases the lease.
        self.signal("TERM");
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            self.signal("KILL");
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Plain HTTP GET on loopback (the metrics endpoint) with curl.
pub async fn http_get(url: &str) -> Result<String> {
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
/// Waits for each of `names` in `ns` to be Rendered, then checks that the
/// output repository holds exactly one commit for each (by its trailer).
pub async fn rendered_and_committed_once(
    client: &Client,
    remote: &Remote,
    ns: &str,
    names: &[String],
) -> Result<()> {
    for n in names {
        wait_phase(client, ns, n, Phase::Rendered).await?;
    }
    let clone = remote.clone_repo()?;
    for n in names {
        let commits = clone.commits_for(&format!("{ns}/{n}"))?;
        if commits.len() != 1 {
            bail!("{ns}/{n} has {} commits, want exactly 1", commits.len());
        }
    }
    Ok(())
}

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
        let image = operator_image();
        let mut args = vec![
            "operator".to_string(),
            "--repo-url".into(),
            cluster.var("GIT_URL"),
        ];
        if image.is_none() {
            args.extend([
                "--git-username-file".into(),
                user_file.display().to_string(),
                "--git-token-file".into(),
                cluster.var("GIT_TOKEN_FILE"),
                "--workdir".into(),
                dir.join("repo").display().to_string(),
            ]);
        }
        args.extend([
            "--metrics-addr".into(),
            format!("127.0.0.1:{port}"),
            "--lease-namespace".into(),
            "paver-system".into(),
            "--resync".into(),
            resync.into(),
            // Route census and rollout ticks: every 2 s, not 10.
            "--route-status-interval".into(),
            "2s".into(),
        ]);
        args.extend(extra.iter().cloned());
        let launch = match image {
            Some(image) => Launch::Image(Pod::new(cluster, &image, &dir, port)?),
            None => Launch::Process {
                kubeconfig: cluster.var("PAVER_E2E_OPERATOR_KUBECONFIG"),
            },
        };
        let mut op = Self {
            child: None,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log: cluster.state.join("logs/paver-operator.log"),
            args,
            launch,
        };
        op.spawn()?;
        Ok(op)
    }
}
