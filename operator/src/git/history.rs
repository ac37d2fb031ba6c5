//! What the branch's history says about each directory, kept up to date
//! one commit at a time.
//!
//! Scorecards need, per request directory, each author's latest commit
//! time and the commit that last changed it. Walking the history per
//! directory costs the number of commits times the size of the trees on
//! the way (quadratic over a burst). Here every new commit is read once,
//! diffed against its parent (libgit2 skips unchanged subtrees), and the
//! facts of every directory it touched are updated.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use git2::{Delta, Oid, Repository, Sort, Tree};
use paver_core::paths::ancestors;

/// The newest commits read when the index is built from nothing (first
/// use, or after the branch was rewritten).
pub(crate) const MAX_WALK: usize = 10_000;

/// One directory's facts, as of the index's head. Kept small: there is
/// one per directory in the repository (about four per request, 40,000
/// at 10,000 requests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DirFacts {
    /// Each author's latest commit time (unix seconds) in the directory;
    /// usually one author (Paver), so an exact-size slice, not a map (a
    /// `Vec` would reserve four entries for the first author).
    times: Box<[(Arc<str>, i64)]>,
    /// The latest commit that changed the directory.
    pub last_touch: Option<Oid>,
}

impl DirFacts {
    /// Each author's latest commit time (unix seconds), by email.
    pub(crate) fn times(&self) -> BTreeMap<String, i64> {
        self.times.iter().map(|(e, t)| (e.to_string(), *t)).collect()
    }

    fn saw(&mut self, email: &Arc<str>, when: i64) {
        match self.times.iter_mut().find(|(e, _)| e == email) {
            Some((_, t)) => *t = (*t).max(when),
            None => {
                let mut times = std::mem::take(&mut self.times).into_vec();
                times.push((email.clone(), when));
                self.times = times.into_boxed_slice();
            }
        }
    }
}

/// Facts for every directory (`""` is the whole repository).
#[derive(Default)]
pub(crate) struct History {
    head: Option<Oid>,
    dirs: HashMap<Box<str>, DirFacts>,
    /// Author emails, each stored once.
    emails: HashSet<Arc<str>>,
}

impl History {
    /// Read the commits up to `head` not read yet, oldest first. A head that
    /// does not descend from the last one (a rewritten branch) starts over.
    pub(crate) fn advance(&mut self, repo: &Repository, head: Oid) -> Result<(), git2::Error> {
        if self.head == Some(head) {
            return Ok(());
        }
        let mut walk = repo.revwalk()?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)?;
        walk.push(head)?;
        match self.head {
            Some(old) if repo.graph_descendant_of(head, old)? => walk.hide(old)?,
            _ => {
                self.dirs.clear();
            }
        }
        let mut ids = walk.take(MAX_WALK).collect::<Result<Vec<Oid>, _>>()?;
        ids.reverse();
        for id in ids {
            self.read(repo, id)?;
        }
        self.head = Some(head);
        Ok(())
    }

    /// One commit: the directories it changed get its author and id; the
    /// ones it removed forget their earlier life.
    fn read(&mut self, repo: &Repository, id: Oid) -> Result<(), git2::Error> {
        let commit = repo.find_commit(id)?;
        let tree = commit.tree()?;
        let parent = match commit.parent(0) {
            Ok(p) => Some(p.tree()?),
            Err(_) => None,
        };
        let diff = repo.diff_tree_to_tree(parent.as_ref(), Some(&tree), None)?;
        let mut touched = BTreeSet::new();
        let mut removed = false;
        for delta in diff.deltas() {
            removed |= delta.status() == Delta::Deleted;
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path().and_then(|p| p.to_str()) {
                    touched.extend(ancestors(path));
                }
            }
        }
        let author = commit.author();
        let email = author.email().unwrap_or_default();
        let email = match self.emails.get(email) {
            Some(e) => e.clone(),
            None => {
                let e: Arc<str> = Arc::from(email);
                self.emails.insert(e.clone());
                e
            }
        };
        let when = author.when().seconds();
        for dir in touched {
            if removed && !exists(&tree, dir) {
                self.dirs.remove(dir);
                continue;
            }
            let facts = match self.dirs.get_mut(dir) {
                Some(facts) => facts,
                None => self.dirs.entry(Box::from(dir)).or_default(),
            };
            facts.saw(&email, when);
            facts.last_touch = Some(id);
        }
        Ok(())
    }

    /// The facts of `dir` (`""`: the whole repository) as of the last
    /// [`advance`](Self::advance); `None` if no commit read touched it.
    pub(crate) fn get(&self, dir: &str) -> Option<&DirFacts> {
        self.dirs.get(dir)
    }
}

fn exists(tree: &Tree<'_>, dir: &str) -> bool {
    dir.is_empty() || tree.get_path(std::path::Path::new(dir)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_author_keeps_their_latest_time() {
        let (paver, dev): (Arc<str>, Arc<str>) = (Arc::from("paver@paver.dev"), Arc::from("dev@example.com"));
        let mut facts = DirFacts::default();
        facts.saw(&paver, 10);
        assert_eq!(facts.times.len(), 1, "one entry, no spare room");
        facts.saw(&dev, 5);
        facts.saw(&paver, 7);
        facts.saw(&dev, 20);
        assert_eq!(
            facts.times(),
            BTreeMap::from([
                ("paver@paver.dev".to_string(), 10),
                ("dev@example.com".to_string(), 20)
            ])
        );
    }
}
