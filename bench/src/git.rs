//! The operator's Git writer under a burst of renders: commits per second
//! and requests per commit, against a local bare repository (a file path)
//! and against a loopback smart-HTTP server (`git-http-backend` behind the
//! test suite's tiny server, basic auth, one connection per request).
//!
//! The changes are real renders of the example requests (each copied under
//! a new name), made before the clock starts; then they are handed to
//! `WriterHandle::submit` all at once, as reconciles finishing together
//! would, with the operator's default `WriterOptions`. The writer decides
//! how many commits that takes.

#[path = "../../operator/tests/support/git_http.rs"]
mod git_http;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use git_http::GitHttpServer;
use kube::ResourceExt;
use paver::git::{Change, Credentials, GitConfig, WriterHandle, WriterOptions};
use serde::Serialize;
use serde_json::Value;

use crate::{
    env,
    stats::{Summary, fmt_us},
};

const USER: &str = "paver-bench";
const TOKEN: &str = "bench-token-not-a-secret";
const BRANCH: &str = "main";

#[derive(clap::Args)]
pub struct Args {
    /// Changes in the burst.
    #[arg(long, default_value_t = 500)]
    burst: usize,
    /// Changes submitted one after another (each awaited) after the burst.
    #[arg(long, default_value_t = 20)]
    sequential: usize,
    /// Only the local bare repository.
    #[arg(long)]
    local_only: bool,
    /// Only the HTTP server.
    #[arg(long, conflicts_with = "local_only")]
    http_only: bool,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: env::Header,
    writer: WriterSettings,
    burst: usize,
    sequential: usize,
    files_per_change: f64,
    targets: Vec<TargetReport>,
}

#[derive(Serialize)]
struct WriterSettings {
    max_batch: usize,
    window_ms: u128,
    retry_attempts: u32,
}

#[derive(Serialize)]
struct TargetReport {
    target: &'static str,
    /// All changes submitted at once.
    burst: Phase,
    /// The same changes again: nothing to commit.
    burst_unchanged: Phase,
    /// One change at a time, each awaited before the next.
    sequential: Phase,
}

#[derive(Serialize, Default)]
struct Phase {
    changes: usize,
    wall_ms: f64,
    commits: usize,
    commits_per_sec: f64,
    changes_per_sec: f64,
    /// Changes (ServiceRequests) per commit.
    changes_per_commit: Option<f64>,
    /// Batches the writer formed (a batch with nothing to change makes no commit).
    batches: usize,
    batch_sizes: Vec<usize>,
    /// HTTP requests the Git server served during the phase (None: local).
    http_requests: Option<usize>,
    http_requests_per_commit: Option<f64>,
    http_requests_per_batch: Option<f64>,
    /// Submit to resolved, per change.
    latency: Option<Summary>,
    /// Per batch, from the writer's own metrics: medians in ms.
    fetch_ms_median: f64,
    commit_ms_median: f64,
    push_ms_median: f64,
    push_attempts_max: u32,
    failures: usize,
}

/// `count` changes rendered from the examples, each under a new name.
fn changes(root: &Path, prefix: &str, count: usize) -> anyhow::Result<Vec<Change>> {
    let (_, catalog) = env::catalog()?;
    let examples = env::examples(root)?;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (_, base) = &examples[i % examples.len()];
        let mut req = base.clone();
        let name = format!("{}-{prefix}{i:04}", base.name_any());
        req.metadata.name = Some(name.clone());
        let walked = env::walk(&catalog, &req)?;
        let key = format!("{}/{name}", req.namespace().unwrap_or_default());
        out.push(Change {
            key: key.clone(),
            dir: walked.rendered.dir.clone(),
            files: walked.rendered.files.into(),
            delete: false,
            moved_from: None,
            trailers: vec![("Paver-Request".into(), key.clone())],
            summary: format!("render {key} (generation 1) with {}", walked.route.id()),
        });
    }
    Ok(out)
}

fn commit_count(remote: &Path) -> anyhow::Result<usize> {
    let repo = git2::Repository::open_bare(remote)?;
    let Ok(head) = repo.refname_to_id(&format!("refs/heads/{BRANCH}")) else {
        return Ok(0);
    };
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    Ok(walk.count())
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::stats::percentile(&v, 50.0)
}

struct Target {
    name: &'static str,
    remote: PathBuf,
    config: GitConfig,
    server: Option<GitHttpServer>,
}

impl Target {
    fn http_requests(&self) -> Option<usize> {
        self.server.as_ref().map(|s| s.requests.load(Ordering::SeqCst))
    }
}

/// Submits `changes` (all at once, or one by one) and measures.
async fn phase(
    target: &Target,
    writer: &WriterHandle,
    changes: Vec<Change>,
    all_at_once: bool,
) -> anyhow::Result<Phase> {
    let n = changes.len();
    let commits_before = commit_count(&target.remote)?;
    let requests_before = target.http_requests();
    let started = Instant::now();
    let mut results = Vec::with_capacity(n);
    if all_at_once {
        let pending: Vec<_> = changes
            .into_iter()
            .map(|c| {
                let fut = writer.submit(c);
                async move {
                    let r = fut.await;
                    (r, started.elapsed())
                }
            })
            .collect();
        results = futures::future::join_all(pending).await;
    } else {
        for c in changes {
            let t = Instant::now();
            let r = writer.submit(c).await;
            results.push((r, t.elapsed()));
        }
    }
    let wall = started.elapsed();
    let commits = commit_count(&target.remote)? - commits_before;
    let http_requests = match (requests_before, target.http_requests()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    // One entry per batch, keyed by the revision it resolved to and its timings.
    let mut batches: BTreeMap<(String, Duration), paver::git::BatchMetrics> = BTreeMap::new();
    let mut failures = 0;
    let mut latencies = Vec::new();
    for (r, latency) in &results {
        latencies.push(*latency);
        match r {
            Ok(o) => {
                batches.insert(
                    (o.revision.clone().unwrap_or_default(), o.metrics.total),
                    o.metrics,
                );
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("{}: a change failed: {e}", target.name);
                }
            }
        }
    }
    let secs = wall.as_secs_f64();
    let per = |x: Option<usize>, d: usize| x.filter(|_| d > 0).map(|x| x as f64 / d as f64);
    Ok(Phase {
        changes: n,
        wall_ms: secs * 1000.0,
        commits,
        commits_per_sec: commits as f64 / secs,
        changes_per_sec: n as f64 / secs,
        changes_per_commit: per(Some(n), commits),
        batches: batches.len(),
        batch_sizes: batches.values().map(|m| m.batch_size).collect(),
        http_requests,
        http_requests_per_commit: per(http_requests, commits),
        http_requests_per_batch: per(http_requests, batches.len()),
        latency: Some(Summary::of(&latencies)),
        fetch_ms_median: median_ms(batches.values().map(|m| m.fetch.as_secs_f64() * 1000.0).collect()),
        commit_ms_median: median_ms(
            batches
                .values()
                .map(|m| m.commit.as_secs_f64() * 1000.0)
                .collect(),
        ),
        push_ms_median: median_ms(batches.values().map(|m| m.push.as_secs_f64() * 1000.0).collect()),
        push_attempts_max: batches.values().map(|m| m.attempts).max().unwrap_or(0),
        failures,
    })
}

fn target(name: &'static str, dir: &Path, http: bool) -> anyhow::Result<Target> {
    let srv = dir.join("srv");
    let remote = srv.join("gitops.git");
    let repo = git2::Repository::init_bare(&remote).context("failed to init the bare remote")?;
    repo.set_head(&format!("refs/heads/{BRANCH}"))?;
    let (url, credentials, server) = if http {
        let server =
            GitHttpServer::start(&srv, USER, TOKEN).context("failed to start the Git HTTP server")?;
        let username_file = dir.join("username");
        let token_file = dir.join("token");
        std::fs::write(&username_file, USER)?;
        std::fs::write(&token_file, TOKEN)?;
        (
            server.url("gitops.git"),
            Credentials::UserToken {
                username_file,
                token_file,
            },
            Some(server),
        )
    } else {
        (remote.display().to_string(), Credentials::None, None)
    };
    Ok(Target {
        name,
        remote: remote.clone(),
        config: GitConfig {
            url,
            branch: BRANCH.into(),
            workdir: dir.join("cache"),
            credentials,
            author_name: "Paver".into(),
            author_email: "paver@example.com".into(),
        },
        server,
    })
}

fn print_phase(target: &str, label: &str, p: &Phase) {
    let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}"));
    println!(
        "{:<6} {:<10} {:>6} {:>9.0} {:>7} {:>9.1} {:>10.0} {:>10} {:>8} {:>9} {:>10} {:>10}",
        target,
        label,
        p.changes,
        p.wall_ms,
        p.commits,
        p.commits_per_sec,
        p.changes_per_sec,
        opt(p.changes_per_commit),
        p.http_requests.map_or("-".into(), |r| r.to_string()),
        opt(p.http_requests_per_commit),
        p.latency.map_or("-".into(), |l| fmt_us(l.median_us)),
        p.latency.map_or("-".into(), |l| fmt_us(l.p99_us)),
    );
    if p.failures > 0 {
        println!("       {} changes FAILED", p.failures);
    }
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<Value> {
    if !Path::new(git_http::BACKEND).exists() && !args.local_only {
        bail!(
            "{} is missing (Debian's git package); pass --local-only to skip the HTTP target",
            git_http::BACKEND
        );
    }
    let header = env::header("git", root, None);
    env::print_header(&header);
    let options = WriterOptions::default();
    println!(
        "writer: max batch {}, window {} ms; burst of {} changes, then {} one at a time",
        options.max_batch,
        options.window.as_millis(),
        args.burst,
        args.sequential
    );
    let burst_changes = changes(root, "b", args.burst)?;
    let files_per_change =
        burst_changes.iter().map(|c| c.files.len()).sum::<usize>() as f64 / args.burst.max(1) as f64;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;

    let mut kinds = Vec::new();
    if !args.http_only {
        kinds.push(("local", false));
    }
    if !args.local_only {
        kinds.push(("http", true));
    }
    println!(
        "\n{:<6} {:<10} {:>6} {:>9} {:>7} {:>9} {:>10} {:>10} {:>8} {:>9} {:>10} {:>10}",
        "target",
        "phase",
        "changes",
        "wall ms",
        "commits",
        "commits/s",
        "changes/s",
        "chg/commit",
        "http req",
        "req/commit",
        "lat p50",
        "lat p99"
    );
    let mut targets = Vec::new();
    for (name, http) in kinds {
        let tmp = tempfile::tempdir()?;
        let t = target(name, tmp.path(), http)?;
        let report = runtime.block_on(async {
            let writer = WriterHandle::spawn(t.config.clone(), options);
            // Open the cache and create the branch before the clock starts, as
            // a running operator would have.
            let warm = changes(root, "w", 1)?;
            writer
                .submit(warm.into_iter().next().context("a warmup change")?)
                .await
                .context("warmup commit failed")?;
            let burst = phase(&t, &writer, burst_changes.clone(), true).await?;
            print_phase(name, "burst", &burst);
            let burst_unchanged = phase(&t, &writer, burst_changes.clone(), true).await?;
            print_phase(name, "unchanged", &burst_unchanged);
            let sequential = phase(&t, &writer, changes(root, "s", args.sequential)?, false).await?;
            print_phase(name, "sequential", &sequential);
            anyhow::Ok(TargetReport {
                target: name,
                burst,
                burst_unchanged,
                sequential,
            })
        })?;
        targets.push(report);
    }
    Ok(serde_json::to_value(Report {
        header,
        writer: WriterSettings {
            max_batch: options.max_batch,
            window_ms: options.window.as_millis(),
            retry_attempts: options.retry.attempts,
        },
        burst: args.burst,
        sequential: args.sequential,
        files_per_change,
        targets,
    })?)
}
