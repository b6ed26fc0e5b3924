//! Nodes on their way. A cluster that adds GPU nodes on demand (cluster-autoscaler, Karpenter)
//! has none until a pod asks for one, so a pod that no node can take now may be one that a node
//! is coming for. The autoscaler says which on the pod, as events: cluster-autoscaler records
//! `TriggeredScaleUp` ("pod triggered scale-up: …") or `NotTriggerScaleUp` ("pod didn't trigger
//! scale-up: …") as the component `cluster-autoscaler`
//! (kubernetes/autoscaler `processors/status/eventing_scale_up_processor.go`); Karpenter records
//! `Nominated` ("Pod should schedule on: nodeclaim/…") or `FailedScheduling` ("Failed to schedule
//! pod, …") as `karpenter` (kubernetes-sigs/karpenter `pkg/controllers/provisioning/scheduling/
//! events.go`); the scheduler's own `FailedScheduling` comes from `default-scheduler` and says
//! nothing of nodes to come. Start waits, within `node-wait-minutes`, only while the latest
//! word is that a node is coming.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::machine::Health;

/// How long a pod no node can take waits for an autoscaler to say anything: cluster-autoscaler
/// looks every 10 s (its `--scan-interval`), Karpenter gathers pods for up to 10 s before it
/// decides. A cluster whose autoscaler says nothing by then has none for this pod.
pub const ANSWERS_WITHIN: Duration = Duration::from_secs(30);

/// What the cluster's autoscaler last said of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A node is coming for it; `message` is the autoscaler's.
    Coming { by: String, message: String },
    /// No node will come for it.
    NotComing { by: String, message: String },
    /// No autoscaler said anything (yet).
    Silent,
}

/// The autoscaler's latest word among a pod's events (core/v1 Events, as listed).
pub fn verdict(events: &[Value]) -> Verdict {
    let mut latest: Option<(Option<DateTime<Utc>>, Verdict)> = None;
    for e in events {
        let by = e["source"]["component"]
            .as_str()
            .filter(|c| !c.is_empty())
            .or_else(|| e["reportingComponent"].as_str())
            .unwrap_or_default();
        let coming = match (by, e["reason"].as_str().unwrap_or_default()) {
            ("cluster-autoscaler", "TriggeredScaleUp") | ("karpenter", "Nominated") => true,
            ("cluster-autoscaler", "NotTriggerScaleUp") | ("karpenter", "FailedScheduling") => {
                false
            }
            _ => continue,
        };
        let message = e["message"].as_str().unwrap_or_default().to_owned();
        let by = by.to_owned();
        let said = if coming {
            Verdict::Coming { by, message }
        } else {
            Verdict::NotComing { by, message }
        };
        let at = ["lastTimestamp", "eventTime", "firstTimestamp"]
            .iter()
            .find_map(|f| e[*f].as_str())
            .or_else(|| e["metadata"]["creationTimestamp"].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        // The later word wins; of two in the same second, the one listed last.
        if latest.as_ref().is_none_or(|(seen, _)| at >= *seen) {
            latest = Some((at, said));
        }
    }
    latest.map(|(_, v)| v).unwrap_or(Verdict::Silent)
}

/// A pod the scheduler found no node for, and what start knows of nodes to come.
#[derive(Debug)]
pub struct Unschedulable<'a> {
    /// The scheduler's words (`0/3 nodes are available: …`).
    pub scheduler: &'a str,
    /// The extended resource the pod asks for (`nvidia.com/gpu`).
    pub resource: &'a str,
    pub verdict: &'a Verdict,
    /// Since start first saw it unschedulable, of the user's time.
    pub waited: Duration,
    pub node_wait_minutes: u32,
    /// Why its events could not be read, if they could not.
    pub events_unreadable: Option<&'a str>,
}

/// How such a pod is doing: waiting for a node on its way, or unable to run.
pub fn health(u: &Unschedulable) -> Health {
    let node_wait = Duration::from_secs(u64::from(u.node_wait_minutes) * 60);
    let cannot = |why: String, fix: String| Health::CannotRun {
        why: format!("cannot be scheduled: {}{why}", u.scheduler),
        fix,
        last_words: Vec::new(),
    };
    let check = format!(
        "Check that the cluster has a node with enough free {} (kubectl describe nodes), that \
         node-selector and tolerations match the GPU nodes' labels and taints, and that \
         gpu-count, cpu-request and memory-request fit one node.",
        u.resource
    );
    match u.verdict {
        _ if u.node_wait_minutes == 0 => cannot(
            String::new(),
            format!(
                "No node can take the pod now. {check} With node-wait-minutes: 0, gpu-runner \
                 does not wait for a node the cluster may add."
            ),
        ),
        Verdict::NotComing { by, message } => cannot(
            format!("; {by} will add no node: {message}"),
            format!(
                "No node can take the pod, and the cluster's autoscaler will not add one that \
                 can: check its GPU node group (its maximum size, its instance types, its \
                 labels and taints) against gpu-count, cpu-request, memory-request, \
                 node-selector and tolerations. {check}"
            ),
        ),
        Verdict::Coming { message, .. } if u.waited < node_wait => Health::Waiting {
            why: format!("cannot be scheduled yet; the cluster is adding a node for it: {message}"),
        },
        Verdict::Coming { by, message } => cannot(
            format!(
                "; no node came within node-wait-minutes ({}), though {by} said: {message}",
                u.node_wait_minutes
            ),
            "The node the cluster's autoscaler is adding was not up in time: raise \
             node-wait-minutes (a GPU node from zero often takes five minutes or more, its \
             driver and device plugin included), or keep one GPU node running."
                .to_owned(),
        ),
        Verdict::Silent if u.waited < ANSWERS_WITHIN.min(node_wait) => Health::Booting,
        Verdict::Silent => {
            let mut fix = format!(
                "No node can take the pod now, and no autoscaler said within {} s that it would \
                 add one. {check} On a cluster that adds GPU nodes on demand, check that its \
                 autoscaler (cluster-autoscaler, Karpenter) has a GPU node group or node pool \
                 for this pod.",
                ANSWERS_WITHIN.min(node_wait).as_secs()
            );
            if let Some(why) = u.events_unreadable {
                fix.push_str(&format!(
                    " gpu-runner could not read the pod's events ({why}), where an autoscaler \
                     says it is adding a node: give its Role list on events (docs/kubernetes.md)."
                ));
            }
            cannot(String::new(), fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(by: &str, reason: &str, message: &str, at: &str) -> Value {
        json!({
            "reason": reason, "message": message, "source": {"component": by},
            "lastTimestamp": at, "involvedObject": {"kind": "Pod", "name": "p"},
        })
    }

    #[test]
    fn the_autoscalers_latest_word_is_the_verdict_and_the_schedulers_is_none() {
        let scheduler = event(
            "default-scheduler",
            "FailedScheduling",
            "0/1 nodes are available",
            "2026-12-05T10:00:00Z",
        );
        assert_eq!(verdict(std::slice::from_ref(&scheduler)), Verdict::Silent);
        let triggered = event(
            "cluster-autoscaler",
            "TriggeredScaleUp",
            "pod triggered scale-up: [{gpu 0->1 (max: 3)}]",
            "2026-12-05T10:00:05Z",
        );
        let declined = event(
            "cluster-autoscaler",
            "NotTriggerScaleUp",
            "pod didn't trigger scale-up: 1 in backoff after failed scale-up",
            "2026-12-05T10:03:00Z",
        );
        assert!(matches!(
            verdict(&[scheduler.clone(), triggered.clone()]),
            Verdict::Coming { by, .. } if by == "cluster-autoscaler"
        ));
        // Listed out of order: the later one wins.
        assert!(matches!(
            verdict(&[declined.clone(), triggered.clone()]),
            Verdict::NotComing { message, .. } if message.contains("in backoff")
        ));
        let nominated = event(
            "karpenter",
            "Nominated",
            "Pod should schedule on: nodeclaim/gpu-x2k9f",
            "2026-12-05T10:00:02Z",
        );
        assert!(matches!(verdict(&[nominated]), Verdict::Coming { by, .. } if by == "karpenter"));
        let karpenter_no = event(
            "karpenter",
            "FailedScheduling",
            "Failed to schedule pod, incompatible with nodepool \"gpu\"",
            "2026-12-05T10:00:02Z",
        );
        assert!(matches!(
            verdict(&[karpenter_no]),
            Verdict::NotComing { .. }
        ));
    }

    #[test]
    fn an_unschedulable_pod_waits_only_while_a_node_is_coming_and_within_node_wait_minutes() {
        let s = Duration::from_secs;
        let coming = Verdict::Coming {
            by: "cluster-autoscaler".into(),
            message: "pod triggered scale-up: [{gpu 0->1 (max: 3)}]".into(),
        };
        let not_coming = Verdict::NotComing {
            by: "cluster-autoscaler".into(),
            message: "pod didn't trigger scale-up: 1 max node group size reached".into(),
        };
        let at = |verdict: &Verdict, waited: Duration, minutes: u32| {
            health(&Unschedulable {
                scheduler: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                resource: "nvidia.com/gpu",
                verdict,
                waited,
                node_wait_minutes: minutes,
                events_unreadable: None,
            })
        };
        assert!(matches!(
            at(&coming, s(60), 10),
            Health::Waiting { why } if why.ends_with("adding a node for it: pod triggered scale-up: [{gpu 0->1 (max: 3)}]")
        ));
        assert!(matches!(
            at(&coming, s(600), 10),
            Health::CannotRun { why, .. } if why.contains("no node came within node-wait-minutes (10)")
        ));
        assert!(matches!(
            at(&not_coming, s(0), 10),
            Health::CannotRun { why, .. } if why == "cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.; cluster-autoscaler will add no node: pod didn't trigger scale-up: 1 max node group size reached"
        ));
        assert_eq!(at(&Verdict::Silent, s(10), 10), Health::Booting);
        let Health::CannotRun { why, fix, .. } = at(&Verdict::Silent, s(30), 10) else {
            panic!("no autoscaler answered")
        };
        assert_eq!(
            why,
            "cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        );
        assert!(
            fix.contains("free nvidia.com/gpu") && fix.contains("within 30 s"),
            "{fix}"
        );
        // node-wait-minutes: 0 waits for nothing, not even a node on its way.
        assert!(matches!(at(&coming, s(0), 0), Health::CannotRun { .. }));
    }

    #[test]
    fn unreadable_events_are_named_with_the_permission_that_reads_them() {
        let Health::CannotRun { fix, .. } = health(&Unschedulable {
            scheduler: "0/1 nodes are available",
            resource: "nvidia.com/gpu",
            verdict: &Verdict::Silent,
            waited: Duration::from_secs(31),
            node_wait_minutes: 10,
            events_unreadable: Some("Forbidden"),
        }) else {
            panic!("final")
        };
        assert!(
            fix.contains("(Forbidden)") && fix.contains("list on events"),
            "{fix}"
        );
    }
}
