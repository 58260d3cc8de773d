//! `kiln`: parse the command line, run the command, map its failure to an exit code.

use clap::Parser;
use kiln::cli::{Cli, Command};
use kiln::ops::Failure;
use kiln::{alerts, ci, commands, deploys, dora, hooks, incidents, promote};

fn main() {
    kiln::memory::tune_allocator();
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(5);
        }
    };
    let result = runtime.block_on(run(cli));
    if let Err(failure) = result {
        let message = failure.message();
        if !message.is_empty() {
            eprintln!("{}", message.trim_end());
        }
        std::process::exit(failure.exit_code());
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let dir = cli.dir.as_path();
    match &cli.command {
        Command::Validate(output) => commands::validate(dir, output),
        Command::Plan(args) => commands::plan(dir, args).await,
        Command::Apply(args) => commands::apply(dir, args, false).await,
        Command::Destroy(args) => commands::apply(dir, args, true).await,
        Command::Up(args) => commands::up(dir, args).await,
        Command::Down => commands::down(dir).await,
        Command::Ps(output) => commands::ps(dir, output).await,
        Command::Logs(args) => commands::logs(dir, args).await,
        Command::Restart { service } => commands::restart(dir, service).await,
        Command::Scale { assignment } => commands::scale(dir, assignment).await,
        Command::Deploy {
            service,
            release,
            output,
        } => commands::deploy(dir, service, release.as_deref(), false, output).await,
        Command::Rollback {
            service,
            to,
            output,
        } => commands::deploy(dir, service, to.as_deref(), true, output).await,
        Command::Releases { service, output } => deploys::list(dir, service, output.json),
        Command::Promote(args) => promote::promote(dir, args).await,
        Command::Approve(args) => promote::approve(dir, args),
        Command::Status(output) => commands::status(dir, output).await,
        Command::Dash { open } => kiln::dash::command(dir, *open).await,
        Command::State(command) => commands::state(dir, command),
        Command::History(args) => commands::history(dir, args),
        Command::Events(args) => commands::events(dir, args),
        Command::Query { expr, time, output } => {
            commands::query(dir, expr, time.as_deref(), output).await
        }
        Command::Alerts(command) => alerts::alerts(dir, command).await,
        Command::Silence(command) => alerts::silence(dir, command),
        Command::Incident(command) => incidents::incident(dir, command).await,
        Command::Runbook(command) => kiln::runbooks::runbook(dir, command).await,
        Command::Maintenance(command) => {
            kiln::maintenance::commands::maintenance(dir, command).await
        }
        Command::Ci(command) => ci::command(dir, command).await,
        Command::Dora(args) => dora::command(dir, args),
        Command::NotifyPush => hooks::notify_push(dir).await,
        Command::ForceUnlock { lock_id } => commands::force_unlock(dir, lock_id),
    }
}

/// `kiln ... | head` closes stdout early; `println!` then panics with EPIPE. Exit quietly the way a
/// process killed by SIGPIPE does (status 141) instead of printing a panic.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
