//! systemd's service notifications (`sd_notify(3)`), for `Type=notify`
//! units: `READY=1` once the worker has passed its start-up checks and
//! takes jobs, `WATCHDOG=1` while its loops are alive (the same check as
//! `/healthz`), `STOPPING=1` when it drains. Without `NOTIFY_SOCKET` (not
//! under systemd, or another `Type=`) nothing is sent.
//!
//! The protocol is one datagram per message on the socket systemd names;
//! a few lines here rather than a crate.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{HealthLimits, Stats};

/// The connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WATCHDOG_USEC`, when systemd watches this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names (`@name` for the abstract
    /// namespace), if it is set and usable.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty())?;
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(&path),
        };
        let socket = UnixDatagram::unbound();
        match (addr, socket) {
            (Ok(addr), Ok(socket)) => Some(Notifier {
                socket,
                addr,
                watchdog: watchdog_interval(),
            }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(socket = path, error = %e, "cannot use systemd's notification socket");
                None
            }
        }
    }

    /// Sends one notification (`READY=1`, `STATUS=…`, newline-separated).
    /// Best effort: systemd gone is not the worker's failure.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.addr) {
            tracing::debug!(error = %e, state, "cannot notify systemd");
        }
    }

    /// Feeds systemd's watchdog every third of its timeout while `stats`
    /// says every loop is alive, until `stop`; a wedged worker stops
    /// feeding it, and systemd restarts the unit.
    pub(crate) fn spawn_watchdog(
        self: Arc<Self>,
        stats: Arc<Stats>,
        limits: HealthLimits,
        stop: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog? / 3;
        Some(tokio::spawn(async move {
            loop {
                match stats.health.check(limits) {
                    Ok(()) => self.send("WATCHDOG=1"),
                    Err(why) => tracing::error!(why, "not feeding systemd's watchdog: the worker is wedged"),
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = stop.cancelled() => return,
                }
            }
        }))
    }
}

/// `WATCHDOG_USEC`, if it is set for this process (`WATCHDOG_PID`, when
/// present, names it).
fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_arrive_as_datagrams_on_the_named_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier {
            socket: UnixDatagram::unbound().expect("socket"),
            addr: SocketAddr::from_pathname(&path).expect("addr"),
            watchdog: None,
        };
        notifier.send("READY=1\nSTATUS=taking jobs");
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=taking jobs");
    }
}
