//! A shutdown fits the stop budget systemd gives it (`TimeoutStopSec`):
//! the receive in flight is cancelled at once, and a job stopped at the end
//! of the grace period hands its message back first, then its row with a
//! short deadline, even while PostgreSQL does not answer.

use std::time::{Duration, Instant};

use testkit::{TcpMode, TcpProxy};
use worker::db::Status;

use crate::binary::*;
use crate::support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_long_polling_exits_at_once() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let mut worker = stack.spawn_binary("idle", &[("RECEIVE_WAIT_SECONDS", "20")]);
    // Ready, then inside a 20 s long poll of an empty queue.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let signalled = Instant::now();
    worker.signal(Signal::TERM);
    let code = tokio::task::block_in_place(|| worker.wait(Duration::from_secs(30)));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", worker.log_text());
    assert!(
        took < Duration::from_secs(3),
        "waited {took:?} for the long poll after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_database_blackhole_hands_back_within_the_grace_period_and_a_little() {
    let stack = Stack::start(Duration::from_secs(30)).await;
    let id = stack.submit(SLOW).await;
    let db = TcpProxy::start(stack.pg.port()).expect("TCP proxy");
    let url = db.url_for(&stack.database_url);
    let mut worker = stack.spawn_binary("blackhole", &[("DATABASE_URL", url.as_str()), ("SHUTDOWN_GRACE", "6")]);
    stack.wait_status(id, Status::Processing, LIMIT).await;
    db.set_mode(TcpMode::Blackhole).expect("blackhole");
    let signalled = Instant::now();
    worker.signal(Signal::TERM);
    // The grace period (6 s) ends, the job is cancelled; its message must
    // be visible again at once, whatever the database does.
    let mut handed_back = None;
    while signalled.elapsed() < Duration::from_secs(20) {
        let (visible, _, _) = stack.depth_of(&stack.queue_url).await;
        if visible == 1 {
            handed_back = Some(signalled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let handed_back = handed_back.unwrap_or_else(|| panic!("the message was not handed back:\n{}", worker.log_text()));
    let code = tokio::task::block_in_place(|| worker.wait(Duration::from_secs(60)));
    let exited = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", worker.log_text());
    assert!(
        handed_back < Duration::from_secs(6 + 3),
        "message handed back {handed_back:?} after SIGTERM"
    );
    assert!(
        exited < Duration::from_secs(6 + 8),
        "exited {exited:?} after SIGTERM (grace 6 s): past the stop budget"
    );
    // The database back, the video is made by the next worker.
    db.set_mode(TcpMode::Pass).expect("pass");
    let next = stack.spawn_worker(stack.settings(1)).await;
    let rows = stack.wait_settled(&[id], LIMIT).await;
    next.stop().await;
    assert_eq!(rows[0].status, Status::Processed, "{:?}", rows[0]);
    stack.check_invariants(&[id]).await;
}
