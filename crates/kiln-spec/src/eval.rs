//! Evaluating a resource's declared attributes into concrete values, given what is known now
//! (vars, secrets, environment, other resources' outputs). Pure: everything outside comes
//! through [`Context`].
//!
//! A value that reads the outputs of a resource not yet applied is *unknown* ("known after
//! apply"); a value that reads a secret is *sensitive*, and so is anything computed from it.

use std::collections::BTreeSet;

use kiln_expr::{Host, MapHost, Value as X};

use crate::model::{Resource, ScopeId, Stack, Value, ValueKind};
use crate::schema::{self, AttrType};
use crate::units;

/// Deepest chain of module inputs and outputs followed in one evaluation.
const MAX_HOPS: usize = 64;

/// What evaluation may read from outside the stack files.
pub trait Context {
    /// A variable's value (after command-line overrides).
    fn var(&self, name: &str) -> Option<serde_json::Value>;
    /// A secret's clear-text value.
    fn secret(&self, name: &str) -> Option<String>;
    /// An environment variable of the kiln process.
    fn env(&self, name: &str) -> Option<String>;
    /// What is known of a resource's outputs and attributes.
    fn resource(&self, address: &str) -> Known;
}

/// What is known of another resource when evaluating one that reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Known {
    /// Applied, with these attributes and outputs.
    Known {
        /// Its recorded attributes (clear text of non-sensitive ones).
        attributes: serde_json::Map<String, serde_json::Value>,
        /// Its outputs.
        outputs: serde_json::Map<String, serde_json::Value>,
        /// Whether its outputs carry secrets.
        sensitive: bool,
    },
    /// It will be created or changed by this plan: its values are known after apply.
    Unknown,
}

/// A resource's attributes after evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluated {
    /// Attribute values; an unknown attribute is absent here and listed in `unknown`.
    pub attrs: serde_json::Map<String, serde_json::Value>,
    /// Attributes known only after apply.
    pub unknown: BTreeSet<String>,
    /// Attributes derived from secrets.
    pub sensitive: BTreeSet<String>,
}

/// Evaluation failed: which attribute and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{address}.{attribute}: {message}")]
pub struct EvalFailure {
    /// The resource.
    pub address: String,
    /// The attribute.
    pub attribute: String,
    /// Why.
    pub message: String,
}

struct Out {
    value: Option<serde_json::Value>,
    sensitive: bool,
}

/// Evaluates every attribute of a resource.
pub fn evaluate_resource(
    stack: &Stack,
    resource: &Resource,
    cx: &dyn Context,
) -> Result<Evaluated, Vec<EvalFailure>> {
    let mut evaluated = Evaluated::default();
    let mut failures = Vec::new();
    let kind = schema::kind(&resource.kind);
    for (name, value) in &resource.attrs {
        let ty = kind
            .and_then(|k| k.attr(name))
            .map_or(AttrType::Any, |a| a.ty);
        let fail = |message: String| EvalFailure {
            address: resource.address.clone(),
            attribute: name.clone(),
            message,
        };
        let out = match eval_value(stack, resource.scope, value, cx, 0) {
            Ok(out) => out,
            Err(message) => {
                failures.push(fail(message));
                continue;
            }
        };
        if out.sensitive {
            evaluated.sensitive.insert(name.clone());
        }
        let Some(json) = out.value else {
            evaluated.unknown.insert(name.clone());
            continue;
        };
        match convert(ty, json) {
            Ok(json) => {
                evaluated.attrs.insert(name.clone(), json);
            }
            Err(message) => failures.push(fail(message)),
        }
    }
    render_template_file(stack, resource, cx, &mut evaluated, &mut failures);
    if failures.is_empty() {
        Ok(evaluated)
    } else {
        Err(failures)
    }
}

/// Attributes rendered from template files (read at load time) join the others.
fn render_template_file(
    stack: &Stack,
    resource: &Resource,
    cx: &dyn Context,
    evaluated: &mut Evaluated,
    failures: &mut Vec<EvalFailure>,
) {
    for (name, value) in &resource.rendered {
        match eval_value(stack, resource.scope, value, cx, 0) {
            Ok(Out {
                value: Some(v),
                sensitive,
            }) => {
                let content = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                evaluated
                    .attrs
                    .insert(name.clone(), serde_json::Value::String(content));
                if sensitive {
                    evaluated.sensitive.insert(name.clone());
                }
            }
            Ok(Out { value: None, .. }) => {
                evaluated.unknown.insert(name.clone());
            }
            Err(message) => failures.push(EvalFailure {
                address: resource.address.clone(),
                attribute: name.clone(),
                message,
            }),
        }
    }
}

/// Evaluates one declared output of a scope (the root's outputs are shown after apply).
pub fn evaluate_output(
    stack: &Stack,
    scope: ScopeId,
    name: &str,
    cx: &dyn Context,
) -> Result<(Option<serde_json::Value>, bool), String> {
    let Some(value) = stack.scopes.get(scope).and_then(|s| s.outputs.get(name)) else {
        return Err(format!("no output `{name}`"));
    };
    eval_value(stack, scope, value, cx, 0).map(|o| (o.value, o.sensitive))
}

fn eval_value(
    stack: &Stack,
    scope: ScopeId,
    value: &Value,
    cx: &dyn Context,
    hops: usize,
) -> Result<Out, String> {
    match &value.kind {
        ValueKind::Literal(json) => Ok(Out {
            value: Some(json.clone()),
            sensitive: false,
        }),
        ValueKind::Template { template, .. } => eval_template(stack, scope, template, cx, hops),
        ValueKind::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut sensitive = false;
            for item in items {
                let o = eval_value(stack, scope, item, cx, hops)?;
                sensitive |= o.sensitive;
                let Some(v) = o.value else {
                    return Ok(Out {
                        value: None,
                        sensitive,
                    });
                };
                out.push(v);
            }
            Ok(Out {
                value: Some(serde_json::Value::Array(out)),
                sensitive,
            })
        }
        ValueKind::Map(entries) => {
            let mut out = serde_json::Map::new();
            let mut sensitive = false;
            for (k, item) in entries {
                let o = eval_value(stack, scope, item, cx, hops)?;
                sensitive |= o.sensitive;
                let Some(v) = o.value else {
                    return Ok(Out {
                        value: None,
                        sensitive,
                    });
                };
                out.insert(k.clone(), v);
            }
            Ok(Out {
                value: Some(serde_json::Value::Object(out)),
                sensitive,
            })
        }
    }
}

/// Builds a host holding only what the template reads, then renders it.
fn eval_template(
    stack: &Stack,
    scope: ScopeId,
    template: &kiln_expr::Template,
    cx: &dyn Context,
    hops: usize,
) -> Result<Out, String> {
    if hops > MAX_HOPS {
        return Err("references go through too many modules".into());
    }
    let mut host = Contexts::default();
    for reference in template.references() {
        let known = host.add(stack, scope, &reference.path, cx, hops)?;
        if !known {
            return Ok(Out {
                value: None,
                sensitive: host.sensitive,
            });
        }
    }
    let value = template.render(&host.map).map_err(|e| e.message)?;
    Ok(Out {
        value: Some(value.to_json()),
        sensitive: host.sensitive,
    })
}

#[derive(Default)]
struct Contexts {
    map: MapHost,
    sensitive: bool,
}

impl Contexts {
    /// Adds what one reference path reads; false when the value is known only after apply.
    fn add(
        &mut self,
        stack: &Stack,
        scope: ScopeId,
        path: &[String],
        cx: &dyn Context,
        hops: usize,
    ) -> Result<bool, String> {
        let Some(head) = path.first() else {
            return Ok(true);
        };
        let head = head.to_ascii_lowercase();
        let Some(name) = path.get(1) else {
            return Err(format!(
                "`{head}` must be followed by a name, like `{head}.NAME`"
            ));
        };
        let (scope, routes_prefix) = stack.scopes[scope].reads(scope, &head);
        let here = &stack.scopes[scope];
        let value = match head.as_str() {
            "vars" => X::from_json(
                &here
                    .vars
                    .get(name)
                    .cloned()
                    .or_else(|| cx.var(name))
                    .unwrap_or(serde_json::Value::Null),
            ),
            "secrets" => {
                self.sensitive = true;
                // An environment may read the secret from its own source.
                let own = format!("{}secrets.{name}", here.prefix);
                let key = if here.environment.is_some() && stack.secrets.contains_key(&own) {
                    own.as_str()
                } else {
                    name.as_str()
                };
                X::String(
                    cx.secret(key)
                        .ok_or_else(|| format!("secret `{name}` has no value"))?,
                )
            }
            "env" => cx.env(name).map_or(X::Null, X::String),
            "inputs" => {
                let s = &stack.scopes[scope];
                let (Some(parent), Some(input)) = (s.parent, s.inputs.get(name)) else {
                    return Ok(true);
                };
                let out = eval_value(stack, parent, input, cx, hops + 1)?;
                self.sensitive |= out.sensitive;
                let Some(v) = out.value else { return Ok(false) };
                X::from_json(&v)
            }
            "resources" => {
                let address = format!("{}resources.{name}", stack.scopes[scope].prefix);
                match cx.resource(&address) {
                    Known::Unknown => return Ok(false),
                    Known::Known {
                        attributes,
                        outputs,
                        sensitive,
                    } => {
                        self.sensitive |= sensitive;
                        let mut object = attributes;
                        object.insert("outputs".into(), serde_json::Value::Object(outputs));
                        X::from_json(&serde_json::Value::Object(object))
                    }
                }
            }
            "services" | "routes" => {
                let address = if head == "routes" {
                    format!("{routes_prefix}routes.{name}")
                } else {
                    format!("{}services.{name}", stack.scopes[scope].prefix)
                };
                match cx.resource(&address) {
                    Known::Unknown => return Ok(false),
                    Known::Known {
                        attributes,
                        outputs,
                        sensitive,
                    } => {
                        self.sensitive |= sensitive;
                        let mut object = attributes;
                        for (k, v) in &outputs {
                            object.insert(k.clone(), v.clone());
                        }
                        object.insert("outputs".into(), serde_json::Value::Object(outputs));
                        X::from_json(&serde_json::Value::Object(object))
                    }
                }
            }
            "modules" => {
                let Some(&module) = stack.scopes[scope].modules.get(name) else {
                    return Ok(true);
                };
                let mut outputs = serde_json::Map::new();
                let wanted: Vec<&String> = match path.get(3) {
                    Some(o) => vec![o],
                    None => stack.scopes[module].outputs.keys().collect(),
                };
                for output in wanted {
                    let Some(value) = stack.scopes[module].outputs.get(output) else {
                        continue;
                    };
                    let out = eval_value(stack, module, value, cx, hops + 1)?;
                    self.sensitive |= out.sensitive;
                    let Some(v) = out.value else { return Ok(false) };
                    outputs.insert(output.clone(), v);
                }
                X::from_json(&serde_json::json!({ "outputs": outputs }))
            }
            _ => return Ok(true),
        };
        self.merge(&head, name, value);
        Ok(true)
    }

    fn merge(&mut self, head: &str, name: &str, value: X) {
        let mut object = match self.map.named_value(head) {
            Some(X::Object(o)) => o,
            _ => indexmap::IndexMap::new(),
        };
        object.insert(name.to_owned(), value);
        self.map.insert(head.to_owned(), X::Object(object));
    }
}

/// Normalises an evaluated value to the attribute's type, or says why it does not fit.
fn convert(ty: AttrType, json: serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    match (ty, json) {
        (AttrType::Duration, J::String(s)) => units::parse_duration(&s).map(J::from),
        (AttrType::Duration, J::Number(n)) => Ok(J::Number(n)),
        (
            AttrType::String | AttrType::Path | AttrType::TemplateFile | AttrType::FileMode,
            J::Number(n),
        ) => Ok(J::String(n.to_string())),
        (
            AttrType::String | AttrType::Path | AttrType::TemplateFile | AttrType::FileMode,
            J::Bool(b),
        ) => Ok(J::String(b.to_string())),
        (
            AttrType::String | AttrType::Path | AttrType::TemplateFile | AttrType::FileMode,
            J::String(s),
        ) => Ok(J::String(s)),
        (AttrType::Command, J::String(s)) if !s.trim().is_empty() => Ok(J::String(s)),
        (AttrType::Command, J::Array(a)) if !a.is_empty() && a.iter().all(J::is_string) => {
            Ok(J::Array(a))
        }
        (AttrType::List, J::Array(a)) => Ok(J::Array(a)),
        (AttrType::StringMap, J::Object(m)) => Ok(J::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        J::String(s) => s,
                        J::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, J::String(s))
                })
                .collect(),
        )),
        (AttrType::Any, v) => Ok(v),
        (AttrType::Bool, J::Bool(b)) => Ok(J::Bool(b)),
        (AttrType::Int { min, max }, J::Number(n))
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f >= min as f64 && f <= max as f64) =>
        {
            Ok(J::Number(n))
        }
        (AttrType::Number { min, max }, J::Number(n))
            if n.as_f64().is_some_and(|f| f >= min && f <= max) =>
        {
            Ok(J::Number(n))
        }
        (AttrType::Int { .. } | AttrType::Number { .. }, J::String(s))
            if s.trim().parse::<f64>().is_ok() =>
        {
            convert(ty, serde_json::from_str(s.trim()).unwrap_or(J::Null))
        }
        (AttrType::TrafficSteps, v @ J::Array(_)) => units::parse_traffic_steps(&v).map(J::from),
        (AttrType::Size, J::String(s)) => units::parse_size(&s).map(J::from),
        (AttrType::Size, J::Number(n)) => Ok(J::Number(n)),
        (AttrType::Enum(words), J::String(s)) if words.contains(&s.as_str()) => Ok(J::String(s)),
        (AttrType::Object(schema), J::Object(m)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let Some((_, field)) = schema.fields.iter().find(|(n, _)| *n == k) else {
                    return Err(format!("`{k}` is not a key of {}", schema.what));
                };
                out.insert(k, convert(*field, v)?);
            }
            Ok(J::Object(out))
        }
        (ty, v) => Err(format!(
            "evaluates to {}, expected {}",
            json_type(&v),
            ty.describe()
        )),
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}
