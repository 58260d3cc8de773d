//! The alert evaluator's memory across control-plane restarts, as Prometheus keeps
//! `ALERTS_FOR_STATE` and Alertmanager its notification log: each alert instance's lifecycle,
//! the notification log per receiver and group, and when the evaluator last ran. Plain strings,
//! JSON and ms since the epoch; the evaluator (in the binary) writes a row only when it changes.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// One alert instance (a rule and a label set) as last recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInstanceRecord {
    /// The identity of the rule that made it (changes when the rule's query or timing does).
    pub rule: String,
    /// The fingerprint of its labels.
    pub fingerprint: String,
    /// `alertname`.
    pub name: String,
    /// All its labels.
    pub labels: BTreeMap<String, String>,
    /// Its rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// When it first became active.
    pub active_since: i64,
    /// When it started firing.
    pub fired_at: Option<i64>,
    /// While `keep_firing_for` holds a firing alert: when its element went away.
    pub keep_firing_since: Option<i64>,
    /// When it resolved.
    pub resolved_at: Option<i64>,
    /// Its value at its last change of state.
    pub value: f64,
}

/// What was last sent to one receiver for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationLogRecord {
    /// The receiver's name.
    pub receiver: String,
    /// The group's key.
    pub group_key: String,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// `firing` or `resolved`.
    pub status: String,
    /// When it was sent.
    pub notified_at: i64,
    /// The fingerprints that were firing in it.
    pub firing: Vec<String>,
    /// The fingerprints whose resolution has been sent.
    pub resolved_sent: Vec<String>,
}

const INSTANCE_COLUMNS: &str = "SELECT rule, fingerprint, name, labels, annotations, state, \
     active_since, fired_at, keep_firing_since, resolved_at, value FROM alert_instances";

const LOG_COLUMNS: &str = "SELECT receiver, group_key, group_labels, status, notified_at, \
     firing, resolved_sent FROM alert_notification_log";

impl Store {
    /// Every recorded alert instance, by rule then fingerprint.
    pub fn alert_instances(&self) -> Result<Vec<AlertInstanceRecord>, StateError> {
        self.read_all(
            &format!("{INSTANCE_COLUMNS} ORDER BY rule, fingerprint"),
            "reading alert instances",
            |row| RawInstance::try_from(row),
            decode_instance,
        )
    }

    /// Writes the instances that changed and removes those that are gone (rule, fingerprint),
    /// in one transaction.
    pub fn save_alert_instances(
        &mut self,
        changed: &[AlertInstanceRecord],
        gone: &[(String, String)],
    ) -> Result<(), StateError> {
        let encoded = changed
            .iter()
            .map(|a| Ok((a, to_json(&a.labels)?, to_json(&a.annotations)?)))
            .collect::<Result<Vec<_>, StateError>>()?;
        self.save_rows("saving alert instances", |tx| {
            for (a, labels, annotations) in &encoded {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO alert_instances (rule, fingerprint, name, labels,
                         annotations, state, active_since, fired_at, keep_firing_since,
                         resolved_at, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(rusqlite::params![
                    a.rule,
                    a.fingerprint,
                    a.name,
                    labels,
                    annotations,
                    a.state,
                    a.active_since,
                    a.fired_at,
                    a.keep_firing_since,
                    a.resolved_at,
                    a.value,
                ])?;
            }
            delete_keys(
                tx,
                "DELETE FROM alert_instances WHERE rule = ?1 AND fingerprint = ?2",
                gone,
            )
        })
    }

    /// The notification log, by receiver then group.
    pub fn notification_log(&self) -> Result<Vec<NotificationLogRecord>, StateError> {
        self.read_all(
            &format!("{LOG_COLUMNS} ORDER BY receiver, group_key"),
            "reading the notification log",
            |row| RawLog::try_from(row),
            decode_log,
        )
    }

    /// Every row `sql` selects, read by `raw` (a tuple of its columns) and checked by `decode`.
    fn read_all<R, T>(
        &self,
        sql: &str,
        context: &'static str,
        raw: fn(&Row<'_>) -> rusqlite::Result<R>,
        decode: fn(R) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let mut st = self.conn.prepare_cached(sql).ctx(context)?;
        let rows = st
            .query_map([], raw)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx(context)?;
        rows.into_iter().map(decode).collect()
    }

    /// Writes the log entries that changed and removes those that are gone (receiver, group
    /// key), in one transaction.
    pub fn save_notification_log(
        &mut self,
        changed: &[NotificationLogRecord],
        gone: &[(String, String)],
    ) -> Result<(), StateError> {
        let encoded = changed
            .iter()
            .map(|n| {
                let lists = (to_json(&n.firing)?, to_json(&n.resolved_sent)?);
                Ok((n, to_json(&n.group_labels)?, lists))
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        self.save_rows("saving the notification log", |tx| {
            for (n, group_labels, (firing, resolved_sent)) in &encoded {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO alert_notification_log (receiver, group_key,
                         group_labels, status, notified_at, firing, resolved_sent)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(rusqlite::params![
                    n.receiver,
                    n.group_key,
                    group_labels,
                    n.status,
                    n.notified_at,
                    firing,
                    resolved_sent,
                ])?;
            }
            delete_keys(
                tx,
                "DELETE FROM alert_notification_log WHERE receiver = ?1 AND group_key = ?2",
                gone,
            )
        })
    }

    /// Runs `write` in one transaction.
    fn save_rows(
        &mut self,
        context: &'static str,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx(context)?;
        write(&tx).ctx(context)?;
        tx.commit().ctx(context)
    }

    /// When the alert evaluator last recorded that it ran, if ever.
    pub fn alerts_evaluated_at(&self) -> Result<Option<i64>, StateError> {
        self.conn
            .query_row(
                "SELECT evaluated_at FROM alert_evaluator WHERE singleton = 1",
                [],
                |row| row.get(0),
            )
            .optional()
            .ctx("reading when alerts were evaluated")
    }

    /// Records that the alert evaluator ran at `at`.
    pub fn set_alerts_evaluated_at(&mut self, at: i64) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO alert_evaluator (singleton, evaluated_at) VALUES (1, ?1)",
                [at],
            )
            .ctx("recording when alerts were evaluated")?;
        Ok(())
    }
}

/// Deletes the row of each two-part key with `sql` (`?1`, `?2`).
fn delete_keys(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    keys: &[(String, String)],
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(sql)?;
    for (first, second) in keys {
        st.execute(rusqlite::params![first, second])?;
    }
    Ok(())
}

type RawInstance = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    f64,
);

fn decode_instance(raw: RawInstance) -> Result<AlertInstanceRecord, StateError> {
    let (
        rule,
        fingerprint,
        name,
        labels,
        annotations,
        state,
        active_since,
        fired_at,
        keep_firing_since,
        resolved_at,
        value,
    ) = raw;
    let key = format!("{rule}/{fingerprint}");
    Ok(AlertInstanceRecord {
        labels: from_json(&labels, "alert_instances", &key, "labels")?,
        annotations: from_json(&annotations, "alert_instances", &key, "annotations")?,
        rule,
        fingerprint,
        name,
        state,
        active_since,
        fired_at,
        keep_firing_since,
        resolved_at,
        value,
    })
}

type RawLog = (String, String, String, String, i64, String, String);

fn decode_log(raw: RawLog) -> Result<NotificationLogRecord, StateError> {
    let (receiver, group_key, group_labels, status, notified_at, firing, resolved_sent) = raw;
    let key = format!("{receiver}/{group_key}");
    let table = "alert_notification_log";
    Ok(NotificationLogRecord {
        group_labels: from_json(&group_labels, table, &key, "group_labels")?,
        firing: from_json(&firing, table, &key, "firing")?,
        resolved_sent: from_json(&resolved_sent, table, &key, "resolved_sent")?,
        receiver,
        group_key,
        status,
        notified_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(fingerprint: &str, state: &str) -> AlertInstanceRecord {
        AlertInstanceRecord {
            rule: "0123456789abcdef".into(),
            fingerprint: fingerprint.into(),
            name: "errors".into(),
            labels: [("route".to_owned(), "a".to_owned())].into(),
            annotations: [("summary".to_owned(), "a fails".to_owned())].into(),
            state: state.into(),
            active_since: 100,
            fired_at: (state == "firing").then_some(200),
            keep_firing_since: None,
            resolved_at: None,
            value: 0.25,
        }
    }

    #[test]
    fn alert_state_is_kept_across_reopen_and_only_what_changed_is_written() -> Result<(), StateError>
    {
        let dir = tempfile::tempdir().map_err(|e| StateError::Invalid(e.to_string()))?;
        let log = NotificationLogRecord {
            receiver: "ops".into(),
            group_key: "{}:{alertname=\"errors\"}".into(),
            group_labels: [("alertname".to_owned(), "errors".to_owned())].into(),
            status: "firing".into(),
            notified_at: 300,
            firing: vec!["aa".into()],
            resolved_sent: vec![],
        };
        {
            let mut store = Store::open_in_stack(dir.path())?;
            assert_eq!(store.alerts_evaluated_at()?, None);
            store.save_alert_instances(
                &[instance("aa", "firing"), instance("bb", "pending")],
                &[],
            )?;
            store.save_alert_instances(
                &[instance("bb", "firing")],
                &[("0123456789abcdef".into(), "aa".into())],
            )?;
            store.save_notification_log(std::slice::from_ref(&log), &[])?;
            store.set_alerts_evaluated_at(400)?;
            store.set_alerts_evaluated_at(500)?;
        }
        let mut store = Store::open_in_stack(dir.path())?;
        assert_eq!(store.alert_instances()?, [instance("bb", "firing")]);
        assert_eq!(store.notification_log()?, std::slice::from_ref(&log));
        assert_eq!(store.alerts_evaluated_at()?, Some(500));
        store.save_notification_log(&[], &[(log.receiver, log.group_key)])?;
        assert_eq!(store.notification_log()?, []);
        Ok(())
    }
}
