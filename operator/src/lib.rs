//! Paver: a paved-path control plane for Kubernetes platform teams.
//!
//! `core` (the `paver-core` crate) holds everything Paver decides about a request — validation,
//! policy, render, estimate, score — as pure functions of data. The
//! operator (`controller`, `git`) and the CLI (`cli`) are thin shells
//! around it, so `paver validate` gives the operator's verdict offline.

pub mod cli;
pub mod controller;
pub mod git;

/// The pure core lives in its own crate (`core/`, `paver-core`), so Cargo
/// keeps Kubernetes' client and Git out of it; re-exported under the names
/// the shells and tests use.
pub use paver_core::{self as core, content};
