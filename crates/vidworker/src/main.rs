//! The `vidworker` binary: parses the command line, sets up logging and
//! hands each command to its module. Errors are printed once, on one line.

#![forbid(unsafe_code)]

mod admin;
mod check;
mod cli;
mod flags;
mod isolation;
mod ladder;
mod local;
mod logging;
mod repair;
mod rollout;
mod serve;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(
        cli.log_format,
        matches!(cli.command, Command::Run(_) | Command::TranscodeJob),
    );
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Process {
            input,
            output,
            rendition,
        } => local::process_command(&input, output, &rendition),
        Command::Probe { input, json } => Ok(local::probe_command(&input, json)),
        Command::Run(args) => runtime()?.block_on(serve::run(args)),
        Command::Migrate { db } => runtime()?.block_on(admin::migrate(&db)),
        Command::QueueInit {
            aws,
            max_receive_count,
            visibility_timeout,
        } => runtime()?.block_on(admin::queue_init(&aws, max_receive_count, visibility_timeout)),
        Command::Submit {
            files,
            db,
            aws,
            originals_prefix,
        } => runtime()?.block_on(admin::submit_files(&files, &db, &aws, &originals_prefix)),
        Command::Status { id, limit, db } => runtime()?.block_on(admin::status(id, limit, &db)),
        Command::Reconcile { db, aws, worker } => runtime()?.block_on(repair::reconcile(&db, &aws, &worker)),
        Command::Dlq { action, db, aws } => runtime()?.block_on(repair::dlq(action, &db, &aws)),
        Command::Requeue { ids, db, aws } => runtime()?.block_on(repair::requeue(&ids, &db, &aws)),
        Command::Healthcheck { metrics_addr } => Ok(serve::healthcheck(metrics_addr)),
        Command::TranscodeJob => Ok(worker::isolate::serve_child()),
        Command::Check { env_file } => check::check(env_file.as_deref()),
        Command::Signal {
            stack,
            resource,
            wait,
            failure,
            metrics_addr,
            region,
        } => runtime()?.block_on(async {
            let clients = worker::aws::Clients::from_env(region.as_deref(), None).await;
            let verdict = match failure {
                Some(reason) => rollout::Verdict::Failure(reason),
                None => rollout::Verdict::WhenReady(std::time::Duration::from_secs(wait)),
            };
            rollout::signal(&clients, &stack, &resource, metrics_addr, verdict).await
        }),
        Command::MarkUnhealthy { region } => runtime()?.block_on(async {
            let clients = worker::aws::Clients::from_env(region.as_deref(), None).await;
            rollout::mark_unhealthy(&clients).await
        }),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "vidworker", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: None } => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing the man pages to {}", dir.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
