//! `RunnerRegistry` on the GitHub REST API through octocrab, for one repository.

use octocrab::Octocrab;
use octocrab::models::actions::SelfHostedRunner;
use octocrab::models::{RunnerGroupId, RunnerId};

use super::{GithubError, JitRunner, Removal, Runner, RunnerRegistry, RunnerStatus};
use crate::secret::Secret;

/// Runners of a repository live in the default group.
const REPO_RUNNER_GROUP: u64 = 1;

pub struct RepoRunners {
    crab: Octocrab,
    owner: String,
    repo: String,
}

impl RepoRunners {
    /// `api_url` is `GITHUB_API_URL`: api.github.com, a GitHub Enterprise Server's `/api/v3`.
    pub fn new(
        api_url: &str,
        token: &Secret,
        owner: &str,
        repo: &str,
    ) -> Result<Self, GithubError> {
        let fail = |message: String| GithubError {
            operation: "connecting to GitHub",
            status: None,
            message,
        };
        let crab = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| fail(format!("GITHUB_API_URL {api_url} is not usable: {e}")))?
            .personal_token(token.expose().to_owned())
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            crab,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        })
    }
}

fn github_error(operation: &'static str, e: octocrab::Error) -> GithubError {
    match e {
        octocrab::Error::GitHub { source, .. } => GithubError {
            operation,
            status: Some(source.status_code.as_u16()),
            message: source.message.clone(),
        },
        other => GithubError {
            operation,
            status: None,
            message: other.to_string(),
        },
    }
}

fn runner(r: &SelfHostedRunner) -> Runner {
    Runner {
        id: r.id.0,
        name: r.name.clone(),
        status: if r.status == "online" {
            RunnerStatus::Online
        } else {
            RunnerStatus::Offline
        },
        busy: r.busy,
        labels: r.labels.iter().map(|l| l.name.clone()).collect(),
    }
}

impl RunnerRegistry for RepoRunners {
    async fn create_jit_runner(
        &self,
        name: &str,
        labels: &[String],
    ) -> Result<JitRunner, GithubError> {
        let config = self
            .crab
            .actions()
            .create_repo_jit_runner_config(
                &self.owner,
                &self.repo,
                name,
                RunnerGroupId(REPO_RUNNER_GROUP),
                labels.to_vec(),
            )
            .send()
            .await
            .map_err(|e| github_error("registering the runner", e))?;
        Ok(JitRunner {
            runner: runner(&config.runner),
            encoded_jit_config: Secret::new(config.encoded_jit_config),
        })
    }

    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GithubError> {
        match self
            .crab
            .actions()
            .get_repo_runner(&self.owner, &self.repo, RunnerId(id))
            .await
        {
            Ok(r) => Ok(Some(runner(&r))),
            Err(e) => {
                let e = github_error("reading the runner", e);
                if e.status == Some(404) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn runners_with_label(&self, label: &str) -> Result<Vec<Runner>, GithubError> {
        let mut found = Vec::new();
        let mut page: u32 = 1;
        loop {
            let batch = self
                .crab
                .actions()
                .list_repo_self_hosted_runners(&self.owner, &self.repo)
                .per_page(100u8)
                .page(page)
                .send()
                .await
                .map_err(|e| github_error("listing runners", e))?;
            let last = batch.next.is_none() || batch.items.is_empty();
            found.extend(
                batch
                    .items
                    .iter()
                    .map(runner)
                    .filter(|r| r.labels.iter().any(|l| l == label)),
            );
            if last {
                return Ok(found);
            }
            page += 1;
        }
    }

    async fn delete_runner(&self, id: u64) -> Result<Removal, GithubError> {
        match self
            .crab
            .actions()
            .delete_repo_runner(&self.owner, &self.repo, RunnerId(id))
            .await
        {
            Ok(()) => Ok(Removal::Deleted),
            Err(e) => {
                let e = github_error("removing the runner", e);
                if e.status == Some(404) {
                    Ok(Removal::AlreadyGone)
                } else {
                    Err(e)
                }
            }
        }
    }
}
