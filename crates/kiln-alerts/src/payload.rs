//! Notification bodies: Alertmanager's webhook payload, version 4 (so existing receivers work
//! unchanged), and a Slack-compatible `{"text": ...}` made from it.

use serde::Serialize;
use serde_json::{Value, json};

use crate::evaluator::Alert;
use crate::lifecycle::Phase;
use crate::{LabelSet, rfc3339};

/// Whether a notified alert fires or has resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyStatus {
    /// Still firing.
    Firing,
    /// Resolved.
    Resolved,
}

impl NotifyStatus {
    /// The payload's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyStatus::Firing => "firing",
            NotifyStatus::Resolved => "resolved",
        }
    }
}

/// An alert as notified.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyAlert {
    /// Firing or resolved.
    pub status: NotifyStatus,
    /// Its labels.
    pub labels: LabelSet,
    /// Its annotations.
    pub annotations: LabelSet,
    /// When it became active (ms).
    pub starts_at: i64,
    /// When it resolved (ms).
    pub ends_at: Option<i64>,
    /// A link to the query that produced it.
    pub generator_url: String,
    /// Its identity.
    pub fingerprint: String,
}

impl NotifyAlert {
    /// The notification view of a firing or resolved alert (`None` for a pending one).
    pub fn of(alert: &Alert, generator_url: String) -> Option<NotifyAlert> {
        let status = match alert.phase {
            Phase::Firing => NotifyStatus::Firing,
            Phase::Resolved => NotifyStatus::Resolved,
            Phase::Inactive | Phase::Pending => return None,
        };
        Some(NotifyAlert {
            status,
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.active_at,
            ends_at: alert.resolved_at,
            generator_url,
            fingerprint: alert.fingerprint.clone(),
        })
    }
}

/// Alertmanager's version 4 webhook body for one group.
pub fn group_payload(
    receiver: &str,
    group_key: &str,
    group_labels: &LabelSet,
    alerts: &[NotifyAlert],
    external_url: &str,
) -> Value {
    let status = if alerts.iter().any(|a| a.status == NotifyStatus::Firing) {
        NotifyStatus::Firing
    } else {
        NotifyStatus::Resolved
    };
    let common = |pick: fn(&NotifyAlert) -> &LabelSet| -> LabelSet {
        let mut iter = alerts.iter().map(pick);
        let Some(first) = iter.next() else {
            return LabelSet::new();
        };
        let mut common = first.clone();
        for other in iter {
            common.retain(|k, v| other.get(k) == Some(v));
        }
        common
    };
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status.as_str(),
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common(|a| &a.labels),
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts.iter().map(|a| json!({
            "status": a.status.as_str(),
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": rfc3339(a.starts_at),
            // Alertmanager's zero time for an alert that has not ended.
            "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

/// A Slack incoming-webhook body summarising a version 4 payload.
pub fn slack_payload(v4: &Value) -> Value {
    let status = v4["status"].as_str().unwrap_or("firing");
    let mut lines = Vec::new();
    let alerts = v4["alerts"].as_array().map_or(&[][..], Vec::as_slice);
    let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
    lines.push(format!(
        "[{}{}] {}",
        status.to_uppercase(),
        if firing > 0 {
            format!(":{firing}")
        } else {
            String::new()
        },
        v4["groupLabels"]
            .as_object()
            .map(|l| l
                .values()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "))
            .unwrap_or_default()
    ));
    for alert in alerts {
        let name = alert["labels"]["alertname"].as_str().unwrap_or("alert");
        let summary = alert["annotations"]["summary"].as_str().unwrap_or("");
        lines.push(format!(
            "• {} {name}{}{summary}",
            alert["status"].as_str().unwrap_or(""),
            if summary.is_empty() { "" } else { ": " }
        ));
    }
    json!({ "text": lines.join("\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: NotifyStatus, route: &str) -> NotifyAlert {
        NotifyAlert {
            status,
            labels: [
                ("alertname", "errors"),
                ("route", route),
                ("severity", "page"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            annotations: [("summary".to_owned(), format!("{route} fails"))].into(),
            starts_at: 1_000,
            ends_at: (status == NotifyStatus::Resolved).then_some(9_000),
            generator_url: "http://kiln/x".into(),
            fingerprint: "00000000000000aa".into(),
        }
    }

    #[test]
    fn version_4_payload_with_common_labels() {
        let group: LabelSet = [("alertname".to_owned(), "errors".to_owned())].into();
        let p = group_payload(
            "ops",
            "{}:{alertname=\"errors\"}",
            &group,
            &[
                alert(NotifyStatus::Firing, "a"),
                alert(NotifyStatus::Resolved, "b"),
            ],
            "http://127.0.0.1:1",
        );
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["receiver"], "ops");
        assert_eq!(p["groupLabels"], json!({"alertname": "errors"}));
        assert_eq!(
            p["commonLabels"],
            json!({"alertname": "errors", "severity": "page"})
        );
        assert_eq!(p["commonAnnotations"], json!({}));
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["alerts"][1]["endsAt"], "1970-01-01T00:00:09Z");
        assert_eq!(p["alerts"][1]["status"], "resolved");
        let only_resolved = group_payload(
            "ops",
            "k",
            &group,
            &[alert(NotifyStatus::Resolved, "b")],
            "",
        );
        assert_eq!(only_resolved["status"], "resolved");
        let slack = slack_payload(&p);
        assert_eq!(
            slack["text"],
            "[FIRING:1] errors\n• firing errors: a fails\n• resolved errors: b fails"
        );
    }
}
