//! What a job does to its video's row: claim it with a lease and a fencing
//! token, renew the lease, note its progress and its upload, and record
//! the outcome or hand the video back. Every write after the claim is
//! fenced on the claim's token and on `status = processing`: a worker whose
//! lease ran out and whose video another worker took can change nothing.
//!
//! Every write is also safe to retry after its reply was lost (the commit
//! landed, then a failover, a reset connection or the call's deadline ate
//! the answer). The job chooses its claim token before the first try, so a
//! retried claim finds its own claim and does not count a second attempt;
//! an outcome records the claim that settled the row (`settled_token`), so
//! a retried record, failure or hand-back finds its own outcome and
//! succeeds, instead of taking the row for a lost claim and deleting what
//! it records.

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

use super::{Db, DbError, FailureKind, Phase, Status, secs, truncate};

/// What a claim attempt found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The video is ours until the lease expires; `token` fences our writes.
    Claimed(Claimed),
    /// Already processed: a duplicate delivery.
    AlreadyProcessed,
    /// Failed for good (its input, or attempts used up): a late
    /// duplicate. Only an operator's requeue reopens it.
    AlreadyFailed(String),
    /// The message is of an older generation than the row: a stray copy
    /// of a message an operator's requeue superseded.
    Stale,
    /// Another worker holds an unexpired lease for this long.
    Busy(Duration),
    /// No such video.
    Unknown,
}

/// A video this worker now holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The original's S3 key, from the row.
    pub original_key: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Attempts handed back on purpose, which do not count.
    pub interruptions: i32,
    /// Earlier attempts that ran past the time limit.
    pub timeouts: i32,
    /// Changes with every claim.
    pub token: Uuid,
    /// The row's generation.
    pub generation: i32,
}

impl Claimed {
    /// Attempts that count toward giving up, this one included.
    pub fn counted_attempts(&self) -> i32 {
        (self.attempts - self.interruptions).max(1)
    }
}

/// What the row records about a processed video.
#[derive(Clone, Debug)]
pub struct ProcessedRow {
    /// Where the rendition is.
    pub processed_key: String,
    /// Declared duration of the original, in seconds.
    pub source_duration: Option<f64>,
    /// Display width of the original.
    pub source_width: i32,
    /// Display height of the original.
    pub source_height: i32,
    /// Size of the original in bytes.
    pub original_bytes: i64,
    /// Size of the rendition in bytes.
    pub processed_bytes: i64,
    /// Length of the rendition in seconds.
    pub processed_duration: f64,
    /// The full probe of the original.
    pub media_info: serde_json::Value,
    /// Where the poster is, if one was made.
    pub poster_key: Option<String>,
    /// Every output ([`crate::outputs::Outputs`]).
    pub outputs: serde_json::Value,
    /// What the job cost ([`crate::outputs::Cost`]).
    pub cost: serde_json::Value,
}

/// How a fenced write of an outcome went.
#[derive(Debug, PartialEq)]
pub enum Recorded {
    /// Written now; the rendition it replaced, if the video had one.
    Now {
        /// The previous `processed_key`.
        previous: Option<String>,
    },
    /// The claim was no longer ours: nothing written.
    ClaimLost,
}

/// How an attempt that is handed back counts toward giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It counts.
    Counted,
    /// It counts, and it ran past the time limit.
    TimedOut,
    /// It was handed back on purpose (shutdown, a configuration error):
    /// it does not count.
    Uncounted,
}

/// Why a video is handed back, kept in the row for people.
#[derive(Clone, Copy, Debug, Default)]
pub struct HandBack<'a> {
    /// The failure's one-line reason, if the attempt failed.
    pub reason: Option<&'a str>,
    /// The failure's stable name, if the attempt failed.
    pub error_kind: Option<&'a str>,
}

impl Db {
    /// Claims a video in one conditional UPDATE, for a message of
    /// `generation`, as `token` (chosen by the caller before the first
    /// try): a pending video, or one being processed under an expired lease
    /// or under this very token (a retry after a lost reply, which does not
    /// count another attempt). A failed or processed video is final. Two
    /// workers can never both succeed.
    pub async fn claim(
        &self,
        id: Uuid,
        worker: &str,
        token: Uuid,
        generation: i32,
        lease: Duration,
    ) -> Result<Claim, DbError> {
        let row = self
            .with_deadline(
                "claim",
                sqlx::query(
                    "UPDATE videos SET status = $6, \
                        attempts = CASE WHEN claim_token = $3 THEN attempts ELSE attempts + 1 END, \
                        processing_started_at = CASE WHEN claim_token = $3 THEN processing_started_at ELSE now() END, \
                        uploaded_key = CASE WHEN claim_token = $3 THEN uploaded_key ELSE NULL END, \
                        claimed_by = $2, claim_token = $3, lease_expires_at = now() + make_interval(secs => $4), \
                        updated_at = now(), failure_kind = NULL, phase = $8, progress_percent = 0 \
                     WHERE id = $1 AND generation <= $5 AND (status = $7 \
                        OR (status = $6 AND (lease_expires_at < now() OR claim_token = $3))) \
                     RETURNING original_key, attempts, interruptions, timeouts, generation",
                )
                .bind(id)
                .bind(worker)
                .bind(token)
                .bind(secs(lease))
                .bind(generation)
                .bind(Status::Processing)
                .bind(Status::Pending)
                .bind(Phase::Downloading)
                .fetch_optional(&self.pool),
            )
            .await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed(Claimed {
                original_key: row.try_get("original_key")?,
                attempts: row.try_get("attempts")?,
                interruptions: row.try_get("interruptions")?,
                timeouts: row.try_get("timeouts")?,
                token,
                generation: row.try_get("generation")?,
            }));
        }
        self.why_not_claimed(id, generation).await
    }

    /// What stopped a claim: the row's state as it is now.
    async fn why_not_claimed(&self, id: Uuid, generation: i32) -> Result<Claim, DbError> {
        let row = self
            .with_deadline(
                "look at a video",
                sqlx::query(
                    "SELECT status, error, generation, \
                        GREATEST(EXTRACT(EPOCH FROM lease_expires_at - now()), 0)::float8 AS remaining \
                     FROM videos WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool),
            )
            .await?;
        let Some(row) = row else { return Ok(Claim::Unknown) };
        let status: Status = row.try_get("status")?;
        let remaining: Option<f64> = row.try_get("remaining")?;
        if row.try_get::<i32, _>("generation")? > generation {
            return Ok(Claim::Stale);
        }
        Ok(match status {
            Status::Processed => Claim::AlreadyProcessed,
            Status::Failed => Claim::AlreadyFailed(row.try_get::<Option<String>, _>("error")?.unwrap_or_default()),
            // Between our UPDATE and this SELECT the row may have changed;
            // a short wait and another try sorts it out.
            Status::Pending | Status::Processing => {
                Claim::Busy(Duration::from_secs_f64(remaining.unwrap_or(1.0).max(1.0)))
            }
        })
    }

    /// Whether the claim `token` settled the row as `status` (a write
    /// retried after its reply was lost finds its own outcome).
    async fn settled_by(&self, id: Uuid, token: Uuid, status: Status) -> Result<bool, DbError> {
        let settled: Option<bool> = self
            .with_deadline(
                "look at a video",
                sqlx::query_scalar(
                    "SELECT settled_token IS NOT DISTINCT FROM $2 AND status = $3 FROM videos WHERE id = $1",
                )
                .bind(id)
                .bind(token)
                .bind(status)
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(settled == Some(true))
    }

    /// Extends our lease, while it has not expired. `false` means the claim
    /// is no longer ours, or may not be (it expired, and another worker or
    /// the reconciler may take the video): stop working on it.
    pub async fn renew_lease(&self, id: Uuid, token: Uuid, lease: Duration) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "renew the lease",
                sqlx::query(
                    "UPDATE videos SET lease_expires_at = now() + make_interval(secs => $3) \
                     WHERE id = $1 AND claim_token = $2 AND status = $4 AND lease_expires_at > now()",
                )
                .bind(id)
                .bind(token)
                .bind(secs(lease))
                .bind(Status::Processing)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records where the current attempt is, fenced on the claim; the
    /// percentage never goes down within an attempt. `false`: the claim is
    /// lost.
    pub async fn set_progress(&self, id: Uuid, token: Uuid, phase: Phase, percent: u8) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "record progress",
                sqlx::query(
                    "UPDATE videos SET phase = $3, progress_percent = GREATEST(progress_percent, $4) \
                     WHERE id = $1 AND claim_token = $2 AND status = $5",
                )
                .bind(id)
                .bind(token)
                .bind(phase)
                .bind(i16::from(percent.min(100)))
                .bind(Status::Processing)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that the claim's rendition is uploaded (to `key`), so that the
    /// reconciler never fails the video. `false`: the claim is lost.
    pub async fn record_upload(&self, id: Uuid, token: Uuid, key: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "record the upload",
                sqlx::query(
                    "UPDATE videos SET uploaded_key = $3, updated_at = now() \
                     WHERE id = $1 AND claim_token = $2 AND status = $4",
                )
                .bind(id)
                .bind(token)
                .bind(key)
                .bind(Status::Processing)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records success, fenced on our claim: the rendition at
    /// `processed_key` becomes the video's, in the same statement, with a
    /// new completion event to publish (the outbox). A retry after a lost
    /// reply finds the row settled by this claim and reports it recorded.
    pub async fn mark_processed(&self, id: Uuid, token: Uuid, o: &ProcessedRow) -> Result<Recorded, DbError> {
        let row = self
            .with_deadline(
                "record the rendition",
                sqlx::query(
                    "WITH old AS (SELECT processed_key FROM videos \
                        WHERE id = $1 AND claim_token = $2 AND status = $12 FOR UPDATE) \
                     UPDATE videos v SET status = $13, processed_key = $3, processed_at = now(), \
                        poster_key = $11, phase = $14, progress_percent = 100, event_id = gen_random_uuid(), \
                        event_published_at = NULL, settled_token = $2, \
                        updated_at = now(), error = NULL, failure_kind = NULL, last_error_kind = NULL, \
                        uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, \
                        source_duration_seconds = $4, source_width = $5, source_height = $6, original_bytes = $7, \
                        processed_bytes = $8, processed_duration_seconds = $9, media_info = $10, \
                        outputs = $15, cost = $16 \
                     FROM old WHERE v.id = $1 AND v.claim_token = $2 AND v.status = $12 \
                     RETURNING old.processed_key AS previous",
                )
                .bind(id)
                .bind(token)
                .bind(&o.processed_key)
                .bind(o.source_duration)
                .bind(o.source_width)
                .bind(o.source_height)
                .bind(o.original_bytes)
                .bind(o.processed_bytes)
                .bind(o.processed_duration)
                .bind(&o.media_info)
                .bind(&o.poster_key)
                .bind(Status::Processing)
                .bind(Status::Processed)
                .bind(Phase::Done)
                .bind(&o.outputs)
                .bind(&o.cost)
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(match row {
            Some(row) => Recorded::Now {
                previous: row.try_get("previous")?,
            },
            None if self.settled_by(id, token, Status::Processed).await? => Recorded::Now { previous: None },
            None => Recorded::ClaimLost,
        })
    }

    /// Records a failure, fenced on our claim, with a new completion event
    /// to publish (the outbox). A retry after a lost reply finds the row
    /// settled by this claim and reports it recorded.
    pub async fn mark_failed(
        &self,
        id: Uuid,
        token: Uuid,
        kind: FailureKind,
        error: &str,
        error_kind: &str,
    ) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "record the failure",
                sqlx::query(
                    "UPDATE videos SET status = $6, failure_kind = $3, error = $4, last_error_kind = $5, \
                        phase = $8, event_id = gen_random_uuid(), event_published_at = NULL, settled_token = $2, \
                        updated_at = now(), uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, \
                        lease_expires_at = NULL \
                     WHERE id = $1 AND status = $7 AND claim_token = $2",
                )
                .bind(id)
                .bind(token)
                .bind(kind)
                .bind(truncate(error))
                .bind(error_kind)
                .bind(Status::Failed)
                .bind(Status::Processing)
                .bind(Phase::Failed)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1 || self.settled_by(id, token, Status::Failed).await?)
    }

    /// Gives a claimed video back: `pending` again, with the reason kept in
    /// `error`; `attempt` says how the attempt counts toward giving up. A
    /// retry after a lost reply finds the row settled by this claim and
    /// reports it done.
    pub async fn release(&self, id: Uuid, token: Uuid, why: HandBack<'_>, attempt: Attempt) -> Result<bool, DbError> {
        let (uncounted, timed_out) = match attempt {
            Attempt::Counted => (false, false),
            Attempt::TimedOut => (false, true),
            Attempt::Uncounted => (true, false),
        };
        let done = self
            .with_deadline(
                "hand the video back",
                sqlx::query(
                    "UPDATE videos SET status = $7, error = COALESCE($3, error), phase = $9, \
                        progress_percent = 0, \
                        last_error_kind = COALESCE($4, last_error_kind), \
                        interruptions = interruptions + CASE WHEN $5 THEN 1 ELSE 0 END, \
                        timeouts = timeouts + CASE WHEN $6 THEN 1 ELSE 0 END, settled_token = $2, \
                        updated_at = now(), uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, \
                        lease_expires_at = NULL \
                     WHERE id = $1 AND claim_token = $2 AND status = $8",
                )
                .bind(id)
                .bind(token)
                .bind(why.reason.map(truncate))
                .bind(why.error_kind)
                .bind(uncounted)
                .bind(timed_out)
                .bind(Status::Pending)
                .bind(Status::Processing)
                .bind(Phase::Queued)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1 || self.settled_by(id, token, Status::Pending).await?)
    }

    /// Marks the completion event `event_id` of the video's recorded
    /// outcome published (the outbox's last step). `false` if the row now
    /// records another outcome.
    pub async fn record_published(&self, id: Uuid, event_id: Uuid) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "mark the event published",
                sqlx::query(
                    "UPDATE videos SET event_published_at = now() \
                     WHERE id = $1 AND event_id = $2 AND event_published_at IS NULL",
                )
                .bind(id)
                .bind(event_id)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
