//! Reading Paver's content: routes and bundles from their source folders
//! (`routes/<name>/`, `policy-bundles/<name>/`) or from packed YAML, and
//! requests from YAML files. Parsing is bounded: a document larger than
//! [`MAX_DOCUMENT_BYTES`] is refused before it is parsed.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use kube::core::ObjectMeta;
use paver_crds::{PaveRoute, PolicyBundle, RegoModule, ServiceRequest, TemplateFile};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Largest YAML input Paver parses (per file or stream).
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// The packed routes embedded in the binary (`manifests/routes.yaml`).
pub const EMBEDDED_ROUTES: &str = include_str!("../../manifests/routes.yaml");
/// The packed bundles embedded in the binary (`manifests/policy-bundles.yaml`).
pub const EMBEDDED_BUNDLES: &str = include_str!("../../manifests/policy-bundles.yaml");

/// Why content could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("failed to read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: document is {size} bytes, larger than the {MAX_DOCUMENT_BYTES}-byte limit")]
    TooLarge { source_name: String, size: usize },
    /// A file whose size was not known before reading it (it grew, or its
    /// size says nothing, as in /proc): read up to the limit, then refused.
    #[error("{source_name}: larger than the {MAX_DOCUMENT_BYTES}-byte limit (reading stopped there)")]
    TooLong { source_name: String },
    #[error("{source_name}: invalid YAML: {message}")]
    Yaml { source_name: String, message: String },
    #[error("{source_name}: {message}")]
    Invalid { source_name: String, message: String },
}

/// Routes and bundles, as loaded.
#[derive(Clone, Debug, Default)]
pub struct Content {
    pub routes: Vec<PaveRoute>,
    pub bundles: Vec<PolicyBundle>,
}

impl Content {
    /// Refuses a route or bundle name given twice: in the cluster names are
    /// unique, and offline a second definition would silently replace the
    /// first (`source_name` says where they were read from).
    pub fn unique(self, source_name: &str) -> Result<Content, ContentError> {
        let twice = |kind: &str, names: Vec<Option<&String>>| {
            let mut seen = std::collections::BTreeSet::new();
            names
                .into_iter()
                .flatten()
                .find(|n| !seen.insert(*n))
                .map(|n| ContentError::Invalid {
                    source_name: source_name.to_string(),
                    message: format!("{kind} {n:?} is defined twice; names must be unique (as in a cluster)"),
                })
        };
        let routes = self.routes.iter().map(|r| r.metadata.name.as_ref()).collect();
        let bundles = self.bundles.iter().map(|b| b.metadata.name.as_ref()).collect();
        match twice("route", routes).or_else(|| twice("bundle", bundles)) {
            Some(e) => Err(e),
            None => Ok(self),
        }
    }

    /// The routes and bundles embedded in the binary.
    pub fn embedded() -> Result<Content, ContentError> {
        let mut content = parse_stream(EMBEDDED_ROUTES, "embedded routes")?;
        content.extend(parse_stream(EMBEDDED_BUNDLES, "embedded bundles")?);
        content.unique("the embedded routes and bundles")
    }

    pub fn extend(&mut self, other: Content) {
        self.routes.extend(other.routes);
        self.bundles.extend(other.bundles);
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads a file of at most [`MAX_DOCUMENT_BYTES`] as UTF-8 text. Reading
/// stops one byte past the limit, so a link to `/dev/zero` (whose size
/// says 0) is refused, not read until memory runs out; anything but a
/// regular file (a named pipe would block for ever, a device never ends)
/// is refused before it is opened.
pub fn read_bounded(path: &Path) -> Result<String, ContentError> {
    let source_name = || path.display().to_string();
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if !meta.is_file() {
        return Err(ContentError::Invalid {
            source_name: source_name(),
            message: "not a regular file (devices, named pipes and sockets are not read)".into(),
        });
    }
    if meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(ContentError::TooLarge {
            source_name: source_name(),
            size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
        });
    }
    // The size can change between the look and the read (a file growing,
    // a /proc file that says 0): the read itself stops past the limit.
    let bytes = std::fs::File::open(path)
        .and_then(|file| read_at_most(file, MAX_DOCUMENT_BYTES))
        .map_err(io_err(path))?
        .ok_or_else(|| ContentError::TooLong {
            source_name: source_name(),
        })?;
    String::from_utf8(bytes).map_err(|_| ContentError::Invalid {
        source_name: source_name(),
        message: "not UTF-8 text".into(),
    })
}

/// Everything `reader` holds when that is at most `limit` bytes; `None`
/// once it holds more (reading stops one byte past the limit).
fn read_at_most(reader: impl std::io::Read, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

/// Deepest flow nesting (`[` / `{`) a document may have. The YAML scanner
/// is quadratic in it before its own recursion limit (128) applies: 100,000
/// nested `[` took 18 s. Nothing Paver reads nests a tenth as deep.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Parses every YAML document in `text` into JSON values as kubectl reads
/// them: a leading byte-order mark is skipped; duplicate keys and tags
/// (`!!binary`, `!custom`: kubectl would decode or refuse what Paver would
/// take as plain text) are refused, as are inputs over the size limit and
/// flow nesting deeper than [`MAX_FLOW_DEPTH`] (checked in one pass before
/// parsing). Errors carry line and column.
pub fn yaml_documents(text: &str, source_name: &str) -> Result<Vec<Value>, ContentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ContentError::TooLarge {
            source_name: source_name.to_string(),
            size: text.len(),
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let yaml_err = |message: String| ContentError::Yaml {
        source_name: source_name.to_string(),
        message,
    };
    match scan(text, MAX_FLOW_DEPTH) {
        Some(Scanned::TooDeep { line, column }) => {
            return Err(yaml_err(format!(
                "nesting deeper than {MAX_FLOW_DEPTH} levels at line {line} column {column}"
            )));
        }
        Some(Scanned::Tag { tag, line, column }) => {
            return Err(yaml_err(format!(
                "the tag {tag} at line {line} column {column} is not supported: kubectl would decode \
                 or refuse the value (`!!binary` is decoded, Paver would validate the encoded text); \
                 write it plainly"
            )));
        }
        None => {}
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        // Through YAML's own value first: its mappings refuse a duplicate key
        // (serde_json's would keep the last one silently), and tags stay visible.
        let yaml: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).map_err(|e| yaml_err(e.to_string()))?;
        if let Some(tag) = first_tag(&yaml) {
            let at = text
                .find(&tag)
                .map(|i| {
                    let line = text[..i].matches('\n').count() + 1;
                    let column = i - text[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
                    format!(" at line {line} column {column}")
                })
                .unwrap_or_default();
            return Err(yaml_err(format!(
                "the tag {tag}{at} is not supported: kubectl would decode or refuse the value; write it plainly"
            )));
        }
        let value: Value = serde_json::to_value(&yaml).map_err(|e| yaml_err(e.to_string()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The first tag in a document, as written (`!!binary`, `!x`).
fn first_tag(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Tagged(t) => Some(t.tag.to_string()),
        serde_yaml::Value::Sequence(items) => items.iter().find_map(first_tag),
        serde_yaml::Value::Mapping(m) => m.iter().find_map(|(k, v)| first_tag(k).or_else(|| first_tag(v))),
        _ => None,
    }
}

/// What the one pass before parsing refuses.
#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    /// Flow collections nest deeper than allowed here.
    TooDeep { line: usize, column: usize },
    /// A tag (`!!binary`, `!x`) where a node can start.
    Tag { tag: String, line: usize, column: usize },
}

/// One pass over the text, skipping quoted scalars, block scalars (`|`,
/// `>`) and comments: where flow collections (`[`, `{`) first nest deeper
/// than `max`, or the first tag.
fn scan(text: &str, max: usize) -> Option<Scanned> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // The indentation of the line that opened a block scalar: more-indented
    // (and blank) lines after it are its content.
    let mut block_parent: Option<usize> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        if let Some(parent) = block_parent {
            if raw.trim().is_empty() || indent > parent {
                continue;
            }
            block_parent = None;
        }
        // Where a node can start: at the start of a line or after an
        // indicator (`key: `, `- `, `[`, `,`); inside a plain scalar
        // (`don't`, `x != y`, `a > b`) quotes, `!`, `|` and `>` are text.
        let mut prev = ' ';
        let mut last = ':';
        let mut chars = raw.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let column = at + 1;
            let node_start = "[{,".contains(prev) || (prev.is_whitespace() && ":-?,[{".contains(last));
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    // '' inside a single-quoted scalar is an escaped quote.
                    if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if prev.is_whitespace() => break,
                    '"' | '\'' if node_start => quote = Some(c),
                    '|' | '>' if node_start && depth == 0 => {
                        block_parent = Some(indent);
                        break;
                    }
                    '[' | '{' => {
                        depth += 1;
                        if depth > max {
                            return Some(Scanned::TooDeep { line, column });
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    '!' if node_start => {
                        let tag: String = raw[at..]
                            .chars()
                            .take_while(|n| !n.is_whitespace() && !",[]{}".contains(*n))
                            .collect();
                        return Some(Scanned::Tag { tag, line, column });
                    }
                    _ => {}
                },
            }
            prev = c;
            if !c.is_whitespace() {
                last = c;
            }
        }
    }
    None
}

/// Deserializes one already-parsed document into a typed resource; a type
/// error names the field it is in (`spec.environment: unknown variant ...`).
pub fn typed<T: DeserializeOwned>(value: Value, source_name: &str) -> Result<T, ContentError> {
    typed_or_message(value).map_err(|message| ContentError::Invalid {
        source_name: source_name.to_string(),
        message,
    })
}

fn typed_or_message<T: DeserializeOwned>(value: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        // serde quotes the value it refused: bound what is echoed back.
        let mut message = if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        };
        paver_crds::truncate_message(&mut message, crate::MAX_ERROR_MESSAGE_BYTES);
        message
    })
}

/// A PaveRoute or PolicyBundle document read as the API server reads it:
/// its unknown fields refused (a misspelt `policyBundles` is not silently
/// no bundles), then its type errors, each naming the field.
fn strict<T: DeserializeOwned>(doc: Value, source_name: &str) -> Result<T, ContentError> {
    let unknown = crate::kubernetes::unknown_content_fields(&doc);
    checked(doc, unknown, source_name)
}

/// A ServiceRequest document read as the API server reads it: its unknown
/// fields refused (strict field validation, kubectl's default), then its
/// type errors, each naming the field.
fn request(doc: Value, source_name: String) -> Result<ServiceRequest, ContentError> {
    let unknown = crate::kubernetes::unknown_request_fields(&doc);
    checked(doc, unknown, &source_name)
}

/// `doc` typed, or every problem with it: the `unknown` fields first.
fn checked<T: DeserializeOwned>(
    doc: Value,
    unknown: Vec<crate::FieldError>,
    source_name: &str,
) -> Result<T, ContentError> {
    let mut problems: Vec<String> = unknown.iter().map(ToString::to_string).collect();
    match typed_or_message(doc) {
        Ok(value) if problems.is_empty() => return Ok(value),
        Ok(_) => {}
        Err(message) => problems.push(message),
    }
    Err(ContentError::Invalid {
        source_name: source_name.to_string(),
        message: problems.join("; "),
    })
}

fn kind_of(doc: &Value) -> (&str, &str) {
    (
        doc["apiVersion"].as_str().unwrap_or(""),
        doc["kind"].as_str().unwrap_or(""),
    )
}

/// Parses a YAML stream of PaveRoutes and PolicyBundles (packed content).
pub fn parse_stream(text: &str, source_name: &str) -> Result<Content, ContentError> {
    let mut content = Content::default();
    for (i, doc) in yaml_documents(text, source_name)?.into_iter().enumerate() {
        let name = format!("{source_name} (document {})", i + 1);
        match kind_of(&doc) {
            ("paver.dev/v1alpha1", "PaveRoute") => content.routes.push(strict(doc, &name)?),
            ("paver.dev/v1alpha1", "PolicyBundle") => content.bundles.push(strict(doc, &name)?),
            (api, kind) => {
                return Err(ContentError::Invalid {
                    source_name: name,
                    message: format!(
                        "expected apiVersion paver.dev/v1alpha1 and kind PaveRoute or PolicyBundle, found {:?} {:?}",
                        api, kind
                    ),
                });
            }
        }
    }
    Ok(content)
}

/// Parses ServiceRequests from a YAML stream; any other kind is an error.
pub fn parse_requests(text: &str, source_name: &str) -> Result<Vec<ServiceRequest>, ContentError> {
    let docs = yaml_documents(text, source_name)?;
    if docs.is_empty() {
        return Err(ContentError::Invalid {
            source_name: source_name.to_string(),
            message: "no ServiceRequest found (the file is empty)".into(),
        });
    }
    docs.into_iter()
        .enumerate()
        .map(|(i, doc)| {
            let name = if i == 0 { source_name.to_string() } else { format!("{source_name} (document {})", i + 1) };
            match kind_of(&doc) {
                ("paver.dev/v1alpha1", "ServiceRequest") => request(doc, name),
                (api, kind) => Err(ContentError::Invalid {
                    source_name: name,
                    message: format!(
                        "expected apiVersion paver.dev/v1alpha1 and kind ServiceRequest, found {api:?} {kind:?}"
                    ),
                }),
            }
        })
        .collect()
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ContentError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err(dir))?;
    entries.sort();
    Ok(entries)
}

/// Refuses `path` when it is a symbolic link: a route's or bundle's files
/// come from its own folder, never from wherever a link points.
fn no_symlink(path: &Path) -> Result<(), ContentError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(ContentError::Invalid {
            source_name: path.display().to_string(),
            message: "symbolic links are not allowed in routes and bundles (it would read files from \
                      outside the folder)"
                .into(),
        }),
        _ => Ok(()),
    }
}

fn walk_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), ContentError> {
    for path in sorted_entries(dir)? {
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if meta.file_type().is_symlink() {
            return Err(ContentError::Invalid {
                source_name: path.display().to_string(),
                message: "symbolic links are not allowed in templates".into(),
            });
        } else if meta.is_dir() {
            walk_files(root, &path, out)?;
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

/// Loads `routes/<name>/`: `route.yaml` (a PaveRoute) plus every file under
/// `templates/`, added as inline templates by relative path.
pub fn load_route_dir(dir: &Path) -> Result<PaveRoute, ContentError> {
    let file = dir.join("route.yaml");
    no_symlink(&file)?;
    no_symlink(&dir.join("templates"))?;
    let docs = yaml_documents(&read_bounded(&file)?, &file.display().to_string())?;
    let [doc] = <[Value; 1]>::try_from(docs).map_err(|_| ContentError::Invalid {
        source_name: file.display().to_string(),
        message: "expected exactly one PaveRoute document".into(),
    })?;
    let mut route: PaveRoute = strict(doc, &file.display().to_string())?;
    let templates = dir.join("templates");
    if templates.is_dir() {
        let mut files = Vec::new();
        walk_files(&templates, &templates, &mut files)?;
        for (rel, path) in files {
            route.spec.templates.inline.push(TemplateFile {
                path: rel,
                content: read_bounded(&path)?,
                when: None,
            });
        }
    }
    if route.metadata.name.is_none() {
        route.metadata.name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    Ok(route)
}

/// Loads `policy-bundles/<name>/`: `bundle.yaml` (a PolicyBundle without
/// sources), `*.rego` modules, `*_test.rego` tests and `data.json`.
pub fn load_bundle_dir(dir: &Path) -> Result<PolicyBundle, ContentError> {
    let file = dir.join("bundle.yaml");
    no_symlink(&file)?;
    let docs = yaml_documents(&read_bounded(&file)?, &file.display().to_string())?;
    let [doc] = <[Value; 1]>::try_from(docs).map_err(|_| ContentError::Invalid {
        source_name: file.display().to_string(),
        message: "expected exactly one PolicyBundle document".into(),
    })?;
    let mut doc = doc;
    if let Some(spec) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("modules").or_insert_with(|| Value::Array(vec![]));
    }
    let mut bundle: PolicyBundle = strict(doc, &file.display().to_string())?;
    for path in sorted_entries(dir)? {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if name.ends_with(".rego") || name == "data.json" {
            no_symlink(&path)?;
        }
        if name.ends_with("_test.rego") {
            bundle.spec.tests.push(RegoModule {
                name,
                source: read_bounded(&path)?,
            });
        } else if name.ends_with(".rego") {
            bundle.spec.modules.push(RegoModule {
                name,
                source: read_bounded(&path)?,
            });
        } else if name == "data.json" {
            let text = read_bounded(&path)?;
            let data: Value = serde_json::from_str(&text).map_err(|e| ContentError::Invalid {
                source_name: path.display().to_string(),
                message: format!("invalid JSON: {e}"),
            })?;
            bundle.spec.data = Some(data);
        }
    }
    if bundle.metadata.name.is_none() {
        bundle.metadata.name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    Ok(bundle)
}

/// Loads content from a path: a packed YAML file, a route or bundle folder,
/// or a folder of such folders.
pub fn load_path(path: &Path) -> Result<Content, ContentError> {
    let mut content = Content::default();
    if path.is_file() {
        return parse_stream(&read_bounded(path)?, &path.display().to_string());
    }
    if path.join("route.yaml").is_file() {
        content.routes.push(load_route_dir(path)?);
    } else if path.join("bundle.yaml").is_file() {
        content.bundles.push(load_bundle_dir(path)?);
    } else {
        for entry in sorted_entries(path)? {
            if entry.is_dir() && (entry.join("route.yaml").is_file() || entry.join("bundle.yaml").is_file()) {
                no_symlink(&entry)?;
                content.extend(load_path(&entry)?);
            }
        }
    }
    Ok(content)
}

/// Strips server-populated metadata so packed YAML is stable.
fn clean_meta(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone(),
        ..Default::default()
    }
}

/// Packs resources into one YAML stream, sorted by name, for `manifests/`.
pub fn pack<T, F>(header: &str, items: &[T], meta: F) -> String
where
    T: serde::Serialize + Clone,
    F: Fn(&T) -> &ObjectMeta,
{
    let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
    for item in items {
        let m = meta(item);
        let mut v = serde_json::to_value(item).unwrap_or(Value::Null);
        v["metadata"] = serde_json::to_value(clean_meta(m)).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.remove("status");
        }
        sorted.insert(m.name.clone().unwrap_or_default(), v);
    }
    let mut out = format!("# {header}\n");
    for v in sorted.values() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(v).unwrap_or_default());
    }
    out
}

/// The packed form of `routes/`.
pub fn pack_routes(routes: &[PaveRoute]) -> String {
    pack(
        "Generated by `make pack` from routes/; do not edit.",
        routes,
        |r| &r.metadata,
    )
}

/// The packed form of `policy-bundles/`.
pub fn pack_bundles(bundles: &[PolicyBundle]) -> String {
    pack(
        "Generated by `make pack` from policy-bundles/; do not edit.",
        bundles,
        |b| &b.metadata,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read as kubectl reads it: duplicate keys and tags refused with line
    /// and column, a byte-order mark accepted.
    #[test]
    fn yaml_is_read_as_kubectl_reads_it() {
        let dup = "spec:\n  team: a\n  owner: x\n  team: b\n";
        let err = yaml_documents(dup, "dup.yaml").expect_err("duplicate key");
        let msg = err.to_string();
        // serde_yaml names the key and where its mapping starts.
        assert!(
            msg.contains("spec: duplicate entry with key \"team\"") && msg.contains("line 2 column 3"),
            "{msg}"
        );

        let tagged = "spec:\n  image: !!binary aW1hZ2U=\n";
        let msg = yaml_documents(tagged, "t.yaml").expect_err("tag").to_string();
        assert!(
            msg.contains("!!binary") && msg.contains("line 2 column 10"),
            "{msg}"
        );

        let bom = "\u{feff}apiVersion: v1\nkind: X\n";
        let docs = yaml_documents(bom, "bom.yaml").expect("a BOM is accepted");
        assert_eq!(docs[0]["apiVersion"], "v1");

        let plain = "a: \"[[[[\"\nb: don't [x]\nc: '#{{' # [[[\nd: x != y\n";
        assert_eq!(yaml_documents(plain, "p.yaml").expect("plain").len(), 1);
        // Block scalars (Rego in a packed bundle) are content, not YAML.
        let block = "source: |\n  deny if input.x != 1\n  y := [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n\n  z := !x\nnext: !custom 1\n";
        let msg = yaml_documents(block, "b.yaml")
            .expect_err("the tag after the block")
            .to_string();
        assert!(msg.contains("!custom at line 6 column 7"), "{msg}");
    }

    /// Deep flow nesting is refused in one pass before the (quadratic)
    /// scanner sees it: a million `[` in well under a second.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "a: ".to_string() + &"[".repeat(1_000_000);
        let started = std::time::Instant::now();
        let msg = yaml_documents(&deep, "deep.yaml")
            .expect_err("too deep")
            .to_string();
        assert!(
            msg.contains("nesting deeper than 64") && msg.contains("line 1 column 68"),
            "{msg}"
        );
        // A bound, not a speed target: the scanner alone would take half an hour.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let sneaky = "a: b'\nc: ".to_string() + &"[".repeat(100_000);
        assert!(yaml_documents(&sneaky, "s.yaml").is_err());
        let fine = "a: ".to_string() + &"[".repeat(60) + &"]".repeat(60);
        assert!(yaml_documents(&fine, "ok.yaml").is_ok());
    }

    #[test]
    fn oversized_yaml_is_refused_before_parsing() {
        let text = "a: ".to_string() + &"x".repeat(MAX_DOCUMENT_BYTES);
        let err = yaml_documents(&text, "big.yaml").expect_err("too large");
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let bomb = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
        let err = yaml_documents(bomb, "bomb.yaml").expect_err("alias bomb");
        assert!(err.to_string().contains("bomb.yaml"), "{err}");
    }

    #[test]
    fn malformed_yaml_names_line() {
        let err = parse_requests("kind: ServiceRequest\n  bad: [\n", "req.yaml").expect_err("bad yaml");
        let msg = err.to_string();
        assert!(msg.contains("req.yaml") && msg.contains("line"), "{msg}");
    }

    /// Type errors name their field, as the API server's do.
    #[test]
    fn unknown_route_and_bundle_fields_are_refused() {
        let route = "apiVersion: paver.dev/v1alpha1\nkind: PaveRoute\nmetadata: {name: web}\n\
                     spec:\n  version: 1.0.0\n  policybundles: [security]\n  templates:\n    git: {url: https://x}\n";
        let msg = parse_stream(route, "r.yaml")
            .expect_err("unknown fields")
            .to_string();
        assert!(
            msg.contains("spec.policybundles: unknown field (did you mean policyBundles?)"),
            "{msg}"
        );
        assert!(msg.contains("spec.templates.git: unknown field"), "{msg}");
        let bundle = "apiVersion: paver.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: b}\n\
                      spec: {version: 1.0.0, modules: [], enforceafter: x}\n";
        let msg = parse_stream(bundle, "b.yaml")
            .expect_err("unknown field")
            .to_string();
        assert!(
            msg.contains("spec.enforceafter: unknown field (did you mean enforceAfter?)"),
            "{msg}"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let head =
            "apiVersion: paver.dev/v1alpha1\nkind: ServiceRequest\nmetadata: {name: web, namespace: shop}\n";
        let spec = "spec: {route: r, team: t, owner: o, environment: Production}\n";
        let msg = parse_requests(&format!("{head}{spec}"), "r.yaml")
            .expect_err("capitalized")
            .to_string();
        assert!(
            msg.starts_with("r.yaml: spec.environment: unknown variant `Production`, expected one of"),
            "{msg}"
        );
        let msg = parse_requests(&format!("{head}spec: null\n"), "r.yaml")
            .expect_err("null spec")
            .to_string();
        assert_eq!(
            msg,
            "r.yaml: spec: invalid type: null, expected struct ServiceRequestSpec"
        );
        let msg = parse_requests(
            &format!("{head}spec: {{route: r, team: [t], owner: o, environment: staging}}\n"),
            "r.yaml",
        )
        .expect_err("team list")
        .to_string();
        assert!(
            msg.contains("spec.team: invalid type: sequence, expected a string"),
            "{msg}"
        );
        // What serde echoes back is bounded.
        let huge = format!(
            "{head}spec: {{route: r, team: t, owner: o, environment: {}}}\n",
            "P".repeat(100_000)
        );
        let msg = parse_requests(&huge, "r.yaml").expect_err("huge").to_string();
        assert!(msg.len() < 2 * crate::MAX_ERROR_MESSAGE_BYTES, "{}", msg.len());
    }

    /// Unknown fields are refused, as kubectl's strict field validation
    /// does, along with any type error; `spec.parameters` is the route's.
    #[test]
    fn unknown_request_fields_are_refused() {
        let text = "apiVersion: paver.dev/v1alpha1\nkind: ServiceRequest\nmetadata: {name: web, namespace: shop}\n\
                    spec: {route: r, routeversion: '^2.0', team: t, owner: o, environment: staging, parameters: {free: 1}}\n";
        let msg = parse_requests(text, "r.yaml").expect_err("unknown").to_string();
        assert_eq!(
            msg,
            "r.yaml: spec.routeversion: unknown field (did you mean routeVersion?)"
        );
        let both = text.replace("environment: staging", "enviroment: staging");
        let msg = parse_requests(&both, "r.yaml").expect_err("both").to_string();
        assert_eq!(
            msg,
            "r.yaml: spec.enviroment: unknown field (did you mean environment?); \
             spec.routeversion: unknown field (did you mean routeVersion?); spec: missing field `environment`"
        );
        let fine = text.replace("routeversion", "routeVersion");
        assert_eq!(parse_requests(&fine, "r.yaml").expect("valid").len(), 1);
    }

    /// A link to /dev/zero (its size says 0) or a named pipe is refused, not
    /// read for ever; a reader is read one byte past the limit at most.
    #[test]
    fn only_regular_files_are_read_and_only_to_the_limit() {
        let msg = read_bounded(Path::new("/dev/zero"))
            .expect_err("a device")
            .to_string();
        assert_eq!(
            msg,
            "/dev/zero: not a regular file (devices, named pipes and sockets are not read)"
        );
        let endless = std::io::repeat(b'a');
        assert_eq!(read_at_most(endless, 10).expect("read"), None);
        assert_eq!(
            read_at_most(&b"0123456789"[..], 10)
                .expect("read")
                .map(|b| b.len()),
            Some(10)
        );
        let dir = std::env::temp_dir().join(format!("paver-read-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("latin1.yaml");
        std::fs::write(&file, b"a: \xe9\n").expect("write");
        let msg = read_bounded(&file).expect_err("latin-1").to_string();
        assert!(msg.ends_with("latin1.yaml: not UTF-8 text"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wrong_kind_is_named() {
        let err = parse_requests("apiVersion: v1\nkind: ConfigMap\n", "cm.yaml").expect_err("wrong kind");
        assert!(err.to_string().contains("ConfigMap"), "{err}");
    }
}
