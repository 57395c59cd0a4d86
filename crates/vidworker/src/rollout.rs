//! `vidworker signal` and `vidworker mark-unhealthy`: what the instance's
//! set-up script and systemd's `OnFailure=` run, so that a release that
//! does not work stops at its first instance (see worker::rollout).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use worker::aws::Clients;
use worker::termination::{TerminationSettings, Watcher};

use crate::serve::probe;

/// What to signal.
#[derive(Debug)]
pub enum Verdict {
    /// Wait up to this long for the worker's `/readyz`, then signal what
    /// it said.
    WhenReady(Duration),
    /// Signal a failure at once (the set-up script failed).
    Failure(String),
}

/// Signals `resource` of `stack` for this instance.
pub async fn signal(
    clients: &Clients,
    stack: &str,
    resource: &str,
    metrics_addr: SocketAddr,
    verdict: Verdict,
) -> anyhow::Result<ExitCode> {
    let instance = instance_id().await?;
    let (ok, reason) = match verdict {
        Verdict::Failure(reason) => (false, reason),
        Verdict::WhenReady(limit) => wait_ready(metrics_addr, limit).await,
    };
    worker::rollout::signal(&clients.cloudformation, stack, resource, &instance, ok, &reason).await?;
    eprintln!(
        "signalled {} to {stack}/{resource}: {reason}",
        if ok { "SUCCESS" } else { "FAILURE" }
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Polls `/readyz` until it answers 200 or `limit` passes.
async fn wait_ready(addr: SocketAddr, limit: Duration) -> (bool, String) {
    let started = Instant::now();
    loop {
        let answer = tokio::task::spawn_blocking(move || probe(addr, "/readyz"))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match answer {
            Ok(_) => {
                let version = crate::cli::VERSION.as_str();
                return (
                    true,
                    format!("vidworker {version} ready after {} s", started.elapsed().as_secs()),
                );
            }
            Err(why) if started.elapsed() >= limit => {
                return (false, format!("not ready after {} s: {why}", limit.as_secs()));
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Marks this instance unhealthy in its Auto Scaling group.
pub async fn mark_unhealthy(clients: &Clients) -> anyhow::Result<ExitCode> {
    let instance = instance_id().await?;
    worker::rollout::mark_unhealthy(&clients.autoscaling, &instance).await?;
    eprintln!("instance {instance} marked unhealthy: the group replaces it");
    Ok(ExitCode::SUCCESS)
}

async fn instance_id() -> anyhow::Result<String> {
    let watcher = Watcher::detect(TerminationSettings::default())
        .await
        .context("not on EC2: no instance metadata to name this instance")?;
    Ok(watcher.instance_id().to_owned())
}
