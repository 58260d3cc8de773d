//! The append-only event log.
//!
//! Nothing updates or deletes an event: ids increase forever (AUTOINCREMENT),
//! so a follower can poll with `after_id` and never miss or repeat one.
//! Resource changes log their event inside the same transaction as the change.

use rusqlite::{Connection, Row};

use crate::codec::{from_json, limit_to_sql, now, serial_from_sql, serial_to_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;
use crate::types::{Event, EventQuery, NewEvent};

impl Store {
    /// Appends an event; returns its id.
    pub fn append_event(&mut self, ev: &NewEvent) -> Result<i64, StateError> {
        insert_event(&self.conn, ev)
    }

    /// Events after `query.after_id`, optionally about one address, oldest
    /// first, at most `query.limit`.
    pub fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StateError> {
        let after = query.after_id.unwrap_or(0);
        let limit = limit_to_sql(query.limit);
        // Two statements rather than `(?2 IS NULL OR address = ?2)`, so the
        // address query can use its index.
        let rows = match &query.address {
            Some(address) => {
                let mut st = self
                    .conn
                    .prepare_cached(
                        "SELECT id, time, kind, address, serial, message, data FROM events
                         WHERE address = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )
                    .ctx("reading events")?;
                st.query_map((address, after, limit), RawEvent::from_row)
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .ctx("reading events")?
            }
            None => {
                let mut st = self
                    .conn
                    .prepare_cached(
                        "SELECT id, time, kind, address, serial, message, data FROM events
                         WHERE id > ?1 ORDER BY id LIMIT ?2",
                    )
                    .ctx("reading events")?;
                st.query_map((after, limit), RawEvent::from_row)
                    .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
                    .ctx("reading events")?
            }
        };
        rows.into_iter().map(RawEvent::decode).collect()
    }

    /// Id of the newest event (0 when the log is empty): a starting cursor
    /// for a follower that wants only new events.
    pub fn last_event_id(&self) -> Result<i64, StateError> {
        self.conn
            .prepare_cached("SELECT COALESCE(MAX(id), 0) FROM events")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ctx("reading last event id")
    }
}

/// Inserts an event on `conn` (a connection or an open transaction).
pub(crate) fn insert_event(conn: &Connection, ev: &NewEvent) -> Result<i64, StateError> {
    let serial = ev.serial.map(serial_to_sql).transpose()?;
    let data = to_json(&ev.data)?;
    conn.prepare_cached(
        "INSERT INTO events (time, kind, address, serial, message, data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| st.execute((now(), &ev.kind, &ev.address, serial, &ev.message, data)))
    .ctx("appending event")?;
    Ok(conn.last_insert_rowid())
}

/// An events row before its JSON and serial are checked.
struct RawEvent {
    id: i64,
    time: String,
    kind: String,
    address: Option<String>,
    serial: Option<i64>,
    message: String,
    data: String,
}

impl RawEvent {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawEvent {
            id: row.get(0)?,
            time: row.get(1)?,
            kind: row.get(2)?,
            address: row.get(3)?,
            serial: row.get(4)?,
            message: row.get(5)?,
            data: row.get(6)?,
        })
    }

    fn decode(self) -> Result<Event, StateError> {
        Ok(Event {
            id: self.id,
            data: from_json(&self.data, "events", &self.id, "data")?,
            serial: self
                .serial
                .map(|s| serial_from_sql(s, "events"))
                .transpose()?,
            time: self.time,
            kind: self.kind,
            address: self.address,
            message: self.message,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, address: Option<&str>) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            address: address.map(str::to_string),
            serial: Some(3),
            message: format!("{kind} happened"),
            data: json!({"k": kind}),
        }
    }

    #[test]
    fn append_and_read_back_in_order() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.last_event_id().unwrap(), 0);
        let a = s.append_event(&ev("apply.started", None)).unwrap();
        let b = s
            .append_event(&ev("drift.detected", Some("svc.web")))
            .unwrap();
        assert!(b > a);
        assert_eq!(s.last_event_id().unwrap(), b);
        let all = s
            .events(&EventQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(all[1].address.as_deref(), Some("svc.web"));
        assert_eq!(all[1].serial, Some(3));
        assert_eq!(all[1].data, json!({"k": "drift.detected"}));
        assert!(all[0].time.ends_with('Z'));
    }

    #[test]
    fn cursor_address_filter_and_limit() {
        let mut s = Store::open_in_memory().unwrap();
        let mut ids = Vec::new();
        for i in 0..10 {
            let addr = if i % 2 == 0 { Some("a") } else { Some("b") };
            ids.push(s.append_event(&ev("x", addr)).unwrap());
        }
        let after = s
            .events(&EventQuery {
                after_id: Some(ids[4]),
                address: None,
                limit: 3,
            })
            .unwrap();
        assert_eq!(
            after.iter().map(|e| e.id).collect::<Vec<_>>(),
            ids[5..8].to_vec()
        );
        let only_a = s
            .events(&EventQuery {
                after_id: None,
                address: Some("a".into()),
                limit: 100,
            })
            .unwrap();
        assert_eq!(only_a.len(), 5);
        assert!(only_a.iter().all(|e| e.address.as_deref() == Some("a")));
        let none = s
            .events(&EventQuery {
                limit: 0,
                ..Default::default()
            })
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn corrupt_event_data_is_an_error() {
        let mut s = Store::open_in_memory().unwrap();
        s.append_event(&ev("x", None)).unwrap();
        s.conn
            .execute("UPDATE events SET data = 'not json'", [])
            .unwrap();
        let err = s
            .events(&EventQuery {
                limit: 5,
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, StateError::Corrupt(_)), "{err:?}");
    }
}
