//! The stack as deployed (issue 20, "How to test it here"):
//! `deploy/cloudformation.yaml` in moto's CloudFormation, and the real
//! `vidworker run` against what the stack made, holding nothing but the
//! instance role's credentials, with moto enforcing IAM.
//!
//! `stack_deploy.py` (beside this file) deploys the template unchanged,
//! reads every property it can back through the services' own APIs,
//! creates the identities (an admin user, the stack's WorkerRole and a
//! platform role holding the stack's ProducerPolicy, each assumed through
//! STS) and switches moto's IAM enforcement on; it prints JSON that these
//! tests read.
//!
//! moto's emulation is partial, so every deployment prints what moto did
//! not make and what it lost, and fails when that list changes (a newer
//! moto, a new resource or property in the template): review
//! [`MOTO_LACKS`] and [`MOTO_LOSES`] then. What moto leaves out is covered
//! statically by `deploy/check.py` only. moto's IAM enforcement is partial
//! too: it ignores conditions, does not evaluate bucket policies, and
//! authorises SNS and Secrets Manager calls against Resource "*"; the tests
//! say so where it matters instead of claiming what moto cannot show.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;
use testkit::{Moto, Postgres};
use worker::aws::Clients;

use crate::binary::{BinaryWorker, venv_python};
use crate::support::fixture;

const LIMIT: Duration = Duration::from_secs(60);
const STACK: &str = "vidworker";
const DATABASE: &str = "vidworker";
/// The binary under test.
const VIDWORKER: &str = env!("CARGO_BIN_EXE_vidworker");

/// Resource types of the template that moto's CloudFormation has no
/// model for (it warns "not supported by moto's CloudFormation
/// implementation" and lists them as nameless CREATE_COMPLETE entries),
/// and what is therefore untested here.
const MOTO_LACKS: &[(&str, &str)] = &[
    (
        "AWS::S3::BucketPolicy",
        "DenyInsecureTransport (moto serves http and evaluates no bucket policy anyway)",
    ),
    (
        "AWS::AutoScaling::ScalingPolicy",
        "the backlog target tracking (deploy/check.py checks its metric math)",
    ),
    (
        "AWS::CloudWatch::Alarm",
        "the alarms (deploy/check.py checks their metrics and dimensions)",
    ),
];

/// Properties moto's CloudFormation accepts but does not apply: read back
/// through the service's API, they differ from the template's value.
const MOTO_LOSES: &[(&str, &str)] = &[
    ("AWS::S3::Bucket", "PublicAccessBlockConfiguration"),
    ("AWS::S3::Bucket", "OwnershipControls"),
    ("AWS::S3::Bucket", "VersioningConfiguration"),
    ("AWS::S3::Bucket", "LifecycleConfiguration"),
    ("AWS::SQS::Queue", "RedriveAllowPolicy"),
    ("AWS::IAM::Role", "ManagedPolicyArns"),
    ("AWS::EC2::SecurityGroup", "SecurityGroupEgress"),
    ("AWS::AutoScaling::AutoScalingGroup", "DefaultInstanceWarmup"),
    ("AWS::AutoScaling::AutoScalingGroup", "MetricsCollection"),
    ("AWS::AutoScaling::AutoScalingGroup", "LifecycleHookSpecificationList"),
];

/// What `deploy/check.py` checks of the template instead, without moto.
const STATIC_CHECKS: &str = "deploy/check.py (cfn-lint; the scaling policy's metric math; the worker role's actions \
                             against the SDK calls in crates/; the queue settings against `vidworker queue-init`; \
                             the user data and unit files; the alarms' and dashboard's metric names)";

/// A deployed stack: moto, and what `stack_deploy.py` printed.
struct Deployed {
    moto: Moto,
    json: Value,
}

/// An identity's credentials (temporary ones have a session token).
struct Creds {
    key: String,
    secret: String,
    token: Option<String>,
}

impl Deployed {
    /// Starts moto and deploys the template into it, the stack's database
    /// secret holding `database_url`. IAM is enforced on return.
    fn start(database_url: &str) -> Deployed {
        let moto = Moto::start().expect("moto starts (run scripts/install-deps.sh)");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/stack_deploy.py");
        let template = testkit::repo_root().join("deploy/cloudformation.yaml");
        let out = Command::new(venv_python())
            .arg(&script)
            .args([
                "--endpoint",
                &moto.endpoint(),
                "--stack",
                STACK,
                "--database-url",
                database_url,
            ])
            .arg("--template")
            .arg(&template)
            .output()
            .expect("the venv's python runs");
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let json: Value = serde_json::from_slice(&out.stdout).expect("stack_deploy.py prints JSON");
        assert_eq!(json["stack_status"], "CREATE_COMPLETE", "{json:#}");
        Deployed { moto, json }
    }

    fn output(&self, key: &str) -> String {
        self.json["outputs"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no stack output {key}: {:#}", self.json["outputs"]))
            .to_owned()
    }

    fn creds(&self, who: &str) -> Creds {
        let c = &self.json["credentials"][who];
        let text = |k: &str| c[k].as_str().map(str::to_owned);
        Creds {
            key: text("key").expect("an access key id"),
            secret: text("secret").expect("a secret key"),
            token: text("token"),
        }
    }

    /// The environment of a `vidworker` command holding `who`'s credentials
    /// and nothing else of AWS.
    fn env(&self, who: &str) -> Vec<(String, String)> {
        let c = self.creds(who);
        let mut env = vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            ("AWS_ACCESS_KEY_ID".to_owned(), c.key),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), c.secret),
            ("AWS_ENDPOINT_URL".to_owned(), self.moto.endpoint()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
            ("SQS_QUEUE_URL".to_owned(), self.output("JobQueueUrl")),
            ("S3_BUCKET".to_owned(), self.output("BucketName")),
        ];
        env.extend(c.token.map(|t| ("AWS_SESSION_TOKEN".to_owned(), t)));
        env
    }

    /// S3 as `who`: path-style, the session token sent when there is one.
    fn s3(&self, who: &str) -> aws_sdk_s3::Client {
        let c = self.creds(who);
        let credentials = aws_sdk_s3::config::Credentials::new(c.key, c.secret, c.token, None, "stack_deploy");
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.moto.endpoint())
            .credentials_provider(credentials)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The admin user's clients (for the test's own checks).
    async fn admin(&self) -> Clients {
        let c = self.creds("admin");
        Clients::with_credentials("us-east-1", &self.moto.endpoint(), &c.key, &c.secret).await
    }
}

/// The `key` member of each element of `json`, as text.
fn members(json: &Value, key: &str) -> Vec<String> {
    let items = json.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|i| i[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// What moto made of the template and what it did not, as a person reads it.
fn gap_report(json: &Value) -> String {
    let res = &json["resources"];
    let entry = |r: &Value| {
        format!(
            "{} ({})",
            r["logical_id"].as_str().unwrap_or("?"),
            r["type"].as_str().unwrap_or("?")
        )
    };
    let list = |v: &Value| v.as_array().map(|a| a.iter().map(entry).collect::<Vec<_>>().join(", "));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n== deploy/cloudformation.yaml in moto {} ({} in {} s) ==\n  made: {}\n  NOT MADE by moto: {}\n  off by \
         condition: {}",
        json["moto_version"].as_str().unwrap_or("?"),
        json["stack_status"].as_str().unwrap_or("?"),
        json["create_seconds"],
        list(&res["made"]).unwrap_or_default(),
        list(&res["not_made"]).unwrap_or_default(),
        list(&res["condition_false"]).unwrap_or_default(),
    );
    let props = json["properties"].as_array().map(Vec::as_slice).unwrap_or_default();
    let kept = props.iter().filter(|p| p["state"] == "kept").count();
    let _ = writeln!(out, "  properties read back and equal to the template's: {kept}");
    for (state, title) in [
        ("lost", "LOST by moto (accepted, not applied)"),
        ("not_checked", "NOT CHECKED (no read-back here)"),
        (
            "attribute",
            "resource attributes NOT EXERCISED: moto ignores CreationPolicy (the stack completed without any \
             SignalResource); UpdatePolicy, DeletionPolicy and UpdateReplacePolicy act on updates and deletes, which \
             this test does not make",
        ),
    ] {
        let _ = writeln!(out, "  {title}:");
        let mut none = true;
        for p in props.iter().filter(|p| p["state"] == state) {
            let text = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            let _ = writeln!(
                out,
                "    {}.{}: {}",
                text("logical_id"),
                text("property"),
                text("detail")
            );
            none = false;
        }
        if none {
            out.push_str("    (none)\n");
        }
    }
    for w in json["workarounds"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(out, "  workaround: {}", w.as_str().unwrap_or_default());
    }
    for (arn, services) in json["managed_policy_services"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  {arn}, not attached by moto, allows actions of: {services} only");
    }
    for (kind, untested) in MOTO_LACKS {
        let _ = writeln!(out, "  untested because moto has no {kind}: {untested}");
    }
    let _ = writeln!(out, "  covered statically instead by {STATIC_CHECKS}");
    out
}

/// Writes to the test process's real stderr, past the test harness's
/// capture: the list of gaps shows in passing runs too.
fn say(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_makes_the_stack_but_for_the_gaps_this_test_names() {
    let stack = Deployed::start("postgres://postgres@127.0.0.1:5432/unused");
    let json = &stack.json;
    say(&gap_report(json));

    let typed = |v: &Value| -> BTreeSet<String> { members(v, "type").into_iter().collect() };
    let not_made = typed(&json["resources"]["not_made"]);
    let known: BTreeSet<String> = MOTO_LACKS.iter().map(|(t, _)| (*t).to_owned()).collect();
    assert_eq!(
        not_made, known,
        "the resource types moto does not make changed: review MOTO_LACKS here and what {STATIC_CHECKS} covers"
    );
    let lost: BTreeSet<(String, String)> = json["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .filter(|p| p["state"] == "lost")
        .map(|p| {
            (
                p["type"].as_str().unwrap_or_default().to_owned(),
                p["property"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let known: BTreeSet<(String, String)> = MOTO_LOSES
        .iter()
        .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(lost, known, "the properties moto loses changed: review MOTO_LOSES here");

    // What the least-privilege tests below rest on was applied as written.
    let kept = |logical: &str, property: &str| {
        json["properties"]
            .as_array()
            .expect("properties")
            .iter()
            .any(|p| p["logical_id"] == logical && p["property"] == property && p["state"] == "kept")
    };
    for (logical, property) in [
        ("WorkerRole", "Policies"),
        ("ProducerPolicy", "PolicyDocument"),
        ("JobQueue", "RedrivePolicy"),
        ("JobQueue", "VisibilityTimeout"),
        ("Bucket", "BucketEncryption"),
        ("LaunchTemplate", "LaunchTemplateData.UserData"),
        ("LaunchTemplate", "LaunchTemplateData.MetadataOptions"),
    ] {
        assert!(
            kept(logical, property),
            "{logical}.{property} not as the template says:\n{}",
            gap_report(json)
        );
    }
    // The AWS managed policies moto does not attach grant nothing of the
    // worker's own services (moto's copy of their documents).
    for (arn, services) in json["managed_policy_services"].as_object().expect("managed policies") {
        let services: Vec<&str> = services
            .as_array()
            .expect("services")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for own in ["s3", "sqs", "sns", "secretsmanager"] {
            assert!(!services.contains(&own), "{arn} grants {own} actions: {services:?}");
        }
    }
}

/// Runs a one-shot `vidworker` command with exactly `env`; returns its
/// stdout, or fails the test with its stderr.
fn vidworker(args: &[&str], env: &[(String, String)]) -> String {
    let out = Command::new(VIDWORKER)
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .expect("vidworker runs");
    assert!(
        out.status.success(),
        "vidworker {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vidworker run` as an instance of the group runs it (the values
/// user-data.sh writes to /etc/vidworker/env), with the worker role's
/// credentials, test-sized polls and a fast preset.
fn spawn_worker(stack: &Deployed, database_url: &str, dir: &std::path::Path) -> BinaryWorker {
    let log = dir.join("worker.log");
    let temp = dir.join("jobs");
    std::fs::create_dir_all(&temp).expect("jobs dir");
    let settings = [
        ("DATABASE_URL", database_url.to_owned()),
        ("EVENTS_TOPIC_ARN", stack.output("EventsTopicArn")),
        ("VISIBILITY_TIMEOUT", "900".to_owned()),
        ("MAX_ATTEMPTS", "3".to_owned()),
        ("WORKER_CONCURRENCY", "1".to_owned()),
        ("WORKER_TEMP_DIR", temp.display().to_string()),
        ("RECEIVE_WAIT_SECONDS", "1".to_owned()),
        ("RETRY_BACKOFF", "1".to_owned()),
        ("RENDITION_PRESET", "veryfast".to_owned()),
        ("RENDITION_THREADS", "1".to_owned()),
        ("METRICS_ADDR", "off".to_owned()),
        ("LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let child = Command::new(VIDWORKER)
        .arg("run")
        .env_clear()
        .envs(stack.env("worker"))
        .envs(settings.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("vidworker starts");
    BinaryWorker { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_holding_only_the_instance_role_processes_a_video_of_the_stack() {
    let pg = Postgres::start().expect("PostgreSQL starts (run scripts/install-deps.sh)");
    let database_url = pg.create_database(DATABASE).expect("database");
    let stack = Deployed::start(&database_url);
    let database = ("DATABASE_URL".to_owned(), database_url.clone());
    // Migrations are a release step with a DDL user (README "Releasing").
    vidworker(&["migrate"], std::slice::from_ref(&database));
    // The platform's API, holding only the stack's ProducerPolicy: the
    // original under originals/, a pending row, a message.
    let upload = fixture("gray-720p.mp4");
    let producer = [stack.env("producer"), vec![database]].concat();
    let submitted = vidworker(&["submit", &upload.display().to_string()], &producer);
    let id = submitted
        .split_whitespace()
        .next()
        .expect("submit prints the id")
        .to_owned();

    let dir = tempfile::tempdir().expect("work dir");
    let worker = spawn_worker(&stack, &database_url, dir.path());
    let sql = format!(
        "SELECT status, processed_key, processed_bytes, event_published_at IS NOT NULL FROM videos WHERE id = '{id}'"
    );
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        testkit::wait::until_blocking(LIMIT, &format!("video {id} processed or failed"), || {
            let row = pg.psql(DATABASE, &sql).expect("psql reads the row");
            (row.starts_with("processed|") || row.starts_with("failed|")).then_some(row)
        })
    }));
    let row = settled.unwrap_or_else(|_| panic!("video {id} not settled; worker log:\n{}", worker.log_text()));
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(fields[0], "processed", "row {row}; worker log:\n{}", worker.log_text());
    let (key, bytes) = (fields[1], fields[2].parse::<i64>().expect("processed_bytes"));
    assert!(key.starts_with("processed/"), "{key}");

    // The rendition is in the stack's bucket, as the row says.
    let admin = stack.admin().await;
    let bucket = stack.output("BucketName");
    let head = admin.s3.head_object().bucket(&bucket).key(key).send().await;
    let head = head.unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e:?}"));
    assert_eq!(head.content_length(), Some(bytes), "s3://{bucket}/{key}");
    // The message is gone from the job queue (deleted once the row was
    // recorded), and nothing went to the dead-letter queue.
    for output in ["JobQueueUrl", "DeadLetterQueueUrl"] {
        wait_empty(&admin, &stack.output(output), output).await;
    }
    report_worker_log(&stack, &worker, fields[3] == "t");
}

/// Waits until the queue at `url` holds no message, visible or in flight.
async fn wait_empty(admin: &Clients, url: &str, what: &str) {
    testkit::wait::until(LIMIT, &format!("{what} empty"), || async {
        let all = aws_sdk_sqs::types::QueueAttributeName::All;
        let attrs = admin
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(all)
            .send()
            .await;
        let attrs = attrs.expect("queue attributes").attributes.unwrap_or_default();
        let count = |name: &str| attrs.iter().find(|(k, _)| k.as_str() == name).map(|(_, v)| v.clone());
        let counts = [
            count("ApproximateNumberOfMessages"),
            count("ApproximateNumberOfMessagesNotVisible"),
        ];
        (counts == [Some("0".to_owned()), Some("0".to_owned())]).then_some(())
    })
    .await;
}

/// The worker's warnings and errors: only what moto cannot authorise
/// (the completion event, which moto checks against Resource "*"), never
/// something the role lacks on AWS.
fn report_worker_log(stack: &Deployed, worker: &BinaryWorker, event_published: bool) {
    let log = worker.log_text();
    let level = |l: &&str| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#);
    let complaints: Vec<&str> = log.lines().filter(level).collect();
    let star = stack.json["resource_star"].as_array().expect("resource_star");
    let sns = star
        .iter()
        .find(|c| c["action"] == "sns:Publish")
        .expect("sns:Publish checked");
    assert_eq!(
        sns["policy_on_the_resource"], true,
        "the role's policy does not grant sns:Publish on the topic"
    );
    let topic = stack.output("EventsTopicArn");
    for line in &complaints {
        let about_the_event = line.contains("cannot publish the completion event") && line.contains(&topic);
        assert!(
            about_the_event,
            "the worker complained of something else than the event:\n{line}"
        );
    }
    let mut text = format!(
        "\n== the worker with the WorkerRole's credentials ==\n  video processed, rendition in S3, message deleted\n  \
         completion event published: {event_published}{}\n  its warnings and errors ({}):\n",
        if event_published {
            String::new()
        } else {
            format!(
                " (NOT SHOWN: moto answered sns:Publish with {}: {}; the role's policy grants it on the topic)",
                sns["live_with_worker_credentials"].as_str().unwrap_or("?"),
                sns["why"].as_str().unwrap_or("?")
            )
        },
        complaints.len()
    );
    for line in &complaints {
        let _ = writeln!(text, "    {}", line.chars().take(400).collect::<String>());
    }
    for w in stack.json["workarounds"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let _ = writeln!(text, "  with moto's workaround: {}", w.as_str().unwrap_or_default());
    }
    say(&text);
}

/// An S3 error's code (`AccessDenied`), or the whole error when it has none.
fn code<E: ProvideErrorMetadata + std::fmt::Debug>(e: E) -> String {
    e.code().map_or_else(|| format!("{e:?}"), str::to_owned)
}

/// `key` written as `s3` (its error code when refused).
async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    let body = ByteStream::from_static(b"the upload");
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await
        .map(drop)
        .map_err(code)
}

/// `key` deleted as `s3`.
async fn delete(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map(drop)
        .map_err(code)
}

/// `key`'s bytes, read as `s3`.
async fn read(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let got = s3.get_object().bucket(bucket).key(key).send().await.map_err(code)?;
    Ok(got.body.collect().await.map_err(|e| e.to_string())?.to_vec())
}

/// The keys under `prefix` (the whole bucket when `None`), listed as `s3`.
async fn list(s3: &aws_sdk_s3::Client, bucket: &str, prefix: Option<&str>) -> Result<Vec<String>, String> {
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .set_prefix(prefix.map(str::to_owned))
        .send()
        .await;
    let keys = listed
        .map_err(code)?
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_role_writes_processed_but_cannot_change_an_original() {
    let stack = Deployed::start("postgres://postgres@127.0.0.1:5432/unused");
    let bucket = stack.output("BucketName");
    let (original, rendition) = ("originals/upload.mp4", "processed/upload/rendition.mp4");
    let denied = Err("AccessDenied".to_owned());
    let admin = stack.admin().await.s3;
    put(&admin, &bucket, original)
        .await
        .expect("the admin uploads an original");
    let role = stack.s3("worker");

    // Refused: overwriting or deleting an upload, which stays as it was.
    assert_eq!(
        put(&role, &bucket, original).await,
        denied,
        "the role's PutObject on originals/"
    );
    assert_eq!(
        delete(&role, &bucket, original).await,
        denied,
        "the role's DeleteObject on originals/"
    );
    assert_eq!(read(&admin, &bucket, original).await.as_deref(), Ok(&b"the upload"[..]));

    // Allowed: reading an upload; writing, listing and deleting renditions.
    assert_eq!(read(&role, &bucket, original).await.as_deref(), Ok(&b"the upload"[..]));
    put(&role, &bucket, rendition)
        .await
        .expect("the role writes processed/");
    assert_eq!(
        read(&admin, &bucket, rendition).await.as_deref(),
        Ok(&b"the upload"[..])
    );
    assert_eq!(
        list(&role, &bucket, Some("processed/")).await,
        Ok(vec![rendition.to_owned()])
    );
    delete(&role, &bucket, rendition)
        .await
        .expect("the role deletes a superseded rendition");

    // The platform's role may upload originals, not write renditions.
    let producer = stack.s3("producer");
    put(&producer, &bucket, "originals/another.mp4")
        .await
        .expect("the producer uploads");
    assert_eq!(
        put(&producer, &bucket, rendition).await,
        denied,
        "the producer's PutObject on processed/"
    );

    let mut notes = String::from(
        "\n== least privilege of the WorkerRole, moto enforcing IAM ==\n  refused (AccessDenied): the role's \
         PutObject and DeleteObject on originals/; the producer's PutObject on processed/\n  allowed: the role's \
         GetObject on originals/, PutObject, ListObjectsV2 (prefix processed/) and DeleteObject on processed/\n",
    );
    // Listing outside the two prefixes: AWS refuses it (the Bucket
    // statement's s3:prefix condition); moto does not evaluate StringLike.
    match list(&role, &bucket, None).await {
        Err(e) => assert_eq!(e, "AccessDenied"),
        Ok(_) => notes.push_str(
            "  NOT SHOWN: the s3:prefix condition. moto evaluates no StringLike condition (only StringEquals, in trust \
             policies: moto/iam/policy_conditions.py), so the role listed the whole bucket, which AWS refuses\n",
        ),
    }
    resource_star_notes(&stack, &mut notes);
    say(&notes);
}

/// The worker's calls moto authorises against Resource "*": refused here
/// whatever the policy says. The policy itself must grant them on the
/// resource AWS names (moto's own evaluator, given the real ARN).
fn resource_star_notes(stack: &Deployed, notes: &mut String) {
    for check in stack.json["resource_star"].as_array().expect("resource_star") {
        let text = |k: &str| check[k].as_str().unwrap_or_default().to_owned();
        assert_eq!(
            check["policy_on_the_resource"],
            true,
            "the WorkerRole's policy does not grant {} on {}: a policy bug, not moto's",
            text("action"),
            text("resource")
        );
        let _ = writeln!(
            notes,
            "  NOT SHOWN: {} on {}: moto authorises it against Resource \"*\" ({}) and answered {}; the role's \
             policy grants it on that ARN (moto's own evaluator){}",
            text("action"),
            text("resource"),
            text("why"),
            text("live_with_worker_credentials"),
            if check["shimmed"] == true {
                "; granted on \"*\" by the moto-shim policy afterwards"
            } else {
                ""
            }
        );
    }
}
