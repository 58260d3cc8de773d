//! A rule as the evaluator runs it: one PromQL expression with its `for`, `keep_firing_for`,
//! labels and annotation templates. `alerts:` entries map to rules one to one, except SLOs,
//! which become several (see `slo.rs`).

use kiln_spec::alerting::{Alerting, RuleDecl};

use crate::LabelSet;

/// One alerting rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The `alertname` label.
    pub name: String,
    /// The group it is exported in (`kiln` for `expr:` alerts, `slo:NAME` for an SLO's).
    pub group: String,
    /// The PromQL expression; each element of its result is an alert.
    pub expr: String,
    /// How long an element must be present before it fires (ms).
    pub for_ms: u64,
    /// How long a firing alert keeps firing once its element is gone (ms).
    pub keep_firing_for_ms: u64,
    /// Labels added to each alert (`severity` among them).
    pub labels: LabelSet,
    /// Annotation templates.
    pub annotations: LabelSet,
    /// The runbook named by the alert (only recorded for now).
    pub runbook: Option<String>,
}

impl Rule {
    /// What identifies the rule's alerts across restarts: a fingerprint of its name, group,
    /// expression, `for`, `keep_firing_for` and labels. Annotations and the runbook are left
    /// out: changing them does not make an alert a different one.
    pub fn identity(&self) -> String {
        let mut parts: LabelSet = [
            ("name", self.name.clone()),
            ("group", self.group.clone()),
            ("expr", self.expr.clone()),
            ("for", self.for_ms.to_string()),
            ("keep_firing_for", self.keep_firing_for_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        parts.extend(
            self.labels
                .iter()
                .map(|(k, v)| (format!("label:{k}"), v.clone())),
        );
        crate::fingerprint(&parts)
    }
}

/// The group `expr:` alerts are exported in.
pub const EXPR_GROUP: &str = "kiln";

/// Every rule of a stack's `alerts:`, in declaration order.
pub fn rules(alerting: &Alerting) -> Vec<Rule> {
    let mut out = Vec::new();
    for alert in &alerting.alerts {
        match &alert.rule {
            RuleDecl::Expr {
                expr,
                for_ms,
                keep_firing_for_ms,
            } => {
                let mut labels = alert.labels.clone();
                if let Some(severity) = alert.severity {
                    labels.insert("severity".into(), severity.as_str().into());
                }
                out.push(Rule {
                    name: alert.name.clone(),
                    group: EXPR_GROUP.into(),
                    expr: expr.clone(),
                    for_ms: *for_ms,
                    keep_firing_for_ms: *keep_firing_for_ms,
                    labels,
                    annotations: alert.annotations.clone(),
                    runbook: alert.runbook.clone(),
                });
            }
            RuleDecl::Slo(slo) => out.extend(crate::slo::slo_rules(alert, slo)),
        }
    }
    out
}
