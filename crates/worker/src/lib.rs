//! vidworker's worker service: takes jobs from SQS, fetches the original
//! upload from S3, runs the [`processor`] on it, stores the rendition in S3
//! and records the outcome in PostgreSQL. The `vidworker` binary is built on
//! it; so are the tests that run the whole flow in-process.
//!
//! One module per stage: [`config`] (validated settings), [`message`]
//! (the job message), [`queue`] (SQS), [`storage`] (S3), [`db`]
//! (PostgreSQL), [`completion`] (completion events, SNS/SQS), [`runner`]
//! (the loop and each job's life), [`shutdown`] (signals),
//! [`termination`] (EC2 termination notices), [`telemetry`] (logs,
//! metrics, health), and [`aws`] (the clients and their errors). Shared
//! vocabulary lives in leaf modules that import nothing of the crate:
//! [`failure`] (what a failure means, why a video failed).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use worker::{aws::Clients, config::WorkerSettings, db::Db, queue::Queue, runner::Runner};
//! use worker::{shutdown::Shutdown, storage::Storage};
//!
//! let clients = Clients::from_env(Some("us-east-1"), Some("http://127.0.0.1:5000")).await;
//! let db = Db::connect_lazy("postgres://postgres@127.0.0.1:55432/vidworker", 4)?;
//! let settings = WorkerSettings::default().validated()?;
//! let runner = Runner::new(
//!     settings,
//!     db,
//!     Storage::new(clients.s3.clone(), "vidworker-local"),
//!     Queue::new(clients.sqs.clone(), "http://127.0.0.1:5000/123456789012/vidworker-jobs"),
//! )
//! .start()
//! .await?;
//! let shutdown = Shutdown::new();
//! shutdown.on_signals()?;
//! runner.run(shutdown).await; // logs the totals when it stops
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

/// The commit this build comes from (see `build.rs`).
pub const COMMIT: &str = env!("VIDWORKER_COMMIT");

/// Makes an enum that lists its values in `ALL` and names them with
/// `as_str` a stored value: parsed from its name (`FromStr`), and read and
/// written by sqlx as PostgreSQL `text`, the column type the migrations'
/// CHECK constraints restrict to the same names. A name the enum does not
/// know is a decode error, never a silent default.
macro_rules! stored_text_enum {
    ($ty:ident) => {
        impl std::str::FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("{s:?} is not a {}", stringify!($ty)))
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                // `pad`, so tables can align it with `{:<10}`.
                f.pad(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $ty {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $ty {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse::<$ty>()?)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_text_enum;

pub mod aws;
pub mod completion;
pub mod config;
pub mod db;
pub mod failure;
pub mod isolate;
pub mod message;
pub mod outputs;
pub mod queue;
pub mod rollout;
pub mod runner;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod termination;
