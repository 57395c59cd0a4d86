//! Probing: what an input file contains, read once into [`MediaInfo`].

use std::path::Path;
use std::time::Duration;

use ffmpeg_next::format::stream::Stream;
use ffmpeg_next::{Rational, codec, color};
use serde::{Deserialize, Serialize};

use crate::colour::SourceColour;
use crate::control::{Budget, CancelFlag};
use crate::error::{Error, Result};
use crate::ffi;
use crate::geom::{Fraction, Size, Transform};
use crate::input::{self, OpenedInput};
use crate::spec::Limits;

/// What a probe learns about an input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The demuxer FFmpeg identified from the content, e.g.
    /// `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: String,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// The duration the container declares, if it declares one.
    #[serde(serialize_with = "secs_opt", deserialize_with = "secs_opt_de")]
    pub duration: Option<Duration>,
    /// The video codec, e.g. `h264`.
    pub video_codec: String,
    /// Width of the decoded picture in pixels.
    pub coded_width: u32,
    /// Height of the decoded picture in pixels.
    pub coded_height: u32,
    /// Width as shown: after non-square pixels and rotation.
    pub display_width: u32,
    /// Height as shown: after non-square pixels and rotation.
    pub display_height: u32,
    /// The sample (pixel) aspect ratio; 1:1 for square pixels.
    pub sample_aspect_ratio: Fraction,
    /// Clockwise rotation to show the picture upright: 0, 90, 180 or 270.
    pub rotation: u16,
    /// The average frame rate, if known.
    pub frame_rate: Option<Fraction>,
    /// The decoded pixel format, e.g. `yuv420p` or `yuv420p10le`.
    pub pixel_format: String,
    /// Whether the picture uses full-range (JPEG) levels.
    pub full_range: bool,
    /// The Y'CbCr matrix the stream is tagged with, e.g. `bt709`,
    /// `smpte170m` or `bt470bg` (both BT.601); `unspecified` when untagged,
    /// and then the rendition reads it as players do: BT.709 from 1280
    /// wide or 577 high up, BT.601 below.
    pub color_space: String,
    /// The transfer characteristic, e.g. `bt709`, `arib-std-b67` (HLG) or
    /// `smpte2084` (PQ).
    pub color_transfer: String,
    /// Whether the video is HDR (PQ or HLG) and gets tone-mapped.
    pub hdr: bool,
    /// Whether there is an audio stream.
    pub has_audio: bool,
    /// The overall bit rate in bits per second, if known.
    pub bit_rate: Option<u64>,
}

fn secs_opt_de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let secs = Option::<f64>::deserialize(d)?;
    secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
        .transpose()
}

fn secs_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Facts about the main video stream that the transcoder needs beyond
/// [`MediaInfo`].
#[derive(Clone, Debug)]
pub(crate) struct VideoFacts {
    pub info: MediaInfo,
    pub video_index: usize,
    pub audio_index: Option<usize>,
    pub time_base: Rational,
    pub transform: Transform,
    /// How the decoded values are read: the matrix (tagged or guessed)
    /// and range.
    pub colour: SourceColour,
    /// The video stream's own declared duration, when the container
    /// states it (not an estimate from the bit rate).
    pub video_duration: Option<Duration>,
}

/// Reads what `path` contains, under the default [`Limits`].
///
/// The file is opened with the same defences as [`process`](crate::process):
/// playlists, scripts and containers outside the allowlist are refused.
///
/// ```no_run
/// let info = processor::probe(std::path::Path::new("clip.mov"))?;
/// println!("{}x{} shown as {}x{}", info.coded_width, info.coded_height,
///          info.display_width, info.display_height);
/// # Ok::<(), processor::Error>(())
/// ```
pub fn probe(path: &Path) -> Result<MediaInfo> {
    probe_with(path, &Limits::default(), &CancelFlag::new())
}

/// [`probe`] with explicit limits and a cancel flag.
pub fn probe_with(path: &Path, limits: &Limits, cancel: &CancelFlag) -> Result<MediaInfo> {
    crate::fflog::clear();
    let budget = Budget::new(cancel, limits.timeout);
    let input = input::open(path, limits, &budget, false)?;
    Ok(describe(&input, limits)?.info)
}

/// Builds the facts of an opened input and checks the limits that the
/// stream parameters reveal.
pub(crate) fn describe(input: &OpenedInput, limits: &Limits) -> Result<VideoFacts> {
    let path = &input.path;
    let video_index = find_video(input)?;
    let stream = input.ctx.stream(video_index).ok_or_else(|| Error::NotMedia {
        path: path.clone(),
        reason: "video stream vanished".into(),
    })?;
    let params = stream.parameters();
    let codec_id = params.id();
    let picture = ffi::picture_params(&params);
    check_picture(path, codec_id, &picture, limits)?;
    let (sar, rotation, transform, display) = geometry(&stream, &picture);
    let frame_rate = Fraction::from_rational(stream.avg_frame_rate())
        .or_else(|| Fraction::from_rational(stream.rate()))
        .filter(|r| (0.5..=1000.0).contains(&r.as_f64()));
    let timing = ffi::container_timing(&input.ctx);
    let stream_duration = (stream.duration() > 0).then(|| {
        let tb = stream.time_base();
        Duration::from_secs_f64(stream.duration() as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator()))
    });
    let duration = if timing.duration_us > 0 {
        Some(Duration::from_micros(timing.duration_us as u64))
    } else {
        stream_duration
    };
    let audio_index = input.best_audio_stream();
    let pixel_format = picture.pixel_format.unwrap_or("unknown").to_owned();
    let transfer = picture.transfer;
    let full_range = picture.full_range || pixel_format.starts_with("yuvj");
    let colour = SourceColour::new(picture.matrix, full_range, Size::new(picture.width, picture.height));
    let info = MediaInfo {
        container: input.ctx.format().name().to_owned(),
        size_bytes: input.size,
        duration,
        video_codec: codec_id.name().to_owned(),
        coded_width: picture.width,
        coded_height: picture.height,
        display_width: display.0,
        display_height: display.1,
        sample_aspect_ratio: sar,
        rotation,
        frame_rate,
        full_range,
        pixel_format,
        color_space: match picture.matrix {
            Some(color::Space::Unspecified) => "unspecified",
            Some(m) => m.name().unwrap_or("unknown"),
            None => "unknown",
        }
        .to_owned(),
        color_transfer: match transfer {
            Some(color::TransferCharacteristic::Unspecified) => "unspecified",
            Some(t) => t.name().unwrap_or("unknown"),
            None => "unknown",
        }
        .to_owned(),
        hdr: matches!(
            transfer,
            Some(color::TransferCharacteristic::SMPTE2084 | color::TransferCharacteristic::ARIB_STD_B67)
        ),
        has_audio: audio_index.is_some(),
        bit_rate: (timing.bit_rate > 0).then_some(timing.bit_rate as u64),
    };
    Ok(VideoFacts {
        info,
        video_index,
        audio_index,
        time_base: stream.time_base(),
        transform,
        colour,
        video_duration: stream_duration.filter(|_| !timing.estimated),
    })
}

/// The main video stream, or an error saying what the file holds instead.
fn find_video(input: &OpenedInput) -> Result<usize> {
    if let Some(index) = input.best_video_stream() {
        return Ok(index);
    }
    let kinds: Vec<String> = input
        .ctx
        .streams()
        .map(|s| format!("{:?}", s.parameters().medium()).to_lowercase())
        .collect();
    if kinds.is_empty() {
        return Err(Error::NotMedia {
            path: input.path.clone(),
            reason: "no streams found".into(),
        });
    }
    Err(Error::NoVideo {
        path: input.path.clone(),
        detail: format!(": it holds {}", kinds.join(", ")),
    })
}

/// The codec must be one we decode, and the picture a real size within
/// the limit.
fn check_picture(path: &Path, codec_id: codec::Id, picture: &ffi::PictureParams, limits: &Limits) -> Result<()> {
    if codec_id == codec::Id::None {
        return Err(Error::UnsupportedCodec {
            path: path.to_owned(),
            codec: "unknown".into(),
        });
    }
    input::check_video_codec(path, codec_id)?;
    let (w, h) = (picture.width, picture.height);
    if w == 0 || h == 0 {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "the {} stream declares no picture size{}",
                codec_id.name(),
                crate::fflog::recent()
            ),
        });
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::LimitExceeded {
            path: path.to_owned(),
            reason: format!(
                "{w}x{h} is {:.1} Mpx per frame, more than the {:.1} Mpx limit",
                pixels as f64 / 1e6,
                limits.max_pixels as f64 / 1e6
            ),
        });
    }
    Ok(())
}

/// How the picture is shown: its sample aspect ratio, rotation and the
/// display size that follows from both.
fn geometry(stream: &Stream<'_>, picture: &ffi::PictureParams) -> (Fraction, u16, Transform, (u32, u32)) {
    let sar =
        Fraction::from_rational(stream_sar(stream, picture.sample_aspect_ratio)).unwrap_or(Fraction { num: 1, den: 1 });
    let (rotation, transform) = display_matrix(stream)
        .map(|m| transform_of(&m))
        .unwrap_or((0, Transform::Identity));
    let (mut dw, mut dh) = (picture.width, picture.height);
    if sar.num != sar.den {
        dw = ((f64::from(dw) * sar.as_f64()).round() as u32).max(1);
    }
    if transform.swaps_axes() {
        std::mem::swap(&mut dw, &mut dh);
    }
    (sar, rotation, transform, (dw, dh))
}

/// How a display matrix turns the picture: its clockwise rotation in
/// degrees and the transform, with the angle computed as FFmpeg does.
fn transform_of(m: &[i32; 9]) -> (u16, Transform) {
    Transform::from_display_matrix(m, ffi::display_rotation(m))
}

/// The stream's sample aspect ratio, or the codec's when the container has
/// none. Absurd ratios (beyond 1:8 or 8:1) are treated as square.
fn stream_sar(stream: &Stream<'_>, codec_sar: Rational) -> Rational {
    let container = ffi::stream_sample_aspect_ratio(stream);
    let pick = if container.numerator() > 0 && container.denominator() > 0 {
        container
    } else {
        codec_sar
    };
    let value = f64::from(pick.numerator()) / f64::from(pick.denominator().max(1));
    if pick.numerator() > 0 && pick.denominator() > 0 && (0.125..=8.0).contains(&value) {
        pick
    } else {
        Rational::new(1, 1)
    }
}

/// The stream's display matrix side data, if present and well formed.
fn display_matrix(stream: &Stream<'_>) -> Option<[i32; 9]> {
    stream
        .side_data()
        .find(|sd| sd.kind() == codec::packet::side_data::Type::DisplayMatrix)
        .and_then(|sd| {
            let data = sd.data();
            (data.len() >= 36).then(|| {
                let mut m = [0i32; 9];
                for (i, v) in m.iter_mut().enumerate() {
                    let b = &data[i * 4..i * 4 + 4];
                    *v = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                }
                m
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `av_display_rotation_set` takes a clockwise angle, while
    // `av_display_rotation_get` reports counter-clockwise (what ffprobe
    // prints as "rotation of -90.00 degrees" for a portrait phone clip).
    fn matrix_for(clockwise: f64) -> [i32; 9] {
        ffi::display_matrix_for(clockwise)
    }

    #[test]
    fn phone_rotations_map_to_transpose_filters() {
        crate::fflog::init();
        assert_eq!(transform_of(&matrix_for(90.0)), (90, Transform::Clock));
        assert_eq!(transform_of(&matrix_for(270.0)), (270, Transform::CounterClock));
        assert_eq!(transform_of(&matrix_for(180.0)), (180, Transform::HalfTurn));
        assert_eq!(transform_of(&matrix_for(0.0)), (0, Transform::Identity));
        // An odd angle snaps to the nearest quarter turn.
        assert_eq!(transform_of(&matrix_for(85.0)).0, 90);
        assert!(Transform::Clock.swaps_axes() && !Transform::HalfTurn.swaps_axes());
    }
}
