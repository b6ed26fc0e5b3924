//! What each mode does, on top of inputs, plan and the runner protocol.

pub mod attached;
pub mod cleanup;
pub mod failure;
pub mod post;
pub mod retry;
pub mod signals;
pub mod start;
pub mod stop;
pub mod teardown;
pub mod usage;

use chrono::{DateTime, Utc};

use crate::actions::{Actions, Annotation, Masker};
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::github::octo::Runners;
use crate::github::{GithubError, Whose, app};
use crate::inputs::{self, Common, GithubAuth, Inputs, RunnerScope};
use crate::modes::failure::Error;
use crate::retry::Backoff;
use crate::secret::Secret;

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

/// A trigger the untrusted-trigger guard refused, before anything was created: with
/// `on-untrusted: skip`, start succeeds with `skipped: true` (the GPU job's `if:` skips it, and a
/// stop after it has nothing to stop), a notice and a summary saying how a maintainer lets it run;
/// otherwise it fails with the reason.
pub fn untrusted(why: crate::guard::Untrusted, skip: bool, actions: &Actions) -> Result<(), Error> {
    if !skip {
        return Err(Error::Untrusted(why));
    }
    let what = format!(
        "gpu-runner launched nothing because {why}. A self-hosted runner would run that code \
         with access to the machine and its network, so the GPU job is skipped (the skipped \
         output is true)"
    );
    actions.set_output("skipped", "true")?;
    actions.annotate(
        &Annotation::notice(format!("{what}. {}", crate::guard::FIX))
            .title("Untrusted trigger: GPU job skipped"),
    );
    actions.append_summary(
        &crate::actions::Markdown::new()
            .heading(3, "GPU runner: skipped")
            .paragraph(&format!("{what}."))
            .paragraph(crate::guard::FIX)
            .build(),
    )?;
    Ok(())
}

pub async fn run(
    env: &Env,
    actions: &Actions,
    step: Step,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // Before anything is printed, and before parsing, so that no error message can show a secret.
    for secret in inputs::raw_secrets(env) {
        actions.add_mask(&secret);
    }
    if step == Step::Post {
        return post::run(env, actions).await;
    }
    let parsed = match inputs::parse(env) {
        Ok(parsed) => parsed,
        Err(errors) => return without_secrets(env, actions).unwrap_or(Err(errors.into())),
    };
    for warning in &parsed.warnings {
        actions.annotate(&Annotation::warning(warning).title("gpu-runner input"));
    }
    if let Some(GithubAuth::App { private_key, .. }) = parsed.inputs.common().map(|c| &c.github) {
        // Parsing may have turned `\n` into line breaks: mask the key as it will be used too.
        actions.add_mask(private_key.expose());
    }
    match &parsed.inputs {
        Inputs::Start(inputs) => start::run(inputs, env, actions, now).await,
        Inputs::Stop(inputs) => stop::run(inputs, env, actions).await,
        Inputs::Cleanup(inputs) => cleanup::run(inputs, env, actions, now).await,
        Inputs::Retry(inputs) => retry::run(inputs, env, actions).await,
        Inputs::Attached(inputs) => attached::run(inputs, env, actions).await,
        Inputs::Detach => {
            actions.info(
                "machine: attached: nothing to stop. The machine is yours, and gpu-runner attach \
                 removes each job's runner itself once the job is done.",
            );
            Ok(())
        }
    }
}

/// A fork's pull request run, which GitHub gives no secrets: the credential inputs come empty and
/// parsing fails, yet start could launch nothing and there is nothing to stop. Start then ends as
/// for any trigger the guard refuses (skipped and green, unless `on-untrusted: fail`); stop given
/// no `label` or `instance-ids` says there is nothing to stop. `None`: not such a run, and the
/// input errors stand.
fn without_secrets(env: &Env, actions: &Actions) -> Option<Result<(), Error>> {
    use inputs::spec;
    let raw = |spec: &spec::Spec| {
        env.non_empty(&spec.env_var())
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    if !raw(&spec::GITHUB_TOKEN).is_empty() || !raw(&spec::GITHUB_APP_PRIVATE_KEY).is_empty() {
        return None;
    }
    let ctx = Context::from_env(env).ok()?;
    let (event, payload) = crate::guard::event_of(env);
    let why = crate::guard::secrets_withheld(event, payload.as_ref(), &ctx.repository())?;
    match raw(&spec::MODE).as_str() {
        "start" if !env.is_true(&spec::ALLOW_UNTRUSTED.env_var()) => {
            let skip = match raw(&spec::ON_UNTRUSTED).as_str() {
                "" | "skip" => true,
                "fail" => false,
                _ => return None,
            };
            Some(untrusted(crate::guard::Untrusted(why), skip, actions))
        }
        "stop" if raw(&spec::LABEL).is_empty() && raw(&spec::INSTANCE_IDS).is_empty() => {
            Some(stop::nothing_to_stop(
                actions,
                &format!(
                    "Nothing to stop: {why}. gpu-runner's start could launch nothing for this \
                     run, so there is nothing to remove."
                ),
            ))
        }
        _ => None,
    }
}

/// The runners (the repository's or its organization's), and what GitHub's errors are about.
pub struct Github<R = Runners> {
    pub registry: R,
    whose: Whose,
}

impl<R> Github<R> {
    /// `registry` holds the runners of `ctx`'s repository, or with `runner-scope: org` of its
    /// organization.
    pub fn new(registry: R, ctx: &Context, scope: RunnerScope, workflow_token: bool) -> Self {
        Self {
            registry,
            whose: Whose::Runners {
                repository: ctx.repository(),
                org: (scope == RunnerScope::Org).then(|| ctx.owner.clone()),
                workflow_token,
            },
        }
    }

    /// A GitHub failure, with what it was about.
    pub fn error(&self, source: GithubError) -> Error {
        Error::Github {
            source,
            whose: Box::new(self.whose.clone()),
        }
    }
}

/// An installation token of the App for `ctx`'s repository (or with `RunnerScope::Org` its
/// organization), limited to what `needs` names; it and the app JWT are masked before use.
pub(crate) async fn app_token(
    app_id: &str,
    private_key: &Secret,
    ctx: &Context,
    scope: RunnerScope,
    needs: app::TokenNeeds,
    masker: &Masker,
) -> Result<Secret, Error> {
    let (token, jwt) =
        app::installation_token(&ctx.api_url, app_id, private_key, ctx, scope, needs)
            .await
            .map_err(|f| Error::Github {
                source: f.source,
                whose: Box::new(Whose::Fix(f.hint)),
            })?;
    masker.add_mask(jwt.expose());
    masker.add_mask(token.expose());
    Ok(token)
}

/// The runners of `scope`, with the token the user gave or one minted for the App (for this
/// repository, with what `needs` names besides the runners).
pub(crate) async fn runners(
    common: &Common,
    scope: RunnerScope,
    needs: app::TokenNeeds,
    ctx: &Context,
    env: &Env,
    actions: &Actions,
) -> Result<Github, Error> {
    let (token, workflow_token) = match &common.github {
        GithubAuth::Token(token) => (token.clone(), token.expose().starts_with("ghs_")),
        GithubAuth::App {
            app_id,
            private_key,
        } => {
            let token =
                app_token(app_id, private_key, ctx, scope, needs, &actions.masker()).await?;
            (token, false)
        }
    };
    let backoff = Backoff::new(Clock::from_env(env));
    let target = (ctx.owner.as_str(), ctx.repo.as_str());
    match Runners::new(&ctx.api_url, &token, target, scope, backoff) {
        Ok(registry) => Ok(Github::new(registry, ctx, scope, workflow_token)),
        Err(e) => Err(Github::new((), ctx, scope, workflow_token).error(e)),
    }
}
