//! `mode: stop`: terminate what start launched and remove its runner. Forgiving: nothing to stop is
//! a success, so a stop job with `if: always()` never fails a run on its own.

use crate::actions::{Actions, Markdown};
use crate::error::Error;
use crate::inputs::StopInputs;

pub fn run(inputs: &StopInputs, actions: &Actions) -> Result<(), Error> {
    if !inputs.has_work() {
        actions.info(
            "Nothing to stop: neither label nor instance-ids was given, so no GPU instance is \
             known to this job.",
        );
        actions.append_summary(
            &Markdown::new()
                .heading(3, "GPU runner: stop")
                .raw(
                    "Nothing to stop: neither `label` nor `instance-ids` was given. This is \
                     normal when the start job failed or was skipped before it launched anything. \
                     If it did launch an instance, pass its outputs to this step: `label`, \
                     `instance-ids` and `region`.",
                )
                .build(),
        )?;
        return Ok(());
    }
    Err(Error::Unsupported {
        what: format!(
            "this build of gpu-runner ({}) has no cloud back-end to stop instances with",
            env!("CARGO_PKG_VERSION")
        ),
        fix: "Remove the instance and its runner by hand: terminate the instances tagged \
              gpu-runner:label in the EC2 console, and delete the runner under Settings → \
              Actions → Runners."
            .to_owned(),
    })
}
