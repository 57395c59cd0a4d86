//! Riding out an outage inside a job: a step that talks to S3 or
//! PostgreSQL is tried again while the service is down (an outage, not a
//! refusal), up to the outage patience, with the message kept hidden, so an
//! outage does not use up the video's attempts.

use std::time::{Duration, Instant};

use super::stop::JobStop;
use super::{JobError, Runner};
use crate::failure::FailureClass;

/// Longest wait between two tries.
const MAX_DELAY: Duration = Duration::from_secs(30);

impl Runner {
    /// Runs `step` until it succeeds, fails for a reason waiting cannot
    /// fix, the patience runs out or the job is stopped.
    pub(super) async fn patiently<T, F, Fut>(&self, what: &str, stop: &JobStop, mut step: F) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, JobError>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let e = match step().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let wait = match e.class() {
                FailureClass::Outage => started.elapsed() < self.settings.outage_patience && !stop.token.is_cancelled(),
                FailureClass::Configuration => {
                    tracing::error!(event = "configuration_error", error = %e, "cannot {what}: the worker is misconfigured");
                    false
                }
                FailureClass::Input
                | FailureClass::Timeout
                | FailureClass::Transient
                | FailureClass::Crashed
                | FailureClass::OverMemory
                | FailureClass::Interrupted
                | FailureClass::ClaimLost => false,
            };
            if !wait {
                return Err(e);
            }
            self.stats.outage_wait(e.service());
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot {what}; waiting for the service");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.token.cancelled() => return Err(e),
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
    }
}
