//! Cancellation, deadlines and progress: how a caller steers a running job.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::Error;

/// A flag another thread raises to stop a running [`process`](crate::process)
/// or [`probe_with`](crate::probe_with). It is checked between frames and
/// inside every read, so a job stops within one frame's work.
#[derive(Clone, Debug, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag. Idempotent.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether the flag has been raised.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Progress of a running transcode, passed to the caller's callback after
/// every output frame.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// Output frames encoded so far.
    pub frames: u64,
    /// Output media time encoded so far.
    pub position: Duration,
    /// The expected length of the output (from the container's declared
    /// duration, the cap and the cards).
    pub expected: Duration,
}

impl Progress {
    /// How much of the expected output is done, 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        if self.expected.is_zero() {
            return 0.0;
        }
        (self.position.as_secs_f64() / self.expected.as_secs_f64()).clamp(0.0, 1.0)
    }
}

/// Why a job must stop now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    TimedOut(Duration),
}

impl Stop {
    pub(crate) fn into_error(self, path: &Path) -> Error {
        match self {
            Stop::Cancelled => Error::Cancelled { path: path.to_owned() },
            Stop::TimedOut(after) => Error::TimedOut {
                path: path.to_owned(),
                after,
            },
        }
    }
}

/// The cancel flag and the deadline of one job, shared with the reader that
/// feeds FFmpeg so a stuck demuxer is interrupted too.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    cancel: CancelFlag,
    deadline: Option<(Instant, Duration)>,
}

impl Budget {
    pub(crate) fn new(cancel: &CancelFlag, timeout: Option<Duration>) -> Self {
        Budget {
            cancel: cancel.clone(),
            deadline: timeout.map(|t| (Instant::now() + t, t)),
        }
    }

    pub(crate) fn check(&self) -> Result<(), Stop> {
        if self.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        match self.deadline {
            Some((at, after)) if Instant::now() >= at => Err(Stop::TimedOut(after)),
            _ => Ok(()),
        }
    }

    /// Same as [`Budget::check`], as the crate's error for `path`.
    pub(crate) fn check_for(&self, path: &Path) -> Result<(), Error> {
        self.check().map_err(|stop| stop.into_error(path))
    }
}
