//! Kubernetes GPU pods: one pod per runner on the user's cluster, created by start and deleted by
//! stop, with nothing installed in the cluster. The runner's single-use configuration waits in a
//! Secret that the pod owns (so the cluster removes it with the pod), the pod asks for its GPUs
//! as extended resources, and its entrypoint probes them, then runs the image's runner for one
//! job of the run that created it. Everything happens in one namespace, with the Role the README
//! gives: pods, pods/log and secrets.

pub mod access;
pub mod eks;
pub mod errors;
pub mod pod;
pub mod scale_up;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::Value;

use crate::actions::Actions;
use crate::clock::Clock;
use crate::inputs::{ClusterInputs, PodInputs};
use crate::machine::failure::Failure as Error;
use crate::machine::{
    Acquired, Facts, Handoff, Health, Machine, MachineError, Owner, Provider, Release, Released,
};
use crate::plan::LaunchPlan;
use errors::api_error;

/// The provider of pods in one namespace of one cluster.
pub struct Kubernetes {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    events: Api<Event>,
    namespace: String,
    clock: Clock,
    /// The pods this start created: how long each may wait for a node the cluster adds, and
    /// since when the scheduler has found none for it.
    waits: Mutex<HashMap<String, NodeWait>>,
}

#[derive(Debug, Clone, Copy)]
struct NodeWait {
    minutes: u32,
    unschedulable_since: Option<Instant>,
}

impl Kubernetes {
    pub async fn connect(
        cluster: &ClusterInputs,
        access: &access::Access<'_>,
    ) -> Result<Kubernetes, Error> {
        let client = access::client(cluster, access).await?;
        Ok(Kubernetes {
            pods: Api::namespaced(client.clone(), &cluster.namespace),
            secrets: Api::namespaced(client.clone(), &cluster.namespace),
            events: Api::namespaced(client, &cluster.namespace),
            namespace: cluster.namespace.clone(),
            clock: Clock::from_env(access.env),
            waits: Mutex::default(),
        })
    }

    fn pod_inputs(plan: &LaunchPlan) -> Result<&PodInputs, Error> {
        plan.pod.as_ref().ok_or_else(|| Error::Unsupported {
            what: "the Kubernetes provider was given a plan without a pod".to_owned(),
            fix: "Set machine: kubernetes on the start step.".to_owned(),
        })
    }

    fn typed<T: serde::de::DeserializeOwned>(
        operation: &'static str,
        v: Value,
    ) -> Result<T, MachineError> {
        serde_json::from_value(v).map_err(|e| MachineError {
            provider: crate::machine::Kind::Kubernetes,
            operation,
            code: Some("Invalid".to_owned()),
            message: e.to_string(),
        })
    }

    /// Deletes a pod and its Secret; whether the pod was there.
    async fn delete(&self, name: &str) -> Result<bool, MachineError> {
        let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
        let params = DeleteParams::background();
        let pod = match self.pods.delete(name, &params).await {
            Ok(_) => true,
            Err(e) if gone(&e) => false,
            Err(e) => return Err(api_error("DeletePod", e)),
        };
        match self.secrets.delete(name, &params).await {
            Ok(_) => {}
            Err(e) if gone(&e) => {}
            Err(e) => return Err(api_error("DeleteSecret", e)),
        }
        Ok(pod)
    }

    async fn list(&self, selector: &str) -> Result<Vec<Value>, MachineError> {
        let list = self
            .pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| api_error("ListPods", e))?;
        Ok(list
            .items
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .collect())
    }

    async fn get(&self, name: &str) -> Result<Option<Value>, MachineError> {
        let pod = self
            .pods
            .get_opt(name)
            .await
            .map_err(|e| api_error("GetPod", e))?;
        Ok(pod.and_then(|p| serde_json::to_value(p).ok()))
    }

    /// The events recorded on a pod (an autoscaler's word on a node for it among them), or why
    /// they could not be read.
    async fn events_of(&self, name: &str) -> Result<Vec<Value>, String> {
        let params = ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.name={name}"
        ));
        match self.events.list(&params).await {
            Ok(list) => Ok(list
                .items
                .iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect()),
            Err(kube::Error::Api(s)) => Err(format!("{} {}", s.code, s.reason)),
            Err(e) => Err(e.to_string()),
        }
    }

    /// How a pod the scheduler found no node for is doing: waiting for a node on its way, or
    /// unable to run.
    async fn unschedulable_health(&self, pod: &Value, scheduler: &str, resource: &str) -> Health {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let wait = {
            let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
            // Every pod this start waits for was created by it, with its wait; any other is
            // given none.
            let wait = waits.entry(name.to_owned()).or_insert(NodeWait {
                minutes: 0,
                unschedulable_since: None,
            });
            wait.unschedulable_since.get_or_insert_with(Instant::now);
            *wait
        };
        let waited = wait
            .unschedulable_since
            .map(|since| self.clock.unscaled(since.elapsed()))
            .unwrap_or(Duration::ZERO);
        let (verdict, unreadable) = if wait.minutes == 0 {
            (scale_up::Verdict::Silent, None)
        } else {
            match self.events_of(name).await {
                Ok(events) => (scale_up::verdict(&events), None),
                Err(why) => {
                    tracing::warn!(pod = %name, error = %why, "could not read the pod's events");
                    (scale_up::Verdict::Silent, Some(why))
                }
            }
        };
        scale_up::health(&scale_up::Unschedulable {
            scheduler,
            resource,
            verdict: &verdict,
            waited,
            node_wait_minutes: wait.minutes,
            events_unreadable: unreadable.as_deref(),
        })
    }

    /// The log's last lines, when the Role lets gpu-runner read it and the node answers.
    async fn log_tail(&self, name: &str) -> Option<String> {
        let params = LogParams {
            container: Some(pod::CONTAINER.to_owned()),
            tail_lines: Some(200),
            ..LogParams::default()
        };
        self.pods.logs(name, &params).await.ok()
    }
}

impl Provider for Kubernetes {
    fn noun(&self) -> &'static str {
        "pod"
    }

    fn place(&self, _region: &str) -> String {
        format!("namespace {}", self.namespace)
    }

    /// A pod is deleted whatever its lifecycle: it has no pool, and is nobody's machine.
    fn verb(&self, _how: Release) -> String {
        "delete pod".to_owned()
    }

    async fn preflight(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<String, Error> {
        let inputs = Self::pod_inputs(plan)?;
        let manifest = pod::manifest(plan, inputs, handoff);
        actions.verbatim(&format!(
            "The pod gpu-runner would create in namespace {}:\n{}",
            self.namespace,
            serde_yaml::to_string(&manifest).unwrap_or_default()
        ));
        let typed: Pod = Self::typed("CreatePod", manifest)?;
        let dry = PostParams {
            dry_run: true,
            field_manager: Some("gpu-runner".to_owned()),
        };
        // The API server runs authorization, admission and validation, and stores nothing.
        self.pods
            .create(&dry, &typed)
            .await
            .map_err(|e| api_error("CreatePod", e))?;
        let secret: Secret = Self::typed("CreateSecret", pod::secret(plan, handoff, ""))?;
        let mut secret = secret;
        secret.metadata.owner_references = None;
        self.secrets
            .create(&dry, &secret)
            .await
            .map_err(|e| api_error("CreateSecret", e))?;
        Ok(format!(
            "The cluster accepted the pod and its secret in namespace {} as a dry run \
             (authorization, admission and validation), and created nothing.",
            self.namespace
        ))
    }

    async fn acquire(
        &self,
        plan: &LaunchPlan,
        handoff: &Handoff<'_>,
        actions: &Actions,
    ) -> Result<Acquired, Error> {
        let inputs = Self::pod_inputs(plan)?;
        let name = &handoff.runner.name;
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).insert(
            name.clone(),
            NodeWait {
                minutes: inputs.node_wait_minutes,
                unschedulable_since: None,
            },
        );
        let manifest: Pod = Self::typed("CreatePod", pod::manifest(plan, inputs, handoff))?;
        let params = PostParams {
            dry_run: false,
            field_manager: Some("gpu-runner".to_owned()),
        };
        // The pod first, so that its Secret can be owned by it: the cluster then deletes the
        // Secret with the pod, even when no stop ever runs. Until the Secret exists the kubelet
        // waits for it.
        let created = self
            .pods
            .create(&params, &manifest)
            .await
            .map_err(|e| api_error("CreatePod", e))?;
        let uid = created.metadata.uid.clone().unwrap_or_default();
        actions.info(&format!(
            "Created pod {name} in namespace {} ({})",
            self.namespace,
            format_args!("{} × {}", inputs.gpu_count, inputs.gpu_resource)
        ));
        let secret: Secret = Self::typed("CreateSecret", pod::secret(plan, handoff, &uid))?;
        if let Err(e) = self.secrets.create(&params, &secret).await {
            let e = api_error("CreateSecret", e);
            // Nothing may wait for a Secret that will never come.
            if let Err(cleanup) = self.delete(name).await {
                tracing::warn!(pod = %name, error = %cleanup, "could not delete the pod");
            }
            return Err(e.into());
        }
        let machine = pod::machine(&serde_json::to_value(&created).unwrap_or_default());
        Ok(Acquired {
            machine,
            refused: Vec::new(),
        })
    }

    async fn health(&self, ids: &[String]) -> Result<Vec<(String, Health)>, MachineError> {
        let pods = self.list(&pod::selector(&[])).await?;
        let mut healths = Vec::new();
        for id in ids {
            let found = pods.iter().find(|p| p["metadata"]["name"] == *id.as_str());
            let health = match found {
                Some(p) => match pod::unschedulable(p) {
                    Some(scheduler) => {
                        let resource = p["spec"]["containers"][0]["resources"]["limits"]
                            .as_object()
                            .and_then(|l| l.keys().find(|k| k.contains('/')).cloned())
                            .unwrap_or_else(|| "GPUs".to_owned());
                        self.unschedulable_health(p, scheduler, &resource).await
                    }
                    None => pod::health(p),
                },
                None => Health::Gone {
                    why: "deleted".to_owned(),
                    last_words: Vec::new(),
                },
            };
            healths.push((id.clone(), health));
        }
        Ok(healths)
    }

    async fn last_words(&self, id: &str) -> Vec<String> {
        match self.log_tail(id).await {
            Some(log) => pod::last_lines(&log, pod::LAST_WORDS),
            None => Vec::new(),
        }
    }

    async fn find(
        &self,
        ids: &[String],
        owner: Option<Owner<'_>>,
    ) -> Result<Vec<Machine>, MachineError> {
        let mut found: Vec<Value> = Vec::new();
        for id in ids {
            if let Some(p) = self.get(id).await? {
                found.push(p);
            }
        }
        if let Some(owner) = owner {
            let (repository, run) = match owner {
                Owner::Label { repository, .. } | Owner::Repository(repository) => {
                    (repository, None)
                }
                Owner::Run { repository, run_id } => (repository, Some(run_id.to_string())),
            };
            let repository_label = pod::repository_label(repository);
            let mut pairs = vec![(pod::REPOSITORY, repository_label.as_str())];
            if let Owner::Label { label, .. } = owner {
                pairs.push((pod::LABEL, label));
            }
            if let Some(run) = &run {
                pairs.push((pod::RUN_ID, run.as_str()));
            }
            let listed = self.list(&pod::selector(&pairs)).await?;
            let mut seen: HashSet<String> = found
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            for p in listed {
                let name = p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if seen.insert(name) {
                    found.push(p);
                }
            }
        }
        Ok(found.iter().map(pod::machine).collect())
    }

    async fn release(
        &self,
        machines: &[Machine],
        _how: Release,
    ) -> (Vec<Released>, Option<MachineError>) {
        // A pod is never kept: whatever its lifecycle, ending its turn deletes it.
        let mut results = Vec::new();
        let mut first = None;
        for m in machines {
            let ran = m.ran_seconds(chrono::Utc::now(), self.clock);
            results.push(match self.delete(&m.id).await {
                Ok(true) => Released::Deleted { ran },
                Ok(false) => Released::AlreadyGone,
                Err(e) => {
                    first.get_or_insert(e);
                    Released::Failed
                }
            });
        }
        (results, first)
    }

    async fn facts(&self, machine: &Machine) -> Facts {
        let gpu = match self.log_tail(&machine.id).await {
            Some(log) => crate::boot::phases::gpu_found(&log),
            None => None,
        };
        let details = match self.get(&machine.id).await {
            Ok(Some(p)) => pod::timeline(&p, self.clock),
            _ => Vec::new(),
        };
        Facts {
            price: None,
            gpu,
            details,
        }
    }
}
