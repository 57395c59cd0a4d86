//! The libavfilter graph a [`Plan`] describes, built and run: named buffer
//! sources in, the encoders' sinks out. The plan itself, with a picture of
//! the graph, is in `graph.rs`.

use ffmpeg_next::{Rational, filter, format, frame};

use crate::graph::{AUDIO_RATE, Plan, pad};

/// Arguments of a `buffer` source for frames like `frame`.
pub(crate) fn video_source_args(frame: &frame::Video, time_base: Rational) -> String {
    let sar = frame.aspect_ratio();
    let (sn, sd) = if sar.numerator() > 0 && sar.denominator() > 0 {
        (sar.numerator(), sar.denominator())
    } else {
        (1, 1)
    };
    format!(
        "video_size={}x{}:pix_fmt={}:time_base={}/{}:pixel_aspect={}/{}",
        frame.width(),
        frame.height(),
        ffmpeg_next::ffi::AVPixelFormat::from(frame.format()) as i32,
        time_base.numerator(),
        time_base.denominator().max(1),
        sn,
        sd
    )
}

/// A configured graph with its named endpoints.
pub(crate) struct Graph {
    inner: filter::Graph,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").finish_non_exhaustive()
    }
}

/// One source to create: its pad name and `buffer`/`abuffer` arguments.
pub(crate) struct SourceSpec {
    pub name: String,
    pub audio: bool,
    pub args: String,
}

impl Graph {
    /// Builds and configures the graph described by `plan` with these
    /// sources.
    pub(crate) fn build(plan: &Plan, sources: &[SourceSpec], threads: u32) -> Result<Self, ffmpeg_next::Error> {
        let mut g = filter::Graph::new();
        crate::ffi::set_graph_threads(&mut g, threads);
        let find = |name: &str| filter::find(name).ok_or(ffmpeg_next::Error::FilterNotFound);
        for s in sources {
            let kind = if s.audio { "abuffer" } else { "buffer" };
            g.add(&find(kind)?, &s.name, &s.args)?;
        }
        let video_sinks: Vec<String> = std::iter::once(pad::OUT_V.to_owned())
            .chain((1..=plan.outputs.further().len()).map(pad::rung))
            .collect();
        for sink in &video_sinks {
            g.add(&find("buffersink")?, sink, "")?;
            if let Some(mut ctx) = g.get(sink) {
                ctx.set_pixel_format(format::Pixel::YUV420P);
            }
        }
        if plan.audio_end.is_some() {
            g.add(&find("abuffersink")?, pad::OUT_A, "")?;
            if let Some(mut sink) = g.get(pad::OUT_A) {
                sink.set_sample_format(format::Sample::F32(format::sample::Type::Planar));
                sink.set_sample_rate(AUDIO_RATE);
                sink.set_channel_layout(ffmpeg_next::ChannelLayout::STEREO);
            }
        }
        let description = plan.description();
        {
            let mut parser = g.output(&sources[0].name, 0)?;
            for s in &sources[1..] {
                parser = parser.output(&s.name, 0)?;
            }
            for sink in &video_sinks {
                parser = parser.input(sink, 0)?;
            }
            if plan.audio_end.is_some() {
                parser = parser.input(pad::OUT_A, 0)?;
            }
            parser.parse(&description)?;
        }
        g.validate()?;
        Ok(Graph { inner: g })
    }

    /// Pushes a frame into the named source.
    pub(crate) fn push(&mut self, source: &str, frame: &frame::Frame) -> Result<(), ffmpeg_next::Error> {
        match self.inner.get(source) {
            Some(mut ctx) => ctx.source().add(frame),
            None => Err(ffmpeg_next::Error::FilterNotFound),
        }
    }

    /// Ends the named source at `pts` (in the source's time base), so the
    /// frame-rate filter knows how long the last frame lasts.
    pub(crate) fn close(&mut self, source: &str, pts: Option<i64>) -> Result<(), ffmpeg_next::Error> {
        match self.inner.get(source) {
            Some(mut ctx) => match pts {
                Some(pts) => ctx.source().close(pts),
                None => ctx.source().flush(),
            },
            None => Err(ffmpeg_next::Error::FilterNotFound),
        }
    }

    /// Takes the next frame from a sink: `Ok(true)` with a frame, `Ok(false)`
    /// when none is ready yet, `Err(Eof)` when the sink is finished.
    pub(crate) fn pull(&mut self, sink: &str, frame: &mut frame::Frame) -> Result<bool, ffmpeg_next::Error> {
        let Some(mut ctx) = self.inner.get(sink) else {
            return Err(ffmpeg_next::Error::FilterNotFound);
        };
        match ctx.sink().frame(frame) {
            Ok(()) => Ok(true),
            Err(ffmpeg_next::Error::Other { errno }) if errno == libc::EAGAIN => Ok(false),
            Err(e) => Err(e),
        }
    }
}
