//! Rollouts of a route version, as data: which requests a step moves (a
//! stable hash of namespace/name against the step's share, or its label
//! selector), the gate the catalog applies while a version rolls out, and
//! how a rollout advances, halts or completes given what Argo CD reports
//! on the requests a step moved. The shell (operator/src/controller/
//! rollout.rs) reads the facts and writes the status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use paver_crds::{PaveRouteSpec, PaveRouteStatus, RolloutPolicy, RolloutState, RolloutStatus, RolloutStep};
use sha2::{Digest, Sha256};

/// Buckets a share is counted in: a step of `percent` p moves the requests
/// whose bucket is below `p * 100`.
const BUCKETS: u64 = 10_000;

/// The request's bucket, from SHA-256 of `namespace/name`: the same in the
/// CLI and the operator, and a request in a 10% share stays in the 50%.
pub fn bucket(key: &str) -> u64 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % BUCKETS
}

/// The first step that names a request, if any.
pub fn step_of(steps: &[RolloutStep], key: &str, labels: &BTreeMap<String, String>) -> Option<usize> {
    let b = bucket(key);
    steps.iter().position(|s| {
        s.percent.is_some_and(|p| b < u64::from(p.min(100)) * 100)
            || s.selector.as_ref().is_some_and(|sel| sel.matches(labels))
    })
}

/// While a version rolls out, which requests it is open to: those named by
/// a step before `open_steps`; the others stay on the highest version they
/// match below `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gate {
    pub from: semver::Version,
    pub to: semver::Version,
    pub steps: Vec<RolloutStep>,
    /// How many steps have opened (0: none yet).
    pub open_steps: usize,
}

impl Gate {
    /// Whether the request `key` with `labels` may be on `to`.
    pub fn admits(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        step_of(&self.steps, key, labels).is_some_and(|s| s < self.open_steps)
    }
}

fn parse(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v.trim()).ok()
}

/// The version unpinned requests were on before `spec.version`: the
/// rollout's stable version, else the version in force before, else the
/// highest version below it that requests are on (what the census saw).
fn stable_before(spec_version: &semver::Version, status: &PaveRouteStatus) -> Option<semver::Version> {
    if let Some(r) = &status.rollout {
        let stable = if r.state == RolloutState::Complete {
            &r.to
        } else {
            &r.from
        };
        return parse(stable);
    }
    if let Some(active) = status.active_version.as_deref().and_then(parse)
        && active != *spec_version
    {
        return Some(active);
    }
    status
        .versions
        .iter()
        .filter(|v| v.requests > 0)
        .filter_map(|v| parse(&v.version))
        .filter(|v| v < spec_version)
        .max()
}

/// The gate a route's rollout puts on its head, from its spec and status;
/// `None` when every request may be on the head (no rollout policy, a
/// first version, a version not above the one before, or a rollout that
/// completed).
pub fn gate(spec: &PaveRouteSpec, status: &PaveRouteStatus) -> Option<Gate> {
    let policy = spec.rollout.as_ref()?;
    let to = parse(&spec.version)?;
    let open_steps = match &status.rollout {
        Some(r) if parse(&r.to).as_ref() == Some(&to) => match r.state {
            RolloutState::Complete => return None,
            RolloutState::Progressing | RolloutState::Paused => r.step as usize + 1,
            RolloutState::Halted => r.step as usize,
            RolloutState::Aborted => 0,
        },
        // A new version: nothing moves before its rollout starts.
        _ => 0,
    };
    let from = match &status.rollout {
        Some(r) if parse(&r.to).as_ref() == Some(&to) => parse(&r.from)?,
        _ => stable_before(&to, status)?,
    };
    (from < to).then(|| Gate {
        from,
        to,
        steps: policy.steps.clone(),
        open_steps,
    })
}

/// The status that starts rolling out `spec.version` when the rollout on
/// record is of another version (or there is none), and a gate applies.
pub fn start(spec: &PaveRouteSpec, status: &PaveRouteStatus, now: DateTime<Utc>) -> Option<RolloutStatus> {
    if status
        .rollout
        .as_ref()
        .is_some_and(|r| parse(&r.to) == parse(&spec.version))
    {
        return None;
    }
    let gate = gate(spec, status)?;
    let mut r = RolloutStatus {
        from: gate.from.to_string(),
        to: gate.to.to_string(),
        step: 0,
        state: RolloutState::Progressing,
        step_started_at: stamp(now),
        ..Default::default()
    };
    r.summary = summary(&r, gate.steps.len());
    Some(r)
}

/// What Argo CD reports on a request a step moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Its render at the new version is synced and Healthy.
    Healthy,
    /// Its render at the new version went Degraded (Argo CD's message).
    Degraded(String),
    /// Not yet either (not re-rendered, syncing, progressing: what, for the message).
    Waiting(String),
}

/// A steering command from the `paver.dev/rollout` annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
}

impl Command {
    pub fn parse(s: &str) -> Result<Command, String> {
        match s.trim() {
            "pause" => Ok(Command::Pause),
            "resume" => Ok(Command::Resume),
            "abort" => Ok(Command::Abort),
            other => Err(format!(
                "paver.dev/rollout: {other:?} is not a command: use pause, resume or abort"
            )),
        }
    }
}

/// Why a rollout changed, for an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn since(stamp: &str, now: DateTime<Utc>) -> Option<chrono::Duration> {
    DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| now.signed_duration_since(t.with_timezone(&Utc)))
}

/// `1.0.0->2.0.0 step 2/3 Progressing`.
pub fn summary(r: &RolloutStatus, steps: usize) -> String {
    let step = (r.step as usize + 1).min(steps);
    format!("{}->{} step {step}/{steps} {:?}", r.from, r.to, r.state)
}

/// Parses a rollout duration (`30s`, `5m`, `1h`; at most 30 days); empty is zero.
pub fn duration(s: &str) -> Result<chrono::Duration, String> {
    if s.trim().is_empty() {
        return Ok(chrono::Duration::zero());
    }
    let d = crate::parse_duration(s)?;
    chrono::Duration::from_std(d)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(30))
        .ok_or_else(|| format!("duration {s:?} is longer than 30 days"))
}

/// The rollout's next status, given a command and the health of the
/// requests its current step moved (`members`); `None` when nothing
/// changes. A step with no requests is done at once.
pub fn advance(
    policy: &RolloutPolicy,
    r: &RolloutStatus,
    command: Option<Command>,
    members: &[(String, Health)],
    now: DateTime<Utc>,
) -> Option<(RolloutStatus, Option<Transition>)> {
    let steps = policy.steps.len();
    let mut next = r.clone();
    let mut transition = None;
    let to = &r.to;
    match (command, r.state) {
        (Some(Command::Abort), RolloutState::Progressing | RolloutState::Paused | RolloutState::Halted) => {
            next.state = RolloutState::Aborted;
            next.message = format!(
                "aborted (paver.dev/rollout: abort): every request is back at {}",
                r.from
            );
            transition = Some(Transition {
                warning: true,
                reason: "RolloutAborted",
                message: format!("rollout of {to} aborted; requests are back at {}", r.from),
            });
        }
        (Some(Command::Pause), RolloutState::Progressing) => {
            next.state = RolloutState::Paused;
            next.message = "paused (paver.dev/rollout: pause)".into();
        }
        (Some(Command::Resume), RolloutState::Paused | RolloutState::Halted) => {
            next.state = RolloutState::Progressing;
            next.step_started_at = stamp(now);
            next.step_healthy_at.clear();
            next.message = format!("resumed at step {}", r.step + 1);
        }
        (_, RolloutState::Progressing) => step(policy, r, &mut next, &mut transition, members, now),
        _ => {}
    }
    next.summary = summary(&next, steps);
    (next != *r).then_some((next, transition))
}

fn step(
    policy: &RolloutPolicy,
    r: &RolloutStatus,
    next: &mut RolloutStatus,
    transition: &mut Option<Transition>,
    members: &[(String, Health)],
    now: DateTime<Utc>,
) {
    let steps = policy.steps.len();
    let k = r.step as usize;
    let Some(current) = policy.steps.get(k) else {
        next.state = RolloutState::Complete;
        return;
    };
    let n = k + 1;
    let degraded: Vec<String> = members
        .iter()
        .filter_map(|(key, h)| match h {
            Health::Degraded(m) if m.is_empty() => Some(format!("{key} is Degraded")),
            Health::Degraded(m) => Some(format!("{key} is Degraded: {m}")),
            _ => None,
        })
        .collect();
    if !degraded.is_empty() {
        halt(r, next, transition, n, members.len(), &degraded);
        return;
    }
    let waiting: Vec<String> = members
        .iter()
        .filter_map(|(key, h)| match h {
            Health::Waiting(what) => Some(format!("{key} ({what})")),
            _ => None,
        })
        .collect();
    if !waiting.is_empty() {
        let deadline = duration(&policy.health_deadline).unwrap_or_else(|_| chrono::Duration::minutes(10));
        if since(&r.step_started_at, now).is_some_and(|d| d > deadline) {
            let why = format!(
                "not Synced/Healthy within {}: {}",
                policy.health_deadline,
                first(&waiting)
            );
            halt(r, next, transition, n, members.len(), &[why]);
        } else {
            next.message = format!(
                "step {n}: waiting for {} of {} request(s): {}",
                waiting.len(),
                members.len(),
                first(&waiting)
            );
        }
        return;
    }
    // Every request of the step is Healthy at the new version.
    if r.step_healthy_at.is_empty() {
        next.step_healthy_at = stamp(now);
    }
    let healthy_at = if next.step_healthy_at.is_empty() {
        now
    } else {
        DateTime::parse_from_rfc3339(&next.step_healthy_at).map_or(now, |t| t.with_timezone(&Utc))
    };
    let pause = duration(&current.pause).unwrap_or_default();
    if now.signed_duration_since(healthy_at) < pause {
        next.message = format!(
            "step {n}: {} request(s) Healthy; pausing {} before the next step",
            members.len(),
            current.pause
        );
        return;
    }
    next.step_healthy_at.clear();
    next.step_started_at = stamp(now);
    next.step = r.step + 1;
    if k + 1 >= steps {
        next.state = RolloutState::Complete;
        next.message = format!("every step Healthy: the route's requests are on {}", r.to);
        *transition = Some(Transition {
            warning: false,
            reason: "RolloutComplete",
            message: format!("rollout of {} complete", r.to),
        });
    } else {
        next.message = format!(
            "step {n} Healthy ({} request(s)); step {} started",
            members.len(),
            n + 1
        );
        *transition = Some(Transition {
            warning: false,
            reason: "RolloutStep",
            message: format!("rollout of {}: step {n} Healthy, step {} started", r.to, n + 1),
        });
    }
}

fn halt(
    r: &RolloutStatus,
    next: &mut RolloutStatus,
    transition: &mut Option<Transition>,
    n: usize,
    members: usize,
    why: &[String],
) {
    next.state = RolloutState::Halted;
    next.message = format!(
        "step {n} halted: {}; its {members} request(s) are back at {} (paver.dev/rollout: resume retries the step)",
        first(why),
        r.from
    );
    *transition = Some(Transition {
        warning: true,
        reason: "RolloutHalted",
        message: next.message.clone(),
    });
}

/// The first few of a list, and how many more.
fn first(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut out = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}

#[cfg(test)]
mod tests {
    use paver_crds::{LabelSelector, RouteVersionStatus};

    use super::*;

    fn policy(steps: &[(Option<u8>, &str)]) -> RolloutPolicy {
        RolloutPolicy {
            steps: steps
                .iter()
                .map(|(p, pause)| RolloutStep {
                    percent: *p,
                    selector: None,
                    pause: pause.to_string(),
                })
                .collect(),
            health_deadline: "5m".into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .expect("time")
    }

    #[test]
    fn shares_grow_and_selectors_name_requests() {
        let mut steps = policy(&[(Some(20), ""), (Some(100), "")]).steps;
        let keys: Vec<String> = (0..1000).map(|i| format!("shop/svc-{i}")).collect();
        let none = BTreeMap::new();
        let first = keys
            .iter()
            .filter(|k| step_of(&steps, k, &none) == Some(0))
            .count();
        assert!((150..250).contains(&first), "about 20%: {first}");
        assert!(keys.iter().all(|k| step_of(&steps, k, &none).is_some()));
        steps.insert(
            0,
            RolloutStep {
                selector: Some(LabelSelector {
                    match_labels: [("canary".to_string(), "true".to_string())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let canary: BTreeMap<String, String> = [("canary".to_string(), "true".to_string())].into();
        assert_eq!(step_of(&steps, &keys[0], &canary), Some(0));
        let gate = Gate {
            from: semver::Version::new(1, 0, 0),
            to: semver::Version::new(2, 0, 0),
            steps,
            open_steps: 1,
        };
        assert!(gate.admits(&keys[0], &canary));
        assert!(!gate.admits(&keys[0], &none));
        assert_eq!(bucket("shop/svc-1"), bucket("shop/svc-1"));
    }

    #[test]
    fn the_gate_follows_the_rollout_on_record() {
        let mut spec = PaveRouteSpec {
            version: "2.0.0".into(),
            rollout: Some(policy(&[(Some(20), ""), (Some(100), "")])),
            ..Default::default()
        };
        let mut status = PaveRouteStatus {
            active_version: Some("1.0.0".into()),
            ..Default::default()
        };
        // Published, not started: closed.
        let g = gate(&spec, &status).expect("a gate");
        assert_eq!((g.from.to_string(), g.open_steps), ("1.0.0".to_string(), 0));
        let started = start(&spec, &status, at("2026-12-04T10:00:00Z")).expect("starts");
        assert_eq!(started.summary, "1.0.0->2.0.0 step 1/2 Progressing");
        status.rollout = Some(started.clone());
        assert_eq!(gate(&spec, &status).map(|g| g.open_steps), Some(1));
        assert!(
            start(&spec, &status, at("2026-12-04T10:00:00Z")).is_none(),
            "started already"
        );
        // After a restart the head is in force already: the status still gates it.
        status.active_version = Some("2.0.0".into());
        assert_eq!(gate(&spec, &status).map(|g| g.open_steps), Some(1));
        let mut halted = started.clone();
        halted.state = RolloutState::Halted;
        status.rollout = Some(halted);
        assert_eq!(gate(&spec, &status).map(|g| g.open_steps), Some(0));
        let mut done = started;
        done.state = RolloutState::Complete;
        status.rollout = Some(done);
        assert!(gate(&spec, &status).is_none());
        // 2.0.1 over a completed 2.0.0 rolls out from 2.0.0.
        spec.version = "2.0.1".into();
        assert_eq!(
            gate(&spec, &status).map(|g| g.from.to_string()),
            Some("2.0.0".into())
        );
        // No policy, or a version set back: no gate.
        spec.version = "1.5.0".into();
        assert!(gate(&spec, &status).is_none());
        spec.rollout = None;
        spec.version = "3.0.0".into();
        assert!(gate(&spec, &status).is_none());
        // A first publication after a restart with no record: the census's versions.
        let spec = PaveRouteSpec {
            version: "2.0.0".into(),
            rollout: Some(policy(&[(Some(100), "")])),
            ..Default::default()
        };
        let status = PaveRouteStatus {
            active_version: Some("2.0.0".into()),
            versions: vec![RouteVersionStatus {
                version: "1.4.0".into(),
                revision: String::new(),
                requests: 3,
            }],
            ..Default::default()
        };
        assert_eq!(
            gate(&spec, &status).map(|g| g.from.to_string()),
            Some("1.4.0".into())
        );
    }

    #[test]
    fn a_rollout_advances_on_health_pauses_halts_and_completes() {
        let p = policy(&[(Some(20), "30s"), (Some(100), "")]);
        let spec = PaveRouteSpec {
            version: "2.0.0".into(),
            rollout: Some(p.clone()),
            ..Default::default()
        };
        let status = PaveRouteStatus {
            active_version: Some("1.0.0".into()),
            ..Default::default()
        };
        let t0 = at("2026-12-04T10:00:00Z");
        let r = start(&spec, &status, t0).expect("start");
        let healthy = vec![("shop/a".to_string(), Health::Healthy)];
        let waiting = vec![("shop/a".to_string(), Health::Waiting("Progressing".into()))];
        // Waiting within the deadline: a message, no transition.
        let (r1, t) = advance(&p, &r, None, &waiting, at("2026-12-04T10:01:00Z")).expect("message");
        assert!(t.is_none());
        assert!(r1.message.contains("waiting for 1 of 1"), "{}", r1.message);
        // Healthy: the pause starts, then the next step.
        let (r2, _) = advance(&p, &r1, None, &healthy, at("2026-12-04T10:01:10Z")).expect("healthy");
        assert_eq!(
            (r2.step, r2.step_healthy_at.as_str()),
            (0, "2026-12-04T10:01:10Z")
        );
        assert!(
            advance(&p, &r2, None, &healthy, at("2026-12-04T10:01:20Z")).is_none(),
            "pausing"
        );
        let (r3, t) = advance(&p, &r2, None, &healthy, at("2026-12-04T10:01:41Z")).expect("next step");
        assert_eq!((r3.step, r3.state), (1, RolloutState::Progressing));
        assert_eq!(t.map(|t| t.reason), Some("RolloutStep"));
        assert_eq!(r3.summary, "1.0.0->2.0.0 step 2/2 Progressing");
        // Degraded: halted, with the request and Argo CD's message.
        let degraded = vec![(
            "shop/b".to_string(),
            Health::Degraded("Deployment shop/b is Degraded".into()),
        )];
        let (h, t) = advance(&p, &r3, None, &degraded, at("2026-12-04T10:02:00Z")).expect("halt");
        assert_eq!(h.state, RolloutState::Halted);
        assert!(
            h.message
                .contains("step 2 halted: shop/b is Degraded: Deployment"),
            "{}",
            h.message
        );
        assert!(h.message.contains("back at 1.0.0"), "{}", h.message);
        assert!(t.is_some_and(|t| t.warning && t.reason == "RolloutHalted"));
        assert!(
            advance(&p, &h, None, &healthy, at("2026-12-04T10:03:00Z")).is_none(),
            "halted stays"
        );
        // Resume retries the step; past the deadline it halts again.
        let (resumed, _) =
            advance(&p, &h, Some(Command::Resume), &[], at("2026-12-04T10:04:00Z")).expect("resume");
        assert_eq!((resumed.state, resumed.step), (RolloutState::Progressing, 1));
        let (late, _) = advance(&p, &resumed, None, &waiting, at("2026-12-04T10:09:01Z")).expect("deadline");
        assert!(
            late.message
                .contains("not Synced/Healthy within 5m: shop/a (Progressing)"),
            "{}",
            late.message
        );
        // Completes after the last step.
        let (done, t) = advance(&p, &resumed, None, &healthy, at("2026-12-04T10:05:00Z")).expect("done");
        assert_eq!(done.state, RolloutState::Complete);
        assert_eq!(t.map(|t| t.reason), Some("RolloutComplete"));
        // Pause and abort.
        let (paused, _) = advance(&p, &r, Some(Command::Pause), &[], t0).expect("pause");
        assert_eq!(paused.state, RolloutState::Paused);
        assert!(advance(&p, &paused, None, &healthy, t0).is_none(), "paused stays");
        let (aborted, _) = advance(&p, &paused, Some(Command::Abort), &[], t0).expect("abort");
        assert_eq!(aborted.state, RolloutState::Aborted);
        // An empty step is done at once.
        let (empty, _) = advance(&p, &r3, None, &[], at("2026-12-04T10:02:00Z")).expect("empty step");
        assert_eq!(empty.state, RolloutState::Complete);
        assert!(Command::parse("retry").is_err());
    }

    #[test]
    fn durations_are_bounded() {
        assert_eq!(duration("90s"), Ok(chrono::Duration::seconds(90)));
        assert_eq!(duration(""), Ok(chrono::Duration::zero()));
        assert!(duration("99999999999999h").is_err());
        assert!(duration("5 days").is_err());
    }
}
