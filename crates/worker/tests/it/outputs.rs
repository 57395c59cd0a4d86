//! A ladder, HLS and a storyboard through the worker: every object is in
//! S3 under the claim's prefix, the row records them all (read back with
//! SQL), the completion event lists them in version 2 (or keeps version 1
//! when asked), and a requeue's new set replaces the old one without
//! deleting a key the row records.

use std::time::Duration;

use processor::Rung;
use worker::completion::Publisher;
use worker::db::Status;
use worker::outputs::{Cost, Outputs};

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(240);

fn ladder_settings(stack: &Stack) -> worker::config::WorkerSettings {
    let mut settings = stack.settings(1);
    settings.spec.ladder = vec![Rung::named("360p").expect("a standard rung")];
    settings.spec.hls = true;
    settings.spec.storyboard = true;
    settings.vcpu_hour_price = Some(0.05);
    settings
}

/// Downloads a text object.
async fn text(stack: &Stack, key: &str) -> String {
    let got = stack
        .clients
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} is in S3: {e:?}"));
    let body = got.body.collect().await.expect("body").into_bytes();
    String::from_utf8(body.to_vec()).expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_with_hls_and_a_storyboard_is_stored_recorded_and_announced() {
    let stack = Stack::start(Duration::from_secs(60)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let publisher = Publisher::new(&stack.clients, Some(&topic), None);
    let id = stack.submit("portrait-phone-8s.mp4").await;
    let worker = stack
        .run(
            stack
                .runner(ladder_settings(&stack), None, None)
                .await
                .with_publisher(publisher),
        )
        .await;
    stack.wait_status(id, Status::Processed, LIMIT).await;
    let events = stack.events(&subscriber, Duration::from_secs(3)).await;
    worker.stop().await;

    // The row, as the platform reads it: with SQL.
    let outputs_json = stack.sql(&format!("SELECT outputs FROM videos WHERE id = '{id}'"));
    let outputs: Outputs = serde_json::from_str(&outputs_json).expect("the outputs column is the documented JSON");
    let row = stack.row(id).await;
    let stem = row
        .processed_key
        .as_deref()
        .and_then(|k| k.strip_suffix(".mp4"))
        .expect("a recorded rendition")
        .to_owned();
    let names: Vec<(&str, u32, u32)> = outputs
        .renditions
        .iter()
        .map(|r| (r.name.as_str(), r.width, r.height))
        .collect();
    assert_eq!(names, [("720p", 1280, 720), ("360p", 640, 360)]);
    assert_eq!(Some(&outputs.renditions[0].key), row.processed_key.as_ref());
    assert_eq!(outputs.renditions[1].key, format!("{stem}/360p.mp4"));
    for r in &outputs.renditions {
        let info = stack.fetch_rendition(&r.key).await;
        assert_eq!(
            (info.display_width, info.display_height),
            (r.width, r.height),
            "{}",
            r.key
        );
        assert!(r.peak_kbps >= r.average_kbps && r.average_kbps > 0, "{r:?}");
    }

    check_hls(&stack, &outputs, &stem).await;

    check_storyboard(&stack, &outputs, &stem).await;

    // Nothing else under the video's prefix, and everything counted.
    let stored = stack.storage.list(&format!("processed/{id}/")).await.expect("list");
    assert_eq!(stored.len() as u32, outputs.objects, "{stored:#?}");

    // The cost, priced.
    let cost: Cost = serde_json::from_value(row.cost.clone().expect("a cost")).expect("the cost JSON");
    assert!(cost.wall_seconds.transcode > 0.0, "{cost:?}");
    match cost.cpu_seconds {
        Some(cpu) => assert_eq!(cost.dollars, Some(((cpu / 3600.0 * 0.05) * 1e8).round() / 1e8)),
        None => assert!(
            matches!(isolation(), worker::isolate::Isolation::InProcess),
            "a child reports its CPU"
        ),
    }

    // The event: version 2, with the same outputs and cost.
    let [event] = of_video(&events, id)[..] else {
        panic!("one event for {id}: {events:#?}")
    };
    assert_eq!(event["version"], 2);
    assert_eq!(event["outputs"], serde_json::to_value(&outputs).expect("json"));
    assert_eq!(event["cost"]["wall_seconds"]["transcode"], cost.wall_seconds.transcode);
    assert_eq!(event["rendition"]["key"], row.processed_key.clone().expect("key"));
    stack.check_invariants(&[id]).await;

    requeue_with_version_1(&stack, id, &topic, &subscriber, &stem).await;
    stack.check_invariants(&[id]).await;
}

/// The size of an object (it exists).
async fn object_size(stack: &Stack, key: &str) -> u64 {
    let head = stack
        .clients
        .s3
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{key} is in S3: {e:?}"));
    head.content_length().unwrap_or(0).max(0) as u64
}

/// HLS in S3: the master names every media playlist, which names its
/// segments; each of them is in S3, and the count is the recorded one.
async fn check_hls(stack: &Stack, outputs: &Outputs, stem: &str) {
    let hls = outputs.hls.as_ref().expect("HLS recorded");
    assert_eq!(hls.master, format!("{stem}/hls/master.m3u8"));
    let master = text(stack, &hls.master).await;
    assert!(
        master.contains("#EXT-X-STREAM-INF:") && master.contains("CODECS=\"avc1."),
        "{master}"
    );
    let hls_dir = hls.master.trim_end_matches("master.m3u8");
    let mut hls_objects = 1;
    for media in master.lines().filter(|l| l.ends_with(".m3u8")) {
        let playlist = text(stack, &format!("{hls_dir}{media}")).await;
        let media_dir = format!("{hls_dir}{}", media.trim_end_matches("index.m3u8"));
        let segments: Vec<&str> = playlist.lines().filter(|l| l.ends_with(".m4s")).collect();
        assert!(segments.len() >= 4, "8 s in segments of about 2 s: {playlist}");
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{playlist}");
        for file in segments.iter().copied().chain(["init.mp4"]) {
            let key = format!("{media_dir}{file}");
            assert!(object_size(stack, &key).await > 0, "{key} is empty");
        }
        hls_objects += 2 + segments.len();
    }
    assert_eq!(hls.objects as usize, hls_objects, "{master}");
}

/// Requeued (a better encoder, say) with consumers still on version 1:
/// the new claim's set replaces the old; the old one's keys are gone.
async fn requeue_with_version_1(stack: &Stack, id: uuid::Uuid, topic: &str, subscriber: &str, stem: &str) {
    let reconciler = stack.reconciler(Duration::from_secs(3600), Duration::from_secs(3600));
    assert!(reconciler.requeue(id, "re-encode").await.expect("requeue"));
    let publisher = Publisher::new(&stack.clients, Some(topic), None).with_version(1);
    let worker = stack
        .run(
            stack
                .runner(ladder_settings(stack), None, None)
                .await
                .with_publisher(publisher),
        )
        .await;
    stack
        .wait_for(LIMIT, "the requeued video processed again", || async {
            let row = stack.row(id).await;
            let first = format!("{stem}.mp4");
            (row.status == Status::Processed && row.processed_key.as_deref() != Some(first.as_str())).then_some(row)
        })
        .await;
    let events = stack.events(subscriber, Duration::from_secs(3)).await;
    worker.stop().await;
    let [event] = of_video(&events, id)[..] else {
        panic!("one event for {id}: {events:#?}")
    };
    assert_eq!(event["version"], 1);
    assert!(event.get("outputs").is_none() && event.get("cost").is_none(), "{event}");
    let stored = stack.storage.list(&format!("processed/{id}/")).await.expect("list");
    assert!(
        !stored.iter().any(|k| k.starts_with(stem)),
        "the old set is removed: {stored:#?}"
    );
}

/// The storyboard in S3: cues into a sprite of 160-pixel thumbnails.
async fn check_storyboard(stack: &Stack, outputs: &Outputs, stem: &str) {
    let storyboard = outputs.storyboard.as_ref().expect("a storyboard recorded");
    assert_eq!(storyboard.sprite, format!("{stem}/storyboard.jpg"));
    let vtt = text(stack, &storyboard.vtt).await;
    assert!(
        vtt.starts_with("WEBVTT") && vtt.contains("storyboard.jpg#xywh=0,0,160,90"),
        "{vtt}"
    );
    assert_eq!(
        stack.fetch_jpeg_size(&storyboard.sprite).await.0,
        160 * storyboard.thumbnails.min(10)
    );
}
