//! A job's cancellation: a child of the shutdown's abort token (so the end
//! of the grace period stops it) plus the first reason its own loops gave
//! (the claim was taken over, SQS's visibility limit is near).

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::JobError;

/// Why a running job was told to stop by its own heartbeat.
#[derive(Clone, Copy, Debug)]
pub(super) enum StopReason {
    ClaimLost,
    VisibilityCap,
}

/// A job's cancellation.
#[derive(Clone, Debug)]
pub(super) struct JobStop {
    pub(super) token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
}

impl JobStop {
    pub(super) fn new(abort: &CancellationToken) -> Self {
        JobStop {
            token: abort.child_token(),
            reason: Arc::default(),
        }
    }

    /// Stops the job; the first reason given is the one it ends with.
    pub(super) fn stop(&self, reason: StopReason) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.token.cancel();
    }

    /// Why the job was stopped, as the error it ends with.
    pub(super) fn error(&self) -> Option<JobError> {
        let reason = self.reason.lock().ok().and_then(|r| *r);
        match reason {
            Some(StopReason::ClaimLost) => Some(JobError::ClaimLost),
            Some(StopReason::VisibilityCap) => Some(JobError::VisibilityCap),
            // Cancelled without a reason of ours: the shutdown's abort.
            None => self.token.is_cancelled().then_some(JobError::Shutdown),
        }
    }

    /// The error of a step cut short by the stop: its reason, or the
    /// shutdown's.
    pub(super) fn cut_short(&self) -> JobError {
        self.error().unwrap_or(JobError::Shutdown)
    }
}
