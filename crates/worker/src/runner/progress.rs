//! Where a running job is, for the upload page: a phase and a percentage,
//! set by the job as it goes and written to the row by the heartbeat at most
//! every `PROGRESS_INTERVAL`, so a fleet of workers does not hammer the
//! database. The percentage never goes down within an attempt: downloading
//! 0 to 10, transcoding 10 to 90 (by the processor's own progress),
//! uploading 90 to 97, recording 99; the final write says 100 (done) or
//! failed.

use std::sync::Mutex;

use crate::db::Phase;

/// A job's latest phase and percentage, and whether the row has them.
#[derive(Debug)]
pub(super) struct RowProgress {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    percent: u8,
    written: bool,
}

impl Default for RowProgress {
    fn default() -> Self {
        RowProgress {
            state: Mutex::new(State {
                phase: Phase::Downloading,
                percent: 0,
                written: true,
            }),
        }
    }
}

impl RowProgress {
    /// The job is in `phase`, `percent` done (never less than before).
    pub(super) fn set(&self, phase: Phase, percent: u8) {
        if let Ok(mut s) = self.state.lock() {
            let percent = percent.min(99).max(s.percent);
            if s.phase != phase || s.percent != percent {
                *s = State {
                    phase,
                    percent,
                    written: false,
                };
            }
        }
    }

    /// The transcode is `fraction` done.
    pub(super) fn transcoding(&self, fraction: f64) {
        self.set(Phase::Transcoding, 10 + (fraction.clamp(0.0, 1.0) * 80.0) as u8);
    }

    /// What to write, if anything changed since the last write.
    pub(super) fn unwritten(&self) -> Option<(Phase, u8)> {
        let mut s = self.state.lock().ok()?;
        if s.written {
            return None;
        }
        s.written = true;
        Some((s.phase, s.percent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_never_goes_down_and_is_written_once_per_change() {
        let p = RowProgress::default();
        assert_eq!(p.unwritten(), None, "the claim wrote the start");
        p.set(Phase::Downloading, 10);
        p.transcoding(0.5);
        assert_eq!(p.unwritten(), Some((Phase::Transcoding, 50)));
        assert_eq!(p.unwritten(), None);
        p.transcoding(0.25);
        assert_eq!(p.unwritten(), None, "never backwards");
        p.set(Phase::Uploading, 90);
        p.set(Phase::Recording, 100);
        assert_eq!(
            p.unwritten(),
            Some((Phase::Recording, 99)),
            "100 is for the final write"
        );
    }
}
