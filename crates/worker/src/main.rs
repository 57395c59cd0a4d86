//! The `vidworker` binary: parses the command line, sets up logging and
//! hands over to the library. Errors are printed once, on one line.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use processor::CancelFlag;
use worker::cli::{Cli, Command};
use worker::config::RunArgs;
use worker::db::{self, Db};
use worker::queue::{Queue, QueueSettings, queue_name};
use worker::runner::Worker;
use worker::shutdown::Shutdown;
use worker::storage::Storage;
use worker::{admin, local, telemetry};

/// Exit code for an input that cannot be processed (bad, refused, over a
/// limit). 2 is a usage error (clap), 1 any other failure.
const EXIT_BAD_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, matches!(cli.command, Command::Run(_)));
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Process {
            input,
            output,
            rendition,
        } => {
            let spec = rendition.to_spec()?;
            let output = output.unwrap_or_else(|| local::default_output(&input));
            let cancel = CancelFlag::new();
            cancel_on_ctrl_c(cancel.clone())?;
            Ok(match local::process(&input, &output, &spec, &cancel) {
                Ok(report) => {
                    local::print(&format!("{}\n", local::summary(&report)));
                    ExitCode::SUCCESS
                }
                Err(e) => input_failure(&e),
            })
        }
        Command::Probe { input, json } => Ok(match processor::probe(&input) {
            Ok(info) => {
                let text = if json {
                    format!("{}\n", local::describe_json(&info))
                } else {
                    local::describe(&input, &info)
                };
                local::print(&text);
                ExitCode::SUCCESS
            }
            Err(e) => input_failure(&e),
        }),
        Command::Run(args) => runtime()?.block_on(serve(args)),
        Command::Migrate { db } => runtime()?.block_on(async {
            let pool = Db::connect_lazy(&db.database_url, 1)?;
            pool.migrate()
                .await
                .with_context(|| format!("migrating {}", db::redact(&db.database_url)))?;
            eprintln!("migrations applied to {}", db::redact(&db.database_url));
            Ok(ExitCode::SUCCESS)
        }),
        Command::QueueInit {
            aws,
            max_receive_count,
            visibility_timeout,
        } => runtime()?.block_on(async {
            let clients = aws.clients().await;
            let settings = QueueSettings {
                max_receive_count,
                visibility_timeout: Duration::from_secs(visibility_timeout),
                ..QueueSettings::default()
            };
            let storage = Storage::new(clients.s3.clone(), &aws.bucket);
            let made = admin::queue_init(
                &storage,
                &clients.sqs,
                queue_name(&aws.queue_url),
                clients.region.as_deref(),
                &settings,
            )
            .await?;
            local::print(&format!(
                "bucket      s3://{}\nqueue       {}\ndead letter {}\n",
                aws.bucket, made.queue_url, made.dead_letter_url
            ));
            Ok(ExitCode::SUCCESS)
        }),
        Command::Submit {
            files,
            db,
            aws,
            originals_prefix,
        } => runtime()?.block_on(async {
            let clients = aws.clients().await;
            let storage = Storage::new(clients.s3.clone(), &aws.bucket);
            let queue = Queue::new(clients.sqs.clone(), &aws.queue_url);
            let pool = Db::connect_lazy(&db.database_url, 2)?;
            for file in &files {
                let id = admin::submit(file, &storage, &pool, &queue, &originals_prefix).await?;
                local::print(&format!("{id}  {}\n", file.display()));
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Status { id, limit, db } => runtime()?.block_on(async {
            let pool = Db::connect_lazy(&db.database_url, 1)?;
            match id {
                Some(id) => match pool.get(id).await? {
                    Some(row) => local::print(&admin::details(&row)),
                    None => anyhow::bail!("no video {id}"),
                },
                None => {
                    let counts = pool.counts().await?;
                    local::print(&admin::table(&pool.list(limit).await?));
                    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{s}: {n}")).collect();
                    local::print(&format!("\n{}\n", summary.join(", ")));
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// The worker service.
async fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args.rendition.to_spec()?;
    let settings = args.worker.to_settings(spec)?;
    let db = Db::connect_lazy(&args.db.database_url, (settings.concurrency as u32 * 2).max(4))?;
    if args.migrate {
        db.migrate()
            .await
            .with_context(|| format!("migrating {}", db::redact(&args.db.database_url)))?;
    }
    let clients = args.aws.clients().await;
    let worker = Worker::new(
        settings,
        db,
        Storage::new(clients.s3.clone(), &args.aws.bucket),
        Queue::new(clients.sqs.clone(), &args.aws.queue_url),
    )
    .start()
    .await
    .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("installing signal handlers")?;
    worker.run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}

fn input_failure(e: &processor::Error) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(if e.is_permanent() { EXIT_BAD_INPUT } else { 1 })
}

/// Ctrl-C raises the cancel flag: the transcode stops within a frame and
/// leaves no partial file.
fn cancel_on_ctrl_c(cancel: CancelFlag) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    cancel.cancel();
                }
            });
        })
        .context("starting the signal handler")?;
    Ok(())
}
