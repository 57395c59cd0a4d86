//! Service processes that cannot outlive the test process.
//!
//! Every server is a direct child (never daemonised) with the parent death
//! signal set to `SIGKILL`, so a test process that is killed, or that exits
//! without running destructors, takes its servers with it.
//!
//! The kernel sends the death signal when the *thread* that forked the child
//! exits, not the process. Test code creates handles on short-lived threads
//! (each `#[test]` runs on its own thread, tokio's blocking pool retires idle
//! threads after ten seconds, a handle may be shared through a `static`), so
//! all children are forked by one spawner thread that lives as long as the
//! process. The signal then fires exactly when the process dies.
//!
//! All of it without `unsafe` (the crate forbids it), each step in the child
//! done by a program or by std rather than by code of ours between fork and
//! exec. A [`TiedCommand`] runs
//!
//! ```text
//! setpriv --pdeathsig KILL -- /bin/sh -c GUARD testkit-guard <test pid> <server> <args>...
//! ```
//!
//! 1. std switches to the server's account, if any, before it execs
//!    `setpriv` ([`CommandExt::uid`] and [`gid`](CommandExt::gid); as root,
//!    std also drops the supplementary groups with `setgroups(0, NULL)`).
//!    The account comes first because changing credentials clears the
//!    death signal.
//! 2. util-linux's `setpriv` sets `PR_SET_PDEATHSIG` and execs the guard;
//!    the signal survives `execve` (the kernel clears it only for
//!    set-user-ID, set-group-ID or file-capability programs).
//! 3. The guard, a few lines of `sh`, checks that its parent is still the
//!    test process, as the `getppid()` check after our own `prctl` used to:
//!    had the test process died between fork and `prctl`, the child would
//!    already belong to another parent and nobody would ever send the
//!    signal. `setpriv` does no such check itself. Then the guard execs the
//!    server in its own place, so the [`Child`]'s pid is the server's.
//!
//! The price is two extra `execve`s per server, about a millisecond.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal};

/// util-linux's `setpriv`, which sets the death signal and execs the rest
/// of its command line. util-linux is essential on Debian, so it is always
/// there.
const SETPRIV: &str = "/usr/bin/setpriv";
/// The guard's shell.
const SH: &str = "/bin/sh";
/// Run by [`SH`] with `$1` the test process's pid and the server's command
/// line after it: refuses to start the server when the test process is no
/// longer its parent, else becomes the server.
const GUARD: &str = r#"if [ "$PPID" != "$1" ]; then
    echo "testkit: the test process $1 died before $2 started; not starting it" >&2
    exit 125
fi
shift
exec "$@""#;
/// The guard's exit status when the test process died during the spawn (the
/// `exit` in [`GUARD`]).
#[cfg(test)]
const GUARD_REFUSED: i32 = 125;

/// A system account to run a server as (PostgreSQL refuses to run as root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Account {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Looks up a user in the system's user database with `getent passwd`.
///
/// The lookup goes through NSS like `getpwnam_r` does (the same glibc code,
/// in a child process), so accounts from LDAP or systemd's `nss-systemd`
/// are found too. rustix offers no user database (it needs libc's NSS), and
/// this one lookup per [`Postgres`](crate::Postgres) start does not justify
/// a second system-call crate; `getent` is in `libc-bin`, essential on
/// Debian.
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<Account>> {
    let output = Command::new("getent")
        .args(["passwd", "--", name])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| io::Error::new(err.kind(), format!("cannot run getent to look up user {name:?}: {err}")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match output.status.code() {
        Some(0) => parse_passwd_entry(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("getent passwd {name}: unexpected entry {:?}", text.trim_end()),
            )
        }),
        // "One or more supplied key could not be found in the database."
        Some(2) => Ok(None),
        _ => Err(io::Error::other(format!(
            "getent passwd {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
    }
}

/// The uid and gid of the first line of passwd(5) entries:
/// `name:password:UID:GID:gecos:home:shell`.
fn parse_passwd_entry(text: &str) -> Option<Account> {
    let mut fields = text.lines().next()?.split(':');
    let (uid, gid) = (fields.nth(2)?, fields.next()?);
    Some(Account {
        uid: uid.parse().ok()?,
        gid: gid.parse().ok()?,
    })
}

/// A command for a server that must die with this process, run as `run_as`
/// when given (see the module doc for how).
///
/// It derefs to the [`Command`] for arguments, environment, directory and
/// standard streams; [`spawn`](Self::spawn) forks it from the spawner thread.
/// Never spawn the inner `Command` itself: the death signal would belong to
/// the calling thread.
#[derive(Debug)]
pub(crate) struct TiedCommand {
    command: Command,
    /// The server's program, for error messages.
    program: String,
}

impl TiedCommand {
    /// A command that runs `program`, with the arguments added to it later.
    pub(crate) fn new(program: impl AsRef<OsStr>, run_as: Option<Account>) -> TiedCommand {
        TiedCommand::with_parent(program.as_ref(), run_as, std::process::id())
    }

    /// The command, for a guard that expects `parent` as the parent.
    fn with_parent(program: &OsStr, run_as: Option<Account>, parent: u32) -> TiedCommand {
        let mut command = Command::new(SETPRIV);
        command
            .args(["--pdeathsig", "KILL", "--", SH, "-c", GUARD, "testkit-guard"])
            .arg(parent.to_string())
            .arg(program);
        if let Some(account) = run_as {
            // In the child std calls setgid, then setgroups(0, NULL) (when it
            // may, as root: see `CommandExt::uid`), then setuid.
            command.gid(account.gid).uid(account.uid);
        }
        TiedCommand {
            command,
            program: program.to_string_lossy().into_owned(),
        }
    }

    /// Spawns the command from the spawner thread, whichever thread calls
    /// this, so that it is killed when this process dies.
    pub(crate) fn spawn(self) -> io::Result<Child> {
        let TiedCommand { command, program } = self;
        let gone = || io::Error::other("testkit: the process spawner thread is gone");
        let (reply, answer) = mpsc::channel();
        spawner()?.send((command, reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?.map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot start {program} through {SETPRIV} (util-linux): {err}"),
            )
        })
    }
}

impl Deref for TiedCommand {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.command
    }
}

impl DerefMut for TiedCommand {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
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

/// Sends `signal` to `child` unless it has already exited (and been reaped,
/// after which its pid may belong to another process).
pub(crate) fn signal(child: &mut Child, signal: Signal) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    // The pid is our unreaped child, so it cannot have been recycled.
    match rustix::process::kill_process(Pid::from_child(child), signal) {
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(err) => Err(err.into()),
    }
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
pub(crate) fn terminate(child: &mut Child, first: Signal, grace: Duration) -> io::Result<()> {
    signal(child, first)?;
    if wait_timeout(child, grace)?.is_none() {
        signal(child, Signal::KILL)?;
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
    let _ = terminate(&mut server, Signal::KILL, Duration::ZERO);
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::process::Stdio;

    use super::{Account, GUARD_REFUSED, SETPRIV, TiedCommand, is_root, lookup_user, parse_passwd_entry};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn passwd_entries_give_uid_and_gid() {
        for (entry, expected) in [
            (
                "postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n",
                Some(Account { uid: 101, gid: 104 }),
            ),
            ("root:x:0:0:root:/root:/bin/bash", Some(Account { uid: 0, gid: 0 })),
            (
                "a:x:1:2::/:/bin/sh\nb:x:3:4::/:/bin/sh\n",
                Some(Account { uid: 1, gid: 2 }),
            ),
            ("short:x:1", None),
            ("bad:x:one:2::/:/bin/sh", None),
            ("", None),
        ] {
            assert_eq!(parse_passwd_entry(entry), expected, "for {entry:?}");
        }
    }

    #[test]
    fn users_are_found_in_the_user_database() -> TestResult {
        assert_eq!(lookup_user("root")?, Some(Account { uid: 0, gid: 0 }));
        assert_eq!(lookup_user("testkit-no-such-user")?, None);
        Ok(())
    }

    #[test]
    fn the_server_gets_its_arguments_verbatim_and_is_the_child() -> TestResult {
        let args = ["%s|", "a b", "\"q\" 'r'", "$HOME", "", "-x", "line\nbreak"];
        let mut cmd = TiedCommand::new("/bin/sh", None);
        // The shell prints its pid, then printf prints the arguments.
        cmd.args(["-c", "echo $$; printf \"$@\"", "sh"])
            .args(args)
            .stdout(Stdio::piped());
        let child = cmd.spawn()?;
        let pid = child.id();
        let output = child.wait_with_output()?;
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8(output.stdout)?;
        assert_eq!(text, format!("{pid}\na b|\"q\" 'r'|$HOME||-x|line\nbreak|"));
        Ok(())
    }

    #[test]
    fn the_server_has_the_death_signal_and_the_account() -> TestResult {
        let run_as = if is_root() { lookup_user("postgres")? } else { None };
        let mut cmd = TiedCommand::new(SETPRIV, run_as);
        cmd.arg("--dump").stdout(Stdio::piped());
        let output = cmd.spawn()?.wait_with_output()?;
        assert!(output.status.success(), "{output:?}");
        let dump = String::from_utf8(output.stdout)?;
        assert!(dump.contains("Parent death signal: KILL\n"), "{dump}");
        if let Some(Account { uid, gid }) = run_as {
            for line in [
                format!("uid: {uid}\n"),
                format!("euid: {uid}\n"),
                format!("gid: {gid}\n"),
                format!("egid: {gid}\n"),
                "Supplementary groups: [none]\n".to_owned(),
            ] {
                assert!(dump.contains(&line), "no {line:?} in:\n{dump}");
            }
        }
        Ok(())
    }

    #[test]
    fn the_guard_refuses_to_start_an_orphan() -> TestResult {
        let dir = tempfile::tempdir()?;
        let marker = dir.path().join("started");
        // Parent 0 stands for a test process that died before `setpriv`
        // armed the signal: the child's parent is then someone else.
        let mut cmd = TiedCommand::with_parent(OsStr::new("/usr/bin/touch"), None, 0);
        cmd.arg(&marker).stderr(Stdio::piped());
        let output = cmd.spawn()?.wait_with_output()?;
        assert_eq!(output.status.code(), Some(GUARD_REFUSED), "{output:?}");
        assert!(!marker.exists(), "the server ran");
        let stderr = String::from_utf8(output.stderr)?;
        assert!(
            stderr.contains("test process 0 died before /usr/bin/touch started"),
            "{stderr}"
        );
        Ok(())
    }
}
