//! EC2's errors in words: what an AWS error code means and what to do, and which codes mean "no
//! capacity here, now", so that the next candidate is tried.

use crate::machine::MachineError;
use crate::plan::Market;

/// What to do about an EC2, STS or SSM error, by its AWS error code.
pub fn hint(e: &MachineError) -> String {
    let code = e.code();
    match code {
        NO_CREDENTIALS => "Give gpu-runner AWS credentials in one of two ways: set \
            role-to-assume to an IAM role that trusts GitHub's OIDC provider (and give the \
            job permissions: id-token: write), or set AWS credentials in the environment in \
            an earlier step (such as aws-actions/configure-aws-credentials)."
            .to_owned(),
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException"
            if e.operation == "RunInstances" =>
        {
            "The role may not launch this instance: the resource AWS names above tells which \
             rule refused it. The permissions policy of docs/aws.md (What AWS needs) launches only \
             GPU instance types with IMDSv2, from Amazon's images or the account's own, into \
             the account's VPCs, with root volumes of at most 1024 GiB, tagged for this \
             repository: change the request (instance-types, image-id, subnet-ids, \
             root-volume-size), or tailor that NeverLaunch statement of the role's policy."
                .to_owned()
        }
        "AccessDeniedException" | "AccessDenied"
            if matches!(e.operation, "PutParameter" | "DeleteParameter") =>
        {
            "The role may not write or delete the JIT config's SSM parameter: add the statement \
             HandTheJitConfigOverThroughSsm of the permissions policy in docs/aws.md (What AWS needs) \
             to the role's policy, or leave jit-handoff at user-data."
                .to_owned()
        }
        "ParameterAlreadyExists" => "An SSM parameter of this runner's name exists already, \
            and gpu-runner never overwrites one: re-run the job (a new run has a new label)."
            .to_owned(),
        "AccessDeniedException" if e.operation == "DescribeCluster" => "The role may not \
            describe the EKS cluster: add the statement of docs/iam/eks-policy.json (with your \
            account and cluster name) to the role's policy."
            .to_owned(),
        "ResourceNotFoundException" if e.operation == "DescribeCluster" => "No EKS cluster of \
            that name in this region: check eks-cluster (aws eks list-clusters) and aws-region."
            .to_owned(),
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => format!(
            "The role is missing a permission for {}: compare its policy with the one in \
             docs/aws.md (What AWS needs).",
            e.operation
        ),
        "InvalidIdentityToken" | "IDPRejectedClaim" => "AWS refused the job's OIDC token: \
            check that the IAM identity provider for token.actions.githubusercontent.com exists \
            and that the role's trust policy allows this repository (and branch or environment)."
            .to_owned(),
        "InsufficientInstanceCapacity"
        | "Unsupported"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded" => "AWS has no capacity (or quota) for this type here right \
            now: list more instance types or subnets, or request a vCPU quota increase for \
            \"Running On-Demand G and VT instances\" in Service Quotas."
            .to_owned(),
        "VPCIdNotSpecified" => "The account has no default VPC in this region: create it (aws \
            ec2 create-default-vpc), or set subnet-ids to subnets that reach GitHub."
            .to_owned(),
        "ParameterNotFound" => "Check image-id: the SSM parameter does not exist in this \
            region."
            .to_owned(),
        "InvalidAMIID.NotFound" | "InvalidAMIID.Malformed" => {
            "Check image-id: AMIs are per region.".to_owned()
        }
        "InvalidSubnetID.NotFound" | "InvalidGroup.NotFound" => {
            "Check subnet-ids and security-group-ids: they must exist in aws-region.".to_owned()
        }
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
            "AWS is throttling this account: re-run the job in a minute.".to_owned()
        }
        _ => "Check the AWS error above; re-run the job if it looks passing.".to_owned(),
    }
}

/// The Service Quotas name of the vCPU quota an instance type counts against.
fn vcpu_quota(instance_type: &str, market: Market) -> String {
    super::quotas::of(instance_type, market).name
}

/// Our code for "the SDK found no AWS credentials": not an AWS error code, no request was sent.
pub const NO_CREDENTIALS: &str = "NoCredentials";

/// EC2's code for a spot launch in an account without the spot service-linked role.
pub const SPOT_ROLE_MISSING: &str = "AuthFailure.ServiceLinkedRoleCreationNotPermitted";

/// For an AWS error that means "no capacity here, now" (the next candidate may work): what it
/// means and what to do. `None` for every other error, which stops the launch at once.
pub fn capacity_advice(code: &str, instance_type: &str, market: Market) -> Option<String> {
    let advice = match code {
        "InsufficientInstanceCapacity"
        | "InsufficientCapacity"
        | super::pool::NO_CAPACITY_REASON => {
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
