//! Policy: PolicyBundles compiled once with regorus, then evaluated against
//! each request.
//!
//! - [`activate`] compiles a bundle (Rego v1), refuses what OPA's compiler
//!   refuses (`opa check --strict`: unsafe variables, rule conflicts,
//!   undefined functions, recursion and the rest, in `check`; held to real
//!   OPA by operator/tests/opa_check.rs), runs its `test_` rules and, when
//!   all of that passes, yields a [`CompiledBundle`].
//! - [`BundleSet`] keeps the last good version of every bundle: a broken
//!   update is reported and never replaces it.
//! - [`PolicyInput`] is built once per request; [`evaluate`] reads the
//!   rules `deny`, `warn`, `needs_approval` and `checks` of every package of
//!   every applicable bundle and applies modes, `enforceAfter` and
//!   exceptions into one deterministic [`PolicyOutcome`].
//! - Requests are evaluated on regorus's VM: activation compiles the rules
//!   Paver reads into one program per bundle (`program`). The interpreter
//!   checks and tests bundles, and evaluates a bundle the VM compiler
//!   refuses ([`CompiledBundle::evaluator`]). The two agree on the shipped
//!   bundles (operator/tests/vm_parity.rs); vendor/README.md says why
//!   regorus is patched.
//!
//! Rule output shapes (see DESIGN.md):
//! - `deny contains v` / `warn contains v`: `v` is a string or an object
//!   `{"id", "msg", "severity"?, "path"?}`. A plain string gets the rule id
//!   of its package's last segment (`package paver.security` → `security`),
//!   so exceptions can only waive string findings wholesale; give an `id` to
//!   make a finding waivable on its own.
//! - `needs_approval contains reason` (a string).
//! - `checks contains {"id", "category", "level", "pass", "msg"}`.
//!
//! Anything else a rule yields becomes a finding with rule id
//! [`INVALID_OUTPUT_RULE`] (or a failed check), so a malformed bundle fails
//! closed instead of silently passing.
//!
//! Limits: every evaluation runs under regorus's execution timer
//! ([`EVAL_TIME_LIMIT`]), which bounds loops and comprehensions, on the VM
//! and in the interpreter alike; activation evaluates a bundle's rules once
//! and runs its tests within [`ACTIVATION_TIME_BUDGET`] in total. A single
//! builtin call is not interrupted until it returns, so the patched regorus
//! bounds what one call may build (`numbers.range(1, 1e9)` is an error
//! naming the limit, not a 24 GB allocation; vendor/README.md, 11-16); it
//! has no per-engine memory budget without its `allocator-memory-limits`
//! feature. Recursive functions (which overflow regorus's stack) are
//! refused at activation, as OPA does.

mod check;
mod compile;
mod input;
mod outcome;
mod program;
mod set;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use compile::{
    ACTIVATION_TIME_BUDGET, Activation, CompiledBundle, CompiledException, activate, opa_check, run_tests,
};
pub use input::{PolicyInput, PreparedInput, RouteDoc};
pub use outcome::{
    INVALID_OUTPUT_RULE, MAX_FINDINGS, MAX_MESSAGE_BYTES, NEEDS_APPROVAL_RULE, PolicyOutcome, RuleKind,
    evaluate,
};
pub use set::{BundleFailure, BundleReport, BundleSet};

/// Longest a single rule evaluation may run before it is stopped.
pub const EVAL_TIME_LIMIT: Duration = Duration::from_secs(2);

/// Why policy could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A rule failed at evaluation time (runtime error, time limit).
    #[error("failed to evaluate {rule} of bundle {bundle}: {message}")]
    Evaluate {
        bundle: String,
        rule: String,
        message: String,
    },
    /// The input document could not be built.
    #[error("failed to build policy input: {0}")]
    Input(String),
}
