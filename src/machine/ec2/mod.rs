//! EC2: a new instance per runner, launched from the plan's capacity candidates in order, with the
//! boot script (and so the runner's configuration) in its user data, or with `pool`, a stopped
//! instance of the repository's pool resumed with a new boot script (`pool.rs`); SSM for image
//! parameters, STS for the role.

pub mod api;
pub mod credentials;
pub mod errors;
pub mod pool;
pub mod pricing;
pub mod user_data;

use aws_config::SdkConfig;
use chrono::Utc;

use crate::actions::Actions;
use crate::boot::phases;
use crate::clock::Clock;
use crate::error::{Error, Refusal};
use crate::inputs::JitHandoff;
use crate::machine::{
    Acquired, Facts, Handoff, Health, Machine, MachineError, Owner, Provider, Purpose, Release,
    Released, State,
};
use crate::plan::{Candidate, LaunchPlan, Market, tag};
use api::{Api, LaunchRequest};
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
        self.api
            .gpu_count(&candidate.instance_type)
            .await
            .unwrap_or(0)
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
            let gpus = self.gpus(candidate).await;
            let user_data = user_data::render(plan, handoff, &candidate.instance_type, gpus)?;
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
                    refused.push(Refusal {
                        candidate: candidate.describe(),
                        code: e.code().to_owned(),
                        advice,
                    });
                }
            }
        }
        Err(Error::NoCapacity { tried: refused })
    }

    /// How many minutes the machine has run since its launch (for a pool instance, since its
    /// last start), and about what that cost.
    async fn ran_and_cost(&self, m: &Machine) -> (Option<i64>, Option<String>) {
        let ran = m.launched_at.map(|t| (Utc::now() - t).num_minutes().max(0));
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
        let image_id = self.image_id()?;
        let params =
            handoff.boot_params(plan, &candidate.instance_type, self.gpus(candidate).await);
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

    /// Its price and, when EC2 shows the console by now, what the GPU probe found: EC2 may
    /// publish the console minutes late.
    async fn facts(&self, machine: &Machine) -> Facts {
        let price = pricing::of(&self.api, machine).await;
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
