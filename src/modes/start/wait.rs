//! Waiting for the runners to come online: one runner list and one health look at the machines
//! per look, however many runners a start launched, at an interval chosen from GitHub's budget.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::report::Online;
use crate::actions::Actions;
use crate::boot::phases;
use crate::clock::Clock;
use crate::github::{JitRunner, Runner, RunnerRegistry, RunnerStatus};
use crate::machine::{Health, Machine, Provider};
use crate::modes::Github;
use crate::modes::failure::{Error, Refusal};
use crate::plan::LaunchPlan;

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

/// A runner whose machine was acquired, waiting to come online.
pub(super) struct Booting {
    /// Its place in the plan: results are reported in the plan's order.
    pub n: usize,
    pub jit: JitRunner,
    pub machine: Machine,
    pub refused: Vec<Refusal>,
    pub launched_at: Instant,
    /// Launch to running, on this process's clock (the report gives it on the user's).
    pub running_after: Option<Duration>,
    /// The last reason to wait that start said of it.
    pub said: Option<String>,
}

/// How start waits for its runners: how often it looks, and for how long, on which clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    pub schedule: PollSchedule,
    /// `startup-timeout-minutes`, of the user's time.
    pub startup_timeout: Duration,
    pub clock: Clock,
}

impl Readiness {
    pub fn of(plan: &LaunchPlan, clock: Clock) -> Self {
        Self {
            schedule: PollSchedule::default(),
            startup_timeout: Duration::from_secs(u64::from(plan.startup_timeout_minutes) * 60),
            clock,
        }
    }
}

/// Why a runner did not come online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stalled {
    /// GitHub stopped listing the runner while its machine booted: the machine refused a job of
    /// another run and ended (`refused_a_job`), or someone deleted the runner.
    RunnerRemoved {
        runner: String,
        noun: &'static str,
        refused_a_job: bool,
    },
    /// The machine ended (or was stopped) while it booted.
    MachineEnded { id: String, state: String },
    /// `startup-timeout-minutes` passed.
    TimedOut { id: String, minutes: u32 },
    /// The provider cannot run the machine as asked (no node can take the pod, its image cannot
    /// be pulled, its GPU probe failed); `fix` is the provider's advice.
    CannotRun(Box<CannotRun>),
}

/// A machine the provider cannot run as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannotRun {
    pub id: String,
    pub noun: &'static str,
    /// Completes "the pod NAME …".
    pub why: String,
    pub fix: String,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stalled::RunnerRemoved { runner, noun, .. } => write!(
                f,
                "the runner {runner} was removed from GitHub while its {noun} booted"
            ),
            // A pool instance shuts down into its pool: stopped, not ended.
            Stalled::MachineEnded { id, state } if state == "stopping" || state == "stopped" => {
                write!(f, "{id} shut down while it booted ({state})")
            }
            Stalled::MachineEnded { id, state } => {
                write!(f, "{id} ended while it booted ({state})")
            }
            Stalled::TimedOut { id, minutes } => write!(
                f,
                "the runner of {id} did not come online within startup-timeout-minutes \
                 ({minutes})"
            ),
            Stalled::CannotRun(c) => write!(f, "the {} {} {}", c.noun, c.id, c.why),
        }
    }
}

impl Stalled {
    /// Whose last words the error shows.
    pub fn noun(&self) -> &'static str {
        match self {
            Stalled::CannotRun(c) => c.noun,
            _ => "instance",
        }
    }

    /// What to do about it.
    pub fn fix(&self) -> &str {
        match self {
            Stalled::CannotRun(c) => &c.fix,
            Stalled::RunnerRemoved {
                refused_a_job: true,
                ..
            } => {
                "GitHub handed the runner a queued job of another workflow run whose runs-on \
                 its labels cover (self-hosted alone does), and the machine refused it and \
                 ended. Find that job (its run failed with \"gpu-runner refused this job\"), \
                 give such jobs labels no gpu-runner machine has, and re-run this job."
            }
            Stalled::RunnerRemoved { .. } => {
                "Someone or something deleted the runner; re-run the job."
            }
            Stalled::MachineEnded { .. } => {
                "The boot phases above say why. A failed GPU probe means the image has no \
                 working NVIDIA driver for this instance type: use the default image-id or one \
                 with the driver installed."
            }
            Stalled::TimedOut { .. } => {
                "The boot phases above show how far the machine got. If it was still \
                 installing, raise startup-timeout-minutes; if it never reached the runner \
                 phase, check that the machine can reach github.com (a subnet with a NAT \
                 gateway or a public IP)."
            }
        }
    }
}

/// What one look found about a booting runner.
enum Look {
    Waiting,
    Online,
    Failed(Error),
}

/// Waits until every booting runner is online, or has failed, or ran out of
/// `startup-timeout-minutes`. Each look is one runner list and one health look at every machine
/// still booting, so that its cost does not grow with `count`.
pub(super) async fn wait_online(
    plan: &LaunchPlan,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    booting: Vec<Booting>,
    actions: &Actions,
    readiness: &Readiness,
) -> Vec<(usize, Result<Online, Error>)> {
    let Readiness {
        schedule,
        startup_timeout,
        clock,
    } = readiness;
    let deadline = clock.scaled(*startup_timeout);
    let started = Instant::now();
    let mut pending = booting;
    let mut results = Vec::new();
    let mut next_heartbeat = HEARTBEAT;
    while !pending.is_empty() {
        let runners = github.registry.runners().await;
        if let Err(e) = &runners {
            tracing::warn!(error = %e, "could not list the runners; trying again");
        }
        let ids: Vec<String> = pending.iter().map(|b| b.machine.id.clone()).collect();
        let health = provider.health(&ids).await;
        if let Err(e) = &health {
            tracing::warn!(error = %e, "could not look at the machines; trying again");
        }
        let mut still = Vec::new();
        let mut ready = Vec::new();
        for mut b in pending {
            let h = health
                .as_ref()
                .ok()
                .and_then(|all| all.iter().find(|(id, _)| *id == b.machine.id))
                .map(|(_, h)| h);
            let look = look(
                plan,
                provider,
                &mut b,
                runners.as_deref().ok(),
                h,
                deadline,
                actions,
            )
            .await;
            match look {
                Look::Waiting => still.push(b),
                Look::Failed(e) => results.push((b.n, Err(e))),
                Look::Online => ready.push((b.launched_at.elapsed(), b)),
            }
        }
        // Online as of this look; their facts are read together, after it.
        let online = join_all(
            ready
                .into_iter()
                .map(|(after, b)| online(provider, b, after, clock)),
        )
        .await;
        results.extend(online.into_iter().map(|(n, o)| (n, Ok(o))));
        pending = still;
        if clock.unscaled(started.elapsed()) >= next_heartbeat {
            next_heartbeat += HEARTBEAT;
            for b in &pending {
                heartbeat(provider, b, clock, actions).await;
            }
        }
        if !pending.is_empty() {
            clock
                .sleep(schedule.interval(clock.unscaled(started.elapsed())))
                .await;
        }
    }
    results
}

/// How often a start that waits says where each machine's boot is.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// One line for a machine still booting: how long since its launch, whether it runs, and the
/// latest boot phase its console (or pod log) shows, so that a wait is never silent.
async fn heartbeat(provider: &impl Provider, b: &Booting, clock: &Clock, actions: &Actions) {
    let last_words = provider.last_words(&b.machine.id).await;
    let phase = last_words
        .iter()
        .rev()
        .find_map(|l| l.split_once("gpu-runner: phase=").map(|(_, p)| p))
        .map(|p| format!("last boot phase: {p}"))
        .unwrap_or_else(|| "no boot phase in its output yet".to_owned());
    actions.info(&format!(
        "Waiting for {} ({}): {} s since launch, {}; {phase}",
        b.machine.id,
        b.jit.runner.name,
        clock.unscaled(b.launched_at.elapsed()).as_secs(),
        if b.running_after.is_some() {
            "running"
        } else {
            "not running yet"
        },
    ));
}

/// What this look says of `b`: online, failed (its machine ended, its runner was removed, the
/// timeout passed) or still booting.
async fn look(
    plan: &LaunchPlan,
    provider: &impl Provider,
    b: &mut Booting,
    runners: Option<&[Runner]>,
    health: Option<&Health>,
    deadline: Duration,
    actions: &Actions,
) -> Look {
    let id = &b.machine.id;
    if let Some(runners) = runners {
        match runners.iter().find(|r| r.id == b.jit.runner.id) {
            Some(r) if r.status == RunnerStatus::Online => return Look::Online,
            Some(_) => {}
            None => {
                // An ephemeral runner is removed after its one job: the machine's last words
                // say whether it refused a job of another run.
                let last_words = provider.last_words(id).await;
                return Look::Failed(Error::Startup {
                    stalled: Stalled::RunnerRemoved {
                        runner: b.jit.runner.name.clone(),
                        noun: provider.noun(),
                        refused_a_job: phases::refused_a_job(&last_words),
                    },
                    console: last_words,
                });
            }
        }
    }
    match health {
        Some(Health::Ready) if b.running_after.is_none() => {
            b.running_after = Some(b.launched_at.elapsed());
            actions.info(&format!("{id} is running; waiting for its runner"));
        }
        Some(Health::Waiting { why }) if b.said.as_ref() != Some(why) => {
            actions.info(&format!("The {} {id} {why}", provider.noun()));
            b.said = Some(why.clone());
        }
        Some(Health::CannotRun {
            why,
            fix,
            last_words,
        }) => {
            return Look::Failed(Error::Startup {
                stalled: Stalled::CannotRun(Box::new(CannotRun {
                    id: id.clone(),
                    noun: provider.noun(),
                    why: why.clone(),
                    fix: fix.clone(),
                })),
                console: last_words.clone(),
            });
        }
        Some(Health::Gone { why, last_words }) => {
            return Look::Failed(Error::Startup {
                stalled: Stalled::MachineEnded {
                    id: id.clone(),
                    state: why.clone(),
                },
                console: last_words.clone(),
            });
        }
        _ => {}
    }
    if b.launched_at.elapsed() >= deadline {
        return Look::Failed(Error::Startup {
            stalled: Stalled::TimedOut {
                id: id.clone(),
                minutes: plan.startup_timeout_minutes,
            },
            console: provider.last_words(id).await,
        });
    }
    Look::Waiting
}

/// What an online runner's start reports: the machine's facts (its price, what the GPU probe
/// found), its times the user's on `clock`. `launch_to_online` is when the look saw it online.
async fn online(
    provider: &impl Provider,
    b: Booting,
    launch_to_online: Duration,
    clock: &Clock,
) -> (usize, Online) {
    let facts = provider.facts(&b.machine).await;
    (
        b.n,
        Online {
            machine: b.machine,
            refused: b.refused,
            facts,
            launch_to_running: b.running_after.map(|d| clock.unscaled(d)),
            launch_to_online: clock.unscaled(launch_to_online),
        },
    )
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
