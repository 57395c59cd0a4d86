//! Carrying out a [`Settlement`], always in the same order: the row first
//! (the heartbeat still keeps the message hidden), then the completion
//! event, then the heartbeat stops, then the message. Nothing here decides:
//! every alternative (the row could not be written, the event could not be
//! published) was decided with the settlement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::decide::{MessageAction, RowAction, Settlement, Told, Written};
use crate::db::{Claimed, DbError, HandBack, Phase, ProcessedRow, Recorded};
use crate::queue::Received;
use crate::runner::heartbeat::Heartbeat;
use crate::runner::progress::RowProgress;
use crate::runner::stop::JobStop;
use crate::runner::work::{Produced, delete_unrecorded};
use crate::runner::{JobError, Runner};
use crate::telemetry::{Event, Stage};

/// How long the last writes of a job that is being handed back at shutdown
/// may take: the grace period is over.
const HANDBACK_WRITE: Duration = Duration::from_secs(5);

/// What carrying out a settlement needs from the job.
pub(crate) struct Settle<'a> {
    pub(crate) runner: &'a Arc<Runner>,
    pub(crate) msg: &'a Received,
    pub(crate) video_id: Option<Uuid>,
    pub(crate) claim: Option<&'a Claimed>,
    pub(crate) produced: Option<&'a Produced>,
    pub(crate) stop: &'a JobStop,
    pub(crate) progress: &'a RowProgress,
    pub(crate) started: Instant,
}

impl Settle<'_> {
    /// Carries out `s`; `heartbeat` is stopped once the row and the event
    /// are done, before the message changes.
    pub(crate) async fn apply(&self, s: &Settlement, heartbeat: Option<Heartbeat>) {
        if matches!(s.row, RowAction::Record | RowAction::Fail { .. }) {
            self.progress.set(Phase::Recording, 99);
        }
        let written = self.write_row(s).await;
        let mut message = s.message_after(written);
        if written == Written::Yes {
            self.tell(&s.told);
            if s.announce
                && let Err(e) = self.announce().await
            {
                // Kept for a redelivery, which finds the outcome recorded and
                // publishes the event again (same id): never lost.
                tracing::warn!(error = %e, "cannot publish the completion event; the message comes back to retry");
                message = s.if_unannounced.clone();
            }
        }
        if let Some(mut heartbeat) = heartbeat {
            heartbeat.stop().await;
        }
        self.act_on_message(message).await;
    }

    /// Writes the row as decided; says how that went.
    async fn write_row(&self, s: &Settlement) -> Written {
        let Some(video_id) = self.video_id else {
            return Written::Yes;
        };
        match self.write(video_id, &s.row).await {
            Ok(true) => Written::Yes,
            Ok(false) => {
                tracing::warn!(
                    "the claim was lost before the outcome was recorded; the worker holding it records its own"
                );
                Written::ClaimLost
            }
            Err(e) => {
                // Nothing recorded: the row keeps our lease, which expires;
                // the message comes back and the next attempt redoes it.
                if let MessageAction::Retry(delay) = s.message_after(Written::Failed) {
                    Event::Retry {
                        video_id,
                        kind: e.kind(),
                        reason: &format!("cannot record the outcome: {e}"),
                        delay,
                        receives: self.msg.receive_count,
                    }
                    .emit(&self.runner.stats);
                }
                Written::Failed
            }
        }
    }

    /// The row write itself, fenced on the claim. `Ok(false)`: the claim
    /// is lost.
    async fn write(&self, video_id: Uuid, row: &RowAction) -> Result<bool, JobError> {
        let runner = self.runner;
        let token = self.claim.map(|c| c.token);
        match row {
            RowAction::Keep => Ok(true),
            RowAction::Record => self.record(video_id).await,
            RowAction::Fail {
                kind,
                reason,
                error_kind,
            } => {
                self.bounded(runner.patiently("record the failure", self.stop, || async {
                    Ok(runner
                        .db
                        .mark_failed(video_id, token, *kind, reason, error_kind)
                        .await?)
                }))
                .await
            }
            RowAction::Release {
                reason,
                error_kind,
                attempt,
            } => {
                let Some(token) = token else { return Ok(true) };
                let why = HandBack {
                    reason: reason.as_deref(),
                    error_kind: error_kind.as_deref(),
                };
                self.bounded(runner.patiently("hand the video back", self.stop, || async {
                    Ok(runner.db.release(video_id, token, why, *attempt).await?)
                }))
                .await
            }
        }
    }

    /// After the grace period, row writes get a short deadline of their own.
    async fn bounded(
        &self,
        write: impl std::future::Future<Output = Result<bool, JobError>>,
    ) -> Result<bool, JobError> {
        if !self.stop.token.is_cancelled() {
            return write.await;
        }
        tokio::time::timeout(HANDBACK_WRITE, write).await.unwrap_or_else(|_| {
            Err(JobError::Db(DbError::Timeout {
                what: "hand the video back",
                after: HANDBACK_WRITE,
            }))
        })
    }

    /// Records the rendition, fenced on the claim; then removes what it
    /// supersedes (the previous rendition of a requeued video, and anything
    /// a crashed attempt left under the video's prefix). If the claim was
    /// lost, removes its own upload instead.
    async fn record(&self, video_id: Uuid) -> Result<bool, JobError> {
        let (Some(claim), Some(done)) = (self.claim, self.produced) else {
            return Ok(false);
        };
        let runner = self.runner;
        let row = processed_row(done);
        let record = runner.patiently("record the rendition", self.stop, || async {
            Ok(runner.db.mark_processed(video_id, claim.token, &row).await?)
        });
        match runner.stats.observe_stage(Stage::Record, record).await? {
            Recorded::Now { previous } => {
                self.clean_up(video_id, done, previous.as_deref()).await;
                Ok(true)
            }
            Recorded::ClaimLost => {
                delete_unrecorded(runner, &done.key).await;
                if let Some(poster_key) = &done.poster_key {
                    delete_unrecorded(runner, poster_key).await;
                }
                Ok(false)
            }
        }
    }

    /// Removes renditions (and posters) of this video other than the
    /// recorded ones. Best effort: what stays costs storage, never
    /// correctness.
    async fn clean_up(&self, video_id: Uuid, recorded: &Produced, previous: Option<&str>) {
        let storage = &self.runner.storage;
        let prefix = format!("{}{video_id}/", self.runner.settings.processed_prefix);
        let mut stale: Vec<String> = match storage.list(&prefix).await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list old renditions");
                Vec::new()
            }
        };
        stale.extend(previous.map(str::to_owned));
        stale.retain(|k| *k != recorded.key && Some(k) != recorded.poster_key.as_ref());
        stale.dedup();
        for key in stale {
            delete_unrecorded(self.runner, &key).await;
        }
    }

    /// Logs and counts what the row now says: one event per [`Told`].
    fn tell(&self, told: &Told) {
        let stats = &self.runner.stats;
        let Some(video_id) = self.video_id else { return };
        match told {
            Told::Processed => {
                if let Some(done) = self.produced {
                    Event::Processed {
                        video_id,
                        key: &done.key,
                        report: &done.report,
                        took: self.started.elapsed(),
                    }
                    .emit(stats);
                }
            }
            Told::Failed {
                kind,
                reason,
                permanent,
            } => Event::Failed {
                video_id,
                kind,
                reason,
                permanent: *permanent,
            }
            .emit(stats),
            Told::Released => Event::Released { video_id }.emit(stats),
            Told::Duplicate => Event::Duplicate { video_id }.emit(stats),
            Told::AlreadyFailed => Event::AlreadyFailed { video_id }.emit(stats),
            Told::Busy(delay) => Event::Busy {
                video_id,
                delay: *delay,
            }
            .emit(stats),
            Told::UnknownVideo => Event::UnknownVideo { video_id }.emit(stats),
            Told::Retry {
                kind,
                reason,
                delay,
                configuration,
            } => {
                if *configuration {
                    stats.configuration_error();
                }
                Event::Retry {
                    video_id,
                    kind,
                    reason,
                    delay: *delay,
                    receives: self.msg.receive_count,
                }
                .emit(stats);
            }
            Told::Nothing => {}
        }
    }

    /// Publishes the completion event of the row's recorded outcome.
    async fn announce(&self) -> Result<(), JobError> {
        let Some(video_id) = self.video_id else { return Ok(()) };
        let row = self.runner.db.get(video_id).await?;
        if let Some(row) = row {
            self.runner.publisher.announce(&row).await?;
        }
        Ok(())
    }

    async fn act_on_message(&self, action: MessageAction) {
        let queue = &self.runner.queue;
        let result = match action {
            MessageAction::Delete => queue.delete(&self.msg.receipt).await,
            MessageAction::Retry(delay) => queue.set_visibility(&self.msg.receipt, jitter(delay)).await,
            MessageAction::DeadLetter(reason) => {
                Event::DeadLettered {
                    message_id: &self.msg.message_id,
                    reason: &reason,
                }
                .emit(&self.runner.stats);
                queue.dead_letter(self.msg, &reason).await
            }
            MessageAction::Leave => return,
        };
        if let Err(e) = result {
            // The row is what counts; a message that stays comes back and
            // finds the work recorded.
            tracing::warn!(error = %e, "cannot settle the message; it comes back after its visibility timeout");
        }
    }
}

/// ±20 % so that failed jobs do not come back in lockstep.
fn jitter(delay: Duration) -> Duration {
    let factor = 0.8 + 0.4 * (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    delay.mul_f64(factor)
}

/// What the row records about a processed video.
fn processed_row(done: &Produced) -> ProcessedRow {
    let info = &done.report.input;
    ProcessedRow {
        processed_key: done.key.clone(),
        source_duration: info.duration.map(|d| d.as_secs_f64()),
        source_width: info.display_width as i32,
        source_height: info.display_height as i32,
        original_bytes: done.original_bytes as i64,
        processed_bytes: done.report.bytes as i64,
        processed_duration: done.report.duration.as_secs_f64(),
        media_info: serde_json::to_value(info).unwrap_or_default(),
        poster_key: done.poster_key.clone(),
    }
}
