//! The loopback test-bed the end-to-end suite (`e2e/tests`) and the
//! benchmarks (`bench/`) share: a real control plane and Git server from
//! `e2e/cluster.sh` (Argo CD from `e2e/argocd.sh`), read from the env file
//! `cluster.sh up` writes, and driven with kubectl and a kube client as the
//! admin. Stopped (`cluster.sh down`) when dropped.

use std::{
    collections::BTreeMap,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use kube::{
    Client,
    config::{KubeConfigOptions, Kubeconfig},
};

/// The repository root (the e2e scripts, manifests and examples live there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cmd`; its stdout, or an error with its status and output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("failed to start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18080)
}

/// A running control plane and Git server; stopped on drop.
pub struct Cluster {
    /// `PAVER_E2E_STATE`: pids, logs, kubeconfigs, the env file.
    pub state: PathBuf,
    /// The env file's variables (`PATH` with `$PATH` expanded).
    pub env: BTreeMap<String, String>,
    /// Keep the state directory (logs) after stopping, for a failed run.
    pub keep_state: bool,
}

impl Cluster {
    /// Stops a cluster left in `state`, starts a new one (with the
    /// controller-manager, whatever the caller's environment says) and reads
    /// its env file.
    pub fn up(state: PathBuf) -> Result<Self> {
        let script = repo_root().join("e2e/cluster.sh");
        let _ = Command::new(&script)
            .arg("down")
            .env("PAVER_E2E_STATE", &state)
            .output();
        run(Command::new(&script)
            .arg("up")
            .env("PAVER_E2E_STATE", &state)
            .env_remove("PAVER_E2E_NO_KCM")
            .stdin(Stdio::null()))
        .context("e2e/cluster.sh up failed")?;
        let text = std::fs::read_to_string(state.join("env")).context("no env file after cluster.sh up")?;
        let path = std::env::var("PATH").unwrap_or_default();
        let env = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.replace("$PATH", &path)))
            .collect();
        Ok(Self {
            state,
            env,
            keep_state: false,
        })
    }

    /// A variable of the env file, empty when it has none.
    pub fn var(&self, name: &str) -> String {
        self.env.get(name).cloned().unwrap_or_default()
    }

    /// A variable of the env file, or an error naming it.
    pub fn try_var(&self, name: &str) -> Result<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("{name} is not in the cluster's env file"))
    }

    /// `e2e/cluster.sh ARG` on this cluster (e.g. `git-stop`, `git-start`).
    pub fn script(&self, arg: &str) -> Result<String> {
        run(Command::new(repo_root().join("e2e/cluster.sh"))
            .arg(arg)
            .env("PAVER_E2E_STATE", &self.state))
    }

    pub fn git_stop(&self) -> Result<()> {
        self.script("git-stop").map(drop)
    }

    pub fn git_start(&self) -> Result<()> {
        self.script("git-start").map(drop)
    }

    /// `e2e/argocd.sh up` on this cluster (stopped by `cluster.sh down`).
    pub fn argocd_up(&self) -> Result<()> {
        run(Command::new(repo_root().join("e2e/argocd.sh"))
            .arg("up")
            .env("PAVER_E2E_STATE", &self.state))
        .map(drop)
    }

    /// The cached kubectl (first on the env file's `PATH`).
    fn kubectl_bin(&self) -> PathBuf {
        let dir = self
            .var("PATH")
            .split(':')
            .next()
            .map(PathBuf::from)
            .unwrap_or_default();
        dir.join("kubectl")
    }

    /// kubectl as `kubeconfig` (admin or operator), with `stdin` if given.
    pub fn kubectl_as(&self, kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut cmd = Command::new(self.kubectl_bin());
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .current_dir(repo_root());
        let Some(input) = stdin else {
            return run(cmd.stdin(Stdio::null()));
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no stdin"))?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// kubectl as the cluster admin.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_as(&self.var("PAVER_E2E_ADMIN_KUBECONFIG"), args, None)
    }

    /// kubectl as the admin, retried every 2 s (CRDs becoming Established,
    /// admission policies taking effect, ...).
    pub fn kubectl_retry(&self, args: &[&str], attempts: usize) -> Result<String> {
        let mut last = None;
        for _ in 0..attempts {
            match self.kubectl(args) {
                Ok(out) => return Ok(out),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no attempts")))
    }

    /// `kubectl apply --server-side -f -` of a YAML document, as the admin.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_as(
            &self.var("PAVER_E2E_ADMIN_KUBECONFIG"),
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(yaml),
        )
    }

    /// Installs Paver as its README says: the CRDs, wait until they are
    /// Established, then `manifests/` (RBAC, admission policies, the
    /// Deployment, the packed routes and bundles). Returns what the last
    /// apply printed.
    pub fn install_paver(&self) -> Result<String> {
        let manifests = repo_root().join("manifests");
        let crds = manifests.join("crds.yaml").display().to_string();
        self.kubectl_retry(&["apply", "--server-side", "-f", &crds], 5)?;
        self.wait_established()?;
        self.kubectl_retry(
            &["apply", "--server-side", "-k", &manifests.display().to_string()],
            10,
        )
    }

    /// Every CRD Established (`kubectl wait` fails on a CRD the API server
    /// has not listed yet, hence the retries).
    pub fn wait_established(&self) -> Result<()> {
        self.kubectl_retry(
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=30s",
            ],
            30,
        )
        .map(drop)
    }

    /// Namespace `ns`, created if absent and bound to `team` (the
    /// `paver.dev/team` label admission and the operator check requests
    /// against).
    pub fn team_namespace(&self, ns: &str, team: &str) -> Result<()> {
        match self.kubectl(&["create", "namespace", ns]) {
            Ok(_) => {}
            Err(e) if format!("{e:#}").contains("AlreadyExists") => {}
            Err(e) => return Err(e),
        }
        self.kubectl(&[
            "label",
            "--overwrite",
            "namespace",
            ns,
            &format!("paver.dev/team={team}"),
        ])
        .map(drop)
    }

    /// A client as the admin (reads may wait up to 60 s: list calls at
    /// 10,000 requests).
    pub async fn admin_client(&self) -> Result<Client> {
        let kc = Kubeconfig::read_from(self.try_var("PAVER_E2E_ADMIN_KUBECONFIG")?)?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        cfg.read_timeout = Some(Duration::from_secs(60));
        Ok(Client::try_from(cfg)?)
    }

    /// The admin's bearer token (for the API server's /metrics).
    pub fn admin_token(&self) -> Result<String> {
        let text = std::fs::read_to_string(self.try_var("PAVER_E2E_ADMIN_KUBECONFIG")?)?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("token:").map(|t| t.trim().to_string()))
            .context("no token in the admin kubeconfig")
    }

    /// The output repository's URL with the Git credentials in it (for the
    /// test's own clones; the operator reads its token from a file).
    pub fn git_url_with_credentials(&self) -> Result<String> {
        let token = std::fs::read_to_string(self.try_var("GIT_TOKEN_FILE")?)?;
        Ok(self.try_var("GIT_URL")?.replacen(
            "http://",
            &format!("http://{}:{}@", self.try_var("GIT_USER")?, token.trim()),
            1,
        ))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut cmd = Command::new(repo_root().join("e2e/cluster.sh"));
        cmd.arg("down").env("PAVER_E2E_STATE", &self.state);
        if self.keep_state {
            cmd.env("PAVER_E2E_KEEP_STATE", "1");
            eprintln!(
                "testbed: kept the cluster's state and logs in {}",
                self.state.display()
            );
        }
        let _ = cmd.output();
    }
}
