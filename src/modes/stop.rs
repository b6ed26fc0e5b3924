//! `mode: stop`: terminate what start launched and remove its runner. Forgiving: nothing to stop,
//! an instance already gone and a runner already removed are all successes, so a stop job with
//! `if: always()` never fails a run on its own.

use chrono::Utc;

use crate::actions::{Actions, Markdown};
use crate::cloud::Cloud;
use crate::cloud::aws::Ec2;
use crate::context::Context;
use crate::env::Env;
use crate::error::Error;
use crate::github::{Removal, RunnerRegistry};
use crate::inputs::StopInputs;

pub async fn run(inputs: &StopInputs, env: &Env, actions: &Actions) -> Result<(), Error> {
    let (Some(region), true) = (&inputs.region, inputs.has_work()) else {
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
    };
    let ctx = Context::from_env(env)?;
    // AWS first: what bills is the instance, and a GitHub problem must not keep it running.
    let aws = super::aws_config(env, &inputs.common, region, &ctx, actions).await?;
    let cloud = Ec2::new(&aws);

    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut first_error: Option<Error> = None;

    // The instances: by id, else by the label tag (ids can be lost when start was cancelled).
    let found = if inputs.instance_ids.is_empty() {
        cloud
            .find_by_label(inputs.label.as_deref().unwrap_or_default())
            .await
    } else {
        cloud.describe(&inputs.instance_ids).await
    };
    let found = found.map_err(Error::cloud)?;
    for id in &inputs.instance_ids {
        if !found.iter().any(|i| &i.id == id) {
            rows.push(vec![id.clone(), "instance".into(), "already gone".into()]);
        }
    }
    let (ended, live): (Vec<_>, Vec<_>) = found.iter().partition(|i| i.state.is_ending());
    for i in &ended {
        rows.push(vec![
            i.id.clone(),
            "instance".into(),
            "already ended".into(),
        ]);
    }
    let live_ids: Vec<String> = live.iter().map(|i| i.id.clone()).collect();
    match cloud.terminate(&live_ids).await {
        Ok(()) => {
            for i in &live {
                let ran = i
                    .launched_at
                    .map(|t| format!(" after {} min", (Utc::now() - t).num_minutes().max(0)))
                    .unwrap_or_default();
                rows.push(vec![
                    i.id.clone(),
                    "instance".into(),
                    format!("terminated{ran}"),
                ]);
            }
        }
        Err(e) => {
            for id in &live_ids {
                rows.push(vec![
                    id.clone(),
                    "instance".into(),
                    "could not terminate".into(),
                ]);
            }
            first_error.get_or_insert(Error::cloud(e));
        }
    }

    // The runners: every runner with the label (from the input, else from the instances' tags).
    let mut labels: Vec<String> = inputs.label.iter().cloned().collect();
    for label in found.iter().filter_map(|i| i.label.clone()) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let github = match super::runners(&inputs.common, &ctx, actions).await {
        Ok(github) => github,
        Err(e) => {
            for label in &labels {
                rows.push(vec![
                    label.clone(),
                    "runner".into(),
                    "could not reach GitHub".into(),
                ]);
            }
            first_error.get_or_insert(e);
            return finish(rows, first_error, actions);
        }
    };
    let registry = &github.registry;
    for label in &labels {
        match registry.runners_with_label(label).await {
            Ok(runners) if runners.is_empty() => {
                rows.push(vec![
                    label.clone(),
                    "runner".into(),
                    "already removed".into(),
                ]);
            }
            Ok(runners) => {
                for r in runners {
                    let action = match registry.delete_runner(r.id).await {
                        Ok(Removal::Deleted) => "removed".to_owned(),
                        Ok(Removal::AlreadyGone) => "already removed".to_owned(),
                        Err(e) => {
                            first_error.get_or_insert(github.error(e));
                            "could not remove".to_owned()
                        }
                    };
                    rows.push(vec![r.name, "runner".into(), action]);
                }
            }
            Err(e) => {
                rows.push(vec![
                    label.clone(),
                    "runner".into(),
                    "could not list".into(),
                ]);
                first_error.get_or_insert(github.error(e));
            }
        }
    }

    finish(rows, first_error, actions)
}

/// Reports every row in the log and the summary, then the first error, if any.
fn finish(
    rows: Vec<Vec<String>>,
    first_error: Option<Error>,
    actions: &Actions,
) -> Result<(), Error> {
    for row in &rows {
        actions.info(&format!("{} {}: {}", row[1], row[0], row[2]));
    }
    actions.append_summary(
        &Markdown::new()
            .heading(3, "GPU runner: stop")
            .table(&["What", "Kind", "Done"], &rows)
            .build(),
    )?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
