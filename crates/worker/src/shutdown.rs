//! Shutdown on SIGTERM/SIGINT (scale-in, spot interruption, Ctrl-C): the
//! first signal stops intake and lets running jobs finish within a grace
//! period; a second one exits at once. A termination notice (see
//! [`crate::termination`]) stops intake with a deadline: jobs get what is
//! left before it, however long the grace period.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

/// The two stages of a shutdown.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    intake: CancellationToken,
    abort: CancellationToken,
    /// When the machine goes away, if a notice said so.
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Shutdown {
    /// Nothing requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when no new message may be received.
    pub fn intake(&self) -> &CancellationToken {
        &self.intake
    }

    /// Cancelled when running jobs must stop now.
    pub fn abort(&self) -> &CancellationToken {
        &self.abort
    }

    /// Stops intake; running jobs go on.
    pub fn stop_intake(&self) {
        self.intake.cancel();
    }

    /// Stops intake because the machine goes away at `deadline`: running
    /// jobs may finish only if they can before it.
    pub fn stop_intake_before(&self, deadline: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(d.map_or(deadline, |earlier| earlier.min(deadline)));
        }
        self.intake.cancel();
    }

    /// The deadline a termination notice set, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.lock().ok().and_then(|d| *d)
    }

    /// Stops intake and cancels running jobs.
    pub fn abort_jobs(&self) {
        self.intake.cancel();
        self.abort.cancel();
    }

    /// Listens for SIGTERM and SIGINT in the background. The first stops
    /// intake; the second exits the process at once with status 130.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "shutting down: no new jobs; running jobs may finish (a second signal exits at once)"
            );
            this.stop_intake();
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::warn!(
                signal = name,
                "second signal: exiting now; unfinished messages reappear after their visibility timeout"
            );
            std::process::exit(130);
        });
        Ok(())
    }
}
