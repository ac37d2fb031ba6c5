use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc, for Rust and for libgit2 alike
/// (unprefixed): regorus and minijinja allocate many small short-lived
/// values, and glibc kept the pages they freed. The policy stage runs about
/// twice as fast, and a 10,000-request burst peaks lower (BENCHMARKS.md,
/// bench/profiles.md). Its settings are in .cargo/config.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    paver::cli::run(paver::cli::Cli::parse())
}
