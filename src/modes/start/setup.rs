//! Start's setup, before anything is created: the untrusted-trigger guard, what GitHub must
//! confirm of it, the runner group, the machine provider with its credentials, and the warnings
//! a public repository needs.

use crate::actions::{Actions, Annotation};
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::github::groups;
use crate::github::octo::RunnerGroup;
use crate::github::{GithubError, Whose};
use crate::guard::{self, Judgment};
use crate::inputs::{GroupRef, RunnerScope, StartInputs};
use crate::machine::{self, Connected, Purpose};
use crate::modes::failure::Error;
use crate::modes::{self, Github};
use crate::plan::LaunchPlan;

/// What connecting found: all set up, or a trigger that GitHub's answers show the guard must
/// refuse (a commenter without write access, a pull request pushed to since its approval).
pub(super) enum Connection {
    Ready(Box<Setup>),
    Refused(guard::Untrusted),
}

/// GitHub and the machine provider, ready to use; nothing created yet.
pub(super) struct Setup {
    pub github: Github,
    pub provider: Connected,
    /// The head commit of the pull request the run is about, as it was when it was judged.
    pub head_sha: Option<String>,
}

/// What the untrusted-trigger guard decided, before any call.
pub(super) struct Trust<'a> {
    /// The event it passed, when it ran: the job's OIDC token must name the same.
    pub judged_event: Option<&'a str>,
    pub judgment: Judgment,
    /// The pull request the run is about, if any.
    pub pull_request: Option<guard::PullRequest>,
    /// Whether the repository is public, as the event's payload says.
    pub public: Option<bool>,
}

/// Before any credential is asked for: whose code would run on the machine? The job's signed
/// OIDC token must later name the event judged here.
pub(super) fn judge<'e>(
    inputs: &StartInputs,
    env: &'e Env,
    ctx: &Context,
    actions: &Actions,
) -> Result<Trust<'e>, Error> {
    let (event, payload) = guard::event_of(env);
    let public = payload
        .as_ref()
        .and_then(|p| p.pointer("/repository/private"))
        .and_then(serde_json::Value::as_bool)
        .map(|private| !private);
    // A pool instance's disk outlives its job: what one job leaves there, the next runs with. A
    // pool gets the guard's whole verdict, allow-untrusted or not: a trigger it refuses never gets
    // a member, and a comment approves only with its author's write access, as GitHub says.
    let pooled = inputs.pool.is_some();
    let (judged_event, judgment) = if inputs.trust.allow_untrusted && !pooled {
        actions.info("allow-untrusted is set: the untrusted-trigger guard is off for this start");
        (None, Judgment::default())
    } else {
        let judgment = guard::check(
            event,
            payload.as_ref(),
            &ctx.repository(),
            &inputs.trust.allowed_associations,
        )
        .map_err(|guard::Untrusted(why)| {
            if inputs.trust.allow_untrusted {
                guard::Untrusted(format!(
                    "{why}. allow-untrusted does not lift this for a pool: a job can leave \
                     anything on a pool instance's disk for the jobs after it, so a pool serves \
                     only runs the guard trusts. Remove pool (and pool-instance-id) from this start \
                     to launch a fresh instance for it"
                ))
            } else {
                guard::Untrusted(why)
            }
        })?;
        (Some(event), judgment)
    };
    Ok(Trust {
        judged_event,
        judgment,
        pull_request: guard::pull_request_of(event, payload.as_ref()),
        public,
    })
}

pub(super) async fn connect(
    inputs: &StartInputs,
    plan: &LaunchPlan,
    env: &Env,
    ctx: &Context,
    actions: &Actions,
    trust: &Trust<'_>,
) -> Result<Connection, Error> {
    let mut github = modes::runners(
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
    let head_sha = match confirm_trust(&github, trust, ctx, actions).await {
        Ok(sha) => sha,
        Err(Error::Untrusted(why)) => return Ok(Connection::Refused(why)),
        Err(e) => return Err(e),
    };
    let mut public = trust.public;
    if inputs.common.scope() == RunnerScope::Org {
        let group = org_group(&github, inputs.runner.group.as_ref(), ctx).await?;
        public = Some(group.1);
        let group = group.0;
        actions.info(&format!(
            "Registering in the organization {}'s runner group \"{}\" (id {})",
            ctx.owner, group.name, group.id
        ));
        github.registry.use_group(group.id);
    }
    let provider = machine::connect(
        &inputs.common,
        &plan.region,
        Purpose::Acquire(plan),
        env,
        ctx,
        actions,
        trust.judged_event,
    )
    .await?;
    // Warnings only: the payload says whether the repository is public, or GitHub is asked.
    let public = match public {
        Some(public) => Some(public),
        None => github.registry.repository_is_public().await.ok(),
    };
    if public == Some(true) {
        warn_public_exposure(&github, inputs, ctx, actions).await;
    }
    Ok(Connection::Ready(Box::new(Setup {
        github,
        provider,
        head_sha,
    })))
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
    guard::check_approved_commit(&trust.judgment, pr.number, &sha)?;
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
    if !inputs.runner.labels.is_empty() {
        actions.annotate(
            &Annotation::warning(format!(
                "labels ({}) are extra labels on a runner of the public repository \
                 {repository}: a queued job of any of its workflow runs, a fork's pull request \
                 too, whose runs-on asks only for these and self-hosted, Linux, X64 can be \
                 handed this machine before the GPU job. The machine refuses jobs of other runs, \
                 but this run then loses its machine. The label output alone is enough for \
                 runs-on: remove labels.",
                inputs.runner.labels.join(", ")
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
        whose: Box::new(Whose::Fix(p.fix)),
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
