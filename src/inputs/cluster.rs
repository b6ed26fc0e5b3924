//! The inputs of `machine: kubernetes`: how to reach the cluster (every mode), and what the GPU
//! pod asks it for (start).

use std::collections::BTreeMap;

use super::{ClusterAccess, ClusterInputs, PodInputs, Problem, Reader, spec, values};
use crate::secret::Secret;

/// Inputs only an EC2 instance reads, which a pod has no use for.
const EC2_ONLY: &[&spec::Spec] = &[
    &spec::INSTANCE_TYPES,
    &spec::IMAGE_ID,
    &spec::SUBNET_IDS,
    &spec::MARKET_TYPE,
    &spec::SPOT_BREAKER_INTERRUPTIONS,
    &spec::SPOT_BREAKER_WINDOW_MINUTES,
    &spec::SPOT_BREAKER_MINUTES,
    &spec::SECURITY_GROUP_IDS,
    &spec::IAM_INSTANCE_PROFILE,
    &spec::JIT_HANDOFF,
    &spec::ROOT_VOLUME_SIZE,
    &spec::TAGS,
    &spec::RUNNER_USER,
    &spec::RUNNER_SUDO,
    &spec::RUNNER_VERSION,
    &spec::RUNNER_SHA256,
];

/// Inputs only a pod reads.
const POD_ONLY: &[&spec::Spec] = &[
    &spec::KUBECONFIG,
    &spec::EKS_CLUSTER,
    &spec::NAMESPACE,
    &spec::GPU_COUNT,
    &spec::GPU_RESOURCE,
    &spec::NODE_SELECTOR,
    &spec::TOLERATIONS,
    &spec::POD_TEMPLATE,
    &spec::RUNTIME_CLASS,
    &spec::POD_IMAGE,
    &spec::CPU_REQUEST,
    &spec::MEMORY_REQUEST,
    &spec::NODE_WAIT_MINUTES,
];

impl Reader<'_> {
    /// `kubeconfig` or `eks-cluster` (one of them), and `namespace`.
    pub(super) fn cluster(&mut self) -> Option<ClusterInputs> {
        let namespace = self.one(&spec::NAMESPACE, values::namespace);
        let eks = self.one(&spec::EKS_CLUSTER, values::eks_cluster);
        if self.raw(&spec::EKS_CLUSTER).is_some() && eks.is_none() {
            return None;
        }
        let text = self.raw(&spec::KUBECONFIG);
        let text = match (text, eks) {
            (Some(_), Some(name)) => {
                self.fail(
                    &spec::EKS_CLUSTER,
                    Some(&name),
                    Problem::Conflict {
                        other: spec::KUBECONFIG.name,
                        fix: "Use either kubeconfig (any cluster) or eks-cluster (an EKS cluster, \
                              reached with the role the job's OIDC token assumes), not both.",
                    },
                );
                return None;
            }
            (None, Some(name)) => {
                let region = self.required_region("the EKS cluster is in")?;
                return Some(ClusterInputs {
                    access: ClusterAccess::Eks { name, region },
                    namespace: namespace.unwrap_or_else(|| "default".to_owned()),
                });
            }
            (Some(text), None) => text,
            (None, None) => {
                self.missing(
                    &spec::KUBECONFIG,
                    "With machine: kubernetes, say how to reach the cluster: kubeconfig: \
                     ${{ secrets.KUBECONFIG }} (a kubeconfig whose user is bound to gpu-runner's \
                     Role in the namespace), or eks-cluster: NAME with role-to-assume (an EKS \
                     cluster, no stored secret). See docs/kubernetes.md."
                        .to_owned(),
                );
                return None;
            }
        };
        let context_namespace = match kubeconfig_namespace(&text) {
            Ok(ns) => ns,
            Err(why) => {
                self.fail(
                    &spec::KUBECONFIG,
                    None,
                    Problem::Invalid {
                        entry: None,
                        expected: format!("a kubeconfig ({why})"),
                        fix: "Store the whole kubeconfig file in a secret (gh secret set \
                              KUBECONFIG < gpu-ci.kubeconfig) and pass it as \
                              kubeconfig: ${{ secrets.KUBECONFIG }}; its current-context is used."
                            .to_owned(),
                    },
                );
                return None;
            }
        };
        Some(ClusterInputs {
            access: ClusterAccess::Kubeconfig(Secret::new(text)),
            namespace: namespace
                .or(context_namespace)
                .unwrap_or_else(|| "default".to_owned()),
        })
    }

    /// What the pod asks for.
    pub(super) fn pod(&mut self) -> Option<PodInputs> {
        let gpu_count = self.number(&spec::GPU_COUNT, 1, 64, "GPUs");
        let gpu_resource = self.one(&spec::GPU_RESOURCE, values::gpu_resource);
        let node_selector: BTreeMap<String, String> = self
            .list(&spec::NODE_SELECTOR, 32, values::node_label)
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let tolerations = self.yaml(&spec::TOLERATIONS, Shape::Tolerations);
        let template = self.yaml(&spec::POD_TEMPLATE, Shape::Pod);
        let runtime_class = self.one(&spec::RUNTIME_CLASS, values::runtime_class);
        let image = self.value(&spec::POD_IMAGE);
        let cpu_request = self.one(&spec::CPU_REQUEST, values::quantity);
        let memory_request = self.one(&spec::MEMORY_REQUEST, values::quantity);
        let node_wait_minutes = self.number(&spec::NODE_WAIT_MINUTES, 0, 120, "minutes");
        Some(PodInputs {
            gpu_count: gpu_count?,
            gpu_resource: gpu_resource?,
            node_selector,
            tolerations: match self.raw(&spec::TOLERATIONS) {
                Some(_) => tolerations?,
                None => serde_json::Value::Array(Vec::new()),
            },
            template: match self.raw(&spec::POD_TEMPLATE) {
                Some(_) => Some(template?),
                None => None,
            },
            runtime_class,
            image: image?,
            cpu_request,
            memory_request,
            node_wait_minutes: node_wait_minutes?,
        })
    }

    /// A YAML input of `shape`, as JSON; `None` (with the error recorded) when it is not.
    fn yaml(&mut self, spec: &spec::Spec, shape: Shape) -> Option<serde_json::Value> {
        let text = self.raw(spec)?;
        let parsed: Result<serde_json::Value, String> =
            serde_yaml::from_str(&text).map_err(|e| e.to_string());
        let checked = parsed.and_then(|v| shape.check(&v).map(|()| v));
        match checked {
            Ok(v) => Some(v),
            Err(why) => {
                let (expected, fix) = shape.words();
                self.fail(
                    spec,
                    Some(&text),
                    Problem::Invalid {
                        entry: None,
                        expected: format!("{expected} ({why})"),
                        fix: fix.to_owned(),
                    },
                );
                None
            }
        }
    }

    /// A pool is a pool of EC2 instances; a pod has none.
    pub(super) fn pools_are_ec2s(&mut self) {
        let (spec, value) = match self.raw(&spec::POOL) {
            Some(v) => (&spec::POOL, v),
            None => (
                &spec::POOL_INSTANCE_ID,
                self.raw(&spec::POOL_INSTANCE_ID).unwrap_or_default(),
            ),
        };
        self.fail(
            spec,
            Some(&value),
            Problem::Conflict {
                other: spec::MACHINE.name,
                fix: "Pools keep stopped EC2 instances; a Kubernetes pod is created for each job \
                      and needs none: remove pool and pool-instance-id, or use machine: ec2.",
            },
        );
    }

    /// Inputs of the other kind of machine: harmless, but most likely a slip.
    pub(super) fn unused_for_machine(
        &self,
        kubernetes: bool,
        mode: Option<super::Mode>,
    ) -> Vec<String> {
        let (unused, why): (&[&spec::Spec], &str) = if kubernetes {
            (
                EC2_ONLY,
                "it is about EC2 instances, and with machine: kubernetes the pod's image and \
                 pod-template decide",
            )
        } else {
            (
                POD_ONLY,
                "it is about Kubernetes pods; set machine: kubernetes to use one",
            )
        };
        unused
            .iter()
            .filter(|s| mode.is_some_and(|m| m.reads(s.scope)))
            .filter(|s| self.raw(s).is_some_and(|v| v != s.default))
            .map(|s| format!("{} has no effect here: {why}.", s.name))
            .collect()
    }
}

/// The credentials a kubeconfig carries, found line by line so that even one that does not parse
/// is masked: tokens, client keys, passwords, and auth providers' tokens.
pub(super) fn kubeconfig_credentials(text: &str) -> Vec<String> {
    const KEYS: &[&str] = &[
        "token",
        "client-key-data",
        "password",
        "id-token",
        "refresh-token",
        "access-token",
        "client-secret",
    ];
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().trim_start_matches("- ").split_once(':')?;
            let key = key.trim().trim_matches(['"', '\'']);
            let value = value.trim().trim_matches(['"', '\'']);
            (KEYS.contains(&key) && !value.is_empty()).then(|| value.to_owned())
        })
        .collect()
}

/// The namespace of the kubeconfig's current context, if it names one.
fn kubeconfig_namespace(text: &str) -> Result<Option<String>, String> {
    let config = kube::config::Kubeconfig::from_yaml(text).map_err(|e| e.to_string())?;
    let current = config
        .current_context
        .clone()
        .ok_or("it has no current-context")?;
    let context = config
        .contexts
        .iter()
        .find(|c| c.name == current)
        .ok_or_else(|| format!("its current-context {current} is not among its contexts"))?;
    Ok(context.context.as_ref().and_then(|c| c.namespace.clone()))
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Tolerations,
    Pod,
}

impl Shape {
    fn check(self, v: &serde_json::Value) -> Result<(), String> {
        use k8s_openapi::api::core::v1::{Pod, Toleration};
        match self {
            Shape::Tolerations => serde_json::from_value::<Vec<Toleration>>(v.clone())
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Shape::Pod => {
                if !v.is_object() {
                    return Err("not a mapping".to_owned());
                }
                serde_json::from_value::<Pod>(v.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn words(self) -> (&'static str, &'static str) {
        match self {
            Shape::Tolerations => (
                "a YAML list of tolerations",
                "Write the tolerations as a pod spec takes them, such as \
                 tolerations: '[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]'.",
            ),
            Shape::Pod => (
                "a Pod manifest in YAML",
                "Write a Pod (metadata and spec) with only what you add: it is merged over the pod \
                 gpu-runner builds, and a container named runner merges into gpu-runner's.",
            ),
        }
    }
}
