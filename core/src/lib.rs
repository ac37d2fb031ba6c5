//! The pure core: everything Paver decides about a request, as functions of
//! data. No Kubernetes client and no Git in here — this crate's manifest
//! cannot reach them, and `make lint` checks that its dependency graph holds
//! no kube client, kube-runtime, git2 or tokio: the CLI and the operator
//! call the same functions, and tests need no cluster.
//!
//! A request walks down this list once:
//! `validate` (route selection, schema, defaults) → `estimate` (monthly
//! cost) → `policy` (deny / warn / needs_approval) → `render` (files and
//! the Argo CD Application) → `policy` again for `checks` → `score`.
//! `verdict` strings them together into the one decision both shells print.

pub mod content;
pub mod escape;
pub mod estimate;
pub mod kubernetes;
pub mod observed;
pub mod paths;
pub mod policy;
pub mod preview;
pub mod render;
pub mod revision;
pub mod rollout;
pub mod score;
pub mod validate;
pub mod verdict;

/// The longest [`FieldError::message`], in bytes: a refusal is a line, not
/// the input echoed back (a message can quote user input).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 1024;
/// The longest [`FieldError::field`], in bytes (a path can hold user keys).
pub const MAX_ERROR_FIELD_BYTES: usize = 512;

/// A problem with one field of an input, named by its path
/// (e.g. `spec.parameters.compute.replicas`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// Path of the offending field, dotted, from the object's root.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl FieldError {
    /// The error, its field and message cut to [`MAX_ERROR_FIELD_BYTES`] and
    /// [`MAX_ERROR_MESSAGE_BYTES`] (`... (N more bytes)`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (mut field, mut message) = (field.into(), message.into());
        paver_crds::truncate_message(&mut field, MAX_ERROR_FIELD_BYTES);
        paver_crds::truncate_message(&mut message, MAX_ERROR_MESSAGE_BYTES);
        FieldError { field, message }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // An error about no one field (`and 12 more ...`) is its message.
        if self.field.is_empty() {
            return f.write_str(&self.message);
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Parses `30s`, `5m`, `1h`, `7d` or a number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h"))?;
    let scale = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}
