//! What a viewer would see in a rendition, read back with FFmpeg's decoders
//! (not with our own code) so the tests check the file, not our intentions.

#![allow(
    dead_code,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test support: a failure is a test failure"
)]

use std::fs;
use std::path::{Path, PathBuf};

use ffmpeg_next::{codec, format, frame, media};
use processor::{CancelFlag, RenditionSpec, Report};

/// A fixture clip by name.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(name)
}

/// Processes `input` with `spec` into a fresh temporary directory.
pub fn render(input: &Path, spec: &RenditionSpec) -> (tempfile::TempDir, PathBuf, Report) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.mp4");
    let report = processor::process(input, &out, spec, |_| {}, &CancelFlag::new())
        .unwrap_or_else(|e| panic!("processing {} failed: {e}", input.display()));
    (dir, out, report)
}

/// The files in a directory, to check nothing partial is left behind.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[derive(Debug)]
pub struct VideoFrame {
    pub time: f64,
    pub key: bool,
}

#[derive(Debug)]
pub struct AudioTrack {
    pub codec: String,
    pub channels: u16,
    pub rate: u32,
    pub duration: f64,
}

/// Everything about a rendition that a player would care about.
#[derive(Debug)]
pub struct Decoded {
    pub container: String,
    pub codec: String,
    pub profile: codec::Profile,
    pub width: u32,
    pub height: u32,
    pub pix_fmt: format::Pixel,
    pub color_range: ffmpeg_next::color::Range,
    pub color_space: ffmpeg_next::color::Space,
    pub color_primaries: ffmpeg_next::color::Primaries,
    pub color_transfer: ffmpeg_next::color::TransferCharacteristic,
    pub frame_rate: f64,
    pub frames: Vec<VideoFrame>,
    /// End of the last frame, in seconds.
    pub duration: f64,
    pub audio: Option<AudioTrack>,
}

/// A frame's colour tags: range, matrix, primaries, transfer.
type Colour = (
    ffmpeg_next::color::Range,
    ffmpeg_next::color::Space,
    ffmpeg_next::color::Primaries,
    ffmpeg_next::color::TransferCharacteristic,
);

/// The decoded video frames, and the first one's size, format and colour.
struct VideoSink<'a> {
    path: &'a Path,
    time_base: f64,
    frame: frame::Video,
    frames: Vec<VideoFrame>,
    first: Option<(u32, u32, format::Pixel, Colour)>,
}

impl<'a> VideoSink<'a> {
    fn new(path: &'a Path, time_base: f64) -> Self {
        VideoSink {
            path,
            time_base,
            frame: frame::Video::empty(),
            frames: Vec::new(),
            first: None,
        }
    }

    /// Takes every frame the decoder has ready; panics on a corrupt one.
    fn drain(&mut self, dec: &mut ffmpeg_next::decoder::Video) {
        let vf = &mut self.frame;
        while dec.receive_frame(vf).is_ok() {
            assert!(!vf.is_corrupt(), "a corrupt frame in {}", self.path.display());
            self.frames.push(VideoFrame {
                time: vf.timestamp().unwrap_or(0) as f64 * self.time_base,
                key: vf.is_key(),
            });
            self.first.get_or_insert((
                vf.width(),
                vf.height(),
                vf.format(),
                (
                    vf.color_range(),
                    vf.color_space(),
                    vf.color_primaries(),
                    vf.color_transfer_characteristic(),
                ),
            ));
        }
    }
}

/// Decodes every frame of every stream; panics on any decode error.
pub fn decode(path: &Path) -> Decoded {
    let mut ictx = format::input(path).expect("output opens");
    let container = ictx.format().name().to_owned();
    let vstream = ictx.streams().best(media::Type::Video).expect("video stream");
    let vindex = vstream.index();
    let vtb = vstream.time_base();
    let frame_rate = f64::from(vstream.avg_frame_rate());
    let mut vdec = codec::Context::from_parameters(vstream.parameters())
        .expect("params")
        .decoder()
        .video()
        .expect("video decoder");
    // The opened decoder's context holds the stream's profile.
    let profile = vdec.profile();
    let codec_name = vstream.parameters().id().name().to_owned();
    let astream = ictx.streams().best(media::Type::Audio);
    let aindex = astream.as_ref().map(|s| s.index());
    let atb = astream.as_ref().map(|s| s.time_base());
    let mut adec = astream.map(|s| {
        codec::Context::from_parameters(s.parameters())
            .expect("params")
            .decoder()
            .audio()
            .expect("audio decoder")
    });
    let mut video = VideoSink::new(path, f64::from(vtb));
    let mut af = frame::Audio::empty();
    let mut audio_end = 0f64;
    for (stream, packet) in ictx.packets() {
        if stream.index() == vindex {
            vdec.send_packet(&packet).expect("every packet decodes");
            video.drain(&mut vdec);
        } else if Some(stream.index()) == aindex
            && let Some(d) = adec.as_mut()
        {
            d.send_packet(&packet).expect("audio decodes");
            while d.receive_frame(&mut af).is_ok() {
                let t = af.timestamp().unwrap_or(0) as f64 * f64::from(atb.expect("tb"));
                audio_end = audio_end.max(t + af.samples() as f64 / f64::from(af.rate()));
            }
        }
    }
    vdec.send_eof().expect("eof");
    video.drain(&mut vdec);
    let VideoSink { mut frames, first, .. } = video;
    frames.sort_by(|a, b| a.time.total_cmp(&b.time));
    let (width, height, pix_fmt, (color_range, color_space, color_primaries, color_transfer)) =
        first.expect("at least one frame");
    let duration = frames.last().map_or(0.0, |f| f.time + 1.0 / frame_rate);
    let audio = adec.map(|d| AudioTrack {
        codec: d.id().name().to_owned(),
        channels: d.channels(),
        rate: d.rate(),
        duration: audio_end,
    });
    Decoded {
        container,
        codec: codec_name,
        profile,
        width,
        height,
        pix_fmt,
        color_range,
        color_space,
        color_primaries,
        color_transfer,
        frame_rate,
        frames,
        duration,
        audio,
    }
}

/// One decoded picture, readable as RGB.
pub struct Picture(frame::Video);

impl Picture {
    /// The colour at (x, y) as a viewer shows it: a video (yuv420p) as
    /// BT.709 TV range, a JPEG (yuvj420p) as JFIF says, BT.601 full range.
    pub fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let f = &self.0;
        let full = match f.format() {
            format::Pixel::YUV420P => false,
            format::Pixel::YUVJ420P => true,
            other => panic!("unexpected pixel format {other:?}"),
        };
        let (x, y) = (x as usize, y as usize);
        let yv = f.data(0)[y * f.stride(0) + x] as f64;
        let u = f.data(1)[(y / 2) * f.stride(1) + x / 2] as f64;
        let v = f.data(2)[(y / 2) * f.stride(2) + x / 2] as f64;
        let (yn, cb, cr) = if full {
            (yv / 255.0, (u - 128.0) / 255.0, (v - 128.0) / 255.0)
        } else {
            ((yv - 16.0) / 219.0, (u - 128.0) / 224.0, (v - 128.0) / 224.0)
        };
        let to = |c: f64| (c * 255.0).round().clamp(0.0, 255.0) as u8;
        if full {
            [
                to(yn + 1.402 * cr),
                to(yn - 0.344_136 * cb - 0.714_136 * cr),
                to(yn + 1.772 * cb),
            ]
        } else {
            [
                to(yn + 1.5748 * cr),
                to(yn - 0.1873 * cb - 0.4681 * cr),
                to(yn + 1.8556 * cb),
            ]
        }
    }

    /// The coded Y', Cb and Cr at (x, y) of a 4:2:0 picture, untouched.
    pub fn ycbcr(&self, x: u32, y: u32) -> [u8; 3] {
        let f = &self.0;
        assert!(
            matches!(f.format(), format::Pixel::YUV420P | format::Pixel::YUVJ420P),
            "unexpected pixel format {:?}",
            f.format()
        );
        let (x, y) = (x as usize, y as usize);
        [
            f.data(0)[y * f.stride(0) + x],
            f.data(1)[(y / 2) * f.stride(1) + x / 2],
            f.data(2)[(y / 2) * f.stride(2) + x / 2],
        ]
    }

    /// The luma value at (x, y).
    pub fn luma(&self, x: u32, y: u32) -> u8 {
        self.0.data(0)[y as usize * self.0.stride(0) + x as usize]
    }

    /// Width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.0.width(), self.0.height())
    }

    /// The mean luma over a `w`x`h` region at (`x`, `y`), in the picture's
    /// own range.
    pub fn mean_luma_in(&self, x: u32, y: u32, w: u32, h: u32) -> f64 {
        let mut sum = 0u64;
        for row in y..y + h {
            for col in x..x + w {
                sum += u64::from(self.luma(col, row));
            }
        }
        sum as f64 / f64::from((w * h).max(1))
    }

    /// The mean luma over the whole picture, in the picture's own range.
    pub fn mean_luma(&self) -> f64 {
        let (w, h) = self.size();
        let mut sum = 0u64;
        for y in 0..h {
            for x in 0..w {
                sum += u64::from(self.luma(x, y));
            }
        }
        sum as f64 / f64::from(w * h)
    }
}

/// The first frame at or after `secs`.
pub fn picture_at(path: &Path, secs: f64) -> Picture {
    let mut ictx = format::input(path).expect("opens");
    let stream = ictx.streams().best(media::Type::Video).expect("video");
    let index = stream.index();
    let tb = f64::from(stream.time_base());
    let mut dec = codec::Context::from_parameters(stream.parameters())
        .expect("params")
        .decoder()
        .video()
        .expect("decoder");
    let mut f = frame::Video::empty();
    // Drains the decoder; true once a frame at or after `secs` is in `f`.
    let reached = |dec: &mut ffmpeg_next::decoder::Video, f: &mut frame::Video| {
        while dec.receive_frame(f).is_ok() {
            if f.timestamp().unwrap_or(0) as f64 * tb >= secs - 1e-6 {
                return true;
            }
        }
        false
    };
    for (stream, packet) in ictx.packets() {
        if stream.index() == index {
            dec.send_packet(&packet).expect("decodes");
            if reached(&mut dec, &mut f) {
                return Picture(f);
            }
        }
    }
    dec.send_eof().expect("eof");
    if reached(&mut dec, &mut f) {
        return Picture(f);
    }
    panic!("no frame at {secs} s in {}", path.display());
}

/// The top-level MP4 box types in file order.
pub fn top_level_boxes(path: &Path) -> Vec<String> {
    let data = fs::read(path).expect("read");
    let mut pos = 0usize;
    let mut boxes = Vec::new();
    while pos + 8 <= data.len() {
        let mut size = u32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as u64;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).into_owned();
        if size == 1 {
            size = u64::from_be_bytes(data[pos + 8..pos + 16].try_into().expect("8 bytes"));
        } else if size == 0 {
            size = (data.len() - pos) as u64;
        }
        boxes.push(kind);
        pos += size as usize;
    }
    boxes
}

/// Asserts two colours are within `tolerance` per channel.
#[track_caller]
pub fn assert_close(got: [u8; 3], want: [u8; 3], tolerance: u8, what: &str) {
    let ok = got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= tolerance);
    assert!(ok, "{what}: got {got:?}, want {want:?} ±{tolerance}");
}

pub const BLACK: [u8; 3] = [0, 0, 0];

/// The RMS level of the first audio channel between two times, 0.0 to 1.0.
pub fn audio_rms(path: &Path, from: f64, to: f64) -> f64 {
    let mut ictx = format::input(path).expect("opens");
    let stream = ictx.streams().best(media::Type::Audio).expect("audio");
    let index = stream.index();
    let tb = f64::from(stream.time_base());
    let mut dec = codec::Context::from_parameters(stream.parameters())
        .expect("params")
        .decoder()
        .audio()
        .expect("decoder");
    let mut f = frame::Audio::empty();
    let (mut sum, mut n) = (0f64, 0u64);
    let mut take = |f: &frame::Audio| {
        assert_eq!(f.format(), format::Sample::F32(format::sample::Type::Planar));
        let start = f.timestamp().unwrap_or(0) as f64 * tb;
        let rate = f64::from(f.rate());
        for (i, s) in f.plane::<f32>(0).iter().enumerate() {
            let t = start + i as f64 / rate;
            if t >= from && t < to {
                sum += f64::from(*s) * f64::from(*s);
                n += 1;
            }
        }
    };
    for (stream, packet) in ictx.packets() {
        if stream.index() == index {
            dec.send_packet(&packet).expect("decodes");
            while dec.receive_frame(&mut f).is_ok() {
                take(&f);
            }
        }
    }
    dec.send_eof().expect("eof");
    while dec.receive_frame(&mut f).is_ok() {
        take(&f);
    }
    assert!(n > 0, "no audio between {from} and {to} s");
    (sum / n as f64).sqrt()
}

/// One coded picture of an H.264 stream in an MP4, in decode order.
#[derive(Debug)]
pub struct CodedPicture {
    /// Presentation time, in seconds.
    pub pts: f64,
    /// Whether the muxer flagged it as a sync sample (where a player may
    /// start decoding, and so where a seek lands).
    pub key: bool,
    /// The `nal_unit_type` of every NAL unit in the packet.
    pub nal_types: Vec<u8>,
}

/// The coded pictures of the video stream, in decode order, read from the
/// packets themselves (AVCC: big-endian length-prefixed NAL units).
pub fn coded_pictures(path: &Path) -> Vec<CodedPicture> {
    // The length size is the avcC's choice, and libavformat's MP4 muxer
    // always writes 4 bytes for H.264. So it is assumed rather than read
    // from the extradata (which has no safe accessor), and every length
    // must fill its packet exactly: a file with another length size fails
    // here loudly instead of being misread.
    const LENGTH_SIZE: usize = 4;
    let mut ictx = format::input(path).expect("opens");
    let stream = ictx.streams().best(media::Type::Video).expect("video");
    let index = stream.index();
    let tb = f64::from(stream.time_base());
    let mut out = Vec::new();
    for (stream, packet) in ictx.packets() {
        if stream.index() != index {
            continue;
        }
        let data = packet.data().expect("packet data");
        let mut nal_types = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            assert!(pos + LENGTH_SIZE <= data.len(), "a whole NAL length field");
            let len = data[pos..pos + LENGTH_SIZE]
                .iter()
                .fold(0usize, |n, b| (n << 8) | usize::from(*b));
            pos += LENGTH_SIZE;
            assert!(len > 0 && pos + len <= data.len(), "a well-formed NAL unit");
            nal_types.push(data[pos] & 0x1f);
            pos += len;
        }
        out.push(CodedPicture {
            pts: packet.pts().expect("pts") as f64 * tb,
            key: packet.is_key(),
            nal_types,
        });
    }
    out
}

/// H.264 `nal_unit_type` of a slice of an IDR picture.
pub const NAL_IDR_SLICE: u8 = 5;
/// H.264 `nal_unit_type` of a slice of a non-IDR picture.
pub const NAL_SLICE: u8 = 1;

/// Panics unless every GOP of the rendition at `path` is closed: each
/// packet flagged key is an IDR picture, and no picture after it in decode
/// order is shown before it (which would make it reference the previous
/// GOP). Returns the keyframes' times.
#[track_caller]
pub fn assert_closed_gops(path: &Path, what: &str) -> Vec<f64> {
    let pictures = coded_pictures(path);
    let mut keys = Vec::new();
    for (i, p) in pictures.iter().enumerate() {
        if !p.key {
            continue;
        }
        assert!(
            p.nal_types.contains(&NAL_IDR_SLICE) && !p.nal_types.contains(&NAL_SLICE),
            "{what}: the keyframe at {:.3} s is not an IDR picture (NAL types {:?})",
            p.pts,
            p.nal_types
        );
        if let Some(behind) = pictures[i + 1..].iter().find(|later| later.pts < p.pts) {
            panic!(
                "{what}: open GOP: the picture at {:.3} s follows the keyframe at {:.3} s in decode order",
                behind.pts, p.pts
            );
        }
        keys.push(p.pts);
    }
    keys
}
