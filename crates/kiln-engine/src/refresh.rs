//! Refresh: ask each provider what exists for every recorded resource, concurrently.

use std::collections::BTreeMap;

use kiln_plan::Observed;
use tokio::task::JoinSet;

use crate::Providers;
use crate::provider::{Observation, Recorded};

/// Observes every recorded resource, at most `parallelism` at a time. A resource whose provider
/// fails to observe it is reported in the error list and left out of the map (planned as if
/// unchanged), so one unreadable resource does not hide the state of the others.
pub async fn refresh(
    providers: &Providers,
    records: &[kiln_state::ResourceRecord],
    parallelism: usize,
) -> (BTreeMap<String, Observed>, Vec<(String, String)>) {
    let mut observed = BTreeMap::new();
    let mut errors = Vec::new();
    let mut tasks: JoinSet<(String, Result<Observation, String>)> = JoinSet::new();
    let mut pending = records.iter();
    let parallelism = parallelism.max(1);
    loop {
        while tasks.len() < parallelism {
            let Some(record) = pending.next() else { break };
            let recorded = to_provider_record(record);
            let provider = providers.get(&record.kind).cloned();
            let context = providers.context.clone();
            tasks.spawn(async move {
                let result = match provider {
                    Ok(p) => p
                        .observe(&context, &recorded)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (recorded.address, result)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok((address, Ok(observation))) => {
                observed.insert(address, to_observed(observation));
            }
            Ok((address, Err(message))) => errors.push((address, message)),
            Err(join) => errors.push((String::new(), join.to_string())),
        }
    }
    errors.sort();
    (observed, errors)
}

/// The provider contract's view of a state record.
pub fn to_provider_record(record: &kiln_state::ResourceRecord) -> Recorded {
    Recorded {
        address: record.address.clone(),
        kind: record.kind.clone(),
        attributes: record.attributes.as_object().cloned().unwrap_or_default(),
        outputs: record.outputs.as_object().cloned().unwrap_or_default(),
        private: record.private.get("provider").cloned().unwrap_or_default(),
    }
}

fn to_observed(observation: Observation) -> Observed {
    match observation {
        Observation::Absent => Observed::Absent,
        Observation::Present { drift } if drift.is_empty() => Observed::Unchanged,
        Observation::Present { drift } => {
            Observed::Drifted(drift.into_iter().map(|d| (d.attribute, d.reason)).collect())
        }
    }
}
