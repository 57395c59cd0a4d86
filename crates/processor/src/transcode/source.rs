//! Where frames come from: the main input (video and, when kept, audio) and
//! card clips, each opened with the defences of [`crate::input`].

use std::collections::VecDeque;
use std::path::Path;

use ffmpeg_next::{Dictionary, Packet, Rational, Rescale, codec, decoder, frame};

use super::timeline::{Admit, Timeline};
use crate::control::Budget;
use crate::error::{Error, Result};
use crate::fflog;
use crate::input::{self, OpenedInput};
use crate::probe::{self, VideoFacts};
use crate::spec::RenditionSpec;

/// Frames of audio kept while waiting, at most (about 20 s at 48 kHz).
const AUDIO_BACKLOG: usize = 1000;

/// The main input: demuxer, decoders and the bookkeeping that cuts it at
/// the cap and makes its timestamps start at zero.
pub(super) struct MainSource {
    pub input: OpenedInput,
    pub facts: VideoFacts,
    pub video: decoder::Video,
    pub audio: Option<AudioIn>,
    max_pixels: u64,
    pub timeline: Timeline,
    /// The video reached the cap (or its end, once flushed).
    pub video_done: bool,
    /// Packets the decoders rejected as damaged.
    pub decode_errors: u64,
}

impl MainSource {
    pub(super) fn open(path: &Path, spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
        let mut input = input::open(path, &spec.limits, budget, spec.keep_audio)?;
        let mut facts = probe::describe(&input, &spec.limits)?;
        let threads = decoder_threads(spec.threads, &facts.info);
        let video = open_video_decoder(&input, &facts, threads, spec.limits.max_pixels)?;
        let audio = facts
            .audio_index
            .filter(|_| spec.keep_audio)
            .and_then(|index| AudioIn::open(&input, index));
        if audio.is_none() {
            facts.audio_index = None;
        }
        // Skip everything we do not decode, so the demuxer does not even
        // hand it over.
        let keep = [Some(facts.video_index), facts.audio_index];
        for mut stream in input.ctx.streams_mut() {
            if !keep.contains(&Some(stream.index())) {
                crate::ffi::discard(&mut stream);
            }
        }
        tracing::debug!(
            path = %path.display(),
            bytes_read = input.bytes_read(),
            size = input.size,
            container = %facts.info.container,
            codec = %facts.info.video_codec,
            matrix = ?facts.colour.matrix,
            matrix_guessed = facts.colour.guessed,
            full_range = facts.colour.full_range,
            "opened input"
        );
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

    pub(super) fn path(&self) -> &Path {
        &self.input.path
    }

    /// Decides what to do with a decoded frame and rebases its timestamp.
    pub(super) fn admit(&mut self, frame: &mut frame::Video) -> Result<Admit> {
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

    /// Where the video ends so far, in seconds.
    pub(super) fn video_end(&self) -> f64 {
        self.timeline.seconds(self.timeline.end())
    }

    /// Rebases a decoded audio frame onto the video's time zero and queues
    /// it until the video has reached it. Audio past the end of the video
    /// is not needed: once a frame starts there, the audio is done.
    pub(super) fn hold_audio(&mut self, mut frame: frame::Audio) {
        let Some(origin) = self.timeline.origin else { return };
        let video_end = self.video_done.then(|| self.video_end());
        let video_tb = self.facts.time_base;
        let Some(audio) = self.audio.as_mut() else { return };
        if let Some(pts) = frame.timestamp().or(frame.pts()) {
            let sample_tb = Rational::new(1, frame.rate().max(1) as i32);
            let zero = origin.rescale(video_tb, sample_tb);
            frame.set_pts(Some(pts.rescale(audio.time_base, sample_tb).saturating_sub(zero)));
        }
        if video_end.is_some_and(|end| audio_start(&frame) >= end) {
            audio.done = true;
            return;
        }
        audio.held.push_back(frame);
    }
}

/// The main input's audio, when the rendition keeps it.
pub(super) struct AudioIn {
    pub index: usize,
    pub decoder: decoder::Audio,
    time_base: Rational,
    /// Frames decoded before the first video frame fixed time zero.
    pub early: VecDeque<frame::Audio>,
    /// Rebased frames waiting for the video to pass them: audio goes into
    /// the graph only up to where the video has got, so it can be cut
    /// exactly where the video ends.
    pub held: VecDeque<frame::Audio>,
    pub done: bool,
}

impl AudioIn {
    /// Opens the decoder of an audio stream, or says why the rendition will
    /// be silent (the audio is optional: its failure fails nothing).
    fn open(input: &OpenedInput, index: usize) -> Option<AudioIn> {
        let stream = input.ctx.stream(index)?;
        let Some(codec) = input::audio_decoder(stream.parameters().id()) else {
            tracing::warn!(path = %input.path.display(), codec = stream.parameters().id().name(), "audio codec not supported; the rendition will be silent");
            return None;
        };
        let mut decoder = codec::Context::from_parameters(stream.parameters()).ok()?.decoder();
        decoder.set_packet_time_base(stream.time_base());
        match decoder.open_as(codec).and_then(|d| d.audio()) {
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

    /// Keeps a frame decoded before time zero is known: the newest ones,
    /// nearest to it.
    pub(super) fn keep_early(&mut self, frame: &frame::Audio) {
        if self.early.len() >= AUDIO_BACKLOG {
            self.early.pop_front();
        }
        self.early.push_back(frame.clone());
    }

    /// The next held frame that is due: it starts before `until` seconds
    /// (the video's position), or the backlog is full.
    pub(super) fn next_due(&mut self, until: f64) -> Option<frame::Audio> {
        let due = self
            .held
            .front()
            .is_some_and(|f| audio_start(f) < until || self.held.len() > AUDIO_BACKLOG);
        if due { self.held.pop_front() } else { None }
    }

    /// Arguments of the `abuffer` source: from a decoded frame when one is
    /// at hand (its real format), else from the decoder.
    pub(super) fn source_args(&self) -> String {
        let (rate, format, layout, channels) = match self.early.front() {
            Some(f) => (f.rate(), f.format(), f.channel_layout(), f.channels()),
            None => (
                self.decoder.rate(),
                self.decoder.format(),
                self.decoder.channel_layout(),
                self.decoder.channels(),
            ),
        };
        let format = match format {
            ffmpeg_next::format::Sample::None => "fltp",
            f => f.name(),
        };
        let rate = rate.max(1);
        let layout = if layout.bits() == 0 {
            format!("channels={}", channels.max(1))
        } else {
            format!("channel_layout=0x{:x}", layout.bits())
        };
        format!("time_base=1/{rate}:sample_rate={rate}:sample_fmt={format}:{layout}")
    }
}

/// Where an audio frame starts, in seconds (after rebasing).
fn audio_start(frame: &frame::Audio) -> f64 {
    frame.pts().unwrap_or(0) as f64 / f64::from(frame.rate().max(1))
}

/// A card clip: opened at load time, its first frame decoded so the graph
/// knows its format.
pub(super) struct Clip {
    pub input: OpenedInput,
    pub facts: VideoFacts,
    decoder: decoder::Video,
    pub first: Option<frame::Video>,
    eof: bool,
}

impl Clip {
    pub(super) fn open(path: &Path, spec: &RenditionSpec, budget: &Budget) -> Result<Self> {
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
    pub(super) fn next_frame(&mut self, budget: &Budget) -> Result<Option<frame::Video>> {
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

/// Decoder threads for the main video, from the job's share of the cores
/// (`cores`, 0: the whole machine's, FFmpeg's automatic count).
///
/// Frame threading keeps a decoder context and its pictures per thread,
/// about 10 MiB each at 1080p. Up to 1080p30 H.264 one thread decodes in a
/// fraction of the time x264 needs for the rendition, in the thread that
/// also filters, while x264's threads keep the other cores busy: on the
/// reference job (benches/compare-ffmpeg.sh) it was as fast, used less CPU
/// and 20 MiB less memory. Heavier sources (HEVC and other codecs, higher
/// resolutions or frame rates, an unknown rate) get a thread per core of
/// the job: a single thread made the 4K60 fixture 28 % slower.
fn decoder_threads(cores: u32, info: &probe::MediaInfo) -> u32 {
    const LIGHT: f64 = 1920.0 * 1080.0 * 30.0 * 1.01;
    let fps = info.frame_rate.map_or(f64::INFINITY, |f| f.as_f64());
    let pixel_rate = f64::from(info.coded_width) * f64::from(info.coded_height) * fps;
    if info.video_codec == "h264" && pixel_rate <= LIGHT {
        1
    } else {
        cores
    }
}

/// Opens a video decoder for the chosen stream with the job's limits:
/// `max_pixels` makes the decoder refuse a picture over the limit before
/// allocating it.
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
    let mut decoder = ctx.decoder();
    decoder.set_packet_time_base(stream.time_base());
    let mut options = Dictionary::new();
    options.set("max_pixels", &max_pixels.min(i64::MAX as u64).to_string());
    decoder
        .open_as_with(codec, options)
        .and_then(|d| d.video())
        .map_err(|e| match e {
            ffmpeg_next::Error::InvalidData | ffmpeg_next::Error::PatchWelcome => Error::Corrupt {
                path: path.clone(),
                reason: format!("cannot start the {} decoder: {e}{}", codec.name(), fflog::recent()),
            },
            other => Error::internal(path, "opening the video decoder", other),
        })
}

/// Fails a file whose video did not decode: nothing at all, or far less
/// than it declares (a truncated file would give the viewer a fraction of
/// the clip).
pub(super) fn check_decoded(main: &MainSource, read_error: Option<&ffmpeg_next::Error>) -> Result<()> {
    let cause = read_error.map(|e| format!("read error: {e}"));
    if main.timeline.frames == 0 {
        let why = match cause {
            Some(c) => format!("no decodable video frame ({c}){}", fflog::recent()),
            None => format!("no decodable video frame{}", fflog::recent()),
        };
        return Err(Error::Corrupt {
            path: main.path().to_owned(),
            reason: why,
        });
    }
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
        let cause = cause.map(|c| format!(", {c}")).unwrap_or_default();
        return Err(Error::Corrupt {
            path: main.path().to_owned(),
            reason: format!(
                "only {got:.2} s of the video's declared {:.2} s could be decoded{cause}{}",
                declared.as_secs_f64(),
                fflog::recent()
            ),
        });
    }
    Ok(())
}
