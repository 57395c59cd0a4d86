//! `vidworker run`: the worker service, until SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use worker::db::{self, Db};
use worker::queue::Queue;
use worker::runner::Runner;
use worker::shutdown::Shutdown;
use worker::storage::Storage;

use crate::flags::RunArgs;

/// Checks the services, then takes jobs until the shutdown signal; running
/// jobs drain within the grace period.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args.rendition.to_spec()?;
    let settings = args.worker.to_settings(spec)?;
    let db = Db::connect_lazy(&args.db.database_url, (settings.concurrency as u32 * 2).max(4))?;
    if args.migrate {
        db.migrate()
            .await
            .with_context(|| format!("migrating {}", db::redact(&args.db.database_url)))?;
    }
    let clients = args.aws.clients().await;
    let runner = Runner::new(
        settings,
        db,
        Storage::new(clients.s3.clone(), &args.aws.bucket),
        Queue::new(clients.sqs.clone(), &args.aws.queue_url),
    )
    .start()
    .await
    .context("cannot start")?;
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("installing signal handlers")?;
    runner.run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}
