//! Starts the real services. Needs PostgreSQL server binaries and the moto
//! venv: run `scripts/install-deps.sh` first.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use testkit::{Moto, Postgres};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Runs `sql` through the server's own `psql` and returns its unaligned output.
fn psql(pg: &Postgres, database: &str, sql: &str) -> io::Result<String> {
    let output = Command::new(pg.bin_dir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            database,
        ])
        .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The status line of `GET path`, or the connection error.
fn http_get(port: u16, path: &str) -> io::Result<String> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_secs(1)).is_ok()
}

/// Whether `pid` names a live (not zombie) process.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn postgres_serves_restarts_on_the_same_port_and_cleans_up() -> TestResult {
    let started = Instant::now();
    let mut pg = Postgres::start()?;
    eprintln!("Postgres::start took {:?}", started.elapsed());
    let port = pg.port();
    assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{port}/postgres"));

    let url = pg.create_database("jobs")?;
    assert_eq!(url, format!("postgres://postgres@127.0.0.1:{port}/jobs"));
    assert_eq!(psql(&pg, "jobs", "SELECT 1")?, "1");
    psql(
        &pg,
        "jobs",
        "CREATE TABLE job (id int PRIMARY KEY, status text); INSERT INTO job VALUES (1, 'done')",
    )?;
    assert_eq!(psql(&pg, "postgres", "SHOW fsync")?, "off");
    assert!(pg.create_database("no spaces").is_err());

    pg.stop()?;
    assert!(pg.pid().is_none());
    assert!(
        !accepts_connections(port),
        "port {port} still accepts connections after stop"
    );
    assert!(psql(&pg, "jobs", "SELECT 1").is_err());

    let restarted = Instant::now();
    pg.start_again()?;
    eprintln!("Postgres::start_again took {:?}", restarted.elapsed());
    assert_eq!(pg.port(), port);
    assert_eq!(psql(&pg, "jobs", "SELECT status FROM job WHERE id = 1")?, "done");

    let pid = pg.pid().ok_or("no pid while running")?;
    let data_dir = pg.data_dir();
    assert!(data_dir.join("PG_VERSION").is_file());
    drop(pg);
    assert!(!data_dir.exists(), "{} survived drop", data_dir.display());
    assert!(!process_alive(pid), "postmaster {pid} survived drop");
    assert!(!accepts_connections(port));
    Ok(())
}

#[test]
fn moto_answers_restarts_on_the_same_port_and_is_killed_on_drop() -> TestResult {
    let started = Instant::now();
    let mut moto = Moto::start()?;
    eprintln!("Moto::start took {:?}", started.elapsed());
    let port = moto.port();
    assert_eq!(moto.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(http_get(port, "/moto-api/")?, "HTTP/1.1 200 OK");

    moto.stop()?;
    assert!(moto.pid().is_none());
    assert!(http_get(port, "/moto-api/").is_err(), "moto still answers after stop");

    let restarted = Instant::now();
    moto.start_again()?;
    eprintln!("Moto::start_again took {:?}", restarted.elapsed());
    assert_eq!(moto.port(), port);
    assert_eq!(http_get(port, "/moto-api/")?, "HTTP/1.1 200 OK");

    let pid = moto.pid().ok_or("no pid while running")?;
    drop(moto);
    assert!(!process_alive(pid), "moto {pid} survived drop");
    assert!(!accepts_connections(port));
    Ok(())
}

#[test]
fn servers_outlive_the_thread_that_started_them() -> TestResult {
    // Tokio's blocking pool retires idle threads; a server must not die with
    // the thread that happened to create its handle.
    let moto = thread::spawn(Moto::start)
        .join()
        .map_err(|_| "starting thread panicked")??;
    thread::sleep(Duration::from_millis(300));
    assert_eq!(http_get(moto.port(), "/moto-api/")?, "HTTP/1.1 200 OK");
    Ok(())
}

/// Set for the child process of `servers_die_with_a_killed_test_process`:
/// where to report what it started.
const HOLD_SERVERS_REPORT: &str = "TESTKIT_HOLD_SERVERS_REPORT";

#[test]
fn servers_die_with_a_killed_test_process() -> TestResult {
    let report = tempfile::NamedTempFile::new()?;
    let mut child = Command::new(env::current_exe()?)
        .args([
            "--exact",
            "stack::hold_servers_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_SERVERS_REPORT, report.path())
        .stdout(Stdio::null())
        .spawn()?;
    let reported = || fs::read_to_string(report.path()).is_ok_and(|text| text.ends_with('\n'));
    // Stop waiting early if the child fails (its error goes to stderr).
    wait_until(Duration::from_secs(60), || {
        reported() || child.try_wait().is_ok_and(|exit| exit.is_some())
    });
    let reported = reported();
    let text = fs::read_to_string(report.path())?;
    child.kill()?; // SIGKILL: no destructor runs in the child.
    child.wait()?;
    assert!(reported, "the child did not report its servers: {text:?}");

    // "<postmaster pid>\t<moto pid>\t<postgres log>\t<moto log>"
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    let [pg_pid, moto_pid, pg_log, moto_log] = fields[..] else {
        return Err(format!("unexpected report {text:?}").into());
    };
    let (pg_pid, moto_pid): (u32, u32) = (pg_pid.parse()?, moto_pid.parse()?);
    let gone = wait_until(Duration::from_secs(10), || {
        !process_alive(pg_pid) && !process_alive(moto_pid)
    });

    // The temporary directories of a killed process stay behind; clean up.
    for log in [pg_log, moto_log] {
        if let Some(dir) = Path::new(log).parent().filter(|dir| dir.starts_with(env::temp_dir())) {
            fs::remove_dir_all(dir)?;
        }
    }
    assert!(
        gone,
        "servers survived their killed test process: postgres alive {}, moto alive {}",
        process_alive(pg_pid),
        process_alive(moto_pid)
    );
    Ok(())
}

/// Helper for `servers_die_with_a_killed_test_process`: starts both servers
/// on a thread that then exits, reports them, and waits to be killed.
#[test]
#[ignore = "run by servers_die_with_a_killed_test_process in a child process"]
fn hold_servers_until_killed() -> TestResult {
    let Some(report) = env::var_os(HOLD_SERVERS_REPORT) else {
        return Ok(());
    };
    let (pg, moto) = thread::spawn(|| -> io::Result<_> { Ok((Postgres::start()?, Moto::start()?)) })
        .join()
        .map_err(|_| "starting thread panicked")??;
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        pg.pid().ok_or("postgres not running")?,
        moto.pid().ok_or("moto not running")?,
        pg.log_path().display(),
        moto.log_path().display()
    );
    fs::write(Path::new(&report), line)?;
    thread::sleep(Duration::from_secs(120));
    Ok(())
}

#[test]
fn psql_reads_what_was_written_and_quotes_the_error_of_a_bad_statement() -> TestResult {
    let db = Postgres::start()?;
    db.create_database("reads")?;
    db.psql(
        "reads",
        "CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x'), (2, 'y')",
    )?;
    assert_eq!(db.psql("reads", "SELECT a, b FROM t ORDER BY a")?, "1|x\n2|y");
    let err = db.psql("reads", "SELECT nope FROM t").expect_err("no such column");
    assert!(err.to_string().contains("column \"nope\" does not exist"), "{err}");
    Ok(())
}
