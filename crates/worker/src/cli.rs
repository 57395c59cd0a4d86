//! The command line: every subcommand and its flags. Flags fall back to
//! environment variables (shown in `--help`), so the same binary is
//! configured by flags on a laptop and by the environment on a server.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::RenditionArgs;
use crate::telemetry::LogFormat;

/// vidworker turns video uploads into web-ready 720p H.264 renditions.
#[derive(Debug, Parser)]
#[command(name = "vidworker", version, about, long_about = None)]
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
}
