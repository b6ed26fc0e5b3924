//! The `post-entrypoint`: runs after the job's steps, also after a cancel. If start launched but
//! never reported its runner online, this is where the launch is rolled back.

use crate::actions::Actions;
use crate::env::Env;
use crate::error::Error;

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

pub fn run(env: &Env, actions: &Actions) -> Result<(), Error> {
    let Some(label) = env.non_empty(&state::var(state::LABEL)) else {
        actions.debug("post: this step launched nothing, so there is nothing to roll back");
        return Ok(());
    };
    if env.non_empty(&state::var(state::ONLINE)) == Some("true") {
        actions.debug("post: the runner came online; the stop job removes it");
        return Ok(());
    }
    Err(Error::Unsupported {
        what: format!(
            "the start step launched {label} but did not finish, and this build of gpu-runner ({}) \
             has no cloud back-end to roll it back with",
            env!("CARGO_PKG_VERSION")
        ),
        fix: format!(
            "Terminate the instances tagged gpu-runner:label={label} in the EC2 console and delete \
             the runner {label} under Settings → Actions → Runners."
        ),
    })
}
