//! Files rendered per second for every shipped route: the route's example
//! request rendered again and again through the core's `render` (the
//! function the operator and `paver render` call), parameters validated
//! and the estimate computed once beforehand.

use std::{path::Path, time::Instant};

use anyhow::bail;
use kube::ResourceExt;
use paver::core::render::render;
use serde::Serialize;
use serde_json::Value;

use crate::{
    env,
    stats::{self, Summary, fmt_us},
};

#[derive(clap::Args)]
pub struct Args {
    /// Timed renders per route (after warmup).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Untimed renders before timing.
    #[arg(long, default_value_t = 100)]
    warmup: usize,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: env::Header,
    iterations: usize,
    warmup: usize,
    routes: Vec<RouteReport>,
    /// Routes with no example request to render.
    routes_without_example: Vec<String>,
}

#[derive(Serialize)]
struct RouteReport {
    route: String,
    example: String,
    /// Files one render produces (manifests + the Argo CD Application).
    files: usize,
    bytes: usize,
    /// One whole render.
    render: Summary,
    /// `files / mean render time`: one thread rendering back to back.
    files_per_sec: f64,
    renders_per_sec: f64,
    /// The first render of this route in the process.
    first_render_us: f64,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<Value> {
    let header = env::header("render", root, None);
    env::print_header(&header);
    let (_, catalog) = env::catalog()?;
    let examples = env::examples(root)?;
    let options = env::render_options();

    let mut routes = Vec::new();
    let mut without = Vec::new();
    println!(
        "{:<30} {:<20} {:>5} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "route", "example", "files", "bytes", "p50", "p99", "renders/s", "files/s"
    );
    for route in catalog.routes() {
        let Some((stem, req)) = examples.iter().find(|(_, r)| r.spec.route == route.name) else {
            without.push(route.id());
            continue;
        };
        let walked = env::walk(&catalog, req)?;
        if walked.route.id() != route.id() {
            // The example selects another version of this route.
            without.push(route.id());
            continue;
        }
        let t = Instant::now();
        let first = render(route, req, &walked.parameters, &walked.estimate, &options)?;
        let first_render_us = t.elapsed().as_secs_f64() * 1e6;
        if first.files.is_empty() {
            bail!("route {} rendered no files for {}", route.id(), req.name_any());
        }
        let summary = stats::time(args.warmup, args.iterations, || {
            render(route, req, &walked.parameters, &walked.estimate, &options)
        });
        let files = first.files.len();
        // Back to back on one thread: the mean render time sets the rate.
        let renders_per_sec = 1e6 / summary.mean_us;
        let r = RouteReport {
            route: route.id(),
            example: stem.clone(),
            files,
            bytes: first.files.values().map(String::len).sum(),
            render: summary,
            files_per_sec: files as f64 * renders_per_sec,
            renders_per_sec,
            first_render_us,
        };
        println!(
            "{:<30} {:<20} {:>5} {:>8} {:>10} {:>10} {:>10.0} {:>10.0}",
            r.route,
            r.example,
            r.files,
            r.bytes,
            fmt_us(r.render.median_us),
            fmt_us(r.render.p99_us),
            r.renders_per_sec,
            r.files_per_sec
        );
        routes.push(r);
    }
    if !without.is_empty() {
        println!("no example request for: {}", without.join(", "));
    }
    Ok(serde_json::to_value(Report {
        header,
        iterations: args.iterations,
        warmup: args.warmup,
        routes,
        routes_without_example: without,
    })?)
}
