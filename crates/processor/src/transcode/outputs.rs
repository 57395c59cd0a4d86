//! Where a transcode's files go, and what they hold.
//!
//! The primary rendition and its poster are written under temporary names
//! beside `output` and renamed into place only on success. The extras (the
//! ladder's MP4s, HLS, the storyboard) go into a directory beside them,
//! named after the rendition (`clip.mp4` gets `clip/`), built under a
//! partial name and renamed into place at the end: after an error nothing
//! is left. Every file gets the usual mode under the caller's umask (0644
//! with the common 022), so a web server or another user can read what a
//! local run wrote.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ffmpeg_next::frame;
use serde::{Deserialize, Serialize};

use super::poster;
use crate::error::{Error, Result};
use crate::geom::{Fraction, Size};

/// One MP4 rendition a transcode wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    /// Its name: `720p` for the primary (its height), the rung's for the
    /// others.
    pub name: String,
    /// Where it was written.
    pub path: PathBuf,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// The video's average rate, in kbit/s.
    pub average_kbps: u32,
    /// The video's highest rate over any one second, in kbit/s.
    pub peak_kbps: u32,
}

/// The storyboard a transcode wrote.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoryboardFiles {
    /// The JPEG sprite of thumbnails, row by row.
    pub sprite: PathBuf,
    /// The WebVTT file whose cues point into it (`storyboard.jpg#xywh=…`).
    pub vtt: PathBuf,
    /// Thumbnails in it.
    pub thumbnails: u32,
    /// Their size.
    pub thumbnail_width: u32,
    /// Their size.
    pub thumbnail_height: u32,
    /// Seconds of the rendition each thumbnail stands for.
    pub interval: f64,
}

/// The directory of a transcode's extras, while it is being written.
pub(super) struct ExtrasDir {
    partial: PathBuf,
    target: PathBuf,
    done: bool,
}

impl ExtrasDir {
    /// A partial directory beside `output`, to become `output` without its
    /// extension.
    pub(super) fn create(output: &Path) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let target = output.with_extension("");
        let err = |source: io::Error| Error::OutputIo {
            path: target.clone(),
            source,
        };
        let parent = parent_dir(output);
        for _ in 0..100 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let partial = parent.join(format!(".vidworker-{}-{n}.part", std::process::id()));
            match DirBuilder::new().mode(0o777).create(&partial) {
                Ok(()) => {
                    return Ok(ExtrasDir {
                        partial,
                        target,
                        done: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free partial name",
        )))
    }

    /// A path inside the partial directory.
    pub(super) fn path(&self, relative: &str) -> PathBuf {
        self.partial.join(relative)
    }

    /// A subdirectory of the partial directory, made now.
    pub(super) fn subdir(&self, relative: &str) -> Result<PathBuf> {
        let dir = self.path(relative);
        DirBuilder::new()
            .mode(0o777)
            .recursive(true)
            .create(&dir)
            .map_err(|source| Error::OutputIo {
                path: self.target.join(relative),
                source,
            })?;
        Ok(dir)
    }

    /// Where a path inside the partial directory will be once it is in
    /// place.
    pub(super) fn final_path(&self, partial_path: &Path) -> PathBuf {
        match partial_path.strip_prefix(&self.partial) {
            Ok(rest) => self.target.join(rest),
            Err(_) => partial_path.to_owned(),
        }
    }

    /// Every file written, as its final path, sorted.
    pub(super) fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut dirs = vec![self.partial.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = fs::read_dir(&dir).map_err(|source| Error::OutputIo {
                path: self.target.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(self.final_path(&path));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Moves the directory into place, replacing one a previous run left
    /// there.
    pub(super) fn persist(mut self) -> Result<PathBuf> {
        let err = |source: io::Error| Error::OutputIo {
            path: self.target.clone(),
            source,
        };
        if self.target.is_dir() {
            fs::remove_dir_all(&self.target).map_err(err)?;
        }
        fs::rename(&self.partial, &self.target).map_err(err)?;
        self.done = true;
        Ok(self.target.clone())
    }
}

impl Drop for ExtrasDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.partial);
        }
    }
}

/// The video's average and one-second peak rate in kbit/s, from the size
/// of each packet by frame number.
pub(super) fn rates(packets: &[(i64, usize)], rate: Fraction, frames: u64) -> (u32, u32) {
    let fps = rate.as_f64().max(1.0);
    let total: usize = packets.iter().map(|(_, b)| b).sum();
    let seconds = (frames as f64 / fps).max(1.0 / fps);
    let average = (total as f64 * 8.0 / seconds / 1000.0) as u32;
    let window = fps.round().max(1.0) as usize;
    let mut by_frame = vec![0usize; frames.max(1) as usize];
    for (pts, bytes) in packets {
        if let Some(slot) = usize::try_from(*pts).ok().and_then(|i| by_frame.get_mut(i)) {
            *slot += bytes;
        }
    }
    let mut sum: usize = by_frame.iter().take(window).sum();
    let mut peak = sum;
    for i in window..by_frame.len() {
        sum = sum + by_frame[i] - by_frame[i - window];
        peak = peak.max(sum);
    }
    let peak_seconds = window.min(by_frame.len()) as f64 / fps;
    (average, (peak as f64 * 8.0 / peak_seconds / 1000.0) as u32)
}

/// One level of the master playlist.
pub(super) struct Level {
    pub name: String,
    pub size: Size,
}

/// Writes `master.m3u8` in `hls_root`, over the media playlists each level
/// has in its own directory: `BANDWIDTH` (the highest segment rate),
/// `AVERAGE-BANDWIDTH`, `RESOLUTION`, `CODECS` (from the init segment's
/// `avcC`) and `FRAME-RATE`, the largest first.
pub(super) fn write_master(hls_root: &Path, levels: &[Level], rate: Fraction) -> Result<()> {
    let mut master = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| Error::OutputIo { path, source }
    };
    for level in levels {
        let dir = hls_root.join(&level.name);
        let playlist = dir.join("index.m3u8");
        let text = fs::read_to_string(&playlist).map_err(err(&playlist))?;
        let (mut peak, mut bits, mut seconds) = (0f64, 0f64, 0f64);
        for (duration, uri) in segments(&text) {
            let bytes = fs::metadata(dir.join(&uri)).map_err(err(&dir.join(&uri)))?.len() as f64;
            peak = peak.max(bytes * 8.0 / duration.max(0.001));
            bits += bytes * 8.0;
            seconds += duration;
        }
        let init = dir.join("init.mp4");
        let codec = codec_string(&fs::read(&init).map_err(err(&init))?).unwrap_or_else(|| "avc1.640028".into());
        master.push_str(&format!(
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},CODECS=\"{codec}\",FRAME-RATE={:.3}\n{}/index.m3u8\n",
            peak.ceil() as u64,
            (bits / seconds.max(0.001)).ceil() as u64,
            level.size.w,
            level.size.h,
            rate.as_f64(),
            level.name
        ));
    }
    let path = hls_root.join("master.m3u8");
    fs::write(&path, master).map_err(err(&path))
}

/// The segments of a media playlist: each `#EXTINF` duration with the URI
/// after it.
fn segments(playlist: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut duration = None;
    for line in playlist.lines().map(str::trim) {
        if let Some(d) = line.strip_prefix("#EXTINF:") {
            duration = d.split(',').next().and_then(|d| d.parse::<f64>().ok());
        } else if !line.is_empty()
            && !line.starts_with('#')
            && let Some(d) = duration.take()
        {
            out.push((d, line.to_owned()));
        }
    }
    out
}

/// `avc1.PPCCLL` (RFC 6381) from the `avcC` box of an init segment.
fn codec_string(init: &[u8]) -> Option<String> {
    let at = init.windows(4).position(|w| w == b"avcC")?;
    let b = init.get(at + 5..at + 8)?;
    Some(format!("avc1.{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
}

/// Moves the finished rendition into place at `output`, its poster (if
/// any) beside it; returns the rendition's size and the poster's path. On
/// an error neither is left behind.
pub(super) fn put_in_place(
    partial: tempfile::NamedTempFile,
    poster: Option<&frame::Video>,
    output: &Path,
) -> Result<(u64, Option<PathBuf>)> {
    let out_err = |source: io::Error| Error::OutputIo {
        path: output.to_owned(),
        source,
    };
    let bytes = fs::metadata(partial.path()).map_err(out_err)?.len();
    let poster = match poster {
        Some(picture) => Some(write_poster(picture, output)?),
        None => None,
    };
    if let Err(e) = partial.persist(output) {
        if let Some(p) = &poster {
            let _ = fs::remove_file(p);
        }
        return Err(out_err(e.error));
    }
    Ok((bytes, poster))
}

/// A temporary file beside `output`, created with the usual mode under the
/// umask (tempfile's own default is 0600, which the rename would keep).
pub(super) fn partial_file(output: &Path, suffix: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".vidworker-")
        .suffix(suffix)
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(parent_dir(output))
}

/// Writes the poster beside `output` (its `.jpg` sibling), through a
/// temporary file so a failure leaves nothing behind.
fn write_poster(picture: &frame::Video, output: &Path) -> Result<PathBuf> {
    let path = output.with_extension("jpg");
    let err = |source: io::Error| Error::OutputIo {
        path: path.clone(),
        source,
    };
    let partial = partial_file(output, ".jpg.part").map_err(err)?;
    poster::write_jpeg(picture, partial.path())?;
    partial.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
}

/// The directory a file is in (`.` for a bare name).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_the_heaviest_second() {
        let rate = Fraction { num: 2, den: 1 };
        // Four frames at 2 fps: 1000, 1000, 4000, 0 bytes.
        let packets = [(0, 1000), (1, 1000), (2, 4000), (3, 0)];
        let (average, peak) = rates(&packets, rate, 4);
        assert_eq!(average, 24, "6000 bytes in 2 s");
        assert_eq!(peak, 40, "frames 1 and 2: 5000 bytes in 1 s");
    }

    #[test]
    fn playlists_give_their_segments_and_init_segments_their_codec() {
        let text = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:2.000000,\nseg_000.m4s\n#EXTINF:1.5,\nseg_001.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            segments(text),
            vec![(2.0, "seg_000.m4s".to_owned()), (1.5, "seg_001.m4s".to_owned())]
        );
        let init = [b"....avcC".as_slice(), &[1, 0x64, 0x00, 0x1f, 0xff]].concat();
        assert_eq!(codec_string(&init).as_deref(), Some("avc1.64001f"));
    }
}
