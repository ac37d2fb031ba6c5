//! Which request owns each directory of the output repository and each
//! Argo CD Application, so that no request writes over another's.
//!
//! The Git writer makes a request's directory hold exactly the request's
//! files, and Argo CD's app of apps prunes what a directory no longer
//! holds: a second request rendering into the same directory (a route
//! whose output path leaves out the namespace, say), or into one inside
//! it, would replace the first one's files and, with prune, empty its
//! workloads. The first to commit owns the directory until it is deleted;
//! the others are refused, told the owner. At startup the owners are read
//! from the requests' `status.render.path` before any reconcile runs, so a
//! restart does not hand a directory to whichever request reconciles
//! first.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

/// The owners, by directory and by Application (`namespace/name`).
#[derive(Debug, Default)]
pub struct Claims {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    dirs: BTreeMap<String, String>,
    apps: HashMap<String, String>,
    /// Request key → its directories (two while a move is in flight:
    /// the old one stays its own until the commit that removes it lands)
    /// and its Application.
    held: HashMap<String, (Vec<String>, Option<String>)>,
}

impl Claims {
    /// Claims `dir` and `app` for the request `key`, or says who owns
    /// them: another request holding the directory, one inside it or one
    /// around it, or the Application. Directories the request held before
    /// stay its own until [`Claims::settle`] (its files are still there).
    pub fn claim(&self, key: &str, dir: &str, app: Option<&str>) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = inner.dir_owner(key, dir) {
            return Err(owner);
        }
        if let Some(app) = app
            && let Some(owner) = inner.apps.get(app).filter(|o| *o != key)
        {
            return Err(format!(
                "the Argo CD Application {app} belongs to request {owner}; this request cannot take it over"
            ));
        }
        inner.dirs.insert(dir.to_string(), key.to_string());
        let held = inner.held.entry(key.to_string()).or_default();
        if !held.0.iter().any(|d| d == dir) {
            held.0.push(dir.to_string());
        }
        let before = std::mem::replace(&mut held.1, app.map(str::to_string));
        if let Some(before) = before.filter(|b| Some(b.as_str()) != app) {
            inner.apps.remove(&before);
        }
        if let Some(app) = app {
            inner.apps.insert(app.to_string(), key.to_string());
        }
        Ok(())
    }

    /// The request's files are in `dir` alone now (a move's commit landed):
    /// the other directories it held are free.
    pub fn settle(&self, key: &str, dir: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some((dirs, _)) = inner.held.get_mut(key) else {
            return;
        };
        let gone: Vec<String> = dirs.iter().filter(|d| *d != dir).cloned().collect();
        dirs.retain(|d| d == dir);
        for d in gone {
            inner.dirs.remove(&d);
        }
    }

    /// Lets go of what the request `key` held (it was deleted).
    pub fn release(&self, key: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).release(key);
    }

    /// How many requests own a directory.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn release(&mut self, key: &str) {
        if let Some((dirs, app)) = self.held.remove(key) {
            for dir in dirs {
                self.dirs.remove(&dir);
            }
            if let Some(app) = app {
                self.apps.remove(&app);
            }
        }
    }

    /// Who, other than `key`, owns `dir`, a directory around it or one
    /// inside it.
    fn dir_owner(&self, key: &str, dir: &str) -> Option<String> {
        let other = |owner: &&String| owner.as_str() != key;
        if let Some(owner) = self.dirs.get(dir).filter(other) {
            return Some(format!(
                "directory {dir} belongs to request {owner}, whose files are committed there; \
                 this request cannot write over them (its route's output path gives both the same directory)"
            ));
        }
        for parent in paver_core::paths::ancestors(dir) {
            if let Some(owner) = self.dirs.get(parent).filter(other) {
                return Some(format!(
                    "directory {dir} lies inside {parent}, which belongs to request {owner}; \
                     this request cannot write into it"
                ));
            }
        }
        let inside = format!("{dir}/");
        self.dirs
            .range(inside.clone()..)
            .take_while(|(d, _)| d.starts_with(&inside))
            .find(|(_, owner)| other(owner))
            .map(|(d, owner)| {
                format!(
                    "directory {dir} holds {d}, which belongs to request {owner}; \
                     this request cannot replace it"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Claims;

    #[test]
    fn the_first_owner_keeps_its_directory_and_application() {
        let claims = Claims::default();
        claims.claim("a/x", "t/x", Some("argocd/a.x")).expect("first");
        claims
            .claim("a/x", "t/x", Some("argocd/a.x"))
            .expect("again, the same owner");
        let same = claims.claim("b/x", "t/x", None).expect_err("same directory");
        assert!(same.contains("directory t/x belongs to request a/x"), "{same}");
        let inside = claims.claim("b/y", "t/x/manifests", None).expect_err("inside");
        assert!(
            inside.contains("lies inside t/x, which belongs to request a/x"),
            "{inside}"
        );
        let around = claims.claim("b/z", "t", None).expect_err("around");
        assert!(
            around.contains("holds t/x, which belongs to request a/x"),
            "{around}"
        );
        let app = claims
            .claim("b/w", "t/w", Some("argocd/a.x"))
            .expect_err("application");
        assert!(
            app.contains("Application argocd/a.x belongs to request a/x"),
            "{app}"
        );
        // A sibling whose name starts the same is not inside.
        claims
            .claim("b/x2", "t/x2", None)
            .expect("t/x2 is not inside t/x");
        assert_eq!(claims.len(), 2);

        // A move keeps the old directory until its commit lands; deleting
        // releases everything.
        claims.claim("a/x", "t/moved", Some("argocd/a.x")).expect("move");
        claims
            .claim("b/x", "t/x", None)
            .expect_err("t/x still holds a/x's files");
        claims.settle("a/x", "t/moved");
        claims
            .claim("b/x", "t/x", None)
            .expect("t/x is free after the move");
        claims.release("a/x");
        claims
            .claim("c/c", "t/moved", Some("argocd/a.x"))
            .expect("free after deletion");
        assert_eq!(claims.len(), 3);
    }
}
