//! What EC2 does around stopping and starting an instance that moto does not: `StopInstances`
//! leaves the instance `stopping` for a while before it is `stopped` (moto stops it at once), an
//! instance can be started only once it is `stopped`, and its user data can be changed only while
//! it is stopped (`IncorrectInstanceState` otherwise; moto changes it in any state), and a start
//! moves its `launchTime` to now (EC2: "the time the instance was last launched"; moto keeps the
//! first); and a start EC2 accepts for an instance whose zone has no capacity for it shows it
//! `pending` for a moment and then `stopped` again, its state reason
//! `Server.InsufficientInstanceCapacity` (EC2 API Reference, `StateReason`: "There was
//! insufficient capacity available to satisfy the launch request"). The fronts
//! (the product's and the world's own) share one `Stops`, so the simulator sees what the product
//! does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long EC2 keeps an instance `stopping`, on the world's clock. AWS documents no figure; a GPU
/// instance with an EBS root volume takes tens of seconds to a few minutes, so half a minute is
/// the least a product may count on.
pub const STOPPING_TAKES: Duration = Duration::from_secs(30);

/// How long an instance EC2 accepted a start for, without the capacity to run it, stays
/// `pending` before it is `stopped` again, on the world's clock. AWS documents no figure; a few
/// seconds is what a product that looks at once sees.
pub const BOUNCE_TAKES: Duration = Duration::from_secs(5);

/// EC2's state reason of an instance sent back to `stopped` for want of capacity.
pub const NO_CAPACITY_REASON: &str = "<stateReason><code>Server.InsufficientInstanceCapacity</code>\
    <message>Server.InsufficientInstanceCapacity: Insufficient capacity to satisfy launch request\
    </message></stateReason>";

/// The instances stopped through a front, with when each is `stopped` (on the real clock), and
/// when those started through a front were last started.
pub type Stops = Arc<Mutex<Ledger>>;

#[derive(Debug, Default)]
pub struct Ledger {
    stopped_at: HashMap<String, Instant>,
    started_at: HashMap<String, String>,
    /// Instances whose start EC2 accepted without the capacity to run them: `pending` until
    /// this instant (on the real clock), then `stopped` for want of capacity.
    bounced: HashMap<String, Instant>,
    /// Spot instances AWS took back, and when (`YYYY-MM-DD HH:MM:SS`, UTC).
    reclaimed: HashMap<String, String>,
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
        let pending = bouncing(stops, id);
        let state = stopped(stops, id).filter(|_| !pending);
        let refused = match action {
            "StartInstances" => state == Some(false) || pending,
            "ModifyInstanceAttribute" if user_data => state != Some(true),
            _ => false,
        };
        if refused {
            let now = match state {
                _ if pending => "pending",
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

/// Whether the instance is in the `pending` of a start EC2 accepted without capacity.
fn bouncing(stops: &Stops, id: &str) -> bool {
    let stops = stops.lock().unwrap_or_else(|e| e.into_inner());
    stops
        .bounced
        .get(id)
        .is_some_and(|until| Instant::now() < *until)
}

/// A start EC2 accepts for these stopped instances without the capacity to run them: moto is not
/// told (they never run); they show `pending`, then `stopped` with the capacity state reason.
/// EC2's answer to the `StartInstances`.
pub fn bounce(stops: &Stops, ids: &[String], scale: f64) -> String {
    let mut ledger = stops.lock().unwrap_or_else(|e| e.into_inner());
    let mut items = String::new();
    for id in ids {
        ledger
            .bounced
            .insert(id.clone(), Instant::now() + BOUNCE_TAKES.div_f64(scale));
        items.push_str(&format!(
            "<item><instanceId>{id}</instanceId><currentState><code>0</code><name>pending</name>\
             </currentState><previousState><code>80</code><name>stopped</name></previousState>\
             </item>"
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<StartInstancesResponse \
         xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>world</requestId>\
         <instancesSet>{items}</instancesSet></StartInstancesResponse>"
    )
}

/// AWS takes the spot instance back now: from here on EC2 shows it ended with the state reason
/// `Server.SpotInstanceTermination` (API Reference, `StateReason`) and a service-initiated
/// transition at this time; the caller terminates it in moto.
pub fn reclaim(stops: &Stops, id: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let mut ledger = stops.lock().unwrap_or_else(|e| e.into_inner());
    ledger.reclaimed.insert(id.to_owned(), now);
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
                stops.bounced.remove(id);
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S.000Z");
                stops.started_at.insert(id.clone(), now.to_string());
            }
            "TerminateInstances" => {
                stops.stopped_at.remove(id);
                stops.bounced.remove(id);
            }
            _ => {}
        }
    }
}

/// moto's answer as EC2 gives it: the instances that are still stopping shown `stopping` (code
/// 64), not `stopped` (code 80), in `DescribeInstances` and `StopInstances` answers, and each
/// restarted instance with the `launchTime` of its last start; an instance whose start EC2
/// accepted without capacity `pending`, then `stopped` with that reason; a spot instance AWS
/// took back ended for `Server.SpotInstanceTermination`.
pub fn as_ec2_shows(stops: &Stops, xml: &str) -> String {
    // Held while the answer is rewritten: no call waits on it meanwhile.
    let ledger = stops.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let mut out = xml.to_owned();
    for (id, at) in &ledger.started_at {
        rewrite(&mut out, id, |part| {
            if let Some(a) = part.find("<launchTime>")
                && let Some(b) = part[a..].find("</launchTime>").map(|b| b + a)
            {
                part.replace_range(a + "<launchTime>".len()..b, at);
            }
        });
    }
    let stopping = ledger.stopped_at.iter().filter(|(_, at)| now < **at);
    for (id, _) in stopping {
        rewrite(&mut out, id, |part| {
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
    for (id, at) in &ledger.reclaimed {
        rewrite(&mut out, id, |part| {
            let reason = "<stateReason><code>Server.SpotInstanceTermination</code><message>\
                Server.SpotInstanceTermination: Spot instance termination</message></stateReason>";
            match (part.find("<stateReason>"), part.find("</stateReason>")) {
                (Some(a), Some(b)) if a < b => {
                    part.replace_range(a..b + "</stateReason>".len(), reason);
                }
                _ => {
                    if let Some(a) = part.find("</instanceState>") {
                        part.insert_str(a + "</instanceState>".len(), reason);
                    }
                }
            }
            replace_element(part, "reason", &format!("Service initiated ({at} GMT)"));
        });
    }
    for (id, until) in &ledger.bounced {
        rewrite(&mut out, id, |part| {
            if now < *until {
                replace_element(part, "instanceState", "<code>0</code><name>pending</name>");
            } else if let Some(a) = part.find("<stateReason>")
                && let Some(b) = part[a..].find("</stateReason>").map(|b| b + a)
            {
                part.replace_range(a..b + "</stateReason>".len(), NO_CAPACITY_REASON);
            } else if let Some(a) = part.find("</instanceState>") {
                part.insert_str(a + "</instanceState>".len(), NO_CAPACITY_REASON);
            }
        });
    }
    out
}

/// Replaces the content of the first `<tag>…</tag>` in `part`.
fn replace_element(part: &mut String, tag: &str, content: &str) {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    if let Some(a) = part.find(&open)
        && let Some(b) = part[a..].find(&close).map(|b| b + a)
    {
        part.replace_range(a + open.len()..b, content);
    }
}

/// Applies `change` to each part of `xml` about instance `id`: from its id to the next id.
fn rewrite(out: &mut String, id: &str, change: impl Fn(&mut String)) {
    let mut from = 0;
    let marker = format!("<instanceId>{id}</instanceId>");
    while let Some(at) = out[from..].find(&marker).map(|i| i + from) {
        // The instance's own `<item>`: moto writes some of its fields (`stateReason`) before its
        // id, so the item, not the text after the id, is the instance.
        let (start, end) = item_around(out, at).unwrap_or((at, out.len()));
        let mut part = out[start..end].to_owned();
        change(&mut part);
        out.replace_range(start..end, &part);
        from = start + part.len();
    }
}

/// The bounds of the innermost `<item>…</item>` that holds position `at`.
fn item_around(xml: &str, at: usize) -> Option<(usize, usize)> {
    const OPEN: &str = "<item>";
    const CLOSE: &str = "</item>";
    let mut depth = 0;
    let mut i = at;
    let start = loop {
        let open = xml[..i].rfind(OPEN)?;
        match xml[..i].rfind(CLOSE) {
            Some(close) if close > open => {
                depth += 1;
                i = close;
            }
            _ if depth == 0 => break open,
            _ => {
                depth -= 1;
                i = open;
            }
        }
    };
    let mut depth = 0;
    let mut j = at;
    let end = loop {
        let close = xml[j..].find(CLOSE).map(|p| p + j)?;
        match xml[j..].find(OPEN).map(|p| p + j) {
            Some(open) if open < close => {
                depth += 1;
                j = open + OPEN.len();
            }
            _ if depth == 0 => break close + CLOSE.len(),
            _ => {
                depth -= 1;
                j = close + CLOSE.len();
            }
        }
    };
    Some((start, end))
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

    #[test]
    fn an_instances_fields_before_its_id_are_its_own() {
        let stops: Stops = Arc::default();
        reclaim(&stops, "i-1");
        // moto's order: the state reason before the id, the reason after it.
        let item = |id: &str| {
            format!(
                "<item><stateReason><code>Client.UserInitiatedShutdown</code></stateReason>\
                 <tagSet><item><key>k</key></item></tagSet><instanceId>{id}</instanceId>\
                 <reason>User initiated</reason></item>"
            )
        };
        let xml = format!(
            "<instancesSet>{}{}</instancesSet>",
            item("i-1"),
            item("i-2")
        );
        let shown = as_ec2_shows(&stops, &xml);
        let (one, two) = shown.split_at(shown.find("</item><item><stateReason>").unwrap());
        assert!(
            one.contains("Server.SpotInstanceTermination") && one.contains("Service initiated")
        );
        assert!(!one.contains("Client.UserInitiatedShutdown"), "{one}");
        assert!(two.contains("Client.UserInitiatedShutdown") && two.contains("User initiated"));
    }

    #[test]
    fn a_start_without_capacity_shows_pending_then_stopped_for_that_reason() {
        let stops: Stops = Arc::default();
        let ids = vec!["i-1".to_owned()];
        record(&stops, "StopInstances", &ids, 1000.0);
        std::thread::sleep(Duration::from_millis(50));
        let answer = bounce(&stops, &ids, 100.0);
        assert!(answer.contains("<currentState><code>0</code><name>pending</name>"));
        let xml = "<item><instanceId>i-1</instanceId><instanceState><code>80</code><name>stopped</name></instanceState>\
                   <stateReason><code>Client.UserInitiatedShutdown</code><message>m</message></stateReason></item>";
        let shown = as_ec2_shows(&stops, xml);
        assert!(shown.contains("<name>pending</name>"), "{shown}");
        assert!(refusal(&stops, "StartInstances", &ids, false).is_some());
        std::thread::sleep(Duration::from_millis(60));
        let shown = as_ec2_shows(&stops, xml);
        assert!(shown.contains("<name>stopped</name>"), "{shown}");
        assert!(
            shown.contains("<code>Server.InsufficientInstanceCapacity</code>"),
            "{shown}"
        );
        assert!(!shown.contains("UserInitiatedShutdown"), "{shown}");
        // Stopped again: its user data may change, and it may be started again.
        assert!(refusal(&stops, "ModifyInstanceAttribute", &ids, true).is_none());
        assert!(refusal(&stops, "StartInstances", &ids, false).is_none());
    }
}
