//! `kiln incident list|show|ack|note|resolve|report`. Reading is from the state store (the
//! actor saves every change at once); changes go through the running control plane's
//! incident actor, or straight to the store when no control plane runs.

use std::path::Path;

use clap::Subcommand;
use kiln_alerts::incident::{self as model, Incident, Milestone};
use serde_json::json;

use super::{Action, apply, from_record, to_record};
use crate::cli::Output;
use crate::client;
use crate::daemon::Paths;
use crate::metrics::now_ms;
use crate::ops::{self, Failure};

/// How many incidents `list` shows at most.
const LIST_LIMIT: usize = 1_000;

/// `kiln incident ...`.
#[derive(Debug, Subcommand, Clone)]
pub enum IncidentCommand {
    /// Incidents, newest first.
    List {
        /// Only those not resolved.
        #[arg(long)]
        open: bool,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// One incident: milestones, time to acknowledge/mitigate/restore, the timeline.
    Show {
        /// Its number.
        id: i64,
        /// Output format.
        #[command(flatten)]
        output: Output,
    },
    /// Say you are on it.
    Ack {
        /// Its number.
        id: i64,
    },
    /// Add a note to the timeline.
    Note {
        /// Its number.
        id: i64,
        /// The note.
        text: String,
    },
    /// Declare it over.
    Resolve {
        /// Its number.
        id: i64,
        /// Why (kept in the timeline).
        #[arg(long)]
        note: Option<String>,
    },
    /// The post-incident report, as Markdown.
    Report {
        /// Its number.
        id: i64,
    },
}

/// `kiln incident ...`.
pub async fn incident(dir: &Path, command: &IncidentCommand) -> Result<(), Failure> {
    match command {
        IncidentCommand::List { open, output } => list(dir, *open, output),
        IncidentCommand::Show { id, output } => {
            let incident = read(dir, *id)?;
            if output.json {
                println!(
                    "{:#}",
                    serde_json::to_value(to_record(&incident))
                        .map_err(|e| Failure::State(e.to_string()))?
                );
            } else {
                print!("{}", show(&incident));
            }
            Ok(())
        }
        IncidentCommand::Report { id } => {
            print!("{}", model::report(&read(dir, *id)?));
            Ok(())
        }
        IncidentCommand::Ack { id } => {
            let done = change(dir, *id, Action::Acknowledge).await?;
            println!("incident {} acknowledged by {}", done.id, ops::who());
            Ok(())
        }
        IncidentCommand::Note { id, text } => {
            let done = change(dir, *id, Action::Note { text: text.clone() }).await?;
            println!("noted on incident {}", done.id);
            Ok(())
        }
        IncidentCommand::Resolve { id, note } => {
            let done = change(dir, *id, Action::Resolve { note: note.clone() }).await?;
            println!("incident {} resolved", done.id);
            Ok(())
        }
    }
}

fn read(dir: &Path, id: i64) -> Result<Incident, Failure> {
    let store = ops::open_store(dir)?;
    let record = store
        .incident(id)?
        .ok_or_else(|| Failure::Refused(format!("error: no incident {id}")))?;
    from_record(&record).map_err(Failure::State)
}

/// Through the control plane's actor when it runs (it owns open incidents), else directly.
async fn change(dir: &Path, id: i64, action: Action) -> Result<Incident, Failure> {
    let actor = ops::who();
    if let Some(stream) = client::connect(&Paths::new(dir).socket).await {
        let mut body = match &action {
            Action::Acknowledge => json!({ "action": "acknowledge" }),
            Action::Note { text } => json!({ "action": "note", "text": text }),
            Action::Resolve { note } => json!({ "action": "resolve", "note": note }),
        };
        body["actor"] = actor.into();
        let (code, answer) =
            client::request_json(stream, "POST", &format!("/v1/incidents/{id}"), Some(body))
                .await?;
        let message = || answer["message"].as_str().unwrap_or("refused").to_owned();
        return match code {
            200 => serde_json::from_value::<kiln_state::IncidentRecord>(answer.clone())
                .map_err(|e| Failure::State(e.to_string()))
                .and_then(|r| from_record(&r).map_err(Failure::State)),
            404 | 409 => Err(Failure::Refused(format!("error: {}", message()))),
            _ => Err(Failure::State(format!("error: {}", message()))),
        };
    }
    let mut store = ops::open_store(dir)?;
    let record = store
        .incident(id)?
        .ok_or_else(|| Failure::Refused(format!("error: no incident {id}")))?;
    let mut incident = from_record(&record).map_err(Failure::State)?;
    apply(&mut incident, now_ms(), &actor, action)
        .map_err(|e| Failure::Refused(format!("error: {e}")))?;
    store.save_incident(&to_record(&incident))?;
    Ok(incident)
}

fn list(dir: &Path, open_only: bool, output: &Output) -> Result<(), Failure> {
    let store = ops::open_store(dir)?;
    let records = store.incidents(open_only, LIST_LIMIT)?;
    if output.json {
        println!(
            "{:#}",
            serde_json::to_value(&records).map_err(|e| Failure::State(e.to_string()))?
        );
        return Ok(());
    }
    if records.is_empty() {
        println!(
            "{}",
            if open_only {
                "no open incidents"
            } else {
                "no incidents"
            }
        );
        return Ok(());
    }
    println!(
        "{:>5}  {:<12}  {:<20}  {:<14}  {:>9}  TITLE",
        "ID", "STATE", "DETECTED", "SERVICE", "TTR"
    );
    for record in &records {
        let incident = from_record(record).map_err(Failure::State)?;
        println!(
            "{:>5}  {:<12}  {:<20}  {:<14}  {:>9}  {}",
            incident.id,
            incident.state.as_str(),
            time(incident.milestones.detected.at),
            incident.service,
            figure(incident.milestones.time_to_restore()),
            incident.title
        );
    }
    Ok(())
}

fn time(ms: i64) -> String {
    kiln_alerts::rfc3339(ms).get(..19).unwrap_or("").to_owned()
}

fn figure(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), model::duration)
}

/// `kiln incident show`: milestones with their figures, then the timeline.
fn show(incident: &Incident) -> String {
    let m = &incident.milestones;
    let mut out = format!(
        "incident {}: {} ({})\nservice: {}\n\n",
        incident.id,
        incident.title,
        incident.state.as_str(),
        incident.service
    );
    let row = |name: &str, milestone: Option<&Milestone>| match milestone {
        Some(ms) => format!("{name:<13} {}  {}\n", time(ms.at), ms.actor),
        None => format!("{name:<13} -\n"),
    };
    out.push_str(&row("detected", Some(&m.detected)));
    out.push_str(&row("acknowledged", m.acknowledged.as_ref()));
    out.push_str(&row("mitigated", m.mitigated.as_ref()));
    out.push_str(&row("resolved", m.resolved.as_ref()));
    out.push_str(&format!(
        "\ntime to acknowledge: {}   time to mitigate: {}   time to restore: {}\n\n",
        figure(m.time_to_acknowledge()),
        figure(m.time_to_mitigate()),
        figure(m.time_to_restore())
    ));
    out.push_str(&format!(
        "{:<20}  {:<16}  {:<14}  WHAT\n",
        "TIME", "ACTOR", "KIND"
    ));
    for e in &incident.timeline {
        out.push_str(&format!(
            "{:<20}  {:<16}  {:<14}  {}\n",
            time(e.at),
            e.actor,
            e.kind.as_str(),
            e.text
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_lists_milestones_figures_and_the_timeline() {
        let t0 = 1_795_000_000_000;
        let mut incident = Incident::open("api", "f", "api-down", t0, "api-down fired");
        incident.id = 4;
        let acked = incident.acknowledge(t0 + 75_000, "ann@laptop");
        assert!(acked.is_ok());
        incident.note(t0 + 80_000, "ann@laptop", "rolling back");
        incident.alert_resolved("f", t0 + 200_000, "api-down resolved");
        insta::assert_snapshot!(show(&incident));
    }
}
