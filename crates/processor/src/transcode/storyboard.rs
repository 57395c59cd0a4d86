//! The storyboard: one small thumbnail of the rendition every interval
//! (one second, longer for renditions past 100 s), laid out in a JPEG
//! sprite ten to a row, and a WebVTT file whose cues point into it with
//! `#xywh=`, for a player's scrubbing preview. The thumbnails are taken
//! from the frames the encoder gets, like the poster: letterboxed,
//! watermarked and with the cards, as the viewer sees them.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use ffmpeg_next::software::scaling;
use ffmpeg_next::{format, frame};

use super::outputs::StoryboardFiles;
use super::poster;
use crate::error::{Error, Result};
use crate::geom::Size;

/// Thumbnail width in pixels; the height follows the rendition's shape.
const THUMB_WIDTH: u32 = 160;
/// Thumbnails per row of the sprite.
const COLUMNS: u32 = 10;
/// The most thumbnails one sprite holds (10x10).
const MAX_THUMBS: u32 = 100;

/// Collects the thumbnails while the rendition is encoded.
pub(super) struct StoryboardPicker {
    interval: f64,
    next: f64,
    thumb: Size,
    scaler: Option<scaling::Context>,
    thumbs: Vec<frame::Video>,
}

impl StoryboardPicker {
    /// One thumbnail every second of an `expected`-long rendition of
    /// `size` (more sparsely past [`MAX_THUMBS`] seconds).
    pub(super) fn new(expected: Duration, size: Size) -> Self {
        let interval = (expected.as_secs_f64() / f64::from(MAX_THUMBS)).ceil().max(1.0);
        let height = (f64::from(THUMB_WIDTH) * f64::from(size.h) / f64::from(size.w.max(1)) / 2.0).round() as u32 * 2;
        StoryboardPicker {
            interval,
            next: 0.0,
            thumb: Size::new(THUMB_WIDTH, height.max(2)),
            scaler: None,
            thumbs: Vec::new(),
        }
    }

    /// Offers the output frame at `t` seconds; keeps a thumbnail of it when
    /// its time has come.
    pub(super) fn offer(&mut self, picture: &frame::Video, t: f64) -> std::result::Result<(), ffmpeg_next::Error> {
        if t + 1e-6 < self.next || self.thumbs.len() as u32 >= MAX_THUMBS {
            return Ok(());
        }
        let scaler = match self.scaler.as_mut() {
            Some(s) => s,
            None => self.scaler.insert(scaling::Context::get(
                picture.format(),
                picture.width(),
                picture.height(),
                format::Pixel::YUV420P,
                self.thumb.w,
                self.thumb.h,
                scaling::Flags::AREA,
            )?),
        };
        let mut thumb = frame::Video::empty();
        scaler.run(picture, &mut thumb)?;
        self.thumbs.push(thumb);
        self.next += self.interval;
        Ok(())
    }

    /// Writes the sprite and the cues for a rendition `duration` long.
    pub(super) fn write(self, sprite: &Path, vtt: &Path, duration: Duration) -> Result<Option<StoryboardFiles>> {
        let n = self.thumbs.len() as u32;
        if n == 0 {
            return Ok(None);
        }
        let (columns, rows) = (n.min(COLUMNS), n.div_ceil(COLUMNS));
        let mut sheet = frame::Video::new(format::Pixel::YUV420P, columns * self.thumb.w, rows * self.thumb.h);
        // Black in TV range: what an unfilled place shows.
        for (plane, value) in [(0, 16u8), (1, 128), (2, 128)] {
            sheet.data_mut(plane).fill(value);
        }
        for (i, thumb) in self.thumbs.iter().enumerate() {
            let i = i as u32;
            paste(
                &mut sheet,
                thumb,
                (i % COLUMNS) * self.thumb.w,
                (i / COLUMNS) * self.thumb.h,
            );
        }
        poster::write_jpeg(&sheet, sprite)?;
        let name = sprite
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = cues(&name, n, self.interval, duration.as_secs_f64(), self.thumb);
        std::fs::write(vtt, text).map_err(|source| Error::OutputIo {
            path: vtt.to_owned(),
            source,
        })?;
        Ok(Some(StoryboardFiles {
            sprite: sprite.to_owned(),
            vtt: vtt.to_owned(),
            thumbnails: n,
            thumbnail_width: self.thumb.w,
            thumbnail_height: self.thumb.h,
            interval: self.interval,
        }))
    }
}

/// Copies `thumb` into `sheet` with its top-left corner at (`x`, `y`), all
/// three planes (even coordinates, so the chroma lines up).
fn paste(sheet: &mut frame::Video, thumb: &frame::Video, x: u32, y: u32) {
    for plane in 0..3 {
        let shift = u32::from(plane > 0);
        let (px, py) = ((x >> shift) as usize, (y >> shift) as usize);
        let width = (thumb.width() >> shift) as usize;
        let height = (thumb.height() >> shift) as usize;
        let (from_stride, to_stride) = (thumb.stride(plane), sheet.stride(plane));
        for row in 0..height {
            let from = &thumb.data(plane)[row * from_stride..row * from_stride + width];
            let start = (py + row) * to_stride + px;
            sheet.data_mut(plane)[start..start + width].copy_from_slice(from);
        }
    }
}

/// The WebVTT cues: one per thumbnail, back to back from 0 to `duration`.
fn cues(sprite: &str, n: u32, interval: f64, duration: f64, thumb: Size) -> String {
    let mut text = String::from("WEBVTT\n");
    for i in 0..n {
        let start = f64::from(i) * interval;
        if start >= duration && i > 0 {
            break;
        }
        let end = if i + 1 == n {
            duration
        } else {
            (start + interval).min(duration)
        };
        let (x, y) = ((i % COLUMNS) * thumb.w, (i / COLUMNS) * thumb.h);
        let _ = write!(
            text,
            "\n{} --> {}\n{sprite}#xywh={x},{y},{},{}\n",
            timestamp(start),
            timestamp(end),
            thumb.w,
            thumb.h
        );
    }
    text
}

/// `HH:MM:SS.mmm`.
fn timestamp(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_cover_the_rendition_back_to_back() {
        let text = cues("storyboard.jpg", 12, 1.0, 11.5, Size::new(160, 90));
        assert!(text.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90\n"));
        assert!(text.contains("00:00:10.000 --> 00:00:11.000\nstoryboard.jpg#xywh=0,90,160,90\n"));
        assert!(
            text.ends_with("00:00:11.000 --> 00:00:11.500\nstoryboard.jpg#xywh=160,90,160,90\n"),
            "{text}"
        );
        assert_eq!(timestamp(3725.25), "01:02:05.250");
    }
}
