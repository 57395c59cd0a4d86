//! The worker's one vocabulary of failure, in a leaf module (it imports
//! nothing of the crate, so every module can use it without a cycle):
//!
//! - [`FailureClass`]: what a failure means for the job, which decides what
//!   happens to the row and the message. Every error type of the worker
//!   (S3, SQS, PostgreSQL, events, the processor) says its class, and
//!   `runner::settle::decide` matches every class, with no catch-all arm:
//!   a new class is a compile error until each decision handles it.
//! - [`FailureKind`]: why a video that failed for good failed, as stored in
//!   `videos.failure_kind` (the migrations' CHECK constraint lists the same
//!   values) and published as `failure.class` in completion events.
//!
//! The finer stable names of failures (`no_video`, `timed_out`,
//! `original_missing`, …) are labels for people, logs and metrics
//! (`last_error_kind`, `failure.kind`); no decision reads them.

use std::fmt;

/// What a failure means for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// The upload cannot be processed (not media, corrupt, over a limit,
    /// missing from S3): another attempt would fail the same way.
    Input,
    /// The transcode ran past `JOB_TIMEOUT`. A slow machine may explain
    /// one; a second is the input's fault.
    Timeout,
    /// A service is unreachable or overloaded: worth waiting for while the
    /// message stays hidden, then worth another attempt.
    Outage,
    /// The worker is misconfigured (credentials, permissions, a missing
    /// bucket or queue, KMS, the database schema, a rendition asset that
    /// does not decode): no attempt can succeed until an operator fixes it,
    /// and the attempt is not the video's fault.
    Configuration,
    /// Anything else another attempt may fix (a full disk, an internal
    /// FFmpeg failure).
    Transient,
    /// The transcode crashed (its child process died of a signal or
    /// panicked): a decoder bug the input triggers, most likely. It counts
    /// against this video only; when its attempts are used up it fails as
    /// `crashed`.
    Crashed,
    /// The transcode needed more memory than a job may use: a limit of the
    /// input, final, stored as `over_memory`.
    OverMemory,
    /// The worker is shutting down and the job was stopped: it is handed
    /// back at once and the attempt does not count.
    Interrupted,
    /// The job's claim was taken over by another worker: neither the row
    /// nor the message is this job's any more.
    ClaimLost,
}

impl FailureClass {
    /// The class's stable name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureClass::Input => "input",
            FailureClass::Timeout => "timeout",
            FailureClass::Outage => "outage",
            FailureClass::Configuration => "configuration",
            FailureClass::Transient => "transient",
            FailureClass::Crashed => "crashed",
            FailureClass::OverMemory => "over_memory",
            FailureClass::Interrupted => "interrupted",
            FailureClass::ClaimLost => "claim_lost",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a failed video failed (`videos.failure_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The upload cannot be processed; retrying will not help.
    Input,
    /// Transient failures on every allowed attempt.
    GaveUp,
    /// No worker took it up, even after re-sends.
    Stranded,
    /// Its transcode crashed on every allowed attempt.
    Crashed,
    /// Its transcode needed more memory than a job may use.
    OverMemory,
}

impl FailureKind {
    /// Every kind, as the CHECK constraint lists them.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Input,
        FailureKind::GaveUp,
        FailureKind::Stranded,
        FailureKind::Crashed,
        FailureKind::OverMemory,
    ];

    /// The stored value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Input => "input",
            FailureKind::GaveUp => "gave_up",
            FailureKind::Stranded => "stranded",
            FailureKind::Crashed => "crashed",
            FailureKind::OverMemory => "over_memory",
        }
    }

    /// Whether an operator's redrive may run the video again: a video
    /// that gave up or was stranded may succeed later, one that crashed
    /// after an FFmpeg fix, one over the memory limit once it is raised; an
    /// input that cannot be processed never will.
    pub const fn is_retryable(self) -> bool {
        match self {
            FailureKind::Input => false,
            FailureKind::GaveUp | FailureKind::Stranded | FailureKind::Crashed | FailureKind::OverMemory => true,
        }
    }
}

crate::stored_text_enum!(FailureKind);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_kinds_round_trip_through_their_names() {
        for kind in FailureKind::ALL {
            assert_eq!(kind.as_str().parse::<FailureKind>(), Ok(kind));
        }
        assert!("input ".parse::<FailureKind>().is_err());
    }
}
