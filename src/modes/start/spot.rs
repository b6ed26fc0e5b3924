//! Spot's history, read before a start launches spot: an earlier attempt of this run whose spot
//! instance AWS took back (a re-run after an interruption), or a repository whose spot instances
//! were taken back `spot-breaker-interruptions` times within `spot-breaker-window-minutes`
//! (for `spot-breaker-minutes` after). Either way start launches on-demand where `market-type`
//! allows it, and says why; EC2 lists a terminated instance for about an hour, which covers
//! both.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::actions::{Actions, Annotation};
use crate::clock::Clock;
use crate::inputs::SpotBreaker;
use crate::machine::{Machine, Owner, Provider};
use crate::modes::failure::Error;
use crate::plan::{LaunchPlan, Market, tag};

/// Why this start should not launch spot, if it should not: the machines are the repository's,
/// as EC2 lists them (terminated ones among them). The window and the hold are the user's
/// minutes: EC2's times are wall-clock ones, and `clock` may run faster.
pub fn why_on_demand(
    machines: &[Machine],
    run_id: u64,
    attempt: u32,
    breaker: SpotBreaker,
    now: DateTime<Utc>,
    clock: Clock,
) -> Option<String> {
    let reclaimed: Vec<&Machine> = machines.iter().filter(|m| m.reclaimed()).collect();
    let earlier = reclaimed.iter().find(|m| {
        m.tags.get(tag::RUN_ID) == Some(&run_id.to_string())
            && m.tags
                .get(tag::RUN_ATTEMPT)
                .and_then(|a| a.parse::<u32>().ok())
                .is_some_and(|a| a < attempt)
    });
    if let Some(m) = earlier {
        return Some(format!(
            "AWS took back {}, the spot instance of an earlier attempt of this run",
            m.id
        ));
    }
    if breaker.interruptions == 0 {
        return None;
    }
    let minutes = |m: u32| Duration::from_secs(u64::from(m) * 60);
    let (window, hold) = (
        minutes(breaker.window_minutes),
        minutes(breaker.hold_minutes),
    );
    let mut times: Vec<DateTime<Utc>> = reclaimed.iter().filter_map(|m| m.state_since).collect();
    times.sort();
    // The breaker trips at the reclaim that makes `interruptions` within the window, and holds
    // from then on.
    let tripped = times.iter().enumerate().rev().find(|(i, t)| {
        let within = times[..=*i]
            .iter()
            .filter(|u| clock.between(**u, **t) <= window)
            .count();
        within >= breaker.interruptions as usize && clock.between(**t, now) < hold
    });
    let until =
        |t: DateTime<Utc>| t + TimeDelta::from_std(clock.scaled(hold)).unwrap_or(TimeDelta::zero());
    tripped.map(|(_, t)| {
        format!(
            "AWS took back {} of this repository's spot instances within {} minutes, the last at \
             {} (spot-breaker-interruptions, spot-breaker-window-minutes); on-demand until {}",
            breaker.interruptions,
            breaker.window_minutes,
            t.format("%H:%M UTC"),
            until(*t).format("%H:%M UTC")
        )
    })
}

/// The plan this start launches by: without its spot candidates when spot's history says so
/// and `market-type` leaves on-demand ones, else as planned (with a warning when only spot is
/// allowed).
pub(super) async fn plan_by_history(
    plan: &LaunchPlan,
    provider: &impl Provider,
    attempt: u32,
    actions: &Actions,
    now: DateTime<Utc>,
    clock: Clock,
) -> Result<Option<LaunchPlan>, Error> {
    if !plan.candidates.iter().any(|c| c.market == Market::Spot) {
        return Ok(None);
    }
    let machines = provider
        .find(&[], Some(Owner::Repository(&plan.binding.repository)))
        .await?;
    let Some(why) = why_on_demand(
        &machines,
        plan.binding.run_id,
        attempt,
        plan.spot_breaker,
        now,
        clock,
    ) else {
        return Ok(None);
    };
    if !plan.candidates.iter().any(|c| c.market == Market::OnDemand) {
        actions.annotate(
            &Annotation::warning(format!(
                "{why}. market-type: spot allows no on-demand, so start launches spot again; \
                 market-type: spot-then-on-demand would launch on-demand now."
            ))
            .title("gpu-runner spot"),
        );
        return Ok(None);
    }
    actions.info(&format!("Launching on-demand, not spot: {why}."));
    let mut on_demand = plan.clone();
    on_demand
        .candidates
        .retain(|c| c.market == Market::OnDemand);
    Ok(Some(on_demand))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{SPOT_RECLAIMED, State};

    fn machine(id: &str, run: u64, attempt: u32, reclaimed_at: Option<&str>) -> Machine {
        Machine {
            id: id.to_owned(),
            instance_type: "g5.xlarge".to_owned(),
            availability_zone: None,
            market: Market::Spot,
            state: State::Terminated,
            state_reason: reclaimed_at.map(|_| SPOT_RECLAIMED.to_owned()),
            state_since: reclaimed_at.map(|t| t.parse().unwrap()),
            launched_at: None,
            tags: [
                (tag::RUN_ID.to_owned(), run.to_string()),
                (tag::RUN_ATTEMPT.to_owned(), attempt.to_string()),
            ]
            .into_iter()
            .collect(),
        }
    }

    /// On the clock production runs on.
    fn real(
        machines: &[Machine],
        run_id: u64,
        attempt: u32,
        breaker: SpotBreaker,
        now: DateTime<Utc>,
    ) -> Option<String> {
        why_on_demand(machines, run_id, attempt, breaker, now, Clock::default())
    }

    const BREAKER: SpotBreaker = SpotBreaker {
        interruptions: 2,
        window_minutes: 15,
        hold_minutes: 30,
    };

    #[test]
    fn a_re_run_after_a_reclaim_goes_on_demand_and_a_first_attempt_does_not() {
        let now: DateTime<Utc> = "2026-12-05T12:00:00Z".parse().unwrap();
        let lost = [machine("i-1", 7, 1, Some("2026-12-05T11:50:00Z"))];
        assert!(real(&lost, 7, 2, BREAKER, now).unwrap().contains("i-1"));
        assert_eq!(real(&lost, 7, 1, BREAKER, now), None);
        assert_eq!(real(&lost, 8, 2, BREAKER, now), None);
        let ended_on_its_own = [machine("i-2", 7, 1, None)];
        assert_eq!(real(&ended_on_its_own, 7, 2, BREAKER, now), None);
    }

    #[test]
    fn the_window_and_the_hold_are_the_users_minutes_on_a_faster_clock() {
        let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
        let env: crate::env::Env = [("GPU_RUNNER_CLOCK_SCALE", "60")].into_iter().collect();
        let fast = Clock::from_env(&env);
        // 20 s apart on the wall: 20 minutes of the user's, more than the window.
        let apart = [
            machine("i-1", 1, 1, Some("2026-12-05T11:50:00Z")),
            machine("i-2", 2, 1, Some("2026-12-05T11:50:20Z")),
        ];
        assert_eq!(
            why_on_demand(&apart, 9, 1, BREAKER, at("2026-12-05T11:50:21Z"), fast),
            None
        );
        let close = [
            machine("i-1", 1, 1, Some("2026-12-05T11:50:00Z")),
            machine("i-2", 2, 1, Some("2026-12-05T11:50:10Z")),
        ];
        let why = why_on_demand(&close, 9, 1, BREAKER, at("2026-12-05T11:50:39Z"), fast).unwrap();
        assert!(why.contains("on-demand until 11:50 UTC"), "{why}");
        // The 30 minutes' hold is 30 s on the wall.
        assert_eq!(
            why_on_demand(&close, 9, 1, BREAKER, at("2026-12-05T11:50:41Z"), fast),
            None
        );
    }

    #[test]
    fn two_reclaims_within_the_window_hold_the_repository_on_demand_for_a_while() {
        let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
        let two = [
            machine("i-1", 1, 1, Some("2026-12-05T11:40:00Z")),
            machine("i-2", 2, 1, Some("2026-12-05T11:50:00Z")),
        ];
        let why = real(&two, 9, 1, BREAKER, at("2026-12-05T12:00:00Z")).unwrap();
        assert!(why.contains("on-demand until 12:20 UTC"), "{why}");
        // 30 minutes after the second, spot again.
        assert_eq!(real(&two, 9, 1, BREAKER, at("2026-12-05T12:21:00Z")), None);
        // Two reclaims further apart than the window do not trip it.
        let apart = [
            machine("i-1", 1, 1, Some("2026-12-05T11:20:00Z")),
            machine("i-2", 2, 1, Some("2026-12-05T11:50:00Z")),
        ];
        assert_eq!(
            real(&apart, 9, 1, BREAKER, at("2026-12-05T12:00:00Z")),
            None
        );
        let off = SpotBreaker {
            interruptions: 0,
            ..BREAKER
        };
        assert_eq!(real(&two, 9, 1, off, at("2026-12-05T12:00:00Z")), None);
    }
}
