//! The `post-entrypoint`: runs after the job's steps, also after a cancel. If start registered a
//! runner but never saw it online, this removes what it created: a stop job cannot be counted on,
//! since its inputs come from outputs a failed start may never have written.

use crate::actions::{Actions, Annotation};
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::inputs::{self, Inputs};
use crate::machine::{self, Owner};
use crate::modes::failure::Error;
use crate::modes::teardown::{self, Teardown};

/// What start saves in `GITHUB_STATE`; the post step reads it back as `STATE_<name>`.
pub mod state {
    /// Saved before the runner is registered, with the region.
    pub const LABEL: &str = "label";
    pub const REGION: &str = "region";
    /// Saved as soon as `RunInstances` answers.
    pub const INSTANCE_IDS: &str = "instance-ids";
    /// `true` once the runner was seen online: from then on the stop job owns the teardown.
    pub const ONLINE: &str = "online";

    pub fn var(name: &str) -> String {
        format!("STATE_{name}")
    }
}

pub async fn run(env: &Env, actions: &Actions) -> Result<(), Error> {
    let Some(label) = env.non_empty(&state::var(state::LABEL)) else {
        actions.debug("post: this step created nothing, so there is nothing to roll back");
        return Ok(());
    };
    if env.non_empty(&state::var(state::ONLINE)) == Some("true") {
        actions.debug("post: the runner came online; the stop job removes it");
        return Ok(());
    }
    let Inputs::Start(inputs) = inputs::parse(env)?.inputs else {
        return Ok(());
    };
    if inputs.limits.keep_on_failure {
        actions.info(&format!(
            "post: keeping {label} for debugging (keep-on-failure)"
        ));
        return Ok(());
    }
    let region = env
        .non_empty(&state::var(state::REGION))
        .unwrap_or(inputs.region())
        .to_owned();
    let ids: Vec<String> = env
        .non_empty(&state::var(state::INSTANCE_IDS))
        .and_then(|ids| serde_json::from_str(ids).ok())
        .unwrap_or_default();
    let ctx = Context::from_env(env)?;
    let _group = actions.group("Rolling back the unfinished start");
    let mut t = Teardown::default();
    // The machines first: a GitHub problem must not keep them running.
    let provider = machine::manage(&inputs.common, &region, env, &ctx, actions).await?;
    let repository = ctx.repository();
    let owner = Owner::Label {
        repository: &repository,
        label,
    };
    let found = teardown::find(&provider, &ids, Some(owner), &repository).await?;
    t.release(&provider, &ids, &found).await;
    let labels = [label.to_owned()];
    match super::runners(
        &inputs.common,
        inputs.common.scope(),
        TokenNeeds::default(),
        &ctx,
        env,
        actions,
    )
    .await
    {
        Ok(github) => t.remove_runners(&github, &labels, None).await,
        Err(e) => t.github_unreachable(&labels, e),
    }
    t.report("GPU runner: rolled back the unfinished start", actions)?;
    // The main step has failed already and said why; what the post step could not remove is
    // worth a warning, not a second failure of the same cause.
    if let Some(e) = t.error.take() {
        for a in e.bare_annotations() {
            actions.annotate(
                &Annotation::warning(format!(
                    "{} Left: {}. The instance ends itself by its max lifetime; mode: stop with \
                     label {label}, or the next cleanup run, removes the rest.\nTroubleshooting: {}",
                    a.message,
                    t.left().join(", "),
                    crate::modes::failure::help_url("gpu-runner-post-step-could-not-finish-the-rollback")
                ))
                .title("gpu-runner post step could not finish the rollback"),
            );
        }
    }
    Ok(())
}
