//! Runs GitHub's own expression test data (`tests/conformance/*.json`, from
//! actions/languageservices, MIT) against kiln-expr.
//!
//! Every case must pass, except those named in `EXPECTED_FAILURES` with a reason; the test
//! fails if any other case fails *or* if a listed case starts passing, so the count can never
//! drift silently. Error cases must fail at the same stage (lexing, parsing or evaluation);
//! matching GitHub's message text too is reported but not required. The data stores message
//! *prefixes* for some cases (`"Too few parameters supplied: "`), so a message matches when it
//! starts with the expected text.

// A test harness: malformed data files should abort loudly.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use kiln_expr::{MapHost, ParseErrorKind, ParseOptions, Value, evaluate, parse};
use serde_json::Value as Json;

/// Cases that are known not to pass, by name (`file/group#index`), with the reason.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

/// When a case declares no contexts, no named value is allowed (GitHub's test harness passes an
/// empty context list). An empty `named_values` means "allow any", so a name no expression can
/// spell stands in for "none".
const NO_CONTEXTS: &[&str] = &["<none>"];

struct Outcome {
    name: String,
    passed: bool,
    message_matched: bool,
    detail: String,
}

#[test]
fn github_conformance_data() {
    let outcomes: Vec<Outcome> = data_files()
        .iter()
        .flat_map(|path| run_file(path))
        .collect();
    let total = outcomes.len();
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let error_cases = outcomes
        .iter()
        .filter(|o| o.detail.starts_with("error case"))
        .count();
    let messages = outcomes.iter().filter(|o| o.message_matched).count();
    println!("conformance: {passed}/{total} passed");
    println!("conformance: {messages}/{error_cases} error messages match GitHub's text");

    let failing: BTreeSet<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect();
    let expected: BTreeSet<&str> = EXPECTED_FAILURES.iter().map(|(name, _)| *name).collect();
    for o in outcomes
        .iter()
        .filter(|o| !o.passed && !expected.contains(o.name.as_str()))
    {
        println!("FAIL {}: {}", o.name, o.detail);
    }
    for o in outcomes
        .iter()
        .filter(|o| o.passed && o.detail.starts_with("error case") && !o.message_matched)
    {
        println!("message differs (allowed) {}: {}", o.name, o.detail);
    }
    for fixed in expected.difference(&failing) {
        println!("NOW PASSING (remove from EXPECTED_FAILURES): {fixed}");
    }
    assert!(total > 1000, "only {total} cases found");
    assert_eq!(
        failing, expected,
        "conformance failures differ from EXPECTED_FAILURES"
    );
}

fn data_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        28,
        "expected GitHub's 28 data files in {}",
        dir.display()
    );
    files
}

fn run_file(path: &Path) -> Vec<Outcome> {
    let file = path.file_stem().unwrap().to_string_lossy().into_owned();
    let data: IndexMap<String, Vec<Json>> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut outcomes = Vec::new();
    for (group, cases) in &data {
        for (i, case) in cases.iter().enumerate() {
            let name = format!("{file}/{group}#{i}");
            outcomes.push(run_case(name, case));
        }
    }
    outcomes
}

fn run_case(name: String, case: &Json) -> Outcome {
    let src = case["expr"].as_str().unwrap();
    let contexts: IndexMap<String, Value> = case
        .get("contexts")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), Value::from_json(v)))
                .collect()
        })
        .unwrap_or_default();
    let names: Vec<&str> = contexts.keys().map(String::as_str).collect();
    let opts = ParseOptions {
        named_values: if names.is_empty() {
            NO_CONTEXTS
        } else {
            &names
        },
        extra_functions: &[],
    };
    let host = MapHost::from(contexts.clone());

    let actual = match parse(src, &opts) {
        Err(e) => Err((stage(e.kind), e.message)),
        Ok(expr) => evaluate(&expr, &host).map_err(|e| ("evaluation", e.message)),
    };
    let (passed, message_matched, detail) = match (case.get("err"), actual) {
        (Some(err), Err((stage, message))) => {
            let (kind, text) = (
                err["kind"].as_str().unwrap(),
                err["value"].as_str().unwrap(),
            );
            let detail = format!(
                "error case {src:?}: expected {kind} error {text:?}, got {stage} error {message:?}"
            );
            (
                kind == stage,
                kind == stage && message.starts_with(text),
                detail,
            )
        }
        (Some(err), Ok(value)) => {
            let detail = format!(
                "error case {src:?}: expected {err}, got {}",
                describe(&value)
            );
            (false, false, detail)
        }
        (None, actual) => {
            let expected = &case["result"];
            let detail = match &actual {
                Ok(value) => format!("{src:?}: expected {expected}, got {}", describe(value)),
                Err((stage, message)) => {
                    format!("{src:?}: expected {expected}, got {stage} error {message:?}")
                }
            };
            let passed = actual.as_ref().is_ok_and(|value| {
                expected["kind"].as_str() == Some(value.kind_name())
                    && same(value, &expected["value"])
            });
            (passed, false, detail)
        }
    };
    Outcome {
        name,
        passed,
        message_matched,
        detail,
    }
}

fn stage(kind: ParseErrorKind) -> &'static str {
    match kind {
        ParseErrorKind::Lexing => "lexing",
        ParseErrorKind::Parsing => "parsing",
    }
}

fn describe(value: &Value) -> String {
    format!("{} {}", value.kind_name(), value.to_json())
}

/// Deep comparison; numbers as f64, object keys exactly (they come from the data).
fn same(actual: &Value, expected: &Json) -> bool {
    match (actual, expected) {
        (Value::Null, Json::Null) => true,
        (Value::Bool(a), Json::Bool(b)) => a == b,
        (Value::Number(a), Json::Number(b)) => b.as_f64().is_some_and(|b| *a == b),
        (Value::String(a), Json::String(b)) => a == b,
        (Value::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Object(a), Json::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
        }
        _ => false,
    }
}
