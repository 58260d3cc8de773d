//! Rules as a Prometheus rule file (`promtool check rules` accepts it): one group for the
//! `expr:` alerts and one per SLO, strings written as double-quoted YAML scalars.

use std::fmt::Write as _;

use crate::LabelSet;
use crate::rule::Rule;
use crate::slo::promql_duration;

/// The rule file, with each group evaluated every `interval_ms`.
pub fn prometheus_rule_file(rules: &[Rule], interval_ms: u64) -> String {
    let mut out = String::from("groups:\n");
    let mut groups: Vec<&str> = Vec::new();
    for rule in rules {
        if !groups.contains(&rule.group.as_str()) {
            groups.push(&rule.group);
        }
    }
    for group in groups {
        let _ = writeln!(out, "  - name: {}", quote(group));
        let _ = writeln!(out, "    interval: {}", promql_duration(interval_ms));
        out.push_str("    rules:\n");
        for rule in rules.iter().filter(|r| r.group == group) {
            let _ = writeln!(out, "      - alert: {}", quote(&rule.name));
            let _ = writeln!(out, "        expr: {}", quote(&rule.expr));
            if rule.for_ms > 0 {
                let _ = writeln!(out, "        for: {}", promql_duration(rule.for_ms));
            }
            if rule.keep_firing_for_ms > 0 {
                let _ = writeln!(
                    out,
                    "        keep_firing_for: {}",
                    promql_duration(rule.keep_firing_for_ms)
                );
            }
            map(&mut out, "labels", &rule.labels);
            let mut annotations = rule.annotations.clone();
            if let Some(runbook) = &rule.runbook {
                annotations
                    .entry("runbook".into())
                    .or_insert_with(|| runbook.clone());
            }
            map(&mut out, "annotations", &annotations);
        }
    }
    out
}

fn map(out: &mut String, key: &str, entries: &LabelSet) {
    if entries.is_empty() {
        return;
    }
    let _ = writeln!(out, "        {key}:");
    for (k, v) in entries {
        let _ = writeln!(out, "          {k}: {}", quote(v));
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_rules_with_quoted_strings() {
        let rule = Rule {
            name: "api-errors".into(),
            group: "kiln".into(),
            expr: "sum(rate(x{code_class=\"5xx\"}[1m])) > 0".into(),
            for_ms: 10_000,
            keep_firing_for_ms: 0,
            labels: [("severity".to_owned(), "page".to_owned())].into(),
            annotations: [("summary".to_owned(), "{{ $value }}: bad".to_owned())].into(),
            runbook: Some("restart".into()),
        };
        let text = prometheus_rule_file(&[rule], 5_000);
        assert_eq!(
            text,
            "groups:\n  - name: \"kiln\"\n    interval: 5s\n    rules:\n      - alert: \"api-errors\"\n        expr: \"sum(rate(x{code_class=\\\"5xx\\\"}[1m])) > 0\"\n        for: 10s\n        labels:\n          severity: \"page\"\n        annotations:\n          runbook: \"restart\"\n          summary: \"{{ $value }}: bad\"\n"
        );
    }
}
