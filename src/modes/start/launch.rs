//! Bringing the runners online: each registered with GitHub and its machine acquired, in
//! parallel, then all waited for together.

use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::join_all;

use super::report::{Online, save_launch};
use super::wait::{Booting, Readiness, wait_online};
use crate::actions::Actions;
use crate::boot::RunnerPackage;
use crate::github::RunnerRegistry;
use crate::machine::{Handoff, Machine, Provider};
use crate::modes::Github;
use crate::modes::failure::Error;
use crate::plan::LaunchPlan;

/// Every runner of the plan registered, its machine acquired and waited for, in parallel. Each
/// result names its runner, in the plan's order, for `allow-partial` to remove the failed ones.
pub(super) async fn bring_online(
    plan: &LaunchPlan,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    package: &RunnerPackage,
    actions: &Actions,
    acquired: &Acquired,
    readiness: &Readiness,
) -> Vec<Result<Online, (String, Error)>> {
    let _group = actions.group(&format!(
        "Launching {} GPU runner(s) and waiting for them",
        plan.runners.len()
    ));
    let launches = join_all((0..plan.runners.len()).map(|n| async move {
        register_and_acquire(plan, n, provider, github, package, actions, acquired)
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
    results.extend(wait_online(plan, provider, github, booting, actions, readiness).await);
    results.sort_by_key(|(n, _)| *n);
    results
        .into_iter()
        .map(|(n, r)| r.map_err(|e| (plan.runners[n].name.clone(), e)))
        .collect()
}

/// The machines acquired so far, shared by the runners that start in parallel: outputs, state
/// and rollback need all of them.
#[derive(Default)]
pub(super) struct Acquired(Mutex<Vec<Machine>>);

impl Acquired {
    /// Adds one and saves them all at once, so that the stop job and the post step can always
    /// find every machine.
    fn add(&self, plan: &LaunchPlan, machine: Machine, actions: &Actions) -> Result<(), Error> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.push(machine);
        save_launch(plan, &all, actions)
    }

    pub(super) fn take(&self) -> Vec<Machine> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Registers one runner and acquires its machine, handing it the runner's configuration. The
/// machine joins `acquired` as soon as it exists.
async fn register_and_acquire(
    plan: &LaunchPlan,
    n: usize,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    package: &RunnerPackage,
    actions: &Actions,
    acquired: &Acquired,
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
    let handoff = Handoff {
        runner,
        jit_config: jit.encoded_jit_config.clone(),
        package,
    };
    let got = provider.acquire(plan, &handoff, actions).await?;
    let launched_at = Instant::now();
    acquired.add(plan, got.machine.clone(), actions)?;
    Ok(Booting {
        n,
        jit,
        machine: got.machine,
        refused: got.refused,
        launched_at,
        running_after: None,
        said: None,
    })
}
