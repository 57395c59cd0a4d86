//! The `vidworker` commands an operator runs: start-up checks that name
//! what is wrong, the dead-letter tools and requeue.

use std::time::Duration;

use uuid::Uuid;
use worker::db::Status;

use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_refuses_to_start_and_names_what_is_unreachable() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let run = |extra: &[(&str, &str)]| {
        let mut w = stack.spawn_binary("refused", extra);
        let code = w.wait(Duration::from_secs(60));
        (code, w.log_text())
    };
    let (code, log) = run(&[("S3_BUCKET", "no-such-bucket")]);
    assert_eq!(code, Some(1));
    assert!(log.contains("s3://no-such-bucket"), "{log}");
    let (code, log) = run(&[("SQS_QUEUE_URL", &format!("{}/123456789012/nope", stack.moto.endpoint()))]);
    assert_eq!(code, Some(1));
    assert!(log.contains("queue ") && log.contains("/nope"), "{log}");
    let bad_db = stack.database_url.replace("/vidworker", "/nosuchdb");
    let (code, log) = run(&[("DATABASE_URL", &bad_db)]);
    assert_eq!(code, Some(1));
    assert!(log.contains("database"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_an_empty_database_while_messages_wait() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit("gray-720p.mp4").await;
    // A wrong DATABASE_URL: another (empty) database, migrated at start.
    let wrong = stack.pg.create_database("wrong").expect("database");
    let mut w = stack.spawn_binary(
        "wrong-db",
        &[("DATABASE_URL", wrong.as_str()), ("RUN_MIGRATIONS", "true")],
    );
    assert_eq!(w.wait(Duration::from_secs(60)), Some(1));
    let log = w.log_text();
    assert!(log.contains("has no videos while the queue holds 1 messages"), "{log}");
    let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
    assert_eq!((visible, in_flight), (1, 0), "the message is untouched");
    assert_eq!(stack.row(id).await.status, Status::Pending);
}

/// Three videos (processed, failed on its input, given up) with a dead
/// letter each, and a malformed dead letter: (processed, bad, gave up).
async fn dead_letters_of_each_kind(stack: &Stack) -> [Uuid; 3] {
    let processed = stack.submit("gray-720p.mp4").await;
    let bad = stack.submit("truncated.mp4").await;
    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack.wait_settled(&[processed, bad], LIMIT).await;
    worker.stop().await;
    let gave_up = stack.row_without_message("portrait-rotated.mp4").await;
    stack.sql(&format!(
        "UPDATE videos SET status = 'failed', failure_kind = 'gave_up', phase = 'failed', attempts = 3, \
         error = 'gave up after 3 attempts: test', last_error_kind = 'test', event_id = gen_random_uuid() \
         WHERE id = '{gave_up}'"
    ));
    let dlq = worker::queue::Queue::new(stack.clients.sqs.clone(), &stack.dlq_url);
    for body in [
        worker::message::body(processed),
        worker::message::body(bad),
        worker::message::body(gave_up),
        "not a job".to_owned(),
    ] {
        dlq.send(&body).await.expect("dead letter");
    }

    [processed, bad, gave_up]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_tools_and_requeue_are_driven_by_the_row() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let [processed, bad, gave_up] = dead_letters_of_each_kind(&stack).await;
    let (code, out, err) = stack.command(&["dlq", "stats"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(": 4 messages"), "{out}");
    let (code, out, err) = stack.command(&["dlq", "peek", "10"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("video {processed}  row processed")), "{out}");
    assert!(out.contains(&format!("video {gave_up}  row failed")), "{out}");
    assert_eq!(stack.dead_letters().await.len(), 4, "peeking leaves them queued");
    let (code, out, err) = stack.command(&["dlq", "redrive", "--all"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("redriven 1, deleted 1 (already processed), left 2"),
        "{out}"
    );
    let mut left: Vec<String> = stack.dead_letters().await.into_iter().map(|d| d.0).collect();
    left.sort();
    let mut want = vec![worker::message::body(bad), "not a job".to_owned()];
    want.sort();
    assert_eq!(left, want, "failed inputs and malformed messages stay for an operator");

    // Requeue a processed video on purpose: made again, under a new key,
    // and the old rendition removed once the new one is recorded.
    let old_key = stack.row(processed).await.processed_key.expect("key");
    let (code, out, err) = stack.command(&["requeue", &processed.to_string()], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("requeued"), "{out}");
    let (code, _, err) = stack.command(&["requeue", &Uuid::new_v4().to_string()], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not requeued"), "{err}");

    let worker = stack.spawn_worker(stack.settings(1)).await;
    stack
        .wait_for(LIMIT, "both videos processed", || async {
            let a = stack.row(processed).await;
            let b = stack.row(gave_up).await;
            (a.status == Status::Processed
                && a.processed_key.as_deref() != Some(&old_key)
                && b.status == Status::Processed)
                .then_some(())
        })
        .await;
    worker.stop().await;
    assert!(
        !stack
            .storage
            .list(&format!("processed/{processed}/"))
            .await
            .expect("list")
            .contains(&old_key)
    );
    assert_eq!(
        stack.row(processed).await.attempts,
        1,
        "a requeued video gets a fresh set of attempts"
    );
    stack.check_invariants(&[processed, gave_up, bad]).await;
}

/// The completions as bash itself uses them: sourced, then asked what
/// follows `vidworker mi` and `vidworker dlq `.
#[test]
fn bash_completes_commands_from_the_generated_script() {
    let script = tempfile::NamedTempFile::new().expect("file");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidworker"))
        .args(["completions", "bash"])
        .output()
        .expect("completions");
    assert!(out.status.success());
    std::fs::write(script.path(), &out.stdout).expect("write");
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _vidworker vidworker \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[*]}}\"",
            script.path().display()
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &probe])
            .output()
            .expect("bash");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(complete("vidworker mi"), "migrate");
    let dlq = complete("vidworker dlq ''");
    for action in ["stats", "peek", "redrive"] {
        assert!(dlq.split(' ').any(|w| w == action), "{action} in {dlq:?}");
    }
}

/// The man pages as `man` renders them: one per command, each naming it.
#[test]
fn man_renders_a_page_for_the_binary_and_each_command() {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidworker"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("man");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (page, name) in [
        ("vidworker.1", "vidworker - The vidworker command"),
        ("vidworker-run.1", "vidworker-run - Run the worker"),
        ("vidworker-dlq-redrive.1", "vidworker-dlq-redrive - Send messages back"),
    ] {
        let shown = std::process::Command::new("man")
            .arg("-l")
            .arg(dir.path().join(page))
            .env("MANWIDTH", "200")
            .output()
            .expect("man runs");
        // Justified text: compare words, not spaces.
        let text = String::from_utf8_lossy(&shown.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(shown.status.success() && text.contains(name), "{page}: {text}");
    }
}

/// `vidworker check` against the real services: every line `ok` with the
/// production queue settings; then each broken setting is one FAIL line
/// naming it, and the exit code says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_problem_on_its_own_line() {
    let stack = Stack::start_with(worker::queue::QueueSettings::default()).await;
    let (code, out, err) = stack.command(&["check"], &[("EVENTS_TOPIC_ARN", "")]);
    assert_eq!(code, Some(0), "{out}{err}");
    for subject in [
        "settings",
        "rendition",
        "transcodes",
        "work directory",
        "database",
        "queue",
        "bucket",
    ] {
        assert!(out.contains(&format!("ok   {subject}: ")), "{subject} in {out}");
    }
    assert!(out.contains("every migration of this release applied"), "{out}");
    assert!(out.contains("an upload to processed/ started and aborted"), "{out}");
    assert_eq!(stack.open_uploads().await, 0, "the check leaves no upload behind");

    stack.sql("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)");
    let (code, out, _) = stack.command(&["check"], &[("S3_BUCKET", "no-such-bucket"), ("MAX_ATTEMPTS", "9")]);
    assert_eq!(code, Some(1), "{out}");
    let fails: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert_eq!(fails.len(), 3, "{out}");
    assert!(
        fails[0].starts_with("FAIL database: ") && fails[0].contains("vidworker migrate"),
        "{out}"
    );
    assert!(
        fails[1].starts_with("FAIL queue: ") && fails[1].contains("MAX_ATTEMPTS 9"),
        "{out}"
    );
    assert!(
        fails[2].starts_with("FAIL bucket: ") && fails[2].contains("no-such-bucket"),
        "{out}"
    );
    assert!(out.ends_with("vidworker check: 3 problem(s)\n"), "{out}");

    // An empty value, as an env file's `DATABASE_URL=`, is no value.
    let (code, out, _) = stack.command(&["check"], &[("DATABASE_URL", "")]);
    assert_eq!(code, Some(1));
    assert!(
        out.starts_with("FAIL settings: DATABASE_URL is not set (nor DATABASE_SECRET_ARN)")
            && out.ends_with("\nvidworker check: 1 problem(s)\n"),
        "{out}"
    );
}
