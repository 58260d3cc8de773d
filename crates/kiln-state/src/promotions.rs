//! Promotions between environments and the approvals they may need. A promotion records which
//! release moves to which environment, who moved it and the gates' verdicts at that moment (as
//! JSON, for the record); the newest promotion of a service to an environment that did not
//! fail to apply is the release its services there run. Approvals are recorded once per person
//! and release.

use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// A recorded promotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRecord {
    /// The root service's name (`api`).
    pub service: String,
    /// The environment it was promoted to.
    pub environment: String,
    /// The environment it came from.
    pub from_env: String,
    /// The release (`sha256:...`).
    pub release: String,
    /// `user@host`, or `kiln` for an automatic promotion.
    pub promoted_by: String,
    /// ms since the epoch.
    pub promoted_at: i64,
    /// The gates' verdicts when it was promoted.
    pub gates: serde_json::Value,
    /// `applying` (recorded, its apply under way), `applied` or `failed`.
    #[serde(default = "applied")]
    pub status: String,
}

fn applied() -> String {
    "applied".into()
}

/// A recorded approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The root service's name.
    pub service: String,
    /// The environment it is approved for.
    pub environment: String,
    /// The release.
    pub release: String,
    /// `user@host`.
    pub approved_by: String,
    /// ms since the epoch.
    pub approved_at: i64,
}

impl Store {
    /// Records a promotion; returns its id.
    pub fn record_promotion(&mut self, p: &PromotionRecord) -> Result<i64, StateError> {
        let gates = to_json(&p.gates)?;
        self.conn
            .prepare_cached(
                "INSERT INTO promotions
                 (service, environment, from_env, release, promoted_by, promoted_at, gates, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    p.service,
                    p.environment,
                    p.from_env,
                    p.release,
                    p.promoted_by,
                    p.promoted_at,
                    gates,
                    p.status
                ])
            })
            .ctx("recording a promotion")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks promotion `id` `applied` or `failed`.
    pub fn set_promotion_status(&mut self, id: i64, status: &str) -> Result<(), StateError> {
        self.conn
            .prepare_cached("UPDATE promotions SET status = ?2 WHERE id = ?1")
            .and_then(|mut st| st.execute(rusqlite::params![id, status]))
            .ctx("updating a promotion")?;
        Ok(())
    }

    /// Whether the newest promotion of `release` to `environment` failed to apply (an
    /// automatic promotion does not try the same release again).
    pub fn promotion_failed(
        &self,
        service: &str,
        environment: &str,
        release: &str,
    ) -> Result<bool, StateError> {
        let status: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT status FROM promotions
                 WHERE service = ?1 AND environment = ?2 AND release = ?3
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([service, environment, release], |row| row.get(0))
                    .optional()
            })
            .ctx("reading promotions")?;
        Ok(status.as_deref() == Some("failed"))
    }

    /// The newest release promoted to `environment` for `service`.
    pub fn promoted_release(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT release FROM promotions
                 WHERE service = ?1 AND environment = ?2 AND status != 'failed'
                 ORDER BY id DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([service, environment], |row| row.get(0))
                    .optional()
            })
            .ctx("reading promotions")
    }

    /// Promotions of `service` (every service's with `None`), newest first.
    pub fn promotions(&self, service: Option<&str>) -> Result<Vec<PromotionRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT service, environment, from_env, release, promoted_by, promoted_at, gates, status
                 FROM promotions WHERE ?1 IS NULL OR service = ?1 ORDER BY id DESC",
            )
            .ctx("reading promotions")?;
        let raw = st
            .query_map([service], raw_promotion)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading promotions")?;
        raw.into_iter()
            .map(|(mut p, gates)| {
                p.gates = from_json(&gates, "promotions", &p.release, "gates")?;
                Ok(p)
            })
            .collect()
    }

    /// Records an approval (again by the same person: kept as first given).
    pub fn record_approval(&mut self, a: &ApprovalRecord) -> Result<(), StateError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO approvals
                 (service, environment, release, approved_by, approved_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| {
                st.execute(rusqlite::params![
                    a.service,
                    a.environment,
                    a.release,
                    a.approved_by,
                    a.approved_at
                ])
            })
            .ctx("recording an approval")?;
        Ok(())
    }

    /// Approvals of `release` of `service` for `environment`, oldest first.
    pub fn approvals(
        &self,
        service: &str,
        environment: &str,
        release: &str,
    ) -> Result<Vec<ApprovalRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT service, environment, release, approved_by, approved_at FROM approvals
                 WHERE service = ?1 AND environment = ?2 AND release = ?3
                 ORDER BY approved_at, approved_by",
            )
            .ctx("reading approvals")?;
        st.query_map([service, environment, release], |row| {
            Ok(ApprovalRecord {
                service: row.get(0)?,
                environment: row.get(1)?,
                release: row.get(2)?,
                approved_by: row.get(3)?,
                approved_at: row.get(4)?,
            })
        })
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .ctx("reading approvals")
    }
}

fn raw_promotion(row: &Row<'_>) -> rusqlite::Result<(PromotionRecord, String)> {
    Ok((
        PromotionRecord {
            service: row.get(0)?,
            environment: row.get(1)?,
            from_env: row.get(2)?,
            release: row.get(3)?,
            promoted_by: row.get(4)?,
            promoted_at: row.get(5)?,
            gates: serde_json::Value::Null,
            status: row.get(7)?,
        },
        row.get(6)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_promotion_is_what_an_environment_runs() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Invalid(e.to_string()))?;
        let mut store = Store::open_in_stack(dir.path())?;
        assert_eq!(store.promoted_release("api", "production")?, None);
        for (release, at) in [("sha256:a", 1), ("sha256:b", 2)] {
            store.record_promotion(&PromotionRecord {
                service: "api".into(),
                environment: "production".into(),
                from_env: "staging".into(),
                release: release.into(),
                promoted_by: "ana@host".into(),
                promoted_at: at,
                gates: serde_json::json!([{ "gate": "soak", "passed": true }]),
                status: "applied".into(),
            })?;
        }
        assert_eq!(
            store.promoted_release("api", "production")?.as_deref(),
            Some("sha256:b")
        );
        // A promotion whose apply failed does not say what runs.
        let id = store.record_promotion(&PromotionRecord {
            service: "api".into(),
            environment: "production".into(),
            from_env: "staging".into(),
            release: "sha256:c".into(),
            promoted_by: "ana@host".into(),
            promoted_at: 3,
            gates: serde_json::json!([]),
            status: "applying".into(),
        })?;
        assert_eq!(
            store.promoted_release("api", "production")?.as_deref(),
            Some("sha256:c"),
            "the apply loads the promotion it is applying"
        );
        store.set_promotion_status(id, "failed")?;
        assert_eq!(
            store.promoted_release("api", "production")?.as_deref(),
            Some("sha256:b")
        );
        assert!(store.promotion_failed("api", "production", "sha256:c")?);
        assert!(!store.promotion_failed("api", "production", "sha256:b")?);
        assert_eq!(store.promoted_release("web", "production")?, None);
        let all = store.promotions(Some("api"))?;
        assert_eq!(all.len(), 3, "failed ones stay on record");
        assert_eq!(all[0].status, "failed");
        assert_eq!(all[1].gates[0]["gate"], "soak");
        Ok(())
    }

    #[test]
    fn approvals_are_per_release_and_kept_once_per_person() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Invalid(e.to_string()))?;
        let mut store = Store::open_in_stack(dir.path())?;
        let approval = |by: &str, at| ApprovalRecord {
            service: "api".into(),
            environment: "production".into(),
            release: "sha256:a".into(),
            approved_by: by.into(),
            approved_at: at,
        };
        store.record_approval(&approval("ana@host", 5))?;
        store.record_approval(&approval("ana@host", 9))?;
        store.record_approval(&approval("bo@host", 7))?;
        let found = store.approvals("api", "production", "sha256:a")?;
        assert_eq!(found, [approval("ana@host", 5), approval("bo@host", 7)]);
        assert!(store.approvals("api", "production", "sha256:b")?.is_empty());
        Ok(())
    }
}
