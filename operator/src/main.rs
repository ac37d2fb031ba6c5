use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    paver::cli::run(paver::cli::Cli::parse())
}
