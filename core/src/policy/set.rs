//! The bundles in force: the last good version of each, and the latest
//! failure. A broken update never replaces a good version.

use chrono::{DateTime, Utc};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use paver_crds::{BundleError, BundleMatch, PolicyBundleSpec, TestResult};

use super::{Activation, CompiledBundle, activate};

/// The latest update of a bundle that failed to activate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleFailure {
    /// The version that failed.
    pub version: String,
    /// Its `match`, so requests it would match can wait for it when no good version exists.
    pub match_: Option<BundleMatch>,
    pub errors: Vec<BundleError>,
    pub tests: Vec<TestResult>,
}

/// What an update did, for the bundle's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleReport {
    /// The update compiled (no load, compile or activation-time error).
    pub compiled: bool,
    /// Every test passed.
    pub tests_passed: bool,
    /// The update is now the version in force.
    pub activated: bool,
    /// The version in force after the update (the previous good one when it failed).
    pub active_version: Option<String>,
    pub errors: Vec<BundleError>,
    pub tests: Vec<TestResult>,
}

/// Good bundles by name, plus the latest failure of each.
#[derive(Clone, Debug, Default)]
pub struct BundleSet {
    good: BTreeMap<String, Arc<CompiledBundle>>,
    failures: BTreeMap<String, BundleFailure>,
}

impl BundleSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Activates `spec` as bundle `name`. On success it replaces the good
    /// version; on failure the previous good version stays in force and the
    /// failure is recorded.
    pub fn update(&mut self, name: &str, spec: &PolicyBundleSpec, now: DateTime<Utc>) -> BundleReport {
        self.install(name, spec, activate(name, spec, now))
    }

    /// Puts in force what [`activate`] made of `spec` (run it first, away
    /// from whatever guards this set: compiling and testing a large bundle
    /// takes seconds, installing the result takes none).
    pub fn install(&mut self, name: &str, spec: &PolicyBundleSpec, activation: Activation) -> BundleReport {
        let compiled_ok = activation.errors.is_empty();
        let tests_passed = compiled_ok && activation.tests.iter().all(|t| t.pass);
        let activated = activation.compiled.is_some();
        match activation.compiled {
            Some(bundle) => {
                self.good.insert(name.to_string(), Arc::new(bundle));
                self.failures.remove(name);
            }
            None => {
                self.failures.insert(
                    name.to_string(),
                    BundleFailure {
                        version: spec.version.clone(),
                        match_: spec.match_.clone(),
                        errors: activation.errors.clone(),
                        tests: activation.tests.clone(),
                    },
                );
            }
        }
        BundleReport {
            compiled: compiled_ok,
            tests_passed,
            activated,
            active_version: self.good.get(name).map(|b| b.version.clone()),
            errors: activation.errors,
            tests: activation.tests,
        }
    }

    /// Forgets a deleted bundle.
    pub fn remove(&mut self, name: &str) {
        self.good.remove(name);
        self.failures.remove(name);
    }

    /// The good version of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<CompiledBundle>> {
        self.good.get(name).cloned()
    }

    /// The latest failed update of `name`, if it has not been fixed since.
    pub fn failure(&self, name: &str) -> Option<&BundleFailure> {
        self.failures.get(name)
    }

    /// Names of all bundles with a good version, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.good.keys().map(String::as_str)
    }

    /// The bundles that apply to a request on `route` in `namespace` with
    /// `labels`: those the route names (`route_bundles`) and those whose
    /// `match` holds (every criterion given; empty lists match anything).
    /// Returns them sorted by name, and the names of bundles that apply but
    /// have no good version (the request must wait: PolicyUnavailable).
    pub fn applicable(
        &self,
        route: &str,
        route_bundles: &[String],
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> (Vec<Arc<CompiledBundle>>, Vec<String>) {
        let matches = |m: &Option<BundleMatch>| {
            m.as_ref().is_some_and(|m| {
                (m.routes.is_empty() || m.routes.iter().any(|r| r == route))
                    && (m.namespaces.is_empty() || m.namespaces.iter().any(|n| n == namespace))
                    && m.label_selector.as_ref().is_none_or(|s| s.matches(labels))
            })
        };
        let mut wanted: BTreeSet<&str> = route_bundles.iter().map(String::as_str).collect();
        wanted.extend(
            self.good
                .iter()
                .filter(|(_, b)| matches(&b.match_))
                .map(|(n, _)| n.as_str()),
        );
        // A failed bundle with no good version holds back what it would match.
        wanted.extend(
            self.failures
                .iter()
                .filter(|(n, f)| !self.good.contains_key(*n) && matches(&f.match_))
                .map(|(n, _)| n.as_str()),
        );
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for name in wanted {
            match self.good.get(name) {
                Some(b) => found.push(b.clone()),
                None => missing.push(name.to_string()),
            }
        }
        (found, missing)
    }
}
