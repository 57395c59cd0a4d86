//! Each transcode in a sandboxed child process, so that one upload can
//! only hurt its own job.
//!
//! In the worker's own process, a decoder that crashes takes every running
//! job with it, one that allocates without end grows until the kernel's
//! OOM killer takes the worker, and one that is exploited runs with the
//! worker's AWS role, its database password and every other job's files.
//! A child of the same binary (`vidworker transcode-job`) runs the same
//! one-pass libav pipeline instead, with an empty environment, limits the
//! kernel enforces and a sandbox ([`sandbox`]), and the worker learns how
//! it ended ([`ChildError`]): a crash counts against that video only, a
//! memory limit fails it as `over_memory`, and killing the child stops a
//! job at once.
//!
//! The worker keeps SQS, S3, PostgreSQL, the heartbeat and the settlement;
//! the child sees only its job directory and the rendition's assets. They
//! talk over the child's stdin and stdout ([`protocol`]).

mod child;
mod parent;
pub mod protocol;
pub mod sandbox;

use std::path::PathBuf;
use std::time::Duration;

pub use self::child::serve as serve_child;
use self::protocol::Failure;

/// How a worker runs each transcode.
#[derive(Clone, Debug, Default)]
pub enum Isolation {
    /// On a blocking thread of the worker's own process: no isolation. For
    /// tests of the worker library, which have no child binary.
    #[default]
    InProcess,
    /// In a sandboxed child process.
    Child(ChildSettings),
}

/// How to start a transcode child, and what confines it.
#[derive(Clone, Debug)]
pub struct ChildSettings {
    /// The program that serves the child's side ([`serve_child`]): the
    /// worker's own binary, as `/proc/self/exe`, which stays the running
    /// version even while a deploy replaces the file.
    pub program: PathBuf,
    /// Its arguments (`transcode-job`).
    pub args: Vec<String>,
    /// The memory a job may use above the program itself
    /// (`MEMORY_PER_JOB`), as an address-space limit; `None`: unlimited.
    pub memory: Option<u64>,
    /// Refuse to start, and to run a job, unless every sandbox layer is in
    /// force (`SANDBOX=required`).
    pub require_sandbox: bool,
}

/// How a transcode in a child failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The processor reported a failure; its message names the input.
    #[error("{}", .0.message)]
    Failed(Failure),
    /// The child died of a signal, panicked or exited without answering:
    /// a decoder bug the input triggers, most likely.
    #[error("{name}: the transcode crashed ({how})")]
    Crashed {
        /// The input, as `s3://bucket/key`.
        name: String,
        /// How it ended.
        how: String,
    },
    /// An allocation was refused under the job's memory limit.
    #[error("{name}: over the limit: needs more than the {} MiB a job may use (MEMORY_PER_JOB)", limit >> 20)]
    OverMemory {
        /// The input.
        name: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The rendition grew past the file-size limit.
    #[error("{name}: over the limit: the rendition grew past {} MiB", limit >> 20)]
    OutputTooLarge {
        /// The input.
        name: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The child was still running past its time limit, stuck where the
    /// processor's own deadline could not stop it, and was killed.
    #[error("{name}: timed out after {:.1} s (killed: stuck inside FFmpeg)", after.as_secs_f64())]
    Hung {
        /// The input.
        name: String,
        /// The limit.
        after: Duration,
    },
    /// The worker killed the child: the job was stopped.
    #[error("{name}: cancelled")]
    Killed {
        /// The input.
        name: String,
    },
    /// Something outside the worker stopped the child (an operator's
    /// signal, a service manager signalling every process of the unit).
    #[error("{name}: the transcode was stopped by {signal} from outside the worker")]
    Interrupted {
        /// The input.
        name: String,
        /// The signal.
        signal: String,
    },
    /// The child could not be started.
    #[error("cannot start the transcode child {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The child started but could not confine itself or read its job.
    #[error("the transcode child could not start its job: {reason}")]
    Setup {
        /// Its last log line.
        reason: String,
    },
    /// The child said something the worker does not understand.
    #[error("the transcode child broke the protocol: {0}")]
    Protocol(String),
}

impl ChildError {
    /// A short stable name for logs and metrics.
    pub fn kind(&self) -> &str {
        match self {
            ChildError::Failed(f) => &f.kind,
            ChildError::Crashed { .. } => "crashed",
            ChildError::OverMemory { .. } => "over_memory",
            ChildError::OutputTooLarge { .. } => "output_too_large",
            ChildError::Hung { .. } => "hung",
            ChildError::Killed { .. } => "cancelled",
            ChildError::Interrupted { .. } => "interrupted",
            ChildError::Spawn { .. } => "child_spawn",
            ChildError::Setup { .. } => "child_setup",
            ChildError::Protocol(_) => "child_protocol",
        }
    }
}
