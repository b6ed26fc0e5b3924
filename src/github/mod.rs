//! What gpu-runner needs from GitHub: self-hosted runners of one repository. octocrab implements it
//! against the REST API; tests and GitHub Enterprise Server point it elsewhere.

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
