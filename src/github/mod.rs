//! What gpu-runner needs from GitHub: self-hosted runners of one repository. octocrab implements it
//! against the REST API; tests and GitHub Enterprise Server point it elsewhere.

pub mod app;
pub mod octo;

use std::future::Future;

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
    /// What to do about it. `workflow_token` is true when the token looks like one GitHub mints
    /// for a workflow or App installation (`ghs_`), the usual reason for a 403 here.
    pub fn hint(&self, repository: &str, workflow_token: bool) -> String {
        match self.status {
            Some(401) => "GitHub refused github-token (HTTP 401): it is expired, revoked or \
                mistyped. Create a new token and update the secret."
                .to_owned(),
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
            _ => "This is usually passing: re-run the job. If it persists, check \
                https://www.githubstatus.com."
                .to_owned(),
        }
    }
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

    /// Runners that carry `label`, across all pages.
    fn runners_with_label(
        &self,
        label: &str,
    ) -> impl Future<Output = Result<Vec<Runner>, GithubError>> + Send;

    fn delete_runner(&self, id: u64) -> impl Future<Output = Result<Removal, GithubError>> + Send;
}
