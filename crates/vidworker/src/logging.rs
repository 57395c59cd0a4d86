//! Logging set-up for the process: JSON lines for the service (one object
//! per event, ready for CloudWatch or any log pipeline), human-readable text
//! for a terminal. `RUST_LOG` filters as usual; the default is `info`, and
//! FFmpeg's own messages are available under the `ffmpeg` target at `debug`.
//! The libraries only emit events; installing the subscriber is the
//! binary's job.

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
