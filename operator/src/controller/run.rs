//! Wiring: client, leader election, Git writer, catalog watchers and the
//! ServiceRequest controller.

use std::{
    collections::BTreeMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::DynamicObject,
    runtime::{
        Controller, WatchStreamExt,
        reflector::{self, ObjectRef},
        watcher,
    },
};
use paver_crds::{Approval, ServiceRequest};
use tokio::sync::{RwLock, mpsc};
use tracing::{error, info, warn};

use super::{
    Context, Ctx, OperatorConfig, bundle, events, http, leader, metrics::Metrics, request,
    request::RequestMeta, route, scorecards, slim, watch,
};
use crate::{
    core::verdict::Catalog,
    git::{Credentials, GitConfig, WriterHandle, WriterOptions},
};

/// Each request's committed directory (`status.render.path`), claimed for
/// it: read in pages, keeping only the key and the path.
async fn load_claims(client: &Client, claims: &super::claims::Claims) -> kube::Result<()> {
    let api: Api<ServiceRequest> = Api::all(client.clone());
    super::list_pages(&api, |page| {
        for sr in &page {
            if let Some(render) = sr.status.as_ref().and_then(|s| s.render.as_ref())
                && !render.path.is_empty()
                && let Err(e) = claims.claim(&request::key(sr), &render.path, None)
            {
                // Two requests committed to one directory before claims
                // existed: the first listed keeps it, the other is told.
                warn!(request = %request::key(sr), "{e}");
            }
        }
    })
    .await
}

/// Passes a request through only when its generation or deletion state
/// changed: Paver's own status, finalizer and label writes never wake it.
fn generation_or_deletion(sr: &RequestMeta) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    sr.metadata.generation.hash(&mut h);
    sr.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

fn credentials(config: &OperatorConfig) -> Credentials {
    match (
        &config.git_username_file,
        &config.git_token_file,
        &config.git_ssh_key_file,
    ) {
        (_, _, Some(key)) => Credentials::SshKey {
            private_key_file: key.clone(),
            known_hosts: config.git_known_hosts_file.clone(),
        },
        (Some(user), Some(token), _) => Credentials::UserToken {
            username_file: user.clone(),
            token_file: token.clone(),
        },
        _ => Credentials::None,
    }
}

/// The Kubernetes client, with at most `--api-concurrency` requests in
/// flight. Reconciles spend most of their time waiting for the Git writer,
/// so `--concurrency` is high to fill commits; without this limit each of
/// them could hold its own HTTP/1.1 connection (about 40 KiB of buffers
/// each, kept in the pool afterwards). Watches hold a slot only until
/// their response starts.
async fn api_client(config: &OperatorConfig) -> anyhow::Result<Client> {
    let kubeconfig = kube::Config::infer().await?;
    let limit = tower::limit::ConcurrencyLimitLayer::new(usize::from(config.api_concurrency.max(1)));
    Ok(kube::client::ClientBuilder::try_from(kubeconfig)?
        .with_layer(&limit)
        .build())
}

/// Waits until every Paver CRD is Established.
async fn wait_for_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = paver_crds::all()
        .iter()
        .map(|(_, crd)| crd.metadata.name.clone().unwrap_or_default())
        .collect();
    loop {
        let mut missing = Vec::new();
        for name in &names {
            let established = api
                .get_opt(name)
                .await?
                .and_then(|crd| crd.status)
                .is_some_and(|s| {
                    s.conditions
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if !established {
                missing.push(name.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        warn!(crds = ?missing, "waiting for CRDs to be established (install them with `paver crds | kubectl apply -f -`)");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn argocd_installed(client: &Client) -> bool {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    matches!(api.get_opt("applications.argoproj.io").await, Ok(Some(_)))
}

async fn wait_ready(rx: &mut tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How a leadership term ended.
enum Ended {
    /// SIGTERM or SIGINT: running reconciles finished, the process stops.
    Stopped,
    /// The Lease could not be renewed or another replica took it: the term
    /// stopped at once and the replica campaigns again.
    LostLease,
}

/// Runs the operator until SIGTERM or SIGINT. With leader election it
/// stands by until it holds the Lease, leads until it loses it, and then
/// campaigns again in the same process.
pub async fn run(config: OperatorConfig) -> anyhow::Result<()> {
    let client = api_client(&config).await?;
    let metrics = Metrics::default();
    let health = http::Health::default();
    {
        // Bind first: a taken port is a startup error, not a silent operator without probes.
        let addr = config.metrics_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for /metrics and probes: {e}"))?;
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            if let Err(e) = http::serve(listener, metrics, health).await {
                error!(error = %e, %addr, "failed to serve metrics and probes");
            }
        });
    }
    let lease = (!config.lease_namespace.is_empty()).then(|| leader::LeaseConfig {
        namespace: config.lease_namespace.clone(),
        name: config.lease_name.clone(),
        identity: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| format!("paver-{}", std::process::id())),
        duration: config.lease_duration,
        renew_deadline: config.lease_renew_deadline,
        retry_period: config.lease_retry_period,
    });
    if let Some(cfg) = &lease {
        cfg.check().map_err(anyhow::Error::msg)?;
    }
    let stop = stop_on_signal();
    tokio::select! {
        r = wait_for_crds(&client) => r?,
        _ = stopped(stop.clone()) => return Ok(()),
    }
    // One writer for the process: its working clone outlives a term, and a
    // change whose reconcile was dropped with its term is not committed.
    let writer = WriterHandle::spawn(
        GitConfig {
            url: config.repo_url.clone(),
            branch: config.branch.clone(),
            workdir: config.workdir.clone(),
            credentials: credentials(&config),
            author_name: config.author_name.clone(),
            author_email: config.author_email.clone(),
        },
        WriterOptions::default(),
    );
    loop {
        // None: no leader election (one replica); never "lost".
        let leadership = match &lease {
            None => None,
            Some(cfg) => {
                health.set(http::Role::StandingBy);
                tokio::select! {
                    rx = leader::lead(client.clone(), cfg.clone()) => Some(rx),
                    _ = stopped(stop.clone()) => return Ok(()),
                }
            }
        };
        health.set(http::Role::Syncing);
        metrics.leader.set(1);
        let ended = term(
            &client,
            &config,
            &metrics,
            &health,
            &writer,
            leadership,
            stop.clone(),
        )
        .await;
        metrics.leader.set(0);
        // A standby reports nothing of the requests it no longer reconciles.
        metrics.end_term();
        health.set(http::Role::Starting);
        match ended? {
            Ended::Stopped => break,
            Ended::LostLease => warn!("stepped down: reconciles stopped; campaigning for the Lease again"),
        }
    }
    if let Some(cfg) = &lease {
        leader::release(client, cfg).await;
    }
    Ok(())
}

/// One leadership term: watches, caches and the ServiceRequest controller,
/// all dropped (and their tasks aborted) when the term ends. A reconcile cut
/// short by a lost Lease is as safe as one cut short by SIGKILL: what it
/// had pushed is found by its trailer in the next term.
async fn term(
    client: &Client,
    config: &OperatorConfig,
    metrics: &Metrics,
    health: &http::Health,
    writer: &WriterHandle,
    leadership: Option<tokio::sync::watch::Receiver<bool>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let mut tasks = tokio::task::JoinSet::new();
    let body = reconcile_while_leading(client, config, metrics, health, writer, &mut tasks, stop);
    tokio::select! {
        r = body => r,
        _ = leadership_lost(leadership) => {
            error!("leadership lost: stopping every reconcile now");
            Ok(Ended::LostLease)
        }
    }
    // `tasks` is dropped here: every task of the term is aborted.
}

/// The term's work: its watches and caches, then the controller until
/// SIGTERM (the caller drops it when the Lease is lost).
async fn reconcile_while_leading(
    client: &Client,
    config: &OperatorConfig,
    metrics: &Metrics,
    health: &http::Health,
    writer: &WriterHandle,
    tasks: &mut tokio::task::JoinSet<()>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let argocd = argocd_installed(client).await;
    if !argocd {
        warn!("the Argo CD Application CRD is not installed: requests stop at Rendered");
    }

    let (approvals, approvals_writer) = reflector::store::<Approval>();
    let app_resource = super::argocd_resource("Application");
    let applications_writer = reflector::store::Writer::<DynamicObject>::new(app_resource.clone());
    let applications = applications_writer.as_reader();
    let (requests, requests_writer) = reflector::store::<RequestMeta>();
    // Every namespace is bound to no team until the namespace watch says
    // otherwise (requests wait for its first list).
    let mut catalog = Catalog::default();
    catalog.teams = crate::core::verdict::TeamBindings::Namespaces(Default::default());
    let ctx: Ctx = Arc::new(Context {
        client: client.clone(),
        config: config.clone(),
        catalog: RwLock::new(catalog),
        writer: writer.clone(),
        metrics: metrics.clone(),
        events: events::Events::new(client.clone(), "paver", std::env::var("POD_NAME").ok()),
        argocd,
        approvals: approvals.clone(),
        scorecards: Default::default(),
        routes: Default::default(),
        resync: super::resync::Resync::new(config.resync),
        applications: applications.clone(),
        failures: Default::default(),
        would_deny: Default::default(),
        claims: Default::default(),
    });

    let (trigger, trigger_rx) = mpsc::unbounded_channel::<ObjectRef<ServiceRequest>>();
    let (routes_ready_tx, mut routes_ready) = tokio::sync::watch::channel(false);
    let (bundles_ready_tx, mut bundles_ready) = tokio::sync::watch::channel(false);
    let (namespaces_ready_tx, mut namespaces_ready) = tokio::sync::watch::channel(false);
    let projects = argocd.then(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(super::projects::run(ctx.clone(), rx));
        tx
    });
    tasks.spawn(watch::guarded_watch(
        Api::all(client.clone()),
        super::namespace::Namespaces {
            ctx: ctx.clone(),
            requests: requests.clone(),
            trigger: trigger.clone(),
            ready: namespaces_ready_tx,
            projects,
        },
    ));
    tasks.spawn(watch::guarded_watch(
        Api::all(client.clone()),
        route::Routes {
            ctx: ctx.clone(),
            requests: requests.clone(),
            trigger: trigger.clone(),
            ready: routes_ready_tx,
            seen: Default::default(),
            revisions: Default::default(),
        },
    ));
    tasks.spawn(watch::guarded_watch(
        Api::all(client.clone()),
        bundle::Bundles {
            ctx: ctx.clone(),
            requests: requests.clone(),
            trigger: trigger.clone(),
            ready: bundles_ready_tx,
            seen: Default::default(),
            revisions: Default::default(),
        },
    ));

    // An Approval re-reconciles the request it names.
    {
        let trigger = trigger.clone();
        let api: Api<Approval> = Api::all(client.clone());
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(slim)
            .reflect(approvals_writer)
            .applied_objects();
        tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(a) = stream.next().await {
                if let Ok(a) = a
                    && let Some(ns) = a.namespace()
                {
                    let _ = trigger.send(ObjectRef::new(&a.spec.request).within(&ns));
                }
            }
        });
    }
    // A Scorecard deleted by hand is recreated by its request's reconcile.
    let (scorecards_ready_tx, mut scorecards_ready) = tokio::sync::watch::channel(false);
    tasks.spawn(watch::guarded_watch(
        Api::all(client.clone()),
        scorecards::Scorecards {
            ctx: ctx.clone(),
            trigger: trigger.clone(),
            ready: scorecards_ready_tx,
        },
    ));

    // Argo CD reporting on an Application re-reconciles its request.
    if argocd {
        let trigger = trigger.clone();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &app_resource);
        let config = watcher::Config::default().labels(super::APPLICATION_SELECTOR);
        let stream = watcher(api, config)
            .default_backoff()
            .modify(slim)
            .reflect(applications_writer)
            .applied_objects();
        tasks.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // Argo CD rewrites an Application at every refresh (reconciledAt):
            // only a change in what Paver reads from it wakes the request.
            let mut seen: BTreeMap<String, paver_crds::SyncStatus> = BTreeMap::new();
            while let Some(app) = stream.next().await {
                if let Ok(app) = app
                    && let Some(r) = super::application_request(&app)
                {
                    let report = super::sync_status(&app);
                    if seen.get(&report.application) == Some(&report) {
                        continue;
                    }
                    seen.insert(report.application.clone(), report);
                    let _ = trigger.send(r);
                }
            }
        });
    }

    let loaded = async {
        wait_ready(&mut routes_ready).await;
        wait_ready(&mut bundles_ready).await;
        wait_ready(&mut namespaces_ready).await;
        // What a reconcile compares its Scorecard with, and Argo CD's view of
        // each request: judged before they are listed, every request would
        // write a Scorecard (and status) after a restart with nothing changed.
        wait_ready(&mut scorecards_ready).await;
        if argocd && applications.wait_until_ready().await.is_err() {
            warn!("the Application watch stopped before it listed anything");
        }
        // Who owns which directory, before any request may claim one.
        while let Err(e) = load_claims(client, &ctx.claims).await {
            warn!(error = %e, "could not list the requests' directories; retrying");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    tokio::select! {
        _ = loaded => {}
        _ = stopped(stop.clone()) => return Ok(Ended::Stopped),
    }
    info!(
        directories = ctx.claims.len(),
        "routes, bundles, Scorecards, Applications and directories loaded; starting the ServiceRequest controller"
    );
    health.set(http::Role::Leading);

    // Metadata only: list and watch as PartialObjectMetadata.
    let api: Api<RequestMeta> = Api::all(client.clone());
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(request::slim_meta)
        .reflect(requests_writer)
        .applied_objects()
        .predicate_filter(generation_or_deletion, Default::default());
    {
        let (ctx, trigger) = (ctx.clone(), trigger.clone());
        tasks.spawn(async move { ctx.resync.run(trigger).await });
    }
    tasks.spawn(super::would_deny::run(ctx.clone()));
    tasks.spawn(super::census::run(ctx.clone(), requests.clone(), trigger.clone()));
    // Triggers name requests; the controller's cache holds their metadata.
    let trigger_stream = tokio_stream_from(trigger_rx)
        .map(|r| ObjectRef::<RequestMeta>::new(&r.name).within(r.namespace.as_deref().unwrap_or_default()));
    Controller::for_stream(stream, requests)
        .with_config(kube::runtime::controller::Config::default().concurrency(config.concurrency))
        .reconcile_on(trigger_stream)
        .graceful_shutdown_on(async move {
            stopped(stop).await;
            info!("signalled; finishing running reconciles and stopping");
        })
        .run(request::reconcile, request::error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
    Ok(Ended::Stopped)
}

/// Resolves when this replica stops leading; never without leader election.
async fn leadership_lost(leadership: Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(mut rx) = leadership else {
        return std::future::pending().await;
    };
    while *rx.borrow() {
        if rx.changed().await.is_err() {
            break;
        }
    }
}

/// A flag that turns true at the first SIGTERM or SIGINT (one listener for
/// the process, so a signal between two terms is not missed).
fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Resolves once the stop flag is set.
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        // The signal listener is gone: no signal will come.
        std::future::pending::<()>().await;
    }
}

/// SIGINT or SIGTERM (what Kubernetes sends a Pod being stopped).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
