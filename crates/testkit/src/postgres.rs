//! A throwaway PostgreSQL cluster.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;
use tempfile::TempDir;

use crate::free_port;
use crate::process::{self, Account, TiedCommand};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `initdb` may take.
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast or immediate shutdown may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Start attempts on fresh ports when another process takes the chosen port.
const PORT_ATTEMPTS: usize = 3;

/// A throwaway PostgreSQL cluster on 127.0.0.1, listening on a free port,
/// with trust authentication for the superuser `postgres`.
///
/// Durability is switched off for speed (`fsync`, `synchronous_commit` and
/// `full_page_writes` are off): a crash of the machine loses data, a
/// [`stop`](Self::stop) / [`start_again`](Self::start_again) does not. Only
/// TCP is served, no Unix socket.
///
/// When the tests run as root, `initdb` and the server run as the `postgres`
/// system user, which owns the temporary directory.
///
/// Dropping the handle stops the server at once (immediate shutdown) and
/// deletes the cluster.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    run_as: Option<Account>,
    port: u16,
    /// Holds `data/` and the logs; `None` only during drop.
    dir: Option<TempDir>,
    /// The postmaster, while it runs.
    server: Option<Child>,
}

impl Postgres {
    /// Creates a cluster in a new temporary directory and starts it on a
    /// free port. Blocks until the server accepts connections (about a
    /// second, mostly `initdb`).
    ///
    /// The server binaries come from `$PG_BIN`, else from the highest version
    /// in `/usr/lib/postgresql/*/bin`.
    pub fn start() -> io::Result<Postgres> {
        let bin = find_bin_dir()?;
        let run_as = if process::is_root() {
            let account = process::lookup_user("postgres")?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as \
                     (install postgresql-15, which creates it, or run the tests as a normal user)",
                )
            })?;
            Some(account)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("vidworker-pg-").tempdir()?;
        if let Some(account) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(account.uid), Some(account.gid))?;
        }
        let mut postgres = Postgres {
            bin,
            run_as,
            port: 0,
            dir: Some(dir),
            server: None,
        };
        postgres.initdb()?;

        let mut attempt = 1;
        loop {
            postgres.port = free_port()?;
            match postgres.launch(true) {
                Ok(()) => return Ok(postgres),
                Err(_) if attempt < PORT_ATTEMPTS && postgres.port_was_taken() => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// The URL of the default database `postgres`:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The TCP port the server listens on; it stays the same across
    /// [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (deleted on drop).
    pub fn data_dir(&self) -> PathBuf {
        self.dir_path().join("data")
    }

    /// The directory of this server's binaries, which also holds the client
    /// tools (`psql`, `createdb`, `pg_isready`) of the same version.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's log (deleted on drop): worth printing when a test fails
    /// in a way that involves the database.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path().join("postgres.log")
    }

    /// The postmaster's process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// Creates database `name` and returns its URL. The name may contain
    /// ASCII letters, digits, `_` and `-` (not first), so that it needs no
    /// quoting in SQL tools or URLs.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        let valid = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && name.len() <= 63;
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("database name {name:?} must be 1 to 63 ASCII letters, digits, '_' or '-' (not first)"),
            ));
        }
        let createdb = self.bin.join("createdb");
        let output = Command::new(&createdb)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| io::Error::new(err.kind(), format!("cannot run {}: {err}", createdb.display())))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "createdb {name} on 127.0.0.1:{} failed ({}): {}",
                self.port,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(self.database_url(name))
    }

    /// Runs `sql` in database `name` with the real `psql` client, as an
    /// operator or the platform would, and returns what it printed:
    /// unaligned, tuples only (`-At`), one row per line, columns joined by
    /// `|`. Any error (`ON_ERROR_STOP`) is an `Err` quoting psql.
    pub fn psql(&self, name: &str, sql: &str) -> io::Result<String> {
        let psql = self.bin.join("psql");
        let output = Command::new(&psql)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.database_url(name))
            .stdin(Stdio::null())
            .output()
            .map_err(|err| io::Error::new(err.kind(), format!("cannot run {}: {err}", psql.display())))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "psql {name} -c {sql:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned())
    }

    /// Stops the server with a fast shutdown (open transactions are rolled
    /// back, clients disconnected) and waits until it has exited. Data
    /// survives for [`start_again`](Self::start_again). Does nothing if the
    /// server is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut server) = self.server.take() {
            process::terminate(&mut server, Signal::INT, STOP_GRACE)?;
        }
        Ok(())
    }

    /// Starts the server again on the same data directory and the same port
    /// after [`stop`](Self::stop), and waits until it accepts connections.
    /// Does nothing if it is running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.launch(false)
    }

    /// Reconfigures the cluster and restarts it: writes `files` into the
    /// data directory (owned by the server's user, mode 0600, as PostgreSQL
    /// wants for a private key), appends `settings` to
    /// `postgresql.auto.conf`, and replaces `pg_hba.conf` with `hba`. For
    /// example TLS: `ssl=on` with a certificate and a `hostssl`-only
    /// `pg_hba.conf`.
    pub fn reconfigure(&mut self, settings: &[(&str, &str)], hba: &str, files: &[(&str, &[u8])]) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, chown};
        let data = self.data_dir();
        let owned = |path: &Path| match self.run_as {
            Some(account) => chown(path, Some(account.uid), Some(account.gid)),
            None => Ok(()),
        };
        for (name, content) in files {
            let path = data.join(name);
            let _ = fs::remove_file(&path);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(content)?;
            owned(&path)?;
        }
        let mut conf = fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.auto.conf"))?;
        for (key, value) in settings {
            writeln!(conf, "{key} = '{}'", value.replace('\'', "''"))?;
        }
        fs::write(data.join("pg_hba.conf"), hba)?;
        owned(&data.join("pg_hba.conf"))?;
        self.stop()?;
        self.start_again()
    }

    fn dir_path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), TempDir::path)
    }

    fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    fn initdb(&self) -> io::Result<()> {
        let log_path = self.dir_path().join("initdb.log");
        let log = process::open_log(&log_path, true)?;
        let mut cmd = TiedCommand::new(self.bin.join("initdb"), self.run_as);
        cmd.arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .current_dir(self.dir_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut initdb = cmd.spawn()?;
        let status = match process::wait_timeout(&mut initdb, INITDB_TIMEOUT)? {
            Some(status) => status,
            None => {
                process::terminate(&mut initdb, Signal::KILL, Duration::ZERO)?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "initdb did not finish within {INITDB_TIMEOUT:?}; its output:\n{}",
                        process::log_tail(&log_path, 20)
                    ),
                ));
            }
        };
        if !status.success() {
            let hint = if self.run_as.is_some() {
                "\n(it runs as the `postgres` user, which must be able to reach the temporary directory; check TMPDIR)"
            } else {
                ""
            };
            return Err(io::Error::other(format!(
                "initdb -D {} failed ({status}); its output:\n{}{hint}",
                self.data_dir().display(),
                process::log_tail(&log_path, 20)
            )));
        }
        Ok(())
    }

    /// Runs the postmaster as a direct child and waits until it answers.
    fn launch(&mut self, fresh_log: bool) -> io::Result<()> {
        let log_path = self.log_path();
        let log = process::open_log(&log_path, fresh_log)?;
        let mut cmd = TiedCommand::new(self.bin.join("postgres"), self.run_as);
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // TCP only: a socket under a long TMPDIR could exceed the
            // 107-byte socket path limit.
            .args(["-c", "unix_socket_directories="])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(self.dir_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let server = cmd.spawn()?;
        let (bin, port) = (self.bin.clone(), self.port);
        let what = format!(
            "PostgreSQL ({}) on 127.0.0.1:{port}",
            self.bin.join("postgres").display()
        );
        self.server = Some(process::await_ready(
            server,
            &what,
            "accept connections",
            START_TIMEOUT,
            &log_path,
            || is_ready(&bin, port),
        )?);
        Ok(())
    }

    fn port_was_taken(&self) -> bool {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        log.contains("could not bind") || log.contains("Address already in use")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: the cluster is thrown away anyway.
            let _ = process::terminate(&mut server, Signal::QUIT, STOP_GRACE);
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Whether the server on `port` accepts connections, asked with `pg_isready`.
fn is_ready(bin: &Path, port: u16) -> bool {
    Command::new(bin.join("pg_isready"))
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-t",
            "2",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `$PG_BIN`, else the highest `/usr/lib/postgresql/VERSION/bin` that holds a
/// server.
fn find_bin_dir() -> io::Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = env::var_os("PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "PG_BIN={} holds no `postgres` and `initdb` (unset PG_BIN to use /usr/lib/postgresql/*/bin)",
                dir.display()
            ),
        ));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(version) = name
            .to_str()
            .and_then(|v| v.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u32>>>())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if has_server(&bin) && best.as_ref().is_none_or(|(highest, _)| version > *highest) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "PostgreSQL server binaries (postgres, initdb) not found in /usr/lib/postgresql/*/bin and PG_BIN is not set; \
             install them with `apt-get install postgresql-15` or run scripts/install-deps.sh",
        )
    })
}
