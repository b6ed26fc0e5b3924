//! Waiting for launched runners to come online: one runner list and one `DescribeInstances` per
//! look, however many runners a start launched, at an interval chosen from GitHub's budget.

use std::time::Duration;

/// How often start looks, by how long it has been looking: often while a boot usually ends
/// (a GPU image boots in one to two minutes), less often after. Each look costs one GitHub
/// request (a page of up to 100 runners) and one `DescribeInstances`, whatever `count` is: at
/// the fastest, 120 of GitHub's 900 points a minute (its secondary limit) and, for a two-minute
/// boot, 240 of a token's 5,000 requests an hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSchedule {
    /// `(until, every)`: look every `every` until `until` has passed, then the next step.
    pub steps: Vec<(Duration, Duration)>,
    /// After the last step.
    pub then: Duration,
}

impl Default for PollSchedule {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            steps: vec![
                (s(120), Duration::from_millis(500)),
                (s(300), s(1)),
                (s(600), s(2)),
            ],
            then: s(5),
        }
    }
}

impl PollSchedule {
    /// The wait before the next look, `elapsed` after the first.
    pub fn interval(&self, elapsed: Duration) -> Duration {
        self.steps
            .iter()
            .find(|(until, _)| elapsed < *until)
            .map(|(_, every)| *every)
            .unwrap_or(self.then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PollSchedule {
        /// How many looks the schedule makes in `total`.
        pub fn looks_within(&self, total: Duration) -> u64 {
            let mut elapsed = Duration::ZERO;
            let mut looks = 0;
            while elapsed <= total {
                looks += 1;
                elapsed += self.interval(elapsed);
            }
            looks
        }
    }

    #[test]
    fn looks_often_while_boots_end_and_less_after() {
        let p = PollSchedule::default();
        let s = Duration::from_secs;
        assert_eq!(p.interval(s(0)), Duration::from_millis(500));
        assert_eq!(p.interval(s(119)), Duration::from_millis(500));
        assert_eq!(p.interval(s(120)), s(1));
        assert_eq!(p.interval(s(599)), s(2));
        assert_eq!(p.interval(s(3600)), s(5));
    }

    #[test]
    fn a_two_minute_boot_stays_far_inside_githubs_limits() {
        let p = PollSchedule::default();
        let looks = p.looks_within(Duration::from_secs(120));
        // The README states this figure.
        assert_eq!(looks, 241);
        // One GET each: at most 120 points in any minute, of GitHub's 900.
        let first_minute = p.looks_within(Duration::from_secs(60));
        assert!(first_minute <= 121, "{first_minute}");
        // A whole startup-timeout-minutes of 120 stays under a token's 5,000 an hour.
        assert!(p.looks_within(Duration::from_secs(7200)) < 5000 / 2);
    }
}
