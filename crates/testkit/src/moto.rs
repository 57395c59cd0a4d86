//! A moto server: S3 and SQS emulated in one Python process.

use std::env;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;
use ureq::Agent;

use crate::process::{self, TiedCommand};
use crate::{free_port, repo_root};

/// How long moto may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts on fresh ports when another process takes the chosen port.
const PORT_ATTEMPTS: usize = 3;

/// A moto server (S3 + SQS emulator) on 127.0.0.1, listening on a free port.
///
/// Point the AWS SDK at [`endpoint`](Self::endpoint) (`AWS_ENDPOINT_URL`),
/// with region `us-east-1`, any access key, and `force_path_style(true)` for
/// S3. SQS queue URLs have the form `{endpoint}/123456789012/{queue name}`.
///
/// moto keeps all state in memory: after [`stop`](Self::stop) and
/// [`start_again`](Self::start_again) it has no buckets, objects or queues.
///
/// The server is `<repo>/.venv/bin/moto_server` (the venv can be moved with
/// `$VIDWORKER_VENV`); `scripts/install-deps.sh` installs it. Dropping the
/// handle kills the server and deletes its log.
#[derive(Debug)]
pub struct Moto {
    program: PathBuf,
    port: u16,
    /// Holds the log; `None` only during drop.
    dir: Option<TempDir>,
    /// The server process, while it runs.
    server: Option<Child>,
}

impl Moto {
    /// Starts moto on a free port and blocks until it answers HTTP (about a
    /// second).
    pub fn start() -> io::Result<Moto> {
        let venv = env::var_os("VIDWORKER_VENV").map_or_else(|| repo_root().join(".venv"), PathBuf::from);
        let program = venv.join("bin").join("moto_server");
        if !program.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "moto server not found at {}: run scripts/install-deps.sh (or set VIDWORKER_VENV to a venv with moto)",
                    program.display()
                ),
            ));
        }
        let dir = tempfile::Builder::new().prefix("vidworker-moto-").tempdir()?;
        let mut moto = Moto {
            program,
            port: 0,
            dir: Some(dir),
            server: None,
        };
        let mut attempt = 1;
        loop {
            moto.port = free_port()?;
            match moto.launch(true) {
                Ok(()) => return Ok(moto),
                Err(_) if attempt < PORT_ATTEMPTS && moto.port_was_taken() => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// The endpoint URL for the AWS SDK: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on; it stays the same across
    /// [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log, one line per request (deleted on drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |dir| dir.path().join("moto.log"))
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Kills the server (S3 and SQS become unreachable) and waits until it
    /// has exited. All its state is lost. Does nothing if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut server) = self.server.take() {
            // Nothing to flush: state lives only in memory.
            process::terminate(&mut server, Signal::KILL, Duration::ZERO)?;
        }
        Ok(())
    }

    /// Starts a new, empty server on the same port after
    /// [`stop`](Self::stop), and waits until it answers. Does nothing if it
    /// is running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch(false)
    }

    fn launch(&mut self, fresh_log: bool) -> io::Result<()> {
        let log_path = self.log_path();
        let log = process::open_log(&log_path, fresh_log)?;
        let mut cmd = TiedCommand::new(&self.program, None);
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            // Unbuffered, so the log is complete when start-up fails.
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir.path());
        }
        let server = cmd.spawn()?;
        let port = self.port;
        let what = format!("moto ({}) on 127.0.0.1:{port}", self.program.display());
        self.server = Some(process::await_ready(
            server,
            &what,
            "answer GET /moto-api/",
            START_TIMEOUT,
            &log_path,
            || answers(port),
        )?);
        Ok(())
    }

    fn port_was_taken(&self) -> bool {
        std::fs::read_to_string(self.log_path()).is_ok_and(|log| log.contains("Address already in use"))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = process::terminate(&mut server, Signal::KILL, Duration::ZERO);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Whether moto on 127.0.0.1:`port` answers `GET /moto-api/` with a
/// success, within two seconds.
fn answers(port: u16) -> bool {
    let agent: Agent = Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        // Loopback only: never through a proxy named in the environment.
        .proxy(None)
        .build()
        .into();
    // Error statuses are errors by default; only the status is read.
    agent.get(format!("http://127.0.0.1:{port}/moto-api/")).call().is_ok()
}
