//! Waiting for a condition in tests: poll until a value shows up or a deadline passes.

use std::time::Duration;

/// How often [`eventually`] polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, and returns that value; panics with
/// "timed out after {timeout:?} waiting for {what}" once `timeout` has passed.
///
/// `f` is an async closure (`async || ...`) or a closure returning a future (`|| async { ... }`). It is called
/// once more after the deadline passed only if the previous call started before it. Uses tokio's clock, so it
/// works with paused time too.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn example(nodes: kube::Api<k8s_openapi::api::core::v1::Node>) {
/// let node = test_support::eventually(Duration::from_secs(10), "node-a to exist", async || {
///     nodes.get_opt("node-a").await.ok().flatten()
/// })
/// .await;
/// # }
/// ```
pub async fn eventually<T>(timeout: Duration, what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_every(timeout, POLL_INTERVAL, what, f).await
}

/// [`eventually`], polling every `interval` instead of every [`POLL_INTERVAL`] (e.g. when a test measures how
/// long something took and the polling must not add to it).
pub async fn eventually_every<T>(
    timeout: Duration,
    interval: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_first_some() {
        let mut calls = 0;
        let v = eventually(Duration::from_secs(1), "the third call", async || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn accepts_closures_returning_futures() {
        let v = eventually(Duration::from_secs(1), "a value", || async { Some(7) }).await;
        assert_eq!(v, 7);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for nothing")]
    async fn panics_at_the_deadline_naming_what() {
        eventually(Duration::from_secs(1), "nothing", async || None::<()>).await;
    }

    #[tokio::test(start_paused = true)]
    async fn polls_at_the_interval() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        eventually_every(
            Duration::from_secs(1),
            Duration::from_millis(10),
            "the fifth call",
            async || {
                calls += 1;
                (calls == 5).then_some(())
            },
        )
        .await;
        assert_eq!(start.elapsed(), Duration::from_millis(40));
    }
}
