//! `kiln alerts` and `kiln silence`: the alerts the running control plane tracks, the rules
//! as a Prometheus rule file, and silences (kept in the state store).

use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use kiln_alerts::CompiledMatcher;

use crate::cli::Output;
use crate::client;
use crate::metrics::now_ms;
use crate::ops::{self, Failure};

/// `kiln alerts`.
#[derive(Debug, Args, Clone)]
pub struct AlertsCommand {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<AlertsAction>,
    /// Output format of the list.
    #[command(flatten)]
    pub output: Output,
}

/// `kiln alerts ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum AlertsAction {
    /// The pending, firing and recently resolved alerts: state, since, value, labels.
    List(Output),
    /// Print the alert rules (SLOs' generated rules included) in another system's format.
    Export {
        /// The format.
        #[arg(long, value_enum, default_value = "prometheus")]
        format: ExportFormat,
    },
}

/// Formats `kiln alerts export` writes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// A Prometheus rule file (`promtool check rules` accepts it).
    Prometheus,
}

/// `kiln silence ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum SilenceCommand {
    /// Mute the alerts matching every matcher for a while.
    Add {
        /// Matchers: `alertname=api-errors`, `severity="page"`, `route=~"routes.api.*"`.
        #[arg(required = true)]
        matchers: Vec<String>,
        /// How long (`30m`, `2h`).
        #[arg(long = "for", default_value = "1h")]
        duration: String,
        /// When it starts: an RFC 3339 time or a delay from now (`2h`); default now.
        #[arg(long)]
        start: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who (default: the current user).
        #[arg(long)]
        author: Option<String>,
    },
    /// The silences in force or scheduled (with --all, every silence ever made).
    List {
        /// Include expired silences.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// End a silence now.
    Expire {
        /// Its id (or at least 4 leading characters of it).
        id: String,
    },
}

/// `kiln alerts [list|export]`.
pub async fn alerts(dir: &Path, command: &AlertsCommand) -> Result<(), Failure> {
    match &command.action {
        None => list(dir, &command.output).await,
        Some(AlertsAction::List(output)) => {
            let json = output.json || command.output.json;
            list(dir, &Output { json }).await
        }
        Some(AlertsAction::Export {
            format: ExportFormat::Prometheus,
        }) => {
            let stack = ops::load_stack(dir)?;
            let rules = kiln_alerts::rules(&stack.alerting);
            print!(
                "{}",
                kiln_alerts::prometheus_rule_file(
                    &rules,
                    stack.alerting.notify.evaluation_interval_ms
                )
            );
            Ok(())
        }
    }
}

async fn list(dir: &Path, output: &Output) -> Result<(), Failure> {
    let stream = crate::commands::control_plane(dir).await?;
    let (code, view) = client::request_json(stream, "GET", "/v1/alerts", None).await?;
    if code != 200 {
        return Err(Failure::State(format!(
            "error: {}",
            view["message"].as_str().unwrap_or("cannot list alerts")
        )));
    }
    if output.json {
        println!("{view:#}");
        return Ok(());
    }
    let alerts = view["alerts"].as_array().map_or(&[][..], Vec::as_slice);
    if alerts.is_empty() {
        println!(
            "no alerts pending or firing ({} rules, {} evaluations)",
            view["rules"], view["evaluations"]
        );
    } else {
        println!(
            "{:<9} {:<22} {:>12}  {:<24} LABELS",
            "STATE", "SINCE", "VALUE", "ALERT"
        );
    }
    for a in alerts {
        let mut state = a["state"].as_str().unwrap_or("?").to_owned();
        if a["silenced_by"].as_array().is_some_and(|s| !s.is_empty()) {
            state.push_str(" (silenced)");
        } else if a["inhibited"] == true {
            state.push_str(" (inhibited)");
        } else if a["maintenance"] == true {
            state.push_str(" (maintenance)");
        }
        let labels: Vec<String> = a["labels"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "alertname")
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        println!(
            "{:<9} {:<22} {:>12}  {:<24} {}",
            state,
            a["since"].as_str().unwrap_or("").get(..19).unwrap_or(""),
            kiln_alerts::format_value(a["value"].as_f64().unwrap_or(f64::NAN)),
            a["name"].as_str().unwrap_or(""),
            labels.join(" ")
        );
    }
    for e in view["errors"].as_array().into_iter().flatten() {
        println!(
            "error: {}: {}",
            e["alert"].as_str().unwrap_or(""),
            e["error"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `kiln silence add|list|expire`.
pub fn silence(dir: &Path, command: &SilenceCommand) -> Result<(), Failure> {
    let now = now_ms();
    match command {
        SilenceCommand::Add {
            matchers,
            duration,
            start,
            comment,
            author,
        } => {
            let mut problems = Vec::new();
            for m in matchers {
                if let Err(why) = CompiledMatcher::parse(m) {
                    problems.push(format!("error: {m}: {why}"));
                }
            }
            let ms = kiln_spec::units::parse_duration(duration)
                .map_err(|why| problems.push(format!("error: --for {duration}: {why}")))
                .unwrap_or(0);
            let starts_at = match start {
                None => now,
                Some(text) => start_time(text, now)
                    .map_err(|why| problems.push(format!("error: --start {text}: {why}")))
                    .unwrap_or(now),
            };
            if !problems.is_empty() {
                return Err(Failure::Invalid(problems.join("\n")));
            }
            let record = kiln_state::SilenceRecord {
                id: uuid::Uuid::now_v7().to_string(),
                matchers: matchers.clone(),
                starts_at,
                ends_at: starts_at.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)),
                created_by: author.clone().unwrap_or_else(ops::who),
                comment: comment.clone(),
            };
            let mut store = ops::open_store(dir)?;
            store.add_silence(&record)?;
            store.append_event(&kiln_state::NewEvent {
                kind: "silence.added".into(),
                address: None,
                serial: None,
                message: format!(
                    "{} silenced {} from {} until {}: {}",
                    record.created_by,
                    record.matchers.join(", "),
                    kiln_alerts::rfc3339(record.starts_at),
                    kiln_alerts::rfc3339(record.ends_at),
                    record.comment
                ),
                data: serde_json::to_value(&record).unwrap_or_default(),
            })?;
            println!("{}", record.id);
            Ok(())
        }
        SilenceCommand::List { all, output } => {
            let store = ops::open_store(dir)?;
            let list = store.silences(now, *all)?;
            if output.json {
                println!(
                    "{:#}",
                    serde_json::to_value(&list).map_err(|e| Failure::State(e.to_string()))?
                );
                return Ok(());
            }
            if list.is_empty() {
                println!("no silences");
                return Ok(());
            }
            println!(
                "{:<36}  {:<8}  {:<20}  {:<20}  {:<12}  MATCHERS / COMMENT",
                "ID", "STATE", "STARTS", "ENDS", "BY"
            );
            for s in list {
                let state = if s.ends_at <= now {
                    "expired"
                } else if s.starts_at > now {
                    "pending"
                } else {
                    "active"
                };
                println!(
                    "{:<36}  {:<8}  {:<20}  {:<20}  {:<12}  {}  {}",
                    s.id,
                    state,
                    kiln_alerts::rfc3339(s.starts_at).get(..19).unwrap_or(""),
                    kiln_alerts::rfc3339(s.ends_at).get(..19).unwrap_or(""),
                    s.created_by,
                    s.matchers.join(" "),
                    s.comment
                );
            }
            Ok(())
        }
        SilenceCommand::Expire { id } => {
            let mut store = ops::open_store(dir)?;
            let Some(silence) = store.expire_silence(id, now)? else {
                return Err(Failure::Refused(format!("error: no silence `{id}`")));
            };
            store.append_event(&kiln_state::NewEvent {
                kind: "silence.expired".into(),
                address: None,
                serial: None,
                message: format!("silence {} expired by {}", silence.id, ops::who()),
                data: serde_json::json!({ "id": silence.id }),
            })?;
            println!("expired {}", silence.id);
            Ok(())
        }
    }
}

/// `--start`: an RFC 3339 time (not in the past) or a delay from now.
fn start_time(text: &str, now: i64) -> Result<i64, String> {
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        let at = time.as_millisecond();
        if at < now {
            return Err(format!(
                "{} is in the past; leave --start out to start now",
                kiln_alerts::rfc3339(at)
            ));
        }
        return Ok(at);
    }
    kiln_spec::units::parse_duration(text)
        .map(|ms| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
        .map_err(|why| format!("neither an RFC 3339 time nor a delay ({why})"))
}

#[cfg(test)]
mod tests {
    use super::start_time;

    #[test]
    fn silences_start_at_a_time_or_after_a_delay() {
        let now = 1_795_000_000_000;
        assert_eq!(start_time("2h", now), Ok(now + 7_200_000));
        let later = kiln_alerts::rfc3339(now + 60_000);
        assert_eq!(start_time(&later, now), Ok(now + 60_000));
        assert!(start_time(&kiln_alerts::rfc3339(now - 1), now).is_err());
        assert!(start_time("tomorrow", now).is_err());
    }
}
