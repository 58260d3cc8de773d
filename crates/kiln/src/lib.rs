//! The `kiln` binary's library half: the command line, the commands and terminal rendering.
//! **Architecture invariant:** this is the only crate that prints or picks exit codes.

pub mod alerts;
pub mod api_tcp;
pub mod ci;
pub mod cli;
pub mod client;
pub mod commands;
pub mod daemon;
pub mod dash;
pub mod delivery;
pub mod deploys;
pub mod dora;
pub mod hooks;
pub mod incidents;
pub mod ingress;
pub mod kiln_dir;
pub mod maintenance;
pub mod memory;
pub mod metrics;
pub mod ops;
pub mod promote;
pub mod render;
pub mod runbooks;
pub mod scrape;
pub mod tls;
