//! Kubernetes GPU pods: `machine: kubernetes` creates one pod per runner on the user's cluster
//! (its configuration in a Secret the pod owns), waits until it is scheduled, running and its
//! runner online, and stop deletes both. The world is a real kube-apiserver and kube-scheduler
//! with RBAC, and node stand-ins that run the pods in the instance sandbox; gpu-runner runs with
//! a ServiceAccount token bound to exactly the README's Role.

use std::time::Duration;

use serde_json::Value;
use world::kubernetes::{Cluster, NAMESPACE, NodeSpec};
use world::{Options, World};

use crate::support::{Outcome, Step};

/// The world's runner image (any image the node stand-in has is one).
const IMAGE: &str = "ghcr.io/actions/actions-runner:2.337.0@sha256:e5496277be5d09bc968b3d64911b74e219ac4a3f2edce956a3ecf9271bea1ef4";

struct Gpus {
    world: World,
    cluster: Cluster,
    kubeconfig: String,
    nodes: Vec<world::kubelet::Node>,
    _autoscaler: Option<world::autoscaler::Autoscaler>,
}

/// The local world and a cluster whose nodes are `(name, GPUs advertised, GPUs nvidia-smi
/// shows)`, with gpu-runner's Role applied. A node that shows `None` never finishes pulling an
/// image: its pods stay pending.
fn cluster(nodes: &[(&str, u32, Option<u32>)]) -> Gpus {
    let world = World::start(Options::default()).expect("the local world starts");
    let specs: Vec<NodeSpec> = nodes.iter().map(|(n, g, _)| NodeSpec::new(n, *g)).collect();
    let cluster = Cluster::start(&specs).expect("the world's Kubernetes control plane starts");
    let nodes = nodes
        .iter()
        .map(|(n, advertised, shown)| {
            match shown {
                Some(shown) => cluster.run_node(n, *shown, &[IMAGE]),
                None => cluster.run_slow_node(n, *advertised),
            }
            .expect("a node stand-in")
        })
        .collect();
    let kubeconfig = cluster
        .gpu_runner_kubeconfig()
        .expect("the README's Role applies");
    Gpus {
        world,
        cluster,
        kubeconfig,
        nodes,
        _autoscaler: None,
    }
}

/// A cluster with a CPU node only, and an autoscaler that adds GPU nodes of one GPU each, up to
/// `max`, each up `boots_in` (of the user's time) after the scale-up.
fn autoscaled(max: u32, boots_in: Duration) -> Gpus {
    let mut gpus = cluster(&[("cpu-node", 0, Some(0))]);
    let group = world::autoscaler::NodeGroup {
        name: "gpu-pool".into(),
        gpus: 1,
        max,
        boots_in,
        images: vec![IMAGE.to_owned()],
    };
    gpus._autoscaler = Some(
        gpus.cluster
            .autoscale(group, gpus.world.clock_scale)
            .expect("the autoscaler starts"),
    );
    gpus
}

fn gpu_cluster() -> Gpus {
    cluster(&[("gpu-node", 1, Some(1)), ("cpu-node", 0, Some(0))])
}

impl Gpus {
    /// A step of `mode` for a pod on this cluster: no AWS input at all.
    fn step(&self, mode: &str) -> world::step::Step {
        let mut step = Step::mode(mode).in_world(&self.world);
        for name in [
            "INPUT_ROLE-TO-ASSUME",
            "INPUT_AWS-REGION",
            "INPUT_RUNNER-VERSION",
            "INPUT_RUNNER-SHA256",
        ] {
            step = step.unset(name);
        }
        step.input("machine", "kubernetes")
            .input("kubeconfig", &self.kubeconfig)
    }

    fn start(&self) -> world::step::Step {
        self.step("start").input("startup-timeout-minutes", "30")
    }

    fn stop_after(&self, started: &Outcome) -> world::step::Step {
        self.step("stop").outputs_of(started)
    }

    fn pods(&self) -> Vec<String> {
        self.cluster.gpu_runner_objects("pods")
    }

    fn secrets(&self) -> Vec<String> {
        self.cluster.gpu_runner_objects("secrets")
    }

    /// The run is cancelled (its GPU job will not come) and stopped: nothing is left.
    #[track_caller]
    fn cancel_and_stop(&self, started: &Outcome) {
        self.world
            .github
            .lock()
            .unwrap()
            .cancel_run(self.world.run_id);
        self.stop_after(started).run().success();
        self.nothing_left();
    }

    /// No pod or Secret of gpu-runner in the namespace, no runner registered.
    #[track_caller]
    fn nothing_left(&self) {
        let gone = self
            .world
            .wait_until(Duration::from_secs(30), |_| self.pods().is_empty());
        assert!(gone, "pods left: {:?}", self.pods());
        assert_eq!(self.secrets(), Vec::<String>::new(), "secrets left");
        assert_eq!(
            self.world.registered_runners(),
            [],
            "runners still registered"
        );
    }

    /// A started pod whose runner took a job that runs until it is stopped; the job's id.
    #[track_caller]
    fn busy_pod(&self) -> (Outcome, u64) {
        let started = self.start().run();
        started.success();
        let label = started.outputs()["label"].clone();
        let job = self
            .world
            .queue_job(&[&label], "echo working; sleep 3600; echo never");
        let running = self.world.wait_until(Duration::from_secs(30), |w| {
            w.job(job).is_some_and(|j| j.status == "in_progress")
        });
        assert!(running, "the job never started");
        (started, job)
    }

    #[track_caller]
    fn finished(&self, job: u64) -> world::github::Job {
        let done = self.world.wait_until(Duration::from_secs(60), |w| {
            w.job(job).is_some_and(|j| j.status == "completed")
        });
        let job = self.world.job(job).expect("the job");
        assert!(done, "the job never finished: {job:?}");
        job
    }
}

#[track_caller]
fn error_says(outcome: &Outcome, words: &[&str]) {
    let errors = outcome.errors().join("\n");
    for w in words {
        assert!(
            errors.contains(w),
            "{w:?} not in:\n{}",
            outcome.everything()
        );
    }
}

#[test]
fn a_gpu_job_runs_in_its_pod_and_stop_leaves_no_pod_secret_or_runner() {
    let gpus = gpu_cluster();
    let started = gpus.start().run();
    let outputs = started.outputs();
    let label = outputs["label"].clone();
    started.success();
    assert_eq!(outputs["instance-ids"], format!("[\"{label}\"]"));
    assert_eq!(outputs["instance-id"], label);

    // The pod as created: on the GPU node, one GPU, never restarted, its lifetime its deadline,
    // no cluster credential for the job, and the runner's configuration only in its Secret.
    let pod: Value = gpus.cluster.pod(&label).expect("the pod");
    assert_eq!(pod["spec"]["nodeName"], "gpu-node");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["activeDeadlineSeconds"], 360 * 60);
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], IMAGE);
    assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
    assert_eq!(
        pod["metadata"]["labels"]["gpu-runner/label"],
        label.as_str()
    );
    assert_eq!(
        pod["metadata"]["labels"]["gpu-runner/repository"],
        "octo.ml"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["gpu-runner/repository"],
        "octo/ml"
    );
    let jit = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "JIT_CONFIG")
        .unwrap();
    assert_eq!(jit["valueFrom"]["secretKeyRef"]["name"], label.as_str());
    for secret in gpus.world.issued_secrets() {
        assert!(
            !pod.to_string().contains(&secret),
            "a secret in the pod spec"
        );
    }
    let secret = gpus
        .cluster
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/secrets/{label}"))
        .expect("the pod's Secret");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        pod["metadata"]["uid"]
    );
    for row in [
        "| Node | gpu-node |",
        "| GPUs asked for | 1 × nvidia.com/gpu |",
        "| Created → scheduled |",
        "| Scheduled → container running |",
        "| GPU | 1 × Tesla T4",
    ] {
        assert!(started.summary.contains(row), "{row}:\n{}", started.summary);
    }

    let job = gpus.world.queue_job(
        &[&label],
        "nvidia-smi --query-gpu=name --format=csv,noheader && echo \"in $(hostname)\" && \
         echo \"gpu=$GPU_RUNNER_GPU_NAME x$GPU_RUNNER_GPU_COUNT\"",
    );
    let job = gpus.finished(job);
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:?}");
    assert!(job.output.contains("Tesla T4"), "{}", job.output);
    assert!(
        job.output.contains(&format!("in {label}")),
        "{}",
        job.output
    );
    assert!(job.output.contains("gpu=Tesla T4 x1"), "{}", job.output);
    // The job's summary says what it used of the GPU: nothing, here.
    assert!(
        job.summary
            .contains("The GPU was idle for the whole job: did the job use it?"),
        "{}",
        job.summary
    );

    let stopped = gpus.stop_after(&started).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains(&format!("| {label} | pod | deleted, with its secret")),
        "{}",
        stopped.summary
    );
    gpus.nothing_left();
}

/// What the pod's job used of its GPU: the pod's own hooks sample it as an instance's do, the
/// job's summary gets the table, and stop's summary lists the pod with that use. A pod has no
/// price, so neither summary gives a cost and stop names no cheaper type.
#[test]
fn a_pods_job_says_what_it_used_of_the_gpu_and_stop_lists_the_pod_without_a_price() {
    let gpus = gpu_cluster();
    gpus.nodes[0].set_gpu_load(60, 6144);
    let started = gpus.start().run();
    started.success();
    let label = started.outputs()["label"].clone();
    let job = gpus.world.queue_job(&[&label], "sleep 90; echo trained");
    let job = gpus.finished(job);
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(
        job.summary
            .contains("| 0 | 60 % | 60 % | 6.0 of 15.0 GiB | 0 % of the job |")
            && job.summary.contains("Peak GPU memory 6.0 of 15.0 GiB")
            && !job.summary.contains("GPU time:"),
        "{}",
        job.summary
    );
    let stopped = gpus.stop_after(&started).run();
    stopped.success();
    let summary = &stopped.summary;
    assert!(
        summary.contains("#### What the run's GPU machines cost")
            && summary.contains("| 60 % peak, 60 % mean; 6.0 of 15.0 GiB |")
            && summary.contains("No total: gpu-runner knows no price for this machine")
            && !summary.contains("would have held it"),
        "{summary}"
    );
    gpus.nothing_left();
}

/// On GKE the driver is mounted at /usr/local/nvidia, on neither the runner image's PATH nor its
/// loader's path (the world's GKE node does what GKE's device plugin does): the pod's probe and
/// the job still find nvidia-smi and the driver's libraries.
#[test]
fn on_a_gke_node_the_probe_and_the_job_find_the_driver_under_usr_local_nvidia() {
    let world = World::start(Options::default()).expect("the local world starts");
    let cluster =
        Cluster::start(&[NodeSpec::new("gke-gpu", 1)]).expect("the world's control plane starts");
    let node = cluster
        .run_gke_node("gke-gpu", 1, &[IMAGE])
        .expect("a GKE node stand-in");
    let kubeconfig = cluster
        .gpu_runner_kubeconfig()
        .expect("the README's Role applies");
    let gpus = Gpus {
        world,
        cluster,
        kubeconfig,
        nodes: vec![node],
        _autoscaler: None,
    };
    let started = gpus.start().run();
    started.success();
    assert!(
        started.summary.contains("| GPU | 1 × Tesla T4"),
        "{}",
        started.summary
    );
    let label = started.outputs()["label"].clone();
    let job = gpus.world.queue_job(
        &[&label],
        "nvidia-smi --query-gpu=name --format=csv,noheader && echo \"libraries: $LD_LIBRARY_PATH\"",
    );
    let job = gpus.finished(job);
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{job:?}");
    assert!(job.output.contains("Tesla T4"), "{}", job.output);
    assert!(
        job.output.contains("/usr/local/nvidia/lib64"),
        "{}",
        job.output
    );
    gpus.stop_after(&started).run().success();
    gpus.nothing_left();
}

/// A stop while the pod's job runs: the kubelet sends the pod's PID 1 SIGTERM and kills it after
/// the grace period, as a real one does. The runner hears of it, cancels the job and reports it
/// cancelled, so GitHub does not wait for a lost runner, and the pod ends well within its grace.
#[test]
fn a_stop_during_the_pods_job_lets_the_runner_report_the_job_cancelled() {
    let gpus = gpu_cluster();
    let (started, job) = gpus.busy_pod();
    gpus.stop_after(&started).run().success();
    let job = gpus.finished(job);
    assert_eq!(
        job.conclusion.as_deref(),
        Some("cancelled"),
        "the runner reported the cancel: {job:?}"
    );
    assert!(!job.output.contains("never"), "{}", job.output);
    gpus.nothing_left();
}

/// The pod's node is a spot or preemptible machine, and its cloud takes it back while the job
/// runs: the kubelet's graceful node shutdown ends the pod with the condition DisruptionTarget
/// (TerminationByKubelet). Stop tells that from a job that failed, in its summary and a warning.
#[test]
fn a_pod_whose_node_shuts_down_during_the_job_is_said_interrupted_by_stop() {
    let gpus = gpu_cluster();
    let (started, job) = gpus.busy_pod();
    let pod = started.outputs()["instance-id"].clone();
    gpus.nodes[0].shut_down();
    let job = gpus.finished(job);
    assert_ne!(job.conclusion.as_deref(), Some("success"), "{job:?}");
    let ended = gpus
        .cluster
        .wait_for_pod(&pod, Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Failed"
        });
    assert!(ended.is_some_and(|p| p["status"]["phase"] == "Failed"));

    let stopped = gpus.stop_after(&started).run();
    stopped.success();
    let how = format!(
        "Kubernetes took the pod {pod} off its node (TerminationByKubelet: Pod was terminated in \
         response to imminent node shutdown.)"
    );
    assert!(
        stopped
            .summary
            .contains(&format!("{how}: the GPU job was interrupted, not failed.")),
        "{}",
        stopped.summary
    );
    assert!(
        stopped.stdout.lines().any(|l| l
            .starts_with("::warning title=A pod was taken off its node::")
            && l.contains(&how)),
        "{}",
        stopped.stdout
    );
    gpus.nothing_left();
}

/// A `container:` job handed a pod. GitHub's runner image has the docker CLI and no daemon, so
/// the runner's "Initialize containers" would fail on "Cannot connect to the Docker daemon"
/// (actions/runner `ContainerOperationProvider.cs`); the pod's container hook, which the runner
/// calls in place of Docker, refuses the job in words that name what works, before any step.
#[test]
fn a_container_job_in_a_pod_is_refused_in_words_that_name_what_works() {
    let gpus = gpu_cluster();
    let started = gpus.start().run();
    started.success();
    let label = started.outputs()["label"].clone();
    let image = "nvidia/cuda:12.4.1-runtime-ubuntu22.04";
    let job = gpus
        .world
        .queue_container_job(&[&label], image, "echo the step ran");
    let job = gpus.finished(job);
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{job:?}");
    for words in [
        "::error title=gpu-runner cannot start containers in a pod::",
        &format!("This job asks for the container {image}"),
        "set the start step's pod-image to an image with your CUDA stack",
        "machine: ec2",
        "troubleshooting.md#no-containers-in-a-kubernetes-pod",
    ] {
        assert!(job.output.contains(words), "{words}: {}", job.output);
    }
    assert!(!job.output.contains("the step ran"), "{}", job.output);
    assert!(
        !job.output.contains("Cannot connect to the Docker daemon"),
        "{}",
        job.output
    );
    gpus.stop_after(&started).run().success();
    gpus.nothing_left();
}

#[test]
fn a_cluster_without_a_free_gpu_or_an_autoscaler_fails_start_with_the_schedulers_reason() {
    let gpus = cluster(&[("cpu-1", 0, Some(0)), ("cpu-2", 0, Some(0))]);
    let started = gpus.start().run();
    started.failure();
    error_says(
        &started,
        &[
            "cannot be scheduled: 0/2 nodes are available: 2 Insufficient nvidia.com/gpu",
            "No node can take the pod now",
            "node-selector and tolerations",
        ],
    );
    gpus.nothing_left();
}

/// A cluster that adds GPU nodes on demand (cluster-autoscaler, Karpenter) has none until a pod
/// asks: the pod is Unschedulable until the node the autoscaler adds is up, four minutes on.
/// Start waits while the autoscaler says a node is coming, says so, and the runner comes online
/// on the new node.
#[test]
fn a_cluster_that_scales_gpu_nodes_from_zero_serves_the_job_on_the_node_it_adds() {
    let gpus = autoscaled(1, Duration::from_secs(4 * 60));
    let started = gpus.start().run();
    started.success();
    assert!(
        started.stdout.contains(
            "the cluster is adding a node for it: pod triggered scale-up: [{gpu-pool 0->1 (max: 1)}]"
        ),
        "{}",
        started.everything()
    );
    assert!(
        started.summary.contains("gpu-pool-1"),
        "{}",
        started.summary
    );
    gpus.stop_after(&started).run().success();
    gpus.nothing_left();
}

/// When the autoscaler says no node will come, start fails at once with its words; when one is
/// coming but not within node-wait-minutes, start fails then, and the pod goes.
#[test]
fn start_fails_at_once_when_the_autoscaler_will_add_no_node_and_at_node_wait_minutes_when_none_came()
 {
    let full = autoscaled(0, Duration::from_secs(60));
    let refused = full.start().run();
    refused.failure();
    error_says(
        &refused,
        &[
            "cannot be scheduled: 0/1 nodes are available",
            "cluster-autoscaler will add no node: pod didn't trigger scale-up: 1 max node group size reached",
        ],
    );
    full.nothing_left();

    let slow = autoscaled(1, Duration::from_secs(30 * 60));
    let waited = slow.start().input("node-wait-minutes", "3").run();
    waited.failure();
    error_says(
        &waited,
        &[
            "no node came within node-wait-minutes (3)",
            "pod triggered scale-up: [{gpu-pool 0->1 (max: 1)}]",
        ],
    );
    slow.nothing_left();
}

#[test]
fn a_pod_whose_gpu_probe_fails_ends_start_with_its_last_words() {
    // The node advertises a GPU its driver cannot show.
    let gpus = cluster(&[("broken-gpu", 1, Some(0))]);
    let started = gpus.start().run();
    started.failure();
    error_says(
        &started,
        &[
            "ended before its runner came online (Failed, Error, exit code 1)",
            "The pod's last words",
            "phase=gpu-probe status=failed",
            "NVIDIA driver and device plugin",
        ],
    );
    gpus.nothing_left();
}

#[test]
fn an_image_that_cannot_be_pulled_fails_start_with_the_kubelets_words() {
    let gpus = gpu_cluster();
    let started = gpus
        .start()
        .input("pod-image", "registry.example/nowhere:1")
        .run();
    started.failure();
    error_says(
        &started,
        &[
            "cannot pull its image registry.example/nowhere:1 (ErrImagePull)",
            "Check pod-image",
        ],
    );
    gpus.nothing_left();
}

#[test]
fn a_start_cancelled_while_its_pod_is_pending_deletes_the_pod_its_secret_and_the_runner() {
    // The GPU node's kubelet never starts the pod: it stays pending.
    let gpus = cluster(&[("slow-node", 1, None)]);
    let start = gpus.start().spawn();
    let pending = gpus.world.wait_until(Duration::from_secs(30), |_| {
        gpus.pods().len() == 1 && gpus.secrets().len() == 1
    });
    assert!(pending, "the pod never appeared");
    let pod = gpus.cluster.pod(&gpus.pods()[0]).expect("the pod");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    start.signal("INT");
    let cancelled = start.wait();
    cancelled.failure();
    error_says(&cancelled, &["cancelled"]);
    gpus.nothing_left();
}

#[test]
fn stop_with_only_the_label_finds_the_pod_by_its_labels() {
    let gpus = gpu_cluster();
    let started = gpus.start().run();
    started.success();
    let label = started.outputs()["label"].clone();
    // The start job's instance-ids output was lost: only the label reaches stop.
    let stopped = gpus.step("stop").input("label", &label).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains(&format!("| {label} | pod | deleted")),
        "{}",
        stopped.summary
    );
    gpus.nothing_left();
}

#[test]
fn cleanup_deletes_a_pod_whose_stop_never_ran_and_leaves_a_live_one() {
    let gpus = gpu_cluster();
    let left = gpus.start().run();
    left.success();
    let left_label = left.outputs()["label"].clone();
    let job = gpus.world.queue_job(&[&left_label], "true");
    gpus.finished(job);
    // Its runner took its one job and exited: the pod is done, and its GPU free again.
    let done = gpus
        .cluster
        .wait_for_pod(&left_label, Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .expect("the pod");
    assert_eq!(done["status"]["phase"], "Succeeded", "{done}");
    // Its workflow was cancelled before stop ran; hours later it is past its expires-at.
    let patched = gpus
        .cluster
        .call_merge_patch(
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{left_label}"),
            serde_json::json!({"metadata": {"annotations": {
                "gpu-runner/expires-at": "2026-01-01T00:00:00Z"
            }}}),
        )
        .unwrap();
    assert_eq!(patched, 200);
    // Another start's pod, waiting for its job: cleanup must leave it alone.
    let live = gpus.start().run();
    live.success();
    let live_label = live.outputs()["label"].clone();

    let cleaned = gpus.step("cleanup").run();
    cleaned.success();
    assert_eq!(
        gpus.pods(),
        std::slice::from_ref(&live_label),
        "{}",
        cleaned.summary
    );
    assert_eq!(gpus.secrets(), std::slice::from_ref(&live_label));
    gpus.stop_after(&live).run().success();
    assert!(
        cleaned
            .summary
            .contains(&format!("| delete pod | {left_label} | past its expires-at (2026-01-01T00:00:00Z) | deleted, with its secret")),
        "{}",
        cleaned.summary
    );
    assert!(
        cleaned
            .summary
            .contains("Looked at 2 live gpu-runner pod(s) of octo/ml in namespace gpu-ci"),
        "{}",
        cleaned.summary
    );
    gpus.nothing_left();
}

#[test]
fn the_readmes_role_is_enough_for_every_mode_and_holds_nothing_more() {
    let gpus = gpu_cluster();
    // A dry run asks the API server to authorize, admit and validate without creating.
    let dry = gpus.start().input("dry-run", "true").run();
    dry.success();
    assert!(
        dry.stdout
            .contains("The cluster accepted the pod and its secret"),
        "{}",
        dry.everything()
    );
    assert_eq!(
        gpus.pods(),
        Vec::<String>::new(),
        "a dry run creates nothing"
    );

    let started = gpus.start().run();
    started.success();
    let label = started.outputs()["label"].clone();
    let stopped = gpus.step("stop").input("label", &label).run();
    stopped.success();
    gpus.nothing_left();
    // A start that failed: its post step finds what it made by the label it saved.
    let failed = gpus
        .start()
        .input("pod-image", "registry.example/nowhere:1")
        .run();
    failed.failure();
    let post = gpus.step("start").state_of(&failed).post().run();
    post.success();
    let cleaned = gpus.step("cleanup").run();
    cleaned.success();
    gpus.nothing_left();
    for out in [&dry, &started, &stopped, &failed, &post, &cleaned] {
        assert!(
            !out.everything().contains("Forbidden"),
            "the Role refused something:\n{}",
            out.everything()
        );
    }
    assert!(!label.is_empty());

    // Its token reaches nothing else: not another namespace, not the nodes, not a Secret's value.
    let token = gpus.cluster.service_account_token("gpu-runner").unwrap();
    for path in [
        "/api/v1/namespaces/default/pods".to_owned(),
        "/api/v1/nodes".to_owned(),
        format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
        format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
    ] {
        let (status, answer) = gpus.cluster.call_as(&token, "GET", &path, None).unwrap();
        assert_eq!(status, 403, "{path}: {answer}");
    }
}

#[test]
fn a_kubeconfig_whose_token_the_cluster_refuses_fails_start_and_registers_nothing() {
    let gpus = gpu_cluster();
    let bad = gpus.cluster.kubeconfig("not-a-valid-token");
    let started = gpus.start().input("kubeconfig", &bad).run();
    started.failure();
    error_says(
        &started,
        &[
            "Unauthorized",
            "did not accept the credentials",
            "update the kubeconfig secret",
        ],
    );
    assert!(
        !started.stdout.contains("not-a-valid-token")
            || started.stdout.contains("::add-mask::not-a-valid-token")
    );
    gpus.nothing_left();
}

#[test]
fn a_pod_no_job_comes_to_ends_at_its_idle_timeout() {
    let gpus = gpu_cluster();
    let started = gpus.start().input("idle-timeout-minutes", "1").run();
    started.success();
    let label = started.outputs()["label"].clone();
    // A minute of the world's clock passes in a second.
    let ended = gpus
        .cluster
        .wait_for_pod(&label, Duration::from_secs(30), |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .expect("the pod");
    assert_eq!(ended["status"]["phase"], "Succeeded", "{ended}");
    let (status, log) = gpus
        .cluster
        .call_as(
            &gpus.cluster.admin_token,
            "GET",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{label}/log"),
            None,
        )
        .unwrap();
    assert_eq!(status, 200);
    let log = log.as_str().unwrap_or_default();
    assert!(
        log.contains("phase=idle status=timeout reason=\"no job started within 1 min\""),
        "{log}"
    );
    gpus.stop_after(&started).run().success();
    gpus.nothing_left();
}

#[test]
fn the_readme_gives_the_role_the_tests_apply() {
    let docs = crate::support::user_docs();
    assert!(
        docs.contains(&format!(
            "```yaml\n{}```",
            world::kubernetes::DOCUMENTED_ROLE
        )),
        "the docs' Role differs from docs/kubernetes/gpu-runner.yaml"
    );
}

#[test]
fn count_two_makes_two_pods_that_each_take_a_job_and_stop_deletes_both() {
    let gpus = cluster(&[("gpu-node", 2, Some(2))]);
    let started = gpus.start().input("count", "2").run();
    started.success();
    let label = started.outputs()["label"].clone();
    // In the order they were created: both at once.
    let mut names: Vec<String> = serde_json::from_str(&started.outputs()["instance-ids"]).unwrap();
    names.sort();
    assert_eq!(names, [format!("{label}-1"), format!("{label}-2")]);
    let mut pods = gpus.pods();
    pods.sort();
    assert_eq!(pods, names);
    let jobs: Vec<u64> = (0..2)
        .map(|_| gpus.world.queue_job(&[&label], "echo \"host=$(hostname)\""))
        .collect();
    let mut hosts: Vec<String> = jobs
        .into_iter()
        .map(|j| {
            gpus.finished(j)
                .output
                .lines()
                .find_map(|l| l.strip_prefix("host="))
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    hosts.sort();
    assert_eq!(hosts, names, "one job in each pod");
    gpus.stop_after(&started).run().success();
    gpus.nothing_left();
}

#[test]
fn another_repositorys_pod_in_the_same_namespace_is_never_touched() {
    let gpus = gpu_cluster();
    // Another repository's start made this pod in the shared namespace: its labels name it.
    let theirs = "gpu-runner-77-1-theirs00";
    gpus.cluster
        .create(
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": theirs,
                    "labels": {"app.kubernetes.io/managed-by": "gpu-runner",
                               "gpu-runner/label": theirs, "gpu-runner/run-id": "77",
                               "gpu-runner/repository": "octo.other"},
                    "annotations": {"gpu-runner/label": theirs,
                                    "gpu-runner/repository": "octo/other",
                                    "gpu-runner/expires-at": "2026-01-01T00:00:00Z"}},
                "spec": {"restartPolicy": "Never", "nodeSelector": {"none": "none"},
                         "containers": [{"name": "runner", "image": IMAGE}]},
            }),
        )
        .unwrap();
    let cleaned = gpus.step("cleanup").run();
    cleaned.success();
    let stopped = gpus.step("stop").input("label", theirs).run();
    stopped.success();
    let by_name = gpus
        .step("stop")
        .input("instance-ids", &format!("[\"{theirs}\"]"))
        .run();
    by_name.success();
    assert_eq!(gpus.pods(), [theirs], "{}", by_name.everything());
}

#[test]
fn an_eks_cluster_is_reached_with_the_roles_oidc_credentials_and_no_kubeconfig() {
    let world = World::start(Options::default()).expect("the local world starts");
    let cluster = world
        .eks_cluster(
            "gpu-ci",
            &[NodeSpec::new("gpu-node", 1)],
            &["gpu-runner-octo-ml"],
        )
        .expect("the world's EKS cluster");
    let _node = cluster.run_node("gpu-node", 1, &[IMAGE]).expect("a node");
    // The Role as documented; the access entry's group is bound by its RoleBinding.
    cluster
        .gpu_runner_kubeconfig()
        .expect("the README's Role applies");
    let step = |mode: &str| {
        Step::mode(mode)
            .in_world(&world)
            .unset("INPUT_RUNNER-VERSION")
            .unset("INPUT_RUNNER-SHA256")
            .input("machine", "kubernetes")
            .input("eks-cluster", "gpu-ci")
            .input("namespace", NAMESPACE)
    };
    let started = step("start").input("startup-timeout-minutes", "30").run();
    started.success();
    assert!(
        started
            .stdout
            .contains("Cluster            the EKS cluster gpu-ci in us-east-1, namespace gpu-ci"),
        "{}",
        started.stdout
    );
    let label = started.outputs()["label"].clone();
    let pod = cluster.pod(&label).expect("the pod");
    assert_eq!(pod["spec"]["nodeName"], "gpu-node");
    let job = world.queue_job(
        &[&label],
        "nvidia-smi --query-gpu=name --format=csv,noheader",
    );
    let done = world.wait_until(Duration::from_secs(60), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(done, "the job never finished");
    assert_eq!(
        world.job(job).unwrap().conclusion.as_deref(),
        Some("success")
    );
    // The EKS token is a credential: masked before it is used, never printed.
    for line in started.stdout.lines() {
        assert!(
            !line.contains("k8s-aws-v1.") || line.starts_with("::add-mask::"),
            "{line}"
        );
    }
    step("stop").outputs_of(&started).run().success();
    let gone = world.wait_until(Duration::from_secs(30), |_| {
        cluster.gpu_runner_objects("pods").is_empty()
    });
    assert!(gone, "pods left: {:?}", cluster.gpu_runner_objects("pods"));
    assert_eq!(cluster.gpu_runner_objects("secrets"), Vec::<String>::new());
    assert_eq!(world.registered_runners(), []);

    // A cluster the role has no access entry in: the API server refuses its token.
    let stranger = step("start").input("eks-cluster", "other").run();
    stranger.failure();
    error_says(
        &stranger,
        &[
            "AccessDeniedException",
            "eks:DescribeCluster on resource: arn:aws:eks:us-east-1:",
            "docs/iam/eks-policy.json",
        ],
    );
    assert_eq!(world.registered_runners(), []);
}

/// A stranger's job handed the pod's runner (GitHub routes `runs-on: self-hosted` to it) runs none
/// of its steps, not even its `if: always()` and `if: failure()` ones: the hook ends the job's
/// worker before it returns. The pod ends, and stop leaves nothing.
#[test]
fn a_strangers_job_handed_a_pod_runs_no_step_not_even_an_always_step() {
    let gpus = gpu_cluster();
    let stranger = gpus.world.queue_hostile_job_of_run(
        gpus.world.run_id + 1,
        "octo/ml",
        "refs/pull/7/merge",
        &["self-hosted"],
    );
    let started = gpus.start().run();
    let job = gpus.finished(stranger);
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{}", job.output);
    assert!(
        job.output.contains(
            "::error title=gpu-runner refused this job::this machine takes only jobs of octo/ml"
        ) && !job.output.contains("CANARY"),
        "{}",
        job.output
    );
    for canary in world::CANARIES {
        assert_eq!(
            gpus.cluster.pod_files(canary),
            Vec::<String>::new(),
            "{canary}"
        );
    }
    gpus.cancel_and_stop(&started);
}

/// The documented namespace enforces Pod Security admission's baseline: gpu-runner's pod passes
/// it, and a pod-template that asks for the host's network is refused by the cluster before
/// anything is registered, in the cluster's words.
#[test]
fn the_documented_namespace_refuses_a_pod_template_on_the_hosts_network_and_admits_gpu_runners_pod()
{
    let gpus = gpu_cluster();
    let ns = gpus
        .cluster
        .get(&format!("/api/v1/namespaces/{NAMESPACE}"))
        .expect("the namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "baseline"
    );
    let refused = gpus
        .start()
        .input("pod-template", "spec:\n  hostNetwork: true\n")
        .run();
    refused.failure();
    error_says(
        &refused,
        &["violates PodSecurity \"baseline:latest\"", "hostNetwork"],
    );
    assert_eq!(gpus.world.registered_runners(), []);
    gpus.nothing_left();

    let started = gpus.start().run();
    started.success();
    gpus.cancel_and_stop(&started);
}
