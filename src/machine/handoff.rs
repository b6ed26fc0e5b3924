//! The runner handoff: how a runner's single-use configuration, and what the machine needs to
//! run it (the runner package, the user, the limits, the one run whose jobs it takes), reaches
//! the machine. What is handed over is the same for every provider; how differs: EC2 writes it
//! into a new instance's user data, a pool would swap it in while the instance is stopped, a
//! Kubernetes pod would read it from a Secret.

use crate::boot::{BootParams, HourlyPrice, JitParameter, RunnerPackage};
use crate::inputs::JitHandoff;
use crate::plan::{LaunchPlan, Market, RunnerSpec};
use crate::secret::Secret;

/// One runner's configuration, for the machine that will run it.
#[derive(Debug, Clone)]
pub struct Handoff<'a> {
    pub runner: &'a RunnerSpec,
    /// GitHub's just-in-time configuration: the only GitHub secret that reaches the machine.
    /// Empty for a dry run.
    pub jit_config: Secret,
    pub package: &'a RunnerPackage,
}

impl Handoff<'_> {
    /// What the boot script needs, for a machine of `instance_type` with `expected_gpus` GPUs
    /// (0 when unknown), bought on `market` at `price`.
    pub fn boot_params(
        &self,
        plan: &LaunchPlan,
        instance_type: &str,
        expected_gpus: u32,
        market: Market,
        price: HourlyPrice,
    ) -> BootParams {
        BootParams {
            runner_name: self.runner.name.clone(),
            labels: self.runner.labels.clone(),
            runner_user: plan.runner_user.clone(),
            runner_sudo: plan.runner_sudo,
            // Through SSM, the JIT config never enters the user data.
            jit_config: match plan.jit_handoff {
                JitHandoff::UserData => self.jit_config.clone(),
                JitHandoff::Ssm => Secret::new(""),
            },
            jit_parameter: (plan.jit_handoff == JitHandoff::Ssm).then(|| JitParameter {
                name: crate::plan::jit_parameter(&plan.binding.repository, &self.runner.name),
                region: plan.region.clone(),
            }),
            instance_type: instance_type.to_owned(),
            expected_gpus,
            max_lifetime_minutes: plan.max_lifetime_minutes,
            idle_timeout_minutes: plan.idle_timeout_minutes,
            runner: self.package.clone(),
            pre_runner_script: plan.pre_runner_script.clone(),
            binding: plan.binding.clone(),
            pooled: plan.pool.is_some(),
            spot: market == Market::Spot,
            price,
        }
    }
}
