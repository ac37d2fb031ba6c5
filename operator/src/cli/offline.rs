//! `paver validate`, `render`, `test` and `pack`: the core, offline.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use chrono::Utc;

use super::{Format, Sources};
use crate::{
    content::{self, Content, ContentError},
    core::{
        escape, policy,
        render::RenderOptions,
        verdict::{Catalog, Outcome, Verdict, decide_request},
    },
};

const UNUSABLE: u8 = 2;

pub(super) fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(UNUSABLE)
}

/// Routes and bundles: the built-in ones unless overridden.
fn load_sources(sources: &Sources) -> Result<Content, ContentError> {
    let embedded = Content::embedded()?;
    let mut content = Content::default();
    if sources.routes.is_empty() {
        content.routes = embedded.routes;
    } else {
        for path in &sources.routes {
            content.routes.extend(content::load_path(path)?.routes);
        }
    }
    if sources.bundles.is_empty() {
        content.bundles = embedded.bundles;
    } else {
        for path in &sources.bundles {
            content.bundles.extend(content::load_path(path)?.bundles);
        }
    }
    content.unique("--routes/--bundles")
}

/// What the sources hold: routes and bundles, the older versions of
/// routes the cluster keeps as revisions (with their revision names), and
/// which team each namespace is bound to (the cluster's only).
pub(super) struct Loaded {
    pub content: Content,
    pub older: Vec<(paver_crds::PaveRoute, String)>,
    pub teams: Option<std::collections::BTreeMap<String, String>>,
}

/// Loads the sources: the built-in routes and bundles, those given, or
/// the cluster's.
pub(super) fn load(sources: &Sources) -> Result<Loaded, ContentError> {
    if sources.cluster {
        let (content, older, teams) = from_cluster().map_err(|message| ContentError::Invalid {
            source_name: "--cluster".into(),
            message,
        })?;
        return Ok(Loaded {
            content,
            older,
            teams: Some(teams),
        });
    }
    Ok(Loaded {
        content: load_sources(sources)?,
        older: Vec::new(),
        teams: None,
    })
}

/// The catalog of `content` with the `older` route versions held beside
/// their heads (problems with routes or bundles are printed as warnings;
/// the requests that need them will say so).
pub(super) fn build(
    content: Content,
    older: &[(paver_crds::PaveRoute, String)],
    teams: Option<std::collections::BTreeMap<String, String>>,
) -> Catalog {
    use kube::ResourceExt;
    // The cluster's rollouts hold requests back from their routes' heads,
    // as the operator does (files carry no status: no gate).
    let gates: Vec<(String, Option<crate::core::rollout::Gate>)> = content
        .routes
        .iter()
        .filter_map(|r| {
            let status = r.status.as_ref()?;
            Some((r.name_any(), crate::core::rollout::gate(&r.spec, status)))
        })
        .collect();
    let (mut catalog, problems) = Catalog::from_content(content, chrono::Utc::now());
    if let Some(teams) = teams {
        catalog.teams = crate::core::verdict::TeamBindings::Namespaces(teams);
    }
    for p in problems {
        eprintln!("warning: {p}");
    }
    let mut by_route: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for (route, revision) in older {
        match crate::core::verdict::compile_route(route.clone()) {
            Ok(c) => by_route
                .entry(route.name_any())
                .or_default()
                .push(c.with_revision(revision.clone())),
            Err(errors) => eprintln!(
                "warning: route {}@{} (revision {revision}) does not compile: {}",
                route.name_any(),
                route.spec.version,
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
    for (name, versions) in by_route {
        catalog.set_older_versions(&name, versions);
    }
    for (name, gate) in gates {
        catalog.set_gate(&name, gate);
    }
    catalog
}

/// A catalog from the sources.
fn catalog(sources: &Sources) -> Result<Catalog, ContentError> {
    let Loaded {
        content,
        older,
        teams,
    } = load(sources)?;
    Ok(build(content, &older, teams))
}

/// Runs `f` with a client of the current kubeconfig context, on a runtime
/// of its own (the CLI is synchronous).
pub(super) fn on_cluster<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("no cluster to read (kubeconfig): {e}"))?;
        f(client).await
    })
}

/// What the cluster reads with: its routes (with the older versions its
/// revisions hold), bundles and namespace teams.
type ClusterContent = (
    Content,
    Vec<(paver_crds::PaveRoute, String)>,
    std::collections::BTreeMap<String, String>,
);

/// The routes, bundles, older route versions and namespace teams of the
/// current kubeconfig context's cluster.
fn from_cluster() -> Result<ClusterContent, String> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::{Api, ResourceExt, api::ListParams};
    on_cluster(|client| async move {
        let list = |what: &str, e: kube::Error| format!("failed to list {what}: {e}");
        let routes = Api::<paver_crds::PaveRoute>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| list("PaveRoutes", e))?
            .items;
        let bundles = Api::<paver_crds::PolicyBundle>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| list("PolicyBundles", e))?
            .items;
        let mut routes = routes;
        let mut bundles = bundles;
        let route_revisions = in_force(&client, &mut routes, |r| {
            r.status.as_ref()?.active_revision.clone()
        })
        .await;
        in_force(&client, &mut bundles, |b| {
            b.status.as_ref()?.active_revision.clone()
        })
        .await;
        let older = older_versions(&routes, &route_revisions);
        let team_label = paver_crds::vocab::labels::TEAM;
        let teams = Api::<Namespace>::all(client)
            .list(&ListParams::default().labels(team_label))
            .await
            .map_err(|e| list("namespaces", e))?
            .items
            .into_iter()
            .filter_map(|ns| {
                let team = ns.labels().get(team_label)?.clone();
                Some((ns.name_any(), team))
            })
            .collect();
        Ok((Content { routes, bundles }, older, teams))
    })
}

/// The older versions of `routes` that their `revisions` hold, as the
/// operator holds them (one per version below the head), as routes named
/// after their owner, each with its revision's name.
fn older_versions(
    routes: &[paver_crds::PaveRoute],
    revisions: &[crate::core::revision::Stored<paver_crds::PaveRouteSpec>],
) -> Vec<(paver_crds::PaveRoute, String)> {
    use kube::ResourceExt;
    let mut older = Vec::new();
    for route in routes {
        let Ok(head) = semver::Version::parse(route.spec.version.trim()) else {
            continue;
        };
        let name = route.name_any();
        let uid = route.uid();
        for (_, rev) in crate::core::revision::versions_held(revisions, &name, uid.as_deref(), &head, |s| {
            s.version.as_str()
        }) {
            older.push((
                paver_crds::PaveRoute::new(&name, rev.spec.clone()),
                rev.name.clone(),
            ));
        }
    }
    older
}

/// Each route or bundle as the operator enforces it: where its latest spec
/// was refused and its status names the revision in force, that
/// revision's spec (checked against its hash). Without read access to
/// revisions, the latest specs, with a warning (and no older versions).
/// The revisions read, for the older versions routes hold.
async fn in_force<K: crate::controller::revision::Revisioned>(
    client: &kube::Client,
    owners: &mut [K],
    active: impl Fn(&K) -> Option<String>,
) -> Vec<crate::core::revision::Stored<K::Spec>>
where
    K::Rev: Send + Sync,
{
    use crate::core::revision::refused;
    use kube::{Api, ResourceExt, api::ListParams};
    let revisions: Vec<_> = match Api::<K::Rev>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items.into_iter().map(K::stored).collect(),
        Err(e) => {
            eprintln!(
                "warning: cannot read {} ({e}): judging with the latest specs, which may not be the versions in force",
                <K::Rev as kube::Resource>::plural(&())
            );
            return Vec::new();
        }
    };
    for owner in owners.iter_mut() {
        let Some(active) = active(owner) else { continue };
        let name = owner.name_any();
        if crate::controller::revision::name_for(owner) == active {
            continue;
        }
        match revisions.iter().find(|r| r.name == active) {
            Some(rev) => match refused(rev, &name, owner.uid().as_deref()) {
                None => K::set_spec(owner, rev.spec.clone()),
                Some(why) => eprintln!("warning: revision {active} of {name} refused: {why}"),
            },
            None => eprintln!("warning: {name} names revision {active}, which is not there"),
        }
    }
    revisions
}

/// `path` itself, or for a folder its `*.yaml` and `*.yml` files (not
/// below it), sorted: `paver validate -f examples/`.
pub(super) fn request_files(path: &Path) -> Result<Vec<PathBuf>, ContentError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |source| ContentError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ContentError::Invalid {
            source_name: path.display().to_string(),
            message: "the folder holds no .yaml or .yml file".into(),
        });
    }
    Ok(files)
}

pub(super) fn read_requests(path: &Path) -> Result<Vec<paver_crds::ServiceRequest>, ContentError> {
    let text = content::read_bounded(path)?;
    content::parse_requests(&text, &path.display().to_string())
}

fn outcome_label(v: &Verdict) -> &'static str {
    match v.outcome {
        Outcome::Allowed => "ALLOWED",
        Outcome::NeedsApproval => "ALLOWED, NEEDS APPROVAL",
        Outcome::Denied => "DENIED",
        Outcome::ApprovalRejected => "REJECTED BY APPROVER",
        Outcome::Invalid => "INVALID",
        Outcome::PolicyUnavailable => "POLICY UNAVAILABLE",
        Outcome::RenderFailed => "ALLOWED, RENDER FAILED",
    }
}

/// The verdict as a developer reads it.
pub fn print_verdict(v: &Verdict) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", v.request, outcome_label(v));
    if let Some(route) = &v.route {
        let _ = writeln!(out, "  route:     {route}");
    }
    if let Some(e) = &v.estimate {
        let _ = writeln!(out, "  estimate:  {:.2} {}/month", e.monthly, e.currency);
    }
    if !v.policy.bundle_versions.is_empty() {
        let _ = writeln!(out, "  bundles:   {}", v.policy.bundle_versions.join(", "));
    }
    let section = |out: &mut String, title: &str, lines: Vec<String>| {
        if !lines.is_empty() {
            let _ = writeln!(out, "  {title}:");
            for l in lines {
                let _ = writeln!(out, "    - {l}");
            }
        }
    };
    section(
        &mut out,
        "errors",
        v.errors.iter().map(ToString::to_string).collect(),
    );
    let finding = |f: &paver_crds::Finding| {
        let path = f.path.as_deref().map(|p| format!(" [{p}]")).unwrap_or_default();
        format!("{}/{}: {}{path}", f.bundle, f.rule, f.message)
    };
    section(
        &mut out,
        "violations",
        v.policy.violations.iter().map(finding).collect(),
    );
    section(
        &mut out,
        "warnings",
        v.policy.warnings.iter().map(finding).collect(),
    );
    section(
        &mut out,
        "dry-run findings",
        v.policy.dryrun.iter().map(finding).collect(),
    );
    section(&mut out, "waived", v.policy.waived.iter().map(finding).collect());
    section(
        &mut out,
        "needs approval because",
        v.policy.approval_reasons.clone(),
    );
    section(&mut out, "notices", v.notices.clone());
    if !v.missing_bundles.is_empty() {
        section(
            &mut out,
            "unavailable bundles",
            v.missing_bundles
                .iter()
                .map(|b| format!("{b}: no version compiled and passed its tests"))
                .collect(),
        );
    }
    if let Some(e) = &v.policy_error {
        section(&mut out, "policy could not be evaluated", vec![e.clone()]);
    }
    if let Some(e) = &v.render_error {
        section(&mut out, "render", vec![e.clone()]);
    }
    out
}

pub fn validate(files: &[PathBuf], sources: &Sources, format: Format) -> ExitCode {
    let catalog = match catalog(sources) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut verdicts = Vec::new();
    let mut load_errors = Vec::new();
    let mut paths = Vec::new();
    for file in files {
        match request_files(file) {
            Ok(found) => paths.extend(found),
            Err(e) => load_errors.push(e.to_string()),
        }
    }
    for file in &paths {
        match read_requests(file) {
            Ok(requests) => {
                for sr in requests {
                    verdicts.push(decide_request(
                        &catalog,
                        &sr,
                        &[],
                        &RenderOptions::default(),
                        Utc::now(),
                    ));
                }
            }
            Err(e) => load_errors.push(e.to_string()),
        }
    }
    let code = verdicts
        .iter()
        .map(|v| v.outcome.exit_code())
        .chain(load_errors.iter().map(|_| UNUSABLE))
        .max()
        .unwrap_or(0);
    match format {
        Format::Json => {
            let doc = serde_json::json!({"verdicts": verdicts, "errors": load_errors});
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Format::Text => {
            for e in &load_errors {
                eprintln!("error: {e}");
            }
            for v in &verdicts {
                print!("{}", print_verdict(v));
            }
        }
    }
    ExitCode::from(code)
}

pub fn render(file: &Path, out: Option<&Path>, repo_url: &str, sources: &Sources) -> ExitCode {
    let catalog = match catalog(sources) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let requests = match read_requests(file) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let opts = RenderOptions {
        repo_url: repo_url.to_string(),
        revision: "main".into(),
        destination_server: None,
    };
    let mut code = 0;
    // As in the operator: the first request to render a directory (or an
    // Application) owns it; a later one in the same files is refused.
    let claims = crate::controller::claims::Claims::default();
    for sr in requests {
        let verdict = decide_request(&catalog, &sr, &[], &opts, Utc::now());
        let Some(rendered) = &verdict.rendered else {
            eprint!("{}", print_verdict(&verdict));
            eprintln!("nothing rendered for {}", verdict.request);
            code = code.max(verdict.outcome.exit_code().max(1));
            continue;
        };
        let app = rendered.application.as_ref().map(|a| a.key());
        if let Err(owner) = claims.claim(&verdict.request, &rendered.dir, app.as_deref()) {
            eprintln!("{}: nothing rendered: {owner}", verdict.request);
            code = 2;
            continue;
        }
        match out {
            Some(dir) => {
                for (path, text) in &rendered.files {
                    // The render checked the path (the one path rule); under
                    // --out nothing on the way may be a symbolic link, or
                    // the file would land wherever it points.
                    if let Err(e) = check_no_symlink_under(dir, path) {
                        return fail(e);
                    }
                    let target = dir.join(path);
                    let written = target
                        .parent()
                        .map_or(Ok(()), std::fs::create_dir_all)
                        .and_then(|()| std::fs::write(&target, text));
                    if let Err(e) = written {
                        return fail(format_args!("failed to write {}: {e}", target.display()));
                    }
                }
            }
            None => {
                for (path, text) in &rendered.files {
                    println!("--- {path}");
                    print!("{text}");
                    if !text.ends_with('\n') {
                        println!();
                    }
                }
            }
        }
        let summary = format!(
            "{}: {} file(s) in {}{} (digest {}){}",
            verdict.request,
            rendered.files.len(),
            rendered.dir,
            out.map(|d| format!(" under {}", d.display())).unwrap_or_default(),
            &rendered.digest.chars().take(12).collect::<String>(),
            if verdict.outcome == Outcome::NeedsApproval {
                "; the operator commits it once approved"
            } else {
                ""
            },
        );
        eprintln!("{summary}");
        if out.is_some() {
            for path in rendered.files.keys() {
                eprintln!("  {path}");
            }
        }
    }
    ExitCode::from(code)
}

/// Refuses writing `rel` under `root` when the file or a folder on the way
/// to it is a symbolic link (checked in `root`, then each segment of `rel`).
fn check_no_symlink_under(root: &Path, rel: &str) -> Result<(), String> {
    let mut at = root.to_path_buf();
    for segment in rel.split('/') {
        at.push(segment);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "refusing to write {rel}: {} is a symbolic link (remove it, or render into an empty folder)",
                    at.display()
                ));
            }
            Ok(_) => {}
            // Nothing there yet: nothing below it can be a link either.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

pub fn test(paths: &[PathBuf], verbose: bool) -> ExitCode {
    let content = if paths.is_empty() {
        Content::embedded()
    } else {
        paths.iter().try_fold(Content::default(), |mut acc, p| {
            acc.extend(content::load_path(p)?);
            Ok(acc)
        })
    };
    let content = match content.and_then(|c| c.unique("the given paths")) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if content.bundles.is_empty() && content.routes.is_empty() {
        return fail("no policy bundles or routes found");
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for route in &content.routes {
        let name = route.metadata.name.clone().unwrap_or_default();
        let lints: Vec<_> = route
            .spec
            .templates
            .inline
            .iter()
            .flat_map(|t| {
                escape::lint(&t.path, &t.content)
                    .into_iter()
                    .map(move |l| (t.path.as_str(), l))
            })
            .collect();
        println!("route {name}@{}:", route.spec.version);
        if lints.is_empty() {
            passed += 1;
            if verbose {
                println!("  PASS  every printed value is escaped for its file");
            }
        }
        for (path, l) in lints {
            failed += 1;
            println!("  LINT  {path}:{}: {}", l.line, l.message);
        }
    }
    for bundle in &content.bundles {
        let name = bundle.metadata.name.clone().unwrap_or_default();
        let activation = policy::activate(&name, &bundle.spec, chrono::Utc::now());
        println!("{name}@{}:", bundle.spec.version);
        for e in &activation.errors {
            failed += 1;
            println!("  ERROR {}: {}", e.location(), e.message);
        }
        for t in &activation.tests {
            if t.pass {
                passed += 1;
                if verbose {
                    println!("  PASS  {}", t.name);
                }
            } else {
                failed += 1;
                println!(
                    "  FAIL  {}{}",
                    t.name,
                    if t.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", t.message)
                    }
                );
            }
        }
        if !verbose && activation.errors.is_empty() && activation.tests.iter().all(|t| t.pass) {
            println!("  {} test(s) passed", activation.tests.len());
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The packed YAML for `root`'s routes and bundles.
pub fn packed(root: &Path) -> Result<(String, String), ContentError> {
    let routes = content::load_path(&root.join("routes"))?.routes;
    let bundles = content::load_path(&root.join("policy-bundles"))?.bundles;
    Ok((content::pack_routes(&routes), content::pack_bundles(&bundles)))
}

pub fn pack(root: &Path) -> ExitCode {
    let (routes, bundles) = match packed(root) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    // manifests/ is what the binary embeds; the Helm chart's templates
    // include its own copies (a chart reads no file outside its folder).
    for (file, text) in [
        ("manifests/routes.yaml", &routes),
        ("manifests/policy-bundles.yaml", &bundles),
        ("charts/paver/files/routes.yaml", &routes),
        ("charts/paver/files/policy-bundles.yaml", &bundles),
    ] {
        let path = root.join(file);
        let written = match path.parent() {
            Some(dir) => std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, text)),
            None => std::fs::write(&path, text),
        };
        if let Err(e) = written {
            return fail(format_args!("failed to write {}: {e}", path.display()));
        }
    }
    ExitCode::SUCCESS
}
