//! Plain values that several modules share: picture sizes, exact
//! fractions, the turn that makes a picture upright, and which card is
//! which.
//!
//! This module imports nothing of the crate, so every other module can use
//! it without forming an import cycle. Its only outside dependencies are
//! `serde` (a [`Fraction`] is part of the serialised `MediaInfo`) and
//! FFmpeg's `Rational`, the fraction type at the library's boundary.

use std::fmt;

use ffmpeg_next::Rational;
use serde::{Deserialize, Serialize};

/// A picture size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Size {
    pub w: u32,
    pub h: u32,
}

impl Size {
    pub(crate) const fn new(w: u32, h: u32) -> Self {
        Size { w, h }
    }

    /// Width and height traded (a quarter turn).
    pub(crate) const fn transposed(self) -> Self {
        Size { w: self.h, h: self.w }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.w, self.h)
    }
}

/// A frame rate or aspect ratio as an exact fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fraction {
    /// Numerator.
    pub num: u32,
    /// Denominator, never zero.
    pub den: u32,
}

impl Fraction {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    pub(crate) fn from_rational(r: Rational) -> Option<Self> {
        let (num, den) = (r.numerator(), r.denominator());
        (num > 0 && den > 0).then_some(Fraction {
            num: num as u32,
            den: den as u32,
        })
    }

    pub(crate) fn to_rational(self) -> Rational {
        Rational::new(self.num as i32, self.den as i32)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// How a decoded picture must be turned to be shown upright, from the
/// stream's display matrix (phones record sideways and tag the rotation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Transform {
    #[default]
    Identity,
    /// Rotate 90° clockwise.
    Clock,
    /// Rotate 90° counter-clockwise.
    CounterClock,
    /// Rotate 90° clockwise and mirror.
    ClockFlip,
    /// Rotate 90° counter-clockwise and mirror.
    CounterClockFlip,
    /// Rotate 180°.
    HalfTurn,
    /// Mirror left to right.
    HFlip,
    /// Mirror top to bottom.
    VFlip,
}

impl Transform {
    /// Reads a 3x3 display matrix (FFmpeg's 16.16 fixed-point layout)
    /// whose counter-clockwise rotation FFmpeg computed as `ccw` degrees
    /// (NaN for a degenerate matrix), the way FFmpeg 6.1's command line
    /// does, snapping odd angles to the nearest quarter turn. Returns the
    /// clockwise rotation in degrees and the transform.
    pub(crate) fn from_display_matrix(m: &[i32; 9], ccw: f64) -> (u16, Transform) {
        if ccw.is_nan() {
            return (0, Transform::Identity);
        }
        let theta = (-ccw).round();
        let quarter = ((theta / 90.0).round() as i64).rem_euclid(4) as u16;
        let t = match quarter {
            1 if m[3] > 0 => Transform::CounterClockFlip,
            1 => Transform::Clock,
            2 => match (m[0] < 0, m[4] < 0) {
                (true, true) => Transform::HalfTurn,
                (true, false) => Transform::HFlip,
                (false, true) => Transform::VFlip,
                (false, false) => Transform::Identity,
            },
            3 if m[3] < 0 => Transform::ClockFlip,
            3 => Transform::CounterClock,
            _ if m[4] < 0 => Transform::VFlip,
            _ => Transform::Identity,
        };
        (quarter * 90, t)
    }

    /// Whether width and height trade places.
    pub(crate) fn swaps_axes(self) -> bool {
        matches!(
            self,
            Transform::Clock | Transform::CounterClock | Transform::ClockFlip | Transform::CounterClockFlip
        )
    }

    /// The libavfilter chain that applies it, or `None` for nothing to do.
    pub(crate) fn filter(self) -> Option<&'static str> {
        match self {
            Transform::Identity => None,
            Transform::Clock => Some("transpose=clock"),
            Transform::CounterClock => Some("transpose=cclock"),
            Transform::ClockFlip => Some("transpose=clock_flip"),
            Transform::CounterClockFlip => Some("transpose=cclock_flip"),
            Transform::HalfTurn => Some("hflip,vflip"),
            Transform::HFlip => Some("hflip"),
            Transform::VFlip => Some("vflip"),
        }
    }
}

/// Which card: before or after the main video.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CardSlot {
    Intro,
    Outro,
}

impl CardSlot {
    /// Both, in playing order.
    pub(crate) const ALL: [CardSlot; 2] = [CardSlot::Intro, CardSlot::Outro];

    /// The name used in the graph's labels and in messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            CardSlot::Intro => "intro",
            CardSlot::Outro => "outro",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_print_as_filters_take_them_and_refuse_zero() {
        assert_eq!(Fraction { num: 30, den: 1 }.to_string(), "30");
        assert_eq!(Fraction { num: 30000, den: 1001 }.to_string(), "30000/1001");
        assert_eq!(Fraction::from_rational(Rational::new(0, 1)), None);
        assert_eq!(Fraction::from_rational(Rational::new(25, 0)), None);
        let ntsc = Fraction::from_rational(Rational::new(30000, 1001)).expect("a rate");
        assert_eq!(ntsc.to_rational(), Rational::new(30000, 1001));
    }

    #[test]
    fn a_degenerate_display_matrix_leaves_the_picture_as_it_is() {
        assert_eq!(
            Transform::from_display_matrix(&[0; 9], f64::NAN),
            (0, Transform::Identity)
        );
        assert_eq!(Size::new(1920, 1080).transposed().to_string(), "1080x1920");
    }
}
