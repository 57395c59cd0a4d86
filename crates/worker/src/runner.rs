//! The worker loop: receive no more messages than there are free job slots,
//! run each job (claim → download → transcode → upload → record → delete)
//! while a heartbeat keeps its message hidden and its lease alive, and
//! decide each message's fate from the kind of failure.
//!
//! The order of the final steps (upload, then mark processed, then delete
//! the message) means a crash anywhere repeats work at worst and never loses
//! it; the claim's fencing token means a worker whose lease ran out cannot
//! overwrite the outcome of the one that took over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use processor::{CancelFlag, Report};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::WorkerSettings;
use crate::db::{Claim, Db, Outcome};
use crate::job::{self, JobError};
use crate::queue::{MAX_VISIBILITY, Queue, Received};
use crate::shutdown::Shutdown;
use crate::storage::Storage;
use crate::telemetry::{Event, Stats};

/// Longest wait between two receives while SQS is unreachable.
const MAX_RECEIVE_BACKOFF: Duration = Duration::from_secs(30);
/// Longest retry delay for a failed job.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(15 * 60);
/// Margin kept before SQS's 12-hour visibility cap.
const CAP_MARGIN: Duration = Duration::from_secs(120);

/// Why a worker could not start; the message names the service.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The private working directory could not be made.
    #[error("working directory {}: {source}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database is unreachable or not migrated.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The queue is unreachable.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// The bucket is unreachable.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

/// The worker service: its settings, its three services, and the loop
/// that feeds jobs from the queue.
#[derive(Debug)]
pub struct Runner {
    settings: WorkerSettings,
    db: Db,
    storage: Storage,
    queue: Queue,
    max_receives: u32,
    stats: Arc<Stats>,
    /// This process's directory under the temp dir; each job makes its own
    /// inside it.
    work_root: PathBuf,
}

/// Why a running job was told to stop.
#[derive(Clone, Copy, Debug)]
enum StopReason {
    Shutdown,
    ClaimLost,
    VisibilityCap,
}

/// A job's cancellation: a child of the shutdown's abort token (so the
/// end of the grace period stops it) plus the first reason given.
#[derive(Clone, Debug)]
struct JobStop {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl JobStop {
    fn new(abort: &CancellationToken) -> Self {
        JobStop {
            token: abort.child_token(),
            reason: Arc::default(),
        }
    }

    fn stop(&self, reason: StopReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.token.cancel();
    }

    fn error(&self) -> Option<JobError> {
        let reason = self.reason.lock().ok().and_then(|r| *r);
        // Cancelled without a reason of ours: the shutdown's abort.
        let reason = reason.or_else(|| self.token.is_cancelled().then_some(StopReason::Shutdown))?;
        Some(match reason {
            StopReason::Shutdown => JobError::Shutdown,
            StopReason::ClaimLost => JobError::ClaimLost,
            StopReason::VisibilityCap => JobError::VisibilityCap,
        })
    }
}

/// What a finished transcode left to upload and record.
struct Produced {
    report: Report,
    original_bytes: u64,
    key: String,
}

impl Runner {
    /// A worker over these services. `max_receives` comes from the settings,
    /// else from the queue's redrive policy (read by [`Runner::start`]).
    pub fn new(settings: WorkerSettings, db: Db, storage: Storage, queue: Queue) -> Self {
        let max_receives = settings.max_receives.unwrap_or(3);
        // Named after the process, so a later worker can tell whether its
        // owner is still alive; unique per worker within the process.
        let work_root = settings
            .temp_dir
            .join(format!("vidworker-{}-{}", std::process::id(), Uuid::new_v4().simple()));
        Runner {
            work_root,
            settings,
            db,
            storage,
            queue,
            max_receives,
            stats: Arc::new(Stats::default()),
        }
    }

    /// Checks the database, the queue and the bucket, naming the one that
    /// fails, and adopts the queue's receive limit when none was configured.
    pub async fn start(mut self) -> Result<Self, StartError> {
        self.prepare_work_root()?;
        self.db.check().await?;
        let info = self.queue.inspect().await?;
        self.storage.check().await?;
        match (self.settings.max_receives, info.max_receive_count) {
            (None, Some(n)) => self.max_receives = n,
            (Some(ours), Some(theirs)) if ours != theirs => tracing::warn!(
                ours,
                theirs,
                "MAX_RECEIVES differs from the queue's redrive policy; rows may end failed before or after the dead-letter queue takes the message"
            ),
            (_, None) => tracing::warn!(queue = self.queue.url(), "the queue has no dead-letter queue"),
            _ => {}
        }
        tracing::info!(
            worker = %self.settings.worker_id,
            concurrency = self.settings.concurrency,
            threads_per_job = self.settings.spec.threads,
            visibility_timeout_s = self.settings.visibility_timeout.as_secs(),
            max_receives = self.max_receives,
            queue = self.queue.url(),
            dead_letter_queue = self.queue.dead_letter_url().unwrap_or("none"),
            bucket = self.storage.bucket(),
            "worker ready"
        );
        Ok(self)
    }

    /// Makes this process's private working directory, and removes those
    /// of worker processes that died without cleaning up (kill -9, OOM),
    /// which may hold gigabytes of originals.
    fn prepare_work_root(&self) -> Result<(), StartError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let temp = &self.settings.temp_dir;
        if let Ok(entries) = std::fs::read_dir(temp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("vidworker-")) else {
                    continue;
                };
                let Ok(pid) = rest.split('-').next().unwrap_or_default().parse::<u32>() else {
                    continue;
                };
                let alive = Path::new("/proc").join(pid.to_string()).exists();
                if !alive {
                    match std::fs::remove_dir_all(entry.path()) {
                        Ok(()) => {
                            tracing::info!(dir = %entry.path().display(), "removed the files of a worker that died")
                        }
                        Err(e) => {
                            tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a dead worker's files")
                        }
                    }
                }
            }
        }
        let made = std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.work_root)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        made.and_then(|()| std::fs::set_permissions(&self.work_root, std::fs::Permissions::from_mode(0o700)))
            .map_err(|source| StartError::WorkDir {
                path: self.work_root.clone(),
                source,
            })
    }

    /// Runs until `shutdown` stops intake, then lets running jobs finish
    /// within the grace period, cancels the rest and hands them back.
    pub async fn run(self, shutdown: Shutdown) -> Arc<Stats> {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.settings.concurrency));
        let tracker = TaskTracker::new();
        let sweeper = tokio::spawn(Arc::clone(&this).sweep(shutdown.intake().clone()));
        let mut backoff = Duration::from_secs(1);
        loop {
            // Wait for a free slot before asking for work, so no message
            // sits invisible waiting for one.
            let first = tokio::select! {
                p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                () = shutdown.intake().cancelled() => break,
            };
            let mut permits = vec![first];
            while permits.len() < 10 {
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // A receive in flight is allowed to complete (at most the long
            // poll): what it brings after a shutdown signal is handed back
            // at once rather than left hidden for a whole timeout.
            let received = this
                .queue
                .receive(
                    permits.len(),
                    this.settings.receive_wait,
                    this.settings.visibility_timeout,
                )
                .await;
            let messages = match received {
                Ok(m) => {
                    backoff = Duration::from_secs(1);
                    m
                }
                Err(e) => {
                    Event::ReceiveFailed {
                        error: &e.to_string(),
                        retry_in: backoff,
                    }
                    .emit(&this.stats);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.intake().cancelled() => break,
                    }
                    backoff = (backoff * 2).min(MAX_RECEIVE_BACKOFF);
                    continue;
                }
            };
            for msg in messages {
                if shutdown.intake().is_cancelled() {
                    this.hand_back_unstarted(&msg).await;
                    continue;
                }
                let Some(permit) = permits.pop() else {
                    this.hand_back_unstarted(&msg).await;
                    continue;
                };
                let job = Arc::clone(&this);
                let abort = shutdown.abort().clone();
                tracker.spawn(async move { job.handle(msg, permit, abort).await });
            }
        }
        sweeper.abort();
        tracker.close();
        if !tracker.is_empty() {
            tracing::info!(
                running = tracker.len(),
                grace_s = this.settings.shutdown_grace.as_secs(),
                "waiting for running jobs"
            );
        }
        tokio::select! {
            () = tracker.wait() => {}
            () = tokio::time::sleep(this.settings.shutdown_grace) => {
                tracing::warn!(running = tracker.len(), "grace period over: cancelling running jobs and handing them back");
                shutdown.abort_jobs();
                tracker.wait().await;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&this.work_root) {
            tracing::debug!(error = %e, "cannot remove the working directory");
        }
        this.stats.log();
        Arc::clone(&this.stats)
    }

    /// Every minute, fails videos left `processing` by a worker that vanished
    /// on their last attempt (see [`Db::sweep_abandoned`]). A lease is
    /// abandoned once it has been expired longer than any retry could take
    /// to come back: a visibility timeout plus the longest retry delay.
    async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let after = self.settings.visibility_timeout + MAX_RETRY_DELAY + Duration::from_secs(300);
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = stop.cancelled() => return,
            }
            match self.db.sweep_abandoned(after).await {
                Ok(0) => {}
                Ok(n) => Event::Abandoned { videos: n }.emit(&self.stats),
                Err(e) => tracing::debug!(error = %e, "cannot sweep abandoned videos"),
            }
        }
    }

    /// A message received during shutdown goes straight back.
    async fn hand_back_unstarted(&self, msg: &Received) {
        if let Err(e) = self.queue.set_visibility(&msg.receipt, Duration::ZERO).await {
            tracing::warn!(message_id = %msg.message_id, error = %e, "cannot hand a message back; it reappears after its visibility timeout");
        }
    }

    /// One message, start to finish. Never fails: every outcome is decided
    /// and recorded here.
    async fn handle(self: Arc<Self>, msg: Received, _permit: OwnedSemaphorePermit, abort: CancellationToken) {
        let span = tracing::info_span!("job", message_id = %msg.message_id, receives = msg.receive_count, video_id = tracing::field::Empty);
        async {
            let video_id = match job::parse(&msg.body) {
                Ok(id) => id,
                Err(why) => {
                    let why = format!("malformed message: {why}");
                    Event::DeadLettered {
                        message_id: &msg.message_id,
                        reason: &why,
                    }
                    .emit(&self.stats);
                    self.dead_letter(&msg, &why).await;
                    return;
                }
            };
            tracing::Span::current().record("video_id", tracing::field::display(video_id));
            if msg.receive_count > self.max_receives {
                // Our give-up already happened (the row says why) and the
                // queue did not take the message away: no redrive policy, or
                // a larger maxReceiveCount. Do not start again.
                let why = format!(
                    "received {} times, more than the limit of {}",
                    msg.receive_count, self.max_receives
                );
                Event::DeadLettered {
                    message_id: &msg.message_id,
                    reason: &why,
                }
                .emit(&self.stats);
                self.dead_letter(&msg, &why).await;
                return;
            }

            // From here on the message is kept hidden, even while we wait
            // out an outage before the claim.
            let stop = JobStop::new(&abort);
            let claimed = Arc::new(Mutex::new(None));
            let mut keeper = Keeper::start(Arc::clone(&self), &msg, video_id, &claimed, &stop);
            self.claim_and_work(&msg, video_id, &claimed, &stop, &mut keeper).await;
            keeper.stop().await;
        }
        .instrument(span)
        .await;
    }

    /// Claims the video, does the work, and settles the message. Every path
    /// stops the keeper before its final change to the message.
    async fn claim_and_work(
        &self,
        msg: &Received,
        video_id: Uuid,
        claimed: &Mutex<Option<Uuid>>,
        stop: &JobStop,
        keeper: &mut Keeper,
    ) {
        let claim = self
            .patiently("claim the video", stop, || {
                self.db.claim(
                    video_id,
                    &self.settings.worker_id,
                    lease(self.settings.visibility_timeout),
                )
            })
            .await;
        let (original_key, token) = match claim {
            Ok(Claim::Claimed {
                original_key,
                token,
                attempts,
            }) => {
                Event::Claimed {
                    video_id,
                    attempt: attempts,
                    original_key: &original_key,
                }
                .emit(&self.stats);
                (original_key, token)
            }
            Ok(Claim::AlreadyProcessed) => {
                Event::Duplicate { video_id }.emit(&self.stats);
                keeper.stop().await;
                self.delete(msg).await;
                return;
            }
            Ok(Claim::Unknown) => {
                Event::UnknownVideo { video_id }.emit(&self.stats);
                keeper.stop().await;
                self.delete(msg).await;
                return;
            }
            Ok(Claim::Busy(remaining)) => {
                // Another worker holds a live lease; look again when it
                // would have expired.
                let delay = remaining + Duration::from_secs(5);
                Event::Busy { video_id, delay }.emit(&self.stats);
                keeper.stop().await;
                self.set_visibility(msg, delay).await;
                return;
            }
            Err(e) => {
                // Nothing claimed: only the message goes back.
                let delay = if stop.token.is_cancelled() {
                    Duration::ZERO
                } else {
                    self.retry_delay(msg.receive_count)
                };
                Event::Retry {
                    video_id,
                    reason: &e.to_string(),
                    delay,
                    receives: msg.receive_count,
                }
                .emit(&self.stats);
                keeper.stop().await;
                self.set_visibility(msg, delay).await;
                return;
            }
        };
        if let Ok(mut c) = claimed.lock() {
            *c = Some(token);
        }
        let started = Instant::now();
        let result = self.work(video_id, &original_key, token, stop).await;
        keeper.stop().await;
        // A stop request explains whatever failure it caused.
        let result = match (result, stop.error()) {
            (Err(_), Some(reason)) => Err(reason),
            (r, _) => r,
        };
        self.finish(msg, video_id, token, result, started, stop).await;
    }

    /// Runs a step that talks to S3 or PostgreSQL. While the service is
    /// down (an outage, not a refusal), waits and tries again, up to the
    /// outage patience: the message stays hidden meanwhile, so an outage
    /// does not use up the message's receives and send it to the
    /// dead-letter queue.
    async fn patiently<T, E, F, Fut>(&self, what: &str, stop: &JobStop, mut step: F) -> Result<T, E>
    where
        E: std::fmt::Display + MaybeOutage,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            match step().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_outage() && started.elapsed() < self.settings.outage_patience => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot {what}; waiting for the service");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.token.cancelled() => return Err(e),
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Download, transcode and upload, in a private directory that is
    /// removed whatever happens.
    async fn work(
        &self,
        video_id: Uuid,
        original_key: &str,
        token: Uuid,
        stop: &JobStop,
    ) -> Result<Produced, JobError> {
        let prefix = &self.settings.originals_prefix;
        if !original_key.starts_with(prefix.as_str()) || original_key.contains("..") {
            return Err(JobError::ForeignKey {
                key: original_key.to_owned(),
                prefix: prefix.clone(),
            });
        }
        // Mode 0700: other users of the machine cannot read uploads or
        // renditions (tempfile's default would follow the umask).
        let dir = tempfile::Builder::new()
            .prefix("job-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&self.work_root)
            .map_err(JobError::WorkDir)?;
        let original = dir.path().join("original");
        let rendition = dir.path().join("rendition.mp4");
        let limit = self.settings.spec.limits.max_input_bytes;
        let download = self.patiently("download the original", stop, || {
            self.storage.download(original_key, &original, limit)
        });
        let original_bytes = tokio::select! {
            r = download => r?,
            () = stop.token.cancelled() => return Err(stop.error().unwrap_or(JobError::Shutdown)),
        };
        tracing::debug!(bytes = original_bytes, "original downloaded");

        let flag = CancelFlag::new();
        let watcher = {
            let flag = flag.clone();
            let token = stop.token.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                flag.cancel();
            })
        };
        let spec = self.settings.spec.clone();
        let (input, output) = (original.clone(), rendition.clone());
        let transcode = tokio::task::spawn_blocking(move || {
            let mut next = 0.25;
            processor::process(
                &input,
                &output,
                &spec,
                |p| {
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
        let report = match transcode {
            Ok(Ok(r)) => r,
            Ok(Err(source)) => {
                return Err(JobError::Processor {
                    original: format!("s3://{}/{original_key}", self.storage.bucket()),
                    source,
                });
            }
            Err(join) => return Err(JobError::Crashed(join.to_string())),
        };

        // Only the holder of the claim writes the rendition: a worker whose
        // lease ran out while it transcoded must not overwrite the object
        // of the one that took over.
        let still_ours = self
            .patiently("confirm the claim", stop, || {
                self.db
                    .renew_lease(video_id, token, lease(self.settings.visibility_timeout))
            })
            .await?;
        if !still_ours {
            return Err(JobError::ClaimLost);
        }
        let key = format!("{}{video_id}.mp4", self.settings.processed_prefix);
        let upload = self.patiently("upload the rendition", stop, || {
            self.storage.upload(&rendition, &key, "video/mp4")
        });
        tokio::select! {
            r = upload => r?,
            () = stop.token.cancelled() => return Err(stop.error().unwrap_or(JobError::Shutdown)),
        }
        // From here a stop request no longer matters: recording the outcome
        // takes milliseconds, while handing it back would redo the job.
        drop(dir);
        Ok(Produced {
            report,
            original_bytes,
            key,
        })
    }

    /// Keeps the message hidden while the job runs (and the lease alive once
    /// the video is claimed), every third of the visibility timeout. Stops
    /// the job when the claim was lost or SQS's 12-hour cap comes near.
    async fn heartbeat(
        self: Arc<Self>,
        msg: Received,
        video_id: Uuid,
        claimed: Arc<Mutex<Option<Uuid>>>,
        stop: JobStop,
        done: CancellationToken,
    ) {
        let timeout = self.settings.visibility_timeout;
        let every = (timeout / 3).max(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = done.cancelled() => return,
            }
            let left = MAX_VISIBILITY
                .saturating_sub(msg.received_at.elapsed())
                .saturating_sub(CAP_MARGIN);
            if left < every {
                tracing::warn!("the job is about to reach SQS's 12-hour visibility limit; giving it up");
                stop.stop(StopReason::VisibilityCap);
                return;
            }
            let extend = timeout.min(left);
            if let Err(e) = self.queue.set_visibility(&msg.receipt, extend).await {
                tracing::warn!(error = %e, "cannot extend the message's visibility");
            }
            let token = claimed.lock().ok().and_then(|c| *c);
            let Some(token) = token else { continue };
            match self.db.renew_lease(video_id, token, lease(extend)).await {
                Ok(true) => tracing::trace!(extend_s = extend.as_secs(), "heartbeat"),
                Ok(false) => {
                    tracing::warn!("the claim was taken over by another worker; stopping");
                    stop.stop(StopReason::ClaimLost);
                    return;
                }
                // The database may be back before the lease runs out.
                Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
            }
        }
    }

    /// Records the outcome and decides the message's fate.
    async fn finish(
        &self,
        msg: &Received,
        id: Uuid,
        token: Uuid,
        result: Result<Produced, JobError>,
        started: Instant,
        stop: &JobStop,
    ) {
        match result {
            Ok(done) => {
                let outcome = outcome(&done);
                match self
                    .patiently("record the rendition", stop, || {
                        self.db.mark_processed(id, token, &outcome)
                    })
                    .await
                {
                    Ok(true) => {
                        Event::Processed {
                            video_id: id,
                            key: &done.key,
                            report: &done.report,
                            took: started.elapsed(),
                        }
                        .emit(&self.stats);
                        self.delete(msg).await;
                    }
                    Ok(false) => tracing::warn!(
                        "the claim was lost before the outcome was recorded; the worker holding it records its own"
                    ),
                    Err(e) => {
                        // The rendition is in S3 but not recorded: the next
                        // attempt redoes it and records it.
                        let delay = self.retry_delay(msg.receive_count);
                        Event::Retry {
                            video_id: id,
                            reason: &e.to_string(),
                            delay,
                            receives: msg.receive_count,
                        }
                        .emit(&self.stats);
                        self.set_visibility(msg, delay).await;
                    }
                }
            }
            Err(JobError::ClaimLost) => {
                // Another worker owns the video and its own message.
                tracing::warn!("stopped: the claim was lost to another worker");
            }
            Err(JobError::Shutdown) => {
                if let Err(e) = self.db.release(id, token, None).await {
                    tracing::warn!(error = %e, "cannot hand the video back; its lease expires on its own");
                }
                Event::Released { video_id: id }.emit(&self.stats);
                self.set_visibility(msg, Duration::ZERO).await;
            }
            Err(e) if e.is_permanent() => {
                let reason = e.to_string();
                Event::Failed {
                    video_id: id,
                    kind: e.kind(),
                    reason: &reason,
                    permanent: true,
                }
                .emit(&self.stats);
                match self
                    .patiently("record the failure", stop, || {
                        self.db.mark_failed(id, Some(token), &reason)
                    })
                    .await
                {
                    Ok(_) => self.delete(msg).await,
                    // Keep the message: the next attempt fails the same way
                    // and records it.
                    Err(db) => {
                        tracing::warn!(error = %db, "cannot record the failure");
                        self.set_visibility(msg, self.retry_delay(msg.receive_count)).await;
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                if msg.receive_count >= self.max_receives {
                    // The last allowed attempt: the row says why, and the
                    // message goes to the dead-letter queue on its next
                    // receive.
                    let reason = format!("gave up after {} attempts: {reason}", msg.receive_count);
                    Event::Failed {
                        video_id: id,
                        kind: e.kind(),
                        reason: &reason,
                        permanent: false,
                    }
                    .emit(&self.stats);
                    if let Err(db) = self
                        .patiently("record the failure", stop, || {
                            self.db.mark_failed(id, Some(token), &reason)
                        })
                        .await
                    {
                        tracing::warn!(error = %db, "cannot record the failure");
                    }
                    self.set_visibility(msg, Duration::ZERO).await;
                } else {
                    let delay = self.retry_delay(msg.receive_count);
                    Event::Retry {
                        video_id: id,
                        reason: &reason,
                        delay,
                        receives: msg.receive_count,
                    }
                    .emit(&self.stats);
                    if let Err(db) = self.db.release(id, token, Some(&reason)).await {
                        tracing::warn!(error = %db, "cannot hand the video back; its lease expires on its own");
                    }
                    self.set_visibility(msg, delay).await;
                }
            }
        }
    }

    /// Exponential backoff from the receive count, with ±20 % jitter so
    /// failed jobs do not come back in lockstep.
    fn retry_delay(&self, receive_count: u32) -> Duration {
        let base =
            self.settings.retry_backoff.as_secs_f64() * 2f64.powi(receive_count.saturating_sub(1).min(20) as i32);
        let jitter = 0.8 + 0.4 * (Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        Duration::from_secs_f64((base * jitter).min(MAX_RETRY_DELAY.as_secs_f64()))
    }

    /// Moves a message to the dead-letter queue (or, without one, logs it
    /// whole and deletes it).
    async fn dead_letter(&self, msg: &Received, why: &str) {
        if let Err(e) = self.queue.dead_letter(msg, why).await {
            tracing::error!(error = %e, "cannot move a message to the dead-letter queue; it will be received again");
        }
    }

    async fn delete(&self, msg: &Received) {
        if let Err(e) = self.queue.delete(&msg.receipt).await {
            // The work is recorded; a redelivery finds it done and deletes.
            tracing::warn!(error = %e, "cannot delete the message; a redelivery will find the work done");
        }
    }

    async fn set_visibility(&self, msg: &Received, timeout: Duration) {
        if let Err(e) = self.queue.set_visibility(&msg.receipt, timeout).await {
            tracing::warn!(error = %e, "cannot change the message's visibility; it reappears after its timeout");
        }
    }
}

/// The task that keeps a job's message hidden and its lease alive.
struct Keeper {
    done: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Keeper {
    fn start(
        worker: Arc<Runner>,
        msg: &Received,
        video_id: Uuid,
        claimed: &Arc<Mutex<Option<Uuid>>>,
        stop: &JobStop,
    ) -> Self {
        let done = CancellationToken::new();
        let handle =
            tokio::spawn(worker.heartbeat(msg.clone(), video_id, Arc::clone(claimed), stop.clone(), done.clone()));
        Keeper {
            done,
            handle: Some(handle),
        }
    }

    /// Stops the heartbeat and waits for any call it has in flight, so no
    /// extension lands after the message's final change. Idempotent.
    async fn stop(&mut self) {
        self.done.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

/// A lease a little shorter than the message's visibility: when a worker
/// dies, its lease has run out by the time the message reappears, so the
/// next worker claims the video at once instead of finding it busy.
fn lease(visibility: Duration) -> Duration {
    visibility * 9 / 10
}

fn outcome(done: &Produced) -> Outcome {
    let info = &done.report.input;
    Outcome {
        processed_key: done.key.clone(),
        source_duration: info.duration.map(|d| d.as_secs_f64()),
        source_width: info.display_width as i32,
        source_height: info.display_height as i32,
        original_bytes: done.original_bytes as i64,
        processed_bytes: done.report.bytes as i64,
        processed_duration: done.report.duration.as_secs_f64(),
        media_info: serde_json::to_value(info).unwrap_or_default(),
    }
}

/// Errors that mean a service is unreachable (worth waiting for) rather
/// than refusing (worth reporting).
trait MaybeOutage {
    fn is_outage(&self) -> bool;
}

impl MaybeOutage for crate::db::DbError {
    fn is_outage(&self) -> bool {
        // Every database error here is the server or the network: the
        // statements themselves are fixed and tested.
        true
    }
}

impl MaybeOutage for crate::storage::StorageError {
    fn is_outage(&self) -> bool {
        matches!(self, crate::storage::StorageError::Service { .. })
    }
}
