//! `process`: decode → one filter graph → encode → mux, in one pass.

use std::collections::VecDeque;
use std::ffi::{CStr, c_char};
use std::io;
use std::path::{Path, PathBuf};
use std::ptr;
use std::time::{Duration, Instant};

use ffmpeg_next::{Dictionary, Packet, Rational, Rescale, codec, decoder, encoder, ffi, format, frame, picture};

use crate::control::{Budget, CancelFlag, Progress};
use crate::error::{Error, Result};
use crate::fflog;
use crate::graph::{self, CardPlan, Fitting, Graph, Plan, SourceSpec, WatermarkPlacement, pad};
use crate::image;
use crate::input::{self, OpenedInput};
use crate::probe::{self, Fraction, MediaInfo, VideoFacts};
use crate::spec::{CardContent, Image, RenditionSpec};

/// Samples per AAC frame: the muxer queues the graph's audio and encodes it
/// in frames of exactly this size.
const AAC_FRAME: usize = 1024;

/// What a finished transcode produced and what it cost.
#[derive(Clone, Debug, PartialEq)]
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
}

/// Turns `input` into a rendition at `output` as `spec` describes.
///
/// The input is opened with the defences of [`probe`](crate::probe), decoded,
/// cut at [`RenditionSpec::max_duration`] (reading stops there, so a long
/// upload costs no more than a short one), fitted, watermarked, framed by
/// the cards and encoded with libx264 into an MP4 whose index comes first.
///
/// The rendition is written to a temporary file beside `output` and renamed
/// over it only on success: after an error nothing is left behind.
/// `progress` is called after every output frame; `cancel` is checked
/// between frames and inside every read.
pub fn process(
    input: &Path,
    output: &Path,
    spec: &RenditionSpec,
    mut progress: impl FnMut(Progress),
    cancel: &CancelFlag,
) -> Result<Report> {
    let started = Instant::now();
    fflog::init();
    fflog::clear();
    spec.validate()?;
    let budget = Budget::new(cancel, spec.limits.timeout);
    let assets = Assets::load(spec, &budget)?;

    let mut main = MainSource::open(input, spec, &budget)?;
    let rate = output_rate(main.facts.info.frame_rate, spec.max_fps);
    let plan = plan(spec, &main.facts, &assets, rate)?;

    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out_err = |source: io::Error| Error::OutputIo {
        path: output.to_owned(),
        source,
    };
    let partial = tempfile::Builder::new()
        .prefix(".vidworker-")
        .suffix(".mp4.part")
        .tempfile_in(&dir)
        .map_err(out_err)?;
    let mut sink = Muxer::create(partial.path(), output, spec, rate, plan.audio_end.is_some())?;

    let expected = expected_duration(&main.facts.info, spec);
    let mut run = Run {
        budget: &budget,
        input: input.to_owned(),
        assets,
        graph: None,
        plan,
        sink: &mut sink,
        progress: &mut progress,
        expected,
        threads: spec.threads,
        done_v: false,
        done_a: false,
    };
    let decode_errors = run.execute(&mut main)?;
    let frames = sink.frames;
    let has_audio = sink.audio.is_some();
    sink.finish_audio(rate)?;
    sink.finish()?;
    drop(sink);

    let bytes = std::fs::metadata(partial.path()).map_err(out_err)?.len();
    partial.persist(output).map_err(|e| out_err(e.error))?;
    let duration = Duration::from_secs_f64(frames as f64 / rate.as_f64());
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
        decode_errors,
        input_bytes_read: main.input.bytes_read(),
    })
}

/// How long the output should be, for progress: the declared duration up
/// to the cap, plus the cards.
fn expected_duration(info: &MediaInfo, spec: &RenditionSpec) -> Duration {
    let main = info.duration.map_or(spec.max_duration, |d| d.min(spec.max_duration));
    main + spec.max_output_duration() - spec.max_duration
}

/// The output frame rate: the source's, divided by the smallest integer
/// that brings it under the cap (59.94 → 29.97, 50 → 25, 120 → 30). When
/// that would fall far below the cap (30 under a cap of 24) the cap is used.
/// Unknown or odd rates snap to the nearest common rate within 3 %.
pub(crate) fn output_rate(source: Option<Fraction>, cap: u32) -> Fraction {
    const COMMON: &[(u32, u32)] = &[
        (8, 1),
        (10, 1),
        (12, 1),
        (25, 2),
        (15, 1),
        (20, 1),
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (90, 1),
        (100, 1),
        (120000, 1001),
        (120, 1),
        (240, 1),
    ];
    let capped = Fraction { num: cap, den: 1 };
    let Some(src) = source else { return capped };
    let value = src.as_f64();
    let snapped = COMMON
        .iter()
        .map(|&(num, den)| Fraction { num, den })
        .min_by(|a, b| {
            let da = (a.as_f64() - value).abs();
            let db = (b.as_f64() - value).abs();
            da.total_cmp(&db)
        })
        .filter(|c| (c.as_f64() - value).abs() / value <= 0.03)
        .unwrap_or_else(|| {
            let num = (value * 1000.0).round().max(1.0) as u32;
            let g = gcd(num, 1000);
            Fraction {
                num: num / g,
                den: 1000 / g,
            }
        });
    let cap_f = f64::from(cap);
    if snapped.as_f64() <= cap_f + 1e-9 {
        return snapped;
    }
    let factor = (snapped.as_f64() / cap_f - 1e-9).ceil() as u32;
    let reduced = reduce(Fraction {
        num: snapped.num,
        den: snapped.den * factor,
    });
    if reduced.as_f64() < 0.75 * cap_f {
        capped
    } else {
        reduced
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

fn reduce(f: Fraction) -> Fraction {
    let g = gcd(f.num, f.den);
    Fraction {
        num: f.num / g,
        den: f.den / g,
    }
}

/// The watermark and card images, decoded once per job, and the card clips,
/// opened with the same defences as the main input.
struct Assets {
    watermark: Option<frame::Video>,
    intro: Option<CardAsset>,
    outro: Option<CardAsset>,
}

enum CardAsset {
    Image { frame: frame::Video, is_logo: bool },
    Clip(Box<Clip>),
}

impl Assets {
    fn load(spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
        let watermark = spec.watermark.as_ref().map(|w| image::load(&w.image)).transpose()?;
        let card = |c: &Option<crate::spec::Card>| -> Result<Option<CardAsset>> {
            let Some(c) = c else { return Ok(None) };
            Ok(Some(match &c.content {
                CardContent::Image(img) => CardAsset::Image {
                    frame: image::load(img)?,
                    is_logo: *img == Image::Logo,
                },
                CardContent::Clip(path) => {
                    let clip = Clip::open(path, spec, budget).map_err(|e| match e {
                        Error::Cancelled { .. } | Error::TimedOut { .. } => e,
                        other => Error::InvalidSpec(format!("card clip: {other}")),
                    })?;
                    CardAsset::Clip(Box::new(clip))
                }
            }))
        };
        Ok(Assets {
            watermark,
            intro: card(&spec.intro)?,
            outro: card(&spec.outro)?,
        })
    }
}

/// Decides the graph's numbers from the spec, the input and the assets.
fn plan(spec: &RenditionSpec, facts: &VideoFacts, assets: &Assets, rate: Fraction) -> Result<Plan> {
    let (w, h) = (spec.width, spec.height);
    let tonemap = facts.info.hdr && ffmpeg_next::filter::find("zscale").is_some();
    let main = Fitting::new(
        facts.info.display_width,
        facts.info.display_height,
        w,
        h,
        spec.fit,
        facts.transform,
        tonemap,
    );
    let watermark = match (&spec.watermark, &assets.watermark) {
        (Some(wm), Some(frame)) => Some(WatermarkPlacement::new(frame.width(), frame.height(), w, h, wm)),
        _ => None,
    };
    let card = |asset: &Option<CardAsset>, card: &Option<crate::spec::Card>| -> Option<CardPlan> {
        let (asset, card) = (asset.as_ref()?, card.as_ref()?);
        Some(match asset {
            CardAsset::Image { frame, is_logo } => {
                CardPlan::image(frame.width(), frame.height(), w, h, *is_logo, card.duration)
            }
            CardAsset::Clip(clip) => CardPlan::Clip {
                fitting: Fitting::new(
                    clip.facts.info.display_width,
                    clip.facts.info.display_height,
                    w,
                    h,
                    spec.fit,
                    clip.facts.transform,
                    clip.facts.info.hdr && tonemap,
                ),
                duration: card.duration,
            },
        })
    };
    // The transcoder cuts the audio where the decoded video ends; the graph
    // also stops it at the cap.
    let audio_end = (spec.keep_audio && facts.audio_index.is_some()).then_some(spec.max_duration);
    Ok(Plan {
        out_w: w,
        out_h: h,
        rate,
        main,
        watermark,
        intro: card(&assets.intro, &spec.intro),
        outro: card(&assets.outro, &spec.outro),
        audio_end,
    })
}

/// Opens a video decoder for the chosen stream with the job's limits.
fn open_video_decoder(
    input: &OpenedInput,
    facts: &VideoFacts,
    threads: u32,
    max_pixels: u64,
) -> Result<decoder::Video> {
    let path = &input.path;
    let stream = input.ctx.stream(facts.video_index).ok_or_else(|| Error::NotMedia {
        path: path.clone(),
        reason: "video stream vanished".into(),
    })?;
    let codec = input::check_video_codec(path, stream.parameters().id())?;
    let mut ctx = codec::Context::from_parameters(stream.parameters())
        .map_err(|e| Error::internal(path, "reading the stream parameters", e))?;
    ctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Frame,
        count: threads as usize,
        ..Default::default()
    });
    // SAFETY: plain field writes before the decoder is opened.
    unsafe {
        let p = ctx.as_mut_ptr();
        (*p).max_pixels = i64::try_from(max_pixels).unwrap_or(i64::MAX);
        (*p).pkt_timebase = stream.time_base().into();
    }
    ctx.decoder()
        .open_as(codec)
        .and_then(|d| d.video())
        .map_err(|e| match e {
            ffmpeg_next::Error::InvalidData | ffmpeg_next::Error::PatchWelcome => Error::Corrupt {
                path: path.clone(),
                reason: format!("cannot start the {} decoder: {e}{}", codec.name(), fflog::recent()),
            },
            other => Error::internal(path, "opening the video decoder", other),
        })
}

/// What happened to one decoded frame.
enum Admit {
    /// Use it; its timestamp now counts from the first frame.
    Use,
    /// Drop it (out of order or before the first frame).
    Skip,
    /// It lies past the limit: the stream is done.
    PastEnd,
}

/// The timestamps of one video stream: rebased so the first decoded frame
/// is at zero, strictly increasing (frames that go back in time are
/// dropped), and cut at a limit. Shared by the main video and card clips.
struct Timeline {
    time_base: Rational,
    /// The limit in the stream's time base.
    limit: i64,
    /// A frame's duration when the stream does not say.
    default_duration: i64,
    /// Timestamp of the first decoded frame: time zero of the output.
    origin: Option<i64>,
    last: Option<i64>,
    last_duration: i64,
    frames: u64,
}

impl Timeline {
    fn new(time_base: Rational, limit: Duration, rate: Option<Fraction>) -> Self {
        let to_ts = |secs: f64| {
            (secs * f64::from(time_base.denominator()) / f64::from(time_base.numerator().max(1))).round() as i64
        };
        Timeline {
            time_base,
            limit: to_ts(limit.as_secs_f64()),
            default_duration: to_ts(1.0 / rate.map_or(30.0, Fraction::as_f64)).max(1),
            origin: None,
            last: None,
            last_duration: 0,
            frames: 0,
        }
    }

    /// Decides what to do with a decoded frame and rebases its timestamp.
    fn admit(&mut self, frame: &mut frame::Video) -> Admit {
        let ts = frame.timestamp().or(frame.pts()).unwrap_or_else(|| {
            let next = self.last.map_or(0, |l| l.saturating_add(self.default_duration));
            self.origin.unwrap_or(0).saturating_add(next)
        });
        let origin = *self.origin.get_or_insert(ts);
        // Timestamps are the file's word: hostile values must not overflow.
        let rel = ts.saturating_sub(origin);
        if rel < 0 || self.last.is_some_and(|last| rel <= last) {
            return Admit::Skip;
        }
        if rel >= self.limit {
            return Admit::PastEnd;
        }
        let d = frame.packet().duration;
        self.last_duration = if d > 0 {
            d.min(self.default_duration.saturating_mul(10))
        } else {
            self.default_duration
        };
        self.last = Some(rel);
        self.frames += 1;
        frame.set_pts(Some(rel));
        Admit::Use
    }

    /// Where the stream ends, in its time base: after its last frame, never
    /// past the limit. Closing a source there tells the frame-rate filter
    /// how long the last frame lasts.
    fn end(&self) -> i64 {
        self.last
            .map_or(0, |l| l.saturating_add(self.last_duration).min(self.limit))
    }

    fn seconds(&self, ts: i64) -> f64 {
        ts as f64 * f64::from(self.time_base.numerator()) / f64::from(self.time_base.denominator().max(1))
    }
}

/// The main input: demuxer, decoders and the bookkeeping that cuts it at
/// the cap and makes its timestamps start at zero.
struct MainSource {
    input: OpenedInput,
    facts: VideoFacts,
    video: decoder::Video,
    audio: Option<AudioIn>,
    max_pixels: u64,
    timeline: Timeline,
    video_done: bool,
    decode_errors: u64,
}

struct AudioIn {
    index: usize,
    decoder: decoder::Audio,
    time_base: Rational,
    /// Frames decoded before the first video frame fixed time zero.
    early: VecDeque<frame::Audio>,
    /// Rebased frames waiting for the video to pass them: audio goes into
    /// the graph only up to where the video has got, so it can be cut
    /// exactly where the video ends.
    held: VecDeque<frame::Audio>,
    done: bool,
}

/// Frames of audio kept while waiting, at most (about 20 s at 48 kHz).
const AUDIO_BACKLOG: usize = 1000;

/// Where an audio frame starts, in seconds (after rebasing).
fn audio_start(frame: &frame::Audio) -> f64 {
    frame.pts().unwrap_or(0) as f64 / f64::from(frame.rate().max(1))
}

impl MainSource {
    fn open(path: &Path, spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
        let input = input::open(path, &spec.limits, budget, spec.keep_audio)?;
        let facts = probe::describe(&input, &spec.limits)?;
        let mut input = input;
        let video = open_video_decoder(&input, &facts, spec.threads, spec.limits.max_pixels)?;
        let audio = if spec.keep_audio {
            facts.audio_index.and_then(|index| open_audio(&input, index))
        } else {
            None
        };
        // Skip everything we do not decode, so the demuxer does not even
        // hand it over.
        for mut stream in input.ctx.streams_mut() {
            let keep = stream.index() == facts.video_index || audio.as_ref().is_some_and(|a| a.index == stream.index());
            if !keep {
                // SAFETY: plain field write on a stream of the open input.
                unsafe {
                    (*stream.as_mut_ptr()).discard = ffi::AVDiscard::AVDISCARD_ALL;
                }
            }
        }
        tracing::debug!(
            path = %path.display(),
            bytes_read = input.bytes_read(),
            size = input.size,
            container = %facts.info.container,
            codec = %facts.info.video_codec,
            "opened input"
        );
        let mut facts = facts;
        if audio.is_none() {
            facts.audio_index = None;
        }
        Ok(MainSource {
            timeline: Timeline::new(facts.time_base, spec.max_duration, facts.info.frame_rate),
            input,
            facts,
            video,
            audio,
            max_pixels: spec.limits.max_pixels,
            video_done: false,
            decode_errors: 0,
        })
    }

    fn path(&self) -> &Path {
        &self.input.path
    }

    /// Decides what to do with a decoded frame and rebases its timestamp.
    fn admit(&mut self, frame: &mut frame::Video) -> Result<Admit> {
        let pixels = u64::from(frame.width()) * u64::from(frame.height());
        if pixels > self.max_pixels {
            return Err(Error::LimitExceeded {
                path: self.path().to_owned(),
                reason: format!(
                    "a {}x{} frame is more than the {:.1} Mpx limit",
                    frame.width(),
                    frame.height(),
                    self.max_pixels as f64 / 1e6
                ),
            });
        }
        let admit = self.timeline.admit(frame);
        if matches!(admit, Admit::PastEnd) {
            self.video_done = true;
        }
        Ok(admit)
    }

    /// Rebases an audio frame onto the video's time zero, in samples.
    fn rebase_audio(&self, frame: &mut frame::Audio) -> bool {
        let (Some(audio), Some(origin)) = (&self.audio, self.timeline.origin) else {
            return false;
        };
        let rate = frame.rate().max(1) as i32;
        let sample_tb = Rational::new(1, rate);
        let Some(pts) = frame.timestamp().or(frame.pts()) else {
            return true;
        };
        let pts = pts.rescale(audio.time_base, sample_tb);
        let zero = origin.rescale(self.facts.time_base, sample_tb);
        frame.set_pts(Some(pts.saturating_sub(zero)));
        true
    }
}

fn open_audio(input: &OpenedInput, index: usize) -> Option<AudioIn> {
    let stream = input.ctx.stream(index)?;
    let Some(codec) = input::audio_decoder(stream.parameters().id()) else {
        tracing::warn!(path = %input.path.display(), codec = stream.parameters().id().name(), "audio codec not supported; the rendition will be silent");
        return None;
    };
    let mut ctx = codec::Context::from_parameters(stream.parameters()).ok()?;
    // SAFETY: plain field write before the decoder is opened.
    unsafe {
        (*ctx.as_mut_ptr()).pkt_timebase = stream.time_base().into();
    }
    match ctx.decoder().open_as(codec).and_then(|d| d.audio()) {
        Ok(decoder) => Some(AudioIn {
            index,
            decoder,
            time_base: stream.time_base(),
            early: VecDeque::new(),
            held: VecDeque::new(),
            done: false,
        }),
        Err(e) => {
            tracing::warn!(path = %input.path.display(), error = %e, "cannot open the audio decoder; the rendition will be silent");
            None
        }
    }
}

/// A card clip: opened at load time, its first frame decoded so the graph
/// knows its format.
struct Clip {
    input: OpenedInput,
    facts: VideoFacts,
    decoder: decoder::Video,
    first: Option<frame::Video>,
    eof: bool,
}

impl Clip {
    fn open(path: &Path, spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
        let input = input::open(path, &spec.limits, budget, false)?;
        let facts = probe::describe(&input, &spec.limits)?;
        let decoder = open_video_decoder(&input, &facts, spec.threads, spec.limits.max_pixels)?;
        let mut clip = Clip {
            input,
            facts,
            decoder,
            first: None,
            eof: false,
        };
        clip.first = clip.next_frame(budget)?;
        if clip.first.is_none() {
            return Err(Error::Corrupt {
                path: path.to_owned(),
                reason: "no decodable video frame".into(),
            });
        }
        Ok(clip)
    }

    /// The next decoded frame, or `None` at the end.
    fn next_frame(&mut self, budget: &Budget) -> Result<Option<frame::Video>> {
        let mut frame = frame::Video::empty();
        let mut packet = Packet::empty();
        loop {
            budget.check_for(&self.input.path)?;
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => return Ok(Some(frame)),
                Err(ffmpeg_next::Error::Eof) => return Ok(None),
                Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => {}
                Err(_) => continue,
            }
            if self.eof {
                return Ok(None);
            }
            match packet.read(&mut self.input.ctx) {
                Ok(()) if packet.stream() == self.facts.video_index => {
                    // A damaged packet is skipped, like the main input's.
                    let _ = self.decoder.send_packet(&packet);
                }
                Ok(()) => {}
                Err(_) => {
                    self.eof = true;
                    let _ = self.decoder.send_eof();
                }
            }
        }
    }
}

/// The encoders and the MP4 muxer.
struct Muxer {
    octx: format::context::Output,
    video: encoder::Video,
    video_index: usize,
    video_tb: Rational,
    audio: Option<(encoder::Audio, usize, Rational)>,
    frames: u64,
    /// Audio samples encoded.
    samples: u64,
    /// Audio waiting for a whole AAC frame, per channel.
    pending: [Vec<f32>; 2],
    /// The final output path, for error messages.
    output: PathBuf,
}

impl Muxer {
    fn create(partial: &Path, output: &Path, spec: &RenditionSpec, rate: Fraction, audio: bool) -> Result<Self> {
        let fail = |stage: &'static str| move |e: ffmpeg_next::Error| write_error(output, stage, e);
        let mut octx = format::output_as(partial, "mp4").map_err(fail("creating the MP4 file"))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);

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
        let video_tb = Rational::new(rate.den as i32, rate.num as i32);
        ctx.set_width(spec.width);
        ctx.set_height(spec.height);
        ctx.set_format(format::Pixel::YUV420P);
        ctx.set_time_base(video_tb);
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
            count: spec.threads as usize,
            ..Default::default()
        });
        if global_header {
            ctx.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = Dictionary::new();
        opts.set("preset", &spec.preset);
        opts.set("crf", &spec.crf.to_string());
        opts.set("profile", "high");
        // Keyframes at least every `gop` frames; scene cuts may add more.
        opts.set("x264-params", &format!("keyint={gop}:min-keyint={}", (gop / 2).max(1)));
        let video = ctx.open_with(opts).map_err(fail("opening libx264"))?;
        let video_index = {
            let mut st = octx.add_stream(x264).map_err(fail("adding the video stream"))?;
            st.set_parameters(&video);
            st.set_time_base(video_tb);
            st.set_avg_frame_rate(rate.to_rational());
            st.index()
        };

        let audio = if audio {
            let aac = encoder::find(codec::Id::AAC).ok_or_else(|| Error::Internal {
                path: output.to_owned(),
                stage: "finding the AAC encoder",
                source: ffmpeg_next::Error::EncoderNotFound,
                log: String::new(),
            })?;
            let mut actx = codec::Context::new_with_codec(aac)
                .encoder()
                .audio()
                .map_err(fail("creating the AAC encoder"))?;
            let atb = Rational::new(1, graph::AUDIO_RATE as i32);
            actx.set_rate(graph::AUDIO_RATE as i32);
            actx.set_format(format::Sample::F32(format::sample::Type::Planar));
            actx.set_channel_layout(ffmpeg_next::ChannelLayout::STEREO);
            actx.set_bit_rate(128_000);
            actx.set_time_base(atb);
            if global_header {
                actx.set_flags(codec::Flags::GLOBAL_HEADER);
            }
            let enc = actx.open_as(aac).map_err(fail("opening the AAC encoder"))?;
            let index = {
                let mut st = octx.add_stream(aac).map_err(fail("adding the audio stream"))?;
                st.set_parameters(&enc);
                st.set_time_base(atb);
                st.index()
            };
            Some((enc, index, atb))
        } else {
            None
        };

        let mut header = Dictionary::new();
        // Index (moov) before the media (mdat): playback starts at once.
        header.set("movflags", "+faststart");
        octx.write_header_with(header).map_err(fail("writing the MP4 header"))?;
        Ok(Muxer {
            octx,
            video,
            video_index,
            video_tb,
            audio,
            frames: 0,
            samples: 0,
            pending: [Vec::new(), Vec::new()],
            output: output.to_owned(),
        })
    }

    fn write_video(&mut self, frame: &mut frame::Video) -> Result<()> {
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
        self.drain_video()
    }

    fn drain_video(&mut self) -> Result<()> {
        let mut packet = Packet::empty();
        let tb = self
            .octx
            .stream(self.video_index)
            .map(|s| s.time_base())
            .unwrap_or(self.video_tb);
        loop {
            match self.video.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(self.video_index);
                    packet.rescale_ts(self.video_tb, tb);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| write_error(&self.output, "writing video", e))?;
                }
                Err(e) if is_again_or_eof(&e) => return Ok(()),
                Err(e) => return Err(write_error(&self.output, "encoding video", e)),
            }
        }
    }

    /// Queues the graph's audio (planar float stereo) and encodes it in
    /// whole AAC frames.
    fn write_audio(&mut self, frame: &frame::Audio) -> Result<()> {
        if self.audio.is_none() {
            return Ok(());
        }
        let n = frame.samples();
        for (ch, queue) in self.pending.iter_mut().enumerate() {
            queue.extend_from_slice(&frame.plane::<f32>(ch)[..n]);
        }
        self.encode_pending(false)
    }

    /// Encodes queued audio: every whole AAC frame, and with `all` the
    /// short last one too. The graph's audio is continuous (resampled with
    /// gap filling, cards padded with silence), so the n-th sample is at n,
    /// whatever time base the concat filter used.
    fn encode_pending(&mut self, all: bool) -> Result<()> {
        let size = AAC_FRAME;
        loop {
            let available = self.pending[0].len();
            let n = if available >= size {
                size
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
            f.set_rate(graph::AUDIO_RATE);
            for (ch, queue) in self.pending.iter_mut().enumerate() {
                f.plane_mut::<f32>(ch)[..n].copy_from_slice(&queue[..n]);
                queue.drain(..n);
            }
            f.set_pts(Some(self.samples as i64));
            self.samples += n as u64;
            if let Some((enc, _, _)) = self.audio.as_mut() {
                enc.send_frame(&f)
                    .map_err(|e| write_error(&self.output, "encoding audio", e))?;
            }
            self.drain_audio()?;
        }
    }

    fn drain_audio(&mut self) -> Result<()> {
        let Some((enc, index, atb)) = self.audio.as_mut() else {
            return Ok(());
        };
        let tb = self.octx.stream(*index).map(|s| s.time_base()).unwrap_or(*atb);
        let mut packet = Packet::empty();
        loop {
            match enc.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(*index);
                    packet.rescale_ts(*atb, tb);
                    packet
                        .write_interleaved(&mut self.octx)
                        .map_err(|e| write_error(&self.output, "writing audio", e))?;
                }
                Err(e) if is_again_or_eof(&e) => return Ok(()),
                Err(e) => return Err(write_error(&self.output, "encoding audio", e)),
            }
        }
    }

    /// Makes the audio exactly as long as the video: silence where it ends
    /// early (the concat filter pads every segment but the last, and a
    /// source's audio may simply stop), cut where it runs on. Players
    /// otherwise show a frozen clock or drift.
    fn finish_audio(&mut self, rate: Fraction) -> Result<()> {
        if self.audio.is_none() {
            return Ok(());
        }
        let target =
            (self.frames as u128 * u128::from(graph::AUDIO_RATE) * u128::from(rate.den) / u128::from(rate.num)) as u64;
        let wanted = target.saturating_sub(self.samples) as usize;
        for queue in &mut self.pending {
            queue.resize(wanted, 0.0);
        }
        self.encode_pending(true)
    }

    /// Flushes the encoders and writes the index.
    fn finish(&mut self) -> Result<()> {
        self.video
            .send_eof()
            .map_err(|e| write_error(&self.output, "flushing video", e))?;
        self.drain_video()?;
        if let Some((enc, _, _)) = self.audio.as_mut() {
            enc.send_eof()
                .map_err(|e| write_error(&self.output, "flushing audio", e))?;
        }
        self.drain_audio()?;
        self.octx
            .write_trailer()
            .map_err(|e| write_error(&self.output, "finishing the MP4 file", e))
    }
}

fn is_again_or_eof(e: &ffmpeg_next::Error) -> bool {
    matches!(e, ffmpeg_next::Error::Eof) || matches!(e, ffmpeg_next::Error::Other { errno } if *errno == libc::EAGAIN)
}

/// Errors while producing output: system I/O errors become
/// [`Error::OutputIo`], anything else is internal.
fn write_error(output: &Path, stage: &'static str, e: ffmpeg_next::Error) -> Error {
    match e {
        ffmpeg_next::Error::Other { errno }
            if [
                libc::EIO,
                libc::ENOSPC,
                libc::EDQUOT,
                libc::EROFS,
                libc::EACCES,
                libc::EPERM,
                libc::ENOENT,
                libc::EFBIG,
            ]
            .contains(&errno) =>
        {
            Error::OutputIo {
                path: output.to_owned(),
                source: io::Error::from_raw_os_error(errno),
            }
        }
        other => Error::internal(output, stage, other),
    }
}

/// One transcode in flight: the graph (built at the first frame), the
/// muxer and the caller's progress callback.
struct Run<'a, P: FnMut(Progress)> {
    budget: &'a Budget,
    input: PathBuf,
    assets: Assets,
    graph: Option<Graph>,
    plan: Plan,
    sink: &'a mut Muxer,
    progress: &'a mut P,
    expected: Duration,
    threads: u32,
    done_v: bool,
    done_a: bool,
}

impl<P: FnMut(Progress)> Run<'_, P> {
    /// Reads the main input to the cap, then finishes the graph. Returns
    /// the number of damaged packets skipped.
    fn execute(&mut self, main: &mut MainSource) -> Result<u64> {
        let mut packet = Packet::empty();
        let mut frame = frame::Video::empty();
        let mut aframe = frame::Audio::empty();
        let mut read_error = None;
        let mut packets_after_video = 0u32;
        loop {
            self.budget.check_for(&self.input)?;
            match packet.read(&mut main.input.ctx) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => break,
                Err(e) => {
                    self.budget.check_for(&self.input)?;
                    main.input.check_denied()?;
                    if let Some(disk) = main.input.read_failure() {
                        return Err(disk);
                    }
                    read_error = Some(e);
                    break;
                }
            }
            if packet.is_corrupt() {
                main.decode_errors += 1;
            }
            let index = packet.stream();
            if index == main.facts.video_index && !main.video_done {
                // A packet the decoder rejects is damage: count it and go on
                // (the file fails as corrupt if nothing decodes at all).
                if let Err(e) = main.video.send_packet(&packet)
                    && !is_again_or_eof(&e)
                {
                    main.decode_errors += 1;
                }
                self.receive_video(main, &mut frame)?;
            } else if main.audio.as_ref().is_some_and(|a| a.index == index && !a.done) {
                if let Some(a) = main.audio.as_mut()
                    && a.decoder.send_packet(&packet).is_err()
                {
                    main.decode_errors += 1;
                }
                self.receive_audio(main, &mut aframe)?;
            }
            if main.video_done {
                // Read a little further for audio that belongs before the
                // cap, then stop: the rest of the file is never read.
                packets_after_video += 1;
                let audio_done = main.audio.as_ref().is_none_or(|a| a.done);
                if audio_done || packets_after_video > 500 {
                    break;
                }
            }
        }
        main.input.check_denied()?;
        tracing::debug!(
            bytes_read = main.input.bytes_read(),
            frames = main.timeline.frames,
            "stopped reading"
        );

        // Drain the decoders.
        if !main.video_done {
            let _ = main.video.send_eof();
            self.receive_video(main, &mut frame)?;
        }
        if let Some(a) = main.audio.as_mut()
            && !a.done
        {
            let _ = a.decoder.send_eof();
        }
        self.receive_audio(main, &mut aframe)?;

        if main.timeline.frames == 0 {
            let why = match &read_error {
                Some(e) => format!("no decodable video frame (read error: {e}){}", fflog::recent()),
                None => format!("no decodable video frame{}", fflog::recent()),
            };
            return Err(Error::Corrupt {
                path: self.input.clone(),
                reason: why,
            });
        }
        check_truncation(main, read_error.as_ref())?;

        // The audio stops where the video stops.
        let end = main.timeline.end();
        self.release_audio(main, Some(main.timeline.seconds(end)))?;
        if let Some(a) = main.audio.as_mut() {
            a.held.clear();
        }
        let with_audio = main.audio.is_some() && self.plan.audio_end.is_some();
        let graph = self.graph_mut()?;
        graph
            .close(pad::MAIN_V, Some(end))
            .map_err(|e| Error::internal(&main.input.path, "ending the video", e))?;
        if with_audio {
            graph
                .close(pad::MAIN_A, None)
                .map_err(|e| Error::internal(&main.input.path, "ending the audio", e))?;
        }
        self.drain()?;
        self.feed_clip("outro")?;
        self.drain()?;
        if !self.done_v {
            return Err(Error::internal(
                &self.input,
                "finishing the filter graph",
                ffmpeg_next::Error::Bug,
            ));
        }
        Ok(main.decode_errors)
    }

    fn graph_mut(&mut self) -> Result<&mut Graph> {
        self.graph
            .as_mut()
            .ok_or_else(|| Error::internal(&self.input, "building the filter graph", ffmpeg_next::Error::Bug))
    }

    /// Takes every frame the video decoder has ready into the graph.
    fn receive_video(&mut self, main: &mut MainSource, frame: &mut frame::Video) -> Result<()> {
        loop {
            match main.video.receive_frame(frame) {
                Ok(()) => {}
                Err(e) if is_again_or_eof(&e) => return Ok(()),
                // Damage: counted; the next packet may decode again.
                Err(_) => {
                    main.decode_errors += 1;
                    return Ok(());
                }
            }
            self.budget.check_for(&self.input)?;
            match main.admit(frame)? {
                Admit::Skip => continue,
                Admit::PastEnd => return Ok(()),
                Admit::Use => {}
            }
            if self.graph.is_none() {
                self.start_graph(main, frame)?;
                // Audio decoded before time zero was known can be placed now.
                let early: Vec<frame::Audio> = main
                    .audio
                    .as_mut()
                    .map(|a| a.early.drain(..).collect())
                    .unwrap_or_default();
                for a in early {
                    self.hold_audio(main, a);
                }
            }
            let now = main.timeline.seconds(frame.pts().unwrap_or(0));
            self.graph_mut()?
                .push(pad::MAIN_V, frame)
                .map_err(|e| Error::internal(&main.input.path, "filtering video", e))?;
            self.release_audio(main, Some(now))?;
            self.drain()?;
        }
    }

    fn receive_audio(&mut self, main: &mut MainSource, frame: &mut frame::Audio) -> Result<()> {
        loop {
            let Some(a) = main.audio.as_mut() else { return Ok(()) };
            match a.decoder.receive_frame(frame) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => {
                    a.done = true;
                    return Ok(());
                }
                Err(e) if is_again_or_eof(&e) => return Ok(()),
                Err(_) => {
                    main.decode_errors += 1;
                    return Ok(());
                }
            }
            if self.graph.is_none() {
                // Time zero is not known yet: keep the newest frames, the
                // ones nearest to it.
                if a.early.len() >= AUDIO_BACKLOG {
                    a.early.pop_front();
                }
                a.early.push_back(frame.clone());
                continue;
            }
            self.hold_audio(main, frame.clone());
        }
    }

    /// Rebases a decoded audio frame and queues it until the video has
    /// reached it. Audio past the end of the video is not needed: once a
    /// frame starts there, the audio is done.
    fn hold_audio(&mut self, main: &mut MainSource, mut frame: frame::Audio) {
        if self.plan.audio_end.is_none() || !main.rebase_audio(&mut frame) {
            return;
        }
        let video_end = main.video_done.then(|| main.timeline.seconds(main.timeline.end()));
        let Some(a) = main.audio.as_mut() else { return };
        if video_end.is_some_and(|end| audio_start(&frame) >= end) {
            a.done = true;
            return;
        }
        a.held.push_back(frame);
    }

    /// Moves held audio into the graph: frames that start before `until`
    /// seconds (the video's position), or every frame when the backlog is
    /// full. With `until` at the video's end, later frames are dropped.
    fn release_audio(&mut self, main: &mut MainSource, until: Option<f64>) -> Result<()> {
        let Some(until) = until else { return Ok(()) };
        loop {
            let Some(a) = main.audio.as_mut() else { return Ok(()) };
            let due = a
                .held
                .front()
                .is_some_and(|f| audio_start(f) < until || a.held.len() > AUDIO_BACKLOG);
            if !due {
                return Ok(());
            }
            let Some(frame) = a.held.pop_front() else { return Ok(()) };
            if let Err(e) = self.graph_mut()?.push(pad::MAIN_A, &frame) {
                // FFmpeg 5.1 cannot take audio whose format changes midway
                // (a TS capture switching channels): the audio is optional,
                // so the rest of the rendition is silent rather than failed.
                tracing::warn!(path = %main.input.path.display(), error = %e, "the audio changed format midway; the rest of the rendition is silent");
                if let Some(a) = main.audio.as_mut() {
                    a.done = true;
                    a.held.clear();
                }
                return Ok(());
            }
        }
    }

    /// Builds the graph from the first main frame (its real size and
    /// format), then feeds the watermark, the card images and an intro clip.
    fn start_graph(&mut self, main: &MainSource, first: &frame::Video) -> Result<()> {
        let assets = &self.assets;
        let mut sources = vec![SourceSpec {
            name: pad::MAIN_V.into(),
            audio: false,
            args: graph::video_source_args(first, main.facts.time_base),
        }];
        let still_tb = Rational::new(1, 1);
        if let Some(wm) = &assets.watermark {
            sources.push(SourceSpec {
                name: pad::WATERMARK.into(),
                audio: false,
                args: graph::video_source_args(wm, still_tb),
            });
        }
        for (name, asset) in [("intro", &assets.intro), ("outro", &assets.outro)] {
            match asset {
                Some(CardAsset::Image { frame, .. }) => sources.push(SourceSpec {
                    name: pad::card(name, false),
                    audio: false,
                    args: graph::video_source_args(frame, still_tb),
                }),
                Some(CardAsset::Clip(clip)) => {
                    if let Some(f) = &clip.first {
                        sources.push(SourceSpec {
                            name: pad::card(name, true),
                            audio: false,
                            args: graph::video_source_args(f, clip.facts.time_base),
                        });
                    }
                }
                None => {}
            }
        }
        if self.plan.audio_end.is_some()
            && let Some(a) = &main.audio
        {
            let sample = a.early.front();
            sources.push(SourceSpec {
                name: pad::MAIN_A.into(),
                audio: true,
                args: audio_source_args(sample, &a.decoder),
            });
        }
        tracing::debug!(graph = %self.plan.description(), "filter graph");
        let mut graph = Graph::build(&self.plan, &sources, self.threads).map_err(|e| Error::Internal {
            path: self.input.clone(),
            stage: "building the filter graph",
            source: e,
            log: format!(" [{}]{}", self.plan.description(), fflog::recent()),
        })?;
        let fail = |e| Error::internal(&main.input.path, "feeding the stills", e);
        if let Some(wm) = &assets.watermark {
            graph.push(pad::WATERMARK, wm).map_err(fail)?;
            graph.close(pad::WATERMARK, None).map_err(fail)?;
        }
        for (name, asset) in [("intro", &assets.intro), ("outro", &assets.outro)] {
            if let Some(CardAsset::Image { frame, .. }) = asset {
                let src = pad::card(name, false);
                graph.push(&src, frame).map_err(fail)?;
                graph.close(&src, None).map_err(fail)?;
            }
        }
        self.graph = Some(graph);
        self.feed_clip("intro")
    }

    /// Decodes a card clip into its source, up to the card's duration. The
    /// clip is taken out of the assets: it is fed once and then dropped.
    fn feed_clip(&mut self, name: &str) -> Result<()> {
        let (asset, card_plan) = match name {
            "intro" => (&mut self.assets.intro, &self.plan.intro),
            _ => (&mut self.assets.outro, &self.plan.outro),
        };
        let duration = match card_plan {
            Some(CardPlan::Clip { duration, .. }) => *duration,
            _ => return Ok(()),
        };
        let Some(CardAsset::Clip(mut clip)) = asset.take() else {
            return Ok(());
        };
        let src = pad::card(name, true);
        let mut timeline = Timeline::new(clip.facts.time_base, duration, clip.facts.info.frame_rate);
        let mut next = clip.first.take();
        while let Some(mut f) = next {
            match timeline.admit(&mut f) {
                Admit::PastEnd => break,
                Admit::Skip => {}
                Admit::Use => {
                    self.graph_mut()?
                        .push(&src, &f)
                        .map_err(|e| Error::internal(&clip.input.path, "filtering a card clip", e))?;
                    self.drain()?;
                }
            }
            next = clip.next_frame(self.budget)?;
        }
        self.graph_mut()?
            .close(&src, Some(timeline.end()))
            .map_err(|e| Error::internal(&clip.input.path, "ending a card clip", e))?;
        self.drain()
    }

    /// Moves every frame the graph has ready into the encoders.
    fn drain(&mut self) -> Result<()> {
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        let mut vf = frame::Video::empty();
        let mut af = frame::Audio::empty();
        loop {
            let mut moved = false;
            if !self.done_v {
                match graph.pull(pad::OUT_V, &mut vf) {
                    Ok(true) => {
                        self.sink.write_video(&mut vf)?;
                        let frames = self.sink.frames;
                        let position = Duration::from_secs_f64(frames as f64 / self.plan.rate.as_f64());
                        (self.progress)(Progress {
                            frames,
                            position,
                            expected: self.expected.max(position),
                        });
                        self.budget.check_for(&self.input)?;
                        moved = true;
                    }
                    Ok(false) => {}
                    Err(ffmpeg_next::Error::Eof) => self.done_v = true,
                    Err(e) => return Err(Error::internal(&self.input, "filtering video", e)),
                }
            }
            if self.plan.audio_end.is_some() && !self.done_a {
                match graph.pull(pad::OUT_A, &mut af) {
                    Ok(true) => {
                        self.sink.write_audio(&af)?;
                        moved = true;
                    }
                    Ok(false) => {}
                    Err(ffmpeg_next::Error::Eof) => self.done_a = true,
                    Err(e) => return Err(Error::internal(&self.input, "filtering audio", e)),
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }
}

/// A file that ends long before its declared duration is truncated: the
/// viewer would get a fraction of the clip, so it fails instead.
fn check_truncation(main: &MainSource, read_error: Option<&ffmpeg_next::Error>) -> Result<()> {
    // Compared with the video stream's own duration: the container's spans
    // every stream, and audio may rightly outlast the video.
    let Some(declared) = main.facts.video_duration.filter(|_| !main.video_done) else {
        return Ok(());
    };
    let t = &main.timeline;
    let got = t.seconds(t.end());
    let expected = declared.as_secs_f64().min(t.seconds(t.limit));
    let tolerance = (expected * 0.1).max(0.5);
    if got + tolerance < expected {
        let cause = read_error.map(|e| format!(", read error: {e}")).unwrap_or_default();
        return Err(Error::Corrupt {
            path: main.input.path.clone(),
            reason: format!(
                "only {got:.2} s of the video's declared {:.2} s could be decoded{cause}{}",
                declared.as_secs_f64(),
                fflog::recent()
            ),
        });
    }
    Ok(())
}

/// Arguments of the `abuffer` source, from a decoded frame when one is at
/// hand (its real format), else from the decoder.
fn audio_source_args(sample: Option<&frame::Audio>, decoder: &decoder::Audio) -> String {
    // SAFETY: reading plain fields of a live frame or codec context; the
    // describe call writes at most `buf.len()` bytes, NUL-terminated.
    unsafe {
        let (rate, fmt, layout) = match sample {
            Some(f) => {
                let p = f.as_ptr();
                (
                    (*p).sample_rate,
                    (*p).format,
                    &(*p).ch_layout as *const ffi::AVChannelLayout,
                )
            }
            None => {
                let p = decoder.as_ptr();
                (
                    (*p).sample_rate,
                    (*p).sample_fmt as i32,
                    &(*p).ch_layout as *const ffi::AVChannelLayout,
                )
            }
        };
        // Only a valid variant may become the Rust enum (sample formats are
        // numbered 0..NB without gaps).
        let fmt_name = if (0..ffi::AVSampleFormat::AV_SAMPLE_FMT_NB as i32).contains(&fmt) {
            ffi::av_get_sample_fmt_name(std::mem::transmute::<i32, ffi::AVSampleFormat>(fmt))
        } else {
            ptr::null()
        };
        let fmt_name = if fmt_name.is_null() {
            "fltp".to_owned()
        } else {
            CStr::from_ptr(fmt_name).to_string_lossy().into_owned()
        };
        let rate = rate.max(1);
        let layout_arg =
            if (*layout).order == ffi::AVChannelOrder::AV_CHANNEL_ORDER_UNSPEC || (*layout).nb_channels <= 0 {
                format!("channels={}", (*layout).nb_channels.max(1))
            } else {
                let mut buf = [0 as c_char; 128];
                let n = ffi::av_channel_layout_describe(layout, buf.as_mut_ptr(), buf.len());
                if n < 0 {
                    format!("channels={}", (*layout).nb_channels)
                } else {
                    format!("channel_layout={}", CStr::from_ptr(buf.as_ptr()).to_string_lossy())
                }
            };
        format!("time_base=1/{rate}:sample_rate={rate}:sample_fmt={fmt_name}:{layout_arg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(num: u32, den: u32) -> Option<Fraction> {
        Some(Fraction { num, den })
    }

    #[test]
    fn frame_rate_is_capped_by_an_integer_factor() {
        assert_eq!(output_rate(f(60000, 1001), 30), Fraction { num: 30000, den: 1001 });
        assert_eq!(output_rate(f(60, 1), 30), Fraction { num: 30, den: 1 });
        assert_eq!(output_rate(f(120, 1), 30), Fraction { num: 30, den: 1 });
        assert_eq!(output_rate(f(50, 1), 30), Fraction { num: 25, den: 1 });
        assert_eq!(output_rate(f(25, 1), 30), Fraction { num: 25, den: 1 });
        assert_eq!(output_rate(f(15, 1), 30), Fraction { num: 15, den: 1 });
        // 30 under a cap of 24 would halve to 15; the cap is closer.
        assert_eq!(output_rate(f(30, 1), 24), Fraction { num: 24, den: 1 });
        assert_eq!(output_rate(None, 30), Fraction { num: 30, den: 1 });
    }

    #[test]
    fn variable_phone_rates_snap_to_a_common_rate() {
        // An iPhone VFR clip averaging 29.87 fps.
        assert_eq!(output_rate(f(2987, 100), 30), Fraction { num: 30000, den: 1001 });
        // An unusual but steady 17 fps stays 17.
        assert_eq!(output_rate(f(17, 1), 30), Fraction { num: 17, den: 1 });
    }
}
