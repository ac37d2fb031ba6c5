//! Kubernetes-style conditions shared by every Paver status.

use chrono::{SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One observation of an aspect of the resource's state, in the shape
/// Kubernetes uses for `status.conditions`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Kind of condition, e.g. `Validated`, `PolicyCompliant`, `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason for the condition's last transition.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message with details about the transition.
    #[serde(default)]
    pub message: String,
    /// When the condition last changed status (RFC 3339).
    #[serde(default)]
    pub last_transition_time: String,
    /// The metadata.generation the condition was set from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// `True` / `False` for a condition's status.
pub fn status_str(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

impl Condition {
    /// A condition with the given type, status, reason and message; the
    /// transition time is filled in by [`set_condition`].
    pub fn new(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.to_string(),
            status: status_str(ok).to_string(),
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: String::new(),
            observed_generation: None,
        }
    }

    /// Whether this condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The current time as Kubernetes writes it (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The longest condition message kept, in bytes: Kubernetes'
/// `metav1.Condition` allows 32,768 characters. A message built from a list
/// (every validation error, every module error) is cut there, so a status
/// stays far under etcd's 1.5 MiB object limit.
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 32 * 1024;

/// Cuts `s` to at most `max` bytes (at a character boundary), ending it
/// with `... (N more bytes)` when anything was cut.
pub fn truncate_message(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    // Room for the marker: "... (" + at most 20 digits + " more bytes)".
    let mut cut = max.saturating_sub(37);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("... ({dropped} more bytes)"));
}

/// Sets `new` in `conditions`, replacing the condition of the same type.
///
/// `lastTransitionTime` is kept from the existing condition when the status
/// did not change, so re-applying the same status never churns the object;
/// otherwise it is `now`. The message keeps at most
/// [`MAX_CONDITION_MESSAGE_BYTES`]. Returns whether anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: &str) -> bool {
    truncate_message(&mut new.message, MAX_CONDITION_MESSAGE_BYTES);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time =
                if existing.status == new.status && !existing.last_transition_time.is_empty() {
                    existing.last_transition_time.clone()
                } else {
                    now.to_string()
                };
            if *existing == new {
                return false;
            }
            *existing = new;
            true
        }
        None => {
            new.last_transition_time = now.to_string();
            conditions.push(new);
            true
        }
    }
}

/// Finds the condition of the given type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Marks a `conditions` list as a list-map keyed on `type`, as Kubernetes
/// expects for server-side apply merges.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_status_keeps_transition_time() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            Condition::new("Ready", true, "Synced", "ok"),
            "t1"
        ));
        assert!(!set_condition(
            &mut conds,
            Condition::new("Ready", true, "Synced", "ok"),
            "t2"
        ));
        assert_eq!(conds[0].last_transition_time, "t1");
        // A new message with the same status is a change, but keeps the time.
        assert!(set_condition(
            &mut conds,
            Condition::new("Ready", true, "Synced", "still ok"),
            "t3"
        ));
        assert_eq!(conds[0].last_transition_time, "t1");
        assert!(set_condition(
            &mut conds,
            Condition::new("Ready", false, "Degraded", "bad"),
            "t4"
        ));
        assert_eq!(conds[0].last_transition_time, "t4");
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_under_the_kubernetes_limit() {
        let mut conds = Vec::new();
        // Multi-byte characters: the cut falls on a character boundary.
        let long = "é".repeat(100_000);
        set_condition(
            &mut conds,
            Condition::new("Validated", false, "InvalidSpec", long),
            "t1",
        );
        let message = &conds[0].message;
        assert!(message.len() <= MAX_CONDITION_MESSAGE_BYTES, "{}", message.len());
        assert!(
            message.ends_with(" more bytes)"),
            "{}",
            &message[message.len() - 40..]
        );
        // The same long message again changes nothing.
        assert!(!set_condition(
            &mut conds,
            Condition::new("Validated", false, "InvalidSpec", "é".repeat(100_000)),
            "t2"
        ));
        let mut short = "ok".to_string();
        truncate_message(&mut short, 10);
        assert_eq!(short, "ok");
    }
}
