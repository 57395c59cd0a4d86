//! `process`: decode → one filter graph → encode → mux, in one pass.
//!
//! [`Pipeline::run`] reads as the job does: read the main input up to the
//! cap, flush its decoders, check that something decoded, close the main
//! sources of the graph, feed the outro, and drain the graph into the
//! encoders; [`Muxer::finish`] then flushes the encoders and writes the
//! index.

mod assets;
mod encode;
mod extras;
mod mux;
mod outputs;
mod poster;
mod rate;
mod report;
mod source;
mod storyboard;
mod timeline;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::{Packet, Rational, frame};

use self::assets::{Assets, CardAsset};
use self::encode::EncodeThread;
use self::extras::Extras;
use self::mux::{Encoding, Muxer};
use self::poster::PosterPicker;
use self::source::{MainSource, check_decoded};
use self::timeline::{Admit, Timeline};
use crate::control::{Budget, CancelFlag, Progress};
use crate::error::{Error, Result, is_again_or_eof};
use crate::fflog;
use crate::filter::{self, Graph, SourceSpec};
use crate::geom::CardSlot;
use crate::graph::{CardPlan, Plan, pad};
use crate::probe::MediaInfo;
use crate::spec::RenditionSpec;

pub use self::outputs::{Rendition, StoryboardFiles};
pub(crate) use self::rate::output_rate;
pub use self::report::Report;
use self::report::{Written, conclude};

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
    let partial = outputs::partial_file(output, ".mp4.part").map_err(out_err)?;
    let expected = expected_duration(&main.facts.info, spec);
    let extras = Extras::open(spec, output, rate, expected)?;
    let primary = Encoding::primary(spec);
    let hls = match &extras {
        Some(x) => x.hls_dir(&primary.name)?,
        None => None,
    };
    let mux = Muxer::create(
        partial.path(),
        output,
        &primary,
        rate,
        plan.audio_end.is_some(),
        hls.as_deref(),
    )?;
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
        extras,
    }
    .run(&mut main)?;
    conclude(
        finished,
        &main,
        Written { partial, primary },
        spec,
        output,
        rate,
        started,
    )
}

/// What a finished pipeline hands back.
pub(super) struct Finished {
    /// Input packets the decoders rejected.
    decode_errors: u64,
    /// The poster's picture, if one was asked for.
    poster: Option<frame::Video>,
    /// The muxer, everything encoded but not yet flushed.
    mux: Muxer,
    /// The extras, their encoders done.
    extras: Option<Extras>,
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
    /// The ladder's encoders and the storyboard.
    extras: Option<Extras>,
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
        if let Some(x) = self.extras.as_ref()
            && (0..x.rungs()).any(|i| x.rung_open(i))
        {
            return Err(Error::internal(
                &self.input,
                "finishing the ladder",
                ffmpeg_next::Error::Bug,
            ));
        }
        Ok(Finished {
            decode_errors: main.decode_errors,
            poster: self.poster.and_then(PosterPicker::into_picture),
            mux: self.encode.finish()?,
            extras: self.extras,
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
        if self.graph.is_none() {
            return Ok(());
        }
        // A frame handed to the encoder goes with it; a new one is made
        // only then, not for every pull that finds nothing.
        let mut vf = frame::Video::empty();
        let mut af = frame::Audio::empty();
        loop {
            // `|`, not `||`: every sink is drained on every round.
            if !(self.drain_video(&mut vf)? | self.drain_ladder(&mut vf)? | self.drain_audio(&mut af)?) {
                return Ok(());
            }
        }
    }

    /// Moves one frame of the primary rendition, if one is ready, to its
    /// encoder (and the poster and storyboard pickers); says whether one
    /// moved.
    fn drain_video(&mut self, vf: &mut frame::Video) -> Result<bool> {
        if self.video_out_done {
            return Ok(false);
        }
        match self.graph_mut()?.pull(pad::OUT_V, vf) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(ffmpeg_next::Error::Eof) => {
                self.video_out_done = true;
                return Ok(false);
            }
            Err(e) => return Err(Error::internal(&self.input, "filtering video", e)),
        }
        let t = self.encode.frames as f64 / self.plan.rate.as_f64();
        if let Some(picker) = self.poster.as_mut().filter(|p| !p.done()) {
            picker.offer(vf, t);
        }
        if let Some(extras) = self.extras.as_mut() {
            extras
                .offer(vf, t)
                .map_err(|e| Error::internal(&self.input, "making the storyboard", e))?;
        }
        self.encode.video(std::mem::replace(vf, frame::Video::empty()))?;
        let frames = self.encode.frames;
        let position = Duration::from_secs_f64(frames as f64 / self.plan.rate.as_f64());
        (self.progress)(Progress {
            frames,
            position,
            expected: self.expected.max(position),
        });
        self.budget.check_for(&self.input)?;
        Ok(true)
    }

    /// Moves one audio frame, if one is ready, to the encoder.
    fn drain_audio(&mut self, af: &mut frame::Audio) -> Result<bool> {
        if self.plan.audio_end.is_none() || self.audio_out_done {
            return Ok(false);
        }
        match self.graph_mut()?.pull(pad::OUT_A, af) {
            Ok(true) => {
                self.encode.audio(std::mem::replace(af, frame::Audio::empty()))?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(ffmpeg_next::Error::Eof) => {
                self.audio_out_done = true;
                Ok(false)
            }
            Err(e) => Err(Error::internal(&self.input, "filtering audio", e)),
        }
    }

    /// Moves every frame the ladder's sinks have ready into their
    /// encoders; says whether any moved.
    fn drain_ladder(&mut self, vf: &mut frame::Video) -> Result<bool> {
        let (Some(graph), Some(extras)) = (self.graph.as_mut(), self.extras.as_mut()) else {
            return Ok(false);
        };
        let mut moved = false;
        for i in 0..extras.rungs() {
            while extras.rung_open(i) {
                match graph.pull(&pad::rung(i + 1), vf) {
                    Ok(true) => {
                        extras.rung_frame(i, std::mem::replace(vf, frame::Video::empty()))?;
                        moved = true;
                    }
                    Ok(false) => break,
                    Err(ffmpeg_next::Error::Eof) => extras.rung_ended(i),
                    Err(e) => return Err(Error::internal(&self.input, "filtering the ladder", e)),
                }
            }
        }
        Ok(moved)
    }
}
