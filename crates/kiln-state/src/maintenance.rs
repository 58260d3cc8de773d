//! Routes in maintenance: the page each one answers with, who started it and when it ends,
//! kept so that a restarted control plane keeps serving the page until then. Plain values:
//! the route is its address (`routes.web`), times are ms since the epoch.

use crate::error::{SqlContext, StateError};
use crate::store::Store;

/// One route in maintenance (also what the control plane's API and `kiln maintenance list
/// --json` show).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MaintenanceRecord {
    /// The route's address.
    pub route: String,
    /// The service behind it (for events and incident timelines).
    pub service: String,
    /// The status it answers with.
    pub status: u16,
    /// The text of the page.
    pub message: String,
    /// An explicit `Retry-After` (ms); `None`: the time left.
    pub retry_after_ms: Option<u64>,
    /// When it started.
    pub started_at_ms: i64,
    /// When it ends by itself; `None`: when turned off.
    pub ends_at_ms: Option<i64>,
    /// Who started it: `runbook NAME (run ID)` or `user@host`.
    pub actor: String,
}

impl Store {
    /// Records `record`, replacing what its route had.
    pub fn save_maintenance(&mut self, record: &MaintenanceRecord) -> Result<(), StateError> {
        let retry_after = record
            .retry_after_ms
            .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        self.conn
            .execute(
                "INSERT OR REPLACE INTO maintenance \
                 (route, service, status, message, retry_after_ms, started_at_ms, ends_at_ms, actor) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    record.route,
                    record.service,
                    record.status,
                    record.message,
                    retry_after,
                    record.started_at_ms,
                    record.ends_at_ms,
                    record.actor
                ],
            )
            .ctx("recording a maintenance page")?;
        Ok(())
    }

    /// Every route in maintenance, by route.
    pub fn maintenance(&self) -> Result<Vec<MaintenanceRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT route, service, status, message, retry_after_ms, started_at_ms, ends_at_ms, actor \
                 FROM maintenance ORDER BY route",
            )
            .ctx("reading maintenance pages")?;
        let rows = st
            .query_map([], |row| {
                Ok(MaintenanceRecord {
                    route: row.get(0)?,
                    service: row.get(1)?,
                    status: row.get(2)?,
                    message: row.get(3)?,
                    retry_after_ms: row
                        .get::<_, Option<i64>>(4)?
                        .map(|ms| u64::try_from(ms).unwrap_or(0)),
                    started_at_ms: row.get(5)?,
                    ends_at_ms: row.get(6)?,
                    actor: row.get(7)?,
                })
            })
            .ctx("reading maintenance pages")?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.ctx("reading a maintenance page")?);
        }
        Ok(out)
    }

    /// Forgets `route`'s maintenance; whether it had one.
    pub fn end_maintenance(&mut self, route: &str) -> Result<bool, StateError> {
        let removed = self
            .conn
            .execute("DELETE FROM maintenance WHERE route = ?1", [route])
            .ctx("ending a maintenance page")?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(route: &str, ends_at_ms: Option<i64>) -> MaintenanceRecord {
        MaintenanceRecord {
            route: route.into(),
            service: "web".into(),
            status: 503,
            message: "Back soon".into(),
            retry_after_ms: Some(60_000),
            started_at_ms: 1_000,
            ends_at_ms,
            actor: "ann@laptop".into(),
        }
    }

    #[test]
    fn pages_are_recorded_replaced_and_ended_per_route() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .save_maintenance(&page("routes.b", Some(9_000)))
            .unwrap();
        store.save_maintenance(&page("routes.a", None)).unwrap();
        let mut again = page("routes.b", Some(20_000));
        again.retry_after_ms = None;
        store.save_maintenance(&again).unwrap();
        assert_eq!(
            store.maintenance().unwrap(),
            [page("routes.a", None), again]
        );
        assert!(store.end_maintenance("routes.a").unwrap());
        assert!(!store.end_maintenance("routes.a").unwrap());
        assert_eq!(store.maintenance().unwrap().len(), 1);
    }
}
