//! What a transcode writes besides the primary rendition and its poster:
//! the ladder's further renditions (each its own encoder thread, fed from
//! its own sink of the one filter graph), HLS for every rendition, and the
//! storyboard, all in the extras directory ([`ExtrasDir`]).

use std::path::PathBuf;
use std::time::Duration;

use ffmpeg_next::frame;

use super::encode::EncodeThread;
use super::mux::{Encoding, Muxer};
use super::outputs::{self, ExtrasDir, Level, Rendition, StoryboardFiles};
use super::storyboard::StoryboardPicker;
use crate::error::{Error, Result};
use crate::geom::{Fraction, Size};
use crate::spec::RenditionSpec;

/// One further rendition in flight.
struct RungOut {
    encoding: Encoding,
    /// Its MP4 in the partial directory.
    path: PathBuf,
    encode: EncodeThread,
    /// Its sink reached its end.
    done: bool,
}

/// The extras of one transcode, while it runs.
pub(super) struct Extras {
    dir: ExtrasDir,
    hls: bool,
    rungs: Vec<RungOut>,
    storyboard: Option<StoryboardPicker>,
}

/// What the extras came to.
pub(super) struct ExtrasDone {
    pub renditions: Vec<Rendition>,
    pub hls: Option<PathBuf>,
    pub storyboard: Option<StoryboardFiles>,
    pub files: Vec<PathBuf>,
    pub dir: ExtrasDir,
}

impl Extras {
    /// The extras `spec` asks for, beside `output`; `None` when it asks for
    /// none. Starts the ladder's encoders.
    pub(super) fn open(
        spec: &RenditionSpec,
        output: &std::path::Path,
        rate: Fraction,
        expected: Duration,
    ) -> Result<Option<Self>> {
        if spec.ladder.is_empty() && !spec.hls && !spec.storyboard {
            return Ok(None);
        }
        let mut extras = Extras {
            dir: ExtrasDir::create(output)?,
            hls: spec.hls,
            rungs: Vec::new(),
            storyboard: spec
                .storyboard
                .then(|| StoryboardPicker::new(expected, Size::new(spec.width, spec.height))),
        };
        for rung in &spec.ladder {
            let encoding = Encoding::rung(spec, rung);
            let path = extras.dir.path(&format!("{}.mp4", rung.name));
            let hls = extras.hls_dir(&encoding.name)?;
            let mux = Muxer::create(
                &path,
                &extras.dir.final_path(&path),
                &encoding,
                rate,
                false,
                hls.as_deref(),
            )?;
            extras.rungs.push(RungOut {
                encoding,
                path,
                encode: EncodeThread::start(mux)?,
                done: false,
            });
        }
        Ok(Some(extras))
    }

    /// The directory of a rendition's HLS files, made now, if HLS is on.
    pub(super) fn hls_dir(&self, name: &str) -> Result<Option<PathBuf>> {
        if !self.hls {
            return Ok(None);
        }
        self.dir.subdir(&format!("hls/{name}")).map(Some)
    }

    /// How many further renditions there are.
    pub(super) fn rungs(&self) -> usize {
        self.rungs.len()
    }

    /// Whether the `i`-th further rendition's sink is still open.
    pub(super) fn rung_open(&self, i: usize) -> bool {
        self.rungs.get(i).is_some_and(|r| !r.done)
    }

    /// The `i`-th further rendition's sink ended.
    pub(super) fn rung_ended(&mut self, i: usize) {
        if let Some(r) = self.rungs.get_mut(i) {
            r.done = true;
        }
    }

    /// Hands a frame of the `i`-th further rendition to its encoder.
    pub(super) fn rung_frame(&mut self, i: usize, frame: frame::Video) -> Result<()> {
        match self.rungs.get_mut(i) {
            Some(r) => r.encode.video(frame),
            None => Ok(()),
        }
    }

    /// Offers a frame of the primary rendition, at `t` seconds, to the
    /// storyboard.
    pub(super) fn offer(&mut self, picture: &frame::Video, t: f64) -> std::result::Result<(), ffmpeg_next::Error> {
        match self.storyboard.as_mut() {
            Some(s) => s.offer(picture, t),
            None => Ok(()),
        }
    }

    /// Finishes the ladder's files, the master playlist (the primary's
    /// `primary` level first) and the storyboard, in the partial directory.
    pub(super) fn finish(self, primary: Level, rate: Fraction, duration: Duration) -> Result<ExtrasDone> {
        let mut renditions = Vec::new();
        let mut levels = vec![primary];
        for rung in self.rungs {
            let mut mux = rung.encode.finish()?;
            mux.finish()?;
            let (average_kbps, peak_kbps) = outputs::rates(&mux.packet_bytes, rate, mux.frames);
            drop(mux);
            let bytes = std::fs::metadata(&rung.path)
                .map_err(|source| Error::OutputIo {
                    path: self.dir.final_path(&rung.path),
                    source,
                })?
                .len();
            renditions.push(Rendition {
                name: rung.encoding.name.clone(),
                path: self.dir.final_path(&rung.path),
                width: rung.encoding.size.w,
                height: rung.encoding.size.h,
                bytes,
                average_kbps,
                peak_kbps,
            });
            levels.push(Level {
                name: rung.encoding.name,
                size: rung.encoding.size,
            });
        }
        let hls = if self.hls {
            let root = self.dir.path("hls");
            outputs::write_master(&root, &levels, rate)?;
            Some(self.dir.final_path(&root.join("master.m3u8")))
        } else {
            None
        };
        let storyboard = match self.storyboard {
            Some(picker) => {
                let (sprite, vtt) = (self.dir.path("storyboard.jpg"), self.dir.path("storyboard.vtt"));
                picker.write(&sprite, &vtt, duration)?.map(|files| StoryboardFiles {
                    sprite: self.dir.final_path(&files.sprite),
                    vtt: self.dir.final_path(&files.vtt),
                    ..files
                })
            }
            None => None,
        };
        Ok(ExtrasDone {
            renditions,
            hls,
            storyboard,
            files: self.dir.files()?,
            dir: self.dir,
        })
    }
}
