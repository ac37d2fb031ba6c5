//! What the shells observed of a request after its decision — the commit,
//! drift, Argo CD's report, the workloads and the authors of its directory —
//! as one typed value, and what the core derives from it: Paver's own
//! Scorecard checks and the `input.git` / `input.cluster` documents.

use std::collections::BTreeMap;

use paver_crds::{CheckResult, SyncStatus};
use serde_json::{Value, json};

/// The facts only the operator can know about a decided request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The revision holding the request's render on the remote, once committed.
    pub committed: Option<String>,
    /// The commit restored rendered files that had been edited by hand.
    pub drift: bool,
    /// Argo CD's report on the request's Application, when it has one.
    pub sync: Option<SyncStatus>,
    /// The Application's workloads: `{kind, namespace, name, health, message}`.
    pub workloads: Vec<Value>,
    /// Each author's latest commit time (unix seconds) in the request's directory.
    pub authors: BTreeMap<String, i64>,
    /// The request's owner (matched against the authors).
    pub owner: String,
    /// Now, in unix seconds.
    pub now: i64,
}

impl Observed {
    /// `input.git`: each author's last commit time, `now`, and
    /// `last_commit_by_owner_days` (whole days since the request's owner last
    /// committed in its directory; absent when they never did).
    pub fn git(&self) -> Value {
        let mut facts = json!({ "last_commit_by_author": self.authors, "now": self.now });
        let owner = self.owner.trim().to_ascii_lowercase();
        let last = self
            .authors
            .iter()
            .filter(|(author, _)| author.to_ascii_lowercase() == owner)
            .map(|(_, t)| *t)
            .max();
        if let Some(last) = last {
            facts["last_commit_by_owner_days"] = json!((self.now - last).max(0) / 86_400);
        }
        facts
    }

    /// `input.cluster`: Argo CD's view of the request (empty without one).
    pub fn cluster(&self) -> Value {
        match &self.sync {
            Some(s) => json!({
                "application": s.application,
                "sync": s.status,
                "health": s.health,
                "revision": s.revision,
                "message": s.message,
                "workloads": self.workloads,
            }),
            None => json!({}),
        }
    }

    /// Paver's own checks: the commit, drift, and Argo CD's report.
    pub fn checks(&self) -> Vec<CheckResult> {
        let mut checks = Vec::new();
        checks.push(builtin(
            "gitops-managed",
            "ownership",
            "bronze",
            self.committed.is_some(),
            match (&self.committed, self.drift) {
                (Some(rev), true) => {
                    format!("rendered files had been edited in the repository; restored at {rev}")
                }
                (Some(rev), false) => format!("revision {rev}"),
                (None, _) => "not committed".into(),
            },
        ));
        checks.push(builtin(
            "no-manual-edits",
            "reliability",
            "silver",
            !self.drift,
            if self.drift {
                "rendered files were edited by hand in the repository and restored".into()
            } else {
                "the repository matches the render".into()
            },
        ));
        if let Some(s) = &self.sync {
            let app = &s.application;
            let want = self.committed.as_deref().unwrap_or("");
            let synced = s.status == "Synced" && !want.is_empty() && s.revision == want;
            checks.push(builtin(
                "argocd-synced",
                "cluster",
                "silver",
                synced,
                if synced {
                    format!("{app} is synced at the committed revision {want}")
                } else {
                    format!(
                        "{app} is {} at {:?}; Paver committed {want:?}",
                        s.status, s.revision
                    )
                },
            ));
            checks.push(builtin(
                "argocd-healthy",
                "cluster",
                "silver",
                s.health == "Healthy",
                if s.message.is_empty() {
                    format!("{app} health is {}", s.health)
                } else {
                    format!("{app} health is {}: {}", s.health, s.message)
                },
            ));
            if let Some(check) = replicas_available(&self.workloads) {
                checks.push(check);
            }
        }
        checks
    }
}

/// A check of Paver's own (source `paver`).
pub fn builtin(id: &str, category: &str, level: &str, pass: bool, message: String) -> CheckResult {
    CheckResult {
        id: id.into(),
        category: category.into(),
        level: level.into(),
        pass,
        message,
        source: "paver".into(),
    }
}

/// Every replica of the Application's workloads available, from the health
/// Argo CD keeps per resource (none when it keeps no resource health in the
/// Application, or there are no workloads).
fn replicas_available(workloads: &[Value]) -> Option<CheckResult> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let workloads: Vec<&Value> = workloads
        .iter()
        .filter(|w| !text(&w["health"]).is_empty())
        .collect();
    if workloads.is_empty() {
        return None;
    }
    let name = |w: &Value| {
        format!(
            "{} {}/{}",
            text(&w["kind"]),
            text(&w["namespace"]),
            text(&w["name"])
        )
    };
    let down: Vec<String> = workloads
        .iter()
        .filter(|w| w["health"] != "Healthy")
        .map(|w| match text(&w["message"]) {
            m if m.is_empty() => format!("{} is {}", name(w), text(&w["health"])),
            m => format!("{} is {}: {m}", name(w), text(&w["health"])),
        })
        .collect();
    let pass = down.is_empty();
    Some(builtin(
        "replicas-available",
        "cluster",
        "silver",
        pass,
        if pass {
            let all: Vec<String> = workloads.iter().map(|w| name(w)).collect();
            format!("every replica is available: {}", all.join(", "))
        } else {
            down.join("; ")
        },
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replicas_available_from_workload_health() {
        let healthy = [
            json!({"kind": "Deployment", "namespace": "shop", "name": "web", "health": "Healthy", "message": ""}),
        ];
        let check = replicas_available(&healthy).expect("a check");
        assert!(check.pass, "{check:?}");
        assert_eq!(check.category, "cluster");

        let stuck = [
            json!({"kind": "Deployment", "namespace": "shop", "name": "web", "health": "Healthy", "message": ""}),
            json!({"kind": "Deployment", "namespace": "shop", "name": "api", "health": "Degraded",
             "message": "Deployment \"api\" exceeded its progress deadline"}),
        ];
        let check = replicas_available(&stuck).expect("a check");
        assert!(!check.pass);
        assert_eq!(
            check.message,
            "Deployment shop/api is Degraded: Deployment \"api\" exceeded its progress deadline"
        );

        // No resource health in the Application (Argo CD 3's default): no check.
        let unknown =
            [json!({"kind": "Deployment", "namespace": "shop", "name": "web", "health": "", "message": ""})];
        assert!(replicas_available(&unknown).is_none());
        assert!(replicas_available(&[]).is_none());
    }

    #[test]
    fn owner_days_come_from_the_owners_commits_only() {
        let now = 1_000 * 86_400;
        let mut observed = Observed {
            authors: BTreeMap::from([
                ("paver@paver.dev".to_string(), now - 60),
                ("Team@Example.com".to_string(), now - 10 * 86_400 - 5),
            ]),
            owner: "team@example.com".into(),
            now,
            ..Default::default()
        };
        let facts = observed.git();
        assert_eq!(facts["last_commit_by_owner_days"], 10);
        assert_eq!(facts["now"], now);
        observed.owner = "someone@example.com".into();
        let none = observed.git();
        assert!(none.get("last_commit_by_owner_days").is_none(), "{none}");
    }

    #[test]
    fn drift_and_commit_are_read_from_the_facts_not_from_status_strings() {
        let observed = Observed {
            committed: Some("abc123".into()),
            drift: true,
            ..Default::default()
        };
        let checks = observed.checks();
        let by_id = |id: &str| checks.iter().find(|c| c.id == id).expect(id);
        assert!(by_id("gitops-managed").pass);
        assert!(by_id("gitops-managed").message.contains("restored at abc123"));
        assert!(!by_id("no-manual-edits").pass);
        let none = Observed::default().checks();
        assert!(!none[0].pass && none[0].message == "not committed");
        assert!(none[1].pass);
    }
}
