//! The worker's side: start a child, hand it the job, follow its progress,
//! and learn how it ended. Killing the child is the hard stop: for a
//! cancelled job, a job past its time limit, and a shutdown past its grace
//! period.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use processor::{Card, CardContent, Image, Progress, RenditionSpec, Report};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::child::CANNOT_START;
use super::protocol::{self, Failure, Job, Reply, Request};
use super::sandbox::{Layers, Policy, Usage};
use super::{ChildError, ChildSettings};

/// How long after the job's time limit a child that has not answered is
/// killed: the processor's own deadline stops a job within a frame, so a
/// child still running is stuck inside a decoder call.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);
/// How long a child that sent its last frame may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// The largest file a child may write: a 35 s rendition at 50 Mb/s is
/// about 220 MB.
const MAX_FILE: u64 = 1 << 30;
/// The most files a child may have open: it opens its input, the assets,
/// the rendition and the poster.
const MAX_OPEN_FILES: u64 = 64;
/// The child's last stderr lines kept to explain its end.
const TAIL_LINES: usize = 16;
/// What Rust's allocator prints before it aborts on a refused allocation.
const ALLOCATION_FAILED: &str = "memory allocation of ";

/// How a child ended, before it is judged.
enum Ending {
    /// Its last frame.
    Answered(Result<(Box<Report>, Usage), Failure>),
    /// It closed its stdout without one.
    Silent,
}

impl ChildSettings {
    /// What a child may touch: the rendition's assets, its job directory.
    fn policy(&self, spec: &RenditionSpec, job_dir: Option<&Path>) -> Policy {
        Policy {
            read: assets(spec),
            write: job_dir.map(Path::to_path_buf).into_iter().collect(),
            memory: self.memory,
            file_size: MAX_FILE,
            open_files: MAX_OPEN_FILES,
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            // No credentials, no DATABASE_URL: only the log filter, and
            // glibc's malloc told to keep one arena, so the address-space
            // limit counts memory rather than 64 MiB reservations per
            // thread (a 4K60 job: 200 MB above the program with one arena,
            // 333 MB with two; the speed is measured in the README).
            .env_clear()
            .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A terminal's Ctrl-C reaches the worker, which decides.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd
    }

    /// Starts a child that applies the sandbox, says which layers are in
    /// force and exits: the worker's start-up check that children start
    /// at all, and what they are confined by.
    pub async fn check(&self, spec: &RenditionSpec) -> Result<Layers, ChildError> {
        let request = self.request(spec, None, None);
        let mut running = Running::start(self, &request).await?;
        let layers = running.started().await?;
        let status = running.exit().await?;
        match layers {
            Some(layers) if status.success() => Ok(layers),
            _ => Err(ended_badly(status, &running.tail(), "the sandbox check")),
        }
    }

    fn request(&self, spec: &RenditionSpec, job: Option<Job>, job_dir: Option<&Path>) -> Request {
        Request {
            version: protocol::VERSION,
            parent: std::process::id(),
            policy: self.policy(spec, job_dir),
            require_sandbox: self.require_sandbox,
            job,
        }
    }

    /// Runs `job` in a child confined to `job_dir`, reporting progress,
    /// until it ends or `stop` is cancelled (the child is then killed);
    /// returns the processor's report and what the child used.
    pub(crate) async fn transcode(
        &self,
        job: Job,
        job_dir: &Path,
        mut on_progress: impl FnMut(Progress),
        stop: &CancellationToken,
    ) -> Result<(Report, Usage), ChildError> {
        let name = job.name.clone();
        let limit = job.spec.limits.timeout;
        let request = self.request(&job.spec.clone(), Some(job), Some(job_dir));
        let mut running = Running::start(self, &request).await?;
        // Info, so an operator can match a kernel message (an OOM kill, a
        // seccomp denial) to its job.
        tracing::info!(pid = running.pid, "transcoding in a child process");
        let deadline = async {
            match limit {
                Some(limit) => tokio::time::sleep(limit + HARD_STOP_MARGIN).await,
                None => std::future::pending().await,
            }
        };
        let ending = tokio::select! {
            ending = running.follow(&mut on_progress) => ending,
            () = stop.cancelled() => {
                running.kill().await;
                return Err(ChildError::Killed { name });
            }
            () = deadline => {
                running.kill().await;
                return Err(ChildError::Hung { name, after: limit.unwrap_or_default() });
            }
        };
        let status = running.exit().await;
        let tail = running.tail();
        match (ending?, status?) {
            (Ending::Answered(Ok((report, usage))), _) => Ok((*report, usage)),
            (Ending::Answered(Err(failure)), _) if failure.out_of_memory => Err(ChildError::OverMemory {
                name,
                limit: self.memory.unwrap_or_default(),
            }),
            (Ending::Answered(Err(failure)), _) => Err(ChildError::Failed(failure)),
            (Ending::Silent, status) => Err(judge(status, &tail, &name, self.memory)),
        }
    }
}

/// The files of the rendition's assets, which a child may read.
fn assets(spec: &RenditionSpec) -> Vec<PathBuf> {
    let image = |i: &Image| match i {
        Image::Logo => None,
        Image::Png(path) => Some(path.clone()),
    };
    let card = |c: &Card| match &c.content {
        CardContent::Image(i) => image(i),
        CardContent::Clip(path) => Some(path.clone()),
    };
    let watermark = spec.watermark.as_ref().and_then(|w| image(&w.image));
    [
        watermark,
        spec.intro.as_ref().and_then(card),
        spec.outro.as_ref().and_then(card),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A child that did not answer: what its end says about the input.
fn judge(status: ExitStatus, tail: &[String], name: &str, memory: Option<u64>) -> ChildError {
    let name = name.to_owned();
    let allocation_failed = tail.iter().any(|l| l.contains(ALLOCATION_FAILED));
    match status.signal() {
        Some(libc::SIGXFSZ) => ChildError::OutputTooLarge { name, limit: MAX_FILE },
        Some(libc::SIGABRT) if allocation_failed => ChildError::OverMemory {
            name,
            limit: memory.unwrap_or_default(),
        },
        Some(sig @ (libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGQUIT)) => ChildError::Interrupted {
            name,
            signal: signal_name(sig),
        },
        Some(sig) => ChildError::Crashed {
            name,
            how: format!("killed by {}", signal_name(sig)),
        },
        None => ended_badly(status, tail, &name),
    }
}

/// A child that exited with an error code instead of answering.
fn ended_badly(status: ExitStatus, tail: &[String], name: &str) -> ChildError {
    let last = tail.last().cloned().unwrap_or_default();
    match status.code() {
        Some(code) if code == i32::from(CANNOT_START) => ChildError::Setup { reason: last },
        Some(code) => ChildError::Crashed {
            name: name.to_owned(),
            how: if last.is_empty() {
                format!("exited with {code}")
            } else {
                format!("exited with {code}: {last}")
            },
        },
        None => ChildError::Crashed {
            name: name.to_owned(),
            how: format!("ended with {status}"),
        },
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGXCPU => "SIGXCPU",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

/// A started child and the task relaying its stderr.
struct Running {
    child: Child,
    stdout: ChildStdout,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Until it is awaited.
    relay: Option<tokio::task::JoinHandle<()>>,
    program: PathBuf,
    pid: u32,
}

impl Running {
    /// Spawns the child and writes `request` to it.
    async fn start(settings: &ChildSettings, request: &Request) -> Result<Running, ChildError> {
        let program = settings.program.clone();
        let spawn_error = |source| ChildError::Spawn {
            program: program.clone(),
            source,
        };
        let mut child = settings.command().spawn().map_err(spawn_error)?;
        let pid = child.id().unwrap_or_default();
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(spawn_error(std::io::Error::other("the child's pipes are missing")));
        };
        let tail = Arc::default();
        let relay = tokio::spawn(relay_logs(stderr, Arc::clone(&tail), pid).in_current_span());
        let mut frame = Vec::new();
        protocol::write_frame(&mut frame, request).map_err(|e| ChildError::Protocol(e.to_string()))?;
        // A child that died at once closed its stdin: its exit says why.
        let _ = stdin.write_all(&frame).await;
        drop(stdin);
        Ok(Running {
            child,
            stdout,
            tail,
            relay: Some(relay),
            program,
            pid,
        })
    }

    /// Reads the first frame: the child's version and sandbox layers;
    /// `None` if it closed its stdout first (its exit says why).
    async fn started(&mut self) -> Result<Option<Layers>, ChildError> {
        match protocol::read_frame_async::<Reply>(&mut self.stdout).await {
            Ok(Some(Reply::Started { version, layers })) if version == protocol::VERSION => Ok(Some(layers)),
            Ok(Some(Reply::Started { version, .. })) => Err(ChildError::Protocol(format!(
                "{} speaks protocol {version}, this worker {}",
                self.program.display(),
                protocol::VERSION
            ))),
            Ok(Some(other)) => Err(ChildError::Protocol(format!("expected the start frame, got {other:?}"))),
            Ok(None) => Ok(None),
            Err(e) => Err(ChildError::Protocol(e.to_string())),
        }
    }

    /// Follows the child's frames to its last one.
    async fn follow(&mut self, on_progress: &mut impl FnMut(Progress)) -> Result<Ending, ChildError> {
        match self.started().await? {
            Some(layers) => tracing::debug!(sandbox = layers.describe(), "transcode child confined"),
            None => return Ok(Ending::Silent),
        }
        loop {
            match protocol::read_frame_async::<Reply>(&mut self.stdout).await {
                Ok(Some(Reply::Progress(p))) => on_progress(p),
                Ok(Some(Reply::Done { report, usage })) => return Ok(Ending::Answered(Ok((report, usage)))),
                Ok(Some(Reply::Failed(failure))) => return Ok(Ending::Answered(Err(failure))),
                Ok(Some(Reply::Started { .. })) => return Err(ChildError::Protocol("a second start frame".into())),
                Ok(None) => return Ok(Ending::Silent),
                Err(e) => return Err(ChildError::Protocol(e.to_string())),
            }
        }
    }

    /// Waits for the child to exit (killing it if it lingers), and for its
    /// last stderr lines.
    async fn exit(&mut self) -> Result<ExitStatus, ChildError> {
        let status = match tokio::time::timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!("the transcode child did not exit after its last frame; killing it");
                let _ = self.child.start_kill();
                self.child.wait().await
            }
        };
        if let Some(relay) = self.relay.take() {
            let _ = relay.await;
        }
        status.map_err(|e| ChildError::Protocol(format!("cannot wait for the child: {e}")))
    }

    /// Kills the child and waits for it: within milliseconds.
    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Relays the child's log lines (JSON, from the binary's subscriber) into
/// the job's span at their own level, and keeps the last few to explain
/// its end.
async fn relay_logs(stderr: ChildStderr, tail: Arc<Mutex<VecDeque<String>>>, pid: u32) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let level_message = parsed.as_ref().and_then(|v| {
            let level = v.get("level")?.as_str()?;
            let message = v.get("message")?.as_str()?;
            // The event's own fields, after its message.
            let fields: serde_json::Map<String, serde_json::Value> = v
                .as_object()?
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "timestamp" | "level" | "message" | "target" | "span" | "spans"
                    )
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let message = if fields.is_empty() {
                message.to_owned()
            } else {
                format!("{message} {}", serde_json::Value::Object(fields))
            };
            Some((level.to_owned(), message))
        });
        let (level, message) = level_message.unwrap_or_else(|| ("WARN".into(), line.clone()));
        match level.as_str() {
            "ERROR" => tracing::error!(child = pid, "{message}"),
            "WARN" => tracing::warn!(child = pid, "{message}"),
            "INFO" => tracing::info!(child = pid, "{message}"),
            "DEBUG" => tracing::debug!(child = pid, "{message}"),
            _ => tracing::trace!(child = pid, "{message}"),
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(message);
        }
    }
}
