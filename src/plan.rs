//! Pure planning: from inputs, the job's context, a clock reading and a random nonce to everything a
//! start will do. No I/O here; `dry-run` prints this, and tests snapshot it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

use crate::actions::summary::{Markdown, inline};
use crate::context::Context;
use crate::inputs::{
    GroupRef, ImageRef, JitHandoff, MarketType, PodInputs, PoolInputs, RunnerScope, SpotBreaker,
    StartInputs,
};

/// gpu-runner's own tag keys. Cleanup and stop find instances by these, so they never change.
pub mod tag {
    pub const NAME: &str = "Name";
    pub const LABEL: &str = "gpu-runner:label";
    /// The runner the instance serves (its name): the label, unless the start made several.
    pub const RUNNER: &str = "gpu-runner:runner";
    pub const REPOSITORY: &str = "gpu-runner:repository";
    pub const RUN_ID: &str = "gpu-runner:run-id";
    pub const RUN_ATTEMPT: &str = "gpu-runner:run-attempt";
    pub const EXPIRES_AT: &str = "gpu-runner:expires-at";
    pub const VERSION: &str = "gpu-runner:version";
    /// `repo` or `org`: where the runner was registered, for a stop that was not told.
    pub const RUNNER_SCOPE: &str = "gpu-runner:runner-scope";
    /// `ephemeral`, `pooled` or `attached`: how the machine ends (see `machine::Lifecycle`).
    /// Absent on ephemeral machines.
    pub const LIFECYCLE: &str = "gpu-runner:lifecycle";
    /// The pool a pooled machine belongs to (the `pool` input).
    pub const POOL: &str = "gpu-runner:pool";
    /// When a pooled machine was first launched: EC2's launch time moves with every start.
    pub const POOLED_AT: &str = "gpu-runner:pooled-at";
    /// The workflow (file and ref, `GITHUB_WORKFLOW_REF`) whose runs a pooled machine serves: no
    /// other workflow, branch or pull request resumes it. Set at launch only.
    pub const WORKFLOW: &str = "gpu-runner:workflow";
    /// A digest of a pooled machine's launch settings beside its image, profile and type
    /// (security groups, subnet, root volume, runner user, runner-sudo): others retire it.
    pub const LAUNCH_SETTINGS: &str = "gpu-runner:launch-settings";
    /// The instance profile a pooled machine was launched with (`none`): another retires it.
    pub const INSTANCE_PROFILE: &str = "gpu-runner:instance-profile";
    /// The image a pooled machine was launched from: a newer one retires it.
    pub const IMAGE: &str = "gpu-runner:image";
    /// How many jobs a pooled machine has been resumed for, this one included.
    pub const USES: &str = "gpu-runner:uses";
    /// Why a pooled machine serves no job after this one: its stop terminates it.
    pub const RETIRE: &str = "gpu-runner:retire";
    /// `user-data` or `ssm`: how the instance's runner got its JIT config; with `ssm`, whoever
    /// ends the instance deletes the parameter if the instance did not.
    pub const JIT_HANDOFF: &str = "gpu-runner:jit-handoff";
    /// The tags a start rewrites on a pooled machine it resumes: whose it is now. Its pool,
    /// repository, lifecycle, image and age never change (the IAM policy allows only these).
    pub const PER_RUN: &[&str] = &[
        LABEL,
        RUNNER,
        RUN_ID,
        RUN_ATTEMPT,
        EXPIRES_AT,
        VERSION,
        RUNNER_SCOPE,
        USES,
        RETIRE,
        JIT_HANDOFF,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Market {
    OnDemand,
    Spot,
}

impl Market {
    pub fn name(self) -> &'static str {
        match self {
            Market::OnDemand => "on-demand",
            Market::Spot => "spot",
        }
    }
}

/// One place to try for capacity. Candidates are tried in order; the first launch that works wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub instance_type: String,
    /// `None`: the default VPC picks a subnet.
    pub subnet_id: Option<String>,
    pub market: Market,
}

/// One runner of the plan, and the instance it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerSpec {
    /// Also its own label when there are several.
    pub name: String,
    pub labels: Vec<String>,
}

/// The only jobs the machine takes: those of the workflow run that started it. GitHub hands a
/// runner any queued job its labels cover (its default `self-hosted` label too), so the boot
/// script's job-started hook refuses every other job before a step of it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobBinding {
    /// `owner/repo`, as `GITHUB_REPOSITORY` names it in the job.
    pub repository: String,
    pub run_id: u64,
    /// `GITHUB_WORKFLOW_REF` of the run, when the runner gave the start one.
    pub workflow_ref: Option<String>,
}

impl JobBinding {
    pub fn describe(&self) -> String {
        let workflow = self
            .workflow_ref
            .as_deref()
            .map(|w| format!(", workflow {w}"))
            .unwrap_or_default();
        format!("{} run {}{workflow}", self.repository, self.run_id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Unique to this start: the label the GPU job's `runs-on` names, shared by all its runners.
    pub label: String,
    /// The unique label, then the user's extra labels.
    pub labels: Vec<String>,
    /// One per instance (`count`). With one, its name is the label; with several, each is named
    /// `<label>-<n>` and carries that name as a label of its own too.
    pub runners: Vec<RunnerSpec>,
    /// Whose jobs the runners take.
    pub binding: JobBinding,
    pub allow_partial: bool,
    pub region: String,
    pub image: ImageRef,
    pub candidates: Vec<Candidate>,
    /// When spot is taken back too often, on-demand for a while.
    pub spot_breaker: SpotBreaker,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    /// How each instance's runner gets its JIT config.
    pub jit_handoff: JitHandoff,
    pub root_volume_size_gib: Option<u32>,
    /// On the instance and its volumes, set at launch.
    pub tags: BTreeMap<String, String>,
    pub runner_user: String,
    pub runner_sudo: bool,
    pub pre_runner_script: Option<String>,
    pub startup_timeout_minutes: u32,
    pub idle_timeout_minutes: u32,
    pub max_lifetime_minutes: u32,
    /// The instance ends itself by then at the latest; cleanup treats it as expired after.
    pub expires_at: DateTime<Utc>,
    pub keep_on_failure: bool,
    /// Resume stopped instances of a pool: its machines are tagged `pooled` and stop, not
    /// terminate, when they shut down.
    pub pool: Option<PoolInputs>,
    /// A Kubernetes pod per runner instead of an instance, in the cluster `cluster` describes.
    pub pod: Option<PodInputs>,
    pub cluster: Option<String>,
    pub dry_run: bool,
    /// Where the runners are registered, in words: the repository, or the organization and group.
    pub registered_in: String,
    /// The runner package the instance installs, in words.
    pub runner_package: String,
}

/// What every label and runner name gpu-runner makes begins with: how cleanup tells its runners
/// from anyone else's.
pub const LABEL_PREFIX: &str = "gpu-runner-";

/// What the labels of every start in one workflow run begin with.
pub fn run_label_prefix(run_id: u64) -> String {
    format!("{LABEL_PREFIX}{run_id}-")
}

/// `nonce` makes the label unique among several starts in one run (matrix jobs, retries).
pub fn launch_plan(
    inputs: &StartInputs,
    ctx: &Context,
    now: DateTime<Utc>,
    nonce: &str,
) -> LaunchPlan {
    let label = format!(
        "{}{}-{nonce}",
        run_label_prefix(ctx.run_id),
        ctx.run_attempt
    );
    let mut labels = vec![label.clone()];
    labels.extend(inputs.runner.labels.iter().cloned());

    let subnets: Vec<Option<String>> = if inputs.ec2.subnet_ids.is_empty() {
        vec![None]
    } else {
        inputs.ec2.subnet_ids.iter().cloned().map(Some).collect()
    };
    let markets: &[Market] = match inputs.ec2.market_type {
        MarketType::OnDemand => &[Market::OnDemand],
        MarketType::Spot => &[Market::Spot],
        MarketType::SpotThenOnDemand => &[Market::Spot, Market::OnDemand],
    };
    // Preference order: market first (all spot before any on-demand), then type, then subnet.
    let candidates = markets
        .iter()
        .flat_map(|market| {
            let subnets = &subnets;
            inputs
                .ec2
                .instance_types
                .iter()
                .flat_map(move |instance_type| {
                    subnets.iter().map(move |subnet_id| Candidate {
                        instance_type: instance_type.clone(),
                        subnet_id: subnet_id.clone(),
                        market: *market,
                    })
                })
        })
        .collect();

    let expires_at = now + TimeDelta::minutes(i64::from(inputs.limits.max_lifetime_minutes));
    let mut tags = inputs.ec2.tags.clone();
    if inputs.pod.is_none() {
        // EC2's console lists instances by it; a pod is named by its runner.
        tags.entry(tag::NAME.to_owned())
            .or_insert_with(|| format!("gpu-runner {}", ctx.repository()));
    }
    for (key, value) in [
        (tag::LABEL, label.clone()),
        (tag::REPOSITORY, ctx.repository()),
        (tag::RUN_ID, ctx.run_id.to_string()),
        (tag::RUN_ATTEMPT, ctx.run_attempt.to_string()),
        (
            tag::EXPIRES_AT,
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        ),
        (tag::VERSION, env!("CARGO_PKG_VERSION").to_owned()),
        (tag::RUNNER_SCOPE, inputs.common.scope().name().to_owned()),
    ] {
        tags.insert(key.to_owned(), value);
    }
    if inputs.pod.is_none() {
        tags.insert(
            tag::JIT_HANDOFF.to_owned(),
            inputs.ec2.jit_handoff.name().to_owned(),
        );
    }
    if let Some(pool) = &inputs.pool {
        tags.insert(tag::LIFECYCLE.to_owned(), "pooled".to_owned());
        if let Some(name) = &pool.name {
            tags.insert(tag::POOL.to_owned(), name.clone());
        }
    }

    let runners = if inputs.limits.count <= 1 {
        vec![RunnerSpec {
            name: label.clone(),
            labels: labels.clone(),
        }]
    } else {
        (1..=inputs.limits.count)
            .map(|n| {
                let name = format!("{label}-{n}");
                let mut own = vec![label.clone(), name.clone()];
                own.extend(inputs.runner.labels.iter().cloned());
                RunnerSpec { name, labels: own }
            })
            .collect()
    };

    LaunchPlan {
        runners,
        binding: JobBinding {
            repository: ctx.repository(),
            run_id: ctx.run_id,
            workflow_ref: ctx.workflow_ref.clone(),
        },
        allow_partial: inputs.limits.allow_partial,
        label,
        labels,
        region: inputs.ec2.region.clone(),
        image: inputs.ec2.image.clone(),
        candidates,
        spot_breaker: inputs.ec2.spot_breaker,
        security_group_ids: inputs.ec2.security_group_ids.clone(),
        iam_instance_profile: inputs.ec2.iam_instance_profile.clone(),
        jit_handoff: inputs.ec2.jit_handoff,
        root_volume_size_gib: inputs.ec2.root_volume_size_gib,
        tags,
        runner_user: inputs.runner.user.clone(),
        runner_sudo: inputs.runner.sudo,
        pre_runner_script: inputs.runner.pre_runner_script.clone(),
        startup_timeout_minutes: inputs.limits.startup_timeout_minutes,
        idle_timeout_minutes: inputs.limits.idle_timeout_minutes,
        max_lifetime_minutes: inputs.limits.max_lifetime_minutes,
        expires_at,
        keep_on_failure: inputs.limits.keep_on_failure,
        pool: inputs.pool.clone(),
        pod: inputs.pod.clone(),
        cluster: inputs.common.cluster.as_ref().map(|c| c.describe()),
        dry_run: inputs.dry_run,
        registered_in: match (inputs.common.scope(), &inputs.runner.group) {
            (RunnerScope::Repo, _) => format!("the repository {}", ctx.repository()),
            (RunnerScope::Org, None) => {
                format!("the organization {}, its default group", ctx.owner)
            }
            (RunnerScope::Org, Some(GroupRef::Id(id))) => {
                format!("the organization {}, runner group id {id}", ctx.owner)
            }
            (RunnerScope::Org, Some(GroupRef::Name(name))) => {
                format!("the organization {}, runner group \"{name}\"", ctx.owner)
            }
        },
        runner_package: format!(
            "{} for {}, SHA-256 {}",
            inputs.runner.version,
            inputs.runner.arch.name(),
            inputs.runner.sha256
        ),
    }
}

/// Where the JIT configs of `repository`'s runners wait for their instances with
/// `jit-handoff: ssm` (a repository's own path, so that its IAM policy can name it).
pub fn jit_parameter_prefix(repository: &str) -> String {
    format!("/gpu-runner/jit/{repository}/")
}

/// The SSM parameter that carries `runner`'s JIT config.
pub fn jit_parameter(repository: &str, runner: &str) -> String {
    format!("{}{runner}", jit_parameter_prefix(repository))
}

impl Candidate {
    pub fn describe(&self) -> String {
        format!(
            "{} in {} ({})",
            self.instance_type,
            self.subnet_id.as_deref().unwrap_or("the default subnet"),
            self.market.name()
        )
    }
}

impl LaunchPlan {
    fn facts(&self) -> Vec<(&'static str, String)> {
        let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
        let mut facts = vec![
            ("Label", self.label.clone()),
            ("All labels", self.labels.join(", ")),
            (
                "Runner name",
                self.runners
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("Registered in", self.registered_in.clone()),
            ("Takes jobs of", self.binding.describe()),
        ];
        if let Some(pod) = &self.pod {
            facts.extend(self.pod_facts(pod));
            return facts;
        }
        facts.extend([
            ("Runner package", self.runner_package.clone()),
            ("Region", self.region.clone()),
            ("Image", self.image.to_string()),
            (
                "Security groups",
                or(
                    (!self.security_group_ids.is_empty())
                        .then(|| self.security_group_ids.join(", ")),
                    "the VPC's default",
                ),
            ),
            (
                "Instance profile",
                or(self.iam_instance_profile.clone(), "none"),
            ),
            (
                "JIT config",
                match self.jit_handoff {
                    JitHandoff::UserData => "in the user data".to_owned(),
                    JitHandoff::Ssm => format!(
                        "through an SSM SecureString parameter under {}, which the instance's \
                         role reads and deletes",
                        jit_parameter_prefix(&self.binding.repository)
                    ),
                },
            ),
            (
                "Root volume",
                or(
                    self.root_volume_size_gib.map(|g| format!("{g} GiB")),
                    "the image's default size",
                ),
            ),
            (
                "Runner user",
                if self.runner_sudo && self.runner_user != "root" {
                    format!("{} (passwordless sudo)", self.runner_user)
                } else {
                    self.runner_user.clone()
                },
            ),
        ]);
        facts.extend(self.limit_facts(
            "",
            if self.keep_on_failure {
                "keep the instance for debugging (keep-on-failure)".to_owned()
            } else if self.pool.is_some() {
                "stop the instance (back to its pool) and remove the runner".to_owned()
            } else {
                "terminate the instance and remove the runner".to_owned()
            },
        ));
        if let Some(pool) = &self.pool {
            facts.push(("Pool", pool.describe()));
        }
        facts
    }

    /// What a pod plan shows instead of an instance's image, network and candidates.
    fn pod_facts(&self, pod: &PodInputs) -> Vec<(&'static str, String)> {
        let or = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_owned());
        let joined = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let requests: Vec<String> = [("cpu", &pod.cpu_request), ("memory", &pod.memory_request)]
            .into_iter()
            .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
            .collect();
        vec![
            ("Cluster", self.cluster.clone().unwrap_or_default()),
            ("Pod image", pod.image.clone()),
            ("GPUs", format!("{} × {}", pod.gpu_count, pod.gpu_resource)),
            (
                "Node selector",
                or(
                    (!pod.node_selector.is_empty()).then(|| joined(&pod.node_selector)),
                    "none",
                ),
            ),
            (
                "Tolerations",
                match pod.tolerations.as_array().map(Vec::len).unwrap_or(0) {
                    0 => "none".to_owned(),
                    n => format!("{n}: {}", pod.tolerations),
                },
            ),
            (
                "Runtime class",
                or(pod.runtime_class.clone(), "the cluster's default"),
            ),
            (
                "Requests",
                or(
                    (!requests.is_empty()).then(|| requests.join(", ")),
                    "none besides the GPUs",
                ),
            ),
            (
                "Node wait",
                match pod.node_wait_minutes {
                    0 => "none: fail at once when no node can take the pod".to_owned(),
                    n => format!(
                        "up to {n} min for a node the cluster's autoscaler says it is adding"
                    ),
                },
            ),
            (
                "Pod template",
                or(
                    pod.template
                        .as_ref()
                        .map(|t| format!("merged over the pod: {t}")),
                    "none",
                ),
            ),
        ]
        .into_iter()
        .chain(self.limit_facts(
            "the pod's activeDeadlineSeconds, ",
            if self.keep_on_failure {
                "keep the pod for debugging (keep-on-failure)".to_owned()
            } else {
                "delete the pod and its secret and remove the runner".to_owned()
            },
        ))
        .collect()
    }

    /// What every machine shares: its preparation, its limits (`how` says what enforces the
    /// lifetime) and what a failure does.
    fn limit_facts(&self, how: &str, on_failure: String) -> [(&'static str, String); 5] {
        [
            (
                "Pre-runner script",
                self.pre_runner_script
                    .as_ref()
                    .map(|s| format!("{} line(s)", s.lines().count()))
                    .unwrap_or_else(|| "none".to_owned()),
            ),
            (
                "Startup timeout",
                format!("{} min", self.startup_timeout_minutes),
            ),
            (
                "Idle timeout",
                format!("{} min without a job", self.idle_timeout_minutes),
            ),
            (
                "Max lifetime",
                format!(
                    "{} min ({how}until {})",
                    self.max_lifetime_minutes,
                    self.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            ),
            ("On failure", on_failure),
        ]
    }

    /// The plan as the log shows it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (key, value) in self.facts() {
            out.push_str(&format!("{key:<18} {value}\n"));
        }
        if self.pod.is_some() {
            out.push_str("Labels and annotations on the pod and its secret:\n");
            for (key, value) in &self.tags {
                out.push_str(&format!("  {key} = {value}\n"));
            }
            return out;
        }
        out.push_str("Candidates, in order:\n");
        for (i, c) in self.candidates.iter().enumerate() {
            out.push_str(&format!("  {}. {}\n", i + 1, c.describe()));
        }
        out.push_str("Tags:\n");
        for (key, value) in &self.tags {
            out.push_str(&format!("  {key} = {value}\n"));
        }
        out
    }

    /// The plan for the job summary.
    pub fn to_markdown(&self) -> String {
        let facts: Vec<Vec<String>> = self
            .facts()
            .into_iter()
            .map(|(k, v)| vec![k.to_owned(), v])
            .collect();
        let candidates: Vec<Vec<String>> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                vec![
                    (i + 1).to_string(),
                    c.instance_type.clone(),
                    c.subnet_id.clone().unwrap_or_else(|| "default".to_owned()),
                    c.market.name().to_owned(),
                ]
            })
            .collect();
        let tags: Vec<Vec<String>> = self
            .tags
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect();
        if self.pod.is_some() {
            return Markdown::new()
                .table(&["Setting", "Value"], &facts)
                .raw("**Labels and annotations** on the pod and its secret:")
                .table(&["Key", "Value"], &tags)
                .build();
        }
        Markdown::new()
            .table(&["Setting", "Value"], &facts)
            .raw(&format!(
                "**Capacity candidates** for {}, in order:",
                inline(&self.region)
            ))
            .table(&["#", "Instance type", "Subnet", "Market"], &candidates)
            .raw("**Tags** on the instance and its volumes:")
            .table(&["Key", "Value"], &tags)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;
    use crate::inputs::{Inputs, parse};

    fn start_inputs(extra: &[(&str, &str)]) -> StartInputs {
        let mut env: Env = [
            ("INPUT_MODE", "start"),
            ("INPUT_GITHUB-TOKEN", "ghp_plan"),
            ("INPUT_AWS-REGION", "us-east-1"),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            env.set(*k, *v);
        }
        match parse(&env).unwrap().inputs {
            Inputs::Start(s) => s,
            _ => unreachable!(),
        }
    }

    fn ctx() -> Context {
        let env: Env = [
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_RUN_ID", "9876543210"),
            ("GITHUB_RUN_ATTEMPT", "2"),
            (
                "GITHUB_WORKFLOW_REF",
                "octo/ml/.github/workflows/gpu.yml@refs/heads/main",
            ),
        ]
        .into_iter()
        .collect();
        Context::from_env(&env).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }

    /// Snapshots outlive version bumps.
    /// Without gpu-runner's version and the default runner's, so that neither a release nor the
    /// runner-bump workflow changes the snapshots.
    fn versionless(text: String) -> String {
        let pin = crate::boot::PINNED_RUNNERS[0];
        text.replace(pin.sha256, "[runner-sha256]")
            .replace(pin.version, "[runner-version]")
            .replace(env!("CARGO_PKG_VERSION"), "[version]")
    }

    #[test]
    fn a_pool_start_tags_its_machines_pooled_and_says_what_a_failure_does() {
        let inputs = start_inputs(&[("INPUT_POOL", "train"), ("INPUT_POOL-SIZE", "2")]);
        let plan = launch_plan(&inputs, &ctx(), now(), "abcd1234");
        assert_eq!(
            plan.tags.get(tag::LIFECYCLE).map(String::as_str),
            Some("pooled")
        );
        assert_eq!(plan.tags.get(tag::POOL).map(String::as_str), Some("train"));
        let text = plan.to_text();
        assert!(
            text.contains(
                "On failure         stop the instance (back to its pool) and remove the runner"
            ),
            "{text}"
        );
        assert!(
            text.contains("Pool               \"train\", at most 2 instance(s); when full, wait"),
            "{text}"
        );
        // Every tag a resume rewrites is one the plan sets, or the provider's own.
        for key in tag::PER_RUN {
            assert!(
                plan.tags.contains_key(*key) || [tag::RUNNER, tag::USES, tag::RETIRE].contains(key),
                "{key}"
            );
        }
        let plain = launch_plan(&start_inputs(&[]), &ctx(), now(), "abcd1234");
        assert!(!plain.tags.contains_key(tag::LIFECYCLE) && plain.pool.is_none());
    }

    #[test]
    fn spot_then_on_demand_tries_every_spot_candidate_first() {
        let inputs = start_inputs(&[
            ("INPUT_INSTANCE-TYPES", "g5.xlarge, g4dn.xlarge"),
            (
                "INPUT_SUBNET-IDS",
                "subnet-0aaaaaaaaaaaaaaaa, subnet-0bbbbbbbbbbbbbbbb",
            ),
            ("INPUT_MARKET-TYPE", "spot-then-on-demand"),
        ]);
        let plan = launch_plan(&inputs, &ctx(), now(), "a1b2c3d4");
        let order: Vec<String> = plan.candidates.iter().map(Candidate::describe).collect();
        assert_eq!(
            order,
            [
                "g5.xlarge in subnet-0aaaaaaaaaaaaaaaa (spot)",
                "g5.xlarge in subnet-0bbbbbbbbbbbbbbbb (spot)",
                "g4dn.xlarge in subnet-0aaaaaaaaaaaaaaaa (spot)",
                "g4dn.xlarge in subnet-0bbbbbbbbbbbbbbbb (spot)",
                "g5.xlarge in subnet-0aaaaaaaaaaaaaaaa (on-demand)",
                "g5.xlarge in subnet-0bbbbbbbbbbbbbbbb (on-demand)",
                "g4dn.xlarge in subnet-0aaaaaaaaaaaaaaaa (on-demand)",
                "g4dn.xlarge in subnet-0bbbbbbbbbbbbbbbb (on-demand)",
            ]
        );
        let spot = launch_plan(
            &start_inputs(&[("INPUT_MARKET-TYPE", "spot")]),
            &ctx(),
            now(),
            "a1b2c3d4",
        );
        assert_eq!(
            spot.candidates.iter().map(|c| c.market).collect::<Vec<_>>(),
            [Market::Spot]
        );
    }

    #[test]
    fn defaults() {
        let plan = launch_plan(&start_inputs(&[]), &ctx(), now(), "a1b2c3d4");
        insta::assert_snapshot!("plan_defaults", versionless(plan.to_text()));
    }

    #[test]
    fn everything_set() {
        let inputs = start_inputs(&[
            ("INPUT_INSTANCE-TYPES", "g5.xlarge, g4dn.xlarge"),
            (
                "INPUT_SUBNET-IDS",
                "subnet-0123456789abcdef0\nsubnet-11111111",
            ),
            ("INPUT_SECURITY-GROUP-IDS", "sg-0123456789abcdef0"),
            ("INPUT_IMAGE-ID", "ami-0123456789abcdef0"),
            ("INPUT_IAM-INSTANCE-PROFILE", "gpu-ci-instance"),
            ("INPUT_ROOT-VOLUME-SIZE", "200"),
            ("INPUT_LABELS", "gpu, cuda-12"),
            ("INPUT_TAGS", "team: ml\nName: nightly gpu"),
            (
                "INPUT_PRE-RUNNER-SCRIPT",
                "apt-get update\napt-get install -y jq",
            ),
            ("INPUT_MAX-LIFETIME-MINUTES", "120"),
            ("INPUT_KEEP-ON-FAILURE", "true"),
            ("INPUT_RUNNER-SCOPE", "org"),
            ("INPUT_RUNNER-GROUP", "GPU runners"),
        ]);
        let plan = launch_plan(&inputs, &ctx(), now(), "a1b2c3d4");
        insta::assert_snapshot!("plan_everything_set", versionless(plan.to_text()));
        insta::assert_snapshot!(
            "plan_everything_set_summary",
            versionless(plan.to_markdown())
        );
    }

    #[test]
    fn candidates_walk_types_first_then_subnets() {
        let inputs = start_inputs(&[
            ("INPUT_INSTANCE-TYPES", "g5.xlarge, g4dn.xlarge"),
            ("INPUT_SUBNET-IDS", "subnet-aaaaaaaa, subnet-bbbbbbbb"),
        ]);
        let plan = launch_plan(&inputs, &ctx(), now(), "n");
        let order: Vec<_> = plan
            .candidates
            .iter()
            .map(|c| format!("{} {}", c.instance_type, c.subnet_id.as_deref().unwrap()))
            .collect();
        assert_eq!(
            order,
            [
                "g5.xlarge subnet-aaaaaaaa",
                "g5.xlarge subnet-bbbbbbbb",
                "g4dn.xlarge subnet-aaaaaaaa",
                "g4dn.xlarge subnet-bbbbbbbb"
            ]
        );
    }

    #[test]
    fn our_tags_win_over_user_tags_except_name() {
        let plan = launch_plan(
            &start_inputs(&[("INPUT_TAGS", "Name=mine\nowner=me")]),
            &ctx(),
            now(),
            "n",
        );
        assert_eq!(plan.tags["Name"], "mine");
        assert_eq!(plan.tags["owner"], "me");
        assert_eq!(plan.tags[tag::LABEL], plan.label);
        assert_eq!(plan.tags[tag::EXPIRES_AT], "2026-11-25T16:00:00Z");
    }

    #[test]
    fn labels_are_unique_per_nonce() {
        let a = launch_plan(&start_inputs(&[]), &ctx(), now(), "aaaa");
        let b = launch_plan(&start_inputs(&[]), &ctx(), now(), "bbbb");
        assert_ne!(a.label, b.label);
        assert_eq!(a.label, "gpu-runner-9876543210-2-aaaa");
    }
}
