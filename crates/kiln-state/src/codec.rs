//! Conversions between Rust values and SQLite columns.
//!
//! JSON is stored as TEXT (readable in the `sqlite3` shell), serials as
//! INTEGER. Everything read back is checked: a bad row becomes
//! `StateError::Corrupt` naming the table, key and column, never a panic.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StateError;

/// Current time as RFC 3339 UTC with microseconds.
///
/// A fixed precision keeps the strings sortable as text.
pub(crate) fn now() -> String {
    format!("{:.6}", jiff::Timestamp::now())
}

/// Encodes a value as JSON text for a TEXT column.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value)
        .map_err(|e| StateError::Invalid(format!("value cannot be encoded as JSON: {e}")))
}

/// Decodes JSON text read from `table`.`column` of the row `key`.
pub(crate) fn from_json<T: DeserializeOwned>(
    text: &str,
    table: &str,
    key: &dyn std::fmt::Display,
    column: &str,
) -> Result<T, StateError> {
    serde_json::from_str(text)
        .map_err(|e| StateError::Corrupt(format!("{table} {key}: column {column}: {e}")))
}

/// A serial as SQLite stores it (SQLite integers are signed 64-bit).
pub(crate) fn serial_to_sql(serial: u64) -> Result<i64, StateError> {
    i64::try_from(serial).map_err(|_| StateError::Invalid(format!("serial {serial} is too large")))
}

/// A serial read from the database.
pub(crate) fn serial_from_sql(value: i64, table: &str) -> Result<u64, StateError> {
    u64::try_from(value)
        .map_err(|_| StateError::Corrupt(format!("{table}: negative serial {value}")))
}

/// A count or limit as SQLite takes it (saturating: "more than anyone has").
pub(crate) fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_rfc3339_utc_with_fixed_precision() {
        let t = now();
        assert!(t.ends_with('Z'), "{t}");
        assert_eq!(t.len(), "2026-01-01T00:00:00.000000Z".len(), "{t}");
        assert!(t.parse::<jiff::Timestamp>().is_ok());
    }

    #[test]
    fn bad_json_is_corrupt_with_location() {
        let r: Result<serde_json::Value, _> = from_json("{nope", "resources", &"a.b", "attributes");
        match r {
            Err(StateError::Corrupt(m)) => {
                assert!(
                    m.contains("resources a.b") && m.contains("attributes"),
                    "{m}"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn serial_conversions_reject_out_of_range() {
        assert!(serial_to_sql(u64::MAX).is_err());
        assert!(serial_from_sql(-1, "revisions").is_err());
        assert_eq!(serial_from_sql(7, "revisions").ok(), Some(7));
        assert_eq!(limit_to_sql(usize::MAX), i64::MAX);
    }
}
