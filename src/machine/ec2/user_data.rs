//! EC2's runner handoff: the boot script, with the runner's configuration, in a new instance's
//! user data, which EC2 caps at 16 KB.

use crate::boot::{self, RunnerPackage};
use crate::inputs::JitHandoff;
use crate::machine::Handoff;
use crate::machine::failure::{Failure as Error, Refused};
use crate::plan::{LaunchPlan, Market};
use crate::secret::Secret;

/// The boot script for this runner on an instance of `instance_type` with `gpus` GPUs, bought on
/// `market` (spot at `spot_prices`, by zone), once it is known to fit EC2's user data with the
/// JIT config GitHub issued.
pub fn render(
    plan: &LaunchPlan,
    handoff: &Handoff<'_>,
    instance_type: &str,
    gpus: u32,
    market: Market,
    spot_prices: Vec<(String, f64)>,
) -> Result<Secret, Error> {
    let price = super::pricing::for_boot(instance_type, market, spot_prices);
    let params = handoff.boot_params(plan, instance_type, gpus, market, price);
    boot::check_size(&params, params.jit_config.expose().len())
        .map_err(|t| Error::from(Refused::UserDataTooLarge(t)))?;
    Ok(boot::render(&params))
}

/// Whether the boot script of every runner and candidate fits EC2's user data, with room kept for
/// the JIT config GitHub has not issued yet: the largest of them is checked (the longest name and
/// instance type, a two-digit GPU count).
pub fn check_fits(plan: &LaunchPlan, package: &RunnerPackage) -> Result<(), Error> {
    let instance_type = plan
        .candidates
        .iter()
        .map(|c| c.instance_type.as_str())
        .max_by_key(|t| t.len())
        .unwrap_or_default();
    let Some(runner) = plan
        .runners
        .iter()
        .max_by_key(|r| r.name.len() + r.labels.join(",").len())
    else {
        return Ok(());
    };
    let handoff = Handoff {
        runner,
        jit_config: Secret::new(""),
        package,
    };
    // The spot watcher is the larger script, and its prices the longer values: a price for each
    // of more zones than any region has, with long names.
    let zones: Vec<(String, f64)> = (0..8)
        .map(|z| (format!("ap-southeast-{z}a"), 1234.56789))
        .collect();
    let price = super::pricing::for_boot(instance_type, Market::Spot, zones);
    let params = handoff.boot_params(plan, instance_type, 99, Market::Spot, price);
    let room = match plan.jit_handoff {
        JitHandoff::UserData => boot::JIT_CONFIG_ROOM,
        JitHandoff::Ssm => 0,
    };
    boot::check_size(&params, room)
        .map(|_| ())
        .map_err(|t| Error::from(Refused::UserDataTooLarge(t)))
}
