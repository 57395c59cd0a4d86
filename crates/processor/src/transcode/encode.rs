//! The encoders on a thread of their own.
//!
//! FFmpeg 5.1's CLI runs demuxing, decoding, filtering and the calls into
//! x264 in one loop. x264 spreads its frame encoding over its own threads,
//! but the loop also runs x264's lookahead (`sync-lookahead=0`, see
//! `mux::open_x264`) and whatever the loop does is done one step after
//! another. Here the decoding and filtering thread hands finished pictures
//! to this thread through a short queue and goes on with the next one, so
//! the two halves overlap; the queue bounds the memory it costs.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use ffmpeg_next::frame;

use super::mux::Muxer;
use crate::error::{Error, Result};

/// Pictures (or audio frames) waiting for the encoders: a few 720p frames,
/// enough to smooth the filter's bursts (the frame-rate filter may emit
/// two at once) without holding more than about 6 MB.
const QUEUE: usize = 4;

/// What the filtering thread hands over.
enum Work {
    Video(frame::Video),
    Audio(frame::Audio),
}

/// The encoding thread and the queue into it.
pub(super) struct EncodeThread {
    queue: Option<SyncSender<Work>>,
    thread: Option<JoinHandle<Result<Muxer>>>,
    /// The rendition's path, for messages.
    output: PathBuf,
    /// Video frames handed over so far.
    pub frames: u64,
}

impl EncodeThread {
    /// Starts a thread that encodes and writes what it is given into `mux`.
    pub(super) fn start(mux: Muxer) -> Result<Self> {
        let (queue, work) = mpsc::sync_channel(QUEUE);
        let span = tracing::Span::current();
        let output = mux.output().to_owned();
        let thread = std::thread::Builder::new()
            .name("vidworker-encode".into())
            .spawn(move || span.in_scope(|| encode(mux, work)))
            .map_err(|source| Error::OutputIo {
                path: output.clone(),
                source,
            })?;
        Ok(EncodeThread {
            queue: Some(queue),
            thread: Some(thread),
            output,
            frames: 0,
        })
    }

    /// Hands a filtered picture to the encoder.
    pub(super) fn video(&mut self, frame: frame::Video) -> Result<()> {
        self.send(Work::Video(frame))?;
        self.frames += 1;
        Ok(())
    }

    /// Hands filtered audio to the encoder.
    pub(super) fn audio(&mut self, frame: frame::Audio) -> Result<()> {
        self.send(Work::Audio(frame))
    }

    fn send(&mut self, work: Work) -> Result<()> {
        let sent = self.queue.as_ref().map(|q| q.send(work));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped taking work: it failed, and says why.
            _ => Err(self.join().err().unwrap_or_else(|| stopped(&self.output))),
        }
    }

    /// Waits until everything handed over is encoded and returns the muxer
    /// (to finish the file), or the error that stopped the encoding.
    pub(super) fn finish(mut self) -> Result<Muxer> {
        self.join()
    }

    fn join(&mut self) -> Result<Muxer> {
        self.queue = None;
        let thread = self.thread.take().ok_or_else(|| stopped(&self.output))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for EncodeThread {
    /// A transcode that fails midway still waits for its encoder: no
    /// thread outlives the job or writes to a file being removed.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread's loop: encodes until the queue closes or a write fails.
fn encode(mut mux: Muxer, work: Receiver<Work>) -> Result<Muxer> {
    for item in work {
        match item {
            Work::Video(mut frame) => mux.write_video(&mut frame)?,
            Work::Audio(frame) => mux.write_audio(&frame)?,
        }
    }
    Ok(mux)
}

/// The error for an encoder that is gone without one of its own: a bug,
/// as the thread only ends with a result once its queue is closed.
fn stopped(output: &Path) -> Error {
    Error::Internal {
        path: output.to_owned(),
        stage: "encoding",
        source: ffmpeg_next::Error::Bug,
        log: " (the encoding thread stopped)".into(),
    }
}
