//! What EC2 does around stopping and starting an instance that moto does not: `StopInstances`
//! leaves the instance `stopping` for a while before it is `stopped` (moto stops it at once), an
//! instance can be started only once it is `stopped`, and its user data can be changed only while
//! it is stopped (`IncorrectInstanceState` otherwise; moto changes it in any state), and a start
//! moves its `launchTime` to now (EC2: "the time the instance was last launched"; moto keeps the
//! first). The fronts
//! (the product's and the world's own) share one `Stops`, so the simulator sees what the product
//! does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long EC2 keeps an instance `stopping`, on the world's clock. AWS documents no figure; a GPU
/// instance with an EBS root volume takes tens of seconds to a few minutes, so half a minute is
/// the least a product may count on.
pub const STOPPING_TAKES: Duration = Duration::from_secs(30);

/// The instances stopped through a front, with when each is `stopped` (on the real clock), and
/// when those started through a front were last started.
pub type Stops = Arc<Mutex<Ledger>>;

#[derive(Debug, Default)]
pub struct Ledger {
    stopped_at: HashMap<String, Instant>,
    started_at: HashMap<String, String>,
}

/// Whether the instance is stopped, and since when: `None` when it was not stopped through a
/// front (running, pending, or ended), `Some(false)` while it is still stopping.
pub fn stopped(stops: &Stops, id: &str) -> Option<bool> {
    let stops = stops.lock().unwrap_or_else(|e| e.into_inner());
    stops.stopped_at.get(id).map(|at| Instant::now() >= *at)
}

/// The refusal EC2 gives `action` on these instances in their state, if any.
pub fn refusal(stops: &Stops, action: &str, ids: &[String], user_data: bool) -> Option<String> {
    for id in ids {
        let state = stopped(stops, id);
        let refused = match action {
            "StartInstances" => state == Some(false),
            "ModifyInstanceAttribute" if user_data => state != Some(true),
            _ => false,
        };
        if refused {
            let now = match state {
                Some(false) => "stopping",
                _ => "running",
            };
            return Some(format!(
                "The instance '{id}' is not in the 'stopped' state (it is '{now}')."
            ));
        }
    }
    None
}

/// Records what a call that moto carried out did to the instances' stopping.
/// A `StopInstances` about to reach moto: its instances' `stopping` begins now, before moto
/// answers, so that no `DescribeInstances` between moto's answer and [`record`] sees them
/// `stopped` at once (EC2 shows `stopping` from the call on). The ids it began it for, for
/// [`cancel`] when moto refuses the call.
pub fn begin(stops: &Stops, action: &str, ids: &[String], scale: f64) -> Vec<String> {
    if action != "StopInstances" {
        return Vec::new();
    }
    let mut stops = stops.lock().unwrap_or_else(|e| e.into_inner());
    let mut began = Vec::new();
    for id in ids {
        if !stops.stopped_at.contains_key(id) {
            stops
                .stopped_at
                .insert(id.clone(), Instant::now() + STOPPING_TAKES.div_f64(scale));
            began.push(id.clone());
        }
    }
    began
}

/// Undoes [`begin`] for a call moto refused.
pub fn cancel(stops: &Stops, ids: &[String]) {
    let mut stops = stops.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        stops.stopped_at.remove(id);
    }
}

pub fn record(stops: &Stops, action: &str, ids: &[String], scale: f64) {
    let mut stops = stops.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        match action {
            "StopInstances" => {
                stops
                    .stopped_at
                    .entry(id.clone())
                    .or_insert_with(|| Instant::now() + STOPPING_TAKES.div_f64(scale));
            }
            "StartInstances" => {
                stops.stopped_at.remove(id);
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S.000Z");
                stops.started_at.insert(id.clone(), now.to_string());
            }
            "TerminateInstances" => {
                stops.stopped_at.remove(id);
            }
            _ => {}
        }
    }
}

/// moto's answer as EC2 gives it: the instances that are still stopping shown `stopping` (code
/// 64), not `stopped` (code 80), in `DescribeInstances` and `StopInstances` answers, and each
/// restarted instance with the `launchTime` of its last start.
pub fn as_ec2_shows(stops: &Stops, xml: &str) -> String {
    let (stopping, started): (Vec<String>, Vec<(String, String)>) = {
        let stops = stops.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        (
            stops
                .stopped_at
                .iter()
                .filter(|(_, at)| now < **at)
                .map(|(id, _)| id.clone())
                .collect(),
            stops
                .started_at
                .iter()
                .map(|(id, t)| (id.clone(), t.clone()))
                .collect(),
        )
    };
    let mut out = xml.to_owned();
    for (id, at) in started {
        rewrite(&mut out, &id, |part| {
            if let Some(a) = part.find("<launchTime>")
                && let Some(b) = part[a..].find("</launchTime>").map(|b| b + a)
            {
                part.replace_range(a + "<launchTime>".len()..b, &at);
            }
        });
    }
    for id in stopping {
        rewrite(&mut out, &id, |part| {
            for tag in ["instanceState", "currentState"] {
                let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
                if let Some(a) = part.find(&open)
                    && let Some(b) = part[a..].find(&close).map(|b| b + a)
                    && part[a..b].contains("stopped")
                {
                    part.replace_range(a + open.len()..b, "<code>64</code><name>stopping</name>");
                }
            }
        });
    }
    out
}

/// Applies `change` to each part of `xml` about instance `id`: from its id to the next id.
fn rewrite(out: &mut String, id: &str, change: impl Fn(&mut String)) {
    let mut from = 0;
    let marker = format!("<instanceId>{id}</instanceId>");
    while let Some(at) = out[from..].find(&marker).map(|i| i + from) {
        // The instance's own fields follow its id, before the next instance's id.
        let end = out[at + marker.len()..]
            .find("<instanceId>")
            .map(|i| i + at + marker.len())
            .unwrap_or(out.len());
        let mut part = out[at..end].to_owned();
        change(&mut part);
        out.replace_range(at..end, &part);
        from = at + marker.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_instance_shows_as_stopping_and_refuses_a_start_and_new_user_data() {
        let stops: Stops = Arc::default();
        let ids = vec!["i-1".to_owned()];
        assert!(refusal(&stops, "ModifyInstanceAttribute", &ids, true).is_some());
        record(&stops, "StopInstances", &ids, 1.0);
        let xml = "<item><instanceId>i-1</instanceId><instanceState><code>80</code><name>stopped</name></instanceState></item>\
                   <item><instanceId>i-2</instanceId><instanceState><code>80</code><name>stopped</name></instanceState></item>";
        let shown = as_ec2_shows(&stops, xml);
        assert!(shown.contains(
            "<instanceId>i-1</instanceId><instanceState><code>64</code><name>stopping</name>"
        ));
        assert!(shown.contains(
            "<instanceId>i-2</instanceId><instanceState><code>80</code><name>stopped</name>"
        ));
        assert!(refusal(&stops, "StartInstances", &ids, false).is_some());
        assert!(refusal(&stops, "ModifyInstanceAttribute", &ids, true).is_some());
        assert!(refusal(&stops, "ModifyInstanceAttribute", &ids, false).is_none());
        record(&stops, "StartInstances", &ids, 1.0);
        assert_eq!(stopped(&stops, "i-1"), None);
    }
}
