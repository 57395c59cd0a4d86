//! Service processes that cannot outlive the test process.
//!
//! Every server is a direct child (never daemonised) with
//! `PR_SET_PDEATHSIG = SIGKILL`, so a test process that is killed, or that
//! exits without running destructors, takes its servers with it.
//!
//! The kernel sends the death signal when the *thread* that forked the child
//! exits, not the process. Test code creates handles on short-lived threads
//! (each `#[test]` runs on its own thread, tokio's blocking pool retires idle
//! threads after ten seconds, a handle may be shared through a `static`), so
//! all children are forked by one spawner thread that lives as long as the
//! process. The signal then fires exactly when the process dies.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A system account to run a server as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account {
    pub(crate) uid: libc::uid_t,
    pub(crate) gid: libc::gid_t,
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Looks up a user in the system's user database.
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<Account>> {
    let c_name = CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("user name {name:?} contains a NUL byte"),
        )
    })?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is a plain C struct for which all-zero is a valid value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the duration of the call and
        // `buf.len()` is the true size of `buf`.
        let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut entry, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        return Ok(Some(Account {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
        }));
    }
}

/// Makes `cmd` run as `run_as` (when given) and die with this process.
fn tie_to_process(cmd: &mut Command, run_as: Option<Account>) {
    let parent = std::process::id();
    // Runs in the forked child before exec: only async-signal-safe system
    // calls, no allocation (an `io::Error` from an OS error code does not
    // allocate).
    let in_child = move || -> io::Result<()> {
        if let Some(account) = run_as {
            // Credentials first: changing them clears the death signal.
            // SAFETY: plain system calls on integers; setgroups(0, NULL)
            // drops all supplementary groups.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(account.gid) != 0
                    || libc::setuid(account.uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        // SAFETY: plain system calls on integers.
        unsafe {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody
            // would ever send the signal.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls and
    // does not allocate, as required between fork and exec.
    unsafe {
        cmd.pre_exec(in_child);
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The channel to the spawner thread; the sender lives here for the whole
/// process, so the thread never exits.
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

fn spawner() -> io::Result<mpsc::Sender<SpawnRequest>> {
    let mut slot = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(sender) = slot.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, requests) = mpsc::channel::<SpawnRequest>();
    thread::Builder::new().name("testkit-spawner".into()).spawn(move || {
        for (mut cmd, reply) in requests {
            // The requester may have given up; nothing to do then.
            let _ = reply.send(cmd.spawn());
        }
    })?;
    *slot = Some(sender.clone());
    Ok(sender)
}

/// Spawns `cmd` as `run_as` so that it is killed when this process dies,
/// whichever thread calls this.
pub(crate) fn spawn_tied(mut cmd: Command, run_as: Option<Account>) -> io::Result<Child> {
    tie_to_process(&mut cmd, run_as);
    let gone = || io::Error::other("testkit: the process spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    spawner()?.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

/// Sends `signal` to `child` unless it has already exited (and been reaped,
/// after which its pid may belong to another process).
pub(crate) fn signal(child: &mut Child, signal: libc::c_int) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // unreaped child, so it cannot have been recycled.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err);
        }
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `first` (a polite shutdown signal), waits up to `grace`, then
/// kills. Returns once the child is reaped.
pub(crate) fn terminate(child: &mut Child, first: libc::c_int, grace: Duration) -> io::Result<()> {
    signal(child, first)?;
    if wait_timeout(child, grace)?.is_none() {
        signal(child, libc::SIGKILL)?;
        child.wait()?;
    }
    Ok(())
}

/// How waiting for a server to answer ended.
#[derive(Debug)]
pub(crate) enum Readiness {
    /// The check passed.
    Ready,
    /// The server exited first.
    Exited(ExitStatus),
    /// The check kept failing until the timeout.
    TimedOut,
}

/// Polls `ready` until it passes, the child exits or `timeout` elapses.
pub(crate) fn wait_ready(
    child: &mut Child,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> io::Result<Readiness> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Readiness::Exited(status));
        }
        if ready() {
            return Ok(Readiness::Ready);
        }
        if Instant::now() >= deadline {
            return Ok(Readiness::TimedOut);
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Waits for a freshly spawned server to answer. On failure the server is
/// killed and the error names it (`what`), says what it did not do in time
/// (`expected`, e.g. "accept connections") and quotes its log.
pub(crate) fn await_ready(
    mut server: Child,
    what: &str,
    expected: &str,
    timeout: Duration,
    log: &Path,
    ready: impl FnMut() -> bool,
) -> io::Result<Child> {
    let failure = match wait_ready(&mut server, timeout, ready) {
        Ok(Readiness::Ready) => return Ok(server),
        Ok(Readiness::Exited(status)) => format!("exited during start-up ({status})"),
        Ok(Readiness::TimedOut) => format!("did not {expected} within {timeout:?}"),
        Err(err) => format!("could not be watched: {err}"),
    };
    // Best effort: the error below matters more than a failed kill.
    let _ = terminate(&mut server, libc::SIGKILL, Duration::ZERO);
    Err(io::Error::other(format!(
        "{what} {failure}; last lines of {}:\n{}",
        log.display(),
        log_tail(log, 20)
    )))
}

/// Opens a server's log for writing: emptied for a fresh start, appended to
/// for a restart so the history stays readable.
pub(crate) fn open_log(path: &Path, fresh: bool) -> io::Result<File> {
    let mut options = fs::OpenOptions::new();
    options.create(true);
    if fresh {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options
        .open(path)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot open log {}: {err}", path.display())))
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.trim().is_empty() {
                "(log is empty)".to_owned()
            } else {
                tail
            }
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
