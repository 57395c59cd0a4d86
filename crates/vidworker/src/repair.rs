//! The operator's repair commands: `reconcile`, `dlq stats|peek|redrive`
//! and `requeue` (the runbook is in the README).

use std::process::ExitCode;
use std::sync::Arc;

use processor::RenditionSpec;
use uuid::Uuid;
use worker::aws::Clients;
use worker::queue::Queue;
use worker::runner::reconcile::{ReconcileSettings, Reconciler};
use worker::telemetry::Stats;

use crate::cli::DlqAction;
use crate::flags::{AwsArgs, DbArgs, WorkerArgs};
use crate::local::print;

/// A reconciler over the configured database and queue (its dead-letter
/// queue found from the queue's redrive policy).
async fn reconciler(
    db: &DbArgs,
    aws: &AwsArgs,
    clients: &Clients,
    worker: Option<&WorkerArgs>,
) -> anyhow::Result<Reconciler> {
    let settings = match worker {
        Some(w) => w.to_settings(RenditionSpec::default())?,
        None => worker::config::WorkerSettings::default(),
    };
    let mut queue = Queue::new(clients.sqs.clone(), &aws.queue_url);
    queue.inspect().await?;
    let publisher = worker.map(|w| w.events.publisher(clients)).unwrap_or_default();
    Ok(Reconciler::new(
        db.connect(2, Some(clients)).await?,
        queue,
        ReconcileSettings::of(&settings),
        Arc::new(Stats::default()),
    )
    .with_publisher(publisher))
}

/// `vidworker reconcile`: one pass, unless another reconciler is running.
pub async fn reconcile(db: &DbArgs, aws: &AwsArgs, worker: &WorkerArgs) -> anyhow::Result<ExitCode> {
    match reconciler(db, aws, &aws.clients().await, Some(worker))
        .await?
        .run_once()
        .await?
    {
        Some(r) => print(&format!(
            "published {} events, re-sent {} stranded, failed {} stranded, returned {} abandoned, failed {} \
             abandoned, deleted {} and redrove {} dead letters\n",
            r.published, r.resent, r.stranded, r.returned, r.abandoned, r.dead_letters_deleted, r.dead_letters_redriven
        )),
        None => print("another reconciler is running; nothing done\n"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `vidworker dlq …`.
pub async fn dlq(action: DlqAction, db: &DbArgs, aws: &AwsArgs) -> anyhow::Result<ExitCode> {
    let clients = aws.clients().await;
    let mut queue = Queue::new(clients.sqs.clone(), &aws.queue_url);
    queue.inspect().await?;
    let Some(dlq_url) = queue.dead_letter_url().map(str::to_owned) else {
        anyhow::bail!("queue {} has no dead-letter queue (no redrive policy)", aws.queue_url);
    };
    let reconciler = reconciler(db, aws, &clients, None).await?;
    match action {
        DlqAction::Stats => {
            let depth = Queue::new(clients.sqs.clone(), &dlq_url).depth().await?;
            print(&format!("{dlq_url}: {depth} messages\n"));
        }
        DlqAction::Peek { n } => {
            for d in reconciler.peek(n).await? {
                let video = d.video_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
                print(&format!(
                    "{}  video {video}  row {}\n    reason: {}\n    error:  {}\n    body:   {}\n",
                    d.message_id,
                    d.status.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                    d.reason.as_deref().unwrap_or("-"),
                    d.error.as_deref().unwrap_or("-"),
                    d.body.chars().take(200).collect::<String>(),
                ));
            }
        }
        DlqAction::Redrive { all, ids } => {
            let only: Option<&[Uuid]> = if all { None } else { Some(&ids) };
            let r = redrive_when_free(&reconciler, only).await?;
            print(&format!(
                "redriven {}, deleted {} (already processed), left {} (failed input, malformed, unknown or busy)\n",
                r.redriven, r.deleted, r.skipped
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Redrives once the fleet's reconciler lease is free (a pass takes
/// seconds), waiting up to a minute for it.
async fn redrive_when_free(
    reconciler: &Reconciler,
    only: Option<&[Uuid]>,
) -> anyhow::Result<worker::runner::reconcile::dead_letters::RedriveReport> {
    for _ in 0..12 {
        if let Some(report) = reconciler.redrive(only).await? {
            return Ok(report);
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
    anyhow::bail!("another reconciler held the lease for a minute; nothing redriven (try again)")
}

/// `vidworker requeue ID…`.
pub async fn requeue(ids: &[Uuid], db: &DbArgs, aws: &AwsArgs) -> anyhow::Result<ExitCode> {
    let reconciler = reconciler(db, aws, &aws.clients().await, None).await?;
    let mut refused = 0;
    for id in ids {
        if reconciler.requeue(*id, "requeued by an operator").await? {
            print(&format!("{id}  requeued\n"));
        } else {
            refused += 1;
            eprintln!("{id}: not requeued: no such video, or a worker is processing it now");
        }
    }
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
