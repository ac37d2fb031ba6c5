//! `paver diff`: the migration preview of a route change, offline or
//! against the cluster, before anything moves.

use std::{collections::BTreeSet, path::PathBuf, process::ExitCode};

use kube::ResourceExt;
use paver_crds::{PaveRoute, ServiceRequest};

use super::{
    Format, Sources,
    offline::{Loaded, build, fail, load, read_requests, request_files},
};
use crate::{
    content,
    core::{
        preview::{Change, Preview, preview},
        render::RenderOptions,
    },
};

/// What `paver diff` was asked.
pub struct DiffArgs {
    pub routes: Vec<PathBuf>,
    pub files: Vec<PathBuf>,
    pub sources: Sources,
    pub output: Format,
    pub stat: bool,
    /// How the operator stamps renders (its repository URL and Argo CD destination).
    pub options: RenderOptions,
}

/// The sources with each of `new` in place of the route of its name; the
/// head each replaces is held as an older version (requests pinned to it
/// stay there, as they will in the cluster) unless the new one republishes
/// the same version.
fn with_new_routes(loaded: &Loaded, new: &[PaveRoute]) -> (content::Content, Vec<(PaveRoute, String)>) {
    let mut content = content::Content {
        routes: loaded.content.routes.clone(),
        bundles: loaded.content.bundles.clone(),
    };
    let mut older = loaded.older.clone();
    for route in new {
        let name = route.name_any();
        if let Some(at) = content.routes.iter().position(|r| r.name_any() == name) {
            let head = content.routes.remove(at);
            let lower = match (
                semver::Version::parse(head.spec.version.trim()),
                semver::Version::parse(route.spec.version.trim()),
            ) {
                (Ok(h), Ok(n)) => h < n,
                _ => false,
            };
            if lower {
                let revision = crate::controller::revision::name_for(&head);
                older.push((PaveRoute::new(&name, head.spec), revision));
            }
        }
        content.routes.push(route.clone());
    }
    (content, older)
}

/// The requests to preview: the files', or the cluster's when none are given.
fn requests(args: &DiffArgs) -> Result<Vec<ServiceRequest>, String> {
    if args.files.is_empty() {
        return cluster_requests();
    }
    let mut out = Vec::new();
    for f in &args.files {
        for path in request_files(f).map_err(|e| e.to_string())? {
            out.extend(read_requests(&path).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

fn cluster_requests() -> Result<Vec<ServiceRequest>, String> {
    super::offline::on_cluster(|client| async move {
        crate::controller::list_all(&kube::Api::<ServiceRequest>::all(client))
            .await
            .map_err(|e| format!("failed to list ServiceRequests: {e}"))
    })
}

/// The preview as a person reads it: per affected request a header and
/// its files' unified diffs (one line each with `--stat`), then the summary.
pub fn print(preview: &Preview, stat: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for e in &preview.entries {
        let arrow = match (&e.before, &e.after) {
            (Some(b), Some(a)) if b != a => format!("{b} -> {a}"),
            (_, Some(a)) => a.clone(),
            (Some(b), None) => b.clone(),
            (None, None) => "no route".to_string(),
        };
        match e.change {
            Change::Unchanged => {
                if stat {
                    let _ = writeln!(out, "  {}: unchanged ({arrow})", e.request);
                }
            }
            Change::Changed => {
                let _ = writeln!(out, "{}: {} file(s) change ({arrow})", e.request, e.files.len());
                for f in &e.files {
                    if stat {
                        let _ = writeln!(out, "  {} {}", f.kind, f.path);
                    } else {
                        out.push_str(&f.diff);
                        if !f.diff.ends_with('\n') {
                            out.push('\n');
                        }
                    }
                }
            }
            Change::WouldFail => {
                let _ = writeln!(
                    out,
                    "{}: WOULD FAIL ({arrow}): {}",
                    e.request,
                    e.reason.as_deref().unwrap_or_default()
                );
            }
            Change::StillFailing => {
                let _ = writeln!(
                    out,
                    "{}: failing already, and with the change: {}",
                    e.request,
                    e.reason.as_deref().unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(out, "{}", preview.summary);
    out
}

pub fn diff(args: &DiffArgs) -> ExitCode {
    let mut new = Vec::new();
    for path in &args.routes {
        match content::load_path(path) {
            Ok(c) if c.routes.is_empty() => {
                return fail(format_args!("{}: holds no PaveRoute", path.display()));
            }
            Ok(c) => new.extend(c.routes),
            Err(e) => return fail(e),
        }
    }
    let names: BTreeSet<String> = new.iter().map(|r| r.name_any()).collect();
    if names.len() != new.len() {
        return fail("--route: a route is given twice");
    }
    if args.files.is_empty() && !args.sources.cluster {
        return fail("give the requests to preview with -f, or --cluster for the cluster's");
    }
    let loaded = match load(&args.sources) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let requests = match requests(args) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let (after_content, after_older) = with_new_routes(&loaded, &new);
    let before = build(loaded.content, &loaded.older, loaded.teams.clone());
    let after = build(after_content, &after_older, loaded.teams);
    for name in &names {
        if after.route_version(name).is_none() {
            return fail(format_args!(
                "route {name}: the new version does not compile (above)"
            ));
        }
    }
    let options = &args.options;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let names: Vec<String> = names.into_iter().collect();
    let p = preview(
        &before,
        &after,
        &requests,
        &names,
        options,
        chrono::Utc::now(),
        threads,
    );
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
        Format::Text => print!("{}", print(&p, args.stat)),
    }
    if p.summary.would_fail > 0 {
        ExitCode::from(1)
    } else if p.summary.requests == 0 && !requests.is_empty() {
        eprintln!("note: none of the requests is on {}", names.join(", "));
        ExitCode::SUCCESS
    } else {
        ExitCode::SUCCESS
    }
}
