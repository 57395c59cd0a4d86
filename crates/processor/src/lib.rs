//! The FFmpeg core of vidworker: turns one untrusted video upload into the
//! rendition viewers watch, in a single decode → filter → encode pass over
//! the system's FFmpeg libraries. No subprocess, no intermediate file, no
//! async runtime and nothing about queues or storage.
//!
//! A rendition ([`RenditionSpec`]) is by default at most 30 s long, 1280x720
//! with black bars rather than cropping, upright whatever the phone's
//! rotation tag says, watermarked with the league logo, silent, H.264 High
//! (CRF 23, `medium`) at the source's frame rate capped at 30 fps with a
//! keyframe at least every 2 s, in an MP4 whose index comes first so
//! browsers start playing at once.
//!
//! Inputs are treated as hostile: only the given file is read (playlists,
//! scripts and references to other files are refused), containers and
//! codecs are allowlisted, and size, pixels, streams and time are bounded
//! ([`Limits`]). Every failure is an [`Error`] whose message names the file
//! and the reason on one line, and whose [`ErrorClass`] ([`Error::class`])
//! says whose fault it is: the upload's, the spec's, the machine's (a retry
//! may help) or the clock's.
//!
//! ```no_run
//! use std::path::Path;
//! use processor::{CancelFlag, RenditionSpec};
//!
//! let spec = RenditionSpec::default();
//! let report = processor::process(
//!     Path::new("upload.mov"),
//!     Path::new("processed/upload.mp4"),
//!     &spec,
//!     |p| eprint!("\r{:.0}%", p.fraction() * 100.0),
//!     &CancelFlag::new(),
//! )?;
//! println!("{:.1} s in {:.1} s ({:.1}x)", report.duration.as_secs_f64(),
//!          report.elapsed.as_secs_f64(), report.speed);
//! # Ok::<(), processor::Error>(())
//! ```

mod colour;
mod control;
mod error;
mod ffi;
mod fflog;
mod filter;
mod geom;
mod graph;
mod image;
mod input;
mod ladder;
mod probe;
mod spec;
mod transcode;

pub use control::{CancelFlag, Progress};
pub use error::{Error, ErrorClass, Result};
#[cfg(target_env = "gnu")]
pub use ffi::heap_in_use;
pub use geom::Fraction;
pub use image::LOGO_PNG;
pub use input::{ALLOWED_AUDIO_DECODERS, ALLOWED_DEMUXERS, ALLOWED_VIDEO_DECODERS};
pub use ladder::{MAX_RUNGS, RateCap, Rung, STANDARD as STANDARD_RUNGS, default_cap};
pub use probe::{MediaInfo, probe, probe_with};
pub use spec::{
    Card, CardContent, Corner, Fit, Image, Limits, MAX_CARD, MAX_CARDS_TOTAL, PRESETS, RenditionSpec, Watermark,
    X264_TUNING_KEYS,
};
pub use transcode::{Rendition, Report, StoryboardFiles, check_spec, process};

/// The FFmpeg libraries this process loaded, as `(name, "major.minor.micro")`:
/// the ones the dynamic linker found at run time, which may differ from
/// those it was built against.
pub fn library_versions() -> Vec<(&'static str, String)> {
    let v = |n: u32| format!("{}.{}.{}", n >> 16, (n >> 8) & 0xff, n & 0xff);
    vec![
        ("libavutil", v(ffmpeg_next::util::version())),
        ("libavcodec", v(ffmpeg_next::codec::version())),
        ("libavformat", v(ffmpeg_next::format::version())),
        ("libavfilter", v(ffmpeg_next::filter::version())),
        ("libswscale", v(ffmpeg_next::software::scaling::version())),
    ]
}
