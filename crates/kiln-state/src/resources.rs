//! Reading resources and changing their status.
//!
//! Resources are written only through the operation protocol (see
//! `operations.rs`); this module reads them and lets a command taint or
//! un-taint one by hand.

use rusqlite::{Connection, OptionalExtension, Row};

use crate::codec::{from_json, now, serial_from_sql, serial_to_sql, to_json};
use crate::error::{SqlContext, StateError};
use crate::events::insert_event;
use crate::store::Store;
use crate::types::{NewEvent, ResourceRecord, ResourceRecordInput, ResourceStatus};

const RESOURCE_COLUMNS: &str =
    "address, kind, attributes, outputs, private, dependencies, status, serial, updated_at";

impl Store {
    /// Every resource, ordered by address, in one query.
    pub fn resources(&self) -> Result<Vec<ResourceRecord>, StateError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY address"
            ))
            .ctx("reading resources")?;
        let mut rows = st.query([]).ctx("reading resources")?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx("reading resources")? {
            out.push(
                RawResource::from_row(row)
                    .ctx("reading resources")?
                    .decode()?,
            );
        }
        Ok(out)
    }

    /// One resource by address.
    pub fn resource(&self, address: &str) -> Result<Option<ResourceRecord>, StateError> {
        let raw = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE address = ?1"
            ))
            .and_then(|mut st| st.query_row([address], RawResource::from_row).optional())
            .ctx("reading resource")?;
        raw.map(RawResource::decode).transpose()
    }

    /// Number of resources (cheaper than `resources().len()`).
    pub fn resource_count(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM resources")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .ctx("counting resources")?;
        serial_from_sql(n, "resources")
    }

    /// Sets a resource's status by hand (`kiln taint` / `untaint`); logs a
    /// `resource.ready` or `resource.tainted` event.
    pub fn set_resource_status(
        &mut self,
        address: &str,
        status: ResourceStatus,
    ) -> Result<(), StateError> {
        let tx = self.write_tx("setting resource status")?;
        let changed = tx
            .prepare_cached("UPDATE resources SET status = ?2, updated_at = ?3 WHERE address = ?1")
            .and_then(|mut st| st.execute((address, status.as_str(), now())))
            .ctx("setting resource status")?;
        if changed == 0 {
            return Err(StateError::NotFound {
                what: "resource",
                key: address.to_string(),
            });
        }
        insert_event(
            &tx,
            &NewEvent {
                kind: format!("resource.{status}"),
                address: Some(address.to_string()),
                serial: None,
                message: format!("{address} marked {status}"),
                data: serde_json::Value::Null,
            },
        )?;
        tx.commit().ctx("setting resource status")
    }
}

/// Inserts or replaces a resource as Ready, written by revision `serial`.
pub(crate) fn upsert_resource(
    conn: &Connection,
    input: &ResourceRecordInput,
    serial: u64,
    at: &str,
) -> Result<(), StateError> {
    let params = (
        &input.address,
        &input.kind,
        to_json(&input.attributes)?,
        to_json(&input.outputs)?,
        to_json(&input.private)?,
        to_json(&input.dependencies)?,
        ResourceStatus::Ready.as_str(),
        serial_to_sql(serial)?,
        at,
    );
    conn.prepare_cached(
        "INSERT INTO resources
             (address, kind, attributes, outputs, private, dependencies, status, serial, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (address) DO UPDATE SET
             kind = excluded.kind, attributes = excluded.attributes,
             outputs = excluded.outputs, private = excluded.private,
             dependencies = excluded.dependencies, status = excluded.status,
             serial = excluded.serial, updated_at = excluded.updated_at",
    )
    .and_then(|mut st| st.execute(params))
    .ctx("writing resource")?;
    Ok(())
}

/// Marks `address` Tainted by revision `serial`; creates an empty Tainted
/// record of `kind` if none exists, so the next plan knows something may be
/// out there.
pub(crate) fn taint_resource(
    conn: &Connection,
    address: &str,
    kind: &str,
    serial: u64,
    at: &str,
) -> Result<(), StateError> {
    let serial = serial_to_sql(serial)?;
    conn.prepare_cached(
        "INSERT INTO resources
             (address, kind, attributes, outputs, private, dependencies, status, serial, updated_at)
         VALUES (?1, ?2, '{}', '{}', 'null', '[]', ?3, ?4, ?5)
         ON CONFLICT (address) DO UPDATE SET
             status = excluded.status, serial = excluded.serial,
             updated_at = excluded.updated_at",
    )
    .and_then(|mut st| st.execute((address, kind, ResourceStatus::Tainted.as_str(), serial, at)))
    .ctx("tainting resource")?;
    Ok(())
}

/// Deletes a resource row (absent is fine: deleting twice is not an error).
pub(crate) fn delete_resource(conn: &Connection, address: &str) -> Result<(), StateError> {
    conn.prepare_cached("DELETE FROM resources WHERE address = ?1")
        .and_then(|mut st| st.execute([address]))
        .ctx("deleting resource")?;
    Ok(())
}

/// A resources row before its JSON, enum and serial are checked.
struct RawResource {
    address: String,
    kind: String,
    attributes: String,
    outputs: String,
    private: String,
    dependencies: String,
    status: String,
    serial: i64,
    updated_at: String,
}

impl RawResource {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawResource {
            address: row.get(0)?,
            kind: row.get(1)?,
            attributes: row.get(2)?,
            outputs: row.get(3)?,
            private: row.get(4)?,
            dependencies: row.get(5)?,
            status: row.get(6)?,
            serial: row.get(7)?,
            updated_at: row.get(8)?,
        })
    }

    fn decode(self) -> Result<ResourceRecord, StateError> {
        let a = &self.address;
        Ok(ResourceRecord {
            attributes: from_json(&self.attributes, "resource", a, "attributes")?,
            outputs: from_json(&self.outputs, "resource", a, "outputs")?,
            private: from_json(&self.private, "resource", a, "private")?,
            dependencies: from_json(&self.dependencies, "resource", a, "dependencies")?,
            status: ResourceStatus::parse(&self.status)?,
            serial: serial_from_sql(self.serial, "resources")?,
            address: self.address,
            kind: self.kind,
            updated_at: self.updated_at,
        })
    }
}
