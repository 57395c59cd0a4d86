//! One message, start to finish: parse it, start its heartbeat, claim the
//! video, do the work ([`super::work`]: download, transcode, upload), then
//! settle ([`super::settle`]: decide, then write the row, stop the
//! heartbeat, and only then touch the message).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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
use crate::message;
use crate::queue::Received;
use crate::telemetry::Event;

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
        let video_id = match message::parse(&self.msg.body) {
            Ok(id) => id,
            Err(why) => return Outcome::Malformed(why),
        };
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
        let claimed = match self.claim(video_id).await {
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

    /// Claims the video, riding out a database outage.
    async fn claim(&self, video_id: Uuid) -> Result<Claim, super::JobError> {
        let runner = &self.runner;
        runner
            .patiently("claim the video", &self.stop, || async {
                let lease = lease_for(runner.settings.visibility_timeout);
                Ok(runner.db.claim(video_id, &runner.settings.worker_id, lease).await?)
            })
            .await
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
        let message_age = self
            .msg
            .sent_at
            .and_then(|sent| SystemTime::now().duration_since(sent).ok())
            .unwrap_or_else(|| self.msg.received_at.elapsed());
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
