//! vidworker's worker service: takes jobs from SQS, fetches the original
//! upload from S3, runs the [`processor`] on it, stores the rendition in S3
//! and records the outcome in PostgreSQL. The `vidworker` binary is built on
//! it; so are the tests that run the whole flow in-process.
//!
//! One module per stage: [`config`] (validated settings), [`job`] (the
//! message and how a job can fail), [`queue`] (SQS), [`storage`] (S3),
//! [`db`] (PostgreSQL), [`events`] (completion events, SNS/SQS),
//! [`runner`] (the loop and each job's life),
//! [`shutdown`] (signals), [`termination`] (EC2 termination notices),
//! [`telemetry`] (events, metrics, health), and [`aws`] (the clients and
//! their errors).
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

/// The commit this build comes from (see `build.rs`).
pub const COMMIT: &str = env!("VIDWORKER_COMMIT");

pub mod aws;
pub mod config;
pub mod db;
pub mod events;
pub mod job;
pub mod queue;
pub mod runner;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod termination;
