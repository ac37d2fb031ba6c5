//! The Helm chart `charts/paver` (issue 26): `helm lint` passes with the
//! default values and with every toggle on; `manifests/` is what the chart
//! renders (`make manifests`, `make pack`); and the chart with every toggle
//! on (ServiceMonitor, PrometheusRule, Grafana dashboard, Argo CD wiring,
//! two replicas and their PodDisruptionBudget) passes a server-side dry-run
//! on this suite's real API server, prometheus-operator's CRDs installed.
//!
//! helm is the one `e2e/bin.sh build` builds from its Go module; under CI a
//! missing helm fails the scenario, elsewhere it skips.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    Env, argocd,
    support::{Cluster, prereq, repo_root, run},
};

/// The release and namespace manifests/ is rendered with (scripts/manifests.sh).
const RELEASE: &str = "paver";
const NAMESPACE: &str = "paver-system";

/// Every toggle on, and the SSH credentials variant (files in charts/paver/ci/).
const ALL_ON: &str = "ci/all-on-values.yaml";
const SSH: &str = "ci/ssh-values.yaml";

/// manifests/ files the chart renders, from `helm template` (the rest:
/// `make crds`, `make pack`, the hand-written kustomizations).
const RENDERED: [&str; 7] = [
    "namespace.yaml",
    "rbac.yaml",
    "user-roles.yaml",
    "admission.yaml",
    "deployment.yaml",
    "argocd/rbac.yaml",
    "argocd/root-application.yaml",
];

/// What one `e2e/bin.sh paths` line assigns.
fn bin_paths() -> Result<BTreeMap<String, String>> {
    let out = run(Command::new(repo_root().join("e2e/bin.sh")).arg("paths"))?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The cached helm, or why the scenario cannot run (a failure under CI).
fn helm() -> Result<PathBuf> {
    let paths = bin_paths()?;
    let helm = PathBuf::from(
        paths
            .get("HELM_BIN_DIR")
            .context("bin.sh paths has no HELM_BIN_DIR")?,
    )
    .join("helm");
    if helm.is_file() {
        return Ok(helm);
    }
    let msg = prereq::report(
        "e2e chart",
        &format!("missing {}", helm.display()),
        "e2e/bin.sh build",
    );
    if prereq::required() {
        bail!("{msg}");
    }
    Err(argocd::Skipped(msg).into())
}

fn chart() -> PathBuf {
    repo_root().join("charts/paver")
}

/// `helm ARGS...` from the repository root; its stdout.
fn helm_run(helm: &Path, args: &[&str]) -> Result<String> {
    run(Command::new(helm).args(args).current_dir(repo_root()))
}

/// `helm template` of the chart as release `paver` in `paver-system`, with
/// `extra` arguments.
fn template(helm: &Path, extra: &[&str]) -> Result<String> {
    let chart = chart().display().to_string();
    let mut args = vec!["template", RELEASE, &chart, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    helm_run(helm, &args)
}

/// The documents of a YAML stream, as JSON values (comments, order of keys
/// and quoting left out); empty documents dropped.
fn documents(text: &str) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = serde_json::Value::deserialize(doc).context("invalid YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The first line where `have` and `want` differ, for the message.
fn first_difference(have: &str, want: &str) -> String {
    let (mut h, mut w) = (have.lines(), want.lines());
    for n in 1.. {
        match (h.next(), w.next()) {
            (None, None) => break,
            (a, b) if a == b => {}
            (a, b) => {
                return format!(
                    "line {n}: manifests/ has {:?}, the chart renders {:?}",
                    a.unwrap_or("<end>"),
                    b.unwrap_or("<end>")
                );
            }
        }
    }
    "same lines, different line ends".into()
}

pub async fn helm_chart_lints_renders_manifests_and_passes_server_dry_run(env: &mut Env) -> Result<()> {
    let c = &env.cluster;
    let helm = helm()?;
    let chart_dir = chart().display().to_string();

    // (a) helm lint: defaults, every toggle on, SSH credentials.
    for values in [None, Some(ALL_ON), Some(SSH)] {
        let mut args = vec!["lint", "--strict", &chart_dir];
        let file = values.map(|v| chart().join(v).display().to_string());
        if let Some(f) = &file {
            args.extend(["--values", f.as_str()]);
        }
        helm_run(&helm, &args)
            .with_context(|| format!("helm lint with {}", values.unwrap_or("the default values")))?;
    }

    // (b) manifests/ is what the chart renders: the same script as
    // `make manifests`, into a scratch directory.
    let scratch = tempfile::tempdir()?;
    run(Command::new(repo_root().join("scripts/manifests.sh"))
        .arg(scratch.path())
        .env("HELM", &helm))
    .context("scripts/manifests.sh")?;
    let mut stale = Vec::new();
    for file in RENDERED {
        let have = std::fs::read_to_string(repo_root().join("manifests").join(file)).unwrap_or_default();
        let want = std::fs::read_to_string(scratch.path().join(file))?;
        if have != want {
            stale.push(format!("manifests/{file} ({})", first_difference(&have, &want)));
        }
    }
    ensure!(
        stale.is_empty(),
        "manifests/ is not what charts/paver renders; run `make manifests`:\n  {}",
        stale.join("\n  ")
    );
    // The packed routes and bundles: the chart's copies are `make pack`'s
    // (operator/tests/cli.rs); here its templates print them whole.
    for (source, file) in [
        ("templates/routes.yaml", "routes.yaml"),
        ("templates/policy-bundles.yaml", "policy-bundles.yaml"),
    ] {
        let rendered = documents(&template(&helm, &["--show-only", source])?)?;
        let packed = documents(&std::fs::read_to_string(
            repo_root().join("manifests").join(file),
        )?)?;
        ensure!(
            !packed.is_empty() && rendered == packed,
            "charts/paver {source} renders {} documents, manifests/{file} holds {}, not the same: run `make pack`",
            rendered.len(),
            packed.len()
        );
    }

    // (c) Every toggle on, applied with a server-side dry-run: the API
    // server checks each object against its schema (prometheus-operator's
    // and Argo CD's CRDs included) and the admission chain.
    let paths = bin_paths()?;
    let crds = PathBuf::from(
        paths
            .get("PROMETHEUS_CRDS_DIR")
            .context("bin.sh paths has no PROMETHEUS_CRDS_DIR")?,
    );
    for file in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        let path = crds.join(file);
        ensure!(path.is_file(), "missing {} (e2e/bin.sh build)", path.display());
        c.kubectl_retry(&["apply", "--server-side", "-f", &path.display().to_string()], 5)?;
    }
    c.wait_established()?;
    let values = chart().join(ALL_ON).display().to_string();
    let all_on = template(&helm, &["--include-crds", "--values", &values])?;
    let out = dry_run(c, &all_on)?;
    for want in [
        "customresourcedefinition.apiextensions.k8s.io/servicerequests.paver.dev",
        "namespace/paver-system",
        "deployment.apps/paver-operator",
        "poddisruptionbudget.policy/paver-operator",
        "service/paver-operator-metrics",
        "networkpolicy.networking.k8s.io/paver-operator",
        "servicemonitor.monitoring.coreos.com/paver-operator",
        "prometheusrule.monitoring.coreos.com/paver-operator",
        "configmap/paver-grafana-dashboard",
        "role.rbac.authorization.k8s.io/paver-operator",
        "application.argoproj.io/paver-services",
        "validatingadmissionpolicy.admissionregistration.k8s.io/paver-request-team",
        "mutatingadmissionpolicy.admissionregistration.k8s.io/paver-request-finalizer",
        "paveroute.paver.dev/pci-payment-service",
        "policybundle.paver.dev/security",
    ] {
        ensure!(
            out.lines()
                .any(|l| l.starts_with(want) && l.contains("(server dry run)")),
            "the server-side dry-run did not apply {want}:\n{out}"
        );
    }
    // A dry run writes nothing.
    let pdb = c.kubectl(&[
        "get",
        "poddisruptionbudget",
        "paver-operator",
        "-n",
        NAMESPACE,
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    ensure!(pdb.trim().is_empty(), "the dry-run created {pdb}");
    let docs = documents(&all_on)?;
    ensure!(
        docs.iter()
            .any(|d| d["kind"] == "Deployment" && d["spec"]["replicas"] == 2),
        "replicas=2 did not reach the Deployment"
    );
    Ok(())
}

/// `kubectl apply --server-side --dry-run=server` of `yaml`, as the admin
/// (conflicts forced: the install's objects are the e2e's, applied by
/// another field manager).
fn dry_run(c: &Cluster, yaml: &str) -> Result<String> {
    c.kubectl_as(
        &c.var("PAVER_E2E_ADMIN_KUBECONFIG"),
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "--field-manager=helm-chart-e2e",
            "-f",
            "-",
        ],
        Some(yaml),
    )
}
