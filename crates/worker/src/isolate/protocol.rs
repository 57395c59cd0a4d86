//! What the worker and its transcode child say to each other: one
//! [`Request`] on the child's stdin, then [`Reply`] frames on its stdout,
//! each a big-endian `u32` length and that many bytes of JSON. Small on
//! purpose: the child is given everything it may use in the request, and
//! answers with progress and one final frame.
//!
//! Versioned: the child's first frame says its [`VERSION`], and the parent
//! refuses a child that speaks another one (a binary replaced by a deploy
//! while the old worker still runs).

use std::io::{self, Read, Write};
use std::path::PathBuf;

use processor::{ErrorClass, Progress, RenditionSpec, Report};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::sandbox::{Layers, Policy, Usage};

/// The protocol's version; a change to any frame changes it.
pub const VERSION: u32 = 2;

/// The largest frame either side accepts. A report is a few KiB.
const MAX_FRAME: u32 = 1 << 20;

/// The parent's one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    /// The parent's [`VERSION`].
    pub version: u32,
    /// The parent's pid: the child stops at once if it was re-parented
    /// before it could arm its parent-death signal.
    pub parent: u32,
    /// What the child may touch, and its limits.
    pub policy: Policy,
    /// Refuse to run unless every sandbox layer is in force.
    pub require_sandbox: bool,
    /// The transcode; `None` to apply the sandbox, say which layers are in
    /// force and exit (the worker's start-up check).
    pub job: Option<Job>,
}

/// One transcode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The original, in the job's directory.
    pub input: PathBuf,
    /// Where the rendition goes, in the job's directory.
    pub output: PathBuf,
    /// What errors call the input (`s3://bucket/key`), instead of its
    /// local path.
    pub name: String,
    /// The rendition.
    pub spec: RenditionSpec,
}

/// A frame from the child.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    /// The first frame: the child's version and the sandbox layers in
    /// force, before any input is opened.
    Started {
        /// The child's [`VERSION`].
        version: u32,
        /// The layers applied.
        layers: Layers,
    },
    /// The transcode moved on.
    Progress(Progress),
    /// The transcode is done; the last frame.
    Done {
        /// What the processor reports.
        report: Box<Report>,
        /// What the transcode took from the machine.
        usage: Usage,
    },
    /// The transcode failed; the last frame.
    Failed(Failure),
}

/// A failure the processor reported, as the parent needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Whose fault it is.
    pub class: ErrorClass,
    /// The processor's stable name for it (`corrupt`, `timed_out`, …).
    pub kind: String,
    /// The one-line message, naming the input by the job's name.
    pub message: String,
    /// Memory ran out: an allocation was refused under the job's limit.
    pub out_of_memory: bool,
}

/// Writes one frame and flushes it.
pub fn write_frame<T: Serialize>(w: &mut impl Write, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| io::Error::other(format!("a frame of {} bytes is over the limit", body.len())))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame; `None` at a clean end of the stream.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0; frame_len(len)?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// [`read_frame`] for the parent's async pipe.
pub async fn read_frame_async<T: DeserializeOwned>(r: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut body = vec![0; frame_len(len)?];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

fn frame_len(len: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit"),
        ));
    }
    Ok(len as usize)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let failure = Failure {
            class: ErrorClass::Input,
            kind: "corrupt".into(),
            message: "s3://b/originals/x: corrupt or truncated: eof".into(),
            out_of_memory: false,
        };
        let mut pipe = Vec::new();
        write_frame(&mut pipe, &Reply::Failed(failure.clone())).expect("write");
        let mut r = pipe.as_slice();
        match read_frame::<Reply>(&mut r).expect("read") {
            Some(Reply::Failed(f)) => assert_eq!(f, failure),
            other => panic!("{other:?}"),
        }
        assert!(read_frame::<Reply>(&mut r).expect("clean end").is_none());
    }

    #[test]
    fn an_oversized_or_cut_frame_is_an_error() {
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, b'{'];
        let e = read_frame::<Reply>(&mut r).expect_err("too large");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let mut r: &[u8] = &[0, 0, 0, 9, b'{'];
        let e = read_frame::<Reply>(&mut r).expect_err("cut short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
