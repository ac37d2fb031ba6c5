//! The good versions of routes and bundles, kept in the cluster as
//! PaveRouteRevision and PolicyBundleRevision objects (the shell around
//! `core::revision`).
//!
//! Why objects of their own, and not the operator's memory, a ConfigMap or
//! the owner's status: they survive restarts and are seen by every replica;
//! RBAC lets only the operator write them (platform engineers read them)
//! while ConfigMaps in the operator's namespace are writable by anyone who
//! administers it; each is owned by its route or bundle, so it goes when
//! they go; and the owner's object stays its own size (a status holding a
//! second copy of a large bundle could pass etcd's 1.5 MiB object limit).
//! It is the shape Crossplane gives composition revisions, which route
//! versions will build on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams},
};
use paver_crds::{
    FIELD_MANAGER, PaveRoute, PaveRouteRevision, PaveRouteRevisionSpec, PaveRouteSpec, PolicyBundle,
    PolicyBundleRevision, PolicyBundleRevisionSpec, PolicyBundleSpec, vocab::labels,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{info, warn};

use super::{Ctx, Result};
use crate::core::revision::{self as core_rev, Stored};

/// A route or bundle whose good versions are kept as revisions.
pub trait Revisioned: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug {
    type Spec: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    type Rev: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug;
    /// The label naming the owner on its revisions.
    const LABEL: &'static str;
    /// Whether [`record`] deletes all but the newest revisions (bundles);
    /// route revisions are collected by the route census instead, when no
    /// request uses them.
    const PRUNE_ON_RECORD: bool;
    fn spec_of(&self) -> &Self::Spec;
    fn set_spec(&mut self, spec: Self::Spec);
    fn new_rev(meta: ObjectMeta, owner: &str, generation: i64, hash: String, spec: Self::Spec) -> Self::Rev;
    fn stored(rev: Self::Rev) -> Stored<Self::Spec>;
}

impl Revisioned for PaveRoute {
    type Spec = PaveRouteSpec;
    type Rev = PaveRouteRevision;
    const LABEL: &'static str = labels::ROUTE;
    const PRUNE_ON_RECORD: bool = false;
    fn spec_of(&self) -> &PaveRouteSpec {
        &self.spec
    }
    fn set_spec(&mut self, spec: PaveRouteSpec) {
        self.spec = spec;
    }
    fn new_rev(
        meta: ObjectMeta,
        owner: &str,
        generation: i64,
        hash: String,
        spec: PaveRouteSpec,
    ) -> Self::Rev {
        PaveRouteRevision {
            metadata: meta,
            spec: PaveRouteRevisionSpec {
                route: owner.to_string(),
                generation,
                hash,
                spec,
            },
        }
    }
    fn stored(rev: PaveRouteRevision) -> Stored<PaveRouteSpec> {
        Stored {
            owner_uid: owner_uid(&rev.metadata),
            name: rev.name_any(),
            owner: rev.spec.route,
            generation: rev.spec.generation,
            hash: rev.spec.hash,
            spec: rev.spec.spec,
            created: created(&rev.metadata),
        }
    }
}

impl Revisioned for PolicyBundle {
    type Spec = PolicyBundleSpec;
    type Rev = PolicyBundleRevision;
    const LABEL: &'static str = labels::BUNDLE;
    const PRUNE_ON_RECORD: bool = true;
    fn spec_of(&self) -> &PolicyBundleSpec {
        &self.spec
    }
    fn set_spec(&mut self, spec: PolicyBundleSpec) {
        self.spec = spec;
    }
    fn new_rev(
        meta: ObjectMeta,
        owner: &str,
        generation: i64,
        hash: String,
        spec: PolicyBundleSpec,
    ) -> Self::Rev {
        PolicyBundleRevision {
            metadata: meta,
            spec: PolicyBundleRevisionSpec {
                bundle: owner.to_string(),
                generation,
                hash,
                spec,
            },
        }
    }
    fn stored(rev: PolicyBundleRevision) -> Stored<PolicyBundleSpec> {
        Stored {
            owner_uid: owner_uid(&rev.metadata),
            name: rev.name_any(),
            owner: rev.spec.bundle,
            generation: rev.spec.generation,
            hash: rev.spec.hash,
            spec: rev.spec.spec,
            created: created(&rev.metadata),
        }
    }
}

fn created(meta: &ObjectMeta) -> Option<i64> {
    meta.creation_timestamp.as_ref().map(|t| t.0.as_second())
}

fn owner_uid(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .as_ref()
        .and_then(|refs| refs.first())
        .map(|r| r.uid.clone())
}

/// Label values hold at most 63 characters: a longer owner name is found
/// by listing every revision of its kind.
pub fn selector<K: Revisioned>(owner: &str) -> ListParams {
    if owner.len() <= 63 {
        ListParams::default().labels(&format!("{}={owner}", K::LABEL))
    } else {
        ListParams::default()
    }
}

/// The uid of owner `name`, read as metadata only (its spec may not be
/// readable): what its revisions' owner references must name.
pub async fn uid_of<K: Revisioned>(ctx: &Ctx, name: &str) -> Option<String> {
    Api::<K>::all(ctx.client.clone())
        .get_metadata_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|m| m.metadata.uid)
}

/// The name of the revision `owner`'s current spec would be kept as.
pub fn name_for<K: Revisioned>(owner: &K) -> String {
    core_rev::revision_name(&owner.name_any(), &core_rev::spec_hash(owner.spec_of()))
}

/// Keeps `owner`'s current spec (just put in force) as a revision and
/// returns its name. No write when `active` already names it; otherwise
/// one server-side apply (creating it, or recording the generation it came
/// back at), then revisions beyond [`core_rev::KEEP_REVISIONS`] are deleted.
pub async fn record<K: Revisioned>(ctx: &Ctx, owner: &K, active: Option<&str>) -> Result<String> {
    let spec = owner.spec_of().clone();
    let hash = core_rev::spec_hash(&spec);
    let owner_name = owner.name_any();
    let name = core_rev::revision_name(&owner_name, &hash);
    if active == Some(name.as_str()) {
        return Ok(name);
    }
    let meta = ObjectMeta {
        name: Some(name.clone()),
        labels: (owner_name.len() <= 63).then(|| [(K::LABEL.to_string(), owner_name.clone())].into()),
        owner_references: owner.meta().uid.clone().map(|uid| {
            vec![OwnerReference {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                name: owner_name.clone(),
                uid,
                ..Default::default()
            }]
        }),
        ..Default::default()
    };
    let generation = owner.meta().generation.unwrap_or_default();
    let rev = K::new_rev(meta, &owner_name, generation, hash, spec);
    let api: Api<K::Rev> = Api::all(ctx.client.clone());
    let mut doc = serde_json::to_value(&rev).map_err(|source| super::Error::Encode {
        what: "revision",
        source,
    })?;
    doc["apiVersion"] = K::Rev::api_version(&()).into();
    doc["kind"] = K::Rev::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&doc),
    )
    .await?;
    ctx.metrics.wrote(&K::Rev::plural(&()), "apply");
    info!(kind = %K::kind(&()), owner = %owner_name, revision = %name, generation, "kept the version in force as a revision");
    if !K::PRUNE_ON_RECORD {
        return Ok(name);
    }
    let revisions: Vec<Stored<K::Spec>> = api
        .list(&selector::<K>(&owner_name))
        .await?
        .items
        .into_iter()
        .map(K::stored)
        .collect();
    for old in core_rev::to_prune(&revisions, &owner_name, &name) {
        match api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => ctx.metrics.wrote(&K::Rev::plural(&()), "delete"),
            Err(e) => warn!(revision = %old, error = %e, "failed to delete an old revision"),
        }
    }
    Ok(name)
}

/// The revision to put in force when `owner`'s latest spec is broken and
/// nothing of it is in force yet (a restarted operator, a new replica): the
/// one its status names if sound, else the newest sound one. Revisions
/// edited after they were written, or left by an earlier object of the
/// same name, are refused (logged).
pub async fn last_good<K: Revisioned>(
    ctx: &Ctx,
    owner: &str,
    owner_uid: Option<&str>,
    active: Option<&str>,
) -> Option<Stored<K::Spec>> {
    let api: Api<K::Rev> = Api::all(ctx.client.clone());
    let revisions: Vec<Stored<K::Spec>> = match api.list(&selector::<K>(owner)).await {
        Ok(list) => list.items.into_iter().map(K::stored).collect(),
        Err(e) => {
            warn!(kind = %K::kind(&()), %owner, error = %e, "cannot list revisions: no last good version to fall back on");
            return None;
        }
    };
    let (pick, refusals) = core_rev::last_good(&revisions, owner, owner_uid, active);
    for (name, why) in refusals {
        warn!(kind = %K::kind(&()), %owner, revision = %name, %why, "revision refused");
    }
    pick.cloned()
}

/// Every revision of `owner` (the list is filtered by owner: a label
/// selector matches the owner's label, not `spec.route`).
pub async fn list<K: Revisioned>(ctx: &Ctx, owner: &str) -> Result<Vec<Stored<K::Spec>>> {
    let api: Api<K::Rev> = Api::all(ctx.client.clone());
    Ok(api
        .list(&selector::<K>(owner))
        .await?
        .items
        .into_iter()
        .map(K::stored)
        .filter(|r| r.owner == owner)
        .collect())
}
