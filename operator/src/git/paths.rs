//! Path checks and applying one [`Change`] to an in-memory index.
//!
//! A change may only touch its own directory: every path is relative,
//! made of plain components (no `.`, `..`, `.git`, backslashes or NUL), and
//! lies under `root/dir`; no ancestor of the directory may be a file or a
//! symlink in the repository. All checks run before the index is touched,
//! so a refused change leaves the batch as it was.

use std::{collections::BTreeMap, path::Path};

use git2::{Index, IndexEntry, IndexTime, Oid, Repository};

use super::{Change, Error, Result, credentials::cause};

/// Mode of a regular, non-executable file.
const FILE_MODE: u32 = 0o100644;

/// `root` and `dir` joined with exactly one `/`.
pub(crate) fn join(root: &str, dir: &str) -> String {
    let root = root.trim_matches('/');
    let dir = dir.trim_matches('/');
    match (root.is_empty(), dir.is_empty()) {
        (true, _) => dir.to_string(),
        (_, true) => root.to_string(),
        _ => format!("{root}/{dir}"),
    }
}

/// Why `path` is not a safe relative repository path, if it is not.
pub(crate) fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty".into());
    }
    if path.starts_with('/') {
        return Err(format!("path {path:?} is absolute"));
    }
    for component in path.split('/') {
        let bad = match component {
            "" => Some("an empty component"),
            "." | ".." => Some("a '.' or '..' component"),
            c if c.eq_ignore_ascii_case(".git") => Some("a '.git' component"),
            c if c.contains(['\\', '\0']) => Some("a backslash or NUL"),
            _ => None,
        };
        if let Some(bad) = bad {
            return Err(format!("path {path:?} contains {bad}"));
        }
    }
    Ok(())
}

fn invalid(change: &Change, reason: impl Into<String>) -> Error {
    Error::InvalidChange {
        key: change.key.clone(),
        reason: reason.into(),
    }
}

/// Check `change` against the rules and the current `index` without
/// modifying anything. Returns the directory's full path.
pub(crate) fn check(index: &Index, root: &str, change: &Change) -> Result<String> {
    let dir = change.dir.trim_matches('/');
    if dir.is_empty() {
        return Err(invalid(change, "the request directory is empty"));
    }
    let full = join(root, dir);
    check_relative(&full).map_err(|r| invalid(change, format!("bad directory: {r}")))?;
    if change.delete && !change.files.is_empty() {
        return Err(invalid(change, "a deletion must not carry files"));
    }
    // No ancestor of the directory (nor the directory itself) may be a
    // file or symlink already in the tree.
    let mut prefix = String::new();
    for component in full.split('/') {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        if let Some(entry) = index.get_path(Path::new(&prefix), 0) {
            let kind = if entry.mode == 0o120000 { "symlink" } else { "file" };
            return Err(invalid(
                change,
                format!("{prefix:?} is a {kind} in the repository, not a directory"),
            ));
        }
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

/// Entries (path → blob id, mode) under `full/`.
fn entries_under(index: &Index, full: &str) -> BTreeMap<Vec<u8>, (Oid, u32)> {
    let inside = format!("{full}/");
    index
        .iter()
        .filter(|e| e.path.starts_with(inside.as_bytes()))
        .map(|e| (e.path, (e.id, e.mode)))
        .collect()
}

/// Make `index` hold exactly `change.files` under the change's directory.
/// Returns whether anything under it changed.
pub(crate) fn apply(repo: &Repository, index: &mut Index, root: &str, change: &Change) -> Result<bool> {
    let full = check(index, root, change)?;
    let git = |action: &'static str| {
        move |e| Error::Git {
            action,
            source: cause(e, None),
        }
    };
    let before = entries_under(index, &full);
    index
        .remove_dir(Path::new(&full), 0)
        .map_err(git("remove a directory from the index"))?;
    for (path, content) in &change.files {
        let id = repo.blob(content.as_bytes()).map_err(git("write a blob"))?;
        index
            .add(&IndexEntry {
                ctime: IndexTime::new(0, 0),
                mtime: IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: FILE_MODE,
                uid: 0,
                gid: 0,
                file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
                id,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            })
            .map_err(git("add a file to the index"))?;
    }
    Ok(entries_under(index, &full) != before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins() {
        assert_eq!(join("", "a/b"), "a/b");
        assert_eq!(join("apps/", "/a/b/"), "apps/a/b");
    }

    #[test]
    fn relative_paths() {
        assert!(check_relative("a/b.yaml").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "./a",
            "a//b",
            "a/.git/config",
            "a\\b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
