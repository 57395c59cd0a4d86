//! FFmpeg's process-wide settings: its log, routed into `tracing` and kept
//! per thread so an error can quote what the library said about it, and a
//! cap on any single allocation.
//!
//! FFmpeg's log callback is process-wide by nature. Its default prints to
//! stderr, which would tear progress bars and JSON logs apart, so
//! [`init`] replaces it once with a callback that forwards FFmpeg's warnings
//! and errors to `tracing` (target `ffmpeg`, level `debug`;
//! `RUST_LOG=ffmpeg=debug` shows them) and remembers the last ones of the
//! calling thread. Messages below warning level are not formatted at all. Messages
//! logged from FFmpeg's own worker threads reach `tracing` but not the
//! per-thread memory; the errors they cause come back as return codes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Once;

use crate::ffi;

/// FFmpeg's warning level: messages at it or worse are kept for errors.
const AV_LOG_WARNING: i32 = ffmpeg_next::ffi::AV_LOG_WARNING;

/// The largest single allocation FFmpeg may make, in bytes.
const MAX_ALLOC: usize = 256 << 20;

/// How many recent messages an error may quote.
const KEEP: usize = 6;

thread_local! {
    static RECENT: RefCell<VecDeque<String>> = const { RefCell::new(VecDeque::new()) };
    /// FFmpeg builds some lines in several calls; the pieces wait here.
    static PARTIAL: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Initialises FFmpeg and installs the log bridge. Idempotent and cheap after
/// the first call; every public entry point calls it.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // `ffmpeg_next::init` only registers devices and sets up networking
        // for old FFmpeg versions; 5.1 needs neither, and the result carries
        // no information we could act on.
        let _ = ffmpeg_next::init();
        // No single allocation above 256 MiB: the largest plane of the
        // largest accepted picture (40 Mpx at 16 bits) is 80 MB, and a
        // hostile header must not get FFmpeg to ask for gigabytes.
        ffi::install_log(piece, MAX_ALLOC);
    });
}

/// Forgets the calling thread's recent messages; called when a job starts so
/// an error never quotes a previous job.
pub(crate) fn clear() {
    RECENT.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.clear();
        }
    });
}

/// The calling thread's recent FFmpeg warnings and errors as
/// `" (ffmpeg: a; b)"`, or an empty string when there are none.
pub(crate) fn recent() -> String {
    RECENT.with(|r| match r.try_borrow() {
        Ok(r) if !r.is_empty() => {
            let joined = r.iter().map(String::as_str).collect::<Vec<_>>().join("; ");
            format!(" (ffmpeg: {joined})")
        }
        _ => String::new(),
    })
}

/// Takes one piece of a log line from FFmpeg (see [`ffi::install_log`]):
/// FFmpeg builds some lines in several calls, so pieces are joined until a
/// line ends, then the line goes to `tracing` and, for warnings and worse,
/// to the calling thread's recent messages.
fn piece(level: i32, piece: &str) {
    let Some(text) = PARTIAL.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        p.push_str(piece);
        if !p.ends_with('\n') && p.len() < 2048 {
            return None;
        }
        Some(std::mem::take(&mut *p))
    }) else {
        return;
    };
    let text = without_address(text.trim());
    if text.is_empty() {
        return;
    }
    tracing::debug!(target: "ffmpeg", level, "{text}");
    if level <= AV_LOG_WARNING {
        let text: String = text.chars().take(300).collect();
        RECENT.with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                // A decoder repeats itself for every frame; once is enough.
                if r.contains(&text) {
                    return;
                }
                if r.len() == KEEP {
                    r.pop_front();
                }
                r.push_back(text);
            }
        });
    }
}

/// `[h264 @ 0x55e0...] msg` → `[h264] msg`, for every bracket: the address
/// means nothing to a reader and makes identical messages look different.
/// Line breaks inside a message become spaces: errors are one line.
fn without_address(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(" @ 0x") {
        match rest[at..].find(']') {
            Some(close) => {
                out.push_str(&rest[..at]);
                rest = &rest[at + close..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_dropped_from_prefixes() {
        assert_eq!(
            without_address("[h264 @ 0x55e055ac6100] Invalid NAL unit size"),
            "[h264] Invalid NAL unit size"
        );
        assert_eq!(without_address("plain"), "plain");
        assert_eq!(
            without_address("[mjpeg @ 0x1] [IMGUTILS @ 0x7f5c] Picture size\nis invalid"),
            "[mjpeg] [IMGUTILS] Picture size is invalid"
        );
    }
}
