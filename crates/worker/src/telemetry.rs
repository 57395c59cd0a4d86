//! Logging: JSON lines for the service (one object per event, ready for
//! CloudWatch or any log pipeline), human-readable text for a terminal.
//! `RUST_LOG` filters as usual; the default is `info`, and FFmpeg's own
//! messages are available under the `ffmpeg` target at `debug`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON for `run`, text for the other commands.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Installs the global subscriber. `service` picks JSON under `Auto`.
/// Logs go to stderr so stdout carries only command output.
pub fn init(format: LogFormat, service: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => service,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .compact()
            .try_init()
    };
}

/// One function per thing that happens to a job, so every occurrence logs
/// the same fields under the same message (and a log-based metric can count
/// it: the `event` field is stable).
pub mod events {
    use std::time::Duration;

    use processor::Report;
    use uuid::Uuid;

    /// A video was claimed for processing.
    pub fn claimed(video_id: Uuid, attempt: i32, original_key: &str) {
        tracing::info!(event = "claimed", %video_id, attempt, original_key, "job started");
    }

    /// A rendition was made and recorded.
    pub fn processed(video_id: Uuid, key: &str, report: &Report, took: Duration) {
        tracing::info!(
            event = "processed",
            %video_id,
            key,
            duration_s = report.duration.as_secs_f64(),
            bytes = report.bytes,
            transcode_s = report.elapsed.as_secs_f64(),
            speed = report.speed,
            job_s = took.as_secs_f64(),
            "job processed"
        );
    }

    /// A video was marked failed.
    pub fn failed(video_id: Uuid, kind: &str, reason: &str, permanent: bool) {
        tracing::warn!(event = "failed", %video_id, kind, permanent, reason, "job failed");
    }

    /// A job was handed back to be retried after `delay`.
    pub fn retry(video_id: Uuid, reason: &str, delay: Duration, receives: u32) {
        tracing::warn!(event = "retry", %video_id, receives, retry_in_s = delay.as_secs(), reason, "job will be retried");
    }

    /// A job was handed back at shutdown.
    pub fn released(video_id: Uuid) {
        tracing::info!(event = "released", %video_id, "job handed back at shutdown");
    }

    /// A duplicate delivery of a processed video.
    pub fn duplicate(video_id: Uuid) {
        tracing::info!(event = "duplicate", %video_id, "already processed; message deleted");
    }

    /// A message for a video the database does not know.
    pub fn unknown_video(video_id: Uuid) {
        tracing::warn!(event = "unknown_video", %video_id, "no such video; message deleted");
    }

    /// Another worker holds the video; look again later.
    pub fn busy(video_id: Uuid, delay: Duration) {
        tracing::info!(event = "busy", %video_id, retry_in_s = delay.as_secs(), "another worker holds this video");
    }

    /// A malformed message went to the dead-letter queue.
    pub fn dead_lettered(message_id: &str, reason: &str) {
        tracing::error!(
            event = "dead_lettered",
            message_id,
            reason,
            "malformed message moved to the dead-letter queue"
        );
    }
}
