//! What gpu-runner needs from a cloud. The orchestration sees only this trait; EC2 implements it,
//! and tests or other providers can too.

pub mod aws;
pub mod credentials;

use std::future::Future;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::inputs::ImageRef;
use crate::plan::{Candidate, LaunchPlan, Market, tag};

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
    /// The state as EC2 names it.
    pub fn name(&self) -> &str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::Terminated => "terminated",
            InstanceState::Other(name) => name,
        }
    }

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
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    /// The repository whose start launched it (`gpu-runner:repository`).
    pub fn repository(&self) -> Option<&str> {
        self.tags.get(tag::REPOSITORY).map(String::as_str)
    }

    /// Whether `repository` launched it. GitHub's repository names are not case-sensitive.
    pub fn belongs_to(&self, repository: &str) -> bool {
        self.repository()
            .is_some_and(|r| r.eq_ignore_ascii_case(repository))
    }

    /// The `gpu-runner:label` tag: the label of the start that launched it.
    pub fn label(&self) -> Option<&str> {
        self.tags.get(tag::LABEL).map(String::as_str)
    }

    /// The name of the runner it serves: its `gpu-runner:runner` tag, else (one runner) the label.
    pub fn runner_name(&self) -> Option<&str> {
        self.tags
            .get(tag::RUNNER)
            .map(String::as_str)
            .or_else(|| self.label())
    }

    /// The `gpu-runner:expires-at` tag: when its boot script ends it at the latest.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.tags
            .get(tag::EXPIRES_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Which gpu-runner instances to find by their tags: always one repository's, so that nothing
/// one repository runs can touch another's instances in the same account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagged<'a> {
    /// Launched by the start that made this label.
    Label { repository: &'a str, label: &'a str },
    /// Launched by any start of this workflow run.
    Run { repository: &'a str, run_id: u64 },
    /// Every instance gpu-runner launched in the region for this repository.
    Repository(&'a str),
}

/// One launch attempt: a candidate of the plan, with the rendered boot script.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub plan: &'a LaunchPlan,
    /// The runner the instance is for (tagged `gpu-runner:runner`).
    pub runner_name: &'a str,
    pub candidate: &'a Candidate,
    pub image_id: &'a str,
    /// The boot script; it carries the runner's JIT config, so it is never logged.
    pub user_data: &'a crate::secret::Secret,
    /// Ask the cloud to check permissions only (EC2 `DryRun`).
    pub dry_run: bool,
    /// Makes a retried launch idempotent: EC2 answers a repeated `RunInstances` with the same
    /// token with the instance it launched the first time, so a lost answer never launches twice.
    pub client_token: &'a str,
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

impl CloudError {
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    /// EC2's answer to a `DryRun` request that would have succeeded.
    pub fn is_dry_run_success(&self) -> bool {
        self.code() == "DryRunOperation"
    }

    /// What to do about it, by AWS error code.
    pub fn hint(&self) -> String {
        let code = self.code();
        match code {
            NO_CREDENTIALS => "Give gpu-runner AWS credentials in one of two ways: set \
                role-to-assume to an IAM role that trusts GitHub's OIDC provider (and give the \
                job permissions: id-token: write), or set AWS credentials in the environment in \
                an earlier step (such as aws-actions/configure-aws-credentials)."
                .to_owned(),
            "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException"
                if self.operation == "RunInstances" =>
            {
                "The role may not launch this instance: the resource AWS names above tells which \
                 rule refused it. The README's permissions policy (What AWS needs) launches only \
                 GPU instance types with IMDSv2, from Amazon's images or the account's own, into \
                 the account's VPCs, with root volumes of at most 1024 GiB, tagged for this \
                 repository: change the request (instance-type, image-id, subnet-id, \
                 root-volume-size), or tailor that NeverLaunch statement of the role's policy."
                    .to_owned()
            }
            "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => format!(
                "The role is missing a permission for {}: compare its policy with the one in the \
                 README (What AWS needs).",
                self.operation
            ),
            "InvalidIdentityToken" | "IDPRejectedClaim" => "AWS refused the job's OIDC token: \
                check that the IAM identity provider for token.actions.githubusercontent.com exists \
                and that the role's trust policy allows this repository (and branch or environment)."
                .to_owned(),
            "InsufficientInstanceCapacity" | "Unsupported" | "InstanceLimitExceeded"
            | "VcpuLimitExceeded" => "AWS has no capacity (or quota) for this type here right \
                now: list more instance types or subnets, or request a vCPU quota increase for \
                \"Running On-Demand G and VT instances\" in Service Quotas."
                .to_owned(),
            "ParameterNotFound" => "Check image-id: the SSM parameter does not exist in this \
                region."
                .to_owned(),
            "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" => {
                "Check image-id: AMIs are per region.".to_owned()
            }
            "InvalidSubnetID.NotFound" | "InvalidGroup.NotFound" => {
                "Check subnet-id and security-group-id: they must exist in aws-region.".to_owned()
            }
            "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
                "AWS is throttling this account: re-run the job in a minute.".to_owned()
            }
            _ => "Check the AWS error above; re-run the job if it looks passing.".to_owned(),
        }
    }
}

/// The Service Quotas name of the vCPU quota an instance type counts against.
fn vcpu_quota(instance_type: &str, market: Market) -> String {
    let family = instance_type.split('.').next().unwrap_or_default();
    let group = match family.chars().next() {
        Some('g') => "G and VT",
        Some('v') if family.starts_with("vt") => "G and VT",
        Some('p') => "P",
        Some('f') => "F",
        Some('i') if family.starts_with("inf") => "Inf",
        Some('t') if family.starts_with("trn") => "Trn",
        _ => "Standard (A, C, D, H, I, M, R, T, Z)",
    };
    match market {
        Market::OnDemand => format!("Running On-Demand {group} instances"),
        Market::Spot => format!("All {group} Spot Instance Requests"),
    }
}

/// Our code for "the SDK found no AWS credentials": not an AWS error code, no request was sent.
pub const NO_CREDENTIALS: &str = "NoCredentials";

/// EC2's code for a spot launch in an account without the spot service-linked role.
pub const SPOT_ROLE_MISSING: &str = "AuthFailure.ServiceLinkedRoleCreationNotPermitted";

/// For an AWS error that means "no capacity here, now" (the next candidate may work): what it
/// means and what to do. `None` for every other error, which stops the launch at once.
pub fn capacity_advice(code: &str, instance_type: &str, market: Market) -> Option<String> {
    let advice = match code {
        "InsufficientInstanceCapacity" | "InsufficientCapacity" => {
            "AWS has no free capacity of this type in this zone right now: list more instance \
             types, or subnets in other zones, or allow spot"
                .to_owned()
        }
        "Unsupported" => "this type is not offered in this zone (or not in this market): add \
            subnets in other zones"
            .to_owned(),
        "InstanceLimitExceeded" => "the account's instance limit in this region is reached: \
            end unused instances or ask AWS for a higher limit"
            .to_owned(),
        "VcpuLimitExceeded" => format!(
            "the vCPU quota is used up: request an increase of \"{}\" in Service Quotas",
            vcpu_quota(instance_type, market)
        ),
        "MaxSpotInstanceCountExceeded" => format!(
            "the account's spot limit is reached: request an increase of \"{}\" in Service \
             Quotas, or use market-type: spot-then-on-demand",
            vcpu_quota(instance_type, Market::Spot)
        ),
        "SpotMaxPriceTooLow" => "the spot price is above the maximum price: use market-type: \
            spot-then-on-demand or on-demand"
            .to_owned(),
        "InsufficientFreeAddressesInSubnet" => {
            "the subnet has no free IP addresses: add another subnet".to_owned()
        }
        // An account's first spot launch creates the spot service-linked role, which the role
        // may not do: no spot candidate can launch, the on-demand ones can.
        SPOT_ROLE_MISSING if market == Market::Spot => "this account has no spot \
            service-linked role yet, and the role may not create it: create it once with `aws \
            iam create-service-linked-role --aws-service-name spot.amazonaws.com` (or use \
            market-type: spot-then-on-demand, which goes on to on-demand)"
            .to_owned(),
        _ => return None,
    };
    Some(advice)
}

pub trait Cloud {
    /// An AMI id as is; an `ssm:` parameter read to the AMI id it holds.
    fn resolve_image(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<String, CloudError>> + Send;

    /// GPUs per instance of this type, when the cloud says; the boot script checks it.
    fn gpu_count(&self, instance_type: &str) -> impl Future<Output = Option<u32>> + Send;

    fn launch(
        &self,
        request: LaunchRequest<'_>,
    ) -> impl Future<Output = Result<Instance, CloudError>> + Send;

    fn describe(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Instances by gpu-runner's tags, in any state: how stop and rollback find what they lost the
    /// ids of, and how cleanup finds everything gpu-runner launched.
    fn find(
        &self,
        tagged: Tagged<'_>,
    ) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Terminates; instances already gone are not an error.
    fn terminate(&self, ids: &[String]) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// The current spot price (USD per hour) of this type in this zone, when the cloud says.
    fn spot_price(
        &self,
        instance_type: &str,
        zone: &str,
    ) -> impl Future<Output = Option<f64>> + Send;

    /// The tail of the instance's console, to show why a boot failed.
    fn console_output(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, CloudError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_errors_name_the_quota_to_raise_and_others_stop_the_search() {
        let advice = |code, t, m| capacity_advice(code, t, m).unwrap_or_default();
        assert!(
            advice("VcpuLimitExceeded", "g5.xlarge", Market::OnDemand)
                .contains("\"Running On-Demand G and VT instances\"")
        );
        assert!(
            advice("VcpuLimitExceeded", "p5.48xlarge", Market::Spot)
                .contains("\"All P Spot Instance Requests\"")
        );
        assert!(advice("SpotMaxPriceTooLow", "g5.xlarge", Market::Spot).contains("spot-then"));
        for code in [
            "InsufficientInstanceCapacity",
            "Unsupported",
            "InstanceLimitExceeded",
            "MaxSpotInstanceCountExceeded",
            "InsufficientFreeAddressesInSubnet",
        ] {
            assert!(
                capacity_advice(code, "g5.xlarge", Market::OnDemand).is_some(),
                "{code}"
            );
        }
        assert!(
            advice(SPOT_ROLE_MISSING, "g5.xlarge", Market::Spot).contains(
                "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
            )
        );
        assert_eq!(
            capacity_advice(SPOT_ROLE_MISSING, "g5.xlarge", Market::OnDemand),
            None
        );
        for code in [
            "UnauthorizedOperation",
            "InvalidAMIID.NotFound",
            "InvalidParameterValue",
            "",
        ] {
            assert_eq!(
                capacity_advice(code, "g5.xlarge", Market::OnDemand),
                None,
                "{code}"
            );
        }
    }
}
