//! What a reader needs to rerun or discount a figure: machine, versions,
//! date, and the shared setup (catalog, example requests).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use paver::{
    content::{Content, parse_requests},
    core::verdict::Catalog,
};
use paver_crds::ServiceRequest;
use serde::Serialize;

/// The workspace root this crate was built in.
pub const DEFAULT_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    pub os: String,
    pub arch: String,
    /// `/proc/loadavg` when the run started: other work on the machine.
    pub loadavg_at_start: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Versions {
    pub paver: String,
    /// `git describe --always --dirty` of the workspace, when available.
    pub paver_commit: Option<String>,
    /// regorus as locked in Cargo.lock.
    pub regorus: Option<String>,
    pub opa: Option<String>,
    pub rustc: Option<String>,
    /// Whether this binary was built with optimizations.
    pub release_build: bool,
}

#[derive(Debug, Serialize)]
pub struct Header {
    pub benchmark: &'static str,
    /// RFC 3339, UTC.
    pub date: String,
    pub machine: Machine,
    pub versions: Versions,
}

fn command_line(program: &Path, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

/// The version of `package` locked in `<root>/Cargo.lock`.
pub fn locked_version(root: &Path, package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"") {
            return lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
                .map(|v| v.trim_matches('"').to_string());
        }
    }
    None
}

/// `opa version`'s version line.
pub fn opa_version(opa: &Path) -> Option<String> {
    command_line(opa, &["version"], None)
        .and_then(|l| l.strip_prefix("Version:").map(|v| v.trim().to_string()))
}

pub fn header(benchmark: &'static str, root: &Path, opa: Option<&Path>) -> Header {
    Header {
        benchmark,
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .map(|s| s.trim().to_string()),
        },
        versions: Versions {
            paver: env!("CARGO_PKG_VERSION").to_string(),
            paver_commit: command_line(Path::new("git"), &["describe", "--always", "--dirty"], Some(root)),
            regorus: locked_version(root, "regorus"),
            opa: opa.and_then(opa_version),
            rustc: command_line(Path::new("rustc"), &["--version"], None),
            release_build: !cfg!(debug_assertions),
        },
    }
}

pub fn print_header(h: &Header) {
    println!(
        "paver-bench {} — {} — {} CPUs ({}/{}), load {}",
        h.benchmark,
        h.date,
        h.machine.cpus,
        h.machine.os,
        h.machine.arch,
        h.machine.loadavg_at_start.as_deref().unwrap_or("?")
    );
    println!(
        "paver {} ({}), regorus {}, opa {}, {}{}",
        h.versions.paver,
        h.versions.paver_commit.as_deref().unwrap_or("?"),
        h.versions.regorus.as_deref().unwrap_or("?"),
        h.versions.opa.as_deref().unwrap_or("-"),
        h.versions.rustc.as_deref().unwrap_or("rustc ?"),
        if h.versions.release_build {
            ""
        } else {
            " — DEBUG BUILD: figures are meaningless, build with --release"
        }
    );
    println!();
}

/// The routes and bundles the operator ships (embedded in the binary).
pub fn catalog() -> anyhow::Result<(Content, Catalog)> {
    let content = Content::embedded().context("failed to load the embedded content")?;
    let (catalog, problems) = Catalog::from_content(content.clone(), chrono::Utc::now());
    if !problems.is_empty() {
        bail!("the shipped content has problems: {}", problems.join("; "));
    }
    Ok((content, catalog))
}

/// Every request in `<root>/examples/*.yaml`, with its file stem, sorted.
pub fn examples(root: &Path) -> anyhow::Result<Vec<(String, ServiceRequest)>> {
    let dir = root.join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for req in parse_requests(&text, &path.display().to_string())? {
            out.push((stem.clone(), req));
        }
    }
    if out.is_empty() {
        bail!("no example requests in {}", dir.display());
    }
    Ok(out)
}

/// A request walked up to policy by the core (`prepare_request`, as
/// `decide_request` does), and rendered.
pub struct Walked<'a> {
    pub route: &'a paver::core::validate::CompiledRoute,
    pub parameters: serde_json::Value,
    pub estimate: paver::core::estimate::Estimate,
    pub rendered: paver::core::render::Rendered,
}

pub fn render_options() -> paver::core::render::RenderOptions {
    paver::core::render::RenderOptions {
        repo_url: "https://git.example.com/platform/gitops.git".into(),
        revision: "main".into(),
        destination_server: None,
    }
}

pub fn walk<'a>(catalog: &'a Catalog, req: &ServiceRequest) -> anyhow::Result<Walked<'a>> {
    use paver::core::{render::render, verdict::prepare_request};
    // The core's own walk up to policy (what decide_request does), then the render.
    let prepared = prepare_request(catalog, req).map_err(|u| {
        anyhow::anyhow!(
            "invalid request: {}",
            u.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let rendered = render(
        prepared.route,
        req,
        &prepared.parameters,
        &prepared.estimate,
        &render_options(),
    )?;
    Ok(Walked {
        route: prepared.route,
        parameters: prepared.parameters,
        estimate: prepared.estimate,
        rendered,
    })
}

/// Makes `route` (microservice) version 2.0.0 with a real template change
/// (a line appended to its SLO template): what the preview and the route
/// bump measure.
pub fn microservice_v2(route: &mut paver_crds::PaveRoute) -> anyhow::Result<()> {
    route.spec.version = "2.0.0".into();
    route.spec.rollout = None;
    let slo = route
        .spec
        .templates
        .inline
        .iter_mut()
        .find(|t| t.path == "slo.yaml")
        .context("no slo.yaml template")?;
    slo.content.push_str("# reviewed for 2.0.0\n");
    Ok(())
}
