//! Kubernetes' own rules for a ServiceRequest, as the API server applies
//! them before the operator sees the object: the syntax of label and
//! annotation keys and values, and strict field validation (an unknown
//! field is refused, as `kubectl apply` does by default). The operator's
//! requests passed them already; offline, `paver validate` applies them so
//! a file is judged as it will be once applied, not as serde happens to
//! read it (serde ignores unknown fields and takes any label value).

use std::{collections::BTreeMap, sync::OnceLock};

use kube::{CustomResourceExt, core::ObjectMeta};
use paver_crds::ServiceRequest;
use serde::de::{self, Deserialize, Visitor};
use serde_json::{Map, Value, json};

use crate::FieldError;

/// The longest name in a label key, and the longest label value.
pub const MAX_LABEL_NAME_CHARS: usize = 63;
/// The longest DNS subdomain (a label key's prefix).
pub const MAX_SUBDOMAIN_CHARS: usize = 253;
/// What all of an object's annotations may hold together (keys and values).
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;
/// The most label and annotation errors reported for one request, and the
/// most unknown fields named for one document: the rest are counted.
pub const MAX_REPORTED: usize = 10;

const NAME_RULE: &str =
    "at most 63 characters: letters, digits, '-', '_' or '.', starting and ending with a letter or digit";

/// What is wrong with `s` as a Kubernetes qualified name (a label value, or
/// the name part of a label key), if anything.
fn name_problem(s: &str) -> Option<String> {
    let chars = s.chars().count();
    if chars > MAX_LABEL_NAME_CHARS {
        return Some(format!("{chars} characters, more than {MAX_LABEL_NAME_CHARS}"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
    {
        return Some(format!("{} is not allowed", describe(c)));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Some("it must start and end with a letter or digit".into());
    }
    None
}

/// A character as the user can find it: `' ' (U+0020)`, `'р' (U+0440, not ASCII)`.
fn describe(c: char) -> String {
    let ascii = if c.is_ascii() { "" } else { ", not ASCII" };
    format!("{c:?} (U+{:04X}{ascii})", c as u32)
}

/// What is wrong with `s` as a DNS subdomain (RFC 1123), if anything.
fn subdomain_problem(s: &str) -> Option<String> {
    if s.len() > MAX_SUBDOMAIN_CHARS {
        return Some(format!("{} characters, more than {MAX_SUBDOMAIN_CHARS}", s.len()));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(*c)))
    {
        return Some(format!("{} is not allowed", describe(c)));
    }
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if s.split('.')
        .any(|part| !alnum(part.as_bytes().first()) || !alnum(part.as_bytes().last()))
    {
        return Some("each '.'-separated part must start and end with a lowercase letter or digit".into());
    }
    None
}

/// What is wrong with `key` as a label or annotation key, if anything.
fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if name.contains('/') {
        return Some("it holds more than one '/'".into());
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Some("the prefix before '/' is empty".into());
        }
        if let Some(why) = subdomain_problem(prefix) {
            return Some(format!("the prefix {prefix:?} is not a DNS subdomain: {why}"));
        }
    }
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    name_problem(name).map(|why| format!("the name {name:?}: {why}"))
}

/// The label and annotation errors of a request's metadata, as the API
/// server reports them (each naming its entry), at most [`MAX_REPORTED`]
/// and then a count.
pub fn metadata_errors(meta: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let none = BTreeMap::new();
    for (key, value) in meta.labels.as_ref().unwrap_or(&none) {
        let field = format!("metadata.labels[{key:?}]");
        if let Some(why) = key_problem(key) {
            errors.push(FieldError::new(
                &field,
                format!("{key:?} is not a valid label key: {why} (a key is a name of {NAME_RULE}, optionally after a DNS subdomain prefix and '/', as in paver.dev/team)"),
            ));
        }
        if let Some(why) = (!value.is_empty()).then(|| name_problem(value)).flatten() {
            errors.push(FieldError::new(
                field,
                format!("{value:?} is not a valid label value: {why} (a value is empty or {NAME_RULE})"),
            ));
        }
    }
    let annotations = meta.annotations.as_ref().unwrap_or(&none);
    for key in annotations.keys() {
        if let Some(why) = key_problem(key) {
            errors.push(FieldError::new(
                format!("metadata.annotations[{key:?}]"),
                format!("{key:?} is not a valid annotation key: {why} (a key is a name of {NAME_RULE}, optionally after a DNS subdomain prefix and '/')"),
            ));
        }
    }
    let bytes: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATIONS_BYTES {
        errors.push(FieldError::new(
            "metadata.annotations",
            format!(
                "{bytes} bytes, more than Kubernetes' {MAX_ANNOTATIONS_BYTES} for all annotations together"
            ),
        ));
    }
    if errors.len() > MAX_REPORTED {
        let more = errors.len() - MAX_REPORTED;
        errors.truncate(MAX_REPORTED);
        errors.push(FieldError::new(
            "metadata",
            format!("and {more} more invalid label or annotation entries"),
        ));
    }
    errors
}

/// The fields a type's `Deserialize` reads as a struct (`ObjectMeta`'s,
/// for one): its `deserialize_struct` call names them.
fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The ServiceRequest CRD's schema as the API server checks a request
/// against it: plus the fields every object has (`metadata` to its own
/// fields, not deeper), and without `status`, which is the operator's
/// (written through its subresource; what a file says there is dropped).
fn request_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(document_schema::<ServiceRequest>)
}

/// A CRD's schema as a document is checked against it (see [`request_schema`]).
fn document_schema<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).unwrap_or_default();
    let mut schema = crd
        .pointer("/spec/versions/0/schema/openAPIV3Schema")
        .cloned()
        .unwrap_or_default();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        let any = json!({"x-kubernetes-preserve-unknown-fields": true});
        let meta: Map<String, Value> = struct_fields::<ObjectMeta>()
            .iter()
            .map(|f| (f.to_string(), any.clone()))
            .collect();
        props.insert("apiVersion".into(), json!({"type": "string"}));
        props.insert("kind".into(), json!({"type": "string"}));
        props.insert("metadata".into(), json!({"type": "object", "properties": meta}));
        props.insert("status".into(), any);
    }
    schema
}

/// The fields of a PaveRoute or PolicyBundle document (by its `kind`) that
/// its schema does not know, as [`unknown_request_fields`] finds them: what
/// `kubectl apply` refuses, refused offline too (`paver pack`, `--routes`).
pub fn unknown_content_fields(doc: &Value) -> Vec<FieldError> {
    static ROUTE: OnceLock<Value> = OnceLock::new();
    static BUNDLE: OnceLock<Value> = OnceLock::new();
    let schema = match doc["kind"].as_str() {
        Some("PaveRoute") => ROUTE.get_or_init(document_schema::<paver_crds::PaveRoute>),
        Some("PolicyBundle") => BUNDLE.get_or_init(document_schema::<paver_crds::PolicyBundle>),
        _ => return Vec::new(),
    };
    unknown_fields(schema, doc)
}

/// The fields of a ServiceRequest document that its schema does not know
/// (`spec.parameters` is free-form: the route's schema checks it), each
/// with the known field it most likely means; at most [`MAX_REPORTED`],
/// then a count. What the API server's strict field validation refuses.
pub fn unknown_request_fields(doc: &Value) -> Vec<FieldError> {
    unknown_fields(request_schema(), doc)
}

fn unknown_fields(schema: &Value, doc: &Value) -> Vec<FieldError> {
    let mut found = Unknown::default();
    found.walk(schema, doc, String::new());
    let mut errors = found.errors;
    if found.more > 0 {
        errors.push(FieldError::new(
            "",
            format!("and {} more unknown fields", found.more),
        ));
    }
    errors
}

#[derive(Default)]
struct Unknown {
    errors: Vec<FieldError>,
    more: usize,
}

impl Unknown {
    fn walk(&mut self, schema: &Value, value: &Value, path: String) {
        if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
            return;
        }
        match value {
            Value::Object(map) => {
                let props = schema.get("properties").and_then(Value::as_object);
                let values = schema.get("additionalProperties").filter(|s| s.is_object());
                for (key, item) in map {
                    let at = child(&path, key);
                    match (props.and_then(|p| p.get(key)), values) {
                        (Some(s), _) | (None, Some(s)) => self.walk(s, item, at),
                        (None, None) if props.is_some() || schema.get("type") == Some(&json!("object")) => {
                            let known = props.map(|p| p.keys().map(String::as_str).collect::<Vec<_>>());
                            self.report(at, key, &known.unwrap_or_default());
                        }
                        (None, None) => {}
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(s, item, format!("{path}[{i}]"));
                    }
                }
            }
            _ => {}
        }
    }

    fn report(&mut self, at: String, key: &str, known: &[&str]) {
        if self.errors.len() >= MAX_REPORTED {
            self.more += 1;
            return;
        }
        let message = match did_you_mean(key, known) {
            Some(known) => format!("unknown field (did you mean {known}?)"),
            None => "unknown field".to_string(),
        };
        self.errors.push(FieldError::new(at, message));
    }
}

/// `parent.key`, or `parent["key"]` for a key that is not a plain word.
fn child(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// The known field `key` most likely misspells: the same but for case, or
/// within two edits.
fn did_you_mean<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(same);
    }
    known
        .iter()
        .map(|k| (strsim::levenshtein(key, k), *k))
        .filter(|(d, k)| *d <= 2 && *d < k.len().min(key.len()))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(key: &str, value: &str) -> ObjectMeta {
        ObjectMeta {
            labels: Some([(key.to_string(), value.to_string())].into()),
            ..Default::default()
        }
    }

    #[test]
    fn label_values_follow_kubernetes_rules() {
        for good in ["", "pci", "PCI", "a.b_c-d", &"x".repeat(63)] {
            assert_eq!(
                metadata_errors(&labelled("paver.dev/x", good)),
                vec![],
                "{good:?}"
            );
        }
        let errors = metadata_errors(&labelled("paver.dev/data-classification", "pci "));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].field,
            "metadata.labels[\"paver.dev/data-classification\"]"
        );
        assert!(
            errors[0]
                .message
                .starts_with("\"pci \" is not a valid label value: ' ' (U+0020) is not allowed"),
            "{}",
            errors[0]
        );
        let homoglyph = metadata_errors(&labelled("paver.dev/data-classification", "\u{440}ci"));
        assert!(
            homoglyph[0].message.contains("(U+0440, not ASCII)"),
            "{}",
            homoglyph[0]
        );
        for bad in ["-pci", "pci.", &"x".repeat(64), "a/b"] {
            assert_eq!(metadata_errors(&labelled("k", bad)).len(), 1, "{bad:?}");
        }
    }

    #[test]
    fn label_and_annotation_keys_follow_kubernetes_rules() {
        for good in ["team", "paver.dev/team", "app.kubernetes.io/name", "a/B_c"] {
            assert_eq!(metadata_errors(&labelled(good, "v")), vec![], "{good:?}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "a/b/c",
            "Paver.dev/x",
            "-a.b/x",
            "a..b/x",
            "tea m",
            &"x".repeat(64),
        ] {
            let errors = metadata_errors(&labelled(bad, "v"));
            assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
            assert!(
                errors[0].message.contains("is not a valid label key"),
                "{}",
                errors[0]
            );
        }
        let meta = ObjectMeta {
            annotations: Some([("bad key".to_string(), "any value at all".to_string())].into()),
            ..Default::default()
        };
        let errors = metadata_errors(&meta);
        assert_eq!(errors[0].field, "metadata.annotations[\"bad key\"]", "{errors:?}");
        let big = ObjectMeta {
            annotations: Some([("a".to_string(), "x".repeat(MAX_ANNOTATIONS_BYTES))].into()),
            ..Default::default()
        };
        assert_eq!(metadata_errors(&big)[0].field, "metadata.annotations");
    }

    #[test]
    fn metadata_errors_are_counted_past_the_bound() {
        let meta = ObjectMeta {
            labels: Some((0..100).map(|i| (format!("k{i}"), format!("bad {i}"))).collect()),
            ..Default::default()
        };
        let errors = metadata_errors(&meta);
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert_eq!(
            errors[MAX_REPORTED].to_string(),
            "metadata: and 90 more invalid label or annotation entries"
        );
    }

    #[test]
    fn unknown_fields_are_named_with_a_suggestion() {
        let doc = json!({
            "apiVersion": "paver.dev/v1alpha1",
            "kind": "ServiceRequest",
            "metadata": {"name": "web", "namespace": "shop", "lables": {"a": "b"}, "labels": {"x": "y"}},
            "spec": {
                "route": "microservice", "routeversion": "^2.0", "team": "shop", "owner": "o",
                "environment": "staging", "routeVersion": null,
                "parameters": {"anything": {"goes": 1}},
            },
            "status": {"whatever": true},
            "extra": 1,
        });
        let found: Vec<String> = unknown_request_fields(&doc)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "extra: unknown field",
                "metadata.lables: unknown field (did you mean labels?)",
                "spec.routeversion: unknown field (did you mean routeVersion?)",
            ]
        );
        let fine = json!({"apiVersion": "v", "kind": "k", "metadata": {"name": "w", "uid": "u"}, "spec": {"route": "r"}});
        assert_eq!(unknown_request_fields(&fine), vec![]);
    }

    #[test]
    fn unknown_fields_are_counted_past_the_bound() {
        let spec: Map<String, Value> = (0..1000).map(|i| (format!("x{i}"), json!(1))).collect();
        let errors = unknown_request_fields(&json!({"spec": spec}));
        assert_eq!(errors.len(), MAX_REPORTED + 1);
        assert_eq!(errors[MAX_REPORTED].message, "and 990 more unknown fields");
    }
}
