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

#[test]
fn ingress_limits_and_route_timeouts_load() {
    let stack = load(
        &fs(&[(
            "stack/kiln.yaml",
            "name: demo\ningress: { listen: 8080, header_timeout: 10s, idle_timeout: 2m, send_timeout: 30s, max_connections: 512 }\nservices:\n  web: { run: \"true\" }\nroutes:\n  - { host: shop, service: web, body_timeout: 20s, idle_timeout: 5m, tunnel_timeout: 2h }\n",
        )]),
        "stack/kiln.yaml".as_ref(),
    )
    .unwrap_or_else(|f| panic!("{:#?}", f.diagnostics));
    let limits = stack.ingress_limits;
    assert_eq!(limits.header_timeout_ms, Some(10_000));
    assert_eq!(limits.idle_timeout_ms, Some(120_000));
    assert_eq!(limits.send_timeout_ms, Some(30_000));
    assert_eq!(limits.max_connections, Some(512));
}

#[test]
fn bad_ingress_limits_are_each_reported() {
    let found = codes(&[(
        "stack/kiln.yaml",
        "name: demo\ningress: { header_timeout: 0s, send_timeout: soon, max_connections: 0, idle: 5s }\n",
    )]);
    let at = |path: &str| found.iter().any(|f| f.1 == path);
    assert!(at("ingress.header_timeout"), "{found:?}");
    assert!(at("ingress.send_timeout"), "{found:?}");
    assert!(at("ingress.max_connections"), "{found:?}");
    assert_eq!(found.len(), 4, "and the unknown key: {found:?}");
}

#[test]
fn zero_route_time_limits_are_each_reported() {
    let found = codes(&[(
        "stack/kiln.yaml",
        "name: demo\nservices:\n  web: { run: \"true\" }\nroutes:\n  - { host: shop, service: web, timeout: 0s, body_timeout: 0ms, idle_timeout: 0s, tunnel_timeout: 0h }\n  - { host: ok, service: web, timeout: 1s }\n",
    )]);
    for key in ["timeout", "body_timeout", "idle_timeout", "tunnel_timeout"] {
        let path = format!("routes.shop.{key}");
        assert!(found.iter().any(|f| f.1 == path), "{key}: {found:?}");
    }
    assert_eq!(found.len(), 4, "{found:?}");
}
