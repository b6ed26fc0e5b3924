//! `mode: stop`: terminate what start launched and remove its runner. Forgiving: nothing to stop,
//! an instance already gone and a runner already removed are all successes, so a stop job with
//! `if: always()` never fails a run on its own. Without the start's outputs (a start cancelled
//! before it wrote them), it removes what any start of this workflow run left.

use crate::actions::{Actions, Annotation, Markdown};
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::inputs::{RunnerScope, StopInputs};
use crate::machine::{self, Machine, Owner, Provider};
use crate::modes::failure::{self, Error};
use crate::modes::teardown::{self, Teardown};
use crate::modes::usage::{self, GpuUsage, MachineUse};
use crate::plan;

const HEADING: &str = "GPU runner: stop";

pub async fn run(inputs: &StopInputs, env: &Env, actions: &Actions) -> Result<(), Error> {
    let ctx = Context::from_env(env)?;
    let Some(region) = &inputs.region else {
        return nothing_to_stop(
            actions,
            "Nothing to stop: neither `label` nor `instance-ids` was given, and no region to look \
             in. This is normal when the start job failed or was skipped before it launched \
             anything. If it did launch an instance, pass its outputs to this step: `label`, \
             `instance-ids` and `region`.",
        );
    };
    let repository = ctx.repository();
    // Without the start's outputs, whatever this run's starts launched.
    let run_scope = !inputs.has_work();
    let owner = match &inputs.label {
        Some(label) => Some(Owner::Label {
            repository: &repository,
            label,
        }),
        None if run_scope => Some(Owner::Run {
            repository: &repository,
            run_id: ctx.run_id,
        }),
        None => None,
    };
    let mut t = Teardown::default();

    // The machines first: they are what bills, and a GitHub problem must not keep them running.
    let provider = machine::manage(&inputs.common, region, env, &ctx, actions).await;
    let mut uses = Vec::new();
    let found = match provider {
        Ok(provider) => {
            match teardown::find(&provider, &inputs.instance_ids, owner, &repository).await {
                Ok(found) => {
                    // Before they go: a pod's log goes with the pod. Stop given nothing has
                    // searched for the run's machines already.
                    let rest_of_run = (!run_scope).then_some(Owner::Run {
                        repository: &repository,
                        run_id: ctx.run_id,
                    });
                    uses = run_use(&provider, &found.ours, rest_of_run, Clock::from_env(env)).await;
                    t.release(&provider, &inputs.instance_ids, &found).await;
                    found.ours
                }
                Err(e) => {
                    t.error = Some(Error::from(e));
                    Vec::new()
                }
            }
        }
        Err(e) => {
            t.error = Some(e.into());
            Vec::new()
        }
    };

    let mut labels: Vec<String> = inputs.label.iter().cloned().collect();
    for label in found.iter().filter_map(|i| i.label()) {
        if !labels.iter().any(|l| l == label) {
            labels.push(label.to_owned());
        }
    }
    let prefix = run_scope.then(|| plan::run_label_prefix(ctx.run_id));
    let scope = runner_scope(inputs.common.runner_scope, &found, actions);
    match super::runners(
        &inputs.common,
        scope,
        TokenNeeds::default(),
        &ctx,
        env,
        actions,
    )
    .await
    {
        Ok(github) => t.remove_runners(&github, &labels, prefix.as_deref()).await,
        Err(e) => t.github_unreachable(&labels, e),
    }

    if run_scope {
        // Stop was given nothing to stop: searching is a courtesy, so a failure to search (no
        // AWS access, say) is a warning, not a failed run.
        if let Some(e) = t.error.take() {
            for a in e.annotations() {
                actions.annotate(
                    &Annotation::warning(a.message).title(
                        "gpu-runner stop could not look for this run's instances and runners",
                    ),
                );
            }
        }
        if t.rows.iter().all(|r| r.outcome.was_gone()) {
            return nothing_to_stop(
                actions,
                "Nothing to stop: neither `label` nor `instance-ids` was given, and no instance \
                 or runner of this workflow run was found. This is normal when the start job failed or was \
                 skipped before it launched anything.",
            );
        }
    }
    for i in &t.interrupted {
        actions.annotate(
            &Annotation::warning(format!(
                "{}; the GPU job was interrupted, not failed. Re-run the workflow: {}.\n\
                 Troubleshooting: {}",
                i.how,
                i.again,
                failure::help_url(&failure::anchor(i.title))
            ))
            .title(i.title),
        );
    }
    t.report(HEADING, actions)?;
    if !uses.is_empty() {
        actions.append_summary(&usage::markdown(&uses))?;
    }
    t.finish()
}

/// Every machine the run used: `ours`, and those `rest_of_run` finds (its other starts and
/// attempts, as far as the provider still lists them); what each cost and what its job used of
/// its GPUs. What cannot be read is left out: the summary is information, never a reason to fail.
async fn run_use(
    provider: &impl Provider,
    ours: &[Machine],
    rest_of_run: Option<Owner<'_>>,
    clock: Clock,
) -> Vec<MachineUse> {
    let mut machines: Vec<Machine> = ours.to_vec();
    if let Some(run) = rest_of_run
        && let Ok(run) = provider.find(&[], Some(run)).await
    {
        for m in run {
            if !machines.iter().any(|o| o.id == m.id) {
                machines.push(m);
            }
        }
    }
    let now = chrono::Utc::now();
    let mut uses = Vec::new();
    for m in &machines {
        let price = provider.price(m).await;
        let usage = GpuUsage::from_console(&provider.last_words(&m.id).await);
        uses.push(MachineUse::of(m, price, usage, now, clock));
    }
    uses
}

/// Where start registered the runners: the instances' tag knows, and wins over a `runner-scope`
/// that says otherwise, since removing from the wrong place would leave the runner behind.
fn runner_scope(given: Option<RunnerScope>, found: &[Machine], actions: &Actions) -> RunnerScope {
    let tagged = found
        .iter()
        .filter_map(|i| i.tags.get(plan::tag::RUNNER_SCOPE))
        .find_map(|s| RunnerScope::from_name(s));
    match (given, tagged) {
        (Some(given), Some(tagged)) if given != tagged => {
            actions.annotate(
                &Annotation::warning(format!(
                    "runner-scope is {} here, but start registered the runner with runner-scope: \
                     {}; removing it from there. Give stop the same runner-scope as start.",
                    given.name(),
                    tagged.name()
                ))
                .title("gpu-runner input"),
            );
            tagged
        }
        (_, Some(tagged)) => tagged,
        (Some(given), None) => given,
        (None, None) => RunnerScope::Repo,
    }
}

pub(crate) fn nothing_to_stop(actions: &Actions, why: &str) -> Result<(), Error> {
    actions.info(why);
    actions.append_summary(&Markdown::new().heading(3, HEADING).raw(why).build())?;
    Ok(())
}
