//! vidworker's worker: the service that takes jobs from SQS, fetches the
//! original upload from S3, runs the [`processor`] on it, stores the
//! rendition in S3 and records the outcome in PostgreSQL; plus the commands
//! around it (local processing, migrations, queue set-up, submitting,
//! status).
//!
//! One module per stage: [`config`] (flags and environment → settings),
//! [`job`] (the message and how a job can fail), [`queue`] (SQS),
//! [`storage`] (S3), [`db`] (PostgreSQL), [`runner`] (the loop and each
//! job's life), [`shutdown`] (signals), [`telemetry`] (logs and events);
//! [`local`] and [`admin`] hold the other commands.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use worker::{Clients, db::Db, queue::Queue, runner::Worker, shutdown::Shutdown, storage::Storage};
//!
//! let clients = Clients::from_env(Some("us-east-1"), Some("http://127.0.0.1:5000")).await;
//! let db = Db::connect_lazy("postgres://postgres@127.0.0.1:55432/vidworker", 4)?;
//! let settings = worker::config::WorkerSettings {
//!     worker_id: "example".into(),
//!     concurrency: 1,
//!     visibility_timeout: std::time::Duration::from_secs(900),
//!     max_receives: None,
//!     receive_wait: std::time::Duration::from_secs(20),
//!     shutdown_grace: std::time::Duration::from_secs(90),
//!     retry_backoff: std::time::Duration::from_secs(10),
//!     outage_patience: std::time::Duration::from_secs(3600),
//!     originals_prefix: "originals/".into(),
//!     processed_prefix: "processed/".into(),
//!     temp_dir: std::env::temp_dir(),
//!     spec: processor::RenditionSpec::default(),
//! };
//! let worker = Worker::new(
//!     settings,
//!     db,
//!     Storage::new(clients.s3.clone(), "vidworker-local"),
//!     Queue::new(clients.sqs.clone(), "http://127.0.0.1:5000/123456789012/vidworker-jobs"),
//! )
//! .start()
//! .await?;
//! let shutdown = Shutdown::new();
//! shutdown.on_signals()?;
//! worker.run(shutdown).await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;

pub mod admin;
pub mod cli;
pub mod config;
pub mod db;
pub mod job;
pub mod local;
pub mod queue;
pub mod runner;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

/// An AWS SDK error in one readable line: the service's code and message,
/// or the chain of causes for a connection failure, without the raw HTTP
/// response the SDK's own formatting includes.
pub(crate) fn describe_sdk_error<E, R>(err: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> String
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    if let SdkError::ServiceError(service) = err {
        let e = service.err();
        return match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_owned(),
            _ => e.to_string(),
        };
    }
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The AWS clients, built once and shared.
#[derive(Clone, Debug)]
pub struct Clients {
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// The region in use.
    pub region: Option<String>,
}

impl Clients {
    /// Clients configured like any AWS program: credentials, region and
    /// profile from the standard chain, `region` and `endpoint` overriding.
    pub async fn from_env(region: Option<&str>, endpoint: Option<&str>) -> Self {
        Self::build(region, endpoint, None).await
    }

    /// Clients with fixed credentials (tests, emulators).
    pub async fn with_credentials(region: &str, endpoint: &str, key_id: &str, secret: &str) -> Self {
        let creds = aws_sdk_s3::config::Credentials::new(key_id, secret, None, None, "vidworker-static");
        Self::build(Some(region), Some(endpoint), Some(creds)).await
    }

    async fn build(
        region: Option<&str>,
        endpoint: Option<&str>,
        credentials: Option<aws_sdk_s3::config::Credentials>,
    ) -> Self {
        // A stalled connection must not stall a job: fail and retry instead.
        // Attempts may take long enough for a 20 s long poll and an 8 MiB part.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_owned()));
        }
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(c) = credentials {
            loader = loader.credentials_provider(c);
        }
        let sdk = loader.load().await;
        // With a custom endpoint (moto, MinIO, LocalStack) bucket names can't
        // be host names: use path-style addressing.
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(endpoint.is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some())
            .build();
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3),
            sqs: aws_sdk_sqs::Client::new(&sdk),
            region: sdk.region().map(|r| r.to_string()),
        }
    }
}
