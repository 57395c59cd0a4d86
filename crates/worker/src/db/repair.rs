//! What the reconciler does to the table: find pending videos no message
//! can still reach (stranded), claims whose worker is gone (abandoned) and
//! outcomes whose event was not published, repair each with a conditional
//! UPDATE on the state that was read (so two reconcilers never both act on
//! a row), and hold the fleet's one reconciler lease.

use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::row::select_row;
use super::{Db, DbError, FailureKind, Phase, Status, VideoRow, secs, truncate};

/// The name of the fleet's one reconciler lease.
const LEASE: &str = "reconciler";

/// How far SQS's approximate message counts may lag: a queue seen empty
/// proves gone only the messages sent at least this long before.
const COUNTS_LAG: Duration = Duration::from_secs(60);

/// What decides that no message for a pending video can still exist.
#[derive(Clone, Copy, Debug)]
pub struct StrandedFacts {
    /// Never before the row has been untouched this long
    /// (`STRANDED_AFTER`): the platform sends right after its insert.
    pub after: Duration,
    /// When the job queue was last seen empty (nothing visible, in flight
    /// or delayed), if ever: a message sent before then is gone.
    pub queue_empty_at: Option<OffsetDateTime>,
    /// The queue's message retention: a message older than that expired.
    pub retention: Duration,
}

/// A pending row nobody has touched for a while.
#[derive(Clone, Debug)]
pub struct Stranded {
    /// The video.
    pub id: Uuid,
    /// Its `updated_at` as seen: the repair applies only if it is unchanged.
    pub updated_at: OffsetDateTime,
    /// Re-sends so far.
    pub resends: i32,
    /// The row's generation, for the message sent again.
    pub generation: i32,
}

/// A processing row whose lease expired long ago.
#[derive(Clone, Debug)]
pub struct Abandoned {
    /// The video.
    pub id: Uuid,
    /// The token of the claim that was abandoned.
    pub token: Uuid,
    /// Attempts that count toward giving up.
    pub counted_attempts: i32,
    /// The claim's rendition, if it was uploaded.
    pub uploaded_key: Option<String>,
    /// The row's generation, for the message sent again.
    pub generation: i32,
}

impl Db {
    /// Pending videos no message can still reach, oldest first: untouched
    /// since before the queue was last seen empty, or for longer than the
    /// queue keeps a message; never younger than `facts.after`. A video
    /// whose message waits in a backlog is neither, however old it is.
    pub async fn stranded(&self, facts: StrandedFacts, limit: i64) -> Result<Vec<Stranded>, DbError> {
        let rows = self
            .with_deadline(
                "find stranded videos",
                sqlx::query(
                    "SELECT id, updated_at, resends, generation FROM videos \
                     WHERE status = $3 AND updated_at < now() - make_interval(secs => $1) \
                        AND (updated_at < $4 - make_interval(secs => $5) \
                             OR updated_at < now() - make_interval(secs => $6)) \
                     ORDER BY updated_at LIMIT $2",
                )
                .bind(secs(facts.after))
                .bind(limit)
                .bind(Status::Pending)
                .bind(facts.queue_empty_at)
                .bind(secs(COUNTS_LAG))
                .bind(secs(facts.retention))
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Stranded {
                    id: r.try_get("id")?,
                    updated_at: r.try_get("updated_at")?,
                    resends: r.try_get("resends")?,
                    generation: r.try_get("generation")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Counts a re-send of a stranded video, if the row is still as seen
    /// (so two reconcilers never both re-send it).
    pub async fn note_resend(&self, id: Uuid, seen: OffsetDateTime, reason: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "note a re-send",
                sqlx::query(
                    "UPDATE videos SET resends = resends + 1, resent_at = now(), resend_reason = $3, \
                        updated_at = now() \
                     WHERE id = $1 AND status = $4 AND updated_at = $2",
                )
                .bind(id)
                .bind(seen)
                .bind(reason)
                .bind(Status::Pending)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails a stranded video that was re-sent as often as allowed, if the
    /// row is still as seen.
    pub async fn fail_stranded(&self, id: Uuid, seen: OffsetDateTime, reason: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "fail a stranded video",
                sqlx::query(
                    "UPDATE videos SET status = $4, failure_kind = $5, error = $3, phase = $6, \
                        event_id = gen_random_uuid(), event_published_at = NULL, settled_token = NULL, \
                        last_error_kind = $5, updated_at = now() \
                     WHERE id = $1 AND status = $7 AND updated_at = $2",
                )
                .bind(id)
                .bind(seen)
                .bind(truncate(reason))
                .bind(Status::Failed)
                .bind(FailureKind::Stranded)
                .bind(Phase::Failed)
                .bind(Status::Pending)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Videos being processed whose lease expired more than `margin` ago:
    /// their worker is gone.
    pub async fn abandoned(&self, margin: Duration, limit: i64) -> Result<Vec<Abandoned>, DbError> {
        let rows = self
            .with_deadline(
                "find abandoned videos",
                sqlx::query(
                    "SELECT id, claim_token, GREATEST(attempts - interruptions, 1) AS counted, uploaded_key, generation \
                     FROM videos \
                     WHERE status = $3 AND lease_expires_at < now() - make_interval(secs => $1) \
                     ORDER BY lease_expires_at LIMIT $2",
                )
                .bind(secs(margin))
                .bind(limit)
                .bind(Status::Processing)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Abandoned {
                    id: r.try_get("id")?,
                    token: r.try_get("claim_token")?,
                    counted_attempts: r.try_get("counted")?,
                    uploaded_key: r.try_get("uploaded_key")?,
                    generation: r.try_get("generation")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Returns an abandoned video to `pending`, fenced on the abandoned
    /// claim's token and on its lease still being expired, and counts the
    /// re-send its message is about to get.
    pub async fn reclaim_abandoned(&self, id: Uuid, token: Uuid, reason: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "return an abandoned video",
                sqlx::query(
                    "UPDATE videos SET status = $4, error = $3, last_error_kind = 'abandoned', \
                        phase = $5, progress_percent = 0, \
                        claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, uploaded_key = NULL, \
                        resends = resends + 1, resent_at = now(), resend_reason = $3, updated_at = now() \
                     WHERE id = $1 AND claim_token = $2 AND status = $6 AND lease_expires_at < now()",
                )
                .bind(id)
                .bind(token)
                .bind(truncate(reason))
                .bind(Status::Pending)
                .bind(Phase::Queued)
                .bind(Status::Processing)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails an abandoned video on its last attempt (gave up), fenced on
    /// the abandoned claim's token, on its lease still being expired and
    /// on nothing uploaded: a claim renewed or uploaded since it was read
    /// is left alone.
    pub async fn fail_abandoned(&self, id: Uuid, token: Uuid, reason: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "fail an abandoned video",
                sqlx::query(
                    "UPDATE videos SET status = $4, failure_kind = $5, error = $3, last_error_kind = 'abandoned', \
                        phase = $6, event_id = gen_random_uuid(), event_published_at = NULL, settled_token = NULL, \
                        claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, updated_at = now() \
                     WHERE id = $1 AND claim_token = $2 AND status = $7 AND lease_expires_at < now() \
                        AND uploaded_key IS NULL",
                )
                .bind(id)
                .bind(token)
                .bind(truncate(reason))
                .bind(Status::Failed)
                .bind(FailureKind::GaveUp)
                .bind(Phase::Failed)
                .bind(Status::Processing)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Final rows whose completion event is not marked published, recorded
    /// at least `older_than` ago (the job that recorded it publishes it
    /// first), oldest first.
    pub async fn unpublished(&self, older_than: Duration, limit: i64) -> Result<Vec<VideoRow>, DbError> {
        self.with_deadline(
            "find unpublished events",
            sqlx::query_as::<_, VideoRow>(concat!(
                select_row!(),
                " WHERE event_id IS NOT NULL AND event_published_at IS NULL AND status IN ($1, $2) \
                  AND updated_at < now() - make_interval(secs => $3) ORDER BY updated_at LIMIT $4"
            ))
            .bind(Status::Processed)
            .bind(Status::Failed)
            .bind(secs(older_than))
            .bind(limit)
            .fetch_all(&self.pool),
        )
        .await
    }

    /// Takes (or renews) the fleet's reconciler lease for `ttl` on the
    /// database's clock, unless another holder's lease is unexpired.
    pub async fn take_reconciler_lease(&self, holder: &str, ttl: Duration) -> Result<bool, DbError> {
        let taken: Option<String> = self
            .with_deadline(
                "take the reconciler lease",
                sqlx::query_scalar(
                    "INSERT INTO reconciler_lease (name, holder, expires_at) \
                        VALUES ($1, $2, now() + make_interval(secs => $3)) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                        WHERE reconciler_lease.expires_at < now() OR reconciler_lease.holder = EXCLUDED.holder \
                     RETURNING holder",
                )
                .bind(LEASE)
                .bind(holder)
                .bind(secs(ttl))
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(taken.is_some())
    }

    /// Gives the lease up at once, if `holder` holds it.
    pub async fn release_reconciler_lease(&self, holder: &str) -> Result<(), DbError> {
        self.with_deadline(
            "release the reconciler lease",
            sqlx::query("UPDATE reconciler_lease SET expires_at = now() WHERE name = $1 AND holder = $2")
                .bind(LEASE)
                .bind(holder)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// Notes that the job queue was seen empty now (by the database's
    /// clock), for [`StrandedFacts::queue_empty_at`].
    pub async fn note_queue_empty(&self) -> Result<(), DbError> {
        self.with_deadline(
            "note the queue empty",
            sqlx::query("UPDATE reconciler_lease SET queue_empty_at = now() WHERE name = $1")
                .bind(LEASE)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// When the job queue was last seen empty, if ever.
    pub async fn queue_empty_at(&self) -> Result<Option<OffsetDateTime>, DbError> {
        let at: Option<Option<OffsetDateTime>> = self
            .with_deadline(
                "read when the queue was empty",
                sqlx::query_scalar("SELECT queue_empty_at FROM reconciler_lease WHERE name = $1")
                    .bind(LEASE)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(at.flatten())
    }
}
