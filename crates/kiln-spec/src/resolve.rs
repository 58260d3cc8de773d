//! References between things: every `${{ }}` path is checked against what exists, turned into
//! dependency edges between resources, and the resulting graph is checked for cycles.

use std::collections::{BTreeMap, BTreeSet};

use crate::compile::{View, text_span};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{ScopeId, Value};
use crate::schema;
use crate::source::Span;
use crate::suggest::closest;

/// Deepest chain of module inputs/outputs followed while resolving one reference.
const MAX_HOPS: usize = 64;

/// Resolves references and records dependency edges; reports unknown names and cycles.
pub(crate) fn resolve(view: &mut View<'_>, diags: &mut Diagnostics) {
    let addresses: Vec<String> = view.resources.keys().cloned().collect();
    for address in &addresses {
        let (scope, templates) = {
            let r = &view.resources[address];
            let templates: Vec<(String, Span, Vec<kiln_expr::Reference>)> = r
                .attrs
                .values()
                .chain(r.rendered.values())
                .flat_map(Value::templates)
                .map(|(t, text, span)| (text.to_owned(), span, t.references()))
                .collect();
            (r.scope, templates)
        };
        let mut edges: BTreeMap<String, Span> = BTreeMap::new();
        for (text, span, refs) in templates {
            for reference in refs {
                let at = text_span(view.sources, span, &text, reference.offset, reference.len);
                match targets(view, scope, &reference.path, 0) {
                    Ok(found) => {
                        for target in found {
                            edges.entry(target).or_insert(at);
                        }
                    }
                    Err((message, help)) => {
                        let d = diags.push_mut(
                            Diagnostic::new(Code::UnknownReference, at, address.clone(), message)
                                .label("unknown reference"),
                        );
                        d.help = help;
                    }
                }
            }
        }
        let explicit: Vec<(String, Span)> = view.resources[address]
            .depends_on
            .iter()
            .map(|(a, s)| (a.clone(), *s))
            .collect();
        for (target, span) in explicit {
            if !view.resources.contains_key(&target) {
                let is_route = view.resources[address].kind == "route";
                let (key, message) = if is_route {
                    (
                        format!("{address}.service"),
                        format!("the route sends traffic to `{target}`, which does not exist"),
                    )
                } else {
                    (
                        format!("{address}.depends_on"),
                        format!("`depends_on` names `{target}`, which does not exist"),
                    )
                };
                let d = diags.push_mut(
                    Diagnostic::new(Code::UnknownReference, span, key, message)
                        .label("unknown resource"),
                );
                d.help = closest(&target, view.resources.keys().map(String::as_str))
                    .map(|b| format!("did you mean `{b}`?"));
            }
        }
        if let Some(r) = view.resources.get_mut(address) {
            r.depends_on.retain(|a, _| addresses.contains(a));
            for (target, span) in edges {
                r.depends_on.entry(target).or_insert(span);
            }
        }
    }
    check_conditions(view, diags);
    check_module_outputs(view, diags);
    if diags.is_empty() {
        report_cycles(view, diags);
    }
}

type Unresolved = (String, Option<String>);

/// The resources a reference path (seen from `scope`) depends on.
fn targets(
    view: &View<'_>,
    scope: ScopeId,
    path: &[String],
    hops: usize,
) -> Result<BTreeSet<String>, Unresolved> {
    if hops > MAX_HOPS {
        return Err((
            "references go through too many modules (a loop between module inputs and outputs?)"
                .into(),
            None,
        ));
    }
    let Some(head) = path.first() else {
        return Ok(BTreeSet::new());
    };
    let name = path.get(1);
    let lower = head.to_ascii_lowercase();
    let (scope, routes_prefix) = view.scopes[scope].reads(scope, &lower);
    let routes_prefix = routes_prefix.to_owned();
    let s = &view.scopes[scope];
    let root_or_environment = scope == 0 || s.environment.is_some();
    match lower.as_str() {
        "env" => Ok(BTreeSet::new()),
        "vars" | "secrets" if !root_or_environment => Err((
            format!("a module cannot read `{head}`"),
            Some("declare an input in the module and pass the value from the caller".into()),
        )),
        "vars" => known(name, view.vars.keys(), "var").map(|()| BTreeSet::new()),
        "secrets" => known(
            name,
            view.secrets.keys().filter(|k| !k.contains('.')),
            "secret",
        )
        .map(|()| BTreeSet::new()),
        "inputs" => {
            let Some(parent) = s.parent else {
                return Err((
                    "`inputs` can only be read inside a module".into(),
                    Some("at the top level, use `vars`".into()),
                ));
            };
            known(name, s.inputs.keys(), "input")?;
            match name.and_then(|n| s.inputs.get(n)) {
                Some(value) => value_targets(view, parent, value, hops + 1),
                None => Ok(BTreeSet::new()),
            }
        }
        "resources" => {
            let Some(name) = name else {
                return Ok(scope_resources(view, &s.prefix));
            };
            let address = format!("{}resources.{name}", s.prefix);
            let Some(resource) = view.resources.get(&address) else {
                let local: Vec<&str> = view
                    .resources
                    .keys()
                    .filter_map(|a| {
                        a.strip_prefix(&s.prefix)
                            .and_then(|r| r.strip_prefix("resources."))
                    })
                    .filter(|r| !r.contains('.'))
                    .collect();
                return Err((
                    format!("there is no resource `{name}`"),
                    closest(name, local).map(|b| format!("did you mean `resources.{b}`?")),
                ));
            };
            if let Some(field) = path.get(2) {
                let is_attr = schema::kind(&resource.kind).is_some_and(|k| k.attr(field).is_some());
                if field != "outputs" && !is_attr {
                    return Err((
                        format!("`{address}` has no `{field}`"),
                        Some(format!(
                            "read `{address}.outputs.NAME`, or one of its attributes"
                        )),
                    ));
                }
            }
            Ok(BTreeSet::from([address]))
        }
        "routes" => {
            let routes = format!("{routes_prefix}routes.");
            let Some(name) = name else {
                return Ok(scope_resources(view, &routes));
            };
            let address = format!("{routes}{name}");
            if !view.resources.contains_key(&address) {
                let names: Vec<&str> = view
                    .resources
                    .keys()
                    .filter_map(|a| a.strip_prefix(routes.as_str()))
                    .collect();
                return Err((
                    format!("there is no route `{name}`"),
                    closest(name, names).map(|b| format!("did you mean `routes.{b}`? (a route is named after its host and path, or its `name:`)")),
                ));
            }
            if let Some(field) = path.get(2)
                && !["url", "outputs"].contains(&field.as_str())
                && schema::ROUTE.attr(field).is_none()
            {
                return Err((
                    format!("`{address}` has no `{field}`"),
                    Some(format!("read `{address}.url`")),
                ));
            }
            Ok(BTreeSet::from([address]))
        }
        "services" => {
            let Some(name) = name else {
                return Ok(scope_resources(view, &format!("{}services.", s.prefix)));
            };
            let address = format!("{}services.{name}", s.prefix);
            if !view.resources.contains_key(&address) {
                let local: Vec<&str> = view
                    .resources
                    .keys()
                    .filter_map(|a| {
                        a.strip_prefix(&s.prefix)
                            .and_then(|r| r.strip_prefix("services."))
                    })
                    .filter(|r| !r.contains('.'))
                    .collect();
                return Err((
                    format!("there is no service `{name}`"),
                    closest(name, local).map(|b| format!("did you mean `services.{b}`?")),
                ));
            }
            if let Some(field) = path.get(2) {
                let is_attr = schema::SERVICE.attr(field).is_some();
                if !["url", "port", "ports", "outputs"].contains(&field.as_str()) && !is_attr {
                    return Err((
                        format!("`{address}` has no `{field}`"),
                        Some(format!(
                            "read `{address}.url`, `{address}.port` or one of its settings"
                        )),
                    ));
                }
            }
            Ok(BTreeSet::from([address]))
        }
        "modules" => {
            let Some(name) = name else {
                return Ok(scope_resources(view, &format!("{}modules.", s.prefix)));
            };
            let Some(&module) = s.modules.get(name) else {
                return Err((
                    format!("there is no module `{name}`"),
                    closest(name, s.modules.keys().map(String::as_str))
                        .map(|b| format!("did you mean `modules.{b}`?")),
                ));
            };
            let m = &view.scopes[module];
            match (path.get(2).map(String::as_str), path.get(3)) {
                (None, _) | (Some("outputs"), None) => Ok(scope_resources(view, &m.prefix)),
                (Some("outputs"), Some(output)) => match m.outputs.get(output) {
                    Some(value) => value_targets(view, module, value, hops + 1),
                    None => Err((
                        format!("module `{name}` has no output `{output}`"),
                        closest(output, m.outputs.keys().map(String::as_str))
                            .map(|b| format!("did you mean `{b}`?")),
                    )),
                },
                (Some(other), _) => Err((
                    format!("`modules.{name}.{other}`: a module exposes only `outputs`"),
                    Some(format!("write `modules.{name}.outputs.NAME`")),
                )),
            }
        }
        other => Err((format!("unknown name `{other}`"), None)),
    }
}

fn known<'a>(
    name: Option<&String>,
    keys: impl Iterator<Item = &'a String> + Clone,
    what: &str,
) -> Result<(), Unresolved> {
    let Some(name) = name else { return Ok(()) };
    if keys.clone().any(|k| k == name) {
        return Ok(());
    }
    let help = closest(name, keys.clone().map(String::as_str))
        .map(|b| format!("did you mean `{b}`?"))
        .or_else(|| {
            let all: Vec<&str> = keys.map(String::as_str).collect();
            Some(if all.is_empty() {
                format!("declare it under `{what}s:`")
            } else {
                format!("declared: {}", all.join(", "))
            })
        });
    Err((format!("there is no {what} `{name}`"), help))
}

fn scope_resources(view: &View<'_>, prefix: &str) -> BTreeSet<String> {
    view.resources
        .keys()
        .filter(|a| a.starts_with(prefix))
        .cloned()
        .collect()
}

fn value_targets(
    view: &View<'_>,
    scope: ScopeId,
    value: &Value,
    hops: usize,
) -> Result<BTreeSet<String>, Unresolved> {
    let mut out = BTreeSet::new();
    for (template, _, _) in value.templates() {
        for reference in template.references() {
            out.extend(targets(view, scope, &reference.path, hops)?);
        }
    }
    Ok(out)
}

/// `completed_successfully` only makes sense for a job, which ends.
fn check_conditions(view: &View<'_>, diags: &mut Diagnostics) {
    for resource in view.resources.values() {
        for (target, condition) in &resource.conditions {
            if *condition != crate::model::Condition::CompletedSuccessfully {
                continue;
            }
            let Some(dependency) = view.resources.get(target) else {
                continue;
            };
            let is_job = dependency.attrs.get("job").is_some_and(|v| {
                matches!(
                    v.kind,
                    crate::model::ValueKind::Literal(serde_json::Value::Bool(true))
                )
            });
            if !is_job {
                let span = resource
                    .depends_on
                    .get(target)
                    .copied()
                    .unwrap_or(resource.span);
                diags.push(
                    Diagnostic::new(Code::InvalidValue, span, format!("{}.depends_on", resource.address), format!("`{target}` never completes: it is not a job"))
                        .label("waits for completion")
                        .related(dependency.span, "declared here without `job: true`")
                        .help("mark it `job: true` (with `restart: on-failure` or `never`), or wait for `healthy` instead"),
                );
            }
        }
    }
}

/// Outputs are checked where they are declared, even when nothing reads them.
fn check_module_outputs(view: &View<'_>, diags: &mut Diagnostics) {
    for (id, scope) in view.scopes.iter().enumerate() {
        for (name, value) in &scope.outputs {
            for (template, text, span) in value.templates() {
                for reference in template.references() {
                    if let Err((message, help)) = targets(view, id, &reference.path, 0) {
                        let at =
                            text_span(view.sources, span, text, reference.offset, reference.len);
                        let d = diags.push_mut(
                            Diagnostic::new(
                                Code::UnknownReference,
                                at,
                                format!("{}outputs.{name}", scope.prefix),
                                message,
                            )
                            .label("unknown reference"),
                        );
                        d.help = help;
                    }
                }
            }
        }
    }
}

/// Finds every cycle (one per strongly connected component) and reports its full path.
fn report_cycles(view: &View<'_>, diags: &mut Diagnostics) {
    let index: BTreeMap<&str, usize> = view
        .resources
        .keys()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = view
        .resources
        .values()
        .map(|r| {
            r.depends_on
                .keys()
                .filter_map(|a| index.get(a.as_str()).copied())
                .collect()
        })
        .collect();
    for component in strongly_connected(&edges) {
        let single = component.len() == 1;
        let first = component[0];
        if single && !edges[first].contains(&first) {
            continue;
        }
        let cycle = cycle_path(&edges, &component);
        let names: Vec<&str> = cycle
            .iter()
            .map(|&i| view.resources.get_index(i).map_or("", |(a, _)| a.as_str()))
            .collect();
        let Some((_, start)) = view.resources.get_index(cycle[0]) else {
            continue;
        };
        let Some(&first_edge) = start
            .depends_on
            .get(names.get(1).copied().unwrap_or(names[0]))
        else {
            continue;
        };
        let mut d = Diagnostic::new(
            Code::Cycle,
            first_edge,
            start.address.clone(),
            format!("dependency cycle: {}", names.join(" → ")),
        )
        .label(format!(
            "{} depends on {}",
            names[0],
            names.get(1).unwrap_or(&names[0])
        ))
        .help("break the loop: remove one of these references or `depends_on` entries");
        for pair in names.windows(2).skip(1) {
            if let Some(span) = view
                .resources
                .get(pair[0])
                .and_then(|r| r.depends_on.get(pair[1]))
            {
                d = d.related(*span, format!("{} depends on {}", pair[0], pair[1]));
            }
        }
        diags.push(d);
    }
}

/// One cycle through the component, as node indices, first node repeated at the end.
pub(crate) fn cycle_path(edges: &[Vec<usize>], component: &[usize]) -> Vec<usize> {
    let start = component[0];
    let members: BTreeSet<usize> = component.iter().copied().collect();
    // Breadth-first search from start's successors back to start gives the shortest cycle.
    let mut previous: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in &edges[node] {
            if !members.contains(&next) {
                continue;
            }
            if next == start {
                let mut back = vec![node];
                let mut at = node;
                while at != start {
                    let Some(&p) = previous.get(&at) else { break };
                    at = p;
                    back.push(at);
                }
                back.reverse();
                back.push(start);
                return back;
            }
            if let std::collections::btree_map::Entry::Vacant(e) = previous.entry(next) {
                e.insert(node);
                queue.push_back(next);
            }
        }
    }
    vec![start, start]
}

/// Tarjan's algorithm, iterative so deep graphs cannot overflow the stack. Components come out
/// with their members sorted, in order of their smallest member.
pub(crate) fn strongly_connected(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = edges.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(top) = work.len().checked_sub(1) {
            let (node, child) = work[top];
            if child == 0 && index[node] == usize::MAX {
                index[node] = next_index;
                low[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if let Some(&next) = edges[node].get(child) {
                work[top].1 += 1;
                if index[next] == usize::MAX {
                    work.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                component.sort_unstable();
                out.push(component);
            }
        }
    }
    out.sort_by_key(|c| c[0]);
    out
}
