//! GitHub push webhooks: what `POST /hooks/github` accepts.
//!
//! A delivery is accepted only when `X-Hub-Signature-256` is `sha256=` followed by the hex
//! HMAC-SHA256 of the raw body under the shared secret, compared in constant time (GitHub's
//! "Validating webhook deliveries"). Deliveries are de-duplicated by `X-GitHub-Delivery` with a
//! bounded memory, and a push whose head commit is older than a limit is refused as stale
//! (GitHub redelivers on request, so an old payload replayed by someone else must not deploy).

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Push;

/// Why a delivery's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("the delivery is not signed (no X-Hub-Signature-256 header)")]
    Missing,
    /// The header is not `sha256=<64 hex digits>`.
    #[error("X-Hub-Signature-256 is not `sha256=<hex>`")]
    Malformed,
    /// The signature does not match the body under the shared secret.
    #[error("the signature does not match the body (wrong secret or altered body)")]
    Mismatch,
}

/// Checks `X-Hub-Signature-256` against the raw `body` under `secret`.
pub fn verify_signature(
    secret: &[u8],
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let given = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .filter(|bytes| bytes.len() == 32)
        .ok_or(SignatureError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Hub-Signature-256` header value GitHub would send for `body` (used by tests and by
/// whoever forwards deliveries).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a push payload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or not GitHub's push payload.
    #[error("not a GitHub push payload: {0}")]
    Invalid(String),
    /// The head commit is older than the limit.
    #[error("stale delivery: the head commit is from {timestamp}, older than {limit_seconds} s")]
    Stale {
        /// The payload's `head_commit.timestamp`.
        timestamp: String,
        /// The limit.
        limit_seconds: u64,
    },
}

#[derive(serde::Deserialize)]
struct RawPush {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: String,
    #[serde(default)]
    commits: Vec<RawCommit>,
    head_commit: Option<RawCommit>,
    #[serde(default)]
    deleted: bool,
}

#[derive(serde::Deserialize)]
struct RawCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
    timestamp: Option<String>,
}

/// All zeros: GitHub's `before` of a new branch and `after` of a deleted one.
const NULL_SHA: &str = "0000000000000000000000000000000000000000";

/// What a push delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A new head to follow.
    Push(Push),
    /// The branch was deleted: nothing to run.
    Deleted,
}

/// Reads a push payload. `now` and `max_age` refuse a delivery whose `head_commit.timestamp`
/// is older than `max_age` seconds (when the payload has one).
pub fn parse_push(
    body: &[u8],
    now: jiff::Timestamp,
    max_age_seconds: u64,
) -> Result<Delivery, PayloadError> {
    let raw: RawPush =
        serde_json::from_slice(body).map_err(|e| PayloadError::Invalid(e.to_string()))?;
    if raw.deleted || raw.after == NULL_SHA {
        return Ok(Delivery::Deleted);
    }
    if raw.after.len() < 7 || !raw.after.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PayloadError::Invalid(format!(
            "`after` is not a commit id: {:?}",
            raw.after
        )));
    }
    if let Some(timestamp) = raw.head_commit.as_ref().and_then(|c| c.timestamp.as_ref()) {
        let at: jiff::Timestamp = timestamp.parse().map_err(|e| {
            PayloadError::Invalid(format!("head_commit.timestamp {timestamp:?}: {e}"))
        })?;
        let age = now.as_second().saturating_sub(at.as_second());
        if age > i64::try_from(max_age_seconds).unwrap_or(i64::MAX) {
            return Err(PayloadError::Stale {
                timestamp: timestamp.clone(),
                limit_seconds: max_age_seconds,
            });
        }
    }
    let mut changed: Vec<String> = raw
        .commits
        .iter()
        .chain(raw.head_commit.iter())
        .flat_map(|c| c.added.iter().chain(&c.modified).chain(&c.removed))
        .cloned()
        .collect();
    changed.sort();
    changed.dedup();
    Ok(Delivery::Push(Push {
        git_ref: raw.git_ref,
        before: raw.before.filter(|b| b != NULL_SHA),
        after: raw.after,
        changed: Some(changed),
        source: "webhook".to_owned(),
    }))
}

/// The delivery ids seen most recently, at most `capacity` of them: a redelivered id is
/// recognised, and memory stays bounded however many deliveries arrive.
#[derive(Debug)]
pub struct SeenDeliveries {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl SeenDeliveries {
    /// Remembers up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> SeenDeliveries {
        SeenDeliveries {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `id` is offered (and remembers it), false for a repeat.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.set.insert(id.to_owned());
        true
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";

    #[test]
    fn githubs_documented_example_verifies() {
        // The example from GitHub's "Validating webhook deliveries".
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, b"Hello, World!"), header);
        assert_eq!(
            verify_signature(SECRET, b"Hello, World!", Some(header)),
            Ok(())
        );
    }

    #[test]
    fn unsigned_and_malformed_signatures_are_refused() {
        assert_eq!(
            verify_signature(SECRET, b"{}", None),
            Err(SignatureError::Missing)
        );
        for bad in ["sha1=abcd", "sha256=xyz", "sha256=abcd", ""] {
            assert_eq!(
                verify_signature(SECRET, b"{}", Some(bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    proptest! {
        #[test]
        fn a_valid_signature_verifies(body in proptest::collection::vec(any::<u8>(), 0..512),
                                      secret in proptest::collection::vec(any::<u8>(), 1..64)) {
            let header = sign(&secret, &body);
            prop_assert_eq!(verify_signature(&secret, &body, Some(&header)), Ok(()));
        }

        #[test]
        fn any_tampered_body_is_refused(body in proptest::collection::vec(any::<u8>(), 1..512),
                                        at in any::<prop::sample::Index>(),
                                        flip in 1u8..=255) {
            let header = sign(SECRET, &body);
            let mut tampered = body.clone();
            tampered[at.index(body.len())] ^= flip;
            prop_assert_eq!(
                verify_signature(SECRET, &tampered, Some(&header)),
                Err(SignatureError::Mismatch)
            );
        }

        #[test]
        fn any_tampered_signature_is_refused(body in proptest::collection::vec(any::<u8>(), 0..512),
                                             at in 0usize..64,
                                             digit in 0u32..16) {
            let header = sign(SECRET, &body);
            let mut hex: Vec<char> = header["sha256=".len()..].chars().collect();
            let replacement = std::char::from_digit(digit, 16).unwrap_or('0');
            prop_assume!(hex[at] != replacement);
            hex[at] = replacement;
            let forged = format!("sha256={}", hex.into_iter().collect::<String>());
            prop_assert_eq!(
                verify_signature(SECRET, &body, Some(&forged)),
                Err(SignatureError::Mismatch)
            );
        }

        #[test]
        fn another_secret_is_refused(body in proptest::collection::vec(any::<u8>(), 0..256),
                                     other in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assume!(other != SECRET);
            let header = sign(&other, &body);
            prop_assert_eq!(
                verify_signature(SECRET, &body, Some(&header)),
                Err(SignatureError::Mismatch)
            );
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap_or_default()
    }

    #[test]
    fn a_push_payload_gives_its_head_and_changed_files() {
        let body = br#"{"ref":"refs/heads/main","before":"1111111111111111111111111111111111111111",
            "after":"2222222222222222222222222222222222222222","repository":{"full_name":"o/r"},
            "commits":[{"added":["a.txt"],"modified":["src/x.rs"],"removed":[]},
                       {"added":[],"modified":["a.txt"],"removed":["old.md"]}],
            "head_commit":{"timestamp":"2026-11-26T10:00:00+01:00","added":[],"modified":["a.txt"],"removed":[]}}"#;
        let delivery = parse_push(body, at("2026-11-26T09:01:00Z"), 600);
        assert_eq!(
            delivery,
            Ok(Delivery::Push(Push {
                git_ref: "refs/heads/main".into(),
                before: Some("1111111111111111111111111111111111111111".into()),
                after: "2222222222222222222222222222222222222222".into(),
                changed: Some(vec!["a.txt".into(), "old.md".into(), "src/x.rs".into()]),
                source: "webhook".into(),
            }))
        );
    }

    #[test]
    fn stale_deleted_and_malformed_pushes() {
        let old = br#"{"ref":"refs/heads/main","before":null,"after":"2222222222222222222222222222222222222222",
            "head_commit":{"timestamp":"2026-11-26T08:00:00Z"}}"#;
        assert!(matches!(
            parse_push(old, at("2026-11-26T09:00:01Z"), 3600),
            Err(PayloadError::Stale { .. })
        ));
        assert!(matches!(
            parse_push(old, at("2026-11-26T08:59:59Z"), 3600),
            Ok(Delivery::Push(_))
        ));
        let deleted = br#"{"ref":"refs/heads/x","before":"2222222","after":"0000000000000000000000000000000000000000","deleted":true}"#;
        assert_eq!(
            parse_push(deleted, at("2026-11-26T09:00:00Z"), 60),
            Ok(Delivery::Deleted)
        );
        for bad in [
            &b"not json"[..],
            br#"{"ref":"refs/heads/x","after":"; rm -rf /"}"#,
        ] {
            assert!(matches!(
                parse_push(bad, at("2026-11-26T09:00:00Z"), 60),
                Err(PayloadError::Invalid(_))
            ));
        }
    }

    #[test]
    fn delivery_ids_are_deduplicated_within_a_bounded_memory() {
        let mut seen = SeenDeliveries::new(3);
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("a"));
        for id in ["b", "c", "d"] {
            assert!(seen.first_time(id));
        }
        assert_eq!(seen.len(), 3);
        // `a` was forgotten to make room for `d`.
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("d"));
    }
}
