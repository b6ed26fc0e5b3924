//! Every input the action takes: its name as users write it, the modes that read it, its default
//! (the same as in `action.yml`; a test holds them together) and whether it is a secret.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    Start,
    Stop,
    Cleanup,
    StartAndCleanup,
    Retry,
}

impl Scope {
    /// How the modes that read an input are named in a message.
    pub fn modes(self) -> &'static str {
        match self {
            Scope::All => "any mode",
            Scope::Start => "mode: start",
            Scope::Stop => "mode: stop",
            Scope::Cleanup => "mode: cleanup",
            Scope::StartAndCleanup => "mode: start and mode: cleanup",
            Scope::Retry => "mode: retry",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub scope: Scope,
    /// Empty when the input has no default.
    pub default: &'static str,
    pub secret: bool,
}

impl Spec {
    const fn new(name: &'static str, scope: Scope, default: &'static str) -> Self {
        Self {
            name,
            scope,
            default,
            secret: false,
        }
    }

    const fn secret(name: &'static str, scope: Scope) -> Self {
        Self {
            name,
            scope,
            default: "",
            secret: true,
        }
    }

    /// The variable the runner sets for this input.
    pub fn env_var(&self) -> String {
        env_var(self.name)
    }
}

/// The variable the runner sets for input `name`: `INPUT_` + the name upper-cased, spaces as `_`,
/// hyphens kept.
pub fn env_var(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

/// The AWS Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu 22.04), through AWS's public SSM
/// parameter: always the newest image, with the driver and `nvidia-smi` already installed.
pub const DEFAULT_IMAGE: &str = "ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";
/// The same image for arm64 instance types (g5g), used when `image-id` is not set.
pub const DEFAULT_IMAGE_ARM64: &str =
    "ssm:/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";

/// The runner image a pod runs: GitHub's own, with the runner of the pinned version in
/// `/home/runner`, run as its unprivileged `runner` user. Named by its image index's digest too,
/// so that a tag moved on the registry cannot change what runs.
pub const DEFAULT_POD_IMAGE: &str = "ghcr.io/actions/actions-runner:2.337.0@sha256:e5496277be5d09bc968b3d64911b74e219ac4a3f2edce956a3ecf9271bea1ef4";

use Scope::{All, Cleanup, Retry, Start, StartAndCleanup, Stop};

pub const MODE: Spec = Spec::new("mode", All, "");
pub const GITHUB_TOKEN: Spec = Spec::secret("github-token", All);
pub const GITHUB_APP_ID: Spec = Spec::new("github-app-id", All, "");
pub const GITHUB_APP_PRIVATE_KEY: Spec = Spec::secret("github-app-private-key", All);
pub const AWS_REGION: Spec = Spec::new("aws-region", All, "");
pub const ROLE_TO_ASSUME: Spec = Spec::new("role-to-assume", All, "");
pub const AUDIENCE: Spec = Spec::new("audience", All, "sts.amazonaws.com");
pub const RUNNER_SCOPE: Spec = Spec::new("runner-scope", All, "repo");
pub const MACHINE: Spec = Spec::new("machine", All, "ec2");
pub const KUBECONFIG: Spec = Spec::secret("kubeconfig", All);
pub const EKS_CLUSTER: Spec = Spec::new("eks-cluster", All, "");
pub const NAMESPACE: Spec = Spec::new("namespace", All, "");

pub const INSTANCE_TYPES: Spec = Spec::new("instance-types", Start, "g4dn.xlarge");
pub const IMAGE_ID: Spec = Spec::new("image-id", Start, DEFAULT_IMAGE);
pub const SUBNET_IDS: Spec = Spec::new("subnet-ids", Start, "");
pub const MARKET_TYPE: Spec = Spec::new("market-type", Start, "on-demand");
pub const SPOT_BREAKER_INTERRUPTIONS: Spec = Spec::new("spot-breaker-interruptions", Start, "2");
pub const SPOT_BREAKER_WINDOW_MINUTES: Spec = Spec::new("spot-breaker-window-minutes", Start, "15");
pub const SPOT_BREAKER_MINUTES: Spec = Spec::new("spot-breaker-minutes", Start, "30");
pub const COUNT: Spec = Spec::new("count", Start, "1");
pub const ALLOW_PARTIAL: Spec = Spec::new("allow-partial", Start, "false");
pub const SECURITY_GROUP_IDS: Spec = Spec::new("security-group-ids", Start, "");
pub const IAM_INSTANCE_PROFILE: Spec = Spec::new("iam-instance-profile", Start, "");
pub const JIT_HANDOFF: Spec = Spec::new("jit-handoff", Start, "user-data");
pub const ROOT_VOLUME_SIZE: Spec = Spec::new("root-volume-size", Start, "");
pub const LABELS: Spec = Spec::new("labels", Start, "");
pub const TAGS: Spec = Spec::new("tags", Start, "");
pub const RUNNER_GROUP: Spec = Spec::new("runner-group", Start, "");
pub const RUNNER_USER: Spec = Spec::new("runner-user", Start, "runner");
pub const RUNNER_SUDO: Spec = Spec::new("runner-sudo", Start, "true");
pub const PRE_RUNNER_SCRIPT: Spec = Spec::new("pre-runner-script", Start, "");
pub const STARTUP_TIMEOUT_MINUTES: Spec = Spec::new("startup-timeout-minutes", Start, "10");
pub const MAX_LIFETIME_MINUTES: Spec = Spec::new("max-lifetime-minutes", Start, "360");
pub const IDLE_TIMEOUT_MINUTES: Spec = Spec::new("idle-timeout-minutes", Start, "15");
pub const RUNNER_VERSION: Spec = Spec::new("runner-version", Start, "2.337.0");
pub const RUNNER_SHA256: Spec = Spec::new("runner-sha256", Start, "");
pub const ALLOWED_ASSOCIATIONS: Spec =
    Spec::new("allowed-associations", Start, "OWNER,MEMBER,COLLABORATOR");
pub const ALLOW_UNTRUSTED: Spec = Spec::new("allow-untrusted", Start, "false");
pub const ON_UNTRUSTED: Spec = Spec::new("on-untrusted", Start, "skip");
pub const KEEP_ON_FAILURE: Spec = Spec::new("keep-on-failure", Start, "false");
pub const DRY_RUN: Spec = Spec::new("dry-run", StartAndCleanup, "false");
pub const POOL: Spec = Spec::new("pool", Start, "");
pub const POOL_SIZE: Spec = Spec::new("pool-size", Start, "4");
pub const POOL_FULL: Spec = Spec::new("pool-full", Start, "wait");
pub const POOL_INSTANCE_ID: Spec = Spec::new("pool-instance-id", Start, "");
pub const POOL_MAX_USES: Spec = Spec::new("pool-max-uses", Start, "0");
pub const POOL_MAX_AGE_DAYS: Spec = Spec::new("pool-max-age-days", Start, "30");
pub const GPU_COUNT: Spec = Spec::new("gpu-count", Start, "1");
pub const GPU_RESOURCE: Spec = Spec::new("gpu-resource", Start, "nvidia.com/gpu");
pub const NODE_SELECTOR: Spec = Spec::new("node-selector", Start, "");
pub const TOLERATIONS: Spec = Spec::new("tolerations", Start, "");
pub const POD_TEMPLATE: Spec = Spec::new("pod-template", Start, "");
pub const RUNTIME_CLASS: Spec = Spec::new("runtime-class", Start, "");
pub const POD_IMAGE: Spec = Spec::new("pod-image", Start, DEFAULT_POD_IMAGE);
pub const CPU_REQUEST: Spec = Spec::new("cpu-request", Start, "");
pub const MEMORY_REQUEST: Spec = Spec::new("memory-request", Start, "");
pub const NODE_WAIT_MINUTES: Spec = Spec::new("node-wait-minutes", Start, "10");

pub const LABEL: Spec = Spec::new("label", Stop, "");
pub const INSTANCE_IDS: Spec = Spec::new("instance-ids", Stop, "");
pub const REGION: Spec = Spec::new("region", Stop, "");

pub const MAX_AGE_MINUTES: Spec = Spec::new("max-age-minutes", Cleanup, "720");
pub const QUEUED_TIMEOUT_MINUTES: Spec = Spec::new("queued-timeout-minutes", Cleanup, "30");

pub const MAX_RETRIES: Spec = Spec::new("max-retries", Retry, "1");

pub const ALL: &[Spec] = &[
    MODE,
    GITHUB_TOKEN,
    GITHUB_APP_ID,
    GITHUB_APP_PRIVATE_KEY,
    AWS_REGION,
    ROLE_TO_ASSUME,
    AUDIENCE,
    RUNNER_SCOPE,
    MACHINE,
    KUBECONFIG,
    EKS_CLUSTER,
    NAMESPACE,
    INSTANCE_TYPES,
    IMAGE_ID,
    SUBNET_IDS,
    MARKET_TYPE,
    SPOT_BREAKER_INTERRUPTIONS,
    SPOT_BREAKER_WINDOW_MINUTES,
    SPOT_BREAKER_MINUTES,
    COUNT,
    ALLOW_PARTIAL,
    SECURITY_GROUP_IDS,
    IAM_INSTANCE_PROFILE,
    JIT_HANDOFF,
    ROOT_VOLUME_SIZE,
    LABELS,
    TAGS,
    RUNNER_GROUP,
    RUNNER_USER,
    RUNNER_SUDO,
    PRE_RUNNER_SCRIPT,
    STARTUP_TIMEOUT_MINUTES,
    MAX_LIFETIME_MINUTES,
    IDLE_TIMEOUT_MINUTES,
    RUNNER_VERSION,
    RUNNER_SHA256,
    ALLOWED_ASSOCIATIONS,
    ALLOW_UNTRUSTED,
    ON_UNTRUSTED,
    KEEP_ON_FAILURE,
    DRY_RUN,
    POOL,
    POOL_SIZE,
    POOL_FULL,
    POOL_INSTANCE_ID,
    POOL_MAX_USES,
    POOL_MAX_AGE_DAYS,
    GPU_COUNT,
    GPU_RESOURCE,
    NODE_SELECTOR,
    TOLERATIONS,
    POD_TEMPLATE,
    RUNTIME_CLASS,
    POD_IMAGE,
    CPU_REQUEST,
    MEMORY_REQUEST,
    NODE_WAIT_MINUTES,
    LABEL,
    INSTANCE_IDS,
    REGION,
    MAX_AGE_MINUTES,
    QUEUED_TIMEOUT_MINUTES,
    MAX_RETRIES,
];

/// What leaving an input empty means where that is not one fixed value, as docs/inputs.md shows
/// it in the default column (generated from this file and action.yml).
pub const EMPTY_MEANS: &[(&str, &str)] = &[
    ("aws-region", "the `AWS_REGION` variable"),
    ("namespace", "the kubeconfig context's, else `default`"),
    ("subnet-ids", "the default VPC's"),
    ("security-group-ids", "the VPC's default"),
    ("root-volume-size", "the image's"),
    ("runner-sha256", "the pinned hash"),
    ("region", "`aws-region`"),
];

pub fn by_name(name: &str) -> Option<&'static Spec> {
    ALL.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_keeps_hyphens() {
        assert_eq!(INSTANCE_TYPES.env_var(), "INPUT_INSTANCE-TYPES");
        assert_eq!(MODE.env_var(), "INPUT_MODE");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }

    #[test]
    fn the_default_runner_is_the_newest_pinned_one() {
        assert_eq!(
            RUNNER_VERSION.default,
            crate::runner_package::PINNED_RUNNERS[0].version
        );
    }

    #[test]
    fn what_an_empty_input_means_is_said_only_for_inputs_without_a_default() {
        for (name, _) in EMPTY_MEANS {
            assert_eq!(by_name(name).map(|s| s.default), Some(""), "{name}");
        }
    }

    #[test]
    fn secrets_have_no_default() {
        assert!(
            ALL.iter()
                .filter(|s| s.secret)
                .all(|s| s.default.is_empty())
        );
    }
}
