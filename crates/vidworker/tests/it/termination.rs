//! EC2 termination notices, scale-in protection and rollout signals,
//! without AWS: an IMDSv2 stand-in (with the token exchange) and an Auto
//! Scaling and CloudFormation stand-in that records their calls
//! (`tests/it/ec2_stub.py`), reached through
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT` and `AWS_ENDPOINT_URL_<SERVICE>`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::binary::*;
use crate::support::*;
use worker::db::Status;

const LIMIT: Duration = Duration::from_secs(120);

/// The stand-in for the instance's metadata and the Auto Scaling API.
struct Ec2Stub {
    child: Child,
    port: u16,
}

impl Ec2Stub {
    fn start() -> Ec2Stub {
        let port = testkit::free_port().expect("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/ec2_stub.py");
        let child = Command::new(venv_python())
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the stub starts");
        let stub = Ec2Stub { child, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "the stub does not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        stub
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn post(&self, path: &str, body: &str) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(
            s,
            "POST {path} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("read");
        assert!(answer.contains(" 200 "), "{answer}");
    }

    /// The recorded Auto Scaling calls.
    fn calls(&self) -> Vec<serde_json::Value> {
        let (status, body) = http_get(self.port, "/__stub/calls");
        assert_eq!(status, 200);
        body.lines().map(|l| serde_json::from_str(l).expect("json")).collect()
    }

    /// The recorded calls of one Auto Scaling action.
    fn calls_of(&self, action: &str) -> Vec<serde_json::Value> {
        self.calls().into_iter().filter(|c| c["Action"] == action).collect()
    }

    /// `ProtectedFromScaleIn` of each SetInstanceProtection call so far,
    /// checking each names this instance and group.
    fn protection(&self) -> Vec<bool> {
        let calls = self.calls_of("SetInstanceProtection");
        for call in &calls {
            assert_eq!(call["AutoScalingGroupName"], "vidworker-workers", "{call}");
            assert_eq!(call["InstanceIds.member.1"], "i-0123456789abcdef0", "{call}");
        }
        calls.iter().map(|c| c["ProtectedFromScaleIn"] == "true").collect()
    }

    /// Waits until the protection calls are `want`.
    fn wait_protection(&self, want: &[bool], worker: &BinaryWorker) {
        let since = Instant::now();
        while self.protection() != want {
            assert!(
                since.elapsed() < Duration::from_secs(30),
                "protection calls {:?}, waiting for {want:?}:\n{}",
                self.protection(),
                worker.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that points the worker at this stub.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_EC2_METADATA_DISABLED", "false".to_owned()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", self.endpoint()),
            ("AWS_ENDPOINT_URL_AUTO_SCALING", self.endpoint()),
            ("AWS_ENDPOINT_URL_CLOUDFORMATION", self.endpoint()),
            ("AUTOSCALING_GROUP_NAME", "vidworker-workers".to_owned()),
            ("LIFECYCLE_HOOK_NAME", "vidworker-drain".to_owned()),
            ("TERMINATION_POLL", "1".to_owned()),
        ]
    }
}

impl Drop for Ec2Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for the notice in the worker's log; returns how long it took.
fn wait_notice(worker: &BinaryWorker, since: Instant) -> Duration {
    while worker.events("termination_notice") == 0 {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no notice logged:\n{}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    since.elapsed()
}

fn assert_one_completion(stub: &Ec2Stub) {
    let calls = stub.calls_of("CompleteLifecycleAction");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["AutoScalingGroupName"], "vidworker-workers");
    assert_eq!(call["LifecycleHookName"], "vidworker-drain");
    assert_eq!(call["InstanceId"], "i-0123456789abcdef0");
    assert_eq!(call["LifecycleActionResult"], "CONTINUE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_in_drains_the_running_job_completes_the_lifecycle_action_and_exits() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let stub = Ec2Stub::start();
    let id = stack.submit("long-40s.mp4").await;
    let env = stub.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut worker = stack.spawn_binary("scale-in", &env);
    stack.wait_status(id, Status::Processing, LIMIT).await;

    stub.post("/__stub/lifecycle", "Terminated");
    let took = tokio::task::block_in_place(|| wait_notice(&worker, Instant::now()));
    assert!(took < Duration::from_secs(10), "noticed after {took:?}");
    // No new job is taken after the notice.
    let later = stack.submit("gray-720p.mp4").await;
    let code = tokio::task::block_in_place(|| worker.wait(LIMIT));
    assert_eq!(code, Some(0), "exits 0 with no signal:\n{}", worker.log_text());
    assert_eq!(
        stack.row(id).await.status,
        Status::Processed,
        "the running job finished in time"
    );
    assert_eq!(
        stack.row(later).await.status,
        Status::Pending,
        "no job taken after the notice"
    );
    let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
    assert_eq!(
        (visible, in_flight),
        (1, 0),
        "its message is waiting for another worker"
    );
    assert_one_completion(&stub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spot_notice_hands_back_what_cannot_finish_in_time() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let stub = Ec2Stub::start();
    let id = stack.submit("long-40s.mp4").await;
    let env = stub.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A slow encode: the job must not be able to finish before the
    // reclaim, however soon after its start the notice is seen.
    env.push(("RENDITION_PRESET", "veryslow"));
    let mut worker = stack.spawn_binary("spot", &env);
    stack.wait_status(id, Status::Processing, LIMIT).await;

    // Reclaimed in 5 s: too soon to finish, so the job is handed back.
    let at = time::OffsetDateTime::from(SystemTime::now() + Duration::from_secs(5))
        .replace_nanosecond(0)
        .expect("whole seconds");
    stub.post(
        "/__stub/spot",
        &format!(
            r#"{{"action": "terminate", "time": "{}"}}"#,
            at.format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        ),
    );
    let took = tokio::task::block_in_place(|| wait_notice(&worker, Instant::now()));
    assert!(took < Duration::from_secs(10), "noticed after {took:?}");
    let code = tokio::task::block_in_place(|| worker.wait(Duration::from_secs(30)));
    assert_eq!(code, Some(0), "exits 0 with no signal:\n{}", worker.log_text());
    let row = stack.row(id).await;
    assert_eq!(
        (row.status, row.interruptions),
        (Status::Pending, 1),
        "handed back: {row:?}"
    );
    let (visible, in_flight, _) = stack.depth_of(&stack.queue_url).await;
    assert_eq!((visible, in_flight), (1, 0), "visible again at once");
    assert_one_completion(&stub);
}

/// Scale-in takes idle instances: a worker protects its instance while a
/// job runs (and a short while after), lifts the protection when idle,
/// and lifts what a crashed predecessor left when it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_is_protected_from_scale_in_while_a_job_runs() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let stub = Ec2Stub::start();
    let env = stub.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SCALE_IN_PROTECTION_IDLE", "2"));
    let mut worker = stack.spawn_binary("protection", &env);
    tokio::task::block_in_place(|| stub.wait_protection(&[false], &worker));

    let id = stack.submit("long-40s.mp4").await;
    stack.wait_status(id, Status::Processing, LIMIT).await;
    tokio::task::block_in_place(|| stub.wait_protection(&[false, true], &worker));
    assert_eq!(
        stack.row(id).await.status,
        Status::Processing,
        "protected while the job runs"
    );
    stack.wait_status(id, Status::Processed, LIMIT).await;
    tokio::task::block_in_place(|| stub.wait_protection(&[false, true, false], &worker));

    worker.signal(Signal::TERM);
    let code = tokio::task::block_in_place(|| worker.wait(LIMIT));
    assert_eq!(code, Some(0), "{}", worker.log_text());
    assert_eq!(
        stub.protection(),
        [false, true, false],
        "nothing more at exit: already lifted"
    );
    assert!(
        stub.calls_of("CompleteLifecycleAction").is_empty(),
        "no notice, no completion"
    );
}

/// A release is signalled to CloudFormation only once the worker answers
/// /readyz; a worker that never gets ready is a FAILURE signal and a
/// non-zero exit; a failed service marks the instance unhealthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_signals_cloudformation_what_its_worker_says() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let stub = Ec2Stub::start();
    let env = stub.env();
    let port = testkit::free_port().expect("port").to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("METRICS_ADDR", &addr));
    env.push(("CFN_STACK_NAME", "vidworker-prod"));
    let signal = &["signal", "--wait", "5"];

    // Nothing listens: FAILURE after the wait.
    let (code, _, err) = stack.command(signal, &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("signalled FAILURE to vidworker-prod/WorkerGroup: not ready after 5 s"),
        "{err}"
    );

    let mut worker = stack.spawn_binary("signal", &env);
    let (code, _, err) = stack.command(&["signal", "--wait", "60"], &env);
    assert_eq!(code, Some(0), "{err}\n{}", worker.log_text());
    assert!(
        err.contains("signalled SUCCESS to vidworker-prod/WorkerGroup: vidworker "),
        "{err}"
    );
    worker.signal(Signal::TERM);
    tokio::task::block_in_place(|| worker.wait(LIMIT));

    let (code, _, err) = stack.command(&["mark-unhealthy"], &env);
    assert_eq!(code, Some(0), "{err}");

    let signals = stub.calls_of("SignalResource");
    let statuses: Vec<&str> = signals
        .iter()
        .map(|c| c["Status"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(statuses, ["FAILURE", "SUCCESS"]);
    for call in &signals {
        assert_eq!(call["StackName"], "vidworker-prod", "{call}");
        assert_eq!(call["LogicalResourceId"], "WorkerGroup", "{call}");
        assert_eq!(call["UniqueId"], "i-0123456789abcdef0", "{call}");
    }
    let health = stub.calls_of("SetInstanceHealth");
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0]["InstanceId"], "i-0123456789abcdef0");
    assert_eq!(health[0]["HealthStatus"], "Unhealthy");
    assert_eq!(health[0]["ShouldRespectGracePeriod"], "false");
}
