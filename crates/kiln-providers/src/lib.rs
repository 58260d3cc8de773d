//! kiln's built-in providers.
//!
//! - [`FileProvider`] owns the `file` kind: one local file with a content and a mode, like
//!   Terraform's `local_file`.
//! - [`ExecProvider`] owns the `exec` kind: local commands run on create, update and destroy,
//!   like Terraform's `terraform_data` with a `local-exec` provisioner.
//!
//! The engine gets both through [`builtin_providers`].

use std::sync::Arc;

use kiln_engine::provider::Provider;

mod attrs;
mod exec;
mod file;
mod process;

pub use exec::ExecProvider;
pub use file::FileProvider;

/// Every provider built into kiln, ready to register with the engine.
pub fn builtin_providers() -> Vec<Arc<dyn Provider>> {
    vec![Arc::new(FileProvider::new()), Arc::new(ExecProvider::new())]
}
