//! `vidworker run`: the worker service, until SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use worker::db;
use worker::queue::Queue;
use worker::runner::Runner;
use worker::shutdown::Shutdown;
use worker::storage::Storage;
use worker::termination::{TerminationSettings, Watcher};

use crate::flags::RunArgs;

/// Checks the services, then takes jobs until the shutdown signal; running
/// jobs drain within the grace period.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let spec = args.rendition.to_spec()?;
    let settings = args.worker.to_settings(spec)?;
    let db = args.db.connect((settings.concurrency as u32 * 2).max(4))?;
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
    .with_publisher(args.worker.events.publisher(&clients))
    .start()
    .await
    .context("cannot start")?;
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("installing signal handlers")?;
    let watch = tokio::spawn(watch_termination(args.termination.to_settings(), shutdown.clone()));
    runner.run(shutdown).await;
    // After a notice, tell the group the instance has drained (once); if
    // none came (SIGTERM, or not on EC2), stop watching.
    let watcher = if watch.is_finished() {
        watch.await.ok().flatten()
    } else {
        watch.abort();
        None
    };
    if let Some(watcher) = watcher
        && let Err(e) = watcher.complete_lifecycle_action(&clients.autoscaling).await
    {
        tracing::warn!(error = %e, "the lifecycle hook ends at its timeout instead");
    }
    Ok(ExitCode::SUCCESS)
}

/// Watches for an EC2 termination notice (off EC2, says so and returns);
/// on one, stops intake with the notice's deadline and returns the
/// watcher, to complete the lifecycle action once drained.
async fn watch_termination(settings: TerminationSettings, shutdown: Shutdown) -> Option<Watcher> {
    let watcher = Watcher::detect(settings).await?;
    let termination = watcher.next(shutdown.intake()).await?;
    let left = termination
        .deadline
        .saturating_duration_since(std::time::Instant::now());
    tracing::warn!(
        event = "termination_notice",
        notice = ?termination.notice,
        instance = watcher.instance_id(),
        seconds_left = left.as_secs(),
        "the instance is going away: no new jobs; running ones finish if they can before it goes"
    );
    shutdown.stop_intake_before(termination.deadline);
    Some(watcher)
}

/// GETs `/healthz` of the worker at `addr` (the loopback address when it
/// listens on all interfaces). A plain HTTP/1.0 request: this runs as a
/// container's health check, where no HTTP client is installed.
pub fn healthcheck(mut addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(5);
    let answer = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => ExitCode::SUCCESS,
        Ok(text) => {
            eprintln!("unhealthy: {}", text.lines().last().unwrap_or_default());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: http://{addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}
