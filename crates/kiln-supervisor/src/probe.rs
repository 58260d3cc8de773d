//! Health probes: running one check (HTTP, TCP, exec), counting consecutive results against
//! thresholds, and the per-instance probe task that reports verdict changes to the actor.
//!
//! The task only reports *transitions* (a probe started passing or failing), with the probe's
//! recent results for diagnostics; the actor decides what a transition means (restart, or mark
//! unready — a failed readiness probe never kills).

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use crate::event::ProbeKind;
use crate::spec::{Check, Command, Probe, Probes};

/// How many recent results a probe keeps for error messages.
const RECENT: usize = 5;

/// How long a liveness probe's failures do not count while the instance has not yet passed it
/// once, when no startup probe guards its start (Kubernetes' defaults allow 30 s the same way:
/// three failures ten seconds apart). Without it, a `health:` probe every 200 ms kills an
/// instance that takes more than 600 ms to listen, again and again.
const LIVENESS_STARTUP_GRACE: Duration = Duration::from_secs(30);

/// A change in a probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProbeEvent {
    /// The probe passes (readiness: the instance is ready; startup: the others may start).
    Passing { kind: ProbeKind },
    /// The probe reached its failure threshold.
    Failing {
        kind: ProbeKind,
        reason: String,
        recent: Vec<String>,
    },
}

/// Where to probe and with what environment (for exec checks).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub port: u16,
    pub workdir: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

/// Consecutive-result counting for one probe.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    successes: u32,
    failures: u32,
    passing: Option<bool>,
    recent: VecDeque<String>,
}

impl Tracker {
    /// Records one result; returns the new verdict when it changed.
    pub(crate) fn record(
        &mut self,
        probe: &Probe,
        result: &Result<String, String>,
    ) -> Option<bool> {
        let line = match result {
            Ok(detail) => format!("ok: {detail}"),
            Err(detail) => format!("failed: {detail}"),
        };
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
        if result.is_ok() {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= probe.success_threshold.max(1) {
            true
        } else if self.failures >= probe.failure_threshold.max(1) {
            false
        } else {
            return None;
        };
        (self.passing != Some(verdict)).then(|| {
            self.passing = Some(verdict);
            verdict
        })
    }

    pub(crate) fn recent(&self) -> Vec<String> {
        self.recent.iter().cloned().collect()
    }
}

/// Runs an instance's probes until the task is aborted (the actor does so when the instance
/// exits) or a startup/liveness probe fails.
pub(crate) async fn run(probes: Probes, target: Target, report: impl Fn(ProbeEvent) + Send + Sync) {
    if let Some(startup) = &probes.startup
        && !watch(ProbeKind::Startup, startup, &target, &report, None).await
    {
        return;
    }
    let readiness = async {
        match &probes.readiness {
            Some(probe) => {
                watch(ProbeKind::Readiness, probe, &target, &report, None).await;
            }
            // No readiness probe: running (past startup) is ready.
            None => report(ProbeEvent::Passing {
                kind: ProbeKind::Readiness,
            }),
        }
    };
    let liveness = async {
        if let Some(probe) = &probes.liveness {
            // A startup probe that passed has already waited for the instance to come up.
            let grace = probes.startup.is_none().then(|| startup_grace(probe));
            watch(ProbeKind::Liveness, probe, &target, &report, grace).await;
        }
    };
    tokio::join!(readiness, liveness);
}

/// The grace a liveness probe gives an instance that has not passed it yet: long enough for
/// the probe itself to fail its threshold once, and at least [`LIVENESS_STARTUP_GRACE`].
fn startup_grace(probe: &Probe) -> Duration {
    let threshold = probe
        .interval
        .saturating_mul(probe.failure_threshold.max(1));
    LIVENESS_STARTUP_GRACE.max(threshold)
}

/// Probes repeatedly, reporting transitions. Startup returns `true` once it passes; startup and
/// liveness return `false` when they fail; readiness never returns. With a `grace`, failures
/// count only once the probe has passed or the grace has run out: an instance still starting
/// is not yet dead.
async fn watch(
    kind: ProbeKind,
    probe: &Probe,
    target: &Target,
    report: &(impl Fn(ProbeEvent) + Sync),
    grace: Option<Duration>,
) -> bool {
    tokio::time::sleep(probe.initial_delay).await;
    let mut counting_from = grace.map(|grace| tokio::time::Instant::now() + grace);
    let mut ticks = tokio::time::interval(probe.interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = Tracker::default();
    loop {
        ticks.tick().await;
        let result = check(&probe.check, probe.timeout, target).await;
        if let Some(from) = counting_from {
            if result.is_ok() || tokio::time::Instant::now() >= from {
                counting_from = None;
            } else {
                continue;
            }
        }
        match tracker.record(probe, &result) {
            Some(true) => {
                if kind != ProbeKind::Liveness {
                    report(ProbeEvent::Passing { kind });
                }
                if kind == ProbeKind::Startup {
                    return true;
                }
            }
            Some(false) => {
                report(ProbeEvent::Failing {
                    kind,
                    reason: format!(
                        "{} failed {} times in a row: {}",
                        probe.check.describe(),
                        probe.failure_threshold.max(1),
                        result.err().unwrap_or_default()
                    ),
                    recent: tracker.recent(),
                });
                if kind != ProbeKind::Readiness {
                    return false;
                }
            }
            None => {}
        }
    }
}

/// Runs one check within `timeout`: `Ok(detail)` when it passes, `Err(why)` when not.
pub(crate) async fn check(
    check: &Check,
    timeout: Duration,
    target: &Target,
) -> Result<String, String> {
    let attempt = async {
        match check {
            Check::Http {
                path,
                expected_status,
            } => http(target.port, path, *expected_status).await,
            Check::Tcp => TcpStream::connect((Ipv4Addr::LOCALHOST, target.port))
                .await
                .map(|_| "connected".to_owned())
                .map_err(|e| format!("connect: {e}")),
            Check::Exec { command } => exec(command, target).await,
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

/// A minimal HTTP/1.0 GET: only the status line matters.
async fn http(port: u16, path: &str, expected: Option<u16>) -> Result<String, String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kiln-probe\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut chunk = [0_u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let status = parse_status(&head).ok_or("no HTTP status line in the response")?;
    let passes = match expected {
        Some(want) => status == want,
        None => (200..400).contains(&status),
    };
    if passes {
        Ok(format!("HTTP {status}"))
    } else {
        Err(format!("HTTP {status}"))
    }
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut words = line.split_whitespace();
    words.next().filter(|w| w.starts_with("HTTP/"))?;
    words.next()?.parse().ok()
}

/// Runs an exec check in its own process group; a check that outlives its timeout is killed
/// with everything it started.
async fn exec(command: &Command, target: &Target) -> Result<String, String> {
    let argv = command.argv();
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(&target.workdir)
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let pgid = child.id();
    // Kills the group if the timeout above drops this future mid-wait.
    let _guard = GroupKill(pgid);
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("wait: {e}"))?;
    let reason = crate::process::exit_reason(output.status);
    if output.status.success() {
        Ok("exit code 0".to_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        Err(if last.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {last}")
        })
    }
}

/// SIGKILLs a probe command's process group when dropped.
#[derive(Debug)]
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            crate::process::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            success_threshold: success,
            failure_threshold: failure,
            ..Probe::new(Check::Tcp)
        }
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let p = probe(2, 3);
        let mut t = Tracker::default();
        let ok = Ok("ok".to_owned());
        let bad = Err("bad".to_owned());
        assert_eq!(t.record(&p, &ok), None);
        assert_eq!(t.record(&p, &ok), Some(true));
        assert_eq!(t.record(&p, &ok), None, "no repeated transition");
        assert_eq!(t.record(&p, &bad), None);
        assert_eq!(t.record(&p, &bad), None);
        assert_eq!(t.record(&p, &ok), None, "a pass resets the failure count");
        for _ in 0..2 {
            assert_eq!(t.record(&p, &bad), None);
        }
        assert_eq!(t.record(&p, &bad), Some(false));
        assert_eq!(t.recent().len(), RECENT);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
    }

    #[tokio::test]
    async fn checks_against_a_real_listener() {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0_u8; 512];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        });
        let target = Target {
            port,
            workdir: std::env::temp_dir(),
            env: vec![("PORT".into(), port.to_string())],
        };
        let second = Duration::from_secs(2);
        let http = |expected| Check::Http {
            path: "/healthz".into(),
            expected_status: expected,
        };
        assert!(check(&http(None), second, &target).await.is_ok());
        assert!(check(&http(Some(200)), second, &target).await.is_err());
        assert!(check(&Check::Tcp, second, &target).await.is_ok());
        let exec = |script: &str| Check::Exec {
            command: Command::Shell(script.into()),
        };
        assert!(
            check(&exec("test \"$PORT\" -gt 0"), second, &target)
                .await
                .is_ok()
        );
        let failed = check(&exec("echo nope >&2; exit 2"), second, &target).await;
        assert_eq!(failed, Err("exit code 2: nope".to_owned()));
        let slow = check(&exec("sleep 5"), Duration::from_millis(100), &target).await;
        assert!(slow.unwrap_err().contains("timed out"));
    }
}
