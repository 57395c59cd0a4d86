//! Keeping a running job's message hidden and its claim alive.
//!
//! Two independent loops, each every third of the visibility timeout: one
//! extends the message's visibility (from the moment the message is
//! parsed), the other renews the row's lease (once the video is claimed).
//! They are separate so that a hung database connection can never stop the
//! extensions, and each call has its own deadline. Both run until the
//! job's outcome is recorded; [`Heartbeat::stop`] waits for any call in
//! flight, so no extension lands after the message's final change. A third
//! loop writes the job's progress to the row, at most every
//! `PROGRESS_INTERVAL`, when it changed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Runner;
use super::progress::RowProgress;
use super::stop::{JobStop, StopReason};
use crate::queue::{MAX_VISIBILITY, Received};

/// Margin kept before SQS's 12-hour visibility cap.
const CAP_MARGIN: Duration = Duration::from_secs(120);

/// A claim's lease: a little shorter than the message's visibility, so
/// that when a worker dies its lease has run out by the time the message
/// reappears, and the next worker claims the video at once instead of
/// finding it busy.
pub(super) fn lease_for(visibility: Duration) -> Duration {
    visibility * 9 / 10
}

/// The heartbeat of one job.
#[derive(Debug)]
pub(super) struct Heartbeat {
    runner: Arc<Runner>,
    done: CancellationToken,
    claim: Arc<Mutex<Option<Uuid>>>,
    tasks: Vec<JoinHandle<()>>,
    /// This job's number in the health registry.
    health_id: u64,
}

impl Heartbeat {
    /// Starts extending the message's visibility, and writing `progress`
    /// once the video is claimed.
    pub(super) fn start(
        runner: &Arc<Runner>,
        msg: &Received,
        video_id: Uuid,
        stop: &JobStop,
        progress: &Arc<RowProgress>,
    ) -> Self {
        let done = CancellationToken::new();
        let claim = Arc::new(Mutex::new(None));
        let every = (runner.settings.visibility_timeout / 3).max(Duration::from_millis(500));
        let health_id = runner.stats.health.job_started();
        let tasks = vec![
            tokio::spawn(extend_visibility(
                Arc::clone(runner),
                msg.clone(),
                (every, health_id),
                stop.clone(),
                done.clone(),
            )),
            tokio::spawn(renew_lease(
                Arc::clone(runner),
                video_id,
                Arc::clone(&claim),
                every,
                stop.clone(),
                done.clone(),
            )),
            tokio::spawn(write_progress(
                Arc::clone(runner),
                video_id,
                Arc::clone(&claim),
                Arc::clone(progress),
                done.clone(),
            )),
        ];
        Heartbeat {
            runner: Arc::clone(runner),
            done,
            claim,
            tasks,
            health_id,
        }
    }

    /// From now on, also renew the lease of this claim.
    pub(super) fn claimed(&self, token: Uuid) {
        if let Ok(mut c) = self.claim.lock() {
            *c = Some(token);
        }
    }

    /// Stops both loops and waits for any call they have in flight.
    /// Idempotent.
    pub(super) async fn stop(&mut self) {
        self.done.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.runner.stats.health.job_ended(self.health_id);
    }
}

async fn extend_visibility(
    runner: Arc<Runner>,
    msg: Received,
    (every, health_id): (Duration, u64),
    stop: JobStop,
    done: CancellationToken,
) {
    let timeout = runner.settings.visibility_timeout;
    let stats = &runner.stats;
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
        let call = runner.queue.set_visibility(&msg.receipt, extend);
        let result = tokio::select! {
            r = tokio::time::timeout(every, call) => r,
            () = done.cancelled() => return,
        };
        stats.health.beat(health_id);
        stats.visibility_extension(matches!(result, Ok(Ok(()))));
        match result {
            Ok(Ok(())) => tracing::trace!(extend_s = extend.as_secs(), "visibility extended"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot extend the message's visibility"),
            Err(_) => tracing::warn!(
                after_s = every.as_secs(),
                "extending the message's visibility got no answer"
            ),
        }
    }
}

async fn renew_lease(
    runner: Arc<Runner>,
    video_id: Uuid,
    claim: Arc<Mutex<Option<Uuid>>>,
    every: Duration,
    stop: JobStop,
    done: CancellationToken,
) {
    let length = lease_for(runner.settings.visibility_timeout);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = done.cancelled() => return,
        }
        let token = claim.lock().ok().and_then(|c| *c);
        let Some(token) = token else { continue };
        let result = tokio::select! {
            r = runner.db.renew_lease(video_id, token, length) => r,
            () = done.cancelled() => return,
        };
        match result {
            Ok(true) => tracing::trace!(lease_s = length.as_secs(), "lease renewed"),
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

async fn write_progress(
    runner: Arc<Runner>,
    video_id: Uuid,
    claim: Arc<Mutex<Option<Uuid>>>,
    progress: Arc<RowProgress>,
    done: CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(runner.settings.progress_interval) => {}
            () = done.cancelled() => return,
        }
        let token = claim.lock().ok().and_then(|c| *c);
        let (Some(token), Some((phase, percent))) = (token, progress.unwritten()) else {
            continue;
        };
        let write = runner.db.set_progress(video_id, token, phase, percent);
        let result = tokio::select! {
            r = write => r,
            () = done.cancelled() => return,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot record progress");
        }
    }
}
