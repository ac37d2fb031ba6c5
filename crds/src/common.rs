//! Small types shared by several resources.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes label selector: every `matchLabels` entry and every
/// `matchExpressions` requirement must hold.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    pub key: String,
    /// One of `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector. An empty selector matches everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| {
                let value = labels.get(&req.key);
                match req.operator.as_str() {
                    "In" => value.is_some_and(|v| req.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !req.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// A schema for a free-form JSON object whose fields Kubernetes keeps as given.
pub fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A schema for an optional free-form JSON object.
pub fn optional_free_form_object(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut s = free_form_object(g);
    s.insert("nullable".into(), true.into());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_matches() {
        let labels: BTreeMap<String, String> = [("tier".to_string(), "critical".to_string())]
            .into_iter()
            .collect();
        let mut sel = LabelSelector::default();
        assert!(sel.matches(&labels));
        sel.match_labels.insert("tier".into(), "critical".into());
        assert!(sel.matches(&labels));
        sel.match_expressions.push(LabelSelectorRequirement {
            key: "pci".into(),
            operator: "DoesNotExist".into(),
            values: vec![],
        });
        assert!(sel.matches(&labels));
        sel.match_expressions[0].operator = "Exists".into();
        assert!(!sel.matches(&labels));
    }
}
