//! The encoders (libx264, and AAC when audio is kept) and the MP4 muxer;
//! with HLS, libavformat's `hls` muxer beside it, fed the same packets.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ffmpeg_next::{Dictionary, Packet, Rational, codec, encoder, format, frame, picture};

use crate::error::{Error, Result, is_again_or_eof};
use crate::geom::{Fraction, Size};
use crate::graph::AUDIO_RATE;
use crate::ladder::{RateCap, Rung};
use crate::spec::{PRESETS, RenditionSpec};

/// One rendition's encoder settings.
#[derive(Clone, Debug)]
pub(super) struct Encoding {
    /// Its name (`720p`), for the ladder's files.
    pub name: String,
    pub size: Size,
    pub crf: u8,
    pub cap: Option<RateCap>,
    pub preset: String,
    /// Tuning over the preset (`RenditionSpec::x264_params`).
    pub x264_params: String,
    /// Cores it may use.
    pub threads: u32,
    pub keyframe_interval: Duration,
    /// A keyframe exactly every interval and none at scene cuts, so that
    /// the renditions' keyframes fall on the same frames.
    pub aligned: bool,
}

impl Encoding {
    /// The primary rendition's.
    pub(super) fn primary(spec: &RenditionSpec) -> Self {
        Encoding {
            name: spec.name(),
            size: Size::new(spec.width, spec.height),
            crf: spec.crf,
            cap: spec.cap,
            preset: spec.preset.clone(),
            x264_params: spec.x264_params.clone(),
            threads: spec.threads,
            keyframe_interval: spec.keyframe_interval,
            aligned: spec.aligned_keyframes(),
        }
    }

    /// A further rendition's: the primary's preset and keyframes, and one
    /// core where the primary has a set number (a 360p encode costs about
    /// a quarter of a 720p one); automatic where it is automatic.
    pub(super) fn rung(spec: &RenditionSpec, rung: &Rung) -> Self {
        Encoding {
            name: rung.name.clone(),
            size: Size::new(rung.width, rung.height),
            crf: rung.crf,
            cap: rung.cap,
            threads: 1.min(spec.threads),
            ..Encoding::primary(spec)
        }
    }
}

/// The `hls` muxer of one rendition: its media playlist, init segment and
/// fMP4 segments, in a directory of their own.
struct HlsOutput {
    octx: format::context::Output,
    index: usize,
    /// The directory, for messages.
    dir: PathBuf,
}

/// Samples per AAC frame: the muxer queues the graph's audio and encodes it
/// in frames of exactly this size.
const AAC_FRAME: usize = 1024;

/// The encoders and the MP4 file they write into.
pub(super) struct Muxer {
    octx: format::context::Output,
    video: encoder::Video,
    video_track: Track,
    audio: Option<AudioTrack>,
    hls: Option<HlsOutput>,
    /// Video frames encoded.
    pub frames: u64,
    /// The size of each video packet, by frame number: the rate over
    /// time.
    pub packet_bytes: Vec<(i64, usize)>,
    rate: Fraction,
    /// The final output path, for error messages.
    output: PathBuf,
}

/// Where an encoder's packets go: a stream of the file, and the encoder's
/// time base its timestamps are in.
#[derive(Clone, Copy)]
struct Track {
    index: usize,
    time_base: Rational,
    medium: Medium,
}

#[derive(Clone, Copy)]
enum Medium {
    Video,
    Audio,
}

impl Medium {
    /// What failed, for messages: encoding or writing this medium.
    fn stages(self) -> (&'static str, &'static str) {
        match self {
            Medium::Video => ("encoding video", "writing video"),
            Medium::Audio => ("encoding audio", "writing audio"),
        }
    }
}

/// The AAC encoder and the graph's audio waiting for a whole frame.
struct AudioTrack {
    encoder: encoder::Audio,
    track: Track,
    /// Samples encoded.
    samples: u64,
    /// Audio waiting for a whole AAC frame, per channel.
    pending: [Vec<f32>; 2],
}

impl Muxer {
    /// Opens the encoders and writes the MP4 header to `partial`.
    /// `output` is the final path, for messages.
    /// With `hls`, also writes the rendition's HLS files into that
    /// directory.
    pub(super) fn create(
        partial: &Path,
        output: &Path,
        enc: &Encoding,
        rate: Fraction,
        audio: bool,
        hls: Option<&Path>,
    ) -> Result<Self> {
        let fail = |stage: &'static str| move |e: ffmpeg_next::Error| write_error(output, stage, e);
        let mut octx = format::output_as(partial, "mp4").map_err(fail("creating the MP4 file"))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);

        let (video, x264) = open_x264(output, enc, rate, global_header)?;
        let video_track = add_stream(&mut octx, x264, &video, Medium::Video, output)?;
        if let Some(mut st) = octx.stream_mut(video_track.index) {
            st.set_avg_frame_rate(rate.to_rational());
        }
        let audio = if audio {
            let (encoder, aac) = open_aac(output, global_header)?;
            Some(AudioTrack {
                track: add_stream(&mut octx, aac, &encoder, Medium::Audio, output)?,
                encoder,
                samples: 0,
                pending: [Vec::new(), Vec::new()],
            })
        } else {
            None
        };

        let mut header = Dictionary::new();
        // Index (moov) before the media (mdat): playback starts at once.
        header.set("movflags", "+faststart");
        octx.write_header_with(header).map_err(fail("writing the MP4 header"))?;
        let hls = match hls {
            Some(dir) => Some(open_hls(dir, x264, &video, enc, rate)?),
            None => None,
        };
        Ok(Muxer {
            octx,
            video,
            video_track,
            audio,
            hls,
            frames: 0,
            packet_bytes: Vec::new(),
            rate,
            output: output.to_owned(),
        })
    }

    /// The rendition's final path.
    pub(super) fn output(&self) -> &Path {
        &self.output
    }

    /// Whether the file has an audio track.
    pub(super) fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Encodes one picture from the graph.
    pub(super) fn write_video(&mut self, frame: &mut frame::Video) -> Result<()> {
        // Output is constant frame rate: the n-th frame is at n.
        frame.set_pts(Some(self.frames as i64));
        // Decoded picture types would force keyframes in x264.
        frame.set_kind(picture::Type::None);
        frame.set_color_range(ffmpeg_next::color::Range::MPEG);
        frame.set_color_space(ffmpeg_next::color::Space::BT709);
        frame.set_color_primaries(ffmpeg_next::color::Primaries::BT709);
        frame.set_color_transfer_characteristic(ffmpeg_next::color::TransferCharacteristic::BT709);
        self.video
            .send_frame(frame)
            .map_err(|e| write_error(&self.output, "encoding video", e))?;
        self.frames += 1;
        self.video_packets()
    }

    /// Moves the video encoder's packets into the MP4 file (and the HLS
    /// segments), noting their sizes.
    fn video_packets(&mut self) -> Result<()> {
        let (sizes, tb) = (&mut self.packet_bytes, self.video_track.time_base);
        let mut hls = self.hls.as_mut();
        let mut also = |packet: &Packet| -> Result<()> {
            sizes.push((packet.pts().unwrap_or(0), packet.size()));
            match hls.as_mut() {
                Some(h) => h.write(packet, tb),
                None => Ok(()),
            }
        };
        write_packets(
            &mut self.video,
            self.video_track,
            &mut self.octx,
            &self.output,
            &mut also,
        )
    }

    /// Queues the graph's audio (planar float stereo) and encodes it in
    /// whole AAC frames.
    pub(super) fn write_audio(&mut self, frame: &frame::Audio) -> Result<()> {
        let Some(audio) = self.audio.as_mut() else {
            return Ok(());
        };
        let n = frame.samples();
        for (ch, queue) in audio.pending.iter_mut().enumerate() {
            queue.extend_from_slice(&frame.plane::<f32>(ch)[..n]);
        }
        audio.encode_pending(false, &mut self.octx, &self.output)
    }

    /// Makes the audio exactly as long as the video (see
    /// [`AudioTrack::pad_to`]), flushes the encoders and writes the index.
    pub(super) fn finish(&mut self) -> Result<()> {
        let samples = samples_for(self.frames, self.rate);
        if let Some(audio) = self.audio.as_mut() {
            audio.pad_to(samples, &mut self.octx, &self.output)?;
        }
        self.video
            .send_eof()
            .map_err(|e| write_error(&self.output, "flushing video", e))?;
        self.video_packets()?;
        if let Some(audio) = self.audio.as_mut() {
            audio
                .encoder
                .send_eof()
                .map_err(|e| write_error(&self.output, "flushing audio", e))?;
            write_packets(
                &mut audio.encoder,
                audio.track,
                &mut self.octx,
                &self.output,
                &mut |_| Ok(()),
            )?;
        }
        if let Some(hls) = self.hls.as_mut() {
            hls.octx
                .write_trailer()
                .map_err(|e| write_error(&hls.dir, "finishing the HLS playlist", e))?;
        }
        self.octx
            .write_trailer()
            .map_err(|e| write_error(&self.output, "finishing the MP4 file", e))
    }
}

/// How many audio samples last as long as `frames` video frames at `rate`.
fn samples_for(frames: u64, rate: Fraction) -> u64 {
    (u128::from(frames) * u128::from(AUDIO_RATE) * u128::from(rate.den) / u128::from(rate.num)) as u64
}

impl AudioTrack {
    /// Encodes queued audio: every whole AAC frame, and with `all` the
    /// short last one too. The graph's audio is continuous (resampled with
    /// gap filling, cards padded with silence), so the n-th sample is at n,
    /// whatever time base the concat filter used.
    fn encode_pending(&mut self, all: bool, octx: &mut format::context::Output, output: &Path) -> Result<()> {
        loop {
            let available = self.pending[0].len();
            let n = if available >= AAC_FRAME {
                AAC_FRAME
            } else if all && available > 0 {
                available
            } else {
                return Ok(());
            };
            let mut f = frame::Audio::new(
                format::Sample::F32(format::sample::Type::Planar),
                n,
                ffmpeg_next::ChannelLayout::STEREO,
            );
            f.set_rate(AUDIO_RATE);
            for (ch, queue) in self.pending.iter_mut().enumerate() {
                f.plane_mut::<f32>(ch)[..n].copy_from_slice(&queue[..n]);
                queue.drain(..n);
            }
            f.set_pts(Some(self.samples as i64));
            self.samples += n as u64;
            self.encoder
                .send_frame(&f)
                .map_err(|e| write_error(output, "encoding audio", e))?;
            write_packets(&mut self.encoder, self.track, octx, output, &mut |_| Ok(()))?;
        }
    }

    /// Makes the audio exactly `length` samples long: silence where it ends early
    /// (the concat filter pads every segment but the last, and a source's
    /// audio may simply stop), cut where it runs on. Players otherwise show
    /// a frozen clock or drift.
    fn pad_to(&mut self, length: u64, octx: &mut format::context::Output, output: &Path) -> Result<()> {
        let wanted = length.saturating_sub(self.samples) as usize;
        for queue in &mut self.pending {
            queue.resize(wanted, 0.0);
        }
        self.encode_pending(true, octx, output)
    }
}

/// Opens libx264 for the rendition: High profile, CRF, constant frame rate,
/// BT.709 TV range, a keyframe at least every `keyframe_interval`.
fn open_x264(
    output: &Path,
    spec: &Encoding,
    rate: Fraction,
    global_header: bool,
) -> Result<(encoder::Video, ffmpeg_next::Codec)> {
    let fail = |stage: &'static str| move |e: ffmpeg_next::Error| write_error(output, stage, e);
    let x264 = encoder::find_by_name("libx264").ok_or_else(|| Error::Internal {
        path: output.to_owned(),
        stage: "finding libx264",
        source: ffmpeg_next::Error::EncoderNotFound,
        log: " (this FFmpeg build has no libx264)".into(),
    })?;
    let mut ctx = codec::Context::new_with_codec(x264)
        .encoder()
        .video()
        .map_err(fail("creating the H.264 encoder"))?;
    ctx.set_width(spec.size.w);
    ctx.set_height(spec.size.h);
    ctx.set_format(format::Pixel::YUV420P);
    ctx.set_time_base(video_time_base(rate));
    ctx.set_frame_rate(Some(rate.to_rational()));
    ctx.set_aspect_ratio(Rational::new(1, 1));
    let gop = (spec.keyframe_interval.as_secs_f64() * rate.as_f64()).floor().max(1.0) as u32;
    ctx.set_gop(gop);
    ctx.set_colorspace(ffmpeg_next::color::Space::BT709);
    ctx.set_color_range(ffmpeg_next::color::Range::MPEG);
    ctx.set_color_primaries(ffmpeg_next::color::Primaries::BT709);
    ctx.set_color_transfer_characteristic(ffmpeg_next::color::TransferCharacteristic::BT709);
    ctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        // x264's own automatic count is 1.5 threads per core; a job given
        // a share of the cores gets the same proportion of it.
        count: (spec.threads + spec.threads / 2) as usize,
        ..Default::default()
    });
    // Closed GOPs: every keyframe is an IDR that no later frame reaches
    // behind, so a player that seeks to it can decode from there (Chrome
    // stops with a decode error on an open GOP's keyframe; Apple's HLS rules
    // require closed GOPs too). libx264's wrapper sets x264's open-gop
    // unless this flag is set, and the codec's defaults set it (`+cgop`);
    // `set_flags` replaces every flag, so it is named here, beside the
    // header flag. Until 6 Dec 2026 it was not, and every rendition had
    // `open_gop=1` (see the browser tests).
    let mut flags = codec::Flags::CLOSED_GOP;
    if global_header {
        flags |= codec::Flags::GLOBAL_HEADER;
    }
    ctx.set_flags(flags);
    let opts = x264_options(spec, gop);
    let encoder = ctx.open_with(opts).map_err(fail("opening libx264"))?;
    Ok((encoder, x264))
}

/// libx264's options for `spec`, with a keyframe at least every `gop`
/// frames.
fn x264_options(spec: &Encoding, gop: u32) -> Dictionary<'static> {
    let mut opts = Dictionary::new();
    opts.set("preset", &spec.preset);
    opts.set("crf", &spec.crf.to_string());
    // CRF 0 is lossless, which High profile cannot carry: x264 picks High
    // 4:4:4 Predictive itself (browsers do not play it; it serves as a
    // reference for quality measurements).
    if spec.crf > 0 {
        opts.set("profile", "high");
    }
    // Keyframes at least every `gop` frames; scene cuts may add more.
    // sync-lookahead=0: the lookahead runs in the thread that hands x264
    // its frames (the encoding thread, see encode.rs) instead of a thread
    // of its own with 4 frames (14 MiB at 720p) buffered ahead. The
    // bitstream is identical.
    let mut params = format!("keyint={gop}:min-keyint={}:sync-lookahead=0", (gop / 2).max(1));
    if spec.aligned {
        // Exactly every `gop` frames in every rendition: players switch
        // renditions (and HLS cuts segments) at keyframes.
        params = format!("keyint={gop}:min-keyint={gop}:scenecut=0:sync-lookahead=0");
    }
    if let Some(frames) = capped_lookahead(&spec.preset) {
        params.push_str(&format!(":rc-lookahead={frames}"));
    }
    if !spec.x264_params.is_empty() {
        // Tuning only (checked by the spec): after ours, so it may change
        // the lookahead, never keyframes or the cap.
        params.push(':');
        params.push_str(&spec.x264_params);
    }
    if let Some(cap) = spec.cap {
        // Capped CRF: CRF's quality, the rate kept under the cap by the
        // VBV model.
        params.push_str(&format!(
            ":vbv-maxrate={}:vbv-bufsize={}",
            cap.max_kbps, cap.buffer_kbits
        ));
    }
    opts.set("x264-params", &params);
    opts
}

/// The longest rate-control lookahead, in frames: one second at the
/// rendition's usual 30 fps.
const MAX_LOOKAHEAD: u32 = 30;

/// The lookahead to set for `preset`, when its own is longer than
/// [`MAX_LOOKAHEAD`]: medium has 40, slow 50, slower and up 60 (x264's
/// presets; fast has 30, faster presets less, and those are left alone).
///
/// Every frame in the lookahead is kept, with its low-resolution copy, so
/// its length is memory. On the reference job (benches, 1 Dec 2026, 2
/// cores), 30 frames against medium's 40: peak RSS 246 MiB against 277
/// MiB (CLI 305 MiB); the output 0.1 % smaller, PSNR 44.323 dB against
/// 44.331 dB, SSIM 0.99315 against 0.99316. Speed stayed within this
/// machine's noise (one 3-run set gave 21.95 s against 24.91 s, a 6-run
/// set against the CLI 20.48 s against 19.12 s). At 20 frames RSS falls
/// to 216 MiB, but the output loses 0.6 % of its size and 0.016 dB.
fn capped_lookahead(preset: &str) -> Option<u32> {
    let rank = |name: &str| PRESETS.iter().position(|p| *p == name);
    (rank(preset)? > rank("fast")?).then_some(MAX_LOOKAHEAD)
}

/// Opens the AAC encoder: stereo, 48 kHz, 128 kb/s.
fn open_aac(output: &Path, global_header: bool) -> Result<(encoder::Audio, ffmpeg_next::Codec)> {
    let fail = |stage: &'static str| move |e: ffmpeg_next::Error| write_error(output, stage, e);
    let aac = encoder::find(codec::Id::AAC).ok_or_else(|| Error::Internal {
        path: output.to_owned(),
        stage: "finding the AAC encoder",
        source: ffmpeg_next::Error::EncoderNotFound,
        log: String::new(),
    })?;
    let mut ctx = codec::Context::new_with_codec(aac)
        .encoder()
        .audio()
        .map_err(fail("creating the AAC encoder"))?;
    ctx.set_rate(AUDIO_RATE as i32);
    ctx.set_format(format::Sample::F32(format::sample::Type::Planar));
    ctx.set_channel_layout(ffmpeg_next::ChannelLayout::STEREO);
    ctx.set_bit_rate(128_000);
    ctx.set_time_base(Rational::new(1, AUDIO_RATE as i32));
    if global_header {
        ctx.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let encoder = ctx.open_as(aac).map_err(fail("opening the AAC encoder"))?;
    Ok((encoder, aac))
}

/// The video encoder's time base: one tick per frame.
fn video_time_base(rate: Fraction) -> Rational {
    Rational::new(rate.den as i32, rate.num as i32)
}

/// Adds a stream for an opened encoder to the file.
fn add_stream<E: AsRef<codec::Context>>(
    octx: &mut format::context::Output,
    codec: ffmpeg_next::Codec,
    encoder: &E,
    medium: Medium,
    output: &Path,
) -> Result<Track> {
    let time_base = encoder.as_ref().time_base();
    let mut st = octx
        .add_stream(codec)
        .map_err(|e| write_error(output, "adding a stream", e))?;
    st.set_parameters(encoder);
    st.set_time_base(time_base);
    Ok(Track {
        index: st.index(),
        time_base,
        medium,
    })
}

/// Moves every packet an encoder has ready into the file, with timestamps
/// rescaled to the stream's time base (which the muxer may have changed).
/// Shared by video and audio.
fn write_packets(
    encoder: &mut encoder::Encoder,
    track: Track,
    octx: &mut format::context::Output,
    output: &Path,
    also: &mut dyn FnMut(&Packet) -> Result<()>,
) -> Result<()> {
    let (encoding, writing) = track.medium.stages();
    let stream_tb = octx.stream(track.index).map_or(track.time_base, |s| s.time_base());
    let mut packet = Packet::empty();
    loop {
        match encoder.receive_packet(&mut packet) {
            Ok(()) => {
                also(&packet)?;
                packet.set_stream(track.index);
                packet.rescale_ts(track.time_base, stream_tb);
                packet
                    .write_interleaved(octx)
                    .map_err(|e| write_error(output, writing, e))?;
            }
            Err(e) if is_again_or_eof(&e) => return Ok(()),
            Err(e) => return Err(write_error(output, encoding, e)),
        }
    }
}

/// Opens the `hls` muxer for a rendition in `dir`: `index.m3u8`,
/// `init.mp4`, and fMP4 segments of one keyframe interval each
/// (`seg_000.m4s`, …), a VOD playlist.
fn open_hls(
    dir: &Path,
    x264: ffmpeg_next::Codec,
    video: &encoder::Video,
    enc: &Encoding,
    rate: Fraction,
) -> Result<HlsOutput> {
    let fail = |stage: &'static str| move |e: ffmpeg_next::Error| write_error(dir, stage, e);
    let mut octx = format::output_as(&dir.join("index.m3u8"), "hls").map_err(fail("creating the HLS playlist"))?;
    let index = {
        let mut st = octx.add_stream(x264).map_err(fail("adding the HLS stream"))?;
        st.set_parameters(video);
        st.set_time_base(video.time_base());
        st.set_avg_frame_rate(rate.to_rational());
        st.index()
    };
    let mut opts = Dictionary::new();
    opts.set("hls_time", &format!("{:.3}", enc.keyframe_interval.as_secs_f64()));
    opts.set("hls_playlist_type", "vod");
    opts.set("hls_list_size", "0");
    opts.set("hls_segment_type", "fmp4");
    opts.set("hls_fmp4_init_filename", "init.mp4");
    opts.set("hls_segment_filename", &dir.join("seg_%03d.m4s").to_string_lossy());
    opts.set("hls_flags", "independent_segments");
    octx.write_header_with(opts).map_err(fail("writing the HLS header"))?;
    Ok(HlsOutput {
        octx,
        index,
        dir: dir.to_owned(),
    })
}

impl HlsOutput {
    /// Writes a copy of an encoded video packet (timestamps in `tb`).
    fn write(&mut self, packet: &Packet, tb: Rational) -> Result<()> {
        let stream_tb = self.octx.stream(self.index).map_or(tb, |s| s.time_base());
        let mut copy = packet.clone();
        copy.set_stream(self.index);
        copy.rescale_ts(tb, stream_tb);
        copy.write_interleaved(&mut self.octx)
            .map_err(|e| write_error(&self.dir, "writing an HLS segment", e))
    }
}

/// Errors while producing output: system I/O errors become
/// [`Error::OutputIo`], anything else is internal.
fn write_error(output: &Path, stage: &'static str, e: ffmpeg_next::Error) -> Error {
    const DISK: [i32; 8] = [
        libc::EIO,
        libc::ENOSPC,
        libc::EDQUOT,
        libc::EROFS,
        libc::EACCES,
        libc::EPERM,
        libc::ENOENT,
        libc::EFBIG,
    ];
    match e {
        ffmpeg_next::Error::Other { errno } if DISK.contains(&errno) => Error::OutputIo {
            path: output.to_owned(),
            source: io::Error::from_raw_os_error(errno),
        },
        other => Error::internal(output, stage, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_presets_with_a_longer_lookahead_are_capped() {
        assert_eq!(capped_lookahead("medium"), Some(30));
        assert_eq!(capped_lookahead("veryslow"), Some(30));
        assert_eq!(capped_lookahead("fast"), None, "fast's own is 30");
        assert_eq!(capped_lookahead("veryfast"), None, "veryfast's own is 10");
        assert_eq!(capped_lookahead("warp"), None);
    }
}
