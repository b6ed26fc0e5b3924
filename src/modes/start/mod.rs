//! `mode: start`: register a one-job runner, acquire its GPU machine, wait until the runner is
//! online. Any failure after registration removes what was created, unless `keep-on-failure`.
//!
//! The sequence is here; setup (trust, GitHub, the provider), launching, waiting, the report,
//! rollback and dry run have their own files.

mod dry_run;
mod launch;
mod report;
mod rollback;
mod setup;
pub mod spot;
pub mod wait;

#[cfg(test)]
mod tests;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::actions::Actions;
use crate::boot::{self, RunnerPackage};
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::github::RunnerRegistry;
use crate::inputs::StartInputs;
use crate::machine::{self, Provider};
use crate::modes::failure::Error;
use crate::modes::post::state;
use crate::modes::signals::Cancel;
use crate::modes::{self, Github};
use crate::plan::{self, LaunchPlan};
use launch::{Acquired, bring_online};
use report::{Online, report_online};
use setup::{Connection, Setup};
use wait::Readiness;

/// Where the machine downloads the runner package: `{version}` and `{arch}` are filled in.
/// `GPU_RUNNER_RUNNER_DOWNLOAD_URL` names a mirror.
fn runner_package(env: &Env, inputs: &StartInputs) -> RunnerPackage {
    let template = env
        .non_empty("GPU_RUNNER_RUNNER_DOWNLOAD_URL")
        .unwrap_or(boot::DEFAULT_RUNNER_URL);
    RunnerPackage::new(
        template,
        &inputs.runner.version,
        inputs.runner.arch,
        &inputs.runner.sha256,
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

    let result = planned(inputs, env, actions, &ctx, &plan, &mut cancel).await;
    if let Err(e) = &result {
        report::failed(&plan, e, actions);
    }
    result
}

/// Start once its plan is printed: every failure from here on also gets a job summary.
async fn planned(
    inputs: &StartInputs,
    env: &Env,
    actions: &Actions,
    ctx: &Context,
    plan: &LaunchPlan,
    cancel: &mut Cancel,
) -> Result<(), Error> {
    // Before anything is registered: will the runner's configuration reach the machine?
    let package = runner_package(env, inputs);
    machine::check_plan(plan, &package)?;
    let trust = match setup::judge(inputs, env, ctx, actions) {
        Ok(trust) => trust,
        Err(Error::Untrusted(why)) => {
            return modes::untrusted(why, inputs.trust.skips_refusals(), actions);
        }
        Err(e) => return Err(e),
    };

    // Nothing exists yet: a cancel here just stops.
    let setup = tokio::select! {
        setup = setup::connect(inputs, plan, env, ctx, actions, &trust) => setup?,
        signal = cancel.cancelled() => {
            return Err(Error::Cancelled {
                signal,
                stage: "before gpu-runner created anything",
                rollback: None,
            });
        }
    };
    let setup = match setup {
        Connection::Ready(setup) => setup,
        Connection::Refused(why) => {
            return modes::untrusted(why, inputs.trust.skips_refusals(), actions);
        }
    };
    let Setup {
        github,
        provider,
        head_sha,
    } = setup.as_ref();
    if plan.dry_run {
        return dry_run::run(plan, provider, &package, actions).await;
    }
    // Spot's history (an interrupted earlier attempt, the breaker) may rule out spot.
    let by_history = spot::plan_by_history(
        plan,
        provider,
        ctx.run_attempt,
        actions,
        Utc::now(),
        Clock::from_env(env),
    )
    .await?;
    let plan = by_history.as_ref().unwrap_or(plan);
    if let Some(sha) = head_sha {
        // What was judged: a push to the pull request after this must not run unreviewed.
        actions.set_output("head-sha", sha)?;
    }

    // Before anything exists, so that the post step and stop can find what this start creates.
    actions.save_state(state::LABEL, &plan.label)?;
    actions.save_state(state::REGION, &plan.region)?;
    let readiness = Readiness::of(plan, Clock::from_env(env));
    drive(
        plan,
        provider,
        github,
        &package,
        actions,
        &readiness,
        cancel.cancelled(),
    )
    .await
}

/// Start's state machine once nothing stands in the way: every runner registered and its machine
/// acquired, then waited for, until all are online, or some failed (rolled back, or kept with
/// `keep-on-failure` or `allow-partial`), or `cancelled` resolves with the signal's name (all
/// rolled back).
async fn drive(
    plan: &LaunchPlan,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    package: &RunnerPackage,
    actions: &Actions,
    readiness: &Readiness,
    cancelled: impl Future<Output = &'static str>,
) -> Result<(), Error> {
    let acquired = Acquired::default();
    let outcome = tokio::select! {
        results = bring_online(plan, provider, github, package, actions, &acquired, readiness) => Ok(results),
        signal = cancelled => Err(signal),
    };
    let acquired = acquired.take();
    let results = match outcome {
        Ok(results) => results,
        Err(signal) => {
            // A cancel removes everything, keep-on-failure or not: the user asked for it to end.
            let rollback = rollback::roll_back(plan, provider, github, &acquired, actions).await;
            return Err(Error::Cancelled {
                signal,
                stage: if acquired.is_empty() {
                    "while gpu-runner registered the runner and launched its instance"
                } else {
                    "while the GPU runner was starting"
                },
                rollback: Some(Box::new(rollback)),
            });
        }
    };
    let (online, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let online: Vec<Online> = online.into_iter().filter_map(Result::ok).collect();
    let mut failed: Vec<(String, Error)> = failed.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        return report_online(plan, &online, actions);
    }
    if plan.allow_partial && !online.is_empty() {
        return rollback::keep_partial(plan, provider, github, online, failed, actions).await;
    }
    let (_, cause) = failed.remove(0);
    let rollback = if plan.keep_on_failure && !acquired.is_empty() {
        rollback::keep_for_debugging(plan, github, &acquired).await
    } else {
        rollback::roll_back(plan, provider, github, &acquired, actions).await
    };
    Err(Error::AfterLaunch {
        cause: Box::new(cause),
        rollback: Box::new(rollback),
    })
}
