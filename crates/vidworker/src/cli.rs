//! The command line: every subcommand and its flags. Flags fall back to
//! environment variables (shown in `--help`), so the same binary is
//! configured by flags on a laptop and by the environment on a server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use worker::queue::QueueSettings;

use crate::flags::{AwsArgs, DbArgs, RenditionArgs, RunArgs, WorkerArgs};
use crate::logging::LogFormat;

/// `0.1.0 (commit 1a2b3c4d5e6f)`.
pub static VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} (commit {})", env!("CARGO_PKG_VERSION"), worker::COMMIT));

/// `--version`: [`VERSION`] and the FFmpeg libraries loaded at run time
/// (what a security advisory asks about).
pub static LONG_VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let libs: Vec<String> = processor::library_versions()
        .into_iter()
        .map(|(name, version)| format!("{name} {version}"))
        .collect();
    format!("{}\nFFmpeg libraries loaded: {}", *VERSION, libs.join(", "))
});

/// vidworker turns video uploads into web-ready 720p H.264 renditions.
#[derive(Debug, Parser)]
#[command(name = "vidworker", version = VERSION.as_str(), long_version = LONG_VERSION.as_str(), about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Process one local video into a rendition.
    Process {
        /// The video to process.
        input: PathBuf,
        /// Where to write the rendition [default: processed/<input stem>.mp4].
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        rendition: RenditionArgs,
    },
    /// Show what a video file contains.
    Probe {
        /// The video to inspect.
        input: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the worker: take jobs from SQS until SIGTERM.
    Run(RunArgs),
    /// Apply the database migrations.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create the bucket, the queue and its dead-letter queue (production
    /// settings; safe to run again).
    QueueInit {
        #[command(flatten)]
        aws: AwsArgs,
        /// Receives before SQS moves a message to the dead-letter queue.
        #[arg(long, default_value_t = QueueSettings::default().max_receive_count)]
        max_receive_count: u32,
        /// Visibility timeout of the queue, in seconds.
        #[arg(long, default_value_t = QueueSettings::default().visibility_timeout.as_secs())]
        visibility_timeout: u64,
    },
    /// Do what the platform's API does with uploads: store each file under
    /// originals/, insert a pending row, send a job message. Prints the ids.
    Submit {
        /// Videos to submit.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        aws: AwsArgs,
        /// Key prefix of originals.
        #[arg(long, env = "ORIGINALS_PREFIX", default_value_t = worker::config::WorkerSettings::default().originals_prefix)]
        originals_prefix: String,
    },
    /// Repair stranded and abandoned videos once (what `run` does every
    /// minute), and tidy the dead-letter queue. Safe beside running workers.
    Reconcile {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        aws: AwsArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Look at or redrive the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Run videos again on purpose (e.g. after a rendition change): each
    /// becomes pending with a fresh set of attempts and gets a new message.
    /// A processed video keeps its rendition until the new one is recorded.
    Requeue {
        /// The videos.
        #[arg(required = true)]
        ids: Vec<uuid::Uuid>,
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        aws: AwsArgs,
    },
    /// Run one transcode for a worker: the sandboxed child `run` starts per
    /// job, speaking the worker's protocol on stdin and stdout.
    #[command(name = "transcode-job", hide = true)]
    TranscodeJob,
    /// Ask a running worker's /healthz (for a container HEALTHCHECK): exit
    /// 0 when healthy.
    Healthcheck {
        /// The worker's metrics address.
        #[arg(long, env = "METRICS_ADDR", default_value = crate::flags::DEFAULT_METRICS_ADDR)]
        metrics_addr: std::net::SocketAddr,
    },
    /// Check the worker's settings and everything it talks to (database,
    /// schema, queue and redrive policy, bucket reads and writes, events,
    /// sandbox) without taking a job: one line per check, exit 1 on any
    /// problem.
    Check {
        /// Read the settings from this file too (KEY=VALUE lines, as the
        /// service's EnvironmentFile), e.g. /etc/vidworker/env.
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Tell CloudFormation whether this instance works: wait for the
    /// worker's /readyz, then signal SUCCESS, or FAILURE with what it said
    /// (the instance's set-up script runs this after starting the service).
    Signal {
        /// The stack.
        #[arg(long, env = "CFN_STACK_NAME")]
        stack: String,
        /// The resource waiting for the signal.
        #[arg(long, env = "CFN_RESOURCE", default_value = "WorkerGroup")]
        resource: String,
        /// Seconds to wait for /readyz before signalling FAILURE.
        #[arg(long, default_value_t = 300, value_name = "SECONDS")]
        wait: u64,
        /// Signal FAILURE at once, with this reason.
        #[arg(long, value_name = "REASON", conflicts_with = "wait")]
        failure: Option<String>,
        /// The worker's metrics address.
        #[arg(long, env = "METRICS_ADDR", default_value = crate::flags::DEFAULT_METRICS_ADDR)]
        metrics_addr: std::net::SocketAddr,
        /// AWS region.
        #[arg(long, env = "AWS_REGION")]
        region: Option<String>,
    },
    /// Mark this instance unhealthy in its Auto Scaling group, which
    /// replaces it (systemd's OnFailure= runs this when the service has
    /// failed for good).
    MarkUnhealthy {
        /// AWS region.
        #[arg(long, env = "AWS_REGION")]
        region: Option<String>,
    },
    /// Print shell completions to stdout (the .deb installs bash's, zsh's
    /// and fish's).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout (`vidworker man | man -l -`),
    /// or write it and one page per command (vidworker-run.1, ...) to a
    /// directory.
    Man {
        /// Write vidworker.1 and the commands' pages here.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show the videos and their states.
    Status {
        /// One video in full.
        id: Option<uuid::Uuid>,
        /// How many of the newest rows to list.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// What to do with the dead-letter queue.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// How many messages it holds.
    Stats,
    /// Show up to N messages with their video's state (they stay queued).
    Peek {
        /// How many.
        #[arg(default_value_t = 10)]
        n: usize,
    },
    /// Send messages back to the job queue, driven by each video's row:
    /// processed → the dead letter is deleted; failed because of its input
    /// → left; otherwise the video is made pending and re-sent.
    Redrive {
        /// Every message.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only the messages of these videos.
        #[arg(required_unless_present = "all")]
        ids: Vec<uuid::Uuid>,
    },
}
