//! Retrying what a remote service says is passing, with exponential backoff and an overall
//! deadline, so that a blip does not fail a job and an outage does not hang it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// How long to keep trying, and how the waits grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub clock: Clock,
    pub first_wait: Duration,
    pub max_wait: Duration,
    /// Of the user's time, from the first attempt.
    pub deadline: Duration,
}

impl Backoff {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            first_wait: Duration::from_secs(1),
            max_wait: Duration::from_secs(16),
            deadline: Duration::from_secs(90),
        }
    }

    /// The wait before attempt `n + 1` (n counts from 1): 1, 2, 4, ... seconds, capped. A
    /// `hint` (such as GitHub's `retry-after`) is taken when it is longer.
    pub fn wait(&self, n: u32, hint: Option<Duration>) -> Duration {
        let exp = self
            .first_wait
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        exp.min(self.max_wait).max(hint.unwrap_or_default())
    }

    /// Runs `op` until it succeeds, fails with an error `retryable` refuses, or the deadline
    /// passes; `retryable` may name a wait the service asked for.
    pub async fn run<T, E, Fut>(
        &self,
        what: &str,
        retryable: impl Fn(&E) -> Option<Option<Duration>>,
        mut op: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let deadline = self.clock.scaled(self.deadline);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let Some(hint) = retryable(&error) else {
                return Err(error);
            };
            let wait = self.wait(attempt, hint);
            if started.elapsed() + self.clock.scaled(wait) > deadline {
                return Err(error);
            }
            tracing::warn!(%error, attempt, wait_s = wait.as_secs_f64(), "{what} failed; retrying");
            self.clock.sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn waits_double_up_to_the_cap_and_honour_a_longer_hint() {
        let b = Backoff::new(Clock::default());
        let secs: Vec<u64> = (1..=7).map(|n| b.wait(n, None).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(b.wait(1, Some(Duration::from_secs(60))).as_secs(), 60);
        assert_eq!(b.wait(5, Some(Duration::from_secs(3))).as_secs(), 16);
    }

    fn fast() -> Backoff {
        Backoff {
            clock: Clock::default(),
            first_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(4),
            deadline: Duration::from_millis(200),
        }
    }

    #[tokio::test]
    async fn retries_the_passing_and_stops_at_the_rest() {
        let calls = Cell::new(0);
        let out: Result<u32, String> = fast()
            .run(
                "test",
                |e: &String| (e == "503").then_some(None),
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move { if n < 3 { Err("503".to_owned()) } else { Ok(n) } }
                },
            )
            .await;
        assert_eq!(out, Ok(3));

        calls.set(0);
        let out: Result<u32, String> = fast()
            .run(
                "test",
                |e: &String| (e == "503").then_some(None),
                || {
                    calls.set(calls.get() + 1);
                    async { Err("401".to_owned()) }
                },
            )
            .await;
        assert_eq!((out, calls.get()), (Err("401".to_owned()), 1));
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let calls = Cell::new(0);
        let out: Result<(), String> = fast()
            .run(
                "test",
                |_: &String| Some(None),
                || {
                    calls.set(calls.get() + 1);
                    async { Err("503".to_owned()) }
                },
            )
            .await;
        assert!(out.is_err());
        assert!(calls.get() > 3 && calls.get() < 200, "{}", calls.get());
    }
}
