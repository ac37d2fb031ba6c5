//! The `paver` command line: the offline verdict (`validate`, `render`,
//! `diff`, `test`) and the operator, over the same core.

mod diff;
mod offline;

pub use offline::packed;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use crate::controller::OperatorConfig;

/// Paver turns ServiceRequests into validated, policy-checked, rendered
/// manifests in a GitOps repository. `validate`, `render` and `test` run
/// the operator's own checks offline, so a developer gets its verdict
/// before committing.
#[derive(Parser, Debug)]
#[command(name = "paver", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where routes and bundles come from (the ones built into paver by default).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Sources {
    /// Routes to use instead of the built-in ones: a `routes/` folder, one
    /// route folder, or packed YAML. Repeatable.
    #[arg(long = "routes", value_name = "PATH")]
    pub routes: Vec<PathBuf>,
    /// Policy bundles to use instead of the built-in ones: a
    /// `policy-bundles/` folder, one bundle folder, or packed YAML. Repeatable.
    #[arg(long = "bundles", value_name = "PATH")]
    pub bundles: Vec<PathBuf>,
    /// Judge against the cluster of the current kubeconfig context: its
    /// PaveRoutes and PolicyBundles (instead of the built-in ones) and the
    /// teams its namespaces are bound to (`paver.dev/team`), as the
    /// operator there would. Not with --routes or --bundles.
    #[arg(long, conflicts_with_all = ["routes", "bundles"])]
    pub cluster: bool,
}

/// Output format.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document, for machines.
    Json,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate ServiceRequests and evaluate policy: errors, violations,
    /// warnings, approval reasons and the cost estimate per request.
    /// Exit status: 0 allowed (possibly pending approval), 1 denied,
    /// 2 unusable input.
    Validate {
        /// ServiceRequest YAML files (several documents per file allowed), or
        /// folders: their *.yaml and *.yml files.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        sources: Sources,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Render the files the operator would commit for a request, and print
    /// a summary. Without --out, the files are printed.
    Render {
        /// A ServiceRequest YAML file.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        file: PathBuf,
        /// Write the files under this folder (as in the output repository).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Output repository URL written into the Argo CD Application.
        #[arg(
            long,
            value_name = "URL",
            default_value = "https://git.example.com/platform/gitops.git"
        )]
        repo_url: String,
        #[command(flatten)]
        sources: Sources,
    },
    /// Preview a route change before it is applied: every request on the
    /// route judged and rendered with the version in force and with the new
    /// one, the unified diff of each request's files that change, the
    /// requests that would newly fail validation, policy or the render, and
    /// a summary (N changed, N unchanged, N would fail). Requests pinned by
    /// `routeVersion` to the version in force stay on it, as they do in the
    /// cluster. Exit status: 0 none would fail, 1 some would, 2 unusable
    /// input.
    Diff {
        /// The new version: a route folder or PaveRoute YAML (repeatable,
        /// one route each).
        #[arg(long = "route", value_name = "PATH", required = true)]
        new_routes: Vec<PathBuf>,
        /// ServiceRequest YAML files or folders; with --cluster and none
        /// given, every ServiceRequest in the cluster.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        sources: Sources,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
        /// One line per file instead of the diffs, and unchanged requests listed.
        #[arg(long)]
        stat: bool,
        /// Output repository URL written into the Argo CD Application (the
        /// operator's `--repo-url`, for a preview byte-identical to its commits).
        #[arg(
            long,
            value_name = "URL",
            default_value = "https://git.example.com/platform/gitops.git"
        )]
        repo_url: String,
        /// The operator's `--argocd-destination-server`, if it sets one.
        #[arg(long, value_name = "URL")]
        argocd_destination_server: Option<String>,
    },
    /// Compile policy bundles and run their tests, like `opa test`, and
    /// lint routes' templates for values printed unescaped (`safe`, or an
    /// `autoescape` block, in YAML, workflow and CODEOWNERS files).
    /// Exit status 1 when a test fails, a bundle does not compile or a
    /// template is linted.
    Test {
        /// Bundle or route folders, `policy-bundles/` or `routes/` folders,
        /// or packed YAML; the built-in bundles and routes when none is given.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Print every test, not only failures.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print every Paver CustomResourceDefinition as one YAML stream
    /// (pipe it to `kubectl apply -f -`), or write one file per CRD.
    Crds {
        /// Write `<plural>.yaml` files into this folder instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Pack `routes/` and `policy-bundles/` into the PaveRoute and
    /// PolicyBundle YAML under `manifests/` (what the binary embeds) and
    /// the Helm chart's `charts/paver/files/`.
    Pack {
        /// Folder holding routes/, policy-bundles/, manifests/ and charts/.
        #[arg(long, value_name = "DIR", default_value = ".")]
        root: PathBuf,
    },
    /// Run the operator: watch ServiceRequests, PaveRoutes, PolicyBundles
    /// and Approvals, and commit renders to the output repository.
    Operator(Box<OperatorConfig>),
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate {
            files,
            sources,
            output,
        } => offline::validate(&files, &sources, output),
        Command::Render {
            file,
            out,
            repo_url,
            sources,
        } => offline::render(&file, out.as_deref(), &repo_url, &sources),
        Command::Diff {
            new_routes: routes,
            files,
            sources,
            output,
            stat,
            repo_url,
            argocd_destination_server,
        } => diff::diff(&diff::DiffArgs {
            routes,
            files,
            sources,
            output,
            stat,
            options: crate::core::render::RenderOptions {
                repo_url,
                revision: "main".into(),
                destination_server: argocd_destination_server,
            },
        }),
        Command::Test { paths, verbose } => offline::test(&paths, verbose),
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
        Command::Pack { root } => offline::pack(&root),
        Command::Operator(config) => operator(*config),
    }
}

fn operator(config: OperatorConfig) -> ExitCode {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if config.log_json {
        registry.with(fmt::layer().json().flatten_event(true)).init();
    } else {
        registry.with(fmt::layer()).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(crate::controller::run(config));
    // Blocking tasks (Git I/O) get a moment to finish; the process never hangs on them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator stopped");
            ExitCode::FAILURE
        }
    }
}
