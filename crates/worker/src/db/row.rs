//! One row of the `videos` table as it is read back ([`VideoRow`]), and the
//! stored states ([`Status`], [`Phase`]) that the migrations' CHECK
//! constraints restrict to the same names. No state is written as a string
//! literal anywhere else: statements bind these enums.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::failure::FailureKind;

/// Where a video is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Waiting for a worker (the platform inserted it, or it was handed
    /// back).
    Pending,
    /// A worker holds a claim on it until its lease expires.
    Processing,
    /// Its rendition is recorded: final.
    Processed,
    /// It failed for good ([`FailureKind`] says why): final unless an
    /// operator runs it again.
    Failed,
}

impl Status {
    /// Every status, as the CHECK constraint lists them.
    pub const ALL: [Status; 4] = [Status::Pending, Status::Processing, Status::Processed, Status::Failed];

    /// The stored value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Processed => "processed",
            Status::Failed => "failed",
        }
    }

    /// Whether the row holds a final outcome (one a completion event
    /// announces).
    pub const fn is_final(self) -> bool {
        match self {
            Status::Processed | Status::Failed => true,
            Status::Pending | Status::Processing => false,
        }
    }
}

crate::stored_text_enum!(Status);

/// Where the current attempt is, for the upload page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Waiting for a worker.
    Queued,
    /// Fetching the original from S3.
    Downloading,
    /// Decoding, filtering and encoding.
    Transcoding,
    /// Storing the rendition and poster in S3.
    Uploading,
    /// Writing the outcome.
    Recording,
    /// Processed.
    Done,
    /// Failed for good.
    Failed,
}

impl Phase {
    /// Every phase, as the CHECK constraint lists them.
    pub const ALL: [Phase; 7] = [
        Phase::Queued,
        Phase::Downloading,
        Phase::Transcoding,
        Phase::Uploading,
        Phase::Recording,
        Phase::Done,
        Phase::Failed,
    ];

    /// The stored value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Downloading => "downloading",
            Phase::Transcoding => "transcoding",
            Phase::Uploading => "uploading",
            Phase::Recording => "recording",
            Phase::Done => "done",
            Phase::Failed => "failed",
        }
    }
}

crate::stored_text_enum!(Phase);

/// The columns of a [`VideoRow`], as a literal so queries stay static strings.
macro_rules! select_row {
    () => {
        "SELECT id, status, original_key, processed_key, error, attempts, created_at, updated_at, \
         processing_started_at, processed_at, claimed_by, lease_expires_at, source_duration_seconds, source_width, \
         source_height, original_bytes, processed_bytes, processed_duration_seconds, interruptions, failure_kind, \
         last_error_kind, uploaded_key, resends, resent_at, resend_reason, poster_key, phase, progress_percent, \
         event_id, event_published_at, generation, claim_token, outputs, cost FROM videos"
    };
}
pub(super) use select_row;

/// One row, as `vidworker status` shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VideoRow {
    /// The video's id.
    pub id: Uuid,
    /// Its state.
    pub status: Status,
    /// Where the original is.
    pub original_key: String,
    /// Where the rendition is.
    pub processed_key: Option<String>,
    /// The last failure.
    pub error: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// When the row was inserted.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// When the last attempt started.
    pub processing_started_at: Option<OffsetDateTime>,
    /// When it was processed.
    pub processed_at: Option<OffsetDateTime>,
    /// Who holds the claim.
    pub claimed_by: Option<String>,
    /// Until when.
    pub lease_expires_at: Option<OffsetDateTime>,
    /// Declared duration of the original.
    pub source_duration_seconds: Option<f64>,
    /// Display width of the original.
    pub source_width: Option<i32>,
    /// Display height of the original.
    pub source_height: Option<i32>,
    /// Size of the original.
    pub original_bytes: Option<i64>,
    /// Size of the rendition.
    pub processed_bytes: Option<i64>,
    /// Length of the rendition.
    pub processed_duration_seconds: Option<f64>,
    /// Attempts handed back on purpose.
    pub interruptions: i32,
    /// Why it failed, once failed.
    pub failure_kind: Option<FailureKind>,
    /// The stable name of the last failure.
    pub last_error_kind: Option<String>,
    /// The current claim's uploaded rendition, not yet recorded.
    pub uploaded_key: Option<String>,
    /// Messages re-sent by the reconciler.
    pub resends: i32,
    /// When the last one was.
    pub resent_at: Option<OffsetDateTime>,
    /// Why.
    pub resend_reason: Option<String>,
    /// Where the poster is.
    pub poster_key: Option<String>,
    /// Where the current attempt is.
    pub phase: Phase,
    /// How far the current attempt is, 0 to 100.
    pub progress_percent: i16,
    /// The id of the recorded outcome's completion event.
    pub event_id: Option<Uuid>,
    /// When that event was published (the outbox), if it was.
    pub event_published_at: Option<OffsetDateTime>,
    /// Bumped by each operator's requeue; carried by its messages.
    pub generation: i32,
    /// The current claim's fencing token, while processing.
    pub claim_token: Option<Uuid>,
    /// Every output of the recorded rendition ([`crate::outputs::Outputs`]).
    pub outputs: Option<serde_json::Value>,
    /// What its job cost ([`crate::outputs::Cost`]).
    pub cost: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_states_round_trip_through_their_names() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
        assert!("Pending".parse::<Status>().is_err(), "names are exact");
    }
}
