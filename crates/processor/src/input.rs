//! Opening an untrusted file so that FFmpeg reads that file and nothing else.
//!
//! The defences, in the order they act:
//! 1. The path must be a regular file within the size limit.
//! 2. The first bytes are sniffed: text playlists and scripts (HLS, ffconcat,
//!    PLS, XML manifests) are refused by name, whatever the file is called.
//! 3. The container is identified from content only (no file name is given to
//!    FFmpeg's probe) and must be on [`ALLOWED_DEMUXERS`]; the demuxer is then
//!    forced, and `format_whitelist` is set as well so nested demuxers (the
//!    AVI GAB2 subtitle path, for one) inherit the allowlist.
//! 4. FFmpeg never opens anything by name: the file is handed over as a
//!    custom I/O context and the context's `io_open` callback refuses every
//!    request, so a demuxer that wants a second file (MOV data references,
//!    playlists) fails instead of reading it. Refused requests are recorded
//!    and reported.
//! 5. Every read checks the job's cancel flag and deadline, so a demuxer that
//!    scans gigabytes of garbage is interrupted.
//! 6. Stream count, probe size and per-frame pixels are bounded before any
//!    decoder allocates a picture.

use std::ffi::{c_int, c_void};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ffmpeg_next::format::context::{Input, StreamIo};
use ffmpeg_next::format::stream::Disposition;
use ffmpeg_next::{Dictionary, Packet, media};

use crate::control::Budget;
use crate::error::{Error, Result};
use crate::ffi::{self, DeniedOpens};
use crate::fflog;
use crate::spec::Limits;

/// Demuxers vidworker accepts, by FFmpeg short name. Each reads one
/// self-contained file; none follows references to other files once
/// `io_open` is denied. MOV covers MP4, M4V, 3GP and QuickTime.
///
/// MPEG-PS and FLV are left out: phones do not write them, and they create
/// their streams while probing, where per-stream decoder limits do not
/// reach. MPEG-TS (camcorders' `.mts`) declares its streams up front; one
/// that appears later is refused (see `open`).
pub const ALLOWED_DEMUXERS: &[&str] = &["mov", "matroska", "avi", "mpegts", "ivf"];

/// Video decoders vidworker uses, by FFmpeg decoder name.
pub const ALLOWED_VIDEO_DECODERS: &[&str] = &[
    "h264",
    "hevc",
    "vp8",
    "vp9",
    "av1",
    "libdav1d",
    "prores",
    "mjpeg",
    "mpeg4",
    "mpeg2video",
    "mpeg1video",
    "h263",
    "flv",
    "theora",
];

/// Audio decoders vidworker uses when it keeps the audio.
pub const ALLOWED_AUDIO_DECODERS: &[&str] = &[
    "aac",
    "mp3float",
    "mp3",
    "mp2float",
    "mp2",
    "opus",
    "libopus",
    "vorbis",
    "ac3",
    "eac3",
    "alac",
    "flac",
    "amrnb",
    "amrwb",
    "pcm_s16le",
    "pcm_s16be",
    "pcm_s24le",
    "pcm_s24be",
    "pcm_s32le",
    "pcm_f32le",
    "pcm_u8",
    "pcm_alaw",
    "pcm_mulaw",
];

/// Containers FFmpeg recognises that carry audio only.
const AUDIO_ONLY_DEMUXERS: &[&str] = &[
    "mp3", "wav", "aac", "flac", "ogg", "w64", "amr", "ac3", "eac3", "aiff", "caf", "opus", "wv",
];

/// One opened input file.
pub(crate) struct OpenedInput {
    /// Declared first so it closes before the data its callbacks point to.
    pub ctx: Input,
    /// Requests to open other files, recorded by the denying `io_open`.
    denied: Box<DeniedOpens>,
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub size: u64,
    /// Bytes FFmpeg has read so far.
    bytes_read: Arc<AtomicU64>,
    /// The first operating-system read error, if any.
    read_error: Arc<Mutex<Option<io::ErrorKind>>>,
}

impl OpenedInput {
    /// The first file the input tried to open besides itself, if any.
    pub fn denied_open(&self) -> Option<String> {
        self.denied.0.lock().ok().and_then(|v| v.first().cloned())
    }

    /// The index of the main video stream: the largest picture that is not
    /// cover art, preferring streams marked default.
    pub fn best_video_stream(&self) -> Option<usize> {
        self.ctx
            .streams()
            .filter(|s| s.parameters().medium() == media::Type::Video)
            .filter(|s| !s.disposition().contains(Disposition::ATTACHED_PIC))
            .max_by_key(|s| {
                let p = ffi::picture_params(&s.parameters());
                let default = s.disposition().contains(Disposition::DEFAULT);
                (default, u64::from(p.width) * u64::from(p.height))
            })
            .map(|s| s.index())
    }

    /// The index of the best audio stream, if any.
    pub fn best_audio_stream(&self) -> Option<usize> {
        self.ctx.streams().best(media::Type::Audio).map(|s| s.index())
    }

    /// Reads the next packet into `packet`, releasing the one it held.
    ///
    /// `av_read_frame` fills its argument as if it were blank, and
    /// ffmpeg-next's `Packet::read` does not release what the packet held:
    /// a packet reused across reads leaks every packet's data. That cost
    /// 56 MiB per 30 s job at 15 Mb/s, for the life of a worker process.
    pub fn read_packet(&mut self, packet: &mut Packet) -> Result<(), ffmpeg_next::Error> {
        *packet = Packet::empty();
        packet.read(&mut self.ctx)
    }

    /// How many bytes of the file FFmpeg has read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// The disk's error if reading the file failed (rather than the file
    /// being damaged).
    pub fn read_failure(&self) -> Option<Error> {
        let kind = self.read_error.lock().ok().and_then(|k| *k)?;
        Some(Error::InputIo {
            path: self.path.clone(),
            source: io::Error::from(kind),
        })
    }

    /// A refusal if the demuxer tried to open anything else.
    pub fn check_denied(&self) -> Result<()> {
        match self.denied_open() {
            Some(url) => Err(references_elsewhere(&self.path, &url)),
            None => Ok(()),
        }
    }
}

fn references_elsewhere(path: &Path, url: &str) -> Error {
    Error::Refused {
        path: path.to_owned(),
        reason: format!("it references another file or URL ({url:?}); only self-contained media is accepted"),
    }
}

/// Opens `path` for demuxing under `limits`, with every defence listed in
/// the module docs, in that order. Audio decoders may run while the streams
/// are identified only when `audio` is set.
pub(crate) fn open(path: &Path, limits: &Limits, budget: &Budget, audio: bool) -> Result<OpenedInput> {
    fflog::init();
    let (mut file, size) = open_regular_file(path, limits)?;
    let head = read_head(path, &mut file, size, limits)?;
    refuse_scripts(path, &head)?;
    let demuxer = identify(path, &head)?;
    check_demuxer(path, demuxer.name)?;
    budget.check_for(path)?;

    let bytes_read = Arc::new(AtomicU64::new(0));
    let read_error = Arc::new(Mutex::new(None));
    let reader = GuardedFile {
        file,
        budget: budget.clone(),
        bytes_read: Arc::clone(&bytes_read),
        read_error: Arc::clone(&read_error),
    };
    let denied = Box::<DeniedOpens>::default();
    let failed = |ret| classify_open_error(path, budget, &denied, &read_error, limits.max_streams, ret);
    let mut ctx = open_header(path, reader, demuxer, demux_options(limits, audio), &denied).map_err(failed)?;
    check_header(path, &ctx, limits)?;
    let declared = ctx.nb_streams() as usize;
    find_stream_info(&mut ctx, limits.max_pixels).map_err(failed)?;
    check_identified(path, &ctx, declared, limits)?;
    let opened = OpenedInput {
        ctx,
        denied,
        path: path.to_owned(),
        size,
        bytes_read,
        read_error,
    };
    opened.check_denied()?;
    refuse_avi_subtitles(&opened, demuxer.name)?;
    budget.check_for(path)?;
    Ok(opened)
}

/// Defence 1: a regular, non-empty file within the size limit.
fn open_regular_file(path: &Path, limits: &Limits) -> Result<(File, u64)> {
    let io_err = |source: io::Error| Error::InputIo {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(io_err(io::Error::from(io::ErrorKind::IsADirectory)));
    }
    let not_media = |reason: &str| Error::NotMedia {
        path: path.to_owned(),
        reason: reason.into(),
    };
    if !meta.is_file() {
        return Err(not_media("not a regular file"));
    }
    let size = meta.len();
    if size == 0 {
        return Err(not_media("the file is empty"));
    }
    if size > limits.max_input_bytes {
        return Err(Error::LimitExceeded {
            path: path.to_owned(),
            reason: format!(
                "{} bytes is more than the {} byte input limit",
                size, limits.max_input_bytes
            ),
        });
    }
    Ok((file, size))
}

/// The first bytes, for sniffing and identification; the file is left at
/// its start.
fn read_head(path: &Path, file: &mut File, size: u64, limits: &Limits) -> Result<Vec<u8>> {
    let io_err = |source: io::Error| Error::InputIo {
        path: path.to_owned(),
        source,
    };
    let mut head = vec![0u8; size.min(limits.probe_bytes).min(1 << 20) as usize];
    file.read_exact(&mut head).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    Ok(head)
}

/// Defence 2: text playlists and scripts are refused by what they are.
fn refuse_scripts(path: &Path, head: &[u8]) -> Result<()> {
    match sniff_script(head) {
        Some(what) => Err(Error::Refused {
            path: path.to_owned(),
            reason: format!("{what}: playlists and scripts that point at other files are not accepted"),
        }),
        None => Ok(()),
    }
}

/// The options every demuxer gets (defences 3 to 6): the allowlists, which
/// nested demuxers inherit, and the probe and stream limits.
fn demux_options(limits: &Limits, audio: bool) -> Dictionary<'static> {
    let mut options = Dictionary::new();
    options.set("format_whitelist", &ALLOWED_DEMUXERS.join(","));
    options.set("protocol_whitelist", "file");
    options.set("probesize", &limits.probe_bytes.to_string());
    options.set("analyzeduration", &limits.probe_duration.as_micros().to_string());
    options.set("max_streams", &limits.max_streams.to_string());
    let mut codecs = ALLOWED_VIDEO_DECODERS.to_vec();
    if audio {
        codecs.extend_from_slice(ALLOWED_AUDIO_DECODERS);
    }
    options.set("codec_whitelist", &codecs.join(","));
    // MOV data references can point at other files; they are off by default
    // in FFmpeg and io_open is denied anyway. Say so explicitly.
    options.set("enable_drefs", "0");
    options
}

/// Defence 4, the custom I/O core: the file is handed to FFmpeg as an I/O
/// context (FFmpeg never opens anything by name), with the demuxer forced
/// and `io_open` refusing every other request. Reads the header only.
fn open_header(
    path: &Path,
    reader: GuardedFile,
    demuxer: ffi::Guess,
    options: Dictionary<'_>,
    denied: &DeniedOpens,
) -> std::result::Result<Input, c_int> {
    let mut io = StreamIo::from_read_seek_with_capacity(reader, 32 << 10).map_err(|_| ffi_enomem())?;
    tracing::trace!(path = %path.display(), demuxer = demuxer.name, "opening");
    // SAFETY: the context is allocated here and either handed to `Input`,
    // which owns and closes it, or freed by `avformat_open_input` on
    // failure. `io` moves into the `Input` (freed after the context is
    // closed) and `denied` is kept by the caller in the struct that owns
    // the `Input`, declared after it, so both outlive the context. The
    // format pointer is a static FFmpeg object.
    unsafe {
        let mut ps = ffmpeg_next::ffi::avformat_alloc_context();
        if ps.is_null() {
            return Err(ffi_enomem());
        }
        (*ps).pb = io.as_mut_ptr();
        (*ps).flags |= ffmpeg_next::ffi::AVFMT_FLAG_CUSTOM_IO as c_int;
        (*ps).io_open = Some(ffi::deny_io_open);
        (*ps).opaque = std::ptr::from_ref::<DeniedOpens>(denied).cast_mut().cast::<c_void>();
        let mut opts = options.disown();
        let ret = ffmpeg_next::ffi::avformat_open_input(&mut ps, c"".as_ptr(), demuxer.format, &mut opts);
        Dictionary::own(opts);
        if ret < 0 {
            return Err(ret);
        }
        Ok(Input::wrap_with_custom_io(ps, io))
    }
}

/// The rest of the custom I/O core: identifies the streams, with every
/// decoder FFmpeg opens for that refusing pictures over `max_pixels`
/// before allocating them.
fn find_stream_info(ctx: &mut Input, max_pixels: u64) -> std::result::Result<(), c_int> {
    let nb = ctx.nb_streams() as usize;
    let max_pixels = max_pixels.to_string();
    // SAFETY: `ctx` is an open context with `nb` streams, and FFmpeg reads
    // exactly one options dictionary per stream. Each dictionary is
    // disowned for the call and owned again (and freed) after it; FFmpeg
    // keeps none of them.
    let ret = unsafe {
        let mut per_stream: Vec<*mut ffmpeg_next::ffi::AVDictionary> = (0..nb)
            .map(|_| {
                let mut dict = Dictionary::new();
                dict.set("max_pixels", &max_pixels);
                dict.disown()
            })
            .collect();
        let ret = ffmpeg_next::ffi::avformat_find_stream_info(ctx.as_mut_ptr(), per_stream.as_mut_ptr());
        for d in per_stream {
            Dictionary::own(d);
        }
        ret
    };
    if ret < 0 { Err(ret) } else { Ok(()) }
}

fn ffi_enomem() -> c_int {
    ffmpeg_next::ffi::AVERROR(libc::ENOMEM)
}

/// Defence 6, on the header: the stream count, and no declared picture a
/// decoder should not allocate (a decompression bomb).
fn check_header(path: &Path, ctx: &Input, limits: &Limits) -> Result<()> {
    let nb = ctx.nb_streams();
    if nb > limits.max_streams {
        return Err(Error::LimitExceeded {
            path: path.to_owned(),
            reason: format!("{nb} streams is more than the limit of {}", limits.max_streams),
        });
    }
    check_declared_pixels(path, ctx, limits)
}

/// Defence 6, once the streams are identified. Formats without a header
/// (MPEG-TS) may add streams while they are identified, and FFmpeg opens
/// decoders for those without our options, so without `max_pixels` (the
/// allocation cap set in `fflog::init` still bounds them). A video stream
/// that appears only mid-file is not something a camera writes: refuse it.
fn check_identified(path: &Path, ctx: &Input, declared: usize, limits: &Limits) -> Result<()> {
    if ctx
        .streams()
        .skip(declared)
        .any(|s| s.parameters().medium() == media::Type::Video)
    {
        return Err(Error::Refused {
            path: path.to_owned(),
            reason: "a video stream appears only after the start of the file".into(),
        });
    }
    check_declared_pixels(path, ctx, limits)
}

/// Refuses a video stream whose declared picture is over the pixel limit.
fn check_declared_pixels(path: &Path, ctx: &Input, limits: &Limits) -> Result<()> {
    for stream in ctx.streams() {
        let par = stream.parameters();
        let p = ffi::picture_params(&par);
        let (w, h) = (u64::from(p.width), u64::from(p.height));
        if par.medium() == media::Type::Video && w * h > limits.max_pixels {
            return Err(Error::LimitExceeded {
                path: path.to_owned(),
                reason: format!(
                    "the header declares {w}x{h}, {:.1} Mpx per frame, more than the {:.1} Mpx limit",
                    (w * h) as f64 / 1e6,
                    limits.max_pixels as f64 / 1e6
                ),
            });
        }
    }
    Ok(())
}

/// AVI subtitles (GAB2 chunks) are handed to a nested demuxer: the path by
/// which an AVI once smuggled an HLS playlist that read local files
/// (HackerOne #242831). FFmpeg 5.1 limits it to SRT/ASS and the nested
/// context inherits our allowlist, but phones never write them, so an AVI
/// that carries one is refused outright.
fn refuse_avi_subtitles(opened: &OpenedInput, demuxer: &str) -> Result<()> {
    let subtitles = opened
        .ctx
        .streams()
        .any(|s| s.parameters().medium() == media::Type::Subtitle);
    if demuxer == "avi" && subtitles {
        return Err(Error::Refused {
            path: opened.path.clone(),
            reason: "an AVI with an embedded subtitle stream (GAB2), a known way to smuggle playlists".into(),
        });
    }
    Ok(())
}

/// Maps a failed open or stream identification to the error a person needs.
fn classify_open_error(
    path: &Path,
    budget: &Budget,
    denied: &DeniedOpens,
    read_error: &Mutex<Option<io::ErrorKind>>,
    max_streams: u32,
    ret: c_int,
) -> Error {
    if let Err(stop) = budget.check() {
        return stop.into_error(path);
    }
    // The disk failed under a good file: not the file's fault.
    if let Some(kind) = read_error.lock().ok().and_then(|k| *k) {
        return Error::InputIo {
            path: path.to_owned(),
            source: io::Error::from(kind),
        };
    }
    if let Some(url) = denied.0.lock().ok().and_then(|v| v.first().cloned()) {
        return references_elsewhere(path, &url);
    }
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let err = ffmpeg_next::Error::from(ret);
    match err {
        ffmpeg_next::Error::InvalidData | ffmpeg_next::Error::Eof | ffmpeg_next::Error::DemuxerNotFound => {
            corrupt(format!("{err}{}", fflog::recent()))
        }
        ffmpeg_next::Error::Other { errno } if errno == libc::EIO => corrupt(format!("{err}{}", fflog::recent())),
        // A feature FFmpeg does not implement: no retry will change that.
        ffmpeg_next::Error::PatchWelcome => corrupt(format!(
            "it uses a feature FFmpeg does not implement{}",
            fflog::recent()
        )),
        // FFmpeg reports too many streams as out of memory.
        ffmpeg_next::Error::Other { errno } if errno == libc::ENOMEM && fflog::recent().contains("max_streams") => {
            Error::LimitExceeded {
                path: path.to_owned(),
                reason: format!("more streams than the limit of {max_streams}"),
            }
        }
        // Reading a header allocates what the header asks for; a demand
        // FFmpeg refuses comes from a damaged or hostile file, not from a
        // machine short of memory (which would not fail this politely).
        ffmpeg_next::Error::Other { errno } if errno == libc::ENOMEM => corrupt(format!(
            "its header asks for more memory than allowed{}",
            fflog::recent()
        )),
        other => Error::internal(path, "opening the input", other),
    }
}

/// Recognises text playlists and scripts that make FFmpeg read other files.
fn sniff_script(head: &[u8]) -> Option<&'static str> {
    let start = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = start
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(start.len());
    let text = &start[first..];
    let starts = |p: &[u8]| text.len() >= p.len() && text[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"#EXTM3U") || starts(b"#EXTINF") || starts(b"#EXT-X-") {
        Some("an HLS/M3U playlist")
    } else if starts(b"ffconcat") {
        Some("an ffconcat script")
    } else if starts(b"[playlist]") {
        Some("a PLS playlist")
    } else if starts(b"<?xml") || starts(b"<MPD") || starts(b"<smil") || starts(b"<asx") {
        Some("an XML manifest or playlist")
    } else if starts(b"file ") || starts(b"file\t") {
        Some("a concat script")
    } else {
        None
    }
}

/// Defence 3: asks FFmpeg which demuxer the content looks like, without
/// the file name, growing the window like FFmpeg does until the guess is
/// confident.
fn identify(path: &Path, head: &[u8]) -> Result<ffi::Guess> {
    let padding = ffmpeg_next::ffi::AVPROBE_PADDING_SIZE as usize;
    let mut padded = Vec::with_capacity(head.len() + padding);
    padded.extend_from_slice(head);
    padded.resize(head.len() + padding, 0);
    let mut len = 2048.min(head.len());
    loop {
        let guess = ffi::guess_format(&mut padded, len);
        // AVPROBE_SCORE_RETRY: FFmpeg's own threshold for a confident guess.
        if let Some(g) = guess.filter(|g| g.score > 25 || len == head.len()) {
            return Ok(g);
        }
        if len == head.len() {
            return Err(Error::NotMedia {
                path: path.to_owned(),
                reason: "no known container format in its first bytes".into(),
            });
        }
        len = (len * 4).min(head.len());
    }
}

/// Refuses demuxers outside the allowlist with a reason that names them.
fn check_demuxer(path: &Path, name: &str) -> Result<()> {
    let names: Vec<&str> = name.split(',').collect();
    if names.iter().any(|n| ALLOWED_DEMUXERS.contains(n)) {
        return Ok(());
    }
    let first = names.first().copied().unwrap_or(name);
    if names.iter().any(|n| AUDIO_ONLY_DEMUXERS.contains(n)) {
        return Err(Error::NoVideo {
            path: path.to_owned(),
            detail: format!(": it is an audio-only {first} file"),
        });
    }
    let what = match first {
        "hls" | "applehttp" => "an HLS playlist".to_owned(),
        "concat" => "an ffconcat script".to_owned(),
        "dash" => "a DASH manifest".to_owned(),
        n if n.starts_with("image2") || n.ends_with("_pipe") => format!("a still image ({n})"),
        "tty" | "txt" | "srt" | "ass" | "webvtt" => format!("a text file ({first})"),
        other => format!("a {other} file"),
    };
    Err(Error::Refused {
        path: path.to_owned(),
        reason: format!(
            "{what} is not an accepted video container (accepted: MP4/MOV, Matroska/WebM, AVI, MPEG-TS, IVF)"
        ),
    })
}

/// The input file as FFmpeg sees it: every read and seek first checks the
/// job's cancel flag and deadline.
struct GuardedFile {
    file: File,
    budget: Budget,
    bytes_read: Arc<AtomicU64>,
    /// The first error the operating system gave, to tell a failing disk
    /// from a damaged file.
    read_error: Arc<Mutex<Option<io::ErrorKind>>>,
}

impl GuardedFile {
    fn check(&self) -> io::Result<()> {
        self.budget
            .check()
            .map_err(|stop| io::Error::other(format!("{stop:?}")))
    }
}

impl Read for GuardedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.check()?;
        match self.file.read(buf) {
            Ok(n) => {
                self.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
                Ok(n)
            }
            Err(e) => {
                if let Ok(mut first) = self.read_error.lock() {
                    first.get_or_insert(e.kind());
                }
                Err(e)
            }
        }
    }
}

impl Seek for GuardedFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.check()?;
        self.file.seek(pos)
    }
}

/// Shared by the decoders: the stream's codec must be one we decode.
pub(crate) fn check_video_codec(path: &Path, id: ffmpeg_next::codec::Id) -> Result<ffmpeg_next::Codec> {
    let unsupported = || Error::UnsupportedCodec {
        path: path.to_owned(),
        codec: id.name().to_owned(),
    };
    let codec = ffmpeg_next::decoder::find(id).ok_or_else(unsupported)?;
    if ALLOWED_VIDEO_DECODERS.contains(&codec.name()) {
        Ok(codec)
    } else {
        Err(unsupported())
    }
}

/// Whether the decoder for an audio stream is one we use.
pub(crate) fn audio_decoder(id: ffmpeg_next::codec::Id) -> Option<ffmpeg_next::Codec> {
    ffmpeg_next::decoder::find(id).filter(|c| ALLOWED_AUDIO_DECODERS.contains(&c.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_playlists_are_recognised_whatever_their_padding() {
        assert_eq!(
            sniff_script(b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd"),
            Some("an HLS/M3U playlist")
        );
        assert_eq!(sniff_script(b"\xEF\xBB\xBF  \n#extm3u"), Some("an HLS/M3U playlist"));
        assert_eq!(
            sniff_script(b"ffconcat version 1.0\nfile a.mp4"),
            Some("an ffconcat script")
        );
        assert_eq!(sniff_script(b"\x00\x00\x00\x20ftypisom"), None);
    }

    #[test]
    fn demuxer_allowlist_names_the_refused_format() {
        let p = Path::new("x.mp4");
        assert!(check_demuxer(p, "mov,mp4,m4a,3gp,3g2,mj2").is_ok());
        assert!(check_demuxer(p, "matroska,webm").is_ok());
        let err = check_demuxer(p, "hls").expect_err("hls refused");
        assert!(err.to_string().contains("an HLS playlist"), "{err}");
        let err = check_demuxer(p, "mp3").expect_err("mp3 has no video");
        assert_eq!(err.kind(), "no_video");
    }
}
