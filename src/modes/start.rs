//! `mode: start`: register a one-job runner, launch its GPU instance, wait until the runner is
//! online. Any failure after registration removes what was created, unless `keep-on-failure`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use chrono::{DateTime, Utc};

use crate::actions::{Actions, Annotation, Markdown};
use crate::boot::{self, BootParams, RunnerPackage};
use crate::clock::Clock;
use crate::cloud::aws::Ec2;
use crate::cloud::{
    Cloud, Instance, InstanceState, LaunchRequest, SPOT_ROLE_MISSING, Tagged, capacity_advice,
};
use crate::context::Context;
use crate::env::Env;
use crate::error::{Error, Refusal};
use crate::github::GithubError;
use crate::github::app::TokenNeeds;
use crate::github::groups;
use crate::github::octo::RunnerGroup;
use crate::github::{JitRunner, Runner, RunnerRegistry, RunnerStatus};
use crate::guard::{self, Judgment};
use crate::inputs::{GroupRef, RunnerScope, StartInputs};
use crate::modes::Github;
use crate::modes::post::state;
use crate::modes::readiness::PollSchedule;
use crate::modes::signals::Cancel;
use crate::modes::teardown::{self, Teardown};
use crate::plan::{self, LaunchPlan, Market, RunnerSpec};
use crate::pricing::{self, Price};
use crate::secret::Secret;

/// Lines of the instance's console shown when it ends while booting.
const CONSOLE_LINES: usize = 15;

/// Where the instance downloads the runner package: `{version}` and `{arch}` are filled in.
/// `GPU_RUNNER_RUNNER_DOWNLOAD_URL` names a mirror.
fn runner_package(env: &Env, inputs: &StartInputs) -> RunnerPackage {
    let template = env
        .non_empty("GPU_RUNNER_RUNNER_DOWNLOAD_URL")
        .unwrap_or(boot::DEFAULT_RUNNER_URL);
    RunnerPackage::new(
        template,
        &inputs.runner_version,
        inputs.arch,
        &inputs.runner_sha256,
    )
}

pub async fn run(
    inputs: &StartInputs,
    env: &Env,
    actions: &Actions,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let mut cancel = Cancel::install().map_err(|e| Error::Unsupported {
        what: format!("could not listen for the runner's cancel signals: {e}"),
        fix: "The container cannot handle signals; re-run the job.".to_owned(),
    })?;
    let ctx = Context::from_env(env)?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let plan = plan::launch_plan(inputs, &ctx, now, &nonce[..8]);
    tracing::info!(label = %plan.label, candidates = plan.candidates.len(), "planned the GPU runner");
    {
        let _group = actions.group("Plan");
        actions.verbatim(plan.to_text().trim_end());
    }

    // EC2 refuses user data over 16 KB: find out before anything is registered, with room kept
    // for the JIT config GitHub has not issued yet.
    let package = runner_package(env, inputs);
    check_boot_script_size(&plan, &package, boot::JIT_CONFIG_ROOM)?;

    // Before any credential is asked for: whose code would run on the instance? The job's signed
    // OIDC token must later name the event judged here.
    let event = env.non_empty("GITHUB_EVENT_NAME").unwrap_or_default();
    let payload = env
        .non_empty("GITHUB_EVENT_PATH")
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let public = payload
        .as_ref()
        .and_then(|p| p.pointer("/repository/private"))
        .and_then(serde_json::Value::as_bool)
        .map(|private| !private);
    let (judged_event, judgment) = if inputs.allow_untrusted {
        actions.info("allow-untrusted is set: the untrusted-trigger guard is off for this start");
        (None, Judgment::default())
    } else {
        let judgment = guard::check(
            event,
            payload.as_ref(),
            &ctx.repository(),
            &inputs.allowed_associations,
        )?;
        (Some(event), judgment)
    };
    let trust = Trust {
        judged_event,
        judgment,
        pull_request: guard::pull_request_of(event, payload.as_ref()),
        public,
    };

    // Nothing exists yet: a cancel here just stops.
    let setup = tokio::select! {
        setup = connect(inputs, &plan, env, &ctx, actions, &trust) => setup?,
        signal = cancel.cancelled() => {
            return Err(Error::Cancelled {
                signal,
                stage: "before gpu-runner created anything",
                rollback: "Nothing was registered or launched.".to_owned(),
            });
        }
    };
    let Setup {
        github,
        cloud,
        image_id,
        head_sha,
    } = &setup;
    if plan.dry_run {
        return dry_run(&plan, cloud, image_id, &package, actions).await;
    }
    if let Some(sha) = head_sha {
        // What was judged: a push to the pull request after this must not run unreviewed.
        actions.set_output("head-sha", sha)?;
    }

    // Before anything exists, so that the post step and stop can find what this start creates.
    actions.save_state(state::LABEL, &plan.label)?;
    actions.save_state(state::REGION, &plan.region)?;
    let clock = Clock::from_env(env);
    let launched = Launched::default();
    let outcome = tokio::select! {
        results = async {
            let _group = actions.group(&format!(
                "Launching {} GPU runner(s) and waiting for them",
                plan.runners.len()
            ));
            let (plan, package, launched) = (&plan, &package, &launched);
            let launches = join_all((0..plan.runners.len()).map(|n| async move {
                register_and_launch(plan, n, cloud, github, image_id, package, actions, launched)
                    .await
                    .map_err(|e| (n, e))
            }))
            .await;
            let (booting, failed): (Vec<_>, Vec<_>) = launches.into_iter().partition(Result::is_ok);
            let booting: Vec<Booting> = booting.into_iter().filter_map(Result::ok).collect();
            let mut results: Vec<(usize, Result<Online, Error>)> = failed
                .into_iter()
                .filter_map(Result::err)
                .map(|(n, e)| (n, Err(e)))
                .collect();
            results.extend(wait_online(plan, cloud, github, booting, actions, clock).await);
            // In the plan's order; each result names its runner, for allow-partial to remove
            // the failed ones.
            results.sort_by_key(|(n, _)| *n);
            results
                .into_iter()
                .map(|(n, r)| r.map_err(|e| (plan.runners[n].name.clone(), e)))
                .collect::<Vec<_>>()
        } => Ok(results),
        signal = cancel.cancelled() => Err(signal),
    };
    let launched = launched.take();
    let results = match outcome {
        Ok(results) => results,
        Err(signal) => {
            // A cancel removes everything, keep-on-failure or not: the user asked for it to end.
            let rollback = roll_back(&plan, cloud, github, &launched, actions).await;
            return Err(Error::Cancelled {
                signal,
                stage: if launched.is_empty() {
                    "while gpu-runner registered the runner and launched its instance"
                } else {
                    "while the GPU runner was starting"
                },
                rollback,
            });
        }
    };
    let (online, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let online: Vec<Online> = online.into_iter().filter_map(Result::ok).collect();
    let mut failed: Vec<(String, Error)> = failed.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        return report_online(&plan, &online, actions);
    }
    if plan.allow_partial && !online.is_empty() {
        return keep_partial(&plan, cloud, github, online, failed, actions).await;
    }
    let (_, cause) = failed.remove(0);
    if plan.keep_on_failure && !launched.is_empty() {
        // The instances stay for debugging; the runners, which can never take a job now, go.
        let mut t = Teardown::default();
        t.remove_runners(github, std::slice::from_ref(&plan.label), None)
            .await;
        let kept: Vec<&str> = launched.iter().map(|i| i.id.as_str()).collect();
        let mut rollback = format!(
            "Left behind: kept {} for debugging (keep-on-failure); it ends itself by {}, or run \
             mode: stop with label {}.",
            kept.join(", "),
            plan.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            plan.label
        );
        if let Some(e) = t.error {
            rollback.push_str(&format!(
                " Its runner could not be removed ({e}): delete it under Settings → Actions → \
                 Runners."
            ));
        }
        return Err(Error::AfterLaunch {
            cause: Box::new(cause),
            rollback,
        });
    }
    let rollback = roll_back(&plan, cloud, github, &launched, actions).await;
    Err(Error::AfterLaunch {
        cause: Box::new(cause),
        rollback,
    })
}

/// The instances launched so far, shared by the runners that launch in parallel: outputs, state
/// and rollback need all of them.
#[derive(Default)]
struct Launched(Mutex<Vec<Instance>>);

impl Launched {
    /// Adds one and saves them all at once, so that the stop job and the post step can always
    /// find every instance.
    fn add(&self, plan: &LaunchPlan, instance: Instance, actions: &Actions) -> Result<(), Error> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.push(instance);
        save_launch(plan, &all, actions)
    }

    fn take(&self) -> Vec<Instance> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Some runners came online, others did not, and `allow-partial` is set: the failed ones are
/// removed, the rest stay, and the step succeeds with a warning.
async fn keep_partial(
    plan: &LaunchPlan,
    cloud: &impl Cloud,
    github: &Github,
    online: Vec<Online>,
    failed: Vec<(String, Error)>,
    actions: &Actions,
) -> Result<(), Error> {
    let mut t = Teardown::default();
    let tagged = Tagged::Label {
        repository: &plan.binding.repository,
        label: &plan.label,
    };
    let found = cloud.find(tagged).await.map_err(Error::cloud)?;
    let names: Vec<String> = failed.iter().map(|(name, _)| name.clone()).collect();
    let theirs = teardown::Found {
        ours: found
            .into_iter()
            .filter(|i| {
                i.runner_name()
                    .is_some_and(|r| names.iter().any(|n| n == r))
            })
            .collect(),
        foreign: Vec::new(),
    };
    t.terminate(cloud, &[], &theirs).await;
    t.remove_runners(github, &names, None).await;
    let why: Vec<String> = failed
        .iter()
        .map(|(name, e)| format!("{name}: {}", e.to_string().trim_end_matches('.')))
        .collect();
    actions.annotate(
        &Annotation::warning(format!(
            "{} of {} GPU runners came online; the others were removed (allow-partial): {}. \
             Removed: {}.",
            online.len(),
            plan.runners.len(),
            why.join("; "),
            t.done().join(", ")
        ))
        .title("Some GPU runners did not start"),
    );
    let kept: Vec<Instance> = online.iter().map(|o| o.instance.clone()).collect();
    save_launch(plan, &kept, actions)?;
    report_online(plan, &online, actions)
}

/// GitHub and AWS, ready to use; nothing created yet.
struct Setup {
    github: Github,
    cloud: Ec2,
    image_id: String,
    /// The head commit of the pull request the run is about, as it was when it was judged.
    head_sha: Option<String>,
}

/// What the untrusted-trigger guard decided, before any call.
struct Trust<'a> {
    /// The event it passed, when it ran: the job's OIDC token must name the same.
    judged_event: Option<&'a str>,
    judgment: Judgment,
    /// The pull request the run is about, if any.
    pull_request: Option<guard::PullRequest>,
    /// Whether the repository is public, as the event's payload says.
    public: Option<bool>,
}

async fn connect(
    inputs: &StartInputs,
    plan: &LaunchPlan,
    env: &Env,
    ctx: &Context,
    actions: &Actions,
    trust: &Trust<'_>,
) -> Result<Setup, Error> {
    let mut github = super::runners(
        &inputs.common,
        inputs.common.scope(),
        TokenNeeds {
            actions: false,
            // A comment's pull request has no head commit in its payload: GitHub is asked.
            pull_requests: trust
                .pull_request
                .as_ref()
                .is_some_and(|p| p.head_sha.is_none()),
        },
        ctx,
        env,
        actions,
    )
    .await?;
    let head_sha = confirm_trust(&github, trust, ctx, actions).await?;
    let mut public = trust.public;
    if inputs.common.scope() == RunnerScope::Org {
        let group = org_group(&github, inputs.runner_group.as_ref(), ctx).await?;
        public = Some(group.1);
        let group = group.0;
        actions.info(&format!(
            "Registering in the organization {}'s runner group \"{}\" (id {})",
            ctx.owner, group.name, group.id
        ));
        github.registry.use_group(group.id);
    }
    let aws = super::aws_config(
        env,
        &inputs.common,
        &plan.region,
        ctx,
        actions,
        trust.judged_event,
    )
    .await?;
    let cloud = Ec2::new(&aws);
    let image_id = cloud
        .resolve_image(&plan.image)
        .await
        .map_err(Error::cloud)?;
    // Warnings only: the payload says whether the repository is public, or GitHub is asked.
    let public = match public {
        Some(public) => Some(public),
        None => github.registry.repository_is_public().await.ok(),
    };
    if public == Some(true) {
        warn_public_exposure(&github, inputs, ctx, actions).await;
    }
    Ok(Setup {
        github,
        cloud,
        image_id,
        head_sha,
    })
}

/// The guard's conditions that GitHub must confirm, before any AWS credential is asked for: a
/// comment approves only with its author's write access. Then the pull request's head commit as
/// it is now, which the GPU job should check out.
async fn confirm_trust(
    github: &Github,
    trust: &Trust<'_>,
    ctx: &Context,
    actions: &Actions,
) -> Result<Option<String>, Error> {
    if let Some(login) = &trust.judgment.approver {
        let permission = github
            .registry
            .collaborator_permission(login)
            .await
            .map_err(|e| github.error(e))?;
        guard::check_approval(login, &permission, &ctx.repository())?;
        actions.info(&format!(
            "{login}, who wrote the comment, has {permission} permission on {}",
            ctx.repository()
        ));
    }
    let Some(pr) = &trust.pull_request else {
        return Ok(None);
    };
    let sha = match &pr.head_sha {
        Some(sha) => sha.clone(),
        None => github
            .registry
            .pull_request_head(pr.number)
            .await
            .map_err(|e| github.error(e))?,
    };
    actions.info(&format!(
        "Judged pull request #{} at its head commit {sha}: check out the head-sha output in the \
         GPU job, so that a later push does not run unreviewed",
        pr.number
    ));
    Ok(Some(sha))
}

/// On a public repository anyone can open a pull request. GitHub hands the runner any queued
/// job its labels cover; the machine refuses jobs of other runs (the boot script's job-started
/// hook), but a refused job costs this run its machine: say what widens that.
async fn warn_public_exposure(
    github: &Github,
    inputs: &StartInputs,
    ctx: &Context,
    actions: &Actions,
) {
    let repository = ctx.repository();
    match github.registry.fork_pr_approval_policy().await {
        Ok(policy) if policy == "all_external_contributors" => {}
        Ok(policy) => actions.annotate(
            &Annotation::warning(format!(
                "{repository} is public and runs the workflows of some outside contributors' \
                 fork pull requests without approval (fork pull request approval policy: \
                 {policy}). Such a job can ask for runs-on: self-hosted and be handed this GPU \
                 machine while it waits for its job: the machine refuses every job of another \
                 run and ends, but this run then loses its machine. Under Settings → Actions → \
                 General, set \"Approval for running fork pull request workflows from \
                 contributors\" to \"Require approval for all external contributors\"."
            ))
            .title("Fork pull requests run without approval"),
        ),
        Err(e) => actions.info(&format!(
            "Could not read {repository}'s approval policy for fork pull requests ({e}); it \
             needs the Administration permission"
        )),
    }
    if !inputs.labels.is_empty() {
        actions.annotate(
            &Annotation::warning(format!(
                "labels ({}) are extra labels on a runner of the public repository \
                 {repository}: a queued job of any of its workflow runs, a fork's pull request \
                 too, whose runs-on asks only for these and self-hosted, Linux, X64 can be \
                 handed this machine before the GPU job. The machine refuses jobs of other runs, \
                 but this run then loses its machine. The label output alone is enough for \
                 runs-on: remove labels.",
                inputs.labels.join(", ")
            ))
            .title("Extra labels on a public repository"),
        );
    }
}

/// The organization's runner group to register in (`runner-group`, else its default group), once
/// it is known to serve this repository: otherwise the job would wait in the queue for good. With
/// it, whether the repository is public.
async fn org_group(
    github: &Github,
    wanted: Option<&GroupRef>,
    ctx: &Context,
) -> Result<(RunnerGroup, bool), Error> {
    let registry = &github.registry;
    let problem = |p: groups::GroupProblem| Error::Github {
        source: GithubError {
            operation: "choosing the runner group",
            status: None,
            message: p.message,
        },
        hint: p.fix,
    };
    let all = registry
        .runner_groups()
        .await
        .map_err(|e| github.error(e))?;
    let group = match wanted {
        Some(wanted) => groups::find(&all, wanted, &ctx.owner).map_err(problem)?,
        None => all
            .iter()
            .find(|g| g.default)
            .or_else(|| all.iter().find(|g| g.id == 1))
            .ok_or_else(|| {
                problem(groups::GroupProblem {
                    message: format!(
                        "the organization {} shows no default runner group",
                        ctx.owner
                    ),
                    fix: "Name the group to use in runner-group.".to_owned(),
                })
            })?,
    };
    let public = registry
        .repository_is_public()
        .await
        .map_err(|e| github.error(e))?;
    let selected = if group.visibility == "selected" {
        Some(
            registry
                .group_serves_repository(group.id)
                .await
                .map_err(|e| github.error(e))?,
        )
    } else {
        None
    };
    groups::check_serves(group, &ctx.repository(), public, selected).map_err(problem)?;
    Ok((group.clone(), public))
}

/// What a start measured, for the outputs and the summary.
struct Online {
    instance: Instance,
    /// The candidates tried before the one that launched.
    refused: Vec<Refusal>,
    price: Option<Price>,
    /// What the boot script's GPU probe found, from the console, when it is there yet.
    gpu: Option<String>,
    launch_to_running: Option<Duration>,
    launch_to_online: Duration,
}

/// A runner whose instance was launched, waiting to come online.
struct Booting {
    /// Its place in the plan: results are reported in the plan's order.
    n: usize,
    jit: JitRunner,
    instance: Instance,
    refused: Vec<Refusal>,
    launched_at: Instant,
    running_after: Option<Duration>,
}

/// Registers one runner and launches its instance. The instance joins `launched` as soon as it
/// exists.
#[allow(clippy::too_many_arguments)]
async fn register_and_launch(
    plan: &LaunchPlan,
    n: usize,
    cloud: &impl Cloud,
    github: &Github,
    image_id: &str,
    package: &RunnerPackage,
    actions: &Actions,
    launched: &Launched,
) -> Result<Booting, Error> {
    let runner = &plan.runners[n];
    let jit = github
        .registry
        .create_jit_runner(&runner.name, &runner.labels)
        .await
        .map_err(|e| github.error(e))?;
    actions.add_mask(jit.encoded_jit_config.expose());
    actions.info(&format!(
        "Registered runner {} (id {}) with labels {}",
        jit.runner.name,
        jit.runner.id,
        runner.labels.join(", ")
    ));
    let (instance, refused) = launch(plan, runner, cloud, &jit, image_id, package, actions).await?;
    let launched_at = Instant::now();
    launched.add(plan, instance.clone(), actions)?;
    Ok(Booting {
        n,
        jit,
        instance,
        refused,
        launched_at,
        running_after: None,
    })
}

/// What one look found about a booting runner.
enum Look {
    Waiting,
    Online,
    Failed(Error),
}

/// Waits until every booting runner is online, or has failed, or ran out of
/// `startup-timeout-minutes`. Each look is one runner list and one `DescribeInstances` of every
/// instance still booting, so that its cost does not grow with `count`.
async fn wait_online(
    plan: &LaunchPlan,
    cloud: &impl Cloud,
    github: &Github,
    booting: Vec<Booting>,
    actions: &Actions,
    clock: Clock,
) -> Vec<(usize, Result<Online, Error>)> {
    let deadline = clock.scaled(Duration::from_secs(
        u64::from(plan.startup_timeout_minutes) * 60,
    ));
    let schedule = PollSchedule::default();
    let started = Instant::now();
    let mut pending = booting;
    let mut results = Vec::new();
    while !pending.is_empty() {
        let runners = github.registry.runners().await;
        if let Err(e) = &runners {
            tracing::warn!(error = %e, "could not list the runners; trying again");
        }
        let ids: Vec<String> = pending.iter().map(|b| b.instance.id.clone()).collect();
        let instances = cloud.describe(&ids).await;
        if let Err(e) = &instances {
            tracing::warn!(error = %e, "could not read the instances; trying again");
        }
        let mut still = Vec::new();
        let mut ready = Vec::new();
        for mut b in pending {
            let look = look(
                plan,
                cloud,
                &mut b,
                runners.as_deref().ok(),
                instances.as_deref().ok(),
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
        // Online as of this look; their price and GPU facts are read together, after it.
        let online = join_all(ready.into_iter().map(|(after, b)| online(cloud, b, after))).await;
        results.extend(online.into_iter().map(|(n, o)| (n, Ok(o))));
        pending = still;
        if !pending.is_empty() {
            clock
                .sleep(schedule.interval(clock.unscaled(started.elapsed())))
                .await;
        }
    }
    results
}

/// What this look says of `b`: online, failed (its instance ended, its runner was removed, the
/// timeout passed) or still booting.
async fn look(
    plan: &LaunchPlan,
    cloud: &impl Cloud,
    b: &mut Booting,
    runners: Option<&[Runner]>,
    instances: Option<&[Instance]>,
    deadline: Duration,
    actions: &Actions,
) -> Look {
    if let Some(runners) = runners {
        match runners.iter().find(|r| r.id == b.jit.runner.id) {
            Some(r) if r.status == RunnerStatus::Online => return Look::Online,
            Some(_) => {}
            None => {
                // An ephemeral runner is removed after its one job: the console says whether
                // the machine refused a job of another run (phase=job-refused).
                let console = console_tail(cloud, &b.instance.id).await;
                let refused = console.iter().any(|l| l.contains("phase=job-refused"));
                let fix = if refused {
                    "GitHub handed the runner a queued job of another workflow run whose runs-on \
                     its labels cover (self-hosted alone does), and the machine refused it and \
                     ended. Find that job (its run failed with \"gpu-runner refused this job\"), \
                     give such jobs labels no gpu-runner machine has, and re-run this job."
                } else {
                    "Someone or something deleted the runner; re-run the job."
                };
                return Look::Failed(Error::Startup {
                    what: format!(
                        "the runner {} was removed from GitHub while its instance booted",
                        b.jit.runner.name
                    ),
                    console,
                    fix: fix.to_owned(),
                });
            }
        }
    }
    let id = &b.instance.id;
    match instances
        .and_then(|all| all.iter().find(|i| &i.id == id))
        .map(|i| &i.state)
    {
        Some(InstanceState::Running) if b.running_after.is_none() => {
            b.running_after = Some(b.launched_at.elapsed());
            actions.info(&format!("{id} is running; waiting for its runner"));
        }
        Some(s)
            if s.is_ending() || matches!(s, InstanceState::Stopping | InstanceState::Stopped) =>
        {
            return Look::Failed(Error::Startup {
                what: format!("{id} ended while it booted ({})", s.name()),
                console: console_tail(cloud, id).await,
                fix: "The boot phases above say why. A failed GPU probe means the image has no \
                      working NVIDIA driver for this instance type: use the default image-id or \
                      one with the driver installed."
                    .to_owned(),
            });
        }
        _ => {}
    }
    if b.launched_at.elapsed() >= deadline {
        return Look::Failed(Error::Startup {
            what: format!(
                "the runner of {id} did not come online within startup-timeout-minutes ({})",
                plan.startup_timeout_minutes
            ),
            console: console_tail(cloud, id).await,
            fix: "The boot phases above show how far the instance got. If it was still \
                  installing, raise startup-timeout-minutes; if it never reached the runner \
                  phase, check that the instance can reach github.com (a subnet with a NAT \
                  gateway or a public IP)."
                .to_owned(),
        });
    }
    Look::Waiting
}

/// What an online runner's start reports: its price and, when EC2 shows the console by now,
/// what the GPU probe found. `launch_to_online` is when the look saw it online.
async fn online(cloud: &impl Cloud, b: Booting, launch_to_online: Duration) -> (usize, Online) {
    let i = &b.instance;
    let price = pricing::price(
        cloud,
        &i.instance_type,
        i.market,
        i.availability_zone.as_deref(),
    )
    .await;
    let gpu = gpu_facts(cloud, &i.id).await;
    (
        b.n,
        Online {
            instance: b.instance,
            refused: b.refused,
            price,
            gpu,
            launch_to_running: b.running_after,
            launch_to_online,
        },
    )
}

/// Launches the first candidate that has capacity.
async fn launch(
    plan: &LaunchPlan,
    runner: &RunnerSpec,
    cloud: &impl Cloud,
    jit: &JitRunner,
    image_id: &str,
    package: &RunnerPackage,
    actions: &Actions,
) -> Result<(Instance, Vec<Refusal>), Error> {
    let mut refused: Vec<Refusal> = Vec::new();
    let mut no_spot = false;
    for (n, candidate) in plan.candidates.iter().enumerate() {
        // Without the spot service-linked role no spot candidate launches: go on to on-demand.
        if no_spot && candidate.market == Market::Spot {
            continue;
        }
        let user_data = user_data(
            plan,
            runner,
            cloud,
            &candidate.instance_type,
            jit.encoded_jit_config.clone(),
            package,
        )
        .await?;
        let request = LaunchRequest {
            plan,
            runner_name: &runner.name,
            candidate,
            image_id,
            user_data: &user_data,
            dry_run: false,
            client_token: &format!("{}-{n}", runner.name),
        };
        match cloud.launch(request).await {
            Ok(instance) => {
                actions.info(&format!(
                    "Launched {} ({})",
                    instance.id,
                    candidate.describe()
                ));
                return Ok((instance, refused));
            }
            Err(e) => {
                let Some(advice) =
                    capacity_advice(e.code(), &candidate.instance_type, candidate.market)
                else {
                    return Err(Error::cloud(e));
                };
                no_spot |= e.code() == SPOT_ROLE_MISSING;
                actions.info(&format!(
                    "No capacity: {} ({}); trying the next candidate",
                    candidate.describe(),
                    e.code()
                ));
                refused.push(Refusal {
                    candidate: candidate.describe(),
                    code: e.code().to_owned(),
                    advice,
                });
            }
        }
    }
    Err(Error::NoCapacity { tried: refused })
}

/// The boot script for this runner and instance type, once it is known to fit EC2's user data
/// with the JIT config GitHub issued.
async fn user_data(
    plan: &LaunchPlan,
    runner: &RunnerSpec,
    cloud: &impl Cloud,
    instance_type: &str,
    jit_config: Secret,
    package: &RunnerPackage,
) -> Result<Secret, Error> {
    let jit_len = jit_config.expose().len();
    let params = boot_params(plan, runner, cloud, instance_type, jit_config, package).await;
    boot::check_size(&params, jit_len).map_err(Error::UserDataTooLarge)?;
    Ok(boot::render(&params))
}

async fn boot_params(
    plan: &LaunchPlan,
    runner: &RunnerSpec,
    cloud: &impl Cloud,
    instance_type: &str,
    jit_config: Secret,
    package: &RunnerPackage,
) -> BootParams {
    let gpus = cloud.gpu_count(instance_type).await.unwrap_or(0);
    params_for(plan, runner, instance_type, gpus, jit_config, package)
}

fn params_for(
    plan: &LaunchPlan,
    runner: &RunnerSpec,
    instance_type: &str,
    expected_gpus: u32,
    jit_config: Secret,
    package: &RunnerPackage,
) -> BootParams {
    BootParams {
        runner_name: runner.name.clone(),
        labels: runner.labels.clone(),
        runner_user: plan.runner_user.clone(),
        runner_sudo: plan.runner_sudo,
        jit_config,
        instance_type: instance_type.to_owned(),
        expected_gpus,
        max_lifetime_minutes: plan.max_lifetime_minutes,
        idle_timeout_minutes: plan.idle_timeout_minutes,
        runner: package.clone(),
        pre_runner_script: plan.pre_runner_script.clone(),
        binding: plan.binding.clone(),
    }
}

/// Whether the boot script of every runner and candidate fits EC2's user data with a JIT config
/// of `jit_len` bytes: the largest of them is checked (the longest name and instance type, a
/// two-digit GPU count).
fn check_boot_script_size(
    plan: &LaunchPlan,
    package: &RunnerPackage,
    jit_len: usize,
) -> Result<(), Error> {
    let longest = |names: Vec<&str>| {
        names
            .into_iter()
            .max_by_key(|n| n.len())
            .unwrap_or_default()
            .to_owned()
    };
    let instance_type = longest(
        plan.candidates
            .iter()
            .map(|c| c.instance_type.as_str())
            .collect(),
    );
    let Some(runner) = plan
        .runners
        .iter()
        .max_by_key(|r| r.name.len() + r.labels.join(",").len())
    else {
        return Ok(());
    };
    let params = params_for(plan, runner, &instance_type, 99, Secret::new(""), package);
    boot::check_size(&params, jit_len)
        .map(|_| ())
        .map_err(Error::UserDataTooLarge)
}

/// The outputs and state for these instances (the first one's facts where one value is asked).
fn save_launch(plan: &LaunchPlan, all: &[Instance], actions: &Actions) -> Result<(), Error> {
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let ids = serde_json::json!(ids).to_string();
    actions.save_state(state::INSTANCE_IDS, &ids)?;
    actions.set_output("label", &plan.label)?;
    actions.set_output("labels", &serde_json::json!(plan.labels).to_string())?;
    let names: Vec<&str> = plan.runners.iter().map(|r| r.name.as_str()).collect();
    actions.set_output("runner-names", &serde_json::json!(names).to_string())?;
    actions.set_output("instance-ids", &ids)?;
    actions.set_output("region", &plan.region)?;
    if let Some(first) = all.first() {
        actions.set_output("instance-id", &first.id)?;
        actions.set_output("instance-type", &first.instance_type)?;
        actions.set_output(
            "availability-zone",
            first.availability_zone.as_deref().unwrap_or(""),
        )?;
        actions.set_output("market", first.market.name())?;
    }
    Ok(())
}

fn report_online(plan: &LaunchPlan, all: &[Online], actions: &Actions) -> Result<(), Error> {
    actions.save_state(state::ONLINE, "true")?;
    let Some(online) = all.first() else {
        return Ok(());
    };
    let i = &online.instance;
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    actions.info(&format!(
        "The GPU runner is online: runs-on: {} ({} in {}, {})",
        plan.label,
        i.instance_type,
        i.availability_zone.as_deref().unwrap_or(&plan.region),
        i.market.name()
    ));
    let rows: Vec<Vec<String>> = [
        ("Label (runs-on)", plan.label.clone()),
        ("Instance", i.id.clone()),
        ("Instance type", i.instance_type.clone()),
        (
            "Availability zone",
            i.availability_zone.clone().unwrap_or_default(),
        ),
        ("Market", i.market.name().to_owned()),
        (
            "Hourly price",
            online
                .price
                .as_ref()
                .map(Price::describe)
                .unwrap_or_else(|| {
                    format!(
                        "unknown: gpu-runner has no list price for {}",
                        i.instance_type
                    )
                }),
        ),
        (
            "Tried first, without capacity",
            if online.refused.is_empty() {
                "nothing: the first candidate launched".to_owned()
            } else {
                online
                    .refused
                    .iter()
                    .map(|r| format!("{} → {}", r.candidate, r.code))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        (
            "Launch → running",
            online
                .launch_to_running
                .map(secs)
                .unwrap_or_else(|| "not seen".to_owned()),
        ),
        ("Launch → runner online", secs(online.launch_to_online)),
        (
            "GPU",
            online.gpu.clone().unwrap_or_else(|| {
                "not in the console yet: the job has it as GPU_RUNNER_GPU_* variables".to_owned()
            }),
        ),
        (
            "Ends itself by",
            plan.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ]
    .into_iter()
    .map(|(k, v)| vec![k.to_owned(), v])
    .collect();
    let mut summary = Markdown::new()
        .heading(3, "GPU runner online")
        .table(&["", ""], &rows);
    if all.len() > 1 {
        // The table above is the first runner's; each has a line here.
        let each: Vec<Vec<String>> = all
            .iter()
            .map(|o| {
                vec![
                    o.instance.runner_name().unwrap_or_default().to_owned(),
                    o.instance.id.clone(),
                    o.instance.instance_type.clone(),
                    o.instance.availability_zone.clone().unwrap_or_default(),
                    o.instance.market.name().to_owned(),
                    secs(o.launch_to_online),
                ]
            })
            .collect();
        summary = summary.paragraph(&format!(
            "{} runners, each with its own label (its name) besides {}:",
            all.len(),
            plan.label
        ));
        summary = summary.table(
            &[
                "Runner",
                "Instance",
                "Type",
                "Zone",
                "Market",
                "Launch → online",
            ],
            &each,
        );
    }
    actions.append_summary(&summary.build())?;
    Ok(())
}

/// Removes what a failed or cancelled start created, found by id and by its label (a cancel may
/// come before `RunInstances` answered); says what it did, for the error message.
async fn roll_back(
    plan: &LaunchPlan,
    cloud: &impl Cloud,
    github: &Github,
    launched: &[Instance],
    actions: &Actions,
) -> String {
    let _group = actions.group("Rolling back");
    let ids: Vec<String> = launched.iter().map(|i| i.id.clone()).collect();
    let mut t = Teardown::default();
    let repository = &plan.binding.repository;
    let tagged = Tagged::Label {
        repository,
        label: &plan.label,
    };
    match teardown::find(cloud, &ids, Some(tagged), repository).await {
        Ok(found) => t.terminate(cloud, &ids, &found).await,
        Err(e) => t.error = Some(Error::cloud(e)),
    }
    t.remove_runners(github, std::slice::from_ref(&plan.label), None)
        .await;
    let done = t.done();
    let left = t.left();
    let mut text = if done.is_empty() {
        "Rolled back: nothing had been created.".to_owned()
    } else {
        format!("Rolled back: {}.", done.join(", "))
    };
    if !left.is_empty() || t.error.is_some() {
        let why = t.error.map(|e| format!(" ({e})")).unwrap_or_default();
        text.push_str(&format!(
            " Left behind: {}{why}; the instance ends itself by {}, or run mode: stop with label \
             {}, or remove the runner under Settings → Actions → Runners.",
            left.join(", "),
            plan.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            plan.label
        ));
    }
    actions.info(&text);
    text
}

/// The GPU probe's finding, from its console line
/// `phase=gpu-probe status=ok gpus=N first="NAME, MEMORY, DRIVER" cuda=V`. EC2 may publish the
/// console minutes late; then there is nothing to show yet.
async fn gpu_facts(cloud: &impl Cloud, id: &str) -> Option<String> {
    let text = cloud.console_output(id).await.ok()??;
    let line = text
        .lines()
        .find(|l| l.contains("gpu-runner: phase=gpu-probe status=ok"))?;
    let count = line.split("gpus=").nth(1)?.split(' ').next()?;
    let first = line.split("first=\"").nth(1)?.split('"').next()?;
    let cuda = line.split("cuda=").nth(1).unwrap_or("unknown");
    Some(format!(
        "{count} × {first} (name, memory, driver); CUDA {cuda}"
    ))
}

async fn console_tail(cloud: &impl Cloud, id: &str) -> Vec<String> {
    let Ok(Some(text)) = cloud.console_output(id).await else {
        return Vec::new();
    };
    let phases: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("gpu-runner: phase="))
        .collect();
    let lines: Vec<&str> = if phases.is_empty() {
        text.lines().collect()
    } else {
        phases
    };
    let skip = lines.len().saturating_sub(CONSOLE_LINES);
    lines[skip..].iter().map(|l| (*l).to_owned()).collect()
}

/// Proves the permissions with EC2's `DryRun` for the first candidate, and shows the plan with the
/// boot script (its JIT config redacted). Registers and launches nothing.
async fn dry_run(
    plan: &LaunchPlan,
    cloud: &impl Cloud,
    image_id: &str,
    package: &RunnerPackage,
    actions: &Actions,
) -> Result<(), Error> {
    let (Some(candidate), Some(runner)) = (plan.candidates.first(), plan.runners.first()) else {
        return Ok(());
    };
    let params = boot_params(
        plan,
        runner,
        cloud,
        &candidate.instance_type,
        Secret::new(""),
        package,
    )
    .await;
    {
        let _group = actions.group("Boot script (JIT config redacted)");
        actions.verbatim(boot::render_redacted(&params).trim_end());
    }
    let user_data = boot::render(&params);
    let request = LaunchRequest {
        plan,
        runner_name: &runner.name,
        candidate,
        image_id,
        user_data: &user_data,
        dry_run: true,
        client_token: &format!("{}-dry-run", plan.label),
    };
    let check = match cloud.launch(request).await {
        Err(e) if e.is_dry_run_success() => format!(
            "EC2 confirmed that the role may launch {} from {image_id} (DryRun).",
            candidate.describe()
        ),
        Err(e) => return Err(Error::cloud(e)),
        Ok(instance) => {
            // A cloud that ignores DryRun must not leave an instance behind.
            cloud
                .terminate(std::slice::from_ref(&instance.id))
                .await
                .map_err(Error::cloud)?;
            format!(
                "The cloud ignored DryRun and launched {}; it was terminated.",
                instance.id
            )
        }
    };
    actions.info(&check);
    actions.append_summary(
        &Markdown::new()
            .heading(3, "GPU runner: dry run")
            .paragraph(&format!(
                "Nothing was launched and no runner was registered. {check} This is what a start \
                 would do:"
            ))
            .raw(&plan.to_markdown())
            .build(),
    )?;
    actions.annotate(
        &Annotation::notice(format!(
            "Dry run: nothing was launched and no runner was registered. {check} The plan is in \
             the log and the job summary. Remove dry-run to launch."
        ))
        .title("GPU runner dry run"),
    );
    Ok(())
}
