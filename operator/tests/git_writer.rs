//! The Git writer against real repositories: bare repos on disk and the
//! smart-HTTP server in `support/git_http.rs`.

#[path = "support/git_http.rs"]
mod git_http;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use git_http::GitHttpServer;
use git2::Repository;
use paver::git::{Change, Credentials, Error, GitConfig, Repo, RetryPolicy, WriterHandle, WriterOptions};
use tempfile::TempDir;

const USER: &str = "paver-bot";
const TOKEN: &str = "tok-5up3r-s3cr3t-9f8e7d";

struct Fixture {
    tmp: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// An empty bare repository under `srv/<name>`.
    fn remote(&self, name: &str) -> PathBuf {
        let path = self.path(&format!("srv/{name}"));
        let repo = Repository::init_bare(&path).expect("init bare");
        repo.set_head("refs/heads/main").expect("HEAD -> main");
        path
    }

    fn secret(&self, name: &str, value: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, format!("{value}\n")).expect("write secret");
        path
    }

    fn token_credentials(&self, token: &str) -> Credentials {
        Credentials::UserToken {
            username_file: self.secret("username", USER),
            token_file: self.secret(&format!("token-{}", token.len()), token),
        }
    }

    fn config(&self, url: &str, workdir: &str, credentials: Credentials) -> GitConfig {
        GitConfig {
            url: url.to_string(),
            branch: "main".into(),
            workdir: self.path(workdir),
            credentials,
            author_name: "Paver".into(),
            author_email: "paver@example.com".into(),
        }
    }

    fn repo(&self, url: &str, workdir: &str) -> Repo {
        Repo::open(self.config(url, workdir, Credentials::None)).expect("open")
    }
}

/// A change for request `key`, in directory `apps/<key>`.
fn change(key: &str, files: &[(&str, &str)]) -> Change {
    let dir = format!("apps/{key}");
    Change {
        key: key.to_string(),
        files: std::sync::Arc::new(
            files
                .iter()
                .map(|(p, c)| (format!("{dir}/{p}"), c.to_string()))
                .collect(),
        ),
        dir,
        delete: false,
        moved_from: None,
        trailers: vec![
            ("Paver-Request".into(), key.into()),
            ("Paver-Request-UID".into(), format!("uid-{key}")),
            ("Paver-Generation".into(), "1".into()),
            ("Paver-Route".into(), "microservice@1.0.0".into()),
            ("Paver-Bundles".into(), "security@1.0.0, finops@1.2.0".into()),
        ],
        summary: format!("render {key}"),
    }
}

fn deletion(key: &str) -> Change {
    Change {
        delete: true,
        files: Default::default(),
        summary: format!("delete {key}"),
        ..change(key, &[])
    }
}

/// Commit ids on the remote branch, newest first.
fn history(remote: &Path) -> Vec<git2::Oid> {
    let repo = Repository::open_bare(remote).expect("open remote");
    let mut walk = repo.revwalk().expect("revwalk");
    walk.push_ref("refs/heads/main").expect("main exists");
    walk.map(|id| id.expect("walk")).collect()
}

fn message_of(remote: &Path, id: git2::Oid) -> String {
    let repo = Repository::open_bare(remote).expect("open remote");
    let commit = repo.find_commit(id).expect("commit");
    commit.message().expect("utf-8 message").to_string()
}

fn url_of(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn first_commit_into_empty_remote() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    assert_eq!(repo.head().expect("head"), None);

    let out = repo
        .commit_batch(vec![change("pay/gw", &[("deploy.yaml", "kind: Deployment\n")])])
        .expect("commit");
    let commit = out.commit.clone().expect("a commit");
    assert_eq!(out.head, commit);
    let result = out.changes[0].as_ref().expect("change ok");
    assert!(result.changed);
    assert_eq!(result.revision.as_deref(), Some(commit.as_str()));
    assert_eq!(out.metrics.attempts, 1);

    // initial commit + the render
    let ids = history(&remote);
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0].to_string(), commit);
    assert_eq!(repo.head().expect("head"), Some(commit));

    // Regular file mode on the remote.
    let bare = Repository::open_bare(&remote).expect("open");
    let tree = bare.find_commit(ids[0]).and_then(|c| c.tree()).expect("tree");
    let entry = tree.get_path(Path::new("apps/pay/gw/deploy.yaml")).expect("file");
    assert_eq!(entry.filemode(), 0o100644);

    let files = repo.read_dir("apps/pay/gw").expect("read");
    assert_eq!(
        files,
        BTreeMap::from([(
            "apps/pay/gw/deploy.yaml".to_string(),
            "kind: Deployment\n".to_string()
        )])
    );
}

#[test]
fn batch_of_three_is_one_commit_with_all_trailers() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    let keys = ["a/one", "b/two", "c/three"];
    let out = repo
        .commit_batch(keys.iter().map(|k| change(k, &[("x.yaml", k)])).collect())
        .expect("commit");
    assert!(out.changes.iter().all(|c| c.as_ref().is_ok_and(|c| c.changed)));
    let ids = history(&remote);
    assert_eq!(ids.len(), 2, "initial + one batch commit");

    let msg = message_of(&remote, ids[0]);
    assert!(msg.starts_with("paver: render 3 requests\n\n"), "{msg}");
    for k in keys {
        assert!(msg.contains(&format!("- {k}: render {k}")), "{msg}");
    }
    let trailers = git2::message_trailers_strs(&msg).expect("trailers");
    let got: Vec<(String, String)> = trailers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for k in keys {
        for t in &change(k, &[]).trailers {
            assert!(got.contains(t), "missing {t:?} in {got:?}");
        }
    }
}

#[test]
fn unchanged_render_makes_no_commit() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    let c = change("pay/gw", &[("a.yaml", "a"), ("b.yaml", "b")]);
    let c2 = c.clone();
    let first = repo.commit_batch(vec![c.clone()]).expect("commit");
    let second = repo.commit_batch(vec![c]).expect("commit again");
    assert_eq!(second.commit, None);
    assert_eq!(second.metrics.attempts, 0, "no push");
    assert_eq!(second.head, first.head);
    let result = second.changes[0].as_ref().expect("ok");
    assert!(!result.changed);
    assert_eq!(result.revision.as_deref(), Some(first.head.as_str()));
    assert_eq!(history(&remote).len(), 2);

    // Another request's commit moves the head, not this request's revision:
    // its output is still at the commit that last changed its directory.
    let other = repo
        .commit_batch(vec![change("pay/other", &[("c.yaml", "c")])])
        .expect("other");
    assert_ne!(other.head, first.head);
    let third = repo.commit_batch(vec![c2]).expect("third");
    let result = third.changes[0].as_ref().expect("ok");
    assert!(!result.changed);
    assert_eq!(result.revision.as_deref(), Some(first.head.as_str()));
    assert!(repo.contains(&other.head, &first.head).expect("contains"));
    assert!(!repo.contains(&first.head, &other.head).expect("contains"));
}

#[test]
fn stale_file_removed_and_deletion_removes_dir() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    repo.commit_batch(vec![
        change("pay/gw", &[("a.yaml", "a"), ("old/b.yaml", "b")]),
        change("pay/other", &[("c.yaml", "c")]),
    ])
    .expect("commit");

    let out = repo
        .commit_batch(vec![change("pay/gw", &[("a.yaml", "a2")])])
        .expect("commit");
    assert!(out.changes[0].as_ref().is_ok_and(|c| c.changed));
    assert_eq!(
        repo.read_dir("apps/pay/gw")
            .expect("read")
            .into_keys()
            .collect::<Vec<_>>(),
        vec!["apps/pay/gw/a.yaml".to_string()]
    );

    let out = repo.commit_batch(vec![deletion("pay/gw")]).expect("delete");
    let commit = out.commit.expect("a deletion commit");
    assert!(repo.read_dir("apps/pay/gw").expect("read").is_empty());
    assert_eq!(
        repo.read_dir("apps/pay/other").expect("read").len(),
        1,
        "neighbour kept"
    );
    let msg = message_of(&remote, commit.parse().expect("oid"));
    assert!(msg.starts_with("paver: delete pay/gw\n"), "{msg}");

    // Deleting again is a no-op.
    let out = repo.commit_batch(vec![deletion("pay/gw")]).expect("delete again");
    assert_eq!(out.commit, None);
}

#[test]
fn path_escapes_are_refused_alone() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");

    // Someone commits a symlink where a request directory's parent would be.
    repo.commit_batch(vec![change("ok/first", &[("a", "a")])])
        .expect("seed");
    let clone = Repository::clone(&url_of(&remote), fx.path("other2")).expect("clone");
    std::os::unix::fs::symlink("/etc", fx.path("other2/apps/linked")).expect("symlink");
    let mut index = clone.index().expect("index");
    index.add_path(Path::new("apps/linked")).expect("add");
    let tree = clone.find_tree(index.write_tree().expect("tree")).expect("tree");
    let sig = git2::Signature::now("Someone", "someone@example.com").expect("sig");
    let parent = clone.head().and_then(|h| h.peel_to_commit()).expect("head");
    clone
        .commit(Some("HEAD"), &sig, &sig, "add a symlink", &tree, &[&parent])
        .expect("commit");
    clone
        .find_remote("origin")
        .and_then(|mut r| r.push(&["refs/heads/main:refs/heads/main"], None))
        .expect("push");

    let mut escape = change("pay/gw", &[]);
    std::sync::Arc::make_mut(&mut escape.files).insert("apps/pay/gw/../../etc/passwd".into(), "x".into());
    let mut outside = change("pay/gw", &[]);
    std::sync::Arc::make_mut(&mut outside.files).insert("apps/pay/other/x.yaml".into(), "x".into());
    let mut absolute = change("pay/gw", &[]);
    std::sync::Arc::make_mut(&mut absolute.files).insert("/apps/pay/gw/x.yaml".into(), "x".into());
    let mut dotgit = change("pay/gw", &[]);
    std::sync::Arc::make_mut(&mut dotgit.files).insert("apps/pay/gw/.git/config".into(), "x".into());
    let mut control = change("pay/gw", &[]);
    std::sync::Arc::make_mut(&mut control.files).insert("apps/pay/gw/a\nb.yaml".into(), "x".into());
    let mut bad_dir = change("pay/gw", &[("a", "a")]);
    bad_dir.dir = "../pay/gw".into();
    let mut empty_dir = change("pay/gw", &[]);
    empty_dir.dir = String::new();
    let through_symlink = change("linked/gw", &[("a", "a")]);
    let mut bad_trailer = change("pay/gw", &[("a", "a")]);
    bad_trailer.trailers.push(("Bad Key".into(), "v".into()));
    let good = change("pay/good", &[("a.yaml", "fine")]);

    let bad = vec![
        escape,
        outside,
        absolute,
        dotgit,
        control,
        bad_dir,
        empty_dir,
        through_symlink,
        bad_trailer,
    ];
    let n = bad.len();
    let mut batch = bad;
    batch.push(good);
    let out = repo.commit_batch(batch).expect("batch");
    for (i, r) in out.changes.iter().take(n).enumerate() {
        match r {
            Err(Error::InvalidChange { reason, .. }) => eprintln!("refused #{i}: {reason}"),
            other => panic!("change #{i} should be refused, got {other:?}"),
        }
    }
    assert!(out.changes[n].as_ref().is_ok_and(|c| c.changed));
    let files = repo.read_dir("apps/").expect("read all");
    assert!(files.contains_key("apps/pay/good/a.yaml"));
    assert!(
        !files
            .keys()
            .any(|k| k.contains("etc") || k.contains(".git") || k.starts_with("apps/linked/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_visible_and_restored_through_the_writer_task() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let writer = WriterHandle::spawn(
        fx.config(&url_of(&remote), "work", Credentials::None),
        WriterOptions::default(),
    );
    let c = change("pay/gw", &[("deploy.yaml", "replicas: 3\n")]);
    let first = writer.submit(c.clone()).await.expect("submit");
    assert!(first.changed);

    // Someone edits a rendered file and pushes.
    let clone = Repository::clone(&url_of(&remote), fx.path("human")).expect("clone");
    std::fs::write(fx.path("human/apps/pay/gw/deploy.yaml"), "replicas: 1\n").expect("edit");
    let mut index = clone.index().expect("index");
    index.add_path(Path::new("apps/pay/gw/deploy.yaml")).expect("add");
    let tree = clone.find_tree(index.write_tree().expect("tree")).expect("tree");
    let sig = git2::Signature::now("Human", "human@example.com").expect("sig");
    let parent = clone.head().and_then(|h| h.peel_to_commit()).expect("head");
    clone
        .commit(Some("HEAD"), &sig, &sig, "scale down by hand", &tree, &[&parent])
        .expect("commit");
    clone
        .find_remote("origin")
        .and_then(|mut r| r.push(&["refs/heads/main:refs/heads/main"], None))
        .expect("push");

    let seen = writer.read_dir("apps/pay/gw").await.expect("read");
    assert_eq!(seen["apps/pay/gw/deploy.yaml"], "replicas: 1\n");
    assert_ne!(seen, *c.files, "drift detected");

    let restored = writer.submit(c.clone()).await.expect("resubmit");
    assert!(restored.changed);
    assert_eq!(writer.read_dir("apps/pay/gw").await.expect("read"), *c.files);
    assert_eq!(writer.head().await.expect("head"), restored.revision);

    // Author facts, as the outcome carries them to the Scorecard: both the
    // writer and the human touched pay/gw.
    let times = &restored.authors;
    assert!(times.contains_key("human@example.com"), "{times:?}");
    assert!(times.contains_key("paver@example.com"), "{times:?}");
}

#[test]
fn directory_facts_follow_each_commit_and_forget_a_deleted_life() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    let gw = change("pay/gw", &[("a.yaml", "1")]);
    let first = repo
        .commit_batch(vec![gw.clone(), change("pay/other", &[("b.yaml", "1")])])
        .expect("commit");
    let first_head = first.head.clone();
    assert_eq!(
        repo.last_touch("apps/pay/gw").expect("touch"),
        Some(first_head.clone())
    );

    // A commit that changes only a neighbour: pay/gw's revision stays.
    let out = repo
        .commit_batch(vec![change("pay/other", &[("b.yaml", "2")]), gw.clone()])
        .expect("commit");
    assert_ne!(out.head, first_head);
    let gw_out = out.changes[1].as_ref().expect("ok");
    assert!(!gw_out.changed);
    assert_eq!(gw_out.revision.as_deref(), Some(first_head.as_str()));
    assert_eq!(
        repo.last_touch("apps/pay/other").expect("touch"),
        Some(out.head.clone())
    );
    assert_eq!(
        repo.last_touch("apps/pay").expect("touch"),
        Some(out.head.clone())
    );
    assert_eq!(repo.last_touch("apps/nothing/here").expect("touch"), None);

    // Deleted, then created again: the facts start with the new life.
    repo.commit_batch(vec![deletion("pay/gw")]).expect("delete");
    assert_eq!(repo.last_touch("apps/pay/gw").expect("touch"), None);
    let again = repo.commit_batch(vec![gw]).expect("recreate");
    assert_eq!(repo.last_touch("apps/pay/gw").expect("touch"), again.commit);
    let times = repo
        .last_commit_times_by_author(Some("apps/pay/gw"))
        .expect("times");
    assert_eq!(times.keys().collect::<Vec<_>>(), ["paver@example.com"]);
    let elsewhere = repo
        .last_commit_times_by_author(Some("apps/nothing/here"))
        .expect("times");
    assert!(elsewhere.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_task_batches_changes_that_arrive_together() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let writer = WriterHandle::spawn(
        fx.config(&url_of(&remote), "work", Credentials::None),
        WriterOptions {
            window: Duration::from_millis(100),
            ..WriterOptions::default()
        },
    );
    let pending: Vec<_> = (0..5)
        .map(|i| writer.submit(change(&format!("ns/req{i}"), &[("f", "x")])))
        .collect();
    let mut revisions = Vec::new();
    for p in pending {
        let r = p.await.expect("submitted");
        assert!(r.changed);
        assert_eq!(r.metrics.batch_size, 5);
        revisions.push(r.revision);
    }
    revisions.dedup();
    assert_eq!(revisions.len(), 1, "one commit for all five");
    assert_eq!(history(&remote).len(), 2);
    let mut empty = change("", &[]);
    empty.dir = String::new();
    let bad = writer.submit(empty).await;
    assert!(matches!(bad, Err(Error::InvalidChange { .. })), "{bad:?}");
}

fn http_fixture() -> (Fixture, PathBuf, GitHttpServer) {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let server = GitHttpServer::start(&fx.path("srv"), USER, TOKEN).expect("server");
    (fx, remote, server)
}

#[test]
fn over_http_first_commit_and_read_back() {
    let (fx, remote, server) = http_fixture();
    let config = fx.config(&server.url("out.git"), "work", fx.token_credentials(TOKEN));
    let mut repo = Repo::open(config).expect("open");
    let out = repo
        .commit_batch(vec![change("pay/gw", &[("a.yaml", "a")])])
        .expect("commit over http");
    assert_eq!(history(&remote)[0].to_string(), out.head);
    assert_eq!(repo.read_dir("apps/pay/gw").expect("read").len(), 1);
    assert!(
        server.chunked.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "libgit2 chunked a body"
    );

    // The branch deleted on the remote: the writer starts it again.
    Repository::open_bare(&remote)
        .and_then(|r| r.find_reference("refs/heads/main").and_then(|mut b| b.delete()))
        .expect("delete branch");
    assert_eq!(repo.head().expect("head"), None);
    let out = repo
        .commit_batch(vec![change("pay/gw", &[("a.yaml", "a")])])
        .expect("commit after the branch was deleted");
    assert_eq!(history(&remote).len(), 2);
    assert_eq!(history(&remote)[0].to_string(), out.head);
}

#[test]
fn wrong_credentials_error_does_not_leak_the_token() {
    let (fx, _remote, server) = http_fixture();
    let wrong = "wr0ng-t0ken-abcdef123456";
    let config = fx.config(&server.url("out.git"), "work", fx.token_credentials(wrong));
    let mut repo = Repo::open(config).expect("open");
    let err = repo
        .commit_batch(vec![change("pay/gw", &[("a.yaml", "a")])])
        .expect_err("must fail");
    let shown = format!("{err} / {err:?}");
    eprintln!("{err}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("authentication"), "{shown}");

    // A missing secret file names the file, not its content.
    let config = GitConfig {
        credentials: Credentials::UserToken {
            username_file: fx.path("nope-user"),
            token_file: fx.path("nope-token"),
        },
        ..fx.config(&server.url("out.git"), "work2", Credentials::None)
    };
    let err = Repo::open(config).expect("open").head().expect_err("no secret");
    assert!(
        err.to_string().starts_with("failed to read credentials from"),
        "{err}"
    );
}

#[test]
fn remote_down_then_retry_succeeds() {
    let (fx, remote, mut server) = http_fixture();
    let config = fx.config(&server.url("out.git"), "work", fx.token_credentials(TOKEN));
    let mut repo = Repo::open(config).expect("open");
    repo.commit_batch(vec![change("pay/a", &[("a", "1")])])
        .expect("first");

    server.stop();
    let err = repo
        .commit_batch(vec![change("pay/b", &[("b", "1")])])
        .expect_err("remote is down");
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.starts_with("failed to fetch main from http://127.0.0.1:"),
        "{msg}"
    );
    assert!(!msg.contains(TOKEN));

    server.restart().expect("restart");
    let out = repo
        .commit_batch(vec![change("pay/b", &[("b", "1")])])
        .expect("retry after the remote is back");
    assert!(out.changes[0].as_ref().is_ok_and(|c| c.changed));
    assert_eq!(history(&remote).len(), 3);
    assert_eq!(repo.read_dir("apps/").expect("read").len(), 2);
}

#[test]
fn racing_writers_both_land_with_linear_history() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (fx, remote, server) = http_fixture();
    let url = server.url("out.git");
    // Seed, then make the next receive hold its ref update for a while, so
    // writer B pushes in between and writer A's push loses the race.
    fx.repo(&url_of(&remote), "seed")
        .commit_batch(vec![change("seed/x", &[("x", "x")])])
        .expect("seed");
    let hook = remote.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\nif [ -f slow ]; then rm -f slow; sleep 1; fi\n").expect("hook");
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    std::fs::write(remote.join("slow"), "").expect("marker");

    // Secret files are written once: rewriting them while another writer
    // reads would be a torn read (Kubernetes swaps mounted Secrets atomically).
    let creds = fx.token_credentials(TOKEN);
    let cfg = |w: &str| fx.config(&url, w, creds.clone());
    let (cfg_a, cfg_b) = (cfg("work-a"), cfg("work-b"));
    let a = std::thread::spawn(move || {
        let mut repo = Repo::open(cfg_a).expect("open a").with_retry(RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(50),
        });
        repo.commit_batch(vec![change("team/a", &[("a", "a")])])
    });
    std::thread::sleep(Duration::from_millis(400));
    let b = std::thread::spawn(move || {
        let mut repo = Repo::open(cfg_b).expect("open b");
        repo.commit_batch(vec![change("team/b", &[("b", "b")])])
    });
    let b = b.join().expect("b thread").expect("b pushed");
    let a = a.join().expect("a thread").expect("a pushed after retry");
    assert_eq!(b.metrics.attempts, 1);
    assert!(
        a.metrics.attempts >= 2,
        "a should have lost the race: {:?}",
        a.metrics
    );

    // Then a free-for-all: four writers, three batches each.
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let config = cfg(&format!("w{w}"));
            std::thread::spawn(move || {
                let mut repo = Repo::open(config).expect("open").with_retry(RetryPolicy {
                    attempts: 10,
                    base: Duration::from_millis(20),
                });
                for i in 0..3 {
                    repo.commit_batch(vec![change(&format!("w{w}/r{i}"), &[("f", "v")])])
                        .expect("push");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }

    let ids = history(&remote);
    assert_eq!(ids.len(), 1 + 1 + 2 + 12, "initial, seed, a, b, 12 more");
    let bare = Repository::open_bare(&remote).expect("open");
    for id in &ids {
        assert!(
            bare.find_commit(*id).expect("commit").parent_count() <= 1,
            "linear"
        );
    }
    let all = fx
        .repo(&url_of(&remote), "check")
        .read_dir("apps/")
        .expect("read");
    for dir in ["seed/x", "team/a", "team/b"] {
        assert!(
            all.keys().any(|k| k.starts_with(&format!("apps/{dir}/"))),
            "{dir} lost"
        );
    }
    assert_eq!(all.len(), 3 + 12);
}

#[test]
fn http_latency_for_one_and_a_hundred_changes() {
    let (fx, _remote, server) = http_fixture();
    let config = fx.config(&server.url("out.git"), "work", fx.token_credentials(TOKEN));
    let mut repo = Repo::open(config).expect("open");
    repo.commit_batch(vec![change("warm/up", &[("a", "a")])])
        .expect("warm");

    let t = Instant::now();
    let one = repo
        .commit_batch(vec![change("one/req", &[("deploy.yaml", "x")])])
        .expect("one");
    let one_total = t.elapsed();

    let hundred: Vec<Change> = (0..100)
        .map(|i| {
            change(
                &format!("ns{}/req{i}", i % 10),
                &[
                    ("deploy.yaml", &format!("name: req{i}\n")),
                    ("svc.yaml", "kind: Service\n"),
                ],
            )
        })
        .collect();
    let t = Instant::now();
    let batch = repo.commit_batch(hundred).expect("hundred");
    let batch_total = t.elapsed();
    assert!(batch.changes.iter().all(|c| c.as_ref().is_ok_and(|c| c.changed)));

    eprintln!(
        "latency over loopback HTTP: 1 change {one_total:?} (fetch {:?}, commit {:?}, push {:?}); \
         100 changes {batch_total:?} (fetch {:?}, commit {:?}, push {:?}); {} HTTP requests",
        one.metrics.fetch,
        one.metrics.commit,
        one.metrics.push,
        batch.metrics.fetch,
        batch.metrics.commit,
        batch.metrics.push,
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
    );
}

/// A request whose directory moves (its team or its route's output path
/// changed) leaves nothing behind: the old directory is removed in the
/// commit that writes the new one, never in a separate one (the old
/// Application and the new would sync side by side in between).
#[test]
fn a_moved_directory_is_removed_in_the_same_commit() {
    let fx = Fixture::new();
    let remote = fx.remote("out.git");
    let mut repo = fx.repo(&url_of(&remote), "work");
    repo.commit_batch(vec![
        change("pay/gw", &[("a.yaml", "a"), ("argocd-application.yaml", "app")]),
        change("pay/other", &[("a.yaml", "b")]),
    ])
    .expect("first");
    let before = history(&remote).len();
    let files = std::sync::Arc::new(BTreeMap::from([
        ("teams/new/pay/gw/a.yaml".to_string(), "a".to_string()),
        (
            "teams/new/pay/gw/argocd-application.yaml".to_string(),
            "app".to_string(),
        ),
    ]));
    let moved = Change {
        dir: "teams/new/pay/gw".into(),
        files,
        moved_from: Some("apps/pay/gw".into()),
        ..change("pay/gw", &[])
    };
    let out = repo.commit_batch(vec![moved]).expect("move");
    assert!(out.changes[0].as_ref().is_ok_and(|c| c.changed));
    assert_eq!(history(&remote).len(), before + 1, "one commit");
    assert!(
        repo.read_dir("apps/pay/gw").expect("read").is_empty(),
        "old directory left behind"
    );
    assert_eq!(repo.read_dir("teams/new/pay/gw").expect("read").len(), 2);
    assert_eq!(
        repo.read_dir("apps/pay/other").expect("read").len(),
        1,
        "a neighbour was touched"
    );

    // A directory moved from must follow the one path rule too.
    let bad = Change {
        moved_from: Some("apps/.git".into()),
        ..change("pay/gw", &[("a.yaml", "a")])
    };
    let refused = repo.commit_batch(vec![bad]).expect("batch");
    assert!(
        matches!(&refused.changes[0], Err(Error::InvalidChange { reason, .. }) if reason.contains("moved from")),
        "{:?}",
        refused.changes[0]
    );
}
