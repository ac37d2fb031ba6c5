//! End-to-end: Paver's operator against a real kube-apiserver (RBAC on, the
//! operator under the ServiceAccount identity and roles from `manifests/`)
//! and a real Git server over smart HTTP, both started by `e2e/cluster.sh`.
//!
//! One control plane serves every scenario; each scenario works in its own
//! namespace. Scenarios run in order and each reports ok/FAIL; the binary
//! fails when any did. When a binary or Debian package it needs is missing
//! it fails under CI (`CI` set), naming it and the command that provides it
//! (`make test` builds the binaries first); elsewhere it skips with that
//! message.
//!
//! `cargo test -p paver --test e2e` (or `make e2e`); `PAVER_E2E_ONLY=a,b`
//! runs the scenarios whose names contain `a` or `b` (install always runs).

mod argocd;
mod chart;
mod hostile;
mod observability;
mod pod;
mod support;

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use argocd::{
    argocd_and_paver_recover_from_a_git_outage, argocd_prunes_a_deleted_request,
    argocd_reports_a_workload_that_cannot_become_healthy, argocd_syncs_every_other_shipped_route,
    argocd_syncs_requests_to_available_deployments, route_versions_roll_out_in_health_gated_steps,
};
use chart::helm_chart_lints_renders_manifests_and_passes_server_dry_run;
use hostile::hostile_input_is_refused_by_the_operator;
use kube::{Api, Client, ResourceExt, api::DeleteParams};
use observability::dashboard_and_alerts_work_against_prometheus;
use paver_crds::{PaveRoute, Phase, PolicyBundle, PolicyBundleStatus, Scorecard, ServiceRequest};
use pod::{control_plane_restarts_under_load, operator_pod_probes_failover_and_sigterm};
use support::{Cluster, ClusterExt as _, Operator, example, repo_root, wait_for, wait_phase};

/// Resync period the operator runs with here (drift is restored within it).
const RESYNC: &str = "6s";

struct Env {
    cluster: Cluster,
    operator: Operator,
    client: Client,
    /// The flags the operator runs with beyond the defaults (Argo CD's).
    operator_args: Vec<String>,
}

type Scenario =
    for<'a> fn(&'a mut Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + 'a>>;

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), (|env| Box::pin($name(env))) as Scenario)),*]
    };
}

fn main() -> ExitCode {
    let missing = support::missing_prerequisites();
    if !missing.is_empty() {
        for (what, fix) in &missing {
            eprintln!("{}", support::prereq::report("e2e", what, fix));
        }
        return if support::prereq::required() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("e2e: failed to start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run_all())
}

async fn run_all() -> ExitCode {
    let state = repo_root().join(format!("target/e2e-{}", std::process::id()));
    let started = Instant::now();
    let mut cluster = match Cluster::up(state) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("e2e: FAILED to start the control plane: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("e2e: control plane up in {:.1}s", started.elapsed().as_secs_f64());
    if let Err(e) = install(&cluster) {
        eprintln!("FAIL install\n  {e:#}");
        cluster.keep_state = true;
        return ExitCode::FAILURE;
    }
    eprintln!("ok   install");
    let operator_args = argocd::start(&cluster);
    let env = async {
        let client = cluster.admin_client().await?;
        let operator = if operator_args.is_empty() {
            Operator::start(&cluster, RESYNC)?
        } else {
            Operator::start_with(&cluster, RESYNC, &operator_args)?
        };
        anyhow::Ok((client, operator))
    }
    .await;
    let (client, operator) = match env {
        Ok(v) => v,
        Err(e) => {
            eprintln!("FAIL start operator\n  {e:#}");
            cluster.keep_state = true;
            return ExitCode::FAILURE;
        }
    };
    let mut env = Env {
        cluster,
        operator,
        client,
        operator_args,
    };
    let only = std::env::var("PAVER_E2E_ONLY").unwrap_or_default();
    let list: Vec<(&str, Scenario)> = scenarios![
        operator_rbac_is_least_privilege,
        helm_chart_lints_renders_manifests_and_passes_server_dry_run,
        payment_gateway_waits_for_approval_then_commits,
        denied_request_is_rejected_and_not_committed,
        bundle_rollout_warn_enforce_and_broken_update,
        route_version_bump_rerenders,
        last_good_route_and_bundle_survive_a_restart,
        hand_edit_is_restored_on_resync,
        deleting_a_request_removes_its_directory_and_scorecard,
        git_server_outage_ends_in_a_pushed_commit,
        dashboard_and_alerts_work_against_prometheus,
        hostile_input_is_refused_by_the_operator,
        argocd_syncs_requests_to_available_deployments,
        argocd_syncs_every_other_shipped_route,
        argocd_reports_a_workload_that_cannot_become_healthy,
        argocd_prunes_a_deleted_request,
        argocd_and_paver_recover_from_a_git_outage,
        route_versions_roll_out_in_health_gated_steps,
        operator_pod_probes_failover_and_sigterm,
        operator_killed_mid_flight_loses_and_duplicates_nothing,
        nothing_changed_means_nothing_written,
        // After the at-rest check: Argo CD reports on the workloads for
        // a while after the API server and etcd restart (a change).
        control_plane_restarts_under_load,
        // Last: its 30 requests (16 rendered) would add to the Argo CD and
        // nothing-written scenarios' load.
        cli_and_operator_agree_on_30_requests,
    ];
    let (mut passed, mut failed, mut skipped) = (0, Vec::new(), 0);
    for (name, scenario) in list {
        if !only.is_empty() && !only.split(',').any(|o| name.contains(o)) {
            continue;
        }
        let t0 = Instant::now();
        match scenario(&mut env).await {
            Ok(()) => {
                passed += 1;
                eprintln!("ok   {name} ({:.1}s)", t0.elapsed().as_secs_f64());
            }
            Err(e) if e.is::<argocd::Skipped>() => {
                skipped += 1;
                eprintln!("SKIP {name}: {e}");
            }
            Err(e) => {
                eprintln!("FAIL {name} ({:.1}s)\n  {e:#}", t0.elapsed().as_secs_f64());
                failed.push(name);
            }
        }
    }
    eprintln!(
        "e2e: {passed} passed, {} failed{} in {:.0}s{}",
        failed.len(),
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join(", "))
        }
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("e2e: operator log: {}", env.operator.log.display());
        env.cluster.keep_state = true;
        ExitCode::FAILURE
    }
}

/// CRDs, then the install kustomization (RBAC, admission policy, Deployment,
/// packed routes and bundles), then Argo CD's CRDs; `kubectl explain` shows
/// the field descriptions.
fn install(c: &Cluster) -> Result<()> {
    let root = repo_root();
    let out = c.install_paver()?;
    ensure!(
        out.contains("paveroute.paver.dev/pci-payment-service"),
        "routes not applied:\n{out}"
    );
    ensure!(
        out.contains("policybundle.paver.dev/security"),
        "bundles not applied:\n{out}"
    );
    let argocd =
        std::path::PathBuf::from(c.var("PAVER_E2E_CACHE")).join("argocd-crds-v3.6.1/application-crd.yaml");
    let argocd = if argocd.exists() {
        argocd
    } else {
        // The cache path is printed by bin.sh; fall back to its default layout.
        let paths = std::process::Command::new(root.join("e2e/bin.sh"))
            .arg("paths")
            .output()?;
        let text = String::from_utf8_lossy(&paths.stdout).into_owned();
        let dir = text
            .lines()
            .find_map(|l| l.strip_prefix("ARGOCD_CRDS_DIR="))
            .context("bin.sh paths has no ARGOCD_CRDS_DIR")?
            .to_string();
        std::path::PathBuf::from(dir).join("application-crd.yaml")
    };
    c.kubectl(&["apply", "--server-side", "-f", &argocd.display().to_string()])?;
    let projects = argocd.with_file_name("appproject-crd.yaml");
    c.kubectl(&["apply", "--server-side", "-f", &projects.display().to_string()])?;
    c.wait_established()?;
    c.kubectl(&["create", "namespace", "argocd"])?;
    // A person who approves (cluster.sh's paver-e2e-approver): not the
    // admin who creates the requests, who may not approve their own.
    c.kubectl(&[
        "create",
        "clusterrolebinding",
        "e2e-approver",
        "--clusterrole=paver-approver",
        "--user=paver-e2e-approver",
    ])?;
    // The Argo CD wiring's RBAC (the app of apps itself is applied by the
    // Argo CD scenarios, pointed at the e2e Git server).
    c.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &root.join("manifests/argocd/rbac.yaml").display().to_string(),
    ])?;
    let explain = c.kubectl(&["explain", "servicerequest.spec"])?;
    for field in [
        "route",
        "team",
        "owner",
        "costCenter",
        "environment",
        "parameters",
    ] {
        ensure!(
            explain.lines().any(|l| l.trim_start().starts_with(field)),
            "kubectl explain servicerequest.spec lacks {field}:\n{explain}"
        );
    }
    ensure!(
        !explain.contains("<empty>"),
        "a field of servicerequest.spec has no description:\n{explain}"
    );
    Ok(())
}

/// A namespace for a scenario, bound to the team of the same name (the
/// requests `example` makes claim it).
fn namespace(c: &Cluster, ns: &str) -> Result<()> {
    c.team_namespace(ns, ns)
}

/// The operator runs as the ServiceAccount bound by manifests/ (every other
/// scenario proves those roles are enough); here: they are not more.
async fn operator_rbac_is_least_privilege(env: &mut Env) -> Result<()> {
    let c = &env.cluster;
    let kc = c.var("PAVER_E2E_OPERATOR_KUBECONFIG");
    let can = |args: &[&str]| -> Result<bool> {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        // `can-i` exits 1 for "no".
        Ok(c.kubectl_as(&kc, &all, None).is_ok())
    };
    for allowed in [
        ["watch", "namespaces"],
        ["patch", "servicerequests.paver.dev/status"],
        ["watch", "approvals.paver.dev"],
        ["patch", "scorecards.paver.dev"],
        ["create", "events.events.k8s.io"],
        ["watch", "applications.argoproj.io"],
        ["create", "paverouterevisions.paver.dev"],
        ["delete", "policybundlerevisions.paver.dev"],
        // To remove a carried-out paver.dev/rollout annotation.
        ["patch", "paveroutes.paver.dev"],
    ] {
        ensure!(
            can(&[allowed[0], allowed[1], "-A"])?,
            "operator cannot {allowed:?}"
        );
    }
    for denied in [
        ["get", "secrets"],
        ["create", "servicerequests.paver.dev"],
        ["update", "servicerequests.paver.dev"],
        ["delete", "servicerequests.paver.dev"],
        ["create", "approvals.paver.dev"],
        ["update", "paveroutes.paver.dev"],
        ["patch", "policybundles.paver.dev"],
        ["patch", "applications.argoproj.io"],
        ["create", "deployments.apps"],
        ["list", "pods"],
    ] {
        ensure!(
            !can(&[denied[0], denied[1], "-A"])?,
            "operator may {denied:?}: more than it needs"
        );
    }
    ensure!(
        !can(&["delete", "customresourcedefinitions.apiextensions.k8s.io"])?,
        "operator may delete CRDs"
    );
    // Applications are patched in Argo CD's namespace only (a renamed
    // Application's finalizer, manifests/argocd/rbac.yaml).
    ensure!(
        can(&["patch", "applications.argoproj.io", "-n", "argocd"])?,
        "operator cannot patch Applications in argocd"
    );
    ensure!(
        !can(&["patch", "applications.argoproj.io", "-n", "default"])?,
        "operator may patch Applications outside argocd"
    );
    ensure!(
        can(&["create", "appprojects.argoproj.io", "-n", "argocd"])?,
        "operator cannot create AppProjects in argocd"
    );
    ensure!(
        !can(&["create", "appprojects.argoproj.io", "-n", "default"])?,
        "operator may create AppProjects outside argocd"
    );
    Ok(())
}

/// Creates the Approval `yaml` as paver-e2e-approver (whose role may
/// create Approvals, not patch them: a decision is never edited).
pub fn approve(c: &Cluster, yaml: &str) -> Result<String> {
    c.kubectl_as(
        &c.var("PAVER_E2E_APPROVER_KUBECONFIG"),
        &["create", "-f", "-"],
        Some(yaml),
    )
}

fn approval(ns: &str, name: &str, request: &str, generation: i64, approver: &str, decision: &str) -> String {
    format!(
        "apiVersion: paver.dev/v1alpha1\nkind: Approval\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
         spec:\n  request: {request}\n  generation: {generation}\n  approver: {approver}\n  \
         reason: e2e change ticket\n  decision: {decision}\n"
    )
}

/// The payment gateway: AwaitingApproval (nothing committed), an Approval
/// for generation 1 commits it with provenance trailers, a Scorecard with
/// real columns; a spec change needs a new Approval (generation 1's does not
/// carry over).
async fn payment_gateway_waits_for_approval_then_commits(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "payments";
    namespace(c, ns)?;
    c.apply(&std::fs::read_to_string(
        repo_root().join("examples/payment-gateway.yaml"),
    )?)?;
    let sr = wait_phase(client, ns, "payment-gateway", Phase::AwaitingApproval).await?;
    let reasons = sr.status.clone().unwrap_or_default().approval_reasons;
    ensure!(!reasons.is_empty(), "AwaitingApproval without a reason");
    let remote = c.remote();
    ensure!(
        remote
            .clone_repo()?
            .commits_for("payments/payment-gateway")?
            .is_empty(),
        "a request awaiting approval was committed"
    );

    // Someone approving in another's name is refused by the admission policy.
    let forged = approve(
        c,
        &approval(ns, "forged", "payment-gateway", 1, "someone-else", "approve"),
    );
    ensure!(
        forged
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("spec.approver must be")),
        "a forged approver was admitted: {forged:?}"
    );
    // The requester (admission recorded the admin who created it) may not
    // approve their own request.
    let own = c.apply(&approval(
        ns,
        "cab-own",
        "payment-gateway",
        1,
        "paver-e2e-admin",
        "approve",
    ));
    ensure!(
        own.as_ref()
            .is_err_and(|e| format!("{e:#}").contains("an approver may not approve their own request")),
        "the requester approved their own request: {own:?}"
    );
    let requester = c.kubectl(&[
        "get",
        "servicerequest",
        "payment-gateway",
        "-n",
        ns,
        "-o",
        "jsonpath={.metadata.annotations.paver\\.dev/requested-by}",
    ])?;
    ensure!(
        requester.trim() == "paver-e2e-admin",
        "requested-by {requester:?}"
    );
    approve(
        c,
        &approval(ns, "cab-1", "payment-gateway", 1, "paver-e2e-approver", "approve"),
    )?;
    let sr = wait_phase(client, ns, "payment-gateway", Phase::Rendered).await?;
    let render = sr
        .status
        .clone()
        .unwrap_or_default()
        .render
        .context("no render status")?;
    let clone = remote.clone_repo()?;
    let commits = clone.commits_for("payments/payment-gateway")?;
    ensure!(commits.len() == 1, "expected one commit, found {}", commits.len());
    let (sha, msg) = &commits[0];
    ensure!(
        *sha == render.revision,
        "status revision {} is not the commit {sha}",
        render.revision
    );
    for trailer in [
        "Paver-Request: payments/payment-gateway".to_string(),
        format!("Paver-Request-UID: {}", sr.uid().unwrap_or_default()),
        "Paver-Generation: 1".into(),
        "Paver-Route: pci-payment-service@".into(),
        "Paver-Bundles: ".into(),
        "Paver-Requested-By: paver-e2e-admin".into(),
        "Paver-Approved-By: paver-e2e-approver (Approval cab-1, generation 1)".into(),
        "Paver-Decision: approved (".into(),
    ] {
        ensure!(msg.contains(&trailer), "commit lacks trailer {trailer}:\n{msg}");
    }
    let app = clone.path(&format!("{}/argocd-application.yaml", render.path));
    ensure!(
        app.exists(),
        "no Argo CD Application rendered at {}",
        app.display()
    );
    // The API server accepts the rendered Application (Argo CD's CRD schema).
    c.kubectl(&["apply", "--dry-run=server", "-f", &app.display().to_string()])?;
    let deployment = clone.path(&format!("{}/manifests/deployment.yaml", render.path));
    c.kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        ns,
        "-f",
        &deployment.display().to_string(),
    ])?;

    let sc_api: Api<Scorecard> = Api::namespaced(client.clone(), ns);
    wait_for("the payment-gateway Scorecard", Duration::from_secs(30), || {
        let sc_api = sc_api.clone();
        async move {
            Ok(sc_api
                .get_opt("payment-gateway")
                .await?
                .filter(|s| s.status.is_some()))
        }
    })
    .await?;
    let table = c.kubectl(&["get", "scorecards", "-n", ns])?;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| row.get(i).copied())
    };
    ensure!(col("TEAM") == Some("payments"), "TEAM column:\n{table}");
    ensure!(
        col("ROUTE") == Some("pci-payment-service"),
        "ROUTE column:\n{table}"
    );
    let score: u32 = col("SCORE")
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("SCORE:\n{table}"))?;
    ensure!(score > 0 && score <= 100, "SCORE {score}:\n{table}");
    ensure!(
        matches!(col("LEVEL"), Some("bronze" | "silver" | "gold" | "none")),
        "LEVEL column:\n{table}"
    );

    // A Scorecard deleted by hand comes back (its request is woken by the deletion).
    let before = sc_api.get("payment-gateway").await?.metadata.uid;
    sc_api.delete("payment-gateway", &Default::default()).await?;
    wait_for(
        "the deleted Scorecard to be written again",
        Duration::from_secs(30),
        || {
            let (sc_api, before) = (sc_api.clone(), before.clone());
            async move {
                Ok(sc_api
                    .get_opt("payment-gateway")
                    .await?
                    .filter(|s| s.metadata.uid != before && s.status.is_some()))
            }
        },
    )
    .await?;

    // A new generation is not covered by generation 1's Approval.
    c.kubectl(&[
        "patch",
        "servicerequest",
        "payment-gateway",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"owner":"payments-platform@example.com"}}"#,
    ])?;
    let sr = wait_phase(client, ns, "payment-gateway", Phase::AwaitingApproval).await?;
    ensure!(
        sr.metadata.generation == Some(2),
        "generation {:?}",
        sr.metadata.generation
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits = remote.clone_repo()?.commits_for("payments/payment-gateway")?;
    ensure!(
        commits.len() == 1,
        "generation 2 was committed without its own approval"
    );
    approve(
        c,
        &approval(ns, "cab-2", "payment-gateway", 2, "paver-e2e-approver", "approve"),
    )?;
    let sr = wait_phase(client, ns, "payment-gateway", Phase::Rendered).await?;
    let commits = remote.clone_repo()?.commits_for("payments/payment-gateway")?;
    let last = commits.last().context("no commits")?;
    ensure!(
        commits.len() == 2 && last.1.contains("Paver-Generation: 2"),
        "{commits:?}"
    );
    ensure!(
        sr.status.and_then(|s| s.render).map(|r| r.revision) == Some(last.0.clone()),
        "status revision is not the generation-2 commit"
    );
    Ok(())
}

/// A request breaking a deny rule is Rejected with the bundle, rule id and
/// message; nothing is committed; a Warning Event says why.
async fn denied_request_is_rejected_and_not_committed(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-denied";
    namespace(c, ns)?;
    c.apply(&example("orders-api.yaml", ns, "no-breaker", |v| {
        v["spec"]["parameters"]["networking"]["dependencies"][0]["circuitBreaker"] = false.into();
    })?)?;
    let sr = wait_phase(client, ns, "no-breaker", Phase::Rejected).await?;
    let status = sr.status.unwrap_or_default();
    let v = status
        .violations
        .iter()
        .find(|v| v.rule == "dependency-resilience")
        .with_context(|| format!("no dependency-resilience violation: {:?}", status.violations))?;
    ensure!(
        v.bundle == "reliability" && v.message.contains("circuitBreaker"),
        "{v:?}"
    );
    ensure!(
        c.remote()
            .clone_repo()?
            .commits_for(&format!("{ns}/no-breaker"))?
            .is_empty(),
        "a rejected request was committed"
    );
    let events = c.kubectl(&["get", "events", "-n", ns, "-o", "wide"])?;
    ensure!(
        events.contains("Rejected") && events.contains("dependency-resilience"),
        "no Rejected event naming the rule:\n{events}"
    );
    teams_are_bound_to_namespaces(env).await
}

/// A request claims only its namespace's team: admission refuses another
/// team, and the operator holds a request whose namespace loses its
/// binding (and lets it go again once it is back).
async fn teams_are_bound_to_namespaces(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-tenancy";
    namespace(c, ns)?;
    let claim = |team: &'static str| {
        example("orders-api.yaml", ns, "claimant", move |v| {
            v["spec"]["team"] = team.into();
        })
    };
    let refused = match c.apply(&claim("payments")?) {
        Ok(out) => bail!("admission let a request claim another team: {out}"),
        Err(e) => e,
    };
    ensure!(
        format!("{refused:#}").contains("spec.team must be e2e-tenancy"),
        "{refused:#}"
    );
    c.apply(&claim(ns)?)?;
    wait_phase(client, ns, "claimant", Phase::Rendered).await?;
    c.kubectl(&["label", "namespace", ns, "paver.dev/team-"])?;
    let held = wait_phase(client, ns, "claimant", Phase::Rejected).await?;
    let validated = held
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Validated")
        .context("no Validated condition")?;
    ensure!(validated.message.contains("is bound to no team"), "{validated:?}");
    namespace(c, ns)?;
    let before = wait_phase(client, ns, "claimant", Phase::Rendered).await?;
    let old_dir = before.status.and_then(|s| s.render).context("no render")?.path;

    // The namespace moves to another team: the request follows, and its
    // old directory goes in the commit that writes the new one.
    c.team_namespace(ns, "e2e-tenancy-2")?;
    c.kubectl(&[
        "patch",
        "servicerequest",
        "claimant",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"team":"e2e-tenancy-2"}}"#,
    ])?;
    let moved = wait_phase(client, ns, "claimant", Phase::Rendered).await?;
    let render = moved.status.and_then(|s| s.render).context("no render")?;
    ensure!(
        render.path == format!("e2e-tenancy-2/{ns}/claimant"),
        "{render:?}"
    );
    let clone = c.remote().clone_repo()?;
    let removed_in = clone.git(&["log", "-1", "--format=%H", "--", &old_dir])?;
    ensure!(
        removed_in.trim() == render.revision && clone.git(&["ls-files", "--", &old_dir])?.trim().is_empty(),
        "{old_dir} was not removed in the commit that wrote {} ({}): last touched in {removed_in}",
        render.path,
        render.revision
    );
    a_directory_has_one_owner(env).await
}

/// A route whose output path leaves out the namespace gives two requests
/// of one team, in two namespaces, the same directory: the first to commit
/// owns it, the second is refused naming the owner and commits nothing,
/// and the owner's files stay; once the owner is deleted, the second
/// request gets it.
async fn a_directory_has_one_owner(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let team = "e2e-claims";
    let (first, second) = ("e2e-claims-a", "e2e-claims-b");
    c.team_namespace(first, team)?;
    c.team_namespace(second, team)?;
    let yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    r["metadata"] = serde_yaml::from_str("name: e2e-per-team")?;
    r.as_mapping_mut().context("route")?.remove("status");
    r["spec"]["output"]["path"] = "{{ team }}/{{ name }}".into();
    c.apply(&serde_yaml::to_string(&r)?)?;
    let request = |ns: &str| {
        example("orders-api.yaml", ns, "shared", |v| {
            v["spec"]["route"] = "e2e-per-team".into();
            v["spec"]["team"] = team.into();
        })
    };
    c.apply(&request(first)?)?;
    wait_phase(client, first, "shared", Phase::Rendered).await?;
    let dir = format!("{team}/shared");
    let owned = c
        .remote()
        .clone_repo()?
        .git(&["log", "-1", "--format=%H", "--", &dir])?;
    c.apply(&request(second)?)?;
    let refused = wait_phase(client, second, "shared", Phase::Failed).await?;
    let rendered = refused
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Rendered")
        .context("no Rendered condition")?;
    ensure!(
        rendered
            .message
            .contains(&format!("directory {dir} belongs to request {first}/shared")),
        "{rendered:?}"
    );
    let clone = c.remote().clone_repo()?;
    ensure!(
        clone.commits_for(&format!("{second}/shared"))?.is_empty(),
        "the refused request was committed"
    );
    ensure!(
        clone.git(&["log", "-1", "--format=%H", "--", &dir])? == owned,
        "the owner's directory was changed"
    );
    // Deleted, the owner lets go; the other request takes the directory at
    // its next reconcile (here a change; a resync would do too).
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), first);
    api.delete("shared", &Default::default()).await?;
    wait_for("the owner deleted", Duration::from_secs(60), || async {
        Ok(api.get_opt("shared").await?.is_none().then_some(()))
    })
    .await?;
    c.kubectl(&[
        "patch",
        "servicerequest",
        "shared",
        "-n",
        second,
        "--type=merge",
        "-p",
        r#"{"spec":{"parameters":{"compute":{"replicas":3}}}}"#,
    ])?;
    wait_phase(client, second, "shared", Phase::Rendered).await?;
    ensure!(
        !c.remote()
            .clone_repo()?
            .commits_for(&format!("{second}/shared"))?
            .is_empty(),
        "the second request was not committed once the directory was free"
    );
    c.kubectl(&["delete", "paveroute", "e2e-per-team"])?;
    Ok(())
}

fn guard_bundle(version: &str, mode: &str, rego_body: &str) -> String {
    format!(
        r#"apiVersion: paver.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: e2e-guard
spec:
  version: "{version}"
  owners: [platform-team@example.com]
  description: e2e rollout guard
  mode: {mode}
  match:
    namespaces: [e2e-rollout]
  modules:
    - name: guard.rego
      source: |
        package paver.e2e_guard
        import rego.v1
{rego_body}
  tests:
    - name: guard_test.rego
      source: |
        package paver.e2e_guard_test
        import rego.v1
        import data.paver.e2e_guard
        test_flagged_denied if count(e2e_guard.deny) == 1 with input as {{"request": {{"metadata": {{"labels": {{"e2e/flagged": "true"}}}}}}}}
        test_clean_allowed if count(e2e_guard.deny) == 0 with input as {{"request": {{"metadata": {{"labels": {{}}}}}}}}
"#
    )
}

/// The e2e-guard bundle once `pick` finds in it what it waits for.
async fn wait_guard<T>(
    bundles: &Api<PolicyBundle>,
    what: &str,
    timeout: Duration,
    pick: impl Fn(&PolicyBundle, PolicyBundleStatus) -> Option<T>,
) -> Result<T> {
    let pick = &pick;
    wait_for(what, timeout, || async move {
        let b = bundles.get("e2e-guard").await?;
        let status = b.status.clone().unwrap_or_default();
        Ok(pick(&b, status))
    })
    .await
}

const GUARD_RULE: &str = r#"        deny contains {"id": "flagged", "msg": "requests labelled e2e/flagged are not allowed"} if {
          input.request.metadata.labels["e2e/flagged"] == "true"
        }"#;

/// A bundle rolled out in warn mode gives a warning; switched to enforce it
/// rejects the request (the bundle change re-reconciles it); a broken update
/// is refused with module and line and the last good version keeps enforcing.
async fn bundle_rollout_warn_enforce_and_broken_update(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-rollout";
    namespace(c, ns)?;
    c.apply(&guard_bundle("1.0.0", "warn", GUARD_RULE))?;
    let bundles: Api<PolicyBundle> = Api::all(client.clone());
    wait_guard(
        &bundles,
        "e2e-guard 1.0.0 active",
        Duration::from_secs(30),
        |_, s| (s.active_version.as_deref() == Some("1.0.0")).then_some(()),
    )
    .await?;
    c.apply(&example("orders-api.yaml", ns, "flagged", |v| {
        v["metadata"]["labels"]["e2e/flagged"] = "true".into();
    })?)?;
    let sr = wait_phase(client, ns, "flagged", Phase::Rendered).await?;
    let warnings = sr.status.unwrap_or_default().warnings;
    ensure!(
        warnings
            .iter()
            .any(|w| w.bundle == "e2e-guard" && w.rule == "flagged"),
        "warn mode gave no warning: {warnings:?}"
    );

    // Enforce from a date ahead: until then the finding warns, saying from
    // when it blocks, and the bundle counts the requests it would deny.
    let enforce_later = guard_bundle("1.0.0", "enforce", GUARD_RULE).replace(
        "  mode: enforce\n",
        "  mode: enforce\n  enforceAfter: \"2099-01-01T00:00:00Z\"\n",
    );
    c.apply(&enforce_later)?;
    let counted = wait_guard(
        &bundles,
        "e2e-guard counts the request it would deny",
        Duration::from_secs(60),
        |_, s| (s.would_deny == Some(1)).then_some(s),
    )
    .await?;
    ensure!(
        counted.would_deny_by_team == [(ns.to_string(), 1)].into(),
        "by team: {:?}",
        counted.would_deny_by_team
    );
    let sr = wait_phase(client, ns, "flagged", Phase::Rendered).await?;
    let warnings = sr.status.unwrap_or_default().warnings;
    ensure!(
        warnings.iter().any(|w| w.bundle == "e2e-guard"
            && w.message
                .ends_with("(becomes a violation on 2099-01-01T00:00:00Z)")),
        "no dated warning: {warnings:?}"
    );
    let table = c.kubectl(&["get", "policybundle", "e2e-guard"])?;
    ensure!(
        table.contains("ENFORCES") && table.contains("WOULD-DENY") && table.contains("2099-01-01T00:00:00Z"),
        "kubectl get policybundle:\n{table}"
    );

    c.apply(&guard_bundle("1.0.0", "enforce", GUARD_RULE))?;
    let sr = wait_phase(client, ns, "flagged", Phase::Rejected).await?;
    let violations = sr.status.unwrap_or_default().violations;
    ensure!(
        violations
            .iter()
            .any(|v| v.bundle == "e2e-guard" && v.rule == "flagged"),
        "{violations:?}"
    );
    // The CLI judges the same request file against the cluster's bundles
    // (`--cluster`) as the operator did, and against the built-in ones
    // (which have no e2e-guard) without it.
    let file = std::env::temp_dir().join(format!("paver-e2e-flagged-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        example("orders-api.yaml", ns, "flagged", |v| {
            v["metadata"]["labels"]["e2e/flagged"] = "true".into();
        })?,
    )?;
    let validate = |cluster: bool| -> Result<(Option<i32>, String)> {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_paver"));
        cmd.arg("validate").arg("-f").arg(&file);
        if cluster {
            cmd.arg("--cluster");
        }
        let out = cmd
            .env("KUBECONFIG", c.var("PAVER_E2E_ADMIN_KUBECONFIG"))
            .output()?;
        Ok((
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let (code, text) = validate(true)?;
    ensure!(
        code == Some(1) && text.contains("e2e-guard") && text.contains("flagged"),
        "paver validate --cluster (exit {code:?}):\n{text}"
    );
    let (code, text) = validate(false)?;
    ensure!(
        code == Some(0) && !text.contains("e2e-guard"),
        "paver validate (exit {code:?}):\n{text}"
    );
    std::fs::remove_file(&file).ok();

    // Enforcing now, nothing is pending: the count goes.
    wait_guard(
        &bundles,
        "e2e-guard drops its would-deny count",
        Duration::from_secs(60),
        |_, s| s.would_deny.is_none().then_some(()),
    )
    .await?;

    // Version 2.0.0 does not compile (line 4 of guard.rego).
    c.apply(&guard_bundle(
        "2.0.0",
        "enforce",
        "        deny contains msg if {\n          msg :=\n        }",
    ))?;
    let status = wait_guard(
        &bundles,
        "e2e-guard 2.0.0 reported broken",
        Duration::from_secs(30),
        |b, s| (s.observed_generation == b.metadata.generation && !s.errors.is_empty()).then_some(s),
    )
    .await?;
    let err = &status.errors[0];
    ensure!(
        err.module == "guard.rego" && err.line.is_some(),
        "error without module and line: {err:?}"
    );
    ensure!(
        status.active_version.as_deref() == Some("1.0.0"),
        "active version {:?}, want the last good 1.0.0",
        status.active_version
    );
    let compiled = status.conditions.iter().find(|c| c.type_ == "Compiled");
    ensure!(
        compiled.is_some_and(|c| c.status == "False"),
        "Compiled condition: {compiled:?}"
    );
    // The last good version still enforces: a new generation is still rejected.
    c.kubectl(&[
        "patch",
        "servicerequest",
        "flagged",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"owner":"someone-else@example.com"}}"#,
    ])?;
    wait_phase(client, ns, "flagged", Phase::Rejected).await?;
    c.kubectl(&["delete", "policybundle", "e2e-guard"])?;
    Ok(())
}

/// One verdict everywhere: `paver validate --cluster -o json` on 30 request
/// files (5 examples, staging and production, as given / relabelled / on a
/// route that does not exist) says what the operator wrote on each
/// request's status, field by field: outcome and phase, violations,
/// warnings, dryrun and waived findings, approval reasons, the estimate.
async fn cli_and_operator_agree_on_30_requests(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-agree";
    namespace(c, ns)?;
    let dir = std::env::temp_dir().join(format!("paver-e2e-agree-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let examples = [
        "orders-api.yaml",
        "storefront-web.yaml",
        "payment-gateway.yaml",
        "clickstream-etl.yaml",
        "invoice-reconciler.yaml",
    ];
    let mut names = Vec::new();
    let mut docs = Vec::new();
    for (i, file) in examples.iter().enumerate() {
        for environment in ["staging", "production"] {
            for variant in 0..3 {
                let name = format!("r{i}-{environment}-{variant}");
                let doc = example(file, ns, &name, |v| {
                    v["spec"]["environment"] = environment.into();
                    match variant {
                        1 => v["metadata"]["labels"]["e2e/variant"] = "relabelled".into(),
                        2 => v["spec"]["route"] = "no-such-route".into(),
                        _ => {}
                    }
                })?;
                std::fs::write(dir.join(format!("{name}.yaml")), &doc)?;
                docs.push(doc);
                names.push(name);
            }
        }
    }
    c.apply(&docs.join("---\n"))?;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    // Every request judged for its generation.
    let statuses = wait_for("30 requests judged", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let list = api.list(&Default::default()).await?.items;
            let judged: Vec<ServiceRequest> = list
                .into_iter()
                .filter(|sr| {
                    let s = sr.status.clone().unwrap_or_default();
                    s.observed_generation == sr.metadata.generation && s.phase != Phase::Pending
                })
                .collect();
            Ok((judged.len() == 30).then_some(judged))
        }
    })
    .await?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paver"))
        .args(["validate", "--cluster", "-o", "json", "-f"])
        .arg(&dir)
        .env("KUBECONFIG", c.var("PAVER_E2E_ADMIN_KUBECONFIG"))
        .output()?;
    std::fs::remove_dir_all(&dir).ok();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("validate output: {}", String::from_utf8_lossy(&out.stderr)))?;
    let verdicts = doc["verdicts"].as_array().context("verdicts")?;
    ensure!(verdicts.len() == 30, "{} verdicts", verdicts.len());
    let findings = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        let mut f: Vec<(String, String, String)> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["bundle"].as_str().unwrap_or_default().to_string(),
                    x["rule"].as_str().unwrap_or_default().to_string(),
                    x["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        f.sort();
        f
    };
    let mut outcomes = std::collections::BTreeMap::new();
    for sr in &statuses {
        let name = sr.name_any();
        let request = format!("{ns}/{name}");
        let cli = verdicts
            .iter()
            .find(|v| v["request"] == request.as_str())
            .with_context(|| format!("no CLI verdict for {request}"))?;
        let status = serde_json::to_value(sr.status.clone().unwrap_or_default())?;
        let outcome = cli["outcome"].as_str().unwrap_or_default();
        let phase = status["phase"].as_str().unwrap_or_default();
        let phase_ok = match outcome {
            "allowed" => matches!(phase, "Rendered" | "Synced"),
            "needsApproval" => phase == "AwaitingApproval",
            "denied" | "invalid" => phase == "Rejected",
            other => bail!("{request}: CLI outcome {other} (phase {phase})"),
        };
        ensure!(phase_ok, "{request}: CLI says {outcome}, the operator {phase}");
        *outcomes.entry(outcome.to_string()).or_insert(0) += 1;
        let policy = &cli["policy"];
        for (cli_field, status_field) in [
            ("violations", "violations"),
            ("warnings", "warnings"),
            ("dryrun", "dryrun"),
            ("waived", "waived"),
        ] {
            ensure!(
                findings(&policy[cli_field]) == findings(&status[status_field]),
                "{request} {cli_field}: CLI {:?}, operator {:?}",
                findings(&policy[cli_field]),
                findings(&status[status_field])
            );
        }
        let reasons = |v: &serde_json::Value| -> Vec<String> {
            let mut r: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            r.sort();
            r
        };
        ensure!(
            reasons(&policy["approvalReasons"]) == reasons(&status["approvalReasons"]),
            "{request} approval reasons: CLI {:?}, operator {:?}",
            policy["approvalReasons"],
            status["approvalReasons"]
        );
        if outcome != "invalid" {
            let (a, b) = (
                cli["estimate"]["monthly"].as_f64(),
                status["estimate"]["monthly"].as_f64(),
            );
            ensure!(
                a.zip(b).is_some_and(|(a, b)| (a - b).abs() < 0.005),
                "{request} estimate: CLI {a:?}, operator {b:?}"
            );
        }
    }
    // The 30 cover more than one kind of verdict.
    ensure!(outcomes.len() >= 3, "outcomes: {outcomes:?}");
    eprintln!("     outcomes: {outcomes:?}");
    Ok(())
}

/// A copy of the microservice route; bumping its version with a template
/// change re-renders the requests on it, at the new version.
async fn route_version_bump_rerenders(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-route";
    namespace(c, ns)?;
    let route_yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut route: serde_yaml::Value = serde_yaml::from_str(&route_yaml)?;
    let set_route = |route: &mut serde_yaml::Value, version: &str, marker: &str| -> Result<String> {
        let mut r = route.clone();
        r["metadata"] = serde_yaml::from_str("name: e2e-svc")?;
        r.as_mapping_mut().context("route")?.remove("status");
        r["spec"]["version"] = version.into();
        // A template change: a comment appended to the first YAML template.
        let files = r["spec"]["templates"]["inline"]
            .as_sequence_mut()
            .context("templates.inline")?;
        let first = files
            .iter_mut()
            .find(|f| f["path"].as_str().is_some_and(|p| p.ends_with(".yaml")))
            .context("no YAML template")?;
        let content = first["content"].as_str().unwrap_or_default().to_string();
        first["content"] = format!("{content}\n# {marker}\n").into();
        Ok(serde_yaml::to_string(&r)?)
    };
    c.apply(&set_route(&mut route, "1.0.0", "e2e marker one")?)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.apply(&example("orders-api.yaml", ns, "bumped", |v| {
        v["spec"]["route"] = "e2e-svc".into();
    })?)?;
    let sr = wait_phase(client, ns, "bumped", Phase::Rendered).await?;
    let first = sr.status.unwrap_or_default().render.context("no render")?;
    ensure!(first.route_version == "1.0.0", "{first:?}");

    c.apply(&set_route(&mut route, "1.1.0", "e2e marker two")?)?;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    let second = wait_for(
        "bumped re-rendered at e2e-svc 1.1.0",
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let sr = api.get("bumped").await?;
                Ok(sr
                    .status
                    .and_then(|s| s.render)
                    .filter(|r| r.route_version == "1.1.0"))
            }
        },
    )
    .await?;
    ensure!(
        second.revision != first.revision,
        "no new commit for the route bump"
    );
    let commits = c.remote().clone_repo()?.commits_for(&format!("{ns}/bumped"))?;
    ensure!(
        commits
            .last()
            .is_some_and(|(sha, msg)| *sha == second.revision && msg.contains("Paver-Route: e2e-svc@1.1.0")),
        "{commits:?}"
    );
    Ok(())
}

/// A route and a bundle, each a PaveRoute/PolicyBundle copy of a shipped
/// one under a new name, for the last-good scenario: `marker` changes the
/// first YAML template, `broken` appends a template syntax error.
fn lastgood_route(c: &Cluster, version: &str, broken: bool) -> Result<String> {
    let route_yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&route_yaml)?;
    r["metadata"] = serde_yaml::from_str("name: e2e-lastgood")?;
    r.as_mapping_mut().context("route")?.remove("status");
    r["spec"]["version"] = version.into();
    if broken {
        let files = r["spec"]["templates"]["inline"]
            .as_sequence_mut()
            .context("templates.inline")?;
        let first = files.first_mut().context("no template")?;
        let content = first["content"].as_str().unwrap_or_default().to_string();
        first["content"] = format!("{content}\n{{{{ unclosed\n").into();
    }
    Ok(serde_yaml::to_string(&r)?)
}

/// Break a route and a bundle, SIGKILL the operator and start it again: it
/// puts their last good revisions in force, so the requests keep their
/// verdicts and renders (no commit), new requests are judged and rendered
/// with the good versions, and each status says which version is in force
/// and why the latest is refused.
async fn last_good_route_and_bundle_survive_a_restart(env: &mut Env) -> Result<()> {
    let ns = "e2e-lastgood";
    namespace(&env.cluster, ns)?;
    let bundle = |version: &str, body: &str| {
        guard_bundle(version, "enforce", body)
            .replace("name: e2e-guard", "name: e2e-lastgood-guard")
            .replace("[e2e-rollout]", "[e2e-lastgood]")
    };
    let (routes, bundles): (Api<PaveRoute>, Api<PolicyBundle>) =
        (Api::all(env.client.clone()), Api::all(env.client.clone()));
    env.cluster
        .apply(&lastgood_route(&env.cluster, "1.0.0", false)?)?;
    env.cluster.apply(&bundle("1.0.0", GUARD_RULE))?;
    let route_rev = wait_for("e2e-lastgood kept as a revision", Duration::from_secs(30), || {
        let routes = routes.clone();
        async move {
            let s = routes.get("e2e-lastgood").await?.status.unwrap_or_default();
            Ok(s.active_revision
                .filter(|_| s.active_version.as_deref() == Some("1.0.0")))
        }
    })
    .await?;
    let bundle_rev = wait_for(
        "e2e-lastgood-guard kept as a revision",
        Duration::from_secs(30),
        || {
            let bundles = bundles.clone();
            async move {
                let s = bundles
                    .get("e2e-lastgood-guard")
                    .await?
                    .status
                    .unwrap_or_default();
                Ok(s.active_revision
                    .filter(|_| s.active_version.as_deref() == Some("1.0.0")))
            }
        },
    )
    .await?;
    let listed = env
        .cluster
        .kubectl(&["get", "paverouterevisions,policybundlerevisions"])?;
    ensure!(
        listed.contains(&route_rev) && listed.contains(&bundle_rev),
        "revisions {route_rev} and {bundle_rev} not listed:\n{listed}"
    );
    let on_route = |name: &str, flagged: bool| {
        example("orders-api.yaml", ns, name, |v| {
            v["spec"]["route"] = "e2e-lastgood".into();
            if flagged {
                v["metadata"]["labels"]["e2e/flagged"] = "true".into();
            }
        })
    };
    env.cluster.apply(&on_route("kept", false)?)?;
    env.cluster.apply(&on_route("kept-flagged", true)?)?;
    let kept = wait_phase(&env.client, ns, "kept", Phase::Rendered).await?;
    let render = kept
        .status
        .clone()
        .unwrap_or_default()
        .render
        .context("no render")?;
    ensure!(render.route_version == "1.0.0", "{render:?}");
    wait_phase(&env.client, ns, "kept-flagged", Phase::Rejected).await?;

    // Version 2.0.0 of each is broken.
    env.cluster.apply(&lastgood_route(&env.cluster, "2.0.0", true)?)?;
    env.cluster.apply(&bundle(
        "2.0.0",
        "        deny contains msg if {\n          msg :=\n        }",
    ))?;
    for (kind, name) in [
        ("paveroute", "e2e-lastgood"),
        ("policybundle", "e2e-lastgood-guard"),
    ] {
        let c = &env.cluster;
        wait_for(
            &format!("{kind} {name} 2.0.0 refused"),
            Duration::from_secs(30),
            || async move {
                let out = c.kubectl(&[
                    "get",
                    kind,
                    name,
                    "-o",
                    "jsonpath={.metadata.generation} {.status.observedGeneration}",
                ])?;
                let parts: Vec<&str> = out.split_whitespace().collect();
                Ok((parts.len() == 2 && parts[0] == parts[1]).then_some(()))
            },
        )
        .await?;
    }
    let head = env.cluster.remote().head()?;

    env.operator.kill()?;
    env.operator.restart()?;
    env.operator.wait_ready().await?;

    // New requests after the restart: rendered with route 1.0.0, judged by bundle 1.0.0.
    env.cluster.apply(&on_route("after", false)?)?;
    env.cluster.apply(&on_route("after-flagged", true)?)?;
    let after = wait_phase(&env.client, ns, "after", Phase::Rendered).await?;
    let after_render = after.status.unwrap_or_default().render.context("no render")?;
    ensure!(
        after_render.route_version == "1.0.0",
        "rendered after the restart with {after_render:?}, want the last good 1.0.0"
    );
    let rejected = wait_phase(&env.client, ns, "after-flagged", Phase::Rejected).await?;
    let violations = rejected.status.unwrap_or_default().violations;
    ensure!(
        violations
            .iter()
            .any(|v| v.bundle == "e2e-lastgood-guard" && v.rule == "flagged"),
        "the last good bundle did not judge after-flagged: {violations:?}"
    );
    // The requests from before keep their verdicts and renders: no new commit for them.
    let kept_now = wait_phase(&env.client, ns, "kept", Phase::Rendered).await?;
    let kept_render = kept_now.status.unwrap_or_default().render.context("no render")?;
    ensure!(
        kept_render.revision == render.revision && kept_render.route_version == "1.0.0",
        "kept was re-rendered: {render:?} -> {kept_render:?}"
    );
    wait_phase(&env.client, ns, "kept-flagged", Phase::Rejected).await?;
    let clone = env.cluster.remote().clone_repo()?;
    ensure!(
        clone.commits_for(&format!("{ns}/kept"))?.len() == 1,
        "kept has more than one commit"
    );
    let since = clone.commits_since(&head)?;
    ensure!(
        since.iter().all(|(_, msg)| msg.contains(&format!("{ns}/after"))),
        "commits after the restart other than the new request's: {since:?}"
    );

    // Each status says which version is in force and why the latest is refused.
    let route = routes.get("e2e-lastgood").await?.status.unwrap_or_default();
    let ready = route
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("no Ready")?;
    ensure!(
        ready.status == "False"
            && ready.message.contains("version 2.0.0 is refused")
            && ready
                .message
                .contains(&format!("version 1.0.0 (revision {route_rev}) stays in force")),
        "route Ready: {ready:?}"
    );
    ensure!(
        route.active_version.as_deref() == Some("1.0.0")
            && route.active_revision.as_deref() == Some(&route_rev),
        "route in force: {:?} {:?}",
        route.active_version,
        route.active_revision
    );
    let b = bundles
        .get("e2e-lastgood-guard")
        .await?
        .status
        .unwrap_or_default();
    let active = b
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .context("no Active")?;
    ensure!(
        active.status == "False"
            && active.message.contains(&format!(
                "last good version 1.0.0 (revision {bundle_rev}) stays in force"
            ))
            && b.errors
                .iter()
                .any(|e| e.module == "guard.rego" && e.line.is_some()),
        "bundle status: {active:?} {:?}",
        b.errors
    );
    let table = env.cluster.kubectl(&["get", "paveroute", "e2e-lastgood"])?;
    ensure!(
        table.contains("ACTIVE")
            && table
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("2.0.0") && l.contains("1.0.0")),
        "kubectl get paveroute:\n{table}"
    );

    // The CLI judges against the versions in force, as the operator does:
    // route 1.0.0 (2.0.0 is broken) and the bundle's 1.0.0.
    let file = std::env::temp_dir().join(format!("paver-e2e-lastgood-{}.yaml", std::process::id()));
    std::fs::write(&file, on_route("cli-flagged", true)?)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paver"))
        .args(["validate", "--cluster", "-f"])
        .arg(&file)
        .env("KUBECONFIG", env.cluster.var("PAVER_E2E_ADMIN_KUBECONFIG"))
        .output()?;
    std::fs::remove_file(&file).ok();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.code() == Some(1) && text.contains("e2e-lastgood-guard") && !text.contains("not usable"),
        "paver validate --cluster (exit {:?}):\n{text}",
        out.status.code()
    );

    // Deleting the bundle deletes its revisions (owner references).
    let c = &env.cluster;
    c.kubectl(&["delete", "policybundle", "e2e-lastgood-guard"])?;
    wait_for(
        "e2e-lastgood-guard's revisions collected",
        Duration::from_secs(60),
        || async move {
            let out = c.kubectl(&["get", "policybundlerevisions", "-o", "name"])?;
            Ok((!out.contains("e2e-lastgood-guard")).then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// A hand edit of a rendered file is put back on the next resync, with an
/// Event saying so.
async fn hand_edit_is_restored_on_resync(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-drift";
    namespace(c, ns)?;
    c.apply(&example("orders-api.yaml", ns, "drifty", |_| {})?)?;
    let sr = wait_phase(client, ns, "drifty", Phase::Rendered).await?;
    let render = sr.status.unwrap_or_default().render.context("no render")?;
    let remote = c.remote();
    let clone = remote.clone_repo()?;
    let rel = format!("{}/manifests/deployment.yaml", render.path);
    let original = std::fs::read_to_string(clone.path(&rel))?;
    std::fs::write(clone.path(&rel), original.replace("replicas: 2", "replicas: 9"))?;
    ensure!(
        std::fs::read_to_string(clone.path(&rel))? != original,
        "the edit changed nothing"
    );
    clone.git(&[
        "-c",
        "user.name=Hand Editor",
        "-c",
        "user.email=hand@example.com",
        "commit",
        "-qam",
        "scale by hand",
    ])?;
    clone.git(&["push", "-q", "origin", "HEAD:main"])?;
    let edited = remote.head()?;
    wait_for("the hand edit to be restored", Duration::from_secs(60), || {
        let (remote, rel, original, edited) = (&remote, &rel, &original, &edited);
        async move {
            if remote.head()? == *edited {
                return Ok(None);
            }
            let fresh = remote.clone_repo()?;
            Ok((std::fs::read_to_string(fresh.path(rel))? == *original).then_some(()))
        }
    })
    .await?;
    let events = c.kubectl(&["get", "events", "-n", ns])?;
    ensure!(
        events.contains("DriftRestored"),
        "no DriftRestored event:\n{events}"
    );
    Ok(())
}

/// Deleting a request removes its directory in a commit; its Scorecard goes
/// by garbage collection.
async fn deleting_a_request_removes_its_directory_and_scorecard(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-delete";
    namespace(c, ns)?;
    c.apply(&example("orders-api.yaml", ns, "doomed", |_| {})?)?;
    let sr = wait_phase(client, ns, "doomed", Phase::Rendered).await?;
    let render = sr.status.unwrap_or_default().render.context("no render")?;
    let sc: Api<Scorecard> = Api::namespaced(client.clone(), ns);
    wait_for("the doomed Scorecard", Duration::from_secs(30), || {
        let sc = sc.clone();
        async move { Ok(sc.get_opt("doomed").await?.map(drop)) }
    })
    .await?;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    api.delete("doomed", &DeleteParams::default()).await?;
    wait_for("the request to be gone", Duration::from_secs(60), || {
        let api = api.clone();
        async move { Ok(api.get_opt("doomed").await?.is_none().then_some(())) }
    })
    .await?;
    let clone = c.remote().clone_repo()?;
    ensure!(
        !clone.path(&render.path).exists(),
        "{} still in the repository",
        render.path
    );
    let commits = clone.commits_for(&format!("{ns}/doomed"))?;
    ensure!(
        commits.len() == 2,
        "expected a render and a removal commit: {commits:?}"
    );
    wait_for(
        "the Scorecard to be garbage-collected",
        Duration::from_secs(60),
        || {
            let sc = sc.clone();
            async move { Ok(sc.get_opt("doomed").await?.is_none().then_some(())) }
        },
    )
    .await?;
    Ok(())
}

/// With the Git server down the request says why and keeps retrying; once
/// the server is back it ends in a pushed commit.
async fn git_server_outage_ends_in_a_pushed_commit(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-outage";
    namespace(c, ns)?;
    c.git_stop()?;
    let result = async {
        c.apply(&example("orders-api.yaml", ns, "patient", |_| {})?)?;
        let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
        wait_for(
            "a Committed=False condition while Git is down",
            Duration::from_secs(60),
            || {
                let api = api.clone();
                async move {
                    let sr = api.get("patient").await?;
                    let status = sr.status.unwrap_or_default();
                    Ok(status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == "Committed" && c.status == "False" && !c.message.is_empty())
                        .map(drop))
                }
            },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    c.git_start()?;
    result?;
    let sr = wait_phase(client, ns, "patient", Phase::Rendered).await?;
    let render = sr.status.unwrap_or_default().render.context("no render")?;
    let commits = c.remote().clone_repo()?.commits_for(&format!("{ns}/patient"))?;
    ensure!(
        commits.len() == 1 && commits[0].0 == render.revision,
        "expected one commit at {}: {commits:?}",
        render.revision
    );
    Ok(())
}

/// SIGKILL the operator while a burst is in flight and start it again:
/// every request ends committed exactly once.
async fn operator_killed_mid_flight_loses_and_duplicates_nothing(env: &mut Env) -> Result<()> {
    let ns = "e2e-crash";
    namespace(&env.cluster, ns)?;
    let names: Vec<String> = (1..=20).map(|i| format!("svc-{i:02}")).collect();
    let docs: Vec<String> = names
        .iter()
        .map(|n| example("orders-api.yaml", ns, n, |_| {}))
        .collect::<Result<_>>()?;
    env.cluster.apply(&docs.join("---\n"))?;
    tokio::time::sleep(Duration::from_millis(400)).await;
    env.operator.kill()?;
    // The killed leader never released its Lease: the new process takes over
    // when it expires.
    env.operator.restart()?;
    // The new process waits out the old Lease before it reconciles; the
    // statuses may already say Rendered (written before the kill).
    env.operator.wait_ready().await?;
    support::rendered_and_committed_once(&env.client, &env.cluster.remote(), ns, &names).await?;
    Ok(())
}

/// At rest, resyncs make no commits and no API writes.
async fn nothing_changed_means_nothing_written(env: &mut Env) -> Result<()> {
    // Let whatever is in flight settle: at least two resync periods, and
    // until no write happened for one more (Argo CD may still be reporting
    // on the requests of the scenarios before, which is a change).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let settle = Instant::now();
    let mut last = env.operator.counter("paver_api_writes_total").await?;
    loop {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let now = env.operator.counter("paver_api_writes_total").await?;
        if now == last {
            break;
        }
        ensure!(
            settle.elapsed() < Duration::from_secs(180),
            "the operator kept writing for 3 minutes ({last} -> {now}): {:?}",
            env.operator.counter_lines("paver_api_writes_total").await?
        );
        last = now;
    }
    eprintln!(
        "     settled {:.0} s after the scenarios before",
        settle.elapsed().as_secs_f64()
    );
    let writes = env.operator.counter("paver_api_writes_total").await?;
    let reconciles = env.operator.counter("paver_reconciles_total").await?;
    let violations = env.operator.counter("paver_violations_total").await?;
    let head = env.cluster.remote().head()?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let writes_after = env.operator.counter("paver_api_writes_total").await?;
    let reconciles_after = env.operator.counter("paver_reconciles_total").await?;
    let violations_after = env.operator.counter("paver_violations_total").await?;
    ensure!(
        reconciles_after > reconciles,
        "no resync happened in 15s ({reconciles} reconciles)"
    );
    // Resyncs of a rejected request (e2e-denied) find its violations again:
    // only new findings count.
    ensure!(
        violations_after == violations,
        "violations counted again at rest: {violations} -> {violations_after}"
    );
    // The operator was restarted (the kill scenario) and rewrote no
    // Scorecard: every Scorecard's score is on /metrics all the same.
    let scorecards = env
        .cluster
        .kubectl(&["get", "scorecards", "-A", "--no-headers"])?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    let scores = env.operator.counter_lines("paver_scorecard_score").await?;
    ensure!(
        scorecards > 0 && scores.len() >= scorecards,
        "{scorecards} Scorecards but {} scores on /metrics after a restart: {scores:?}",
        scores.len()
    );
    ensure!(
        writes_after == writes,
        "API writes at rest: {writes} -> {writes_after}: {:?}",
        env.operator.counter_lines("paver_api_writes_total").await?
    );
    ensure!(env.cluster.remote().head()? == head, "a commit was made at rest");
    Ok(())
}
