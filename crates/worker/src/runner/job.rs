//! One message, start to finish: parse it, claim the video, do the work
//! (download, transcode, upload), then settle: write the row, stop the
//! heartbeat, and only then touch the message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use processor::{CancelFlag, Report};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::heartbeat::Keeper;
use super::progress::Progress;
use super::settle::{self, ClaimFacts, Facts, MessageAction, Outcome, RowAction, Settlement};
use super::{JobStop, Runner, lease};
use crate::db::{Claim, Claimed, Recorded};
use crate::job::{self, FailureClass, JobError};
use crate::queue::Received;
use crate::telemetry::Event;
use crate::telemetry::{Stage, Stats};

/// How long the last writes of a job that is being handed back at shutdown
/// may take: the grace period is over.
const HANDBACK_WRITE: Duration = Duration::from_secs(5);

/// What a finished transcode left to upload and record.
struct Produced {
    report: Report,
    original_bytes: u64,
    /// The claim's own rendition key.
    key: String,
    /// The claim's own poster key, if the spec makes one.
    poster_key: Option<String>,
}

/// One job in flight.
struct Job {
    runner: Arc<Runner>,
    msg: Received,
    video_id: Option<Uuid>,
    stop: JobStop,
    /// Cancelled when the worker stops taking jobs: a job still waiting
    /// for a transcode slot is then handed back.
    intake: CancellationToken,
    keeper: Option<Keeper>,
    claim: Option<Claimed>,
    produced: Option<Produced>,
    progress: Arc<Progress>,
    started: Instant,
}

impl Runner {
    /// One message, start to finish. Never fails: every outcome is decided
    /// and carried out here.
    pub(super) async fn handle(
        self: Arc<Self>,
        msg: Received,
        jobs_dir: Option<PathBuf>,
        intake: CancellationToken,
        abort: CancellationToken,
    ) {
        let span = tracing::info_span!("job", message_id = %msg.message_id, receives = msg.receive_count, video_id = tracing::field::Empty);
        let mut job = Job {
            runner: self,
            msg,
            video_id: None,
            stop: JobStop::new(&abort),
            intake,
            keeper: None,
            claim: None,
            produced: None,
            progress: Arc::default(),
            started: Instant::now(),
        };
        let runner = Arc::clone(&job.runner);
        runner.job_started();
        async move {
            let outcome = job.run(jobs_dir.as_deref()).await;
            job.settle(outcome).await;
        }
        .instrument(span)
        .await;
        runner.job_ended();
    }
}

impl Job {
    /// Everything up to the outcome.
    async fn run(&mut self, jobs_dir: Option<&Path>) -> Outcome {
        let video_id = match job::parse(&self.msg.body) {
            Ok(id) => id,
            Err(why) => return Outcome::Malformed(why),
        };
        self.video_id = Some(video_id);
        tracing::Span::current().record("video_id", tracing::field::display(video_id));
        // From here on the message is kept hidden, even while an outage
        // is waited out before the claim.
        self.keeper = Some(Keeper::start(
            &self.runner,
            &self.msg,
            video_id,
            &self.stop,
            &self.progress,
        ));
        let runner = Arc::clone(&self.runner);
        let claim = runner
            .patiently("claim the video", &self.stop, || async {
                let lease = lease(runner.settings.visibility_timeout);
                Ok(runner.db.claim(video_id, &runner.settings.worker_id, lease).await?)
            })
            .await;
        let claimed = match claim {
            Ok(Claim::Claimed(c)) => c,
            Ok(Claim::AlreadyProcessed) => return Outcome::Duplicate,
            Ok(Claim::AlreadyFailed(_)) => return Outcome::AlreadyFailed,
            Ok(Claim::Busy(remaining)) => return Outcome::Busy(remaining),
            Ok(Claim::Unknown) => return Outcome::Unknown,
            Err(e) => return Outcome::ClaimFailed(e),
        };
        Event::Claimed {
            video_id,
            attempt: claimed.attempts,
            original_key: &claimed.original_key,
        }
        .emit(&self.runner.stats);
        if let Some(k) = &self.keeper {
            k.claimed(claimed.token);
        }
        let (key, token) = (claimed.original_key.clone(), claimed.token);
        let died_repeatedly = claimed.counted_attempts() > self.runner.settings.max_attempts as i32;
        self.claim = Some(claimed);
        if died_repeatedly {
            return Outcome::DiedRepeatedly;
        }
        let result = self.work(video_id, &key, token, jobs_dir).await;
        // A stop request explains whatever failure it caused.
        match (result, self.stop.error()) {
            (Ok(produced), _) => {
                self.produced = Some(produced);
                Outcome::Done
            }
            (Err(_), Some(reason)) => Outcome::Failed(reason),
            (Err(e), None) => Outcome::Failed(e),
        }
    }

    /// Download, transcode and upload, in a private directory that is
    /// removed whatever happens.
    async fn work(
        &self,
        video_id: Uuid,
        original_key: &str,
        token: Uuid,
        jobs_dir: Option<&Path>,
    ) -> Result<Produced, JobError> {
        let runner = &self.runner;
        let prefix = &runner.settings.originals_prefix;
        if !original_key.starts_with(prefix.as_str()) || original_key.contains("..") {
            return Err(JobError::ForeignKey {
                key: original_key.to_owned(),
                prefix: prefix.clone(),
            });
        }
        let jobs_dir =
            jobs_dir.ok_or_else(|| JobError::WorkDir(std::io::Error::other("the worker has no working directory")))?;
        // Mode 0700: other users of the machine cannot read uploads or
        // renditions (tempfile's default would follow the umask).
        let dir = tempfile::Builder::new()
            .prefix("job-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(jobs_dir)
            .map_err(JobError::WorkDir)?;
        let original = dir.path().join("original");
        let rendition = dir.path().join("rendition.mp4");
        let stats = &runner.stats;
        // A slot free now is taken before the download; otherwise this job
        // is a prefetch, which downloads first if the disk has room.
        let mut slot = Arc::clone(&runner.transcoders).try_acquire_owned().ok();
        if slot.is_none() && !self.room_to_prefetch(jobs_dir) {
            slot = Some(self.transcode_slot().await?);
        }
        let original_bytes = timed(stats, Stage::Download, self.download(original_key, &original)).await?;
        stats.downloaded(original_bytes);
        self.progress.set("downloading", 10);
        let slot = match slot {
            Some(slot) => slot,
            None => self.transcode_slot().await?,
        };
        let report = timed(
            stats,
            Stage::Transcode,
            self.transcode(original_key, &original, &rendition),
        )
        .await?;
        // The upload does not hold up the next job's transcode.
        drop(slot);
        let stem = format!("{}{video_id}/{}", runner.settings.processed_prefix, token.simple());
        let (key, poster_key) = self.store(&report, &rendition, &stem, video_id, token).await?;
        drop(dir);
        Ok(Produced {
            report,
            original_bytes,
            key,
            poster_key,
        })
    }

    /// Uploads the rendition and its poster under the claim's own keys
    /// (`<stem>.mp4`, `<stem>.jpg`) and notes the upload in the row; what
    /// cannot be noted (the claim is lost) is deleted again.
    async fn store(
        &self,
        report: &Report,
        rendition: &Path,
        stem: &str,
        video_id: Uuid,
        token: Uuid,
    ) -> Result<(String, Option<String>), JobError> {
        let runner = &self.runner;
        let stats = &runner.stats;
        let key = format!("{stem}.mp4");
        self.progress.set("uploading", 90);
        let poster_key = report.poster.as_ref().map(|_| format!("{stem}.jpg"));
        // One upload stage: the rendition, then its poster (a poster that
        // cannot be stored takes the rendition with it).
        timed(stats, Stage::Upload, async {
            self.upload(rendition, &key, "video/mp4").await?;
            if let (Some(poster), Some(poster_key)) = (&report.poster, &poster_key)
                && let Err(e) = self.upload(poster, poster_key, "image/jpeg").await
            {
                self.delete_rendition(&key).await;
                return Err(e);
            }
            Ok(())
        })
        .await?;
        stats.uploaded(report.bytes);
        self.progress.set("uploading", 97);
        // From here a stop request no longer matters: recording the outcome
        // takes milliseconds, while handing it back would redo the job.
        let recorded = runner
            .patiently("record the upload", &self.stop, || async {
                Ok(runner.db.record_upload(video_id, token, &key).await?)
            })
            .await;
        if !matches!(recorded, Ok(true)) {
            self.delete_rendition(&key).await;
            if let Some(poster_key) = &poster_key {
                self.delete_rendition(poster_key).await;
            }
            return Err(match recorded {
                Ok(_) => JobError::ClaimLost,
                Err(e) => e,
            });
        }
        Ok((key, poster_key))
    }

    /// Waits for a transcode slot. A job still waiting when intake stops
    /// (SIGTERM, a termination notice) is handed back rather than started.
    async fn transcode_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, JobError> {
        tokio::select! {
            biased;
            p = Arc::clone(&self.runner.transcoders).acquire_owned() => p.map_err(|_| JobError::Shutdown),
            () = self.intake.cancelled() => Err(JobError::Shutdown),
            () = self.stop.token.cancelled() => Err(self.stop.error().unwrap_or(JobError::Shutdown)),
        }
    }

    /// Whether the jobs' disk can take a prefetched original: room for the
    /// largest original accepted (`INPUT_MAX_BYTES`) twice over, since the
    /// running job's original and rendition are still there and grow.
    fn room_to_prefetch(&self, jobs_dir: &Path) -> bool {
        let need = self.runner.settings.spec.limits.max_input_bytes.saturating_mul(2);
        match rustix::fs::statvfs(jobs_dir) {
            Ok(fs) => fs.f_bavail.saturating_mul(fs.f_frsize) >= need,
            Err(_) => false,
        }
    }

    async fn download(&self, key: &str, to: &Path) -> Result<u64, JobError> {
        let runner = &self.runner;
        let limit = runner.settings.spec.limits.max_input_bytes;
        let download = runner.patiently("download the original", &self.stop, || async {
            Ok(runner.storage.download(key, to, limit).await?)
        });
        let bytes = tokio::select! {
            r = download => r?,
            () = self.stop.token.cancelled() => return Err(self.stop.error().unwrap_or(JobError::Shutdown)),
        };
        tracing::debug!(bytes, "original downloaded");
        Ok(bytes)
    }

    /// Runs the processor on a blocking thread; the job's stop token
    /// cancels it within a frame.
    async fn transcode(&self, key: &str, input: &Path, output: &Path) -> Result<Report, JobError> {
        let flag = CancelFlag::new();
        let watcher = {
            let (flag, token) = (flag.clone(), self.stop.token.clone());
            tokio::spawn(async move {
                token.cancelled().await;
                flag.cancel();
            })
        };
        let spec = self.runner.settings.spec.clone();
        let (input, output) = (input.to_owned(), output.to_owned());
        let progress = Arc::clone(&self.progress);
        let transcode = tokio::task::spawn_blocking(move || {
            let mut next = 0.25;
            processor::process(
                &input,
                &output,
                &spec,
                |p| {
                    progress.transcoding(p.fraction());
                    if p.fraction() >= next {
                        tracing::debug!(
                            percent = (p.fraction() * 100.0).round(),
                            frames = p.frames,
                            "transcoding"
                        );
                        next += 0.25;
                    }
                },
                &flag,
            )
        })
        .in_current_span()
        .await;
        watcher.abort();
        match transcode {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(source)) => Err(JobError::Processor {
                original: format!("s3://{}/{key}", self.runner.storage.bucket()),
                source,
            }),
            Err(join) => Err(JobError::Crashed(join.to_string())),
        }
    }

    /// Uploads a file of the rendition to the claim's own key: a worker
    /// whose claim is lost can only write an object that is never recorded.
    async fn upload(&self, file: &Path, key: &str, content_type: &str) -> Result<(), JobError> {
        let runner = &self.runner;
        let upload = runner.patiently("upload the rendition", &self.stop, || async {
            Ok(runner.storage.upload(file, key, content_type).await?)
        });
        let uploaded = tokio::select! {
            r = upload => r,
            () = self.stop.token.cancelled() => Err(self.stop.error().unwrap_or(JobError::Shutdown)),
        };
        if uploaded.is_err() {
            // A single PUT may have landed before the failure was seen.
            self.delete_rendition(key).await;
        }
        uploaded
    }

    /// Carries out the decision: the row first (the heartbeat still keeps
    /// the message hidden), then the heartbeat stops, then the message.
    async fn settle(mut self, outcome: Outcome) {
        let facts = self.facts();
        let decision = settle::decide(&outcome, &facts);
        tracing::debug!(?outcome, ?decision, "settling");
        if matches!(decision.row, RowAction::Record | RowAction::Fail { .. }) {
            self.progress.set("recording", 99);
        }
        let mut message = self.write_row(&decision, &outcome).await;
        if self.announces(&decision, &outcome, &message)
            && let Err(e) = self.announce().await
        {
            // Kept for a redelivery, which finds the outcome recorded and
            // publishes the event again (same id): never lost.
            tracing::warn!(error = %e, "cannot publish the completion event; the message comes back to retry");
            message = MessageAction::Retry(settle::backoff(
                self.runner.settings.retry_backoff,
                self.msg.receive_count,
            ));
        }
        if let Some(mut keeper) = self.keeper.take() {
            keeper.stop().await;
        }
        self.act_on_message(message).await;
    }

    /// Whether the row now holds a final outcome to announce: just
    /// recorded, or recorded before and met again by a redelivery (the
    /// event may not have gone out).
    fn announces(&self, decision: &Settlement, outcome: &Outcome, message: &MessageAction) -> bool {
        let settled = matches!(message, MessageAction::Delete | MessageAction::DeadLetter(_));
        let final_row = matches!(decision.row, RowAction::Record | RowAction::Fail { .. })
            || matches!(outcome, Outcome::Duplicate | Outcome::AlreadyFailed);
        settled && final_row && self.runner.publisher.is_enabled()
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

    fn facts(&self) -> Facts {
        let s = &self.runner.settings;
        let message_age = self
            .msg
            .sent_at
            .and_then(|sent| SystemTime::now().duration_since(sent).ok())
            .unwrap_or_else(|| self.msg.received_at.elapsed());
        Facts {
            max_attempts: s.max_attempts,
            claim: self.claim.as_ref().map(|c| ClaimFacts {
                counted_attempts: c.counted_attempts().max(0) as u32,
                last_error_kind: c.last_error_kind.clone(),
            }),
            receive_count: self.msg.receive_count,
            message_age,
            unknown_patience: s.unknown_video_patience,
            retry_backoff: s.retry_backoff,
            configuration_delay: s.configuration_delay,
            shutting_down: self.stop.token.is_cancelled(),
        }
    }

    /// Writes the row as decided and emits what happened. Returns what to
    /// do with the message, which a failed or lost write changes.
    async fn write_row(&self, decision: &Settlement, outcome: &Outcome) -> MessageAction {
        let Some(video_id) = self.video_id else {
            if let MessageAction::DeadLetter(reason) = &decision.message {
                self.emit_dead_letter(reason);
            }
            return decision.message.clone();
        };
        match self.write(video_id, &decision.row).await {
            Ok(true) => {
                self.emit(video_id, decision, outcome);
                decision.message.clone()
            }
            // The claim was taken over: the message is not ours any more.
            Ok(false) => {
                tracing::warn!(
                    "the claim was lost before the outcome was recorded; the worker holding it records its own"
                );
                MessageAction::Leave
            }
            Err(e) => {
                // Nothing recorded: the row keeps our lease, which expires;
                // the message comes back and the next attempt redoes it.
                let attempt = self
                    .claim
                    .as_ref()
                    .map_or(self.msg.receive_count, |c| c.counted_attempts().max(1) as u32);
                let delay = if self.stop.token.is_cancelled() {
                    Duration::ZERO
                } else {
                    settle::backoff(self.runner.settings.retry_backoff, attempt)
                };
                Event::Retry {
                    video_id,
                    kind: e.kind(),
                    reason: &format!("cannot record the outcome: {e}"),
                    delay,
                    receives: self.msg.receive_count,
                }
                .emit(&self.runner.stats);
                MessageAction::Retry(delay)
            }
        }
    }

    /// The row write itself, fenced on the claim. `Ok(false)`: the claim
    /// is lost.
    async fn write(&self, video_id: Uuid, row: &RowAction) -> Result<bool, JobError> {
        let runner = &self.runner;
        let token = self.claim.as_ref().map(|c| c.token);
        match row {
            RowAction::Keep => Ok(true),
            RowAction::Record => self.record(video_id).await,
            RowAction::Fail {
                kind,
                reason,
                error_kind,
            } => {
                self.bounded(runner.patiently("record the failure", &self.stop, || async {
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
                interrupted,
            } => {
                let Some(token) = token else { return Ok(true) };
                self.bounded(runner.patiently("hand the video back", &self.stop, || async {
                    Ok(runner
                        .db
                        .release(video_id, token, reason.as_deref(), error_kind.as_deref(), *interrupted)
                        .await?)
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
            Err(JobError::Db(crate::db::DbError::Timeout {
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
        let (Some(claim), Some(done)) = (&self.claim, &self.produced) else {
            return Ok(false);
        };
        let runner = &self.runner;
        let outcome = outcome(done);
        let record = runner.patiently("record the rendition", &self.stop, || async {
            Ok(runner.db.mark_processed(video_id, claim.token, &outcome).await?)
        });
        let recorded = timed(&runner.stats, Stage::Record, record).await?;
        match recorded {
            Recorded::Yes { previous } => {
                self.clean_up(video_id, done, previous.as_deref()).await;
                Ok(true)
            }
            Recorded::ClaimLost => {
                self.delete_rendition(&done.key).await;
                if let Some(poster_key) = &done.poster_key {
                    self.delete_rendition(poster_key).await;
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
            self.delete_rendition(&key).await;
        }
    }

    async fn delete_rendition(&self, key: &str) {
        match self.runner.storage.delete(key).await {
            Ok(()) => tracing::debug!(key, "removed a rendition that is not recorded"),
            Err(e) => tracing::warn!(key, error = %e, "cannot remove a rendition that is not recorded"),
        }
    }

    /// Logs and counts what the row now says.
    fn emit(&self, video_id: Uuid, decision: &Settlement, outcome: &Outcome) {
        let stats = &self.runner.stats;
        match (&decision.row, outcome) {
            (RowAction::Record, _) => {
                if let Some(done) = &self.produced {
                    Event::Processed {
                        video_id,
                        key: &done.key,
                        report: &done.report,
                        took: self.started.elapsed(),
                    }
                    .emit(stats);
                }
            }
            (
                RowAction::Fail {
                    reason,
                    error_kind,
                    kind,
                },
                _,
            ) => Event::Failed {
                video_id,
                kind: error_kind,
                reason,
                permanent: *kind == crate::db::FailureKind::Input,
            }
            .emit(stats),
            (RowAction::Release { interrupted: true, .. }, Outcome::Failed(JobError::Shutdown)) => {
                Event::Released { video_id }.emit(stats);
            }
            (_, Outcome::Duplicate) => Event::Duplicate { video_id }.emit(stats),
            (_, Outcome::Busy(remaining)) => Event::Busy {
                video_id,
                delay: *remaining,
            }
            .emit(stats),
            (_, Outcome::Unknown) => Event::UnknownVideo { video_id }.emit(stats),
            (_, Outcome::AlreadyFailed) => {
                tracing::info!(event = "already_failed", %video_id, "the video failed earlier; message deleted")
            }
            _ => {
                if let MessageAction::Retry(delay) = decision.message {
                    let (kind, reason) = match outcome {
                        Outcome::Failed(e) | Outcome::ClaimFailed(e) => (e.kind(), e.to_string()),
                        _ => ("none", String::new()),
                    };
                    if matches!(outcome, Outcome::Failed(e) | Outcome::ClaimFailed(e) if e.class() == FailureClass::Configuration)
                    {
                        stats.configuration_error();
                    }
                    Event::Retry {
                        video_id,
                        kind,
                        reason: &reason,
                        delay,
                        receives: self.msg.receive_count,
                    }
                    .emit(stats);
                }
            }
        }
        if let MessageAction::DeadLetter(reason) = &decision.message {
            self.emit_dead_letter(reason);
        }
    }

    fn emit_dead_letter(&self, reason: &str) {
        Event::DeadLettered {
            message_id: &self.msg.message_id,
            reason,
        }
        .emit(&self.runner.stats);
    }

    async fn act_on_message(&self, action: MessageAction) {
        let queue = &self.runner.queue;
        let result = match action {
            MessageAction::Delete => queue.delete(&self.msg.receipt).await,
            MessageAction::Retry(delay) => queue.set_visibility(&self.msg.receipt, jitter(delay)).await,
            MessageAction::DeadLetter(reason) => queue.dead_letter(&self.msg, &reason).await,
            MessageAction::Leave => return,
        };
        if let Err(e) = result {
            // The row is what counts; a message that stays comes back and
            // finds the work recorded.
            tracing::warn!(error = %e, "cannot settle the message; it comes back after its visibility timeout");
        }
    }
}

/// Runs a stage and observes how long it took, whatever its result.
async fn timed<T>(stats: &Stats, stage: Stage, work: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    // On the heap: the AWS SDK's futures are large.
    let out = Box::pin(work).await;
    stats.stage(stage, started.elapsed());
    out
}

/// ±20 % so that failed jobs do not come back in lockstep.
fn jitter(delay: Duration) -> Duration {
    let factor = 0.8 + 0.4 * (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    delay.mul_f64(factor)
}

fn outcome(done: &Produced) -> crate::db::Outcome {
    let info = &done.report.input;
    crate::db::Outcome {
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
