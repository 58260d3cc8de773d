//! kiln's alerting engine: the rules a stack declares (`alerts:`), SLOs turned into the Google
//! SRE Workbook's multiwindow, multi-burn-rate alerts (`slo.rs`), each alert's lifecycle
//! (`lifecycle.rs`: inactive → pending → firing → resolved, with `for` and `keep_firing_for`),
//! evaluation against any [`Querier`] (`evaluator.rs`), silences and inhibition (`mute.rs`),
//! grouping, de-duplication and repeat intervals (`dispatch.rs`), Alertmanager's version 4
//! webhook payload (`payload.rs`) and delivery with retries and exponential backoff
//! (`deliver.rs`); incidents, their timelines and post-incident reports (`incident.rs`).
//!
//! **Architecture invariant:** the crate reads no metrics store and opens no sockets. Queries go
//! through the [`Querier`] trait and deliveries through the [`Transport`] trait, which the
//! binary implements over `kiln-metrics` and HTTP; tests use fakes. Time is a parameter
//! (milliseconds since the Unix epoch) everywhere except the retry delays.

mod deliver;
mod dispatch;
mod evaluator;
mod export;
pub mod incident;
mod lifecycle;
mod mute;
mod payload;
mod rule;
mod slo;
mod template;

pub use deliver::{Backoff, DeliveryError, Transport, TransportFuture, deliver_with_retries};
pub use dispatch::{Dispatcher, GroupLog, Notification};
pub use evaluator::{Alert, EvalReport, Evaluator, Querier, Sample, SavedAlert, Transition};
pub use export::prometheus_rule_file;
pub use lifecycle::{AlertState, Phase};
pub use mute::{CompiledMatcher, Inhibitor, Silence, matches_all};
pub use payload::{NotifyAlert, NotifyStatus, group_payload, slack_payload};
pub use rule::{Rule, rules};
pub use slo::{BurnWindow, WORKBOOK_WINDOWS, slo_rules};
pub use template::{format_value, render};

/// Labels of a series or an alert, sorted by name.
pub type LabelSet = std::collections::BTreeMap<String, String>;

/// An alert's identity: a 64-bit FNV-1a hash of its sorted labels, as Alertmanager prints it
/// (16 hex digits).
pub fn fingerprint(labels: &LabelSet) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        for byte in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// RFC 3339 (UTC) of a time in ms since the epoch, as Alertmanager writes times.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| "0001-01-01T00:00:00Z".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_depend_on_every_label_and_nothing_else() {
        let a: LabelSet = [("alertname", "x"), ("route", "a")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.insert("route".into(), "b".into());
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // The separator keeps `ab=c` apart from `a=bc`.
        let c: LabelSet = [("ab".to_owned(), "c".to_owned())].into();
        let d: LabelSet = [("a".to_owned(), "bc".to_owned())].into();
        assert_ne!(fingerprint(&c), fingerprint(&d));
        assert_eq!(fingerprint(&a).len(), 16);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
    }
}
