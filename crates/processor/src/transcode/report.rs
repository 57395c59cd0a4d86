//! What a transcode reports, and the end of one: its outputs flushed and
//! put in place, all of them or none.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Finished;
use super::mux::Encoding;
use super::outputs::{self, Level, Rendition, StoryboardFiles};
use super::source::MainSource;
use crate::error::Result;
use crate::geom::Fraction;
use crate::probe::MediaInfo;
use crate::spec::RenditionSpec;

/// What a finished transcode produced and what it cost.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// What the probe learnt about the input.
    pub input: MediaInfo,
    /// Where the rendition was written.
    pub output: PathBuf,
    /// Length of the rendition, cards included.
    pub duration: Duration,
    /// Video frames written.
    pub frames: u64,
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Output frame rate.
    pub frame_rate: Fraction,
    /// Whether the rendition has an audio track.
    pub has_audio: bool,
    /// Size of the rendition in bytes.
    pub bytes: u64,
    /// Wall-clock time the call took.
    pub elapsed: Duration,
    /// Media time produced per second of wall-clock time (x real time).
    pub speed: f64,
    /// Input packets the decoder rejected as damaged (the job still
    /// succeeded with the rest).
    pub decode_errors: u64,
    /// Bytes of the input actually read: reading stops at the cap, so most
    /// of a long upload is never read.
    pub input_bytes_read: u64,
    /// Where the poster was written, if the spec asked for one.
    pub poster: Option<PathBuf>,
    /// Every MP4 rendition, the primary (at `output`) first, then the
    /// ladder's.
    pub renditions: Vec<Rendition>,
    /// The HLS master playlist, if the spec asked for HLS.
    pub hls: Option<PathBuf>,
    /// The storyboard, if the spec asked for one.
    pub storyboard: Option<StoryboardFiles>,
    /// Every file written besides the primary rendition and its poster (the
    /// ladder, HLS, the storyboard), in the extras directory: `output`
    /// without its extension.
    pub extras: Vec<PathBuf>,
}

/// The primary rendition while it is written.
pub(super) struct Written {
    /// Its temporary file.
    pub(super) partial: tempfile::NamedTempFile,
    /// Its encoding.
    pub(super) primary: Encoding,
}

/// Flushes the outputs of a finished pipeline, puts them in place (all of
/// them or, after an error, none) and reports.
pub(super) fn conclude(
    finished: Finished,
    main: &MainSource,
    written: Written,
    spec: &RenditionSpec,
    output: &Path,
    rate: Fraction,
    started: Instant,
) -> Result<Report> {
    let Written { partial, primary } = written;
    let mut mux = finished.mux;
    mux.finish()?;
    let (frames, has_audio) = (mux.frames, mux.has_audio());
    let (average_kbps, peak_kbps) = outputs::rates(&mux.packet_bytes, rate, frames);
    drop(mux);
    let duration = Duration::from_secs_f64(frames as f64 / rate.as_f64());
    let done = match finished.extras {
        Some(extras) => Some(extras.finish(
            Level {
                name: primary.name.clone(),
                size: primary.size,
            },
            rate,
            duration,
        )?),
        None => None,
    };
    let (bytes, poster) = outputs::put_in_place(partial, finished.poster.as_ref(), output)?;
    let mut renditions = vec![Rendition {
        name: primary.name,
        path: output.to_owned(),
        width: spec.width,
        height: spec.height,
        bytes,
        average_kbps,
        peak_kbps,
    }];
    let (mut hls, mut storyboard, mut extras) = (None, None, Vec::new());
    if let Some(done) = done {
        if let Err(e) = done.dir.persist() {
            // Nothing partial: the primary goes too.
            let _ = std::fs::remove_file(output);
            if let Some(p) = &poster {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
        renditions.extend(done.renditions);
        (hls, storyboard, extras) = (done.hls, done.storyboard, done.files);
    }
    let elapsed = started.elapsed();
    Ok(Report {
        input: main.facts.info.clone(),
        output: output.to_owned(),
        duration,
        frames,
        width: spec.width,
        height: spec.height,
        frame_rate: rate,
        has_audio,
        bytes,
        elapsed,
        speed: duration.as_secs_f64() / elapsed.as_secs_f64().max(1e-6),
        decode_errors: finished.decode_errors,
        input_bytes_read: main.input.bytes_read(),
        poster,
        renditions,
        hls,
        storyboard,
        extras,
    })
}
