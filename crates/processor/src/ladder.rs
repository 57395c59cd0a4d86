//! The rendition ladder: further renditions made from the same decode and
//! the same filter graph ([`Rung`]), the rate cap every rendition gets
//! ([`RateCap`], x264's VBV on top of CRF), and the names a list such as
//! `720p,360p` uses ([`STANDARD`]).

use serde::{Deserialize, Serialize};

/// A rate cap: x264's VBV with CRF ("capped CRF"). CRF keeps the quality
/// even; the cap keeps the plays a viewer cares about (fast motion, the
/// crowd) from spiking past what a mobile network carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCap {
    /// The highest sustained rate, in kbit/s (`vbv-maxrate`).
    pub max_kbps: u32,
    /// The decoder buffer, in kbit (`vbv-bufsize`): how far a burst may go
    /// above the rate. Over any stretch of `t` seconds the stream holds at
    /// most `max_kbps * t + buffer_kbits`.
    pub buffer_kbits: u32,
}

impl RateCap {
    /// A cap at `max_kbps` with a buffer of two seconds of it.
    pub const fn new(max_kbps: u32) -> Self {
        RateCap {
            max_kbps,
            buffer_kbits: max_kbps * 2,
        }
    }
}

/// The standard rungs, largest first: name, width, height (16:9) and the
/// rate cap in kbit/s. The caps are the peaks of high-motion material at
/// CRF 23 trimmed to what a mobile connection sustains (README,
/// "Renditions"); they scale with the pixel count, a little less than
/// linearly, as the smaller sizes need more bits per pixel.
pub const STANDARD: &[(&str, u32, u32, u32)] = &[
    ("1080p", 1920, 1080, 7800),
    ("720p", 1280, 720, 4500),
    ("540p", 960, 540, 3000),
    ("480p", 854, 480, 2200),
    ("360p", 640, 360, 1400),
    ("270p", 480, 270, 900),
    ("240p", 426, 240, 700),
    ("144p", 256, 144, 350),
];

/// The default cap of a rendition `height` pixels tall: the standard
/// rung's of that height, or the nearest one below it scaled by the pixel
/// count.
pub fn default_cap(width: u32, height: u32) -> RateCap {
    let standard = STANDARD
        .iter()
        .find(|(_, _, h, _)| *h <= height)
        .unwrap_or(&STANDARD[STANDARD.len() - 1]);
    let (_, w, h, kbps) = *standard;
    let scale = (f64::from(width) * f64::from(height)) / (f64::from(w) * f64::from(h));
    RateCap::new(((f64::from(kbps) * scale) as u32).max(100))
}

/// A further rendition of the ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// Its name, which is also its file name (`360p` makes `360p.mp4`):
    /// lowercase letters and digits.
    pub name: String,
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// The libx264 constant rate factor.
    pub crf: u8,
    /// Its rate cap; `None` for none.
    pub cap: Option<RateCap>,
}

impl Rung {
    /// The standard rung called `name` (`360p`): CRF 23 and the cap of
    /// [`STANDARD`].
    pub fn named(name: &str) -> Option<Rung> {
        let (name, width, height, kbps) = *STANDARD.iter().find(|(n, ..)| *n == name)?;
        Some(Rung {
            name: name.to_owned(),
            width,
            height,
            crf: 23,
            cap: Some(RateCap::new(kbps)),
        })
    }

    /// A rung as a list names it: a standard name (`360p`), or
    /// `NAME:WIDTHxHEIGHT:KBPS` for one of its own (`square:720x720:3000`).
    pub fn parse(s: &str) -> Result<Rung, String> {
        let s = s.trim();
        let mut parts = s.split(':');
        let (Some(name), size, rate, None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(format!("rendition {s:?} is not NAME or NAME:WIDTHxHEIGHT:KBPS"));
        };
        let (Some(size), Some(rate)) = (size, rate) else {
            return Rung::named(name).ok_or_else(|| {
                let names: Vec<&str> = STANDARD.iter().map(|(n, ..)| *n).collect();
                format!(
                    "rendition {name:?} is not one of {} (or NAME:WIDTHxHEIGHT:KBPS)",
                    names.join(", ")
                )
            });
        };
        let bad = || format!("rendition {s:?} is not NAME:WIDTHxHEIGHT:KBPS");
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        Ok(Rung {
            name: name.to_owned(),
            width: w.parse().map_err(|_| bad())?,
            height: h.parse().map_err(|_| bad())?,
            crf: 23,
            cap: Some(RateCap::new(rate.parse().map_err(|_| bad())?)),
        })
    }
}

/// The most further renditions one job makes.
pub const MAX_RUNGS: usize = 4;

/// Checks a cap, naming its rendition.
pub(crate) fn check_cap(name: &str, cap: Option<RateCap>) -> Result<(), String> {
    let Some(cap) = cap else { return Ok(()) };
    if !(100..=100_000).contains(&cap.max_kbps) {
        return Err(format!(
            "rendition {name}: max rate {} kbit/s is outside 100 to 100000",
            cap.max_kbps
        ));
    }
    if cap.buffer_kbits < cap.max_kbps / 4 || cap.buffer_kbits > cap.max_kbps * 10 {
        return Err(format!(
            "rendition {name}: buffer {} kbit is outside a quarter second to ten seconds of its rate",
            cap.buffer_kbits
        ));
    }
    Ok(())
}

/// Whether `name` can name a rendition (and a file).
pub(crate) fn good_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 16 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_are_named_or_spelled_out() {
        let r = Rung::parse("360p").expect("standard");
        assert_eq!((r.width, r.height, r.cap), (640, 360, Some(RateCap::new(1400))));
        let r = Rung::parse("square:720x720:3000").expect("custom");
        assert_eq!((r.name.as_str(), r.width, r.height), ("square", 720, 720));
        assert_eq!(r.cap.map(|c| c.buffer_kbits), Some(6000));
        assert!(Rung::parse("361p").expect_err("unknown").contains("360p"));
        assert!(Rung::parse("a:1x:3").is_err());
    }

    #[test]
    fn the_default_cap_follows_the_size() {
        assert_eq!(default_cap(1280, 720), RateCap::new(4500));
        assert_eq!(default_cap(640, 360), RateCap::new(1400));
        // A square 720x720 between the rungs: 720p's rate by pixel count.
        assert_eq!(default_cap(720, 720).max_kbps, 2531);
    }
}
