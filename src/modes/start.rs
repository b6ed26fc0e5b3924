//! `mode: start`: plan the GPU runner; print the plan; launch it.

use chrono::{DateTime, Utc};

use crate::actions::{Actions, Annotation, Markdown};
use crate::context::Context;
use crate::env::Env;
use crate::error::Error;
use crate::inputs::StartInputs;
use crate::plan;

pub fn run(
    inputs: &StartInputs,
    env: &Env,
    actions: &Actions,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    let ctx = Context::from_env(env)?;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let plan = plan::launch_plan(inputs, &ctx, now, &nonce[..8]);
    tracing::info!(label = %plan.label, candidates = plan.candidates.len(), "planned the GPU runner");
    {
        let _group = actions.group("Plan");
        actions.verbatim(plan.to_text().trim_end());
    }

    if plan.dry_run {
        actions.append_summary(
            &Markdown::new()
                .heading(3, "GPU runner: dry run")
                .paragraph(
                    "Nothing was launched and no runner was registered. This is what a start \
                     would do:",
                )
                .raw(&plan.to_markdown())
                .build(),
        )?;
        actions.annotate(
            &Annotation::notice(
                "Dry run: nothing was launched and no runner was registered. The plan is in the \
                 log and the job summary. Remove dry-run to launch.",
            )
            .title("GPU runner dry run"),
        );
        return Ok(());
    }

    Err(Error::Unsupported {
        what: format!(
            "this build of gpu-runner ({}) plans a start but has no cloud back-end to launch \
             instances with",
            env!("CARGO_PKG_VERSION")
        ),
        fix: "Set dry-run: true to check the plan.".to_owned(),
    })
}
