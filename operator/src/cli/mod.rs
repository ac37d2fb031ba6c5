//! The `paver` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Paver turns ServiceRequests into validated, policy-checked, rendered
/// manifests in a GitOps repository. The same checks run here, offline.
#[derive(Parser, Debug)]
#[command(name = "paver", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every Paver CustomResourceDefinition as one YAML stream
    /// (pipe it to `kubectl apply -f -`), or write one file per CRD.
    Crds {
        /// Write `<plural>.yaml` files into this folder instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<std::path::PathBuf>,
    },
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crds { out_dir: None } => {
            print!("{}", paver_crds::stream());
            ExitCode::SUCCESS
        }
        Command::Crds { out_dir: Some(dir) } => {
            for (file, crd) in paver_crds::all() {
                let path = dir.join(file);
                if let Err(e) = std::fs::write(&path, paver_crds::to_yaml(&crd)) {
                    eprintln!("error: failed to write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
    }
}
