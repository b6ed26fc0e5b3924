//! What gpu-runner needs from GitHub: self-hosted runners of one repository. octocrab implements it
//! against the REST API; tests and GitHub Enterprise Server point it elsewhere.

pub mod app;
pub mod groups;
pub mod octo;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub id: u64,
    pub name: String,
    pub status: RunnerStatus,
    pub busy: bool,
    pub labels: Vec<String>,
}

/// A runner registered just in time: the encoded config is the only GitHub secret that goes to the
/// instance, and it works once, for this runner only.
#[derive(Debug, Clone)]
pub struct JitRunner {
    pub runner: Runner,
    pub encoded_jit_config: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Deleted,
    /// It was gone already (404): for stop, as good as deleted.
    AlreadyGone,
}

/// The operations on workflow runs and jobs (cleanup's), which need the Actions permission: the
/// registry names its calls with these, and a 403 on one of them gets the Actions hint.
pub const READING_A_RUN: &str = "reading a workflow run";
pub const LISTING_RUNS: &str = "listing workflow runs";
pub const LISTING_JOBS: &str = "listing the jobs of a run";
pub const CANCELLING_A_RUN: &str = "cancelling a workflow run";
pub const RERUNNING_A_RUN: &str = "re-running a workflow run";
const ACTIONS_OPERATIONS: &[&str] = &[
    READING_A_RUN,
    LISTING_RUNS,
    LISTING_JOBS,
    CANCELLING_A_RUN,
    RERUNNING_A_RUN,
];

/// A GitHub call that failed, with the HTTP status that decides the hint (401: bad token, 403:
/// missing rights or rate limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct GithubError {
    pub operation: &'static str,
    pub status: Option<u16>,
    pub message: String,
}

impl GithubError {
    /// GitHub says so in the message: its 403 for a secondary rate limit looks like a refusal
    /// otherwise.
    fn rate_limited(&self) -> bool {
        self.message.to_ascii_lowercase().contains("rate limit")
    }

    /// A call on workflow runs or jobs: GitHub checks the Actions permission for those, not
    /// Administration.
    fn on_runs(&self) -> bool {
        ACTIONS_OPERATIONS.contains(&self.operation)
    }

    /// GitHub refused to delete a runner because a job is running on it (422).
    pub fn runner_busy(&self) -> bool {
        self.status == Some(422) && self.message.contains("still running a job")
    }

    /// Whether trying again may help, and how long GitHub asked to wait: server errors, dropped
    /// connections and rate limits pass; a refused token or a missing right does not.
    pub fn retryable(&self) -> Option<Option<Duration>> {
        match self.status {
            None | Some(500..=599) | Some(429) => Some(None),
            // A secondary rate limit without retry-after: GitHub asks for at least a minute.
            Some(403) if self.rate_limited() => Some(Some(Duration::from_secs(60))),
            _ => None,
        }
    }

    /// What to do about it. `org` is the organization when its runners are managed
    /// (`runner-scope: org`). `workflow_token` is true when the token looks like one GitHub mints
    /// for a workflow or App installation (`ghs_`), the usual reason for a 403 here.
    pub fn hint(&self, repository: &str, org: Option<&str>, workflow_token: bool) -> String {
        match self.status {
            Some(403 | 429) if self.rate_limited() => {
                "GitHub rate-limited this token even after waiting as it asked: re-run the job \
                 later, or use a GitHub App, whose installation has higher limits."
                    .to_owned()
            }
            Some(403) if self.on_runs() => format!(
                "The token cannot read, cancel or re-run the workflow runs of {repository}: that \
                 takes the Actions permission (read to list runs and jobs, write to cancel or \
                 re-run), besides Administration for the runners (a workflow's own GITHUB_TOKEN \
                 gets it with permissions: actions: write). Add Actions: read and write to the fine-grained \
                 token or the GitHub App (a classic token's repo scope covers it)."
            ),
            Some(401) => "GitHub refused github-token (HTTP 401): it is expired, revoked or \
                mistyped. Create a new token and update the secret."
                .to_owned(),
            Some(403) if workflow_token && org.is_some() => format!(
                "This token cannot manage the self-hosted runners of the organization {}: the \
                 workflow's own GITHUB_TOKEN never can, and a GitHub App needs the organization \
                 permission Self-hosted runners: read and write (App settings → Permissions → \
                 Organization permissions), then the installation's approval of it.",
                org.unwrap_or_default()
            ),
            Some(403) if org.is_some() => format!(
                "The token cannot manage the self-hosted runners of the organization {}: a \
                 fine-grained token needs the organization permission Self-hosted runners: read \
                 and write, a classic token the admin:org scope, and its owner must be an owner \
                 of the organization. Or set runner-scope: repo to register the runner in {repository}.",
                org.unwrap_or_default()
            ),
            Some(404) if org.is_some() => format!(
                "GitHub shows no organization {} to this token: runner-scope: org needs a \
                 repository owned by an organization (not a personal account), and a token or \
                 App installed on that organization. Use runner-scope: repo for a personal \
                 repository.",
                org.unwrap_or_default()
            ),
            Some(403) if workflow_token => format!(
                "This looks like the workflow's own GITHUB_TOKEN, which can never manage \
                 self-hosted runners: GitHub does not grant it Administration. Pass a fine-grained \
                 token of {repository} with Administration: read and write (or a classic token \
                 with repo), or a GitHub App, as github-token: ${{{{ secrets.RUNNER_ADMIN_TOKEN }}}}."
            ),
            Some(403) => format!(
                "The token cannot manage self-hosted runners of {repository}: it needs \
                 Administration: read and write (fine-grained token or App) or the repo scope \
                 (classic token), and its owner must be an admin of the repository. If GitHub \
                 mentions a rate limit, re-run the job later."
            ),
            Some(404) => format!(
                "GitHub does not show {repository} to this token: give the token access to the \
                 repository (fine-grained tokens list their repositories)."
            ),
            Some(409) => "A runner with this name exists already: re-run the job.".to_owned(),
            Some(422) if self.runner_busy() => "GitHub still shows a job running on this runner. \
                Once its instance is gone, GitHub fails that job and takes the runner offline \
                within minutes, and the ephemeral runner goes with it; run mode: stop again (or \
                let the scheduled cleanup remove it), or cancel the job first."
                .to_owned(),
            _ => "This is usually passing: re-run the job. If it persists, check \
                https://www.githubstatus.com."
                .to_owned(),
        }
    }
}

/// A job of a workflow run, as cleanup needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    /// queued | in_progress | completed | waiting | requested | pending
    pub status: String,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    pub runner_name: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

pub trait RunnerRegistry {
    fn create_jit_runner(
        &self,
        name: &str,
        labels: &[String],
    ) -> impl Future<Output = Result<JitRunner, GithubError>> + Send;

    fn get_runner(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<Runner>, GithubError>> + Send;

    /// Every self-hosted runner, across all pages.
    fn runners(&self) -> impl Future<Output = Result<Vec<Runner>, GithubError>> + Send;

    fn delete_runner(&self, id: u64) -> impl Future<Output = Result<Removal, GithubError>> + Send;

    /// Workflow runs that are queued or in progress, by id.
    fn active_runs(&self) -> impl Future<Output = Result<Vec<u64>, GithubError>> + Send;

    fn run_jobs(&self, run_id: u64) -> impl Future<Output = Result<Vec<Job>, GithubError>> + Send;

    fn cancel_run(&self, run_id: u64) -> impl Future<Output = Result<(), GithubError>> + Send;

    /// Re-runs every job of a completed run, as a new attempt: its start job too, so that the
    /// re-run gets a new machine and label.
    fn rerun_run(&self, run_id: u64) -> impl Future<Output = Result<(), GithubError>> + Send;

    /// How calls that GitHub may answer later (a busy runner's removal) are retried.
    fn backoff(&self) -> crate::retry::Backoff;
}

/// What a GitHub failure was about, for its hint, which is worked out when the error is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whose {
    /// The self-hosted runners of `repository`, or of its organization `org`.
    Runners {
        repository: String,
        org: Option<String>,
        /// The token looks like one GitHub mints for a workflow (`ghs_`).
        workflow_token: bool,
    },
    /// A failure that knows its own fix (an App token, a runner group).
    Fix(String),
}

impl Whose {
    pub fn hint(&self, source: &GithubError) -> String {
        match self {
            Whose::Runners {
                repository,
                org,
                workflow_token,
            } => source.hint(repository, org.as_deref(), *workflow_token),
            Whose::Fix(fix) => fix.clone(),
        }
    }
}
