//! The poster: one picture of the rendition for listing pages and
//! `<video poster>`, taken in the same pass from the frames the encoder
//! gets (so it is letterboxed, upright and watermarked exactly like the
//! video), never from a second decode of the input.
//!
//! The rule: the first frame of the main video (not a card) at or after a
//! tenth of its length (at least 1 s, at most 5 s in) that is neither dark
//! nor flat nor in a fade: mean luma above black, enough spread that it is
//! not a uniform frame, and about as bright as the frame a quarter of a
//! second before (a fade-in or fade-out changes brightness steadily). A
//! video that never has such a frame gets its most detailed one. Luma
//! statistics use a sparse grid (every 8th pixel of every 8th row), so the
//! choice costs next to nothing per frame.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use ffmpeg_next::{Packet, Rational, codec, encoder, format, frame};

use crate::error::{Error, Result};

/// A frame whose luma (TV range, 16 to 235) averages below this is too
/// dark to be a poster.
const MIN_MEAN: f64 = 50.0;
/// Nor above this (a flash, a white card).
const MAX_MEAN: f64 = 225.0;
/// A frame whose luma varies less than this (standard deviation) is a fade
/// or a flat frame.
const MIN_SPREAD: f64 = 18.0;
/// Before the target time, look at one frame in this many (for the fallback).
const EARLY_STRIDE: u64 = 8;
/// Brightness is compared with the frame this many frames before…
const STABLE_FRAMES: usize = 8;
/// …and may differ by at most this much (TV-range luma) for a steady
/// picture. A one-second fade changes it by several units a frame.
const MAX_DRIFT: f64 = 4.0;
/// JPEG quality, as libavcodec's qscale (2 is best, 31 worst).
const JPEG_QSCALE: i32 = 3;

/// Looks at the frames as they go by and keeps the poster.
pub(super) struct PosterPicker {
    /// Where the main video starts and ends in the output, in seconds.
    start: f64,
    end: f64,
    /// From here on, the first good frame is the poster.
    target: f64,
    seen: u64,
    /// The mean luma of the last frames, oldest first, near and after the
    /// target.
    recent: VecDeque<f64>,
    /// The most detailed frame so far, with its spread, for a video with
    /// no good frame.
    fallback: Option<(f64, frame::Video)>,
    chosen: Option<frame::Video>,
}

impl PosterPicker {
    /// A picker for a rendition whose main video starts after `intro` and
    /// is expected to last `main`.
    pub(super) fn new(intro: Duration, main: Duration) -> Self {
        let (start, length) = (intro.as_secs_f64(), main.as_secs_f64());
        let into = (length * 0.1).clamp(1.0, 5.0).min(length * 0.5);
        PosterPicker {
            start,
            end: start + length,
            target: start + into,
            seen: 0,
            recent: VecDeque::with_capacity(STABLE_FRAMES + 1),
            fallback: None,
            chosen: None,
        }
    }

    /// Whether the poster is chosen (no need to look further).
    pub(super) fn done(&self) -> bool {
        self.chosen.is_some()
    }

    /// Looks at an output frame shown at `t` seconds.
    pub(super) fn offer(&mut self, frame: &frame::Video, t: f64) {
        if self.done() || t < self.start || t >= self.end {
            return;
        }
        self.seen += 1;
        let early = t < self.target;
        // Every frame from shortly before the target, to know the drift.
        let watching = t + 0.5 >= self.target;
        if !watching && !self.seen.is_multiple_of(EARLY_STRIDE) {
            return;
        }
        let (mean, spread) = luma_stats(frame);
        let steady =
            self.recent.len() == STABLE_FRAMES && self.recent.front().is_some_and(|m| (mean - m).abs() <= MAX_DRIFT);
        if watching {
            self.recent.push_back(mean);
            if self.recent.len() > STABLE_FRAMES {
                self.recent.pop_front();
            }
        }
        let good = spread >= MIN_SPREAD && (MIN_MEAN..=MAX_MEAN).contains(&mean) && steady;
        if good && !early {
            self.chosen = Some(frame.clone());
            return;
        }
        if self.fallback.as_ref().is_none_or(|(best, _)| spread > *best) {
            self.fallback = Some((spread, frame.clone()));
        }
    }

    /// The poster: the chosen frame, else the most detailed one seen.
    pub(super) fn into_picture(self) -> Option<frame::Video> {
        self.chosen.or(self.fallback.map(|(_, f)| f))
    }
}

/// Mean and standard deviation of the luma, on a sparse grid.
fn luma_stats(frame: &frame::Video) -> (f64, f64) {
    let (w, h, stride) = (frame.width() as usize, frame.height() as usize, frame.stride(0));
    let data = frame.data(0);
    let (mut sum, mut squares, mut n) = (0f64, 0f64, 0f64);
    for y in (0..h).step_by(8) {
        let row = &data[y * stride..y * stride + w];
        for &v in row.iter().step_by(8) {
            let v = f64::from(v);
            sum += v;
            squares += v * v;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = sum / n;
    (mean, (squares / n - mean * mean).max(0.0).sqrt())
}

/// Writes a BT.709 TV-range yuv420p frame (what the encoder gets) as a
/// baseline JPEG at `path`, in the colours JPEG viewers assume: BT.601
/// full range (JFIF).
pub(super) fn write_jpeg(picture: &frame::Video, path: &Path) -> Result<()> {
    let fail = |stage: &'static str| move |e: ffmpeg_next::Error| Error::internal(path, stage, e);
    let full = to_jfif(picture);
    let mjpeg = encoder::find(codec::Id::MJPEG).ok_or_else(|| Error::Internal {
        path: path.to_owned(),
        stage: "finding the JPEG encoder",
        source: ffmpeg_next::Error::EncoderNotFound,
        log: String::new(),
    })?;
    let mut ctx = codec::Context::new_with_codec(mjpeg)
        .encoder()
        .video()
        .map_err(fail("creating the JPEG encoder"))?;
    ctx.set_width(full.width());
    ctx.set_height(full.height());
    ctx.set_format(format::Pixel::YUVJ420P);
    ctx.set_colorspace(ffmpeg_next::color::Space::BT470BG);
    ctx.set_color_range(ffmpeg_next::color::Range::JPEG);
    ctx.set_time_base(Rational::new(1, 1));
    ctx.set_flags(codec::Flags::QSCALE);
    ctx.set_global_quality(JPEG_QSCALE * ffmpeg_next::ffi::FF_QP2LAMBDA);
    let mut encoder = ctx.open_as(mjpeg).map_err(fail("opening the JPEG encoder"))?;
    encoder.send_frame(&full).map_err(fail("encoding the poster"))?;
    encoder.send_eof().map_err(fail("encoding the poster"))?;
    let mut packet = Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(fail("encoding the poster"))?;
    let bytes = packet.data().unwrap_or_default();
    std::fs::write(path, bytes).map_err(|source| Error::OutputIo {
        path: path.to_owned(),
        source,
    })
}

/// The picture converted from BT.709 TV range to JFIF's colours: BT.601
/// matrix, full range (yuvj420p).
///
/// JFIF fixes the matrix at BT.601 and browsers, image viewers and
/// libjpeg decode every baseline JPEG that way, whatever the file says.
/// Widening the range alone would keep BT.709 values that viewers then
/// read as BT.601: pure red came out as (233, 0, 2). swscale cannot do
/// it: its YUV-to-YUV path changes the range but ignores the matrix.
///
/// Both matrices keep gray gray, so the new chroma depends only on the old
/// chroma, and one 2x2 block's chroma stays one value (the subsampling is
/// unchanged). Each pixel's new luma takes the chroma of its block.
fn to_jfif(picture: &frame::Video) -> frame::Video {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let mut out = frame::Video::new(format::Pixel::YUVJ420P, w as u32, h as u32);
    out.set_pts(Some(0));
    let m = bt709_to_bt601();
    // Chroma first: normalised (-0.5..0.5) BT.709 values per block, kept
    // for the luma pass.
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut chroma = vec![(0f32, 0f32); cw * ch];
    let (cb_stride, cr_stride) = (picture.stride(1), picture.stride(2));
    let (cb_in, cr_in) = (picture.data(1), picture.data(2));
    let tv = |v: u8| (f32::from(v) - 128.0) / 224.0;
    for y in 0..ch {
        for x in 0..cw {
            chroma[y * cw + x] = (tv(cb_in[y * cb_stride + x]), tv(cr_in[y * cr_stride + x]));
        }
    }
    let full = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    for plane in [1, 2] {
        let stride = out.stride(plane);
        let row = m[plane];
        let data = out.data_mut(plane);
        for y in 0..ch {
            for x in 0..cw {
                let (cb, cr) = chroma[y * cw + x];
                data[y * stride + x] = full(row[1] * cb + row[2] * cr + 0.5);
            }
        }
    }
    let (y_stride, out_stride) = (picture.stride(0), out.stride(0));
    let luma_in = picture.data(0);
    let luma_out = out.data_mut(0);
    for y in 0..h {
        for x in 0..w {
            let (cb, cr) = chroma[(y / 2) * cw + x / 2];
            let luma = (f32::from(luma_in[y * y_stride + x]) - 16.0) / 219.0;
            luma_out[y * out_stride + x] = full(luma + m[0][1] * cb + m[0][2] * cr);
        }
    }
    out
}

/// The matrix from normalised BT.709 Y'CbCr (Y' 0..1, Cb and Cr
/// -0.5..0.5) to normalised BT.601 Y'CbCr, through R'G'B' (ITU-R BT.709
/// and BT.601 luma coefficients).
fn bt709_to_bt601() -> [[f32; 3]; 3] {
    let convert = |[y, cb, cr]: [f32; 3]| {
        let (kr, kb) = (0.2126, 0.0722);
        let r = y + 2.0 * (1.0 - kr) * cr;
        let b = y + 2.0 * (1.0 - kb) * cb;
        let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
        let (kr, kb) = (0.299, 0.114);
        let y = kr * r + (1.0 - kr - kb) * g + kb * b;
        [y, (b - y) / (2.0 * (1.0 - kb)), (r - y) / (2.0 * (1.0 - kr))]
    };
    let columns = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]].map(convert);
    std::array::from_fn(|row| std::array::from_fn(|col| columns[col][row]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(value: u8) -> frame::Video {
        let mut f = frame::Video::new(format::Pixel::YUV420P, 64, 64);
        for plane in 0..3 {
            f.data_mut(plane).fill(if plane == 0 { value } else { 128 });
        }
        f
    }

    fn striped() -> frame::Video {
        let mut f = flat(128);
        let stride = f.stride(0);
        for (i, v) in f.data_mut(0).iter_mut().enumerate() {
            *v = if ((i % stride) / 8).is_multiple_of(2) { 60 } else { 200 };
        }
        f
    }

    /// A detailed picture at `level` brightness (a fade's frame).
    fn faded(level: f64) -> frame::Video {
        let mut f = striped();
        for v in f.data_mut(0).iter_mut() {
            *v = (16.0 + (f64::from(*v) - 16.0) * level).round() as u8;
        }
        f
    }

    #[test]
    fn a_fade_in_is_skipped_for_the_steady_picture_after_it() {
        let mut picker = PosterPicker::new(Duration::ZERO, Duration::from_secs(10));
        for i in 0..300u32 {
            let t = f64::from(i) / 30.0;
            // Black for 1.5 s, a fade over 1 s, then steady.
            let level = ((t - 1.5) / 1.0).clamp(0.0, 1.0);
            picker.offer(&faded(level), t);
        }
        let poster = picker.into_picture().expect("a poster");
        let (want, _) = luma_stats(&striped());
        let (mean, _) = luma_stats(&poster);
        assert!((mean - want).abs() < 1.0, "a frame of the fade: {mean} (steady {want})");
    }

    #[test]
    fn dark_and_flat_frames_are_skipped_for_the_first_detailed_one() {
        crate::fflog::init();
        let mut picker = PosterPicker::new(Duration::ZERO, Duration::from_secs(10));
        let fps = 30.0;
        for i in 0..300u32 {
            let t = f64::from(i) / fps;
            // Black for 2 s, flat gray until 3 s, then a detailed picture.
            let f = if t < 2.0 {
                flat(16)
            } else if t < 3.0 {
                flat(128)
            } else {
                striped()
            };
            picker.offer(&f, t);
        }
        let poster = picker.into_picture().expect("a poster");
        let (mean, spread) = luma_stats(&poster);
        assert!(spread > MIN_SPREAD && mean > MIN_MEAN, "{mean} {spread}");
    }

    #[test]
    fn the_matrix_keeps_gray_and_moves_a_709_red_to_the_601_red() {
        let m = bt709_to_bt601();
        let apply = |v: [f32; 3]| -> [f32; 3] { std::array::from_fn(|r| (0..3).map(|c| m[r][c] * v[c]).sum()) };
        // Gray stays gray: the new luma and chroma ignore nothing else.
        let gray = apply([0.5, 0.0, 0.0]);
        assert!(
            gray.iter().zip([0.5, 0.0, 0.0]).all(|(g, w)| (g - w).abs() < 1e-6),
            "{gray:?}"
        );
        // Pure red: BT.709 (0.2126, -0.1146, 0.5) is BT.601 (0.299, -0.1687, 0.5).
        let red = apply([0.2126, -0.114_572, 0.5]);
        let want = [0.299, -0.168_736, 0.5];
        assert!(red.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-4), "{red:?}");
    }

    #[test]
    fn a_video_with_no_good_frame_still_gets_its_best_one() {
        let mut picker = PosterPicker::new(Duration::from_secs(2), Duration::from_secs(4));
        for i in 0..180u32 {
            picker.offer(&flat(20), f64::from(i) / 30.0);
        }
        assert!(picker.into_picture().is_some());
    }
}
