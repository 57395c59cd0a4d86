//! The dead-letter queue, judged by each video's row: the reconciler's
//! tidying (copies of live videos) and the operator's tools (`vidworker dlq
//! peek`, `dlq redrive`).
//!
//! A look at the queue is bounded: every dead letter is looked at once per
//! call (SQS returns some again; their ids are remembered), those an
//! operator must decide on are hidden until the call ends instead of being
//! released one by one (which would bring them straight back), and a call
//! stops after [`MAX_PER_CALL`] letters. The operator's redrive holds the
//! reconciler lease, like a pass.

use std::collections::HashSet;
use std::time::Duration;

use uuid::Uuid;

use super::{ReconcileError, ReconcileReport, Reconciler, Resend};
use crate::db::{Status, VideoRow};
use crate::message;
use crate::queue::Received;

/// Dead letters the reconciler looks at per pass.
const PER_PASS: usize = 100;
/// Dead letters one operator's call looks at, at most.
pub const MAX_PER_CALL: usize = 10_000;
/// How long a dead letter stays hidden while a call looks at the queue.
const HIDDEN_WHILE_LOOKING: Duration = Duration::from_secs(300);

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

/// The dead letters of one call, each once.
struct Letters {
    seen: HashSet<String>,
    /// Looked at and left: released when the call ends.
    kept: Vec<String>,
}

impl Reconciler {
    /// Up to `max` dead letters not looked at yet in this call, hidden
    /// while they are.
    async fn next_letters(&self, letters: &mut Letters, max: usize) -> Result<Vec<Received>, ReconcileError> {
        let mut out = Vec::new();
        while out.len() < max && letters.seen.len() < MAX_PER_CALL {
            let batch = self
                .queue
                .receive_dead_letters((max - out.len()).min(10), HIDDEN_WHILE_LOOKING)
                .await?;
            let fresh: Vec<Received> = batch
                .into_iter()
                .filter(|m| letters.seen.insert(m.message_id.clone()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            out.extend(fresh);
        }
        Ok(out)
    }

    /// Releases what a call looked at and left.
    async fn release_kept(&self, letters: Letters) -> Result<(), ReconcileError> {
        for receipt in letters.kept {
            self.queue.release_dead_letter(&receipt).await?;
        }
        Ok(())
    }

    async fn row_of(&self, msg: &Received) -> Result<Option<VideoRow>, ReconcileError> {
        match message::parse(&msg.body) {
            Ok(job) => Ok(self.db.get(job.video_id).await?),
            Err(_) => Ok(None),
        }
    }

    /// Deletes dead letters of processed or running videos and sends those
    /// of pending videos back; leaves the rest.
    pub(super) async fn tidy_dead_letters(&self, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        let mut letters = Letters {
            seen: HashSet::new(),
            kept: Vec::new(),
        };
        for msg in self.next_letters(&mut letters, PER_PASS).await? {
            let row = self.row_of(&msg).await?;
            match verdict(row.as_ref(), false) {
                Verdict::Delete => {
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                    report.dead_letters_deleted += 1;
                }
                Verdict::Redrive => {
                    let Some(row) = row else { continue };
                    let reason = "re-sent: its message was in the dead-letter queue";
                    if self.resend(Resend::from(&row), reason).await? {
                        report.dead_letters_redriven += 1;
                    }
                    self.queue.delete_dead_letter(&msg.receipt).await?;
                }
                Verdict::Keep(_) => letters.kept.push(msg.receipt),
            }
        }
        self.release_kept(letters).await
    }

    /// The dead letters, as an operator sees them (`vidworker dlq peek`).
    /// They stay in the queue.
    pub async fn peek(&self, max: usize) -> Result<Vec<DeadLetter>, ReconcileError> {
        let mut letters = Letters {
            seen: HashSet::new(),
            kept: Vec::new(),
        };
        let mut out = Vec::new();
        for msg in self.next_letters(&mut letters, max).await? {
            let row = self.row_of(&msg).await?;
            out.push(DeadLetter {
                message_id: msg.message_id.clone(),
                body: msg.body.clone(),
                video_id: message::parse(&msg.body).ok().map(|m| m.video_id),
                reason: msg
                    .attributes
                    .get(crate::queue::REASON_ATTRIBUTE)
                    .and_then(|v| v.string_value())
                    .map(str::to_owned),
                status: row.as_ref().map(|r| r.status),
                error: row.and_then(|r| r.error),
            });
            letters.kept.push(msg.receipt);
        }
        self.release_kept(letters).await?;
        Ok(out)
    }

    /// Sends dead letters back, driven by each video's row: deleted when
    /// the video is processed, left when its input cannot be processed (or
    /// the body is not a job), otherwise the row is made pending with a
    /// fresh set of attempts and a new generation, and its message goes
    /// back to the job queue. `only`: just these videos; `None`: all. Holds
    /// the reconciler lease (`None`: another reconciler holds it; try
    /// again).
    pub async fn redrive(&self, only: Option<&[Uuid]>) -> Result<Option<RedriveReport>, ReconcileError> {
        if !self.take_lease().await? {
            return Ok(None);
        }
        let report = self.redrive_holding_the_lease(only).await;
        if let Err(e) = self.db.release_reconciler_lease(&self.settings.holder).await {
            tracing::debug!(error = %e, "cannot release the reconciler lease; it expires");
        }
        report.map(Some)
    }

    async fn redrive_holding_the_lease(&self, only: Option<&[Uuid]>) -> Result<RedriveReport, ReconcileError> {
        let mut report = RedriveReport::default();
        let mut letters = Letters {
            seen: HashSet::new(),
            kept: Vec::new(),
        };
        loop {
            let batch = self.next_letters(&mut letters, 10).await?;
            if batch.is_empty() {
                break;
            }
            for msg in batch {
                let id = message::parse(&msg.body).ok().map(|m| m.video_id);
                let wanted = match (only, id) {
                    (None, _) => true,
                    (Some(ids), Some(id)) => ids.contains(&id),
                    (Some(_), None) => false,
                };
                if !wanted {
                    letters.kept.push(msg.receipt);
                    continue;
                }
                let row = self.row_of(&msg).await?;
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
                        letters.kept.push(msg.receipt);
                        report.skipped += 1;
                    }
                }
            }
            self.renew_lease().await?;
        }
        self.release_kept(letters).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{FailureKind, Phase};

    fn row(status: Status, kind: Option<FailureKind>) -> VideoRow {
        let now = time::OffsetDateTime::now_utc();
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
            phase: Phase::Queued,
            progress_percent: 0,
            event_id: None,
            event_published_at: None,
            generation: 0,
            claim_token: None,
            outputs: None,
            cost: None,
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
