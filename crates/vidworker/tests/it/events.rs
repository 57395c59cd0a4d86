//! Completion events as the platform receives them: through SNS to an SQS
//! subscriber (moto delivers them), once per outcome, and the same event
//! again after a crash between the record and the delete.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Action, HttpProxy, Rule};
use uuid::Uuid;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(180);

/// A topic with an SQS queue subscribed to it (raw delivery: the message
/// body is the event itself); returns (topic ARN, subscriber queue URL).
async fn subscribed_topic(stack: &Stack) -> (String, String) {
    let sns = &stack.clients.sns;
    let sqs = &stack.clients.sqs;
    let topic = sns
        .create_topic()
        .name("vidworker-events")
        .send()
        .await
        .expect("create topic")
        .topic_arn
        .expect("topic ARN");
    let queue_url = sqs
        .create_queue()
        .queue_name("platform-events")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue URL");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    let queue_arn = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue ARN")
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await
        .expect("subscribe");
    (topic, queue_url)
}

/// Every event the subscriber has received within `wait`, as JSON.
async fn events(stack: &Stack, queue_url: &str, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < wait {
        let received = stack
            .clients
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive events");
        for m in received.messages() {
            out.push(serde_json::from_str(m.body().expect("a body")).expect("an event is JSON"));
            stack
                .clients
                .sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().expect("a handle"))
                .send()
                .await
                .expect("delete event");
        }
    }
    out
}

fn of_video(events: &[Value], id: Uuid) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["video_id"] == Value::String(id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_outcome_is_announced_once_through_sns() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let (topic, subscriber) = subscribed_topic(&stack).await;
    let good = stack.submit("gray-720p.mp4").await;
    let audio = stack.submit("audio-only.m4a").await;
    let mut worker = stack.spawn_binary("events", &[("EVENTS_TOPIC_ARN", topic.as_str())]);
    let rows = stack.wait_settled(&[good, audio], LIMIT).await;
    let all = events(&stack, &subscriber, Duration::from_secs(5)).await;
    worker.signal(Signal::TERM);
    assert_eq!(worker.wait(LIMIT), Some(0), "{}", worker.log_text());
    assert_eq!(all.len(), 2, "one event per outcome: {all:#?}");

    let processed = &rows[0];
    let [event] = of_video(&all, good)[..] else {
        panic!("one event for {good}: {all:#?}")
    };
    assert_eq!(event["version"], 1);
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

    let failed = &rows[1];
    let [event] = of_video(&all, audio)[..] else {
        panic!("one event for {audio}: {all:#?}")
    };
    assert_eq!(event["version"], 1);
    assert_eq!(event["type"], "video.failed");
    assert_eq!(event["id"], failed.event_id.expect("event id").to_string());
    assert_eq!(event["failure"]["kind"], "no_video");
    assert_eq!(event["failure"]["class"], "input");
    assert_eq!(event["failure"]["reason"], failed.error.clone().expect("reason"));
    assert!(event.get("rendition").is_none(), "{event}");
    stack.check_invariants(&[good, audio]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_record_and_delete_republishes_the_same_event() {
    let stack = Stack::start(Duration::from_secs(4)).await;
    let (topic, subscriber) = subscribed_topic(&stack).await;
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
    let before = events(&stack, &subscriber, Duration::from_secs(2)).await;
    assert_eq!(before.len(), 1, "announced before the delete: {before:#?}");

    // The message comes back: the outcome is found recorded, announced
    // again with the same id, and the message deleted.
    let mut second = stack.spawn_binary("again", &[("EVENTS_TOPIC_ARN", topic.as_str())]);
    stack
        .wait_for(LIMIT, "the redelivered message dropped", || async {
            (stack.queue_total().await == 0).then_some(())
        })
        .await;
    let after = events(&stack, &subscriber, Duration::from_secs(3)).await;
    second.signal(Signal::TERM);
    assert_eq!(second.wait(LIMIT), Some(0), "{}", second.log_text());
    assert_eq!(after, before, "the same event again, not a lost or a new one");
    let row = stack.row(id).await;
    assert_eq!(before[0]["id"], row.event_id.expect("event id").to_string());
    assert_eq!(row.attempts, 1, "not made twice");
    stack.check_invariants(&[id]).await;
}
