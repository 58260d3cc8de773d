//! Loading whole stacks from an in-memory tree.

use kiln_spec::{Code, MemoryFs, load};

fn fs(files: &[(&str, &str)]) -> MemoryFs {
    let mut fs = MemoryFs::new();
    for (p, t) in files {
        fs.add(*p, *t);
    }
    fs
}

fn codes(files: &[(&str, &str)]) -> Vec<(Code, String, String)> {
    match load(&fs(files), "stack/kiln.yaml".as_ref()) {
        Ok(_) => Vec::new(),
        Err(f) => f
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.code,
                    d.key_path.clone(),
                    d.span.map(|s| f.sources.location(s)).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

#[test]
fn a_valid_stack_loads_with_dependencies() {
    let stack = load(
        &fs(&[
            (
                "stack/kiln.yaml",
                "name: demo\nvars: { team: platform }\nresources:\n  a: { kind: exec, create: \"echo hi\" }\n  b:\n    kind: file\n    path: out/b\n    content: \"${{ vars.team }} ${{ resources.a.outputs.x }}\"\nmodules:\n  m: { source: ./mod, inputs: { greeting: \"${{ resources.b.outputs.path }}\" } }\n",
            ),
            (
                "stack/mod/kiln.yaml",
                "inputs: { greeting: { type: string } }\nresources:\n  f: { kind: file, path: out/f, content: \"${{ inputs.greeting }}\" }\noutputs: { path: \"${{ resources.f.outputs.path }}\" }\n",
            ),
        ]),
        "stack/kiln.yaml".as_ref(),
    )
    .unwrap_or_else(|f| panic!("{:#?}", f.diagnostics));
    assert_eq!(stack.name, "demo");
    let b = &stack.resources["resources.b"];
    assert!(b.depends_on.contains_key("resources.a"));
    let f = &stack.resources["modules.m.resources.f"];
    assert!(
        f.depends_on.contains_key("resources.b"),
        "{:?}",
        f.depends_on
    );
}

#[test]
fn every_mistake_is_reported_at_once() {
    let found = codes(&[(
        "stack/kiln.yaml",
        "name: demo\nresorces: {}\nresources:\n  a: { kind: file, pth: x, content: y }\n  b: { kind: exec, create: x, timeout: 5 }\n  c: { kind: file, path: x, content: \"${{ vars.nope }}\" }\n",
    )]);
    let kinds: Vec<Code> = found.iter().map(|f| f.0).collect();
    assert!(kinds.contains(&Code::UnknownKey), "{found:?}");
    assert!(kinds.contains(&Code::MissingKey), "{found:?}");
    assert!(kinds.contains(&Code::WrongType), "{found:?}");
    assert!(found.len() >= 4, "{found:?}");
}

#[test]
fn cycles_name_the_whole_path() {
    let found = load(
        &fs(&[(
            "stack/kiln.yaml",
            "name: demo\nresources:\n  a: { kind: exec, create: \"echo ${{ resources.b.outputs.x }}\" }\n  b: { kind: exec, create: \"echo ${{ resources.c.outputs.x }}\" }\n  c: { kind: exec, create: \"echo ${{ resources.a.outputs.x }}\" }\n",
        )]),
        "stack/kiln.yaml".as_ref(),
    )
    .unwrap_err();
    assert_eq!(found.diagnostics.len(), 1, "{:#?}", found.diagnostics);
    assert_eq!(
        found.diagnostics[0].message,
        "dependency cycle: resources.a → resources.b → resources.c → resources.a"
    );
    assert_eq!(found.diagnostics[0].related.len(), 2);
}
