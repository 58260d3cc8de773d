//! Property tests: no input makes parsing, templating or evaluation panic, and generated
//! well-formed expressions print to a canonical form that parses back to the same tree and
//! evaluates to the same value, deterministically.

use kiln_expr::{
    Expr, MapHost, ParseOptions, Template, Value, WORKFLOW_FUNCTIONS, evaluate, parse,
};
use proptest::prelude::*;

fn opts() -> ParseOptions<'static> {
    ParseOptions {
        named_values: &[],
        extra_functions: WORKFLOW_FUNCTIONS,
    }
}

fn host() -> MapHost {
    let json = serde_json::json!({
        "a": {"b": [1, "two", null, {"c": true}], "Name": "kiln"},
        "list": [{"c": 1}, {"c": "x"}, [3, 4]],
        "n": 2.5,
    });
    let mut host = MapHost::new();
    host.insert("ctx", Value::from_json(&json));
    host
}

/// Evaluation results compared through their debug form, so NaN equals NaN here. Errors are
/// compared by message: their spans differ between the original and the printed source.
fn eval_text(expr: &Expr, host: &MapHost) -> String {
    format!("{:?}", evaluate(expr, host).map_err(|e| e.message))
}

/// Source text of a well-formed expression over the `ctx` context.
fn expression() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        (-1000i32..1000).prop_map(|n| n.to_string()),
        (0u32..10_000).prop_map(|n| format!("{}.{}", n / 100, n % 100)),
        "[a-zA-Z0-9 '{}]{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
        prop_oneof![
            Just("ctx.a.b[1]"),
            Just("ctx['a'].NAME"),
            Just("ctx.list.*.c"),
            Just("ctx.a.b[*]"),
            Just("ctx.n"),
            Just("ctx.missing.deeper"),
        ]
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        let op = prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">="),
            Just("&&"),
            Just("||")
        ];
        prop_oneof![
            inner.clone().prop_map(|e| format!("!{e}")),
            inner.clone().prop_map(|e| format!("({e})")),
            (inner.clone(), op, inner.clone()).prop_map(|(l, op, r)| format!("{l} {op} {r}")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("contains({l}, {r})")),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| format!("startsWith({l}, {r})")),
            (inner.clone(), inner.clone())
                .prop_map(|(l, r)| format!("format('{{0}}-{{1}}', {l}, {r})")),
            inner
                .clone()
                .prop_map(|e| format!("join(ctx.list.*.c, {e})")),
            inner.clone().prop_map(|e| format!("toJSON({e})")),
            inner.clone().prop_map(|e| format!("fromJSON(toJSON({e}))")),
            (inner.clone(), inner.clone(), inner)
                .prop_map(|(p, a, b)| format!("case({p} == 1, {a}, {b})")),
        ]
    })
}

proptest! {
    // No regression files: this is an integration test without a lib.rs beside it.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

    #[test]
    fn parse_never_panics(src in any::<String>()) {
        let _ = parse(&src, &opts());
    }

    #[test]
    fn parse_and_eval_never_panic_on_expression_like_text(
        src in "[a-z0-9'()\\[\\].*!=<>&|, ]{0,48}"
    ) {
        if let Ok(expr) = parse(&src, &opts()) {
            let _ = evaluate(&expr, &host());
            let _ = expr.references();
        }
    }

    #[test]
    fn templates_never_panic(src in "(\\$\\{\\{|\\}\\}|[a-z.' ()]){0,24}") {
        if let Ok(template) = Template::parse(&src, &opts()) {
            let _ = template.render(&host());
            for r in template.references() {
                prop_assert!(r.offset + r.len <= src.len());
            }
        }
    }

    #[test]
    fn printing_round_trips_and_evaluation_is_deterministic(src in expression()) {
        let parsed = parse(&src, &opts());
        prop_assert!(parsed.is_ok(), "{src}: {parsed:?}");
        let Ok(expr) = parsed else { return Ok(()) };
        let printed = expr.to_string();
        let reparsed = parse(&printed, &opts());
        prop_assert!(reparsed.is_ok(), "{printed}: {reparsed:?}");
        let Ok(reparsed) = reparsed else { return Ok(()) };
        prop_assert_eq!(reparsed.to_string(), printed.clone());
        let host = host();
        let first = eval_text(&expr, &host);
        prop_assert_eq!(&first, &eval_text(&expr, &host));
        prop_assert_eq!(&first, &eval_text(&reparsed, &host), "{} vs {}", src, printed);
    }
}
