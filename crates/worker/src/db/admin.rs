//! What operators and the platform's API do to the table: insert a pending
//! row (the platform, on upload), read rows (`vidworker status`), count
//! them, and run a video again on purpose (`vidworker requeue`, `dlq
//! redrive`).

use sqlx::Row;
use uuid::Uuid;

use super::row::select_row;
use super::{Db, DbError, Phase, Status, VideoRow};

/// What `requeue` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Pending again, with a fresh set of attempts, as this generation:
    /// send its message with it.
    Done {
        /// The row's new generation.
        generation: i32,
    },
    /// A worker holds a live lease on it.
    Busy,
    /// No such video.
    Unknown,
}

impl Db {
    /// Makes a video pending again with a fresh set of attempts and a new
    /// generation (messages of older generations are stray copies from
    /// now on), whatever its state, unless a worker holds a live lease on
    /// it. The only way a final row (processed or failed) is reopened. A
    /// processed video keeps its rendition until the new one is recorded.
    pub async fn requeue(&self, id: Uuid, reason: &str) -> Result<Requeue, DbError> {
        let generation: Option<i32> = self
            .with_deadline(
                "requeue",
                sqlx::query_scalar(
                    "UPDATE videos SET status = $3, attempts = 0, interruptions = 0, timeouts = 0, failure_kind = NULL, \
                        generation = generation + 1, settled_token = NULL, \
                        phase = $4, progress_percent = 0, \
                        error = NULL, last_error_kind = NULL, resends = 0, resent_at = now(), resend_reason = $2, \
                        uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, \
                        updated_at = now() \
                     WHERE id = $1 AND NOT (status = $5 AND lease_expires_at > now()) \
                     RETURNING generation",
                )
                .bind(id)
                .bind(reason)
                .bind(Status::Pending)
                .bind(Phase::Queued)
                .bind(Status::Processing)
                .fetch_optional(&self.pool),
            )
            .await?;
        if let Some(generation) = generation {
            return Ok(Requeue::Done { generation });
        }
        Ok(match self.get(id).await? {
            Some(_) => Requeue::Busy,
            None => Requeue::Unknown,
        })
    }

    /// Inserts a pending row, as the platform's API does on upload.
    pub async fn insert_pending(&self, id: Uuid, original_key: &str) -> Result<(), DbError> {
        self.with_deadline(
            "insert a video",
            sqlx::query("INSERT INTO videos (id, original_key) VALUES ($1, $2)")
                .bind(id)
                .bind(original_key)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// One row.
    pub async fn get(&self, id: Uuid) -> Result<Option<VideoRow>, DbError> {
        self.with_deadline(
            "read a video",
            sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool),
        )
        .await
    }

    /// The newest rows, newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<VideoRow>, DbError> {
        self.with_deadline(
            "list videos",
            sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " ORDER BY created_at DESC, id LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool),
        )
        .await
    }

    /// How many rows are in each state.
    pub async fn counts(&self) -> Result<Vec<(Status, i64)>, DbError> {
        let rows = self
            .with_deadline(
                "count videos",
                sqlx::query("SELECT status, count(*) AS n FROM videos GROUP BY status ORDER BY status")
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}
