//! What the modes need from a provider of GPU machines, whatever it is: EC2 instances today, a
//! pool of stopped instances, a Kubernetes pod or a machine the user already has next. The modes
//! see only [`Provider`]; each provider lives in its own folder here, and [`connect`] is the one
//! place that turns the inputs into one.
//!
//! A provider acquires a machine for one runner (handing it the runner's single-use
//! configuration, see [`handoff`]), says how it is doing while it boots, finds the machines a
//! repository's starts acquired, and releases them as their [`Lifecycle`] asks: an ephemeral
//! machine ends, a pooled one goes back to its pool, an attached one is only detached.

pub mod ec2;
pub mod failure;
pub mod handoff;
pub mod kubernetes;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::actions::Actions;
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::inputs::Common;
use crate::machine::failure::{Failure as Error, Refusal};
use crate::plan::{LaunchPlan, Market, tag};

pub use handoff::Handoff;

/// Where a machine is in its life, as its provider says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    ShuttingDown,
    Stopping,
    Stopped,
    Terminated,
    Other(String),
}

impl State {
    /// The state as the provider names it.
    pub fn name(&self) -> &str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::ShuttingDown => "shutting-down",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Terminated => "terminated",
            State::Other(name) => name,
        }
    }

    /// The machine is gone or on its way: nothing more is billed for it.
    pub fn is_ending(&self) -> bool {
        matches!(self, State::ShuttingDown | State::Terminated)
    }

    /// Stopped or stopping: its disk is kept, its compute is not billed.
    pub fn is_paused(&self) -> bool {
        matches!(self, State::Stopping | State::Stopped)
    }
}

/// How a machine is meant to end once its job is over, from its `gpu-runner:lifecycle` tag
/// (machines without one are ephemeral: every machine gpu-runner launched before the tag
/// existed was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Launched for one job and ended after it.
    Ephemeral,
    /// Kept stopped between jobs, with its disk: it is paused after its job, never ended by
    /// cleanup for waiting in its pool.
    Pooled,
    /// The user's own machine: gpu-runner only takes its runner away, never the machine.
    Attached,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::Ephemeral => "ephemeral",
            Lifecycle::Pooled => "pooled",
            Lifecycle::Attached => "attached",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Lifecycle::Ephemeral, Lifecycle::Pooled, Lifecycle::Attached]
            .into_iter()
            .find(|l| l.name() == name)
    }

    /// What ending its turn means for a machine of this lifecycle.
    pub fn release(self) -> Release {
        match self {
            Lifecycle::Ephemeral => Release::Terminate,
            Lifecycle::Pooled => Release::ReturnToPool,
            Lifecycle::Attached => Release::Detach,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    /// The provider's name for its size (an EC2 instance type).
    pub instance_type: String,
    /// Where it runs (an availability zone), when the provider says.
    pub availability_zone: Option<String>,
    pub market: Market,
    pub state: State,
    /// The provider's code for why it is in its state, when it says (EC2's `StateReason`, such
    /// as `Server.InsufficientInstanceCapacity`).
    pub state_reason: Option<String>,
    /// When it entered its state, when the provider says (EC2's `StateTransitionReason` gives
    /// the time of a user's or AWS's stop or termination: "Service initiated (… GMT)").
    pub state_since: Option<DateTime<Utc>>,
    pub launched_at: Option<DateTime<Utc>>,
    /// gpu-runner's tags (`gpu-runner:*`), and any others it carries.
    pub tags: BTreeMap<String, String>,
}

impl Machine {
    /// How long it has run from its launch (or resume) to `until`, in seconds of the user's
    /// time: AWS's and the API server's times are wall-clock ones, and `clock` may run faster.
    pub fn ran_seconds(&self, until: DateTime<Utc>, clock: Clock) -> Option<u64> {
        Some(clock.between(self.launched_at?, until).as_secs())
    }

    /// The repository whose start acquired it (`gpu-runner:repository`).
    pub fn repository(&self) -> Option<&str> {
        self.tags.get(tag::REPOSITORY).map(String::as_str)
    }

    /// Whether `repository` acquired it. GitHub's repository names are not case-sensitive.
    pub fn belongs_to(&self, repository: &str) -> bool {
        self.repository()
            .is_some_and(|r| r.eq_ignore_ascii_case(repository))
    }

    /// Whether its provider took it back (AWS reclaimed a spot instance; Kubernetes took a pod
    /// off its node, shutting down or preempted): the job on it was interrupted, not failed.
    pub fn reclaimed(&self) -> bool {
        self.state_reason
            .as_deref()
            .is_some_and(|r| r == SPOT_RECLAIMED || r.starts_with(kubernetes::pod::DISRUPTED))
    }

    /// The `gpu-runner:label` tag: the label of the start that acquired it.
    pub fn label(&self) -> Option<&str> {
        self.tags.get(tag::LABEL).map(String::as_str)
    }

    /// The name of the runner it serves: its `gpu-runner:runner` tag, else (one runner) the label.
    pub fn runner_name(&self) -> Option<&str> {
        self.tags
            .get(tag::RUNNER)
            .map(String::as_str)
            .or_else(|| self.label())
    }

    /// The `gpu-runner:expires-at` tag: when its boot script ends it at the latest.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.tags
            .get(tag::EXPIRES_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// How it is meant to end: its `gpu-runner:lifecycle` tag, ephemeral without one. A value
    /// this build does not know is taken for the kindest reading, attached: never ended.
    pub fn lifecycle(&self) -> Lifecycle {
        match self.tags.get(tag::LIFECYCLE) {
            None => Lifecycle::Ephemeral,
            Some(name) => Lifecycle::from_name(name).unwrap_or(Lifecycle::Attached),
        }
    }
}

/// Whose machines to find: always one repository's, so that nothing one repository runs can
/// touch another's machines in the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Acquired by the start that made this label.
    Label { repository: &'a str, label: &'a str },
    /// Acquired by any start of this workflow run.
    Run { repository: &'a str, run_id: u64 },
    /// Every machine gpu-runner acquired in the region for this repository.
    Repository(&'a str),
}

/// A machine's turn is over: how to let it go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// End it: nothing of it is billed any more.
    Terminate,
    /// Stop it with its disk, for the next job to resume.
    ReturnToPool,
    /// Leave the machine as it is: it is the user's.
    Detach,
}

/// What releasing one machine did.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    /// Ended after `ran` seconds, at about `cost`, when they are known.
    Terminated {
        ran: Option<u64>,
        cost: Option<String>,
    },
    /// Stopped after `ran` seconds (at about `cost`), its disk kept for the next job; EC2 still
    /// showed it stopping when the wait for it gave up.
    ReturnedToPool {
        ran: Option<u64>,
        cost: Option<String>,
        still_stopping: bool,
    },
    /// A pooled machine found stopped already (it shut itself down after its job).
    AlreadyInPool,
    /// A pooled machine that served its last job (`why`): ended, not paused.
    Retired {
        why: String,
        ran: Option<u64>,
        cost: Option<String>,
    },
    Detached,
    /// A pod deleted, with its Secret, `ran` seconds after it was created.
    Deleted {
        ran: Option<u64>,
    },
    /// It was gone before it was asked for.
    AlreadyGone,
    /// It may still exist, and bill.
    Failed,
}

/// EC2's state reason of a spot instance AWS took back (API Reference, `StateReason`).
pub const SPOT_RECLAIMED: &str = "Server.SpotInstanceTermination";

/// A machine its provider took away while its job ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interruption {
    /// The annotation's title (a section of docs/troubleshooting.md).
    pub title: &'static str,
    /// What took it away, in words: "AWS reclaimed the spot instance i-… at …".
    pub how: String,
    /// How to get the job run again, and what helps next time.
    pub again: &'static str,
}

/// What took a reclaimed machine away; `at` is when its console said it would.
pub fn interruption(m: &Machine, at: Option<&str>) -> Interruption {
    match m.state_reason.as_deref() {
        Some(SPOT_RECLAIMED) => {
            let when = at.map(|at| format!(" at {at}")).unwrap_or_default();
            Interruption {
                title: "A spot instance was reclaimed",
                how: format!(
                    "AWS reclaimed the spot instance {}{when} (two-minute notice)",
                    m.id
                ),
                again: "a retry workflow does it for you, on on-demand (docs/spot.md); \
                        market-type: spot-then-on-demand lets the re-run fall back",
            }
        }
        other => Interruption {
            title: "A pod was taken off its node",
            how: format!(
                "Kubernetes took the pod {} off its node ({})",
                m.id,
                other
                    .and_then(|r| r.strip_prefix(kubernetes::pod::DISRUPTED))
                    .map(|r| r.trim_start_matches(": "))
                    .unwrap_or("no reason given")
            ),
            again: "give the pod nodes that are not preempted (node-selector, tolerations) if \
                    it happens often",
        },
    }
}

/// When the machine's console said AWS would take it back (`phase=spot-interrupted at=…`), if
/// it did.
pub fn reclaimed_at(last_words: &[String]) -> Option<String> {
    last_words.iter().rev().find_map(|l| {
        let rest = l.split_once("phase=spot-interrupted ")?.1;
        let at = rest
            .split_whitespace()
            .find_map(|w| w.strip_prefix("at="))?;
        (at != "unknown").then(|| at.to_owned())
    })
}

/// How a booting machine is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not running yet.
    Booting,
    /// Not running yet, for a reason start says once: `why` completes "the pod NAME …" (a node
    /// the cluster is adding).
    Waiting { why: String },
    /// Running: its runner comes online next.
    Ready,
    /// It ended, or was stopped, while it booted: `why` names its state, `last_words` are the
    /// last lines it printed (its boot phases).
    Gone {
        why: String,
        last_words: Vec<String>,
    },
    /// It cannot run as asked (no node can take it, its image cannot be pulled): waiting will
    /// not help. `why` completes "the pod NAME …", `fix` says what to change.
    CannotRun {
        why: String,
        fix: String,
        last_words: Vec<String>,
    },
}

/// What the summary shows of a machine once its runner is online.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    pub price: Option<Price>,
    /// What the boot script's GPU probe found, when the machine has shown it yet.
    pub gpu: Option<String>,
    /// What else the provider knows that the summary shows (a pod's node and phase timings).
    pub details: Vec<(&'static str, String)>,
}

/// An hourly price and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub usd_per_hour: f64,
    pub source: String,
}

impl Price {
    pub fn describe(&self) -> String {
        format!("${:.3}/h ({})", self.usd_per_hour, self.source)
    }

    /// What `seconds` of a machine's running cost at this price. EC2 bills by the second, at
    /// least a minute each time an instance starts (EC2 API reference, StartInstances: "a
    /// one-minute minimum for instance usage, and thereafter charges per second").
    pub fn usd(&self, seconds: u64) -> f64 {
        self.usd_per_hour * seconds.max(60) as f64 / 3600.0
    }

    /// The estimated cost of `seconds` of running at this price.
    pub fn cost(&self, seconds: u64) -> String {
        format!("≈ ${:.2} at {}", self.usd(seconds), self.describe())
    }
}

/// How long a machine ran, in words: "45 s", "12 min", "12 min 5 s", "2 h 3 min".
pub fn ran_words(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 && s % 60 == 0 => format!("{} min", s / 60),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// A machine acquired for a runner, and the capacity candidates tried before it.
#[derive(Debug, Clone)]
pub struct Acquired {
    pub machine: Machine,
    pub refused: Vec<Refusal>,
}

/// Which provider gave an error: it decides the words of the hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ec2,
    Kubernetes,
}

impl Kind {
    /// The service named in the error's title.
    pub fn service(self) -> &'static str {
        match self {
            Kind::Ec2 => "AWS",
            Kind::Kubernetes => "Kubernetes",
        }
    }
}

/// A provider's call that failed, with the provider's error code (for EC2,
/// `InsufficientInstanceCapacity` and the like), which decides whether to try the next candidate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct MachineError {
    pub provider: Kind,
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
}

impl MachineError {
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    /// What to do about it: the provider's words for its error code, worked out when the error is
    /// shown.
    pub fn hint(&self) -> String {
        match self.provider {
            Kind::Ec2 => ec2::errors::hint(self),
            Kind::Kubernetes => kubernetes::errors::hint(self),
        }
    }
}

/// What start, stop, the post step and cleanup need from a provider of GPU machines.
pub trait Provider: Sync {
    /// What its machines are called in the log and the summaries ("instance").
    fn noun(&self) -> &'static str;

    /// Where it looks for machines, in words: a region, or a cluster's namespace.
    fn place(&self, region: &str) -> String {
        region.to_owned()
    }

    /// What releasing one of its machines `how` is called ("terminate instance").
    fn verb(&self, how: Release) -> String {
        let noun = self.noun();
        match how {
            Release::Terminate => format!("terminate {noun}"),
            Release::ReturnToPool => format!("return {noun} to its pool"),
            Release::Detach => format!("detach {noun}"),
        }
    }

    /// What a dry run proves: that the machine could be acquired, with nothing acquired. Shows
    /// what the machine would be handed, then says in one sentence what was proven.
    fn preflight(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// A machine for one runner, handed its configuration: the first capacity candidate that has
    /// room. Saying what it tries in the log.
    fn acquire(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> impl Future<Output = Result<Acquired, Error>> + Send;

    /// How each of these booting machines is doing, in one look (one call, however many).
    fn health(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<(String, Health)>, MachineError>> + Send;

    /// The last lines the machine printed, its boot phases first: why a boot went wrong.
    fn last_words(&self, id: &str) -> impl Future<Output = Vec<String>> + Send;

    /// The machines with these ids, and those of `owner`, in any state: how stop and rollback
    /// find what they lost the ids of, and how cleanup finds everything gpu-runner acquired.
    /// Ids that are gone are left out.
    fn find(
        &self,
        ids: &[String],
        owner: Option<Owner<'_>>,
    ) -> impl Future<Output = Result<Vec<Machine>, MachineError>> + Send;

    /// Lets these machines go, one result each in their order; a machine already gone is not an
    /// error. The first error, if any, comes with the results.
    fn release(
        &self,
        machines: &[Machine],
        how: Release,
    ) -> impl Future<Output = (Vec<Released>, Option<MachineError>)> + Send;

    /// What the summary says of a machine whose runner came online.
    fn facts(&self, machine: &Machine) -> impl Future<Output = Facts> + Send;

    /// What the machine costs an hour, when the provider knows (the part of [`Provider::facts`]
    /// that a cost needs, without reading the machine's output).
    fn price(&self, machine: &Machine) -> impl Future<Output = Option<Price>> + Send {
        let _ = machine;
        async { None }
    }

    /// Deletes what these machines were handed that outlives them (a JIT config still waiting
    /// in SSM for an instance that never read it): what was deleted, or why it could not be, by
    /// name. Nothing when there is nothing left.
    fn forget_handoffs(
        &self,
        machines: &[Machine],
    ) -> impl Future<Output = Vec<(String, Result<(), MachineError>)>> + Send {
        let _ = machines;
        async { Vec::new() }
    }

    /// `repository`'s JIT configs still waiting for a machine, and when each was written.
    fn waiting_handoffs(
        &self,
        repository: &str,
    ) -> impl Future<Output = Result<Vec<(String, DateTime<Utc>)>, MachineError>> + Send {
        let _ = repository;
        async { Ok(Vec::new()) }
    }

    /// Deletes one waiting JIT config; one already gone is not an error.
    fn delete_handoff(&self, name: &str) -> impl Future<Output = Result<(), MachineError>> + Send {
        let _ = name;
        async { Ok(()) }
    }
}

/// What a mode will use the provider for: a start launches from the plan and needs its image,
/// the other modes only find and release.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    Acquire(&'a LaunchPlan),
    Manage,
}

/// The provider the inputs ask for, with its credentials; for a start, with what it launches
/// from. A new provider is a folder here and a variant of [`Connected`].
pub async fn connect(
    common: &Common,
    region: &str,
    purpose: Purpose<'_>,
    env: &Env,
    ctx: &Context,
    actions: &Actions,
    judged_event: Option<&str>,
) -> Result<Connected, Error> {
    if let Some(cluster) = &common.cluster {
        let access = kubernetes::access::Access {
            common,
            env,
            ctx,
            actions,
            judged_event,
        };
        return Ok(Connected::Kubernetes(
            kubernetes::Kubernetes::connect(cluster, &access).await?,
        ));
    }
    let config = ec2::credentials::connect(env, common, region, ctx, actions, judged_event).await?;
    let clock = crate::clock::Clock::from_env(env);
    Ok(Connected::Ec2(
        ec2::Ec2::new(&config, purpose, clock).await?,
    ))
}

/// The provider for finding and releasing what starts acquired in `region`: stop, the post step
/// and cleanup.
pub async fn manage(
    common: &Common,
    region: &str,
    env: &Env,
    ctx: &Context,
    actions: &Actions,
) -> Result<Connected, Error> {
    connect(common, region, Purpose::Manage, env, ctx, actions, None).await
}

/// Checks what can be checked of a plan before any credential is asked for and anything is
/// registered, such as whether the runner's configuration will fit the way it is handed over.
pub fn check_plan(plan: &LaunchPlan, package: &crate::boot::RunnerPackage) -> Result<(), Error> {
    if plan.pod.is_some() {
        // A Secret holds the configuration: 1 MiB, far more than a JIT config takes.
        return Ok(());
    }
    ec2::user_data::check_fits(plan, package)
}

/// The provider [`connect`] chose.
#[allow(clippy::large_enum_variant)] // one per run: the size does not matter
pub enum Connected {
    Ec2(ec2::Ec2),
    Kubernetes(kubernetes::Kubernetes),
}

impl Provider for Connected {
    fn noun(&self) -> &'static str {
        match self {
            Connected::Ec2(p) => p.noun(),
            Connected::Kubernetes(p) => p.noun(),
        }
    }

    fn place(&self, region: &str) -> String {
        match self {
            Connected::Ec2(p) => p.place(region),
            Connected::Kubernetes(p) => p.place(region),
        }
    }

    fn verb(&self, how: Release) -> String {
        match self {
            Connected::Ec2(p) => p.verb(how),
            Connected::Kubernetes(p) => p.verb(how),
        }
    }

    async fn preflight(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<String, Error> {
        match self {
            Connected::Ec2(p) => p.preflight(plan, handoff, actions).await,
            Connected::Kubernetes(p) => p.preflight(plan, handoff, actions).await,
        }
    }

    async fn acquire(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<Acquired, Error> {
        match self {
            Connected::Ec2(p) => p.acquire(plan, handoff, actions).await,
            Connected::Kubernetes(p) => p.acquire(plan, handoff, actions).await,
        }
    }

    async fn health(&self, ids: &[String]) -> Result<Vec<(String, Health)>, MachineError> {
        match self {
            Connected::Ec2(p) => p.health(ids).await,
            Connected::Kubernetes(p) => p.health(ids).await,
        }
    }

    async fn last_words(&self, id: &str) -> Vec<String> {
        match self {
            Connected::Ec2(p) => p.last_words(id).await,
            Connected::Kubernetes(p) => p.last_words(id).await,
        }
    }

    async fn find(
        &self,
        ids: &[String],
        owner: Option<Owner<'_>>,
    ) -> Result<Vec<Machine>, MachineError> {
        match self {
            Connected::Ec2(p) => p.find(ids, owner).await,
            Connected::Kubernetes(p) => p.find(ids, owner).await,
        }
    }

    async fn release(
        &self,
        machines: &[Machine],
        how: Release,
    ) -> (Vec<Released>, Option<MachineError>) {
        match self {
            Connected::Ec2(p) => p.release(machines, how).await,
            Connected::Kubernetes(p) => p.release(machines, how).await,
        }
    }

    async fn facts(&self, machine: &Machine) -> Facts {
        match self {
            Connected::Ec2(p) => p.facts(machine).await,
            Connected::Kubernetes(p) => p.facts(machine).await,
        }
    }

    async fn price(&self, machine: &Machine) -> Option<Price> {
        match self {
            Connected::Ec2(p) => p.price(machine).await,
            Connected::Kubernetes(p) => p.price(machine).await,
        }
    }

    async fn forget_handoffs(
        &self,
        machines: &[Machine],
    ) -> Vec<(String, Result<(), MachineError>)> {
        match self {
            Connected::Ec2(p) => p.forget_handoffs(machines).await,
            Connected::Kubernetes(p) => p.forget_handoffs(machines).await,
        }
    }

    async fn waiting_handoffs(
        &self,
        repository: &str,
    ) -> Result<Vec<(String, DateTime<Utc>)>, MachineError> {
        match self {
            Connected::Ec2(p) => p.waiting_handoffs(repository).await,
            Connected::Kubernetes(p) => p.waiting_handoffs(repository).await,
        }
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), MachineError> {
        match self {
            Connected::Ec2(p) => p.delete_handoff(name).await,
            Connected::Kubernetes(p) => p.delete_handoff(name).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(tags: &[(&str, &str)]) -> Machine {
        Machine {
            id: "i-1".into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: None,
            market: Market::OnDemand,
            state: State::Running,
            state_reason: None,
            state_since: None,
            launched_at: None,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_machine_without_a_lifecycle_tag_is_ephemeral_and_an_unknown_one_is_never_ended() {
        assert_eq!(tagged(&[]).lifecycle(), Lifecycle::Ephemeral);
        assert_eq!(
            tagged(&[(tag::LIFECYCLE, "pooled")]).lifecycle(),
            Lifecycle::Pooled
        );
        assert_eq!(
            tagged(&[(tag::LIFECYCLE, "from-the-future")]).lifecycle(),
            Lifecycle::Attached
        );
        assert_eq!(Lifecycle::Pooled.release(), Release::ReturnToPool);
        assert_eq!(Lifecycle::Attached.release(), Release::Detach);
    }
}
