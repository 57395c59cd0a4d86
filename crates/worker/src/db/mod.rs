//! The `videos` table, one file per client of it:
//! - [`row`]: a row as read back, and the stored states;
//! - [`claim`]: what a job does (claim with a lease and a fencing token,
//!   renew, progress, record the outcome, hand back);
//! - [`repair`]: what the reconciler does (stranded and abandoned videos,
//!   its lock);
//! - [`admin`]: what operators and the platform's API do (insert, read,
//!   requeue, count).
//!
//! Queries are checked at run time and every statement is covered by the
//! integration tests; the build never needs a database. Stored states are
//! bound as [`Status`], [`Phase`] and [`FailureKind`], never written as
//! string literals.
//!
//! Every call is bounded: the server cancels a statement after
//! `statement_timeout` and gives up a lock wait after `lock_timeout`, and
//! the client gives up a call (connecting included) after [`CALL_TIMEOUT`],
//! so a database that stops answering (a network blackhole) cannot hang a
//! job, a heartbeat or a shutdown. sqlx does not expose TCP keepalives; the
//! client-side timeout is what detects a dead peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

mod admin;
mod claim;
mod repair;
mod row;
mod secret;

pub use self::admin::Requeue;
pub use self::claim::{Attempt, Claim, Claimed, HandBack, ProcessedRow, Recorded};
pub use self::repair::{Abandoned, Stranded, StrandedFacts};
pub use self::row::{Phase, Status, VideoRow};
pub use self::secret::{DatabaseSecret, url_of as url_of_secret};
use crate::failure::FailureClass;
pub use crate::failure::FailureKind;

/// The longest any one database call may take, connecting included, by
/// default (`DATABASE_CALL_TIMEOUT`). Above the server's
/// `statement_timeout` (20 s), so a statement the server runs to its end
/// is normally answered in time; a reply can still be lost after the commit
/// (a failover, a reset connection), which every write survives (see
/// [`claim`]).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The migrations in `migrations/`, embedded in the binary.
///
/// Migrations are a release step (`vidworker migrate`), and each one is
/// additive (new tables, nullable or defaulted columns, widened checks), so
/// the previous release keeps working during a roll and after a rollback.
/// That release's binary does not know the newer migrations, so applied
/// migrations missing from the binary are ignored rather than an error.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("../../migrations");
    migrator.set_ignore_missing(true);
    migrator
}

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
    /// The schema lacks migrations this release needs: they are applied
    /// before the release is rolled out, not by the workers.
    #[error(
        "database {database}: the schema lacks migration(s) {missing} that this release needs: run `vidworker migrate` (README \"Releasing\")"
    )]
    SchemaBehind {
        /// The URL without its password.
        database: String,
        /// The missing migrations, "version (description)", comma-separated.
        missing: String,
    },
    /// The database's secret (`DATABASE_SECRET_ARN`) cannot be read or
    /// used.
    #[error("database secret {arn}: {message}")]
    Secret {
        /// The secret.
        arn: String,
        /// Why.
        message: String,
        /// Secrets Manager did not answer (or throttled): worth waiting.
        outage: bool,
    },
    /// The server refused the credentials and the secret held new ones:
    /// the next connections use them.
    #[error("database {database}: {source} (the secret held new credentials: retrying with them)")]
    Rotated {
        /// The URL without its password.
        database: String,
        /// The refusal.
        source: sqlx::Error,
    },
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
            DbError::Timeout { .. } | DbError::NoAnswer { .. } | DbError::Rotated { .. } => {
                return FailureClass::Outage;
            }
            DbError::Migrate(_) | DbError::SchemaBehind { .. } => return FailureClass::Configuration,
            DbError::Secret { outage: true, .. } => return FailureClass::Outage,
            DbError::Secret { outage: false, .. } => return FailureClass::Configuration,
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

/// The database handle: a small connection pool.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    /// The URL without its password, for messages.
    label: String,
    /// The client-side deadline of one call.
    call_timeout: Duration,
    /// Where the credentials come from, when Secrets Manager holds them.
    secret: Option<Arc<DatabaseSecret>>,
    /// The URL last read from the secret, and when it was last read again
    /// after a refusal (at most one read per [`REREAD_PAUSE`]).
    reread: Arc<tokio::sync::Mutex<(String, Option<Instant>)>>,
}

/// The least time between two reads of the secret after refusals: a
/// rotation needs one; a wrong secret must not be read in a loop.
const REREAD_PAUSE: Duration = Duration::from_secs(30);

/// Whether the server refused the credentials (SQLSTATE class 28).
fn is_auth_failure(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().is_some_and(|c| c.starts_with("28")))
}

/// The connect options of `url`, with the session settings every
/// connection gets. Statements are not logged: they would carry video ids
/// at info level.
fn options_of(url: &str) -> Result<PgConnectOptions, DbError> {
    Ok(url.parse::<PgConnectOptions>()?.disable_statement_logging().options([
        ("statement_timeout", "20s"),
        ("lock_timeout", "5s"),
        ("idle_in_transaction_session_timeout", "60s"),
    ]))
}

/// Written by hand: the connect options hold the password.
impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("database", &self.label)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Db {
    /// Connects lazily: the pool opens connections on first use and reopens
    /// them after the server restarts. `sslmode`, `sslrootcert` and the
    /// other libpq parameters in the URL apply, and `PGPASSWORD` (or
    /// `~/.pgpass`) supplies a password the URL leaves out.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Self, DbError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(true)
            .connect_lazy_with(options_of(url)?);
        Ok(Db {
            pool,
            label: redact(url),
            call_timeout: CALL_TIMEOUT,
            secret: None,
            reread: Arc::default(),
        })
    }

    /// Like [`Db::connect_lazy`], with the URL made from `secret`, which is
    /// read again when the server refuses the credentials.
    pub async fn connect_with_secret(secret: DatabaseSecret, max_connections: u32) -> Result<Self, DbError> {
        let url = secret.url().await?;
        let mut db = Self::connect_lazy(&url, max_connections)?;
        db.secret = Some(Arc::new(secret));
        db.reread = Arc::new(tokio::sync::Mutex::new((url, None)));
        Ok(db)
    }

    /// After the server refused the credentials: reads the secret again
    /// and, when it holds other credentials (a rotation), uses them for new
    /// connections. At most once per [`REREAD_PAUSE`]; says whether the
    /// credentials changed.
    async fn reread_secret(&self) -> bool {
        let Some(secret) = &self.secret else {
            return false;
        };
        let mut last = self.reread.lock().await;
        if last.1.is_some_and(|t| t.elapsed() < REREAD_PAUSE) {
            return false;
        }
        last.1 = Some(Instant::now());
        let read = secret.url().await.and_then(|url| Ok((options_of(&url)?, url)));
        match read {
            Ok((_, url)) if url == last.0 => {
                tracing::warn!(
                    secret = secret.arn(),
                    "the database refused the credentials the secret still holds"
                );
                false
            }
            Ok((options, url)) => {
                self.pool.set_connect_options(options);
                last.0 = url;
                tracing::warn!(
                    event = "database_secret_reread",
                    secret = secret.arn(),
                    "the database refused the credentials; the secret holds new ones (a rotation): using them"
                );
                true
            }
            Err(e) => {
                tracing::warn!(secret = secret.arn(), error = %e, "cannot read the database secret again");
                false
            }
        }
    }

    /// The same handle with another client-side deadline per call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The URL without its password.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Runs a call with the client-side deadline.
    async fn with_deadline<T, F>(&self, what: &'static str, call: F) -> Result<T, DbError>
    where
        F: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        match tokio::time::timeout(self.call_timeout, call).await {
            // Rotated credentials: this call fails all the same, as an
            // outage (waited on, then retried), and the next connections use
            // the new credentials. The same refusal with nothing new in the
            // secret is the misconfiguration it looks like.
            Ok(Err(e)) if is_auth_failure(&e) && self.reread_secret().await => Err(DbError::Rotated {
                database: self.label.clone(),
                source: e,
            }),
            Ok(result) => Ok(result?),
            Err(_) => Err(DbError::Timeout {
                what,
                after: self.call_timeout,
            }),
        }
    }

    /// Checks, on a connection of its own so the real cause of a failure
    /// shows (not a pool timeout), that the server answers and the `videos`
    /// table exists. The message names the database.
    pub async fn check(&self) -> Result<(), DbError> {
        self.check_within(Duration::from_secs(10)).await
    }

    /// [`Db::check`] with its own deadline for each step: for readiness
    /// probes, which must answer in about a second whatever the pool is
    /// doing (its connections may all be stuck in a blackholed network).
    pub async fn check_within(&self, after: Duration) -> Result<(), DbError> {
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
        let no_answer = || DbError::NoAnswer {
            database: self.label.clone(),
            after,
        };
        let options = self.pool.connect_options();
        let mut conn = match tokio::time::timeout(after, sqlx::PgConnection::connect_with(&options)).await {
            Err(_) => return Err(no_answer()),
            Ok(Err(e)) if is_auth_failure(&e) && self.reread_secret().await => {
                tokio::time::timeout(after, sqlx::PgConnection::connect_with(&self.pool.connect_options()))
                    .await
                    .map_err(|_| no_answer())?
                    .map_err(fail)?
            }
            Ok(connected) => connected.map_err(fail)?,
        };
        tokio::time::timeout(after, sqlx::query("SELECT 1 FROM videos LIMIT 1").execute(&mut conn))
            .await
            .map_err(|_| no_answer())?
            .map_err(fail)?;
        let _ = tokio::time::timeout(after, conn.close()).await;
        Ok(())
    }

    /// Whether the database answers (for readiness).
    pub async fn ping(&self) -> Result<(), DbError> {
        self.with_deadline(
            "answer",
            sqlx::query("SELECT 1 FROM videos LIMIT 1").execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    /// Whether the table holds no video at all.
    pub async fn is_empty(&self) -> Result<bool, DbError> {
        self.with_deadline("count videos", async {
            let row = sqlx::query("SELECT NOT EXISTS (SELECT 1 FROM videos) AS empty")
                .fetch_one(&self.pool)
                .await?;
            row.try_get("empty")
        })
        .await
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), DbError> {
        migrator().run(&self.pool).await?;
        Ok(())
    }

    /// Checks that every migration this binary embeds has been applied
    /// (newer ones it does not know are fine: they are additive).
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let applied: Vec<i64> = self
            .with_deadline("read the applied migrations", async {
                match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&self.pool)
                    .await
                {
                    // No table at all: nothing applied yet.
                    Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("42P01") => Ok(Vec::new()),
                    other => other,
                }
            })
            .await?;
        let missing: Vec<String> = migrator()
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{} ({})", m.version, m.description))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DbError::SchemaBehind {
            database: self.label.clone(),
            missing: missing.join(", "),
        })
    }
}

/// How a database URL protects its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode=verify-full`: encrypted, and the server's certificate and
    /// name are checked.
    Verified,
    /// A server on this machine (loopback or a Unix socket): nothing
    /// crosses a network.
    Local,
    /// Across a network without checking who answers (`sslmode` below
    /// `verify-full`, `prefer` when it says nothing): anyone on the path can
    /// read or pose as the database.
    Unverified {
        /// The `sslmode` in force.
        sslmode: String,
    },
}

/// What `url` does about TLS.
pub fn tls_of(url: &str) -> Tls {
    let Ok(u) = url::Url::parse(url) else {
        return Tls::Unverified {
            sslmode: "unknown".into(),
        };
    };
    let param = |name: &str| {
        u.query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    };
    let host = param("host").unwrap_or_else(|| u.host_str().unwrap_or_default().to_owned());
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let sslmode = param("sslmode").unwrap_or_else(|| "prefer".into());
    if sslmode == "verify-full" {
        Tls::Verified
    } else if local {
        Tls::Local
    } else {
        Tls::Unverified { sslmode }
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
    fn only_verify_full_or_a_local_server_counts_as_safe() {
        assert_eq!(
            tls_of("postgres://a:b@db.internal/v?sslmode=verify-full"),
            Tls::Verified
        );
        assert_eq!(tls_of("postgres://a@127.0.0.1:5432/v"), Tls::Local);
        assert_eq!(tls_of("postgres://a@localhost/v?sslmode=disable"), Tls::Local);
        assert_eq!(tls_of("postgres://a@[::1]/v"), Tls::Local);
        assert_eq!(tls_of("postgres:///v?host=/var/run/postgresql"), Tls::Local);
        assert_eq!(
            tls_of("postgres://a@db.internal/v?sslmode=require"),
            Tls::Unverified {
                sslmode: "require".into()
            }
        );
        assert_eq!(
            tls_of("postgres://a@db.internal/v"),
            Tls::Unverified {
                sslmode: "prefer".into()
            }
        );
    }

    #[tokio::test]
    async fn the_handles_debug_form_shows_no_password() {
        let db = Db::connect_lazy("postgres://app:s3cret@db.internal/videos?sslmode=verify-full", 1).expect("lazy");
        let shown = format!("{db:?}");
        assert!(!shown.contains("s3cret") && shown.contains("***"), "{shown}");
    }

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
