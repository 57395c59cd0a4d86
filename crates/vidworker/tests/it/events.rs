//! Completion events as the platform receives them: through SNS to an SQS
//! subscriber (moto delivers them), once per outcome, even after a crash
//! between the record and the delete.

use std::time::Duration;

use testkit::{Action, HttpProxy, Rule};

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_announced_once_through_sns() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let good = stack.submit("gray-720p.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    let mut worker = stack.spawn_binary("events", &[("EVENTS_TOPIC_ARN", topic.as_str())]);
    let rows = stack.wait_settled(&[good, audio], LIMIT).await;
    let all = stack.events(&subscriber, Duration::from_secs(5)).await;
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert_eq!(all.len(), 2, "one event per outcome: {all:#?}");

    let processed = &rows[0];
    let [event] = of_video(&all, good)[..] else {
        panic!("one event for {good}: {all:#?}")
    };
    assert_eq!(event["version"], 2, "version 2 by default");
    assert_eq!(event["type"], "video.processed");
    assert_eq!(event["id"], processed.event_id.expect("event id").to_string());
    assert_eq!(event["attempts"], 1);
    assert_eq!(event["rendition"]["key"], processed.processed_key.clone().expect("key"));
    assert_eq!(event["rendition"]["bytes"], processed.processed_bytes.expect("bytes"));
    assert_eq!(
        event["rendition"]["duration_seconds"],
        processed.processed_duration_seconds.expect("duration")
    );
    assert_eq!(event["poster"]["key"], processed.poster_key.clone().expect("poster"));
    assert_eq!(event["source"]["key"], processed.original_key);
    assert_eq!(
        (&event["source"]["width"], &event["source"]["height"]),
        (&1280.into(), &720.into())
    );
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    // Version 2's outputs and cost, the CPU time measured by the child.
    assert_eq!(event["outputs"]["renditions"][0]["key"], event["rendition"]["key"]);
    assert_eq!(event["outputs"]["renditions"][0]["name"], "720p");
    assert_eq!(event["outputs"]["objects"], 2, "the rendition and its poster: {event}");
    let cpu = event["cost"]["cpu_seconds"].as_f64().expect("the child's CPU seconds");
    assert!(cpu > 0.0 && cpu < 120.0, "{event}");
    assert!(
        event["cost"]["peak_rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20),
        "{event}"
    );
    assert!(event["cost"].get("dollars").is_none(), "no price set: {event}");

    let failed = &rows[1];
    let [event] = of_video(&all, audio)[..] else {
        panic!("one event for {audio}: {all:#?}")
    };
    assert_eq!(event["version"], 2);
    assert_eq!(event["type"], "video.failed");
    assert_eq!(event["id"], failed.event_id.expect("event id").to_string());
    assert_eq!(event["failure"]["kind"], "no_video");
    assert_eq!(event["failure"]["class"], "input");
    assert_eq!(event["failure"]["reason"], failed.error.clone().expect("reason"));
    assert!(event.get("rendition").is_none(), "{event}");
    stack.check_invariants(&[good, audio]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_record_and_delete_announces_the_event_once() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let proxy = HttpProxy::start(&stack.moto.endpoint()).expect("HTTP proxy starts");
    let id = stack.submit("gray-720p.mp4").await;
    // The outcome is recorded and announced; the delete never reaches SQS.
    let rule = proxy
        .add_rule(Rule::new("sqs:DeleteMessage").action(Action::Hang))
        .expect("rule");
    let endpoint = proxy.endpoint();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("EVENTS_TOPIC_ARN", topic.as_str()),
    ];
    let mut first = stack.spawn_binary("announced", &env);
    tokio::task::block_in_place(|| proxy.wait_held(rule, 1, LIMIT)).expect("the delete is held");
    first.signal(Signal::KILL);
    first.wait(Duration::from_secs(10));
    proxy.remove_rule(rule).expect("remove");
    let before = stack.events(&subscriber, Duration::from_secs(2)).await;
    assert_eq!(before.len(), 1, "announced before the delete: {before:#?}");

    // The message comes back: the outcome is found recorded and its event
    // marked published in the row (the outbox), so it is not announced a
    // second time; the message is deleted.
    let mut second = stack.spawn_binary("again", &[("EVENTS_TOPIC_ARN", topic.as_str())]);
    stack
        .wait_for(LIMIT, "the redelivered message dropped", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let after = stack.events(&subscriber, Duration::from_secs(3)).await;
    second.signal(Signal::TERM);
    assert_eq!(second.wait(LIMIT), Some(0), "{}", second.log_text());
    assert!(after.is_empty(), "announced again: {after:#?}");
    let row = stack.row(id).await;
    assert!(row.event_published_at.is_some(), "{row:?}");
    assert_eq!(before[0]["id"], row.event_id.expect("event id").to_string());
    assert_eq!(row.attempts, 1, "not made twice");
    stack.check_invariants(&[id]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_is_listed_by_status_and_announced_in_the_version_asked_for() {
    let stack = Stack::start(Duration::from_secs(60)).await;
    let (topic, subscriber) = stack.subscribed_topic().await;
    let id = stack.submit("portrait-phone-8s.mp4").await;
    let env = [
        ("EVENTS_TOPIC_ARN", topic.as_str()),
        ("EVENTS_VERSION", "1"),
        ("RENDITIONS", "720p,270p"),
        ("RENDITION_HLS", "true"),
        ("RENDITION_STORYBOARD", "true"),
        ("COST_PER_VCPU_HOUR", "0.0446"),
    ];
    let mut worker = stack.spawn_binary("ladder", &env);
    let rows = stack.wait_settled(&[id], LIMIT).await;
    let all = stack.events(&subscriber, Duration::from_secs(5)).await;
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    let [event] = of_video(&all, id)[..] else {
        panic!("one event for {id}: {all:#?}")
    };
    assert_eq!(event["version"], 1, "{event}");
    assert!(event.get("outputs").is_none() && event.get("cost").is_none(), "{event}");

    let (code, out, err) = stack.command(&["status", &id.to_string()], &[]);
    assert_eq!(code, Some(0), "{err}");
    let stem = rows[0]
        .processed_key
        .as_deref()
        .and_then(|k| k.strip_suffix(".mp4"))
        .expect("key");
    for expected in [
        "720p 1280x720".to_owned(),
        "270p 480x270".to_owned(),
        format!("{stem}/270p.mp4"),
        format!("hls: {stem}/hls/master.m3u8"),
        format!("storyboard: {stem}/storyboard.jpg + {stem}/storyboard.vtt"),
    ] {
        assert!(out.contains(&expected), "{expected:?} in:\n{out}");
    }
    let cost = out
        .lines()
        .find(|l| l.trim_start().starts_with("cost:"))
        .expect("a cost line");
    assert!(cost.contains(" CPU s, $0.0") && cost.contains("transcode"), "{cost}");
    stack.check_invariants(&[id]).await;
}
