//! The `videos` table: claims with leases, outcomes, and what the platform's
//! API does (insert a pending row). Queries are checked at run time and every
//! statement is covered by the integration tests; the build never needs a
//! database.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use uuid::Uuid;

/// The columns of a [`VideoRow`], as a literal so queries stay static strings.
macro_rules! select_row {
    () => {
        "SELECT id, status, original_key, processed_key, error, attempts, created_at, updated_at, \
         processing_started_at, processed_at, claimed_by, lease_expires_at, source_duration_seconds, source_width, \
         source_height, original_bytes, processed_bytes, processed_duration_seconds FROM videos"
    };
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A database failure. Every one is transient for a job: the row is still
/// there and the next attempt may reach it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or a statement failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database did not answer a check in time.
    #[error("database {database}: no answer within {} s", after.as_secs())]
    NoAnswer {
        /// The URL without its password.
        database: String,
        /// How long the check waited.
        after: Duration,
    },
    /// The database answered a check with an error; `hint` says what to do.
    #[error("database {database}: {source}{hint}")]
    Unusable {
        /// The URL without its password.
        database: String,
        /// What the server or driver said.
        source: sqlx::Error,
        /// A suggestion, starting with a separator, or empty.
        hint: &'static str,
    },
}

/// What a claim attempt found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The video is ours until the lease expires; `token` fences our writes.
    Claimed {
        /// The original's S3 key, from the row.
        original_key: String,
        /// Attempts so far, this one included.
        attempts: i32,
        /// Changes with every claim.
        token: Uuid,
    },
    /// Already processed: a duplicate delivery.
    AlreadyProcessed,
    /// Another worker holds an unexpired lease for this long.
    Busy(Duration),
    /// No such video.
    Unknown,
}

/// What the worker learnt about a processed video.
#[derive(Clone, Debug)]
pub struct Outcome {
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
}

/// One row, as `vidworker status` shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct VideoRow {
    /// The video's id.
    pub id: Uuid,
    /// Its state.
    pub status: String,
    /// Where the original is.
    pub original_key: String,
    /// Where the rendition is.
    pub processed_key: Option<String>,
    /// The last failure.
    pub error: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When the last attempt started.
    pub processing_started_at: Option<DateTime<Utc>>,
    /// When it was processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// Who holds the claim.
    pub claimed_by: Option<String>,
    /// Until when.
    pub lease_expires_at: Option<DateTime<Utc>>,
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
}

/// The database handle: a small connection pool.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
    options: PgConnectOptions,
    /// The URL without its password, for messages.
    label: String,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Db {
    /// Connects lazily: the pool opens connections on first use and reopens
    /// them after the server restarts.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, DbError> {
        // Statements are not logged: they would carry video ids at info level.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(true)
            .connect_lazy_with(options.clone());
        Ok(Db {
            pool,
            options,
            label: redact(url),
        })
    }

    /// Checks, on a connection of its own so the real cause of a failure
    /// shows (not a pool timeout), that the server answers and the `videos`
    /// table exists. The message names the database.
    pub async fn check(&self) -> Result<(), DbError> {
        use sqlx::Connection;
        let fail = |e: sqlx::Error| {
            let hint = match &e {
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => {
                    " (run `vidworker migrate` or start with --migrate)"
                }
                _ => "",
            };
            DbError::Unusable {
                database: self.label.clone(),
                source: e,
                hint,
            }
        };
        let after = Duration::from_secs(10);
        let mut conn = tokio::time::timeout(after, sqlx::PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| DbError::NoAnswer {
                database: self.label.clone(),
                after,
            })?
            .map_err(fail)?;
        sqlx::query("SELECT 1 FROM videos LIMIT 1")
            .execute(&mut conn)
            .await
            .map_err(fail)?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Claims a video in one conditional UPDATE: only a pending or failed
    /// video, or one being processed under an expired lease. Two workers can
    /// never both succeed.
    pub async fn claim(&self, id: Uuid, worker: &str, lease: Duration) -> Result<Claim, DbError> {
        let token = Uuid::new_v4();
        let row = sqlx::query(
            "UPDATE videos SET status = 'processing', attempts = attempts + 1, claimed_by = $2, \
                    claim_token = $3, lease_expires_at = now() + make_interval(secs => $4), \
                    processing_started_at = now(), updated_at = now() \
             WHERE id = $1 AND (status IN ('pending', 'failed') \
                    OR (status = 'processing' AND lease_expires_at < now())) \
             RETURNING original_key, attempts",
        )
        .bind(id)
        .bind(worker)
        .bind(token)
        .bind(secs(lease))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed {
                original_key: row.try_get("original_key")?,
                attempts: row.try_get("attempts")?,
                token,
            });
        }
        let row = sqlx::query(
            "SELECT status, GREATEST(EXTRACT(EPOCH FROM lease_expires_at - now()), 0)::float8 AS remaining \
             FROM videos WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(Claim::Unknown) };
        let status: String = row.try_get("status")?;
        let remaining: Option<f64> = row.try_get("remaining")?;
        Ok(match status.as_str() {
            "processed" => Claim::AlreadyProcessed,
            // Between our UPDATE and this SELECT the row may have changed;
            // a short wait and another try sorts it out.
            _ => Claim::Busy(Duration::from_secs_f64(remaining.unwrap_or(1.0).max(1.0))),
        })
    }

    /// Extends our lease. `false` means the claim is no longer ours (it
    /// expired and another worker took the video): stop working on it.
    pub async fn renew_lease(&self, id: Uuid, token: Uuid, lease: Duration) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE videos SET lease_expires_at = now() + make_interval(secs => $3) \
             WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(token)
        .bind(secs(lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records success. `false` means the claim was lost meanwhile; the
    /// worker that holds it now records its own outcome.
    pub async fn mark_processed(&self, id: Uuid, token: Uuid, o: &Outcome) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE videos SET status = 'processed', processed_key = $3, processed_at = now(), updated_at = now(), \
                    error = NULL, claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, \
                    source_duration_seconds = $4, source_width = $5, source_height = $6, original_bytes = $7, \
                    processed_bytes = $8, processed_duration_seconds = $9, media_info = $10 \
             WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
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
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failure that retrying will not fix, or a transient one on
    /// the last allowed attempt. With a token, only if the claim is ours;
    /// without, whatever the state (a video whose original is missing was
    /// never claimed), except that a processed video stays processed.
    pub async fn mark_failed(&self, id: Uuid, token: Option<Uuid>, error: &str) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE videos SET status = 'failed', error = $3, updated_at = now(), \
                    claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND status <> 'processed' AND ($2::uuid IS NULL OR claim_token = $2)",
        )
        .bind(id)
        .bind(token)
        .bind(truncate(error))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed video back (a transient failure that will be retried,
    /// or a shutdown): `pending` again with the reason kept in `error`.
    pub async fn release(&self, id: Uuid, token: Uuid, error: Option<&str>) -> Result<bool, DbError> {
        let done = sqlx::query(
            "UPDATE videos SET status = 'pending', error = COALESCE($3, error), updated_at = now(), \
                    claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
        )
        .bind(id)
        .bind(token)
        .bind(error.map(truncate))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks failed the videos whose worker vanished (its lease expired more
    /// than `after` ago) and whose message no longer comes back, for
    /// example because it went to the dead-letter queue on the receive
    /// after a killed last attempt. If the message does come back later,
    /// the video is claimed again from `failed`. Returns how many rows.
    pub async fn sweep_abandoned(&self, after: Duration) -> Result<u64, DbError> {
        let done = sqlx::query(
            "UPDATE videos SET status = 'failed', updated_at = now(), \
                    error = 'abandoned: the worker processing it stopped and no retry came (see the dead-letter queue)', \
                    claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL \
             WHERE status = 'processing' AND lease_expires_at < now() - make_interval(secs => $1)",
        )
        .bind(secs(after))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Inserts a pending row, as the platform's API does on upload.
    pub async fn insert_pending(&self, id: Uuid, original_key: &str) -> Result<(), DbError> {
        sqlx::query("INSERT INTO videos (id, original_key) VALUES ($1, $2)")
            .bind(id)
            .bind(original_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// One row.
    pub async fn get(&self, id: Uuid) -> Result<Option<VideoRow>, DbError> {
        Ok(sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The newest rows, newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<VideoRow>, DbError> {
        Ok(
            sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " ORDER BY created_at DESC, id LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// How many rows are in each state.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM videos GROUP BY status ORDER BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// The pool, for tests and tools.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Errors are for people; keep them to a readable size.
fn truncate(s: &str) -> String {
    const MAX: usize = 2000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
