//! Paver: a paved-path control plane for Kubernetes platform teams.
//!
//! `core` holds everything Paver decides about a request — validation,
//! policy, render, estimate, score — as pure functions of data. The
//! operator (`controller`, `git`) and the CLI (`cli`) are thin shells
//! around it, so `paver validate` gives the operator's verdict offline.

pub mod cli;
pub mod content;
pub mod core;
pub mod git;
