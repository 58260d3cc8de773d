//! The `service` kind: a controller. Create and update hand the service's spec to the supervisor
//! (which owns the processes and keeps converging on its own) and complete when every replica is
//! ready, or fail with the supervisor's account of which instance failed which probe.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kiln_engine::provider::{
    Applied, Attributes, Drift, Observation, Provider, ProviderContext, ProviderError,
    ProviderFuture, Recorded,
};
use kiln_supervisor::{
    Check, Command, Limits, Probe, Probes, RestartMode, ServiceSpec, SupervisorHandle,
};
use serde_json::Value;

/// Default wait for readiness when a service does not say.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs services through the supervisor of the control plane.
#[derive(Clone)]
pub struct ServiceProvider {
    supervisor: Option<SupervisorHandle>,
}

impl std::fmt::Debug for ServiceProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProvider")
            .field("supervised", &self.supervisor.is_some())
            .finish()
    }
}

impl ServiceProvider {
    /// A provider; without a supervisor it can plan but not start anything.
    pub fn new(supervisor: Option<SupervisorHandle>) -> ServiceProvider {
        ServiceProvider { supervisor }
    }

    fn supervisor(&self) -> Result<&SupervisorHandle, ProviderError> {
        self.supervisor.as_ref().ok_or_else(|| ProviderError::Failed {
            message: "services run under the control plane: start it with `kiln up` (or `kiln up -d`), which applies the stack".into(),
        })
    }
}

/// The supervisor's name for a service address: `services.api` → `api`,
/// `modules.db.services.pg` → `modules-db-services-pg`.
pub fn supervisor_name(address: &str) -> String {
    address
        .strip_prefix("services.")
        .map_or_else(|| address.replace('.', "-"), str::to_owned)
}

fn failed(message: impl Into<String>) -> ProviderError {
    ProviderError::Failed {
        message: message.into(),
    }
}

fn millis(v: Option<&Value>) -> Option<Duration> {
    v.and_then(Value::as_u64).map(Duration::from_millis)
}

fn command(run: &Value, shell: bool) -> Result<Command, ProviderError> {
    match run {
        Value::String(s) if shell => Ok(Command::Shell(s.clone())),
        Value::String(s) => {
            let words =
                kiln_spec::words::split_command(s).map_err(|e| failed(format!("run: {e}")))?;
            if words.is_empty() {
                return Err(failed("run: the command is empty"));
            }
            Ok(Command::Argv(words))
        }
        Value::Array(items) => Ok(Command::Argv(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )),
        _ => Err(failed("run: expected a command")),
    }
}

fn probe(spec: &serde_json::Map<String, Value>) -> Result<Option<Probe>, ProviderError> {
    let check = if let Some(path) = spec.get("http").and_then(Value::as_str) {
        Check::Http {
            path: path.to_owned(),
            expected_status: spec
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok()),
        }
    } else if spec.get("tcp").and_then(Value::as_bool) == Some(true) {
        Check::Tcp
    } else if let Some(cmd) = spec.get("exec") {
        Check::Exec {
            command: command(cmd, cmd.is_string())?,
        }
    } else {
        return Ok(None);
    };
    let mut probe = Probe::new(check);
    if let Some(d) = millis(spec.get("interval")) {
        probe.interval = d;
    }
    if let Some(d) = millis(spec.get("timeout")) {
        probe.timeout = d;
    }
    if let Some(d) = millis(spec.get("initial_delay")) {
        probe.initial_delay = d;
    }
    if let Some(n) = spec.get("success_threshold").and_then(Value::as_u64) {
        probe.success_threshold = u32::try_from(n).unwrap_or(1);
    }
    if let Some(n) = spec.get("failure_threshold").and_then(Value::as_u64) {
        probe.failure_threshold = u32::try_from(n).unwrap_or(3);
    }
    Ok(Some(probe))
}

/// `health:` is either one probe (used for readiness and liveness) or named probes.
fn probes(health: Option<&Value>) -> Result<Probes, ProviderError> {
    let Some(Value::Object(h)) = health else {
        return Ok(Probes::default());
    };
    let named = |key: &str| -> Result<Option<Probe>, ProviderError> {
        match h.get(key) {
            Some(Value::Object(p)) => probe(p),
            _ => Ok(None),
        }
    };
    let shorthand = probe(h)?;
    Ok(Probes {
        startup: named("startup")?,
        readiness: named("readiness")?.or_else(|| shorthand.clone()),
        liveness: named("liveness")?.or(shorthand),
    })
}

fn env_file(root: &Path, rel: &str) -> Result<BTreeMap<String, String>, ProviderError> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| failed(format!("env_file {}: {e}", path.display())))?;
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(failed(format!(
                "env_file {}:{}: expected NAME=value",
                path.display(),
                n + 1
            )));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Runs the command as `user` through util-linux's `setpriv`, which switches uid, gid and
/// supplementary groups and then execs the command itself: the instance's pid, process group
/// and signals stay the command's own. Also sets the user's HOME, USER and LOGNAME.
fn as_user(run: Command, user: &str) -> Result<(Command, BTreeMap<String, String>), ProviderError> {
    let account = nix::unistd::User::from_name(user)
        .map_err(|e| failed(format!("user `{user}`: {e}")))?
        .ok_or_else(|| failed(format!("there is no user `{user}` on this machine")))?;
    if !nix::unistd::geteuid().is_root() && account.uid != nix::unistd::geteuid() {
        return Err(failed(format!(
            "running a service as `{user}` needs kiln to run as root"
        )));
    }
    let mut argv = vec![
        "setpriv".to_owned(),
        "--reuid".to_owned(),
        account.uid.to_string(),
        "--regid".to_owned(),
        account.gid.to_string(),
        "--init-groups".to_owned(),
        "--".to_owned(),
    ];
    match run {
        Command::Argv(words) => argv.extend(words),
        Command::Shell(line) => argv.extend(["sh".to_owned(), "-c".to_owned(), line]),
    }
    let env = BTreeMap::from([
        ("HOME".to_owned(), account.dir.display().to_string()),
        ("USER".to_owned(), account.name.clone()),
        ("LOGNAME".to_owned(), account.name),
    ]);
    Ok((Command::Argv(argv), env))
}

fn signal_number(name: &str) -> i32 {
    name.parse::<nix::sys::signal::Signal>()
        .map_or(libc_sigterm(), |s| s as i32)
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

/// Builds the supervisor's spec from a service's evaluated attributes.
pub fn service_spec(
    ctx: &ProviderContext,
    address: &str,
    attrs: &Attributes,
) -> Result<ServiceSpec, ProviderError> {
    let shell = attrs.get("shell").and_then(Value::as_bool).unwrap_or(false);
    let mut run = command(attrs.get("run").unwrap_or(&Value::Null), shell)?;
    let mut user_env = BTreeMap::new();
    if let Some(user) = attrs.get("user").and_then(Value::as_str) {
        (run, user_env) = as_user(run, user)?;
    }
    let base = ctx
        .root
        .join(attrs.get("path").and_then(Value::as_str).unwrap_or("."));
    let workdir = attrs
        .get("workdir")
        .and_then(Value::as_str)
        .map_or_else(|| base.clone(), |w| ctx.root.join(w));
    let mut spec = ServiceSpec::new(supervisor_name(address), run, workdir);
    if let Some(file) = attrs.get("env_file").and_then(Value::as_str) {
        spec.env.extend(env_file(&ctx.root, file)?);
    }
    spec.env.extend(user_env);
    if let Some(Value::Object(env)) = attrs.get("env") {
        for (k, v) in env {
            spec.env.insert(
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            );
        }
    }
    spec.replicas = attrs
        .get("replicas")
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(1));
    spec.release = "local".into();
    spec.probes = probes(attrs.get("health"))?;
    spec.restart.mode = match attrs.get("restart").and_then(Value::as_str) {
        Some("never") => RestartMode::Never,
        Some("on-failure") => RestartMode::OnFailure,
        _ => RestartMode::Always,
    };
    if let Some(Value::Object(b)) = attrs.get("backoff") {
        if let Some(d) = millis(b.get("initial")) {
            spec.restart.backoff_initial = d;
        }
        if let Some(d) = millis(b.get("max")) {
            spec.restart.backoff_max = d;
        }
        if let Some(d) = millis(b.get("reset_after")) {
            spec.restart.reset_after = d;
        }
    }
    if let Some(Value::Object(stop)) = attrs.get("stop") {
        if let Some(name) = stop.get("signal").and_then(Value::as_str) {
            spec.stop.signal = signal_number(name);
        }
        if let Some(d) = millis(stop.get("grace")) {
            spec.stop.grace = d;
        }
    }
    if let Some(Value::Object(r)) = attrs.get("resources") {
        spec.limits = Limits {
            memory_bytes: r.get("memory").and_then(Value::as_u64),
            cpu: r.get("cpu").and_then(Value::as_f64),
            pids: r.get("pids").and_then(Value::as_u64),
        };
    }
    spec.validate().map_err(failed)?;
    Ok(spec)
}

impl ServiceProvider {
    async fn start(
        &self,
        ctx: &ProviderContext,
        address: &str,
        desired: &Attributes,
    ) -> Result<Applied, ProviderError> {
        let supervisor = self.supervisor()?;
        let spec = service_spec(ctx, address, desired)?;
        let name = spec.name.clone();
        let hash = spec.spec_hash();
        let replicas = spec.replicas;
        let job = desired.get("job").and_then(Value::as_bool).unwrap_or(false);
        let events = supervisor.subscribe();
        supervisor
            .apply(spec)
            .await
            .map_err(|e| ProviderError::Partial {
                message: e.to_string(),
            })?;
        let timeout = millis(desired.get("ready_timeout")).unwrap_or(READY_TIMEOUT);
        if job {
            wait_completed(supervisor, &name, replicas, events, timeout).await?;
        } else if replicas > 0 {
            supervisor
                .wait_ready(&name, timeout)
                .await
                .map_err(|e| ProviderError::Partial {
                    message: e.to_string(),
                })?;
        }
        let mut ports: Vec<u16> = supervisor
            .status()
            .await
            .into_iter()
            .filter(|s| s.id.service == name)
            .filter_map(|s| s.port)
            .collect();
        ports.sort_unstable();
        let mut outputs = Attributes::new();
        if let Some(first) = ports.first() {
            outputs.insert(
                "url".into(),
                Value::String(format!("http://127.0.0.1:{first}")),
            );
            outputs.insert("port".into(), Value::from(*first));
        }
        outputs.insert("ports".into(), Value::from(ports));
        outputs.insert("instances".into(), Value::from(replicas));
        Ok(Applied {
            outputs,
            private: serde_json::json!({ "spec_hash": hash }),
        })
    }
}

/// Waits until every instance of a job exited with status 0; fails on the first instance that
/// fails for good, or at the deadline, with the last exits and log lines.
async fn wait_completed(
    supervisor: &SupervisorHandle,
    name: &str,
    replicas: u32,
    mut events: tokio::sync::broadcast::Receiver<kiln_supervisor::Event>,
    timeout: Duration,
) -> Result<(), ProviderError> {
    use kiln_supervisor::{Event, InstanceState};
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_exit = String::new();
    loop {
        let states: Vec<InstanceState> = supervisor
            .status()
            .await
            .into_iter()
            .filter(|s| s.id.service == name)
            .map(|s| s.state)
            .collect();
        if states.len() as u32 == replicas && states.iter().all(|s| *s == InstanceState::Stopped) {
            return Ok(());
        }
        if states.contains(&InstanceState::Failed) {
            // The exit that failed it may still be queued: take it for the message.
            while let Ok(event) = events.try_recv() {
                if let Event::Exited {
                    id,
                    exit,
                    last_log_lines,
                    ..
                } = event
                    && id.service == name
                {
                    last_exit = format!(
                        "{id}: {exit}; last log lines: {}",
                        last_log_lines.join(" / ")
                    );
                }
            }
            return Err(ProviderError::Partial {
                message: format!("job {name} failed: {last_exit}"),
            });
        }
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event {
            Err(_) => {
                return Err(ProviderError::Partial {
                    message: format!(
                        "job {name} did not complete within {timeout:?}; last exit: {last_exit}"
                    ),
                });
            }
            Ok(Ok(Event::Exited {
                id,
                exit,
                last_log_lines,
                ..
            })) if id.service == name => {
                last_exit = format!(
                    "{id}: {exit}; last log lines: {}",
                    last_log_lines.join(" / ")
                );
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                return Err(failed("the supervisor stopped"));
            }
            Ok(_) => {}
        }
    }
}

impl Provider for ServiceProvider {
    fn kinds(&self) -> &'static [&'static str] {
        &["service"]
    }

    fn observe<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, Observation> {
        Box::pin(async move {
            let Some(supervisor) = &self.supervisor else {
                // Outside the control plane nothing is watching the processes; report no drift.
                return Ok(Observation::Present { drift: Vec::new() });
            };
            if recorded.attributes.get("job").and_then(Value::as_bool) == Some(true) {
                // A job that completed leaves nothing running to observe.
                return Ok(Observation::Present { drift: Vec::new() });
            }
            let name = supervisor_name(&recorded.address);
            let instances: Vec<_> = supervisor
                .status()
                .await
                .into_iter()
                .filter(|s| s.id.service == name)
                .collect();
            if instances.is_empty() {
                return Ok(Observation::Absent);
            }
            let mut drift = Vec::new();
            let want = recorded
                .attributes
                .get("replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            if instances.len() as u64 != want {
                drift.push(Drift {
                    attribute: "replicas".into(),
                    reason: format!(
                        "{} instances run (scaled outside the files), the files say {want}",
                        instances.len()
                    ),
                });
            }
            let recorded_hash = recorded.private.get("spec_hash").and_then(Value::as_str);
            if let (Some(recorded_hash), Ok(spec)) = (
                recorded_hash,
                service_spec(ctx, &recorded.address, &recorded.attributes),
            ) && spec.spec_hash() != recorded_hash
            {
                drift.push(Drift {
                    attribute: "run".into(),
                    reason: "the running instances were started from another spec".into(),
                });
            }
            Ok(Observation::Present { drift })
        })
    }

    fn create<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        _kind: &'a str,
        address: &'a str,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.start(ctx, address, desired))
    }

    fn update<'a>(
        &'a self,
        ctx: &'a ProviderContext,
        previous: &'a Recorded,
        desired: &'a Attributes,
    ) -> ProviderFuture<'a, Applied> {
        Box::pin(self.start(ctx, &previous.address, desired))
    }

    fn delete<'a>(
        &'a self,
        _ctx: &'a ProviderContext,
        recorded: &'a Recorded,
    ) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let supervisor = self.supervisor()?;
            match supervisor.remove(&supervisor_name(&recorded.address)).await {
                Ok(()) | Err(kiln_supervisor::SupervisorError::UnknownService(_)) => Ok(()),
                Err(e) => Err(failed(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ProviderContext {
        ProviderContext {
            root: "/stack".into(),
            stack: "s".into(),
        }
    }

    #[test]
    fn attributes_become_a_supervisor_spec() {
        let attrs: Attributes = serde_json::from_value(serde_json::json!({
            "run": "node api/server.js --flag 'a b'",
            "replicas": 3,
            "env": { "A": "1" },
            "health": { "http": "/healthz", "interval": 500, "failure_threshold": 2 },
            "restart": "on-failure",
            "stop": { "signal": "SIGINT", "grace": 2000 },
            "resources": { "memory": 268435456, "cpu": 0.5 },
        }))
        .unwrap();
        let spec = service_spec(&ctx(), "services.api", &attrs).unwrap();
        assert_eq!(spec.name, "api");
        assert_eq!(
            spec.command,
            Command::Argv(vec![
                "node".into(),
                "api/server.js".into(),
                "--flag".into(),
                "a b".into()
            ])
        );
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.env["A"], "1");
        let readiness = spec.probes.readiness.unwrap();
        assert_eq!(readiness.interval, Duration::from_millis(500));
        assert_eq!(readiness.failure_threshold, 2);
        assert!(spec.probes.liveness.is_some());
        assert_eq!(spec.restart.mode, RestartMode::OnFailure);
        assert_eq!(spec.stop.signal, nix::sys::signal::Signal::SIGINT as i32);
        assert_eq!(spec.stop.grace, Duration::from_secs(2));
        assert_eq!(spec.limits.memory_bytes, Some(268_435_456));
    }

    #[test]
    fn module_services_get_path_safe_names() {
        assert_eq!(supervisor_name("services.api"), "api");
        assert_eq!(
            supervisor_name("modules.db.services.pg"),
            "modules-db-services-pg"
        );
    }

    #[tokio::test]
    async fn without_a_control_plane_creation_says_how_to_start_one() {
        let provider = ServiceProvider::new(None);
        let attrs: Attributes =
            serde_json::from_value(serde_json::json!({ "run": "true" })).unwrap();
        let err = provider
            .create(&ctx(), "service", "services.api", &attrs)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("kiln up"), "{err}");
    }
}
