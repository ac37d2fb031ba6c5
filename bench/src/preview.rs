//! The migration preview of a route version over many requests: N copies
//! of the microservice example (a fifth pinned to `^1.0`) judged and
//! rendered against the shipped catalog and against one where
//! microservice 2.0.0 (a template change) is the head, compared file by
//! file — `core::preview::preview`, what `paver diff` and the operator run.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, ensure};
use kube::ResourceExt;
use paver::{
    content::Content,
    core::{
        preview::preview,
        verdict::{Catalog, compile_route},
    },
};
use serde::Serialize;
use serde_json::Value;

use crate::env;

#[derive(clap::Args)]
pub struct Args {
    /// Requests previewed.
    #[arg(long, default_value_t = 10_000)]
    requests: usize,
    /// Threads (default: every CPU).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: env::Header,
    requests: usize,
    threads: usize,
    /// Requests on 2.0.0's route, changed / unchanged / would fail.
    changed: usize,
    unchanged: usize,
    would_fail: usize,
    /// The whole preview (two decisions and a file comparison per request).
    seconds: f64,
    requests_per_sec: f64,
    /// Bytes of unified diff produced.
    diff_bytes: usize,
    /// VmHWM of this process after the preview, MiB.
    peak_rss_mib: f64,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<Value> {
    let header = env::header("preview", root, None);
    env::print_header(&header);
    let (content, before) = env::catalog()?;
    let old = content
        .routes
        .iter()
        .find(|r| r.name_any() == "microservice")
        .context("no microservice route")?
        .clone();
    let mut new = old.clone();
    env::microservice_v2(&mut new)?;
    let mut after_content = Content {
        routes: content.routes.clone(),
        bundles: content.bundles.clone(),
    };
    after_content.routes.retain(|r| r.name_any() != "microservice");
    after_content.routes.push(new);
    let (mut after, problems) = Catalog::from_content(after_content, chrono::Utc::now());
    ensure!(problems.is_empty(), "{problems:?}");
    let Ok(older) = compile_route(old) else {
        anyhow::bail!("microservice 1.0.0 does not compile")
    };
    after.set_older_versions("microservice", vec![older]);

    let template = env::examples(root)?
        .into_iter()
        .find(|(stem, _)| stem == "orders-api")
        .map(|(_, r)| r)
        .context("no orders-api example")?;
    let requests: Vec<_> = (0..args.requests)
        .map(|i| {
            let mut r = template.clone();
            let name = format!("svc-{i:05}");
            r.metadata.name = Some(name.clone());
            if let Some(repo) = r
                .spec
                .parameters
                .get_mut("repository")
                .and_then(Value::as_object_mut)
            {
                repo.insert("name".into(), Value::String(name));
            }
            if i % 5 == 0 {
                r.spec.route_version = Some("^1.0".into());
            }
            r
        })
        .collect();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let t = Instant::now();
    let p = preview(
        &before,
        &after,
        &requests,
        &["microservice".to_string()],
        &env::render_options(),
        chrono::Utc::now(),
        threads,
    );
    let seconds = t.elapsed().as_secs_f64();
    let diff_bytes = p
        .entries
        .iter()
        .flat_map(|e| e.files.iter().map(|f| f.diff.len()))
        .sum();
    let report = Report {
        header,
        requests: p.summary.requests,
        threads,
        changed: p.summary.changed,
        unchanged: p.summary.unchanged,
        would_fail: p.summary.would_fail,
        seconds,
        requests_per_sec: p.summary.requests as f64 / seconds,
        diff_bytes,
        peak_rss_mib: crate::burst::proc_memory(std::process::id()).1,
    };
    println!(
        "preview of microservice 2.0.0 over {} requests on {threads} thread(s): {:.1} s ({:.0} requests/s); {}; {:.1} MiB of diffs; peak RSS {:.0} MiB",
        report.requests,
        report.seconds,
        report.requests_per_sec,
        p.summary,
        diff_bytes as f64 / (1024.0 * 1024.0),
        report.peak_rss_mib
    );
    ensure!(
        report.changed + report.unchanged == report.requests,
        "not every request previewed cleanly: {}",
        p.summary
    );
    Ok(serde_json::to_value(report)?)
}
