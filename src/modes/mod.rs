//! What each mode does, on top of inputs, plan and the runner protocol.

pub mod post;
pub mod start;
pub mod stop;

use chrono::{DateTime, Utc};

use crate::actions::{Actions, Annotation};
use crate::env::Env;
use crate::error::Error;
use crate::inputs::{self, GithubAuth, Inputs};

/// The binary's name for the action's `post-entrypoint` (a link in the image to the same binary):
/// Docker passes the same arguments to every entrypoint, so the name is what tells the steps apart.
pub const POST_ENTRYPOINT_NAME: &str = "gpu-runner-post";

/// How the binary was started: the action's main step, or its `post-entrypoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Main,
    Post,
}

impl Step {
    pub fn from_program_name(arg0: Option<&std::ffi::OsStr>) -> Self {
        match arg0.and_then(|a| std::path::Path::new(a).file_name()) {
            Some(name) if name == POST_ENTRYPOINT_NAME => Step::Post,
            _ => Step::Main,
        }
    }
}

pub fn run(env: &Env, actions: &Actions, step: Step, now: DateTime<Utc>) -> Result<(), Error> {
    // Before anything is printed, and before parsing, so that no error message can show a secret.
    for secret in inputs::raw_secrets(env) {
        actions.add_mask(&secret);
    }
    if step == Step::Post {
        return post::run(env, actions);
    }
    let parsed = inputs::parse(env)?;
    for warning in &parsed.warnings {
        actions.annotate(&Annotation::warning(warning).title("gpu-runner input"));
    }
    let common = match &parsed.inputs {
        Inputs::Start(s) => &s.common,
        Inputs::Stop(s) => &s.common,
    };
    if let GithubAuth::App { private_key, .. } = &common.github {
        // Parsing may have turned `\n` into line breaks: mask the key as it will be used too.
        actions.add_mask(private_key.expose());
    }
    match &parsed.inputs {
        Inputs::Start(inputs) => start::run(inputs, env, actions, now),
        Inputs::Stop(inputs) => stop::run(inputs, actions),
    }
}
