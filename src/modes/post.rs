//! The `post-entrypoint`: runs after the job's steps, also after a cancel. If start launched but
//! never saw its runner online, this rolls the launch back: a stop job cannot be counted on, since
//! its inputs come from outputs a failed start may never have written.

use crate::actions::Actions;
use crate::cloud::Cloud;
use crate::cloud::aws::Ec2;
use crate::context::Context;
use crate::env::Env;
use crate::error::Error;
use crate::github::RunnerRegistry;
use crate::inputs::{self, Inputs};

/// What start saves in `GITHUB_STATE`; the post step reads it back as `STATE_<name>`.
pub mod state {
    pub const LABEL: &str = "label";
    pub const INSTANCE_IDS: &str = "instance-ids";
    pub const REGION: &str = "region";
    /// `true` once the runner was seen online: from then on the stop job owns the teardown.
    pub const ONLINE: &str = "online";

    pub fn var(name: &str) -> String {
        format!("STATE_{name}")
    }
}

pub async fn run(env: &Env, actions: &Actions) -> Result<(), Error> {
    let Some(label) = env.non_empty(&state::var(state::LABEL)) else {
        actions.debug("post: this step launched nothing, so there is nothing to roll back");
        return Ok(());
    };
    if env.non_empty(&state::var(state::ONLINE)) == Some("true") {
        actions.debug("post: the runner came online; the stop job removes it");
        return Ok(());
    }
    let Inputs::Start(inputs) = inputs::parse(env)?.inputs else {
        return Ok(());
    };
    if inputs.keep_on_failure {
        actions.info(&format!(
            "post: keeping {label} for debugging (keep-on-failure)"
        ));
        return Ok(());
    }
    let region = env
        .non_empty(&state::var(state::REGION))
        .unwrap_or(&inputs.region)
        .to_owned();
    let mut ids: Vec<String> = env
        .non_empty(&state::var(state::INSTANCE_IDS))
        .and_then(|ids| serde_json::from_str(ids).ok())
        .unwrap_or_default();
    let ctx = Context::from_env(env)?;
    // AWS first: a GitHub problem must not keep the instance running.
    let aws = super::aws_config(env, &inputs.common, &region, &ctx, actions).await?;
    let cloud = Ec2::new(&aws);

    let _group = actions.group("Rolling back the unfinished start");
    for i in cloud.find_by_label(label).await.map_err(Error::cloud)? {
        if !i.state.is_ending() && !ids.contains(&i.id) {
            ids.push(i.id);
        }
    }
    cloud.terminate(&ids).await.map_err(Error::cloud)?;
    for id in &ids {
        actions.info(&format!("post: terminated {id}"));
    }
    let github = super::runners(&inputs.common, &ctx, actions).await?;
    let registry = &github.registry;
    let runners = registry
        .runners_with_label(label)
        .await
        .map_err(|e| github.error(e))?;
    for r in runners {
        registry
            .delete_runner(r.id)
            .await
            .map_err(|e| github.error(e))?;
        actions.info(&format!("post: removed the runner {}", r.name));
    }
    Ok(())
}
