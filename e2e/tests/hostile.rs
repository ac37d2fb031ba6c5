//! Hostile input that reaches the operator through the API server (issue
//! 19's operator-facing classes): routes, bundles and requests that try to
//! write outside their directory, deploy outside their team, exhaust the
//! operator's memory or time, slip past the budget or inject lines into a
//! line-oriented file. Each ends in a refusal a person can read in the
//! request's status within the usual wait, nothing of it is committed, and
//! the operator keeps running and serving its neighbours.
//!
//! The same classes, offline and at ten times the count, are
//! operator/tests/hostile.rs (the CLI on the release binary).

use anyhow::{Context as _, Result, ensure};
use kube::{Api, Client};
use paver_crds::{Phase, ServiceRequest};

use crate::{
    Env,
    support::{Cluster, ClusterExt as _, example, wait_phase},
};

const NS: &str = "e2e-hostile";

/// A copy of the shipped `microservice` route under `name`, edited.
fn derived_route(c: &Cluster, name: &str, edit: impl FnOnce(&mut serde_yaml::Value)) -> Result<()> {
    let yaml = c.kubectl(&["get", "paveroute", "microservice", "-o", "yaml"])?;
    let mut r: serde_yaml::Value = serde_yaml::from_str(&yaml)?;
    r["metadata"] = serde_yaml::from_str(&format!("name: {name}"))?;
    r.as_mapping_mut().context("route")?.remove("status");
    edit(&mut r);
    c.apply(&serde_yaml::to_string(&r)?)?;
    Ok(())
}

fn add_template(r: &mut serde_yaml::Value, path: &str, content: &str) {
    if let Some(files) = r["spec"]["templates"]["inline"].as_sequence_mut() {
        let mut f = serde_yaml::Mapping::new();
        f.insert("path".into(), path.into());
        f.insert("content".into(), content.into());
        files.push(f.into());
    }
}

/// The message of the request's `type_` condition, once it is in `phase`.
async fn refused(client: &Client, name: &str, phase: Phase, type_: &str) -> Result<String> {
    let sr = wait_phase(client, NS, name, phase).await?;
    let status = sr.status.unwrap_or_default();
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .with_context(|| format!("{name}: no {type_} condition in {:?}", status.conditions))?;
    ensure!(c.status == "False" || c.status == "Unknown", "{name}: {c:?}");
    Ok(c.message.clone())
}

pub async fn hostile_input_is_refused_by_the_operator(env: &mut Env) -> Result<()> {
    let (c, client) = (&env.cluster, &env.client);
    c.team_namespace(NS, NS)?;

    // Routes a platform engineer might get wrong, or a reviewer let through.
    derived_route(c, "e2e-hostile-huge", |r| {
        add_template(
            r,
            "manifests/huge.yaml",
            "{% for i in range(40000) %}k{{ i }}: \"0123456789012345678901234567890123456789\"\n{% endfor %}",
        )
    })?;
    derived_route(c, "e2e-hostile-path", |r| {
        add_template(r, "{{ parameters.repository.name }}/../x.yaml", "x: 1")
    })?;
    derived_route(c, "e2e-hostile-dest", |r| {
        r["spec"]["output"]["application"]["destination"]["namespace"] = "kube-system".into();
    })?;
    derived_route(c, "e2e-hostile-appfile", |r| {
        add_template(
            r,
            "manifests/extra-argocd-application.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: takeover}\n",
        )
    })?;

    let on = |name: &str, route: &str| {
        let route = route.to_string();
        example("orders-api.yaml", NS, name, move |v| {
            v["spec"]["route"] = route.into();
        })
    };
    let mut requests = vec![
        on("huge", "e2e-hostile-huge")?,
        on("path", "e2e-hostile-path")?,
        on("dest", "e2e-hostile-dest")?,
        on("appfile", "e2e-hostile-appfile")?,
        example("orders-api.yaml", NS, "owner-newline", |v| {
            v["spec"]["owner"] = "team@example.com\n* @evil/takeover".into();
        })?,
        example("payment-gateway.yaml", NS, "infinite-bucket", |v| {
            v["metadata"]["labels"] = serde_yaml::from_str("{}").unwrap_or_default();
            v["spec"]["parameters"]["storage"]["buckets"][0]["sizeGi"] = 1.0e308.into();
        })?,
        example("orders-api.yaml", NS, "pci-upper", |v| {
            v["metadata"]["labels"] =
                serde_yaml::from_str("{paver.dev/data-classification: PCI}").unwrap_or_default();
        })?,
    ];
    requests.push(example("orders-api.yaml", NS, "huge-image", |v| {
        v["spec"]["parameters"]["compute"]["image"] = "r".repeat(20_000).into();
    })?);
    requests.push(example("orders-api.yaml", NS, "neighbour", |_| {})?);
    // A bundle that would build a billion-element array at activation.
    c.apply(&format!(
        r#"apiVersion: paver.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: e2e-hostile-range
spec:
  version: "1.0.0"
  owners: [platform-team@example.com]
  description: builds a billion-element array
  mode: enforce
  match:
    namespaces: [{NS}-held]
  modules:
    - name: range.rego
      source: |
        package paver.e2e_hostile_range
        import rego.v1
        deny contains "too many" if count(numbers.range(1, 1000000000)) > 0
"#
    ))?;
    for r in &requests {
        c.apply(r)?;
    }

    let checks: [(&str, Phase, &str, &str); 7] = [
        (
            "huge-image",
            Phase::Rejected,
            "Validated",
            "20000 characters, more than 16384",
        ),
        ("huge", Phase::Failed, "Rendered", "more than 1048576 bytes"),
        (
            "path",
            Phase::Rejected,
            "Validated",
            "a path or destination may use only",
        ),
        (
            "dest",
            Phase::Failed,
            "Rendered",
            "would deploy into namespace kube-system",
        ),
        ("appfile", Phase::Failed, "Rendered", "only Paver writes one"),
        (
            "owner-newline",
            Phase::Failed,
            "Rendered",
            "cannot be written into CODEOWNERS",
        ),
        (
            "infinite-bucket",
            Phase::Rejected,
            "Validated",
            "is more than 1e12 a month",
        ),
    ];
    let mut wrong = Vec::new();
    for (name, phase, type_, says) in checks {
        match refused(client, name, phase, type_).await {
            Ok(message) if message.contains(says) => {}
            Ok(message) => wrong.push(format!("{name}: {type_} says {message:?}, not {says:?}")),
            Err(e) => wrong.push(format!("{e:#}")),
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join("\n  "));

    // The bundle is refused at activation, naming the builtin and its line;
    // the operator survives it (no 24 GB allocation).
    let bundles: Api<paver_crds::PolicyBundle> = Api::all(client.clone());
    let said = crate::support::wait_for(
        "e2e-hostile-range refused",
        std::time::Duration::from_secs(60),
        || async {
            let b = bundles.get("e2e-hostile-range").await?;
            let conditions = b.status.unwrap_or_default().conditions;
            Ok(conditions
                .iter()
                .find(|c| c.status == "False" && c.message.contains("numbers.range"))
                .map(|c| c.message.clone()))
        },
    )
    .await?;
    ensure!(said.contains("more than the limit of 100000"), "{said}");
    // A request the refused bundle applies to is held, not judged without it.
    let held_ns = format!("{NS}-held");
    c.team_namespace(&held_ns, &held_ns)?;
    c.apply(&example("orders-api.yaml", &held_ns, "held", |_| {})?)?;
    let held = wait_phase(client, &held_ns, "held", Phase::Pending).await?;
    let policy = held
        .status
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "PolicyCompliant")
        .context("no PolicyCompliant condition")?;
    ensure!(
        policy.reason == "PolicyUnavailable" && policy.message.contains("e2e-hostile-range"),
        "{policy:?}"
    );
    ensure!(
        c.remote()
            .clone_repo()?
            .commits_for(&format!("{held_ns}/held"))?
            .is_empty(),
        "a request held by a refused bundle was committed"
    );
    Api::<ServiceRequest>::namespaced(client.clone(), &held_ns)
        .delete("held", &Default::default())
        .await?;

    // `PCI` in capitals is PCI: the security bundle's PCI rules apply to it.
    let pci = wait_phase(client, NS, "pci-upper", Phase::Rejected).await?;
    let violations = pci.status.unwrap_or_default().violations;
    ensure!(
        violations
            .iter()
            .any(|v| v.bundle == "security" && v.message.to_lowercase().contains("pci")),
        "PCI (capitals) skipped the PCI rules: {violations:?}"
    );

    // Nothing of theirs was committed; the neighbour was, the operator runs.
    wait_phase(client, NS, "neighbour", Phase::Rendered).await?;
    let clone = c.remote().clone_repo()?;
    for name in [
        "huge",
        "path",
        "dest",
        "appfile",
        "owner-newline",
        "infinite-bucket",
        "pci-upper",
    ] {
        ensure!(
            clone.commits_for(&format!("{NS}/{name}"))?.is_empty(),
            "{name} was committed"
        );
    }
    ensure!(
        !clone.commits_for(&format!("{NS}/neighbour"))?.is_empty(),
        "the neighbour was not committed"
    );
    let files = clone.git(&["ls-files"])?;
    ensure!(
        !files
            .lines()
            .any(|f| f.contains("takeover") || f.ends_with("extra-argocd-application.yaml")),
        "a hostile file reached the repository"
    );
    ensure!(env.operator.alive(), "the operator exited");
    env.operator.wait_ready().await?;

    let api: Api<ServiceRequest> = Api::namespaced(client.clone(), NS);
    for r in [
        "huge",
        "path",
        "dest",
        "appfile",
        "owner-newline",
        "infinite-bucket",
        "pci-upper",
        "neighbour",
    ] {
        api.delete(r, &Default::default()).await?;
    }
    for route in ["huge", "path", "dest", "appfile"] {
        c.kubectl(&["delete", "paveroute", &format!("e2e-hostile-{route}")])?;
    }
    c.kubectl(&["delete", "policybundle", "e2e-hostile-range"])?;
    Ok(())
}
