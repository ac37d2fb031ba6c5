//! Path checks and applying one [`Change`] to a tree [`Overlay`].
//!
//! A change may only touch its own directory: every path passes the one
//! path rule the render also applies ([`check_relative_path`]: relative,
//! plain segments, no `.`, `..`, `.git`, backslashes or control characters)
//! and lies under `dir`; no ancestor of the directory may be a file or a
//! symlink in the repository. A refused change leaves the batch as it was.

use git2::Repository;
use paver_core::paths::check_relative_path;

use super::{
    Change, Error, Result,
    credentials::cause,
    tree::{Blocked, FILE_MODE, Overlay},
};

/// Why `path` is not a safe relative repository path, if it is not.
pub(crate) fn check_relative(path: &str) -> Result<(), String> {
    check_relative_path(path).map_err(|reason| format!("path {path:?}: {reason}"))
}

fn invalid(change: &Change, reason: impl Into<String>) -> Error {
    Error::InvalidChange {
        key: change.key.clone(),
        reason: reason.into(),
    }
}

/// Check `change` against the rules that need no repository: the
/// directory and every file path are safe and inside it, trailers are
/// single-line tokens. Returns the directory's full path.
pub(crate) fn check(change: &Change) -> Result<String> {
    let full = change.dir.trim_matches('/').to_string();
    if full.is_empty() {
        return Err(invalid(change, "the request directory is empty"));
    }
    check_relative(&full).map_err(|r| invalid(change, format!("bad directory: {r}")))?;
    if change.delete && !change.files.is_empty() {
        return Err(invalid(change, "a deletion must not carry files"));
    }
    if let Some(old) = &change.moved_from {
        let old = old.trim_matches('/');
        if old.is_empty() {
            return Err(invalid(change, "the directory moved from is empty"));
        }
        check_relative(old).map_err(|r| invalid(change, format!("bad directory moved from: {r}")))?;
    }
    let inside = format!("{full}/");
    for path in change.files.keys() {
        check_relative(path).map_err(|r| invalid(change, r))?;
        if !path.starts_with(&inside) {
            return Err(invalid(
                change,
                format!("path {path:?} is outside the request directory {full:?}"),
            ));
        }
        let below = format!("{path}/");
        if let Some((other, _)) = change.files.range(below.clone()..).next()
            && other.starts_with(&below)
        {
            return Err(invalid(
                change,
                format!("path {path:?} is both a file and the directory of {other:?}"),
            ));
        }
    }
    for (key, value) in &change.trailers {
        let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !key_ok {
            return Err(invalid(change, format!("trailer key {key:?} is not a token")));
        }
        if value.contains(['\n', '\r']) {
            return Err(invalid(change, format!("trailer {key} spans lines")));
        }
    }
    Ok(full)
}

fn blocked(change: &Change, b: Blocked) -> Error {
    match b {
        Blocked::NotADirectory { prefix, symlink } => {
            let kind = if symlink { "symlink" } else { "file" };
            invalid(
                change,
                format!("{prefix:?} is a {kind} in the repository, not a directory"),
            )
        }
        Blocked::Git(e) => Error::Git {
            action: "edit a tree",
            source: cause(e, None),
        },
    }
}

/// Make `overlay` hold exactly `change.files` under the change's directory
/// (none: the directory is removed). Returns whether anything under it
/// changed. A refused change leaves the overlay's content as it was.
pub(crate) fn apply(repo: &Repository, overlay: &mut Overlay<'_>, change: &Change) -> Result<bool> {
    let full = check(change)?;
    // The old directory goes first: when the new one lies inside it, the
    // new files are written after.
    let moved = match change.moved_from.as_deref().map(|d| d.trim_matches('/')) {
        Some(old) if old != full => overlay.replace_dir(old, None).map_err(|b| blocked(change, b))?,
        _ => false,
    };
    // The directory's new tree, built on its own first.
    let mut dir = Overlay::new(repo, None);
    let prefix = format!("{full}/");
    for (path, content) in change.files.iter() {
        let id = repo
            .blob(content.as_bytes())
            .map_err(|e| blocked(change, Blocked::Git(e)))?;
        let relative = path.strip_prefix(&prefix).unwrap_or(path);
        dir.put_file(relative, id, FILE_MODE)
            .map_err(|b| blocked(change, b))?;
    }
    let tree = dir.write().map_err(|e| blocked(change, Blocked::Git(e)))?;
    let written = overlay.replace_dir(&full, tree).map_err(|b| blocked(change, b))?;
    Ok(moved || written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Git writer applies the core's one path rule (tested there),
    /// naming the path it refuses.
    #[test]
    fn relative_paths_follow_the_one_rule() {
        assert!(check_relative("a/b.yaml").is_ok());
        let err = check_relative("a/.git/config").expect_err("refused");
        assert!(err.contains("\"a/.git/config\"") && err.contains(".git"), "{err}");
        assert!(check_relative("a/b\nc").is_err());
    }
}
