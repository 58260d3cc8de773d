//! Starting an instance's process and signalling its process group.
//!
//! Every instance leads its own process group (`process_group(0)`), so a stop signals the
//! whole tree — including grandchildren a shell put in the background — with one `killpg`.
//! Children are not killed when their handle is dropped: a control plane that dies must leave
//! them running to be adopted (or cleaned up) by the next one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Child;

use crate::event::{ExitReason, InstanceId};

/// Everything needed to start one instance.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub id: &'a InstanceId,
    pub argv: Vec<String>,
    pub workdir: &'a Path,
    pub env: &'a BTreeMap<String, String>,
    pub release: &'a str,
    pub port: u16,
    /// Shell lines run in the child before `exec` (limits); empty for none.
    pub prelude: &'a str,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
}

/// The FIFO paths of an instance's stdout and stderr.
pub(crate) fn fifo_paths(run_dir: &Path, id: &InstanceId) -> (PathBuf, PathBuf) {
    let stem = format!("{}-{}", id.service, id.instance);
    (
        run_dir.join(format!("{stem}.stdout")),
        run_dir.join(format!("{stem}.stderr")),
    )
}

/// The variables every instance gets on top of its spec's environment.
pub(crate) fn instance_env(id: &InstanceId, port: u16, release: &str) -> Vec<(String, String)> {
    vec![
        ("PORT".to_owned(), port.to_string()),
        (
            "KILN_SERVICE".to_owned(),
            crate::service_of(&id.service).to_owned(),
        ),
        ("KILN_INSTANCE".to_owned(), id.instance.to_string()),
        ("KILN_RELEASE".to_owned(), release.to_owned()),
    ]
}

/// Spawns the instance with stdin from /dev/null and stdout/stderr on the FIFOs' child ends.
/// The caller must have a reader open on both FIFOs before the returned child's ends close.
pub(crate) fn spawn(launch: &Launch<'_>) -> std::io::Result<Child> {
    let argv = wrap(&launch.argv, launch.prelude);
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(launch.workdir)
        .envs(launch.env)
        .envs(instance_env(launch.id, launch.port, launch.release))
        .stdin(Stdio::null())
        .stdout(crate::logs::open_child_end(launch.stdout)?)
        .stderr(crate::logs::open_child_end(launch.stderr)?)
        .process_group(0)
        .kill_on_drop(false);
    // `command` (holding our copies of the FIFO write ends) is dropped on return, so only the
    // child keeps them and the readers see EOF when the instance's whole group has exited.
    command.spawn()
}

/// Runs `argv` behind the limits prelude: `sh -c '<prelude>; exec "$@"' kiln-limits argv...`.
fn wrap(argv: &[String], prelude: &str) -> Vec<String> {
    if prelude.is_empty() {
        return argv.to_vec();
    }
    let mut wrapped = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("{prelude}; exec \"$@\""),
        "kiln-limits".to_owned(),
    ];
    wrapped.extend(argv.iter().cloned());
    wrapped
}

/// A free loopback port: bind port 0, read what the kernel chose, release it. Another process
/// could take it before the instance binds; `avoid` at least keeps our own instances apart.
pub(crate) fn free_port(avoid: &[u16]) -> std::io::Result<u16> {
    for _ in 0..32 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if !avoid.contains(&port) {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port found",
    ))
}

/// True when nothing holds loopback `port` now (a listener on it, or a socket bound to it
/// without address reuse).
pub(crate) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Sends `signal` to process group `pgid`. A group that no longer exists is already where we
/// want it, so errors are ignored.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid)
        && raw > 1
    {
        let _ = killpg(Pid::from_raw(raw), signal);
    }
}

/// The signal number `raw` as a nix signal, SIGTERM when it is not a valid signal.
pub(crate) fn to_signal(raw: i32) -> Signal {
    Signal::try_from(raw).unwrap_or(Signal::SIGTERM)
}

/// How an exit status reads as an [`ExitReason`].
pub(crate) fn exit_reason(status: std::process::ExitStatus) -> ExitReason {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return ExitReason::Code(code);
    }
    match status.signal() {
        Some(number) => ExitReason::Signal(
            Signal::try_from(number)
                .map_or_else(|_| format!("signal {number}"), |s| s.as_str().to_owned()),
        ),
        None => ExitReason::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limits_wrapper_passes_arguments_through_untouched() {
        let argv = vec![
            "printf".to_owned(),
            "%s|".to_owned(),
            "a b".to_owned(),
            "$HOME".to_owned(),
        ];
        let wrapped = wrap(&argv, "ulimit -d 100000");
        let out = std::process::Command::new(&wrapped[0])
            .args(&wrapped[1..])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$HOME|");
        assert_eq!(wrap(&argv, ""), argv);
    }

    #[test]
    fn free_ports_avoid_the_given_ones() {
        let first = free_port(&[]).unwrap();
        let second = free_port(&[first]).unwrap();
        assert_ne!(first, second);
    }
}
