//! The graph's plans and descriptions, without FFmpeg.

use super::*;
use crate::spec::{Card, CardContent};

const HD: Size = Size::new(1280, 720);
const FPS30: Fraction = Fraction { num: 30, den: 1 };

/// An upright, square-pixel SDR 1080p source.
fn upright_hd() -> SourceVideo {
    SourceVideo {
        display: Size::new(1920, 1080),
        transform: Transform::Identity,
        hdr: false,
        colour: SourceColour::BT709_TV,
    }
}

/// Just the main video: no audio, watermark image or cards.
fn sources(main: SourceVideo) -> Sources {
    Sources {
        main,
        audio: false,
        watermark: None,
        intro: None,
        outro: None,
    }
}

#[test]
fn a_portrait_phone_clip_is_pillarboxed_upright() {
    // 1920x1080 coded, rotated 90°: shown as 1080x1920.
    let f = Fitting::new(Size::new(1080, 1920), HD, Fit::Pad, Transform::Clock);
    // Shown as 406x720 (even), so scaled to 720x406 before the turn.
    assert_eq!((f.scale.w, f.scale.h), (720, 406));
    let chain = f.chain(Fraction { num: 30, den: 1 }, HD);
    assert!(chain.starts_with("fps=30,scale=w=720:h=406"), "{chain}");
    assert!(chain.contains("transpose=clock,setsar=1,pad=1280:720"), "{chain}");
}

#[test]
fn a_bt601_source_changes_matrix_on_the_small_picture_before_the_bars() {
    let sd = Size::new(720, 576);
    let colour = SourceColour::new(None, false, sd);
    let f = Fitting::new(Size::new(1024, 576), HD, Fit::Pad, Transform::Identity).with_colour(colour);
    let chain = f.chain(Fraction { num: 25, den: 1 }, HD);
    let scale = chain.find("scale=w=1280:h=720").expect("scale");
    let matrix = chain.find(",colorspace=").expect("a matrix conversion");
    let pad = chain.find(",pad=").expect("pad");
    assert!(scale < matrix && matrix < pad, "{chain}");
    // A BT.709 source gets no conversion at all.
    let f = f.with_colour(SourceColour::BT709_TV);
    assert!(!f.chain(Fraction { num: 25, den: 1 }, HD).contains("colorspace"));
}

#[test]
fn anamorphic_pal_fills_the_frame_and_fill_mode_covers_it() {
    // 720x576 with SAR 64:45 is shown as 1024x576 = 16:9.
    let f = Fitting::new(Size::new(1024, 576), HD, Fit::Pad, Transform::Identity);
    assert_eq!((f.scale.w, f.scale.h), (1280, 720));
    // A 4:3 picture in fill mode covers the width and is cropped.
    let f = Fitting::new(Size::new(640, 480), HD, Fit::Fill, Transform::Identity);
    assert_eq!((f.scale.w, f.scale.h), (1280, 960));
    assert!(f.chain(Fraction { num: 25, den: 1 }, HD).ends_with("crop=1280:720"));
}

#[test]
fn odd_and_tiny_sizes_stay_even_and_inside_the_frame() {
    let f = Fitting::new(Size::new(639, 359), HD, Fit::Pad, Transform::Identity);
    assert_eq!(f.scale.w % 2, 0);
    assert_eq!(f.scale.h % 2, 0);
    assert!(f.scale.w <= 1280 && f.scale.h <= 720);
    let f = Fitting::new(Size::new(64, 64), HD, Fit::Pad, Transform::Identity);
    assert_eq!((f.scale.w, f.scale.h), (720, 720));
}

#[test]
fn watermark_sits_in_its_corner_with_its_margin() {
    let spec = Watermark::default();
    let wm = WatermarkPlacement::new(Size::new(512, 512), HD, &spec);
    assert_eq!((wm.w, wm.h), (128, 128));
    assert_eq!((wm.x, wm.y), (1280 - 128 - 24, 720 - 128 - 24));
    let spec = Watermark {
        corner: Corner::TopLeft,
        margin: 10,
        width_fraction: 0.25,
        ..Watermark::default()
    };
    let wm = WatermarkPlacement::new(Size::new(512, 256), HD, &spec);
    assert_eq!((wm.x, wm.y, wm.w, wm.h), (10, 10, 320, 160));
}

#[test]
fn description_joins_cards_and_audio_with_concat() {
    let spec = RenditionSpec {
        watermark: None,
        intro: Some(Card::logo()),
        ..RenditionSpec::default()
    };
    let sources = Sources {
        audio: true,
        intro: Some(CardSource::Image {
            size: Size::new(512, 512),
            is_logo: true,
        }),
        ..sources(upright_hd())
    };
    let plan = Plan::new(&spec, &sources, FPS30, true);
    assert_eq!(
        plan,
        Plan {
            outputs: Outputs::single(HD),
            rate: FPS30,
            main: Fitting::new(Size::new(1920, 1080), HD, Fit::Pad, Transform::Identity),
            watermark: None,
            intro: Some(CardPlan::image(
                Size::new(512, 512),
                HD,
                true,
                Duration::from_millis(2500),
            )),
            outro: None,
            audio_end: Some(Duration::from_secs(30)),
        }
    );
    let d = plan.description();
    assert!(d.contains("color=c=black:s=1280x720:r=30:d=2.500000"), "{d}");
    assert!(
        d.contains("[intro][intro_a][main][main_au]concat=n=2:v=1:a=1[out_v][out_a]"),
        "{d}"
    );
    assert!(!d.contains("overlay=x=1128"), "no watermark was asked for: {d}");
}

#[test]
fn the_default_plan_has_one_720p_output_with_the_phone_clip_upright_and_watermarked() {
    let portrait = SourceVideo {
        display: Size::new(1080, 1920),
        transform: Transform::Clock,
        ..upright_hd()
    };
    let sources = Sources {
        watermark: Some(Size::new(512, 512)),
        ..sources(portrait)
    };
    let plan = Plan::new(&RenditionSpec::default(), &sources, FPS30, true);
    assert_eq!(plan.outputs.sizes, vec![HD], "one output, the spec's size");
    assert_eq!(plan.main.scale, Size::new(720, 406));
    let wm = plan.watermark.as_ref().expect("the default watermark");
    assert_eq!((wm.x, wm.y, wm.w, wm.h), (1128, 568, 128, 128));
    assert_eq!(plan.audio_end, None, "audio is off by default");
    let d = plan.description();
    assert!(d.contains("transpose=clock,setsar=1,pad=1280:720"), "{d}");
    assert!(d.contains("overlay=x=1128:y=568"), "{d}");
    assert!(!d.contains("out_a"), "{d}");
}

#[test]
fn a_ladder_splits_the_finished_picture_once_and_scales_each_branch() {
    let spec = RenditionSpec {
        ladder: vec![
            crate::Rung::named("360p").expect("standard"),
            crate::Rung::named("144p").expect("standard"),
        ],
        intro: Some(Card::logo()),
        ..RenditionSpec::default()
    };
    let sources = Sources {
        watermark: Some(Size::new(512, 512)),
        intro: Some(CardSource::Image {
            size: Size::new(512, 512),
            is_logo: true,
        }),
        ..sources(upright_hd())
    };
    let plan = Plan::new(&spec, &sources, FPS30, false);
    assert_eq!(
        plan.outputs.sizes,
        vec![HD, Size::new(640, 360), Size::new(256, 144)],
        "the primary first"
    );
    let d = plan.description();
    // The shared stages run once, at the primary's size: one fitting,
    // one watermark, the cards joined, and only then the split.
    assert_eq!(d.matches("overlay=x=1128").count(), 1, "{d}");
    assert_eq!(d.matches("split=").count(), 1, "{d}");
    assert!(d.contains("concat=n=2:v=1:a=0[ladder_v]"), "{d}");
    assert!(d.contains("[ladder_v]split=3[out_v][rung1][rung2]"), "{d}");
    assert!(
        d.contains("[rung1]scale=w=640:h=360:flags=bicubic,setsar=1,format=yuv420p[out_v1]"),
        "{d}"
    );
    assert!(d.contains("[rung2]scale=w=256:h=144:"), "{d}");
    assert!(d.ends_with("[out_v2]"), "each branch ends at its sink: {d}");
}

#[test]
fn hdr_is_tone_mapped_only_where_ffmpeg_has_zscale() {
    let hdr = SourceVideo {
        hdr: true,
        ..upright_hd()
    };
    let spec = RenditionSpec::default();
    let mapped = Plan::new(&spec, &sources(hdr), FPS30, true);
    assert!(mapped.main.tonemap);
    assert!(mapped.description().contains("tonemap=tonemap=hable"));
    let plain = Plan::new(&spec, &sources(hdr), FPS30, false);
    assert!(!plain.main.tonemap);
    assert!(!plain.description().contains("tonemap"));
}

#[test]
fn a_card_clip_is_fitted_like_the_main_video_for_the_card_s_time() {
    let spec = RenditionSpec {
        fit: Fit::Fill,
        outro: Some(Card {
            content: CardContent::Clip("outro.mp4".into()),
            duration: Duration::from_secs(2),
        }),
        ..RenditionSpec::default()
    };
    let clip = SourceVideo {
        display: Size::new(640, 480),
        ..upright_hd()
    };
    let sources = Sources {
        outro: Some(CardSource::Clip(clip)),
        ..sources(upright_hd())
    };
    let plan = Plan::new(&spec, &sources, FPS30, true);
    assert_eq!(
        plan.outro,
        Some(CardPlan::Clip {
            fitting: Fitting::new(Size::new(640, 480), HD, Fit::Fill, Transform::Identity),
            duration: Duration::from_secs(2),
        })
    );
    assert_eq!(plan.intro, None);
    // The spec asks for a watermark, but no image was loaded for it.
    assert_eq!(plan.watermark, None);
    let d = plan.description();
    assert!(d.contains("[outro_v]fps=30,scale=w=1280:h=960"), "{d}");
    assert!(d.contains("crop=1280:720,trim=duration=2.000000"), "{d}");
}
