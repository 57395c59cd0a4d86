//! `vidworker run`: the worker service, until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use worker::aws::Clients;
use worker::queue::Queue;
use worker::runner::Runner;
use worker::shutdown::Shutdown;
use worker::storage::Storage;
use worker::telemetry::Stats;
use worker::termination::{TerminationSettings, Watcher};

use crate::flags::RunArgs;

/// Checks the services, then takes jobs until the shutdown signal; running
/// jobs drain within the grace period.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let clients = args.aws.clients().await;
    let runner = runner(&args, &clients).await?;
    if args.migrate {
        runner
            .db()
            .migrate()
            .await
            .with_context(|| format!("migrating {}", runner.db().label()))?;
    }
    let runner = runner.start().await.context("cannot start")?;
    let shutdown = Shutdown::new();
    shutdown.on_signals().context("installing signal handlers")?;
    let stopped = CancellationToken::new();
    let ec2 = tokio::spawn(on_ec2(
        args.termination.to_settings(),
        shutdown.clone(),
        runner.stats(),
        clients.clone(),
        stopped.clone(),
    ));
    runner.run(shutdown).await;
    // Lift the scale-in protection; after a notice, tell the group the
    // instance has drained (once).
    stopped.cancel();
    if let Ok(Some(watcher)) = ec2.await
        && let Err(e) = watcher.complete_lifecycle_action(&clients.autoscaling).await
    {
        tracing::warn!(error = %e, "the lifecycle hook ends at its timeout instead");
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker `args` describe, on `clients` (made once per command from
/// `args.aws`), not started (`run` starts it, `check` checks it).
pub async fn runner(args: &RunArgs, clients: &Clients) -> anyhow::Result<Runner> {
    let spec = args.rendition.to_spec()?;
    let settings = args.worker.to_settings(spec)?;
    let db = args
        .db
        .connect((settings.concurrency as u32 * 2).max(4), Some(clients))
        .await?;
    Ok(Runner::new(
        settings,
        db,
        Storage::new(clients.s3.clone(), &args.aws.bucket),
        Queue::new(clients.sqs.clone(), &args.aws.queue_url),
    )
    .with_publisher(args.worker.events.publisher(clients)))
}

/// Off EC2, says so and returns `None`. On EC2, until `stopped`: protects
/// the instance from scale-in while jobs run, and watches for a
/// termination notice; returns the watcher if one came, to complete the
/// lifecycle action once drained.
async fn on_ec2(
    settings: TerminationSettings,
    shutdown: Shutdown,
    stats: Arc<Stats>,
    clients: Clients,
    stopped: CancellationToken,
) -> Option<Watcher> {
    let watcher = tokio::select! {
        watcher = Watcher::detect(settings) => watcher?,
        () = stopped.cancelled() => return None,
    };
    let ((), noticed) = tokio::join!(
        watcher.protect_while_busy(&clients.autoscaling, &stats, &stopped),
        watch_termination(&watcher, &shutdown),
    );
    noticed.then_some(watcher)
}

/// Waits for a termination notice (until intake stops); on one, stops
/// intake with its deadline and says so.
async fn watch_termination(watcher: &Watcher, shutdown: &Shutdown) -> bool {
    let Some(termination) = watcher.next(shutdown.intake()).await else {
        return false;
    };
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
    true
}

/// GETs `/healthz` of the worker at `addr` (the loopback address when it
/// listens on all interfaces). A plain HTTP/1.0 request: this runs as a
/// container's health check, where no HTTP client is installed.
pub fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
    match probe(addr, "/healthz") {
        Ok(_) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("unhealthy: {why}");
            ExitCode::FAILURE
        }
    }
}

/// GETs `path` of the worker's endpoints at `addr`: the answer's last line
/// when it is a 200, else what went wrong, in one line.
pub fn probe(mut addr: std::net::SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(5);
    let answer = std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
        s.set_read_timeout(Some(timeout))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    });
    let last = |text: &str| text.lines().last().unwrap_or_default().to_owned();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => Ok(last(&text)),
        Ok(text) => Err(last(&text)),
        Err(e) => Err(format!("http://{addr}{path}: {e}")),
    }
}
