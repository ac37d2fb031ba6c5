use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc, for Rust and for libgit2 alike
/// (unprefixed): regorus and minijinja allocate many small short-lived
/// values, and glibc kept the pages they freed. Measured (bench/profiles.md):
/// a 10,000-request burst peaks at 131-133 MiB instead of 139-144 and idles
/// at 112-114 instead of 138; the policy stage's median is 6-20% lower.
/// mimalloc was faster still on policy but peaked higher. Its settings are
/// in .cargo/config.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    paver::cli::run(paver::cli::Cli::parse())
}
