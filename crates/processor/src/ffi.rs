//! The few places where ffmpeg-next 9 (and, for [`heap_in_use`], glibc)
//! has no safe wrapper, each behind one small safe function with its SAFETY
//! note. Everything else in the crate is safe Rust, except the custom I/O
//! core of the `input` module.
//!
//! Values read from a file's headers are untrusted: enum fields are read as
//! plain integers and turned into Rust enums only when they are in range.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Mutex, OnceLock};

use ffmpeg_next::ffi as sys;
use ffmpeg_next::format::context::Input;
use ffmpeg_next::format::stream::{Stream, StreamMut};
use ffmpeg_next::{Rational, codec, color, filter};

/// What a stream's codec parameters say about its pictures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PictureParams {
    pub width: u32,
    pub height: u32,
    /// The pixel format's FFmpeg name, if it is a known format.
    pub pixel_format: Option<&'static str>,
    pub full_range: bool,
    /// The transfer characteristic; `None` for a value FFmpeg does not know.
    pub transfer: Option<color::TransferCharacteristic>,
    /// The Y'CbCr matrix; `None` for a value FFmpeg does not know.
    pub matrix: Option<color::Space>,
    pub sample_aspect_ratio: Rational,
}

/// Reads the picture fields of a stream's codec parameters.
pub(crate) fn picture_params(par: &codec::Parameters) -> PictureParams {
    // SAFETY: `Parameters` always wraps a valid AVCodecParameters (borrowed
    // from an open stream or owned); these are plain field reads. Enum
    // fields are read through an integer pointer so a value outside the
    // enum (a hostile header) is never materialised as the Rust enum.
    let (width, height, format, range, trc, space, sar) = unsafe {
        let p = par.as_ptr();
        (
            (*p).width,
            (*p).height,
            (*p).format,
            raw(&raw const (*p).color_range),
            raw(&raw const (*p).color_trc),
            raw(&raw const (*p).color_space),
            (*p).sample_aspect_ratio,
        )
    };
    PictureParams {
        width: width.max(0) as u32,
        height: height.max(0) as u32,
        pixel_format: pixel_format_name(format),
        full_range: range == sys::AVColorRange::AVCOL_RANGE_JPEG as i32,
        transfer: transfer(trc),
        matrix: matrix(space),
        sample_aspect_ratio: Rational::from(sar),
    }
}

/// An enum field of a C struct, as the integer it holds.
///
/// # Safety
/// `field` must point at a live, 4-byte C enum field.
unsafe fn raw<T>(field: *const T) -> i32 {
    // SAFETY: C enums are `int`-sized; the caller guarantees the pointer.
    unsafe { *field.cast::<i32>() }
}

fn transfer(v: i32) -> Option<color::TransferCharacteristic> {
    use sys::AVColorTransferCharacteristic as T;
    // SAFETY: `v` is one of the enum's values (they run 0..NB without gaps).
    (0..T::AVCOL_TRC_NB as i32)
        .contains(&v)
        .then(|| color::TransferCharacteristic::from(unsafe { std::mem::transmute::<i32, T>(v) }))
}

fn matrix(v: i32) -> Option<color::Space> {
    use sys::AVColorSpace as S;
    // SAFETY: `v` is one of the enum's values (they run 0..NB without gaps).
    (0..S::AVCOL_SPC_NB as i32)
        .contains(&v)
        .then(|| color::Space::from(unsafe { std::mem::transmute::<i32, S>(v) }))
}

/// FFmpeg's name of a pixel format number, if it is one.
pub(crate) fn pixel_format_name(v: i32) -> Option<&'static str> {
    if !(0..sys::AVPixelFormat::AV_PIX_FMT_NB as i32).contains(&v) {
        return None;
    }
    // SAFETY: `v` is one of the enum's values (pixel formats are numbered
    // 0..NB without gaps); FFmpeg returns null or a static string.
    unsafe {
        let name = sys::av_get_pix_fmt_name(std::mem::transmute::<i32, sys::AVPixelFormat>(v));
        (!name.is_null()).then(|| CStr::from_ptr(name).to_str().ok()).flatten()
    }
}

/// The stream's own sample aspect ratio (the container's word, which may
/// differ from the codec's).
pub(crate) fn stream_sample_aspect_ratio(stream: &Stream<'_>) -> Rational {
    // SAFETY: plain field read on a stream of an open input.
    Rational::from(unsafe { (*stream.as_ptr()).sample_aspect_ratio })
}

/// Tells the demuxer to drop every packet of this stream.
pub(crate) fn discard(stream: &mut StreamMut<'_>) {
    // SAFETY: plain field write on a stream of an open input, between reads.
    unsafe { (*stream.as_mut_ptr()).discard = sys::AVDiscard::AVDISCARD_ALL };
}

/// What the container says about the whole file's timing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ContainerTiming {
    /// Duration in microseconds; 0 or less when unknown.
    pub duration_us: i64,
    /// Overall bit rate; 0 or less when unknown.
    pub bit_rate: i64,
    /// The duration is only an estimate from the bit rate.
    pub estimated: bool,
}

/// Reads the container's timing fields.
pub(crate) fn container_timing(ctx: &Input) -> ContainerTiming {
    // SAFETY: plain field reads on an open format context; the estimation
    // method is only compared, never materialised from an unknown value.
    unsafe {
        let p = ctx.as_ptr();
        ContainerTiming {
            duration_us: (*p).duration,
            bit_rate: (*p).bit_rate,
            estimated: raw(&raw const (*p).duration_estimation_method)
                == sys::AVDurationEstimationMethod::AVFMT_DURATION_FROM_BITRATE as i32,
        }
    }
}

/// The counter-clockwise rotation in degrees a display matrix describes
/// (NaN for a degenerate matrix), as FFmpeg computes it.
pub(crate) fn display_rotation(matrix: &[i32; 9]) -> f64 {
    // SAFETY: the function reads exactly nine i32 values.
    unsafe { sys::av_display_rotation_get(matrix.as_ptr()) }
}

/// A display matrix for a clockwise rotation, for tests.
#[cfg(test)]
pub(crate) fn display_matrix_for(clockwise: f64) -> [i32; 9] {
    let mut m = [0i32; 9];
    // SAFETY: writes nine i32 values.
    unsafe { sys::av_display_rotation_set(m.as_mut_ptr(), clockwise) };
    m
}

/// Lets libavfilter run the graph's filters on this many threads.
pub(crate) fn set_graph_threads(graph: &mut filter::Graph, threads: u32) {
    // SAFETY: plain field write on a graph that is not configured yet.
    unsafe { (*graph.as_mut_ptr()).nb_threads = threads.min(i32::MAX as u32) as i32 };
}

/// A demuxer FFmpeg guessed from a file's first bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Guess {
    pub format: *const sys::AVInputFormat,
    pub name: &'static str,
    pub score: i32,
}

/// Asks FFmpeg which demuxer the first `len` bytes of `padded` look like,
/// without a file name. `padded` must hold `len` bytes plus the zero
/// padding FFmpeg requires.
pub(crate) fn guess_format(padded: &mut [u8], len: usize) -> Option<Guess> {
    let len = len.min(padded.len().saturating_sub(sys::AVPROBE_PADDING_SIZE as usize));
    let pd = sys::AVProbeData {
        filename: c"".as_ptr(),
        buf: padded.as_mut_ptr(),
        buf_size: len as c_int,
        mime_type: std::ptr::null(),
    };
    let mut score: c_int = 0;
    // SAFETY: `pd` points at `len` bytes followed by the required zero
    // padding (checked above); the returned format is a static object with
    // a static NUL-terminated name.
    unsafe {
        let fmt = sys::av_probe_input_format3(&pd, 1, &mut score);
        if fmt.is_null() {
            return None;
        }
        let name = CStr::from_ptr((*fmt).name).to_str().unwrap_or("unknown");
        Some(Guess {
            format: fmt,
            name,
            score,
        })
    }
}

/// Requests to open other files, recorded by [`deny_io_open`].
#[derive(Debug, Default)]
pub(crate) struct DeniedOpens(pub Mutex<Vec<String>>);

/// The `io_open` every input gets: it refuses, and remembers what was asked
/// in the context's `opaque`, which must be null or a live [`DeniedOpens`].
pub(crate) unsafe extern "C" fn deny_io_open(
    s: *mut sys::AVFormatContext,
    _pb: *mut *mut sys::AVIOContext,
    url: *const c_char,
    _flags: c_int,
    _options: *mut *mut sys::AVDictionary,
) -> c_int {
    let url = if url.is_null() {
        String::new()
    } else {
        // SAFETY: FFmpeg passes a NUL-terminated string.
        unsafe { CStr::from_ptr(url) }.to_string_lossy().into_owned()
    };
    tracing::warn!(target: "ffmpeg", url, "refused a request to open another file");
    // SAFETY: the only context this callback is installed on is the one
    // `input::open` makes, whose `opaque` is the `DeniedOpens` that outlives
    // it. (None of the allowed demuxers copies `io_open` into a nested
    // context; a null opaque is still handled.)
    unsafe {
        if !s.is_null()
            && let Some(denied) = (*s).opaque.cast::<DeniedOpens>().as_ref()
            && let Ok(mut v) = denied.0.lock()
        {
            v.push(url);
        }
    }
    sys::AVERROR(libc::EPERM)
}

/// Bytes of heap the process has allocated and not yet freed, as glibc
/// counts them: every malloc arena plus the blocks it maps on its own for
/// large requests (FFmpeg's frame and packet buffers often are).
///
/// This is the C heap and the Rust heap together: FFmpeg allocates with
/// malloc, and so does Rust's default global allocator (a program that
/// installs another allocator is not counted for that part). Useful to
/// tests that show a job gives back what it took, and to a worker's
/// diagnostics. Only on glibc targets.
#[cfg(target_env = "gnu")]
pub fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 takes no arguments, reads the allocator's counters
    // under its own locks and returns them by value.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks.saturating_add(info.hblkhd)
}

/// Routes FFmpeg's log to `sink` (warnings and worse only) and caps any
/// single allocation at `max_alloc` bytes. Process-wide by FFmpeg's design;
/// call once.
pub(crate) fn install_log(sink: fn(level: i32, piece: &str), max_alloc: usize) {
    if SINK.set(sink).is_err() {
        return;
    }
    // SAFETY: these functions only store values in libavutil's globals.
    unsafe {
        sys::av_log_set_level(sys::AV_LOG_WARNING);
        sys::av_log_set_callback(Some(log_callback));
        sys::av_max_alloc(max_alloc);
    }
}

/// Where [`log_callback`] sends what FFmpeg says.
static SINK: OnceLock<fn(i32, &str)> = OnceLock::new();

thread_local! {
    /// Whether the next piece starts a line (FFmpeg's `print_prefix`).
    static AT_LINE_START: Cell<c_int> = const { Cell::new(1) };
}

/// The callback FFmpeg calls for every log line. It must never unwind.
unsafe extern "C" fn log_callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, args: *mut sys::__va_list_tag) {
    // SAFETY: reading the global level is a plain load.
    if level > unsafe { sys::av_log_get_level() } {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut print_prefix = AT_LINE_START.with(Cell::get);
    // SAFETY: FFmpeg hands us a valid format and va_list for this call; the
    // buffer is ours and its size is passed, and the result is always
    // NUL-terminated (truncated if needed).
    let written = unsafe {
        sys::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut print_prefix,
        )
    };
    AT_LINE_START.with(|c| c.set(print_prefix));
    if written < 0 {
        return;
    }
    // SAFETY: see above, the buffer is NUL-terminated.
    let piece = unsafe { CStr::from_ptr(line.as_ptr()) }.to_string_lossy();
    if let Some(sink) = SINK.get() {
        sink(level, &piece);
    }
}
