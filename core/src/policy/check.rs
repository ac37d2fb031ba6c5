//! OPA's compile-time checks for Rego v1 modules regorus has parsed.
//!
//! regorus accepts modules that OPA's compiler refuses — unsafe variables,
//! rules defined with conflicting kinds, calls of undefined functions,
//! redeclared variables — and evaluates them in its own way. [`check_modules`]
//! runs the checks of OPA 1.x's compiler (`opa check`; with `strict`,
//! `opa check --strict`) over the modules regorus has parsed, in OPA's stage
//! order: like OPA it stops after the first stage that finds an error OPA does
//! not recover from, and reports each error with OPA's code, wording and the
//! location OPA gives (the expression's, or the rule's).
//!
//! Stages, as in OPA's `compile.go`: unused imports (strict), keyword
//! overrides, duplicate imports, local variables (`var x assigned above`,
//! `declared var x unused`, with `strict` `assigned var x unused` and unused
//! function arguments), rule conflicts, undefined functions and arity, safety
//! of rule heads, safety of rule bodies (variables bound by a later
//! expression, by comprehensions and `every`, as OPA reorders them), recursion,
//! deprecated built-ins. Not implemented: OPA's type checker (beyond arity)
//! and schemas, which need OPA's type declarations of every built-in.
//!
//! It reads only regorus's public AST (`regorus::unstable`), so it could move
//! into regorus as it is; `operator/tests/opa_check.rs` holds it to real OPA.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use regorus::unstable::{
    AssignOp, BUILTINS, Expr, Literal, LiteralStmt, Module, Query, Ref, Rule, RuleBody, RuleHead, Span,
};

/// One error, as OPA reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    /// The module's path, as given to the engine.
    pub file: String,
    pub line: u32,
    pub col: u32,
    /// OPA's error code: `rego_compile_error`, `rego_type_error`,
    /// `rego_unsafe_var_error` or `rego_recursion_error`.
    pub code: &'static str,
    pub message: String,
}

const COMPILE: &str = "rego_compile_error";
const TYPE: &str = "rego_type_error";
const UNSAFE: &str = "rego_unsafe_var_error";
const RECURSION: &str = "rego_recursion_error";

/// OPA stops after this many errors (`opa check`'s default).
const MAX_ERRORS: usize = 10;

/// OPA 1.x's deprecated built-ins, with their arity: refused in v1 modules.
const DEPRECATED: [(&str, usize); 11] = [
    ("all", 1),
    ("any", 1),
    ("cast_array", 1),
    ("cast_boolean", 1),
    ("cast_null", 1),
    ("cast_object", 1),
    ("cast_set", 1),
    ("cast_string", 1),
    ("net.cidr_overlap", 2),
    ("re_match", 2),
    ("set_diff", 2),
];

/// Checks `modules` as OPA's compiler would and returns its errors, sorted
/// by location; empty when OPA would accept them.
pub fn check_modules(modules: &[Ref<Module>], strict: bool) -> Vec<CheckError> {
    let mut mods: Vec<ModInfo<'_>> = modules.iter().map(|m| ModInfo::new(m)).collect();
    mods.sort_by(|a, b| a.file.cmp(&b.file));
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &mods {
        for r in &m.module.policy {
            if let Some(first) = head_path(rule_refr(r)).first() {
                names.entry(m.pkg.clone()).or_default().insert(first.clone());
            }
        }
    }
    let rules = RuleTable::new(&mods);
    let mut lowered = Vec::new();
    for m in &mods {
        let globals = names.get(&m.pkg).cloned().unwrap_or_default();
        let mut lower = Lower::new(m, &globals, &rules, strict);
        for r in &m.module.policy {
            lower.rule(r);
        }
        lowered.push(lower.finish());
    }

    let mut out = Report::default();
    // Stages in OPA's order. Each `stage` call returns false when an
    // unrecoverable error (or the error limit) ends the compilation.
    let stages: [&dyn Fn(&mut Report); 10] = [
        &|out| {
            if strict {
                for l in &lowered {
                    for imp in &l.unused_imports {
                        out.recoverable(imp.clone());
                    }
                }
            }
        },
        &|out| {
            for l in &lowered {
                for e in &l.keyword_errors {
                    out.recoverable(e.clone());
                }
            }
        },
        &|out| {
            for m in &mods {
                for e in duplicate_imports(m) {
                    out.recoverable(e);
                }
            }
        },
        &|out| {
            for l in &lowered {
                for e in &l.local_errors {
                    out.fatal(e.clone());
                }
                for e in &l.unused {
                    out.recoverable(e.clone());
                }
            }
        },
        &|out| conflicts(&rules, out),
        &|out| {
            for l in &lowered {
                for r in &l.rules {
                    r.visit_calls(&mut |c, nested| undefined(c, nested, &l.file, out));
                }
            }
        },
        &|out| {
            for l in &lowered {
                for r in &l.rules {
                    head_safety(r, &l.file, &l.vars, out);
                }
            }
        },
        &|out| {
            for l in &lowered {
                for r in &l.rules {
                    body_safety(r, &l.file, &l.vars, out);
                }
            }
        },
        &|out| recursion(&rules, &lowered, out),
        &|out| {
            for l in &lowered {
                for r in &l.rules {
                    r.visit_calls(&mut |c, _| {
                        if DEPRECATED.iter().any(|(n, _)| *n == c.name) {
                            out.recoverable(err_at(
                                &l.file,
                                &c.span,
                                TYPE,
                                format!("deprecated built-in function calls in expression: {}", c.name),
                            ));
                        }
                    });
                }
            }
        },
    ];
    for stage in stages {
        stage(&mut out);
        if out.stopped() {
            break;
        }
    }
    out.finish()
}

/// Errors found so far, and whether the compilation has ended.
#[derive(Default)]
struct Report {
    errors: Vec<CheckError>,
    fatal: bool,
}

impl Report {
    fn recoverable(&mut self, e: CheckError) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }

    fn fatal(&mut self, e: CheckError) {
        self.fatal = true;
        self.recoverable(e);
    }

    fn stopped(&self) -> bool {
        self.fatal || self.errors.len() >= MAX_ERRORS
    }

    fn finish(mut self) -> Vec<CheckError> {
        self.errors
            .sort_by(|a, b| (&a.file, a.line, a.col, &a.message).cmp(&(&b.file, b.line, b.col, &b.message)));
        self.errors.dedup();
        self.errors
    }
}

fn err_at(file: &str, span: &Span, code: &'static str, message: String) -> CheckError {
    CheckError {
        file: file.to_string(),
        line: span.line,
        col: column(span),
        code,
        message,
    }
}

/// OPA's column: characters from the start of the line, a tab counting one
/// (regorus's `Span::col` counts a tab as four).
fn column(span: &Span) -> u32 {
    let text = span.source.contents();
    let start = usize::try_from(span.start).unwrap_or(usize::MAX).min(text.len());
    let before = text.get(..start).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i.saturating_add(1));
    let chars = before.get(line_start..).map_or(0, |s| s.chars().count());
    u32::try_from(chars).unwrap_or(u32::MAX).saturating_add(1)
}

// ---------------------------------------------------------------------------
// Modules, imports and the rule table.

struct ModInfo<'a> {
    module: &'a Module,
    file: String,
    /// `data.p.q`.
    pkg: String,
    imports: Vec<ImportInfo>,
}

#[derive(Clone)]
struct ImportInfo {
    /// The name the import binds.
    alias: String,
    /// What it stands for, e.g. `data.lib`.
    path: String,
    /// As OPA prints it: `import data.lib as l`.
    text: String,
    span: Span,
}

impl<'a> ModInfo<'a> {
    fn new(module: &'a Module) -> Self {
        let file = module.package.span.source.get_path().clone();
        let mut pkg = String::from("data");
        for s in ref_segments(&module.package.refr) {
            pkg.push('.');
            pkg.push_str(&s);
        }
        let mut imports = Vec::new();
        for imp in &module.imports {
            let segments = ref_segments(&imp.refr);
            let path = segments.join(".");
            if matches!(segments.first().map(String::as_str), Some("future" | "rego")) {
                continue;
            }
            let alias = match &imp.r#as {
                Some(a) => a.text().to_string(),
                None => segments.last().cloned().unwrap_or_default(),
            };
            let text = match &imp.r#as {
                Some(a) => format!("import {path} as {}", a.text()),
                None => format!("import {path}"),
            };
            imports.push(ImportInfo {
                alias,
                path,
                text,
                span: imp.span.clone(),
            });
        }
        ModInfo {
            module,
            file,
            pkg,
            imports,
        }
    }
}

/// The segments of a ground reference (`a.b["c"]` is `[a, b, c]`).
fn ref_segments(e: &Expr) -> Vec<String> {
    match e {
        Expr::Var { span, .. } => vec![span.text().to_string()],
        Expr::RefDot { refr, field, .. } => {
            let mut v = ref_segments(refr);
            v.push(field.0.text().to_string());
            v
        }
        Expr::RefBrack { refr, index, .. } => {
            let mut v = ref_segments(refr);
            v.push(match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    value.as_string().map(|s| s.to_string()).unwrap_or_default()
                }
                other => other.span().text().to_string(),
            });
            v
        }
        other => vec![other.span().text().to_string()],
    }
}

/// The ground prefix of a rule head's reference (`a.b[x].c` is `[a, b]`).
fn head_path(e: &Expr) -> Vec<String> {
    match e {
        Expr::Var { span, .. } => vec![span.text().to_string()],
        Expr::RefDot { refr, field, .. } => {
            let mut v = head_path(refr);
            if head_is_ground(refr) {
                v.push(field.0.text().to_string());
            }
            v
        }
        Expr::RefBrack { refr, index, .. } => {
            let mut v = head_path(refr);
            if head_is_ground(refr)
                && let Expr::String { value, .. } | Expr::RawString { value, .. } = index.as_ref()
            {
                v.push(value.as_string().map(|s| s.to_string()).unwrap_or_default());
            }
            v
        }
        _ => Vec::new(),
    }
}

/// Whether a rule head's reference holds no variable.
fn head_is_ground(e: &Expr) -> bool {
    match e {
        Expr::Var { .. } => true,
        Expr::RefDot { refr, .. } => head_is_ground(refr),
        Expr::RefBrack { refr, index, .. } => {
            head_is_ground(refr)
                && matches!(
                    index.as_ref(),
                    Expr::String { .. } | Expr::RawString { .. } | Expr::Number { .. } | Expr::Bool { .. }
                )
        }
        _ => false,
    }
}

fn rule_refr(r: &Rule) -> &Expr {
    match r {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. } | RuleHead::Set { refr, .. } | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    }
}

/// A rule as the rule table sees it.
struct RuleInfo {
    file: String,
    span: Span,
    /// `data.p.a`.
    path: String,
    ground: bool,
    multi: bool,
    arity: usize,
    is_func: bool,
    default: bool,
    /// Location of the package of its module.
    package_span: Span,
}

struct RuleTable {
    /// In module order (modules sorted by name).
    rules: Vec<RuleInfo>,
}

impl RuleTable {
    fn new(mods: &[ModInfo<'_>]) -> Self {
        let mut rules = Vec::new();
        for m in mods {
            for r in &m.module.policy {
                let refr = rule_refr(r);
                let mut path = m.pkg.clone();
                for s in head_path(refr) {
                    path.push('.');
                    path.push_str(&s);
                }
                let (multi, arity, default) = match r.as_ref() {
                    Rule::Spec { head, .. } => match head {
                        RuleHead::Set { .. } => (true, 0, false),
                        RuleHead::Compr { .. } => (false, 0, false),
                        RuleHead::Func { args, .. } => (false, args.len(), false),
                    },
                    Rule::Default { args, .. } => (false, args.len(), true),
                };
                rules.push(RuleInfo {
                    file: m.file.clone(),
                    span: r.span().clone(),
                    path,
                    ground: head_is_ground(refr),
                    multi,
                    arity,
                    is_func: arity > 0,
                    default,
                    package_span: m.module.package.span.clone(),
                });
            }
        }
        RuleTable { rules }
    }

    /// The arity of the function at `path`, when one is defined there.
    fn function_arity(&self, path: &str) -> Option<usize> {
        self.rules
            .iter()
            .find(|r| r.is_func && r.path == path)
            .map(|r| r.arity)
    }
}

fn duplicate_imports(m: &ModInfo<'_>) -> Vec<CheckError> {
    let mut seen: BTreeMap<&str, &ImportInfo> = BTreeMap::new();
    let mut errors = Vec::new();
    for imp in &m.imports {
        if let Some(first) = seen.get(imp.alias.as_str()) {
            errors.push(err_at(
                &m.file,
                &imp.span,
                COMPILE,
                format!("import must not shadow {}", first.text),
            ));
        } else {
            seen.insert(&imp.alias, imp);
        }
    }
    errors
}

// ---------------------------------------------------------------------------
// The lowered form: terms with variables resolved (locals renamed, globals
// marked), as OPA's compiler has them after it resolves references and
// rewrites local variables.

type Vid = usize;

#[derive(Clone)]
struct VarInfo {
    name: String,
    /// `_`: never reported by name.
    generated: bool,
}

#[derive(Clone)]
enum T {
    V(Vid, Span),
    /// A reference rooted at `input`, `data`, a rule or an import: the
    /// ground path it starts with, e.g. `data.p.a`.
    G(String),
    S,
    Ref(Box<T>, Vec<T>),
    Arr(Vec<T>),
    Set(Vec<T>),
    /// Fields with their key's text (for unification of object patterns).
    Obj(Vec<(String, T, T)>),
    Compr(Box<Closure>),
    Call(Box<Call>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ComprKind {
    Array,
    Set,
    Object,
}

#[derive(Clone)]
struct Closure {
    kind: ComprKind,
    span: Span,
    terms: Vec<T>,
    /// Where each term is.
    term_spans: Vec<Span>,
    body: Vec<Lit>,
}

#[derive(Clone, Copy)]
enum Target {
    /// A built-in or user function of this arity.
    Fixed(usize),
    /// An operator, or `print`: any number of operands.
    Any,
    /// `data.p.f` named no function, or a name no built-in has.
    Undefined,
}

#[derive(Clone)]
struct Call {
    /// As OPA prints it: `count`, `data.lib.f`.
    name: String,
    user: bool,
    target: Target,
    args: Vec<T>,
    span: Span,
}

#[derive(Clone)]
enum LK {
    Eq {
        lhs: T,
        rhs: T,
        assign: bool,
    },
    Call(Call),
    Term(T),
    Every {
        kv: Vec<Vid>,
        domain: T,
        domain_span: Span,
        body: Vec<Lit>,
    },
}

#[derive(Clone)]
struct Lit {
    kind: LK,
    negated: bool,
    withs: Vec<T>,
    span: Span,
}

/// A rule (or one `else` branch) lowered: its head's terms, its arguments
/// and its body.
struct LRule {
    /// Head terms that may hold variables: reference indices, key, value.
    head: Vec<T>,
    args: Vec<T>,
    body: Vec<Lit>,
    /// The rule paths and functions its body and head refer to.
    path: String,
}

impl LRule {
    /// Walks the rule's head terms, arguments and body, closures included.
    fn walk(&self, v: &mut dyn Visit) {
        for t in self.head.iter().chain(&self.args) {
            walk_term(t, v);
        }
        walk_body(&self.body, v);
    }

    /// Every call, with whether it is nested in a term (its result used as a
    /// value) rather than a literal of its own.
    fn visit_calls(&self, f: &mut dyn FnMut(&Call, bool)) {
        struct Calls<'f>(&'f mut dyn FnMut(&Call, bool));
        impl Visit for Calls<'_> {
            fn call(&mut self, c: &Call, nested: bool) {
                (self.0)(c, nested);
            }
        }
        self.walk(&mut Calls(f));
    }
}

impl T {
    /// The terms directly inside this one: a reference's head and indices,
    /// items, object keys and values, a call's arguments. A comprehension has
    /// none here: its terms and body are its closure's.
    fn each_child<'t>(&'t self, f: &mut dyn FnMut(&'t T)) {
        match self {
            T::V(..) | T::G(_) | T::S | T::Compr(_) => {}
            T::Ref(h, ix) => {
                f(h);
                ix.iter().for_each(&mut *f);
            }
            T::Arr(v) | T::Set(v) => v.iter().for_each(&mut *f),
            T::Obj(v) => v.iter().for_each(|(_, k, x)| {
                f(k);
                f(x);
            }),
            T::Call(c) => c.args.iter().for_each(&mut *f),
        }
    }
}

/// What a walk over lowered terms and literals ([`walk_body`]) sees.
trait Visit {
    /// Each term, closures' included.
    fn term(&mut self, _t: &T) {}
    /// Each call, with whether it is nested in a term.
    fn call(&mut self, _c: &Call, _nested: bool) {}
}

fn walk_body(body: &[Lit], v: &mut dyn Visit) {
    for l in body {
        match &l.kind {
            LK::Eq { lhs, rhs, .. } => {
                walk_term(lhs, v);
                walk_term(rhs, v);
            }
            LK::Call(c) => {
                v.call(c, false);
                c.args.iter().for_each(|a| walk_term(a, v));
            }
            LK::Term(t) => walk_term(t, v),
            LK::Every { domain, body, .. } => {
                walk_term(domain, v);
                walk_body(body, v);
            }
        }
        l.withs.iter().for_each(|w| walk_term(w, v));
    }
}

fn walk_term(t: &T, v: &mut dyn Visit) {
    v.term(t);
    match t {
        T::Compr(c) => {
            c.terms.iter().for_each(|x| walk_term(x, v));
            walk_body(&c.body, v);
        }
        T::Call(c) => v.call(c, true),
        _ => {}
    }
    t.each_child(&mut |x| walk_term(x, v));
}

/// A module lowered.
struct Lowered {
    file: String,
    vars: Vec<VarInfo>,
    rules: Vec<LRule>,
    unused_imports: Vec<CheckError>,
    keyword_errors: Vec<CheckError>,
    /// `var x assigned above` and its kind: end the compilation.
    local_errors: Vec<CheckError>,
    /// `declared var x unused` and its kind: recoverable.
    unused: Vec<CheckError>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Occ {
    Seen,
    Assigned,
    Declared,
    Arg,
}

#[derive(Clone)]
struct Entry {
    vid: Vid,
    occ: Occ,
    count: usize,
}

/// One scope of OPA's `localDeclaredVars`, with the names declared anywhere
/// in its body (OPA resolves references after collecting them, so a name
/// declared later in a body is a variable, not a rule, from its start).
#[derive(Default, Clone)]
struct Scope {
    entries: BTreeMap<String, Entry>,
    body_declared: BTreeSet<String>,
}

struct Lower<'a> {
    m: &'a ModInfo<'a>,
    /// Rule names of the package (first segments).
    globals: &'a BTreeSet<String>,
    table: &'a RuleTable,
    strict: bool,
    vars: Vec<VarInfo>,
    /// Undeclared variables keep their name rule-wide, as in OPA.
    undeclared: BTreeMap<String, Vid>,
    stack: Vec<Scope>,
    used_imports: BTreeSet<String>,
    rules: Vec<LRule>,
    keyword_errors: Vec<CheckError>,
    local_errors: Vec<CheckError>,
    unused: Vec<CheckError>,
    /// Local errors and unused variables found in the branch being
    /// lowered: after either, OPA checks no more unused variables in it.
    branch_errors: usize,
    branch_unused: usize,
}

const RESERVED: [&str; 2] = ["input", "data"];

impl<'a> Lower<'a> {
    fn new(m: &'a ModInfo<'a>, globals: &'a BTreeSet<String>, table: &'a RuleTable, strict: bool) -> Self {
        Lower {
            m,
            globals,
            table,
            strict,
            vars: Vec::new(),
            undeclared: BTreeMap::new(),
            stack: Vec::new(),
            used_imports: BTreeSet::new(),
            rules: Vec::new(),
            keyword_errors: Vec::new(),
            local_errors: Vec::new(),
            unused: Vec::new(),
            branch_errors: 0,
            branch_unused: 0,
        }
    }

    fn finish(self) -> Lowered {
        let unused_imports = self
            .m
            .imports
            .iter()
            .filter(|i| !self.used_imports.contains(&i.alias))
            .map(|i| err_at(&self.m.file, &i.span, COMPILE, format!("{} unused", i.text)))
            .collect();
        Lowered {
            file: self.m.file.clone(),
            vars: self.vars,
            rules: self.rules,
            unused_imports,
            keyword_errors: self.keyword_errors,
            local_errors: self.local_errors,
            unused: self.unused,
        }
    }

    fn err(&self, span: &Span, code: &'static str, message: String) -> CheckError {
        err_at(&self.m.file, span, code, message)
    }

    fn new_var(&mut self, name: &str, generated: bool) -> Vid {
        self.vars.push(VarInfo {
            name: name.to_string(),
            generated,
        });
        self.vars.len().saturating_sub(1)
    }

    fn local_error(&mut self, span: &Span, message: String) {
        let e = self.err(span, COMPILE, message);
        self.local_errors.push(e);
        self.branch_errors = self.branch_errors.saturating_add(1);
    }

    // -- scopes ---------------------------------------------------------

    fn push(&mut self, query: Option<&Query>) {
        let mut scope = Scope::default();
        if let Some(q) = query {
            scope.body_declared = declared_names(q);
        }
        self.stack.push(scope);
    }

    fn pop(&mut self) -> Scope {
        self.stack.pop().unwrap_or_default()
    }

    fn lookup(&mut self, name: &str) -> Option<Vid> {
        for scope in self.stack.iter_mut().rev() {
            if let Some(e) = scope.entries.get_mut(name) {
                e.count = e.count.saturating_add(1);
                return Some(e.vid);
            }
        }
        None
    }

    /// OPA's `rewriteDeclaredVar`: declares `name` in the current scope.
    fn declare(&mut self, name: &str, occ: Occ, span: &Span) -> Option<Vid> {
        let current = self.stack.last().and_then(|s| s.entries.get(name)).map(|e| e.occ);
        let message = match current {
            Some(Occ::Seen) => Some(format!("var {name} referenced above")),
            Some(Occ::Assigned) => Some(format!("var {name} assigned above")),
            Some(Occ::Declared) => Some(format!("var {name} declared above")),
            Some(Occ::Arg) => Some(format!("arg {name} redeclared")),
            None => None,
        };
        if let Some(message) = message {
            self.local_error(span, message);
            return None;
        }
        let vid = self.new_var(name, false);
        if let Some(scope) = self.stack.last_mut() {
            scope
                .entries
                .insert(name.to_string(), Entry { vid, occ, count: 1 });
        }
        Some(vid)
    }

    /// A variable's name met in a term: a local, or a global reference.
    fn resolve(&mut self, name: &str, span: &Span) -> T {
        if name == "_" {
            return T::V(self.new_var("_", true), span.clone());
        }
        if let Some(vid) = self.lookup(name) {
            return T::V(vid, span.clone());
        }
        let declared_later = self.stack.iter().any(|s| s.body_declared.contains(name));
        if !declared_later {
            if RESERVED.contains(&name) {
                return T::G(name.to_string());
            }
            if let Some(imp) = self.m.imports.iter().find(|i| i.alias == name) {
                self.used_imports.insert(imp.alias.clone());
                return T::G(imp.path.clone());
            }
            if self.globals.contains(name) {
                return T::G(format!("{}.{name}", self.m.pkg));
            }
        }
        let vid = match self.undeclared.get(name) {
            Some(v) => *v,
            None => {
                let v = self.new_var(name, false);
                self.undeclared.insert(name.to_string(), v);
                v
            }
        };
        if let Some(scope) = self.stack.last_mut() {
            scope.entries.insert(
                name.to_string(),
                Entry {
                    vid,
                    occ: Occ::Seen,
                    count: 1,
                },
            );
        }
        T::V(vid, span.clone())
    }

    // -- rules ------------------------------------------------------------

    fn rule(&mut self, rule: &Ref<Rule>) {
        let refr = rule_refr(rule);
        let path_segments = head_path(refr);
        let mut path = self.m.pkg.clone();
        for s in &path_segments {
            path.push('.');
            path.push_str(s);
        }
        if let Some(first) = path_segments.first()
            && RESERVED.contains(&first.as_str())
        {
            let e = self.err(
                rule.span(),
                COMPILE,
                format!("rules must not shadow {first} (use a different rule name)"),
            );
            self.keyword_errors.push(e);
        }
        self.undeclared.clear();
        match rule.as_ref() {
            Rule::Default { args, value, .. } => {
                self.stack.clear();
                self.push(None);
                let args = self.args(args, rule.span());
                let value = self.term(value);
                self.stack.clear();
                self.rules.push(LRule {
                    head: vec![value],
                    args,
                    body: Vec::new(),
                    path,
                });
            }
            Rule::Spec { head, bodies, .. } => {
                let (args_exprs, key, value): HeadParts<'_> = match head {
                    RuleHead::Compr { assign, .. } => (&[], None, assign.as_ref().map(|a| &a.value)),
                    RuleHead::Set { key, .. } => (&[], key.as_ref(), None),
                    RuleHead::Func { args, assign, .. } => (args, None, assign.as_ref().map(|a| &a.value)),
                };
                // The arguments' scope, copied into each branch.
                self.stack.clear();
                self.push(None);
                let args = self.args(args_exprs, rule.span());
                let arg_scope = self.pop();
                let arg_names: Vec<String> = arg_scope
                    .entries
                    .iter()
                    .filter(|(_, e)| e.occ == Occ::Arg)
                    .map(|(n, _)| n.clone())
                    .collect();
                let mut used_args: BTreeSet<String> = BTreeSet::new();
                let ref_vars = head_ref_var_exprs(refr);
                let bodies_or_empty: Vec<Option<&RuleBody>> = if bodies.is_empty() {
                    vec![None]
                } else {
                    bodies.iter().map(Some).collect()
                };
                for body in bodies_or_empty {
                    let branch_value = match body {
                        Some(b) if b.is_else => b.assign.as_ref().map(|a| &a.value),
                        _ => value,
                    };
                    // Names used by the head (OPA's `used`): they count as uses.
                    let mut used: BTreeSet<String> = BTreeSet::new();
                    for e in ref_vars.iter().copied().chain(key).chain(branch_value) {
                        names_in(e, &mut used);
                    }
                    for a in &arg_names {
                        if branch_value.is_some_and(|v| {
                            let mut n = BTreeSet::new();
                            names_in(v, &mut n);
                            n.contains(a)
                        }) {
                            used_args.insert(a.clone());
                        }
                    }
                    let mut scope = arg_scope.clone();
                    if let Some(b) = body {
                        scope.body_declared = declared_names(&b.query);
                    }
                    self.stack.clear();
                    self.stack.push(scope);
                    self.branch_errors = 0;
                    self.branch_unused = 0;
                    let lits = match body {
                        Some(b) => self.body(&b.query.stmts, &used),
                        None => Vec::new(),
                    };
                    for a in &arg_names {
                        if self
                            .stack
                            .first()
                            .and_then(|s| s.entries.get(a))
                            .is_some_and(|e| e.count > 1)
                        {
                            used_args.insert(a.clone());
                        }
                    }
                    // The head, resolved against the body's variables.
                    let mut head_terms = Vec::new();
                    for e in ref_vars.iter().copied().chain(key).chain(branch_value) {
                        head_terms.push(self.term_no_count(e));
                    }
                    self.stack.clear();
                    self.rules.push(LRule {
                        head: head_terms,
                        args: args.clone(),
                        body: lits,
                        path: path.clone(),
                    });
                }
                if self.strict {
                    for a in &arg_names {
                        if !used_args.contains(a) {
                            let e = self.err(
                                head_span(head),
                                COMPILE,
                                format!("unused argument {a}. (hint: use _ (wildcard variable) instead)"),
                            );
                            self.unused.push(e);
                        }
                    }
                }
            }
        }
    }

    /// A function's arguments: their variables are declared as arguments.
    /// `rule` locates `args must not shadow input`, as OPA does.
    fn args(&mut self, args: &[Ref<Expr>], rule: &Span) -> Vec<T> {
        let mut out = Vec::new();
        for a in args {
            if let Expr::Var { span, .. } = a.as_ref()
                && RESERVED.contains(&span.text())
            {
                let e = self.err(
                    rule,
                    COMPILE,
                    format!(
                        "args must not shadow {} (use a different variable name)",
                        span.text()
                    ),
                );
                self.keyword_errors.push(e);
                out.push(T::G(span.text().to_string()));
                continue;
            }
            out.push(self.arg_term(a));
        }
        out
    }

    fn arg_term(&mut self, e: &Expr) -> T {
        match e {
            Expr::Var { span, .. } => {
                let name = span.text();
                if name == "_" {
                    return T::V(self.new_var("_", true), span.clone());
                }
                if let Some(entry) = self.stack.last().and_then(|s| s.entries.get(name)) {
                    return T::V(entry.vid, span.clone());
                }
                let vid = self.new_var(name, false);
                if let Some(scope) = self.stack.last_mut() {
                    scope.entries.insert(
                        name.to_string(),
                        Entry {
                            vid,
                            occ: Occ::Arg,
                            count: 1,
                        },
                    );
                }
                T::V(vid, span.clone())
            }
            Expr::Array { items, .. } => T::Arr(items.iter().map(|i| self.arg_term(i)).collect()),
            Expr::Object { fields, .. } => T::Obj(
                fields
                    .iter()
                    .map(|(_, k, v)| (k.span().text().to_string(), T::S, self.arg_term(v)))
                    .collect(),
            ),
            other => self.term(other),
        }
    }

    /// OPA's `rewriteDeclaredVarsInBody`, then its two unused checks.
    fn body(&mut self, stmts: &[LiteralStmt], used: &BTreeSet<String>) -> Vec<Lit> {
        let mut out = Vec::new();
        let mut some_decls: Vec<(String, Span)> = Vec::new();
        let first_span = stmts.first().map(|s| s.span.clone());
        for stmt in stmts {
            if let Some(lit) = self.literal(stmt, &mut some_decls) {
                out.push(lit);
            }
        }
        if self.branch_errors > 0 || self.branch_unused > 0 {
            return out;
        }
        let scope = self.stack.last().cloned().unwrap_or_default();
        let mut unused = Vec::new();
        if self.strict {
            let mut assigned: Vec<(&String, &Entry)> = scope
                .entries
                .iter()
                .filter(|(n, e)| e.occ == Occ::Assigned && e.count <= 1 && !used.contains(*n))
                .collect();
            assigned.sort_by_key(|(_, e)| e.vid);
            for (name, e) in assigned {
                let at = out
                    .iter()
                    .find(|l| lit_has_var(l, e.vid))
                    .map(|l| l.span.clone())
                    .or_else(|| first_span.clone());
                if let Some(at) = at {
                    unused.push(self.err(&at, COMPILE, format!("assigned var {name} unused")));
                }
            }
        }
        if unused.is_empty() {
            let mut body_vids = BTreeSet::new();
            for l in &out {
                lit_vars(l, &P::ALL, &mut body_vids);
            }
            let mut declared: Vec<(&String, &Entry)> = scope
                .entries
                .iter()
                .filter(|(n, e)| e.occ == Occ::Declared && !body_vids.contains(&e.vid) && !used.contains(*n))
                .collect();
            declared.sort_by_key(|(_, e)| e.vid);
            for (name, _) in declared {
                let at = some_decls
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s.clone())
                    .or_else(|| first_span.clone());
                if let Some(at) = at {
                    unused.push(self.err(&at, COMPILE, format!("declared var {name} unused")));
                }
            }
        }
        self.branch_unused = self.branch_unused.saturating_add(unused.len());
        self.unused.extend(unused);
        out
    }

    fn literal(&mut self, stmt: &LiteralStmt, some_decls: &mut Vec<(String, Span)>) -> Option<Lit> {
        let span = stmt.span.clone();
        let lit = |kind: LK, negated: bool, withs: Vec<T>| Lit {
            kind,
            negated,
            withs,
            span: span.clone(),
        };
        match &stmt.literal {
            Literal::SomeVars { vars, span: at } => {
                for v in vars {
                    if v.text() != "_" {
                        self.declare(v.text(), Occ::Declared, at);
                        some_decls.push((v.text().to_string(), stmt.span.clone()));
                    }
                }
                None
            }
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                let mut bound = BTreeSet::new();
                for e in key.iter().chain(core::iter::once(value)) {
                    pattern_names(e, &mut bound);
                }
                let mut in_domain = BTreeSet::new();
                names_walk(collection, false, &mut in_domain);
                let before: Vec<&String> = bound.intersection(&in_domain).collect();
                if !before.is_empty() {
                    for v in before {
                        self.local_error(&stmt.span, format!("var {v} assigned before"));
                    }
                    return None;
                }
                let coll = self.term(collection);
                for name in &bound {
                    self.declare(name, Occ::Declared, &stmt.span)?;
                }
                let key_t = match key {
                    Some(k) => self.term(k),
                    None => T::V(self.new_var("_", true), stmt.span.clone()),
                };
                let value_t = self.term(value);
                let withs = self.withs(stmt);
                Some(lit(
                    LK::Eq {
                        lhs: value_t,
                        rhs: T::Ref(Box::new(coll), vec![key_t]),
                        assign: false,
                    },
                    false,
                    withs,
                ))
            }
            Literal::Every {
                key,
                value,
                domain,
                query,
                ..
            } => {
                let domain_span = domain.span().clone();
                let domain = self.term(domain);
                self.push(Some(query));
                let mut kv = Vec::new();
                for s in key.iter().chain(core::iter::once(value)) {
                    if s.text() == "_" {
                        kv.push(self.new_var("_", true));
                    } else if let Some(v) = self.declare(s.text(), Occ::Declared, &stmt.span) {
                        kv.push(v);
                    }
                }
                let body = self.body(&query.stmts, &BTreeSet::new());
                self.pop();
                let withs = self.withs(stmt);
                Some(lit(
                    LK::Every {
                        kv,
                        domain,
                        domain_span,
                        body,
                    },
                    false,
                    withs,
                ))
            }
            Literal::Expr { expr, .. } => {
                if let Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    rhs,
                    ..
                } = expr.as_ref()
                {
                    self.shadow_check(lhs, &stmt.span);
                    let rhs = self.term(rhs);
                    let withs = self.withs(stmt);
                    let lhs = self.assign_lhs(lhs)?;
                    return Some(lit(
                        LK::Eq {
                            lhs,
                            rhs,
                            assign: true,
                        },
                        false,
                        withs,
                    ));
                }
                let kind = at_literal(self.expr_kind(expr), &stmt.span);
                let withs = self.withs(stmt);
                Some(lit(kind, false, withs))
            }
            Literal::NotExpr { expr, .. } => {
                if let Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    ..
                } = expr.as_ref()
                {
                    self.shadow_check(lhs, &stmt.span);
                    self.local_error(&stmt.span, "cannot assign vars inside negated expression".into());
                    return None;
                }
                let kind = at_literal(self.expr_kind(expr), &stmt.span);
                let withs = self.withs(stmt);
                Some(lit(kind, true, withs))
            }
        }
    }

    /// `variables must not shadow input`: an assignment to a root document.
    fn shadow_check(&mut self, lhs: &Expr, span: &Span) {
        if let Expr::Var { span: v, .. } = lhs
            && RESERVED.contains(&v.text())
        {
            let e = self.err(
                span,
                COMPILE,
                format!(
                    "variables must not shadow {} (use a different variable name)",
                    v.text()
                ),
            );
            self.keyword_errors.push(e);
        }
    }

    fn expr_kind(&mut self, expr: &Expr) -> LK {
        match expr {
            Expr::AssignExpr {
                op: AssignOp::Eq,
                lhs,
                rhs,
                ..
            } => {
                let lhs = self.term(lhs);
                let rhs = self.term(rhs);
                LK::Eq {
                    lhs,
                    rhs,
                    assign: false,
                }
            }
            Expr::Call { .. } => match self.term(expr) {
                T::Call(c) => LK::Call(*c),
                other => LK::Term(other),
            },
            other => LK::Term(self.term(other)),
        }
    }

    fn withs(&mut self, stmt: &LiteralStmt) -> Vec<T> {
        let mut out = Vec::new();
        // The target (`input.x`, `data.p.q`, a function) binds nothing.
        for w in &stmt.with_mods {
            out.push(self.term(&w.r#as));
        }
        out
    }

    /// The left side of `:=`: its variables are declared.
    fn assign_lhs(&mut self, e: &Expr) -> Option<T> {
        match e {
            Expr::Var { span, .. } => {
                let name = span.text();
                if name == "_" {
                    return Some(T::V(self.new_var("_", true), span.clone()));
                }
                let vid = self.declare(name, Occ::Assigned, span)?;
                Some(T::V(vid, span.clone()))
            }
            Expr::Array { items, .. } => {
                let mut out = Vec::new();
                for i in items {
                    out.push(self.assign_lhs(i)?);
                }
                Some(T::Arr(out))
            }
            Expr::Object { fields, .. } => {
                let mut out = Vec::new();
                for (_, k, v) in fields {
                    let key = self.term(k);
                    out.push((k.span().text().to_string(), key, self.assign_lhs(v)?));
                }
                Some(T::Obj(out))
            }
            other => {
                let what = match other {
                    Expr::RefDot { .. } | Expr::RefBrack { .. } => "ref",
                    Expr::String { .. } | Expr::RawString { .. } => "string",
                    Expr::Number { .. } => "number",
                    Expr::Bool { .. } => "boolean",
                    Expr::Null { .. } => "null",
                    Expr::Call { .. } => "call",
                    Expr::Set { .. } => "set",
                    _ => "expression",
                };
                self.local_error(other.span(), format!("cannot assign to {what}"));
                None
            }
        }
    }

    /// A term of the head, resolved without counting uses.
    fn term_no_count(&mut self, e: &Expr) -> T {
        let saved = self.stack.clone();
        let t = self.term(e);
        self.stack = saved;
        t
    }

    fn term(&mut self, e: &Expr) -> T {
        match e {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => T::S,
            Expr::Var { span, .. } => self.resolve(span.text(), span),
            Expr::Array { items, .. } => T::Arr(items.iter().map(|i| self.term(i)).collect()),
            Expr::Set { items, .. } => T::Set(items.iter().map(|i| self.term(i)).collect()),
            Expr::Object { fields, .. } => T::Obj(
                fields
                    .iter()
                    .map(|(_, k, v)| (k.span().text().to_string(), self.term(k), self.term(v)))
                    .collect(),
            ),
            Expr::ArrayCompr {
                span, term, query, ..
            } => self.closure(ComprKind::Array, span, &[term], query),
            Expr::SetCompr {
                span, term, query, ..
            } => self.closure(ComprKind::Set, span, &[term], query),
            Expr::ObjectCompr {
                span,
                key,
                value,
                query,
                ..
            } => self.closure(ComprKind::Object, span, &[key, value], query),
            Expr::Call { fcn, params, .. } => {
                let (name, user, target) = self.callee(fcn);
                let args = params.iter().map(|p| self.term(p)).collect();
                T::Call(Box::new(Call {
                    name,
                    user,
                    target,
                    args,
                    span: fcn.span().clone(),
                }))
            }
            Expr::UnaryExpr { span, expr, .. } => self.op(span, &[expr]),
            Expr::BinExpr { span, lhs, rhs, .. }
            | Expr::BoolExpr { span, lhs, rhs, .. }
            | Expr::ArithExpr { span, lhs, rhs, .. }
            | Expr::AssignExpr { span, lhs, rhs, .. } => self.op(span, &[lhs, rhs]),
            Expr::Membership {
                span,
                key,
                value,
                collection,
                ..
            } => {
                let mut operands: Vec<&Ref<Expr>> = key.iter().collect();
                operands.push(value);
                operands.push(collection);
                self.op(span, &operands)
            }
            Expr::RefDot { .. } | Expr::RefBrack { .. } => self.reference(e),
        }
    }

    /// An operator: a built-in call in OPA (`plus`, `equal`, `internal.member_2`).
    fn op(&mut self, span: &Span, operands: &[&Ref<Expr>]) -> T {
        let args: Vec<T> = operands.iter().map(|o| self.term(o)).collect();
        T::Call(Box::new(Call {
            name: String::new(),
            user: false,
            target: Target::Fixed(args.len()),
            args,
            span: span.clone(),
        }))
    }

    fn closure(&mut self, kind: ComprKind, span: &Span, terms: &[&Ref<Expr>], query: &Query) -> T {
        let mut used = BTreeSet::new();
        for t in terms {
            names_in(t, &mut used);
        }
        self.push(Some(query));
        let body = self.body(&query.stmts, &used);
        let term_spans = terms.iter().map(|t| t.span().clone()).collect();
        let terms = terms.iter().map(|t| self.term(t)).collect();
        self.pop();
        T::Compr(Box::new(Closure {
            kind,
            span: span.clone(),
            terms,
            term_spans,
            body,
        }))
    }

    /// A reference: its root resolved, the ground path of a global kept.
    fn reference(&mut self, e: &Expr) -> T {
        let mut chain: Vec<&Expr> = Vec::new();
        let mut root = e;
        while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = root {
            chain.push(root);
            root = refr;
        }
        chain.reverse();
        let head = self.term(root);
        let mut indices = Vec::new();
        let mut path = match &head {
            T::G(p) => Some(p.clone()),
            _ => None,
        };
        for link in chain {
            match link {
                Expr::RefDot { field, .. } => match &mut path {
                    Some(p) if indices.is_empty() => {
                        p.push('.');
                        p.push_str(field.0.text());
                    }
                    _ => indices.push(T::S),
                },
                Expr::RefBrack { index, .. } => {
                    let is_string = matches!(index.as_ref(), Expr::String { .. } | Expr::RawString { .. });
                    match (&mut path, is_string) {
                        (Some(p), true) if indices.is_empty() => {
                            if let Expr::String { value, .. } | Expr::RawString { value, .. } = index.as_ref()
                            {
                                p.push('.');
                                p.push_str(&value.as_string().map(|s| s.to_string()).unwrap_or_default());
                            }
                        }
                        _ => {
                            let t = self.term(index);
                            indices.push(t);
                        }
                    }
                }
                _ => {}
            }
        }
        let head = match path {
            Some(p) => T::G(p),
            None => head,
        };
        if indices.is_empty() {
            head
        } else {
            T::Ref(Box::new(head), indices)
        }
    }

    /// The function a call names, as OPA resolves it.
    fn callee(&mut self, fcn: &Expr) -> (String, bool, Target) {
        let segments = ref_segments(fcn);
        let text = segments.join(".");
        let first = segments.first().cloned().unwrap_or_default();
        let rest: Vec<String> = segments.iter().skip(1).cloned().collect();
        let user_path = if first == "data" {
            Some(text.clone())
        } else if let Some(imp) = self.m.imports.iter().find(|i| i.alias == first) {
            self.used_imports.insert(imp.alias.clone());
            let mut p = imp.path.clone();
            for s in &rest {
                p.push('.');
                p.push_str(s);
            }
            Some(p)
        } else if self.globals.contains(&first) {
            Some(format!("{}.{text}", self.m.pkg))
        } else {
            None
        };
        if let Some(path) = user_path {
            let target = match self.table.function_arity(&path) {
                Some(a) => Target::Fixed(a),
                None => Target::Undefined,
            };
            return (path, true, target);
        }
        if text == "print" {
            return (text, false, Target::Any);
        }
        if let Some((_, arity)) = BUILTINS.get(text.as_str()) {
            return (text, false, Target::Fixed(usize::from(*arity)));
        }
        if let Some((_, arity)) = DEPRECATED.iter().find(|(n, _)| *n == text) {
            return (text, false, Target::Fixed(*arity));
        }
        (text, false, Target::Undefined)
    }
}

/// A call that is a literal of its own is located where the literal is
/// (after `not`, say), as OPA locates it.
fn at_literal(kind: LK, span: &Span) -> LK {
    match kind {
        LK::Call(mut c) => {
            c.span = span.clone();
            LK::Call(c)
        }
        LK::Term(T::Call(mut c)) => {
            c.span = span.clone();
            LK::Term(T::Call(c))
        }
        other => other,
    }
}

/// A rule head's arguments, key and value.
type HeadParts<'e> = (&'e [Ref<Expr>], Option<&'e Ref<Expr>>, Option<&'e Ref<Expr>>);

fn head_span(head: &RuleHead) -> &Span {
    match head {
        RuleHead::Compr { span, .. } | RuleHead::Set { span, .. } | RuleHead::Func { span, .. } => span,
    }
}

/// The variable-holding index expressions of a rule head's reference.
fn head_ref_var_exprs(e: &Expr) -> Vec<&Ref<Expr>> {
    let mut out = Vec::new();
    let mut cur = e;
    loop {
        match cur {
            Expr::RefDot { refr, .. } => cur = refr,
            Expr::RefBrack { refr, index, .. } => {
                if !matches!(
                    index.as_ref(),
                    Expr::String { .. } | Expr::RawString { .. } | Expr::Number { .. } | Expr::Bool { .. }
                ) {
                    out.push(index);
                }
                cur = refr;
            }
            _ => break,
        }
    }
    out.reverse();
    out
}

/// Names declared by a query's own literals (`:=`, `some`), not its closures'.
fn declared_names(q: &Query) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in &q.stmts {
        match &s.literal {
            Literal::SomeVars { vars, .. } => {
                for v in vars {
                    out.insert(v.text().to_string());
                }
            }
            Literal::SomeIn { key, value, .. } => {
                for e in key.iter().chain(core::iter::once(value)) {
                    pattern_names(e, &mut out);
                }
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => {
                if let Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    ..
                } = expr.as_ref()
                {
                    pattern_names(lhs, &mut out);
                }
            }
            Literal::Every { .. } => {}
        }
    }
    out.remove("_");
    out
}

/// Variable names of a pattern (object keys excluded).
fn pattern_names(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Var { span, .. } if span.text() != "_" => {
            out.insert(span.text().to_string());
        }
        Expr::Array { items, .. } => items.iter().for_each(|i| pattern_names(i, out)),
        Expr::Object { fields, .. } => fields.iter().for_each(|(_, _, v)| pattern_names(v, out)),
        _ => {}
    }
}

/// Every variable-like name in an expression, comprehensions included.
fn names_in(e: &Expr, out: &mut BTreeSet<String>) {
    names_walk(e, true, out);
}

fn names_walk(e: &Expr, closures: bool, out: &mut BTreeSet<String>) {
    let mut walk = |e: &Expr| names_walk(e, closures, out);
    match e {
        Expr::Var { span, .. } => {
            out.insert(span.text().to_string());
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => items.iter().for_each(|i| walk(i)),
        Expr::Object { fields, .. } => fields.iter().for_each(|(_, k, v)| {
            walk(k);
            walk(v);
        }),
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } if closures => {
            walk(term);
            query_names(query, out);
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } if closures => {
            walk(key);
            walk(value);
            query_names(query, out);
        }
        Expr::Call { params, .. } => params.iter().for_each(|p| walk(p)),
        Expr::UnaryExpr { expr, .. } => walk(expr),
        Expr::RefDot { refr, .. } => walk(refr),
        Expr::RefBrack { refr, index, .. } => {
            walk(refr);
            walk(index);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            walk(lhs);
            walk(rhs);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(k) = key {
                walk(k);
            }
            walk(value);
            walk(collection);
        }
        _ => {}
    }
}

/// Every variable-like name in a query's literals.
fn query_names(q: &Query, out: &mut BTreeSet<String>) {
    for s in &q.stmts {
        match &s.literal {
            Literal::SomeVars { vars, .. } => vars.iter().for_each(|v| {
                out.insert(v.text().to_string());
            }),
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                key.iter().for_each(|k| names_in(k, out));
                names_in(value, out);
                names_in(collection, out);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => names_in(expr, out),
            Literal::Every {
                key,
                value,
                domain,
                query,
                ..
            } => {
                key.iter().for_each(|k| {
                    out.insert(k.text().to_string());
                });
                out.insert(value.text().to_string());
                names_in(domain, out);
                query_names(query, out);
            }
        }
        for w in &s.with_mods {
            names_in(&w.r#as, out);
        }
    }
}

// ---------------------------------------------------------------------------
// Variables of lowered terms.

/// OPA's `VarVisitorParams`, as far as the checks use them.
#[derive(Clone, Copy)]
struct P {
    skip_closures: bool,
    skip_ref_head: bool,
    skip_object_keys: bool,
    skip_sets: bool,
}

impl P {
    /// Every variable, closures included.
    const ALL: P = P {
        skip_closures: false,
        skip_ref_head: false,
        skip_object_keys: false,
        skip_sets: false,
    };
    /// OPA's `SafetyCheckVisitorParams`.
    const SAFETY: P = P {
        skip_closures: true,
        skip_ref_head: false,
        skip_object_keys: false,
        skip_sets: false,
    };
    /// Output positions: OPA's unifier and call outputs.
    const OUTPUT: P = P {
        skip_closures: true,
        skip_ref_head: true,
        skip_object_keys: true,
        skip_sets: false,
    };
    /// A call's inputs and outputs.
    const CALL: P = P {
        skip_closures: true,
        skip_ref_head: true,
        skip_object_keys: true,
        skip_sets: true,
    };
}

fn term_vars(t: &T, p: &P, out: &mut BTreeSet<Vid>) {
    match t {
        T::V(v, _) => {
            out.insert(*v);
        }
        T::G(_) | T::S => {}
        T::Ref(h, ix) => {
            // A ref's head variable is skipped for output positions.
            if !p.skip_ref_head || !matches!(h.as_ref(), T::V(..)) {
                term_vars(h, p, out);
            }
            ix.iter().for_each(|i| term_vars(i, p, out));
        }
        T::Arr(v) => v.iter().for_each(|i| term_vars(i, p, out)),
        T::Set(v) => {
            if !p.skip_sets {
                v.iter().for_each(|i| term_vars(i, p, out));
            }
        }
        T::Obj(v) => v.iter().for_each(|(_, k, x)| {
            if !p.skip_object_keys {
                term_vars(k, p, out);
            }
            term_vars(x, p, out);
        }),
        T::Compr(c) => {
            if !p.skip_closures {
                c.terms.iter().for_each(|i| term_vars(i, p, out));
                c.body.iter().for_each(|l| lit_vars(l, p, out));
            }
        }
        T::Call(c) => c.args.iter().for_each(|a| term_vars(a, p, out)),
    }
}

fn lit_vars(l: &Lit, p: &P, out: &mut BTreeSet<Vid>) {
    match &l.kind {
        LK::Eq { lhs, rhs, .. } => {
            term_vars(lhs, p, out);
            term_vars(rhs, p, out);
        }
        LK::Call(c) => c.args.iter().for_each(|a| term_vars(a, p, out)),
        LK::Term(t) => term_vars(t, p, out),
        LK::Every { kv, domain, body, .. } => {
            term_vars(domain, p, out);
            if !p.skip_closures {
                out.extend(kv.iter().copied());
                body.iter().for_each(|b| lit_vars(b, p, out));
            }
        }
    }
    l.withs.iter().for_each(|w| term_vars(w, p, out));
}

fn lit_has_var(l: &Lit, v: Vid) -> bool {
    let mut s = BTreeSet::new();
    lit_vars(l, &P::ALL, &mut s);
    s.contains(&v)
}

/// Variables inside the closures of a literal (OPA's `unsafeVarsInClosures`).
fn closure_vars(l: &Lit, out: &mut BTreeSet<Vid>) {
    fn in_term(t: &T, out: &mut BTreeSet<Vid>) {
        if let T::Compr(_) = t {
            term_vars(t, &P::ALL, out);
        }
        t.each_child(&mut |x| in_term(x, out));
    }
    match &l.kind {
        LK::Eq { lhs, rhs, .. } => {
            in_term(lhs, out);
            in_term(rhs, out);
        }
        LK::Call(c) => c.args.iter().for_each(|a| in_term(a, out)),
        LK::Term(t) => in_term(t, out),
        LK::Every { domain, body, .. } => {
            in_term(domain, out);
            body.iter().for_each(|b| lit_vars(b, &P::ALL, out));
        }
    }
    l.withs.iter().for_each(|w| in_term(w, out));
}

// ---------------------------------------------------------------------------
// Rule conflicts, undefined functions, recursion.

fn conflicts(table: &RuleTable, out: &mut Report) {
    let mut nodes: BTreeMap<&str, Vec<&RuleInfo>> = BTreeMap::new();
    for r in &table.rules {
        nodes.entry(r.path.as_str()).or_default().push(r);
    }
    for (path, rules) in &nodes {
        let Some(first) = rules.first() else { continue };
        let prefix = format!("{path}.");
        let children: Vec<&RuleInfo> = table
            .rules
            .iter()
            .filter(|c| c.path.starts_with(&prefix))
            .collect();
        if rules.iter().any(|r| r.ground) && !children.is_empty() {
            let mut msg = format!("rule {path} conflicts with:");
            let mut seen = BTreeSet::new();
            for c in children {
                if seen.insert(c.path.as_str()) {
                    msg.push_str(&format!("\n  rule {} at {}:{}", c.path, c.file, c.span.line));
                }
            }
            out.fatal(err_at(&first.file, &first.span, TYPE, msg));
            continue;
        }
        let kinds: BTreeSet<(bool, bool)> = rules.iter().map(|r| (r.multi, r.is_func)).collect();
        let arities: BTreeSet<usize> = rules.iter().map(|r| r.arity).collect();
        let complete = rules.iter().any(|r| !r.multi && r.ground && !r.is_func);
        let partial = rules.iter().any(|r| r.multi || !r.ground);
        let multi_set = rules.iter().any(|r| r.multi && r.ground);
        let multi_object = rules.iter().any(|r| r.multi && !r.ground);
        let complete_or_func = complete || rules.iter().any(|r| r.is_func);
        if kinds.len() > 1
            || arities.len() > 1
            || (complete_or_func && partial)
            || (multi_set && multi_object)
        {
            out.fatal(err_at(
                &first.file,
                &first.span,
                TYPE,
                format!("conflicting rules {path} found"),
            ));
            continue;
        }
        let defaults: Vec<&&RuleInfo> = rules.iter().filter(|r| r.default).collect();
        if defaults.len() > 1 {
            let at: Vec<String> = defaults
                .iter()
                .map(|d| format!("{}:{}", d.file, d.span.line))
                .collect();
            if let Some(d) = defaults.first() {
                out.fatal(err_at(
                    &d.file,
                    &d.package_span,
                    TYPE,
                    format!("multiple default rules {path} found at {}", at.join(", ")),
                ));
            }
        }
    }
}

fn undefined(c: &Call, nested: bool, file: &str, out: &mut Report) {
    let operands = c.args.len();
    match c.target {
        Target::Any => {}
        Target::Undefined => out.fatal(err_at(
            file,
            &c.span,
            TYPE,
            format!("undefined function {}", c.name),
        )),
        Target::Fixed(arity) => {
            let ok = if nested {
                operands == arity
            } else {
                operands == arity || operands == arity.saturating_add(1)
            };
            if !ok {
                let message = if c.user {
                    let s = if operands == 1 { "" } else { "s" };
                    format!(
                        "function {} has arity {arity}, got {operands} argument{s}",
                        c.name
                    )
                } else {
                    format!(
                        "{}: arity mismatch (have {operands} arguments, want {arity})",
                        c.name
                    )
                };
                out.fatal(err_at(file, &c.span, TYPE, message));
            }
        }
    }
}

/// The rule paths a lowered rule refers to (references and calls).
fn dependencies(r: &LRule) -> BTreeSet<String> {
    #[derive(Default)]
    struct Deps(BTreeSet<String>);
    impl Visit for Deps {
        fn term(&mut self, t: &T) {
            if let T::G(p) = t {
                self.0.insert(p.clone());
            }
        }
        fn call(&mut self, c: &Call, _nested: bool) {
            if c.user {
                self.0.insert(c.name.clone());
            }
        }
    }
    let mut deps = Deps::default();
    r.walk(&mut deps);
    deps.0
}

fn recursion(table: &RuleTable, lowered: &[Lowered], out: &mut Report) {
    let paths: BTreeSet<&str> = table.rules.iter().map(|r| r.path.as_str()).collect();
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for l in lowered {
        for r in &l.rules {
            let deps = dependencies(r);
            let entry = edges
                .entry(paths.get(r.path.as_str()).copied().unwrap_or(""))
                .or_default();
            for d in &deps {
                let dot = format!("{d}.");
                for p in &paths {
                    if *p == d.as_str() || p.starts_with(&dot) || d.starts_with(&format!("{p}.")) {
                        entry.insert(p);
                    }
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for r in &table.rules {
        let start = r.path.as_str();
        if !reported.insert(start) {
            continue;
        }
        if let Some(cycle) = find_cycle(start, &edges) {
            out.fatal(err_at(
                &r.file,
                &r.span,
                RECURSION,
                format!("rule {start} is recursive: {}", cycle.join(" -> ")),
            ));
        }
    }
}

/// The shortest path of references from `start` back to itself.
fn find_cycle<'a>(start: &'a str, edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    let mut queue: VecDeque<Vec<&str>> = VecDeque::new();
    queue.push_back(vec![start]);
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop_front() {
        let last = *path.last()?;
        for next in edges.get(last).into_iter().flatten() {
            let mut p = path.clone();
            p.push(next);
            if *next == start {
                return Some(p);
            }
            if seen.insert(*next) {
                queue.push_back(p);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Safety.

/// OPA's `checkSafetyRuleHeads`: every variable of the head appears in the
/// body (or the arguments).
fn head_safety(r: &LRule, file: &str, vars: &[VarInfo], out: &mut Report) {
    let mut body_vars = BTreeSet::new();
    for l in &r.body {
        lit_vars(l, &P::SAFETY, &mut body_vars);
    }
    for a in &r.args {
        term_vars(a, &P::ALL, &mut body_vars);
    }
    let mut reported = BTreeSet::new();
    for t in &r.head {
        let mut locs = Vec::new();
        head_var_locs(t, &mut locs);
        for (v, span) in locs {
            let Some(info) = vars.get(v) else { continue };
            if !body_vars.contains(&v) && !info.generated && reported.insert(v) {
                out.fatal(err_at(
                    file,
                    &span,
                    UNSAFE,
                    format!("var {} is unsafe", info.name),
                ));
            }
        }
    }
}

fn head_var_locs(t: &T, out: &mut Vec<(Vid, Span)>) {
    if let T::V(v, s) = t {
        out.push((*v, s.clone()));
    }
    t.each_child(&mut |x| head_var_locs(x, out));
}

/// Unsafe variables, by the literal where they are unsafe: its location,
/// the variables it assigns with `:=` (OPA reports those only when nothing
/// else is unsafe) and the unsafe variables.
type Unsafe = Vec<(Span, BTreeSet<Vid>, BTreeSet<Vid>)>;

/// OPA's `checkSafetyRuleBodies` for one rule, on its body as OPA's
/// compiler has rewritten it by then (nested calls hoisted, comprehensions
/// of the head moved into the body).
fn body_safety(r: &LRule, file: &str, vars: &[VarInfo], out: &mut Report) {
    let mut globals = BTreeSet::new();
    for a in &r.args {
        term_vars(a, &P::ALL, &mut globals);
    }
    let mut hoist = Hoist { next: vars.len() };
    let body = hoist.body(&r.body);
    let mut unsafe_ = Unsafe::new();
    reorder(&globals, &body, &mut unsafe_);
    // The head's comprehensions see every variable of the body.
    let mut head_globals = globals.clone();
    for l in &body {
        lit_vars(l, &P::SAFETY, &mut head_globals);
    }
    for t in &r.head {
        let mut closures = Vec::new();
        top_closures(t, &mut closures);
        for c in closures {
            let span = c.span.clone();
            let mut pre = Vec::new();
            let c = hoist.term(&T::Compr(Box::new(c.clone())), &mut pre);
            let lit = Lit {
                kind: LK::Term(c),
                negated: false,
                withs: Vec::new(),
                span,
            };
            closures_safety(&lit, &mut head_globals, &mut unsafe_);
        }
    }
    if unsafe_.is_empty() {
        return;
    }
    // OPA's `safetyErrorSlice`: each variable once, at its first literal.
    let mut first: BTreeMap<Vid, Span> = BTreeMap::new();
    let mut lhs = BTreeSet::new();
    for (span, assigned, vs) in &unsafe_ {
        lhs.extend(assigned.iter().copied());
        for v in vs {
            if first
                .get(v)
                .is_none_or(|s| (s.line, s.col) > (span.line, span.col))
            {
                first.insert(*v, span.clone());
            }
        }
    }
    let named: Vec<(Vid, Span)> = first
        .into_iter()
        .filter(|(v, _)| vars.get(*v).is_some_and(|i| !i.generated))
        .collect();
    let non_lhs = named.iter().any(|(v, _)| !lhs.contains(v));
    let mut reported = false;
    for (v, span) in &named {
        if non_lhs && lhs.contains(v) {
            continue;
        }
        if let Some(info) = vars.get(*v) {
            out.fatal(err_at(file, span, UNSAFE, format!("var {} is unsafe", info.name)));
            reported = true;
        }
    }
    if !reported {
        let mut spans: Vec<&Span> = unsafe_.iter().map(|(s, _, _)| s).collect();
        spans.sort_by_key(|s| (s.line, s.col));
        if let Some(s) = spans.first() {
            out.fatal(err_at(file, s, UNSAFE, "expression is unsafe".into()));
        }
    }
}

/// The comprehensions of a term, not those inside them.
fn top_closures<'t>(t: &'t T, out: &mut Vec<&'t Closure>) {
    if let T::Compr(c) = t {
        out.push(c);
    }
    t.each_child(&mut |x| top_closures(x, out));
}

/// OPA's `rewriteExprTerms` and its rewrite of `every`: a call nested in a
/// literal becomes a literal of its own before it, binding a generated
/// variable (located where the call is), and an `every` domain is bound
/// first (located where the domain is).
struct Hoist {
    /// Generated variables are numbered after the module's.
    next: Vid,
}

impl Hoist {
    fn fresh(&mut self) -> Vid {
        let v = self.next;
        self.next = self.next.saturating_add(1);
        v
    }

    fn body(&mut self, body: &[Lit]) -> Vec<Lit> {
        let mut out = Vec::new();
        for l in body {
            let mut pre = Vec::new();
            let kind = match &l.kind {
                LK::Eq { lhs, rhs, assign } => LK::Eq {
                    lhs: self.term(lhs, &mut pre),
                    rhs: self.term(rhs, &mut pre),
                    assign: *assign,
                },
                LK::Call(c) => LK::Call(self.args_of(c, &mut pre)),
                LK::Term(T::Call(c)) => LK::Call(self.args_of(c, &mut pre)),
                LK::Term(t) => LK::Term(self.term(t, &mut pre)),
                LK::Every {
                    kv,
                    domain,
                    domain_span,
                    body,
                } => {
                    let d = self.term(domain, &mut pre);
                    let g = self.fresh();
                    pre.push(Lit {
                        kind: LK::Eq {
                            lhs: T::V(g, domain_span.clone()),
                            rhs: d,
                            assign: false,
                        },
                        negated: false,
                        withs: Vec::new(),
                        span: domain_span.clone(),
                    });
                    LK::Every {
                        kv: kv.clone(),
                        domain: T::V(g, domain_span.clone()),
                        domain_span: domain_span.clone(),
                        body: self.body(body),
                    }
                }
            };
            out.extend(pre);
            out.push(Lit {
                kind,
                negated: l.negated,
                withs: l.withs.clone(),
                span: l.span.clone(),
            });
        }
        out
    }

    fn args_of(&mut self, c: &Call, pre: &mut Vec<Lit>) -> Call {
        Call {
            args: c.args.iter().map(|a| self.term(a, pre)).collect(),
            ..c.clone()
        }
    }

    fn term(&mut self, t: &T, pre: &mut Vec<Lit>) -> T {
        match t {
            T::V(..) | T::G(_) | T::S => t.clone(),
            T::Ref(h, ix) => T::Ref(
                Box::new(self.term(h, pre)),
                ix.iter().map(|i| self.term(i, pre)).collect(),
            ),
            T::Arr(v) => T::Arr(v.iter().map(|i| self.term(i, pre)).collect()),
            T::Set(v) => T::Set(v.iter().map(|i| self.term(i, pre)).collect()),
            T::Obj(v) => T::Obj(
                v.iter()
                    .map(|(n, k, x)| (n.clone(), self.term(k, pre), self.term(x, pre)))
                    .collect(),
            ),
            T::Compr(c) => {
                // OPA's `rewriteComprehensionTerms`: a term that needs
                // evaluating (a reference, a call, a comprehension) is bound
                // by a last literal of the body, located where the term is.
                let mut body = c.body.clone();
                let mut terms = Vec::new();
                for (t, span) in c.terms.iter().zip(&c.term_spans) {
                    if requires_eval(t) {
                        let g = self.fresh();
                        body.push(Lit {
                            kind: LK::Eq {
                                lhs: T::V(g, span.clone()),
                                rhs: t.clone(),
                                assign: false,
                            },
                            negated: false,
                            withs: Vec::new(),
                            span: span.clone(),
                        });
                        terms.push(T::V(g, span.clone()));
                    } else {
                        terms.push(t.clone());
                    }
                }
                T::Compr(Box::new(Closure {
                    body: self.body(&body),
                    terms,
                    ..(**c).clone()
                }))
            }
            T::Call(c) => {
                let mut call = self.args_of(c, pre);
                if !matches!(call.target, Target::Fixed(_)) {
                    return T::Call(Box::new(call));
                }
                let g = self.fresh();
                call.args.push(T::V(g, c.span.clone()));
                pre.push(Lit {
                    kind: LK::Call(call),
                    negated: false,
                    withs: Vec::new(),
                    span: c.span.clone(),
                });
                T::V(g, c.span.clone())
            }
        }
    }
}

/// OPA's `requiresEval`: the term holds a reference, a call or a comprehension.
fn requires_eval(t: &T) -> bool {
    match t {
        T::V(..) | T::S => false,
        T::G(_) | T::Ref(..) | T::Compr(_) | T::Call(_) => true,
        T::Arr(v) | T::Set(v) => v.iter().any(requires_eval),
        T::Obj(v) => v.iter().any(|(_, k, x)| requires_eval(k) || requires_eval(x)),
    }
}

/// The variables a literal assigns with `:=`.
fn assigned_vars(l: &Lit) -> BTreeSet<Vid> {
    let mut s = BTreeSet::new();
    if let LK::Eq {
        lhs, assign: true, ..
    } = &l.kind
    {
        term_vars(lhs, &P::ALL, &mut s);
    }
    s
}

/// OPA's `reorderBodyForSafety`: the literals ordered so that every variable
/// is bound before it is used; what cannot be ordered is added to `unsafe_`.
fn reorder(globals: &BTreeSet<Vid>, body: &[Lit], unsafe_: &mut Unsafe) {
    let mut lit_vs: Vec<BTreeSet<Vid>> = Vec::new();
    let mut body_vars = BTreeSet::new();
    for l in body {
        let mut s = BTreeSet::new();
        lit_vars(l, &P::SAFETY, &mut s);
        body_vars.extend(s.iter().copied());
        lit_vs.push(s);
    }
    let mut safe: BTreeSet<Vid> = body_vars.intersection(globals).copied().collect();
    let mut pending: Vec<BTreeSet<Vid>> = lit_vs
        .iter()
        .map(|s| s.difference(&safe).copied().collect())
        .collect();
    let mut done = vec![false; body.len()];
    let mut order: Vec<usize> = Vec::new();
    loop {
        let before = order.len();
        for (i, l) in body.iter().enumerate() {
            if done.get(i).copied().unwrap_or(true) {
                continue;
            }
            let ovs = outputs(l, &safe);
            let mut cv = BTreeSet::new();
            closure_vars(l, &mut cv);
            let cv: BTreeSet<Vid> = cv
                .intersection(&body_vars)
                .filter(|v| !globals.contains(v))
                .copied()
                .collect();
            // OPA subtracts what the ordered literals bind beyond `safe`
            // (`outputVarsForBody`): nothing, as every variable of an ordered
            // literal is in `safe` by then.
            if !cv.is_empty() {
                let uv = cv;
                if !uv.is_empty() {
                    if uv == ovs {
                        continue;
                    }
                    if let Some(p) = pending.get_mut(i) {
                        *p = uv;
                    }
                }
            }
            let Some(p) = pending.get_mut(i) else { continue };
            p.retain(|v| !ovs.contains(v) && !safe.contains(v));
            if p.is_empty() {
                if let Some(d) = done.get_mut(i) {
                    *d = true;
                }
                order.push(i);
                safe.extend(ovs);
            }
        }
        if order.len() == before {
            break;
        }
    }
    for (i, l) in body.iter().enumerate() {
        if !done.get(i).copied().unwrap_or(false)
            && let Some(p) = pending.get(i)
            && !p.is_empty()
        {
            unsafe_.push((l.span.clone(), assigned_vars(l), p.clone()));
        }
    }
    // Closures, with what the literals before them bind.
    let mut inner_globals = globals.clone();
    let mut prev: Option<usize> = None;
    for i in order {
        if let Some(p) = prev.and_then(|p| body.get(p)) {
            lit_vars(p, &P::SAFETY, &mut inner_globals);
        }
        prev = Some(i);
        let Some(l) = body.get(i) else { continue };
        closures_safety(l, &mut inner_globals, unsafe_);
    }
}

fn closures_safety(l: &Lit, globals: &mut BTreeSet<Vid>, unsafe_: &mut Unsafe) {
    fn term(t: &T, l: &Lit, globals: &BTreeSet<Vid>, unsafe_: &mut Unsafe) {
        if let T::Compr(c) = t {
            let mut tv = BTreeSet::new();
            c.terms.iter().for_each(|t| term_vars(t, &P::ALL, &mut tv));
            let mut bv = globals.clone();
            c.body.iter().for_each(|b| lit_vars(b, &P::SAFETY, &mut bv));
            let missing: BTreeSet<Vid> = tv.difference(&bv).copied().collect();
            if !missing.is_empty() {
                unsafe_.push((l.span.clone(), assigned_vars(l), missing));
            }
            reorder(globals, &c.body, unsafe_);
        }
        t.each_child(&mut |x| term(x, l, globals, unsafe_));
    }
    match &l.kind {
        LK::Eq { lhs, rhs, .. } => {
            term(lhs, l, globals, unsafe_);
            term(rhs, l, globals, unsafe_);
        }
        LK::Call(c) => c.args.iter().for_each(|a| term(a, l, globals, unsafe_)),
        LK::Term(t) => term(t, l, globals, unsafe_),
        LK::Every { kv, domain, body, .. } => {
            term(domain, l, globals, unsafe_);
            globals.extend(kv.iter().copied());
            reorder(globals, body, unsafe_);
        }
    }
    for w in &l.withs {
        term(w, l, globals, unsafe_);
    }
}

/// OPA's `outputVarsForExpr`: the variables a literal binds, given `safe`.
fn outputs(l: &Lit, safe: &BTreeSet<Vid>) -> BTreeSet<Vid> {
    if l.negated {
        return BTreeSet::new();
    }
    for w in &l.withs {
        let mut s = BTreeSet::new();
        term_vars(w, &P::SAFETY, &mut s);
        if !s.is_subset(safe) {
            return BTreeSet::new();
        }
    }
    match &l.kind {
        LK::Term(t) => {
            let mut o = BTreeSet::new();
            ref_outputs(t, safe, &mut o);
            o
        }
        LK::Every { domain, .. } => {
            let mut o = BTreeSet::new();
            ref_outputs(domain, safe, &mut o);
            o
        }
        LK::Eq { lhs, rhs, assign } => {
            let mut extra = BTreeSet::new();
            ref_outputs(lhs, safe, &mut extra);
            ref_outputs(rhs, safe, &mut extra);
            // `:=` binds its left side only: it is not safe to unify from.
            let mut excluded = BTreeSet::new();
            if *assign {
                term_vars(lhs, &P::ALL, &mut excluded);
            }
            let mut u = Unifier {
                safe,
                extra: &extra,
                excluded: &excluded,
                unified: BTreeSet::new(),
                unknown: BTreeMap::new(),
            };
            u.unify(lhs, rhs);
            let mut o: BTreeSet<Vid> = extra.iter().filter(|v| !excluded.contains(v)).copied().collect();
            o.extend(u.unified);
            o.retain(|v| !safe.contains(v));
            o
        }
        LK::Call(c) => {
            let mut o = BTreeSet::new();
            for a in &c.args {
                ref_outputs(a, safe, &mut o);
            }
            let arity = match c.target {
                Target::Fixed(a) => a,
                Target::Any | Target::Undefined => return BTreeSet::new(),
            };
            if c.args.len() <= arity {
                return o;
            }
            let mut inputs = BTreeSet::new();
            for a in c.args.iter().take(arity) {
                term_vars(a, &P::CALL, &mut inputs);
            }
            if inputs.iter().any(|v| !o.contains(v) && !safe.contains(v)) {
                return BTreeSet::new();
            }
            for a in c.args.iter().skip(arity) {
                term_vars(a, &P::CALL, &mut o);
            }
            o
        }
    }
}

/// OPA's `outputVarsForTerms`: the index variables of references whose head
/// is safe (closures not entered).
fn ref_outputs(t: &T, safe: &BTreeSet<Vid>, out: &mut BTreeSet<Vid>) {
    if let T::Ref(h, ix) = t
        && ref_head_safe(h, safe)
    {
        ix.iter().for_each(|i| term_vars(i, &P::OUTPUT, out));
    }
    t.each_child(&mut |x| ref_outputs(x, safe, out));
}

fn ref_head_safe(h: &T, safe: &BTreeSet<Vid>) -> bool {
    ref_head_safe_by(h, &|v| safe.contains(&v))
}

fn ref_head_safe_by(h: &T, safe: &dyn Fn(Vid) -> bool) -> bool {
    match h {
        T::V(v, _) => safe(*v),
        T::G(_) => true,
        other => term_safe_by(other, safe),
    }
}

fn term_safe_by(t: &T, safe: &dyn Fn(Vid) -> bool) -> bool {
    let mut s = BTreeSet::new();
    term_vars(t, &P::SAFETY, &mut s);
    s.into_iter().all(safe)
}

/// OPA's unifier (`unify.go`). What is safe to unify from: `safe` and
/// `extra`, less `excluded`, and what the unifier has bound.
struct Unifier<'s> {
    safe: &'s BTreeSet<Vid>,
    extra: &'s BTreeSet<Vid>,
    excluded: &'s BTreeSet<Vid>,
    unified: BTreeSet<Vid>,
    unknown: BTreeMap<Vid, BTreeSet<Vid>>,
}

impl Unifier<'_> {
    fn is_safe(&self, v: Vid) -> bool {
        ((self.safe.contains(&v) || self.extra.contains(&v)) && !self.excluded.contains(&v))
            || self.unified.contains(&v)
    }

    fn ref_head_safe(&self, h: &T) -> bool {
        ref_head_safe_by(h, &|v| self.is_safe(v))
    }

    fn term_safe(&self, t: &T) -> bool {
        term_safe_by(t, &|v| self.is_safe(v))
    }

    fn unify(&mut self, a: &T, b: &T) {
        match a {
            T::V(av, _) => match b {
                T::V(bv, _) => {
                    if self.is_safe(*bv) {
                        self.mark_safe(*av);
                    } else if self.is_safe(*av) {
                        self.mark_safe(*bv);
                    } else {
                        self.unknown.entry(*av).or_default().insert(*bv);
                        self.unknown.entry(*bv).or_default().insert(*av);
                    }
                }
                T::Arr(_) | T::Obj(_) => self.unify_all(*av, b),
                T::Ref(h, _) => {
                    if self.ref_head_safe(h) {
                        self.mark_safe(*av);
                    }
                }
                T::G(_) => self.mark_safe(*av),
                T::Call(_) => {
                    if self.term_safe(b) {
                        self.mark_safe(*av);
                    }
                }
                _ => self.mark_safe(*av),
            },
            T::Ref(..) | T::G(_) | T::Call(_) => {
                let safe = match a {
                    T::Ref(h, _) => self.ref_head_safe(h),
                    T::G(_) => true,
                    _ => self.term_safe(a),
                };
                if safe {
                    match b {
                        T::V(bv, _) => self.mark_safe(*bv),
                        T::Arr(_) | T::Obj(_) => self.mark_all_safe(b),
                        _ => {}
                    }
                }
            }
            T::Compr(c) => match (c.kind, b) {
                (_, T::V(bv, _)) => self.mark_safe(*bv),
                (ComprKind::Array, T::Arr(_)) | (ComprKind::Object, T::Obj(_)) => self.mark_all_safe(b),
                _ => {}
            },
            T::Arr(items) => match b {
                T::V(bv, _) => self.unify_all(*bv, a),
                T::Compr(_) => self.mark_all_safe(a),
                T::Ref(h, _) if self.ref_head_safe(h) => {
                    self.mark_all_safe(a);
                }
                T::G(_) => self.mark_all_safe(a),
                T::Call(_) if self.term_safe(b) => {
                    self.mark_all_safe(a);
                }
                T::Arr(other) if items.len() == other.len() => {
                    for (x, y) in items.iter().zip(other) {
                        self.unify(x, y);
                    }
                }
                _ => {}
            },
            T::Obj(fields) => match b {
                T::V(bv, _) => self.unify_all(*bv, a),
                T::Ref(h, _) if self.ref_head_safe(h) => {
                    self.mark_all_safe(a);
                }
                T::G(_) => self.mark_all_safe(a),
                T::Call(_) if self.term_safe(b) => {
                    self.mark_all_safe(a);
                }
                T::Obj(other) if fields.len() == other.len() => {
                    for (k, _, v) in fields {
                        if let Some((_, _, v2)) = other.iter().find(|(k2, _, _)| k2 == k) {
                            self.unify(v, v2);
                        }
                    }
                }
                _ => {}
            },
            T::S | T::Set(_) => {
                if let T::V(bv, _) = b {
                    self.mark_safe(*bv);
                }
            }
        }
    }

    fn mark_all_safe(&mut self, x: &T) {
        let mut s = BTreeSet::new();
        term_vars(x, &P::OUTPUT, &mut s);
        for v in s {
            self.mark_safe(v);
        }
    }

    fn mark_safe(&mut self, x: Vid) {
        let mut work = vec![x];
        while let Some(x) = work.pop() {
            if !self.unified.insert(x) && !self.unknown.contains_key(&x) {
                continue;
            }
            if let Some(deps) = self.unknown.remove(&x) {
                work.extend(deps.into_iter().filter(|d| !self.unified.contains(d)));
            }
            let mut freed = Vec::new();
            for (v, deps) in self.unknown.iter_mut() {
                if deps.remove(&x) && deps.is_empty() {
                    freed.push(*v);
                }
            }
            for v in freed {
                self.unknown.remove(&v);
                work.push(v);
            }
        }
    }

    fn unify_all(&mut self, a: Vid, b: &T) {
        if self.is_safe(a) {
            self.mark_all_safe(b);
            return;
        }
        let mut s = BTreeSet::new();
        term_vars(b, &P::OUTPUT, &mut s);
        let unsafe_: Vec<Vid> = s.into_iter().filter(|v| !self.is_safe(*v)).collect();
        if unsafe_.is_empty() {
            self.mark_safe(a);
        } else {
            for v in unsafe_ {
                self.unknown.entry(a).or_default().insert(v);
            }
        }
    }
}
