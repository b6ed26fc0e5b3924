//! `RunnerRegistry` on the GitHub REST API through octocrab, for one repository.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use octocrab::Octocrab;
use octocrab::models::actions::SelfHostedRunner;
use octocrab::models::{RunnerGroupId, RunnerId};
use octocrab::service::middleware::retry::{NoOpRateLimitMetrics, RetryConfig};
use serde::Deserialize;

use super::{GithubError, JitRunner, Job, Removal, Runner, RunnerRegistry, RunnerStatus};
use crate::retry::Backoff;
use crate::secret::Secret;

/// Runners of a repository live in the default group.
const REPO_RUNNER_GROUP: u64 = 1;

pub struct RepoRunners {
    crab: Octocrab,
    owner: String,
    repo: String,
    backoff: Backoff,
}

impl RepoRunners {
    /// `api_url` is `GITHUB_API_URL`: api.github.com, a GitHub Enterprise Server's `/api/v3`.
    pub fn new(
        api_url: &str,
        token: &Secret,
        owner: &str,
        repo: &str,
        backoff: Backoff,
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
            // octocrab waits as long as a rate limit's retry-after says and repeats a 5xx at once;
            // what still fails after that gets the backoff of `retrying`.
            .add_retry_config(RetryConfig::HandleRateLimits {
                metrics: Arc::new(NoOpRateLimitMetrics),
                max_retries: 2,
                min_wait_seconds: 60,
                retry_on_forbidden: false,
            })
            .build()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            crab,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            backoff,
        })
    }

    fn path(&self, rest: &str) -> String {
        format!("/repos/{}/{}/actions/{rest}", self.owner, self.repo)
    }

    /// One GitHub call, retried while GitHub says it is passing.
    async fn retrying<T, Fut>(
        &self,
        operation: &'static str,
        call: impl FnMut() -> Fut,
    ) -> Result<T, GithubError>
    where
        Fut: std::future::Future<Output = Result<T, octocrab::Error>>,
    {
        let mut call = call;
        self.backoff
            .run(operation, GithubError::retryable, || {
                let fut = call();
                async move { fut.await.map_err(|e| github_error(operation, e)) }
            })
            .await
    }
}

#[derive(Deserialize)]
struct RunsPage {
    #[serde(default)]
    workflow_runs: Vec<RunId>,
}

#[derive(Deserialize)]
struct RunId {
    id: u64,
}

#[derive(Deserialize)]
struct JobsPage {
    #[serde(default)]
    jobs: Vec<RawJob>,
}

/// GitHub's job, leniently: octocrab's model refuses some real answers (such as `requested`).
#[derive(Deserialize)]
struct RawJob {
    id: u64,
    run_id: u64,
    #[serde(default)]
    name: String,
    status: String,
    #[serde(default)]
    labels: Vec<String>,
    runner_name: Option<String>,
    created_at: Option<DateTime<Utc>>,
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
            .retrying("registering the runner", || async {
                self.crab
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
            })
            .await?;
        Ok(JitRunner {
            runner: runner(&config.runner),
            encoded_jit_config: Secret::new(config.encoded_jit_config),
        })
    }

    async fn get_runner(&self, id: u64) -> Result<Option<Runner>, GithubError> {
        let found = self
            .retrying("reading the runner", || async {
                self.crab
                    .actions()
                    .get_repo_runner(&self.owner, &self.repo, RunnerId(id))
                    .await
            })
            .await;
        match found {
            Ok(r) => Ok(Some(runner(&r))),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn runners(&self) -> Result<Vec<Runner>, GithubError> {
        let mut found = Vec::new();
        let mut page: u32 = 1;
        loop {
            let batch = self
                .retrying("listing runners", || async {
                    self.crab
                        .actions()
                        .list_repo_self_hosted_runners(&self.owner, &self.repo)
                        .per_page(100u8)
                        .page(page)
                        .send()
                        .await
                })
                .await?;
            let last = batch.next.is_none() || batch.items.is_empty();
            found.extend(batch.items.iter().map(runner));
            if last {
                return Ok(found);
            }
            page += 1;
        }
    }

    async fn delete_runner(&self, id: u64) -> Result<Removal, GithubError> {
        let removed = self
            .retrying("removing the runner", || async {
                self.crab
                    .actions()
                    .delete_repo_runner(&self.owner, &self.repo, RunnerId(id))
                    .await
            })
            .await;
        match removed {
            Ok(()) => Ok(Removal::Deleted),
            Err(e) if e.status == Some(404) => Ok(Removal::AlreadyGone),
            Err(e) => Err(e),
        }
    }

    async fn active_runs(&self) -> Result<Vec<u64>, GithubError> {
        let mut ids = Vec::new();
        for status in ["queued", "in_progress"] {
            let mut page: u32 = 1;
            loop {
                let path = self.path("runs");
                let query = [
                    ("status", status.to_owned()),
                    ("per_page", "100".to_owned()),
                    ("page", page.to_string()),
                ];
                let batch: RunsPage = self
                    .retrying("listing workflow runs", || {
                        self.crab.get(&path, Some(&query))
                    })
                    .await?;
                let full = batch.workflow_runs.len() == 100;
                ids.extend(batch.workflow_runs.iter().map(|r| r.id));
                if !full || page >= 10 {
                    break;
                }
                page += 1;
            }
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    async fn run_jobs(&self, run_id: u64) -> Result<Vec<Job>, GithubError> {
        let path = self.path(&format!("runs/{run_id}/jobs"));
        let query = [("per_page", "100")];
        let page: JobsPage = self
            .retrying("listing the jobs of a run", || {
                self.crab.get(&path, Some(&query))
            })
            .await?;
        Ok(page
            .jobs
            .into_iter()
            .map(|j| Job {
                id: j.id,
                run_id: j.run_id,
                name: j.name,
                status: j.status,
                labels: j.labels,
                runner_name: j.runner_name,
                created_at: j.created_at,
            })
            .collect())
    }

    async fn cancel_run(&self, run_id: u64) -> Result<(), GithubError> {
        let path = self.path(&format!("runs/{run_id}/cancel"));
        let _: serde_json::Value = self
            .retrying("cancelling a workflow run", || {
                self.crab.post(&path, None::<&()>)
            })
            .await?;
        Ok(())
    }
}
