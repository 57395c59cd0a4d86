//! What the reconciler does to the table: find pending videos nobody
//! touched (stranded) and claims whose worker is gone (abandoned), repair
//! each with a conditional UPDATE on the state that was read (so two
//! reconcilers never both act on a row), and hold the fleet's one
//! reconciler lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::{Db, DbError, FailureKind, Phase, Status, secs, truncate};

/// The key of the reconciler's advisory lock: one reconciler per database.
const RECONCILE_LOCK: i64 = 0x7669_6477_6f72_6b72; // "vidworkr"

/// A pending row nobody has touched for a while.
#[derive(Clone, Debug)]
pub struct Stranded {
    /// The video.
    pub id: Uuid,
    /// Its `updated_at` as seen: the repair applies only if it is unchanged.
    pub updated_at: DateTime<Utc>,
    /// Re-sends so far.
    pub resends: i32,
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
}

impl Db {
    /// Pending videos nobody has touched for `after`, oldest first.
    pub async fn stranded(&self, after: Duration, limit: i64) -> Result<Vec<Stranded>, DbError> {
        let rows = self
            .with_deadline(
                "find stranded videos",
                sqlx::query(
                    "SELECT id, updated_at, resends FROM videos \
                     WHERE status = $3 AND updated_at < now() - make_interval(secs => $1) \
                     ORDER BY updated_at LIMIT $2",
                )
                .bind(secs(after))
                .bind(limit)
                .bind(Status::Pending)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Stranded {
                    id: r.try_get("id")?,
                    updated_at: r.try_get("updated_at")?,
                    resends: r.try_get("resends")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// Counts a re-send of a stranded video, if the row is still as seen
    /// (so two reconcilers never both re-send it).
    pub async fn note_resend(&self, id: Uuid, seen: DateTime<Utc>, reason: &str) -> Result<bool, DbError> {
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
    pub async fn fail_stranded(&self, id: Uuid, seen: DateTime<Utc>, reason: &str) -> Result<bool, DbError> {
        let done = self
            .with_deadline(
                "fail a stranded video",
                sqlx::query(
                    "UPDATE videos SET status = $4, failure_kind = $5, error = $3, phase = $6, \
                        event_id = gen_random_uuid(), \
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
                    "SELECT id, claim_token, GREATEST(attempts - interruptions, 1) AS counted, uploaded_key \
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

    /// Runs `work` while holding the reconciler's advisory lock on a
    /// connection of its own, so one reconciler of the fleet works at a
    /// time. `None` when another holds it. The lock is a session lock: if
    /// the connection dies, the server releases it.
    pub async fn with_reconcile_lock<T, F, Fut>(&self, work: F) -> Result<Option<T>, DbError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        use sqlx::Connection;
        let mut conn = self
            .with_deadline("connect", sqlx::PgConnection::connect_with(&self.options))
            .await?;
        let locked: bool = self
            .with_deadline(
                "take the reconciler's lock",
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(RECONCILE_LOCK)
                    .fetch_one(&mut conn),
            )
            .await?;
        if !locked {
            let _ = conn.close().await;
            return Ok(None);
        }
        let out = work().await;
        // Closing the session releases the lock.
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.close()).await;
        Ok(Some(out))
    }
}
