//! The inputs of `mode: start`: the machine (EC2 or a pod), the runner, the pool and the limits,
//! each checked, every error collected.

use super::*;

impl Reader<'_> {
    pub(super) fn start(
        &mut self,
        common: Option<Common>,
        kubernetes: bool,
    ) -> Option<StartInputs> {
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
        let breaker = (
            self.number(&spec::SPOT_BREAKER_INTERRUPTIONS, 0, 10, "interruptions"),
            self.number(&spec::SPOT_BREAKER_WINDOW_MINUTES, 1, 1440, "minutes"),
            self.number(&spec::SPOT_BREAKER_MINUTES, 1, 1440, "minutes"),
        );
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
                spot_breaker: SpotBreaker {
                    interruptions: breaker.0?,
                    window_minutes: breaker.1?,
                    hold_minutes: breaker.2?,
                },
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
    pub(super) fn pool(&mut self, count: Option<u32>, spot: bool) -> Option<PoolInputs> {
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
    pub(super) fn arch(&mut self, instance_types: &[String]) -> Option<Arch> {
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
    pub(super) fn jit_handoff(&mut self, kubernetes: bool, profile: bool) -> JitHandoff {
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
    pub(super) fn runner_group(&mut self, common: Option<&Common>) -> Option<GroupRef> {
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
    pub(super) fn runner(&mut self, arch: Arch) -> Option<(String, String)> {
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

    pub(super) fn tags(&mut self) -> Option<BTreeMap<String, String>> {
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
}

pub(super) fn start_warnings(s: &StartInputs) -> Vec<String> {
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
