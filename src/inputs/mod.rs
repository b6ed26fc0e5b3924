//! `INPUT_*` → typed inputs for one mode, or every error at once.

pub mod aliases;
mod cluster;
mod common;
pub mod error;
mod modes;
pub mod spec;
mod start;
pub mod values;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use error::{InputError, InputErrors, Problem, Shown};
use spec::Spec;
pub use values::ImageRef;

use crate::env::Env;
use crate::runner_package::Arch;
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Start,
    Stop,
    Cleanup,
    Retry,
}

impl Mode {
    pub const NAMES: &'static [&'static str] = &["start", "stop", "cleanup", "retry"];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Start => "start",
            Mode::Stop => "stop",
            Mode::Cleanup => "cleanup",
            Mode::Retry => "retry",
        }
    }

    fn reads(self, scope: spec::Scope) -> bool {
        use spec::Scope;
        matches!(
            (self, scope),
            (_, Scope::All)
                | (Mode::Start, Scope::Start | Scope::StartAndCleanup)
                | (Mode::Stop, Scope::Stop)
                | (Mode::Cleanup, Scope::Cleanup | Scope::StartAndCleanup)
                | (Mode::Retry, Scope::Retry)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubAuth {
    Token(Secret),
    App { app_id: String, private_key: Secret },
}

/// How start buys its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarketType {
    OnDemand,
    Spot,
    /// Every spot candidate first, then every on-demand one.
    SpotThenOnDemand,
}

/// How the runner's JIT config reaches an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JitHandoff {
    /// In the instance's user data, with the boot script.
    #[default]
    UserData,
    /// In an SSM SecureString parameter that the instance reads with its role, then deletes.
    Ssm,
}

impl JitHandoff {
    /// As the `jit-handoff` input and the `gpu-runner:jit-handoff` tag name it.
    pub fn name(self) -> &'static str {
        match self {
            JitHandoff::UserData => "user-data",
            JitHandoff::Ssm => "ssm",
        }
    }
}

/// Where the runners are registered: the repository, or the organization that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerScope {
    Repo,
    Org,
}

impl RunnerScope {
    /// The scope `name` (as `runner-scope` and the `gpu-runner:runner-scope` tag write it) names.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "repo" => Some(RunnerScope::Repo),
            "org" => Some(RunnerScope::Org),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RunnerScope::Repo => "repo",
            RunnerScope::Org => "org",
        }
    }
}

/// An organization's runner group, as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Id(u64),
    Name(String),
}

/// Inputs every mode reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub github: GithubAuth,
    /// Without a role, the ambient AWS credential chain is used.
    pub role_to_assume: Option<String>,
    pub audience: String,
    /// `None` when `runner-scope` was not given (or given as its default, `repo`, which is how
    /// the runner passes "not set"): the repository, unless stop finds that the start it cleans
    /// up after registered in the organization.
    pub runner_scope: Option<RunnerScope>,
    /// With `machine: kubernetes`: the cluster and namespace the pods run in.
    pub cluster: Option<ClusterInputs>,
}

/// How gpu-runner reaches a Kubernetes cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAccess {
    /// A whole kubeconfig; its current context is used.
    Kubeconfig(Secret),
    /// An EKS cluster, reached with the AWS credentials the job's OIDC token brings: no
    /// kubeconfig to store.
    Eks { name: String, region: String },
}

/// The cluster and the one namespace gpu-runner works in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInputs {
    pub access: ClusterAccess,
    /// `namespace`, else the kubeconfig context's, else `default`.
    pub namespace: String,
}

impl ClusterInputs {
    /// The cluster in words, for the plan and the messages.
    pub fn describe(&self) -> String {
        match &self.access {
            ClusterAccess::Kubeconfig(_) => {
                format!(
                    "the kubeconfig's current context, namespace {}",
                    self.namespace
                )
            }
            ClusterAccess::Eks { name, region } => {
                format!(
                    "the EKS cluster {name} in {region}, namespace {}",
                    self.namespace
                )
            }
        }
    }
}

/// What a Kubernetes GPU pod asks the cluster for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInputs {
    pub gpu_count: u32,
    pub gpu_resource: String,
    pub node_selector: BTreeMap<String, String>,
    /// A JSON array of tolerations, as the pod spec takes them.
    pub tolerations: serde_json::Value,
    /// A Pod manifest merged over the one gpu-runner builds.
    pub template: Option<serde_json::Value>,
    pub runtime_class: Option<String>,
    pub image: String,
    pub cpu_request: Option<String>,
    pub memory_request: Option<String>,
    /// How long an unschedulable pod waits for a node the cluster's autoscaler adds (0: not
    /// at all).
    pub node_wait_minutes: u32,
}

impl Common {
    pub fn scope(&self) -> RunnerScope {
        self.runner_scope.unwrap_or(RunnerScope::Repo)
    }
}

/// `mode: start`'s inputs, split as the code uses them: the provider's own (EC2's), the runner,
/// the limits, the trust, and what every mode shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartInputs {
    pub common: Common,
    pub ec2: Ec2Inputs,
    pub runner: RunnerInputs,
    pub limits: Limits,
    pub trust: TrustInputs,
    /// Resume stopped instances of a pool instead of launching new ones.
    pub pool: Option<PoolInputs>,
    /// With `machine: kubernetes`: the pod to create instead of an instance.
    pub pod: Option<PodInputs>,
    pub dry_run: bool,
}

/// A pool of stopped instances that starts resume and stops pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInputs {
    /// `None` with `pool-instance-id` alone: the instance's `gpu-runner:pool` tag names its pool.
    pub name: Option<String>,
    /// The most instances the pool holds, in any state but ended.
    pub size: u32,
    /// Every member busy and the pool full: wait for one (until the startup timeout), or fail.
    pub wait_when_full: bool,
    /// Resume this one instance (a pool of one), nothing else.
    pub instance_id: Option<String>,
    /// Jobs one instance serves before it is replaced; 0: no limit.
    pub max_uses: u32,
    /// Days an instance serves before it is replaced; 0: no limit.
    pub max_age_days: u32,
}

impl PoolInputs {
    /// The pool in words, for the plan.
    pub fn describe(&self) -> String {
        let which = match (&self.instance_id, &self.name) {
            (Some(id), _) => format!("the instance {id} only"),
            (None, Some(name)) => format!(
                "\"{name}\", at most {} instance(s); when full, {}",
                self.size,
                if self.wait_when_full { "wait" } else { "fail" }
            ),
            (None, None) => String::new(),
        };
        let jobs = match self.max_uses {
            0 => "any number of jobs".to_owned(),
            n => format!("up to {n} job(s)"),
        };
        let days = match self.max_age_days {
            0 => "however old".to_owned(),
            n => format!("for up to {n} day(s)"),
        };
        format!("{which}; each instance serves {jobs} {days}")
    }
}

impl StartInputs {
    /// Where the machines are acquired (for EC2, the region).
    pub fn region(&self) -> &str {
        &self.ec2.region
    }
}

/// What EC2 launches, where and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Inputs {
    pub region: String,
    /// In order of preference.
    pub instance_types: Vec<String>,
    pub image: ImageRef,
    /// Tried in order; empty means the default VPC's choice.
    pub subnet_ids: Vec<String>,
    pub market_type: MarketType,
    pub security_group_ids: Vec<String>,
    pub iam_instance_profile: Option<String>,
    pub jit_handoff: JitHandoff,
    pub root_volume_size_gib: Option<u32>,
    pub tags: BTreeMap<String, String>,
    pub spot_breaker: SpotBreaker,
}

/// When a repository's spot instances are taken back too often, start prefers on-demand for a
/// while: after `interruptions` reclaims within `window_minutes`, for `hold_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpotBreaker {
    /// 0: never.
    pub interruptions: u32,
    pub window_minutes: u32,
    pub hold_minutes: u32,
}

/// The runner the machine runs, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerInputs {
    /// Extra runner labels, besides the unique one gpu-runner makes.
    pub labels: Vec<String>,
    pub user: String,
    /// Passwordless sudo for the runner user, as on GitHub-hosted runners.
    pub sudo: bool,
    pub pre_runner_script: Option<String>,
    /// The organization's runner group (with `runner-scope: org`); `None`: its default group.
    pub group: Option<GroupRef>,
    /// Of every machine: one image and one runner package serve all candidates.
    pub arch: Arch,
    /// The Actions runner version the machine installs, and its package's SHA-256.
    pub version: String,
    pub sha256: String,
}

/// How many machines, how long each may take and live, and what a failure keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How many machines, each with its own runner.
    pub count: u32,
    /// With several machines: keep the ones that came online when others failed.
    pub allow_partial: bool,
    pub startup_timeout_minutes: u32,
    pub max_lifetime_minutes: u32,
    pub idle_timeout_minutes: u32,
    pub keep_on_failure: bool,
}

/// Whose code may run on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustInputs {
    /// Pull-request authors (and commenters) whose code may run on the machine.
    pub allowed_associations: Vec<String>,
    /// Skip the untrusted-trigger guard (behind a reviewed environment, say).
    pub allow_untrusted: bool,
    /// A trigger the guard refuses ends start green with nothing launched (`on-untrusted: skip`)
    /// instead of failing it.
    pub skip_untrusted: bool,
}

impl TrustInputs {
    /// Whether a refusal ends start green. Not with allow-untrusted: a refusal that still holds
    /// then (a pool's) is a setting that can never do what was asked, and fails.
    pub fn skips_refusals(&self) -> bool {
        self.skip_untrusted && !self.allow_untrusted
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInputs {
    pub common: Common,
    /// `region`, else `aws-region`, else `AWS_REGION`; needed only when there is something to stop.
    pub region: Option<String>,
    pub label: Option<String>,
    pub instance_ids: Vec<String>,
}

impl StopInputs {
    pub fn has_work(&self) -> bool {
        self.label.is_some() || !self.instance_ids.is_empty()
    }
}

/// The janitor, for a scheduled workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupInputs {
    pub common: Common,
    pub region: String,
    /// Any gpu-runner instance older than this is terminated.
    pub max_age_minutes: u32,
    /// A run whose job waits this long for a gpu-runner label no instance serves is cancelled.
    pub queued_timeout_minutes: u32,
    /// Report, change nothing.
    pub dry_run: bool,
}

/// The re-run of a workflow run whose GPU machine its provider took back, for a workflow
/// triggered by `workflow_run: completed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryInputs {
    pub common: Common,
    /// Where the run's machines were (empty for pods).
    pub region: String,
    /// How many times one run may be re-run (0: never).
    pub max_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one value per run: the size does not matter
pub enum Inputs {
    Start(StartInputs),
    Stop(StopInputs),
    Cleanup(CleanupInputs),
    Retry(RetryInputs),
    /// `mode: start` with `machine: attached`: wait for a machine running `gpu-runner attach`.
    Attached(AttachedInputs),
    /// `mode: stop` with `machine: attached`: nothing to stop.
    Detach,
}

/// Where the GPU job runs: a machine gpu-runner launches, or one the user attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineKind {
    Ec2,
    Attached,
    Kubernetes,
}

/// `mode: start` with `machine: attached`: which attached machine to wait for, and how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedInputs {
    pub common: Common,
    /// The labels the machine was attached with (`gpu-runner attach --labels`): one of its
    /// runners must carry them all.
    pub labels: Vec<String>,
    pub timeout_minutes: u32,
    pub trust: TrustInputs,
}

impl Inputs {
    /// What every mode shares; `None` for a stop of an attached machine, which reads nothing.
    pub fn common(&self) -> Option<&Common> {
        match self {
            Inputs::Start(s) => Some(&s.common),
            Inputs::Stop(s) => Some(&s.common),
            Inputs::Cleanup(s) => Some(&s.common),
            Inputs::Retry(s) => Some(&s.common),
            Inputs::Attached(s) => Some(&s.common),
            Inputs::Detach => None,
        }
    }
}

/// Parsed inputs and what deserves a warning but does not stop the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub inputs: Inputs,
    pub warnings: Vec<String>,
}

/// The raw values of every secret input, to be masked before anything else is printed, even when
/// parsing fails. Of a kubeconfig only its credentials: the log masks line by line, and its
/// other lines (`kind: Config`) would blank out everything that shares them.
pub fn raw_secrets(env: &Env) -> Vec<String> {
    spec::ALL
        .iter()
        .filter(|s| s.secret)
        .filter_map(|s| Some((s, env.non_empty(&s.env_var())?)))
        .flat_map(|(s, v)| {
            if s.name == spec::KUBECONFIG.name {
                cluster::kubeconfig_credentials(v)
            } else {
                vec![v.to_owned()]
            }
        })
        .collect()
}

/// Reads the mode and its inputs. Collects every error instead of stopping at the first.
pub fn parse(env: &Env) -> Result<Parsed, InputErrors> {
    // Old names of renamed inputs are read as the new ones, with a warning each.
    let (resolved, renamed, errors) = aliases::resolve(env);
    let env = &resolved;
    let mut r = Reader { env, errors };
    let mode = r.mode();
    let machine = r.machine();
    if mode == Some(Mode::Stop) && machine == Some(MachineKind::Attached) && r.errors.is_empty() {
        return Ok(Parsed {
            inputs: Inputs::Detach,
            warnings: Vec::new(),
        });
    }
    let common = r.common(machine == Some(MachineKind::Kubernetes));
    let inputs = match (mode, machine) {
        (Some(Mode::Start), Some(MachineKind::Attached)) => {
            r.attached(common).map(Inputs::Attached)
        }
        (Some(Mode::Start), kind) => r
            .start(common, kind == Some(MachineKind::Kubernetes))
            .map(Inputs::Start),
        (Some(Mode::Stop), kind) => r
            .stop(common, kind == Some(MachineKind::Kubernetes))
            .map(Inputs::Stop),
        (Some(Mode::Cleanup), kind) => r
            .cleanup(common, kind == Some(MachineKind::Kubernetes))
            .map(Inputs::Cleanup),
        (Some(Mode::Retry), kind) => r
            .retry(common, kind == Some(MachineKind::Kubernetes))
            .map(Inputs::Retry),
        (None, _) => None,
    };
    match inputs {
        Some(inputs) if r.errors.is_empty() => {
            let mut warnings = match (&inputs, mode) {
                (Inputs::Attached(_), _) => r.unused_when_attached(),
                (_, Some(m)) => r.unused(m),
                _ => Vec::new(),
            };
            warnings.extend(r.unused_for_machine(machine == Some(MachineKind::Kubernetes), mode));
            warnings.extend(unknown_inputs(env));
            warnings.extend(renamed);
            if let Inputs::Start(s) = &inputs {
                warnings.extend(start::start_warnings(s));
            }
            Ok(Parsed { inputs, warnings })
        }
        _ => Err(InputErrors(r.errors)),
    }
}

struct Reader<'a> {
    env: &'a Env,
    errors: Vec<InputError>,
}

impl Reader<'_> {
    /// The value as given: trimmed, `None` when empty.
    fn raw(&self, spec: &Spec) -> Option<String> {
        self.env.non_empty(&spec.env_var()).map(str::to_owned)
    }

    /// The value, unless it is the declared default: the runner passes every default of
    /// `action.yml` as if the workflow had set it, so a value equal to the default is how "not
    /// set" arrives. For inputs whose absence means something (an image chosen by architecture,
    /// a scope learned from the instance's tags).
    fn given(&self, spec: &Spec) -> Option<String> {
        self.raw(spec).filter(|v| v != spec.default)
    }

    /// The value as given, else the default.
    fn value(&self, spec: &Spec) -> Option<String> {
        self.raw(spec)
            .or_else(|| (!spec.default.is_empty()).then(|| spec.default.to_owned()))
    }

    fn fail(&mut self, spec: &Spec, value: Option<&str>, problem: Problem) {
        let value = match value {
            _ if spec.secret => Shown::Hidden,
            Some(v) => Shown::Value(v.to_owned()),
            None => Shown::Unset,
        };
        self.errors.push(InputError {
            input: spec.name,
            value,
            problem,
        });
    }

    fn invalid(&mut self, spec: &Spec, value: &str, entry: Option<&str>, e: values::Expect) {
        let problem = Problem::Invalid {
            entry: entry.map(str::to_owned),
            expected: e.expected,
            fix: e.fix,
        };
        self.fail(spec, Some(value), problem);
    }

    fn missing(&mut self, spec: &Spec, fix: String) {
        self.fail(spec, None, Problem::Missing { fix });
    }

    fn one(&mut self, spec: &Spec, check: values::Check) -> Option<String> {
        let v = self.value(spec)?;
        match check(&v) {
            Ok(()) => Some(v),
            Err(e) => {
                self.invalid(spec, &v, None, e);
                None
            }
        }
    }

    fn boolean(&mut self, spec: &Spec) -> bool {
        let Some(v) = self.value(spec) else {
            return false;
        };
        values::boolean(&v).unwrap_or_else(|| {
            self.fail(spec, Some(&v), Problem::NotBoolean);
            false
        })
    }

    fn number(&mut self, spec: &Spec, min: u32, max: u32, unit: &'static str) -> Option<u32> {
        let v = self.value(spec)?;
        let Ok(n) = v.parse::<u64>() else {
            self.fail(spec, Some(&v), Problem::NotANumber { min, max, unit });
            return None;
        };
        if n < u64::from(min) || n > u64::from(max) {
            self.fail(spec, Some(&v), Problem::OutOfRange { min, max, unit });
            return None;
        }
        u32::try_from(n).ok()
    }

    /// A list whose entries each pass `check`, without duplicates, of at most `max` entries.
    fn list(&mut self, spec: &Spec, max: usize, check: values::Check) -> Vec<String> {
        let Some(v) = self.value(spec) else {
            return Vec::new();
        };
        let entries = match values::list(&v) {
            Ok(entries) => entries,
            Err(position) => {
                self.fail(spec, Some(&v), Problem::BlankEntry { position });
                return Vec::new();
            }
        };
        self.entries(spec, &v, entries, max, check)
    }

    fn entries(
        &mut self,
        spec: &Spec,
        v: &str,
        entries: Vec<String>,
        max: usize,
        check: values::Check,
    ) -> Vec<String> {
        let before = self.errors.len();
        if entries.len() > max {
            let count = entries.len();
            self.fail(spec, Some(v), Problem::TooManyEntries { count, max });
        }
        for (i, entry) in entries.iter().enumerate() {
            if let Err(e) = check(entry) {
                self.invalid(spec, v, Some(entry), e);
            } else if entries[..i].contains(entry) {
                let entry = entry.clone();
                self.fail(spec, Some(v), Problem::DuplicateEntry { entry });
            }
        }
        if self.errors.len() > before {
            Vec::new()
        } else {
            entries
        }
    }

    fn mode(&mut self) -> Option<Mode> {
        let spec = &spec::MODE;
        let Some(v) = self.raw(spec) else {
            self.missing(
                spec,
                "Set mode: start in the job that launches the GPU runner, and mode: stop in the \
                 job that removes it (mode: cleanup is for a scheduled janitor workflow, mode: \
                 retry for one that re-runs runs whose spot machine AWS took back)."
                    .to_owned(),
            );
            return None;
        };
        match v.as_str() {
            "start" => Some(Mode::Start),
            "stop" => Some(Mode::Stop),
            "cleanup" => Some(Mode::Cleanup),
            "retry" => Some(Mode::Retry),
            _ => {
                let suggestion = values::closest(&v, Mode::NAMES.iter().copied());
                let valid = Mode::NAMES;
                self.fail(spec, Some(&v), Problem::UnknownMode { valid, suggestion });
                None
            }
        }
    }

    fn machine(&mut self) -> Option<MachineKind> {
        let spec = &spec::MACHINE;
        match self.value(spec).as_deref() {
            None | Some("ec2") => Some(MachineKind::Ec2),
            Some("attached") => Some(MachineKind::Attached),
            Some("kubernetes") => Some(MachineKind::Kubernetes),
            Some(other) => {
                let mut fix = "Use ec2 (the default: gpu-runner launches an instance), kubernetes \
                               (a GPU pod on your cluster) or attached (a machine that runs \
                               gpu-runner attach)."
                    .to_owned();
                if let Some(s) = values::closest(other, ["ec2", "kubernetes", "attached"]) {
                    fix.push_str(&format!(" Did you mean {s}?"));
                }
                let e = values::Expect {
                    expected: "a kind of machine".to_owned(),
                    fix,
                };
                self.invalid(spec, other, None, e);
                None
            }
        }
    }

    /// Inputs set for another mode: harmless, but usually a copy-paste slip worth pointing out.
    /// Defaults do not count: the runner passes them for every mode.
    fn unused(&self, mode: Mode) -> Vec<String> {
        spec::ALL
            .iter()
            .filter(|s| !mode.reads(s.scope))
            .filter(|s| self.raw(s).is_some_and(|v| v != s.default))
            .map(|s| {
                format!(
                    "{} is only used with {}; it has no effect with mode: {}.",
                    s.name,
                    s.scope.modes(),
                    mode.name()
                )
            })
            .collect()
    }
}

/// `INPUT_*` variables that are no input of ours: most likely a misspelt one.
fn unknown_inputs(env: &Env) -> Vec<String> {
    let known: Vec<String> = spec::ALL
        .iter()
        .map(Spec::env_var)
        .chain(aliases::ALIASES.iter().map(|a| spec::env_var(a.old)))
        .collect();
    env.iter()
        .filter(|(k, v)| k.starts_with("INPUT_") && !v.trim().is_empty())
        .filter(|(k, _)| !known.iter().any(|known| known == k))
        .map(|(k, _)| {
            let name = k["INPUT_".len()..].to_ascii_lowercase();
            let mut msg = format!("gpu-runner has no input named {name}; it is ignored.");
            if let Some(s) = values::closest(&name, spec::ALL.iter().map(|s| s.name)) {
                msg.push_str(&format!(" Did you mean {s}?"));
            }
            msg
        })
        .collect()
}
