//! `RunnerRegistry` on the GitHub REST API through octocrab: the runners of one repository, or of
//! the organization that owns it. Workflow runs and jobs are always the repository's.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use octocrab::Octocrab;
use octocrab::models::actions::SelfHostedRunner;
use octocrab::models::{RunnerGroupId, RunnerId};
use octocrab::service::middleware::retry::{NoOpRateLimitMetrics, RetryConfig};
use serde::Deserialize;

use super::{GithubError, JitRunner, Job, Removal, Runner, RunnerRegistry, RunnerStatus};
use crate::inputs::RunnerScope;
use crate::retry::Backoff;
use crate::secret::Secret;

/// The default runner group: every repository runner is in it, and organization runners are
/// unless `runner-group` names another.
const DEFAULT_RUNNER_GROUP: u64 = 1;

pub struct Runners {
    crab: Octocrab,
    owner: String,
    repo: String,
    scope: RunnerScope,
    group: u64,
    backoff: Backoff,
}

/// An organization's runner group, as start checks it before registering a runner in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    /// `all`, `selected` or `private` (every private repository): which repositories may use it.
    #[serde(default)]
    pub visibility: String,
    #[serde(default)]
    pub allows_public_repositories: bool,
    /// The group new runners join unless told otherwise.
    #[serde(default)]
    pub default: bool,
}

#[derive(Deserialize)]
struct GroupsPage {
    #[serde(default)]
    runner_groups: Vec<RunnerGroup>,
}

#[derive(Deserialize)]
struct ReposPage {
    #[serde(default)]
    repositories: Vec<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    #[serde(default)]
    private: bool,
}

impl Runners {
    /// `api_url` is `GITHUB_API_URL`: api.github.com, a GitHub Enterprise Server's `/api/v3`.
    /// With `RunnerScope::Org`, the runners are the organization `owner`'s.
    pub fn new(
        api_url: &str,
        token: &Secret,
        (owner, repo): (&str, &str),
        scope: RunnerScope,
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
            scope,
            group: DEFAULT_RUNNER_GROUP,
            backoff,
        })
    }

    pub fn scope(&self) -> RunnerScope {
        self.scope
    }

    /// How this registry retries, for callers that wait on GitHub too.
    /// Registers runners in `group` (an organization's) from now on.
    pub fn use_group(&mut self, group: u64) {
        self.group = group;
    }

    fn path(&self, rest: &str) -> String {
        format!("/repos/{}/{}/actions/{rest}", self.owner, self.repo)
    }

    /// The organization's runner groups, across all pages.
    pub async fn runner_groups(&self) -> Result<Vec<RunnerGroup>, GithubError> {
        let path = format!("/orgs/{}/actions/runner-groups", self.owner);
        let mut groups = Vec::new();
        for page in 1..=10u32 {
            let batch: GroupsPage = self
                .page("listing the organization's runner groups", &path, &[], page)
                .await?;
            let full = batch.runner_groups.len() == 100;
            groups.extend(batch.runner_groups);
            if !full {
                break;
            }
        }
        Ok(groups)
    }

    /// Whether a `selected` group lets this repository use its runners.
    pub async fn group_serves_repository(&self, group: u64) -> Result<bool, GithubError> {
        let path = format!(
            "/orgs/{}/actions/runner-groups/{group}/repositories",
            self.owner
        );
        let full_name = format!("{}/{}", self.owner, self.repo);
        for page in 1..=50u32 {
            let batch: ReposPage = self
                .page("listing the runner group's repositories", &path, &[], page)
                .await?;
            if batch
                .repositories
                .iter()
                .any(|r| r.full_name.eq_ignore_ascii_case(&full_name))
            {
                return Ok(true);
            }
            if batch.repositories.len() < 100 {
                break;
            }
        }
        Ok(false)
    }

    /// Whether the repository is public: a group must allow public repositories to serve it.
    pub async fn repository_is_public(&self) -> Result<bool, GithubError> {
        let path = format!("/repos/{}/{}", self.owner, self.repo);
        let repo: Repository = self
            .retrying("reading the repository", || {
                self.crab.get(&path, None::<&()>)
            })
            .await?;
        Ok(!repo.private)
    }

    /// Who must approve a fork's pull request before its workflows run (Settings → Actions →
    /// General): `first_time_contributors_new_to_github`, `first_time_contributors` or
    /// `all_external_contributors`.
    pub async fn fork_pr_approval_policy(&self) -> Result<String, GithubError> {
        #[derive(Deserialize)]
        struct Policy {
            approval_policy: String,
        }
        let path = self.path("permissions/fork-pr-contributor-approval");
        let policy: Policy = self
            .retrying("reading the fork pull request approval policy", || {
                self.crab.get(&path, None::<&()>)
            })
            .await?;
        Ok(policy.approval_policy)
    }

    /// What `login` may do in the repository: `admin`, `write`, `read` or `none` (GitHub folds
    /// maintain into write and triage into read here).
    pub async fn collaborator_permission(&self, login: &str) -> Result<String, GithubError> {
        #[derive(Deserialize)]
        struct Permission {
            permission: String,
        }
        let path = format!(
            "/repos/{}/{}/collaborators/{login}/permission",
            self.owner, self.repo
        );
        let answer: Permission = self
            .retrying("reading the comment author's permission", || {
                self.crab.get(&path, None::<&()>)
            })
            .await?;
        Ok(answer.permission)
    }

    /// The head commit of pull request `number`, as it is now.
    pub async fn pull_request_head(&self, number: u64) -> Result<String, GithubError> {
        #[derive(Deserialize)]
        struct Head {
            sha: String,
        }
        #[derive(Deserialize)]
        struct Pull {
            head: Head,
        }
        let path = format!("/repos/{}/{}/pulls/{number}", self.owner, self.repo);
        let pull: Pull = self
            .retrying("reading the pull request", || {
                self.crab.get(&path, None::<&()>)
            })
            .await?;
        Ok(pull.head.sha)
    }

    /// Whether workflow run `run_id` is one of this repository's (run ids are unique on GitHub).
    pub async fn run_is_ours(&self, run_id: u64) -> Result<bool, GithubError> {
        let path = self.path(&format!("runs/{run_id}"));
        let found: Result<RunId, _> = self
            .retrying(super::READING_A_RUN, || self.crab.get(&path, None::<&()>))
            .await;
        match found {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Page `page` (100 entries a page) of a list at `path`, with `filters` in the query.
    async fn page<P: serde::de::DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        filters: &[(&str, &str)],
        page: u32,
    ) -> Result<P, GithubError> {
        let page = page.to_string();
        let mut query: Vec<(&str, &str)> = filters.to_vec();
        query.extend([("per_page", "100"), ("page", page.as_str())]);
        self.retrying(operation, || self.crab.get(path, Some(&query)))
            .await
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

impl RunnerRegistry for Runners {
    fn backoff(&self) -> Backoff {
        self.backoff
    }

    async fn create_jit_runner(
        &self,
        name: &str,
        labels: &[String],
    ) -> Result<JitRunner, GithubError> {
        let config = self
            .retrying("registering the runner", || async {
                let actions = self.crab.actions();
                let group = RunnerGroupId(self.group);
                let request = match self.scope {
                    RunnerScope::Repo => actions.create_repo_jit_runner_config(
                        &self.owner,
                        &self.repo,
                        name,
                        group,
                        labels.to_vec(),
                    ),
                    RunnerScope::Org => actions.create_org_jit_runner_config(
                        &self.owner,
                        name,
                        group,
                        labels.to_vec(),
                    ),
                };
                request.send().await
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
                let actions = self.crab.actions();
                match self.scope {
                    RunnerScope::Repo => {
                        actions
                            .get_repo_runner(&self.owner, &self.repo, RunnerId(id))
                            .await
                    }
                    RunnerScope::Org => actions.get_org_runner(&self.owner, RunnerId(id)).await,
                }
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
                    let actions = self.crab.actions();
                    let list = match self.scope {
                        RunnerScope::Repo => {
                            actions.list_repo_self_hosted_runners(&self.owner, &self.repo)
                        }
                        RunnerScope::Org => actions.list_org_self_hosted_runners(&self.owner),
                    };
                    list.per_page(100u8).page(page).send().await
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
                let actions = self.crab.actions();
                match self.scope {
                    RunnerScope::Repo => {
                        actions
                            .delete_repo_runner(&self.owner, &self.repo, RunnerId(id))
                            .await
                    }
                    RunnerScope::Org => actions.delete_org_runner(&self.owner, RunnerId(id)).await,
                }
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
                let batch: RunsPage = self
                    .page(
                        super::LISTING_RUNS,
                        &self.path("runs"),
                        &[("status", status)],
                        page,
                    )
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
            .retrying(super::LISTING_JOBS, || self.crab.get(&path, Some(&query)))
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
            .retrying(super::CANCELLING_A_RUN, || {
                self.crab.post(&path, None::<&()>)
            })
            .await?;
        Ok(())
    }

    async fn rerun_run(&self, run_id: u64) -> Result<(), GithubError> {
        let path = self.path(&format!("runs/{run_id}/rerun"));
        let _: serde_json::Value = self
            .retrying(super::RERUNNING_A_RUN, || {
                self.crab.post(&path, None::<&()>)
            })
            .await?;
        Ok(())
    }
}
