//! The input document every rule sees, built once per request.

use std::collections::BTreeMap;

use regorus::Value;
use serde::Deserialize;

use super::PolicyError;

/// What policy sees as `input`. `rendered`, `git` and `cluster` are only
/// known after render / sync and only matter to `checks`; when absent they
/// are left out of the document (rules see them as undefined).
#[derive(Clone, Debug, Default)]
pub struct PolicyInput {
    /// `input.request`: the whole ServiceRequest object.
    pub request: serde_json::Value,
    /// `input.parameters`: `spec.parameters` with the route's defaults applied.
    pub parameters: serde_json::Value,
    /// `input.route`: the PaveRoute object the request is on, converted once per route.
    pub route: RouteDoc,
    /// `input.estimate`: `{"monthly": number, "currency": "USD", "items": [...]}`.
    pub estimate: serde_json::Value,
    /// `input.rendered`: rendered file path → content.
    pub rendered: Option<BTreeMap<String, String>>,
    /// `input.git`: facts read from the output repository.
    pub git: Option<serde_json::Value>,
    /// `input.cluster`: Argo CD sync and health of the request's Application.
    pub cluster: Option<serde_json::Value>,
}

/// `input.route`: the same for every request on a route, so it is
/// converted into regorus's value type once, when the route is loaded, and
/// shared (cloning is reference counting).
#[derive(Clone, Debug)]
pub struct RouteDoc {
    json: std::sync::Arc<serde_json::Value>,
    value: Value,
}

impl Default for RouteDoc {
    fn default() -> Self {
        RouteDoc {
            json: std::sync::Arc::new(serde_json::Value::Null),
            value: Value::Null,
        }
    }
}

impl RouteDoc {
    /// Converts the route document.
    pub fn new(json: serde_json::Value) -> Result<Self, PolicyError> {
        let value = convert("route", &json)?;
        Ok(RouteDoc {
            json: std::sync::Arc::new(json),
            value,
        })
    }

    /// The document as JSON.
    pub fn json(&self) -> &serde_json::Value {
        &self.json
    }
}

/// An input converted into regorus's value type, ready to evaluate any
/// number of bundles against. Cloning it is cheap (reference counted).
#[derive(Clone, Debug)]
pub struct PreparedInput(pub(super) Value);

impl PreparedInput {
    /// The document as regorus sees it.
    pub fn value(&self) -> &Value {
        &self.0
    }

    /// This input with what only `checks` read added: `input.rendered`
    /// (converted here, straight from the render's files: no copy of them
    /// in between), `input.git` and `input.cluster`. The request, parameters,
    /// route and estimate are shared with this input, not converted again.
    pub fn with_facts(
        &self,
        rendered: Option<&BTreeMap<String, String>>,
        git: Option<&serde_json::Value>,
        cluster: Option<&serde_json::Value>,
    ) -> Result<PreparedInput, PolicyError> {
        // Four entries, each reference counted: cloning them copies no document.
        let mut doc: BTreeMap<Value, Value> = self
            .0
            .as_object()
            .map_err(|e| PolicyError::Input(format!("the prepared input is not an object: {e}")))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        add_facts(&mut doc, rendered, git, cluster)?;
        Ok(PreparedInput(Value::from(doc)))
    }
}

fn add_facts(
    doc: &mut BTreeMap<Value, Value>,
    rendered: Option<&BTreeMap<String, String>>,
    git: Option<&serde_json::Value>,
    cluster: Option<&serde_json::Value>,
) -> Result<(), PolicyError> {
    if let Some(rendered) = rendered {
        let files: BTreeMap<Value, Value> = rendered
            .iter()
            .map(|(path, content)| (Value::from(path.as_str()), Value::from(content.as_str())))
            .collect();
        doc.insert(Value::from("rendered"), Value::from(files));
    }
    if let Some(git) = git {
        doc.insert(Value::from("git"), convert("git", git)?);
    }
    if let Some(cluster) = cluster {
        doc.insert(Value::from("cluster"), convert("cluster", cluster)?);
    }
    Ok(())
}

fn convert(field: &str, json: &serde_json::Value) -> Result<Value, PolicyError> {
    // Deserializing from `&serde_json::Value` walks the tree directly, with
    // no JSON text in between and no copy of the source tree.
    Value::deserialize(json).map_err(|e| PolicyError::Input(format!("failed to convert input.{field}: {e}")))
}

impl PolicyInput {
    /// Converts the input once; evaluate as many bundles as needed against the result.
    pub fn prepare(&self) -> Result<PreparedInput, PolicyError> {
        let mut doc = BTreeMap::new();
        doc.insert(Value::from("request"), convert("request", &self.request)?);
        doc.insert(
            Value::from("parameters"),
            convert("parameters", &self.parameters)?,
        );
        doc.insert(Value::from("route"), self.route.value.clone());
        doc.insert(Value::from("estimate"), convert("estimate", &self.estimate)?);
        add_facts(
            &mut doc,
            self.rendered.as_ref(),
            self.git.as_ref(),
            self.cluster.as_ref(),
        )?;
        Ok(PreparedInput(Value::from(doc)))
    }

    /// The same document as JSON (what `opa eval --input` would be given).
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        doc.insert("request".into(), self.request.clone());
        doc.insert("parameters".into(), self.parameters.clone());
        doc.insert("route".into(), self.route.json().clone());
        doc.insert("estimate".into(), self.estimate.clone());
        if let Some(rendered) = &self.rendered {
            let files = rendered
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            doc.insert("rendered".into(), serde_json::Value::Object(files));
        }
        if let Some(git) = &self.git {
            doc.insert("git".into(), git.clone());
        }
        if let Some(cluster) = &self.cluster {
            doc.insert("cluster".into(), cluster.clone());
        }
        serde_json::Value::Object(doc)
    }
}
