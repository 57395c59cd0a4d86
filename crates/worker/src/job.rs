//! One job: the message that asks for it, and the ways it can fail. The
//! kind of failure decides what happens to the message.

use serde::Deserialize;
use uuid::Uuid;

use crate::db::DbError;
use crate::queue::QueueError;
use crate::storage::StorageError;

/// The message body the platform sends: `{"video_id": "<uuid>"}`. Other
/// fields are ignored; keys never come from the message.
#[derive(Debug, Deserialize)]
struct Body {
    video_id: serde_json::Value,
}

/// The body of a job message, as the platform sends it.
pub fn body(video_id: Uuid) -> String {
    serde_json::json!({ "video_id": video_id }).to_string()
}

/// Why a message body is not a job.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not JSON at all.
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    /// JSON without a `video_id`.
    #[error("the body has no \"video_id\"")]
    NoVideoId,
    /// `video_id` is a number, an object, …
    #[error("\"video_id\" is {0}, not a string")]
    NotString(String),
    /// `video_id` is a string but not a UUID.
    #[error("\"video_id\" {0:?} is not a UUID")]
    NotUuid(String),
}

/// The video a message asks for, or why the message is malformed.
pub fn parse(body: &str) -> Result<Uuid, Malformed> {
    let parsed: Body = serde_json::from_str(body).map_err(|e| {
        if e.is_data() {
            Malformed::NoVideoId
        } else {
            Malformed::NotJson(e.to_string())
        }
    })?;
    let text = parsed
        .video_id
        .as_str()
        .ok_or_else(|| Malformed::NotString(parsed.video_id.to_string()))?;
    Uuid::parse_str(text).map_err(|_| Malformed::NotUuid(text.to_owned()))
}

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
    Publish(#[from] crate::events::PublishError),
    /// The transcode failed; the message names the original in S3.
    #[error("{}", source.display_as(original))]
    Processor {
        /// The original, as `s3://bucket/key`.
        original: String,
        /// What the processor said.
        source: processor::Error,
    },
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
    /// The transcode thread panicked.
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

/// What a failure means for the job, which decides what happens to the
/// row and the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The input is bad or missing: another attempt would fail the same way.
    Permanent,
    /// A service is unreachable or overloaded: worth waiting for while the
    /// message stays hidden, then worth another attempt.
    Outage,
    /// The worker is misconfigured (credentials, permissions, a missing
    /// bucket or queue, KMS, the database schema): no attempt can succeed
    /// until an operator fixes it, and the attempt is not the video's fault.
    Configuration,
    /// Anything else another attempt may fix (a crash, a full disk).
    Transient,
}

impl JobError {
    /// What this failure means for the job.
    pub fn class(&self) -> FailureClass {
        match self {
            JobError::Storage(e) => e.class(),
            JobError::Db(e) => e.class(),
            JobError::Queue(e) => e.class(),
            JobError::Publish(_) => FailureClass::Outage,
            JobError::Processor { source, .. } if source.is_permanent() => FailureClass::Permanent,
            JobError::ForeignKey { .. } => FailureClass::Permanent,
            JobError::Processor { .. }
            | JobError::WorkDir(_)
            | JobError::Crashed(_)
            | JobError::Shutdown
            | JobError::ClaimLost
            | JobError::VisibilityCap => FailureClass::Transient,
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

    /// Whether another attempt would fail the same way.
    pub fn is_permanent(&self) -> bool {
        self.class() == FailureClass::Permanent
    }

    /// A short stable name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Storage(StorageError::NotFound { .. }) => "original_missing",
            JobError::Storage(StorageError::TooLarge { .. }) => "original_too_large",
            JobError::Storage(_) => "storage",
            JobError::Db(_) => "database",
            JobError::Queue(_) => "queue",
            JobError::Publish(_) => "events",
            JobError::Processor { source, .. } => source.kind(),
            JobError::ForeignKey { .. } => "foreign_key",
            JobError::WorkDir(_) => "work_dir",
            JobError::Crashed(_) => "crashed",
            JobError::Shutdown => "shutdown",
            JobError::ClaimLost => "claim_lost",
            JobError::VisibilityCap => "visibility_cap",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_body_names_its_video_and_extra_fields_are_ignored() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"video_id": "{id}", "original_key": "../../etc/passwd"}}"#);
        assert_eq!(parse(&body), Ok(id));
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let why = |body: &str| parse(body).unwrap_err().to_string();
        assert!(why("hello").contains("not JSON"));
        assert!(why("{}").contains("no \"video_id\""));
        assert!(why(r#"{"video_id": 7}"#).contains("7, not a string"));
        assert!(why(r#"{"video_id": "../x"}"#).contains("is not a UUID"));
    }

    #[test]
    fn bad_inputs_are_permanent_and_outages_are_not() {
        let missing = JobError::Storage(StorageError::NotFound {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert!(missing.is_permanent());
        assert!(!JobError::Shutdown.is_permanent());
        assert!(!JobError::Db(DbError::Query(sqlx::Error::PoolTimedOut)).is_permanent());
    }
}
