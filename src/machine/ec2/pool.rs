//! EC2's warm pools: a start resumes a stopped instance of its repository's pool (handing it the
//! new runner's boot script while it is stopped), or launches one into the pool while the pool has
//! room; a stop pauses it again and waits until it is `stopped`, so that the next start finds it.
//! An instance past `pool-max-uses` or `pool-max-age-days`, or launched from an image that
//! `image-id` no longer resolves to, is retired: terminated, and replaced on demand.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::actions::Actions;
use crate::boot::Arch;
use crate::inputs::PoolInputs;
use crate::machine::failure::{Failure as Error, Refusal, Refused};
use crate::machine::{Acquired, Handoff, Lifecycle, Machine, MachineError, Released, State};
use crate::plan::{Candidate, LaunchPlan, tag};

/// How often a start waiting for a member of a full pool looks again, and a stop for its
/// instance to be `stopped` (on the user's clock).
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// How long a start waits for a member that is still `stopping` (a stop returns once EC2 has
/// taken its StopInstances) before it launches a new one instead: EC2 documents no bound; a peer
/// measured 22 to 152 seconds for GPU instances.
pub const STOPPING_AT_MOST: Duration = Duration::from_secs(4 * 60);

/// How long a stop asks again while its instance is still `pending` (just started).
const PENDING_AT_MOST: Duration = Duration::from_secs(2 * 60);

/// How long after `StartInstances` a `stopped` in EC2's answer is taken for its lag, not for a
/// machine that shut itself down.
const SHOWN_STOPPED_AT_MOST: Duration = Duration::from_secs(20);

/// How often a resume looks whether EC2 ran the member it took the start of.
const CONFIRM_EVERY: Duration = Duration::from_secs(1);

/// EC2's state reason of an instance it took the start of, then sent back to `stopped` for want
/// of capacity in its zone (API Reference, `StateReason`).
pub const NO_CAPACITY_REASON: &str = "Server.InsufficientInstanceCapacity";

/// What one start's runners have taken of the pool so far: instances claimed (being resumed or
/// retired by a sibling runner of the same start) and launches under way, which EC2 may not list
/// yet.
#[derive(Debug, Default)]
pub struct Claims {
    pub taken: HashSet<String>,
    pub launching: u32,
}

/// What came of resuming a stopped member.
enum Resumed {
    Took(Machine),
    /// Another start changed or started it first.
    Lost,
    /// EC2 would not start it for want of capacity in its zone.
    NoCapacity(Refusal),
}

/// What a look after `StartInstances` says of a resumed member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStart {
    /// Running, or on its way: the wait for its runner takes over (and reports a machine that
    /// ends or stops).
    Started,
    /// Not running yet, or EC2's read still shows the stop before this start.
    Waiting,
    /// EC2 took the start and sent the member back to `stopped` for want of capacity.
    NoCapacity,
}

/// What the member `seen` as EC2 lists it now, `elapsed` (of the user's time) after its start,
/// says: `before` is its state reason before the start, `moved` whether a look since saw it
/// `pending` or `running`. EC2's reads lag its writes, so a `stopped` with the capacity reason it
/// had already is news only once it moved, or once the lag is over.
fn after_start(
    seen: Option<&Machine>,
    before: Option<&str>,
    moved: bool,
    elapsed: Duration,
) -> AfterStart {
    let Some(seen) = seen else {
        // Not listed yet: the lag again.
        return if elapsed < PENDING_AT_MOST {
            AfterStart::Waiting
        } else {
            AfterStart::Started
        };
    };
    match &seen.state {
        State::Pending if elapsed < PENDING_AT_MOST => AfterStart::Waiting,
        State::Stopped | State::Stopping => {
            let no_capacity = seen.state_reason.as_deref() == Some(NO_CAPACITY_REASON);
            let news =
                moved || before != Some(NO_CAPACITY_REASON) || elapsed >= SHOWN_STOPPED_AT_MOST;
            if no_capacity && news {
                AfterStart::NoCapacity
            } else if !moved && elapsed < SHOWN_STOPPED_AT_MOST {
                AfterStart::Waiting
            } else {
                AfterStart::Started
            }
        }
        _ => AfterStart::Started,
    }
}

/// The `gpu-runner:instance-profile` of a member launched without one.
const NO_PROFILE: &str = "none";

/// The workflow whose runs a member serves, as its `gpu-runner:workflow` tag holds it (a tag value
/// takes 256 characters: a longer one is named by its digest).
pub fn workflow_of(plan: &LaunchPlan) -> String {
    let workflow = plan.binding.workflow_ref.as_deref().unwrap_or("unknown");
    if workflow.len() <= 256 {
        workflow.to_owned()
    } else {
        format!("sha256:{}", digest(workflow))
    }
}

fn digest(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a member on `candidate` is launched with beside its image, profile and type, as one
/// digest: a member launched otherwise is not what this start asks for. The runner user and
/// runner-sudo are part of it: a member whose jobs could become root never serves a start that
/// promises they cannot.
pub fn launch_settings(plan: &LaunchPlan, candidate: &Candidate) -> String {
    let mut groups = plan.security_group_ids.clone();
    groups.sort();
    let text = format!(
        "security-groups={}\nsubnet={}\nroot-volume={}\nrunner-user={}\nrunner-sudo={}",
        groups.join(","),
        candidate.subnet_id.as_deref().unwrap_or("default"),
        plan.root_volume_size_gib
            .map(|g| g.to_string())
            .unwrap_or_else(|| "image".to_owned()),
        plan.runner_user,
        plan.runner_sudo,
    );
    digest(&text)[..16].to_owned()
}

/// The tags a new pool instance is launched with besides the plan's.
pub fn first_tags(
    plan: &LaunchPlan,
    pool: &PoolInputs,
    candidate: &Candidate,
    image_id: &str,
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut tags = vec![
        (tag::IMAGE.to_owned(), image_id.to_owned()),
        (
            tag::INSTANCE_PROFILE.to_owned(),
            plan.iam_instance_profile
                .as_deref()
                .unwrap_or(NO_PROFILE)
                .to_owned(),
        ),
        (tag::WORKFLOW.to_owned(), workflow_of(plan)),
        (
            tag::LAUNCH_SETTINGS.to_owned(),
            launch_settings(plan, candidate),
        ),
        (
            tag::POOLED_AT.to_owned(),
            now.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        (tag::USES.to_owned(), "1".to_owned()),
    ];
    if let Some(why) = last_use(pool, 1) {
        tags.push((tag::RETIRE.to_owned(), why));
    }
    tags
}

/// Why the `uses`th job is an instance's last, if it is.
fn last_use(pool: &PoolInputs, uses: u32) -> Option<String> {
    (pool.max_uses > 0 && uses >= pool.max_uses)
        .then(|| format!("it served pool-max-uses ({}) jobs", pool.max_uses))
}

/// How many jobs the instance has been resumed or launched for.
pub fn uses(m: &Machine) -> u32 {
    m.tags
        .get(tag::USES)
        .and_then(|u| u.parse().ok())
        .unwrap_or(0)
}

/// The tags a start rewrites on the pool instance it resumes for `runner`: this run's.
pub fn run_tags(plan: &LaunchPlan, runner: &str, uses: u32) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = plan
        .tags
        .iter()
        .filter(|(k, _)| tag::PER_RUN.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    tags.push((tag::RUNNER.to_owned(), runner.to_owned()));
    tags.push((tag::USES.to_owned(), uses.to_string()));
    if let Some(why) = plan.pool.as_ref().and_then(|p| last_use(p, uses)) {
        tags.push((tag::RETIRE.to_owned(), why));
    }
    tags
}

/// Why a stopped member must serve no more jobs, if it must not.
pub fn retired(
    m: &Machine,
    plan: &LaunchPlan,
    pool: &PoolInputs,
    image_id: &str,
    now: DateTime<Utc>,
) -> Option<String> {
    if let Some(why) = m.tags.get(tag::RETIRE) {
        return Some(why.clone());
    }
    if !m.tags.contains_key(tag::WORKFLOW) {
        return Some(
            "it names no workflow that it serves (an older gpu-runner launched it)".to_owned(),
        );
    }
    if let Some(had) = m.tags.get(tag::LAUNCH_SETTINGS)
        && !plan
            .candidates
            .iter()
            .any(|c| launch_settings(plan, c) == *had)
    {
        return Some(
            "it was launched with other settings (security groups, subnet, root volume, runner \
             user or runner-sudo) than this start's"
                .to_owned(),
        );
    }
    let profile = plan.iam_instance_profile.as_deref();
    // EC2 keeps the profile a member was launched with: its jobs (and jit-handoff: ssm) would get
    // another role than the start asks for. A member from before this tag is kept.
    let wanted = profile.unwrap_or(NO_PROFILE);
    if let Some(had) = m.tags.get(tag::INSTANCE_PROFILE)
        && had != wanted
    {
        return Some(format!(
            "it was launched with instance profile {had}, and iam-instance-profile asks for \
             {wanted}"
        ));
    }
    if m.tags.get(tag::IMAGE).is_some_and(|i| i != image_id) {
        return Some(format!(
            "its image {} is not the one image-id resolves to now ({image_id})",
            m.tags.get(tag::IMAGE).map(String::as_str).unwrap_or("")
        ));
    }
    let pooled_at = m
        .tags
        .get(tag::POOLED_AT)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    if pool.max_age_days > 0
        && pooled_at.is_some_and(|t| now - t > TimeDelta::days(i64::from(pool.max_age_days)))
    {
        return Some(format!(
            "it is older than pool-max-age-days ({})",
            pool.max_age_days
        ));
    }
    last_use(pool, uses(m))
}

/// What a start does with the pool as it finds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Resume this stopped member.
    Resume(Machine),
    /// Launch a new member: the pool has room.
    Launch,
    /// Nothing free, and no room: `why`, in words.
    Wait { why: String },
    /// A member of a wanted type is still stopping: it is free in a moment.
    Soon { why: String },
}

/// Picks a stopped, unclaimed member whose instance type is one of the plan's candidates (in the
/// plan's order), else room for a new one. `members` are the pool's instances in any state but
/// ended; `retiring` those about to be terminated (they leave room).
pub fn choose(
    plan: &LaunchPlan,
    pool: &PoolInputs,
    members: &[Machine],
    claims: &Claims,
    retiring: &HashSet<String>,
) -> Choice {
    let free = |m: &&Machine| {
        m.state == State::Stopped && !claims.taken.contains(&m.id) && !retiring.contains(&m.id)
    };
    for candidate in &plan.candidates {
        if let Some(m) = members
            .iter()
            .filter(free)
            .find(|m| m.instance_type == candidate.instance_type)
        {
            return Choice::Resume(m.clone());
        }
    }
    let staying = members.iter().filter(|m| !retiring.contains(&m.id)).count() as u32;
    if staying + claims.launching < pool.size {
        return Choice::Launch;
    }
    let busy = members
        .iter()
        .filter(|m| !m.state.is_paused() || claims.taken.contains(&m.id))
        .count();
    let stopping = members
        .iter()
        .filter(|m| m.state == State::Stopping)
        .count();
    Choice::Wait {
        why: format!(
            "the pool holds pool-size ({}) instances: {busy} busy, {stopping} still stopping, \
             and none of the rest is a stopped {}",
            pool.size,
            plan.candidates
                .iter()
                .map(|c| c.instance_type.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// The instance `pool-instance-id` names, checked to be one of `repository`'s pool instances of the
/// plan's CPU architecture.
pub fn check_named(
    found: Option<&Machine>,
    id: &str,
    plan: &LaunchPlan,
    region: &str,
) -> Result<Machine, Error> {
    let repository = &plan.binding.repository;
    let Some(m) = found.filter(|m| !m.state.is_ending()) else {
        return Err(Refused::Pool {
            what: format!("pool-instance-id {id} names no live instance in {region}"),
            fix: "Name an instance that exists in this region (a pool start's instance-ids \
                  output), or use pool: NAME to let start launch one."
                .to_owned(),
        }
        .into());
    };
    let named_pool = plan.pool.as_ref().and_then(|p| p.name.as_deref());
    if let (Some(want), Some(have)) = (named_pool, m.tags.get(tag::POOL))
        && want != have
    {
        return Err(Refused::Pool {
            what: format!(
                "pool-instance-id {id} is a member of the pool \"{have}\", not of \"{want}\""
            ),
            fix: format!("Set pool: {have}, or leave pool out and name the instance alone."),
        }
        .into());
    }
    if !m.belongs_to(repository)
        || m.lifecycle() != Lifecycle::Pooled
        || !m.tags.contains_key(tag::POOL)
    {
        return Err(Refused::Pool {
            what: format!(
                "pool-instance-id {id} is not one of {repository}'s pool instances: it lacks \
                 gpu-runner's pool tags ({}=pooled, {}, {}={repository})",
                tag::LIFECYCLE,
                tag::POOL,
                tag::REPOSITORY
            ),
            fix: "gpu-runner resumes only instances a pool start launched for this repository: \
                  name one of those (a pool start's instance-ids output), or use pool: NAME."
                .to_owned(),
        }
        .into());
    }
    let want = plan
        .candidates
        .first()
        .map(|c| Arch::of_instance_type(&c.instance_type));
    let have = Arch::of_instance_type(&m.instance_type);
    if want.is_some_and(|w| w != have) {
        return Err(Refused::Pool {
            what: format!(
                "pool-instance-id {id} is a {} ({}), but instance-types is {}",
                m.instance_type,
                have.name(),
                want.map(Arch::name).unwrap_or_default()
            ),
            fix: format!(
                "Set instance-types: {} so that start hands it the runner package of its \
                 architecture.",
                m.instance_type
            ),
        }
        .into());
    }
    Ok(m.clone())
}

impl super::Ec2 {
    /// A machine from the plan's pool: a stopped member resumed, else a new one launched into the
    /// pool while it has room, else (with `pool-full: wait`) the first member returned, until the
    /// startup timeout.
    pub(super) async fn acquire_pooled(
        &self,
        plan: &LaunchPlan,
        pool: &PoolInputs,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<Acquired, Error> {
        let image_id = self.image_id()?.to_owned();
        let waited_at_most = self.clock.scaled(Duration::from_secs(
            u64::from(plan.startup_timeout_minutes) * 60,
        ));
        let began = std::time::Instant::now();
        let mut said_waiting = false;
        // Members EC2 would not start for want of capacity, and those refusals, for the summary.
        let mut stuck: HashSet<String> = HashSet::new();
        let mut refused: Vec<Refusal> = Vec::new();
        loop {
            if pool.instance_id.is_some() && !stuck.is_empty() {
                // A pool of one has nowhere else to go.
                return Err(Refused::NoCapacity { tried: refused }.into());
            }
            let choice = {
                let mut claims = self.claims.lock().await;
                let members = self.members(plan, pool).await?;
                // The named instance is the pool: it is never retired, only resumed.
                let mut retiring = HashSet::new();
                if pool.instance_id.is_none() {
                    let now = Utc::now();
                    for m in &members {
                        if m.state != State::Stopped || claims.taken.contains(&m.id) {
                            continue;
                        }
                        if let Some(why) = retired(m, plan, pool, &image_id, now) {
                            actions.info(&format!(
                                "Retiring {} from the pool: {why}; terminating it",
                                m.id
                            ));
                            self.api.terminate(std::slice::from_ref(&m.id)).await?;
                            retiring.insert(m.id.clone());
                        }
                    }
                }
                // A stuck member is passed over, as a retiring one is; should a launch need its
                // place in a full pool, it is retired for the new one, which lands where there
                // is capacity.
                let mut passed_over = retiring.clone();
                passed_over.extend(stuck.iter().cloned());
                let choice = choose(plan, pool, &members, &claims, &passed_over);
                let in_pool = members.iter().filter(|m| !retiring.contains(&m.id)).count() as u32;
                if matches!(choice, Choice::Launch) && in_pool + claims.launching >= pool.size {
                    if let Some(id) = members.iter().map(|m| &m.id).find(|id| stuck.contains(*id)) {
                        actions.info(&format!(
                            "Retiring {id} from the pool: EC2 has no capacity to start it in its \
                             zone, and the pool is full; a new instance takes its place"
                        ));
                        self.api.terminate(std::slice::from_ref(id)).await?;
                        stuck.remove(id);
                    }
                }
                // A member of a wanted type still stopping (a stop returns as soon as EC2 takes
                // it) is free in a moment: better than a cold launch, or a full pool's failure.
                let stopping: Vec<&str> = members
                    .iter()
                    .filter(|m| {
                        m.state == State::Stopping
                            && !claims.taken.contains(&m.id)
                            && !passed_over.contains(&m.id)
                            && plan
                                .candidates
                                .iter()
                                .any(|c| c.instance_type == m.instance_type)
                    })
                    .map(|m| m.id.as_str())
                    .collect();
                let soon =
                    !stopping.is_empty() && began.elapsed() < self.clock.scaled(STOPPING_AT_MOST);
                let choice = match choice {
                    Choice::Launch | Choice::Wait { .. } if soon => Choice::Soon {
                        why: format!("{} is still stopping", stopping.join(" and ")),
                    },
                    // The named instance is all there is: nothing to launch.
                    Choice::Launch if pool.instance_id.is_some() => Choice::Wait {
                        why: members
                            .first()
                            .map(|m| format!("it is {}", m.state.name()))
                            .unwrap_or_default(),
                    },
                    choice => choice,
                };
                match &choice {
                    Choice::Resume(m) => {
                        claims.taken.insert(m.id.clone());
                    }
                    Choice::Launch => claims.launching += 1,
                    Choice::Wait { .. } | Choice::Soon { .. } => {}
                }
                choice
            };
            let why = match choice {
                Choice::Resume(m) => match self.resume(plan, handoff, &m, actions).await? {
                    Resumed::Took(machine) => return Ok(Acquired { machine, refused }),
                    // Another start took it first: look again.
                    Resumed::Lost => continue,
                    Resumed::NoCapacity(refusal) => {
                        self.claims.lock().await.taken.remove(&m.id);
                        stuck.insert(m.id.clone());
                        refused.push(refusal);
                        continue;
                    }
                },
                Choice::Launch => {
                    let launched = self.launch_new(plan, handoff, actions).await;
                    let mut claims = self.claims.lock().await;
                    claims.launching = claims.launching.saturating_sub(1);
                    return match launched {
                        Ok(mut a) => {
                            claims.taken.insert(a.machine.id.clone());
                            refused.append(&mut a.refused);
                            a.refused = refused;
                            Ok(a)
                        }
                        Err(Error::Refused(Refused::NoCapacity { mut tried })) => {
                            refused.append(&mut tried);
                            Err(Refused::NoCapacity { tried: refused }.into())
                        }
                        Err(e) => Err(e),
                    };
                }
                Choice::Soon { why } => {
                    if !said_waiting {
                        actions.info(&format!("Waiting: {why}"));
                        said_waiting = true;
                    }
                    self.clock.sleep(LOOK_EVERY).await;
                    continue;
                }
                Choice::Wait { why } => why,
            };
            let what = match &pool.instance_id {
                Some(id) => format!("pool-instance-id {id} is busy: {why}"),
                None => format!(
                    "no instance of the pool \"{}\" is free: {why}",
                    pool.name.as_deref().unwrap_or_default()
                ),
            };
            if !pool.wait_when_full || began.elapsed() >= waited_at_most {
                let waited = if pool.wait_when_full {
                    format!(
                        " after waiting startup-timeout-minutes ({})",
                        plan.startup_timeout_minutes
                    )
                } else {
                    String::new()
                };
                return Err(Refused::Pool {
                    what: format!("{what}{waited}"),
                    fix: "Raise pool-size so that more jobs can run at once, or with pool-full: \
                          wait raise startup-timeout-minutes; a member still running after its \
                          job ended is paused by its stop job or the next cleanup run."
                        .to_owned(),
                }
                .into());
            }
            if !said_waiting {
                actions.info(&format!("Waiting: {what}"));
                said_waiting = true;
            }
            self.clock.sleep(LOOK_EVERY).await;
        }
    }

    /// The pool's members as EC2 lists them; for `pool-instance-id`, that one instance, checked.
    async fn members(&self, plan: &LaunchPlan, pool: &PoolInputs) -> Result<Vec<Machine>, Error> {
        if let Some(id) = &pool.instance_id {
            let found = self.api.describe(std::slice::from_ref(id)).await?;
            let named = check_named(found.iter().find(|m| &m.id == id), id, plan, &self.region)?;
            return Ok(vec![named]);
        }
        let name = pool.name.as_deref().unwrap_or_default();
        // Another workflow's members are not this start's to resume, retire or count.
        let workflow = workflow_of(plan);
        Ok(self
            .api
            .pool_members(&plan.binding.repository, name)
            .await?
            .into_iter()
            .filter(|m| m.tags.get(tag::WORKFLOW).is_none_or(|w| *w == workflow))
            .collect())
    }

    /// Hands the stopped member `m` this runner's boot script and starts it.
    async fn resume(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        m: &Machine,
        actions: &Actions,
    ) -> Result<Resumed, Error> {
        let lost = |e: &MachineError| e.code() == "IncorrectInstanceState";
        let gpus = self.gpus_of(&m.instance_type).await;
        // Pools refuse spot (a stopped instance cannot be a one-time spot request): no spot price.
        let user_data =
            super::user_data::render(plan, handoff, &m.instance_type, gpus, m.market, Vec::new())?;
        match self.api.set_user_data(&m.id, &user_data).await {
            Err(e) if lost(&e) => return Ok(Resumed::Lost),
            other => other?,
        }
        // Tagged for this run before it starts, so that a cancel from here on finds it by label.
        let uses = uses(m) + 1;
        let tags = run_tags(plan, &handoff.runner.name, uses);
        self.api.create_tags(&m.id, &tags).await?;
        // A stopped instance starts only in its own zone, which may have no capacity of its type
        // now: EC2 refuses the start, or takes it and sends the member back to `stopped`. The
        // member stays in the pool, with its last run's tags, and another one, or a launch, may
        // do.
        let zone = m.availability_zone.as_deref().unwrap_or("its zone");
        let no_capacity = |code: &str, advice: String| {
            Resumed::NoCapacity(Refusal {
                candidate: format!("resuming {} ({} in {zone})", m.id, m.instance_type),
                code: code.to_owned(),
                advice,
                quota: None,
            })
        };
        let before = match self.api.start(&m.id).await {
            Err(e) if lost(&e) => return Ok(Resumed::Lost),
            Err(e) => {
                let Some(advice) =
                    super::errors::capacity_advice(e.code(), &m.instance_type, m.market)
                else {
                    return Err(e.into());
                };
                actions.info(&format!(
                    "EC2 would not start {} ({} in {zone}): {}; trying another member, or a new \
                     instance",
                    m.id,
                    m.instance_type,
                    e.code()
                ));
                self.untag_run(m, &tags).await;
                return Ok(no_capacity(e.code(), advice));
            }
            Ok(before) => before,
        };
        if before != State::Stopped {
            actions.info(&format!(
                "{} was {} already: another start took it; looking again",
                m.id,
                before.name()
            ));
            return Ok(Resumed::Lost);
        }
        if self.confirm_start(m).await? == AfterStart::NoCapacity {
            actions.info(&format!(
                "EC2 sent {} back to stopped ({} in {zone}): {NO_CAPACITY_REASON}; trying \
                 another member, or a new instance",
                m.id, m.instance_type
            ));
            self.untag_run(m, &tags).await;
            let advice =
                super::errors::capacity_advice(NO_CAPACITY_REASON, &m.instance_type, m.market)
                    .unwrap_or_default();
            return Ok(no_capacity(NO_CAPACITY_REASON, advice));
        }
        self.resumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.id.clone(), std::time::Instant::now());
        // It is this start's now: rollback returns it to the pool should the hand-over fail.
        self.hand_over(plan, handoff, m, actions).await?;
        actions.info(&format!(
            "Resumed {} ({} from the pool, its job {uses})",
            m.id, m.instance_type
        ));
        let mut machine = m.clone();
        machine.state = State::Pending;
        machine.launched_at = Some(Utc::now());
        machine.tags.extend(tags);
        Ok(Resumed::Took(machine))
    }

    /// Waits until EC2 runs the member it took the start of, or sends it back to `stopped` for
    /// want of capacity, before it is handed the runner.
    async fn confirm_start(&self, m: &Machine) -> Result<AfterStart, Error> {
        let began = std::time::Instant::now();
        let mut moved = false;
        loop {
            let elapsed = self.clock.unscaled(began.elapsed());
            let found = self.api.describe(std::slice::from_ref(&m.id)).await?;
            let seen = found.iter().find(|i| i.id == m.id);
            moved |= seen.is_some_and(|i| matches!(i.state, State::Pending | State::Running));
            match after_start(seen, m.state_reason.as_deref(), moved, elapsed) {
                AfterStart::Waiting => self.clock.sleep(CONFIRM_EVERY).await,
                done => return Ok(done),
            }
        }
    }

    /// Gives a member this start could not run back the tags of its last run, so that nothing
    /// of this run (its label, its count of jobs) points at it.
    async fn untag_run(&self, m: &Machine, tags: &[(String, String)]) {
        let last: Vec<(String, String)> = tags
            .iter()
            .filter_map(|(k, _)| m.tags.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        if let Err(e) = self.api.create_tags(&m.id, &last).await {
            tracing::warn!(instance = %m.id, error = %e, "could not give a pool member back its last run's tags");
        }
    }

    /// Stops pool instances with their disks (the next start finds them, waiting for one still
    /// stopping); one whose `gpu-runner:retire` tag says it served its last job is terminated
    /// instead.
    pub(super) async fn return_to_pool(
        &self,
        machines: &[Machine],
    ) -> (Vec<Released>, Option<MachineError>) {
        let (retire, keep): (Vec<&Machine>, Vec<&Machine>) = machines
            .iter()
            .partition(|m| m.tags.contains_key(tag::RETIRE));
        let ids = |ms: &[&Machine]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        let stop: Vec<&Machine> = keep
            .iter()
            .copied()
            .filter(|m| m.state != State::Stopped)
            .collect();
        let done = match self.api.terminate(&ids(&retire)).await {
            Ok(()) => self.stop_when_stoppable(&ids(&stop)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            return (vec![Released::Failed; machines.len()], Some(e));
        }
        // Not waited for: EC2 may take minutes, and the next start waits for a stopping member.
        let still = ids(&stop);
        let mut released = Vec::new();
        for m in machines {
            let retired = m.tags.get(tag::RETIRE);
            if retired.is_none() && m.state == State::Stopped {
                released.push(Released::AlreadyInPool);
                continue;
            }
            let (ran, cost) = self.ran_and_cost(m).await;
            released.push(match retired {
                Some(why) => Released::Retired {
                    why: why.clone(),
                    ran,
                    cost,
                },
                None => Released::ReturnedToPool {
                    ran,
                    cost,
                    still_stopping: still.contains(&m.id),
                },
            });
        }
        (released, None)
    }

    /// Stops these instances. One that was started a moment ago is `pending`, which EC2 does not
    /// stop (`IncorrectInstanceState`): that is asked again until it is running.
    async fn stop_when_stoppable(&self, ids: &[String]) -> Result<(), MachineError> {
        let began = std::time::Instant::now();
        loop {
            match self.api.stop(ids).await {
                Err(e)
                    if e.code() == "IncorrectInstanceState"
                        && began.elapsed() < self.clock.scaled(PENDING_AT_MOST) =>
                {
                    self.clock.sleep(LOOK_EVERY).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the instance was resumed so lately that EC2 may still show it stopped: its reads
    /// lag its writes by a moment.
    pub(super) fn just_resumed(&self, id: &str) -> bool {
        self.resumed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .is_some_and(|at| at.elapsed() < self.clock.scaled(SHOWN_STOPPED_AT_MOST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Market;

    fn pool(size: u32, max_uses: u32) -> PoolInputs {
        PoolInputs {
            name: Some("train".into()),
            size,
            wait_when_full: true,
            instance_id: None,
            max_uses,
            max_age_days: 30,
        }
    }

    fn member(id: &str, state: State, tags: &[(&str, &str)]) -> Machine {
        Machine {
            id: id.into(),
            instance_type: "g5.xlarge".into(),
            availability_zone: None,
            market: Market::OnDemand,
            state,
            state_reason: None,
            state_since: None,
            launched_at: None,
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .chain([
                    (tag::REPOSITORY.to_owned(), "octo/ml".to_owned()),
                    (tag::LIFECYCLE.to_owned(), "pooled".to_owned()),
                    (tag::POOL.to_owned(), "train".to_owned()),
                ])
                .collect(),
        }
    }

    fn plan(types: &[&str], pool: PoolInputs) -> LaunchPlan {
        let types = types.join(",");
        let env: crate::env::Env = [
            ("INPUT_MODE", "start"),
            ("INPUT_GITHUB-TOKEN", "ghp_pool"),
            ("INPUT_AWS-REGION", "us-east-1"),
            ("INPUT_INSTANCE-TYPES", types.as_str()),
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "1"),
        ]
        .into_iter()
        .collect();
        let crate::inputs::Inputs::Start(inputs) = crate::inputs::parse(&env).unwrap().inputs
        else {
            unreachable!()
        };
        let ctx = crate::context::Context::from_env(&env).unwrap();
        let mut plan = crate::plan::launch_plan(&inputs, &ctx, Utc::now(), "abcd1234");
        plan.pool = Some(pool);
        plan
    }

    #[test]
    fn a_stopped_member_of_a_wanted_type_is_resumed_before_anything_is_launched() {
        let p = pool(3, 0);
        let plan = plan(&["g6.xlarge", "g5.xlarge"], p.clone());
        let members = vec![
            member("i-run", State::Running, &[]),
            member("i-stop", State::Stopped, &[]),
        ];
        let none = HashSet::new();
        assert_eq!(
            choose(&plan, &p, &members, &Claims::default(), &none),
            Choice::Resume(members[1].clone())
        );
        let claimed = Claims {
            taken: ["i-stop".to_owned()].into(),
            launching: 0,
        };
        assert_eq!(choose(&plan, &p, &members, &claimed, &none), Choice::Launch);
        let full = Claims {
            taken: ["i-stop".to_owned()].into(),
            launching: 1,
        };
        assert!(matches!(
            choose(&plan, &p, &members, &full, &none),
            Choice::Wait { why } if why.contains("pool-size (3)") && why.contains("2 busy")
        ));
        // A member being retired leaves room for a new one.
        let retiring: HashSet<String> = ["i-run".to_owned()].into();
        assert_eq!(
            choose(&plan, &p, &members, &full, &retiring),
            Choice::Launch
        );
    }

    #[test]
    fn a_resumed_member_sent_back_to_stopped_for_capacity_is_told_from_ec2s_lag() {
        let s = Duration::from_secs;
        let seen = |state: State, reason: Option<&str>| {
            let mut m = member("i-1", state, &[]);
            m.state_reason = reason.map(str::to_owned);
            m
        };
        let user = Some("Client.UserInitiatedShutdown");
        let full = Some(NO_CAPACITY_REASON);
        let running = seen(State::Running, None);
        let pending = seen(State::Pending, None);
        let stopped_by_user = seen(State::Stopped, user);
        let sent_back = seen(State::Stopped, full);
        use AfterStart::*;
        assert_eq!(after_start(Some(&running), user, true, s(3)), Started);
        assert_eq!(after_start(Some(&pending), user, true, s(3)), Waiting);
        assert_eq!(after_start(None, user, false, s(1)), Waiting);
        // The stop before this start, still shown: wait; after the lag the wait reports it.
        assert_eq!(
            after_start(Some(&stopped_by_user), user, false, s(1)),
            Waiting
        );
        assert_eq!(
            after_start(Some(&stopped_by_user), user, false, s(30)),
            Started
        );
        // Sent back: at once when the reason is new, or the member was seen moving.
        assert_eq!(after_start(Some(&sent_back), user, false, s(1)), NoCapacity);
        assert_eq!(after_start(Some(&sent_back), full, true, s(1)), NoCapacity);
        // The same reason as before, never seen moving: the lag, until it is over.
        assert_eq!(after_start(Some(&sent_back), full, false, s(1)), Waiting);
        assert_eq!(
            after_start(Some(&sent_back), full, false, s(30)),
            NoCapacity
        );
        // Stuck in pending past the bound: the wait for the runner takes over.
        assert_eq!(after_start(Some(&pending), user, true, s(600)), Started);
    }

    #[test]
    fn a_member_is_retired_by_its_uses_its_age_its_image_its_settings_or_its_tag() {
        let now = Utc::now();
        let p = pool(4, 3);
        let pl = plan(&["g5.xlarge"], p.clone());
        let launched = first_tags(&pl, &p, &pl.candidates[0], "ami-1", now);
        let tags: Vec<(&str, &str)> = launched
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .filter(|(k, _)| *k != tag::USES)
            .chain([(tag::USES, "2")])
            .collect();
        let fresh = member("i-1", State::Stopped, &tags);
        assert_eq!(retired(&fresh, &pl, &p, "ami-1", now), None);
        assert!(
            retired(&fresh, &pl, &p, "ami-2", now)
                .is_some_and(|w| w.contains("ami-1") && w.contains("ami-2"))
        );
        let old = now + TimeDelta::days(31);
        assert!(retired(&fresh, &pl, &p, "ami-1", old).is_some_and(|w| w.contains("max-age-days")));
        let mut used = fresh.clone();
        used.tags.insert(tag::USES.into(), "3".into());
        assert!(
            retired(&used, &pl, &p, "ami-1", now).is_some_and(|w| w.contains("pool-max-uses (3)"))
        );
        // Another instance profile, or other settings: not what this start asks for.
        let profiled = LaunchPlan {
            iam_instance_profile: Some("gpu-runner-instance".into()),
            ..pl.clone()
        };
        assert!(
            retired(&fresh, &profiled, &p, "ami-1", now)
                .is_some_and(|w| w.contains("instance profile none"))
        );
        let without_sudo = LaunchPlan {
            runner_sudo: false,
            ..pl.clone()
        };
        assert!(
            retired(&fresh, &without_sudo, &p, "ami-1", now)
                .is_some_and(|w| w.contains("other settings"))
        );
        let grouped = LaunchPlan {
            security_group_ids: vec!["sg-1".into()],
            ..pl.clone()
        };
        assert!(retired(&fresh, &grouped, &p, "ami-1", now).is_some());
        // One that names no workflow cannot say whose runs it served.
        let mut untagged = fresh.clone();
        untagged.tags.remove(tag::WORKFLOW);
        assert!(
            retired(&untagged, &pl, &p, "ami-1", now)
                .is_some_and(|w| w.contains("names no workflow"))
        );
        assert_eq!(last_use(&p, 2), None);
        assert!(last_use(&p, 3).is_some());
        let tags = run_tags(&pl, "runner-1", 3);
        assert!(tags.iter().any(|(k, _)| k == tag::RETIRE));
        assert!(tags.iter().all(|(k, _)| k != tag::REPOSITORY
            && k != tag::POOL
            && k != tag::LIFECYCLE
            && k != tag::WORKFLOW
            && k != tag::LAUNCH_SETTINGS));
    }

    #[test]
    fn instance_id_must_name_one_of_this_repositorys_pool_instances() {
        let p = PoolInputs {
            name: None,
            instance_id: Some("i-0123456789abcdef0".into()),
            ..pool(1, 0)
        };
        let plan = plan(&["g5.xlarge"], p);
        let ours = member("i-0123456789abcdef0", State::Stopped, &[]);
        assert!(check_named(Some(&ours), &ours.id, &plan, "us-east-1").is_ok());
        let mut theirs = ours.clone();
        theirs
            .tags
            .insert(tag::REPOSITORY.into(), "someone/else".into());
        let err = check_named(Some(&theirs), &ours.id, &plan, "us-east-1").unwrap_err();
        assert!(
            err.to_string()
                .contains("not one of octo/ml's pool instances")
        );
        let mut plain = ours.clone();
        plain.tags.remove(tag::LIFECYCLE);
        assert!(check_named(Some(&plain), &ours.id, &plan, "us-east-1").is_err());
        assert!(
            check_named(None, &ours.id, &plan, "us-east-1")
                .unwrap_err()
                .to_string()
                .contains("names no live instance")
        );
        let mut arm = ours;
        arm.instance_type = "g5g.xlarge".into();
        assert!(
            check_named(Some(&arm), &arm.id, &plan, "us-east-1")
                .unwrap_err()
                .to_string()
                .contains("is a g5g.xlarge (arm64)")
        );
    }
}
