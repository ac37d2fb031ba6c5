//! What a test does when something it needs is not on this machine. With
//! `CI` set (to anything but `false` or `0`) it fails, naming what is
//! missing and the command that provides it; elsewhere it may skip, with
//! the same message. Shared by the e2e suite and `operator/tests`.

use std::process::Command;

/// Whether a missing prerequisite fails the run (`CI` is set).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The one line printed for a missing prerequisite: `what` is missing,
/// `fix` provides it. Says FAIL under CI and SKIP elsewhere.
pub fn report(test: &str, what: &str, fix: &str) -> String {
    let verdict = if required() {
        "FAIL (CI is set: a missing prerequisite fails the run)"
    } else {
        "SKIP (outside CI; with CI set this fails)"
    };
    format!("{test}: {verdict}: {what}; provide it with `{fix}`")
}

/// The Debian packages `e2e/deps.sh` finds missing (`argocd`: including
/// those only Argo CD needs), or the reason it could not tell.
pub fn missing_packages(argocd: bool) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/deps.sh");
    let mut cmd = Command::new(script);
    cmd.arg("missing");
    if !argocd {
        cmd.arg("--no-argocd");
    }
    match cmd.output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        Err(e) => vec![format!("(e2e/deps.sh did not run: {e})")],
    }
}
