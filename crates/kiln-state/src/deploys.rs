//! Releases and deploys. A release is an immutable, content-addressed version of a service's
//! code (its files live under `.kiln/releases/<digest>/`, written by the deploy engine); a deploy
//! moves a service from one release to another by a strategy and is recorded whatever its
//! result, so `kiln releases` can say who shipped what, when, how, and how it went.
//!
//! Like the pipeline tables, this module stores plain strings and JSON: it knows nothing of the
//! deploy engine's types.

use rusqlite::Row;
use serde::{Deserialize, Serialize};

use crate::codec::{from_json, limit_to_sql, now, serial_from_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// A release as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The service's address (`services.api`).
    pub service: String,
    /// `sha256:<hex>` of the release's manifest.
    pub digest: String,
    /// RFC 3339, UTC; when kiln first saw it.
    pub created_at: String,
    /// Where it came from: `path:./api`, `pipeline:ci/api`, ...
    pub source: String,
    /// The git commit the tree was at, when known.
    pub commit: Option<String>,
    /// The pipeline run that produced it, when one did.
    pub run_id: Option<u64>,
    /// RFC 3339; when `commit` was made (its committer date), when known.
    #[serde(default)]
    pub committed_at: Option<String>,
    pub files: u64,
    pub bytes: u64,
}

/// A finished deploy, to record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeploy {
    pub service: String,
    /// `None` for the first deploy of a service.
    pub from_release: Option<String>,
    pub to_release: String,
    /// `rolling`, `blue-green`, `canary` (or `initial` for a service's first start).
    pub strategy: String,
    /// What asked for it: `apply`, `deploy`, `rollback`, `auto-rollback`.
    pub trigger: String,
    pub user: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_ms: u64,
    /// `succeeded`, `failed`, `rolled-back`.
    pub result: String,
    /// Steps taken, the failure's account, rollbacks: free-form JSON.
    pub detail: serde_json::Value,
}

/// A recorded deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRecord {
    pub id: u64,
    #[serde(flatten)]
    pub deploy: NewDeploy,
    pub finished_at: String,
}

const DEPLOY_COLUMNS: &str =
    "SELECT id, service, from_release, to_release, strategy, trigger, user,
    started_at, finished_at, duration_ms, result, detail FROM deploys";

impl Store {
    /// Records a release unless the service already has it (releases never change).
    pub fn record_release(&mut self, release: &ReleaseRecord) -> Result<(), StateError> {
        let run = release.run_id.map(i64::try_from).transpose().map_err(|_| {
            StateError::Invalid(format!("run id {:?} is out of range", release.run_id))
        })?;
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO releases
                 (service, digest, created_at, source, commit_sha, run_id, files, bytes,
                  committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute((
                    &release.service,
                    &release.digest,
                    &release.created_at,
                    &release.source,
                    &release.commit,
                    run,
                    i64::try_from(release.files).unwrap_or(i64::MAX),
                    i64::try_from(release.bytes).unwrap_or(i64::MAX),
                    &release.committed_at,
                ))
            })
            .ctx("recording release")?;
        Ok(())
    }

    /// A service's releases, newest first.
    pub fn releases(&self, service: &str) -> Result<Vec<ReleaseRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT service, digest, created_at, source, commit_sha, run_id, files, bytes,
                        committed_at
                 FROM releases WHERE service = ?1 ORDER BY created_at DESC, digest",
            )
            .ctx("reading releases")?;
        st.query_map([service], release_from_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading releases")
    }

    /// Every recorded release with when it was last deployed successfully (or recorded, if
    /// later), as `(service, digest, last_used)`.
    pub fn release_usage(&self) -> Result<Vec<(String, String, String)>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT r.service, r.digest, MAX(r.created_at, COALESCE(
                    (SELECT MAX(d.finished_at) FROM deploys d
                     WHERE d.service = r.service AND d.to_release = r.digest
                       AND d.result = 'succeeded'), ''))
                 FROM releases r",
            )
            .ctx("reading release usage")?;
        st.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading release usage")
    }

    /// Records a finished deploy; returns its id.
    pub fn record_deploy(&mut self, deploy: &NewDeploy) -> Result<u64, StateError> {
        let detail = to_json(&deploy.detail)?;
        self.conn
            .prepare_cached(
                "INSERT INTO deploys
                 (service, from_release, to_release, strategy, trigger, user, started_at,
                  finished_at, duration_ms, result, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut st| {
                st.execute((
                    &deploy.service,
                    &deploy.from_release,
                    &deploy.to_release,
                    &deploy.strategy,
                    &deploy.trigger,
                    &deploy.user,
                    &deploy.started_at,
                    now(),
                    i64::try_from(deploy.duration_ms).unwrap_or(i64::MAX),
                    &deploy.result,
                    detail,
                ))
            })
            .ctx("recording deploy")?;
        serial_from_sql(self.conn.last_insert_rowid(), "deploys")
    }

    /// A service's deploys (all services' with `None`), newest first.
    pub fn deploys(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeployRecord>, StateError> {
        let (sql, args): (String, Vec<rusqlite::types::Value>) = match service {
            Some(s) => (
                format!("{DEPLOY_COLUMNS} WHERE service = ?1 ORDER BY id DESC LIMIT ?2"),
                vec![s.to_owned().into(), limit_to_sql(limit).into()],
            ),
            None => (
                format!("{DEPLOY_COLUMNS} ORDER BY id DESC LIMIT ?1"),
                vec![limit_to_sql(limit).into()],
            ),
        };
        let mut st = self.conn.prepare_cached(&sql).ctx("reading deploys")?;
        let raw = st
            .query_map(rusqlite::params_from_iter(args), RawDeploy::from_row)
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .ctx("reading deploys")?;
        raw.into_iter().map(RawDeploy::decode).collect()
    }
}

fn release_from_row(row: &Row<'_>) -> rusqlite::Result<ReleaseRecord> {
    let run: Option<i64> = row.get(5)?;
    let files: i64 = row.get(6)?;
    let bytes: i64 = row.get(7)?;
    Ok(ReleaseRecord {
        service: row.get(0)?,
        digest: row.get(1)?,
        created_at: row.get(2)?,
        source: row.get(3)?,
        commit: row.get(4)?,
        run_id: run.and_then(|r| u64::try_from(r).ok()),
        committed_at: row.get(8)?,
        files: u64::try_from(files).unwrap_or(0),
        bytes: u64::try_from(bytes).unwrap_or(0),
    })
}

struct RawDeploy {
    id: i64,
    deploy: NewDeploy,
    finished_at: String,
    detail: String,
}

impl RawDeploy {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<RawDeploy> {
        let duration: i64 = row.get(9)?;
        Ok(RawDeploy {
            id: row.get(0)?,
            deploy: NewDeploy {
                service: row.get(1)?,
                from_release: row.get(2)?,
                to_release: row.get(3)?,
                strategy: row.get(4)?,
                trigger: row.get(5)?,
                user: row.get(6)?,
                started_at: row.get(7)?,
                duration_ms: u64::try_from(duration).unwrap_or(0),
                result: row.get(10)?,
                detail: serde_json::Value::Null,
            },
            finished_at: row.get(8)?,
            detail: row.get(11)?,
        })
    }

    fn decode(self) -> Result<DeployRecord, StateError> {
        let id = serial_from_sql(self.id, "deploys")?;
        let mut deploy = self.deploy;
        deploy.detail = from_json(&self.detail, "deploys", &id, "detail")?;
        Ok(DeployRecord {
            id,
            deploy,
            finished_at: self.finished_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(digest: &str, at: &str) -> ReleaseRecord {
        ReleaseRecord {
            service: "services.api".into(),
            digest: digest.into(),
            created_at: at.into(),
            source: "path:api".into(),
            commit: Some("abc".into()),
            run_id: None,
            committed_at: Some("2025-12-31T23:00:00+00:00".into()),
            files: 3,
            bytes: 120,
        }
    }

    #[test]
    fn releases_are_recorded_once_and_listed_newest_first() -> Result<(), StateError> {
        let mut store = Store::open_in_memory()?;
        store.record_release(&release("sha256:aa", "2026-01-01T00:00:00.000000Z"))?;
        store.record_release(&release("sha256:bb", "2026-01-02T00:00:00.000000Z"))?;
        // Seen again later: the first record stands.
        store.record_release(&release("sha256:aa", "2026-01-03T00:00:00.000000Z"))?;
        let listed = store.releases("services.api")?;
        let digests: Vec<&str> = listed.iter().map(|r| r.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:bb", "sha256:aa"]);
        assert!(store.releases("services.web")?.is_empty());
        Ok(())
    }

    #[test]
    fn deploys_round_trip_with_their_detail() -> Result<(), StateError> {
        let mut store = Store::open_in_memory()?;
        let deploy = NewDeploy {
            service: "services.api".into(),
            from_release: Some("sha256:aa".into()),
            to_release: "sha256:bb".into(),
            strategy: "canary".into(),
            trigger: "apply".into(),
            user: "dev".into(),
            started_at: "2026-01-01T00:00:00.000000Z".into(),
            duration_ms: 1500,
            result: "rolled-back".into(),
            detail: serde_json::json!({"reason": "error ratio 12% > 1%"}),
        };
        let first = store.record_deploy(&deploy)?;
        let second = store.record_deploy(&NewDeploy {
            service: "services.web".into(),
            ..deploy.clone()
        })?;
        assert!(second > first);
        let api = store.deploys(Some("services.api"), 10)?;
        assert_eq!(api.len(), 1);
        assert_eq!(api[0].deploy, deploy);
        assert_eq!(store.deploys(None, 10)?.len(), 2);
        assert_eq!(store.deploys(None, 1)?[0].id, second);
        Ok(())
    }

    #[test]
    fn a_release_is_used_when_recorded_or_last_deployed_successfully() -> Result<(), StateError> {
        let mut store = Store::open_in_memory()?;
        store.record_release(&release("sha256:aa", "2026-01-01T00:00:00.000000Z"))?;
        store.record_release(&release("sha256:bb", "2026-01-02T00:00:00.000000Z"))?;
        let deploy = |to: &str, result: &str| NewDeploy {
            service: "services.api".into(),
            from_release: None,
            to_release: to.into(),
            strategy: "rolling".into(),
            trigger: "rollback".into(),
            user: "dev".into(),
            started_at: "2026-01-03T00:00:00.000000Z".into(),
            duration_ms: 1,
            result: result.into(),
            detail: serde_json::Value::Null,
        };
        store.record_deploy(&deploy("sha256:aa", "succeeded"))?;
        store.record_deploy(&deploy("sha256:bb", "rolled-back"))?;
        let mut usage = store.release_usage()?;
        usage.sort();
        assert_eq!(usage[0].1, "sha256:aa");
        assert!(usage[0].2.as_str() > "2026-01-03", "{usage:?}");
        assert_eq!(
            usage[1].2, "2026-01-02T00:00:00.000000Z",
            "a failed deploy is no use"
        );
        Ok(())
    }
}
