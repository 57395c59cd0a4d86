//! Still images (the watermark and image cards), decoded with FFmpeg's own
//! PNG decoder straight from memory: no demuxer, no file name handling.

use std::fs;
use std::io::Read;
use std::path::Path;

use ffmpeg_next::{Dictionary, Packet, codec, frame};

use crate::error::{Error, Result};
use crate::spec::Image;

/// The league logo: a 512x512 RGBA PNG made by `fixtures/logo/make-logo.py`.
pub const LOGO_PNG: &[u8] = include_bytes!("../assets/logo.png");

/// Largest PNG file accepted as a watermark or card, in bytes.
const MAX_PNG_BYTES: u64 = 16 << 20;
/// Largest PNG accepted, in pixels.
const MAX_PNG_PIXELS: i64 = 4096 * 4096;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Loads and decodes an image; errors are [`Error::InvalidSpec`] because the
/// image is configuration, not input.
pub(crate) fn load(image: &Image) -> Result<frame::Video> {
    crate::fflog::init();
    match image {
        Image::Logo => decode_png(LOGO_PNG, "the built-in logo"),
        Image::Png(path) => {
            let bytes = read_limited(path)?;
            decode_png(&bytes, &path.display().to_string())
        }
    }
}

fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let invalid = |why: String| Error::InvalidSpec(format!("{}: {why}", path.display()));
    let file = fs::File::open(path).map_err(|e| invalid(format!("cannot read: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PNG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_PNG_BYTES {
        return Err(invalid(format!("larger than {} MiB", MAX_PNG_BYTES >> 20)));
    }
    Ok(bytes)
}

/// Decodes one PNG into a frame in whatever RGB(A)/gray format it has.
pub(crate) fn decode_png(bytes: &[u8], name: &str) -> Result<frame::Video> {
    let invalid = |why: String| Error::InvalidSpec(format!("{name}: {why}"));
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(invalid("not a PNG file".into()));
    }
    let codec =
        ffmpeg_next::decoder::find(codec::Id::PNG).ok_or_else(|| invalid("this FFmpeg has no PNG decoder".into()))?;
    let mut options = Dictionary::new();
    options.set("max_pixels", &MAX_PNG_PIXELS.to_string());
    let mut decoder = codec::Context::new_with_codec(codec)
        .decoder()
        .open_as_with(codec, options)
        .and_then(|d| d.video())
        .map_err(|e| invalid(format!("cannot open the PNG decoder: {e}")))?;
    let packet = Packet::copy(bytes);
    let mut frame = frame::Video::empty();
    decoder
        .send_packet(&packet)
        .and_then(|()| decoder.send_eof())
        .and_then(|()| decoder.receive_frame(&mut frame))
        .map_err(|e| invalid(format!("cannot decode: {e}{}", crate::fflog::recent())))?;
    if frame.width() == 0 || frame.height() == 0 {
        return Err(invalid("decodes to an empty picture".into()));
    }
    frame.set_pts(Some(0));
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_logo_decodes_with_alpha() {
        let logo = load(&Image::Logo).expect("logo decodes");
        assert_eq!((logo.width(), logo.height()), (512, 512));
        assert_eq!(logo.format(), ffmpeg_next::format::Pixel::RGBA);
        // Corners are transparent; the ball's upper-left quadrant is opaque.
        let data = logo.data(0);
        let stride = logo.stride(0);
        let alpha = |x: usize, y: usize| data[y * stride + x * 4 + 3];
        assert_eq!(alpha(0, 0), 0);
        assert_eq!(alpha(154, 154), 255);
    }

    #[test]
    fn a_non_png_is_refused_as_a_spec_error() {
        let Err(err) = decode_png(b"GIF89a....", "wm.gif") else {
            panic!("a GIF was accepted as PNG");
        };
        assert!(err.to_string().contains("wm.gif: not a PNG file"), "{err}");
        assert_eq!(err.class(), crate::ErrorClass::Spec);
    }
}
