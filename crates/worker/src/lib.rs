//! vidworker's worker: the service that takes jobs from SQS, fetches the
//! original upload from S3, runs the [`processor`] on it, stores the
//! rendition in S3 and records the outcome in PostgreSQL, plus the commands
//! that process local files.
//!
//! One module per stage: [`config`] (flags and environment → settings),
//! [`telemetry`] (logs), [`local`] (the local-file commands).
//!
//! ```no_run
//! use clap::Parser;
//! let cli = worker::cli::Cli::parse_from(["vidworker", "probe", "clip.mp4"]);
//! assert!(matches!(cli.command, worker::cli::Command::Probe { .. }));
//! ```

pub mod cli;
pub mod config;
pub mod local;
pub mod telemetry;
