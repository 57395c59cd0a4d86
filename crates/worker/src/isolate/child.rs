//! The child's side: read the request, confine itself, transcode, answer.
//! Runs on the process's only thread until the processor starts its own,
//! which inherit every layer.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use processor::{CancelFlag, ErrorClass, Progress};
use rustix::process::Signal;

use super::protocol::{self, Failure, Job, Reply, Request};
use super::sandbox;

/// Exit code of a child that could not start its job (a bad request, a
/// sandbox that could not be applied); its reason is on stderr.
pub const CANNOT_START: u8 = 2;

/// The shortest interval between two progress frames.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// The child's `main`: serves one request from stdin on stdout. The
/// binary's hidden `transcode-job` command calls it.
pub fn serve() -> ExitCode {
    match serve_request() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the transcode child cannot go on");
            ExitCode::from(CANNOT_START)
        }
    }
}

fn serve_request() -> io::Result<()> {
    // Dies with its parent: a worker killed with SIGKILL leaves no
    // transcode running. (The kernel ties it to the thread that spawned
    // the child: a tokio worker thread, which lives as long as the worker's
    // runtime.)
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    let request: Request =
        protocol::read_frame(&mut io::stdin().lock())?.ok_or_else(|| io::Error::other("no request on stdin"))?;
    if request.version != protocol::VERSION {
        return Err(io::Error::other(format!(
            "the worker speaks protocol {}, this child {}",
            request.version,
            protocol::VERSION
        )));
    }
    let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get().unsigned_abs());
    if parent != request.parent {
        return Err(io::Error::other("the worker is gone"));
    }
    let layers = sandbox::apply(&request.policy).map_err(io::Error::other)?;
    if request.require_sandbox && !layers.complete() {
        return Err(io::Error::other(format!(
            "SANDBOX=required, but only these layers are in force: {}",
            layers.describe()
        )));
    }
    let mut out = BufWriter::new(io::stdout().lock());
    protocol::write_frame(
        &mut out,
        &Reply::Started {
            version: protocol::VERSION,
            layers,
        },
    )?;
    match request.job {
        Some(job) => transcode(&job, &mut out),
        None => Ok(()),
    }
}

/// Runs the job and writes its progress and its final frame.
fn transcode(job: &Job, out: &mut impl Write) -> io::Result<()> {
    // Raised when the parent stops reading: no one wants the rest.
    let cancel = CancelFlag::new();
    let mut last = None::<Instant>;
    let mut pipe_error = None;
    let result = processor::process(
        &job.input,
        &job.output,
        &job.spec,
        |p: Progress| {
            if last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            last = Some(Instant::now());
            if let Err(e) = protocol::write_frame(out, &Reply::Progress(p)) {
                pipe_error.get_or_insert(e);
                cancel.cancel();
            }
        },
        &cancel,
    );
    if let Some(e) = pipe_error {
        return Err(e);
    }
    tracing::debug!(peak = sandbox::peak_address_space(), "address space of the transcode");
    let reply = match result {
        Ok(report) => Reply::Done {
            report: Box::new(report),
            usage: sandbox::usage(),
        },
        Err(e) => Reply::Failed(Failure {
            class: e.class(),
            kind: e.kind().to_owned(),
            message: e.display_as(&job.name),
            out_of_memory: e.is_out_of_memory()
                || (e.class() == ErrorClass::Environment && sandbox::memory_exhausted()),
        }),
    };
    protocol::write_frame(out, &reply)
}
