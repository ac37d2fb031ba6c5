//! The whole loop with the real Argo CD (`e2e/argocd.sh`): Paver commits,
//! Argo CD syncs from the Git server, the workload runs on the kwok nodes,
//! and sync and health come back into the request and its Scorecard.
//!
//! Argo CD picks up Paver's Applications the way a platform would: through
//! the shipped app-of-apps (`manifests/argocd/root-application.yaml`),
//! here narrowed to the namespaces of these scenarios (`e2e-argocd-*`) so
//! the other scenarios' requests keep stopping at `Rendered`.
//!
//! Without the Argo CD binary (`e2e/bin.sh build-argocd`) or redis-server
//! these scenarios fail under CI (`CI` set) and report SKIP elsewhere, with
//! what is missing and the command that provides it.

use std::{
    fmt,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind},
};
use paver_crds::{Phase, Scorecard, ServiceRequest, ServiceRequestStatus};

use crate::{
    Env, namespace,
    support::{self, Cluster, ClusterExt as _, example, repo_root, wait_for},
};

/// How long a request may take from apply to Synced/Healthy here.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// Which request directories the e2e app-of-apps picks up.
const ROOT_INCLUDE: &str = "*/e2e-argocd-*/argocd-application.yaml";

/// A scenario that cannot run here, and why.
#[derive(Debug)]
pub struct Skipped(pub String);

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

enum State {
    Up,
    Skipped(String),
    Failed(String),
}

static STATE: OnceLock<State> = OnceLock::new();

/// Starts Argo CD on the cluster when it is built; returns the operator's
/// extra flags (the destination server Argo CD knows the cluster by).
pub fn start(c: &Cluster) -> Vec<String> {
    let state = match support::argocd_missing() {
        Some(reason) => {
            eprintln!("{reason}");
            if support::prereq::required() {
                State::Failed(reason)
            } else {
                State::Skipped(reason)
            }
        }
        None => {
            let t0 = Instant::now();
            match c.argocd_up() {
                Ok(()) => {
                    eprintln!("ok   argocd up ({:.1}s)", t0.elapsed().as_secs_f64());
                    State::Up
                }
                Err(e) => {
                    eprintln!("FAIL argocd up\n  {e:#}");
                    State::Failed(format!("{e:#}"))
                }
            }
        }
    };
    let args = match state {
        State::Up => vec![
            "--argocd-destination-server".to_string(),
            c.var("PAVER_E2E_APISERVER"),
        ],
        _ => Vec::new(),
    };
    let _ = STATE.set(state);
    args
}

fn require() -> Result<()> {
    match STATE.get() {
        Some(State::Up) => Ok(()),
        Some(State::Skipped(reason)) => Err(Skipped(reason.clone()).into()),
        Some(State::Failed(e)) => bail!("Argo CD did not start: {e}"),
        None => Err(Skipped("Argo CD was not started".into()).into()),
    }
}

fn applications(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"));
    Api::namespaced_with(client.clone(), "argocd", &ar)
}

/// The shipped app-of-apps, pointed at the e2e Git server and API server and
/// narrowed to these scenarios' namespaces.
fn root_application(c: &Cluster) -> Result<()> {
    let text = std::fs::read_to_string(repo_root().join("manifests/argocd/root-application.yaml"))?;
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text)?;
    v["spec"]["source"]["repoURL"] = c.var("GIT_URL").into();
    v["spec"]["source"]["directory"]["include"] = ROOT_INCLUDE.into();
    v["spec"]["destination"]["server"] = c.var("PAVER_E2E_APISERVER").into();
    c.apply(&serde_yaml::to_string(&v)?)?;
    Ok(())
}

fn describe(status: &ServiceRequestStatus) -> String {
    format!(
        "phase {:?}, sync {}, conditions {}",
        status.phase,
        serde_json::to_string(&status.sync).unwrap_or_default(),
        serde_json::to_string(&status.conditions).unwrap_or_default()
    )
}

/// Polls the request until `done` holds for its current generation; the
/// error names what was last seen.
async fn wait_request(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    done: impl Fn(&ServiceRequestStatus) -> bool,
) -> Result<ServiceRequest> {
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    let seen = std::sync::Mutex::new(String::new());
    let res = wait_for(&format!("{ns}/{name} {what}"), SYNC_TIMEOUT, || {
        let (api, seen, done) = (&api, &seen, &done);
        async move {
            let Some(sr) = api.get_opt(name).await? else {
                return Ok(None);
            };
            let status = sr.status.clone().unwrap_or_default();
            if let Ok(mut s) = seen.lock() {
                *s = describe(&status);
            }
            Ok((status.observed_generation == sr.metadata.generation && done(&status)).then_some(sr))
        }
    })
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    res.with_context(|| format!("{ns}/{name} last seen: {seen}"))
}

fn condition_true(status: &ServiceRequestStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn synced_and_healthy(status: &ServiceRequestStatus) -> bool {
    status.phase == Phase::Synced
        && status.sync.as_ref().is_some_and(|s| s.health == "Healthy")
        && condition_true(status, "Synced")
        && condition_true(status, "Ready")
}

/// The Scorecard once its checks include `id` with `pass`.
async fn wait_check(client: &Client, ns: &str, name: &str, id: &str, pass: bool) -> Result<Scorecard> {
    let api: Api<Scorecard> = Api::namespaced(client.clone(), ns);
    let seen = std::sync::Mutex::new(String::new());
    let res = wait_for(
        &format!("{ns}/{name} Scorecard check {id} pass={pass}"),
        Duration::from_secs(60),
        || {
            let (api, seen) = (&api, &seen);
            async move {
                let Some(sc) = api.get_opt(name).await? else {
                    return Ok(None);
                };
                let checks = sc.status.clone().unwrap_or_default().checks;
                if let Ok(mut s) = seen.lock() {
                    *s = serde_json::to_string(&checks).unwrap_or_default();
                }
                Ok(checks.iter().any(|c| c.id == id && c.pass == pass).then_some(sc))
            }
        },
    )
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    res.with_context(|| format!("checks last seen: {seen}"))
}

/// `kubectl get` of one field.
fn field(c: &Cluster, args: &[&str], path: &str) -> Result<String> {
    let jsonpath = format!("jsonpath={path}");
    let mut all = args.to_vec();
    all.extend(["-o", &jsonpath]);
    Ok(c.kubectl(&all)?.trim().to_string())
}

/// The request's Deployment has every replica available, on kwok nodes.
fn deployment_available(c: &Cluster, ns: &str, name: &str) -> Result<()> {
    let dep = ["get", "deployment", name, "-n", ns];
    let want = field(c, &dep, "{.spec.replicas}")?;
    let available = field(c, &dep, "{.status.availableReplicas}")?;
    ensure!(
        !want.is_empty() && available == want,
        "deployment {ns}/{name}: {available:?} of {want:?} replicas available"
    );
    let selector = format!("app.kubernetes.io/name={name}");
    let pods = field(
        c,
        &["get", "pods", "-n", ns, "-l", &selector],
        r#"{range .items[*]}{.spec.nodeName} {.status.phase}{"\n"}{end}"#,
    )?;
    let running = pods
        .lines()
        .filter(|l| l.starts_with("kwok-node-") && l.ends_with(" Running"))
        .count();
    ensure!(
        running.to_string() == want,
        "want {want} Pods Running on kwok nodes, got:\n{pods}"
    );
    Ok(())
}

/// The microservice and web-frontend examples, from apply to Argo CD
/// Synced/Healthy at the revision Paver pushed, with their Deployments
/// Available on the kwok nodes and the Scorecards' cluster checks passing;
/// then a change to one is a new commit that Argo CD syncs, and the request
/// reports the new revision.
pub async fn argocd_syncs_requests_to_available_deployments(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-ok";
    namespace(c, ns)?;
    root_application(c)?;
    let t0 = Instant::now();
    c.apply(
        &[
            example("orders-api.yaml", ns, "orders", |_| {})?,
            example("storefront-web.yaml", ns, "storefront", |_| {})?,
        ]
        .join("---\n"),
    )?;
    let mut times = Vec::new();
    for name in ["orders", "storefront"] {
        wait_request(client, ns, name, "Synced", |s| s.phase == Phase::Synced).await?;
        let synced_at = t0.elapsed().as_secs_f64();
        if name == "storefront" {
            // No ingress controller runs here: admit the Ingress as one would.
            admit_ingress(c, ns, name).await?;
        }
        let sr = wait_request(client, ns, name, "Synced/Healthy", synced_and_healthy).await?;
        times.push(format!(
            "{name} Synced {synced_at:.1}s, Healthy {:.1}s",
            t0.elapsed().as_secs_f64()
        ));
        let status = sr.status.unwrap_or_default();
        let render = status.render.context("no render status")?;
        let sync = status.sync.context("no sync status")?;
        // The request's revision is the commit that last changed its output;
        // Argo CD synced a head that contains it.
        let clone = c.remote().clone_repo()?;
        let touched = clone.git(&["log", "-1", "--format=%H", "--", &render.path])?;
        ensure!(
            sync.revision == render.revision && render.revision == touched.trim(),
            "synced {} / rendered {} / last commit in {}: {}",
            sync.revision,
            render.revision,
            render.path,
            touched.trim()
        );
        ensure!(sync.application == format!("argocd/{ns}.{name}"), "{sync:?}");
        deployment_available(c, ns, name)?;
        let app = applications(client).get(&format!("{ns}.{name}")).await?;
        let dest = &app.data["spec"]["destination"];
        ensure!(
            dest["server"] == c.var("PAVER_E2E_APISERVER").as_str() && dest["namespace"] == ns,
            "Application destination {dest}"
        );
        wait_check(client, ns, name, "argocd-synced", true).await?;
        wait_check(client, ns, name, "argocd-healthy", true).await?;
        wait_check(client, ns, name, "replicas-available", true).await?;
    }
    eprintln!("     apply to Synced/Healthy: {}", times.join(", "));

    // A change: a new commit, which Argo CD syncs; the request reports it.
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    let before = api
        .get("orders")
        .await?
        .status
        .and_then(|s| s.render)
        .context("no render")?;
    let t1 = Instant::now();
    c.kubectl(&[
        "patch",
        "servicerequest",
        "orders",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"parameters":{"compute":{"replicas":3}}}}"#,
    ])?;
    let sr = wait_request(client, ns, "orders", "Synced/Healthy at a new revision", |s| {
        synced_and_healthy(s) && s.render.as_ref().is_some_and(|r| r.revision != before.revision)
    })
    .await?;
    eprintln!(
        "     change to Synced/Healthy: {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    let status = sr.status.unwrap_or_default();
    let (render, sync) = (
        status.render.context("no render")?,
        status.sync.context("no sync")?,
    );
    ensure!(
        sync.revision == render.revision,
        "synced {} rendered {}",
        sync.revision,
        render.revision
    );
    ensure!(
        field(c, &["get", "deployment", "orders", "-n", ns], "{.spec.replicas}")? == "3",
        "the Deployment was not updated"
    );
    deployment_available(c, ns, "orders")?;
    let table = c.kubectl(&["get", "scorecards", "-n", ns])?;
    ensure!(
        table.lines().count() == 3 && table.contains("orders") && table.contains("storefront"),
        "kubectl get scorecards:\n{table}"
    );
    let apps = c.kubectl(&["get", "applications", "-n", "argocd"])?;
    for name in ["orders", "storefront"] {
        ensure!(
            apps.lines().any(|l| l.starts_with(&format!("{ns}.{name} "))
                && l.contains("Synced")
                && l.contains("Healthy")),
            "kubectl get applications:\n{apps}"
        );
    }

    // The team's AppProject fences its Applications: its one namespace,
    // the output repository, nothing cluster-scoped.
    let project = field(
        c,
        &["get", "appproject", &format!("paver-{ns}"), "-n", "argocd"],
        "{.spec.destinations[*].namespace} {.spec.sourceRepos[*]}",
    )?;
    ensure!(
        project == format!("{ns} {}", c.var("GIT_URL")),
        "AppProject paver-{ns}: {project}"
    );
    let app = applications(client).get(&format!("{ns}.orders")).await?;
    ensure!(
        app.data["spec"]["project"] == format!("paver-{ns}").as_str(),
        "{}",
        app.data["spec"]
    );
    fenced_route_is_refused_by_argo_cd(c, client, ns).await?;

    // An Application of orders under the name Paver 0.1 gave it
    // (`<namespace>-<name>`), as an upgrade finds it: the operator removes
    // its cascading finalizer, so the app of apps pruning it leaves the
    // workloads to `<namespace>.<name>`.
    let old = format!("{ns}-orders");
    let mut copy = applications(client).get(&format!("{ns}.orders")).await?;
    copy.metadata = kube::api::ObjectMeta {
        name: Some(old.clone()),
        namespace: Some("argocd".into()),
        labels: copy.metadata.labels.clone(),
        finalizers: Some(vec!["resources-finalizer.argocd.argoproj.io".into()]),
        ..Default::default()
    };
    copy.data["spec"]["syncPolicy"] = serde_json::json!({});
    copy.data.as_object_mut().context("Application")?.remove("status");
    c.apply(&serde_yaml::to_string(&copy)?)?;
    wait_for(
        &format!("the finalizer of {old} removed"),
        Duration::from_secs(60),
        || async {
            let app = applications(client).get(&old).await?;
            let kept = app
                .metadata
                .finalizers
                .unwrap_or_default()
                .iter()
                .any(|f| f == "resources-finalizer.argocd.argoproj.io");
            Ok((!kept).then_some(()))
        },
    )
    .await?;
    applications(client)
        .delete(&old, &DeleteParams::default())
        .await?;
    deployment_available(c, ns, "orders")?;

    // A team unbound while no operator ran: its AppProject goes at the
    // next start; the projects of bound teams stay.
    c.apply(
        "apiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata:\n  name: paver-e2e-gone-team\n  \
         namespace: argocd\n  labels: {app.kubernetes.io/managed-by: paver}\n  \
         annotations: {paver.dev/team: e2e-gone-team}\nspec:\n  sourceRepos: [x]\n",
    )?;
    env.operator.restart()?;
    env.operator.wait_ready().await?;
    let projects = || c.kubectl(&["get", "appprojects", "-n", "argocd", "-o", "name"]);
    wait_for(
        "the gone team's AppProject deleted",
        Duration::from_secs(60),
        || async { Ok((!projects()?.contains("paver-e2e-gone-team")).then_some(())) },
    )
    .await?;
    ensure!(
        projects()?.contains(&format!("paver-{ns}")),
        "a bound team's AppProject was deleted: {}",
        projects()?
    );
    Ok(())
}

/// What an ingress controller does: give the Ingress Argo CD created an
/// address (Argo CD's Ingress health waits for one).
async fn admit_ingress(c: &Cluster, ns: &str, name: &str) -> Result<()> {
    wait_for(&format!("Ingress {ns}/{name}"), SYNC_TIMEOUT, || async move {
        Ok(c.kubectl(&[
            "get",
            "ingress",
            name,
            "-n",
            ns,
            "--ignore-not-found",
            "-o",
            "name",
        ])?
        .contains(name)
        .then_some(()))
    })
    .await?;
    c.kubectl(&[
        "patch",
        "ingress",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"127.0.0.1"}]}}}"#,
    ])?;
    Ok(())
}

/// A copy of the microservice route whose Deployments ask for a node
/// label no node has, with a 10 s progress deadline.
fn unschedulable_route(c: &Cluster) -> Result<()> {
    let yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    r["metadata"] = serde_yaml::from_str("name: e2e-unschedulable")?;
    r.as_mapping_mut().context("route")?.remove("status");
    let files = r["spec"]["templates"]["inline"]
        .as_sequence_mut()
        .context("templates.inline")?;
    unschedulable(files)?;
    c.apply(&serde_yaml::to_string(&r)?)?;
    Ok(())
}

/// Gives the Deployment template of a route's `templates.inline` a node
/// label no node has and a 10 s progress deadline: Argo CD reports it
/// Degraded soon after it syncs.
fn unschedulable(files: &mut [serde_yaml::Value]) -> Result<()> {
    let dep = files
        .iter_mut()
        .find(|f| f["path"].as_str() == Some("manifests/deployment.yaml"))
        .context("no manifests/deployment.yaml template")?;
    let content = dep["content"].as_str().unwrap_or_default();
    ensure!(
        content.contains("  revisionHistoryLimit: 5\n") && content.contains("      serviceAccountName: "),
        "the deployment template changed shape"
    );
    dep["content"] = content
        .replace(
            "  revisionHistoryLimit: 5\n",
            "  revisionHistoryLimit: 5\n  progressDeadlineSeconds: 10\n",
        )
        .replace(
            "      serviceAccountName: ",
            "      nodeSelector:\n        paver.dev/e2e-no-such-pool: \"true\"\n      serviceAccountName: ",
        )
        .into();
    Ok(())
}

/// A route whose template writes into another namespace and a
/// cluster-scoped object: the team's AppProject makes Argo CD refuse the
/// sync, and neither object exists.
async fn fenced_route_is_refused_by_argo_cd(c: &Cluster, client: &Client, ns: &str) -> Result<()> {
    let yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    r["metadata"] = serde_yaml::from_str("name: e2e-fenced")?;
    r.as_mapping_mut().context("route")?.remove("status");
    let files = r["spec"]["templates"]["inline"]
        .as_sequence_mut()
        .context("templates.inline")?;
    files.push(serde_yaml::from_str(
        r#"path: manifests/escape.yaml
content: |
  apiVersion: v1
  kind: ConfigMap
  metadata:
    name: e2e-escaped
    namespace: kube-system
  data: {x: "1"}
  ---
  apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata:
    name: e2e-escaped
  rules: []
"#,
    )?);
    c.apply(&serde_yaml::to_string(&r)?)?;
    c.apply(&example("orders-api.yaml", ns, "fenced", |v| {
        v["spec"]["route"] = "e2e-fenced".into();
    })?)?;
    let sr = wait_request(client, ns, "fenced", "refused by the AppProject", |s| {
        s.sync
            .as_ref()
            .is_some_and(|sync| sync.message.contains("not permitted in project"))
    })
    .await?;
    let message = sr
        .status
        .and_then(|s| s.sync)
        .map(|s| s.message)
        .unwrap_or_default();
    ensure!(
        c.kubectl(&["get", "configmap", "e2e-escaped", "-n", "kube-system"])
            .is_err()
            && c.kubectl(&["get", "clusterrole", "e2e-escaped"]).is_err(),
        "an object outside the team's namespace was created: {message}"
    );
    c.kubectl(&["delete", "servicerequest", "fenced", "-n", ns])?;
    c.kubectl(&["delete", "paveroute", "e2e-fenced"])?;
    Ok(())
}

/// A workload that cannot become healthy: the request is Synced but not
/// Ready, says Degraded with Kubernetes' own reason, and its Scorecard's
/// argocd-healthy check fails with that message.
pub async fn argocd_reports_a_workload_that_cannot_become_healthy(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-sick";
    namespace(c, ns)?;
    root_application(c)?;
    unschedulable_route(c)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.apply(&example("orders-api.yaml", ns, "stuck", |v| {
        v["spec"]["route"] = "e2e-unschedulable".into();
    })?)?;
    let sr = wait_request(client, ns, "stuck", "Degraded", |s| {
        s.sync.as_ref().is_some_and(|s| s.health == "Degraded")
    })
    .await?;
    let status = sr.status.unwrap_or_default();
    let sync = status.sync.clone().context("no sync status")?;
    ensure!(
        sync.message
            .contains("Deployment e2e-argocd-sick/stuck is Degraded")
            && sync.message.contains("progress deadline"),
        "message a developer can act on? {:?}",
        sync.message
    );
    ensure!(status.phase == Phase::Synced, "{}", describe(&status));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .context("no Ready condition")?;
    ensure!(
        ready.status == "False"
            && ready.reason == "NotHealthy"
            && ready.message.contains("progress deadline"),
        "{ready:?}"
    );
    let pods = field(
        c,
        &["get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=stuck"],
        "{.items[*].status.phase}",
    )?;
    ensure!(
        !pods.is_empty() && pods.split_whitespace().all(|p| p == "Pending"),
        "pods: {pods}"
    );
    let sc = wait_check(client, ns, "stuck", "argocd-healthy", false).await?;
    let check = sc
        .status
        .unwrap_or_default()
        .checks
        .into_iter()
        .find(|c| c.id == "argocd-healthy")
        .context("no argocd-healthy check")?;
    ensure!(
        check.category == "cluster" && check.message.contains("progress deadline"),
        "{check:?}"
    );
    wait_check(client, ns, "stuck", "argocd-synced", true).await?;
    let sc = wait_check(client, ns, "stuck", "replicas-available", false).await?;
    let check = sc
        .status
        .unwrap_or_default()
        .checks
        .into_iter()
        .find(|c| c.id == "replicas-available")
        .context("no replicas-available check")?;
    ensure!(
        check
            .message
            .contains("Deployment e2e-argocd-sick/stuck is Degraded")
            && check.message.contains("progress deadline"),
        "{check:?}"
    );
    Ok(())
}

/// Deleting a synced request: its directory goes, the app-of-apps prunes its
/// Application, Argo CD's resources finalizer prunes the workload, the
/// Scorecard goes by garbage collection; the other requests stay.
pub async fn argocd_prunes_a_deleted_request(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-gone";
    namespace(c, ns)?;
    root_application(c)?;
    c.apply(
        &[
            example("orders-api.yaml", ns, "doomed", |_| {})?,
            example("orders-api.yaml", ns, "kept", |_| {})?,
        ]
        .join("---\n"),
    )?;
    for name in ["doomed", "kept"] {
        wait_request(client, ns, name, "Synced/Healthy", synced_and_healthy).await?;
    }
    deployment_available(c, ns, "doomed")?;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    api.delete("doomed", &DeleteParams::default()).await?;
    let apps = applications(client);
    let gone = |what: &'static str, args: Vec<String>| {
        let c = &c;
        wait_for(what, SYNC_TIMEOUT, move || {
            let args = args.clone();
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = c.kubectl(&args)?;
                Ok(out.trim().is_empty().then_some(()))
            }
        })
    };
    wait_for("the request to be gone", SYNC_TIMEOUT, || {
        let api = api.clone();
        async move { Ok(api.get_opt("doomed").await?.is_none().then_some(())) }
    })
    .await?;
    wait_for("the Application to be pruned", SYNC_TIMEOUT, || {
        let apps = apps.clone();
        async move {
            Ok(apps
                .get_opt(&format!("{ns}.doomed"))
                .await?
                .is_none()
                .then_some(()))
        }
    })
    .await?;
    let sel = |kind: &str| {
        vec![
            "get".to_string(),
            kind.to_string(),
            "-n".into(),
            ns.into(),
            "-l".into(),
            "app.kubernetes.io/name=doomed".into(),
            "-o".into(),
            "name".into(),
        ]
    };
    gone("the Deployment to be pruned", sel("deployments")).await?;
    gone("the Pods to be gone", sel("pods")).await?;
    gone(
        "the Service and ConfigMap to be pruned",
        vec![
            "get".into(),
            "service,configmap".into(),
            "-n".into(),
            ns.into(),
            "--ignore-not-found".into(),
            "-o".into(),
            "name".into(),
            "doomed".into(),
            "doomed-config".into(),
        ],
    )
    .await?;
    let sc: Api<Scorecard> = Api::namespaced(client.clone(), ns);
    wait_for("the Scorecard to be collected", Duration::from_secs(60), || {
        let sc = sc.clone();
        async move { Ok(sc.get_opt("doomed").await?.is_none().then_some(())) }
    })
    .await?;
    let clone = c.remote().clone_repo()?;
    ensure!(
        !clone.path(&format!("{ns}/{ns}/doomed")).exists(),
        "the directory is still in the repository"
    );
    // Nothing else touched.
    ensure!(
        clone.path(&format!("{ns}/{ns}/kept")).exists(),
        "the other request's directory went too"
    );
    ensure!(
        apps.get_opt(&format!("{ns}.kept")).await?.is_some(),
        "the other request's Application went too"
    );
    deployment_available(c, ns, "kept")?;
    let kept = api.get("kept").await?;
    ensure!(
        kept.status.as_ref().is_some_and(synced_and_healthy),
        "kept: {}",
        describe(&kept.status.unwrap_or_default())
    );
    Ok(())
}

/// The Git server goes away while a synced request changes: Paver says it
/// cannot commit, Argo CD reports it cannot reach the repository, and once
/// the server is back both carry on by themselves to the new revision.
pub async fn argocd_and_paver_recover_from_a_git_outage(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-outage";
    namespace(c, ns)?;
    root_application(c)?;
    c.apply(&example("orders-api.yaml", ns, "steady", |_| {})?)?;
    let sr = wait_request(client, ns, "steady", "Synced/Healthy", synced_and_healthy).await?;
    let before = sr.status.and_then(|s| s.render).context("no render")?;
    c.git_stop()?;
    let outage = async {
        c.kubectl(&[
            "patch",
            "servicerequest",
            "steady",
            "-n",
            ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"parameters":{"compute":{"replicas":3}}}}"#,
        ])?;
        wait_request(
            client,
            ns,
            "steady",
            "Committed=False and Argo CD's repository error",
            |s| {
                let committed_false = s
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Committed" && c.status == "False" && !c.message.is_empty());
                let argo_error = s
                    .sync
                    .as_ref()
                    .is_some_and(|s| s.message.contains("ComparisonError"));
                committed_false && argo_error
            },
        )
        .await?;
        anyhow::Ok(())
    }
    .await;
    c.git_start()?;
    outage?;
    let t0 = Instant::now();
    let sr = wait_request(client, ns, "steady", "Synced/Healthy at a new revision", |s| {
        synced_and_healthy(s) && s.render.as_ref().is_some_and(|r| r.revision != before.revision)
    })
    .await?;
    eprintln!(
        "     Git back to Synced/Healthy at the new revision: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let status = sr.status.unwrap_or_default();
    let (render, sync) = (
        status.render.context("no render")?,
        status.sync.context("no sync")?,
    );
    ensure!(
        sync.revision == render.revision && render.revision == c.remote().head()?,
        "synced {} rendered {}",
        sync.revision,
        render.revision
    );
    ensure!(
        field(c, &["get", "deployment", "steady", "-n", ns], "{.spec.replicas}")? == "3",
        "the Deployment was not updated"
    );
    deployment_available(c, ns, "steady")?;
    Ok(())
}

/// The other shipped routes, from apply to Argo CD Synced/Healthy at the
/// revision Paver pushed: data-pipeline and the PCI payment service (after
/// its Approval) with their Deployments Available, and batch-job's CronJob
/// in the cluster.
pub async fn argocd_syncs_every_other_shipped_route(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-routes";
    namespace(c, ns)?;
    root_application(c)?;
    c.apply(
        &[
            example("clickstream-etl.yaml", ns, "clickstream", |_| {})?,
            example("invoice-reconciler.yaml", ns, "invoices", |_| {})?,
            // No metrics server runs here, so an HPA turns Degraded ("unable to
            // get metrics") once the controller-manager looks at it.
            example("payment-gateway.yaml", ns, "payments", |v| {
                v["spec"]["parameters"]["compute"]["autoscaling"]["enabled"] = false.into();
            })?,
        ]
        .join("---\n"),
    )?;
    wait_request(client, ns, "payments", "AwaitingApproval", |s| {
        s.phase == Phase::AwaitingApproval
    })
    .await?;
    crate::approve(
        c,
        &format!(
            "apiVersion: paver.dev/v1alpha1\nkind: Approval\nmetadata:\n  name: payments-1\n  namespace: {ns}\n\
             spec:\n  request: payments\n  generation: 1\n  approver: paver-e2e-approver\n  reason: e2e CAB\n"
        ),
    )?;
    let t0 = Instant::now();
    let mut times = Vec::new();
    for name in ["clickstream", "invoices", "payments"] {
        wait_request(client, ns, name, "Synced", |s| s.phase == Phase::Synced).await?;
        if name == "payments" {
            // No ingress controller runs here: admit the Ingress as one would.
            admit_ingress(c, ns, name).await?;
        }
        let sr = wait_request(client, ns, name, "Synced/Healthy", synced_and_healthy).await?;
        times.push(format!("{name} {:.1}s", t0.elapsed().as_secs_f64()));
        let status = sr.status.unwrap_or_default();
        let render = status.render.context("no render status")?;
        let sync = status.sync.context("no sync status")?;
        ensure!(
            sync.revision == render.revision,
            "{name}: synced {} but rendered {}",
            sync.revision,
            render.revision
        );
        if name == "invoices" {
            let schedule = field(c, &["get", "cronjob", name, "-n", ns], "{.spec.schedule}")?;
            ensure!(!schedule.is_empty(), "no CronJob {ns}/{name} in the cluster");
        } else {
            deployment_available(c, ns, name)?;
        }
        wait_check(client, ns, name, "argocd-synced", true).await?;
        wait_check(client, ns, name, "argocd-healthy", true).await?;
    }
    eprintln!("     to Synced/Healthy: {}", times.join(", "));
    Ok(())
}

/// The canary route: a copy of microservice at `version` with a 20% →
/// 100% rollout policy; `marker` is appended to its SLO template (a real
/// template change), and `unschedulable_deployments` gives its Deployments a node
/// label no node has and a 10 s progress deadline.
fn canary_route(c: &Cluster, version: &str, marker: &str, unschedulable_deployments: bool) -> Result<String> {
    let yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    r["metadata"] = serde_yaml::from_str("name: e2e-canary")?;
    r.as_mapping_mut().context("route")?.remove("status");
    r["spec"]["version"] = version.into();
    r["spec"]["rollout"] =
        serde_yaml::from_str("steps: [{percent: 20, pause: 5s}, {percent: 100}]\nhealthDeadline: 100s\n")?;
    let files = r["spec"]["templates"]["inline"]
        .as_sequence_mut()
        .context("templates.inline")?;
    let slo = files
        .iter_mut()
        .find(|f| f["path"].as_str() == Some("slo.yaml"))
        .context("no slo.yaml template")?;
    let content = slo["content"].as_str().unwrap_or_default().to_string();
    slo["content"] = format!("{content}# {marker}\n").into();
    if unschedulable_deployments {
        unschedulable(files)?;
    }
    Ok(serde_yaml::to_string(&r)?)
}

/// The rollout's status once `done` holds for it, and every summary seen
/// on the way (in order, each once).
async fn wait_rollout(
    client: &Client,
    what: &str,
    timeout: Duration,
    done: impl Fn(&paver_crds::RolloutStatus) -> bool,
) -> Result<(paver_crds::RolloutStatus, Vec<String>)> {
    let api: Api<paver_crds::PaveRoute> = Api::all(client.clone());
    let seen = std::sync::Mutex::new(Vec::<String>::new());
    let res = wait_for(what, timeout, || {
        let (api, seen, done) = (&api, &seen, &done);
        async move {
            let r = api.get("e2e-canary").await?;
            let Some(rollout) = r.status.and_then(|s| s.rollout) else {
                return Ok(None);
            };
            if let Ok(mut s) = seen.lock()
                && s.last() != Some(&rollout.summary)
            {
                s.push(rollout.summary.clone());
            }
            Ok(done(&rollout).then_some(rollout))
        }
    })
    .await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let rollout = res.with_context(|| format!("rollout summaries seen: {seen:?}"))?;
    Ok((rollout, seen))
}

/// Route versions and a health-gated canary rollout with real Argo CD: 20
/// requests on a route, 5 pinned to `^1.0`. `paver diff --cluster`
/// previews 2.0.0 (15 changed, 5 unchanged), the operator writes the same
/// summary before its first step, the rollout goes 20% → 100% with each
/// step Healthy, and the 15 renders committed equal the preview's byte for
/// byte (its digests) while the 5 pinned stay at 1.0.0 with one commit.
/// Then 2.0.1, whose Deployments cannot be scheduled: the first step goes
/// Degraded, the rollout halts, and that step's requests are committed
/// back at 2.0.0 and Healthy, the others never left it.
pub async fn route_versions_roll_out_in_health_gated_steps(env: &mut Env) -> Result<()> {
    require()?;
    let (c, client) = (&env.cluster, &env.client);
    let ns = "e2e-argocd-canary";
    namespace(c, ns)?;
    root_application(c)?;
    c.apply(&canary_route(c, "1.0.0", "version one", false)?)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let names: Vec<String> = (0..20).map(|i| format!("svc-{i:02}")).collect();
    let pinned = |name: &str| name < "svc-05";
    let docs: Vec<String> = names
        .iter()
        .map(|name| {
            example("orders-api.yaml", ns, name, |v| {
                v["spec"]["route"] = "e2e-canary".into();
                v["spec"]["parameters"]["compute"]["replicas"] = 1.into();
                if pinned(name) {
                    v["spec"]["routeVersion"] = "^1.0".into();
                }
            })
        })
        .collect::<Result<_>>()?;
    c.apply(&docs.join("---\n"))?;
    for name in &names {
        wait_request(client, ns, name, "Synced and Healthy at 1.0.0", |s| {
            synced_and_healthy(s) && s.render.as_ref().is_some_and(|r| r.route_version == "1.0.0")
        })
        .await?;
    }
    let clone = c.remote().clone_repo()?;
    let dir = |name: &str| format!("{ns}/{name}");
    let before: Vec<usize> = names
        .iter()
        .map(|n| clone.commits_for(&dir(n)).map(|c| c.len()))
        .collect::<Result<_>>()?;

    // The preview, offline against the cluster, before anything moves.
    let v2 = canary_route(c, "2.0.0", "version two", false)?;
    let file = c.state.join("e2e-canary-2.0.0.yaml");
    std::fs::write(&file, &v2)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paver"))
        .args(["diff", "--cluster", "-o", "json", "--repo-url", &c.var("GIT_URL")])
        .args([
            "--argocd-destination-server",
            &c.var("PAVER_E2E_APISERVER"),
            "--route",
        ])
        .arg(&file)
        .env("KUBECONFIG", c.var("PAVER_E2E_ADMIN_KUBECONFIG"))
        .output()?;
    let preview: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("paver diff: {}", String::from_utf8_lossy(&out.stderr)))?;
    let summary = &preview["summary"];
    ensure!(
        summary["changed"] == 15 && summary["unchanged"] == 5 && summary["wouldFail"] == 0,
        "preview summary {summary}"
    );
    let mut digests = std::collections::BTreeMap::new();
    for e in preview["entries"].as_array().context("entries")? {
        let request = e["request"].as_str().unwrap_or_default().to_string();
        let name = request.rsplit('/').next().unwrap_or_default().to_string();
        let changed = e["change"] == "changed";
        ensure!(changed != pinned(&name), "{request}: {}", e["change"]);
        if changed {
            ensure!(
                e["files"].as_array().is_some_and(|f| f
                    .iter()
                    .any(|f| f["diff"].as_str().is_some_and(|d| d.contains("+# version two")))),
                "{request}: no diff of the template change"
            );
            digests.insert(name, e["digest"].as_str().unwrap_or_default().to_string());
        }
    }
    ensure!(digests.len() == 15, "{} digests", digests.len());
    let steps = [
        paver_crds::RolloutStep {
            percent: Some(20),
            ..Default::default()
        },
        paver_crds::RolloutStep {
            percent: Some(100),
            ..Default::default()
        },
    ];
    let first_step: Vec<&String> = names
        .iter()
        .filter(|n| !pinned(n))
        .filter(|n| {
            paver::core::rollout::step_of(&steps, &format!("{ns}/{n}"), &Default::default()) == Some(0)
        })
        .collect();
    ensure!(
        !first_step.is_empty() && first_step.len() < 15,
        "the 20% step moves {} of the 15",
        first_step.len()
    );

    c.apply(&v2)?;
    let (started, _) = wait_rollout(
        client,
        "the 2.0.0 rollout started",
        Duration::from_secs(60),
        |r| r.to == "2.0.0",
    )
    .await?;
    let p = started.preview.clone().context("no preview on the rollout")?;
    ensure!(
        (p.requests, p.changed, p.unchanged, p.would_fail) == (20, 15, 5, 0),
        "the operator's preview {p:?}"
    );
    // Paused in its first step (healthy, then a 5 s pause), the rollout
    // survives a SIGKILL of the operator: the restarted one gates the head
    // from the status, so the second step's requests stay at 1.0.0.
    c.kubectl(&["annotate", "paveroute", "e2e-canary", "paver.dev/rollout=pause"])?;
    let (paused, _) = wait_rollout(client, "the 2.0.0 rollout paused", Duration::from_secs(30), |r| {
        r.state != paver_crds::RolloutState::Progressing
    })
    .await?;
    ensure!(
        paused.state == paver_crds::RolloutState::Paused && paused.step == 0,
        "{}: {}",
        paused.summary,
        paused.message
    );
    env.operator.kill()?;
    env.operator.restart()?;
    env.operator.wait_ready().await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), ns);
    for name in names.iter().filter(|n| !pinned(n) && !first_step.contains(n)) {
        let on = api
            .get(name)
            .await?
            .status
            .and_then(|s| s.render)
            .map(|r| r.route_version);
        ensure!(
            on.as_deref() == Some("1.0.0"),
            "{name} moved to {on:?} while the rollout was paused at step 1 across a restart"
        );
    }
    c.kubectl(&[
        "annotate",
        "paveroute",
        "e2e-canary",
        "--overwrite",
        "paver.dev/rollout=resume",
    ])?;
    let (done, seen) = wait_rollout(
        client,
        "the 2.0.0 rollout complete",
        Duration::from_secs(300),
        |r| r.state == paver_crds::RolloutState::Complete || r.state == paver_crds::RolloutState::Halted,
    )
    .await?;
    ensure!(
        done.state == paver_crds::RolloutState::Complete,
        "{}: {}",
        done.summary,
        done.message
    );
    ensure!(
        seen.iter().any(|s| s.contains("step 1/2 Progressing"))
            && seen.iter().any(|s| s.contains("step 2/2 Progressing")),
        "steps seen: {seen:?}"
    );
    let clone = c.remote().clone_repo()?;
    for (i, name) in names.iter().enumerate() {
        let sr = wait_request(
            client,
            ns,
            name,
            "Synced and Healthy after the rollout",
            synced_and_healthy,
        )
        .await?;
        let render = sr.status.and_then(|s| s.render).context("no render")?;
        let commits = clone.commits_for(&dir(name))?;
        if pinned(name) {
            ensure!(render.route_version == "1.0.0", "{name}: {render:?}");
            ensure!(
                commits.len() == before[i],
                "{name} was committed again: {commits:?}"
            );
        } else {
            ensure!(render.route_version == "2.0.0", "{name}: {render:?}");
            ensure!(
                render.digest == digests[name],
                "{name}: committed {} but the preview said {}",
                render.digest,
                digests[name]
            );
            ensure!(
                commits.len() == before[i] + 1
                    && commits
                        .last()
                        .is_some_and(|(_, m)| m.contains("Paver-Route: e2e-canary@2.0.0")),
                "{name}: {commits:?}"
            );
        }
    }
    let listed = c.kubectl(&["get", "paveroute", "e2e-canary"])?;
    eprintln!("     {}", listed.replace('\n', "\n     "));

    // 2.0.1 cannot be scheduled: the first step halts and goes back.
    c.apply(&canary_route(c, "2.0.1", "version two", true)?)?;
    let (halted, _) = wait_rollout(
        client,
        "the 2.0.1 rollout halted",
        Duration::from_secs(240),
        |r| r.to == "2.0.1" && r.state != paver_crds::RolloutState::Progressing,
    )
    .await?;
    ensure!(
        halted.state == paver_crds::RolloutState::Halted
            && halted.step == 0
            && halted.from == "2.0.0"
            && halted.message.contains("Degraded"),
        "{}: {}",
        halted.summary,
        halted.message
    );
    let mut back = Vec::new();
    for name in names.iter().filter(|n| !pinned(n)) {
        let sr = wait_request(client, ns, name, "back at 2.0.0, Synced and Healthy", |s| {
            synced_and_healthy(s) && s.render.as_ref().is_some_and(|r| r.route_version == "2.0.0")
        })
        .await?;
        back.push((name, sr));
    }
    let clone = c.remote().clone_repo()?;
    for (name, sr) in back {
        let render = sr.status.and_then(|s| s.render).context("no render")?;
        ensure!(
            render.digest == digests[name],
            "{name} is not back at its 2.0.0 render"
        );
        let routes: Vec<String> = clone
            .commits_for(&dir(name))?
            .iter()
            .filter_map(|(_, m)| {
                m.lines()
                    .find(|l| l.starts_with("Paver-Route: "))
                    .map(str::to_string)
            })
            .collect();
        if first_step.contains(&name) {
            ensure!(
                routes.ends_with(&[
                    "Paver-Route: e2e-canary@2.0.0".to_string(),
                    "Paver-Route: e2e-canary@2.0.1".to_string(),
                    "Paver-Route: e2e-canary@2.0.0".to_string(),
                ]),
                "{name} (first step): {routes:?}"
            );
        } else {
            ensure!(
                routes.last().map(String::as_str) == Some("Paver-Route: e2e-canary@2.0.0")
                    && !routes.iter().any(|r| r.ends_with("2.0.1")),
                "{name} (never moved): {routes:?}"
            );
        }
    }
    let events = c.kubectl(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=e2e-canary,reason=RolloutHalted",
        "-o",
        "name",
    ])?;
    ensure!(!events.trim().is_empty(), "no RolloutHalted Event");
    let listed = c.kubectl(&["get", "paveroute", "e2e-canary"])?;
    ensure!(
        listed.contains("2.0.0->2.0.1 step 1/2 Halted")
            && listed.contains("2.0.0=15")
            && listed.contains("1.0.0=5"),
        "{listed}"
    );
    eprintln!("     {}", listed.replace('\n', "\n     "));
    // The annotation aborts it (every request is at 2.0.0 already) and is removed.
    c.kubectl(&["annotate", "paveroute", "e2e-canary", "paver.dev/rollout=abort"])?;
    let (aborted, _) = wait_rollout(
        client,
        "the 2.0.1 rollout aborted",
        Duration::from_secs(30),
        |r| r.state == paver_crds::RolloutState::Aborted,
    )
    .await?;
    ensure!(aborted.message.contains("back at 2.0.0"), "{}", aborted.message);
    wait_for(
        "the rollout annotation removed",
        Duration::from_secs(30),
        || async {
            let a = field(c, &["get", "paveroute", "e2e-canary"], "{.metadata.annotations}")?;
            Ok((!a.contains("paver.dev/rollout")).then_some(()))
        },
    )
    .await?;
    // A pinned request whose range no longer matches anything says so and
    // keeps its last render.
    let kept = api
        .get("svc-00")
        .await?
        .status
        .and_then(|s| s.render)
        .context("no render")?;
    c.kubectl(&[
        "patch",
        "servicerequest",
        "svc-00",
        "-n",
        ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"routeVersion":"^9.0"}}"#,
    ])?;
    let sr = wait_request(client, ns, "svc-00", "NoMatchingRouteVersion", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Validated" && c.status == "False" && c.reason == "NoMatchingRouteVersion")
    })
    .await?;
    let status = sr.status.unwrap_or_default();
    let validated = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Validated")
        .context("Validated")?;
    ensure!(
        validated.message.contains("satisfies ^9.0") && validated.message.contains("1.0.0, 2.0.0, 2.0.1"),
        "{validated:?}"
    );
    ensure!(
        status.render.as_ref() == Some(&kept),
        "the last render was not kept: {:?}",
        status.render
    );
    // Out of the way of the scenarios after this one.
    c.kubectl(&["delete", "servicerequests", "--all", "-n", ns, "--wait=false"])?;
    Ok(())
}
