//! A node stand-in: what a kubelet does for the world's tests. It watches the pods the scheduler
//! bound to its node, runs each pod's first container command in the instance sandbox (an overlay
//! over `/`, its own PID and UTS namespaces, chroot) with the stand-in `nvidia-smi` showing the
//! node's GPUs, passes the container its environment (Secrets' keys resolved, as the kubelet
//! does), and reports the pod's phase and container state through the API, as a kubelet does:
//! a Secret that is not there yet keeps the container waiting (`CreateContainerConfigError`) until
//! it is; an image the world does not have ends in `ErrImagePull`; a pod past its
//! `activeDeadlineSeconds` is killed and fails with `DeadlineExceeded`; a container that fails
//! under `terminationMessagePolicy: FallbackToLogsOnError` gets its last log lines as its
//! termination message; a pod being deleted has its process killed and is then removed, as a
//! kubelet confirms a deletion. Its containers' logs are served for `pods/log`
//! ([`crate::kubelet_api`]).
//!
//! The world's images are all the runner image: the stand-in runner package unpacked in
//! `/home/runner`, as GitHub's `ghcr.io/actions/actions-runner` has the runner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::kubernetes::{Client, Cluster};

/// What the node stand-in was told and has seen.
pub struct Node {
    pub name: String,
    stop: Arc<AtomicBool>,
    /// The machine under the node is going away: see [`Node::shut_down`].
    shutting_down: Arc<AtomicBool>,
    /// What each pod's container printed, by `namespace/name`.
    pub logs: crate::kubelet_api::Logs,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The node's stand-ins, its `nvidia-smi` among them.
    bin: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Node {
    /// What the node's GPUs are doing from now on, as its `nvidia-smi`'s usage queries show it:
    /// `utilization` percent busy, `memory_used_mib` in use (see `World::set_gpu_load`). Not for
    /// a GKE node, whose `nvidia-smi` is in each pod's driver mount.
    pub fn set_gpu_load(&self, utilization: u32, memory_used_mib: u32) {
        let _ = std::fs::write(
            self.bin.join("gpu-load"),
            format!("{utilization} {memory_used_mib}\n"),
        );
    }

    /// The node's machine shuts down, as a spot or preemptible node does when its cloud takes it
    /// back: the kubelet's graceful node shutdown ends each running pod (SIGTERM, then the
    /// pod's grace), and reports it `Failed`, reason `Terminated`, "Pod was terminated in
    /// response to imminent node shutdown.", with the condition `DisruptionTarget`
    /// (`TerminationByKubelet`); then the kubelet is gone. Source: kubernetes
    /// `pkg/kubelet/nodeshutdown/nodeshutdown_manager.go`; Kubernetes docs, "Graceful node
    /// shutdown", "Pod disruption conditions".
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// What the pod's container printed so far.
    pub fn log(&self, namespace: &str, pod: &str) -> String {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&format!("{namespace}/{pod}"))
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }
}

struct Running {
    child: Child,
    output: Arc<Mutex<String>>,
    started: std::time::Instant,
}

/// Why a container cannot start yet, or at all.
enum NotStarted {
    /// The kubelet retries: `(reason, message)`.
    Waiting(String, String),
    Failed(String),
}

/// The kubelet's limits on a termination message taken from the log
/// (`kubecontainer.MaxContainerTerminationMessageLogLines` and `…LogLength`).
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

fn fallback_message(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let mut text = lines[lines.len().saturating_sub(FALLBACK_LINES)..].join("\n");
    if text.len() > FALLBACK_BYTES {
        let mut cut = text.len() - FALLBACK_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text[cut..].to_owned();
    }
    text
}

/// The node's view of one pass: the pods bound to it.
fn bound_pods(cluster: &Client, node: &str) -> Vec<Value> {
    cluster
        .get(&format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{node}"
        ))
        .ok()
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
}

fn key(pod: &Value) -> (String, String) {
    (
        pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The container's environment as the kubelet gives it: plain values, and Secrets' keys.
fn environment(
    cluster: &Client,
    namespace: &str,
    container: &Value,
) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default();
        if let Some(value) = var["value"].as_str() {
            env.push(format!("{name}={value}"));
        } else if var["valueFrom"].is_null() {
            // The API server drops an empty value; the kubelet sets the variable, empty.
            env.push(format!("{name}="));
        } else if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = secret
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let key = secret
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let found = cluster
                .get(&format!(
                    "/api/v1/namespaces/{namespace}/secrets/{secret_name}"
                ))
                .map_err(|_| format!("secret \"{secret_name}\" not found"))?;
            let encoded = found["data"][key].as_str().ok_or_else(|| {
                format!("couldn't find key {key} in Secret {namespace}/{secret_name}")
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| e.to_string())?;
            env.push(format!("{name}={}", String::from_utf8_lossy(&bytes)));
        }
    }
    Ok(env)
}

impl Cluster {
    /// The files at `path` (without the leading `/`) that any pod ever run on this cluster's
    /// nodes wrote on its disk.
    pub fn pod_files(&self, path: &str) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(nodes) = std::fs::read_dir(self.dir.path()) else {
            return found;
        };
        for node in nodes
            .flatten()
            .filter(|n| n.file_name().to_string_lossy().starts_with("node-"))
        {
            for pod in std::fs::read_dir(node.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(text) =
                    std::fs::read_to_string(crate::sandbox::disk_path(&pod.path(), path))
                {
                    found.push(text);
                }
            }
        }
        found
    }

    /// Starts the node stand-in of the registered node `name`, whose `nvidia-smi` shows `gpus`
    /// GPUs (none: no driver), and which has only the images in `images`.
    pub fn run_node(&self, name: &str, gpus: u32, images: &[&str]) -> Result<Node, String> {
        start_node(
            self,
            self.dir.path(),
            name,
            gpus,
            images,
            false,
            Driver::ContainerRuntime,
        )
    }

    /// A node stand-in with GKE's driver layout (see [`Driver::Gke`]).
    pub fn run_gke_node(&self, name: &str, gpus: u32, images: &[&str]) -> Result<Node, String> {
        start_node(
            self,
            self.dir.path(),
            name,
            gpus,
            images,
            false,
            Driver::Gke,
        )
    }

    /// A node stand-in whose image pulls never finish: its pods stay pending in
    /// `ContainerCreating`, and it still stops and removes the ones being deleted.
    pub fn run_slow_node(&self, name: &str, gpus: u32) -> Result<Node, String> {
        start_node(
            self,
            self.dir.path(),
            name,
            gpus,
            &[],
            true,
            Driver::ContainerRuntime,
        )
    }
}

/// Starts the node stand-in of the registered node `name` of the cluster `api` reaches, its
/// files under the cluster's folder `dir`: for [`Cluster::run_node`] and for nodes an
/// autoscaler adds from a thread of its own.
pub(crate) fn start_node(
    api: &Client,
    dir: &Path,
    name: &str,
    gpus: u32,
    images: &[&str],
    slow: bool,
    driver: Driver,
) -> Result<Node, String> {
    let root = dir.join(format!("node-{name}"));
    let bin = root.join("bin");
    let node_bin = bin.clone();
    crate::sandbox::install_standins(&bin).map_err(|e| e.to_string())?;
    if driver == Driver::Gke {
        // Not on the container's PATH: GKE mounts it under /usr/local/nvidia (start()).
        std::fs::remove_file(bin.join("nvidia-smi")).map_err(|e| e.to_string())?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let shutting_down = Arc::new(AtomicBool::new(false));
    let logs: crate::kubelet_api::Logs = Arc::default();
    let port = crate::kubelet_api::serve(&dir.join("certs"), logs.clone())?;
    // Where the API server finds this node's kubelet, as a kubelet reports it.
    let patched = api.call_merge_patch(
        &format!("/api/v1/nodes/{name}/status"),
        json!({"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        }}),
    )?;
    if patched != 200 {
        return Err(format!(
            "the node {name}'s kubelet endpoint: HTTP {patched}"
        ));
    }
    let images: Vec<String> = images.iter().map(|i| (*i).to_owned()).collect();
    let cluster = api.another();
    let node = name.to_owned();
    let (stop2, logs2, down) = (stop.clone(), logs.clone(), shutting_down.clone());
    let thread = std::thread::spawn(move || {
        let Ok(cluster) = cluster else { return };
        let mut running: HashMap<(String, String), Running> = HashMap::new();
        while !stop2.load(Ordering::SeqCst) {
            if down.load(Ordering::SeqCst) {
                shut_down(&cluster, &node, &mut running);
                return;
            }
            for pod in bound_pods(&cluster, &node) {
                let (ns, pod_name) = key(&pod);
                let id = (ns.clone(), pod_name.clone());
                let path = format!("/api/v1/namespaces/{ns}/pods/{pod_name}");
                if !pod["metadata"]["deletionTimestamp"].is_null() {
                    // The kubelet stops the containers, then confirms the deletion.
                    if let Some(mut r) = running.remove(&id) {
                        let grace = pod["metadata"]["deletionGracePeriodSeconds"]
                            .as_u64()
                            .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_u64())
                            .unwrap_or(30);
                        terminate(&mut r.child, grace);
                    }
                    let _ = cluster.call_as(
                        &cluster.admin_token,
                        "DELETE",
                        &path,
                        Some(json!({"gracePeriodSeconds": 0})),
                    );
                    continue;
                }
                let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
                if matches!(phase, "Succeeded" | "Failed") {
                    continue;
                }
                let container = &pod["spec"]["containers"][0];
                let container_name = container["name"].as_str().unwrap_or("main");
                let image = container["image"].as_str().unwrap_or_default();
                if let Some(r) = running.get_mut(&id) {
                    let deadline = pod["spec"]["activeDeadlineSeconds"].as_u64();
                    if deadline.is_some_and(|d| r.started.elapsed() > Duration::from_secs(d)) {
                        let _ = r.child.kill();
                        let _ = r.child.wait();
                        let _ = cluster.status(&path, json!({
                                "phase": "Failed", "reason": "DeadlineExceeded",
                                "message": "Pod was active on the node longer than the specified deadline",
                                "containerStatuses": [{
                                    "name": container_name, "image": image, "imageID": image,
                                    "ready": false, "restartCount": 0,
                                    "state": {"terminated": {
                                        "exitCode": 137, "reason": "Error", "finishedAt": now(),
                                    }},
                                }],
                            }));
                        running.remove(&id);
                        continue;
                    }
                    if let Ok(Some(status)) = r.child.try_wait() {
                        // The pipes may hold the last lines still.
                        std::thread::sleep(Duration::from_millis(100));
                        let output = r.output.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let code = status.code().unwrap_or(137);
                        let phase = if code == 0 { "Succeeded" } else { "Failed" };
                        let mut terminated = json!({
                            "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                            "finishedAt": now(),
                        });
                        if code != 0
                            && container["terminationMessagePolicy"] == "FallbackToLogsOnError"
                        {
                            terminated["message"] = json!(fallback_message(&output));
                        }
                        let _ = cluster.status(
                            &path,
                            json!({
                                "phase": phase,
                                "containerStatuses": [{
                                    "name": container_name, "image": image, "imageID": image,
                                    "ready": false, "restartCount": 0,
                                    "state": {"terminated": terminated},
                                }],
                            }),
                        );
                        running.remove(&id);
                    }
                    continue;
                }
                if slow {
                    let _ = cluster.status(
                        &path,
                        json!({
                            "phase": "Pending",
                            "containerStatuses": [{
                                "name": container_name, "image": image, "imageID": "",
                                "ready": false, "restartCount": 0,
                                "state": {"waiting": {"reason": "ContainerCreating"}},
                            }],
                        }),
                    );
                    continue;
                }
                if !images.iter().any(|i| i == image) {
                    let _ = cluster.status(&path, json!({
                            "phase": "Pending",
                            "containerStatuses": [{
                                "name": container_name, "image": image, "imageID": "",
                                "ready": false, "restartCount": 0,
                                "state": {"waiting": {
                                    "reason": "ErrImagePull",
                                    "message": format!("failed to pull and unpack image \"{image}\": not found"),
                                }},
                            }],
                        }));
                    continue;
                }
                match start(&cluster, &root, &bin, gpus, driver, &ns, &pod) {
                    Ok(r) => {
                        let _ = cluster.status(
                            &path,
                            json!({
                                "phase": "Running", "startTime": now(),
                                "containerStatuses": [{
                                    "name": container_name, "image": image, "imageID": image,
                                    "ready": true, "restartCount": 0, "started": true,
                                    "state": {"running": {"startedAt": now()}},
                                }],
                            }),
                        );
                        // Its log is readable (pods/log) from now on, as it grows.
                        logs2
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(format!("{ns}/{pod_name}"), r.output.clone());
                        running.insert(id, r);
                    }
                    Err(NotStarted::Waiting(reason, message)) => {
                        let _ = cluster.status(
                            &path,
                            json!({
                                "phase": "Pending",
                                "containerStatuses": [{
                                    "name": container_name, "image": image, "imageID": "",
                                    "ready": false, "restartCount": 0,
                                    "state": {"waiting": {"reason": reason, "message": message}},
                                }],
                            }),
                        );
                    }
                    Err(NotStarted::Failed(why)) => {
                        let _ = cluster.status(
                            &path,
                            json!({
                                "phase": "Failed",
                                "message": why,
                            }),
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for (_, mut r) in running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    });
    Ok(Node {
        name: name.to_owned(),
        stop,
        shutting_down,
        logs,
        thread: Some(thread),
        bin: node_bin,
    })
}

impl Client {
    /// Sets a pod's status, as its kubelet reports it.
    fn status(&self, path: &str, status: Value) -> Result<(), String> {
        match self.call_merge_patch(&format!("{path}/status"), json!({"status": status}))? {
            200 => Ok(()),
            other => Err(format!("PATCH {path}/status: {other}")),
        }
    }
}

/// Unpacks the world's runner image on the pod's disk: the runner in `/home/runner`.
fn install_image(home: &Path) -> Result<(), String> {
    let dir = crate::sandbox::disk_path(home, "home/runner");
    if dir.join("run.sh").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let package = crate::package::build();
    let gz = flate2::read::GzDecoder::new(&package.bytes[..]);
    tar::Archive::new(gz)
        .unpack(&dir)
        .map_err(|e| format!("unpacking the image: {e}"))
}

/// Stops a container as the kubelet does: SIGTERM to its PID 1, SIGKILL after the grace period
/// (kubelet `kuberuntime_container.go` `killContainer`; the runtime signals the container's init
/// from outside its PID namespace, where Linux delivers to an init only the signals it has a
/// handler for, SIGKILL aside: pid_namespaces(7)). The grace period runs on the world's clock.
/// The kubelet's graceful node shutdown (see [`Node::shut_down`]): every pod it runs ends, and
/// says why.
fn shut_down(cluster: &Client, node: &str, running: &mut HashMap<(String, String), Running>) {
    const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";
    for pod in bound_pods(cluster, node) {
        let (ns, name) = key(&pod);
        let Some(mut r) = running.remove(&(ns.clone(), name.clone())) else {
            continue;
        };
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        terminate(&mut r.child, grace);
        let mut conditions: Vec<Value> = pod["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.push(json!({
            "type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet",
            "message": MESSAGE, "lastTransitionTime": now(),
        }));
        let container = &pod["spec"]["containers"][0];
        let _ = cluster.status(
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            json!({
                "phase": "Failed", "reason": "Terminated", "message": MESSAGE,
                "conditions": conditions,
                "containerStatuses": [{
                    "name": container["name"], "image": container["image"],
                    "imageID": container["image"], "ready": false, "restartCount": 0,
                    "state": {"terminated": {
                        "exitCode": 143, "reason": "Error", "finishedAt": now(),
                    }},
                }],
            }),
        );
    }
}

fn terminate(child: &mut Child, grace_seconds: u64) {
    // `unshare --fork` is the child; the container's PID 1 is its own child.
    let init = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))
        .ok()
        .and_then(|c| c.split_whitespace().next().map(str::to_owned));
    if let Some(init) = init {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &init])
            .status();
        // Waiting runs on the world's clock, work at real speed: a runner's cancel (a few calls
        // to GitHub) takes real time here too, so the scaled grace is never shorter than that.
        let grace = Duration::from_secs(grace_seconds)
            .div_f64(crate::CLOCK_SCALE)
            .max(Duration::from_secs(grace_seconds.min(5)));
        let began = std::time::Instant::now();
        while began.elapsed() < grace {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What GitHub's runner image sets for every container (actions/runner `images/Dockerfile`:
/// `ENV RUNNER_MANUALLY_TRAP_SIG=1`, `ENV ACTIONS_RUNNER_PRINT_LOG_TO_STDOUT=1`, `ImageOS`,
/// `DEBIAN_FRONTEND`); the pod's own env wins, as the kubelet lets it.
const IMAGE_ENV: &[&str] = &[
    "DEBIAN_FRONTEND=noninteractive",
    "RUNNER_MANUALLY_TRAP_SIG=1",
    "ACTIONS_RUNNER_PRINT_LOG_TO_STDOUT=1",
    "ImageOS=ubuntu24",
];

/// How a node gives its GPU driver to containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The NVIDIA container runtime (EKS's GPU AMIs, the GPU operator): `nvidia-smi` and the
    /// driver's libraries land on the container's usual paths.
    ContainerRuntime,
    /// GKE: no NVIDIA runtime; its device plugin mounts the driver's tools at
    /// `/usr/local/nvidia/bin` and its libraries at `/usr/local/nvidia/lib64`, on neither PATH
    /// nor the loader's path of an image that does not add them (GoogleCloudPlatform/
    /// container-engine-accelerators, cmd/nvidia_gpu: `-container-path=/usr/local/nvidia`; GKE's
    /// "Run GPUs in Standard node pools": CUDA libraries in /usr/local/nvidia/lib64). nvidia-smi
    /// that cannot load NVML says so and exits 12, as its manual gives.
    Gke,
}

/// Runs the pod's first container command (and args) in a sandbox of its own.
fn start(
    cluster: &Client,
    node_dir: &Path,
    bin: &Path,
    gpus: u32,
    driver: Driver,
    namespace: &str,
    pod: &Value,
) -> Result<Running, NotStarted> {
    let container = &pod["spec"]["containers"][0];
    let argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(container["args"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    if argv.is_empty() {
        return Err(NotStarted::Failed(
            "the world's images have no entrypoint: give the container a command".into(),
        ));
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or("pod");
    let home: PathBuf = node_dir.join(format!("{namespace}-{name}"));
    let own = environment(cluster, namespace, container)
        .map_err(|why| NotStarted::Waiting("CreateContainerConfigError".into(), why))?;
    let mut env: Vec<String> = IMAGE_ENV
        .iter()
        .filter(|v| {
            let name = v.split('=').next().unwrap_or_default();
            !own.iter().any(|o| o.split('=').next() == Some(name))
        })
        .map(|v| (*v).to_owned())
        .collect();
    env.extend(own);
    install_image(&home).map_err(NotStarted::Failed)?;
    if driver == Driver::Gke {
        let tools = crate::sandbox::disk_path(&home, "usr/local/nvidia/bin");
        let libraries = crate::sandbox::disk_path(&home, "usr/local/nvidia/lib64");
        let mounted = std::fs::create_dir_all(&tools)
            .and_then(|()| std::fs::create_dir_all(&libraries))
            .and_then(|()| std::fs::write(libraries.join("libnvidia-ml.so.1"), ""))
            .and_then(|()| {
                std::fs::write(
                    tools.join("nvidia-smi"),
                    include_str!("standins/nvidia-smi"),
                )
            })
            .and_then(|()| {
                std::fs::set_permissions(
                    tools.join("nvidia-smi"),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
            });
        mounted.map_err(|e| NotStarted::Failed(format!("the GKE driver mount: {e}")))?;
        env.push("GPU_SIM_NVML_DIR=/usr/local/nvidia/lib64".into());
    }
    env.push("HOME=/root".into());
    env.push(format!(
        "GPU_SIM_NVIDIA={}",
        if gpus > 0 { "healthy" } else { "no-driver" }
    ));
    env.push(format!("GPU_SIM_GPUS={gpus}"));
    // The stand-in `sleep` runs at the world's clock.
    env.push(format!("GPU_SIM_CLOCK_SCALE={}", crate::CLOCK_SCALE));
    let mut child = crate::sandbox::spawn(&home, name, bin, &env, &argv)
        .map_err(|e| NotStarted::Failed(e.to_string()))?;
    let output = crate::sandbox::collect(&mut child);
    Ok(Running {
        child,
        output,
        started: std::time::Instant::now(),
    })
}
