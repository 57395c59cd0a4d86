//! `process`: decode → one filter graph → encode → mux, in one pass.
//!
//! [`Pipeline::run`] reads as the job does: read the main input up to the
//! cap, flush its decoders, check that something decoded, close the main
//! sources of the graph, feed the outro, and drain the graph into the
//! encoders; [`Muxer::finish`] then flushes the encoders and writes the
//! index.

mod assets;
mod encode;
mod mux;
mod poster;
mod rate;
mod source;
mod timeline;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::{Packet, Rational, frame};

use self::assets::{Assets, CardAsset};
use self::encode::EncodeThread;
use self::mux::Muxer;
use self::poster::PosterPicker;
use self::source::MainSource;
use self::timeline::{Admit, Timeline};
use crate::control::{Budget, CancelFlag, Progress};
use crate::error::{Error, Result, is_again_or_eof};
use crate::fflog;
use crate::filter::{self, Graph, SourceSpec};
use crate::geom::{CardSlot, Fraction};
use crate::graph::{CardPlan, Plan, pad};
use crate::probe::MediaInfo;
use crate::spec::RenditionSpec;

pub(crate) use self::rate::output_rate;

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
}

/// Checks that `spec` can make renditions: its values are valid and every
/// asset it names (the watermark PNG, card images, card clips) is read and
/// decoded now, as a job would. A worker calls it at start, so a broken
/// asset is refused before any video meets it. An error is
/// [`ErrorClass::Spec`](crate::ErrorClass::Spec), naming the file.
pub fn check_spec(spec: &RenditionSpec) -> Result<()> {
    fflog::init();
    spec.validate()?;
    let budget = Budget::new(&CancelFlag::new(), spec.limits.timeout);
    Assets::load(spec, &budget).map(drop)
}

/// Turns `input` into a rendition at `output` as `spec` describes.
///
/// The input is opened with the defences of [`probe`](fn@crate::probe), decoded,
/// cut at [`RenditionSpec::max_duration`] (reading stops there, so a long
/// upload costs no more than a short one), fitted, watermarked, framed by
/// the cards and encoded with libx264 into an MP4 whose index comes first.
///
/// With [`RenditionSpec::poster`], a poster is written beside it, as
/// `output` with the extension `.jpg`: a JPEG of one frame of the rendition
/// itself (letterboxed, upright and watermarked like the video), the first
/// frame of the main video from a tenth of its length on (at least 1 s, at
/// most 5 s in) that is neither dark nor flat, so a fade-in or a black
/// opening is never the poster. It is taken from the frames the encoder
/// gets, in the same pass.
///
/// The rendition (and poster) are written to temporary files beside
/// `output` and renamed into place only on success: after an error nothing
/// is left behind. `progress` is called after every output frame; `cancel`
/// is checked between frames and inside every read.
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
    // Tone mapping needs zscale (FFmpeg built with zimg).
    let zscale = ffmpeg_next::filter::find("zscale").is_some();
    let plan = Plan::new(spec, &assets.sources(&main.facts), rate, zscale);

    let out_err = |source: io::Error| Error::OutputIo {
        path: output.to_owned(),
        source,
    };
    let partial = tempfile::Builder::new()
        .prefix(".vidworker-")
        .suffix(".mp4.part")
        .tempfile_in(parent_dir(output))
        .map_err(out_err)?;
    let mux = Muxer::create(partial.path(), output, spec, rate, plan.audio_end.is_some())?;
    let expected = expected_duration(&main.facts.info, spec);
    let intro = spec.intro.as_ref().map_or(Duration::ZERO, |c| c.duration);
    let outro = spec.outro.as_ref().map_or(Duration::ZERO, |c| c.duration);
    let poster = spec
        .poster
        .then(|| PosterPicker::new(intro, expected.saturating_sub(intro + outro)));

    let finished = Pipeline {
        budget: &budget,
        input: input.to_owned(),
        assets,
        plan,
        graph: None,
        encode: EncodeThread::start(mux)?,
        progress: &mut progress,
        expected,
        threads: spec.threads,
        video_out_done: false,
        audio_out_done: false,
        poster,
    }
    .run(&mut main)?;
    let mut mux = finished.mux;
    mux.finish()?;
    let (frames, has_audio) = (mux.frames, mux.has_audio());
    drop(mux);

    let (bytes, poster) = put_in_place(partial, finished.poster.as_ref(), output)?;
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
        decode_errors: finished.decode_errors,
        input_bytes_read: main.input.bytes_read(),
        poster,
    })
}

/// Moves the finished rendition into place at `output`, its poster (if
/// any) beside it; returns the rendition's size and the poster's path. On
/// an error neither is left behind.
fn put_in_place(
    partial: tempfile::NamedTempFile,
    poster: Option<&frame::Video>,
    output: &Path,
) -> Result<(u64, Option<PathBuf>)> {
    let out_err = |source: io::Error| Error::OutputIo {
        path: output.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(partial.path()).map_err(out_err)?.len();
    let poster = match poster {
        Some(picture) => Some(write_poster(picture, output)?),
        None => None,
    };
    if let Err(e) = partial.persist(output) {
        if let Some(p) = &poster {
            let _ = std::fs::remove_file(p);
        }
        return Err(out_err(e.error));
    }
    Ok((bytes, poster))
}

/// Writes the poster beside `output` (its `.jpg` sibling), through a
/// temporary file so a failure leaves nothing behind.
fn write_poster(picture: &frame::Video, output: &Path) -> Result<PathBuf> {
    let path = output.with_extension("jpg");
    let err = |source: io::Error| Error::OutputIo {
        path: path.clone(),
        source,
    };
    let partial = tempfile::Builder::new()
        .prefix(".vidworker-")
        .suffix(".jpg.part")
        .tempfile_in(parent_dir(output))
        .map_err(err)?;
    poster::write_jpeg(picture, partial.path())?;
    partial.persist(&path).map_err(|e| err(e.error))?;
    Ok(path)
}

/// What a finished pipeline hands back.
struct Finished {
    /// Input packets the decoders rejected.
    decode_errors: u64,
    /// The poster's picture, if one was asked for.
    poster: Option<frame::Video>,
    /// The muxer, everything encoded but not yet flushed.
    mux: Muxer,
}

/// The directory a file is in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// How long the output should be, for progress: the declared duration up
/// to the cap, plus the cards.
fn expected_duration(info: &MediaInfo, spec: &RenditionSpec) -> Duration {
    let main = info.duration.map_or(spec.max_duration, |d| d.min(spec.max_duration));
    main + spec.max_output_duration() - spec.max_duration
}

/// One transcode in flight: the graph (built at the first frame), the
/// encoding thread and the caller's progress callback.
struct Pipeline<'a, P: FnMut(Progress)> {
    budget: &'a Budget,
    input: PathBuf,
    assets: Assets,
    plan: Plan,
    graph: Option<Graph>,
    encode: EncodeThread,
    progress: &'a mut P,
    expected: Duration,
    threads: u32,
    /// The graph's video sink reached its end.
    video_out_done: bool,
    /// The graph's audio sink reached its end.
    audio_out_done: bool,
    /// Chooses the poster among the output frames, if one is wanted.
    poster: Option<PosterPicker>,
}

impl<P: FnMut(Progress)> Pipeline<'_, P> {
    /// The whole transcode.
    fn run(mut self, main: &mut MainSource) -> Result<Finished> {
        let read_error = self.read_to_cap(main)?;
        self.flush_decoders(main)?;
        check_decoded(main, read_error.as_ref())?;
        self.close_main(main)?;
        self.feed_clip(CardSlot::Outro)?;
        self.drain()?;
        if !self.video_out_done {
            return Err(Error::internal(
                &self.input,
                "finishing the filter graph",
                ffmpeg_next::Error::Bug,
            ));
        }
        Ok(Finished {
            decode_errors: main.decode_errors,
            poster: self.poster.and_then(PosterPicker::into_picture),
            mux: self.encode.finish()?,
        })
    }

    /// Reads and decodes the main input until the video passes the cap (and
    /// the audio that belongs before it is in), or the file ends. Returns
    /// the read error that ended the file early, if any.
    fn read_to_cap(&mut self, main: &mut MainSource) -> Result<Option<ffmpeg_next::Error>> {
        let mut packet = Packet::empty();
        let mut frame = frame::Video::empty();
        let mut aframe = frame::Audio::empty();
        let mut packets_after_video = 0u32;
        let read_error = loop {
            self.budget.check_for(&self.input)?;
            match main.input.read_packet(&mut packet) {
                Ok(()) => {}
                Err(ffmpeg_next::Error::Eof) => break None,
                Err(e) => {
                    self.budget.check_for(&self.input)?;
                    main.input.check_denied()?;
                    if let Some(disk) = main.input.read_failure() {
                        return Err(disk);
                    }
                    break Some(e);
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
            } else if let Some(a) = main.audio.as_mut().filter(|a| a.index == index && !a.done) {
                if a.decoder.send_packet(&packet).is_err() {
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
                    break None;
                }
            }
        };
        main.input.check_denied()?;
        tracing::debug!(
            bytes_read = main.input.bytes_read(),
            frames = main.timeline.frames,
            "stopped reading"
        );
        Ok(read_error)
    }

    /// Takes the last frames out of the decoders.
    fn flush_decoders(&mut self, main: &mut MainSource) -> Result<()> {
        if !main.video_done {
            let _ = main.video.send_eof();
            self.receive_video(main, &mut frame::Video::empty())?;
        }
        if let Some(a) = main.audio.as_mut()
            && !a.done
        {
            let _ = a.decoder.send_eof();
        }
        self.receive_audio(main, &mut frame::Audio::empty())
    }

    /// Ends the main sources where the video ends: the audio stops there
    /// too, and the frame-rate filter learns how long the last frame lasts.
    fn close_main(&mut self, main: &mut MainSource) -> Result<()> {
        let end = main.timeline.end();
        self.release_audio(main, main.timeline.seconds(end))?;
        let with_audio = match main.audio.as_mut() {
            Some(a) => {
                a.held.clear();
                true
            }
            None => false,
        };
        let graph = self.graph_mut()?;
        graph
            .close(pad::MAIN_V, Some(end))
            .map_err(|e| Error::internal(&main.input.path, "ending the video", e))?;
        if with_audio {
            graph
                .close(pad::MAIN_A, None)
                .map_err(|e| Error::internal(&main.input.path, "ending the audio", e))?;
        }
        self.drain()
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
                let early = main.audio.as_mut().map(|a| std::mem::take(&mut a.early));
                for a in early.into_iter().flatten() {
                    main.hold_audio(a);
                }
            }
            let now = main.timeline.seconds(frame.pts().unwrap_or(0));
            self.graph_mut()?
                .push(pad::MAIN_V, frame)
                .map_err(|e| Error::internal(&main.input.path, "filtering video", e))?;
            self.release_audio(main, now)?;
            self.drain()?;
        }
    }

    /// Takes every frame the audio decoder has ready: into the hold queue,
    /// or, before time zero is known, into the early backlog.
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
                a.keep_early(frame);
            } else {
                main.hold_audio(frame.clone());
            }
        }
    }

    /// Moves held audio that starts before `until` seconds (the video's
    /// position) into the graph.
    fn release_audio(&mut self, main: &mut MainSource, until: f64) -> Result<()> {
        while let Some(frame) = main.audio.as_mut().and_then(|a| a.next_due(until)) {
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
        Ok(())
    }

    /// Builds the graph from the first main frame (its real size and
    /// format), then feeds the watermark, the card images and an intro clip.
    fn start_graph(&mut self, main: &MainSource, first: &frame::Video) -> Result<()> {
        let sources = self.sources(main, first);
        tracing::debug!(graph = %self.plan.description(), "filter graph");
        let graph = Graph::build(&self.plan, &sources, self.threads).map_err(|e| Error::Internal {
            path: self.input.clone(),
            stage: "building the filter graph",
            source: e,
            log: format!(" [{}]{}", self.plan.description(), fflog::recent()),
        })?;
        self.graph = Some(graph);
        self.feed_stills()?;
        self.feed_clip(CardSlot::Intro)
    }

    /// The graph's sources, each described from a frame of its own.
    fn sources(&self, main: &MainSource, first: &frame::Video) -> Vec<SourceSpec> {
        let still_tb = Rational::new(1, 1);
        let video = |name: String, frame: &frame::Video, tb| SourceSpec {
            name,
            audio: false,
            args: filter::video_source_args(frame, tb),
        };
        let mut sources = vec![video(pad::MAIN_V.into(), first, main.facts.time_base)];
        if let Some(wm) = &self.assets.watermark {
            sources.push(video(pad::WATERMARK.into(), wm, still_tb));
        }
        for slot in CardSlot::ALL {
            match self.assets.card(slot) {
                Some(CardAsset::Image { frame, .. }) => sources.push(video(pad::card(slot, false), frame, still_tb)),
                Some(CardAsset::Clip(clip)) => {
                    if let Some(f) = &clip.first {
                        sources.push(video(pad::card(slot, true), f, clip.facts.time_base));
                    }
                }
                None => {}
            }
        }
        if let Some(a) = &main.audio {
            sources.push(SourceSpec {
                name: pad::MAIN_A.into(),
                audio: true,
                args: a.source_args(),
            });
        }
        sources
    }

    /// Pushes the watermark and the card images, each one frame long.
    fn feed_stills(&mut self) -> Result<()> {
        let Some(graph) = self.graph.as_mut() else {
            return Ok(());
        };
        let fail = |e| Error::internal(&self.input, "feeding the stills", e);
        let mut stills = Vec::new();
        if let Some(wm) = &self.assets.watermark {
            stills.push((pad::WATERMARK.to_owned(), wm));
        }
        for slot in CardSlot::ALL {
            if let Some(CardAsset::Image { frame, .. }) = self.assets.card(slot) {
                stills.push((pad::card(slot, false), frame));
            }
        }
        for (source, frame) in stills {
            graph.push(&source, frame).map_err(fail)?;
            graph.close(&source, None).map_err(fail)?;
        }
        Ok(())
    }

    /// Decodes a card clip into its source, up to the card's duration.
    fn feed_clip(&mut self, slot: CardSlot) -> Result<()> {
        let Some(CardPlan::Clip { duration, .. }) = self.plan.card(slot) else {
            return Ok(());
        };
        let duration = *duration;
        let Some(mut clip) = self.assets.take_clip(slot) else {
            return Ok(());
        };
        let src = pad::card(slot, true);
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
        // A frame handed to the encoder goes with it; a new one is made
        // only then, not for every pull that finds nothing.
        let mut vf = frame::Video::empty();
        let mut af = frame::Audio::empty();
        loop {
            let mut moved = false;
            if !self.video_out_done {
                match graph.pull(pad::OUT_V, &mut vf) {
                    Ok(true) => {
                        if let Some(picker) = self.poster.as_mut().filter(|p| !p.done()) {
                            picker.offer(&vf, self.encode.frames as f64 / self.plan.rate.as_f64());
                        }
                        self.encode.video(std::mem::replace(&mut vf, frame::Video::empty()))?;
                        let frames = self.encode.frames;
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
                    Err(ffmpeg_next::Error::Eof) => self.video_out_done = true,
                    Err(e) => return Err(Error::internal(&self.input, "filtering video", e)),
                }
            }
            if self.plan.audio_end.is_some() && !self.audio_out_done {
                match graph.pull(pad::OUT_A, &mut af) {
                    Ok(true) => {
                        self.encode.audio(std::mem::replace(&mut af, frame::Audio::empty()))?;
                        moved = true;
                    }
                    Ok(false) => {}
                    Err(ffmpeg_next::Error::Eof) => self.audio_out_done = true,
                    Err(e) => return Err(Error::internal(&self.input, "filtering audio", e)),
                }
            }
            if !moved {
                return Ok(());
            }
        }
    }
}

/// Fails a file whose video did not decode: nothing at all, or far less
/// than it declares (a truncated file would give the viewer a fraction of
/// the clip).
fn check_decoded(main: &MainSource, read_error: Option<&ffmpeg_next::Error>) -> Result<()> {
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
