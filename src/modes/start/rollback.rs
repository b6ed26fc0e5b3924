//! What a start that did not get all its runners online does about what it created: a failure
//! or a cancel removes everything, `keep-on-failure` keeps the machines for debugging, and
//! `allow-partial` keeps the runners that came online. All through the one teardown executor.

use crate::actions::{Actions, Annotation};
use crate::github::RunnerRegistry;
use crate::machine::{Machine, Owner, Provider};
use crate::modes::Github;
use crate::modes::failure::Error;
use crate::modes::teardown::{self, Found, Left, Rollback, Teardown};
use crate::plan::LaunchPlan;

use super::report::{Online, report_online, save_launch};

fn owner(plan: &LaunchPlan) -> Owner<'_> {
    Owner::Label {
        repository: &plan.binding.repository,
        label: &plan.label,
    }
}

/// Removes what a failed or cancelled start created, found by id and by its label (a cancel may
/// come before the provider answered); says what it did, for the error message.
pub(super) async fn roll_back(
    plan: &LaunchPlan,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    acquired: &[Machine],
    actions: &Actions,
) -> Rollback {
    let _group = actions.group("Rolling back");
    let ids: Vec<String> = acquired.iter().map(|m| m.id.clone()).collect();
    let mut t = Teardown::default();
    let repository = &plan.binding.repository;
    match teardown::find(provider, &ids, Some(owner(plan)), repository).await {
        Ok(found) => t.release(provider, &ids, &found).await,
        Err(e) => t.error = Some(e.into()),
    }
    t.remove_runners(github, std::slice::from_ref(&plan.label), None)
        .await;
    let rollback = t.rollback(&plan.label, plan.expires_at);
    actions.info(&rollback.to_string());
    rollback
}

/// `keep-on-failure`: the machines stay for debugging; the runners, which can never take a job
/// now, go.
pub(super) async fn keep_for_debugging(
    plan: &LaunchPlan,
    github: &Github<impl RunnerRegistry + Sync>,
    acquired: &[Machine],
) -> Rollback {
    let mut t = Teardown::default();
    t.remove_runners(github, std::slice::from_ref(&plan.label), None)
        .await;
    Rollback {
        removed: t.done(),
        left: Left::Kept {
            ids: acquired.iter().map(|m| m.id.clone()).collect(),
            runner_error: t.error.map(|e| e.to_string()),
        },
        label: plan.label.clone(),
        ends_by: plan.expires_at,
    }
}

/// Some runners came online, others did not, and `allow-partial` is set: the failed ones are
/// removed, the rest stay, and the step succeeds with a warning.
pub(super) async fn keep_partial(
    plan: &LaunchPlan,
    provider: &impl Provider,
    github: &Github<impl RunnerRegistry + Sync>,
    online: Vec<Online>,
    failed: Vec<(String, Error)>,
    actions: &Actions,
) -> Result<(), Error> {
    let mut t = Teardown::default();
    let found = provider.find(&[], Some(owner(plan))).await?;
    let names: Vec<String> = failed.iter().map(|(name, _)| name.clone()).collect();
    let theirs = Found {
        ours: found
            .into_iter()
            .filter(|m| {
                m.runner_name()
                    .is_some_and(|r| names.iter().any(|n| n == r))
            })
            .collect(),
        foreign: Vec::new(),
    };
    t.release(provider, &[], &theirs).await;
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
    let kept: Vec<Machine> = online.iter().map(|o| o.machine.clone()).collect();
    save_launch(plan, &kept, actions)?;
    report_online(plan, &online, actions)
}
