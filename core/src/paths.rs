//! The one rule for paths Paver writes, shared by the render (a template's
//! output path, a request's directory), `paver render --out` and the Git
//! writer: a relative path of plain segments that cannot step out of where
//! it is put or into Git's own files.

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest segment accepted, in bytes (most file systems' limit).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why `path` is not a safe relative path, if it is not: empty, absolute,
/// a backslash, NUL or another control character, longer than
/// [`MAX_PATH_BYTES`], or a segment that is empty, `.`, `..`, `.git` (in any
/// case) or longer than [`MAX_SEGMENT_BYTES`].
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    if path.contains('\\') {
        return Err("backslashes are not allowed".into());
    }
    if path.chars().any(char::is_control) {
        return Err("NUL and control characters are not allowed".into());
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("the path is longer than {MAX_PATH_BYTES} bytes"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("empty path segments are not allowed".into()),
            "." | ".." => return Err(format!("{segment:?} segments are not allowed")),
            s if s.eq_ignore_ascii_case(".git") => {
                return Err("\".git\" segments are not allowed (Git's own files)".into());
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(format!("a path segment is longer than {MAX_SEGMENT_BYTES} bytes"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_relative_path;

    #[test]
    fn plain_relative_paths_only() {
        for ok in [
            "a/b.yaml",
            "team/ns/name/.github/workflows/ci.yaml",
            ".gitignore",
            "a/.gitkeep",
        ] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
        let long_segment = "x".repeat(256);
        let long_path = "a/".repeat(600);
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a/.git/config",
            ".git/config",
            "a/.GIT/hooks/pre-commit",
            "a\\b",
            "a\0b",
            "a\nb",
            "a\u{1b}[31mb",
            long_segment.as_str(),
            long_path.as_str(),
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
