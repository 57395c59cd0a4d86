//! Waiting for something to become true, the one way every test does it:
//! poll every 200 ms, and panic with what was awaited once the limit has
//! passed (a test that waits forever tells nobody anything).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(200);

/// Polls `check` until it returns something; panics after `limit`, naming
/// `what` was awaited.
pub async fn until<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] for a blocking check, on the calling thread.
pub fn until_blocking<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for: {what}");
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_comes_true_is_returned_and_one_that_never_does_panics() {
        let mut n = 0;
        let got = until_blocking(Duration::from_secs(5), "the third poll", || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, 3);
        let never = std::panic::catch_unwind(|| until_blocking(Duration::ZERO, "never", || None::<()>));
        let message = never.expect_err("panics").downcast::<String>().expect("a message");
        assert!(message.contains("waiting for: never"), "{message}");
    }
}
