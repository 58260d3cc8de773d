//! Sets a blue-green deploy keeps idle for an instant switch back, kept here so that a
//! restarted control plane can take them back. Plain strings and JSON: the record's shape
//! belongs to kiln-deploy; this table only knows its service and set.

use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// One kept set as recorded: its service, its set name and the deployer's JSON record.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptSetRecord {
    pub service: String,
    pub set: String,
    pub record: serde_json::Value,
}

impl Store {
    /// Replaces what is kept for `service` by `sets` (all of the same service), in one
    /// transaction.
    pub fn save_kept_sets(
        &mut self,
        service: &str,
        sets: &[KeptSetRecord],
    ) -> Result<(), StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("recording kept sets")?;
        tx.execute("DELETE FROM kept_sets WHERE service = ?1", [service])
            .ctx("forgetting kept sets")?;
        for kept in sets {
            tx.execute(
                "INSERT INTO kept_sets (service, set_name, record, recorded_at) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![
                    service,
                    kept.set,
                    kept.record.to_string(),
                    crate::codec::now()
                ],
            )
            .ctx("recording a kept set")?;
        }
        tx.commit().ctx("recording kept sets")
    }

    /// Every kept set, by service and set.
    pub fn kept_sets(&self) -> Result<Vec<KeptSetRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT service, set_name, record FROM kept_sets ORDER BY service, set_name",
            )
            .ctx("reading kept sets")?;
        let rows = st
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .ctx("reading kept sets")?;
        let mut out = Vec::new();
        for row in rows {
            let (service, set, record) = row.ctx("reading a kept set")?;
            let record = serde_json::from_str(&record)
                .map_err(|e| StateError::Corrupt(format!("kept set {set}: {e}")))?;
            out.push(KeptSetRecord {
                service,
                set,
                record,
            });
        }
        Ok(out)
    }

    /// Forgets every kept set (their processes were stopped).
    pub fn clear_kept_sets(&mut self) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM kept_sets", [])
            .ctx("forgetting kept sets")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(service: &str, set: &str) -> KeptSetRecord {
        KeptSetRecord {
            service: service.into(),
            set: set.into(),
            record: serde_json::json!({ "set": set, "expires_at_ms": 5 }),
        }
    }

    #[test]
    fn saving_replaces_a_services_sets_and_leaves_the_others() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .save_kept_sets("app", &[kept("app", "app@1"), kept("app", "app@2")])
            .unwrap();
        store
            .save_kept_sets("web", &[kept("web", "web@1")])
            .unwrap();
        store
            .save_kept_sets("app", &[kept("app", "app@3")])
            .unwrap();
        assert_eq!(
            store.kept_sets().unwrap(),
            [kept("app", "app@3"), kept("web", "web@1")]
        );
        store.save_kept_sets("app", &[]).unwrap();
        assert_eq!(store.kept_sets().unwrap(), [kept("web", "web@1")]);
        store.clear_kept_sets().unwrap();
        assert!(store.kept_sets().unwrap().is_empty());
    }
}
