//! Waiting. In production one second is one second; the local world runs a faster clock
//! (`GPU_RUNNER_CLOCK_SCALE`), as it does for the instance's timers, so that a ten-minute startup
//! timeout can be tested in seconds.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::env::Env;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    scale: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self { scale: 1.0 }
    }
}

impl Clock {
    pub fn from_env(env: &Env) -> Self {
        let scale = env
            .non_empty("GPU_RUNNER_CLOCK_SCALE")
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 1.0)
            .unwrap_or(1.0);
        Self { scale }
    }

    /// How long `d` of the user's time lasts on this clock.
    pub fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }

    /// How much of the user's time `d` on this clock stands for.
    pub fn unscaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale)
    }

    pub async fn sleep(&self, d: Duration) {
        tokio::time::sleep(self.scaled(d)).await;
    }

    /// The user's time between two wall-clock instants (AWS's and the API server's times are
    /// wall-clock ones); none when `to` is not after `from`.
    pub fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        self.unscaled((to - from).to_std().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sane_speed_up_is_taken() {
        let env = |v: &str| -> Env { [("GPU_RUNNER_CLOCK_SCALE", v)].into_iter().collect() };
        let minute = Duration::from_secs(60);
        assert_eq!(
            Clock::from_env(&env("60")).scaled(minute),
            Duration::from_secs(1)
        );
        let from = DateTime::UNIX_EPOCH;
        let to = from + chrono::TimeDelta::seconds(3);
        assert_eq!(
            Clock::from_env(&env("60")).between(from, to),
            Duration::from_secs(180)
        );
        assert_eq!(Clock::default().between(to, from), Duration::ZERO);
        for bad in ["0", "0.5", "-3", "inf", "NaN", "fast"] {
            assert_eq!(Clock::from_env(&env(bad)).scaled(minute), minute, "{bad}");
        }
    }
}
