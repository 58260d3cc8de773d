//! The parameters of one run: given values (`--param k=v`, a calling step's `params:`) win,
//! then the labels of the alert that triggered it (an SLO alert on a service carries
//! `service=api`), then the declared defaults. Every value is checked against its type.

use std::collections::BTreeMap;

use kiln_spec::runbooks::{ParamType, RunbookDecl};

/// Why a run's parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// A value for a parameter the runbook does not declare.
    #[error("runbook `{runbook}` has no parameter `{name}`")]
    Unknown {
        /// The runbook.
        runbook: String,
        /// The parameter given.
        name: String,
    },
    /// A required parameter without a value.
    #[error("runbook `{runbook}` needs the parameter `{name}` (--param {name}=...)")]
    Missing {
        /// The runbook.
        runbook: String,
        /// The parameter.
        name: String,
    },
    /// A value of the wrong type.
    #[error("parameter `{name}` of runbook `{runbook}`: {why}")]
    Mistyped {
        /// The runbook.
        runbook: String,
        /// The parameter.
        name: String,
        /// What is wrong.
        why: String,
    },
    /// A service parameter naming no service of the stack.
    #[error("parameter `{name}` of runbook `{runbook}`: no service named `{service}`")]
    UnknownService {
        /// The runbook.
        runbook: String,
        /// The parameter.
        name: String,
        /// The value.
        service: String,
    },
}

/// The values of every declared parameter for one run.
pub fn resolve_params(
    runbook: &RunbookDecl,
    given: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
    services: &[String],
) -> Result<BTreeMap<String, String>, ParamError> {
    if let Some(name) = given.keys().find(|k| !runbook.params.contains_key(*k)) {
        return Err(ParamError::Unknown {
            runbook: runbook.name.clone(),
            name: name.clone(),
        });
    }
    let mut out = BTreeMap::new();
    for (name, decl) in &runbook.params {
        let value = given
            .get(name)
            .or_else(|| labels.get(name))
            .or(decl.default.as_ref());
        let value = match value {
            Some(v) => v.clone(),
            None if decl.required => {
                return Err(ParamError::Missing {
                    runbook: runbook.name.clone(),
                    name: name.clone(),
                });
            }
            None => String::new(),
        };
        if !value.is_empty() || decl.required {
            decl.ty
                .accepts(&value)
                .map_err(|why| ParamError::Mistyped {
                    runbook: runbook.name.clone(),
                    name: name.clone(),
                    why,
                })?;
        }
        if decl.ty == ParamType::Service && !value.is_empty() && !services.contains(&value) {
            return Err(ParamError::UnknownService {
                runbook: runbook.name.clone(),
                name: name.clone(),
                service: value,
            });
        }
        out.insert(name.clone(), value);
    }
    Ok(out)
}

/// What a run acts on, for the guards: the value of its first `service` parameter, or the
/// runbook itself when it has none.
pub fn target_of(runbook: &RunbookDecl, params: &BTreeMap<String, String>) -> String {
    runbook
        .target_param()
        .and_then(|p| params.get(p))
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| format!("runbook:{}", runbook.name))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kiln_spec::runbooks::{Guards, ParamDecl};
    use kiln_spec::source::{FileId, Span};

    pub(crate) fn runbook(params: &[(&str, ParamType, Option<&str>, bool)]) -> RunbookDecl {
        RunbookDecl {
            name: "fix".into(),
            description: String::new(),
            params: params
                .iter()
                .map(|(n, ty, default, required)| {
                    (
                        (*n).to_owned(),
                        ParamDecl {
                            ty: *ty,
                            default: default.map(str::to_owned),
                            required: *required,
                        },
                    )
                })
                .collect(),
            steps: Vec::new(),
            guards: Guards::default(),
            span: Span::new(FileId(0), 0, 0),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn given_values_win_over_alert_labels_and_defaults() {
        let rb = runbook(&[
            ("service", ParamType::Service, Some("api"), false),
            ("replicas", ParamType::Int, Some("2"), false),
        ]);
        let services = vec!["api".to_owned(), "web".to_owned()];
        let from_label = resolve_params(&rb, &map(&[]), &map(&[("service", "web")]), &services);
        assert_eq!(
            from_label.as_ref().map(|p| p["service"].as_str()),
            Ok("web")
        );
        let given = resolve_params(
            &rb,
            &map(&[("replicas", "5")]),
            &map(&[("replicas", "9")]),
            &services,
        );
        assert_eq!(given.map(|p| p["replicas"].clone()), Ok("5".to_owned()));
        assert_eq!(target_of(&rb, &map(&[("service", "api")])), "api");
    }

    #[test]
    fn unknown_missing_mistyped_and_unknown_services_are_refused() {
        let rb = runbook(&[
            ("service", ParamType::Service, None, true),
            ("replicas", ParamType::Int, None, false),
        ]);
        let services = vec!["api".to_owned()];
        let none = map(&[]);
        assert!(matches!(
            resolve_params(&rb, &map(&[("colour", "red")]), &none, &services),
            Err(ParamError::Unknown { .. })
        ));
        assert!(matches!(
            resolve_params(&rb, &none, &none, &services),
            Err(ParamError::Missing { .. })
        ));
        assert!(matches!(
            resolve_params(
                &rb,
                &map(&[("service", "api"), ("replicas", "x")]),
                &none,
                &services
            ),
            Err(ParamError::Mistyped { .. })
        ));
        assert!(matches!(
            resolve_params(&rb, &map(&[("service", "db")]), &none, &services),
            Err(ParamError::UnknownService { .. })
        ));
        assert_eq!(target_of(&runbook(&[]), &none), "runbook:fix");
    }
}
