//! Alert silences, kept here so they survive restarts. Like the pipeline tables, plain strings
//! and JSON: matchers are stored as written (`severity="page"`), times as ms since the epoch.
//! Expiring a silence moves its end to now; silences are never deleted, for the record.

use rusqlite::Row;
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// A silence as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceRecord {
    /// A UUID.
    pub id: String,
    /// Matchers as written.
    pub matchers: Vec<String>,
    /// ms since the epoch.
    pub starts_at: i64,
    /// ms since the epoch.
    pub ends_at: i64,
    /// Who made it.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

const COLUMNS: &str = "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences";

impl Store {
    /// Records a new silence.
    pub fn add_silence(&mut self, silence: &SilenceRecord) -> Result<(), StateError> {
        let matchers = to_json(&silence.matchers)?;
        self.conn
            .prepare_cached(
                "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    silence.id,
                    matchers,
                    silence.starts_at,
                    silence.ends_at,
                    silence.created_by,
                    silence.comment
                ])
            })
            .ctx("recording a silence")?;
        Ok(())
    }

    /// Silences that end after `now` (in force or scheduled), oldest first; with `all`, every
    /// silence ever made.
    pub fn silences(&self, now: i64, all: bool) -> Result<Vec<SilenceRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "{COLUMNS} WHERE ?1 OR ends_at > ?2 ORDER BY starts_at, id"
            ))
            .ctx("reading silences")?;
        let raw = st
            .query_map(rusqlite::params![all, now], raw_silence)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading silences")?;
        raw.into_iter().map(decode).collect()
    }

    /// Ends a silence at `now` (one already over is left as it is). Returns it, or `None` when
    /// no silence has this id (or, given at least 4 characters, an id starting with it).
    pub fn expire_silence(
        &mut self,
        id: &str,
        now: i64,
    ) -> Result<Option<SilenceRecord>, StateError> {
        let mut matches: Vec<SilenceRecord> = self
            .silences(now, true)?
            .into_iter()
            .filter(|s| s.id == id || (id.len() >= 4 && s.id.starts_with(id)))
            .collect();
        if matches.len() > 1 {
            return Err(StateError::Invalid(format!(
                "`{id}` names {} silences; give more of the id",
                matches.len()
            )));
        }
        let Some(mut silence) = matches.pop() else {
            return Ok(None);
        };
        self.conn
            .prepare_cached("UPDATE silences SET ends_at = MIN(ends_at, ?2) WHERE id = ?1")
            .and_then(|mut st| st.execute(rusqlite::params![silence.id, now]))
            .ctx("expiring a silence")?;
        silence.ends_at = silence.ends_at.min(now);
        Ok(Some(silence))
    }
}

type RawSilence = (String, String, i64, i64, String, String);

fn raw_silence(row: &Row<'_>) -> rusqlite::Result<RawSilence> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn decode(raw: RawSilence) -> Result<SilenceRecord, StateError> {
    let (id, matchers, starts_at, ends_at, created_by, comment) = raw;
    Ok(SilenceRecord {
        matchers: from_json(&matchers, "silences", &id, "matchers")?,
        id,
        starts_at,
        ends_at,
        created_by,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(id: &str, ends_at: i64) -> SilenceRecord {
        SilenceRecord {
            id: id.into(),
            matchers: vec!["alertname=\"errors\"".into()],
            starts_at: 100,
            ends_at,
            created_by: "ann".into(),
            comment: "deploying".into(),
        }
    }

    #[test]
    fn silences_are_listed_expired_and_kept_across_reopen() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Invalid(e.to_string()))?;
        {
            let mut store = Store::open_in_stack(dir.path())?;
            store.add_silence(&silence("0190aaaa-1", 1_000))?;
            store.add_silence(&silence("0190bbbb-2", 2_000))?;
            assert_eq!(store.silences(500, false)?.len(), 2);
            assert_eq!(store.silences(1_500, false)?.len(), 1);
            assert!(matches!(
                store.expire_silence("0190", 600),
                Err(StateError::Invalid(_))
            ));
            assert_eq!(store.expire_silence("nope", 600)?, None);
            let expired = store.expire_silence("0190bbbb", 600)?;
            assert_eq!(expired.map(|s| s.ends_at), Some(600));
        }
        let store = Store::open_in_stack(dir.path())?;
        assert_eq!(
            store.silences(700, false)?.len(),
            1,
            "the expired one is gone"
        );
        assert_eq!(store.silences(1_100, false)?, []);
        assert_eq!(store.silences(700, true)?.len(), 2);
        Ok(())
    }
}
