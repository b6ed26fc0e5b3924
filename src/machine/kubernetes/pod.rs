//! The pod and Secret a runner gets, and what a pod read back says: pure, from the plan and the
//! handoff to JSON manifests, and from a pod's JSON to a [`Machine`] and its [`Health`].
//!
//! gpu-runner's tags live on the pod twice: every one as an annotation (`gpu-runner/label`, any
//! value), and those it selects by as labels too, which Kubernetes allows only short and plain.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::clock::Clock;
use crate::inputs::PodInputs;
use crate::machine::{Handoff, Health, Machine, State};
use crate::plan::{LaunchPlan, Market, tag};

/// What every object gpu-runner creates carries, for `kubectl get pods -l` and for cleanup.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gpu-runner");
/// The label keys gpu-runner selects by.
pub const LABEL: &str = "gpu-runner/label";
pub const RUNNER: &str = "gpu-runner/runner";
pub const REPOSITORY: &str = "gpu-runner/repository";
pub const RUN_ID: &str = "gpu-runner/run-id";
/// The container that runs the runner; a `pod-template` container of this name merges into it.
pub const CONTAINER: &str = "runner";
/// The Secret's key that holds the runner's configuration.
pub const JIT_KEY: &str = "jit-config";

const ENTRYPOINT: &str = include_str!("entrypoint.sh");
const HOOK_MARKER: &str = "# @JOB_STARTED_HOOK@";
const CONTAINER_HOOK: &str = include_str!("container-hook.sh");
const CONTAINER_HOOK_MARKER: &str = "# @CONTAINER_HOOK@";

/// The annotation that carries a `gpu-runner:*` tag.
fn annotation_of(tag_key: &str) -> Option<String> {
    tag_key
        .strip_prefix("gpu-runner:")
        .map(|name| format!("gpu-runner/{name}"))
}

/// A repository as a label value: lower case, `/` as `.`. Names that do not fit a label (63
/// characters, letters, digits, `-_.`, a letter or digit at each end) are labelled by a hash.
pub fn repository_label(repository: &str) -> String {
    let plain = repository.to_ascii_lowercase().replace('/', ".");
    let fits = plain.len() <= 63
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && plain.starts_with(|c: char| c.is_ascii_alphanumeric())
        && plain.ends_with(|c: char| c.is_ascii_alphanumeric());
    if fits {
        return plain;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(plain.as_bytes());
    format!(
        "sha256-{}",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The label selector of `key=value` pairs (gpu-runner's own first).
pub fn selector(pairs: &[(&str, &str)]) -> String {
    std::iter::once(MANAGED_BY)
        .chain(pairs.iter().copied())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels and annotations of a runner's pod and Secret.
fn metadata(plan: &LaunchPlan, runner: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut labels = Map::new();
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert(LABEL.into(), plan.label.clone().into());
    labels.insert(RUNNER.into(), runner.into());
    labels.insert(
        REPOSITORY.into(),
        repository_label(&plan.binding.repository).into(),
    );
    labels.insert(RUN_ID.into(), plan.binding.run_id.to_string().into());
    let mut annotations = Map::new();
    for (key, value) in &plan.tags {
        if let Some(a) = annotation_of(key) {
            annotations.insert(a, value.clone().into());
        }
    }
    if plan.runners.len() > 1
        && let Some(a) = annotation_of(tag::RUNNER)
    {
        annotations.insert(a, runner.into());
    }
    (labels, annotations)
}

/// The entrypoint with the phase lines, the GPU probe, the job-started hook and the container hook
/// in it.
pub fn entrypoint() -> String {
    ENTRYPOINT
        .replacen(HOOK_MARKER, crate::boot::job_started_hook().trim_end(), 1)
        .replacen(
            crate::boot::COMPLETED_HOOK_MARKER,
            crate::boot::JOB_COMPLETED_HOOK.trim_end(),
            1,
        )
        .replacen(CONTAINER_HOOK_MARKER, CONTAINER_HOOK.trim_end(), 1)
        .replacen(crate::boot::GPU_PROBE_MARKER, &crate::boot::gpu_probe(), 1)
        .replacen(
            crate::boot::PHASE_LINE_MARKER,
            &crate::boot::phase_line(),
            1,
        )
}

/// The runner's pod, `pod-template` merged over it, for the Secret named like it to complete.
pub fn manifest(plan: &LaunchPlan, pod: &PodInputs, handoff: &Handoff<'_>) -> Value {
    let name = &handoff.runner.name;
    let (labels, annotations) = metadata(plan, name);
    let env: Vec<Value> = [
        ("RUNNER_NAME", name.clone()),
        ("RUNNER_LABELS", handoff.runner.labels.join(",")),
        ("EXPECTED_GPUS", pod.gpu_count.to_string()),
        ("GPU_PROBE_ATTEMPTS", "24".to_owned()),
        ("GPU_PROBE_INTERVAL_SECONDS", "5".to_owned()),
        (
            "MAX_LIFETIME_MINUTES",
            plan.max_lifetime_minutes.to_string(),
        ),
        (
            "IDLE_TIMEOUT_MINUTES",
            plan.idle_timeout_minutes.to_string(),
        ),
        (
            "PRE_RUNNER_SCRIPT",
            plan.pre_runner_script.clone().unwrap_or_default(),
        ),
        ("JOB_REPOSITORY", plan.binding.repository.clone()),
        ("JOB_RUN_ID", plan.binding.run_id.to_string()),
        (
            "JOB_WORKFLOW_REF",
            plan.binding.workflow_ref.clone().unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| json!({"name": k, "value": v}))
    .chain(std::iter::once(json!({
        "name": "JIT_CONFIG",
        "valueFrom": {"secretKeyRef": {"name": name, "key": JIT_KEY}},
    })))
    .collect();
    let mut requests = Map::new();
    if let Some(cpu) = &pod.cpu_request {
        requests.insert("cpu".into(), cpu.clone().into());
    }
    if let Some(memory) = &pod.memory_request {
        requests.insert("memory".into(), memory.clone().into());
    }
    let mut resources = json!({"limits": {pod.gpu_resource.clone(): pod.gpu_count.to_string()}});
    if !requests.is_empty() {
        resources["requests"] = Value::Object(requests);
    }
    let mut spec = json!({
        "restartPolicy": "Never",
        "activeDeadlineSeconds": u64::from(plan.max_lifetime_minutes) * 60,
        // The job gets no credential of the cluster: gpu-runner's own stay in the workflow.
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": 30,
        "containers": [{
            "name": CONTAINER,
            "image": pod.image,
            "command": ["/bin/bash", "-c", entrypoint(), "gpu-runner-entrypoint"],
            "env": env,
            "resources": resources,
            // A failed probe's last lines become the container's termination message.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
    });
    if !pod.node_selector.is_empty() {
        spec["nodeSelector"] = json!(pod.node_selector);
    }
    if pod.tolerations.as_array().is_some_and(|t| !t.is_empty()) {
        spec["tolerations"] = pod.tolerations.clone();
    }
    if let Some(class) = &pod.runtime_class {
        spec["runtimeClassName"] = json!(class);
    }
    let ours = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    let mut merged = match &pod.template {
        Some(template) => merge(ours.clone(), template.clone()),
        None => ours.clone(),
    };
    // What the template cannot change: what the pod is and how gpu-runner finds and ends it.
    for pointer in [
        "/apiVersion",
        "/kind",
        "/metadata/name",
        "/spec/restartPolicy",
        "/spec/activeDeadlineSeconds",
    ] {
        if let (Some(slot), Some(v)) = (merged.pointer_mut(pointer), ours.pointer(pointer)) {
            *slot = v.clone();
        }
    }
    if let Some(meta) = merged["metadata"].as_object_mut() {
        meta.remove("namespace");
        for (key, source) in [("labels", &labels), ("annotations", &annotations)] {
            let slot = meta.entry(key).or_insert_with(|| json!({}));
            if let Some(map) = slot.as_object_mut() {
                map.extend(source.clone());
            }
        }
    }
    if let Some(containers) = merged["spec"]["containers"].as_array_mut()
        && let Some(runner) = containers
            .iter_mut()
            .find(|c| c["name"] == json!(CONTAINER))
    {
        runner["command"] = ours["spec"]["containers"][0]["command"].clone();
        runner["args"] = json!([]);
    }
    merged
}

/// The Secret with the runner's configuration, owned by its pod so that the cluster's garbage
/// collector removes it with the pod even when no stop runs.
pub fn secret(plan: &LaunchPlan, handoff: &Handoff<'_>, pod_uid: &str) -> Value {
    let name = &handoff.runner.name;
    let (labels, annotations) = metadata(plan, name);
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod_uid,
            }],
        },
        "stringData": {JIT_KEY: handoff.jit_config.expose()},
    })
}

/// `over` merged into `base`: maps key by key, lists of named entries (containers, volumes, env)
/// entry by name, anything else replaced.
pub fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Object(mut base), Value::Object(over)) => {
            for (k, v) in over {
                let merged = match base.remove(&k) {
                    Some(b) => merge(b, v),
                    None => v,
                };
                base.insert(k, merged);
            }
            Value::Object(base)
        }
        (Value::Array(mut base), Value::Array(over))
            if over
                .iter()
                .chain(base.iter())
                .all(|e| e["name"].is_string()) =>
        {
            for entry in over {
                match base.iter_mut().find(|b| b["name"] == entry["name"]) {
                    Some(slot) => *slot = merge(slot.take(), entry),
                    None => base.push(entry),
                }
            }
            Value::Array(base)
        }
        (_, over) => over,
    }
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What gpu-runner knows of a pod: its tags from its annotations, its node as where it runs.
pub fn machine(pod: &Value) -> Machine {
    let meta = &pod["metadata"];
    let tags: BTreeMap<String, String> = meta["annotations"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("gpu-runner/")?;
            Some((format!("gpu-runner:{name}"), v.as_str()?.to_owned()))
        })
        .collect();
    let limits = &pod["spec"]["containers"][0]["resources"]["limits"];
    let gpus = limits
        .as_object()
        .into_iter()
        .flatten()
        .find(|(k, _)| k.contains('/'))
        .map(|(k, v)| format!("{} × {k}", v.as_str().unwrap_or("?")))
        .unwrap_or_else(|| "no GPU".to_owned());
    let state = if !meta["deletionTimestamp"].is_null() {
        State::ShuttingDown
    } else {
        match pod["status"]["phase"].as_str() {
            Some("Running") => State::Running,
            // A finished pod holds no GPU, but it and its Secret are still there to delete.
            Some("Pending") | None => State::Pending,
            Some(other) => State::Other(other.to_ascii_lowercase()),
        }
    };
    Machine {
        id: meta["name"].as_str().unwrap_or_default().to_owned(),
        instance_type: gpus,
        availability_zone: None,
        market: Market::OnDemand,
        state,
        state_reason: disruption(pod)
            .map(|(reason, message)| format!("{DISRUPTED}: {reason}: {message}"))
            // The kubelet's word for a pod it ended: Evicted, DeadlineExceeded.
            .or_else(|| pod["status"]["reason"].as_str().map(str::to_owned)),
        state_since: None,
        launched_at: timestamp(&meta["creationTimestamp"]),
        tags,
    }
}

/// The pod condition Kubernetes sets on a pod it is about to take away for a reason of its own
/// (Kubernetes docs, "Pod disruption conditions"): preempted by the scheduler
/// (`PreemptionByScheduler`), evicted by a drain (`EvictionByEvictionAPI`), deleted by the taint
/// manager or the pod garbage collector (`DeletionByTaintManager`, `DeletionByPodGC`), or
/// terminated by the kubelet, for a node shutting down, a spot or preemptible node taken back
/// among them (`TerminationByKubelet`).
pub const DISRUPTED: &str = "DisruptionTarget";

/// The reason and message of the pod's `DisruptionTarget` condition, when it is true.
pub fn disruption(pod: &Value) -> Option<(&str, &str)> {
    let c = pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == DISRUPTED && c["status"] == "True")?;
    Some((
        c["reason"].as_str().unwrap_or("unknown"),
        c["message"].as_str().unwrap_or_default(),
    ))
}

/// How many of a pod's last lines an error shows.
pub const LAST_WORDS: usize = 12;

/// The last `n` lines of a container's log: its entrypoint's phases, and whatever went wrong
/// between them (a pod's log is short, and all of it is the entrypoint's and the runner's).
pub fn last_lines(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect()
}

/// When the pod reached each phase, from its conditions: what the summary shows of its start, in
/// the user's seconds on `clock`.
pub fn timeline(pod: &Value, clock: Clock) -> Vec<(&'static str, String)> {
    let created = timestamp(&pod["metadata"]["creationTimestamp"]);
    let condition = |kind: &str| {
        pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")
            .and_then(|c| timestamp(&c["lastTransitionTime"]))
    };
    let started = timestamp(&pod["status"]["startTime"]);
    let scheduled = condition("PodScheduled");
    let running = runner_status(pod)
        .and_then(|c| timestamp(&c["state"]["running"]["startedAt"]))
        .or_else(|| condition("Ready"));
    let between = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(a), Some(b)) => format!("{} s", clock.between(a, b).as_secs()),
        _ => "not seen".to_owned(),
    };
    let mut rows = vec![
        (
            "Node",
            pod["spec"]["nodeName"]
                .as_str()
                .unwrap_or("none yet")
                .to_owned(),
        ),
        ("Created → scheduled", between(created, scheduled)),
        (
            "Scheduled → container running",
            between(scheduled.or(started), running),
        ),
    ];
    if let Some(class) = pod["spec"]["runtimeClassName"].as_str() {
        rows.push(("Runtime class", class.to_owned()));
    }
    rows
}

/// The runner container's status, if the kubelet reported one.
fn runner_status(pod: &Value) -> Option<&Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == json!(CONTAINER))
}

/// Image pull failures the kubelet reports while the container waits.
const CANNOT_PULL: &[&str] = &["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// The scheduler's words when it found no node for the pod (`PodScheduled` is `False`,
/// `Unschedulable`), for [`super::scale_up`] to weigh against a node on its way.
pub fn unschedulable(pod: &Value) -> Option<&str> {
    if !pod["metadata"]["deletionTimestamp"].is_null()
        || !matches!(pod["status"]["phase"].as_str(), Some("Pending") | None)
    {
        return None;
    }
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        .filter(|c| c["reason"] == "Unschedulable")
        .map(|c| c["message"].as_str().unwrap_or("no reason given"))
}

/// How a booting pod is doing, from the pod as the API server has it (one the scheduler found
/// no node for: [`unschedulable`]).
pub fn health(pod: &Value) -> Health {
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Health::Gone {
            why: "deleted".to_owned(),
            last_words: Vec::new(),
        };
    }
    let status = &pod["status"];
    let container = runner_status(pod);
    match status["phase"].as_str() {
        Some("Running") => return Health::Ready,
        Some(phase @ ("Succeeded" | "Failed")) => {
            let terminated = container.map(|c| &c["state"]["terminated"]);
            let code = terminated.and_then(|t| t["exitCode"].as_i64());
            let reason = status["reason"].as_str().or_else(|| {
                terminated
                    .and_then(|t| t["reason"].as_str())
                    .filter(|r| !r.is_empty())
            });
            let last_words: Vec<String> = terminated
                .and_then(|t| t["message"].as_str())
                .map(|m| last_lines(m, LAST_WORDS))
                .unwrap_or_default();
            let mut why = format!("ended before its runner came online ({phase}");
            if let Some(reason) = reason {
                why.push_str(&format!(", {reason}"));
            }
            if let Some(code) = code {
                why.push_str(&format!(", exit code {code}"));
            }
            why.push(')');
            if let Some(message) = status["message"].as_str() {
                why.push_str(&format!(": {message}"));
            }
            let fix = if reason == Some("DeadlineExceeded") {
                "It reached max-lifetime-minutes (the pod's activeDeadlineSeconds) before its \
                 runner came online: raise max-lifetime-minutes."
            } else {
                "Its last words above say why. A failed GPU probe means the node gave the pod no \
                 working GPU: check the node's NVIDIA driver and device plugin (kubectl describe \
                 node), and set runtime-class if the cluster runs GPU pods under a runtime class \
                 such as nvidia. A runner that is missing means pod-image is not built on \
                 ghcr.io/actions/actions-runner."
            };
            return Health::CannotRun {
                why,
                fix: fix.to_owned(),
                last_words,
            };
        }
        _ => {}
    }
    if let Some(waiting) = container.map(|c| &c["state"]["waiting"])
        && let Some(reason) = waiting["reason"].as_str()
        && CANNOT_PULL.contains(&reason)
    {
        let image = container
            .and_then(|c| c["image"].as_str())
            .unwrap_or_default();
        let message = waiting["message"].as_str().unwrap_or_default();
        return Health::CannotRun {
            why: format!("cannot pull its image {image} ({reason}): {message}"),
            fix: "Check pod-image: the image must exist, and the node must be able to pull it \
                  (for a private registry, add imagePullSecrets in pod-template). Leave pod-image \
                  unset for GitHub's runner image."
                .to_owned(),
            last_words: Vec::new(),
        };
    }
    Health::Booting
}

#[cfg(test)]
mod tests;
