//! What `kiln ci run --job` and `--matrix` keep of a workflow before it runs.
//!
//! `--job` names a job by its id, or one leg of a matrix by the name GitHub shows for it
//! (`build (linux, 1)`, the values of an object or list written out as GitHub writes them; see
//! `kiln_pipelines::plan::display_name`). `--matrix KEY=VALUE` keeps the legs where a vector's
//! value is VALUE: a scalar by its text, an object or list by its JSON or by the text its job
//! name shows (`cfg=linux, 1`), and a field inside one by a dotted path (`cfg.os=linux`,
//! `flags.0=-O2`).

use std::collections::BTreeSet;

use indexmap::IndexMap;
use kiln_expr::Value;
use kiln_pipelines::plan::{self, Leg};
use kiln_pipelines::workflow::{Job, Matrix, MatrixTable, Vector, Workflow};

use crate::ops::Failure;

/// Keeps the job `job` names (an id, or a matrix leg's display name) and the jobs it needs.
pub(super) fn select_job(workflow: &mut Workflow, job: &str) -> Result<(), Failure> {
    let id = if workflow.jobs.contains_key(job) {
        job.to_owned()
    } else {
        select_leg(workflow, job)?
    };
    let mut keep = BTreeSet::new();
    let mut stack = vec![id];
    while let Some(j) = stack.pop() {
        if !keep.insert(j.clone()) {
            continue;
        }
        if let Some(found) = workflow.jobs.get(&j) {
            stack.extend(found.needs.iter().map(|n| n.name.clone()));
        }
    }
    workflow.jobs.retain(|id, _| keep.contains(id));
    Ok(())
}

/// The job one of whose legs is named `name`, its matrix narrowed to that leg.
fn select_leg(workflow: &mut Workflow, name: &str) -> Result<String, Failure> {
    let mut found = Vec::new();
    let mut named_legs = Vec::new();
    for (id, job) in &workflow.jobs {
        let Some((base, table)) = literal_matrix(job) else {
            continue;
        };
        let Ok(legs) = legs_of(table) else {
            continue;
        };
        for leg in legs {
            let shown = plan::display_name(&base, false, Some(&leg));
            if shown == name {
                found.push((id.clone(), leg));
            } else if named_legs.len() < 6 {
                named_legs.push(shown);
            }
        }
    }
    let (id, leg) = match found.len() {
        1 => found.remove(0),
        0 => {
            let mut message = format!(
                "error: the workflow has no job `{name}`; its jobs are: {}",
                workflow.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            if !named_legs.is_empty() {
                message.push_str(&format!(
                    "\n(a matrix leg is named as GitHub names it, e.g. `{}`)",
                    named_legs.join("`, `")
                ));
            }
            return Err(Failure::Refused(message));
        }
        n => {
            return Err(Failure::Refused(format!(
                "error: {n} matrix legs are named `{name}`; choose one with --job {} and --matrix KEY=VALUE",
                found[0].0
            )));
        }
    };
    if let Some(Matrix::Table(table)) = workflow
        .jobs
        .get_mut(&id)
        .and_then(|j| j.strategy.as_mut())
        .and_then(|s| s.matrix.as_mut())
    {
        narrow_to(table, &leg);
    }
    Ok(id)
}

/// A job's default display name and its matrix, when the matrix is written out in full (no
/// expression gives a vector, `include` or `exclude`) and the job's name does not use it.
fn literal_matrix(job: &Job) -> Option<(String, &MatrixTable)> {
    let base = match &job.name {
        Some(n) if n.text.contains("${{") => return None,
        Some(n) => n.text.clone(),
        None => job.id.name.clone(),
    };
    match job.strategy.as_ref()?.matrix.as_ref()? {
        Matrix::Table(table) => Some((base, table)),
        Matrix::Expr(_) => None,
    }
}

/// The legs of a literal matrix.
fn legs_of(table: &MatrixTable) -> Result<Vec<Leg>, ()> {
    let list = |v: Option<&Vector>| match v {
        None => Ok(Vec::new()),
        Some(Vector::List(items, _)) => Ok(items.iter().map(Value::from_json).collect()),
        Some(Vector::Expr(_)) => Err(()),
    };
    let mut vectors = IndexMap::new();
    for (k, v) in &table.vectors {
        vectors.insert(k.clone(), Value::Array(list(Some(v))?));
    }
    let (include, exclude) = (list(table.include.as_ref())?, list(table.exclude.as_ref())?);
    plan::expand_legs(&vectors, &include, &exclude).map_err(|_| ())
}

/// Narrows a matrix to one of its legs, so that it expands to that leg alone, named and valued
/// as before: a leg of the product keeps its vectors' values and the `include` entries that
/// extend it; an `include` entry of its own becomes the whole matrix.
fn narrow_to(table: &mut MatrixTable, leg: &Leg) {
    let span = |v: Option<&Vector>| match v {
        Some(Vector::List(_, span)) => Some(*span),
        _ => None,
    };
    let include_span =
        span(table.include.as_ref()).or_else(|| table.vectors.values().find_map(|v| span(Some(v))));
    if leg.included {
        table.vectors.clear();
        table.exclude = None;
        if let Some(span) = include_span {
            table.include = Some(Vector::List(
                vec![Value::Object(leg.matrix.clone()).to_json()],
                span,
            ));
        }
        return;
    }
    for (key, vector) in table.vectors.iter_mut() {
        if let (Vector::List(items, _), Some(value)) = (vector, leg.matrix.get(key)) {
            *items = vec![value.to_json()];
        }
    }
    let vector_keys: Vec<String> = table.vectors.keys().cloned().collect();
    if let Some(Vector::List(items, _)) = &mut table.include {
        items.retain(|entry| {
            vector_keys.iter().all(|k| match entry.get(k) {
                None => true,
                Some(v) => leg.matrix.get(k) == Some(&Value::from_json(v)),
            })
        });
    }
}

/// Narrows matrices to the legs where each `key` (a vector, or a dotted path inside its
/// values) names its value: literal vectors keep the matching values, and `include` entries
/// that would add another value of `key` are dropped. Every key must name a vector of some
/// job, so a typo is not a silent no-op.
pub(super) fn filter_matrix(
    workflow: &mut Workflow,
    filters: &IndexMap<String, String>,
) -> Result<(), Failure> {
    let mut used = BTreeSet::new();
    for job in workflow.jobs.values_mut() {
        let Some(strategy) = job.strategy.as_mut() else {
            continue;
        };
        let Some(matrix) = strategy.matrix.as_mut() else {
            continue;
        };
        let Matrix::Table(table) = matrix else {
            if !filters.is_empty() {
                return Err(Failure::Refused(format!(
                    "error: job `{}` computes its whole matrix with an expression; --matrix cannot filter it",
                    job.id.name
                )));
            }
            continue;
        };
        for (key, want) in filters {
            let (vector, path) = key
                .split_once('.')
                .map_or((key.as_str(), None), |(v, p)| (v, Some(p)));
            let named = |value: &serde_json::Value| {
                let mut one = IndexMap::new();
                one.insert(vector.to_owned(), Value::from_json(value));
                let path = path.map_or_else(|| vector.to_owned(), |p| format!("{vector}.{p}"));
                plan::value_at(&one, &path).is_some_and(|v| plan::value_named(v, want))
            };
            if let Some(list) = table.vectors.get_mut(vector) {
                used.insert(key.clone());
                match list {
                    Vector::List(items, _) => {
                        items.retain(|v| named(v));
                        if items.is_empty() {
                            return Err(Failure::Refused(format!(
                                "error: job `{}` has no matrix value {key}={want}",
                                job.id.name
                            )));
                        }
                    }
                    Vector::Expr(_) => {
                        return Err(Failure::Refused(format!(
                            "error: job `{}` computes matrix vector `{vector}` with an expression; --matrix cannot filter it",
                            job.id.name
                        )));
                    }
                }
            }
            if let Some(Vector::List(items, _)) = &mut table.include {
                items.retain(|entry| entry.get(vector).is_none_or(&named));
                if table.vectors.is_empty() && !items.is_empty() {
                    used.insert(key.clone());
                }
            }
        }
    }
    if let Some(unused) = filters.keys().find(|k| !used.contains(*k)) {
        return Err(Failure::Refused(format!(
            "error: no job of the workflow has a matrix vector `{unused}`"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Workflow, Failure> {
        kiln_pipelines::parse_workflow(Path::new("w.yml"), text)
            .map(|(w, _)| w)
            .map_err(|e| Failure::Invalid(e.to_string()))
    }

    /// The legs the job `id` would run, by name.
    fn leg_names(w: &Workflow, id: &str) -> Vec<String> {
        w.jobs
            .get(id)
            .and_then(literal_matrix)
            .and_then(|(base, table)| {
                legs_of(table).ok().map(|legs| {
                    legs.iter()
                        .map(|l| plan::display_name(&base, false, Some(l)))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    #[test]
    fn job_selection_keeps_what_is_needed() -> Result<(), Failure> {
        let mut w = parse(
            "on: push\njobs:\n  a: { runs-on: x, steps: [ { run: 'true' } ] }\n  b: { runs-on: x, needs: a, steps: [ { run: 'true' } ] }\n  c: { runs-on: x, steps: [ { run: 'true' } ] }\n",
        )?;
        select_job(&mut w, "b")?;
        assert_eq!(w.jobs.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
        assert!(select_job(&mut w, "zz").is_err());
        Ok(())
    }

    #[test]
    fn matrix_filter_narrows_vectors_and_rejects_unknown_keys() -> Result<(), Failure> {
        let mut w = parse(
            "on: push\njobs:\n  t:\n    runs-on: x\n    strategy: { matrix: { s: [a, b, c], n: [1, 2] } }\n    steps: [ { run: 'true' } ]\n",
        )?;
        let mut f = IndexMap::new();
        f.insert("s".to_owned(), "b".to_owned());
        f.insert("n".to_owned(), "2".to_owned());
        filter_matrix(&mut w, &f)?;
        assert_eq!(leg_names(&w, "t"), ["t (b, 2)"]);
        let mut bad = IndexMap::new();
        bad.insert("nope".to_owned(), "1".to_owned());
        assert!(filter_matrix(&mut w, &bad).is_err());
        Ok(())
    }

    const OBJECTS: &str = r#"
on: push
jobs:
  build:
    runs-on: x
    strategy:
      matrix:
        cfg: [{ os: linux, v: 1 }, { os: mac, v: 2 }]
        flags: [[-O2, -g], [-O0]]
        include:
          - cfg: { os: mac, v: 2 }
            extra: yes
          - cfg: { os: bsd, v: 3 }
            flags: [-Os]
    steps: [ { run: 'true' } ]
"#;

    /// Object and list values: the legs are named as GitHub names them, and `--job` takes
    /// those names, `--matrix` a dotted path, the JSON or the shown text.
    #[test]
    fn object_and_list_values_are_selected_by_name_path_or_json() -> Result<(), Failure> {
        let w = parse(OBJECTS)?;
        assert_eq!(
            leg_names(&w, "build"),
            [
                "build (linux, 1, -O2, -g)",
                "build (linux, 1, -O0)",
                "build (mac, 2, -O2, -g)",
                "build (mac, 2, -O0)",
                "build (bsd, 3, -Os)",
            ]
        );
        let mut one = w.clone();
        select_job(&mut one, "build (mac, 2, -O0)")?;
        assert_eq!(leg_names(&one, "build"), ["build (mac, 2, -O0)"]);
        let mut alone = w.clone();
        select_job(&mut alone, "build (bsd, 3, -Os)")?;
        assert_eq!(leg_names(&alone, "build"), ["build (bsd, 3, -Os)"]);
        let Err(Failure::Refused(message)) = select_job(&mut w.clone(), "build (nope)") else {
            return Err(Failure::State("an unknown leg was accepted".into()));
        };
        assert!(message.contains("`build (linux, 1, -O2, -g)`"), "{message}");
        for (key, value, left) in [
            (
                "cfg.os",
                "linux",
                vec!["build (linux, 1, -O2, -g)", "build (linux, 1, -O0)"],
            ),
            (
                "cfg",
                r#"{"v": 2, "os": "mac"}"#,
                vec!["build (mac, 2, -O2, -g)", "build (mac, 2, -O0)"],
            ),
            (
                "flags",
                "-O2, -g",
                vec!["build (linux, 1, -O2, -g)", "build (mac, 2, -O2, -g)"],
            ),
            (
                "flags.0",
                "-O0",
                vec!["build (linux, 1, -O0)", "build (mac, 2, -O0)"],
            ),
        ] {
            let mut narrowed = w.clone();
            let mut f = IndexMap::new();
            f.insert(key.to_owned(), value.to_owned());
            filter_matrix(&mut narrowed, &f)?;
            assert_eq!(leg_names(&narrowed, "build"), left, "{key}={value}");
        }
        Ok(())
    }
}
