//! kiln's built-in providers.
//!
//! - [`FileProvider`] owns the `file` kind: one local file with a content and a mode, like
//!   Terraform's `local_file`.
//! - [`ExecProvider`] owns the `exec` kind: local commands run on create, update and destroy,
//!   like Terraform's `terraform_data` with a `local-exec` provisioner.
//!
//! - [`ServiceProvider`] owns the `service` kind: it hands specs to the supervisor running in
//!   the control plane and completes when the instances are ready.
//!
//! The engine gets them through [`builtin_providers`].

use std::sync::Arc;

use kiln_engine::provider::Provider;

mod attrs;
mod exec;
mod file;
mod process;
mod route;
mod service;

pub use exec::ExecProvider;
pub use file::FileProvider;
pub use route::{RouteProvider, RouteSink, RouteSpec, route_spec};
pub use service::{
    DeployEntry, DeployJournal, ReleaseEntry, ServiceProvider, ServiceRuntime, TREE_RELEASE,
    deploy_config, environment_prefix, service_spec, supervisor_name,
};

/// Every provider built into kiln, ready to register with the engine. Services are supervised,
/// and routes served, only inside the control plane (which passes its supervisor and ingress).
pub fn builtin_providers(
    services: Option<ServiceRuntime>,
    routes: Option<Arc<dyn RouteSink>>,
) -> Vec<Arc<dyn Provider>> {
    vec![
        Arc::new(FileProvider::new()),
        Arc::new(ExecProvider::new()),
        Arc::new(ServiceProvider::new(services)),
        Arc::new(RouteProvider::new(routes)),
    ]
}
