//! What a source's Y'CbCr values mean, and the cheapest filters that turn
//! them into what every rendition is: BT.709 Y'CbCr in TV range.
//!
//! The matrix comes from the stream's tag. Without one (most phone and
//! screen-recorder uploads) it is guessed from the picture size the way
//! players guess it, so the rendition shows the colours the upload shows
//! in a player. Only a source whose matrix really differs from BT.709 is
//! converted, and then after the downscale, where it is cheap: see
//! [`SourceColour::filters`].

use std::fmt::Write as _;

use ffmpeg_next::color;

use crate::geom::Size;

/// A Y'CbCr matrix that libswscale and the `colorspace` filter both know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Matrix {
    /// BT.709: HD, and what renditions are coded with.
    Bt709,
    /// BT.601: SD. BT.470BG (625 lines) and SMPTE 170M (525 lines) tag the
    /// same coefficients.
    Bt601,
    /// FCC 73.682, an early NTSC variant.
    Fcc,
    /// SMPTE 240M, early HD (1035i).
    Smpte240m,
    /// BT.2020 non-constant luminance (SDR wide gamut; PQ and HLG take the
    /// tone-mapping path instead).
    Bt2020,
}

impl Matrix {
    /// The matrix a stream's tag names, if it names one we can convert
    /// from. An RGB picture has no matrix: it counts as BT.709, because the
    /// only matrix swscale applies to it is the output one.
    fn from_tag(tag: color::Space) -> Option<Matrix> {
        use color::Space as S;
        match tag {
            S::BT709 | S::RGB => Some(Matrix::Bt709),
            S::BT470BG | S::SMPTE170M => Some(Matrix::Bt601),
            S::FCC => Some(Matrix::Fcc),
            S::SMPTE240M => Some(Matrix::Smpte240m),
            // Constant luminance is not a matrix, but its nearest one is
            // far closer than a guess.
            S::BT2020NCL | S::BT2020CL => Some(Matrix::Bt2020),
            // Unspecified, reserved, and systems neither filter implements
            // (YCgCo, ICtCp, chromaticity-derived, Y'D'zD'x): guessed.
            _ => None,
        }
    }

    /// The guess players make for an untagged picture of this size, taken
    /// from mpv (video/csputils.c, `mp_csp_guess_colorspace`):
    /// `width >= 1280 || height > 576 ? BT.709 : BT.601`. So 720x576 PAL,
    /// 720x480 NTSC and 640x360 web video are BT.601; 1280x720 and above,
    /// and wide crops like 1280x544, are BT.709. The size is the coded
    /// (decoded) one, as mpv uses: rotation and pixel shape do not count.
    pub(crate) fn guess(coded: Size) -> Matrix {
        if coded.w >= 1280 || coded.h > 576 {
            Matrix::Bt709
        } else {
            Matrix::Bt601
        }
    }

    /// The name swscale's `in_color_matrix` / `out_color_matrix` take.
    const fn swscale(self) -> &'static str {
        match self {
            Matrix::Bt709 => "bt709",
            Matrix::Bt601 => "bt601",
            Matrix::Fcc => "fcc",
            Matrix::Smpte240m => "smpte240m",
            Matrix::Bt2020 => "bt2020",
        }
    }

    /// The name the `colorspace` filter's `ispace` takes.
    const fn colorspace(self) -> &'static str {
        match self {
            Matrix::Bt709 => "bt709",
            Matrix::Bt601 => "bt470bg",
            Matrix::Fcc => "fcc",
            Matrix::Smpte240m => "smpte240m",
            Matrix::Bt2020 => "bt2020ncl",
        }
    }
}

/// How a source's Y'CbCr values are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceColour {
    /// The matrix the values were coded with, tagged or guessed.
    pub matrix: Matrix,
    /// The stream carries no usable matrix tag: [`Matrix::guess`] chose.
    pub guessed: bool,
    /// Full-range (JPEG, "pc") levels rather than TV range.
    pub full_range: bool,
}

impl SourceColour {
    /// Reads the stream's matrix tag (`None`: a value FFmpeg does not know)
    /// and range, guessing the matrix from the coded size when the tag says
    /// nothing usable.
    pub(crate) fn new(tag: Option<color::Space>, full_range: bool, coded: Size) -> Self {
        let tagged = tag.and_then(Matrix::from_tag);
        SourceColour {
            matrix: tagged.unwrap_or_else(|| Matrix::guess(coded)),
            guessed: tagged.is_none(),
            full_range,
        }
    }

    /// A BT.709 TV-range source: nothing to convert. Also what a fitting
    /// starts as before the source is known.
    pub(crate) const BT709_TV: SourceColour = SourceColour {
        matrix: Matrix::Bt709,
        guessed: false,
        full_range: false,
    };

    /// Whether the values must go through a matrix conversion to be BT.709.
    pub(crate) fn converts_matrix(&self) -> bool {
        self.matrix != Matrix::Bt709
    }

    /// The filters from a decoded picture to a `size` yuv420p picture in
    /// BT.709 TV range, appended to `chain` (which is not empty).
    ///
    /// swscale resizes and brings the range to TV (cheap: a per-plane
    /// linear map), with both matrices given, so it never guesses one from
    /// the frame and never converts a matrix. Asked to change the matrix
    /// of YUV, it goes through RGB instead (libswscale/utils.c: "YUV color
    /// matrix differs for YUV->YUV, using intermediate RGB"), which costs
    /// more than the decode itself. A source that is not BT.709 is
    /// converted afterwards by the `colorspace` filter: a 3x3 integer
    /// matrix straight from Y'CbCr to Y'CbCr, on the small picture.
    /// Only the matrix changes (`iall=bt709` leaves primaries and transfer
    /// alone): a wrong matrix moves a saturated colour by tens of code
    /// values, while the BT.601 and BT.709 primaries are close, and
    /// converting them would cost a pass through linear light.
    ///
    /// Decode plus each chain, 30 s of a 1920x1080 30 fps H.264 at 15 Mb/s
    /// scaled to 1280x720, on 2 cores: medians of 5 alternating runs of
    /// `/usr/bin/time ffmpeg -i SRC -t 30 -an -vf "fps=30,CHAIN" -f null -`
    /// (the 5.1 CLI links the same libswscale and libavfilter). SRC is
    /// `testsrc2=size=1920x1080:rate=30:duration=30,noise=alls=10:allf=t+u`
    /// through `libx264 -preset veryfast -b:v 15M`, untagged, and the same
    /// stream tagged BT.601 with `-c copy -bsf:v h264_metadata=
    /// colour_primaries=6:transfer_characteristics=6:matrix_coefficients=6`.
    ///
    /// | chain after the decode                               |  wall  |  CPU   |
    /// |------------------------------------------------------|--------|--------|
    /// | nothing (decode only)                                |  7.9 s | 14.5 s |
    /// | scale, matrix kept (BT.709, and untagged HD now)     |  9.3 s | 17.5 s |
    /// | before: `out_color_matrix=bt709` on untagged HD      | 15.7 s | 29.6 s |
    /// | BT.601: one swscale pass, 601 in, 709 out            | 15.8 s | 29.7 s |
    /// | BT.601: scale, then swscale 601 to 709 at 1280x720   | 11.0 s | 20.3 s |
    /// | BT.601: scale, then `colormatrix` at 1280x720        | 10.5 s | 19.6 s |
    /// | BT.601: scale, then `colorspace` at 1280x720 (this)  |  9.2 s | 17.2 s |
    ///
    /// So a conversion costs nothing measurable next to the scale, where
    /// swscale's own doubled the cost of the decode and scale. All four
    /// BT.601 chains give the same pixels within 1 code value.
    ///
    /// The whole default rendition (`examples/process.rs`, x264 medium, on
    /// the same kind of source with `noise=alls=3:allf=t`), CPU seconds,
    /// medians of 6 alternating runs: untagged 67.2 before, 50.2 now;
    /// BT.601 66.3 in one swscale pass, 57.0 with swscale at 1280x720,
    /// 54.8 with `colormatrix`, 49.7 with `colorspace`; BT.709 49.1 / 48.4.
    pub(crate) fn filters(&self, chain: &mut String, size: Size) {
        let m = self.matrix.swscale();
        let range = if self.full_range { "pc" } else { "tv" };
        let _ = write!(
            chain,
            ",scale=w={}:h={}:flags=bicubic:in_color_matrix={m}:out_color_matrix={m}:\
             in_range={range}:out_range=tv,format=yuv420p",
            size.w, size.h
        );
        if self.converts_matrix() {
            let _ = write!(
                chain,
                ",colorspace=iall=bt709:ispace={}:irange=tv:all=bt709:range=tv",
                self.matrix.colorspace()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_pictures_are_guessed_by_size_like_mpv() {
        let guess = |w, h| Matrix::guess(Size::new(w, h));
        assert_eq!(guess(1920, 1080), Matrix::Bt709);
        assert_eq!(guess(1280, 720), Matrix::Bt709);
        assert_eq!(guess(1280, 544), Matrix::Bt709, "a 21:9 crop of HD");
        assert_eq!(guess(960, 720), Matrix::Bt709, "4:3 HD");
        assert_eq!(guess(1080, 1920), Matrix::Bt709, "portrait coded upright");
        assert_eq!(guess(720, 576), Matrix::Bt601, "PAL");
        assert_eq!(guess(720, 480), Matrix::Bt601, "NTSC");
        assert_eq!(guess(1024, 576), Matrix::Bt601, "PAL 16:9 with square pixels");
        assert_eq!(guess(640, 360), Matrix::Bt601);
    }

    #[test]
    fn a_tag_beats_the_guess_and_only_non_709_is_converted() {
        let hd = Size::new(1920, 1080);
        let sd = Size::new(720, 480);
        let c = SourceColour::new(Some(color::Space::SMPTE170M), false, hd);
        assert_eq!((c.matrix, c.guessed, c.converts_matrix()), (Matrix::Bt601, false, true));
        let c = SourceColour::new(Some(color::Space::BT709), false, sd);
        assert_eq!(
            (c.matrix, c.guessed, c.converts_matrix()),
            (Matrix::Bt709, false, false)
        );
        let c = SourceColour::new(Some(color::Space::Unspecified), false, hd);
        assert_eq!((c.matrix, c.guessed, c.converts_matrix()), (Matrix::Bt709, true, false));
        let c = SourceColour::new(None, true, sd);
        assert_eq!((c.matrix, c.guessed, c.converts_matrix()), (Matrix::Bt601, true, true));
        // YCgCo is nothing swscale can read: guessed rather than misread.
        let c = SourceColour::new(Some(color::Space::YCGCO), false, sd);
        assert_eq!((c.matrix, c.guessed), (Matrix::Bt601, true));
        let c = SourceColour::new(Some(color::Space::RGB), false, sd);
        assert!(!c.converts_matrix(), "RGB pictures are coded straight to BT.709");
    }

    #[test]
    fn swscale_is_told_both_matrices_and_never_changes_one() {
        let mut chain = String::from("fps=30");
        SourceColour::BT709_TV.filters(&mut chain, Size::new(1280, 720));
        assert_eq!(
            chain,
            "fps=30,scale=w=1280:h=720:flags=bicubic:in_color_matrix=bt709:out_color_matrix=bt709:\
             in_range=tv:out_range=tv,format=yuv420p"
        );
        let sd_full = SourceColour::new(None, true, Size::new(640, 480));
        let mut chain = String::from("fps=30");
        sd_full.filters(&mut chain, Size::new(960, 720));
        assert!(
            chain.contains("in_color_matrix=bt601:out_color_matrix=bt601:in_range=pc:out_range=tv"),
            "{chain}"
        );
        assert!(
            chain.ends_with(",format=yuv420p,colorspace=iall=bt709:ispace=bt470bg:irange=tv:all=bt709:range=tv"),
            "{chain}"
        );
    }
}
