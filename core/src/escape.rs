//! How a value printed with `{{ }}` is written into a rendered file, by
//! the file's type: injection-safe by construction, so a request's
//! parameters cannot add a YAML key, a CODEOWNERS rule or a workflow step.
//!
//! - YAML (`*.yaml`, `*.yml`): a plain word (letters, digits, `._/@+=~:%-`
//!   and inner single spaces, no `: ` or ` #`) is written as it is, so
//!   `image: {{ image }}` and `"{{ name }}-config"` read as before; any
//!   other string is written as a double-quoted YAML scalar (JSON escaping,
//!   with `'` escaped too), so a newline, `#`, `: ` or a quote stays inside
//!   the value. Sequences and mappings are written as JSON (flow YAML).
//!   Every rendered YAML file is then parsed: a quoted value put inside
//!   quotes by the template fails there, naming the file, rather than
//!   reaching Git.
//! - GitHub workflows (`.github/workflows/*.yaml`): strings must be plain
//!   words without spaces; anything else is refused. A workflow's values
//!   also reach shells (`run:`) and expressions (`${{ }}`), where no
//!   quoting is safe for both.
//! - CODEOWNERS: each value is one token (no whitespace, `#`, `\` or
//!   control character); anything else is refused, since one more token
//!   is one more owner and one more line is one more rule.
//! - JSON (`*.json`): every value is serialized as JSON.
//! - Anything else: written as it is.
//!
//! Values marked safe (the output of `to_yaml`, `to_json`, `tojson`,
//! `safe`) are written as they are: they are already in the file's format.

use minijinja::{AutoEscape, Error, ErrorKind, Output, State, Value, value::ValueKind};

const YAML: &str = "yaml";
const WORKFLOW: &str = "github-workflow";
const CODEOWNERS: &str = "codeowners";

/// The escaping for a template, by its path (the callback minijinja asks
/// when a template is loaded).
pub fn for_template(name: &str) -> AutoEscape {
    let file = name.rsplit('/').next().unwrap_or(name);
    let yaml = file.ends_with(".yaml") || file.ends_with(".yml");
    if yaml && (name.starts_with(".github/workflows/") || name.contains("/.github/workflows/")) {
        AutoEscape::Custom(WORKFLOW.into())
    } else if yaml {
        AutoEscape::Custom(YAML.into())
    } else if file == "CODEOWNERS" {
        AutoEscape::Custom(CODEOWNERS.into())
    } else if file.ends_with(".json") {
        AutoEscape::Json
    } else {
        AutoEscape::None
    }
}

/// Whether a rendered file at `name` is YAML, to be parsed after rendering.
pub fn is_yaml(name: &str) -> bool {
    matches!(for_template(name), AutoEscape::Custom(ref c) if c == YAML || c == WORKFLOW)
}

/// The environment's formatter: writes `value` escaped for the state's
/// auto-escape mode.
pub fn format(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    // A value already in the file's format (`to_json`) may still hold a
    // GitHub expression, which the workflow would evaluate (`${{
    // secrets.X }}` in an image name prints a secret into the log).
    if value.is_safe()
        && matches!(state.auto_escape(), AutoEscape::Custom(mode) if mode == WORKFLOW)
        && value.as_str().is_some_and(|s| s.contains("${{"))
    {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a value cannot be written into a GitHub workflow: it holds a `${{` expression, which \
             GitHub would evaluate (the value is not shown, so that no log carries it)"
                .to_string(),
        ));
    }
    let mode = match state.auto_escape() {
        AutoEscape::Custom(mode) if !value.is_safe() => mode.clone(),
        _ => return minijinja::escape_formatter(out, state, value),
    };
    let text = match mode.as_ref() {
        YAML => {
            let text = yaml(value)?;
            if text.starts_with(['"', '[', '{']) {
                state.get_or_insert_extension(Quoted);
            }
            text
        }
        WORKFLOW => word(value, false, "a GitHub workflow", "a plain word without spaces")?,
        CODEOWNERS => word(value, false, "CODEOWNERS", "one token without spaces or #")?,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("unknown escaping {other:?}"),
            ));
        }
    };
    out.write_str(&text).map_err(Error::from)
}

/// Set on a render's state when a YAML value was written quoted or as
/// JSON: only then can the template have put it where it does not parse,
/// so only then is the rendered file parsed again.
pub struct Quoted;

/// Whether a render wrote any value quoted (see [`Quoted`]).
pub fn quoted(state: &State) -> bool {
    state.get_extension::<Quoted>().is_some()
}

/// A plain word: safe unquoted in YAML (plain, single- or double-quoted
/// scalars), in a shell word and in a CODEOWNERS token when `spaces` is
/// false.
pub fn is_plain_word(s: &str, spaces: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || matches!(first, '.' | '/'))
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '.' | '_' | '/' | '@' | '+' | '=' | '~' | ':' | '%' | '-')
                || (spaces && c == ' ')
        })
        && !s.ends_with([' ', ':'])
        && !s.contains("  ")
        && !s.contains(": ")
        && !s.contains(" #")
}

fn scalar_text(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::String => value.as_str().map(str::to_string),
        ValueKind::Number | ValueKind::Bool => Some(value.to_string()),
        _ => None,
    }
}

fn json(value: &Value) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| {
        Error::new(
            ErrorKind::BadSerialization,
            format!("cannot write the value as YAML: {e}"),
        )
    })
}

fn yaml(value: &Value) -> Result<String, Error> {
    match value.kind() {
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            if is_plain_word(s, true) {
                Ok(s.to_string())
            } else {
                // A JSON string is a YAML double-quoted scalar; `'` is
                // escaped as well so that the value cannot close a
                // single-quoted scalar around it either.
                Ok(json(value)?.replace('\'', "\\u0027"))
            }
        }
        ValueKind::Number | ValueKind::Bool => Ok(value.to_string()),
        ValueKind::None => Ok("null".into()),
        _ => json(value),
    }
}

fn word(value: &Value, spaces: bool, file: &str, rule: &str) -> Result<String, Error> {
    match scalar_text(value) {
        // A leading `@` names a user or team (CODEOWNERS).
        Some(s) if is_plain_word(s.strip_prefix('@').unwrap_or(&s), spaces) => Ok(s),
        Some(s) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the value {} cannot be written into {file}: it must be {rule} \
                 (letters, digits and ._/@+=~:%-)",
                shown(&s)
            ),
        )),
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("a {} value cannot be written into {file}", value.kind()),
        )),
    }
}

/// The value as an error shows it: quoted, escaped, at most 80 characters.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// Why a rendered YAML file does not parse, if it does not: every
/// document is read (no anchors or tags are expanded into values).
pub fn check_yaml(content: &str) -> Result<(), String> {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(content) {
        serde::de::IgnoredAny::deserialize(doc).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A template that opts out of the escaping its file type gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    /// 1-based line of the template.
    pub line: usize,
    pub message: String,
}

/// What in a route's template `path` bypasses the escaping for its file
/// type: the `safe` filter on a printed value, or an `autoescape` block.
/// `paver test` reports these; values a template marks safe reach the
/// file raw, so only the route's own constants should be.
pub fn lint(path: &str, content: &str) -> Vec<Lint> {
    if for_template(path) == AutoEscape::None {
        return Vec::new();
    }
    let mut found = Vec::new();
    let line_of = |at: usize| content[..at].matches('\n').count() + 1;
    let mut rest = 0;
    while let Some(open) = content[rest..].find("{{").map(|i| i + rest) {
        let close = content[open..].find("}}").map_or(content.len(), |i| i + open);
        let expr = &content[open + 2..close];
        let safe = expr.split('|').skip(1).any(|f| {
            let f = f.trim_start();
            f.strip_prefix("safe")
                .is_some_and(|after| !after.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
        });
        if safe {
            found.push(Lint {
                line: line_of(open),
                message: format!(
                    "`{{{{{}}}}}` prints with `safe`, so a request's value would reach this file \
                     unescaped; drop `safe` (or use to_yaml / to_json)",
                    expr
                ),
            });
        }
        rest = close.min(content.len());
        if rest == content.len() {
            break;
        }
    }
    for (i, line) in content.lines().enumerate() {
        if line.contains("{%") && line.contains("autoescape") {
            found.push(Lint {
                line: i + 1,
                message: "an `autoescape` block changes the escaping this file type needs".into(),
            });
        }
    }
    found.sort_by_key(|l| l.line);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words() {
        for ok in [
            "main",
            "ghcr.io/acme/api:1.2.3",
            "512Mi",
            "My service",
            "acme@example.com",
            "a=b+c/d~e%f",
        ] {
            assert!(is_plain_word(ok, true), "{ok}");
        }
        for bad in [
            "",
            "a\nb",
            "a: b",
            "a #b",
            "'x",
            "\"x",
            "-x",
            "@x",
            "x:",
            "x ",
            "$(curl x)",
            "a;b",
            "a|b",
            "a,b",
            "[x]",
            "`x`",
            "${{ x }}",
        ] {
            assert!(!is_plain_word(bad, true), "{bad:?}");
        }
        assert!(!is_plain_word("a b", false));
    }

    #[test]
    fn file_types() {
        assert_eq!(
            for_template("manifests/deployment.yaml"),
            AutoEscape::Custom(YAML.into())
        );
        assert_eq!(
            for_template(".github/workflows/ci.yaml"),
            AutoEscape::Custom(WORKFLOW.into())
        );
        assert_eq!(for_template("CODEOWNERS"), AutoEscape::Custom(CODEOWNERS.into()));
        assert_eq!(for_template("x/config.json"), AutoEscape::Json);
        assert_eq!(for_template("README.md"), AutoEscape::None);
        assert!(is_yaml("slo.yaml") && !is_yaml("CODEOWNERS"));
    }

    #[test]
    fn lint_finds_what_bypasses_escaping() {
        let content = "a: {{ x }}\nb: {{ y | safe }}\nc: {{ z|safe_name }}\n{% autoescape false %}{{ w }}{% endautoescape %}\n";
        let lines: Vec<usize> = lint("m/x.yaml", content).iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![2, 4]);
        assert!(lint("README.md", content).is_empty());
        assert_eq!(lint("CODEOWNERS", "* {{ o|safe }}").len(), 1);
    }

    #[test]
    fn yaml_files_parse() {
        assert_eq!(check_yaml("a: 1\n---\nb: [1, 2]\n"), Ok(()));
        assert!(check_yaml("a: 'x' y\n").is_err());
    }
}
