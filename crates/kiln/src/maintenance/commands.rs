//! `kiln maintenance on|off|list`: a maintenance page on a route by hand, like `kamal app
//! maintenance` and `kamal app live`. `on` and `off` go through the running control plane
//! (it owns the ingress); `list` asks it too, or reads the state store when it is not running
//! (the pages recorded there come back with it).

use std::path::Path;

use clap::Subcommand;

use super::{Active, EndRequest, StartRequest};
use crate::cli::Output;
use crate::client;
use crate::ops::{self, Failure};

/// `kiln maintenance ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum MaintenanceCommand {
    /// Answer every request on ROUTE with a maintenance page instead of proxying.
    On {
        /// The route: its name (`name:`, or after host and path, as `kiln state list` shows
        /// `routes.NAME`).
        route: String,
        /// How long (`10m`, `1h30m`); without it, until `kiln maintenance off`.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// The page's text.
        #[arg(long)]
        message: Option<String>,
        /// The status it answers with: a 4xx or 5xx.
        #[arg(long, default_value_t = kiln_spec::runbooks::DEFAULT_MAINTENANCE_STATUS)]
        status: u16,
        /// `Retry-After` (default: the time left, at most an hour; 60 s without `--for`).
        #[arg(long, value_name = "DURATION")]
        retry_after: Option<String>,
    },
    /// Serve ROUTE again.
    Off {
        /// The route.
        route: String,
    },
    /// The routes in maintenance, their pages and until when.
    List(Output),
}

/// `kiln maintenance ...`.
pub async fn maintenance(dir: &Path, command: &MaintenanceCommand) -> Result<(), Failure> {
    match command {
        MaintenanceCommand::On {
            route,
            duration,
            message,
            status,
            retry_after,
        } => {
            let parse = |flag: &str, text: &Option<String>| {
                text.as_deref()
                    .map(kiln_spec::runbooks::positive_duration)
                    .transpose()
                    .map_err(|why| Failure::Invalid(format!("error: --{flag}: {why}")))
            };
            kiln_spec::runbooks::maintenance_status(&status.to_string())
                .map_err(|why| Failure::Invalid(format!("error: --status: {why}")))?;
            let request = StartRequest {
                route: route.clone(),
                for_ms: parse("for", duration)?,
                status: Some(*status),
                message: message.clone(),
                retry_after_ms: parse("retry-after", retry_after)?,
                by: ops::who(),
            };
            let active: Active = call(dir, "/v1/maintenance", serde_json::json!(request)).await?;
            println!(
                "route {} in maintenance {}: answers {} \"{}\"",
                active.route,
                crate::maintenance::until_text(&active, now_ms()),
                active.status,
                active.message
            );
            Ok(())
        }
        MaintenanceCommand::Off { route } => {
            let request = EndRequest {
                route: route.clone(),
                by: ops::who(),
            };
            let active: Active =
                call(dir, "/v1/maintenance/off", serde_json::json!(request)).await?;
            println!("route {} serves again", active.route);
            Ok(())
        }
        MaintenanceCommand::List(output) => {
            let active = list(dir).await?;
            if output.json {
                println!("{:#}", serde_json::json!(active));
            } else {
                print!("{}", render(&active, now_ms()));
            }
            Ok(())
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn call(dir: &Path, path: &str, body: serde_json::Value) -> Result<Active, Failure> {
    let stream = crate::commands::control_plane(dir).await?;
    let (code, answer) = client::request_json(stream, "POST", path, Some(body)).await?;
    if code != 200 {
        return Err(Failure::Refused(format!(
            "error: {}",
            answer["message"].as_str().unwrap_or("refused")
        )));
    }
    serde_json::from_value(answer)
        .map_err(|e| Failure::State(format!("the control plane's answer is not understood: {e}")))
}

async fn list(dir: &Path) -> Result<Vec<Active>, Failure> {
    if let Some(stream) = client::connect(&crate::daemon::Paths::new(dir).socket).await {
        let (code, answer) = client::request_json(stream, "GET", "/v1/maintenance", None).await?;
        if code == 200 {
            return serde_json::from_value(answer).map_err(|e| {
                Failure::State(format!("the control plane's answer is not understood: {e}"))
            });
        }
    }
    let store = ops::open_store(dir)?;
    Ok(store.maintenance()?)
}

/// The table `kiln maintenance list` prints.
pub fn render(active: &[Active], now_ms: i64) -> String {
    if active.is_empty() {
        return "no route is in maintenance\n".to_owned();
    }
    let rows: Vec<[String; 6]> = active
        .iter()
        .map(|a| {
            [
                a.route.clone(),
                a.service.clone(),
                a.status.to_string(),
                crate::maintenance::until_text(a, now_ms),
                a.actor.clone(),
                a.message.clone(),
            ]
        })
        .collect();
    let header = ["ROUTE", "SERVICE", "STATUS", "UNTIL", "BY", "MESSAGE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_a_table_of_routes_pages_and_ends() {
        // 2026-11-27T06:40:00Z
        let now = 1_795_761_600_000;
        let active = [
            Active {
                route: "routes.api".into(),
                service: "api".into(),
                status: 503,
                message: "Back soon".into(),
                retry_after_ms: None,
                started_at_ms: now - 60_000,
                ends_at_ms: Some(now + 600_000),
                actor: "runbook pause (run 0190a1b2)".into(),
            },
            Active {
                route: "routes.shop-localhost".into(),
                service: "web".into(),
                status: 502,
                message: "Moving house".into(),
                retry_after_ms: Some(30_000),
                started_at_ms: now,
                ends_at_ms: None,
                actor: "ann@laptop".into(),
            },
        ];
        insta::assert_snapshot!(render(&active, now));
        assert_eq!(render(&[], now), "no route is in maintenance\n");
    }
}
