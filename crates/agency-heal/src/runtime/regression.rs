//! The regression test of a NoneType fix: a new pytest file beside the project's tests that
//! makes the crashing function meet its None again and asserts the fixed behaviour (the
//! natural empty value, or the exception), so it fails before the fix (the crash raises
//! `AttributeError`/`TypeError`) and passes after.
//!
//! A test is written only when the None can be driven from the call: the None-valued name is a
//! parameter (pass None), or comes from a lookup keyed by a parameter that the test controls:
//! `MAPPING.get(key)` on a module-level dict (pass a key it cannot hold), `re.match(PATTERN,
//! text)` with a literal pattern (pass a text it does not match, checked with the `regex`
//! crate) or `os.environ.get("NAME")` (unset it with pytest's `monkeypatch`). Every other
//! parameter needs a default or a simple annotation that gives a value (`str` → `""`, `int` →
//! `0`, `list[...]` → `[]`, `X | None` → `None`, ...). The function is a module-level function,
//! or a method of a module-level class that can be built without arguments.

use ruff_python_ast::{Expr, Stmt, StmtFunctionDef};
use ruff_text_size::Ranged as _;

use super::contract::own_returns;
use super::flow::{bindings, dotted, parameter_names, reaching_assignment, single_module_binding};
use super::locate::{self, Site};
use super::producer::transparent_decorators;
use super::snippet::string_literal;
use super::tree::Tree;
use super::{Behaviour, Crash, NoneFix};

/// A new test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    /// Repository-relative path of the new file (`/`-separated); no file of the repository has
    /// its name.
    pub path: String,
    /// Its whole text.
    pub text: String,
    /// The pytest node id of its test (`tests/test_x.py::test_y`).
    pub node_id: String,
}

/// Why no regression test could be written: one sentence for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct NoRegression {
    pub reason: String,
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, NoRegression> {
    Err(NoRegression {
        reason: reason.into(),
    })
}

/// How the test makes the value None.
enum Driver {
    /// Pass `value` for parameter `param`; `tag` names the case in the test's name.
    Argument {
        param: String,
        value: String,
        tag: String,
    },
    /// Unset this environment variable.
    Unset(String),
}

/// The regression test for `fix` of `crash` in `file` (repository-relative), whose text
/// before the fix is `source`. `files` lists every file of the repository (repository-relative,
/// `/`-separated): it shows where the tests live, which directories are packages, and which
/// names are taken.
pub fn regression_test(
    files: &[String],
    file: &str,
    source: &str,
    crash: &Crash,
    fix: &NoneFix,
) -> Result<Regression, NoRegression> {
    let Ok(parsed) = ruff_python_parser::parse_module(source) else {
        return refuse(format!("{file} does not parse"));
    };
    let tree = Tree::new(source, parsed.syntax());
    let Some(site) = locate::locate(&tree, crash) else {
        return refuse("the crash range does not single out one expression");
    };
    let Some(function) = site.function else {
        return refuse("the crash is not in a function a test can call");
    };
    let qualname = tree.qualname(function);
    if fix.function != qualname {
        return refuse(format!(
            "the fix changes `{}()`, and the traceback does not show which input makes it return None",
            fix.function
        ));
    }
    let Some(f) = tree.function(function) else {
        return refuse("the crash is not in a function a test can call");
    };
    let callable = callable(&tree, function, f)?;
    let driver = driver(&tree, &site, function, f)?;
    let arguments = arguments(f, callable.skip_first, &driver)?;
    let (module, root) = module_name(files, file)?;
    let (_, generator) = own_returns(f);
    if generator && f.is_async {
        return refuse(format!(
            "`{qualname}()` is an async generator, which a plain test cannot drive"
        ));
    }

    let mut call = format!("{}({arguments})", callable.expression);
    if f.is_async {
        call = format!("asyncio.run({call})");
    }
    if generator {
        call = format!("list({call})");
    }
    let crash_class = if crash.rule == "none-attribute" {
        "AttributeError"
    } else {
        "TypeError"
    };
    let (body, expected) = match &fix.behaviour {
        Behaviour::Returns(value) => {
            let value = if generator { "[]" } else { value.as_str() };
            let assertion = match value {
                "None" | "False" | "True" => format!("assert {call} is {value}"),
                other => format!("assert {call} == {other}"),
            };
            (assertion, format!("returns `{value}`"))
        }
        Behaviour::Raises(class) => {
            if [crash_class, "Exception", "BaseException"].contains(&class.as_str()) {
                return refuse(format!(
                    "the fixed `{qualname}()` raises {class}, which the crash raised too: a test could not tell them apart"
                ));
            }
            (
                format!("with pytest.raises({class}):\n        {call}"),
                format!("raises {class}"),
            )
        }
    };

    let stem = module.rsplit('.').next().unwrap_or(&module).to_string();
    let dir = test_directory(files, &root);
    let function_part: String = qualname
        .replace("<locals>", "")
        .split('.')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    let base = format!("test_agency_regression_{stem}_{function_part}").to_lowercase();
    let taken = |name: &str| files.iter().any(|f| f.rsplit('/').next() == Some(name));
    let mut file_name = format!("{base}.py");
    let mut n = 2;
    while taken(&file_name) {
        file_name = format!("{base}_{n}.py");
        n += 1;
    }
    let path = if dir.is_empty() {
        file_name.clone()
    } else {
        format!("{dir}/{file_name}")
    };
    let test_name = format!(
        "test_{}_{}",
        function_part.to_lowercase(),
        driver.describe()
    );

    let expr_text = tree
        .expr(site.expr)
        .map_or_else(String::new, |e| tree.text(e.range()).to_string());
    let mut text = String::new();
    text.push_str(&format!(
        "# Written by agency: regression test for a {} crash in {qualname}()\n# ({file}:{}: `{}` was None). The fixed function {expected}.\n",
        crash.rule,
        crash.line,
        super::snippet::short(&expr_text),
    ));
    if f.is_async {
        text.push_str("import asyncio\n");
    }
    if matches!(fix.behaviour, Behaviour::Raises(_)) {
        text.push_str("import pytest\n");
    }
    if f.is_async || matches!(fix.behaviour, Behaviour::Raises(_)) {
        text.push('\n');
    }
    text.push_str(&format!("from {module} import {}\n\n\n", callable.import));
    let fixture = if matches!(driver, Driver::Unset(_)) {
        "monkeypatch"
    } else {
        ""
    };
    text.push_str(&format!("def {test_name}({fixture}):\n"));
    if let Driver::Unset(var) = &driver {
        text.push_str(&format!(
            "    monkeypatch.delenv({}, raising=False)\n",
            string_literal(var)
        ));
    }
    text.push_str(&format!("    {body}\n"));
    let node_id = format!("{path}::{test_name}");
    Ok(Regression {
        path,
        text,
        node_id,
    })
}

impl Driver {
    fn describe(&self) -> String {
        match self {
            Driver::Argument { tag, .. } => tag.to_lowercase(),
            Driver::Unset(var) => format!("{}_unset", identifier_part(var)).to_lowercase(),
        }
    }
}

fn identifier_part(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// How a test reaches the function.
struct Callable {
    /// What the test imports from the module.
    import: String,
    /// The expression called (`f`, `Repo().count`, `Repo.build`).
    expression: String,
    /// Whether the first parameter is bound by the call (`self`, `cls`).
    skip_first: bool,
}

fn callable(tree: &Tree, function: usize, f: &StmtFunctionDef) -> Result<Callable, NoRegression> {
    let name = f.name.as_str();
    if !transparent_decorators(f) {
        return refuse(format!(
            "`{name}()` has a decorator that may change how it is called"
        ));
    }
    let decorator = |wanted: &str| {
        f.decorator_list
            .iter()
            .any(|d| dotted(&d.expression).as_deref() == Some(wanted))
    };
    let Some(scope) = tree.scope_of_stmt(function) else {
        return Ok(Callable {
            import: name.to_string(),
            expression: name.to_string(),
            skip_first: false,
        });
    };
    let Some(class) = tree.class(scope) else {
        return refuse(format!(
            "`{}()` is a nested function a test cannot call",
            tree.qualname(function)
        ));
    };
    if tree.scope_of_stmt(scope).is_some() {
        return refuse(format!(
            "`{}` is a nested class a test cannot import",
            class.name.as_str()
        ));
    }
    let class_name = class.name.as_str();
    if decorator("staticmethod") {
        return Ok(Callable {
            import: class_name.to_string(),
            expression: format!("{class_name}.{name}"),
            skip_first: false,
        });
    }
    if decorator("classmethod") {
        return Ok(Callable {
            import: class_name.to_string(),
            expression: format!("{class_name}.{name}"),
            skip_first: true,
        });
    }
    let plain_bases = class.arguments.as_ref().is_none_or(|a| {
        a.keywords.is_empty()
            && a.args
                .iter()
                .all(|b| dotted(b).as_deref() == Some("object"))
    });
    let builds_without_arguments = class.body.iter().all(|s| match s {
        Stmt::FunctionDef(d) if d.name.as_str() == "__new__" => false,
        Stmt::FunctionDef(d) if d.name.as_str() == "__init__" => {
            let p = &d.parameters;
            p.posonlyargs
                .iter()
                .chain(&p.args)
                .skip(1)
                .all(|a| a.default.is_some())
                && p.kwonlyargs.iter().all(|a| a.default.is_some())
        }
        _ => true,
    });
    if !class.decorator_list.is_empty() || !plain_bases || !builds_without_arguments {
        return refuse(format!(
            "`{class_name}` cannot be built without arguments, so a test cannot call `{}()`",
            tree.qualname(function)
        ));
    }
    Ok(Callable {
        import: class_name.to_string(),
        expression: format!("{class_name}().{name}"),
        skip_first: true,
    })
}

/// A parameter of `f` that nothing in `f` binds again.
fn untouched_parameter(tree: &Tree, function: usize, f: &StmtFunctionDef, name: &str) -> bool {
    parameter_names(f).contains(&name) && bindings(tree, Some(function), name).is_empty()
}

fn driver(
    tree: &Tree,
    site: &Site,
    function: usize,
    f: &StmtFunctionDef,
) -> Result<Driver, NoRegression> {
    let Some(expr) = tree.expr(site.expr) else {
        return refuse("the None-valued expression was not found");
    };
    let shown = super::snippet::short(tree.text(expr.range()));
    let lookup = match expr {
        Expr::Name(n) => {
            let name = n.id.as_str();
            if untouched_parameter(tree, function, f, name) {
                return Ok(Driver::Argument {
                    param: name.to_string(),
                    value: "None".to_string(),
                    tag: format!("{name}_none"),
                });
            }
            match reaching_assignment(tree, function, site.stmt, name) {
                Some((_, value)) => value,
                None => {
                    return refuse(format!(
                        "`{name}` does not come from a parameter or a lookup a test can drive"
                    ));
                }
            }
        }
        Expr::Call(_) => expr,
        _ => {
            return refuse(format!(
                "`{shown}` does not come from a parameter or a lookup a test can drive"
            ));
        }
    };
    let Expr::Call(call) = lookup else {
        return refuse(format!(
            "`{shown}` does not come from a parameter or a lookup a test can drive"
        ));
    };
    let args = &call.arguments;
    let param_arg = |e: &Expr| match e {
        Expr::Name(n) if untouched_parameter(tree, function, f, n.id.as_str()) => {
            Some(n.id.as_str().to_string())
        }
        _ => None,
    };
    let func = dotted(&call.func).unwrap_or_default();
    let (receiver, method) = func.rsplit_once('.').unwrap_or(("", func.as_str()));
    let one_arg = args.args.len() == 1 && args.keywords.is_empty();
    // An environment variable named by a literal.
    let env = (one_arg
        && (func == "os.environ.get"
            || func == "os.getenv"
            || func == "environ.get"
            || func == "getenv"))
        .then(|| match &args.args[0] {
            Expr::StringLiteral(s) => Some(s.value.to_str().to_string()),
            _ => None,
        })
        .flatten();
    if let Some(var) = env {
        return Ok(Driver::Unset(var));
    }
    if method == "get" && one_arg && !receiver.contains('.') && !receiver.is_empty() {
        if untouched_parameter(tree, function, f, receiver) {
            // The mapping itself is a parameter: an empty one holds no key.
            return Ok(Driver::Argument {
                param: receiver.to_string(),
                value: "{}".to_string(),
                tag: format!("empty_{receiver}"),
            });
        }
        let Some(param) = param_arg(&args.args[0]) else {
            return refuse(format!("the key of `{shown}` is not a parameter"));
        };
        let Some(keys) = module_dict_keys(tree, function, receiver) else {
            return refuse(format!(
                "`{receiver}` is not a module-level dict a test can miss"
            ));
        };
        let annotation = parameter_annotation(f, &param);
        let value = match annotation.as_deref() {
            None | Some("str") => {
                let key = "agency-regression-missing-key";
                if keys.iter().any(|k| k == key) {
                    return refuse(format!("`{receiver}` holds the test's missing key"));
                }
                string_literal(key)
            }
            Some(_) => "object()".to_string(),
        };
        return Ok(Driver::Argument {
            tag: format!("missing_{param}"),
            param,
            value,
        });
    }
    if matches!(method, "match" | "search" | "fullmatch") {
        let (pattern, subject) = if receiver == "re" {
            if args.keywords.len() + args.args.len() != 2 {
                return refuse(format!("`{shown}` passes flags agency cannot check"));
            }
            (pattern_text(tree, args.args.first()), args.args.get(1))
        } else {
            (compiled_pattern(tree, receiver), args.args.first())
        };
        let Some(pattern) = pattern else {
            return refuse(format!("the pattern of `{shown}` is not a literal"));
        };
        let Some(param) = subject.and_then(param_arg) else {
            return refuse(format!("the text of `{shown}` is not a parameter"));
        };
        let Some(value) = non_matching(&pattern, method) else {
            return refuse(format!(
                "no text was found that `{shown}` certainly does not match"
            ));
        };
        return Ok(Driver::Argument {
            tag: format!("{param}_no_match"),
            param,
            value: string_literal(&value),
        });
    }
    refuse(format!(
        "`{shown}` is not a lookup a test can drive from the parameters"
    ))
}

/// The keys of a module-level dict display (`NAME = {...}`), when `NAME` is bound once at
/// module level and not in the function. String keys are listed; others are ignored.
fn module_dict_keys(tree: &Tree, function: usize, name: &str) -> Option<Vec<String>> {
    if !bindings(tree, Some(function), name).is_empty() {
        return None;
    }
    let only = single_module_binding(tree, name)?;
    let stmt = tree.stmt(tree.statement_of(only)?)?;
    let value = match stmt {
        Stmt::Assign(a) if a.targets.len() == 1 => &*a.value,
        Stmt::AnnAssign(a) => a.value.as_deref()?,
        _ => return None,
    };
    match value {
        Expr::Dict(d) => Some(
            d.items
                .iter()
                .filter_map(|item| match &item.key {
                    Some(Expr::StringLiteral(s)) => Some(s.value.to_str().to_string()),
                    _ => None,
                })
                .collect(),
        ),
        Expr::DictComp(_) => Some(Vec::new()),
        Expr::Call(c) if dotted(&c.func).as_deref() == Some("dict") => Some(Vec::new()),
        _ => None,
    }
}

fn parameter_annotation(f: &StmtFunctionDef, name: &str) -> Option<String> {
    let p = &f.parameters;
    p.posonlyargs
        .iter()
        .chain(&p.args)
        .chain(&p.kwonlyargs)
        .find(|a| a.parameter.name.as_str() == name)
        .and_then(|a| a.parameter.annotation.as_deref())
        .and_then(dotted)
}

/// A literal pattern, or a module-level name bound once to one.
fn pattern_text(tree: &Tree, expr: Option<&Expr>) -> Option<String> {
    match expr? {
        Expr::StringLiteral(s) => Some(s.value.to_str().to_string()),
        Expr::Name(n) => {
            let only = single_module_binding(tree, n.id.as_str())?;
            match tree.stmt(tree.statement_of(only)?)? {
                Stmt::Assign(a) if a.targets.len() == 1 => match &*a.value {
                    Expr::StringLiteral(s) => Some(s.value.to_str().to_string()),
                    _ => None,
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// The literal pattern of `NAME = re.compile("...")` (no flags).
fn compiled_pattern(tree: &Tree, name: &str) -> Option<String> {
    if name.contains('.') || name.is_empty() {
        return None;
    }
    let only = single_module_binding(tree, name)?;
    let Stmt::Assign(a) = tree.stmt(tree.statement_of(only)?)? else {
        return None;
    };
    let Expr::Call(c) = &*a.value else {
        return None;
    };
    if dotted(&c.func).as_deref() != Some("re.compile")
        || c.arguments.args.len() != 1
        || !c.arguments.keywords.is_empty()
    {
        return None;
    }
    pattern_text(tree, c.arguments.args.first())
}

/// A short text that `pattern` does not match the way `method` (`match`, `search`,
/// `fullmatch`) matches, checked with the `regex` crate. Patterns it cannot compile (Python
/// only syntax, such as lookarounds) give `None`; the candidates hold no newline, so `$` means
/// the same in both engines.
fn non_matching(pattern: &str, method: &str) -> Option<String> {
    let anchored = match method {
        "match" => format!("^(?:{pattern})"),
        "fullmatch" => format!("^(?:{pattern})$"),
        _ => format!("(?:{pattern})"),
    };
    let re = regex::Regex::new(&anchored).ok()?;
    ["", "-", "?", "agency", "0"]
        .iter()
        .find(|c| !re.is_match(c))
        .map(ToString::to_string)
}

/// The arguments of the test's call: the driver's, and a value for every parameter without a
/// default (from its annotation).
fn arguments(
    f: &StmtFunctionDef,
    skip_first: bool,
    driver: &Driver,
) -> Result<String, NoRegression> {
    let (driven, driven_value) = match driver {
        Driver::Argument { param, value, .. } => (Some(param.as_str()), value.clone()),
        Driver::Unset(_) => (None, String::new()),
    };
    let p = &f.parameters;
    if let Some(name) = driven
        && !p
            .posonlyargs
            .iter()
            .chain(&p.args)
            .chain(&p.kwonlyargs)
            .any(|a| a.parameter.name.as_str() == name)
    {
        return refuse(format!(
            "`{name}` of `{}()` collects several arguments",
            f.name.as_str()
        ));
    }
    let mut positional: Vec<String> = Vec::new();
    let mut keywords: Vec<String> = Vec::new();
    let mut skip = skip_first;
    let posonly_needed = p
        .posonlyargs
        .iter()
        .rposition(|a| a.default.is_none() || Some(a.parameter.name.as_str()) == driven);
    for (i, a) in p.posonlyargs.iter().enumerate() {
        if std::mem::take(&mut skip) {
            continue;
        }
        if posonly_needed.is_none_or(|last| i > last) {
            break;
        }
        let name = a.parameter.name.as_str();
        if Some(name) == driven {
            positional.push(driven_value.clone());
        } else if a.default.is_some() {
            return refuse(format!(
                "positional-only `{name}` of `{}()` would need its default written out",
                f.name.as_str()
            ));
        } else {
            positional.push(fill(f, a.parameter.annotation.as_deref(), name)?);
        }
    }
    for a in p.args.iter().chain(&p.kwonlyargs) {
        if std::mem::take(&mut skip) {
            continue;
        }
        let name = a.parameter.name.as_str();
        if Some(name) == driven {
            keywords.push(format!("{name}={driven_value}"));
        } else if a.default.is_none() {
            keywords.push(format!(
                "{name}={}",
                fill(f, a.parameter.annotation.as_deref(), name)?
            ));
        }
    }
    positional.extend(keywords);
    Ok(positional.join(", "))
}

/// A plain value of an annotation, for a parameter the crash does not depend on.
fn fill(
    f: &StmtFunctionDef,
    annotation: Option<&Expr>,
    name: &str,
) -> Result<String, NoRegression> {
    let value = annotation.and_then(|a| match a {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) | Expr::BinOp(_) => {
            let base = match a {
                Expr::Subscript(s) => dotted(&s.value),
                other => dotted(other),
            };
            if let Some(super::contract::Empty::None) = super::contract::annotation_empty(a) {
                return Some("None");
            }
            match base?.rsplit('.').next()? {
                "str" => Some("\"\""),
                "int" => Some("0"),
                "float" => Some("0.0"),
                "bool" => Some("False"),
                "bytes" => Some("b\"\""),
                "list" | "List" | "Sequence" | "Iterable" => Some("[]"),
                "dict" | "Dict" | "Mapping" => Some("{}"),
                "set" | "Set" => Some("set()"),
                "tuple" | "Tuple" => Some("()"),
                _ => None,
            }
        }
        _ => None,
    });
    match value {
        Some(v) => Ok(v.to_string()),
        None => refuse(format!(
            "parameter `{name}` of `{}()` has no default and no simple annotation to fill it",
            f.name.as_str()
        )),
    }
}

const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

fn is_identifier(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
        && !KEYWORDS.contains(&part)
}

/// The dotted module name of `file` and the directory it is imported from (`""` for the
/// repository root): packages are the directories with an `__init__.py`; a file outside any
/// package is imported from `src/` in a src layout, else as a namespace package from the root.
fn module_name(files: &[String], file: &str) -> Result<(String, String), NoRegression> {
    let Some(without_ext) = file.strip_suffix(".py") else {
        return refuse(format!("{file} is not a Python module"));
    };
    let parts: Vec<&str> = without_ext.split('/').collect();
    let Some((&stem, dirs)) = parts.split_last() else {
        return refuse(format!("{file} is not a Python module"));
    };
    if stem == "__main__" {
        return refuse(format!("{file} runs its program when imported"));
    }
    let has_init = |dirs: &[&str]| {
        let init = format!("{}/__init__.py", dirs.join("/"));
        files.contains(&init)
    };
    let mut k = dirs.len();
    while k > 0 && has_init(&dirs[..k]) {
        k -= 1;
    }
    let (root, mut module): (Vec<&str>, Vec<&str>) = if k == dirs.len() {
        // Not in a package.
        match dirs.first() {
            None => (Vec::new(), Vec::new()),
            Some(&"src") => (vec!["src"], dirs[1..].to_vec()),
            Some(_) => (Vec::new(), dirs.to_vec()),
        }
    } else {
        (dirs[..k].to_vec(), dirs[k..].to_vec())
    };
    if stem != "__init__" {
        module.push(stem);
    }
    if module.is_empty() || !module.iter().all(|p| is_identifier(p)) {
        return refuse(format!("{file} has no importable module name"));
    }
    Ok((module.join("."), root.join("/")))
}

/// Where the new test goes: the directory holding the most test files (`test_*.py`,
/// `*_test.py`), preferring one under the import root, then the shorter path; `tests/` under
/// the import root (or the repository root in a src layout) when the project has none.
fn test_directory(files: &[String], root: &str) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for f in files {
        let (dir, name) = f.rsplit_once('/').unwrap_or(("", f.as_str()));
        let Some(stem) = name.strip_suffix(".py") else {
            continue;
        };
        let is_test = stem.starts_with("test_") || stem.ends_with("_test");
        if is_test {
            *counts.entry(dir).or_default() += 1;
        }
    }
    let under_root = |dir: &str| root.is_empty() || root == "src" || dir.starts_with(root);
    let best = counts
        .iter()
        .max_by(|a, b| {
            (
                under_root(a.0),
                a.1,
                std::cmp::Reverse(a.0.len()),
                std::cmp::Reverse(*a.0),
            )
                .cmp(&(
                    under_root(b.0),
                    b.1,
                    std::cmp::Reverse(b.0.len()),
                    std::cmp::Reverse(*b.0),
                ))
        })
        .map(|(dir, _)| (*dir).to_string());
    best.unwrap_or_else(|| {
        if root.is_empty() || root == "src" {
            "tests".to_string()
        } else {
            format!("{root}/tests")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{FixKind, none_fixes};

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn module_names_follow_packages_and_src_layouts() {
        let repo = files(&[
            "app.py",
            "shop/__init__.py",
            "shop/orders/__init__.py",
            "shop/orders/util.py",
            "src/lib/__init__.py",
            "src/lib/core.py",
            "src/tool.py",
            "scripts/run.py",
            "backend/api/__init__.py",
            "backend/api/views.py",
            "bad-name/x.py",
            "shop/__main__.py",
        ]);
        let name = |f: &str| module_name(&repo, f);
        assert_eq!(name("app.py"), Ok(("app".into(), String::new())));
        assert_eq!(
            name("shop/orders/util.py"),
            Ok(("shop.orders.util".into(), String::new()))
        );
        assert_eq!(
            name("shop/orders/__init__.py"),
            Ok(("shop.orders".into(), String::new()))
        );
        assert_eq!(
            name("src/lib/core.py"),
            Ok(("lib.core".into(), "src".into()))
        );
        assert_eq!(name("src/tool.py"), Ok(("tool".into(), "src".into())));
        assert_eq!(
            name("scripts/run.py"),
            Ok(("scripts.run".into(), String::new()))
        );
        assert_eq!(
            name("backend/api/views.py"),
            Ok(("api.views".into(), "backend".into()))
        );
        assert!(name("bad-name/x.py").is_err());
        assert!(name("shop/__main__.py").is_err());
        assert!(name("README.md").is_err());
    }

    #[test]
    fn tests_go_where_most_tests_are() {
        let repo = files(&[
            "tests/test_a.py",
            "tests/unit/test_b.py",
            "tests/unit/test_c.py",
            "shop/orders_test.py",
        ]);
        assert_eq!(test_directory(&repo, ""), "tests/unit");
        assert_eq!(test_directory(&files(&["shop/x.py"]), ""), "tests");
        assert_eq!(test_directory(&files(&["shop/x.py"]), "src"), "tests");
        assert_eq!(
            test_directory(&files(&["backend/api/x.py"]), "backend"),
            "backend/tests"
        );
        // Tests under the import root win over more tests elsewhere.
        let split = files(&[
            "backend/tests/test_a.py",
            "frontend/tests/test_b.py",
            "frontend/tests/test_c.py",
        ]);
        assert_eq!(test_directory(&split, "backend"), "backend/tests");
    }

    #[test]
    fn non_matching_texts_are_checked() {
        assert_eq!(non_matching(r"(\d+)\.(\d+)", "match").as_deref(), Some(""));
        // Matches the empty text: another candidate is needed.
        assert_eq!(non_matching(r"\w*", "fullmatch").as_deref(), Some("-"));
        assert_eq!(non_matching(r".*", "search"), None);
        // Python-only syntax is not guessed at.
        assert_eq!(non_matching(r"(?<=a)b", "search"), None);
    }

    fn test_for(
        source: &str,
        rule: &str,
        mark: &str,
        which: usize,
    ) -> Result<Regression, NoRegression> {
        let at = source.find(mark).expect("mark in source");
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..at].chars().count() as u32 + 1;
        let crash = Crash {
            rule,
            line: source[..at].matches('\n').count() as u32 + 1,
            column,
            end_column: column + mark.chars().count() as u32,
        };
        let fixes = none_fixes(source, &crash);
        let repo = files(&[
            "shop/__init__.py",
            "shop/m.py",
            "tests/test_agency_regression_m_f.py",
        ]);
        regression_test(&repo, "shop/m.py", source, &crash, &fixes[which])
    }

    #[test]
    fn names_do_not_collide_and_async_functions_run_in_asyncio() {
        let source = "async def f(user) -> list[str]:\n    return user.names\n";
        let test = test_for(source, "none-attribute", "user.names", 0).expect("a test");
        assert_eq!(test.path, "tests/test_agency_regression_m_f_2.py");
        assert_eq!(
            test.node_id,
            "tests/test_agency_regression_m_f_2.py::test_f_user_none"
        );
        assert!(test.text.contains("import asyncio\n"), "{}", test.text);
        assert!(
            test.text
                .contains("    assert asyncio.run(f(user=None)) == []\n"),
            "{}",
            test.text
        );
    }

    #[test]
    fn parameters_without_defaults_are_filled_from_annotations() {
        let source =
            "def f(a: int, b: list[str], *, c: str | None, user, d=3):\n    return user.x\n";
        let test = test_for(source, "none-attribute", "user.x", 0).expect("a test");
        assert!(
            test.text.contains("f(a=0, b=[], c=None, user=None)"),
            "{}",
            test.text
        );
        let posonly = "def f(user, /, n: int):\n    return user.x\n";
        let test = test_for(posonly, "none-attribute", "user.x", 0).expect("a test");
        assert!(test.text.contains("f(None, n=0)"), "{}", test.text);
        let unfillable = "def f(user, session):\n    return user.x\n";
        assert_eq!(
            test_for(unfillable, "none-attribute", "user.x", 0)
                .expect_err("no value for `session`")
                .reason,
            "parameter `session` of `f()` has no default and no simple annotation to fill it"
        );
    }

    #[test]
    fn an_exception_the_crash_also_raises_cannot_be_tested() {
        let source = "def f(user):\n    return user.name\n";
        let crash = Crash {
            rule: "none-attribute",
            line: 2,
            column: 12,
            end_column: 21,
        };
        let fix = NoneFix {
            kind: FixKind::Guard,
            summary: String::new(),
            after: source.replace(
                "    return",
                "    if user is None:\n        raise AttributeError\n    return",
            ),
            function: "f".to_string(),
            behaviour: Behaviour::Raises("AttributeError".to_string()),
        };
        let err = regression_test(&files(&["m.py"]), "m.py", source, &crash, &fix)
            .expect_err("indistinct");
        assert_eq!(
            err.reason,
            "the fixed `f()` raises AttributeError, which the crash raised too: a test could not tell them apart"
        );
        let getattr =
            "def f(obj, name):\n    value = getattr(obj, name, None)\n    return value.strip()\n";
        assert_eq!(
            test_for(getattr, "none-attribute", "value.strip", 0)
                .expect_err("not drivable")
                .reason,
            "`value` is not a lookup a test can drive from the parameters"
        );
    }
}
