//! The hostile-input suite (issue 19): requests, routes, templates, schemas
//! and bundles written to break in, each run against the `paver` binary.
//!
//! The cases are data: `tests/hostile/cases.yaml` lists them (id, class,
//! command, expected exit status and message, time bound), and the files
//! they name live beside it. Large inputs are generated here from a small
//! description (`fill`), never committed. Every case must end in a clear
//! refusal (or, where the case says so, a harmless success) within its
//! bound, with no panic, no abort and no write outside the request's
//! directory; every failure is collected and reported at the end, one line
//! per case.
//!
//! By default the binary is the one cargo built for this test; CI points
//! `PAVER_HOSTILE_BIN` at `target/release/paver`. `PAVER_HOSTILE_ONLY=text`
//! runs the cases whose id contains `text`; `PAVER_HOSTILE_JOBS` sets how
//! many run at once (2 by default).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, atomic::AtomicUsize, atomic::Ordering},
    time::{Duration, Instant},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The classes of issue 19; every one must have cases.
const CLASSES: [&str; 7] = [
    "paths",
    "tenancy",
    "injection",
    "budget-bypass",
    "resource-exhaustion",
    "parsing",
    "smaller",
];
const MIN_CASES: usize = 100;
/// The bound every case gets, plus [`SECONDS_PER_MIB`] of input.
const BASE_SECONDS: f64 = 10.0;
const SECONDS_PER_MIB: f64 = 1.0;
/// What a refusal may print (stdout and stderr together) unless a case says
/// otherwise: a clear refusal is a line, not the input echoed back.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Output kept per stream; the rest is counted, not stored.
const CAPTURE_BYTES: usize = 8 * 1024 * 1024;
/// Address space per run (`ulimit -v`, KiB): a case that tries to allocate
/// gigabytes fails here (an abort, reported) instead of taking the machine.
const MEMORY_KIB: u64 = 4 * 1024 * 1024;
/// The request directory of the shared requests (`team/namespace/name`).
const DEFAULT_OWN_DIR: &str = "shop/shop/web";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    id: String,
    class: String,
    /// What the case tries, for the reader.
    what: String,
    /// `validate`, `render` (with `--out`) or `test`.
    command: String,
    /// The request file (under tests/hostile/), for validate and render.
    #[serde(default)]
    request: Option<String>,
    /// Text replacements `[from, to]` applied to the copied request in
    /// order, each to the first occurrence of `from` (which must occur).
    #[serde(default)]
    replace: Vec<(String, String)>,
    /// `--routes` folders or files; absent: the built-in routes; `[]`: an
    /// empty folder.
    #[serde(default)]
    routes: Option<Vec<String>>,
    /// `--bundles` folders or files, as `routes`.
    #[serde(default)]
    bundles: Option<Vec<String>>,
    /// The paths `paver test` is given.
    #[serde(default)]
    paths: Vec<String>,
    /// More arguments, after the others (`{tmp}`: the scratch folder,
    /// `{root}`: the repository).
    #[serde(default)]
    args: Vec<String>,
    /// Placeholders `@@NAME@@` in every copied file, replaced by generated text.
    #[serde(default)]
    fill: BTreeMap<String, Fill>,
    /// Links and folders made before the run (paths relative to the case's
    /// scratch folder: `case/`, `out/`, `outside/`).
    #[serde(default)]
    setup: Vec<Setup>,
    exit: i32,
    /// Text the output must contain (one string or a list).
    expect: OneOrMany,
    /// Text that must appear neither in the output nor in any file written.
    #[serde(default)]
    absent: Vec<String>,
    /// Request directories under `--out` the run may write (default
    /// `shop/shop/web`).
    #[serde(default)]
    own: Option<Vec<String>>,
    /// Base time bound in seconds (default 10), plus 1 s per MiB of input.
    #[serde(default)]
    seconds: Option<f64>,
    #[serde(default)]
    max_output: Option<usize>,
    /// Why this case cannot pass yet: it runs, its result is printed, and
    /// it does not count as a failure.
    #[serde(default)]
    pending: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn all(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fill {
    /// Text repeated `times` times; `{n}` in it counts 0, 1, 2, ...
    #[serde(default)]
    repeat: Option<String>,
    /// Bytes in hex (spaces allowed), repeated `times` times: for inputs
    /// that are not UTF-8.
    #[serde(default)]
    hex: Option<String>,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

/// One thing made before the run, paths relative to the scratch folder:
/// `{symlink: LINK, to: TARGET}` (TARGET relative to the scratch folder,
/// absolute, `{root}/...` for the repository, or `../...`, kept relative
/// to the link's folder), `{mkdir: DIR}`, or `{mkfifo: PATH}` (a named
/// pipe: reading it blocks).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    #[serde(default)]
    symlink: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    mkdir: Option<String>,
    #[serde(default)]
    mkfifo: Option<String>,
}

impl Setup {
    fn make(&self, t: &Path) -> Result<(), String> {
        match self {
            Setup {
                symlink: Some(link),
                to: Some(to),
                mkdir: None,
                mkfifo: None,
            } => {
                let target = match to.strip_prefix("{root}/") {
                    Some(rest) => repo_root().join(rest),
                    None if to.starts_with('/') || to.starts_with("../") => PathBuf::from(to),
                    None => t.join(to),
                };
                let link = t.join(link);
                std::fs::create_dir_all(link.parent().unwrap_or(t))
                    .and_then(|()| std::os::unix::fs::symlink(&target, &link))
                    .map_err(|e| e.to_string())
            }
            Setup {
                mkdir: Some(dir),
                symlink: None,
                to: None,
                mkfifo: None,
            } => std::fs::create_dir_all(t.join(dir)).map_err(|e| e.to_string()),
            Setup {
                mkfifo: Some(path),
                symlink: None,
                to: None,
                mkdir: None,
            } => {
                let p = t.join(path);
                std::fs::create_dir_all(p.parent().unwrap_or(t)).map_err(|e| e.to_string())?;
                match Command::new("mkfifo").arg(&p).status() {
                    Ok(s) if s.success() => Ok(()),
                    other => Err(format!("mkfifo {}: {other:?}", p.display())),
                }
            }
            _ => Err("expected one of {symlink, to}, {mkdir} or {mkfifo}".into()),
        }
    }
}

fn hostile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load_cases() -> Vec<Case> {
    let path = hostile_dir().join("cases.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The manifest itself: unique ids, known classes and commands, files that
/// exist; and for the whole suite (`complete`), every class covered and
/// enough cases.
fn manifest_problems(cases: &[Case], complete: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let mut per_class: BTreeMap<&str, usize> = CLASSES.iter().map(|c| (*c, 0)).collect();
    for c in cases {
        if !ids.insert(c.id.as_str()) {
            problems.push(format!("{}: id given twice", c.id));
        }
        match per_class.get_mut(c.class.as_str()) {
            Some(n) => *n += 1,
            None => problems.push(format!("{}: unknown class {:?}", c.id, c.class)),
        }
        if !["validate", "render", "test"].contains(&c.command.as_str()) {
            problems.push(format!("{}: unknown command {:?}", c.id, c.command));
        }
        if c.command != "test" && c.request.is_none() && !c.args.iter().any(|a| a == "-f") {
            problems.push(format!("{}: {} needs a request", c.id, c.command));
        }
        let files = c
            .request
            .iter()
            .chain(c.routes.iter().flatten())
            .chain(c.bundles.iter().flatten());
        for f in files.chain(&c.paths) {
            if !hostile_dir().join(f).exists() {
                problems.push(format!("{}: {f} does not exist under tests/hostile/", c.id));
            }
        }
    }
    if !complete {
        return problems;
    }
    for (class, n) in per_class {
        if n == 0 {
            problems.push(format!("class {class} has no case"));
        }
    }
    if cases.len() < MIN_CASES {
        problems.push(format!("{} cases, fewer than {MIN_CASES}", cases.len()));
    }
    problems
}

fn generated(fill: &Fill) -> Vec<u8> {
    let unit = match (&fill.repeat, &fill.hex) {
        (Some(text), None) if text.contains("{n}") => {
            return (0..fill.times)
                .flat_map(|i| text.replace("{n}", &i.to_string()).into_bytes())
                .collect();
        }
        (Some(text), None) => text.as_bytes().to_vec(),
        (None, Some(hex)) => {
            let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
            (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex fill"))
                .collect()
        }
        _ => panic!("a fill needs exactly one of repeat and hex"),
    };
    unit.repeat(fill.times)
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Copies `rel` (a file or folder under tests/hostile/) to `to/rel`, with
/// the placeholders filled; returns the bytes written.
fn copy_in(
    rel: &str,
    to: &Path,
    fills: &[(Vec<u8>, Vec<u8>)],
    edits: &[(String, String)],
) -> Result<u64, String> {
    let from = hostile_dir().join(rel);
    let target = to.join(rel);
    let meta = std::fs::symlink_metadata(&from).map_err(|e| format!("{rel}: {e}"))?;
    if meta.is_dir() {
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        let mut total = 0;
        let mut entries: Vec<_> = std::fs::read_dir(&from)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        for name in entries {
            total += copy_in(&format!("{rel}/{name}"), to, fills, &[])?;
        }
        return Ok(total);
    }
    let mut bytes = std::fs::read(&from).map_err(|e| format!("{rel}: {e}"))?;
    for (from_text, to_text) in edits {
        let text = String::from_utf8(bytes).map_err(|_| format!("{rel}: replace needs UTF-8"))?;
        if !text.contains(from_text.as_str()) {
            return Err(format!("{rel}: replace: {from_text:?} not found"));
        }
        bytes = text.replacen(from_text.as_str(), to_text, 1).into_bytes();
    }
    for (needle, with) in fills {
        if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
            bytes = replace_bytes(&bytes, needle, with);
        }
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&target, &bytes).map_err(|e| e.to_string())?;
    Ok(bytes.len() as u64)
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    File([u8; 32]),
    Link(PathBuf),
    Other,
}

/// Every entry under `root` (links not followed), by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let kind = meta.file_type();
            let e = if kind.is_symlink() {
                Entry::Link(std::fs::read_link(&path).unwrap_or_default())
            } else if kind.is_dir() {
                stack.push(path.clone());
                Entry::Dir
            } else if kind.is_file() {
                Entry::File(Sha256::digest(std::fs::read(&path).unwrap_or_default()).into())
            } else {
                Entry::Other
            };
            out.insert(rel, e);
        }
    }
    out
}

/// What changed between two snapshots outside the allowed folders.
fn changes_outside(
    before: &BTreeMap<String, Entry>,
    after: &BTreeMap<String, Entry>,
    allowed: &[String],
) -> Vec<String> {
    let inside = |p: &str| allowed.iter().any(|a| p == a || p.starts_with(&format!("{a}/")));
    // The folders on the way to an allowed one may be created.
    let on_the_way = |p: &str| allowed.iter().any(|a| a.starts_with(&format!("{p}/")));
    let mut out = Vec::new();
    for (path, entry) in after {
        if inside(path) || (*entry == Entry::Dir && on_the_way(path) && !before.contains_key(path)) {
            continue;
        }
        match before.get(path) {
            None => out.push(format!("wrote {path}")),
            Some(b) if b != entry => out.push(format!("changed {path}")),
            Some(_) => {}
        }
    }
    for path in before.keys() {
        if !inside(path) && !after.contains_key(path) {
            out.push(format!("removed {path}"));
        }
    }
    out
}

fn files_text(root: &Path) -> Vec<(String, String)> {
    snapshot(root)
        .into_iter()
        .filter(|(_, e)| matches!(e, Entry::File(_)))
        .map(|(p, _)| {
            let text =
                String::from_utf8_lossy(&std::fs::read(root.join(&p)).unwrap_or_default()).into_owned();
            (p, text)
        })
        .collect()
}

fn binary() -> PathBuf {
    match std::env::var_os("PAVER_HOSTILE_BIN") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { repo_root().join(p) }
        }
        _ => PathBuf::from(env!("CARGO_BIN_EXE_paver")),
    }
}

struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    output: String,
    output_bytes: usize,
    elapsed: Duration,
    timed_out: bool,
}

fn capture(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<(Vec<u8>, usize)> {
    std::thread::spawn(move || {
        let (mut kept, mut total, mut buf) = (Vec::new(), 0usize, [0u8; 64 * 1024]);
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
            let room = CAPTURE_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        (kept, total)
    })
}

/// Runs the binary with `args` under the memory cap, in its own process
/// group, which is killed at `bound`.
fn run(args: &[String], cwd: &Path, bound: Duration) -> Result<Ran, String> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v \"$1\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(MEMORY_KIB.to_string())
        .arg(binary())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("failed to start {}: {e}", binary().display()))?;
    let started = Instant::now();
    let out = capture(child.stdout.take().ok_or("no stdout")?);
    let err = capture(child.stderr.take().ok_or("no stderr")?);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > bound {
            timed_out = true;
            // The whole group: nothing left holding the pipes open.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -KILL -{}", child.id())])
                .status();
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    let (out, out_n) = out.join().map_err(|_| "stdout reader panicked")?;
    let (err, err_n) = err.join().map_err(|_| "stderr reader panicked")?;
    let mut output = String::from_utf8_lossy(&out).into_owned();
    output.push_str(&String::from_utf8_lossy(&err));
    Ok(Ran {
        code: status.code(),
        signal: status.signal(),
        output,
        output_bytes: out_n + err_n,
        elapsed,
        timed_out,
    })
}

/// The first line of the output that says why, for the report.
fn gist(output: &str) -> String {
    let line = output
        .lines()
        .find(|l| l.contains("error") || l.contains("ERROR") || l.contains("LINT") || l.contains("panicked"))
        .or_else(|| output.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim();
    let mut line: String = line.chars().take(160).collect();
    if line.len() < output.trim().len() {
        line.push_str(" …");
    }
    line
}

/// A case's result: how long it took, or what went wrong.
type Outcome = Result<Duration, Vec<String>>;

/// Runs one case; `Err` lists what went wrong.
fn check(case: &Case) -> Outcome {
    let scratch = tempfile::tempdir().map_err(|e| vec![e.to_string()])?;
    let t = scratch.path();
    let case_dir = t.join("case");
    let out_dir = t.join("out");
    for d in [&case_dir, &t.join("outside")] {
        std::fs::create_dir_all(d).map_err(|e| vec![e.to_string()])?;
    }
    let fills: Vec<(Vec<u8>, Vec<u8>)> = case
        .fill
        .iter()
        .map(|(name, f)| (format!("@@{name}@@").into_bytes(), generated(f)))
        .collect();
    let mut input_bytes = 0u64;
    let mut copy = |rel: &str, edits: &[(String, String)]| -> Result<String, Vec<String>> {
        input_bytes += copy_in(rel, &case_dir, &fills, edits).map_err(|e| vec![e])?;
        Ok(case_dir.join(rel).display().to_string())
    };
    let mut args: Vec<String> = vec![case.command.clone()];
    if let Some(request) = &case.request {
        args.extend(["-f".into(), copy(request, &case.replace)?]);
    }
    for (flag, list) in [("--routes", &case.routes), ("--bundles", &case.bundles)] {
        match list {
            None => {}
            Some(list) if list.is_empty() => {
                let empty = t.join(format!("empty{flag}"));
                std::fs::create_dir_all(&empty).map_err(|e| vec![e.to_string()])?;
                args.extend([flag.to_string(), empty.display().to_string()]);
            }
            Some(list) => {
                for p in list {
                    let copied = copy(p, &[])?;
                    args.extend([flag.to_string(), copied]);
                }
            }
        }
    }
    for p in &case.paths {
        let copied = copy(p, &[])?;
        args.push(copied);
    }
    if case.command == "render" {
        // What is already there: a checkout's Git config, a file of the
        // user's, another team's committed render.
        for (path, text) in [
            (".git/config", "[core]\n\trepositoryformatversion = 0\n"),
            ("sentinel.txt", "not Paver's\n"),
            ("other/other/app/manifests/deployment.yaml", "kind: Deployment\n"),
        ] {
            let p = out_dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap_or(&out_dir)).map_err(|e| vec![e.to_string()])?;
            std::fs::write(&p, text).map_err(|e| vec![e.to_string()])?;
        }
        args.extend(["--out".into(), out_dir.display().to_string()]);
    }
    let root = repo_root().display().to_string();
    let tmp = t.display().to_string();
    args.extend(
        case.args
            .iter()
            .map(|a| a.replace("{tmp}", &tmp).replace("{root}", &root)),
    );
    for s in &case.setup {
        s.make(t).map_err(|e| vec![format!("setup {s:?}: {e}")])?;
    }
    let own: Vec<String> = case
        .own
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_OWN_DIR.to_string()])
        .into_iter()
        .map(|d| format!("out/{d}"))
        .collect();
    let allowed: &[String] = if case.command == "render" { &own } else { &[] };
    let before = snapshot(t);
    let mib = input_bytes as f64 / (1024.0 * 1024.0);
    let bound = Duration::from_secs_f64(case.seconds.unwrap_or(BASE_SECONDS) + mib * SECONDS_PER_MIB);
    let ran = run(&args, t, bound).map_err(|e| vec![e])?;
    let after = snapshot(t);

    let mut problems = Vec::new();
    if ran.timed_out {
        problems.push(format!("no answer within {:.1}s (killed)", bound.as_secs_f64()));
    }
    if let Some(sig) = ran.signal
        && !ran.timed_out
    {
        problems.push(format!(
            "killed by signal {sig} (abort or crash): {}",
            gist(&ran.output)
        ));
    }
    let panicked =
        ran.output.contains("panicked at") || ran.output.contains("RUST_BACKTRACE") || ran.code == Some(101);
    if panicked {
        problems.push(format!("panicked: {}", gist(&ran.output)));
    }
    if ran.output.contains("memory allocation of") {
        problems.push(format!("aborted: {}", gist(&ran.output)));
    }
    // After a hang, a crash or a panic, the status and message say nothing more.
    let answered = !ran.timed_out && ran.signal.is_none() && !panicked;
    if answered && ran.code != Some(case.exit) {
        problems.push(format!(
            "exit {} expected, got {}: {}",
            case.exit,
            ran.code.map_or("none".into(), |c| c.to_string()),
            gist(&ran.output)
        ));
    }
    if answered {
        for want in case.expect.all() {
            if !ran.output.contains(want) {
                problems.push(format!("output lacks {want:?}: {}", gist(&ran.output)));
            }
        }
    }
    let max_output = case.max_output.unwrap_or(MAX_OUTPUT_BYTES);
    if ran.output_bytes > max_output {
        problems.push(format!(
            "printed {} bytes, more than {max_output}",
            ran.output_bytes
        ));
    }
    if ran.elapsed > bound && !ran.timed_out {
        problems.push(format!(
            "took {:.1}s, bound {:.1}s",
            ran.elapsed.as_secs_f64(),
            bound.as_secs_f64()
        ));
    }
    problems.extend(changes_outside(&before, &after, allowed));
    if !case.absent.is_empty() {
        let written = if out_dir.exists() {
            files_text(&out_dir)
        } else {
            Vec::new()
        };
        for bad in &case.absent {
            if ran.output.contains(bad.as_str()) {
                problems.push(format!("output contains {bad:?}"));
            }
            for (path, text) in &written {
                if text.contains(bad.as_str()) {
                    problems.push(format!("out/{path} contains {bad:?}"));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(ran.elapsed)
    } else {
        Err(problems)
    }
}

fn out(line: &str) {
    // Straight to the process's stderr: the test harness captures
    // `println!`, and this report is meant to be seen on success too.
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn hostile_inputs_are_refused_clearly_and_safely() {
    let cases = load_cases();
    let only = std::env::var("PAVER_HOSTILE_ONLY").unwrap_or_default();
    let problems = manifest_problems(&cases, only.is_empty());
    assert!(
        problems.is_empty(),
        "tests/hostile/cases.yaml:\n{}",
        problems.join("\n")
    );
    let selected: Vec<&Case> = cases.iter().filter(|c| c.id.contains(only.as_str())).collect();
    let jobs = std::env::var("PAVER_HOSTILE_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    out(&format!(
        "hostile: {} case(s) against {} ({jobs} at a time)",
        selected.len(),
        binary().display()
    ));
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Outcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = selected.get(i) else { break };
                    let result = check(case);
                    let line = match (&result, &case.pending) {
                        (Ok(t), None) => format!("  pass     {} ({:.1}s)", case.id, t.as_secs_f64()),
                        (Ok(t), Some(_)) => format!(
                            "  PENDING  {} passes now ({:.1}s): remove its pending mark",
                            case.id,
                            t.as_secs_f64()
                        ),
                        (Err(p), None) => format!("  FAIL     {}: {}", case.id, p.join("; ")),
                        (Err(p), Some(why)) => format!("  pending  {}: {} [{why}]", case.id, p.join("; ")),
                    };
                    out(&line);
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let (mut passed, mut pending) = (0usize, 0usize);
    let mut failures = Vec::new();
    for (i, result) in &results {
        let case = selected[*i];
        match (result, &case.pending) {
            (_, Some(_)) => pending += 1,
            (Ok(_), None) => passed += 1,
            (Err(p), None) => failures.push(format!(
                "{} [{}: {}] expected exit {} with {:?}: {}",
                case.id,
                case.class,
                case.what,
                case.exit,
                case.expect.all(),
                p.join("; ")
            )),
        }
    }
    out(&format!(
        "{} cases: {passed} passed, {} failed, {pending} pending ({:.1}s)",
        results.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    ));
    assert!(failures.is_empty(), "failed cases:\n{}", failures.join("\n"));
}
