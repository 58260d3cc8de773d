//! kiln's engine: the provider contract, the executor that walks a plan as a graph, and the
//! reconcile loop that keeps observed state converging on the declared one.

pub mod provider;
