//! EC2: a new instance per runner, launched from the plan's capacity candidates in order, with the
//! boot script (and so the runner's configuration) in its user data, or with `pool`, a stopped
//! instance of the repository's pool resumed with a new boot script (`pool.rs`); SSM for image
//! parameters, STS for the role.

pub mod api;
pub mod credentials;
pub mod errors;
pub mod network;
pub mod pool;
pub mod pricing;
pub mod quotas;
pub mod user_data;

use aws_config::SdkConfig;
use chrono::Utc;

use crate::actions::{Actions, Annotation};
use crate::boot::phases;
use crate::clock::Clock;
use crate::inputs::JitHandoff;
use crate::machine::failure::{Failure as Error, Refusal, Refused};
use crate::machine::{
    Acquired, Facts, Handoff, Health, Machine, MachineError, Owner, Provider, Purpose, Release,
    Released, State,
};
use crate::plan::{Candidate, LaunchPlan, Market, tag};
use api::{Api, LaunchRequest, TypeFacts};
use errors::{SPOT_ROLE_MISSING, capacity_advice};

/// The tag on a JIT config's parameter that names the one instance whose role may read it.
pub const INSTANCE_ARN_TAG: &str = "gpu-runner:instance-arn";

/// Lines of the instance's console shown when it ends while booting.
const CONSOLE_LINES: usize = 15;

pub struct Ec2 {
    api: Api,
    /// The AMI a start launches from, resolved once (an `ssm:` parameter read).
    image_id: Option<String>,
    region: String,
    clock: Clock,
    /// What this start's runners took of their pool: they acquire side by side.
    claims: tokio::sync::Mutex<pool::Claims>,
    /// Pool instances this start resumed, and when.
    resumed: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The partition and account, once asked: what an instance's ARN is made of.
    arn_base: tokio::sync::OnceCell<(String, String)>,
    /// What EC2 said of each instance type, asked once per start.
    types: tokio::sync::Mutex<std::collections::HashMap<String, Option<TypeFacts>>>,
    /// The vCPU quotas read, by code, once per start (`None`: not readable).
    quota_values: tokio::sync::Mutex<std::collections::HashMap<&'static str, Option<f64>>>,
}

impl Ec2 {
    pub async fn new(
        config: &SdkConfig,
        purpose: Purpose<'_>,
        clock: Clock,
    ) -> Result<Self, Error> {
        let api = Api::new(config);
        let image_id = match purpose {
            Purpose::Acquire(plan) => Some(api.resolve_image(&plan.image).await?),
            Purpose::Manage => None,
        };
        Ok(Self {
            api,
            image_id,
            region: config
                .region()
                .map(|r| r.as_ref().to_owned())
                .unwrap_or_default(),
            clock,
            claims: tokio::sync::Mutex::default(),
            resumed: std::sync::Mutex::default(),
            arn_base: tokio::sync::OnceCell::new(),
            types: tokio::sync::Mutex::default(),
            quota_values: tokio::sync::Mutex::default(),
        })
    }

    /// With `jit-handoff: ssm`, puts the runner's JIT config where only `machine` can read it: an
    /// SSM SecureString parameter tagged with the instance's ARN, which the instance role's policy
    /// (`docs/iam/instance-role-policy.json`) requires of what it reads. Written once the
    /// instance exists (its ARN is what binds the two); its boot script waits for it.
    async fn hand_over(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        machine: &Machine,
        actions: &Actions,
    ) -> Result<(), Error> {
        if plan.jit_handoff != JitHandoff::Ssm {
            return Ok(());
        }
        let (partition, account) = self
            .arn_base
            .get_or_try_init(|| self.api.partition_and_account())
            .await?;
        let arn = format!(
            "arn:{partition}:ec2:{}:{account}:instance/{}",
            self.region, machine.id
        );
        let name = crate::plan::jit_parameter(&plan.binding.repository, &handoff.runner.name);
        let tags = [
            (INSTANCE_ARN_TAG.to_owned(), arn),
            (tag::REPOSITORY.to_owned(), plan.binding.repository.clone()),
            (tag::LABEL.to_owned(), plan.label.clone()),
        ];
        self.api.put_jit(&name, &handoff.jit_config, &tags).await?;
        actions.info(&format!(
            "Handed the runner's JIT config to {} through the SSM parameter {name}, which only \
             its role may read",
            machine.id
        ));
        Ok(())
    }

    /// The GPUs an instance of the candidate's type has, which the boot script's probe checks;
    /// 0 (any) when EC2 does not say.
    async fn gpus(&self, candidate: &Candidate) -> u32 {
        self.gpus_of(&candidate.instance_type).await
    }

    async fn gpus_of(&self, instance_type: &str) -> u32 {
        self.type_facts(instance_type)
            .await
            .map(|f| f.gpus)
            .unwrap_or(0)
    }

    async fn type_facts(&self, instance_type: &str) -> Option<TypeFacts> {
        let mut types = self.types.lock().await;
        if let Some(known) = types.get(instance_type) {
            return *known;
        }
        let facts = self.api.type_facts(instance_type).await;
        types.insert(instance_type.to_owned(), facts);
        facts
    }

    /// A quota's value, read once; `None` when Service Quotas does not say (the role may not ask:
    /// a warning says which statement lets it).
    async fn quota_value(&self, quota: &quotas::Quota, actions: &Actions) -> Option<f64> {
        let code = quota.code?;
        let mut values = self.quota_values.lock().await;
        if let Some(known) = values.get(code) {
            return *known;
        }
        let value = match self.api.ec2_quota(code).await {
            Ok(value) => value,
            Err(e) => {
                if e.code().starts_with("AccessDenied") {
                    actions.annotate(
                        &Annotation::warning(format!(
                            "The role may not read the vCPU quota \"{}\" ({code}): {e}. Add \
                             the statement ReadTheVcpuQuotas of docs/iam/permissions-policy.json \
                             to its policy, so that start can tell a quota from a shortage of \
                             capacity before it launches.",
                            quota.name
                        ))
                        .title("vCPU quota not read"),
                    );
                } else {
                    tracing::warn!(error = %e, code, "could not read the vCPU quota");
                }
                None
            }
        };
        values.insert(code, value);
        value
    }

    /// Dry-run's look at the network: can the runner reach GitHub from the candidates' subnets
    /// (or the default VPC's)? Each subnet's way out goes to the log; one that cannot gets a
    /// warning with its fix, and when none can, or there is no default VPC to launch into, the
    /// dry run fails.
    async fn check_network(&self, plan: &LaunchPlan, actions: &Actions) -> Result<(), Error> {
        let mut ids: Vec<String> = plan
            .candidates
            .iter()
            .filter_map(|c| c.subnet_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        let subnets = match self.api.reach(&ids).await {
            Ok(Some(subnets)) => subnets,
            Ok(None) => {
                return Err(Refused::Network {
                    what: format!(
                        "The account has no default VPC in {}, and subnet-ids names no subnet, so \
                         EC2 has nowhere to launch the instance",
                        self.region
                    ),
                    fix: format!(
                        "Create the default VPC (aws ec2 create-default-vpc --region {}), or set \
                         subnet-ids to subnets that reach GitHub (a public subnet, or one routed \
                         through a NAT gateway).",
                        self.region
                    ),
                }
                .into());
            }
            Err(e) => {
                actions.annotate(
                    &Annotation::warning(format!(
                        "Could not check whether the subnets reach GitHub: {e}. The role needs \
                         ec2:DescribeVpcs, ec2:DescribeSubnets and ec2:DescribeRouteTables \
                         (ReadWhatStartStopAndCleanupLookAt in docs/iam/permissions-policy.json)."
                    ))
                    .title("Network not checked"),
                );
                return Ok(());
            }
        };
        for s in &subnets {
            actions.info(&format!("Network: {}", s.describe()));
            if let (Some(false), Some(fix)) = (s.reaches(), s.fix()) {
                actions.annotate(
                    &Annotation::warning(format!("{}. {fix}", s.describe()))
                        .title("A subnet that cannot reach GitHub"),
                );
            }
        }
        if !subnets.is_empty() && subnets.iter().all(|s| s.reaches() == Some(false)) {
            let what: Vec<String> = subnets.iter().map(|s| s.describe()).collect();
            let fix: Vec<String> = subnets.iter().filter_map(|s| s.fix()).collect();
            return Err(Refused::Network {
                what: format!(
                    "No subnet of this start lets the runner reach GitHub: {}",
                    what.join("; ")
                ),
                fix: fix.join(" "),
            }
            .into());
        }
        Ok(())
    }

    /// What the quota of `candidate` is and what this start needs of it: all its runners on
    /// instances of the candidate's type.
    async fn shortfall(
        &self,
        plan: &LaunchPlan,
        candidate: &Candidate,
        actions: &Actions,
    ) -> Option<quotas::Shortfall> {
        let vcpus = self.type_facts(&candidate.instance_type).await?.vcpus?;
        let quota = quotas::of(&candidate.instance_type, candidate.market);
        let runners = u32::try_from(plan.runners.len().max(1)).unwrap_or(u32::MAX);
        Some(quotas::Shortfall {
            value: self.quota_value(&quota, actions).await,
            quota,
            needed: vcpus.saturating_mul(runners),
            region: self.region.clone(),
        })
    }

    /// A new instance from the first capacity candidate that has room.
    async fn launch_new(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<Acquired, Error> {
        let image_id = self.image_id()?;
        let mut refused: Vec<Refusal> = Vec::new();
        let mut no_spot = false;
        for (n, candidate) in plan.candidates.iter().enumerate() {
            // Without the spot service-linked role no spot candidate launches: go on to on-demand.
            if no_spot && candidate.market == Market::Spot {
                continue;
            }
            // A quota below what the start needs refuses every launch: say so without trying.
            let shortfall = self.shortfall(plan, candidate, actions).await;
            if let Some(s) = shortfall.as_ref().filter(|s| s.too_low()) {
                actions.info(&format!(
                    "Over the vCPU quota: {} needs {} vCPUs, and {}; trying the next candidate",
                    candidate.describe(),
                    s.needed,
                    s.describe()
                ));
                refused.push(s.clone().refusal(candidate.describe()));
                continue;
            }
            let gpus = self.gpus(candidate).await;
            // The job's usage report prices it at the spot price of the zone EC2 picks.
            let spot_prices = match candidate.market {
                Market::Spot => self.api.spot_prices(&candidate.instance_type, None).await,
                Market::OnDemand => Vec::new(),
            };
            let user_data = user_data::render(
                plan,
                handoff,
                &candidate.instance_type,
                gpus,
                candidate.market,
                spot_prices,
            )?;
            let request = LaunchRequest {
                plan,
                runner_name: &handoff.runner.name,
                candidate,
                image_id,
                user_data: &user_data,
                dry_run: false,
                client_token: &format!("{}-{n}", handoff.runner.name),
            };
            match self.api.launch(request).await {
                Ok(machine) => {
                    actions.info(&format!(
                        "Launched {} ({})",
                        machine.id,
                        candidate.describe()
                    ));
                    if let Err(e) = self.hand_over(plan, handoff, &machine, actions).await {
                        // Its runner can never start: end it now (start's rollback finds it by
                        // its label too, should this fail).
                        let _ = self.api.terminate(std::slice::from_ref(&machine.id)).await;
                        return Err(e);
                    }
                    return Ok(Acquired { machine, refused });
                }
                Err(e) => {
                    let Some(advice) =
                        capacity_advice(e.code(), &candidate.instance_type, candidate.market)
                    else {
                        return Err(e.into());
                    };
                    no_spot |= e.code() == SPOT_ROLE_MISSING;
                    actions.info(&format!(
                        "No capacity: {} ({}); trying the next candidate",
                        candidate.describe(),
                        e.code()
                    ));
                    let quota_refusal = matches!(
                        e.code(),
                        "VcpuLimitExceeded" | "MaxSpotInstanceCountExceeded"
                    );
                    refused.push(Refusal {
                        candidate: candidate.describe(),
                        code: e.code().to_owned(),
                        advice,
                        quota: shortfall.filter(|_| quota_refusal),
                    });
                }
            }
        }
        Err(Refused::NoCapacity { tried: refused }.into())
    }

    /// How many seconds the machine has run since its launch (for a pool instance, since its
    /// last start), and about what that cost.
    async fn ran_and_cost(&self, m: &Machine) -> (Option<u64>, Option<String>) {
        let ran = m.ran_seconds(Utc::now(), self.clock);
        let price = pricing::of(&self.api, m).await;
        (ran, ran.zip(price).map(|(ran, p)| p.cost(ran)))
    }

    fn image_id(&self) -> Result<&str, Error> {
        self.image_id.as_deref().ok_or_else(|| Error::Unsupported {
            what: "gpu-runner tried to launch without an image (a bug)".to_owned(),
            fix: "Re-run the job, and report this at the project's issues.".to_owned(),
        })
    }
}

impl Provider for Ec2 {
    fn noun(&self) -> &'static str {
        "instance"
    }

    /// Shows the boot script (its JIT config redacted), then asks EC2 with `DryRun` whether the
    /// role may launch the first candidate.
    async fn preflight(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<String, Error> {
        let Some(candidate) = plan.candidates.first() else {
            return Ok("The plan has no candidate to check.".to_owned());
        };
        // Each candidate's vCPU quota against what the start needs: a dry run that passes where
        // every launch would be refused for the quota proves nothing.
        let mut over: Vec<Refusal> = Vec::new();
        for c in &plan.candidates {
            let Some(s) = self.shortfall(plan, c, actions).await else {
                continue;
            };
            let too_low = s.too_low();
            actions.info(&format!(
                "vCPU quota: {} needs {} vCPUs; {}{}",
                c.describe(),
                s.needed,
                s.describe(),
                if too_low { " (too low)" } else { "" }
            ));
            if too_low {
                over.push(s.refusal(c.describe()));
            }
        }
        if over.len() == plan.candidates.len() {
            return Err(Refused::NoCapacity { tried: over }.into());
        }
        self.check_network(plan, actions).await?;
        let image_id = self.image_id()?;
        let params = handoff.boot_params(
            plan,
            &candidate.instance_type,
            self.gpus(candidate).await,
            candidate.market,
            pricing::for_boot(&candidate.instance_type, candidate.market, Vec::new()),
        );
        {
            let _group = actions.group("Boot script (JIT config redacted)");
            actions.verbatim(crate::boot::render_redacted(&params).trim_end());
        }
        let user_data = crate::boot::render(&params);
        let request = LaunchRequest {
            plan,
            runner_name: &handoff.runner.name,
            candidate,
            image_id,
            user_data: &user_data,
            dry_run: true,
            client_token: &format!("{}-dry-run", plan.label),
        };
        match self.api.launch(request).await {
            Err(e) if e.code() == "DryRunOperation" => Ok(format!(
                "EC2 confirmed that the role may launch {} from {image_id} (DryRun).",
                candidate.describe()
            )),
            Err(e) => Err(e.into()),
            Ok(instance) => {
                // An endpoint that ignores DryRun must not leave an instance behind.
                self.api
                    .terminate(std::slice::from_ref(&instance.id))
                    .await?;
                Ok(format!(
                    "The cloud ignored DryRun and launched {}; it was terminated.",
                    instance.id
                ))
            }
        }
    }

    async fn acquire(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<Acquired, Error> {
        match &plan.pool {
            Some(pool) => self.acquire_pooled(plan, pool, handoff, actions).await,
            None => self.launch_new(plan, handoff, actions).await,
        }
    }

    async fn health(&self, ids: &[String]) -> Result<Vec<(String, Health)>, MachineError> {
        let found = self.api.describe(ids).await?;
        let mut health = Vec::new();
        for id in ids {
            let h = match found.iter().find(|i| &i.id == id).map(|i| &i.state) {
                Some(State::Running) => Health::Ready,
                Some(s) if s.is_paused() && self.just_resumed(id) => Health::Booting,
                Some(s) if s.is_ending() || s.is_paused() => Health::Gone {
                    why: s.name().to_owned(),
                    last_words: self.last_words(id).await,
                },
                // Not listed yet: EC2's reads lag its writes by a moment.
                _ => Health::Booting,
            };
            health.push((id.clone(), h));
        }
        Ok(health)
    }

    async fn last_words(&self, id: &str) -> Vec<String> {
        match self.api.console_output(id).await {
            Ok(Some(text)) => phases::last_words(&text, CONSOLE_LINES),
            _ => Vec::new(),
        }
    }

    async fn find(
        &self,
        ids: &[String],
        owner: Option<Owner<'_>>,
    ) -> Result<Vec<Machine>, MachineError> {
        let mut found = self.api.describe(ids).await?;
        if let Some(owner) = owner {
            for i in self.api.find(owner).await? {
                if !found.iter().any(|f| f.id == i.id) {
                    found.push(i);
                }
            }
        }
        Ok(found)
    }

    async fn release(
        &self,
        machines: &[Machine],
        how: Release,
    ) -> (Vec<Released>, Option<MachineError>) {
        match how {
            Release::ReturnToPool => self.return_to_pool(machines).await,
            Release::Detach => (vec![Released::Detached; machines.len()], None),
            Release::Terminate => {
                let ids: Vec<String> = machines.iter().map(|m| m.id.clone()).collect();
                if let Err(e) = self.api.terminate(&ids).await {
                    return (vec![Released::Failed; machines.len()], Some(e));
                }
                let mut released = Vec::new();
                for m in machines {
                    let (ran, cost) = self.ran_and_cost(m).await;
                    released.push(Released::Terminated { ran, cost });
                }
                (released, None)
            }
        }
    }

    /// Its on-demand list price, or the current spot price in its zone.
    async fn price(&self, machine: &Machine) -> Option<crate::machine::Price> {
        pricing::of(&self.api, machine).await
    }

    /// Its price and, when EC2 shows the console by now, what the GPU probe found: EC2 may
    /// publish the console minutes late.
    async fn facts(&self, machine: &Machine) -> Facts {
        let price = self.price(machine).await;
        let gpu = match self.api.console_output(&machine.id).await {
            Ok(Some(text)) => phases::gpu_found(&text),
            _ => None,
        };
        Facts {
            price,
            gpu,
            details: Vec::new(),
        }
    }

    /// The parameters of instances handed their JIT config through SSM, which the instance
    /// deletes once read: one that never read it (it failed first, or was stopped before) leaves
    /// it behind.
    async fn forget_handoffs(
        &self,
        machines: &[Machine],
    ) -> Vec<(String, Result<(), MachineError>)> {
        let mut done = Vec::new();
        for m in machines {
            if m.tags.get(tag::JIT_HANDOFF).map(String::as_str) != Some(JitHandoff::Ssm.name()) {
                continue;
            }
            let (Some(repository), Some(runner)) = (m.repository(), m.runner_name()) else {
                continue;
            };
            let name = crate::plan::jit_parameter(repository, runner);
            match self.api.delete_jit(&name).await {
                Ok(false) => {}
                Ok(true) => done.push((name, Ok(()))),
                Err(e) => done.push((name, Err(e))),
            }
        }
        done
    }

    async fn waiting_handoffs(
        &self,
        repository: &str,
    ) -> Result<Vec<(String, chrono::DateTime<Utc>)>, MachineError> {
        self.api
            .jit_parameters(&crate::plan::jit_parameter_prefix(repository))
            .await
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), MachineError> {
        self.api.delete_jit(name).await.map(|_| ())
    }
}
