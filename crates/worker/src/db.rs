//! The `videos` table: claims with leases and fencing tokens, outcomes, the
//! reconciler's repairs, and what the platform's API does (insert a pending
//! row). Queries are checked at run time and every statement is covered by
//! the integration tests; the build never needs a database.
//!
//! Every call is bounded: the server cancels a statement after
//! `statement_timeout` and gives up a lock wait after `lock_timeout`, and
//! the client gives up a call (connecting included) after [`CALL_TIMEOUT`],
//! so a database that stops answering (a network blackhole) cannot hang a
//! job, a heartbeat or a shutdown. sqlx does not expose TCP keepalives; the
//! client-side timeout is what detects a dead peer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};
use uuid::Uuid;

use crate::job::FailureClass;

/// The longest any one database call may take, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The columns of a [`VideoRow`], as a literal so queries stay static strings.
macro_rules! select_row {
    () => {
        "SELECT id, status, original_key, processed_key, error, attempts, created_at, updated_at, \
         processing_started_at, processed_at, claimed_by, lease_expires_at, source_duration_seconds, source_width, \
         source_height, original_bytes, processed_bytes, processed_duration_seconds, interruptions, failure_kind, \
         last_error_kind, uploaded_key, resends, resent_at, resend_reason, poster_key, phase, progress_percent, \
         event_id FROM videos"
    };
}

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement failed, or the database could not be reached.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
    /// A call got no answer in time.
    #[error("database: no answer within {} s ({what})", after.as_secs())]
    Timeout {
        /// What was being done.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
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

impl DbError {
    /// Whether waiting could help (the server or the network is down) or
    /// the worker is misconfigured (credentials, permissions, schema, TLS).
    pub fn class(&self) -> FailureClass {
        let sql = match self {
            DbError::Query(e) | DbError::Unusable { source: e, .. } => e,
            DbError::Timeout { .. } | DbError::NoAnswer { .. } => return FailureClass::Outage,
            DbError::Migrate(_) => return FailureClass::Configuration,
        };
        match sql {
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                // 08: connection exception; 53: insufficient resources;
                // 57: operator intervention (shutdown, statement timeout);
                // 40: rollback (serialization, deadlock); 55P03: lock
                // timeout.
                if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) || code == "55P03" {
                    FailureClass::Outage
                } else {
                    // 28: authentication; 42: missing table, column or
                    // privilege; 3D: no such database; anything else from
                    // the fixed, tested statements means a schema mismatch.
                    FailureClass::Configuration
                }
            }
            sqlx::Error::Configuration(_) | sqlx::Error::Tls(_) | sqlx::Error::ColumnNotFound(_) => {
                FailureClass::Configuration
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
                FailureClass::Configuration
            }
            _ => FailureClass::Outage,
        }
    }
}

/// Why a failed video failed (`failure_kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The upload cannot be processed; retrying will not help.
    Input,
    /// Transient failures on every allowed attempt.
    GaveUp,
    /// No worker took it up, even after re-sends.
    Stranded,
}

impl FailureKind {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Input => "input",
            FailureKind::GaveUp => "gave_up",
            FailureKind::Stranded => "stranded",
        }
    }
}

/// What a claim attempt found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The video is ours until the lease expires; `token` fences our writes.
    Claimed(Claimed),
    /// Already processed: a duplicate delivery.
    AlreadyProcessed,
    /// Failed for good (its input cannot be processed): a late duplicate.
    AlreadyFailed(String),
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
    /// The kind of the previous failure, if any.
    pub last_error_kind: Option<String>,
    /// Changes with every claim.
    pub token: Uuid,
}

impl Claimed {
    /// Attempts that count toward giving up, this one included.
    pub fn counted_attempts(&self) -> i32 {
        (self.attempts - self.interruptions).max(1)
    }
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
    /// Where the poster is, if one was made.
    pub poster_key: Option<String>,
}

/// How a fenced write of an outcome went.
#[derive(Debug, PartialEq)]
pub enum Recorded {
    /// Written; the rendition it replaced, if the video had one.
    Yes {
        /// The previous `processed_key`.
        previous: Option<String>,
    },
    /// The claim was no longer ours: nothing written.
    ClaimLost,
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
    /// Attempts handed back on purpose.
    pub interruptions: i32,
    /// Why it failed: `input`, `gave_up` or `stranded`.
    pub failure_kind: Option<String>,
    /// The stable name of the last failure.
    pub last_error_kind: Option<String>,
    /// The current claim's uploaded rendition, not yet recorded.
    pub uploaded_key: Option<String>,
    /// Messages re-sent by the reconciler.
    pub resends: i32,
    /// When the last one was.
    pub resent_at: Option<DateTime<Utc>>,
    /// Why.
    pub resend_reason: Option<String>,
    /// Where the poster is.
    pub poster_key: Option<String>,
    /// Where the current attempt is: queued, downloading, transcoding,
    /// uploading, recording, done or failed.
    pub phase: String,
    /// How far the current attempt is, 0 to 100.
    pub progress_percent: i16,
    /// The id of the recorded outcome's completion event.
    pub event_id: Option<Uuid>,
}

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

/// What `requeue` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Pending again, with a fresh set of attempts.
    Done,
    /// A worker holds a live lease on it.
    Busy,
    /// No such video.
    Unknown,
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

/// The key of the reconciler's advisory lock: one reconciler per database.
const RECONCILE_LOCK: i64 = 0x7669_6477_6f72_6b72; // "vidworkr"

impl Db {
    /// Connects lazily: the pool opens connections on first use and reopens
    /// them after the server restarts. `sslmode`, `sslrootcert` and the
    /// other libpq parameters in the URL apply, and `PGPASSWORD` (or
    /// `~/.pgpass`) supplies a password the URL leaves out.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, DbError> {
        // Statements are not logged: they would carry video ids at info level.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.disable_statement_logging().options([
            ("statement_timeout", "20s"),
            ("lock_timeout", "5s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
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

    /// The URL without its password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs a call with the client-side deadline.
    async fn timed<T, F>(&self, what: &'static str, call: F) -> Result<T, DbError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(DbError::Timeout {
                what,
                after: CALL_TIMEOUT,
            }),
        }
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
        let no_answer = || DbError::NoAnswer {
            database: self.label.clone(),
            after,
        };
        let mut conn = tokio::time::timeout(after, sqlx::PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| no_answer())?
            .map_err(fail)?;
        tokio::time::timeout(after, sqlx::query("SELECT 1 FROM videos LIMIT 1").execute(&mut conn))
            .await
            .map_err(|_| no_answer())?
            .map_err(fail)?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        self.timed(
            "answer",
            sqlx::query("SELECT 1 FROM videos LIMIT 1").execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    /// Whether the table holds no video at all.
    pub async fn is_empty(&self) -> Result<bool, DbError> {
        self.timed("count videos", async {
            let row = sqlx::query("SELECT NOT EXISTS (SELECT 1 FROM videos) AS empty")
                .fetch_one(&self.pool)
                .await?;
            row.try_get("empty")
        })
        .await
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Claims a video in one conditional UPDATE: a pending video, one being
    /// processed under an expired lease, or one that gave up or was
    /// stranded (a message brought back from the dead-letter queue gets a
    /// fresh set of attempts). Two workers can never both succeed.
    pub async fn claim(&self, id: Uuid, worker: &str, lease: Duration) -> Result<Claim, DbError> {
        let token = Uuid::new_v4();
        let row = self
            .timed(
                "claim",
                sqlx::query(
                    "UPDATE videos SET status = 'processing', \
                        attempts = CASE WHEN status = 'failed' THEN 1 ELSE attempts + 1 END, \
                        interruptions = CASE WHEN status = 'failed' THEN 0 ELSE interruptions END, \
                        claimed_by = $2, claim_token = $3, lease_expires_at = now() + make_interval(secs => $4), \
                        processing_started_at = now(), updated_at = now(), uploaded_key = NULL, failure_kind = NULL, \
                        phase = 'downloading', progress_percent = 0 \
                     WHERE id = $1 AND (status = 'pending' \
                        OR (status = 'processing' AND lease_expires_at < now()) \
                        OR (status = 'failed' AND failure_kind IN ('gave_up', 'stranded'))) \
                     RETURNING original_key, attempts, interruptions, last_error_kind",
                )
                .bind(id)
                .bind(worker)
                .bind(token)
                .bind(secs(lease))
                .fetch_optional(&self.pool),
            )
            .await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed(Claimed {
                original_key: row.try_get("original_key")?,
                attempts: row.try_get("attempts")?,
                interruptions: row.try_get("interruptions")?,
                last_error_kind: row.try_get("last_error_kind")?,
                token,
            }));
        }
        let row = self
            .timed(
                "look at a video",
                sqlx::query(
                    "SELECT status, error, \
                        GREATEST(EXTRACT(EPOCH FROM lease_expires_at - now()), 0)::float8 AS remaining \
                     FROM videos WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool),
            )
            .await?;
        let Some(row) = row else { return Ok(Claim::Unknown) };
        let status: String = row.try_get("status")?;
        let remaining: Option<f64> = row.try_get("remaining")?;
        Ok(match status.as_str() {
            "processed" => Claim::AlreadyProcessed,
            "failed" => Claim::AlreadyFailed(row.try_get::<Option<String>, _>("error")?.unwrap_or_default()),
            // Between our UPDATE and this SELECT the row may have changed;
            // a short wait and another try sorts it out.
            _ => Claim::Busy(Duration::from_secs_f64(remaining.unwrap_or(1.0).max(1.0))),
        })
    }

    /// Extends our lease. `false` means the claim is no longer ours (it
    /// expired and another worker took the video): stop working on it.
    pub async fn renew_lease(&self, id: Uuid, token: Uuid, lease: Duration) -> Result<bool, DbError> {
        let done = self
            .timed(
                "renew the lease",
                sqlx::query(
                    "UPDATE videos SET lease_expires_at = now() + make_interval(secs => $3) \
                     WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
                )
                .bind(id)
                .bind(token)
                .bind(secs(lease))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records where the current attempt is, fenced on the claim; the
    /// percentage never goes down within an attempt. `false`: the claim is
    /// lost.
    pub async fn set_progress(&self, id: Uuid, token: Uuid, phase: &str, percent: u8) -> Result<bool, DbError> {
        let done = self
            .timed(
                "record progress",
                sqlx::query(
                    "UPDATE videos SET phase = $3, progress_percent = GREATEST(progress_percent, $4) \
                     WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
                )
                .bind(id)
                .bind(token)
                .bind(phase)
                .bind(i16::from(percent.min(100)))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Notes that the claim's rendition is uploaded (to `key`), so that the
    /// reconciler never fails the video. `false`: the claim is lost.
    pub async fn record_upload(&self, id: Uuid, token: Uuid, key: &str) -> Result<bool, DbError> {
        let done = self
            .timed(
                "record the upload",
                sqlx::query(
                    "UPDATE videos SET uploaded_key = $3, updated_at = now() \
                     WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
                )
                .bind(id)
                .bind(token)
                .bind(key)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records success, fenced on our claim: the rendition at
    /// `processed_key` becomes the video's, in the same statement.
    pub async fn mark_processed(&self, id: Uuid, token: Uuid, o: &Outcome) -> Result<Recorded, DbError> {
        let row = self
            .timed(
                "record the rendition",
                sqlx::query(
                    "WITH old AS (SELECT processed_key FROM videos \
                        WHERE id = $1 AND claim_token = $2 AND status = 'processing' FOR UPDATE) \
                     UPDATE videos v SET status = 'processed', processed_key = $3, processed_at = now(), \
                        poster_key = $11, phase = 'done', progress_percent = 100, event_id = gen_random_uuid(), \
                        updated_at = now(), error = NULL, failure_kind = NULL, last_error_kind = NULL, \
                        uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, \
                        source_duration_seconds = $4, source_width = $5, source_height = $6, original_bytes = $7, \
                        processed_bytes = $8, processed_duration_seconds = $9, media_info = $10 \
                     FROM old WHERE v.id = $1 AND v.claim_token = $2 AND v.status = 'processing' \
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
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(match row {
            Some(row) => Recorded::Yes {
                previous: row.try_get("previous")?,
            },
            None => Recorded::ClaimLost,
        })
    }

    /// Records a failure, fenced on our claim when `token` is given;
    /// without one, whatever the state except processed.
    pub async fn mark_failed(
        &self,
        id: Uuid,
        token: Option<Uuid>,
        kind: FailureKind,
        error: &str,
        error_kind: &str,
    ) -> Result<bool, DbError> {
        let done = self
            .timed(
                "record the failure",
                sqlx::query(
                    "UPDATE videos SET status = 'failed', failure_kind = $3, error = $4, last_error_kind = $5, \
                        phase = 'failed', event_id = gen_random_uuid(), \
                        updated_at = now(), uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, \
                        lease_expires_at = NULL \
                     WHERE id = $1 AND status <> 'processed' AND ($2::uuid IS NULL OR claim_token = $2)",
                )
                .bind(id)
                .bind(token)
                .bind(kind.as_str())
                .bind(truncate(error))
                .bind(error_kind)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a claimed video back: `pending` again, with the reason kept in
    /// `error`. An `interrupted` attempt (shutdown, configuration error)
    /// does not count toward giving up.
    pub async fn release(
        &self,
        id: Uuid,
        token: Uuid,
        error: Option<&str>,
        error_kind: Option<&str>,
        interrupted: bool,
    ) -> Result<bool, DbError> {
        let done = self
            .timed(
                "hand the video back",
                sqlx::query(
                    "UPDATE videos SET status = 'pending', error = COALESCE($3, error), phase = 'queued', \
                        progress_percent = 0, \
                        last_error_kind = COALESCE($4, last_error_kind), \
                        interruptions = interruptions + CASE WHEN $5 THEN 1 ELSE 0 END, \
                        updated_at = now(), uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, \
                        lease_expires_at = NULL \
                     WHERE id = $1 AND claim_token = $2 AND status = 'processing'",
                )
                .bind(id)
                .bind(token)
                .bind(error.map(truncate))
                .bind(error_kind)
                .bind(interrupted)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pending videos nobody has touched for `after`, oldest first.
    pub async fn stranded(&self, after: Duration, limit: i64) -> Result<Vec<Stranded>, DbError> {
        let rows = self
            .timed(
                "find stranded videos",
                sqlx::query(
                    "SELECT id, updated_at, resends FROM videos \
                     WHERE status = 'pending' AND updated_at < now() - make_interval(secs => $1) \
                     ORDER BY updated_at LIMIT $2",
                )
                .bind(secs(after))
                .bind(limit)
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
            .timed(
                "note a re-send",
                sqlx::query(
                    "UPDATE videos SET resends = resends + 1, resent_at = now(), resend_reason = $3, \
                        updated_at = now() \
                     WHERE id = $1 AND status = 'pending' AND updated_at = $2",
                )
                .bind(id)
                .bind(seen)
                .bind(reason)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails a stranded video that was re-sent as often as allowed, if the
    /// row is still as seen.
    pub async fn fail_stranded(&self, id: Uuid, seen: DateTime<Utc>, reason: &str) -> Result<bool, DbError> {
        let done = self
            .timed(
                "fail a stranded video",
                sqlx::query(
                    "UPDATE videos SET status = 'failed', failure_kind = 'stranded', error = $3, phase = 'failed', \
                        event_id = gen_random_uuid(), \
                        last_error_kind = 'stranded', updated_at = now() \
                     WHERE id = $1 AND status = 'pending' AND updated_at = $2",
                )
                .bind(id)
                .bind(seen)
                .bind(truncate(reason))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Videos being processed whose lease expired more than `margin` ago:
    /// their worker is gone.
    pub async fn abandoned(&self, margin: Duration, limit: i64) -> Result<Vec<Abandoned>, DbError> {
        let rows = self
            .timed(
                "find abandoned videos",
                sqlx::query(
                    "SELECT id, claim_token, GREATEST(attempts - interruptions, 1) AS counted, uploaded_key \
                     FROM videos \
                     WHERE status = 'processing' AND lease_expires_at < now() - make_interval(secs => $1) \
                     ORDER BY lease_expires_at LIMIT $2",
                )
                .bind(secs(margin))
                .bind(limit)
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
            .timed(
                "return an abandoned video",
                sqlx::query(
                    "UPDATE videos SET status = 'pending', error = $3, last_error_kind = 'abandoned', \
                        phase = 'queued', progress_percent = 0, \
                        claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, uploaded_key = NULL, \
                        resends = resends + 1, resent_at = now(), resend_reason = $3, updated_at = now() \
                     WHERE id = $1 AND claim_token = $2 AND status = 'processing' AND lease_expires_at < now()",
                )
                .bind(id)
                .bind(token)
                .bind(truncate(reason))
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
            .timed("connect", sqlx::PgConnection::connect_with(&self.options))
            .await?;
        let locked: bool = self
            .timed(
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

    /// Makes a video pending again with a fresh set of attempts, whatever
    /// its state, unless a worker holds a live lease on it. A processed
    /// video keeps its rendition until the new one is recorded.
    pub async fn requeue(&self, id: Uuid, reason: &str) -> Result<Requeue, DbError> {
        let done = self
            .timed(
                "requeue",
                sqlx::query(
                    "UPDATE videos SET status = 'pending', attempts = 0, interruptions = 0, failure_kind = NULL, \
                        phase = 'queued', progress_percent = 0, \
                        error = NULL, last_error_kind = NULL, resends = 0, resent_at = now(), resend_reason = $2, \
                        uploaded_key = NULL, claimed_by = NULL, claim_token = NULL, lease_expires_at = NULL, \
                        updated_at = now() \
                     WHERE id = $1 AND NOT (status = 'processing' AND lease_expires_at > now())",
                )
                .bind(id)
                .bind(reason)
                .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Requeue::Done);
        }
        Ok(match self.get(id).await? {
            Some(_) => Requeue::Busy,
            None => Requeue::Unknown,
        })
    }

    /// Inserts a pending row, as the platform's API does on upload.
    pub async fn insert_pending(&self, id: Uuid, original_key: &str) -> Result<(), DbError> {
        self.timed(
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
        self.timed(
            "read a video",
            sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool),
        )
        .await
    }

    /// The newest rows, newest first.
    pub async fn list(&self, limit: i64) -> Result<Vec<VideoRow>, DbError> {
        self.timed(
            "list videos",
            sqlx::query_as::<_, VideoRow>(concat!(select_row!(), " ORDER BY created_at DESC, id LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool),
        )
        .await
    }

    /// How many rows are in each state.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, DbError> {
        let rows = self
            .timed(
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

/// A database URL with any password replaced, for logs and errors: in the
/// user-info part and in a `password` query parameter.
pub fn redact(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/videos"),
            "postgres://app:***@db:5432/videos"
        );
        let r = redact("postgres://app@db/videos?sslmode=require&password=s3cret");
        assert!(
            !r.contains("s3cret") && r.contains("password=***") && r.contains("sslmode=require"),
            "{r}"
        );
        assert_eq!(redact("not a url"), "not a url");
    }
}
