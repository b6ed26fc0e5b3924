//! `dry-run: true`: the plan, what the machine would be handed, and the provider's proof that it
//! could acquire the machine. Registers and acquires nothing.

use crate::actions::{Actions, Annotation, Markdown};
use crate::boot::RunnerPackage;
use crate::machine::{Handoff, Provider};
use crate::modes::failure::Error;
use crate::plan::LaunchPlan;
use crate::secret::Secret;

pub(super) async fn run(
    plan: &LaunchPlan,
    provider: &impl Provider,
    package: &RunnerPackage,
    actions: &Actions,
) -> Result<(), Error> {
    let Some(runner) = plan.runners.first() else {
        return Ok(());
    };
    let handoff = Handoff {
        runner,
        jit_config: Secret::new(""),
        package,
    };
    let check = provider.preflight(plan, &handoff, actions).await?;
    actions.info(&check);
    actions.append_summary(
        &Markdown::new()
            .heading(3, "GPU runner: dry run")
            .paragraph(&format!(
                "Nothing was launched and no runner was registered. {check} This is what a start \
                 would do:"
            ))
            .raw(&plan.to_markdown())
            .build(),
    )?;
    actions.annotate(
        &Annotation::notice(format!(
            "Dry run: nothing was launched and no runner was registered. {check} The plan is in \
             the log and the job summary. Remove dry-run to launch."
        ))
        .title("GPU runner dry run"),
    );
    Ok(())
}
