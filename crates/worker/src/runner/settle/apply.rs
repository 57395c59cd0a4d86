//! Carrying out a [`Settlement`]: the row first (the heartbeat still keeps
//! the message hidden), then the completion event, then the heartbeat
//! stops, then the message; or, for a job handed back at the end of the
//! grace period, the heartbeat and the message first and the row after
//! them. Nothing here decides: every alternative (the row could not be
//! written) was decided with the settlement. An event that cannot be
//! published stays in the row's outbox for the reconciler.
//!
//! Nothing the row records is ever deleted: before removing an object,
//! the row is read again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::decide::{MessageAction, RowAction, Settlement, Told, Written};
use crate::db::{Claimed, HandBack, Phase, ProcessedRow, Recorded};
use crate::outputs;
use crate::queue::Received;
use crate::runner::heartbeat::Heartbeat;
use crate::runner::progress::RowProgress;
use crate::runner::stop::JobStop;
use crate::runner::work::{Produced, delete_unrecorded};
use crate::runner::{JobError, Runner};
use crate::telemetry::{Event, Stage};

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
    pub(crate) async fn apply(&self, s: &Settlement, mut heartbeat: Option<Heartbeat>) {
        if s.message_first {
            if let Some(heartbeat) = heartbeat.as_mut() {
                heartbeat.stop().await;
            }
            self.act_on_message(s.message.clone()).await;
            if self.write_row(s).await == Written::Yes {
                self.tell(&s.told);
            }
            return;
        }
        if matches!(s.row, RowAction::Record | RowAction::Fail { .. }) {
            self.progress.set(Phase::Recording, 99);
        }
        let written = self.write_row(s).await;
        if written == Written::Yes {
            self.tell(&s.told);
            if s.announce {
                self.announce().await;
            }
        }
        if let Some(heartbeat) = heartbeat.as_mut() {
            heartbeat.stop().await;
        }
        self.act_on_message(s.message_after(written)).await;
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
                // Only a claimed video is failed by a job.
                let Some(token) = token else { return Ok(false) };
                let write = runner.patiently("record the failure", self.stop, || async {
                    Ok(runner
                        .db
                        .mark_failed(video_id, token, *kind, reason, error_kind)
                        .await?)
                });
                self.stop.bound("record the failure", write).await
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
                let write = runner.patiently("hand the video back", self.stop, || async {
                    Ok(runner.db.release(video_id, token, why, *attempt).await?)
                });
                self.stop.bound("hand the video back", write).await
            }
        }
    }

    /// Records the rendition, fenced on the claim; then removes what it
    /// supersedes (the previous rendition of a requeued video, and anything
    /// a crashed attempt left under the video's prefix). If the claim was
    /// lost, removes its own upload instead, unless the row records it.
    async fn record(&self, video_id: Uuid) -> Result<bool, JobError> {
        let (Some(claim), Some(done)) = (self.claim, self.produced) else {
            return Ok(false);
        };
        let runner = self.runner;
        let row = processed_row(done);
        let record = runner.patiently("record the rendition", self.stop, || async {
            Ok(runner.db.mark_processed(video_id, claim.token, &row).await?)
        });
        let record = self.stop.bound("record the rendition", record);
        match runner.stats.observe_stage(Stage::Record, record).await? {
            Recorded::Now { previous } => {
                self.clean_up(video_id, previous.as_deref()).await;
                Ok(true)
            }
            Recorded::ClaimLost => {
                self.delete_unreferenced(video_id, done.keys.iter().map(String::as_str))
                    .await;
                Ok(false)
            }
        }
    }

    /// Removes renditions (and posters) of this video that its row does
    /// not reference. Best effort: what stays costs storage, never
    /// correctness.
    async fn clean_up(&self, video_id: Uuid, previous: Option<&str>) {
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
        stale.dedup();
        self.delete_unreferenced(video_id, stale.iter().map(String::as_str))
            .await;
    }

    /// Deletes each of `keys` that the video's row, read now, neither
    /// records nor may still record: its rendition and poster, every output
    /// under the rendition's stem (the ladder, HLS, the storyboard), the
    /// current claim's upload, and anything under the current claim's own
    /// keys (a newer claim, after a requeue, uploading as we speak). If the
    /// row cannot be read, nothing is deleted.
    async fn delete_unreferenced<'k>(&self, video_id: Uuid, keys: impl Iterator<Item = &'k str>) {
        let row = match self.runner.db.get(video_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the row before removing renditions; they stay");
                return;
            }
        };
        let current_claim = row.claim_token.map(|t| t.simple().to_string());
        for key in keys {
            let referenced = row.poster_key.as_deref() == Some(key)
                || [&row.processed_key, &row.uploaded_key]
                    .iter()
                    .any(|r| r.as_deref().is_some_and(|recorded| outputs::belongs_to(key, recorded)));
            let current = current_claim.as_ref().is_some_and(|t| key.contains(t.as_str()));
            if !referenced && !current {
                delete_unrecorded(self.runner, key).await;
            }
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
            Told::Stale => Event::Stale { video_id }.emit(stats),
            Told::UnknownVideo => Event::UnknownVideo { video_id }.emit(stats),
            Told::Retry {
                kind,
                reason,
                delay,
                configuration,
            } => {
                if *configuration {
                    stats.configuration_error(reason);
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

    /// Publishes the completion event of the row's recorded outcome, if
    /// the outbox still holds it, and marks it published. What cannot be
    /// published now is left to the reconciler: the message's fate does
    /// not wait on the events topic.
    async fn announce(&self) {
        let Some(video_id) = self.video_id else { return };
        let runner = self.runner;
        let row = match runner.db.get(video_id).await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outcome to announce it; the reconciler will");
                return;
            }
        };
        match runner.publisher.publish_outbox(&row).await {
            Ok(Some(event_id)) => {
                if let Err(e) = runner.db.record_published(video_id, event_id).await {
                    // Published but not marked: the reconciler publishes
                    // it again, with the same id.
                    tracing::warn!(error = %e, "cannot mark the completion event published");
                }
            }
            Ok(None) => {}
            Err(e) => {
                runner.stats.publish_failed(e.class());
                tracing::warn!(error = %e, "cannot publish the completion event now; the reconciler will");
            }
        }
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
        outputs: serde_json::to_value(&done.outputs).unwrap_or_default(),
        cost: serde_json::to_value(&done.cost).unwrap_or_default(),
    }
}
