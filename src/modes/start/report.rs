//! What a start reports once its runners are online: the outputs and state, a line in the log
//! and the job summary.

use std::time::Duration;

use crate::actions::{Actions, Markdown};
use crate::machine::{Facts, Machine, Price};
use crate::modes::failure::{Error, Refusal};
use crate::modes::post::state;
use crate::plan::{LaunchPlan, tag};

/// What a start measured, for the outputs and the summary.
pub(super) struct Online {
    pub machine: Machine,
    /// The candidates tried before the one that launched.
    pub refused: Vec<Refusal>,
    pub facts: Facts,
    pub launch_to_running: Option<Duration>,
    pub launch_to_online: Duration,
}

/// The outputs and state for these instances (the first one's facts where one value is asked).
pub(super) fn save_launch(
    plan: &LaunchPlan,
    all: &[Machine],
    actions: &Actions,
) -> Result<(), Error> {
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let ids = serde_json::json!(ids).to_string();
    actions.save_state(state::INSTANCE_IDS, &ids)?;
    actions.set_output("label", &plan.label)?;
    actions.set_output("labels", &serde_json::json!(plan.labels).to_string())?;
    let names: Vec<&str> = plan.runners.iter().map(|r| r.name.as_str()).collect();
    actions.set_output("runner-names", &serde_json::json!(names).to_string())?;
    actions.set_output("instance-ids", &ids)?;
    actions.set_output("region", &plan.region)?;
    if let Some(first) = all.first() {
        actions.set_output("instance-id", &first.id)?;
        actions.set_output("instance-type", &first.instance_type)?;
        if plan.pod.is_none() {
            // A pod has no zone or market; the summary names its node.
            actions.set_output(
                "availability-zone",
                first.availability_zone.as_deref().unwrap_or(""),
            )?;
            actions.set_output("market", first.market.name())?;
        }
    }
    Ok(())
}

pub(super) fn report_online(
    plan: &LaunchPlan,
    all: &[Online],
    actions: &Actions,
) -> Result<(), Error> {
    actions.save_state(state::ONLINE, "true")?;
    let Some(online) = all.first() else {
        return Ok(());
    };
    let i = &online.machine;
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    if plan.pod.is_some() {
        return report_pods(plan, all, actions);
    }
    actions.info(&format!(
        "The GPU runner is online: runs-on: {} ({} in {}, {})",
        plan.label,
        i.instance_type,
        i.availability_zone.as_deref().unwrap_or(&plan.region),
        i.market.name()
    ));
    let rows: Vec<Vec<String>> = [
        ("Label (runs-on)", plan.label.clone()),
        ("Instance", i.id.clone()),
        ("Instance type", i.instance_type.clone()),
        (
            "Availability zone",
            i.availability_zone.clone().unwrap_or_default(),
        ),
        ("Market", i.market.name().to_owned()),
        (
            "Hourly price",
            online
                .facts
                .price
                .as_ref()
                .map(Price::describe)
                .unwrap_or_else(|| {
                    format!(
                        "unknown: gpu-runner has no list price for {}",
                        i.instance_type
                    )
                }),
        ),
        (
            "Tried first, without capacity",
            if online.refused.is_empty() {
                "nothing: the first candidate launched".to_owned()
            } else {
                online
                    .refused
                    .iter()
                    .map(|r| format!("{} → {}", r.candidate, r.code))
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        (
            "Launch → running",
            online
                .launch_to_running
                .map(secs)
                .unwrap_or_else(|| "not seen".to_owned()),
        ),
        ("Launch → runner online", secs(online.launch_to_online)),
        (
            "GPU",
            online.facts.gpu.clone().unwrap_or_else(|| {
                "not in the console yet: the job has it as GPU_RUNNER_GPU_* variables".to_owned()
            }),
        ),
        (
            "Ends itself by",
            plan.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
    ]
    .into_iter()
    .chain(pool_row(i))
    .map(|(k, v)| vec![k.to_owned(), v])
    .collect();
    let mut summary = Markdown::new()
        .heading(3, "GPU runner online")
        .table(&["", ""], &rows);
    if all.len() > 1 {
        // The table above is the first runner's; each has a line here.
        let each: Vec<Vec<String>> = all
            .iter()
            .map(|o| {
                vec![
                    o.machine.runner_name().unwrap_or_default().to_owned(),
                    o.machine.id.clone(),
                    o.machine.instance_type.clone(),
                    o.machine.availability_zone.clone().unwrap_or_default(),
                    o.machine.market.name().to_owned(),
                    secs(o.launch_to_online),
                ]
            })
            .collect();
        summary = summary.paragraph(&format!(
            "{} runners, each with its own label (its name) besides {}:",
            all.len(),
            plan.label
        ));
        summary = summary.table(
            &[
                "Runner",
                "Instance",
                "Type",
                "Zone",
                "Market",
                "Launch → online",
            ],
            &each,
        );
    }
    actions.append_summary(&summary.build())?;
    Ok(())
}

/// A pod's summary: where the cluster put it and how long each step took.
fn report_pods(plan: &LaunchPlan, all: &[Online], actions: &Actions) -> Result<(), Error> {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let Some(online) = all.first() else {
        return Ok(());
    };
    let p = &online.machine;
    let node = |o: &Online| {
        o.facts
            .details
            .iter()
            .find(|(k, _)| *k == "Node")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    actions.info(&format!(
        "The GPU runner is online: runs-on: {} (pod {} on node {}, {})",
        plan.label,
        p.id,
        node(online),
        p.instance_type
    ));
    let mut rows: Vec<(&str, String)> = vec![
        ("Label (runs-on)", plan.label.clone()),
        ("Pod", p.id.clone()),
        ("Cluster", plan.cluster.clone().unwrap_or_default()),
        ("GPUs asked for", p.instance_type.clone()),
    ];
    rows.extend(online.facts.details.iter().cloned());
    rows.extend([
        (
            "Created → running",
            online
                .launch_to_running
                .map(secs)
                .unwrap_or_else(|| "not seen".to_owned()),
        ),
        ("Created → runner online", secs(online.launch_to_online)),
        (
            "GPU",
            online.facts.gpu.clone().unwrap_or_else(|| {
                "not in the pod's log yet: the job has it as GPU_RUNNER_GPU_* variables".to_owned()
            }),
        ),
        (
            "Ends by",
            format!(
                "{} (the pod's activeDeadlineSeconds)",
                plan.expires_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ),
    ]);
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    let mut summary = Markdown::new()
        .heading(3, "GPU runner online")
        .table(&["", ""], &rows);
    if all.len() > 1 {
        let each: Vec<Vec<String>> = all
            .iter()
            .map(|o| {
                vec![
                    o.machine.runner_name().unwrap_or_default().to_owned(),
                    o.machine.id.clone(),
                    node(o),
                    secs(o.launch_to_online),
                ]
            })
            .collect();
        summary = summary
            .paragraph(&format!(
                "{} runners, each with its own label (its name) besides {}:",
                all.len(),
                plan.label
            ))
            .table(&["Runner", "Pod", "Node", "Created → online"], &each);
    }
    actions.append_summary(&summary.build())?;
    Ok(())
}

/// For a pool machine: which pool, and which of its jobs this is (1: launched into the pool now).
fn pool_row(m: &Machine) -> Option<(&'static str, String)> {
    let pool = m.tags.get(tag::POOL)?;
    let uses = m.tags.get(tag::USES).map(String::as_str).unwrap_or("1");
    let how = if uses == "1" {
        "launched into it now".to_owned()
    } else {
        format!("resumed with its disk, for its job {uses}")
    };
    Some(("Pool", format!("{pool}: {how}")))
}

/// A failed start's job summary: what went wrong and how to fix it (the annotations' words, with
/// what was tried and the machine's last words where there are any), then what was asked. Best
/// effort: the error itself is what the step reports.
pub(super) fn failed(plan: &LaunchPlan, e: &Error, actions: &Actions) {
    let mut summary = Markdown::new().heading(3, "GPU runner: start failed");
    for a in e.annotations() {
        if let Some(title) = &a.title {
            summary = summary.heading(4, title);
        }
        summary = summary.code("text", &a.message);
    }
    let summary = summary
        .paragraph("What was asked:")
        .raw(&plan.to_markdown());
    if let Err(e) = actions.append_summary(&summary.build()) {
        tracing::warn!(error = %e, "could not write the failed start's job summary");
    }
}
