//! Incidents and their timelines, kept here so they survive restarts and can be read (and,
//! with no control plane running, changed) by `kiln incident`. Like silences, plain strings
//! and JSON: the incident model lives in `kiln-alerts`; this table only stores what it is
//! given. Incidents are never deleted, for the record. A save replaces the incident's row and
//! its whole timeline in one transaction, so a reader never sees half an update.

use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, limit_to_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// An incident as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// Its number (0 before it is first saved).
    pub id: i64,
    /// The service's name.
    pub service: String,
    /// One line.
    pub title: String,
    /// `open`, `acknowledged`, `mitigated`, `resolved`.
    pub state: String,
    /// ms since the epoch.
    pub detected_at: i64,
    /// The milestones, as the model writes them.
    pub milestones: serde_json::Value,
    /// The alerts, as the model writes them.
    pub alerts: serde_json::Value,
    /// In order.
    pub timeline: Vec<TimelineRecord>,
}

/// One entry of a timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRecord {
    /// ms since the epoch.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What kind of entry.
    pub kind: String,
    /// What happened.
    pub text: String,
}

const COLUMNS: &str =
    "SELECT id, service, title, state, detected_at, milestones, alerts FROM incidents";

impl Store {
    /// Saves an incident: a new one (id 0) gets the next number, which is returned; an
    /// existing one is replaced with its timeline.
    pub fn save_incident(&mut self, incident: &IncidentRecord) -> Result<i64, StateError> {
        let milestones = to_json(&incident.milestones)?;
        let alerts = to_json(&incident.alerts)?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("saving an incident")?;
        let existing = (incident.id != 0).then_some(incident.id);
        if let Some(id) = existing {
            let known = tx
                .query_row("SELECT 1 FROM incidents WHERE id = ?1", [id], |_| Ok(()))
                .optional()
                .ctx("reading an incident")?;
            if known.is_none() {
                return Err(StateError::Invalid(format!("no incident {id} to update")));
            }
            tx.execute("DELETE FROM incident_timeline WHERE incident = ?1", [id])
                .ctx("updating an incident's timeline")?;
        }
        // A NULL id is numbered by AUTOINCREMENT; a known one is replaced in place.
        tx.execute(
            "INSERT INTO incidents (id, service, title, state, detected_at, milestones, alerts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET service = excluded.service, title = excluded.title,
                 state = excluded.state, detected_at = excluded.detected_at,
                 milestones = excluded.milestones, alerts = excluded.alerts",
            rusqlite::params![
                existing,
                incident.service,
                incident.title,
                incident.state,
                incident.detected_at,
                milestones,
                alerts
            ],
        )
        .ctx("recording an incident")?;
        let id = existing.unwrap_or_else(|| tx.last_insert_rowid());
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO incident_timeline (incident, position, at, actor, kind, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .ctx("recording a timeline")?;
            for (position, e) in (0_i64..).zip(&incident.timeline) {
                st.execute(rusqlite::params![
                    id, position, e.at, e.actor, e.kind, e.text
                ])
                .ctx("recording a timeline")?;
            }
        }
        tx.commit().ctx("saving an incident")?;
        Ok(id)
    }

    /// One incident with its timeline.
    pub fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StateError> {
        let raw = self
            .conn
            .prepare_cached(&format!("{COLUMNS} WHERE id = ?1"))
            .and_then(|mut st| st.query_row([id], raw_incident).optional())
            .ctx("reading an incident")?;
        raw.map(|raw| self.with_timeline(raw)).transpose()
    }

    /// Incidents, newest first, at most `limit`; with `open_only`, those not resolved.
    pub fn incidents(
        &self,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>, StateError> {
        let raw = self
            .conn
            .prepare_cached(&format!(
                "{COLUMNS} WHERE NOT ?1 OR state <> 'resolved' ORDER BY id DESC LIMIT ?2"
            ))
            .and_then(|mut st| {
                st.query_map(
                    rusqlite::params![open_only, limit_to_sql(limit)],
                    raw_incident,
                )
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            })
            .ctx("reading incidents")?;
        raw.into_iter().map(|r| self.with_timeline(r)).collect()
    }

    fn with_timeline(&self, raw: RawIncident) -> Result<IncidentRecord, StateError> {
        let (id, service, title, state, detected_at, milestones, alerts) = raw;
        let timeline = self
            .conn
            .prepare_cached(
                "SELECT at, actor, kind, text FROM incident_timeline
                 WHERE incident = ?1 ORDER BY position",
            )
            .and_then(|mut st| {
                st.query_map([id], |row| {
                    Ok(TimelineRecord {
                        at: row.get(0)?,
                        actor: row.get(1)?,
                        kind: row.get(2)?,
                        text: row.get(3)?,
                    })
                })
                .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            })
            .ctx("reading a timeline")?;
        Ok(IncidentRecord {
            milestones: from_json(&milestones, "incidents", &id, "milestones")?,
            alerts: from_json(&alerts, "incidents", &id, "alerts")?,
            id,
            service,
            title,
            state,
            detected_at,
            timeline,
        })
    }
}

type RawIncident = (i64, String, String, String, i64, String, String);

fn raw_incident(row: &Row<'_>) -> rusqlite::Result<RawIncident> {
    row.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn incident(service: &str, state: &str, entries: usize) -> IncidentRecord {
        IncidentRecord {
            id: 0,
            service: service.into(),
            title: format!("errors on {service}"),
            state: state.into(),
            detected_at: 1_000,
            milestones: json!({ "detected": { "at": 1_000, "actor": "kiln" } }),
            alerts: json!({ "abcd": { "name": "errors" } }),
            timeline: (0..entries)
                .map(|i| TimelineRecord {
                    at: 1_000 + i64::try_from(i).unwrap_or(0),
                    actor: "kiln".into(),
                    kind: "note".into(),
                    text: format!("entry {i}"),
                })
                .collect(),
        }
    }

    #[test]
    fn incidents_are_numbered_replaced_and_kept_across_reopen() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Invalid(e.to_string()))?;
        {
            let mut store = Store::open_in_stack(dir.path())?;
            let first = store.save_incident(&incident("api", "open", 2))?;
            let second = store.save_incident(&incident("web", "resolved", 1))?;
            assert!(second > first);
            let mut changed = incident("api", "acknowledged", 3);
            changed.id = first;
            assert_eq!(store.save_incident(&changed)?, first);
            let mut missing = incident("api", "open", 0);
            missing.id = 99;
            assert!(matches!(
                store.save_incident(&missing),
                Err(StateError::Invalid(_))
            ));
        }
        let store = Store::open_in_stack(dir.path())?;
        let all = store.incidents(false, 10)?;
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].service, "web", "newest first");
        let open = store.incidents(true, 10)?;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].state, "acknowledged");
        assert_eq!(
            open[0].timeline.len(),
            3,
            "the timeline was replaced, not appended"
        );
        assert_eq!(open[0].timeline[2].text, "entry 2");
        assert_eq!(open[0].alerts, json!({ "abcd": { "name": "errors" } }));
        assert_eq!(store.incident(open[0].id)?.map(|i| i.id), Some(open[0].id));
        assert_eq!(store.incident(12_345)?, None);
        assert_eq!(store.incidents(false, 1)?.len(), 1);
        Ok(())
    }
}
