//! The good versions of routes and bundles, as data: how a revision is
//! named and hashed, and which one a restarted operator puts in force when
//! the latest spec is broken. The shell (operator/src/controller/revision.rs)
//! reads and writes the PaveRouteRevision and PolicyBundleRevision objects.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// How many revisions of one route or bundle are kept besides the one in
/// force (the newest by generation); older ones are deleted.
pub const KEEP_REVISIONS: usize = 10;

/// SHA-256 (hex) of `spec`'s canonical JSON: object keys sorted at every
/// level, no whitespace. The same spec hashes the same whichever order its
/// maps arrived in.
pub fn spec_hash<T: Serialize>(spec: &T) -> String {
    let value = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut out = Vec::new();
    canonical(&value, &mut out);
    hex(&Sha256::digest(&out))
}

fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The object name of the revision of `owner` with spec hash `hash`:
/// `<owner>-<10 hex digits>`, the owner's name shortened to fit the
/// 253 characters of a Kubernetes name.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let short = &hash[..hash.len().min(10)];
    let room = 253 - 1 - short.len();
    let mut owner = &owner[..owner.len().min(room)];
    // A name ends in an alphanumeric; the hash does, and the owner's cut must not end in '-' or '.'.
    owner = owner.trim_end_matches(['-', '.']);
    format!("{owner}-{short}")
}

/// What the shell read of one stored revision.
#[derive(Clone, Debug)]
pub struct Stored<S> {
    pub name: String,
    /// The owner this revision says it belongs to (`spec.route` / `spec.bundle`).
    pub owner: String,
    /// The uid in its ownerReference, if any.
    pub owner_uid: Option<String>,
    pub generation: i64,
    pub hash: String,
    pub spec: S,
    /// When it was created (Unix seconds), if the server said.
    pub created: Option<i64>,
}

/// Why a stored revision cannot be put in force.
pub fn refused<S: Serialize>(rev: &Stored<S>, owner: &str, owner_uid: Option<&str>) -> Option<String> {
    if rev.owner != owner {
        return Some(format!("it belongs to {:?}, not {owner:?}", rev.owner));
    }
    if let (Some(want), Some(got)) = (owner_uid, rev.owner_uid.as_deref())
        && want != got
    {
        return Some(format!(
            "it belongs to an earlier object named {owner:?} (uid {got}, not {want})"
        ));
    }
    let hash = spec_hash(&rev.spec);
    if hash != rev.hash {
        return Some(format!(
            "its spec does not match its hash (edited after it was written): hash {hash}, recorded {}",
            rev.hash
        ));
    }
    None
}

/// The revision to put in force when `owner`'s latest spec is broken: the
/// one its status names (`active`) if it is sound, else the sound one with
/// the highest generation. The ones refused, with why, for the log.
pub fn last_good<'a, S: Serialize>(
    revisions: &'a [Stored<S>],
    owner: &str,
    owner_uid: Option<&str>,
    active: Option<&str>,
) -> (Option<&'a Stored<S>>, Vec<(String, String)>) {
    let mut refusals = Vec::new();
    let mut sound: Vec<&Stored<S>> = Vec::new();
    for rev in revisions.iter().filter(|r| r.owner == owner) {
        match refused(rev, owner, owner_uid) {
            Some(why) => refusals.push((rev.name.clone(), why)),
            None => sound.push(rev),
        }
    }
    let pick = active
        .and_then(|a| sound.iter().copied().find(|r| r.name == a))
        .or_else(|| {
            sound
                .iter()
                .copied()
                .max_by_key(|r| (r.generation, r.name.clone()))
        });
    (pick, refusals)
}

/// The revisions of `owner` to delete: all but the one in force and the
/// [`KEEP_REVISIONS`] newest by generation.
pub fn to_prune<S>(revisions: &[Stored<S>], owner: &str, active: &str) -> Vec<String> {
    let mut mine: Vec<&Stored<S>> = revisions
        .iter()
        .filter(|r| r.owner == owner && r.name != active)
        .collect();
    mine.sort_by_key(|r| std::cmp::Reverse(r.generation));
    mine.into_iter()
        .skip(KEEP_REVISIONS)
        .map(|r| r.name.clone())
        .collect()
}

/// The older versions of route `owner` its revisions hold, besides the
/// head at `head`: for each version below the head, the sound revision
/// with the highest generation (a version republished with other content
/// is held as it was last published). Versions above the head are
/// withdrawn and not held.
pub fn versions_held<'a, S: Serialize>(
    revisions: &'a [Stored<S>],
    owner: &str,
    owner_uid: Option<&str>,
    head: &semver::Version,
    version_of: impl Fn(&S) -> &str,
) -> Vec<(semver::Version, &'a Stored<S>)> {
    let mut held: std::collections::BTreeMap<semver::Version, &Stored<S>> = Default::default();
    for rev in revisions.iter().filter(|r| r.owner == owner) {
        let Ok(version) = semver::Version::parse(version_of(&rev.spec).trim()) else {
            continue;
        };
        if version >= *head || refused(rev, owner, owner_uid).is_some() {
            continue;
        }
        let newer = held
            .get(&version)
            .is_none_or(|h| (rev.generation, &rev.name) > (h.generation, &h.name));
        if newer {
            held.insert(version, rev);
        }
    }
    held.into_iter().rev().collect()
}

/// The revisions of route `owner` to delete: those not in `keep` (the
/// head's, and those of the versions requests or a rollout are on) that
/// were created more than `retention_secs` before `now`, and beyond the
/// [`KEEP_REVISIONS`] newest of the rest whatever their age.
pub fn unused_to_prune<S>(
    revisions: &[Stored<S>],
    owner: &str,
    keep: &std::collections::BTreeSet<String>,
    now: i64,
    retention_secs: i64,
) -> Vec<String> {
    let mut unused: Vec<&Stored<S>> = revisions
        .iter()
        .filter(|r| r.owner == owner && !keep.contains(&r.name))
        .collect();
    unused.sort_by_key(|r| std::cmp::Reverse((r.generation, r.created)));
    unused
        .into_iter()
        .enumerate()
        .filter(|(i, r)| {
            *i >= KEEP_REVISIONS || r.created.is_some_and(|c| now.saturating_sub(c) > retention_secs)
        })
        .map(|(_, r)| r.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rev(name: &str, generation: i64, spec: Value) -> Stored<Value> {
        Stored {
            name: name.into(),
            owner: "web".into(),
            owner_uid: Some("u1".into()),
            generation,
            hash: spec_hash(&spec),
            spec,
            created: Some(1_000 + generation),
        }
    }

    #[test]
    fn hash_ignores_key_order_and_sees_values() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, "x"], "x": null}}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a": {"x": null, "y": [1, "x"]}, "b": 1}"#).expect("json");
        assert_eq!(spec_hash(&a), spec_hash(&b));
        assert_ne!(
            spec_hash(&a),
            spec_hash(&json!({"b": 2, "a": {"x": null, "y": [1, "x"]}}))
        );
        assert_eq!(spec_hash(&a).len(), 64);
    }

    #[test]
    fn names_fit_and_end_in_the_hash() {
        let hash = spec_hash(&json!(1));
        assert_eq!(revision_name("web", &hash), format!("web-{}", &hash[..10]));
        let long = format!("{}-{}", "a".repeat(241), "b".repeat(20));
        let name = revision_name(&long, &hash);
        assert!(name.len() <= 253, "{}", name.len());
        assert!(name.ends_with(&hash[..10]));
        assert!(!name.contains("--"), "{name}");
    }

    #[test]
    fn last_good_prefers_the_active_one_then_the_newest_sound_one() {
        let mut edited = rev("web-c", 9, json!({"version": "3.0.0"}));
        edited.spec = json!({"version": "3.0.1"});
        let mut foreign = rev("web-d", 8, json!({"version": "2.5.0"}));
        foreign.owner_uid = Some("old".into());
        let revs = vec![
            rev("web-a", 2, json!({"version": "1.0.0"})),
            rev("web-b", 5, json!({"version": "2.0.0"})),
            edited,
            foreign,
        ];
        let (pick, refusals) = last_good(&revs, "web", Some("u1"), Some("web-a"));
        assert_eq!(pick.map(|r| r.name.as_str()), Some("web-a"));
        let refused: Vec<&str> = refusals.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(refused, ["web-c", "web-d"]);
        assert!(refusals[0].1.contains("does not match its hash"), "{refusals:?}");
        // The status names none (or an edited one): the newest sound one.
        let (pick, _) = last_good(&revs, "web", Some("u1"), None);
        assert_eq!(pick.map(|r| r.name.as_str()), Some("web-b"));
        let (pick, _) = last_good(&revs, "web", Some("u1"), Some("web-c"));
        assert_eq!(pick.map(|r| r.name.as_str()), Some("web-b"));
        let (pick, _) = last_good(&revs, "other", None, None);
        assert!(pick.is_none());
    }

    #[test]
    fn prune_keeps_the_active_one_and_the_newest() {
        let revs: Vec<_> = (0..15).map(|g| rev(&format!("web-{g}"), g, json!(g))).collect();
        let pruned = to_prune(&revs, "web", "web-0");
        assert_eq!(pruned, ["web-4", "web-3", "web-2", "web-1"]);
    }

    fn versioned(name: &str, generation: i64, version: &str) -> Stored<Value> {
        rev(
            name,
            generation,
            json!({"version": version, "generation": generation}),
        )
    }

    #[test]
    fn versions_held_are_the_latest_publication_of_each_version_below_the_head() {
        let mut edited = versioned("web-e", 7, "1.1.0");
        edited.spec["version"] = json!("1.1.0");
        edited.spec["x"] = json!(1);
        let revs = vec![
            versioned("web-a", 1, "1.0.0"),
            versioned("web-b", 3, "1.0.0"),
            versioned("web-c", 2, "1.1.0"),
            edited,
            versioned("web-d", 5, "2.0.0"),
            versioned("web-f", 6, "3.0.0"),
            versioned("web-g", 4, "not semver"),
        ];
        let head = semver::Version::new(2, 0, 0);
        let held = versions_held(&revs, "web", Some("u1"), &head, |s| {
            s["version"].as_str().unwrap_or("")
        });
        let names: Vec<(String, &str)> = held
            .iter()
            .map(|(v, r)| (v.to_string(), r.name.as_str()))
            .collect();
        // 1.0.0 republished at generation 3; 1.1.0's newest is edited, so
        // refused; 2.0.0 is the head and 3.0.0 withdrawn above it.
        assert_eq!(
            names,
            [("1.1.0".to_string(), "web-c"), ("1.0.0".to_string(), "web-b")]
        );
    }

    #[test]
    fn unused_revisions_go_after_the_retention_and_beyond_the_cap() {
        let revs: Vec<_> = (0..15).map(|g| rev(&format!("web-{g}"), g, json!(g))).collect();
        let keep: std::collections::BTreeSet<String> = ["web-0".to_string(), "web-14".to_string()].into();
        // Created at 1000 + generation; now 1010, retention 5 s: 0..=4 are
        // old (web-0 is kept); the cap of 10 unused (13 down to 4) drops 3..1.
        let pruned = unused_to_prune(&revs, "web", &keep, 1_010, 5);
        assert_eq!(pruned, ["web-4", "web-3", "web-2", "web-1"]);
        // A long retention: only the cap.
        let pruned = unused_to_prune(&revs, "web", &keep, 1_010, 1_000_000);
        assert_eq!(pruned, ["web-3", "web-2", "web-1"]);
        assert!(unused_to_prune(&revs, "other", &keep, 1_010, 0).is_empty());
    }
}
