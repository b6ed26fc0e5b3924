//! What gpu-runner needs from a cloud. The orchestration sees only this trait; EC2 implements it,
//! and tests or other providers can too.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::inputs::ImageRef;
use crate::plan::{Candidate, LaunchPlan, Market};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Stopping,
    Stopped,
    Terminated,
    Other(String),
}

impl InstanceState {
    /// The instance is gone or on its way: nothing more is billed for it.
    pub fn is_ending(&self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub instance_type: String,
    pub availability_zone: Option<String>,
    pub market: Market,
    pub state: InstanceState,
    pub launched_at: Option<DateTime<Utc>>,
    /// The `gpu-runner:label` tag, when it has one.
    pub label: Option<String>,
}

/// One launch attempt: a candidate of the plan, with the rendered boot script.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub plan: &'a LaunchPlan,
    pub candidate: &'a Candidate,
    pub image_id: &'a str,
    /// The boot script; it carries the runner's JIT config, so it is never logged.
    pub user_data: &'a crate::secret::Secret,
    /// Ask the cloud to check permissions only (EC2 `DryRun`).
    pub dry_run: bool,
}

/// A cloud call that failed, with the provider's error code (for EC2, `InsufficientInstanceCapacity`
/// and the like), which decides whether to try the next candidate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct CloudError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
}

pub trait Cloud {
    /// An AMI id as is; an `ssm:` parameter read to the AMI id it holds.
    fn resolve_image(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<String, CloudError>> + Send;

    fn launch(
        &self,
        request: LaunchRequest<'_>,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    fn describe(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Instances carrying the `gpu-runner:label` tag: how stop and rollback find what they lost the
    /// ids of.
    fn find_by_label(
        &self,
        label: &str,
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Terminates; instances already gone are not an error.
    fn terminate(&self, ids: &[String]) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// The tail of the instance's console, to show why a boot failed.
    fn console_output(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, CloudError>> + Send;
}
