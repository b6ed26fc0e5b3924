//! The world's Kubernetes control plane itself (what the Kubernetes provider will stand on): a
//! real kube-apiserver with RBAC and a real kube-scheduler, built from the Kubernetes Go modules,
//! placing GPU pods by the nodes' `nvidia.com/gpu` capacity and saying why when it cannot.

use std::time::Duration;

use serde_json::{Value, json};
use world::kubernetes::{Cluster, NAMESPACE, NodeSpec};

fn pod(name: &str, gpus: u32) -> Value {
    let mut container =
        json!({"name": "runner", "image": "registry.example/runner:1", "command": ["nvidia-smi"]});
    if gpus > 0 {
        container["resources"] = json!({"limits": {"nvidia.com/gpu": gpus.to_string()}});
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false, "containers": [container]},
    })
}

fn scheduled(pod: &Value) -> Option<&str> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .map(|c| c["status"].as_str().unwrap_or_default())
}

#[test]
fn the_scheduler_puts_a_gpu_pod_on_the_gpu_node_and_says_why_a_second_one_cannot_run() {
    let cluster = Cluster::start(&[NodeSpec::new("gpu-node", 1), NodeSpec::new("cpu-node", 0)])
        .expect("the world's Kubernetes control plane starts");
    let version = cluster.get("/version").unwrap();
    assert_eq!(
        version["gitVersion"].as_str(),
        Some(world::kubernetes::version().as_str())
    );
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    cluster.create(&pods, pod("first", 1)).unwrap();
    let first = cluster
        .wait_for_pod("first", Duration::from_secs(30), |p| scheduled(p).is_some())
        .unwrap();
    assert_eq!(scheduled(&first), Some("True"), "{first}");
    assert_eq!(first["spec"]["nodeName"], "gpu-node");

    cluster.create(&pods, pod("second", 1)).unwrap();
    let second = cluster
        .wait_for_pod("second", Duration::from_secs(30), |p| {
            scheduled(p).is_some()
        })
        .unwrap();
    assert_eq!(scheduled(&second), Some("False"), "{second}");
    let why = second["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.starts_with("0/2 nodes are available:") && why.contains("Insufficient nvidia.com/gpu"),
        "{why}"
    );

    cluster.create(&pods, pod("cpu-only", 0)).unwrap();
    let cpu = cluster
        .wait_for_pod("cpu-only", Duration::from_secs(30), |p| {
            scheduled(p).is_some()
        })
        .unwrap();
    assert_eq!(scheduled(&cpu), Some("True"), "{cpu}");
}

/// The reasons of the events recorded on the pod `name`.
fn events_of(cluster: &Cluster, name: &str) -> Vec<(String, String, String)> {
    let list = cluster
        .get(&format!(
            "/api/v1/namespaces/{NAMESPACE}/events?fieldSelector=involvedObject.name%3D{name}"
        ))
        .unwrap();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["source"]["component"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_autoscaler_adds_a_gpu_node_for_a_pod_that_needs_one_and_says_why_when_it_will_not() {
    use world::autoscaler::NodeGroup;
    let cluster = Cluster::start(&[NodeSpec::new("cpu-node", 0)])
        .expect("the world's Kubernetes control plane starts");
    // A minute of the world's clock in a second: a scan every 1/6 s, a node up in 2 s.
    let _autoscaler = cluster
        .autoscale(
            NodeGroup {
                name: "gpu-pool".into(),
                gpus: 1,
                max: 1,
                boots_in: Duration::from_secs(120),
                images: vec![],
            },
            60.0,
        )
        .unwrap();
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    cluster.create(&pods, pod("first", 1)).unwrap();
    let first = cluster
        .wait_for_pod("first", Duration::from_secs(30), |p| {
            scheduled(p) == Some("True")
        })
        .unwrap();
    assert_eq!(first["spec"]["nodeName"], "gpu-pool-1", "{first}");
    let events = events_of(&cluster, "first");
    assert!(
        events
            .iter()
            .any(|(reason, by, message)| reason == "TriggeredScaleUp"
                && by == "cluster-autoscaler"
                && message == "pod triggered scale-up: [{gpu-pool 0->1 (max: 1)}]"),
        "{events:?}"
    );

    // The group is at its maximum, and no node of it has two GPUs.
    cluster.create(&pods, pod("second", 1)).unwrap();
    cluster.create(&pods, pod("big", 2)).unwrap();
    let said = |name: &str, words: &str| {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if events_of(&cluster, name)
                .iter()
                .any(|(reason, _, message)| {
                    reason == "NotTriggerScaleUp" && message.contains(words)
                })
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(said("second", "max node group size reached"));
    assert!(said("big", "Insufficient nvidia.com/gpu"));
}

#[test]
fn rbac_holds_a_service_account_to_its_roles_namespace_and_resources() {
    let cluster =
        Cluster::start(&[NodeSpec::new("gpu-node", 1)]).expect("the control plane starts");
    let ns = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}");
    cluster
        .create(
            &format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "gpu-runner"}}),
        )
        .unwrap();
    cluster
        .create(
            &format!("{ns}/roles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "gpu-runner"},
                   "rules": [{"apiGroups": [""], "resources": ["pods", "secrets"],
                              "verbs": ["create", "get", "list", "delete"]}]}),
        )
        .unwrap();
    cluster
        .create(
            &format!("{ns}/rolebindings"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "gpu-runner"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gpu-runner"},
                   "subjects": [{"kind": "ServiceAccount", "name": "gpu-runner", "namespace": NAMESPACE}]}),
        )
        .unwrap();
    let token = cluster.service_account_token("gpu-runner").unwrap();
    let (status, answer) = cluster
        .call_as(
            &token,
            "POST",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            Some(pod("allowed", 1)),
        )
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    for (method, path) in [
        ("GET", "/api/v1/namespaces/default/pods".to_owned()),
        ("GET", "/api/v1/nodes".to_owned()),
        ("GET", format!("/api/v1/namespaces/{NAMESPACE}/configmaps")),
    ] {
        let (status, answer) = cluster.call_as(&token, method, &path, None).unwrap();
        assert_eq!(status, 403, "{path}: {answer}");
    }
    let (status, _) = cluster
        .call_as("not-a-token", "GET", "/api/v1/nodes", None)
        .unwrap();
    assert_eq!(status, 401);
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

#[test]
fn the_node_stand_in_runs_a_bound_pods_command_with_its_secret_and_gpu_and_reports_how_it_ended() {
    let cluster =
        Cluster::start(&[NodeSpec::new("gpu-node", 1)]).expect("the control plane starts");
    let image = "world.example/runner:1";
    let node = cluster.run_node("gpu-node", 1, &[image]).unwrap();
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    cluster
        .create(
            &format!("/api/v1/namespaces/{NAMESPACE}/secrets"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "jit"},
                   "data": {"config": "czNjcmV0"}}),
        )
        .unwrap();
    let mut job = pod("job", 1);
    job["spec"]["containers"][0]["image"] = json!(image);
    job["spec"]["containers"][0]["command"] = json!([
        "bash",
        "-c",
        "nvidia-smi --query-gpu=name --format=csv,noheader; test \"$RUNNER_CONFIG\" = s3cret && echo config-ok"
    ]);
    job["spec"]["containers"][0]["env"] = json!([
        {"name": "RUNNER_CONFIG", "valueFrom": {"secretKeyRef": {"name": "jit", "key": "config"}}}
    ]);
    cluster.create(&pods, job).unwrap();
    let done = cluster
        .wait_for_pod("job", Duration::from_secs(30), |p| phase(p) == "Succeeded")
        .unwrap();
    assert_eq!(phase(&done), "Succeeded", "{done}");
    let log = node.log(NAMESPACE, "job");
    assert!(
        log.contains("Tesla T4") && log.contains("config-ok"),
        "{log}"
    );
    // pods/log: the API server asks the node's kubelet endpoint for it.
    let (status, served) = cluster
        .call_as(
            &cluster.admin_token,
            "GET",
            &format!("{pods}/job/log?tailLines=1"),
            None,
        )
        .unwrap();
    assert_eq!((status, served), (200, json!("config-ok\n")));

    let mut missing = pod("missing-image", 0);
    missing["spec"]["containers"][0]["image"] = json!("world.example/nowhere:1");
    cluster.create(&pods, missing).unwrap();
    let waiting = cluster
        .wait_for_pod("missing-image", Duration::from_secs(30), |p| {
            !p["status"]["containerStatuses"][0]["state"]["waiting"].is_null()
        })
        .unwrap();
    assert_eq!(
        waiting["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull",
        "{waiting}"
    );

    let mut failing = pod("failing", 0);
    failing["spec"]["containers"][0]["image"] = json!(image);
    failing["spec"]["containers"][0]["command"] = json!(["bash", "-c", "exit 3"]);
    cluster.create(&pods, failing).unwrap();
    let failed = cluster
        .wait_for_pod("failing", Duration::from_secs(30), |p| phase(p) == "Failed")
        .unwrap();
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3,
        "{failed}"
    );

    let mut sleeper = pod("sleeper", 0);
    sleeper["spec"]["containers"][0]["image"] = json!(image);
    sleeper["spec"]["containers"][0]["command"] = json!(["/usr/bin/sleep", "3600"]);
    cluster.create(&pods, sleeper).unwrap();
    let running = cluster
        .wait_for_pod("sleeper", Duration::from_secs(30), |p| {
            phase(p) == "Running"
        })
        .unwrap();
    assert_eq!(phase(&running), "Running", "{running}");
    let (status, _) = cluster
        .call_as(
            &cluster.admin_token,
            "DELETE",
            &format!("{pods}/sleeper"),
            None,
        )
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        cluster.wait_pod_gone("sleeper", Duration::from_secs(30)),
        "the deleted pod stayed: {:?}",
        cluster.pod("sleeper")
    );
}
