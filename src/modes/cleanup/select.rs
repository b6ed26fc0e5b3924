//! What the janitor removes, chosen without touching anything: pure, so that every rule is
//! unit-tested.

use chrono::{DateTime, TimeDelta, Utc};

use crate::github::{Job, Runner, RunnerStatus};
use crate::machine::{Lifecycle, Machine, Provider, Release, State};
use crate::plan::{LABEL_PREFIX, tag};

/// An instance younger than this is never judged by its runner: its start may be registering it.
const GRACE_MINUTES: i64 = 10;

/// What the janitor goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub now: DateTime<Utc>,
    /// `owner/repo`: the runners and runs seen are this repository's.
    pub repository: String,
    pub max_age_minutes: u32,
    pub queued_timeout_minutes: u32,
    /// A JIT config younger than this is left alone: start writes it just after the launch, and
    /// EC2 may not list the new instance yet.
    pub handoff_grace: TimeDelta,
}

/// What the janitor saw. `runners` and `jobs` are `None` when GitHub could not be read: then no
/// rule that needs them is applied.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub instances: Vec<Machine>,
    pub runners: Option<Vec<Runner>>,
    /// The jobs of the repository's queued and in-progress runs.
    pub jobs: Option<Vec<Job>>,
    /// The repository's JIT configs waiting in SSM for their instances, and when each was written.
    pub handoffs: Vec<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Let the machine go as its lifecycle asks: end an ephemeral one, pause a pooled one.
    Release {
        id: String,
        how: Release,
        reason: String,
    },
    RemoveRunner {
        id: u64,
        name: String,
        reason: String,
    },
    CancelRun {
        run_id: u64,
        reason: String,
    },
    /// Delete a JIT config that nothing will read.
    DeleteHandoff {
        name: String,
        reason: String,
    },
}

impl Action {
    /// What is done, to what and why, in the words of `provider`.
    pub(super) fn what(&self, provider: &impl Provider) -> (String, String, &str) {
        match self {
            Action::Release { id, how, reason } => (provider.verb(*how), id.clone(), reason),
            Action::RemoveRunner { name, reason, .. } => {
                ("remove runner".to_owned(), name.clone(), reason)
            }
            Action::CancelRun { run_id, reason } => {
                ("cancel workflow run".to_owned(), run_id.to_string(), reason)
            }
            Action::DeleteHandoff { name, reason } => {
                ("delete parameter".to_owned(), name.clone(), reason)
            }
        }
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The run a gpu-runner label belongs to: `gpu-runner-<run id>-<attempt>-<nonce>`.
pub(super) fn run_of(label: &str) -> Option<u64> {
    label
        .strip_prefix(LABEL_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Live gpu-runner instances (not ending), by the label they serve.
fn serves<'a>(live: &'a [&'a Machine], label: &str) -> bool {
    live.iter().any(|i| i.label() == Some(label))
}

/// What to remove, with why. Never an instance without gpu-runner's label tag, never a runner or
/// a queued job without a gpu-runner label, never anything of a job that is running. Machines go
/// as their lifecycle asks: a pooled one waiting stopped in its pool is left there, a running one
/// is paused, not ended; an attached one is the user's and never released here.
pub fn select(policy: &Policy, seen: &Seen) -> Vec<Action> {
    let now = policy.now;
    // Only this repository's: a short max-age-minutes in one repository must never end another
    // repository's jobs in the same account.
    let live: Vec<&Machine> = seen
        .instances
        .iter()
        .filter(|i| !i.state.is_ending())
        .filter(|i| i.label().is_some_and(|l| l.starts_with(LABEL_PREFIX)))
        .filter(|i| i.belongs_to(&policy.repository))
        .filter(|i| i.lifecycle() != Lifecycle::Attached)
        .collect();
    let running_on = |label: &str| {
        seen.jobs.as_ref().is_some_and(|jobs| {
            jobs.iter()
                .any(|j| j.status == "in_progress" && j.runner_name.as_deref() == Some(label))
        })
    };
    let mut actions = Vec::new();

    for i in &live {
        if i.lifecycle() == Lifecycle::Pooled && i.state.is_paused() {
            // Waiting in its pool is what it is for, unless it served its last job: its stop
            // would have ended it, so a stop that never ran leaves it to cleanup.
            if let Some(why) = i.tags.get(tag::RETIRE)
                && i.state == State::Stopped
            {
                actions.push(Action::Release {
                    id: i.id.clone(),
                    how: Release::Terminate,
                    reason: format!("retired from its pool: {why}"),
                });
            }
            continue;
        }
        let label = i.runner_name().unwrap_or_default();
        let age = i.launched_at.map(|t| now - t);
        let reason = if let Some(expires) = i.expires_at().filter(|e| *e < now) {
            format!("past its expires-at ({})", stamp(expires))
        } else if let Some(age) =
            age.filter(|a| *a > TimeDelta::minutes(i64::from(policy.max_age_minutes)))
        {
            format!(
                "older than max-age-minutes ({}): running for {} min",
                policy.max_age_minutes,
                age.num_minutes()
            )
        } else if let Some(runners) = &seen.runners
            && age.is_some_and(|a| a > TimeDelta::minutes(GRACE_MINUTES))
            && !runners.iter().any(|r| r.name == label)
            && !running_on(label)
        {
            format!("its runner {label} is gone and no job runs on it")
        } else {
            continue;
        };
        actions.push(Action::Release {
            id: i.id.clone(),
            how: i.lifecycle().release(),
            reason,
        });
    }
    // A JIT config is read once by the one instance it was written for, which deletes it; one
    // whose runner no live instance of the repository serves was never read and never will be.
    for (name, written) in &seen.handoffs {
        let runner = name.rsplit('/').next().unwrap_or_default();
        if live.iter().any(|i| i.runner_name() == Some(runner))
            || now - *written < policy.handoff_grace
        {
            continue;
        }
        actions.push(Action::DeleteHandoff {
            name: name.clone(),
            reason: format!(
                "a JIT config no live instance will read (its runner {runner} has none)"
            ),
        });
    }
    let terminating: Vec<&str> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Release { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let staying: Vec<&Machine> = live
        .iter()
        .copied()
        .filter(|i| !terminating.contains(&i.id.as_str()))
        .collect();

    let (Some(runners), Some(jobs)) = (&seen.runners, &seen.jobs) else {
        return actions;
    };
    let active_runs: Vec<u64> = jobs
        .iter()
        .filter(|j| j.status != "completed")
        .map(|j| j.run_id)
        .collect();
    for r in runners {
        let ours: Vec<&String> = r
            .labels
            .iter()
            .filter(|l| l.starts_with(LABEL_PREFIX))
            .collect();
        let Some(run) = ours.iter().find_map(|l| run_of(l)) else {
            continue;
        };
        if r.status != RunnerStatus::Offline || r.busy || active_runs.contains(&run) {
            continue;
        }
        if ours.iter().any(|l| serves(&staying, l)) {
            continue;
        }
        actions.push(Action::RemoveRunner {
            id: r.id,
            name: r.name.clone(),
            reason: format!("offline, its run {run} is over and no instance serves it"),
        });
    }

    let timeout = TimeDelta::minutes(i64::from(policy.queued_timeout_minutes));
    let mut cancelled: Vec<u64> = Vec::new();
    for j in jobs.iter().filter(|j| j.status == "queued") {
        let Some(label) = j.labels.iter().find(|l| l.starts_with(LABEL_PREFIX)) else {
            continue;
        };
        let Some(waited) = j.created_at.map(|t| now - t).filter(|w| *w > timeout) else {
            continue;
        };
        let served_by_runner = runners
            .iter()
            .any(|r| r.labels.contains(label) && (r.status == RunnerStatus::Online || r.busy));
        if cancelled.contains(&j.run_id) || serves(&staying, label) || served_by_runner {
            continue;
        }
        cancelled.push(j.run_id);
        actions.push(Action::CancelRun {
            run_id: j.run_id,
            reason: format!(
                "its job \"{}\" has waited {} min (queued-timeout-minutes: {}) for {label}, \
                 which no instance or runner serves",
                j.name,
                waited.num_minutes(),
                policy.queued_timeout_minutes
            ),
        });
    }
    actions
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::machine::State;
    use crate::plan::{Market, tag};

    const REPO: &str = "octo/ml";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn policy() -> Policy {
        Policy {
            now: now(),
            repository: REPO.to_owned(),
            max_age_minutes: 720,
            queued_timeout_minutes: 30,
            handoff_grace: TimeDelta::minutes(2),
        }
    }

    /// A gpu-runner instance of `label`, launched `age` minutes ago, ending in `expires` minutes.
    fn instance(id: &str, label: &str, age: i64, expires: i64) -> Machine {
        let tags: BTreeMap<String, String> = [
            (tag::LABEL, label.to_owned()),
            (tag::REPOSITORY, REPO.to_owned()),
            (tag::EXPIRES_AT, stamp(now() + TimeDelta::minutes(expires))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Machine {
            id: id.to_owned(),
            instance_type: "g4dn.xlarge".to_owned(),
            availability_zone: None,
            market: Market::OnDemand,
            state: State::Running,
            state_reason: None,
            state_since: None,
            launched_at: Some(now() - TimeDelta::minutes(age)),
            tags,
        }
    }

    #[test]
    fn another_repositorys_instances_are_never_touched_however_old() {
        let mut theirs = instance("i-theirs", "gpu-runner-9-1-b", 2000, -600);
        theirs
            .tags
            .insert(tag::REPOSITORY.to_owned(), "octo/web".to_owned());
        let mut untagged = instance("i-untagged", "gpu-runner-9-1-c", 2000, -600);
        untagged.tags.remove(tag::REPOSITORY);
        let ours = instance("i-ours", "gpu-runner-9-1-a", 2000, -600);
        let chosen = select(
            &Policy {
                max_age_minutes: 10,
                ..policy()
            },
            &seen(vec![theirs, untagged, ours], vec![], vec![]),
        );
        let ids: Vec<&str> = chosen
            .iter()
            .filter_map(|a| match a {
                Action::Release { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["i-ours"]);
    }

    fn runner(id: u64, label: &str, status: RunnerStatus, busy: bool) -> Runner {
        Runner {
            id,
            name: label.to_owned(),
            status,
            busy,
            labels: vec![label.to_owned()],
        }
    }

    fn job(run_id: u64, status: &str, label: &str, waited: i64, runner: Option<&str>) -> Job {
        Job {
            id: run_id * 10,
            run_id,
            name: "test".to_owned(),
            status: status.to_owned(),
            labels: vec![label.to_owned()],
            runner_name: runner.map(str::to_owned),
            created_at: Some(now() - TimeDelta::minutes(waited)),
        }
    }

    fn seen(instances: Vec<Machine>, runners: Vec<Runner>, jobs: Vec<Job>) -> Seen {
        Seen {
            instances,
            runners: Some(runners),
            jobs: Some(jobs),
            handoffs: Vec::new(),
        }
    }

    fn terminated(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Release { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_healthy_cycle_is_never_touched() {
        // Booting (runner offline, young), running a job (busy), and waiting for its job.
        let l = [
            "gpu-runner-7-1-aaaa",
            "gpu-runner-7-1-bbbb",
            "gpu-runner-8-1-cccc",
        ];
        let s = seen(
            vec![
                instance("i-boot", l[0], 1, 359),
                instance("i-busy", l[1], 200, 160),
                instance("i-wait", l[2], 20, 340),
            ],
            vec![
                runner(1, l[0], RunnerStatus::Offline, false),
                runner(2, l[1], RunnerStatus::Online, true),
                runner(3, l[2], RunnerStatus::Online, false),
            ],
            vec![
                job(7, "in_progress", l[1], 200, Some(l[1])),
                job(7, "queued", l[0], 1, None),
                job(8, "queued", l[2], 45, None),
            ],
        );
        assert_eq!(select(&policy(), &s), []);
    }

    #[test]
    fn instances_past_their_expiry_or_max_age_are_terminated_if_this_repository_launched_them() {
        let mut other_repo = instance("i-other", "gpu-runner-9-1-dddd", 30, -5);
        other_repo
            .tags
            .insert(tag::REPOSITORY.to_owned(), "someone/else".to_owned());
        let s = seen(
            vec![
                instance("i-expired", "gpu-runner-7-1-aaaa", 400, -40),
                instance("i-old", "gpu-runner-7-1-bbbb", 800, 100),
                other_repo,
            ],
            vec![
                runner(1, "gpu-runner-7-1-aaaa", RunnerStatus::Online, true),
                runner(2, "gpu-runner-7-1-bbbb", RunnerStatus::Online, true),
            ],
            vec![],
        );
        let actions = select(&policy(), &s);
        // Another repository's expired instance is its own janitor's (and its own max lifetime's).
        assert_eq!(terminated(&actions), ["i-expired", "i-old"]);
        let Action::Release { reason, .. } = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            reason,
            "older than max-age-minutes (720): running for 800 min"
        );
        let Action::Release { reason, .. } = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(reason, "past its expires-at (2026-11-25T11:20:00Z)");
    }

    #[test]
    fn an_instance_whose_runner_is_gone_goes_unless_young_busy_or_of_another_repository() {
        let mut foreign = instance("i-foreign", "gpu-runner-9-1-ffff", 60, 300);
        foreign
            .tags
            .insert(tag::REPOSITORY.to_owned(), "someone/else".to_owned());
        let s = seen(
            vec![
                instance("i-orphan", "gpu-runner-7-1-aaaa", 60, 300),
                instance("i-young", "gpu-runner-7-1-bbbb", 3, 357),
                instance("i-working", "gpu-runner-7-1-cccc", 60, 300),
                foreign,
            ],
            vec![],
            vec![job(
                7,
                "in_progress",
                "gpu-runner-7-1-cccc",
                60,
                Some("gpu-runner-7-1-cccc"),
            )],
        );
        let actions = select(&policy(), &s);
        assert_eq!(terminated(&actions), ["i-orphan"]);
        assert!(matches!(&actions[0], Action::Release { reason, .. }
            if reason == "its runner gpu-runner-7-1-aaaa is gone and no job runs on it"));
    }

    #[test]
    fn ending_and_foreign_instances_are_never_touched() {
        let mut ending = instance("i-ending", "gpu-runner-7-1-aaaa", 900, -100);
        ending.state = State::ShuttingDown;
        let mut untagged = instance("i-mine", "", 900, -100);
        untagged.tags.clear();
        let mut lookalike = instance("i-look", "my-runner", 900, -100);
        lookalike
            .tags
            .insert(tag::LABEL.to_owned(), "my-runner".to_owned());
        let s = seen(vec![ending, untagged, lookalike], vec![], vec![]);
        assert_eq!(select(&policy(), &s), []);
    }

    #[test]
    fn offline_runners_of_finished_runs_without_an_instance_are_removed() {
        let s = seen(
            vec![instance("i-live", "gpu-runner-5-1-live", 20, 340)],
            vec![
                runner(1, "gpu-runner-5-1-gone", RunnerStatus::Offline, false),
                // Its instance is live (booting): kept.
                runner(2, "gpu-runner-5-1-live", RunnerStatus::Offline, false),
                // Its run is still going: its start may be booting it in another region.
                runner(3, "gpu-runner-6-1-boot", RunnerStatus::Offline, false),
                // Online or busy: kept.
                runner(4, "gpu-runner-5-1-on", RunnerStatus::Online, false),
                // Not gpu-runner's.
                runner(5, "build-box", RunnerStatus::Offline, false),
                runner(6, "gpu-runner-old", RunnerStatus::Offline, false),
            ],
            vec![job(6, "queued", "gpu-runner-6-1-boot", 2, None)],
        );
        let actions = select(&policy(), &s);
        assert_eq!(
            actions,
            [Action::RemoveRunner {
                id: 1,
                name: "gpu-runner-5-1-gone".to_owned(),
                reason: "offline, its run 5 is over and no instance serves it".to_owned(),
            }]
        );
    }

    #[test]
    fn a_run_stuck_on_a_label_nothing_serves_is_cancelled_once() {
        let gone = "gpu-runner-7-1-gone";
        let s = seen(
            vec![instance("i-served", "gpu-runner-8-1-live", 40, 320)],
            vec![
                runner(3, "gpu-runner-9-1-on", RunnerStatus::Online, false),
                runner(4, "gpu-runner-8-1-live", RunnerStatus::Offline, false),
            ],
            vec![
                job(7, "queued", gone, 45, None),
                job(7, "queued", gone, 44, None),
                // Served by a live instance, or by an online runner: left to wait.
                job(8, "queued", "gpu-runner-8-1-live", 45, None),
                job(9, "queued", "gpu-runner-9-1-on", 45, None),
                // Not waiting long enough yet.
                job(10, "queued", "gpu-runner-10-1-new", 10, None),
                // Not a gpu-runner label.
                job(11, "queued", "ubuntu-latest", 500, None),
            ],
        );
        let actions = select(&policy(), &s);
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(&actions[0], Action::CancelRun { run_id: 7, reason }
            if reason == "its job \"test\" has waited 45 min (queued-timeout-minutes: 30) for \
                          gpu-runner-7-1-gone, which no instance or runner serves")
        );
    }

    #[test]
    fn without_github_only_the_time_rules_apply() {
        let s = Seen {
            instances: vec![
                instance("i-expired", "gpu-runner-7-1-aaaa", 400, -40),
                instance("i-orphan?", "gpu-runner-7-1-bbbb", 60, 300),
            ],
            runners: None,
            jobs: None,
            handoffs: Vec::new(),
        };
        assert_eq!(terminated(&select(&policy(), &s)), ["i-expired"]);
    }

    #[test]
    fn a_jit_config_goes_once_no_live_instance_serves_its_runner_and_it_is_past_the_grace() {
        let param = |runner: &str, age: i64| {
            (
                format!("/gpu-runner/jit/octo/ml/{runner}"),
                now() - TimeDelta::minutes(age),
            )
        };
        let mut ended = instance("i-ended", "gpu-runner-7-1-dead", 30, 300);
        ended.state = State::Terminated;
        let s = Seen {
            instances: vec![instance("i-booting", "gpu-runner-7-1-boot", 1, 300), ended],
            runners: None,
            jobs: None,
            handoffs: vec![
                // Its instance boots and will read it.
                param("gpu-runner-7-1-boot", 5),
                // Its instance ended before reading it.
                param("gpu-runner-7-1-dead", 5),
                // A start wrote it a moment ago: EC2 may not list its instance yet.
                param("gpu-runner-7-1-new", 1),
                // Its start died between the launch and saving anything.
                param("gpu-runner-7-1-lost", 30),
            ],
        };
        let deleted: Vec<String> = select(&policy(), &s)
            .into_iter()
            .filter_map(|a| match a {
                Action::DeleteHandoff { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            [
                "/gpu-runner/jit/octo/ml/gpu-runner-7-1-dead",
                "/gpu-runner/jit/octo/ml/gpu-runner-7-1-lost"
            ]
        );
    }

    #[test]
    fn pooled_machines_go_back_to_their_pool_and_attached_ones_are_never_released() {
        let lifecycle = |mut m: Machine, l: &str, state: State| {
            m.tags.insert(tag::LIFECYCLE.to_owned(), l.to_owned());
            m.state = state;
            m
        };
        let s = seen(
            vec![
                // Waiting in its pool, stopped, long past what an ephemeral machine may live.
                lifecycle(
                    instance("i-waiting", "gpu-runner-7-1-aaaa", 5000, -600),
                    "pooled",
                    State::Stopped,
                ),
                lifecycle(
                    instance("i-pool-busy", "gpu-runner-7-1-bbbb", 800, 100),
                    "pooled",
                    State::Running,
                ),
                lifecycle(
                    instance("i-workstation", "gpu-runner-7-1-cccc", 5000, -600),
                    "attached",
                    State::Running,
                ),
                instance("i-ephemeral", "gpu-runner-7-1-dddd", 800, 100),
                // Served its last job; its stop never ran.
                {
                    let mut m = lifecycle(
                        instance("i-retired", "gpu-runner-7-1-eeee", 60, 300),
                        "pooled",
                        State::Stopped,
                    );
                    m.tags
                        .insert(tag::RETIRE.to_owned(), "it served 3 jobs".to_owned());
                    m
                },
            ],
            vec![],
            vec![],
        );
        let actions = select(&policy(), &s);
        let chosen: Vec<(&str, Release)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Release { id, how, .. } => Some((id.as_str(), *how)),
                _ => None,
            })
            .collect();
        assert_eq!(
            chosen,
            [
                ("i-pool-busy", Release::ReturnToPool),
                ("i-ephemeral", Release::Terminate),
                ("i-retired", Release::Terminate)
            ]
        );
    }
}
