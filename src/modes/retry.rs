//! `mode: retry`: re-runs a workflow run whose GPU machine its provider took back (AWS reclaimed
//! the spot instance), in a small workflow triggered by `workflow_run: completed`. It re-runs
//! only a failed run one of whose machines of that attempt was reclaimed, at most `max-retries`
//! times, never one that failed on its own. It re-runs every job, not only the failed ones:
//! GitHub keeps the outputs of the jobs a "re-run failed jobs" leaves out, so the start job's old
//! label would come back, and the GPU job would wait for a runner that is gone. The re-run's
//! start sees the reclaimed machine of the earlier attempt and launches on-demand.
//!
//! Why a `workflow_run` workflow and not the scheduled cleanup: it runs the moment the run ends,
//! with the run's own event to go by, so the re-run starts within a minute, not at the next
//! schedule.

use serde_json::Value;

use crate::actions::{Actions, Annotation, Markdown};
use crate::context::Context;
use crate::env::Env;
use crate::github::RunnerRegistry;
use crate::github::app::TokenNeeds;
use crate::inputs::RetryInputs;
use crate::machine::{self, Owner, Provider};
use crate::modes::failure::Error;
use crate::plan::tag;

/// The run `workflow_run` says ended, as its payload gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedRun {
    pub id: u64,
    pub attempt: u32,
    pub conclusion: String,
    pub name: String,
    pub url: String,
}

impl EndedRun {
    /// From a `workflow_run` event's payload.
    pub fn of(payload: &Value) -> Option<EndedRun> {
        let run = &payload["workflow_run"];
        Some(EndedRun {
            id: run["id"].as_u64()?,
            attempt: run["run_attempt"]
                .as_u64()
                .and_then(|a| u32::try_from(a).ok())?,
            conclusion: run["conclusion"].as_str().unwrap_or_default().to_owned(),
            name: run["name"].as_str().unwrap_or_default().to_owned(),
            url: run["html_url"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// What to do about an ended run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Re-run it: `reclaimed` are the machines its provider took back.
    Rerun { reclaimed: Vec<String> },
    /// Leave it, for this reason.
    Leave(String),
}

/// Whether to re-run `run`, given the machines of its attempt that were reclaimed. Pure.
pub fn decide(run: &EndedRun, max_retries: u32, reclaimed: &[String]) -> Decision {
    let leave = |why: String| Decision::Leave(why);
    if max_retries == 0 {
        return leave("max-retries is 0: gpu-runner re-runs nothing".to_owned());
    }
    if run.conclusion != "failure" {
        return leave(format!(
            "it ended {}, not failed",
            if run.conclusion.is_empty() {
                "without a conclusion"
            } else {
                &run.conclusion
            }
        ));
    }
    if reclaimed.is_empty() {
        return leave(
            "it failed, but none of its GPU machines was taken back: it failed on its own, and \
             a re-run would fail the same way"
                .to_owned(),
        );
    }
    let reruns = run.attempt.saturating_sub(1);
    if reruns >= max_retries {
        return leave(format!(
            "it was re-run {reruns} time(s) already, and max-retries is {max_retries}"
        ));
    }
    Decision::Rerun {
        reclaimed: reclaimed.to_vec(),
    }
}

pub async fn run(inputs: &RetryInputs, env: &Env, actions: &Actions) -> Result<(), Error> {
    let ctx = Context::from_env(env)?;
    let (event, payload) = crate::guard::event_of(env);
    let ended = payload.as_ref().and_then(EndedRun::of);
    let Some(ended) = ended.filter(|_| event == "workflow_run") else {
        return Err(Error::Unsupported {
            what: format!(
                "mode: retry re-runs the workflow run a workflow_run event names, and this run \
                 was started by {}",
                if event.is_empty() { "no event" } else { event }
            ),
            fix: "Run it in a workflow of its own, on: workflow_run: workflows: [\"GPU CI\"] \
                  types: [completed] (docs/spot.md has the whole workflow)."
                .to_owned(),
        });
    };
    let repository = ctx.repository();
    let reclaimed = if inputs.max_retries == 0 || ended.conclusion != "failure" {
        Vec::new()
    } else {
        let provider = machine::manage(&inputs.common, &inputs.region, env, &ctx, actions).await?;
        let attempt = ended.attempt.to_string();
        provider
            .find(
                &[],
                Some(Owner::Run {
                    repository: &repository,
                    run_id: ended.id,
                }),
            )
            .await?
            .into_iter()
            .filter(|m| m.tags.get(tag::RUN_ATTEMPT) == Some(&attempt))
            .filter(|m| m.reclaimed())
            .map(|m| m.id)
            .collect()
    };
    let decision = decide(&ended, inputs.max_retries, &reclaimed);
    let what = format!(
        "run {} (attempt {}) of {}",
        ended.id, ended.attempt, ended.name
    );
    let summary = Markdown::new().heading(3, "GPU runner: retry");
    match decision {
        Decision::Leave(why) => {
            actions.info(&format!("Not re-running {what}: {why}."));
            actions.append_summary(
                &summary
                    .paragraph(&format!("Not re-run: {what}. {}.", capitalized(&why)))
                    .build(),
            )?;
            Ok(())
        }
        Decision::Rerun { reclaimed } => {
            let github = super::runners(
                &inputs.common,
                inputs.common.scope(),
                TokenNeeds::RUNS,
                &ctx,
                env,
                actions,
            )
            .await?;
            github
                .registry
                .rerun_run(ended.id)
                .await
                .map_err(|e| github.error(e))?;
            let why = format!(
                "AWS took back the spot instance {} while its job ran",
                reclaimed.join(" and ")
            );
            actions.annotate(
                &Annotation::notice(format!(
                    "Re-ran {what}: {why}. The re-run's start launches on-demand. {}",
                    ended.url
                ))
                .title("Re-ran an interrupted run"),
            );
            actions.append_summary(
                &summary
                    .paragraph(&format!(
                        "Re-ran {what} ({}), all its jobs: {why}. Its start sees that and \
                         launches on-demand where market-type allows it.",
                        ended.url
                    ))
                    .build(),
            )?;
            Ok(())
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(conclusion: &str, attempt: u32) -> EndedRun {
        EndedRun {
            id: 7,
            attempt,
            conclusion: conclusion.to_owned(),
            name: "GPU CI".to_owned(),
            url: String::new(),
        }
    }

    #[test]
    fn only_a_failed_run_whose_machine_was_reclaimed_is_re_run_and_at_most_max_retries_times() {
        let reclaimed = vec!["i-1".to_owned()];
        assert!(matches!(
            decide(&ended("failure", 1), 1, &reclaimed),
            Decision::Rerun { .. }
        ));
        let leave = |d: Decision| match d {
            Decision::Leave(why) => why,
            d => panic!("{d:?}"),
        };
        assert!(leave(decide(&ended("failure", 2), 1, &reclaimed)).contains("re-run 1 time(s)"));
        assert!(leave(decide(&ended("failure", 1), 1, &[])).contains("failed on its own"));
        assert!(leave(decide(&ended("success", 1), 1, &reclaimed)).contains("ended success"));
        assert!(leave(decide(&ended("failure", 1), 0, &reclaimed)).contains("max-retries is 0"));
        assert!(matches!(
            decide(&ended("failure", 2), 2, &reclaimed),
            Decision::Rerun { .. }
        ));
    }

    #[test]
    fn the_ended_run_is_read_from_the_workflow_run_payload() {
        let payload = serde_json::json!({"workflow_run": {
            "id": 99, "run_attempt": 2, "conclusion": "failure", "name": "GPU CI",
            "html_url": "https://github.com/octo/ml/actions/runs/99",
        }});
        let run = EndedRun::of(&payload).unwrap();
        assert_eq!(
            (run.id, run.attempt, run.conclusion.as_str()),
            (99, 2, "failure")
        );
        assert_eq!(EndedRun::of(&serde_json::json!({"ref": "main"})), None);
    }
}
