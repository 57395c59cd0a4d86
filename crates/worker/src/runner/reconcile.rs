//! Repairs what crashes and lost messages leave behind, and the operator's
//! dead-letter tools.
//!
//! A reconciliation pass, run every minute inside `vidworker run` by one
//! worker of the fleet at a time (it holds a PostgreSQL advisory lock), or
//! once by `vidworker reconcile`:
//! 1. **Abandoned claims.** A `processing` row whose lease expired more
//!    than `abandoned_after` ago has no live worker: any worker still
//!    running it has given up by then (it waits out outages for at most
//!    `OUTAGE_PATIENCE` and renews its lease every third of the visibility
//!    timeout). It goes back to `pending` with a fresh message, or to
//!    `failed` (gave up) once its counted attempts are used up, unless its
//!    rendition was already uploaded: such a row is never failed.
//! 2. **Stranded videos.** A `pending` row untouched for `stranded_after`
//!    has no message that anyone receives (it went to the dead-letter queue
//!    by SQS's own count, expired after the retention period, or was never
//!    sent). Its message is sent again, at most `max_resends` times; after
//!    that it is `failed` (stranded) with the reason.
//! 3. **Dead letters of live videos.** Dead-letter copies of processed or
//!    running videos are deleted; those of pending videos go back to the
//!    job queue. Dead letters of failed videos, unknown videos and
//!    malformed messages stay for an operator.
//!
//! Every repair is a conditional UPDATE on the state that was read, so two
//! reconcilers (a fleet member and an operator's `vidworker reconcile`)
//! never both act on a row; a live lease is never touched.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::completion::Publisher;
use crate::config::WorkerSettings;
use crate::db::{Db, DbError, FailureKind, Requeue, Status, VideoRow};
use crate::message;
use crate::queue::{Queue, QueueError, Received};
use crate::telemetry::{Event, Stats};

/// Rows looked at per pass and per kind of repair.
const BATCH: i64 = 100;
/// Dead letters looked at per pass.
const DEAD_LETTER_BATCH: usize = 100;

/// How the reconciler works.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    /// Between two passes.
    pub interval: Duration,
    /// A pending row untouched this long is stranded.
    pub stranded_after: Duration,
    /// Re-sends of a stranded video before it is failed.
    pub max_resends: u32,
    /// How long after its lease expired a claim counts as abandoned.
    pub abandoned_after: Duration,
    /// Counted attempts before an abandoned video is failed.
    pub max_attempts: u32,
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
        }
    }
}

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
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

/// A reconciliation failure.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// SQS failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A dead letter as an operator sees it.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// SQS's id of the message.
    pub message_id: String,
    /// The body, untouched.
    pub body: String,
    /// The video it names, if the body is a job.
    pub video_id: Option<Uuid>,
    /// Why it was dead-lettered (`vidworker-reason`), if the worker moved it.
    pub reason: Option<String>,
    /// The row's status, if there is a row.
    pub status: Option<Status>,
    /// The row's error, if any.
    pub error: Option<String>,
}

/// What redriving found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Sent back to the job queue (rows made pending).
    pub redriven: u32,
    /// Deleted: the video is already processed.
    pub deleted: u32,
    /// Left in the dead-letter queue (failed input, malformed, unknown, busy).
    pub skipped: u32,
}

/// What to do with one dead letter, decided from the video's row.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing left to do for it: delete the copy.
    Delete,
    /// It still needs running: pending (again) and back to the job queue.
    Redrive,
    /// An operator's business: leave it, with the reason.
    Keep(&'static str),
}

/// The verdict on a dead letter for a video in `row`. `operator`: an
/// operator asked to redrive it, so videos that gave up or were stranded
/// are run again; the reconciler only sends back what was never given up.
fn verdict(row: Option<&VideoRow>, operator: bool) -> Verdict {
    let Some(row) = row else {
        return Verdict::Keep("no such video");
    };
    match (row.status, row.failure_kind) {
        (Status::Processed, _) => Verdict::Delete,
        (Status::Processing, _) if !operator => Verdict::Delete,
        (Status::Processing, _) => Verdict::Redrive,
        (Status::Pending, _) => Verdict::Redrive,
        (Status::Failed, Some(kind)) if !kind.is_retryable() => Verdict::Keep("its input cannot be processed"),
        (Status::Failed, _) if operator => Verdict::Redrive,
        (Status::Failed, _) => Verdict::Keep("failed; redrive it on purpose"),
    }
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
    /// [inspected](Queue::inspect) to know its dead-letter queue.
    pub fn new(db: Db, queue: Queue, settings: ReconcileSettings, stats: Arc<Stats>) -> Self {
        Reconciler {
            db,
            queue,
            settings,
            stats,
            publisher: Publisher::default(),
        }
    }

    /// Announces the videos it fails with `publisher`.
    pub fn with_publisher(mut self, publisher: Publisher) -> Self {
        self.publisher = publisher;
        self
    }

    /// Publishes the completion event of a video the reconciler failed.
    /// Best effort: unlike a job's, no message carries it again.
    async fn announce(&self, id: Uuid) {
        let row = match self.db.get(id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, video_id = %id, "cannot read a failed video to announce it");
                return;
            }
        };
        if let Err(e) = self.publisher.announce(&row).await {
            tracing::warn!(error = %e, "cannot announce a video the reconciler failed");
        }
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

    /// One pass, if no other reconciler is running (`None` if one is).
    pub async fn run_once(&self) -> Result<Option<ReconcileReport>, ReconcileError> {
        self.db.with_reconcile_lock(|| self.pass()).await?.transpose()
    }

    async fn pass(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut report = ReconcileReport::default();
        self.return_abandoned(&mut report).await?;
        self.resend_stranded(&mut report).await?;
        if self.queue.dead_letter_url().is_some() {
            self.tidy_dead_letters(&mut report).await?;
        }
        Ok(report)
    }

    async fn return_abandoned(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        for row in self.db.abandoned(self.settings.abandoned_after, BATCH).await? {
            let used_up = row.counted_attempts >= self.settings.max_attempts as i32;
            if used_up && row.uploaded_key.is_none() {
                let reason = format!(
                    "gave up after {} attempts: the worker processing it stopped and its lease expired",
                    row.counted_attempts
                );
                if self
                    .db
                    .mark_failed(row.id, Some(row.token), FailureKind::GaveUp, &reason, "abandoned")
                    .await?
                {
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
                self.send(row.id).await?;
                Event::Returned { video_id: row.id }.emit(&self.stats);
                report.returned += 1;
            }
        }
        Ok(())
    }

    async fn resend_stranded(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        let after = self.settings.stranded_after;
        for row in self.db.stranded(after, BATCH).await? {
            if row.resends >= self.settings.max_resends as i32 {
                let reason = format!(
                    "stranded: pending with no worker taking it up, even after {} re-sends",
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
            let reason = format!("re-sent: pending and untouched for {} s", after.as_secs());
            if self.db.note_resend(row.id, row.updated_at, &reason).await? {
                self.send(row.id).await?;
                Event::Resent {
                    video_id: row.id,
                    resends: row.resends + 1,
                }
                .emit(&self.stats);
                report.resent += 1;
            }
        }
        Ok(())
    }

    /// Deletes dead letters of processed or running videos and sends those
    /// of pending videos back; leaves the rest.
    async fn tidy_dead_letters(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        let letters = self.receive_dead_letters(DEAD_LETTER_BATCH).await?;
        for msg in &letters {
            let row = self.row_of(msg).await?;
            match verdict(row.as_ref(), false) {
                Verdict::Delete => {
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                    report.dead_letters_deleted += 1;
                }
                Verdict::Redrive => {
                    let Some(row) = row else { continue };
                    let reason = "re-sent: its message was in the dead-letter queue";
                    if self.db.note_resend(row.id, row.updated_at, reason).await? {
                        self.send(row.id).await?;
                        Event::Resent {
                            video_id: row.id,
                            resends: row.resends + 1,
                        }
                        .emit(&self.stats);
                        report.dead_letters_redriven += 1;
                    }
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                }
                Verdict::Keep(_) => self.queue.release_dead_letter(&msg.receipt).await?,
            }
        }
        Ok(())
    }

    async fn row_of(&self, msg: &Received) -> Result<Option<VideoRow>, ReconcileError> {
        match message::parse(&msg.body) {
            Ok(id) => Ok(self.db.get(id).await?),
            Err(_) => Ok(None),
        }
    }

    async fn send(&self, id: Uuid) -> Result<(), ReconcileError> {
        self.queue.send(&message::body(id)).await?;
        Ok(())
    }

    /// Up to `max` messages of the dead-letter queue, hidden for a minute
    /// while they are looked at.
    async fn receive_dead_letters(&self, max: usize) -> Result<Vec<Received>, ReconcileError> {
        let mut all = Vec::new();
        while all.len() < max {
            let batch = self
                .queue
                .receive_dead_letters((max - all.len()).min(10), Duration::from_secs(60))
                .await?;
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        Ok(all)
    }

    /// The dead letters, as an operator sees them (`vidworker dlq peek`).
    /// They stay in the queue.
    pub async fn peek(&self, max: usize) -> Result<Vec<DeadLetter>, ReconcileError> {
        let letters = self.receive_dead_letters(max).await?;
        let mut out = Vec::new();
        for msg in &letters {
            let row = self.row_of(msg).await?;
            out.push(DeadLetter {
                message_id: msg.message_id.clone(),
                body: msg.body.clone(),
                video_id: message::parse(&msg.body).ok(),
                reason: msg
                    .attributes
                    .get(crate::queue::REASON_ATTRIBUTE)
                    .and_then(|v| v.string_value())
                    .map(str::to_owned),
                status: row.as_ref().map(|r| r.status),
                error: row.and_then(|r| r.error),
            });
        }
        for msg in &letters {
            self.queue.release_dead_letter(&msg.receipt).await?;
        }
        Ok(out)
    }

    /// Sends dead letters back, driven by each video's row: deleted when
    /// the video is processed, left when its input cannot be processed (or
    /// the body is not a job), otherwise the row is made pending with a
    /// fresh set of attempts and the message goes back to the job queue.
    /// `only`: just these videos; `None`: all.
    pub async fn redrive(&self, only: Option<&[Uuid]>) -> Result<RedriveReport, ReconcileError> {
        let mut report = RedriveReport::default();
        let letters = self.receive_dead_letters(usize::MAX).await?;
        for msg in &letters {
            let id = message::parse(&msg.body).ok();
            let wanted = match (only, id) {
                (None, _) => true,
                (Some(ids), Some(id)) => ids.contains(&id),
                (Some(_), None) => false,
            };
            if !wanted {
                self.queue.release_dead_letter(&msg.receipt).await?;
                continue;
            }
            let row = self.row_of(msg).await?;
            match (verdict(row.as_ref(), true), id) {
                (Verdict::Delete, _) => {
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                    report.deleted += 1;
                }
                (Verdict::Redrive, Some(id)) if self.requeue(id, "redriven from the dead-letter queue").await? => {
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                    report.redriven += 1;
                }
                _ => {
                    self.queue.release_dead_letter(&msg.receipt).await?;
                    report.skipped += 1;
                }
            }
        }
        Ok(report)
    }

    /// Makes a video pending with a fresh set of attempts and sends its
    /// message (`vidworker requeue`). `false` if a worker holds a live
    /// lease on it or there is no such video.
    pub async fn requeue(&self, id: Uuid, reason: &str) -> Result<bool, ReconcileError> {
        match self.db.requeue(id, reason).await? {
            Requeue::Done => {
                self.send(id).await?;
                Ok(true)
            }
            Requeue::Busy | Requeue::Unknown => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: Status, kind: Option<FailureKind>) -> VideoRow {
        let now = chrono::Utc::now();
        VideoRow {
            id: Uuid::new_v4(),
            status,
            original_key: "originals/x.mp4".into(),
            processed_key: None,
            error: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
            processing_started_at: None,
            processed_at: None,
            claimed_by: None,
            lease_expires_at: None,
            source_duration_seconds: None,
            source_width: None,
            source_height: None,
            original_bytes: None,
            processed_bytes: None,
            processed_duration_seconds: None,
            interruptions: 0,
            failure_kind: kind,
            last_error_kind: None,
            uploaded_key: None,
            resends: 0,
            resent_at: None,
            resend_reason: None,
            poster_key: None,
            phase: crate::db::Phase::Queued,
            progress_percent: 0,
            event_id: None,
        }
    }

    #[test]
    fn dead_letters_are_judged_by_the_row() {
        let check = |status, kind, operator| verdict(Some(&row(status, kind)), operator);
        assert_eq!(check(Status::Processed, None, false), Verdict::Delete);
        assert_eq!(check(Status::Pending, None, false), Verdict::Redrive);
        assert_eq!(check(Status::Processing, None, false), Verdict::Delete);
        assert!(matches!(
            check(Status::Failed, Some(FailureKind::GaveUp), false),
            Verdict::Keep(_)
        ));
        assert!(matches!(
            check(Status::Failed, Some(FailureKind::Input), true),
            Verdict::Keep(_)
        ));
        assert_eq!(check(Status::Failed, Some(FailureKind::GaveUp), true), Verdict::Redrive);
        assert_eq!(
            check(Status::Failed, Some(FailureKind::Stranded), true),
            Verdict::Redrive
        );
        assert!(matches!(verdict(None, true), Verdict::Keep(_)));
    }
}
