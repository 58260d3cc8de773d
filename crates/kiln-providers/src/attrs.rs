//! Reading typed values out of an attribute map, with error messages that name the attribute.
//!
//! Attribute values arrive fully evaluated as JSON; the spec crate has already checked the
//! schema, but a provider must not panic on a value of the wrong shape (state written by an
//! older kiln, a hand-edited state file), so every accessor returns a
//! [`ProviderError::Failed`] instead.

use std::path::{Path, PathBuf};

use kiln_engine::provider::{Attributes, ProviderError};
use serde_json::Value;

/// Shorthand for a [`ProviderError::Failed`] with `message`.
pub(crate) fn failed<M: Into<String>>(message: M) -> ProviderError {
    ProviderError::Failed {
        message: message.into(),
    }
}

/// Shorthand for a [`ProviderError::Partial`] with `message`.
pub(crate) fn partial<M: Into<String>>(message: M) -> ProviderError {
    ProviderError::Partial {
        message: message.into(),
    }
}

/// The string attribute `name`, which must be present.
pub(crate) fn required_str<'a>(
    attrs: &'a Attributes,
    name: &str,
) -> Result<&'a str, ProviderError> {
    optional_str(attrs, name)?.ok_or_else(|| failed(format!("attribute `{name}` is required")))
}

/// The string attribute `name`, or `None` when it is absent or null.
pub(crate) fn optional_str<'a>(
    attrs: &'a Attributes,
    name: &str,
) -> Result<Option<&'a str>, ProviderError> {
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(failed(format!(
            "attribute `{name}` must be a string, not {}",
            type_name(other)
        ))),
    }
}

/// The non-negative integer attribute `name`, or `None` when it is absent or null.
pub(crate) fn optional_u64(attrs: &Attributes, name: &str) -> Result<Option<u64>, ProviderError> {
    match attrs.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or_else(|| {
            failed(format!(
                "attribute `{name}` must be a non-negative integer, not {value}"
            ))
        }),
    }
}

/// `path` made absolute: relative paths are resolved against the stack root.
///
/// This is purely lexical (no symlink resolution), so it works for files that do not exist yet.
pub(crate) fn resolve_path(root: &Path, path: &str) -> PathBuf {
    let joined = root.join(path);
    // `absolute` only fails on an empty path or when the current directory is unknown; the
    // joined path is still the best answer then.
    std::path::absolute(&joined).unwrap_or(joined)
}

/// Whether `value` is a `sha256:<hex>` digest, which is how the engine records a sensitive
/// value instead of its clear text.
pub(crate) fn is_digest(value: &str) -> bool {
    value
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A short description of a JSON value's type, for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_recognised() {
        assert!(is_digest(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!is_digest("sha256:abc"));
        assert!(!is_digest("echo hi"));
    }

    #[test]
    fn relative_paths_resolve_against_root() {
        assert_eq!(
            resolve_path(Path::new("/srv/stack"), "etc/motd"),
            PathBuf::from("/srv/stack/etc/motd")
        );
        assert_eq!(
            resolve_path(Path::new("/srv/stack"), "/etc/motd"),
            PathBuf::from("/etc/motd")
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let mut attrs = Attributes::new();
        attrs.insert("path".into(), Value::from(3));
        assert!(required_str(&attrs, "path").is_err());
        assert!(required_str(&attrs, "missing").is_err());
        attrs.insert("timeout".into(), Value::from(-1));
        assert!(optional_u64(&attrs, "timeout").is_err());
    }
}
