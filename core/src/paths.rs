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
    if let Some(c) = path.chars().find(|c| is_invisible(*c)) {
        return Err(format!(
            "invisible or direction-changing characters are not allowed (U+{:04X}): a path must read as it is",
            c as u32
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("the path is longer than {MAX_PATH_BYTES} bytes"));
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("empty path segments are not allowed".into()),
            "." | ".." => return Err(format!("{segment:?} segments are not allowed")),
            s if is_git_dir(s) => {
                return Err(format!(
                    "{s:?} is Git's own folder (\".git\", or a name Windows or macOS reads as it) and not allowed"
                ));
            }
            s if s.len() > MAX_SEGMENT_BYTES => {
                return Err(format!("a path segment is longer than {MAX_SEGMENT_BYTES} bytes"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every directory holding `path`, outermost first: `""`, `a`, `a/b` for
/// `a/b/file`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(path.match_indices('/').map(|(i, _)| &path[..i]))
}

/// Unicode's format characters (category Cf) and line separators that a
/// path could carry unseen: zero-width spaces and joiners, bidirectional
/// overrides and isolates (U+202E shows `exe.txt` as `txt.exe`), the BOM.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

/// `.git` as Git itself refuses it on checkout (core.protectNTFS and
/// protectHFS): in any case, with trailing dots or spaces (Windows drops
/// them), as its 8.3 short name `git~1`, or with an NTFS stream
/// (`.git::$INDEX_ALLOCATION`).
fn is_git_dir(segment: &str) -> bool {
    let base = segment.split(':').next().unwrap_or(segment);
    let trimmed = base.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(".git") || trimmed.eq_ignore_ascii_case("git~1")
}

#[cfg(test)]
mod tests {
    use super::{ancestors, check_relative_path};

    #[test]
    fn ancestors_of_a_path() {
        assert_eq!(ancestors("a/b/f").collect::<Vec<_>>(), ["", "a", "a/b"]);
        assert_eq!(ancestors("f").collect::<Vec<_>>(), [""]);
    }

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
            "manifests/\u{202E}lmay.exe",
            "a/b\u{200B}c",
            "a/.git./config",
            "a/.GIT /config",
            "a/GIT~1/config",
            "a/.git::$INDEX_ALLOCATION/config",
            long_segment.as_str(),
            long_path.as_str(),
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
