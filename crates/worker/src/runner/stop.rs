//! A job's cancellation: a child of the shutdown's abort token (so the end
//! of the grace period stops it) plus the first reason its own loops gave
//! (the claim was taken over, SQS's visibility limit is near).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobError;
use crate::db::DbError;

/// How long a row write may still take once its job is stopped: the
/// message is handed back (or about to be), and the reconciler or the
/// lease's expiry covers a row that cannot be written now. Within the
/// runner's hand-back budget (`HANDBACK_TIMEOUT`).
const STOPPED_WRITE: Duration = Duration::from_secs(2);

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

    /// Runs the database write `what` to its end unless the job is
    /// stopped: from then on (or from the start, if it already is) it has
    /// `STOPPED_WRITE` left. A write that takes milliseconds still lands
    /// when the grace period ends, one stuck on a dead database does not
    /// hold up the hand-back.
    pub(super) async fn bound<T>(
        &self,
        what: &'static str,
        write: impl Future<Output = Result<T, JobError>>,
    ) -> Result<T, JobError> {
        let timed_out = || {
            Err(JobError::Db(DbError::Timeout {
                what,
                after: STOPPED_WRITE,
            }))
        };
        tokio::pin!(write);
        tokio::select! {
            biased;
            r = &mut write => r,
            () = self.token.cancelled() => tokio::time::timeout(STOPPED_WRITE, write)
                .await
                .unwrap_or_else(|_| timed_out()),
        }
    }
}
