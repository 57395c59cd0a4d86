//! Timestamps of one video stream: rebased so the first decoded frame is at
//! zero, strictly increasing, and cut at a limit.

use std::time::Duration;

use ffmpeg_next::{Rational, frame};

use crate::geom::Fraction;

/// What happened to one decoded frame.
pub(super) enum Admit {
    /// Use it; its timestamp now counts from the first frame.
    Use,
    /// Drop it (out of order or before the first frame).
    Skip,
    /// It lies past the limit: the stream is done.
    PastEnd,
}

/// The timestamps of one video stream: rebased so the first decoded frame
/// is at zero, strictly increasing (frames that go back in time are
/// dropped), and cut at a limit. Shared by the main video and card clips.
pub(super) struct Timeline {
    time_base: Rational,
    /// The limit in the stream's time base.
    pub(super) limit: i64,
    /// A frame's duration when the stream does not say.
    default_duration: i64,
    /// Timestamp of the first decoded frame: time zero of the output.
    pub(super) origin: Option<i64>,
    last: Option<i64>,
    last_duration: i64,
    pub(super) frames: u64,
}

impl Timeline {
    pub(super) fn new(time_base: Rational, limit: Duration, rate: Option<Fraction>) -> Self {
        let to_ts = |secs: f64| {
            (secs * f64::from(time_base.denominator()) / f64::from(time_base.numerator().max(1))).round() as i64
        };
        Timeline {
            time_base,
            limit: to_ts(limit.as_secs_f64()),
            default_duration: to_ts(1.0 / rate.map_or(30.0, Fraction::as_f64)).max(1),
            origin: None,
            last: None,
            last_duration: 0,
            frames: 0,
        }
    }

    /// Decides what to do with a decoded frame and rebases its timestamp.
    pub(super) fn admit(&mut self, frame: &mut frame::Video) -> Admit {
        let ts = frame.timestamp().or(frame.pts()).unwrap_or_else(|| {
            let next = self.last.map_or(0, |l| l.saturating_add(self.default_duration));
            self.origin.unwrap_or(0).saturating_add(next)
        });
        let origin = *self.origin.get_or_insert(ts);
        // Timestamps are the file's word: hostile values must not overflow.
        let rel = ts.saturating_sub(origin);
        if rel < 0 || self.last.is_some_and(|last| rel <= last) {
            return Admit::Skip;
        }
        if rel >= self.limit {
            return Admit::PastEnd;
        }
        let d = frame.packet().duration;
        self.last_duration = if d > 0 {
            d.min(self.default_duration.saturating_mul(10))
        } else {
            self.default_duration
        };
        self.last = Some(rel);
        self.frames += 1;
        frame.set_pts(Some(rel));
        Admit::Use
    }

    /// Where the stream ends, in its time base: after its last frame, never
    /// past the limit. Closing a source there tells the frame-rate filter
    /// how long the last frame lasts.
    pub(super) fn end(&self) -> i64 {
        self.last
            .map_or(0, |l| l.saturating_add(self.last_duration).min(self.limit))
    }

    pub(super) fn seconds(&self, ts: i64) -> f64 {
        ts as f64 * f64::from(self.time_base.numerator()) / f64::from(self.time_base.denominator().max(1))
    }
}
