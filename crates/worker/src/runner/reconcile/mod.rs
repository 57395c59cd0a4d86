//! Repairs what crashes and lost messages leave behind, publishes what the
//! outbox still holds, and the operator's dead-letter tools
//! ([`dead_letters`]).
//!
//! A reconciliation pass, run every `RECONCILE_INTERVAL` inside
//! `vidworker run` by one worker of the fleet at a time (it holds a lease
//! in the `reconciler_lease` table, on the database's clock, renewed
//! between the pass's steps: a frozen holder loses it when it expires), or
//! once by `vidworker reconcile`:
//! 1. **The outbox.** Completion events of recorded outcomes that were not
//!    marked published (the topic was down, a crash) are published.
//! 2. **The queue's facts.** The job queue's depth; if nothing is visible,
//!    in flight or delayed, the time is noted: no message sent before it
//!    can still be waiting.
//! 3. **Dead letters of live videos.** Dead-letter copies of processed or
//!    running videos are deleted; those of pending videos go back to the
//!    job queue. Dead letters of failed videos, unknown videos and
//!    malformed messages stay for an operator.
//! 4. **Abandoned claims.** A `processing` row whose lease expired more
//!    than `abandoned_after` ago has no live worker: any worker still
//!    running it has given up by then (it waits out outages for at most
//!    `OUTAGE_PATIENCE` and renews its lease every third of the visibility
//!    timeout). It goes back to `pending` with a fresh message, or to
//!    `failed` (gave up) once its counted attempts are used up, unless its
//!    rendition was already uploaded: such a row is never failed.
//! 5. **Stranded videos.** A `pending` row that no message can still reach:
//!    untouched since before the queue was last seen empty, or for longer
//!    than the queue keeps messages, and never younger than
//!    `stranded_after`. A video waiting in a backlog, however long, is
//!    neither. Its message is sent again, at most `max_resends` times;
//!    after that it is `failed` (stranded) with the reason.
//!
//! Every repair is a conditional UPDATE on the state that was read, so two
//! reconcilers (a fleet member and an operator's `vidworker reconcile`)
//! never both act on a row; a live lease is never touched.

pub mod dead_letters;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::completion::Publisher;
use crate::config::WorkerSettings;
use crate::db::{Db, DbError, Requeue, Stranded, StrandedFacts, VideoRow};
use crate::message;
use crate::queue::{Queue, QueueError};
use crate::telemetry::{Event, Stats};

/// Rows looked at per pass and per kind of repair.
const BATCH: i64 = 100;

/// How the reconciler works.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    /// Between two passes.
    pub interval: Duration,
    /// A pending row is never stranded before it is untouched this long.
    pub stranded_after: Duration,
    /// Re-sends of a stranded video before it is failed.
    pub max_resends: u32,
    /// How long after its lease expired a claim counts as abandoned.
    pub abandoned_after: Duration,
    /// Counted attempts before an abandoned video is failed.
    pub max_attempts: u32,
    /// An outcome's event is published by the reconciler once it is this
    /// old (the job that recorded it publishes it first).
    pub publish_after: Duration,
    /// Who holds the lease while a pass runs (the worker's id).
    pub holder: String,
}

impl ReconcileSettings {
    /// How the reconciler of a worker with `settings` works. A claim counts
    /// as abandoned once its lease has been expired longer than its worker
    /// could still be alive: a worker waits out outages for at most the
    /// outage patience, and renews its lease every third of the visibility
    /// timeout; five minutes more cover clock skew.
    pub fn of(settings: &WorkerSettings) -> Self {
        ReconcileSettings {
            interval: settings.reconcile_interval,
            stranded_after: settings.stranded_after,
            max_resends: settings.max_resends,
            abandoned_after: settings.outage_patience + settings.visibility_timeout + Duration::from_secs(300),
            max_attempts: settings.max_attempts,
            publish_after: Duration::from_secs(30),
            holder: settings.worker_id.clone(),
        }
    }

    /// How long a pass's lease lasts unless renewed: a few intervals, at
    /// least half a minute (a step of the pass may wait on a slow service).
    pub fn lease(&self) -> Duration {
        (self.interval * 3).max(Duration::from_secs(30))
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Completion events published from the outbox.
    pub published: u32,
    /// Stranded videos whose message was sent again.
    pub resent: u32,
    /// Stranded videos failed after the last re-send.
    pub stranded: u32,
    /// Abandoned videos returned to pending (and re-sent).
    pub returned: u32,
    /// Abandoned videos failed on their last attempt.
    pub abandoned: u32,
    /// Dead letters of processed or running videos deleted.
    pub dead_letters_deleted: u32,
    /// Dead letters of pending videos sent back to the job queue.
    pub dead_letters_redriven: u32,
}

impl ReconcileReport {
    /// Whether the pass changed anything.
    pub fn changed(&self) -> bool {
        *self != ReconcileReport::default()
    }
}

/// A pending video to send again, as the stranded scan and the
/// dead-letter redrive see it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resend {
    id: Uuid,
    /// The row's `updated_at` as seen: the re-send applies only if unchanged.
    updated_at: time::OffsetDateTime,
    generation: i32,
    resends: i32,
}

impl From<&Stranded> for Resend {
    fn from(r: &Stranded) -> Self {
        Resend {
            id: r.id,
            updated_at: r.updated_at,
            generation: r.generation,
            resends: r.resends,
        }
    }
}

impl From<&VideoRow> for Resend {
    fn from(r: &VideoRow) -> Self {
        Resend {
            id: r.id,
            updated_at: r.updated_at,
            generation: r.generation,
            resends: r.resends,
        }
    }
}

/// A reconciliation failure.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// SQS failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Another reconciler took the lease while this one worked (this one
    /// was too slow, or frozen): it stops.
    #[error("the reconciler lease was lost mid-pass; another reconciler carries on")]
    LeaseLost,
}

/// The reconciler and the dead-letter tools.
#[derive(Debug)]
pub struct Reconciler {
    db: Db,
    queue: Queue,
    settings: ReconcileSettings,
    stats: Arc<Stats>,
    publisher: Publisher,
}

impl Reconciler {
    /// A reconciler over these services. `queue` must have been
    /// [inspected](Queue::inspect) to know its dead-letter queue and its
    /// retention.
    pub fn new(db: Db, queue: Queue, settings: ReconcileSettings, stats: Arc<Stats>) -> Self {
        Reconciler {
            db,
            queue,
            settings,
            stats,
            publisher: Publisher::default(),
        }
    }

    /// Publishes completion events with `publisher`.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = publisher;
        self
    }

    /// Runs a pass every interval until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.interval) => {}
                () = stop.cancelled() => return,
            }
            match self.run_once().await {
                Ok(Some(report)) if report.changed() => {
                    tracing::info!(event = "reconciled", ?report, "reconciliation repaired videos");
                }
                Ok(Some(_)) => tracing::debug!("reconciliation found nothing to repair"),
                Ok(None) => tracing::debug!("another worker is reconciling"),
                Err(e) => tracing::warn!(error = %e, "reconciliation failed; it runs again later"),
            }
        }
    }

    /// One pass, if no other reconciler holds the lease (`None` if one
    /// does).
    pub async fn run_once(&self) -> Result<Option<ReconcileReport>, ReconcileError> {
        if !self.take_lease().await? {
            return Ok(None);
        }
        let report = self.pass().await;
        if let Err(e) = self.db.release_reconciler_lease(&self.settings.holder).await {
            tracing::debug!(error = %e, "cannot release the reconciler lease; it expires");
        }
        report.map(Some)
    }

    /// Takes or renews the fleet's reconciler lease.
    async fn take_lease(&self) -> Result<bool, ReconcileError> {
        Ok(self
            .db
            .take_reconciler_lease(&self.settings.holder, self.settings.lease())
            .await?)
    }

    /// Renews the lease between steps; a pass that lost it stops.
    async fn renew_lease(&self) -> Result<(), ReconcileError> {
        if self.take_lease().await? {
            Ok(())
        } else {
            Err(ReconcileError::LeaseLost)
        }
    }

    async fn pass(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        self.publish_outbox(&mut report).await?;
        self.renew_lease().await?;
        self.observe_queue().await?;
        if self.queue.dead_letter_url().is_some() {
            self.tidy_dead_letters(&mut report).await?;
            self.renew_lease().await?;
        }
        self.return_abandoned(&mut report).await?;
        self.renew_lease().await?;
        self.resend_stranded(&mut report).await?;
        Ok(report)
    }

    /// Publishes the events the outbox still holds.
    async fn publish_outbox(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        if !self.publisher.is_enabled() {
            return Ok(());
        }
        for row in self.db.unpublished(self.settings.publish_after, BATCH).await? {
            if self.publish(&row).await {
                report.published += 1;
            } else {
                // The topic is down: the rest would fail too.
                break;
            }
        }
        Ok(())
    }

    /// Publishes one row's event and marks it published: whether it went
    /// out.
    async fn publish(&self, row: &VideoRow) -> bool {
        match self.publisher.publish_outbox(row).await {
            Ok(Some(event_id)) => {
                if let Err(e) = self.db.record_published(row.id, event_id).await {
                    tracing::warn!(error = %e, video_id = %row.id, "cannot mark an event published; it goes out again");
                }
                true
            }
            Ok(None) => true,
            Err(e) => {
                self.stats.publish_failed(e.class());
                tracing::warn!(error = %e, "cannot publish from the outbox; next pass");
                false
            }
        }
    }

    /// Publishes the event of a video the reconciler itself just settled;
    /// what does not go out stays in the outbox.
    async fn announce(&self, id: Uuid) {
        match self.db.get(id).await {
            Ok(Some(row)) => {
                self.publish(&row).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, video_id = %id, "cannot read a video to announce it; next pass"),
        }
    }

    /// Notes when the job queue holds nothing at all (visible, in flight
    /// or delayed).
    async fn observe_queue(&self) -> Result<(), ReconcileError> {
        if self.queue.total().await? == 0 {
            self.db.note_queue_empty().await?;
        }
        Ok(())
    }

    async fn return_abandoned(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        for row in self.db.abandoned(self.settings.abandoned_after, BATCH).await? {
            let used_up = row.counted_attempts >= self.settings.max_attempts as i32;
            if used_up && row.uploaded_key.is_none() {
                let reason = format!(
                    "gave up after {} attempts: the worker processing it stopped and its lease expired",
                    row.counted_attempts
                );
                if self.db.fail_abandoned(row.id, row.token, &reason).await? {
                    Event::GaveUp {
                        video_id: row.id,
                        kind: "abandoned",
                        reason: &reason,
                    }
                    .emit(&self.stats);
                    self.announce(row.id).await;
                    report.abandoned += 1;
                }
                continue;
            }
            let reason = "re-sent: the worker processing it stopped and its lease expired";
            if self.db.reclaim_abandoned(row.id, row.token, reason).await? {
                self.send(row.id, row.generation).await?;
                Event::Returned { video_id: row.id }.emit(&self.stats);
                report.returned += 1;
            }
        }
        Ok(())
    }

    async fn resend_stranded(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        let facts = StrandedFacts {
            after: self.settings.stranded_after,
            queue_empty_at: self.db.queue_empty_at().await?,
            retention: self.queue.retention(),
        };
        for row in self.db.stranded(facts, BATCH).await? {
            if row.resends >= self.settings.max_resends as i32 {
                let reason = format!(
                    "stranded: pending with no message left to take it up, even after {} re-sends",
                    row.resends
                );
                if self.db.fail_stranded(row.id, row.updated_at, &reason).await? {
                    Event::GaveUp {
                        video_id: row.id,
                        kind: "stranded",
                        reason: &reason,
                    }
                    .emit(&self.stats);
                    self.announce(row.id).await;
                    report.stranded += 1;
                }
                continue;
            }
            let reason = "re-sent: pending, and no message for it can still be in the queue";
            if self.resend(Resend::from(&row), reason).await? {
                report.resent += 1;
            }
        }
        Ok(())
    }

    /// Sends a video's message, of its current generation.
    /// Notes a re-send in the row (fenced on `updated_at`, so a video
    /// touched meanwhile is left alone), then sends its message; `false` if
    /// the row moved on.
    pub(super) async fn resend(&self, r: Resend, reason: &str) -> Result<bool, ReconcileError> {
        if !self.db.note_resend(r.id, r.updated_at, reason).await? {
            return Ok(false);
        }
        self.send(r.id, r.generation).await?;
        Event::Resent {
            video_id: r.id,
            resends: r.resends + 1,
        }
        .emit(&self.stats);
        Ok(true)
    }

    async fn send(&self, id: Uuid, generation: i32) -> Result<(), ReconcileError> {
        self.queue.send(&message::body_for(id, generation)).await?;
        Ok(())
    }

    /// Makes a video pending with a fresh set of attempts and a new
    /// generation, and sends its message (`vidworker requeue`). `false` if
    /// a worker holds a live lease on it or there is no such video.
    pub async fn requeue(&self, id: Uuid, reason: &str) -> Result<bool, ReconcileError> {
        match self.db.requeue(id, reason).await? {
            Requeue::Done { generation } => {
                self.send(id, generation).await?;
                Ok(true)
            }
            Requeue::Busy | Requeue::Unknown => Ok(false),
        }
    }
}
