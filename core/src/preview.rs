//! The migration preview of a route change: every request on the route
//! judged and rendered against the catalog in force and against the
//! catalog with the new version, compared file by file. Renders are
//! deterministic, so what the preview shows for a request is what the
//! operator commits for it once the version reaches it.

use chrono::{DateTime, Utc};
use paver_crds::ServiceRequest;
use serde::Serialize;

use super::{
    render::RenderOptions,
    verdict::{Catalog, Gates, Outcome, Verdict, decide_request_with},
};

/// What a new route version does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Its rendered files change.
    Changed,
    /// Its rendered files stay byte for byte (e.g. pinned to an older version).
    Unchanged,
    /// It renders today and would not (validation, policy or the render).
    WouldFail,
    /// It does not render today and would not either.
    StillFailing,
}

/// How one file of a request changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// Path from the repository's root.
    pub path: String,
    /// `added`, `removed` or `modified`.
    pub kind: &'static str,
    /// The unified diff (3 lines of context), `a/` before and `b/` after.
    pub diff: String,
}

/// One request in the preview.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// `namespace/name`.
    pub request: String,
    pub change: Change,
    /// `route@version` it is judged against today, and with the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Why it would not render with the change (a failure's first lines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The content digest of its render with the change (what
    /// `status.render.digest` will say once it is committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileChange>,
}

/// The counts a person reads first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Requests on the route(s) previewed.
    pub requests: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub would_fail: usize,
    pub still_failing: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} changed, {} unchanged, {} would fail",
            self.changed, self.unchanged, self.would_fail
        )?;
        if self.still_failing > 0 {
            write!(f, ", {} failing already", self.still_failing)?;
        }
        write!(f, " ({} requests)", self.requests)
    }
}

/// The preview of a route change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preview {
    pub summary: Summary,
    /// Every request on the routes, in `namespace/name` order.
    pub entries: Vec<Entry>,
}

/// Whether a verdict renders something the operator would commit (now or
/// once approved).
fn renders(v: &Verdict) -> bool {
    matches!(v.outcome, Outcome::Allowed | Outcome::NeedsApproval) && v.rendered.is_some()
}

/// Why a verdict renders nothing, in a line.
fn why_not(v: &Verdict) -> String {
    let mut parts: Vec<String> = v.errors.iter().map(ToString::to_string).collect();
    parts.extend(
        v.policy
            .violations
            .iter()
            .map(|f| format!("{}/{}: {}", f.bundle, f.rule, f.message)),
    );
    parts.extend(v.policy_error.clone());
    parts.extend(v.render_error.clone());
    if !v.missing_bundles.is_empty() {
        parts.push(format!(
            "no good version of bundle(s) {}",
            v.missing_bundles.join(", ")
        ));
    }
    let outcome = serde_json::to_value(v.outcome)
        .ok()
        .and_then(|o| o.as_str().map(str::to_string))
        .unwrap_or_default();
    if parts.is_empty() {
        outcome
    } else {
        format!("{outcome}: {}", parts.join("; "))
    }
}

/// Compares one request's verdicts before and after.
pub fn compare(before: &Verdict, after: &Verdict) -> Entry {
    let mut entry = Entry {
        request: after.request.clone(),
        change: Change::Unchanged,
        before: before.route.clone(),
        after: after.route.clone(),
        reason: None,
        digest: after.rendered.as_ref().map(|r| r.digest.clone()),
        files: Vec::new(),
    };
    match (renders(before), renders(after)) {
        (_, false) => {
            entry.change = if renders(before) {
                Change::WouldFail
            } else {
                Change::StillFailing
            };
            entry.reason = Some(why_not(after));
            entry.digest = None;
        }
        (was, true) => {
            let empty = Default::default();
            let old = before
                .rendered
                .as_ref()
                .filter(|_| was)
                .map_or(&empty, |r| &r.files);
            let new = after.rendered.as_ref().map_or(&empty, |r| &r.files);
            entry.files = file_changes(old, new);
            if !entry.files.is_empty() {
                entry.change = Change::Changed;
            }
        }
    }
    entry
}

fn file_changes(
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
) -> Vec<FileChange> {
    let paths: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let mut out = Vec::new();
    for path in paths {
        let (a, b) = (old.get(path), new.get(path));
        if a == b {
            continue;
        }
        let kind = match (a, b) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "modified",
        };
        let (a_text, b_text) = (a.map_or("", String::as_str), b.map_or("", String::as_str));
        let diff = similar::TextDiff::from_lines(a_text, b_text)
            .unified_diff()
            .context_radius(3)
            .header(
                &a.map_or("/dev/null".to_string(), |_| format!("a/{path}")),
                &b.map_or("/dev/null".to_string(), |_| format!("b/{path}")),
            )
            .to_string();
        out.push(FileChange {
            path: path.clone(),
            kind,
            diff,
        });
    }
    out
}

/// Previews `requests` (those on `routes`; the others are left out)
/// against `before`, the catalog in force (its rollouts' gates applied:
/// where each request is now), and `after`, the catalog with the change
/// (gates open: where the change takes each request once rolled out). A
/// rollout's own preview passes the catalog in force as both. Runs on
/// `threads` threads (at least one).
pub fn preview(
    before: &Catalog,
    after: &Catalog,
    requests: &[ServiceRequest],
    routes: &[String],
    options: &RenderOptions,
    now: DateTime<Utc>,
    threads: usize,
) -> Preview {
    let on: Vec<&ServiceRequest> = requests
        .iter()
        .filter(|r| routes.contains(&r.spec.route))
        .collect();
    let chunk = on.len().div_ceil(threads.max(1)).max(1);
    let mut entries: Vec<Entry> = std::thread::scope(|scope| {
        let handles: Vec<_> = on
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|req| {
                            let b = decide_request_with(before, req, &[], options, now, Gates::Apply);
                            let a = decide_request_with(after, req, &[], options, now, Gates::Open);
                            compare(&b, &a)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    entries.sort_by(|a, b| a.request.cmp(&b.request));
    let mut summary = Summary {
        requests: entries.len(),
        ..Default::default()
    };
    for e in &entries {
        match e.change {
            Change::Changed => summary.changed += 1,
            Change::Unchanged => summary.unchanged += 1,
            Change::WouldFail => summary.would_fail += 1,
            Change::StillFailing => summary.still_failing += 1,
        }
    }
    Preview { summary, entries }
}

#[cfg(test)]
mod tests {
    use paver_crds::{Lifecycle, TemplateFile};
    use serde_json::json;

    use super::*;
    use crate::validate::tests::{request, route};

    fn catalog(version: &str, marker: &str, older: Option<paver_crds::PaveRoute>) -> Catalog {
        let schema =
            json!({"type": "object", "properties": {"replicas": {"type": "integer", "maximum": 10}}});
        let mut r = route("svc", version, Lifecycle::Active, Some(schema));
        r.spec.templates.inline = vec![TemplateFile {
            path: "app.yaml".into(),
            content: format!("name: {{{{ name }}}}\nreplicas: {{{{ parameters.replicas }}}}\n{marker}\n"),
            when: None,
        }];
        let mut c = Catalog::default();
        assert!(c.upsert_route(r).is_empty());
        if let Some(old) = older {
            let Ok(compiled) = crate::verdict::compile_route(old) else {
                panic!("the older version does not compile")
            };
            c.set_older_versions("svc", vec![compiled]);
        }
        c
    }

    fn req(name: &str, replicas: i64, range: Option<&str>) -> ServiceRequest {
        let mut r = request(json!({ "replicas": replicas }));
        r.metadata.name = Some(name.into());
        r.spec.route = "svc".into();
        r.spec.route_version = range.map(str::to_string);
        r
    }

    #[test]
    fn a_new_version_changes_unpinned_requests_and_spares_pinned_ones() {
        let before = catalog("1.0.0", "# one", None);
        let v1 = before.head("svc").map(|r| r.route.clone()).expect("1.0.0");
        let after = catalog("2.0.0", "# two", Some(v1));
        let requests = vec![
            req("b-moves", 2, None),
            req("a-pinned", 2, Some("^1.0")),
            req("c-too-many", 500, None),
            req("d-other", 2, None),
        ];
        let mut requests = requests;
        requests[3].spec.route = "elsewhere".into();
        let p = preview(
            &before,
            &after,
            &requests,
            &["svc".into()],
            &Default::default(),
            Utc::now(),
            2,
        );
        assert_eq!(p.summary.requests, 3, "{p:#?}");
        let by: Vec<(&str, Change)> = p.entries.iter().map(|e| (e.request.as_str(), e.change)).collect();
        assert_eq!(
            by,
            [
                ("commerce/a-pinned", Change::Unchanged),
                ("commerce/b-moves", Change::Changed),
                ("commerce/c-too-many", Change::StillFailing),
            ]
        );
        let moved = &p.entries[1];
        assert_eq!(moved.before.as_deref(), Some("svc@1.0.0"));
        assert_eq!(moved.after.as_deref(), Some("svc@2.0.0"));
        assert_eq!(moved.files.len(), 1);
        let diff = &moved.files[0].diff;
        assert!(diff.contains("-# one\n+# two\n"), "{diff}");
        assert!(diff.starts_with("--- a/"), "{diff}");
        // The digest is the render's with the change: what the commit will carry.
        let again =
            crate::verdict::decide_request(&after, &requests[0], &[], &Default::default(), Utc::now());
        assert_eq!(moved.digest, again.rendered.map(|r| r.digest));
        assert_eq!(
            p.summary.to_string(),
            "1 changed, 1 unchanged, 0 would fail, 1 failing already (3 requests)"
        );
    }

    #[test]
    fn a_version_that_breaks_a_request_says_why() {
        let before = catalog("1.0.0", "# one", None);
        let mut after = catalog("2.0.0", "{{ parameters.missing.deeper }}", None);
        // Only the head: the request has nowhere else to go.
        after.set_older_versions("svc", Vec::new());
        let p = preview(
            &before,
            &after,
            &[req("x", 2, None)],
            &["svc".into()],
            &Default::default(),
            Utc::now(),
            1,
        );
        assert_eq!(p.summary.would_fail, 1, "{p:#?}");
        let reason = p.entries[0].reason.clone().unwrap_or_default();
        assert!(reason.starts_with("renderFailed"), "{reason}");
    }

    /// On one catalog with a closed gate, the rollout's preview equals the
    /// preview of two catalogs, and a decision with the gate applied keeps
    /// the request where it is.
    #[test]
    fn a_rollout_preview_opens_the_gate() {
        let before = catalog("1.0.0", "# one", None);
        let v1 = before.head("svc").map(|r| r.route.clone()).expect("1.0.0");
        let mut after = catalog("2.0.0", "# two", Some(v1));
        let requests = vec![req("b-moves", 2, None), req("a-pinned", 2, Some("^1.0"))];
        let two = preview(
            &before,
            &after,
            &requests,
            &["svc".into()],
            &Default::default(),
            Utc::now(),
            1,
        );
        assert!(after.set_gate(
            "svc",
            Some(crate::rollout::Gate {
                from: semver::Version::new(1, 0, 0),
                to: semver::Version::new(2, 0, 0),
                steps: vec![paver_crds::RolloutStep {
                    percent: Some(100),
                    ..Default::default()
                }],
                open_steps: 0,
            })
        ));
        let held = crate::verdict::decide_request(&after, &requests[0], &[], &Default::default(), Utc::now());
        assert_eq!(held.route.as_deref(), Some("svc@1.0.0"));
        assert!(
            held.notices
                .iter()
                .any(|n| n.contains("while svc@2.0.0 rolls out")),
            "{:?}",
            held.notices
        );
        let one = preview(
            &after,
            &after,
            &requests,
            &["svc".into()],
            &Default::default(),
            Utc::now(),
            1,
        );
        assert_eq!(one, two);
        assert_eq!(one.summary.changed, 1);
        // Two catalogs, the new one gated: where the rollout takes them.
        let gated = preview(
            &before,
            &after,
            &requests,
            &["svc".into()],
            &Default::default(),
            Utc::now(),
            1,
        );
        assert_eq!(gated, two);
    }
}
