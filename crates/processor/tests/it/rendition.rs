//! What a viewer sees in a rendition of each awkward kind of upload.

use std::time::Duration;

use crate::common::*;
use ffmpeg_next::codec::profile::{H264, Profile};
use ffmpeg_next::format::Pixel;
use processor::{Card, CardContent, Fit, Image, RenditionSpec};

/// Default spec, but a fast preset where the test is not about quality.
fn fast() -> RenditionSpec {
    RenditionSpec {
        preset: "veryfast".into(),
        ..RenditionSpec::default()
    }
}

/// The default watermark: 128x128 at (1128, 568); the logo's opaque orange
/// test point is at 30 % of its width and height.
const WM_POINT: (u32, u32) = (1128 + 38, 568 + 38);
const LOGO_ORANGE: [u8; 3] = [242, 107, 29];

#[test]
fn a_1080p_clip_becomes_a_720p_h264_mp4_that_plays_at_once() {
    let (_dir, out, report) = render(&fixture("landscape-1080p30.mp4"), &RenditionSpec::default());
    let d = decode(&out);
    assert_eq!(d.container, "mov,mp4,m4a,3gp,3g2,mj2");
    assert_eq!((d.codec.as_str(), d.width, d.height), ("h264", 1280, 720));
    assert_eq!(d.pix_fmt, Pixel::YUV420P);
    assert_eq!(d.profile, Profile::H264(H264::High), "H.264 High profile");
    assert_eq!(d.color_range, ffmpeg_next::color::Range::MPEG);
    assert_eq!(d.color_space, ffmpeg_next::color::Space::BT709);
    assert_eq!(d.color_primaries, ffmpeg_next::color::Primaries::BT709);
    assert_eq!(d.color_transfer, ffmpeg_next::color::TransferCharacteristic::BT709);
    assert_eq!(d.frames.len(), 120, "every one of 4 s x 30 fps decodes");
    assert!((d.duration - 4.0).abs() < 0.02, "duration {}", d.duration);
    assert!((d.frame_rate - 30.0).abs() < 0.01);
    assert!(d.audio.is_none(), "audio is stripped by default");
    // The index comes before the media: browsers start playing at once.
    let boxes = top_level_boxes(&out);
    let moov = boxes.iter().position(|b| b == "moov").expect("moov");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("mdat");
    assert!(moov < mdat, "moov before mdat: {boxes:?}");
    // A keyframe at least every 2 s.
    let keys: Vec<f64> = d.frames.iter().filter(|f| f.key).map(|f| f.time).collect();
    assert_eq!(keys.first().copied(), Some(0.0));
    let mut prev = 0.0;
    for &k in keys.iter().chain(std::iter::once(&d.duration)) {
        assert!(k - prev <= 2.0 + 1e-6, "keyframe gap {prev} -> {k}: {keys:?}");
        prev = k;
    }
    assert_eq!(report.frames, 120);
    let bytes = std::fs::read(&out).expect("out");
    assert_eq!(report.bytes, bytes.len() as u64);
    // x264 medium, its lookahead cut to one second (x264 writes its
    // settings into the stream).
    let settings = String::from_utf8_lossy(&bytes);
    assert!(
        settings.contains("crf=23.0") && settings.contains("rc_lookahead=30 ") && settings.contains("open_gop=0"),
        "x264 settings"
    );
    assert!(report.speed > 0.0);
}

/// A viewer's seek lands on a keyframe, and the player starts decoding
/// there: every keyframe must be an IDR picture that starts a closed GOP,
/// whatever the preset (an open GOP's B-frames reference the previous GOP,
/// and Chrome stops with a decode error; see the browser tests).
#[test]
fn every_keyframe_of_every_preset_is_an_idr_starting_a_closed_gop() {
    for preset in processor::PRESETS {
        let spec = RenditionSpec {
            preset: (*preset).to_owned(),
            width: 320,
            height: 180,
            max_duration: Duration::from_secs(7),
            poster: false,
            ..RenditionSpec::default()
        };
        let (_dir, out, _) = render(&fixture("landscape-1080p-12s.mp4"), &spec);
        let keys = assert_closed_gops(&out, preset);
        assert!(
            keys.len() >= 4,
            "{preset}: keyframes at {keys:?}, want one at least every 2 s over 7 s"
        );
    }
}

/// Tuning over the preset reaches x264 (it writes its settings into the
/// stream), and CRF 0, documented as lossless, encodes (x264 picks the
/// lossless profile itself; High cannot carry it).
#[test]
fn x264_tuning_and_lossless_crf_reach_the_encoder() {
    let tuned = RenditionSpec {
        x264_params: "subme=5:ref=1:trellis=0".into(),
        ..fast()
    };
    let (_dir, out, _) = render(&fixture("gray-720p.mp4"), &tuned);
    let bytes = std::fs::read(&out).expect("out");
    let settings = String::from_utf8_lossy(&bytes);
    for want in ["subme=5 ", "ref=1 ", "trellis=0 ", "keyint=60 "] {
        assert!(settings.contains(want), "{want:?} in the x264 settings");
    }
    let lossless = RenditionSpec { crf: 0, ..fast() };
    let (_dir, out, _) = render(&fixture("gray-720p.mp4"), &lossless);
    let d = decode(&out);
    assert_eq!(d.profile, Profile::H264(H264::High444Predictive), "lossless");
    assert_eq!(d.frames.len(), 60, "every frame decodes");
}

#[test]
fn the_watermark_is_drawn_in_the_bottom_right_corner() {
    let (_dir, out, _) = render(&fixture("gray-720p.mp4"), &fast());
    let p = picture_at(&out, 1.0);
    // 85 % logo orange over 15 % gray, coded BT.709 like the video (coded
    // BT.601, as overlay's own conversion does it, red is 11 too high).
    let want = LOGO_ORANGE.map(|c| (0.85 * f64::from(c) + 0.15 * 128.0).round() as u8);
    assert_close(p.rgb(WM_POINT.0, WM_POINT.1), want, 6, "watermark pixel");
    // Outside the logo the video is untouched.
    assert_close(p.rgb(100, 100), [128, 128, 128], 8, "video pixel");
    assert_close(p.rgb(1128 - 10, 568 + 64), [128, 128, 128], 8, "left of the logo");

    let spec = RenditionSpec {
        watermark: None,
        ..fast()
    };
    let (_dir, out, _) = render(&fixture("gray-720p.mp4"), &spec);
    assert_close(
        picture_at(&out, 1.0).rgb(WM_POINT.0, WM_POINT.1),
        [128, 128, 128],
        8,
        "no watermark",
    );
}

#[test]
fn a_portrait_phone_clip_comes_out_upright_and_pillarboxed() {
    let (_dir, out, report) = render(&fixture("portrait-rotated.mp4"), &fast());
    assert_eq!(report.input.rotation, 90);
    let p = picture_at(&out, 0.5);
    // Shown as 720x1280, fitted to 406x720 in the middle: x 437..843.
    assert_close(p.rgb(640, 150), [255, 0, 0], 20, "top of the picture is red");
    assert_close(p.rgb(640, 570), [0, 0, 255], 20, "bottom of the picture is blue");
    assert_close(p.rgb(200, 360), BLACK, 6, "left bar");
    assert_close(p.rgb(430, 100), BLACK, 6, "left bar edge");
    assert_close(p.rgb(1000, 360), BLACK, 6, "right bar");
    assert_close(p.rgb(850, 100), BLACK, 6, "right bar edge");
}

#[test]
fn a_clip_turned_half_way_round_is_turned_back() {
    let (_dir, out, _) = render(&fixture("rotated-180.mov"), &fast());
    let p = picture_at(&out, 0.2);
    assert_close(p.rgb(200, 360), [0, 255, 0], 24, "left is green");
    assert_close(p.rgb(1000, 200), [255, 0, 255], 24, "right is magenta");
}

#[test]
fn anamorphic_pal_fills_the_16_9_frame() {
    let (_dir, out, report) = render(&fixture("anamorphic-pal.mkv"), &fast());
    assert_eq!((report.input.display_width, report.input.display_height), (1024, 576));
    let p = picture_at(&out, 0.5);
    for (x, y) in [(4, 4), (1275, 4), (4, 715), (640, 360)] {
        assert_close(p.rgb(x, y), [0, 190, 0], 24, &format!("green at ({x},{y})"));
    }
}

#[test]
fn a_21_9_clip_is_letterboxed_with_black_bars() {
    let (_dir, out, report) = render(&fixture("letterbox-21x9.webm"), &fast());
    assert!((report.frame_rate.as_f64() - 24.0).abs() < 1e-9);
    let p = picture_at(&out, 0.5);
    // 1280x544 in the middle: y 88..632.
    assert_close(p.rgb(640, 40), BLACK, 6, "top bar");
    assert_close(p.rgb(640, 84), BLACK, 6, "top bar edge");
    assert_close(p.rgb(640, 690), BLACK, 6, "bottom bar");
    assert_close(p.rgb(640, 360), [0, 255, 255], 24, "cyan picture");
    assert_close(p.rgb(640, 92), [0, 255, 255], 24, "picture top edge");
}

#[test]
fn a_4_3_mjpeg_avi_is_pillarboxed_at_its_own_frame_rate() {
    let (_dir, out, _) = render(&fixture("pillarbox-4x3.avi"), &fast());
    let d = decode(&out);
    assert!((d.frame_rate - 15.0).abs() < 0.01, "15 fps source stays 15 fps");
    assert_eq!(d.frames.len(), 30);
    let p = picture_at(&out, 0.5);
    // 960x720 in the middle: x 160..1120.
    assert_close(p.rgb(80, 360), BLACK, 6, "left bar");
    assert_close(p.rgb(1200, 100), BLACK, 6, "right bar");
    assert_close(p.rgb(640, 360), [255, 255, 0], 24, "yellow picture");
}

#[test]
fn fill_mode_crops_instead_of_bars() {
    let spec = RenditionSpec {
        fit: Fit::Fill,
        ..fast()
    };
    let (_dir, out, _) = render(&fixture("pillarbox-4x3.avi"), &spec);
    let p = picture_at(&out, 0.5);
    assert_close(p.rgb(8, 360), [255, 255, 0], 24, "no bar on the left");
    assert_close(p.rgb(1272, 360), [255, 255, 0], 24, "no bar on the right");
}

#[test]
fn full_range_sources_map_to_tv_range_without_clipping() {
    let (_dir, out, report) = render(&fixture("fullrange-yuvj.mp4"), &fast());
    assert!(report.input.full_range);
    let p = picture_at(&out, 0.5);
    // Full-range white (255) becomes TV white (235), black (0) becomes 16.
    assert!(p.luma(320, 360).abs_diff(235) <= 3, "white luma {}", p.luma(320, 360));
    assert!(p.luma(960, 300).abs_diff(16) <= 3, "black luma {}", p.luma(960, 300));
}

/// Pure red and pure green as BT.709 TV-range Y'CbCr: what every rendition
/// of a colour-patch fixture (red left half, green right half) must hold,
/// whatever matrix and range the upload used, because a player shows every
/// one of those uploads as pure red and green.
const RED_709: [u8; 3] = [63, 102, 240];
const GREEN_709: [u8; 3] = [173, 42, 26];

/// Renders a colour-patch fixture and checks the middle of both halves of
/// the output, in code values (±3) and as a player shows them; returns the
/// report and the output's red and green Y'CbCr.
fn patches_come_out_bt709(name: &str) -> (processor::Report, [[u8; 3]; 2]) {
    let (_dir, out, report) = render(&fixture(name), &fast());
    let d = decode(&out);
    assert_eq!(
        (d.color_range, d.color_space, d.color_primaries, d.color_transfer),
        (
            ffmpeg_next::color::Range::MPEG,
            ffmpeg_next::color::Space::BT709,
            ffmpeg_next::color::Primaries::BT709,
            ffmpeg_next::color::TransferCharacteristic::BT709
        ),
        "{name}: tagged BT.709 TV range"
    );
    let p = picture_at(&out, 0.5);
    // Every fixture is 4:3 to 16:9 and padded in the middle: x 400 is in
    // the red half and x 880 in the green one.
    let (red, green) = (p.ycbcr(400, 360), p.ycbcr(880, 360));
    assert_ycbcr_close(red, RED_709, &format!("{name}: red half"));
    assert_ycbcr_close(green, GREEN_709, &format!("{name}: green half"));
    assert_close(p.rgb(400, 360), [255, 0, 0], 4, &format!("{name}: red as shown"));
    assert_close(p.rgb(880, 360), [0, 255, 0], 4, &format!("{name}: green as shown"));
    (report, [red, green])
}

#[track_caller]
fn assert_ycbcr_close(got: [u8; 3], want: [u8; 3], what: &str) {
    let ok = got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 3);
    assert!(ok, "{what}: Y'CbCr {got:?}, want {want:?} ±3");
}

#[test]
fn a_bt601_tagged_sd_source_is_converted_to_bt709() {
    let (report, _) = patches_come_out_bt709("colour-bt601-sd.mp4");
    assert_eq!(report.input.color_space, "smpte170m");
}

#[test]
fn a_bt601_tagged_hd_source_is_converted_whatever_its_size() {
    let (report, _) = patches_come_out_bt709("colour-bt601-hd.mp4");
    assert_eq!(report.input.color_space, "bt470bg");
}

#[test]
fn an_untagged_hd_source_is_read_as_bt709_and_passes_through_unchanged() {
    let name = "colour-untagged-hd.mp4";
    let (report, [red, green]) = patches_come_out_bt709(name);
    assert_eq!(report.input.color_space, "unspecified");
    // Nothing converted the values: the output holds what the source held.
    let source = picture_at(&fixture(name), 0.0);
    assert_ycbcr_close(red, source.ycbcr(320, 360), "red passes through");
    assert_ycbcr_close(green, source.ycbcr(960, 360), "green passes through");
}

#[test]
fn an_untagged_sd_source_is_read_as_bt601_and_converted() {
    let (report, _) = patches_come_out_bt709("colour-untagged-sd.mp4");
    assert_eq!((report.input.coded_width, report.input.coded_height), (720, 576));
    assert_eq!(report.input.color_space, "unspecified");
}

#[test]
fn full_range_sources_come_out_tv_range_with_their_colours() {
    // SD without a matrix tag: range and matrix both change.
    let (report, _) = patches_come_out_bt709("colour-fullrange-sd.mp4");
    assert!(report.input.full_range);
    // HD tagged BT.709: only the range changes.
    let (report, _) = patches_come_out_bt709("colour-fullrange-hd.mp4");
    assert!(report.input.full_range);
    assert_eq!(report.input.color_space, "bt709");
}

#[test]
fn ten_bit_hevc_becomes_eight_bit_h264() {
    let (_dir, out, report) = render(&fixture("hevc-10bit.mov"), &fast());
    assert_eq!(report.input.video_codec, "hevc");
    assert_eq!(report.input.pixel_format, "yuv420p10le");
    let d = decode(&out);
    assert_eq!((d.codec.as_str(), d.pix_fmt), ("h264", Pixel::YUV420P));
    assert_eq!(d.frames.len(), 30);
}

#[test]
fn prores_and_tiny_inputs_are_scaled_up() {
    for (name, frames) in [("prores.mov", 25), ("tiny-64x64.mp4", 30)] {
        let (_dir, out, _) = render(&fixture(name), &fast());
        let d = decode(&out);
        assert_eq!((d.width, d.height, d.frames.len()), (1280, 720, frames), "{name}");
    }
    let (_dir, out, _) = render(&fixture("tiny-64x64.mp4"), &fast());
    let p = picture_at(&out, 0.5);
    // A square picture: 720x720 in the middle.
    assert_close(p.rgb(640, 360), [255, 128, 0], 24, "orange picture");
    assert_close(p.rgb(200, 360), BLACK, 6, "left bar");
}

#[test]
fn a_4k60_clip_is_halved_to_30_fps() {
    let (_dir, out, report) = render(&fixture("uhd-4k60.mp4"), &fast());
    assert_eq!(report.frame_rate.as_f64(), 30.0);
    let d = decode(&out);
    assert_eq!(d.frames.len(), 30);
    assert!((d.duration - 1.0).abs() < 0.02);
}

#[test]
fn timestamps_starting_at_10_s_are_trimmed_from_the_first_frame() {
    let (_dir, out, _) = render(&fixture("ts-offset-10s.ts"), &fast());
    let d = decode(&out);
    assert_eq!(d.frames.first().map(|f| f.time), Some(0.0));
    assert!((d.duration - 3.0).abs() < 0.05, "duration {}", d.duration);
}

#[test]
fn odd_sized_variable_rate_clips_become_constant_rate() {
    let (_dir, out, _) = render(&fixture("odd-vfr.mkv"), &fast());
    let d = decode(&out);
    assert_eq!((d.width, d.height), (1280, 720));
    assert!((d.duration - 3.0).abs() < 0.1, "duration {}", d.duration);
    // Constant frame rate: every interval is one frame.
    let step = 1.0 / d.frame_rate;
    for pair in d.frames.windows(2) {
        assert!((pair[1].time - pair[0].time - step).abs() < 1e-3, "{pair:?}");
    }
}

#[test]
fn clips_under_a_second_keep_every_frame() {
    let (_dir, out, _) = render(&fixture("short-0.4s.mp4"), &fast());
    let d = decode(&out);
    assert_eq!(d.frames.len(), 12);
    assert!((d.duration - 0.4).abs() < 0.02);
}

#[test]
fn a_40_s_upload_is_cut_at_30_s_with_its_audio() {
    let spec = RenditionSpec {
        keep_audio: true,
        ..fast()
    };
    let (_dir, out, _) = render(&fixture("long-40s.mp4"), &spec);
    let d = decode(&out);
    assert_eq!(d.frames.len(), 300, "30 s at 10 fps");
    assert!((d.duration - 30.0).abs() < 0.01);
    let audio = d.audio.expect("audio kept");
    assert!(
        audio.duration <= 30.05 && audio.duration > 29.9,
        "audio {}",
        audio.duration
    );
}

#[test]
fn a_10_minute_upload_is_read_only_up_to_the_cap() {
    let (_dir, out, report) = render(&fixture("long-10min.mp4"), &fast());
    assert!((decode(&out).duration - 30.0).abs() < 0.01);
    // The file is 600 s; the index and the 30 s we need are a small part
    // (in a real upload, a tiny one).
    let size = report.input.size_bytes;
    assert!(
        report.input_bytes_read < size * 2 / 5,
        "read {} of {size} bytes",
        report.input_bytes_read
    );
}

#[test]
fn keep_audio_writes_aac_stereo_as_long_as_the_video() {
    let spec = RenditionSpec {
        keep_audio: true,
        ..fast()
    };
    let (_dir, out, report) = render(&fixture("landscape-1080p30.mp4"), &spec);
    assert!(report.has_audio);
    let d = decode(&out);
    let a = d.audio.expect("audio");
    assert_eq!((a.codec.as_str(), a.channels, a.rate), ("aac", 2, 48_000));
    assert!((a.duration - 4.0).abs() < 0.05, "audio {}", a.duration);
}

#[test]
fn logo_cards_frame_the_video_and_carry_no_watermark() {
    let spec = RenditionSpec {
        intro: Some(Card::logo()),
        outro: Some(Card::logo()),
        ..fast()
    };
    let (_dir, out, report) = render(&fixture("gray-720p.mp4"), &spec);
    let d = decode(&out);
    assert!((d.duration - 7.0).abs() < 0.02, "2.5 + 2 + 2.5 s, got {}", d.duration);
    assert_eq!(report.duration, Duration::from_secs(7));
    // Intro: logo (360x360, centred) on black, no watermark.
    let intro = picture_at(&out, 1.0);
    assert_close(
        intro.rgb(460 + 108, 180 + 108),
        LOGO_ORANGE,
        20,
        "logo on the intro card",
    );
    assert_close(intro.rgb(20, 20), BLACK, 6, "card background");
    assert_close(intro.rgb(WM_POINT.0, WM_POINT.1), BLACK, 6, "no watermark on the card");
    // Main video with the watermark.
    let main = picture_at(&out, 3.5);
    assert_close(main.rgb(100, 100), [128, 128, 128], 8, "main video");
    assert!(main.rgb(WM_POINT.0, WM_POINT.1)[0] > 180, "watermark on the main video");
    // Outro.
    let outro = picture_at(&out, 6.0);
    assert_close(outro.rgb(20, 20), BLACK, 6, "outro background");
    assert_close(
        outro.rgb(460 + 108, 180 + 108),
        LOGO_ORANGE,
        20,
        "logo on the outro card",
    );
}

#[test]
fn a_clip_intro_and_audio_are_joined_in_sync() {
    let spec = RenditionSpec {
        intro: Some(Card {
            content: CardContent::Clip(fixture("tiny-64x64.mp4")),
            duration: Duration::from_millis(2500),
        }),
        outro: Some(Card {
            content: CardContent::Image(Image::Logo),
            duration: Duration::from_millis(1000),
        }),
        keep_audio: true,
        ..fast()
    };
    let (_dir, out, _) = render(&fixture("landscape-1080p30.mp4"), &spec);
    let d = decode(&out);
    // The clip lasts 1 s (shorter than its card), then 4 s, then 1 s.
    assert!((d.duration - 6.0).abs() < 0.05, "duration {}", d.duration);
    let a = d.audio.expect("audio");
    assert!((a.duration - 6.0).abs() < 0.1, "audio {}", a.duration);
    let intro = picture_at(&out, 0.5);
    assert_close(intro.rgb(640, 360), [255, 128, 0], 24, "the clip card");
    // The tone starts with the main video, not before, and stops with it.
    assert!(audio_rms(&out, 0.2, 0.95) < 0.001, "silent intro");
    assert!(audio_rms(&out, 1.05, 1.5) > 0.05, "the main video's tone");
    assert!(audio_rms(&out, 4.9, 4.95) > 0.05, "tone until the end of the video");
    assert!(audio_rms(&out, 5.1, 5.9) < 0.001, "silent outro");
}

#[test]
fn hdr_pq_video_is_tone_mapped_to_sdr() {
    let spec = RenditionSpec {
        watermark: None,
        ..fast()
    };
    let (_dir, out, report) = render(&fixture("hdr-pq.mov"), &spec);
    assert!(report.input.hdr, "{:?}", report.input);
    assert_eq!(report.input.color_transfer, "smpte2084");
    let d = decode(&out);
    assert_eq!(d.color_space, ffmpeg_next::color::Space::BT709);
    // PQ code 128 is about 92 nits, near SDR white after tone mapping;
    // passed through as if it were SDR it would stay at 128.
    let [r, g, b] = picture_at(&out, 0.5).rgb(640, 360);
    assert!(r > 145 && r.abs_diff(g) < 6 && g.abs_diff(b) < 6, "got {:?}", [r, g, b]);
}

#[test]
fn the_poster_is_a_720p_jpeg_of_the_rendition_past_a_black_opening() {
    let (_dir, out, report) = render(&fixture("fade-in.mp4"), &fast());
    let path = report.poster.clone().expect("a poster");
    assert_eq!(path, out.with_extension("jpg"));
    assert!(
        std::fs::read(&path).expect("read").starts_with(&[0xFF, 0xD8, 0xFF]),
        "a JPEG"
    );
    let p = picture_at(&path, 0.0);
    assert_eq!(p.size(), (1280, 720));
    // The clip is black for 1.5 s, then fades in: the poster is neither.
    assert!(p.mean_luma() > 60.0, "mean luma {}", p.mean_luma());
    // Watermarked like the video.
    assert_close(
        p.rgb(WM_POINT.0, WM_POINT.1),
        LOGO_ORANGE,
        60,
        "watermark on the poster",
    );

    let spec = RenditionSpec {
        poster: false,
        ..fast()
    };
    let (dir, _, report) = render(&fixture("gray-720p.mp4"), &spec);
    assert!(report.poster.is_none());
    assert_eq!(files_in(dir.path()), vec!["out.mp4".to_owned()]);
}

#[test]
fn the_poster_shows_the_colours_of_the_video_in_a_jpeg_viewer() {
    // A JPEG is read as BT.601 full range (JFIF); the rendition is BT.709
    // TV range. Pure red and green must stay pure in both, and 720x480
    // (3:2) keeps black bars.
    for (name, bar) in [("colour-untagged-hd.mp4", None), ("colour-bt601-sd.mp4", Some(40))] {
        let (_dir, _, report) = render(&fixture(name), &fast());
        let p = picture_at(&report.poster.expect("a poster"), 0.0);
        assert_close(p.rgb(400, 360), [255, 0, 0], 6, &format!("{name}: red on the poster"));
        assert_close(p.rgb(880, 360), [0, 255, 0], 6, &format!("{name}: green on the poster"));
        if let Some(x) = bar {
            assert_close(p.rgb(x, 360), BLACK, 6, &format!("{name}: the bar on the poster"));
        }
    }
}

#[test]
fn the_poster_of_a_portrait_clip_is_upright_and_pillarboxed() {
    let (_dir, _, report) = render(&fixture("portrait-rotated.mp4"), &fast());
    let p = picture_at(&report.poster.expect("a poster"), 0.0);
    assert_close(p.rgb(640, 150), [255, 0, 0], 24, "top of the picture is red");
    assert_close(p.rgb(640, 570), [0, 0, 255], 24, "bottom of the picture is blue");
    assert_close(p.rgb(200, 360), BLACK, 8, "left bar");
    assert_close(p.rgb(1000, 360), BLACK, 8, "right bar");
}
