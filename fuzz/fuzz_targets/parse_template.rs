//! Feeds arbitrary UTF-8 to `Template::parse` and, when it parses, renders it against a small
//! host, to check that no input makes the parser or evaluator panic or overflow the stack.

#![no_main]

use kiln_expr::{MapHost, ParseOptions, Template, Value, WORKFLOW_FUNCTIONS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    let opts = ParseOptions {
        named_values: &[],
        extra_functions: WORKFLOW_FUNCTIONS,
    };
    let Ok(template) = Template::parse(data, &opts) else {
        return;
    };
    let _ = template.references();
    let mut host = MapHost::new();
    let context = serde_json_like();
    host.insert("github", context.clone())
        .insert("vars", context);
    let _ = template.render(&host);
});

/// A nested value so property access, filters and comparisons have something to walk.
fn serde_json_like() -> Value {
    let leaf = Value::Array(vec![
        Value::Null,
        Value::Bool(true),
        Value::Number(1.5),
        Value::from("x"),
    ]);
    let mut inner = indexmap_of(&[("a", leaf.clone()), ("B", Value::from("text"))]);
    if let Value::Object(map) = &mut inner {
        map.insert("list".into(), Value::Array(vec![leaf.clone(), leaf]));
    }
    indexmap_of(&[("event", inner), ("ref", Value::from("refs/heads/main"))])
}

fn indexmap_of(entries: &[(&str, Value)]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}
