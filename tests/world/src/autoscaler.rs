//! A cluster autoscaler for the world's cluster: what cluster-autoscaler does for a node group of
//! GPU nodes that scales from zero. Each scan (every ten seconds of the world's clock, its
//! `--scan-interval` default) it looks at the pods the scheduler marked `Unschedulable`; a pod
//! that a new node of the group would take triggers a scale-up, recorded on the pod as a
//! `TriggeredScaleUp` event ("pod triggered scale-up: [{GROUP 0->1 (max: N)}]"), and the node
//! registers, `Ready`, once the group's boot time has passed; a pod no node of the group could
//! take, or one that would need a node past the group's maximum, gets a `NotTriggerScaleUp`
//! event ("pod didn't trigger scale-up: …") and no node. A pod an upcoming node will take gets
//! no event of its own again. Source: kubernetes/autoscaler
//! `cluster-autoscaler/processors/status/eventing_scale_up_processor.go` (the events, their
//! reasons and messages, recorded by the component `cluster-autoscaler`),
//! `cluster-autoscaler/FAQ.md` (the scan interval; pods that fit upcoming nodes).
//!
//! Not modelled: scale-down, node groups of several shapes, the recorder's folding of a repeated
//! event into a count (the world records each verdict once), and Karpenter, whose `Nominated`
//! and `FailedScheduling` (component `karpenter`) events gpu-runner reads the same way.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::kubelet::{Driver, Node, start_node};
use crate::kubernetes::{Client, Cluster, NodeSpec};

/// cluster-autoscaler's default `--scan-interval`, on the world's clock.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(10);

/// The component cluster-autoscaler records its events as.
pub const COMPONENT: &str = "cluster-autoscaler";

/// A node group that scales from zero: nodes named `NAME-1`, `NAME-2`, … with `gpus` GPUs each,
/// at most `max` of them, each `Ready` `boots_in` (on the world's clock) after its scale-up.
#[derive(Debug, Clone)]
pub struct NodeGroup {
    pub name: String,
    pub gpus: u32,
    pub max: u32,
    pub boots_in: Duration,
    /// The images its nodes have.
    pub images: Vec<String>,
}

/// The autoscaler's thread; it stops when this is dropped, and the nodes it added with it.
pub struct Autoscaler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The nodes it added, by name, in order.
    pub added: Arc<Mutex<Vec<String>>>,
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node on its way: when it registers, and the GPUs not yet promised to a pod.
struct Upcoming {
    name: String,
    ready_at: Instant,
    free: u32,
}

impl Cluster {
    /// Runs an autoscaler of `group` on this cluster, on a clock `clock_scale` times as fast as
    /// the real one.
    pub fn autoscale(&self, group: NodeGroup, clock_scale: f64) -> Result<Autoscaler, String> {
        let api = self.client()?;
        let dir = self.dir.path().to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let added: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop2, added2) = (stop.clone(), added.clone());
        let thread = std::thread::spawn(move || {
            let mut scaler = Scaler {
                api,
                dir,
                group,
                scale: clock_scale,
                upcoming: Vec::new(),
                nodes: Vec::new(),
                seen: HashMap::new(),
                added: added2,
            };
            while !stop2.load(Ordering::SeqCst) {
                scaler.scan();
                std::thread::sleep(SCAN_INTERVAL.div_f64(clock_scale));
            }
        });
        Ok(Autoscaler {
            stop,
            thread: Some(thread),
            added,
        })
    }
}

struct Scaler {
    api: Client,
    dir: PathBuf,
    group: NodeGroup,
    scale: f64,
    upcoming: Vec<Upcoming>,
    nodes: Vec<Node>,
    /// The verdict recorded on each pod, by uid: a pod gets each verdict once.
    seen: HashMap<String, &'static str>,
    added: Arc<Mutex<Vec<String>>>,
}

impl Scaler {
    fn scan(&mut self) {
        self.register_ready();
        let Ok(pods) = self.api.get("/api/v1/pods") else {
            return;
        };
        for pod in pods["items"].as_array().into_iter().flatten() {
            if !unschedulable(pod) {
                continue;
            }
            let uid = pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let wants = gpus_of(pod);
            let verdict = if self.seen.get(&uid) == Some(&"TriggeredScaleUp") {
                // An upcoming node takes it: cluster-autoscaler leaves it out of its next scans.
                continue;
            } else if let Some(node) = self.upcoming.iter_mut().find(|n| n.free >= wants) {
                node.free -= wants;
                ("TriggeredScaleUp", self.scale_up_message())
            } else if wants > self.group.gpus {
                (
                    "NotTriggerScaleUp",
                    format!(
                        "pod didn't trigger scale-up: 1 Insufficient nvidia.com/gpu (the group \
                         {}'s nodes have {})",
                        self.group.name, self.group.gpus
                    ),
                )
            } else if self.count() >= self.group.max {
                (
                    "NotTriggerScaleUp",
                    "pod didn't trigger scale-up: 1 max node group size reached".to_owned(),
                )
            } else {
                let n = self.count() + 1;
                self.upcoming.push(Upcoming {
                    name: format!("{}-{n}", self.group.name),
                    ready_at: Instant::now() + self.group.boots_in.div_f64(self.scale),
                    free: self.group.gpus - wants,
                });
                ("TriggeredScaleUp", self.scale_up_message())
            };
            if self.seen.get(&uid) == Some(&verdict.0) {
                continue;
            }
            if self.record(pod, verdict.0, &verdict.1).is_ok() {
                self.seen.insert(uid, verdict.0);
            }
        }
    }

    /// The group's nodes, registered or on their way.
    fn count(&self) -> u32 {
        (self.nodes.len() + self.upcoming.len()) as u32
    }

    /// cluster-autoscaler prints its `ScaleUpInfo`s with `%v`: `[{GROUP FROM->TO (max: MAX)}]`.
    fn scale_up_message(&self) -> String {
        let now = self.nodes.len();
        format!(
            "pod triggered scale-up: [{{{} {now}->{} (max: {})}}]",
            self.group.name,
            self.count(),
            self.group.max
        )
    }

    /// Registers the upcoming nodes whose boot is over and starts their kubelets.
    fn register_ready(&mut self) {
        let now = Instant::now();
        let (ready, waiting): (Vec<Upcoming>, Vec<Upcoming>) = std::mem::take(&mut self.upcoming)
            .into_iter()
            .partition(|n| now >= n.ready_at);
        self.upcoming = waiting;
        for node in ready {
            let spec = NodeSpec::new(&node.name, self.group.gpus);
            let images: Vec<&str> = self.group.images.iter().map(String::as_str).collect();
            let started = self.api.register(&spec).and_then(|()| {
                start_node(
                    &self.api,
                    &self.dir,
                    &node.name,
                    self.group.gpus,
                    &images,
                    false,
                    Driver::ContainerRuntime,
                )
            });
            match started {
                Ok(kubelet) => {
                    self.nodes.push(kubelet);
                    self.added
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(node.name);
                }
                Err(why) => eprintln!("the world's autoscaler could not add {}: {why}", node.name),
            }
        }
    }

    /// Records an event on the pod as cluster-autoscaler's recorder does (a core/v1 Event).
    fn record(&self, pod: &Value, reason: &str, message: &str) -> Result<Value, String> {
        let meta = &pod["metadata"];
        let ns = meta["namespace"].as_str().unwrap_or("default");
        let name = meta["name"].as_str().unwrap_or_default();
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        self.api.create(
            &format!("/api/v1/namespaces/{ns}/events"),
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{name}.{stamp:x}"), "namespace": ns},
                "involvedObject": {
                    "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                    "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
                },
                "reason": reason, "message": message, "type": "Normal",
                "source": {"component": COMPONENT},
                "reportingComponent": COMPONENT, "reportingInstance": "",
                "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            }),
        )
    }
}

/// Whether the scheduler found no node for the pod (`PodScheduled` is `False`, `Unschedulable`).
fn unschedulable(pod: &Value) -> bool {
    pod["spec"]["nodeName"].is_null()
        && pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
            })
}

/// The `nvidia.com/gpu` the pod's containers ask for.
fn gpus_of(pod: &Value) -> u32 {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            c["resources"]["limits"]["nvidia.com/gpu"]
                .as_str()
                .and_then(|g| g.parse::<u32>().ok())
        })
        .sum()
}
