//! How a job can fail, and what each failure means for it
//! ([`FailureClass`], which decides what happens to the row and the message).

use processor::ErrorClass;

use crate::completion::PublishError;
use crate::db::DbError;
use crate::failure::FailureClass;
use crate::isolate::ChildError;
use crate::queue::QueueError;
use crate::storage::StorageError;

/// Why a job stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Fetching the original or storing the rendition failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// SQS failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The completion event could not be published.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The transcode failed; the message names the original in S3.
    #[error("{}", source.display_as(original))]
    Processor {
        /// The original, as `s3://bucket/key`.
        original: String,
        /// What the processor said.
        source: processor::Error,
    },
    /// The transcode in a child process failed.
    #[error(transparent)]
    Child(#[from] ChildError),
    /// The row points outside the originals prefix.
    #[error("original key {key:?} is outside {prefix:?}; refusing to read it")]
    ForeignKey {
        /// The key in the row.
        key: String,
        /// The allowed prefix.
        prefix: String,
    },
    /// No private working directory could be made.
    #[error("cannot create a working directory: {0}")]
    WorkDir(std::io::Error),
    /// The transcode thread panicked (in-process isolation).
    #[error("the transcode crashed: {0}")]
    Crashed(String),
    /// The worker is shutting down and the grace period is over.
    #[error("cancelled by shutdown")]
    Shutdown,
    /// Our lease expired and another worker claimed the video.
    #[error("the claim was lost to another worker")]
    ClaimLost,
    /// SQS will not keep the message hidden any longer (12 hours after it
    /// was received).
    #[error("the job reached SQS's 12-hour visibility limit")]
    VisibilityCap,
}

impl JobError {
    /// What this failure means for the job.
    pub fn class(&self) -> FailureClass {
        match self {
            JobError::Storage(e) => e.class(),
            JobError::Db(e) => e.class(),
            JobError::Queue(e) => e.class(),
            JobError::Publish(e) => e.class(),
            JobError::Processor { source, .. } => processor_class(source.class()),
            JobError::Child(e) => child_class(e),
            JobError::ForeignKey { .. } => FailureClass::Input,
            JobError::Crashed(_) => FailureClass::Crashed,
            JobError::WorkDir(_) | JobError::VisibilityCap => FailureClass::Transient,
            JobError::Shutdown => FailureClass::Interrupted,
            JobError::ClaimLost => FailureClass::ClaimLost,
        }
    }

    /// The service a failure came from, for metrics: `database`, `s3`,
    /// `sqs` or `worker`.
    pub fn service(&self) -> &'static str {
        match self {
            JobError::Db(_) => "database",
            JobError::Storage(_) => "s3",
            JobError::Queue(_) => "sqs",
            JobError::Publish(_) => "events",
            _ => "worker",
        }
    }

    /// A short stable name for logs.
    pub fn kind(&self) -> &str {
        match self {
            JobError::Storage(StorageError::NotFound { .. }) => "original_missing",
            JobError::Storage(StorageError::TooLarge { .. }) => "original_too_large",
            JobError::Storage(_) => "storage",
            JobError::Db(_) => "database",
            JobError::Queue(_) => "queue",
            JobError::Publish(_) => "events",
            JobError::Processor { source, .. } => source.kind(),
            JobError::Child(e) => e.kind(),
            JobError::ForeignKey { .. } => "foreign_key",
            JobError::WorkDir(_) => "work_dir",
            JobError::Crashed(_) => "crashed",
            JobError::Shutdown => "shutdown",
            JobError::ClaimLost => "claim_lost",
            JobError::VisibilityCap => "visibility_cap",
        }
    }
}

/// What a processor failure means for the job: a spec or asset that does
/// not work is the worker's configuration, never the upload's fault.
fn processor_class(class: ErrorClass) -> FailureClass {
    match class {
        ErrorClass::Input => FailureClass::Input,
        ErrorClass::Spec => FailureClass::Configuration,
        ErrorClass::Environment => FailureClass::Transient,
        ErrorClass::Timeout => FailureClass::Timeout,
    }
}

/// What a child's end means for the job: a crash is the input's (this
/// video's attempt only), a child that cannot start is the worker's
/// configuration.
fn child_class(e: &ChildError) -> FailureClass {
    match e {
        ChildError::Failed(failure) => processor_class(failure.class),
        ChildError::Crashed { .. } => FailureClass::Crashed,
        ChildError::OverMemory { .. } => FailureClass::OverMemory,
        ChildError::OutputTooLarge { .. } => FailureClass::Input,
        ChildError::Hung { .. } => FailureClass::Timeout,
        ChildError::Killed { .. } | ChildError::Interrupted { .. } => FailureClass::Interrupted,
        ChildError::Spawn { .. } | ChildError::Setup { .. } | ChildError::Protocol(_) => FailureClass::Configuration,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_failure_says_what_it_means_for_the_job() {
        let missing = JobError::Storage(StorageError::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        });
        let processor = |source| JobError::Processor {
            original: "s3://b/k".into(),
            source,
        };
        let cases = [
            (missing, FailureClass::Input),
            (JobError::Shutdown, FailureClass::Interrupted),
            (JobError::ClaimLost, FailureClass::ClaimLost),
            (
                JobError::Db(DbError::Query(sqlx::Error::PoolTimedOut)),
                FailureClass::Outage,
            ),
            (
                processor(processor::Error::TimedOut {
                    path: "k".into(),
                    after: Duration::from_secs(600),
                }),
                FailureClass::Timeout,
            ),
            (
                processor(processor::Error::InvalidSpec("watermark.png: cannot decode".into())),
                FailureClass::Configuration,
            ),
            (
                processor(processor::Error::NoVideo {
                    path: "k".into(),
                    detail: String::new(),
                }),
                FailureClass::Input,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
        }
    }
}
