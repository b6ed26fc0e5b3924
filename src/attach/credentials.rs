//! attach's GitHub credentials: a token or a GitHub App's, from the environment only (a command
//! line is readable by every user of the machine), and GitHub's refusals in attach's words.

use crate::actions::{Actions, Masker};
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::github::octo::Runners;
use crate::github::{GithubError, Whose};
use crate::modes::failure::Error;
use crate::retry::Backoff;
use crate::secret::Secret;

use super::args::Target;
use super::problem;

/// The GitHub credentials, from the environment only.
#[derive(Clone)]
pub enum Credentials {
    Token(Secret),
    App { id: String, key: Secret },
}

impl Credentials {
    pub fn from_env(env: &Env, actions: &Actions) -> Result<Self, Error> {
        let token = env.non_empty("GITHUB_TOKEN");
        let app = (
            env.non_empty("GPU_RUNNER_APP_ID"),
            env.non_empty("GPU_RUNNER_APP_PRIVATE_KEY"),
        );
        let credentials = match (token, app) {
            (Some(token), _) => Credentials::Token(Secret::new(token)),
            (None, (Some(id), Some(key))) => Credentials::App {
                id: id.to_owned(),
                key: Secret::new(key.replace("\\n", "\n")),
            },
            _ => {
                return Err(problem(
                    "No GitHub credentials",
                    "neither GITHUB_TOKEN nor GPU_RUNNER_APP_ID with GPU_RUNNER_APP_PRIVATE_KEY \
                     is set",
                    "Put a token that may manage the repository's self-hosted runners \
                     (fine-grained: Administration: read and write) in GITHUB_TOKEN, from a \
                     secret store (a notebook's secrets), never on the command line.",
                ));
            }
        };
        match &credentials {
            Credentials::Token(t) => actions.add_mask(t.expose()),
            Credentials::App { key, .. } => actions.add_mask(key.expose()),
        }
        Ok(credentials)
    }

    /// The runners of `target`, with a token that is fresh (an App's lasts an hour).
    pub async fn registry(
        &self,
        api_url: &str,
        target: &Target,
        clock: Clock,
        masker: &Masker,
    ) -> Result<Runners, Error> {
        let (owner, repo) = target.owner_repo();
        let token = match self {
            Credentials::Token(t) => t.clone(),
            Credentials::App { id, key } => {
                let ctx = Context {
                    owner: owner.to_owned(),
                    repo: repo.to_owned(),
                    run_id: 0,
                    run_attempt: 1,
                    job: None,
                    workflow_ref: None,
                    server_url: String::new(),
                    api_url: api_url.to_owned(),
                };
                crate::modes::app_token(
                    id,
                    key,
                    &ctx,
                    target.scope(),
                    TokenNeeds::default(),
                    masker,
                )
                .await?
            }
        };
        Runners::new(
            api_url,
            &token,
            (owner, repo),
            target.scope(),
            Backoff::new(clock),
        )
        .map_err(|e| github_error(e, target))
    }
}

/// A GitHub failure in attach's words: the credentials are variables here, not inputs.
pub fn github_error(source: GithubError, target: &Target) -> Error {
    let what = match target {
        Target::Repo { .. } => format!("the self-hosted runners of {target}"),
        Target::Org(org) => format!("the self-hosted runners of the organization {org}"),
    };
    let fix = match source.status {
        Some(401) => "GitHub refused the token (HTTP 401): it is expired, revoked or mistyped. \
                      Create a new one and set GITHUB_TOKEN again."
            .to_owned(),
        Some(403) if source.retryable().is_none() => match target {
            Target::Repo { .. } => format!(
                "The token may not manage {what}: a fine-grained token needs Administration: \
                 read and write on {target}, a classic token the repo scope, and its owner must \
                 be an admin of it."
            ),
            Target::Org(_) => format!(
                "The token may not manage {what}: a fine-grained token needs the organization \
                 permission Self-hosted runners: read and write, a classic token admin:org, and \
                 its owner must be an owner of the organization."
            ),
        },
        Some(404) => format!(
            "GitHub shows no {target} to this token: check the name, and give the token access \
             to it (fine-grained tokens list their repositories)."
        ),
        _ => Whose::Runners {
            repository: target.to_string(),
            org: None,
            workflow_token: false,
        }
        .hint(&source),
    };
    Error::Github {
        source,
        whose: Box::new(Whose::Fix(fix)),
    }
}
