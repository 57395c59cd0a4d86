//! Typed errors. Every variant names the input and the reason in one line,
//! and [`Error::class`] sorts it into an [`ErrorClass`]: whose fault it is
//! and whether trying again could help, for a caller to decide what to do.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whose fault a failure is, and so what a caller does about it. Every
/// [`Error`] has exactly one ([`Error::class`]).
///
/// Deliberately not `#[non_exhaustive]`: a caller matches every class, so a
/// new one is a compile error wherever a decision is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorClass {
    /// The upload cannot be processed: it is not media, refused, damaged,
    /// unsupported or over a limit. Another attempt fails the same way.
    Input,
    /// The [`RenditionSpec`](crate::RenditionSpec) or one of its assets
    /// (the watermark PNG, a card file) is invalid: the operator's
    /// configuration, never the upload's fault.
    Spec,
    /// The machine or a passing condition: I/O, memory, cancellation, an
    /// internal FFmpeg failure. Another attempt may work.
    Environment,
    /// The job ran longer than [`Limits::timeout`](crate::Limits::timeout).
    /// The default is many times real time, so an input that exceeds it is
    /// most likely pathological, and retrying it may only burn workers.
    Timeout,
}

/// Why a probe or a transcode failed.
///
/// The `Display` form is one line that starts with the file concerned, so it
/// can be shown to a person or stored in a database as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input could not be read (missing, unreadable, or an I/O error).
    #[error("{path}: cannot read: {source}")]
    InputIo {
        /// The input file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The bytes are not a recognisable media file.
    #[error("{path}: not a media file: {reason}")]
    NotMedia {
        /// The input file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// The file is a kind of input vidworker refuses on purpose: a playlist
    /// or script that references other files, a container outside the
    /// allowlist, or a file that tried to open anything besides itself.
    #[error("{path}: refused: {reason}")]
    Refused {
        /// The input file.
        path: PathBuf,
        /// What it is and why it is refused.
        reason: String,
    },

    /// The file has no video stream (audio only, or only cover art).
    #[error("{path}: no video stream{detail}")]
    NoVideo {
        /// The input file.
        path: PathBuf,
        /// What the file does contain, starting with a separator, or empty.
        detail: String,
    },

    /// The video codec is not one vidworker decodes.
    #[error("{path}: unsupported video codec {codec}")]
    UnsupportedCodec {
        /// The input file.
        path: PathBuf,
        /// The codec's name.
        codec: String,
    },

    /// The file is damaged or cut short.
    #[error("{path}: corrupt or truncated: {reason}")]
    Corrupt {
        /// The input file.
        path: PathBuf,
        /// What went wrong, with FFmpeg's own words where it gave any.
        reason: String,
    },

    /// The file exceeds one of the configured [`Limits`](crate::Limits).
    #[error("{path}: over the limit: {reason}")]
    LimitExceeded {
        /// The input file.
        path: PathBuf,
        /// Which limit and by how much.
        reason: String,
    },

    /// The job ran longer than [`Limits::timeout`](crate::Limits::timeout).
    #[error("{path}: timed out after {:.1} s", after.as_secs_f64())]
    TimedOut {
        /// The input file.
        path: PathBuf,
        /// The configured limit.
        after: Duration,
    },

    /// The caller's [`CancelFlag`](crate::CancelFlag) was raised.
    #[error("{path}: cancelled")]
    Cancelled {
        /// The input file.
        path: PathBuf,
    },

    /// The rendition could not be written.
    #[error("{path}: cannot write output: {source}")]
    OutputIo {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The [`RenditionSpec`](crate::RenditionSpec) or one of its assets (a
    /// watermark or card file) is invalid. A configuration problem, not a
    /// problem of the input.
    #[error("invalid rendition spec: {0}")]
    InvalidSpec(String),

    /// FFmpeg failed somewhere we did not expect (encoder, filter graph,
    /// muxer), for example out of memory.
    #[error("{path}: {stage} failed: {source}{log}")]
    Internal {
        /// The input file.
        path: PathBuf,
        /// What was being done.
        stage: &'static str,
        /// FFmpeg's error code.
        #[source]
        source: ffmpeg_next::Error,
        /// FFmpeg's last log lines, starting with a separator, or empty.
        log: String,
    },
}

impl Error {
    /// What kind of failure this is: the upload's, the configuration's,
    /// the machine's, or the clock's. Callers decide on the class (retry,
    /// give up, alert the operator), never on the variant.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotMedia { .. }
            | Error::Refused { .. }
            | Error::NoVideo { .. }
            | Error::UnsupportedCodec { .. }
            | Error::Corrupt { .. }
            | Error::LimitExceeded { .. } => ErrorClass::Input,
            // A missing or unreadable upload stays so; a disk that fails
            // under it may not.
            Error::InputIo { source, .. } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::IsADirectory => {
                    ErrorClass::Input
                }
                _ => ErrorClass::Environment,
            },
            Error::InvalidSpec(_) => ErrorClass::Spec,
            Error::TimedOut { .. } => ErrorClass::Timeout,
            Error::Cancelled { .. } | Error::OutputIo { .. } | Error::Internal { .. } => ErrorClass::Environment,
        }
    }

    /// Whether memory ran out: an allocation was refused, as it is under a
    /// memory limit. FFmpeg says `ENOMEM` wherever it was.
    pub fn is_out_of_memory(&self) -> bool {
        const ENOMEM: ffmpeg_next::Error = ffmpeg_next::Error::Other { errno: libc::ENOMEM };
        match self {
            Error::Internal { source, .. } => *source == ENOMEM,
            Error::InputIo { source, .. } | Error::OutputIo { source, .. } => {
                source.kind() == io::ErrorKind::OutOfMemory || source.raw_os_error() == Some(libc::ENOMEM)
            }
            Error::Corrupt { reason, .. } => reason.contains(&ENOMEM.to_string()),
            Error::NotMedia { .. }
            | Error::Refused { .. }
            | Error::NoVideo { .. }
            | Error::UnsupportedCodec { .. }
            | Error::LimitExceeded { .. }
            | Error::TimedOut { .. }
            | Error::Cancelled { .. }
            | Error::InvalidSpec(_) => false,
        }
    }

    /// The file the error is about, if it is about one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::InputIo { path, .. }
            | Error::NotMedia { path, .. }
            | Error::Refused { path, .. }
            | Error::NoVideo { path, .. }
            | Error::UnsupportedCodec { path, .. }
            | Error::Corrupt { path, .. }
            | Error::LimitExceeded { path, .. }
            | Error::TimedOut { path, .. }
            | Error::Cancelled { path }
            | Error::OutputIo { path, .. }
            | Error::Internal { path, .. } => Some(path),
            Error::InvalidSpec(_) => None,
        }
    }

    /// The one-line message with the file called `name` instead of its
    /// local path: a worker names the uploaded object, not its temporary
    /// copy.
    pub fn display_as(&self, name: &str) -> String {
        let text = self.to_string();
        let Some(path) = self.path() else { return text };
        match text.strip_prefix(&path.display().to_string()) {
            Some(rest) => format!("{name}{rest}"),
            None => text,
        }
    }

    /// A short stable name for the kind of failure, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InputIo { .. } => "input_io",
            Error::NotMedia { .. } => "not_media",
            Error::Refused { .. } => "refused",
            Error::NoVideo { .. } => "no_video",
            Error::UnsupportedCodec { .. } => "unsupported_codec",
            Error::Corrupt { .. } => "corrupt",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::TimedOut { .. } => "timed_out",
            Error::Cancelled { .. } => "cancelled",
            Error::OutputIo { .. } => "output_io",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Internal { .. } => "internal",
        }
    }
}

impl Error {
    /// An unexpected FFmpeg failure while doing `stage` to `path`, with
    /// FFmpeg's last words on this thread.
    pub(crate) fn internal(path: &Path, stage: &'static str, source: ffmpeg_next::Error) -> Error {
        Error::Internal {
            path: path.to_owned(),
            stage,
            source,
            log: crate::fflog::recent(),
        }
    }
}

/// FFmpeg's "nothing more now" and "nothing more ever", as opposed to an
/// error. Shared by the transcoder's receive loops and the muxer's drain.
pub(crate) fn is_again_or_eof(e: &ffmpeg_next::Error) -> bool {
    matches!(e, ffmpeg_next::Error::Eof) || matches!(e, ffmpeg_next::Error::Other { errno } if *errno == libc::EAGAIN)
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> PathBuf {
        PathBuf::from("clip.mp4")
    }

    fn why() -> String {
        "why".to_owned()
    }

    fn input_io(kind: io::ErrorKind) -> Error {
        Error::InputIo {
            path: clip(),
            source: io::Error::from(kind),
        }
    }

    #[track_caller]
    fn assert_class(errors: Vec<Error>, class: ErrorClass) {
        for e in errors {
            assert_eq!(e.class(), class, "{} ({e})", e.kind());
        }
    }

    #[test]
    fn what_is_wrong_with_the_upload_is_an_input_failure() {
        assert_class(
            vec![
                Error::NotMedia {
                    path: clip(),
                    reason: why(),
                },
                Error::Refused {
                    path: clip(),
                    reason: why(),
                },
                Error::NoVideo {
                    path: clip(),
                    detail: String::new(),
                },
                Error::UnsupportedCodec {
                    path: clip(),
                    codec: "rv40".into(),
                },
                Error::Corrupt {
                    path: clip(),
                    reason: why(),
                },
                Error::LimitExceeded {
                    path: clip(),
                    reason: why(),
                },
                input_io(io::ErrorKind::NotFound),
                input_io(io::ErrorKind::PermissionDenied),
                input_io(io::ErrorKind::IsADirectory),
            ],
            ErrorClass::Input,
        );
    }

    #[test]
    fn passing_conditions_are_the_environment_s_and_worth_another_attempt() {
        assert_class(
            vec![
                input_io(io::ErrorKind::Other),
                input_io(io::ErrorKind::Interrupted),
                Error::Cancelled { path: clip() },
                Error::OutputIo {
                    path: PathBuf::from("out.mp4"),
                    source: io::Error::from(io::ErrorKind::StorageFull),
                },
                Error::Internal {
                    path: clip(),
                    stage: "encoding",
                    source: ffmpeg_next::Error::Bug,
                    log: String::new(),
                },
            ],
            ErrorClass::Environment,
        );
    }

    #[test]
    fn a_bad_spec_and_a_timeout_have_classes_of_their_own() {
        assert_class(vec![Error::InvalidSpec(why())], ErrorClass::Spec);
        let after = Duration::from_secs(600);
        assert_class(vec![Error::TimedOut { path: clip(), after }], ErrorClass::Timeout);
    }

    #[test]
    fn an_allocation_refused_anywhere_is_out_of_memory() {
        let enomem = ffmpeg_next::Error::Other { errno: libc::ENOMEM };
        let internal = |source| Error::Internal {
            path: clip(),
            stage: "decoding",
            source,
            log: String::new(),
        };
        assert!(internal(enomem).is_out_of_memory());
        assert!(input_io(io::ErrorKind::OutOfMemory).is_out_of_memory());
        assert!(
            Error::Corrupt {
                path: clip(),
                reason: format!("decoding failed: {enomem}"),
            }
            .is_out_of_memory()
        );
        assert!(!internal(ffmpeg_next::Error::Bug).is_out_of_memory());
        assert!(!input_io(io::ErrorKind::NotFound).is_out_of_memory());
    }
}
