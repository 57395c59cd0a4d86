//! Real services for vidworker's integration tests: a throwaway PostgreSQL
//! cluster ([`Postgres`]) and a moto S3 + SQS emulator ([`Moto`]), each on a
//! free port of 127.0.0.1, with no docker and no system service.
//!
//! The API is synchronous and std-only, so it is safe to call from a
//! `#[tokio::test]` body: starting a service blocks the calling thread for
//! about a second (PostgreSQL: `initdb` plus start-up; moto: Python start-up)
//! and never touches the async runtime. Each handle stops its server and
//! deletes its files when dropped. Servers are direct children of the test
//! process, started through util-linux's `setpriv --pdeathsig KILL`, so even
//! a test process killed with `SIGKILL` leaves no server behind (its
//! temporary directory does remain). The kernel sends that signal when the
//! *thread* that forked a server exits, so servers are forked by one helper
//! thread that lives as long as the process: a handle may be created on any
//! thread (a test's own, a `spawn_blocking` thread, a `static`) and the
//! server lives until the handle is dropped or the process ends.
//!
//! Both services can be stopped and started again on the same port, to test
//! how the worker rides out a database restart or an S3/SQS outage.
//!
//! For finer faults, put a proxy between the code under test and a service
//! (both run `proxy.py`, in this crate, with the venv's Python):
//! - [`TcpProxy`] in front of PostgreSQL switches between passing bytes,
//!   refusing connections, blackholing them (the client hangs until its own
//!   timeout) and delaying them ([`TcpMode`]);
//! - [`HttpProxy`] in front of moto names each S3/SQS request
//!   (`sqs:DeleteMessage`, `s3:PUT /bucket/key`) and applies [`Rule`]s to
//!   matching ones: answer an error, never answer, or hold the request or
//!   its response until the test releases it ([`Action`]).
//!
//! The consumer of a rendition is a browser: [`browser::play`] plays one in
//! headless Chromium, seeks in it as a viewer does and reports what the page
//! saw.
//!
//! Requirements: PostgreSQL server binaries (`/usr/lib/postgresql/*/bin` or
//! `$PG_BIN`), moto and Selenium in `<repo>/.venv` (or `$VIDWORKER_VENV`),
//! Debian's `chromium` and `chromium-driver`; the repository's
//! `scripts/install-deps.sh` installs them all. `setpriv`, `getent` and
//! `/bin/sh` come with every Debian system (util-linux, libc-bin, dash).
//!
//! The crate has no `unsafe` code: signals and the effective uid come from
//! rustix, the account switch from std's `CommandExt::{uid, gid}`.
//!
//! # Example
//!
//! ```no_run
//! use testkit::{Moto, Postgres};
//!
//! # fn main() -> std::io::Result<()> {
//! let mut db = Postgres::start()?;
//! let database_url = db.create_database("vidworker")?;
//! let mut aws = Moto::start()?;
//! // Point the code under test at the services, e.g. through its settings:
//! // DATABASE_URL = database_url, AWS_ENDPOINT_URL = aws.endpoint().
//! assert!(database_url.starts_with("postgres://postgres@127.0.0.1:"));
//! assert!(aws.endpoint().starts_with("http://127.0.0.1:"));
//!
//! // Simulate a database restart and an S3/SQS outage mid-run.
//! db.stop()?;
//! db.start_again()?;
//! aws.stop()?;
//! aws.start_again()?; // note: moto comes back empty
//! # Ok(())
//! # }
//! // Dropping the handles stops both servers and removes their files.
//! ```

#![forbid(unsafe_code)]

pub mod browser;
mod moto;
mod postgres;
mod process;
mod proxy;
pub mod wait;

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

pub use moto::Moto;
pub use postgres::Postgres;
pub use proxy::{Action, HttpProxy, Rule, RuleId, TcpMode, TcpProxy};

/// The vidworker repository's root directory (two levels above this crate's
/// manifest, as recorded at compile time).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.ancestors().nth(2).unwrap_or(manifest_dir).to_path_buf()
}

/// Ports handed out by [`free_port`] in this process, so that two tests
/// running in parallel never get the same one.
static ISSUED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Returns a TCP port on 127.0.0.1 that was free a moment ago (it is bound
/// and released), and that this process has not handed out before.
///
/// The port is chosen below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`, 32768 and up by default), not with
/// `bind(0)`. Ports in that range are also used for outgoing connections, so
/// while a server is stopped, a client connection (or a retrying client that
/// connects to itself, a known TCP quirk on loopback) could take its port and
/// make [`Postgres::start_again`] or [`Moto::start_again`] fail. Falls back
/// to `bind(0)` when no port below the range is free.
pub fn free_port() -> io::Result<u16> {
    let mut issued = ISSUED_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
    let issued = issued.get_or_insert_with(HashSet::new);

    let (low, high) = (10_000_u32, ephemeral_port_floor());
    if high > low + 1_000 {
        let mut rng = seed();
        for _ in 0..200 {
            // xorshift64: plenty for spreading ports.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let Ok(port) = u16::try_from(low + (rng % u64::from(high - low)) as u32) else {
                continue;
            };
            if !issued.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                issued.insert(port);
                return Ok(port);
            }
        }
    }
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if issued.insert(port) {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free TCP port found on 127.0.0.1",
    ))
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_port_floor() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Never zero: xorshift would stay at zero.
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}
