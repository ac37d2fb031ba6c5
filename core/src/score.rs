//! Scoring: scorecard checks plus the route's level definitions give the
//! score, the level, and the counts `kubectl get scorecards` shows.

use std::collections::BTreeSet;

use paver_crds::{CheckResult, LevelDefinition, ScorecardLevels, ScorecardStatus};

/// The levels used when a route defines none: each requires every check
/// whose `level` names it.
pub const DEFAULT_LEVELS: [&str; 3] = ["bronze", "silver", "gold"];

/// The level reported when not even the lowest level passes.
pub const NO_LEVEL: &str = "none";

fn default_levels() -> Vec<LevelDefinition> {
    DEFAULT_LEVELS
        .iter()
        .map(|name| LevelDefinition {
            name: (*name).to_string(),
            checks: Vec::new(),
        })
        .collect()
}

/// Scores `checks` against `levels` (the route's, or bronze/silver/gold).
///
/// - `score` is the share of checks that pass, 0–100, rounded.
/// - `level` is the highest level whose required checks, and those of every
///   lower level, all pass. A level that names check ids requires exactly
///   those (a named check that was not produced counts as failing and is
///   reported); otherwise it requires every check tagged with its name.
/// - With no checks at all the level is `none`.
///
/// Checks are deduplicated by (source, id) and sorted by level order,
/// category and id, so the same inputs always give the same status.
/// `evaluated_at` is stamped as given.
pub fn score(
    checks: &[CheckResult],
    levels: Option<&ScorecardLevels>,
    evaluated_at: &str,
) -> ScorecardStatus {
    let levels = match levels {
        Some(l) if !l.levels.is_empty() => l.levels.clone(),
        _ => default_levels(),
    };
    let rank = |level: &str| {
        levels
            .iter()
            .position(|l| l.name == level)
            .unwrap_or(levels.len())
    };

    let mut seen = BTreeSet::new();
    let mut checks: Vec<CheckResult> = checks
        .iter()
        .filter(|c| seen.insert((c.source.clone(), c.id.clone())))
        .cloned()
        .collect();
    // A level that names a check no bundle produced fails on it, visibly.
    for level in &levels {
        for id in &level.checks {
            if !checks.iter().any(|c| &c.id == id) {
                checks.push(CheckResult {
                    id: id.clone(),
                    category: "scorecard".into(),
                    level: level.name.clone(),
                    pass: false,
                    message: format!(
                        "check {id:?} required by level {} was not produced by any bundle",
                        level.name
                    ),
                    source: "paver".into(),
                });
            }
        }
    }
    checks.sort_by(|a, b| {
        (rank(&a.level), &a.category, &a.id, &a.source).cmp(&(rank(&b.level), &b.category, &b.id, &b.source))
    });

    let passed = checks.iter().filter(|c| c.pass).count() as u32;
    let failed = checks.len() as u32 - passed;
    let score = if checks.is_empty() {
        0
    } else {
        ((passed as f64 * 100.0) / checks.len() as f64).round() as u32
    };

    let mut level = NO_LEVEL.to_string();
    if !checks.is_empty() {
        for def in &levels {
            let required = checks.iter().filter(|c| {
                if def.checks.is_empty() {
                    c.level == def.name
                } else {
                    def.checks.contains(&c.id)
                }
            });
            if required.clone().all(|c| c.pass) {
                level = def.name.clone();
            } else {
                break;
            }
        }
    }

    ScorecardStatus {
        score,
        level,
        passed,
        failed,
        checks,
        evaluated_at: evaluated_at.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(id: &str, level: &str, pass: bool) -> CheckResult {
        CheckResult {
            id: id.into(),
            category: "reliability".into(),
            level: level.into(),
            pass,
            message: String::new(),
            source: "bundle/scorecard".into(),
        }
    }

    #[test]
    fn level_is_highest_contiguous_passing_level() {
        let checks = [
            check("owner", "bronze", true),
            check("probes", "bronze", true),
            check("pdb", "silver", true),
            check("slo", "gold", false),
        ];
        let s = score(&checks, None, "t");
        assert_eq!(
            (s.level.as_str(), s.passed, s.failed, s.score),
            ("silver", 3, 1, 75)
        );
    }

    #[test]
    fn failing_lower_level_caps_the_level() {
        let checks = [
            check("owner", "bronze", false),
            check("pdb", "silver", true),
            check("slo", "gold", true),
        ];
        assert_eq!(score(&checks, None, "t").level, "none");
    }

    #[test]
    fn no_checks_is_none_with_zero_score() {
        let s = score(&[], None, "t");
        assert_eq!((s.level.as_str(), s.score), ("none", 0));
    }

    #[test]
    fn route_levels_by_check_id_and_missing_checks_fail() {
        let levels = ScorecardLevels {
            levels: vec![
                LevelDefinition {
                    name: "basic".into(),
                    checks: vec!["owner".into()],
                },
                LevelDefinition {
                    name: "hardened".into(),
                    checks: vec!["mtls".into()],
                },
            ],
        };
        let s = score(&[check("owner", "bronze", true)], Some(&levels), "t");
        assert_eq!(s.level, "basic");
        let missing = s
            .checks
            .iter()
            .find(|c| c.id == "mtls")
            .expect("missing check reported");
        assert!(!missing.pass && missing.message.contains("not produced"));
    }

    #[test]
    fn deterministic_order_and_dedup() {
        let a = [
            check("b", "silver", true),
            check("a", "bronze", true),
            check("a", "bronze", true),
        ];
        let b = [check("a", "bronze", true), check("b", "silver", true)];
        assert_eq!(score(&a, None, "t"), score(&b, None, "t"));
        assert_eq!(score(&a, None, "t").checks.len(), 2);
    }
}
