//! `paver-bench`: programs that report figures, not timed tests.
//!
//! - `policy`: Paver's whole policy stage per example request against real
//!   OPA on the same modules, data, input and queries; bundle activation
//!   and the cold first evaluation.
//! - `render`: files rendered per second for every shipped route.
//! - `preview`: the migration preview of a route version over N requests
//!   (`paver diff`'s core), seconds and peak memory.
//! - `git`: commits per second and requests per commit when a burst of
//!   renders reaches the operator's Git writer, against a local bare
//!   repository and a loopback smart-HTTP Git server.
//! - `burst`: end to end on the real control plane (e2e/cluster.sh): N
//!   ServiceRequests created at once (or `--trickle K`, one every 200 ms),
//!   time to Committed, reconciles and API writes per request (operator and
//!   API server), commits, the operator's memory, then a quiet period.
//! - `report`: BENCHMARKS.md and its charts from the JSON files.
//!
//! Each prints a table and, with `--json PATH`, writes its figures with
//! the machine's CPU count, the versions used and the date.

/// The same allocator as the `paver` binary, so the in-process figures
/// (policy, render, Git) are the operator's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod burst;
mod env;
mod git;
mod policy;
mod preview;
mod render;
mod report;
mod stats;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "paver-bench", about = "Paver's benchmarks (figures, not tests)")]
struct Cli {
    /// Workspace root (where examples/ lives).
    #[arg(long, global = true, default_value = env::DEFAULT_ROOT)]
    root: PathBuf,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The policy stage per example against OPA; activation and cold evaluation.
    Policy(policy::Args),
    /// Files rendered per second per shipped route.
    Render(render::Args),
    /// The migration preview of a route version over N requests.
    Preview(preview::Args),
    /// Git writer burst: commits/s and requests per commit, local and HTTP.
    Git(git::Args),
    /// End to end: a burst (or trickle) of ServiceRequests on the e2e control plane.
    Burst(burst::Args),
    /// Write BENCHMARKS.md (and its SVG charts) from the JSON files.
    Report(report::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match &cli.command {
        Command::Policy(args) => policy::run(&cli.root, args)?,
        Command::Render(args) => render::run(&cli.root, args)?,
        Command::Preview(args) => preview::run(&cli.root, args)?,
        Command::Git(args) => git::run(&cli.root, args)?,
        Command::Burst(args) => burst::run(&cli.root, args)?,
        Command::Report(args) => report::run(args)?,
    };
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, format!("{text}\n"))
            .with_context(|| format!("failed to write {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
