//! One message, start to finish: parse it, start its heartbeat, claim the
//! video, do the work ([`super::work`]: download, transcode, upload), then
//! settle ([`super::settle`]: decide, then write the row, stop the
//! heartbeat, and only then touch the message).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::Runner;
use super::heartbeat::{Heartbeat, lease_for};
use super::progress::RowProgress;
use super::settle::{self, ClaimFacts, Facts, Outcome, Settle};
use super::stop::JobStop;
use super::work::{Produced, Work};
use crate::db::{Claim, Claimed};
use crate::message::{self, JobMessage};
use crate::queue::Received;
use crate::telemetry::Event;

/// Longest wait between two looks at a video that has no row yet, or that
/// another worker holds.
const MAX_LOOK_INTERVAL: Duration = Duration::from_secs(30);

/// One job in flight.
struct Job {
    runner: Arc<Runner>,
    msg: Received,
    video_id: Option<Uuid>,
    stop: JobStop,
    /// Cancelled when the worker stops taking jobs: a job still waiting
    /// for a transcode slot is then handed back.
    intake: CancellationToken,
    heartbeat: Option<Heartbeat>,
    claim: Option<Claimed>,
    produced: Option<Produced>,
    progress: Arc<RowProgress>,
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
            heartbeat: None,
            claim: None,
            produced: None,
            progress: Arc::default(),
            started: Instant::now(),
        };
        let runner = Arc::clone(&job.runner);
        runner.job_started();
        // On the heap: a job's state (its claim, settlement, the database
        // and AWS calls in flight) is some 17 KB, too much to move around
        // on the stack of the task that runs it.
        Box::pin(
            async move {
                let outcome = job.run(jobs_dir.as_deref()).await;
                job.settle(outcome).await;
            }
            .instrument(span),
        )
        .await;
        runner.job_ended();
    }
}

impl Job {
    /// Everything up to the outcome.
    async fn run(&mut self, jobs_dir: Option<&Path>) -> Outcome {
        let job = match message::parse(&self.msg.body) {
            Ok(job) => job,
            Err(why) => return Outcome::Malformed(why),
        };
        let video_id = job.video_id;
        self.video_id = Some(video_id);
        tracing::Span::current().record("video_id", tracing::field::display(video_id));
        // From here on the message is kept hidden, even while an outage
        // is waited out before the claim.
        self.heartbeat = Some(Heartbeat::start(
            &self.runner,
            &self.msg,
            video_id,
            &self.stop,
            &self.progress,
        ));
        let claimed = match self.claim(job).await {
            Ok(Claim::Claimed(c)) => c,
            Ok(Claim::AlreadyProcessed) => return Outcome::Duplicate,
            Ok(Claim::AlreadyFailed(_)) => return Outcome::AlreadyFailed,
            Ok(Claim::Stale) => return Outcome::Stale,
            // The claim only gives up on a busy video when stopped.
            Ok(Claim::Busy(_)) => return Outcome::ClaimFailed(super::JobError::Shutdown),
            Ok(Claim::Unknown) => return Outcome::Unknown,
            Err(e) => return Outcome::ClaimFailed(e),
        };
        Event::Claimed {
            video_id,
            attempt: claimed.attempts,
            original_key: &claimed.original_key,
        }
        .emit(&self.runner.stats);
        if let Some(h) = &self.heartbeat {
            h.claimed(claimed.token);
        }
        let (key, token) = (claimed.original_key.clone(), claimed.token);
        let died_repeatedly = claimed.counted_attempts() > self.runner.settings.max_attempts as i32;
        self.claim = Some(claimed);
        if died_repeatedly {
            return Outcome::DiedRepeatedly;
        }
        let work = Work {
            runner: &self.runner,
            stop: &self.stop,
            intake: &self.intake,
            progress: &self.progress,
        };
        let result = work.run(video_id, &key, token, jobs_dir).await;
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

    /// Claims the video, riding out a database outage. The claim's token is
    /// chosen once, so a claim retried after a lost reply is the same claim.
    ///
    /// While the video has no row yet (the platform's insert is not visible
    /// yet), or another worker holds it, the job waits and looks again,
    /// with the message kept hidden by the heartbeat, instead of bouncing
    /// the message: every receive counts toward the queue's redrive limit,
    /// and bounced messages were dead-lettered while their video was fine.
    /// It waits for a missing row up to `UNKNOWN_VIDEO_PATIENCE` (from the
    /// message's sending), and for a busy video as long as the other
    /// worker's lease lives (it ends when that worker finishes or dies).
    async fn claim(&self, job: JobMessage) -> Result<Claim, super::JobError> {
        let runner = &self.runner;
        let token = Uuid::new_v4();
        let mut delay = Duration::from_secs(1);
        let mut told_busy = false;
        loop {
            let claim = runner
                .patiently("claim the video", &self.stop, || async {
                    let lease = lease_for(runner.settings.visibility_timeout);
                    let worker = &runner.settings.worker_id;
                    Ok(runner
                        .db
                        .claim(job.video_id, worker, token, job.generation, lease)
                        .await?)
                })
                .await?;
            let look_again = match claim {
                Claim::Unknown => self.message_age() + delay < runner.settings.unknown_video_patience,
                Claim::Busy(_) => true,
                Claim::Claimed(_) | Claim::AlreadyProcessed | Claim::AlreadyFailed(_) | Claim::Stale => false,
            };
            if !look_again {
                return Ok(claim);
            }
            if let (Claim::Busy(remaining), false) = (&claim, told_busy) {
                Event::Busy {
                    video_id: job.video_id,
                    delay: *remaining,
                }
                .emit(&runner.stats);
                told_busy = true;
            }
            tracing::debug!(
                ?claim,
                retry_in_s = delay.as_secs(),
                "waiting for the video inside this receive"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.intake.cancelled() => return Err(super::JobError::Shutdown),
                () = self.stop.token.cancelled() => return Err(self.stop.cut_short()),
            }
            delay = (delay * 2).min(MAX_LOOK_INTERVAL);
        }
    }

    /// How long ago the message was first sent (or received, if SQS did
    /// not say).
    fn message_age(&self) -> Duration {
        self.msg
            .sent_at
            .and_then(|sent| SystemTime::now().duration_since(sent).ok())
            .unwrap_or_else(|| self.msg.received_at.elapsed())
    }

    /// Decides what follows from the outcome and carries it out.
    async fn settle(mut self, outcome: Outcome) {
        let settlement = settle::decide(&outcome, &self.facts());
        tracing::debug!(?outcome, ?settlement, "settling");
        Settle {
            runner: &self.runner,
            msg: &self.msg,
            video_id: self.video_id,
            claim: self.claim.as_ref(),
            produced: self.produced.as_ref(),
            stop: &self.stop,
            progress: &self.progress,
            started: self.started,
        }
        .apply(&settlement, self.heartbeat.take())
        .await;
    }

    /// What the row and the message say, for the decision.
    fn facts(&self) -> Facts {
        let s = &self.runner.settings;
        let message_age = self.message_age();
        Facts {
            max_attempts: s.max_attempts,
            claim: self.claim.as_ref().map(|c| ClaimFacts {
                counted_attempts: c.counted_attempts().max(0) as u32,
                timeouts: c.timeouts.max(0) as u32,
            }),
            receive_count: self.msg.receive_count,
            message_age,
            unknown_patience: s.unknown_video_patience,
            retry_backoff: s.retry_backoff,
            configuration_delay: s.configuration_delay,
            shutting_down: self.stop.token.is_cancelled(),
            events_enabled: self.runner.publisher.is_enabled(),
        }
    }
}
