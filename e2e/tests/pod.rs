//! The operator as it runs in a cluster: its probes, two replicas (failover
//! after SIGKILL, hand-over on SIGTERM within the grace period), and a
//! control plane restarted under load, as every upgrade restarts it. With
//! `PAVER_E2E_IMAGE` (as `make test` sets it) every operator here runs from
//! the image, in the Deployment's Pod shape (support::Pod).

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use paver_crds::Phase;

use crate::{
    Env, RESYNC, namespace, support,
    support::{ClusterExt as _, Operator, example, http_get, operator_image, wait_for, wait_phase},
};

/// The Deployment's `terminationGracePeriodSeconds` (the Kubernetes default
/// the chart keeps): SIGTERM to exit must fit in it.
const GRACE: Duration = Duration::from_secs(30);

async fn readyz(op: &Operator) -> String {
    http_get(&op.readyz())
        .await
        .unwrap_or_else(|e| format!("not ready: {e:#}"))
}

/// Waits until the API server's /readyz answers (after a restart).
async fn api_server_ready(env: &Env, what: &str) -> Result<()> {
    wait_for(what, Duration::from_secs(90), || async {
        Ok(env.cluster.kubectl(&["get", "--raw", "/readyz"]).ok().map(drop))
    })
    .await
}

/// Waits until `op`'s /readyz body starts with `want`; how long it took.
async fn wait_readyz(op: &Operator, want: &str, within: Duration) -> Result<Duration> {
    let started = Instant::now();
    let url = op.readyz();
    wait_for(&format!("/readyz to say {want:?}"), within, || {
        let url = url.clone();
        async move {
            Ok(http_get(&url)
                .await
                .ok()
                .filter(|b| b.starts_with(want))
                .map(drop))
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// /healthz and /readyz; a second replica stands by (ready, saying so);
/// SIGKILL of the leader hands over within the Lease's duration; SIGTERM of
/// the new leader ends it within the grace period, exit 0, Lease released,
/// so the first takes over at once.
pub async fn operator_pod_probes_failover_and_sigterm(env: &mut Env) -> Result<()> {
    let image = operator_image();
    ensure!(
        image.is_none() || env.operator.runs_from_image(),
        "PAVER_E2E_IMAGE is set but the operator does not run from it"
    );
    eprintln!(
        "     the operator runs {}",
        match &image {
            Some(i) => format!("from the image {}", i.display()),
            None => "as a local process (PAVER_E2E_IMAGE is not set)".to_string(),
        }
    );
    env.operator.wait_ready().await?;
    let healthz = http_get(&env.operator.metrics.replace("/metrics", "/healthz")).await?;
    ensure!(healthz.trim() == "ok", "/healthz said {healthz:?}");
    let body = readyz(&env.operator).await;
    ensure!(
        body.starts_with("ready: leading"),
        "the leader's /readyz said {body:?}"
    );

    // A second replica: ready as a standby, leading nothing.
    let mut standby = Operator::start_with(&env.cluster, RESYNC, &env.operator_args)?;
    wait_readyz(&standby, "ready: standing by", Duration::from_secs(60)).await?;
    ensure!(
        standby.counter("paver_leader").await? == 0.0 && env.operator.counter("paver_leader").await? == 1.0,
        "paver_leader: the leader and the standby do not say 1 and 0"
    );

    // SIGKILL of the leader: the Lease is not released; the standby takes it
    // once it expires (--lease-duration) and leads after its caches sync.
    env.operator.kill()?;
    let failover = wait_readyz(&standby, "ready: leading", Duration::from_secs(60)).await?;
    eprintln!(
        "     failover after SIGKILL of the leader: {:.1} s (Lease duration 15 s, retry 2 s, then the caches' lists)",
        failover.as_secs_f64()
    );
    ensure!(
        failover < Duration::from_secs(30),
        "the standby took {failover:?} to lead after the leader was killed"
    );
    let ns = "e2e-failover";
    namespace(&env.cluster, ns)?;
    env.cluster
        .apply(&example("orders-api.yaml", ns, "after-failover", |_| {})?)?;
    wait_phase(&env.client, ns, "after-failover", Phase::Rendered).await?;

    // The killed one comes back as the standby.
    env.operator.restart()?;
    wait_readyz(&env.operator, "ready: standing by", Duration::from_secs(60)).await?;

    // SIGTERM to the leader: it finishes what runs, releases the Lease and
    // exits 0 within the grace period; the other leads at once.
    standby.signal("TERM");
    let stopping = Instant::now();
    let Some(status) = standby.wait_exit(GRACE) else {
        bail!("the leader did not exit within {GRACE:?} of SIGTERM");
    };
    let stopped = stopping.elapsed();
    ensure!(status.success(), "the leader exited with {status} on SIGTERM");
    let handover = wait_readyz(&env.operator, "ready: leading", Duration::from_secs(30)).await?;
    eprintln!(
        "     SIGTERM: the leader exited in {:.1} s; the standby led {:.1} s later (Lease released)",
        stopped.as_secs_f64(),
        handover.as_secs_f64()
    );
    ensure!(
        handover < Duration::from_secs(10),
        "hand-over after a released Lease took {handover:?}"
    );
    let commits = env
        .cluster
        .remote()
        .clone_repo()?
        .commits_for(&format!("{ns}/after-failover"))?;
    ensure!(
        commits.len() == 1,
        "{ns}/after-failover has {} commits, want 1",
        commits.len()
    );
    Ok(())
}

/// The API server stopped for 20 s, then etcd for 10 s, during a burst of
/// 120 requests: the operator steps down when it cannot renew its Lease,
/// keeps running, leads again once the control plane is back, and commits
/// every request exactly once.
pub async fn control_plane_restarts_under_load(env: &mut Env) -> Result<()> {
    let ns = "e2e-restarts";
    namespace(&env.cluster, ns)?;
    let names: Vec<String> = (1..=120).map(|i| format!("svc-{i:03}")).collect();
    let docs: Vec<String> = names
        .iter()
        .map(|n| example("orders-api.yaml", ns, n, |_| {}))
        .collect::<Result<_>>()?;
    let log_before = std::fs::metadata(&env.operator.log).map(|m| m.len()).unwrap_or(0);
    env.cluster.apply(&docs.join("---\n"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t = Instant::now();
    env.cluster.script("apiserver-stop")?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    ensure!(
        env.operator.alive(),
        "the operator exited while the API server was down"
    );
    env.cluster.script("apiserver-start")?;
    api_server_ready(env, "the API server to answer again").await?;
    let back = wait_readyz(&env.operator, "ready: leading", Duration::from_secs(60)).await?;
    eprintln!(
        "     API server down 20 s: the operator led again {:.1} s after it answered ({:.1} s after the stop)",
        back.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    env.cluster.script("etcd-stop")?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    ensure!(env.operator.alive(), "the operator exited while etcd was down");
    env.cluster.script("etcd-start")?;
    api_server_ready(env, "the API server to be ready on etcd again").await?;
    wait_readyz(&env.operator, "ready: leading", Duration::from_secs(60)).await?;
    ensure!(
        env.operator.alive(),
        "the operator exited after the control-plane restarts"
    );

    support::rendered_and_committed_once(&env.client, &env.cluster.remote(), ns, &names).await?;
    let log = std::fs::read(&env.operator.log)?;
    let log = String::from_utf8_lossy(&log[log_before.min(log.len() as u64) as usize..]);
    ensure!(
        log.contains("stepping down") || log.contains("stepped down"),
        "the API server was down 20 s (> the 10 s renew deadline) but the operator never stepped down"
    );
    ensure!(
        !log.contains("leadership lost; stopping"),
        "the operator stopped on losing the Lease instead of campaigning again"
    );
    Ok(())
}
