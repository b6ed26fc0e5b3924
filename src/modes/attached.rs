//! `mode: start` with `machine: attached`: no machine is launched; start waits until a machine
//! running `gpu-runner attach` with the given labels has a runner online and idle, so that the
//! GPU job does not sit queued for a day when no machine is attached. Its stop is a no-op: the
//! machine is the user's, and attach removes each job's runner itself.

use std::time::{Duration, Instant};

use crate::actions::{Actions, Markdown};
use crate::clock::Clock;
use crate::context::Context;
use crate::env::Env;
use crate::github::app::TokenNeeds;
use crate::github::{Runner, RunnerRegistry, RunnerStatus};
use crate::guard;
use crate::inputs::AttachedInputs;
use crate::modes;
use crate::modes::failure::Error;

/// How often start looks at the runners.
const POLL: Duration = Duration::from_secs(5);

/// What the runners show of the attached machines with `labels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// An online runner with every label and no job: the GPU job can go there now.
    Idle(String),
    /// Runners with the labels, online, all running a job.
    Busy(Vec<String>),
    /// Runners with the labels, none online (the machine stopped, or is starting its next runner).
    Offline(Vec<String>),
    None,
}

/// Whether one of `runners` carries all of `labels` (GitHub compares labels without regard to
/// case) and is online and idle (pure).
pub fn availability(runners: &[Runner], labels: &[String]) -> Availability {
    let matching: Vec<&Runner> = runners
        .iter()
        .filter(|r| {
            labels
                .iter()
                .all(|l| r.labels.iter().any(|have| have.eq_ignore_ascii_case(l)))
        })
        .collect();
    if let Some(idle) = matching
        .iter()
        .find(|r| r.status == RunnerStatus::Online && !r.busy)
    {
        return Availability::Idle(idle.name.clone());
    }
    let names = |online: bool| -> Vec<String> {
        matching
            .iter()
            .filter(|r| (r.status == RunnerStatus::Online) == online)
            .map(|r| r.name.clone())
            .collect()
    };
    match (names(true), names(false)) {
        (busy, _) if !busy.is_empty() => Availability::Busy(busy),
        (_, offline) if !offline.is_empty() => Availability::Offline(offline),
        _ => Availability::None,
    }
}

pub async fn run(inputs: &AttachedInputs, env: &Env, actions: &Actions) -> Result<(), Error> {
    let ctx = Context::from_env(env)?;
    let repository = ctx.repository();
    // The machine's own hook refuses what the guard refuses; refusing here as well saves the
    // run a queued job that would only fail there.
    let (event, payload) = guard::event_of(env);
    let judgment = if inputs.trust.allow_untrusted {
        guard::Judgment::default()
    } else {
        match guard::check(
            event,
            payload.as_ref(),
            &repository,
            &inputs.trust.allowed_associations,
        ) {
            Ok(judgment) => judgment,
            Err(why) => return modes::untrusted(why, inputs.trust.skips_refusals(), actions),
        }
    };
    let github = modes::runners(
        &inputs.common,
        inputs.common.scope(),
        TokenNeeds::default(),
        &ctx,
        env,
        actions,
    )
    .await?;
    if let Some(login) = &judgment.approver {
        let permission = github
            .registry
            .collaborator_permission(login)
            .await
            .map_err(|e| github.error(e))?;
        if let Err(why) = guard::check_approval(login, &permission, &repository) {
            return modes::untrusted(why, inputs.trust.skips_refusals(), actions);
        }
    }
    let labels = inputs.labels.join(", ");
    let timeout = Duration::from_secs(u64::from(inputs.timeout_minutes) * 60);
    let clock = Clock::from_env(env);
    let started = Instant::now();
    actions.info(&format!(
        "Waiting up to {} min for an attached machine with the labels {labels} to be online and \
         idle",
        inputs.timeout_minutes
    ));
    let mut last = Availability::None;
    loop {
        let runners = github
            .registry
            .runners()
            .await
            .map_err(|e| github.error(e))?;
        let now = availability(&runners, &inputs.labels);
        if let Availability::Idle(runner) = &now {
            actions.info(&format!(
                "The attached machine's runner {runner} is online and idle: the GPU job can \
                 run on it"
            ));
            actions.set_output("label", &inputs.labels[0])?;
            actions.set_output("labels", &serde_json::json!(inputs.labels).to_string())?;
            actions.set_output("runner-names", &serde_json::json!([runner]).to_string())?;
            let summary = Markdown::new()
                .heading(3, "An attached GPU machine is ready")
                .table(
                    &["Labels", "Runner", "Waited"],
                    &[vec![
                        labels.clone(),
                        runner.clone(),
                        format!("{} s", clock.unscaled(started.elapsed()).as_secs()),
                    ]],
                );
            actions.append_summary(&summary.build())?;
            return Ok(());
        }
        if now != last {
            match &now {
                Availability::Busy(names) => actions.info(&format!(
                    "The attached machine is busy with another job ({}); waiting",
                    names.join(", ")
                )),
                Availability::Offline(names) => actions.info(&format!(
                    "Runners with these labels are registered but offline ({}); waiting",
                    names.join(", ")
                )),
                _ => {}
            }
            last = now.clone();
        }
        if clock.unscaled(started.elapsed()) >= timeout {
            return Err(not_attached(
                &now,
                &labels,
                inputs.timeout_minutes,
                &repository,
            ));
        }
        clock.sleep(POLL).await;
    }
}

fn not_attached(now: &Availability, labels: &str, minutes: u32, repository: &str) -> Error {
    let what = match now {
        Availability::Busy(names) => format!(
            "the attached machine with the labels {labels} stayed busy with other jobs for \
             {minutes} min ({})",
            names.join(", ")
        ),
        _ => format!(
            "no machine with the labels {labels} was attached (online and idle) within {minutes} \
             min"
        ),
    };
    Error::Attach {
        title: "No attached machine",
        what,
        fix: format!(
            "Start gpu-runner attach --repo {repository} --labels {labels} on the machine (a \
             notebook, a workstation), then re-run the job; or raise startup-timeout-minutes. \
             The GPU job was not queued, so it cannot wait for a day."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner(name: &str, labels: &[&str], online: bool, busy: bool) -> Runner {
        Runner {
            id: 1,
            name: name.into(),
            status: if online {
                RunnerStatus::Online
            } else {
                RunnerStatus::Offline
            },
            busy,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    #[test]
    fn an_idle_online_runner_with_every_label_is_the_one() {
        let want = vec!["gpu-a10".to_owned()];
        let runners = [
            runner("other", &["self-hosted", "cpu"], true, false),
            runner("busy", &["self-hosted", "GPU-A10"], true, true),
            runner("idle", &["self-hosted", "gpu-a10"], true, false),
        ];
        assert_eq!(
            availability(&runners, &want),
            Availability::Idle("idle".into())
        );
        assert_eq!(
            availability(&runners[..2], &want),
            Availability::Busy(vec!["busy".into()])
        );
        assert_eq!(
            availability(&[runner("gone", &["gpu-a10"], false, false)], &want),
            Availability::Offline(vec!["gone".into()])
        );
        assert_eq!(availability(&runners[..1], &want), Availability::None);
    }
}
