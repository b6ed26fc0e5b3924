//! `INPUT_*` → typed inputs for one mode, or every error at once.

pub mod aliases;
mod cluster;
pub mod error;
pub mod spec;
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
}

impl Mode {
    pub const NAMES: &'static [&'static str] = &["start", "stop", "cleanup"];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Start => "start",
            Mode::Stop => "stop",
            Mode::Cleanup => "cleanup",
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

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one value per run: the size does not matter
pub enum Inputs {
    Start(StartInputs),
    Stop(StopInputs),
    Cleanup(CleanupInputs),
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
                warnings.extend(start_warnings(s));
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
                 job that removes it (mode: cleanup is for a scheduled janitor workflow)."
                    .to_owned(),
            );
            return None;
        };
        match v.as_str() {
            "start" => Some(Mode::Start),
            "stop" => Some(Mode::Stop),
            "cleanup" => Some(Mode::Cleanup),
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

    /// `mode: start` with `machine: attached`: the labels to wait for are required.
    fn attached(&mut self, common: Option<Common>) -> Option<AttachedInputs> {
        let labels = self.list(&spec::LABELS, 100, values::label);
        if labels.is_empty() && self.raw(&spec::LABELS).is_none() {
            self.missing(
                &spec::LABELS,
                "With machine: attached, name the labels the machine was attached with \
                 (gpu-runner attach --labels gpu-a10 → labels: gpu-a10): start waits until a \
                 machine with all of them is online and idle."
                    .to_owned(),
            );
        }
        let timeout = self.number(&spec::STARTUP_TIMEOUT_MINUTES, 1, 120, "minutes");
        let trust = self.trust();
        if !self.errors.is_empty() {
            return None;
        }
        Some(AttachedInputs {
            common: common?,
            labels,
            timeout_minutes: timeout?,
            trust,
        })
    }

    /// Whose pull requests and comments may run code on the machine.
    fn trust(&mut self) -> TrustInputs {
        let allowed_associations: Vec<String> = self
            .list(&spec::ALLOWED_ASSOCIATIONS, 8, values::association)
            .iter()
            .map(|a| a.to_ascii_uppercase())
            .collect();
        TrustInputs {
            allowed_associations,
            allow_untrusted: self.boolean(&spec::ALLOW_UNTRUSTED),
            skip_untrusted: self
                .one(&spec::ON_UNTRUSTED, values::on_untrusted)
                .is_none_or(|v| v == "skip"),
        }
    }

    /// What a start for an attached machine does not read: everything about launching one.
    fn unused_when_attached(&self) -> Vec<String> {
        let read = [
            spec::MODE.name,
            spec::MACHINE.name,
            spec::GITHUB_TOKEN.name,
            spec::GITHUB_APP_ID.name,
            spec::GITHUB_APP_PRIVATE_KEY.name,
            spec::RUNNER_SCOPE.name,
            spec::LABELS.name,
            spec::STARTUP_TIMEOUT_MINUTES.name,
            spec::ALLOWED_ASSOCIATIONS.name,
            spec::ALLOW_UNTRUSTED.name,
            spec::ON_UNTRUSTED.name,
        ];
        spec::ALL
            .iter()
            .filter(|s| !read.contains(&s.name))
            .filter(|s| self.raw(s).is_some_and(|v| v != s.default))
            .map(|s| {
                format!(
                    "{} has no effect with machine: attached: the machine is yours, and \
                     gpu-runner attach sets it up.",
                    s.name
                )
            })
            .collect()
    }

    fn common(&mut self, kubernetes: bool) -> Option<Common> {
        let github = self.github_auth();
        let cluster = if kubernetes {
            Some(self.cluster())
        } else {
            None
        };
        let role_to_assume = self.one(&spec::ROLE_TO_ASSUME, values::role_arn);
        let audience = self.one(&spec::AUDIENCE, values::audience);
        let scope_given = self.given(&spec::RUNNER_SCOPE).is_some();
        // Validated to be one of the names; the default is repo.
        let runner_scope =
            RunnerScope::from_name(&self.one(&spec::RUNNER_SCOPE, values::runner_scope)?)
                .unwrap_or(RunnerScope::Repo);
        let cluster = match cluster {
            Some(c) => Some(c?),
            None => None,
        };
        Some(Common {
            github: github?,
            role_to_assume,
            audience: audience?,
            runner_scope: scope_given.then_some(runner_scope),
            cluster,
        })
    }

    fn github_auth(&mut self) -> Option<GithubAuth> {
        let token = self.raw(&spec::GITHUB_TOKEN);
        let app_id = self.raw(&spec::GITHUB_APP_ID);
        let key = self.raw(&spec::GITHUB_APP_PRIVATE_KEY);
        match (token, app_id, key) {
            (Some(_), Some(app_id), _) => {
                self.fail(
                    &spec::GITHUB_APP_ID,
                    Some(&app_id),
                    Problem::Conflict {
                        other: spec::GITHUB_TOKEN.name,
                        fix: "Use either github-token, or github-app-id with \
                              github-app-private-key, not both.",
                    },
                );
                None
            }
            (Some(token), None, key) => {
                if key.is_some() {
                    self.fail(
                        &spec::GITHUB_APP_PRIVATE_KEY,
                        None,
                        Problem::Requires {
                            other: spec::GITHUB_APP_ID.name,
                        },
                    );
                }
                match values::token(&token) {
                    Ok(()) => key.is_none().then(|| GithubAuth::Token(Secret::new(token))),
                    Err(e) => {
                        self.invalid(&spec::GITHUB_TOKEN, &token, None, e);
                        None
                    }
                }
            }
            (None, Some(app_id), key) => {
                let id_ok = match values::app_id(&app_id) {
                    Ok(()) => true,
                    Err(e) => {
                        self.invalid(&spec::GITHUB_APP_ID, &app_id, None, e);
                        false
                    }
                };
                let Some(key) = key else {
                    self.missing(
                        &spec::GITHUB_APP_PRIVATE_KEY,
                        "With github-app-id, also set github-app-private-key: \
                         ${{ secrets.YOUR_APP_PRIVATE_KEY }} (the App's .pem file)."
                            .to_owned(),
                    );
                    return None;
                };
                match values::private_key(&key) {
                    Ok(key) if id_ok => Some(GithubAuth::App {
                        app_id,
                        private_key: Secret::new(key),
                    }),
                    Ok(_) => None,
                    Err(e) => {
                        self.invalid(&spec::GITHUB_APP_PRIVATE_KEY, &key, None, e);
                        None
                    }
                }
            }
            (None, None, Some(_)) => {
                self.fail(
                    &spec::GITHUB_APP_PRIVATE_KEY,
                    None,
                    Problem::Requires {
                        other: spec::GITHUB_APP_ID.name,
                    },
                );
                None
            }
            (None, None, None) => {
                self.missing(
                    &spec::GITHUB_TOKEN,
                    "gpu-runner registers and removes self-hosted runners, which takes a token \
                     with Administration: write on the repository (the workflow's own GITHUB_TOKEN \
                     cannot do that). Set github-token: ${{ secrets.RUNNER_ADMIN_TOKEN }}, or use a \
                     GitHub App with github-app-id and github-app-private-key."
                        .to_owned(),
                );
                None
            }
        }
    }

    /// `aws-region`, else the `AWS_REGION` / `AWS_DEFAULT_REGION` environment. `Err` when the value
    /// is invalid (the error is recorded), `Ok(None)` when no region is set anywhere.
    fn aws_region(&mut self) -> Result<Option<String>, ()> {
        let spec = &spec::AWS_REGION;
        let Some(v) = self.raw(spec).or_else(|| {
            ["AWS_REGION", "AWS_DEFAULT_REGION"]
                .iter()
                .find_map(|var| self.env.non_empty(var).map(str::to_owned))
        }) else {
            return Ok(None);
        };
        match values::region(&v) {
            Ok(()) => Ok(Some(v)),
            Err(e) => {
                self.invalid(spec, &v, None, e);
                Err(())
            }
        }
    }

    /// `aws-region` (or `AWS_REGION`), which the mode cannot do without.
    fn required_region(&mut self, what: &str) -> Option<String> {
        match self.aws_region() {
            Ok(Some(region)) => Some(region),
            Ok(None) => {
                self.missing(
                    &spec::AWS_REGION,
                    format!(
                        "Set aws-region: us-east-1 (the region {what}), or set AWS_REGION in the \
                         workflow's env."
                    ),
                );
                None
            }
            Err(()) => None,
        }
    }

    fn cleanup(&mut self, common: Option<Common>, kubernetes: bool) -> Option<CleanupInputs> {
        let region = if kubernetes {
            Some(self.aws_region().ok().flatten().unwrap_or_default())
        } else {
            self.required_region("to clean up")
        };
        let max_age = self.number(&spec::MAX_AGE_MINUTES, 10, 10080, "minutes");
        let queued = self.number(&spec::QUEUED_TIMEOUT_MINUTES, 5, 1440, "minutes");
        let dry_run = self.boolean(&spec::DRY_RUN);
        if !self.errors.is_empty() {
            return None;
        }
        Some(CleanupInputs {
            common: common?,
            region: region?,
            max_age_minutes: max_age?,
            queued_timeout_minutes: queued?,
            dry_run,
        })
    }

    fn start(&mut self, common: Option<Common>, kubernetes: bool) -> Option<StartInputs> {
        // A pod's place is its cluster: no region.
        let (region, instance_types, arch) = if kubernetes {
            // A pod's place is its cluster; an EKS cluster's region is the one to reach it in.
            let region = match common.as_ref().and_then(|c| c.cluster.as_ref()) {
                Some(ClusterInputs {
                    access: ClusterAccess::Eks { region, .. },
                    ..
                }) => region.clone(),
                _ => String::new(),
            };
            (Some(region), Vec::new(), Some(Arch::X64))
        } else {
            let region = self.required_region("to launch in");
            let instance_types = self.list(&spec::INSTANCE_TYPES, 20, values::instance_type);
            let arch = self.arch(&instance_types);
            (region, instance_types, arch)
        };
        let image = self
            .given(&spec::IMAGE_ID)
            .or_else(|| match arch {
                Some(Arch::Arm64) => Some(spec::DEFAULT_IMAGE_ARM64.to_owned()),
                _ => self.value(&spec::IMAGE_ID),
            })
            .and_then(|v| match values::image(&v) {
                Ok(image) => Some(image),
                Err(e) => {
                    self.invalid(&spec::IMAGE_ID, &v, None, e);
                    None
                }
            });
        let subnet_ids = self.list(&spec::SUBNET_IDS, 16, values::subnet);
        let market_type =
            self.one(&spec::MARKET_TYPE, values::market_type)
                .map(|m| match m.as_str() {
                    "spot" => MarketType::Spot,
                    "spot-then-on-demand" => MarketType::SpotThenOnDemand,
                    _ => MarketType::OnDemand,
                });
        let count = self.number(&spec::COUNT, 1, 32, "instances");
        let allow_partial = self.boolean(&spec::ALLOW_PARTIAL);
        let security_group_ids = self.list(&spec::SECURITY_GROUP_IDS, 5, values::security_group);
        let iam_instance_profile = self.one(&spec::IAM_INSTANCE_PROFILE, values::instance_profile);
        let jit_handoff = self.jit_handoff(kubernetes, iam_instance_profile.is_some());
        let root_volume_size_gib = self.number(&spec::ROOT_VOLUME_SIZE, 8, 16384, "GiB");
        // GitHub allows 100 labels per runner; gpu-runner adds its unique one, and with several
        // instances each runner's own label too.
        let own = if count.is_some_and(|c| c > 1) { 2 } else { 1 };
        let labels = self.list(&spec::LABELS, 100 - own, values::label);
        let tags = self.tags();
        let runner_group = self.runner_group(common.as_ref());
        let runner_user = self.one(&spec::RUNNER_USER, values::linux_user);
        let runner_sudo = self.boolean(&spec::RUNNER_SUDO);
        let pre_runner_script = self.value(&spec::PRE_RUNNER_SCRIPT);
        let startup = self.number(&spec::STARTUP_TIMEOUT_MINUTES, 1, 120, "minutes");
        let lifetime = self.number(&spec::MAX_LIFETIME_MINUTES, 5, 10080, "minutes");
        let idle = self.number(&spec::IDLE_TIMEOUT_MINUTES, 1, 1440, "minutes");
        if let (Some(startup), Some(lifetime)) = (startup, lifetime)
            && lifetime <= startup
        {
            self.fail(
                &spec::MAX_LIFETIME_MINUTES,
                Some(&lifetime.to_string()),
                Problem::NotLonger {
                    other: spec::STARTUP_TIMEOUT_MINUTES.name,
                    other_value: startup,
                },
            );
        }
        let runner = arch.and_then(|arch| self.runner(arch));
        let trust = self.trust();
        let keep_on_failure = self.boolean(&spec::KEEP_ON_FAILURE);
        let dry_run = self.boolean(&spec::DRY_RUN);
        let spot = matches!(
            market_type,
            Some(MarketType::Spot | MarketType::SpotThenOnDemand)
        );
        let pool = self.pool(count, spot);
        if kubernetes && pool.is_some() {
            self.pools_are_ec2s();
        }
        let pod = if kubernetes { self.pod() } else { None };
        if !self.errors.is_empty() {
            return None;
        }
        let (runner_version, runner_sha256) = runner?;
        Some(StartInputs {
            common: common?,
            ec2: Ec2Inputs {
                region: region?,
                instance_types,
                image: image?,
                subnet_ids,
                market_type: market_type?,
                security_group_ids,
                iam_instance_profile,
                jit_handoff,
                root_volume_size_gib,
                tags: tags?,
            },
            runner: RunnerInputs {
                labels,
                user: runner_user?,
                sudo: runner_sudo,
                pre_runner_script,
                group: runner_group,
                arch: arch?,
                version: runner_version,
                sha256: runner_sha256,
            },
            limits: Limits {
                count: count?,
                allow_partial,
                startup_timeout_minutes: startup?,
                max_lifetime_minutes: lifetime?,
                idle_timeout_minutes: idle?,
                keep_on_failure,
            },
            trust,
            pool,
            pod,
            dry_run,
        })
    }

    /// `pool` and its companions; `None` when neither `pool` nor `pool-instance-id` is set.
    fn pool(&mut self, count: Option<u32>, spot: bool) -> Option<PoolInputs> {
        let name = self.one(&spec::POOL, values::pool);
        let instance_id = self.one(&spec::POOL_INSTANCE_ID, values::instance_id);
        let size = self.number(&spec::POOL_SIZE, 1, 100, "instances");
        let full = self.one(&spec::POOL_FULL, values::pool_full);
        let max_uses = self.number(&spec::POOL_MAX_USES, 0, 100_000, "jobs");
        let max_age_days = self.number(&spec::POOL_MAX_AGE_DAYS, 0, 3650, "days");
        if name.is_none() && instance_id.is_none() {
            return None;
        }
        let what = name
            .as_deref()
            .or(instance_id.as_deref())
            .unwrap_or_default();
        let named = if name.is_some() {
            &spec::POOL
        } else {
            &spec::POOL_INSTANCE_ID
        };
        if spot {
            self.fail(
                named,
                Some(what),
                Problem::Conflict {
                    other: spec::MARKET_TYPE.name,
                    fix: "A pool keeps its instances stopped between jobs, and a one-time spot \
                          instance cannot be stopped: remove market-type (pools are on-demand), \
                          or remove pool to launch a new spot instance per job.",
                },
            );
        }
        if instance_id.is_some() && count.is_some_and(|c| c > 1) {
            self.fail(
                &spec::POOL_INSTANCE_ID,
                instance_id.as_deref(),
                Problem::Conflict {
                    other: spec::COUNT.name,
                    fix: "pool-instance-id resumes one instance: remove count, or use pool with \
                          pool-size to resume several.",
                },
            );
        }
        if let (Some(size), Some(count)) = (size, count)
            && count > size
            && instance_id.is_none()
        {
            self.fail(
                &spec::POOL_SIZE,
                Some(&size.to_string()),
                Problem::Invalid {
                    entry: None,
                    expected: format!("at least count ({count})"),
                    fix: format!(
                        "A start takes count instances from its pool: raise pool-size to \
                         {count} or more, or lower count."
                    ),
                },
            );
        }
        Some(PoolInputs {
            name,
            size: size?,
            wait_when_full: full? == "wait",
            instance_id,
            max_uses: max_uses?,
            max_age_days: max_age_days?,
        })
    }

    /// The architecture of every instance type; `None` (with an error) when they differ.
    fn arch(&mut self, instance_types: &[String]) -> Option<Arch> {
        let first = instance_types.first()?;
        let arch = Arch::of_instance_type(first);
        if let Some(other) = instance_types
            .iter()
            .find(|t| Arch::of_instance_type(t) != arch)
        {
            let value = instance_types.join(",");
            self.fail(
                &spec::INSTANCE_TYPES,
                Some(&value),
                Problem::Invalid {
                    entry: None,
                    expected: "instance types of one CPU architecture".to_owned(),
                    fix: format!(
                        "{first} is {} and {other} is {}: one image and one runner package \
                         serve every candidate. List only arm64 types (such as g5g.xlarge) or \
                         only x64 types (such as g5.xlarge), or use two start jobs.",
                        arch.name(),
                        Arch::of_instance_type(other).name()
                    ),
                },
            );
            return None;
        }
        Some(arch)
    }

    /// `jit-handoff`: `ssm` needs the instance's role to read its parameter with; pods have a
    /// Secret of their own.
    fn jit_handoff(&mut self, kubernetes: bool, profile: bool) -> JitHandoff {
        let Some(v) = self.one(&spec::JIT_HANDOFF, values::jit_handoff) else {
            return JitHandoff::UserData;
        };
        if v != "ssm" || kubernetes {
            return JitHandoff::UserData;
        }
        if !profile {
            self.missing(
                &spec::IAM_INSTANCE_PROFILE,
                "jit-handoff: ssm hands the runner's JIT config to the instance's own role: set \
                 iam-instance-profile to a profile whose role has \
                 docs/iam/instance-role-policy.json, or leave jit-handoff at user-data."
                    .to_owned(),
            );
        }
        JitHandoff::Ssm
    }

    /// `runner-group`: only organizations have groups.
    fn runner_group(&mut self, common: Option<&Common>) -> Option<GroupRef> {
        let spec = &spec::RUNNER_GROUP;
        let v = self.one(spec, values::runner_group)?;
        if common.is_some_and(|c| c.scope() != RunnerScope::Org) {
            self.fail(
                spec,
                Some(&v),
                Problem::Invalid {
                    entry: None,
                    expected: "a group of the organization's runners".to_owned(),
                    fix: "Runner groups belong to organizations: set runner-scope: org as well \
                          (on start, stop and cleanup), or remove runner-group to register the \
                          runner in the repository."
                        .to_owned(),
                },
            );
            return None;
        }
        Some(match v.parse::<u64>() {
            Ok(id) => GroupRef::Id(id),
            Err(_) => GroupRef::Name(v),
        })
    }

    /// The runner version and its hash for `arch`: pinned versions bring theirs; others need
    /// `runner-sha256`.
    fn runner(&mut self, arch: Arch) -> Option<(String, String)> {
        let version = self.one(&spec::RUNNER_VERSION, values::runner_version)?;
        let sha = self.one(&spec::RUNNER_SHA256, values::sha256);
        if self.raw(&spec::RUNNER_SHA256).is_some() && sha.is_none() {
            return None;
        }
        let sha = sha.map(|s| s.to_ascii_lowercase());
        let package = format!("actions-runner-linux-{}-{version}.tar.gz", arch.name());
        match (crate::runner_package::pinned(&version, arch), sha) {
            (Some(pin), None) => Some((version, pin.sha256.to_owned())),
            (Some(pin), Some(sha)) if sha == pin.sha256 => Some((version, sha)),
            (Some(pin), Some(sha)) => {
                self.fail(
                    &spec::RUNNER_SHA256,
                    Some(&sha),
                    Problem::Invalid {
                        entry: None,
                        expected: format!("the SHA-256 GitHub published for {package}"),
                        fix: format!(
                            "gpu-runner knows {package} as {}: remove runner-sha256, or check \
                             where your hash came from.",
                            pin.sha256
                        ),
                    },
                );
                None
            }
            (None, Some(sha)) => Some((version, sha)),
            (None, None) => {
                let pinned: Vec<&str> = crate::runner_package::PINNED_RUNNERS
                    .iter()
                    .filter(|p| p.arch == arch)
                    .map(|p| p.version)
                    .collect();
                self.missing(
                    &spec::RUNNER_SHA256,
                    format!(
                        "gpu-runner has no pinned hash for runner-version {version}: set \
                         runner-sha256 to the SHA-256 of {package} from its release page \
                         (github.com/actions/runner/releases), or use a pinned version ({}).",
                        pinned.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn tags(&mut self) -> Option<BTreeMap<String, String>> {
        let spec = &spec::TAGS;
        let Some(v) = self.value(spec) else {
            return Some(BTreeMap::new());
        };
        match values::tags(&v) {
            Ok(tags) => Some(tags),
            Err(e) => {
                self.invalid(spec, &v, e.entry.as_deref(), e.expect);
                None
            }
        }
    }

    fn stop(&mut self, common: Option<Common>, kubernetes: bool) -> Option<StopInputs> {
        let region = match self.one(&spec::REGION, values::region) {
            Some(region) => Some(region),
            None if self.raw(&spec::REGION).is_some() => None,
            None => self.aws_region().ok().flatten(),
        };
        let label = self.one(&spec::LABEL, values::label);
        let ids_spec = &spec::INSTANCE_IDS;
        let instance_ids = match self.value(ids_spec) {
            None => Vec::new(),
            Some(v) => match values::instance_ids(&v) {
                Ok(mut ids) => {
                    // A repeated id is harmless to stop: drop it rather than fail the teardown.
                    let mut seen = std::collections::HashSet::new();
                    ids.retain(|id| seen.insert(id.clone()));
                    let check = if kubernetes {
                        values::pod_name
                    } else {
                        values::instance_id
                    };
                    self.entries(ids_spec, &v, ids, 100, check)
                }
                Err(e) => {
                    self.invalid(ids_spec, &v, None, e);
                    Vec::new()
                }
            },
        };
        let has_work = label.is_some() || !instance_ids.is_empty();
        if has_work && region.is_none() && !kubernetes && self.errors.is_empty() {
            self.missing(
                &spec::REGION,
                "Pass the start job's region output (region: ${{ needs.start.outputs.region }}), \
                 or set aws-region or AWS_REGION."
                    .to_owned(),
            );
        }
        if !self.errors.is_empty() {
            return None;
        }
        // A pod's place is its cluster, which every mode is told: no region to pass on.
        let region = if kubernetes {
            Some(region.unwrap_or_default())
        } else {
            region
        };
        Some(StopInputs {
            common: common?,
            region,
            label,
            instance_ids,
        })
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

fn start_warnings(s: &StartInputs) -> Vec<String> {
    let mut warnings = Vec::new();
    if s.limits.idle_timeout_minutes >= s.limits.max_lifetime_minutes {
        warnings.push(format!(
            "idle-timeout-minutes ({}) is not shorter than max-lifetime-minutes ({}), so it never \
             takes effect: the instance ends at its max lifetime first.",
            s.limits.idle_timeout_minutes, s.limits.max_lifetime_minutes
        ));
    }
    if s.runner.user == "root" {
        warnings.push(
            "runner-user is root: every job step will run as root on the instance. Use an \
             unprivileged user (the default, runner) unless a job really needs root."
                .to_owned(),
        );
    }
    warnings
}
