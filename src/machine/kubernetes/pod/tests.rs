use serde_json::json;

use super::*;
use crate::boot::RunnerPackage;
use crate::secret::Secret;

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    \
    server: https://k.example\nusers:\n- name: u\n  user:\n    token: t0k3n\ncontexts:\n- name: \
    c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n";

fn plan(extra: &[(&str, &str)]) -> LaunchPlan {
    let mut env: crate::env::Env = [
        ("INPUT_MODE", "start"),
        ("INPUT_GITHUB-TOKEN", "ghp_pod"),
        ("INPUT_MACHINE", "kubernetes"),
        ("INPUT_KUBECONFIG", KUBECONFIG),
        ("GITHUB_REPOSITORY", "octo/ml"),
        ("GITHUB_RUN_ID", "42"),
        ("GITHUB_RUN_ATTEMPT", "1"),
    ]
    .into_iter()
    .collect();
    for (k, v) in extra {
        env.set(*k, *v);
    }
    let crate::inputs::Inputs::Start(inputs) = crate::inputs::parse(&env).unwrap().inputs else {
        unreachable!()
    };
    let ctx = crate::context::Context::from_env(&env).unwrap();
    crate::plan::launch_plan(&inputs, &ctx, Utc::now(), "abcd1234")
}

fn built(plan: &LaunchPlan) -> Value {
    let package = RunnerPackage::new("https://x/{version}", "2.337.0", crate::boot::Arch::X64, "");
    let handoff = Handoff {
        runner: &plan.runners[0],
        jit_config: Secret::new("JITSECRET"),
        package: &package,
    };
    manifest(plan, plan.pod.as_ref().unwrap(), &handoff)
}

#[test]
fn the_pod_runs_once_within_its_lifetime_with_its_gpus_and_its_configuration_only_in_its_secret() {
    let plan = plan(&[
        ("INPUT_GPU-COUNT", "2"),
        ("INPUT_CPU-REQUEST", "4"),
        ("INPUT_MEMORY-REQUEST", "16Gi"),
        ("INPUT_NODE-SELECTOR", "nvidia.com/gpu.product=NVIDIA-A10G"),
        (
            "INPUT_TOLERATIONS",
            "[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
        ),
        ("INPUT_RUNTIME-CLASS", "nvidia"),
    ]);
    let pod = built(&plan);
    assert!(!pod.to_string().contains("JITSECRET"));
    assert_eq!(pod["metadata"]["name"], plan.label.as_str());
    assert_eq!(pod["metadata"]["labels"][LABEL], plan.label.as_str());
    assert_eq!(pod["metadata"]["labels"][REPOSITORY], "octo.ml");
    assert_eq!(pod["metadata"]["labels"][RUN_ID], "42");
    assert_eq!(pod["metadata"]["labels"][MANAGED_BY.0], "gpu-runner");
    assert_eq!(
        pod["metadata"]["annotations"]["gpu-runner/repository"],
        "octo/ml"
    );
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], 360 * 60);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["runtimeClassName"], "nvidia");
    assert_eq!(
        spec["nodeSelector"]["nvidia.com/gpu.product"],
        "NVIDIA-A10G"
    );
    assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu");
    let c = &spec["containers"][0];
    assert_eq!(c["name"], CONTAINER);
    assert_eq!(c["image"], crate::inputs::spec::DEFAULT_POD_IMAGE);
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "4", "memory": "16Gi"})
    );
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    let env = c["env"].as_array().unwrap();
    let jit = env.iter().find(|e| e["name"] == "JIT_CONFIG").unwrap();
    assert_eq!(
        jit["valueFrom"]["secretKeyRef"],
        json!({"name": plan.label, "key": JIT_KEY})
    );
    let script = c["command"][2].as_str().unwrap();
    assert!(
        script.contains("refuse \"this machine takes only jobs of"),
        "the hook is in it"
    );
    assert!(!script.contains(HOOK_MARKER));
    // The manifest is a Pod the API types accept.
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod).unwrap();

    let package = RunnerPackage::new("https://x", "2.337.0", crate::boot::Arch::X64, "");
    let handoff = Handoff {
        runner: &plan.runners[0],
        jit_config: Secret::new("JITSECRET"),
        package: &package,
    };
    let s = secret(&plan, &handoff, "uid-1");
    assert_eq!(s["stringData"][JIT_KEY], "JITSECRET");
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(s["metadata"]["labels"][LABEL], plan.label.as_str());
}

#[test]
fn a_pod_template_adds_to_the_pod_but_cannot_change_how_gpu_runner_finds_and_ends_it() {
    let template = "metadata:\n  name: mine\n  labels: {team: ml, gpu-runner/label: other}\n\
        spec:\n  restartPolicy: Always\n  priorityClassName: ci\n  volumes: [{name: data, \
        emptyDir: {}}]\n  containers:\n  - name: runner\n    command: [sleep, inf]\n    \
        volumeMounts: [{name: data, mountPath: /data}]\n    resources: {limits: {memory: 32Gi}}\n\
        \x20 - name: sidecar\n    image: busybox\n";
    let plan = plan(&[("INPUT_POD-TEMPLATE", template)]);
    let pod = built(&plan);
    assert_eq!(pod["metadata"]["name"], plan.label.as_str());
    assert_eq!(pod["metadata"]["labels"]["team"], "ml");
    assert_eq!(pod["metadata"]["labels"][LABEL], plan.label.as_str());
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["priorityClassName"], "ci");
    assert_eq!(pod["spec"]["volumes"][0]["name"], "data");
    let runner = &pod["spec"]["containers"][0];
    assert_eq!(runner["command"][0], "/bin/bash");
    assert_eq!(runner["volumeMounts"][0]["mountPath"], "/data");
    assert_eq!(runner["resources"]["limits"]["memory"], "32Gi");
    assert_eq!(runner["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert!(
        runner["env"].as_array().unwrap().len() > 5,
        "its env is kept"
    );
    assert_eq!(pod["spec"]["containers"][1]["name"], "sidecar");
}

#[test]
fn a_repository_is_a_label_value_as_it_is_or_by_its_hash() {
    assert_eq!(repository_label("Octo/ML"), "octo.ml");
    assert_eq!(repository_label("octo/.github"), "octo..github");
    let long = format!("octo/{}", "x".repeat(70));
    let hashed = repository_label(&long);
    assert!(
        hashed.starts_with("sha256-") && hashed.len() == 39,
        "{hashed}"
    );
    assert_eq!(
        repository_label("octo/ends-"),
        repository_label("OCTO/ends-")
    );
    assert!(repository_label("octo/ends-").starts_with("sha256-"));
}

fn pod_with(status: Value) -> Value {
    json!({
        "metadata": {"name": "p", "creationTimestamp": "2026-12-03T10:00:00Z",
                     "annotations": {"gpu-runner/label": "gpu-runner-1-1-a", "other": "x"}},
        "spec": {"containers": [{"name": "runner", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]},
        "status": status,
    })
}

#[test]
fn a_pod_that_cannot_run_says_why_at_once_and_one_that_runs_is_ready() {
    let unschedulable_pod = pod_with(json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    }]}));
    assert_eq!(
        unschedulable(&unschedulable_pod),
        Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    );
    assert_eq!(unschedulable(&pod_with(json!({"phase": "Running"}))), None);

    let pulling = pod_with(json!({"phase": "Pending", "containerStatuses": [{
        "name": "runner", "image": "nope:1",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
    }]}));
    assert!(matches!(
        health(&pulling),
        Health::CannotRun { why, .. } if why.starts_with("cannot pull its image nope:1 (ImagePullBackOff)")
    ));
    let waiting_for_secret = pod_with(json!({"phase": "Pending", "containerStatuses": [{
        "name": "runner", "state": {"waiting": {"reason": "CreateContainerConfigError"}},
    }]}));
    assert_eq!(health(&waiting_for_secret), Health::Booting);
    assert_eq!(
        health(&pod_with(json!({"phase": "Running"}))),
        Health::Ready
    );

    let expired = pod_with(json!({"phase": "Failed", "reason": "DeadlineExceeded",
        "message": "Pod was active on the node longer than the specified deadline"}));
    let Health::CannotRun { why, fix, .. } = health(&expired) else {
        panic!("a failed pod is final")
    };
    assert!(why.contains("(Failed, DeadlineExceeded)"), "{why}");
    assert!(fix.contains("raise max-lifetime-minutes"), "{fix}");

    let failed = pod_with(json!({"phase": "Failed", "containerStatuses": [{
        "name": "runner", "state": {"terminated": {"exitCode": 1, "reason": "Error",
        "message": "gpu-runner: phase=gpu-probe status=failed reason=\"no driver\"\n"}},
    }]}));
    let Health::CannotRun { last_words, .. } = health(&failed) else {
        panic!("a failed pod is final")
    };
    assert_eq!(
        last_words,
        ["gpu-runner: phase=gpu-probe status=failed reason=\"no driver\""]
    );
}

#[test]
fn a_pod_read_back_is_a_machine_with_gpu_runners_tags() {
    let mut pod = pod_with(json!({"phase": "Succeeded"}));
    let m = machine(&pod);
    assert_eq!(m.id, "p");
    assert_eq!(m.label(), Some("gpu-runner-1-1-a"));
    assert_eq!(
        m.tags.len(),
        1,
        "only gpu-runner's annotations: {:?}",
        m.tags
    );
    assert_eq!(m.instance_type, "1 × nvidia.com/gpu");
    // A finished pod still exists, with its Secret: it is not ending until deleted.
    assert!(!m.state.is_ending());
    pod["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:05:00Z");
    assert_eq!(machine(&pod).state, State::ShuttingDown);
}

#[test]
fn the_entrypoint_is_the_script_gpu_runner_ships() {
    let script = entrypoint();
    assert!(script.starts_with("#!/bin/bash"));
    assert!(script.contains("ACTIONS_RUNNER_HOOK_JOB_STARTED"));
    assert!(script.contains("nvidia-smi --query-gpu=name,memory.total,driver_version"));
    assert!(!script.contains("# @GPU_PROBE@") && !script.contains(HOOK_MARKER));
    assert!(
        !script.contains(CONTAINER_HOOK_MARKER) && !script.contains(crate::boot::PHASE_LINE_MARKER)
    );
    assert!(script.contains("ACTIONS_RUNNER_CONTAINER_HOOKS"));
    // The hooks are written by here-documents that end at a line `HOOK`.
    assert!(!CONTAINER_HOOK.lines().any(|l| l == "HOOK"));
    crate::boot::assert_shellcheck_clean("entrypoint.sh", &script);
    // The container hook is a file of its own in the pod: checked on its own too.
    crate::boot::assert_shellcheck_clean("container-hook.sh", CONTAINER_HOOK);
    assert_eq!(
        last_lines("a\n\nb\nc\n", 2),
        ["b", "c"],
        "blank lines do not count"
    );
}

/// The container hook reads the runner's own input (actions/runner `HookInput.cs`, compact JSON
/// with camelCase keys) and refuses a job container, service containers and a Docker action,
/// each by name; the post-job cleanup_job has nothing to do.
#[test]
fn the_container_hook_names_what_it_refuses_and_cleans_up_quietly() {
    let run = |input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("bash")
            .args(["-c", CONTAINER_HOOK])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, said) = run(
        r#"{"command":"prepare_job","responseFile":"/w/_temp/_runner_hook_responses/1.json","args":{"container":{"image":"nvidia/cuda:12.4.1-runtime-ubuntu22.04","entryPointArgs":[],"environmentVariables":{}},"services":[{"image":"redis:7"}]},"state":null}"#,
    );
    assert_eq!(code, Some(1));
    assert!(
        said.contains("This job asks for the container nvidia/cuda:12.4.1-runtime-ubuntu22.04,"),
        "{said}"
    );
    let (code, said) = run(
        r#"{"command":"prepare_job","args":{"container":null,"services":[{"image":"redis:7"}]}}"#,
    );
    assert_eq!(code, Some(1));
    assert!(
        said.contains("service containers (services: redis:7"),
        "{said}"
    );
    let (code, said) = run(
        r#"{"command":"run_container_step","args":{"image":null,"dockerfile":"/w/_actions/o/a/v1/Dockerfile"}}"#,
    );
    assert_eq!(code, Some(1));
    assert!(
        said.contains("Docker container action (/w/_actions/o/a/v1/Dockerfile)"),
        "{said}"
    );
    assert_eq!(
        run(r#"{"command":"cleanup_job","args":{},"state":null}"#),
        (Some(0), String::new())
    );
}
