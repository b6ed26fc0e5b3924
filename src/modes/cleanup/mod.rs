//! `mode: cleanup`: the janitor a scheduled workflow runs. It finds what gpu-runner left in the
//! region and the repository and removes it, saying why for each: instances past their
//! `expires-at` or older than `max-age-minutes`, instances whose runner is gone while no job runs
//! on them, offline gpu-runner runners of finished runs with no instance, and runs whose job waits
//! for a gpu-runner label that nothing serves, and JIT configs (`jit-handoff: ssm`) that no live
//! instance will read. It only ever touches resources that carry
//! gpu-runner's tags or label prefix. Choosing is pure (`select`), acting is separate.

use chrono::{DateTime, TimeDelta, Utc};

use crate::actions::{Actions, Markdown};
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::github::octo::Runners;
use crate::github::{Job, Runner, RunnerRegistry};
use crate::inputs::{CleanupInputs, RunnerScope};
use crate::machine::{self, Machine, Owner, Provider};
use crate::modes::failure::Error;
use crate::modes::teardown::{Found, Teardown};

mod select;

use select::run_of;
pub use select::{Action, Policy, Seen, select};

pub async fn run(
    inputs: &CleanupInputs,
    env: &Env,
    actions: &Actions,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let ctx = Context::from_env(env)?;
    let provider = machine::manage(&inputs.common, &inputs.region, env, &ctx, actions).await?;
    let repository = ctx.repository();
    let instances = provider
        .find(&[], Some(Owner::Repository(&repository)))
        .await?;
    let mut errors: Vec<Error> = Vec::new();
    let github = match super::runners(
        &inputs.common,
        inputs.common.scope(),
        TokenNeeds::RUNS,
        &ctx,
        env,
        actions,
    )
    .await
    {
        Ok(g) => Some(g),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    // Only jit-handoff: ssm leaves anything here, and a role set up before it may not list SSM:
    // a warning, not a failure.
    let handoffs = match provider.waiting_handoffs(&repository).await {
        Ok(h) => h,
        Err(e) => {
            actions.annotate(
                &crate::actions::Annotation::warning(format!(
                    "Could not look for JIT configs left in SSM ({e}). With jit-handoff: ssm, \
                     add the FindJitConfigsLeftBehind statement of the permissions policy \
                     in docs/aws.md to the role."
                ))
                .title("gpu-runner cleanup"),
            );
            Vec::new()
        }
    };
    let mut seen = Seen {
        instances,
        handoffs,
        ..Seen::default()
    };
    if let Some(github) = &github {
        match ours(&github.registry).await {
            Ok(r) => seen.runners = Some(r),
            Err(e) => errors.push(github.error(e)),
        }
        match active_jobs(&github.registry).await {
            Ok(j) => seen.jobs = Some(j),
            Err(e) => errors.push(github.error(e)),
        }
    }
    let policy = Policy {
        now,
        repository,
        max_age_minutes: inputs.max_age_minutes,
        queued_timeout_minutes: inputs.queued_timeout_minutes,
        handoff_grace: TimeDelta::from_std(
            crate::clock::Clock::from_env(env).scaled(std::time::Duration::from_secs(120)),
        )
        .unwrap_or_else(|_| TimeDelta::minutes(2)),
    };
    let chosen = select(&policy, &seen);

    let mut rows: Vec<Vec<String>> = Vec::new();
    for action in &chosen {
        let done = if inputs.dry_run {
            "would do (dry run)".to_owned()
        } else {
            match act(action, &seen.instances, &provider, github.as_ref()).await {
                Ok(done) => done,
                Err(e) => {
                    let text = format!("failed: {e}");
                    errors.push(e);
                    text
                }
            }
        };
        let (kind, what, reason) = action.what(&provider);
        actions.info(&format!("{kind} {what}: {reason} → {done}"));
        rows.push(vec![kind, what, reason.to_owned(), done]);
    }
    let live = seen
        .instances
        .iter()
        .filter(|i| !i.state.is_ending())
        .count();
    let looked = format!(
        "Looked at {live} live gpu-runner {}(s) of {} in {}{}{}.",
        provider.noun(),
        policy.repository,
        provider.place(&inputs.region),
        seen.runners
            .as_ref()
            .map(|r| match inputs.common.scope() {
                RunnerScope::Repo => format!(
                    ", {} self-hosted runner(s) of {}",
                    r.len(),
                    policy.repository
                ),
                RunnerScope::Org => format!(
                    ", {} self-hosted runner(s) of the organization {} that serve {}'s runs or no \
                     gpu-runner run",
                    r.len(),
                    ctx.owner,
                    policy.repository
                ),
            })
            .unwrap_or_default(),
        seen.jobs
            .as_ref()
            .map(|j| format!(" and {} job(s) of its active runs", j.len()))
            .unwrap_or_default(),
    );
    actions.info(&looked);
    let mut summary = Markdown::new()
        .heading(
            3,
            if inputs.dry_run {
                "GPU runner: cleanup (dry run)"
            } else {
                "GPU runner: cleanup"
            },
        )
        .paragraph(&looked);
    summary = if rows.is_empty() {
        summary.paragraph("Nothing to clean up.")
    } else {
        summary.table(&["Action", "What", "Why", "Done"], &rows)
    };
    actions.append_summary(&summary.build())?;
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The runners this repository may judge. An organization's list holds runners of its other
/// repositories too, whose runs this repository cannot see: only runners of this repository's
/// runs (by the run id in their gpu-runner label), and runners without such a label (which the
/// rules never touch), are kept.
async fn ours(registry: &Runners) -> Result<Vec<Runner>, crate::github::GithubError> {
    let all = registry.runners().await?;
    if registry.scope() == RunnerScope::Repo {
        return Ok(all);
    }
    let mut known: Vec<(u64, bool)> = Vec::new();
    let mut kept = Vec::new();
    for r in all {
        let Some(run) = r.labels.iter().find_map(|l| run_of(l)) else {
            kept.push(r);
            continue;
        };
        let mine = match known.iter().find(|(id, _)| *id == run) {
            Some((_, mine)) => *mine,
            None => {
                let mine = registry.run_is_ours(run).await?;
                known.push((run, mine));
                mine
            }
        };
        if mine {
            kept.push(r);
        }
    }
    Ok(kept)
}

/// The jobs of every queued or in-progress run.
async fn active_jobs(
    registry: &impl RunnerRegistry,
) -> Result<Vec<Job>, crate::github::GithubError> {
    let mut jobs = Vec::new();
    for run in registry.active_runs().await? {
        jobs.extend(registry.run_jobs(run).await?);
    }
    Ok(jobs)
}

/// Does one chosen action, through the teardown executor stop and rollback use; what it did.
async fn act(
    action: &Action,
    seen: &[Machine],
    provider: &impl Provider,
    github: Option<&super::Github>,
) -> Result<String, Error> {
    let mut t = Teardown::default();
    match action {
        Action::Release { id, .. } => {
            let found = Found {
                ours: seen.iter().filter(|m| &m.id == id).cloned().collect(),
                foreign: Vec::new(),
            };
            t.release(provider, std::slice::from_ref(id), &found).await;
        }
        Action::RemoveRunner { id, name, .. } => {
            let Some(github) = github else {
                return Ok("skipped".to_owned());
            };
            t.remove_runner(github, *id, name).await;
        }
        Action::DeleteHandoff { name, .. } => {
            provider.delete_handoff(name).await?;
            return Ok("deleted".to_owned());
        }
        Action::CancelRun { run_id, .. } => {
            let Some(github) = github else {
                return Ok("skipped".to_owned());
            };
            github
                .registry
                .cancel_run(*run_id)
                .await
                .map_err(|e| github.error(e))?;
            return Ok("cancelled".to_owned());
        }
    }
    let done = t
        .rows
        .iter()
        .map(|r| r.outcome.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match t.error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
