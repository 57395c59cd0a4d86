//! Liveness of the worker's loops, for `/healthz`: the receive loop and
//! every running job's heartbeat report here, and a loop that stopped
//! reporting for longer than it can legitimately take is wedged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The loops' last signs of life.
#[derive(Debug, Default)]
pub struct Health {
    /// When the receive call in flight started, if one is.
    receiving_since: Mutex<Option<Instant>>,
    /// Each running job's last heartbeat (or its start).
    beats: Mutex<HashMap<u64, Instant>>,
    next_job: AtomicU64,
    /// The last configuration error since the last processed job.
    misconfigured: Mutex<Option<String>>,
}

/// How long each loop may go without a sign of life.
#[derive(Clone, Copy, Debug)]
pub struct HealthLimits {
    /// Longest a receive can take: the long poll plus the SDK's attempt
    /// timeout, and a margin.
    pub receive: Duration,
    /// Longest between two heartbeats of a job: two periods (a sleep and a
    /// call with its deadline) and a margin.
    pub heartbeat: Duration,
}

impl Health {
    /// A receive call starts.
    pub(crate) fn receiving(&self) {
        if let Ok(mut r) = self.receiving_since.lock() {
            *r = Some(Instant::now());
        }
    }

    /// The receive call returned.
    pub(crate) fn received(&self) {
        if let Ok(mut r) = self.receiving_since.lock() {
            *r = None;
        }
    }

    /// A job starts; its heartbeat reports under the returned number.
    pub(crate) fn job_started(&self) -> u64 {
        let id = self.next_job.fetch_add(1, Ordering::Relaxed);
        self.beat(id);
        id
    }

    /// A job's heartbeat went round.
    pub(crate) fn beat(&self, job: u64) {
        if let Ok(mut b) = self.beats.lock() {
            b.insert(job, Instant::now());
        }
    }

    /// A job ended.
    pub(crate) fn job_ended(&self, job: u64) {
        if let Ok(mut b) = self.beats.lock() {
            b.remove(&job);
        }
    }

    /// A job met a configuration error: the worker is not ready until a
    /// job succeeds.
    pub(crate) fn misconfigured(&self, reason: &str) {
        if let Ok(mut m) = self.misconfigured.lock() {
            *m = Some(reason.to_owned());
        }
    }

    /// A job succeeded: whatever was misconfigured works now.
    pub(crate) fn configured(&self) {
        if let Ok(mut m) = self.misconfigured.lock() {
            *m = None;
        }
    }

    /// The configuration error that makes the worker unready, if any.
    pub fn configuration_error(&self) -> Option<String> {
        self.misconfigured.lock().ok().and_then(|m| m.clone())
    }

    /// `Err` with what is wedged, if anything is.
    pub fn check(&self, limits: HealthLimits) -> Result<(), String> {
        let receiving = self.receiving_since.lock().ok().and_then(|r| *r);
        if let Some(since) = receiving.filter(|s| s.elapsed() > limits.receive) {
            return Err(format!(
                "the receive loop has waited {} s for SQS",
                since.elapsed().as_secs()
            ));
        }
        let beats = self
            .beats
            .lock()
            .map_err(|_| "the heartbeat registry is poisoned".to_owned())?;
        let stale = beats.values().filter(|b| b.elapsed() > limits.heartbeat).count();
        if stale > 0 {
            return Err(format!(
                "{stale} job heartbeat(s) silent for more than {} s",
                limits.heartbeat.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_heartbeat_or_a_stuck_receive_is_unhealthy() {
        let h = Health::default();
        let strict = HealthLimits {
            receive: Duration::ZERO,
            heartbeat: Duration::ZERO,
        };
        let lax = HealthLimits {
            receive: Duration::from_secs(60),
            heartbeat: Duration::from_secs(60),
        };
        assert!(h.check(strict).is_ok(), "idle is healthy");
        let job = h.job_started();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.check(lax).is_ok());
        assert!(h.check(strict).expect_err("silent").contains("heartbeat"));
        h.job_ended(job);
        h.receiving();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.check(strict).expect_err("stuck").contains("receive loop"));
        h.received();
        assert!(h.check(strict).is_ok());
    }
}
