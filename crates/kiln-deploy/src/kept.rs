//! Blue-green sets kept idle for an instant switch back, as records that outlive the control
//! plane: which set, the spec it runs (so an apply of it adopts its instances), which instances
//! by pid and start time, which set served meanwhile, and when it is due to stop. The deployer
//! saves them through the [`KeptStore`] trait (the binary implements it over the state store)
//! and, after a restart, [`judge`] decides — a pure function of the record, the live orphans
//! and the time — whether the set can be taken back as it was.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use kiln_supervisor::{Orphan, ServiceSpec};
use serde::{Deserialize, Serialize};

/// One set kept idle after a blue-green switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptSet {
    /// The service (a supervisor name without `@`).
    pub service: String,
    /// The kept set (`service@version`).
    pub set: String,
    /// The set that took all traffic when this one was kept.
    pub serving: String,
    /// The spec the set runs: applying it again adopts the instances below.
    pub spec: ServiceSpec,
    pub instances: Vec<KeptInstance>,
    /// When the set is due to stop, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// A kept instance, by the identity the supervisor checks before it adopts a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptInstance {
    pub instance: u32,
    pub pid: u32,
    /// Clock ticks since boot when the process started: a reused pid has another.
    pub start_ticks: u64,
    pub port: u16,
}

/// A future of a [`KeptStore`] call.
pub type KeptFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where kept sets are recorded so that a restarted control plane finds them.
pub trait KeptStore: Send + Sync + std::fmt::Debug {
    /// Replaces what is kept for `service` (nothing, when `sets` is empty).
    fn save(&self, service: &str, sets: Vec<KeptSet>) -> KeptFuture<'_, ()>;
    /// Everything kept, for every service.
    fn load(&self) -> KeptFuture<'_, Vec<KeptSet>>;
}

/// What becomes of a recorded kept set when the control plane starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its deadline passed while the control plane was down: stop it.
    Expired,
    /// Some instance is not the process that was kept (it died, or its pid now names another
    /// process, or it runs another spec): stop what is left; a rollback redeploys.
    Lost { reason: String },
    /// Every instance is still the one kept: adopt them, idle, until the original deadline.
    Adopt { remaining: Duration },
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Judges a recorded kept set against the live orphans of a previous control plane at `now`.
pub fn judge(record: &KeptSet, orphans: &[Orphan], now: SystemTime) -> Verdict {
    let now_ms = epoch_ms(now);
    if record.expires_at_ms <= now_ms {
        return Verdict::Expired;
    }
    let hash = record.spec.spec_hash();
    let mut problems = Vec::new();
    if record.instances.len() != record.spec.replicas as usize {
        problems.push(format!(
            "{} of {} instance(s) were recorded",
            record.instances.len(),
            record.spec.replicas
        ));
    }
    for kept in &record.instances {
        let id = format!("{}/{}", record.set, kept.instance);
        let orphan = orphans
            .iter()
            .find(|o| o.id.service == record.set && o.id.instance == kept.instance);
        match orphan {
            None => problems.push(format!("{id} (pid {}) exited", kept.pid)),
            Some(o) if o.pid != kept.pid || o.start_ticks != kept.start_ticks => problems.push(
                format!("{id} is pid {} now, not the kept pid {}", o.pid, kept.pid),
            ),
            Some(o) if o.spec_hash != hash => {
                problems.push(format!("{id} runs another spec than the one kept"));
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Verdict::Adopt {
            remaining: Duration::from_millis(record.expires_at_ms - now_ms),
        }
    } else {
        Verdict::Lost {
            reason: problems.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_supervisor::{Command, InstanceId};

    const NOW_MS: u64 = 1_800_000_000_000;

    fn record() -> KeptSet {
        let mut spec = ServiceSpec::new(
            "app@1111aaaa",
            Command::Shell("node server.js".into()),
            "/srv",
        );
        spec.replicas = 2;
        KeptSet {
            service: "app".into(),
            set: "app@1111aaaa".into(),
            serving: "app@2222bbbb".into(),
            instances: (0..2)
                .map(|i| KeptInstance {
                    instance: i,
                    pid: 100 + i,
                    start_ticks: 5000 + u64::from(i),
                    port: 4000 + u16::try_from(i).unwrap(),
                })
                .collect(),
            spec,
            expires_at_ms: NOW_MS + 90_000,
        }
    }

    fn orphans(record: &KeptSet) -> Vec<Orphan> {
        record
            .instances
            .iter()
            .map(|k| Orphan {
                id: InstanceId {
                    service: record.set.clone(),
                    instance: k.instance,
                },
                pid: k.pid,
                start_ticks: k.start_ticks,
                port: k.port,
                spec_hash: record.spec.spec_hash(),
            })
            .collect()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    #[test]
    fn every_kept_process_alive_is_adopted_until_the_original_deadline() {
        let kept = record();
        assert_eq!(
            judge(&kept, &orphans(&kept), now()),
            Verdict::Adopt {
                remaining: Duration::from_secs(90)
            }
        );
        let later = now() + Duration::from_secs(90);
        assert_eq!(judge(&kept, &orphans(&kept), later), Verdict::Expired);
    }

    #[test]
    fn a_dead_or_reused_or_respecced_instance_loses_the_set() {
        let kept = record();
        let mut live = orphans(&kept);
        live.remove(1);
        let Verdict::Lost { reason } = judge(&kept, &live, now()) else {
            panic!("adopted with an instance missing");
        };
        assert_eq!(reason, "app@1111aaaa/1 (pid 101) exited");

        let mut reused = orphans(&kept);
        reused[0].start_ticks += 1;
        let Verdict::Lost { reason } = judge(&kept, &reused, now()) else {
            panic!("adopted a reused pid");
        };
        assert!(reason.contains("not the kept pid 100"), "{reason}");

        let mut respecced = orphans(&kept);
        respecced[1].spec_hash = "other".into();
        let Verdict::Lost { reason } = judge(&kept, &respecced, now()) else {
            panic!("adopted another spec");
        };
        assert!(reason.contains("another spec"), "{reason}");
    }

    #[test]
    fn orphans_of_other_sets_do_not_stand_in() {
        let kept = record();
        let mut strangers = orphans(&kept);
        for o in &mut strangers {
            o.id.service = "app@2222bbbb".into();
        }
        assert!(matches!(
            judge(&kept, &strangers, now()),
            Verdict::Lost { .. }
        ));
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let kept = record();
        let json = serde_json::to_string(&kept).unwrap();
        let back: KeptSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, kept);
        assert_eq!(back.spec.spec_hash(), kept.spec.spec_hash());
    }
}
