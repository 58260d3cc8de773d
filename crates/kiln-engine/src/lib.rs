//! kiln's engine: the provider contract, the evaluation of desired state, the executor that
//! walks a plan as a graph, and the refresh that observes what exists.
//!
//! **Architecture invariant:** the engine knows providers only through the [`provider::Provider`]
//! trait and the state only through `kiln_state::StateHandle`; it never prints.

pub mod apply;
pub mod desired;
pub mod provider;
pub mod refresh;

use std::collections::BTreeMap;
use std::sync::Arc;

use provider::{Provider, ProviderContext};

/// Providers by kind, with the context they act in.
#[derive(Clone)]
pub struct Providers {
    by_kind: BTreeMap<&'static str, Arc<dyn Provider>>,
    /// What every provider call receives.
    pub context: Arc<ProviderContext>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("kinds", &self.by_kind.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Providers {
    /// Registers each provider under the kinds it owns.
    pub fn new(providers: Vec<Arc<dyn Provider>>, context: ProviderContext) -> Providers {
        let mut by_kind = BTreeMap::new();
        for p in providers {
            for kind in p.kinds() {
                by_kind.insert(*kind, p.clone());
            }
        }
        Providers {
            by_kind,
            context: Arc::new(context),
        }
    }

    /// The provider of a kind.
    pub fn get(&self, kind: &str) -> Result<&Arc<dyn Provider>, provider::ProviderError> {
        self.by_kind
            .get(kind)
            .ok_or_else(|| provider::ProviderError::UnknownKind {
                kind: kind.to_owned(),
            })
    }
}
