//! Hostile inputs built by the tests themselves, and a watcher that sees
//! every file opened in a directory (inotify), so a test can show that
//! processing an input opens nothing but that input.

#![allow(dead_code, clippy::expect_used, reason = "test support: a failure is a test failure")]

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use ffmpeg_next::{codec, format, frame};
use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
use rustix::io::Errno;

/// Files opened in one directory since the watch began (inotify IN_OPEN).
pub struct OpenWatch {
    fd: OwnedFd,
}

impl OpenWatch {
    pub fn new(dir: &Path) -> OpenWatch {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).expect("inotify_init1");
        inotify::add_watch(&fd, dir, WatchFlags::OPEN).expect("inotify_add_watch");
        OpenWatch { fd }
    }

    /// Names of the files opened since the last call.
    pub fn opened(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut buf = [MaybeUninit::<u8>::uninit(); 64 * 1024];
        let mut events = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            match events.next() {
                // An event about the directory itself has no name.
                Ok(event) => {
                    if let Some(name) = event.file_name().filter(|n| !n.is_empty()) {
                        names.push(name.to_string_lossy().into_owned());
                    }
                }
                // Non-blocking: every event so far has been read.
                Err(Errno::AGAIN) => break,
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
        names.sort();
        names.dedup();
        names
    }
}

/// One JPEG picture of `w` x `h`, from FFmpeg's own encoder.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let encoder = ffmpeg_next::encoder::find(codec::Id::MJPEG).expect("mjpeg encoder");
    let mut ctx = codec::Context::new_with_codec(encoder)
        .encoder()
        .video()
        .expect("video encoder");
    ctx.set_width(w);
    ctx.set_height(h);
    ctx.set_format(format::Pixel::YUVJ420P);
    ctx.set_time_base((1, 25));
    let mut enc = ctx.open_as(encoder).expect("open mjpeg");
    let mut f = frame::Video::new(format::Pixel::YUVJ420P, w, h);
    for plane in 0..3 {
        f.data_mut(plane).fill(128);
    }
    f.set_pts(Some(0));
    enc.send_frame(&f).expect("encode");
    enc.send_eof().expect("eof");
    let mut packet = ffmpeg_next::Packet::empty();
    enc.receive_packet(&mut packet).expect("packet");
    packet.data().expect("data").to_vec()
}

/// Rewrites the size in a JPEG's SOF0 header.
pub fn jpeg_with_declared_size(mut data: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = data.windows(2).position(|p| p == [0xFF, 0xC0]).expect("SOF0");
    data[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    data[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    data
}

fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    if body.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn list(kind: &[u8; 4], parts: &[Vec<u8>]) -> Vec<u8> {
    let mut body = kind.to_vec();
    for p in parts {
        body.extend_from_slice(p);
    }
    chunk(b"LIST", &body)
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A minimal AVI: one MJPEG video stream (`frames` copies of `jpeg`,
/// declared `w` x `h`), and optionally a text stream whose one chunk is
/// `subtitle` (for the GAB2 shape).
pub fn avi(jpeg: &[u8], frames: u32, w: u32, h: u32, subtitle: Option<&[u8]>) -> Vec<u8> {
    let streams = if subtitle.is_some() { 2 } else { 1 };
    let avih = chunk(
        b"avih",
        &u32s(&[40_000, 0, 0, 0x10, frames, 0, streams, 1 << 20, w, h, 0, 0, 0, 0]),
    );
    let mut strh_v = b"vidsMJPG".to_vec();
    strh_v.extend_from_slice(&u32s(&[0, 0, 0, 1, 25, 0, frames, 1 << 20, u32::MAX, 0]));
    strh_v.extend_from_slice(&[0u8; 8]);
    let mut strf_v = u32s(&[40, w, h]);
    strf_v.extend_from_slice(&1u16.to_le_bytes());
    strf_v.extend_from_slice(&24u16.to_le_bytes());
    strf_v.extend_from_slice(b"MJPG");
    strf_v.extend_from_slice(&u32s(&[w.saturating_mul(h).saturating_mul(3), 0, 0, 0, 0]));
    let mut hdrl = vec![avih, list(b"strl", &[chunk(b"strh", &strh_v), chunk(b"strf", &strf_v)])];
    if subtitle.is_some() {
        let mut strh_t = b"txts\0\0\0\0".to_vec();
        strh_t.extend_from_slice(&u32s(&[0, 0, 0, 1, 25, 0, 1, 0, u32::MAX, 0]));
        strh_t.extend_from_slice(&[0u8; 8]);
        hdrl.push(list(b"strl", &[chunk(b"strh", &strh_t), chunk(b"strf", &[0u8; 4])]));
    }
    let mut movi = Vec::new();
    let mut idx = Vec::new();
    let mut offset = 4u32;
    for _ in 0..frames {
        let c = chunk(b"00dc", jpeg);
        idx.extend_from_slice(b"00dc");
        idx.extend_from_slice(&u32s(&[0x10, offset, jpeg.len() as u32]));
        offset += c.len() as u32;
        movi.push(c);
    }
    if let Some(sub) = subtitle {
        let c = chunk(b"01tx", sub);
        idx.extend_from_slice(b"01tx");
        idx.extend_from_slice(&u32s(&[0x10, offset, sub.len() as u32]));
        movi.push(c);
    }
    let mut body = b"AVI ".to_vec();
    body.extend_from_slice(&list(b"hdrl", &hdrl));
    body.extend_from_slice(&list(b"movi", &movi));
    body.extend_from_slice(&chunk(b"idx1", &idx));
    chunk(b"RIFF", &body)
}

/// A GAB2 subtitle chunk (the AVI "subtitle" format FFmpeg hands to a
/// nested demuxer) carrying `payload`.
pub fn gab2(payload: &[u8]) -> Vec<u8> {
    let mut out = b"GAB2\0".to_vec();
    out.extend_from_slice(&2u16.to_le_bytes());
    let title: Vec<u8> = "en\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
    out.extend_from_slice(&(title.len() as u32).to_le_bytes());
    out.extend_from_slice(&title);
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}
