//! The fault proxy: tests program, per call, what AWS or GitHub answers instead of the real thing.
//! moto and the fake GitHub never fail on their own; real services throttle, fail with 5xx, drop
//! connections and answer slowly, and the product must live with all of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Aws,
    Github,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An AWS error answer with this code and HTTP status (`RequestLimitExceeded` 503,
    /// `InternalError` 500, `Unavailable` 503, `InsufficientInstanceCapacity` 500, ...).
    AwsError { code: &'static str, status: u16 },
    /// A bare server error.
    Status(u16),
    /// GitHub's secondary rate limit: 403 with `retry-after`.
    RateLimited { retry_after_s: u64 },
    /// The connection breaks before the answer is complete; the request never reached the service.
    Drop,
    /// The real answer, this late.
    Slow(Duration),
}

impl Fault {
    pub fn describe(&self) -> String {
        match self {
            Fault::AwsError { code, status } => format!("{code} ({status})"),
            Fault::Status(s) => format!("HTTP {s}"),
            Fault::RateLimited { retry_after_s } => {
                format!("403 secondary rate limit, retry-after {retry_after_s}")
            }
            Fault::Drop => "dropped connection".to_owned(),
            Fault::Slow(d) => format!("{:.1} s late", d.as_secs_f64()),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    service: Service,
    call: String,
    fault: Fault,
    /// How many more requests it applies to.
    left: u32,
}

/// The programmed faults, shared by the AWS front and the fake GitHub.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    fired: Arc<Mutex<Vec<String>>>,
    /// Every call that passed the proxy, with when: what the benchmark counts.
    calls: Arc<Mutex<Vec<(Service, String, std::time::Instant)>>>,
}

impl Faults {
    /// The next `times` requests of `call` (an AWS action such as `RunInstances`, or a GitHub call
    /// such as `generate-jitconfig`, see [`github_call`]) meet `fault`.
    pub fn inject(&self, service: Service, call: &str, fault: Fault, times: u32) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                service,
                call: call.to_owned(),
                fault,
                left: times,
            });
    }

    /// The fault for this request, if one is programmed; counts it.
    pub fn take(&self, service: Service, call: &str) -> Option<Fault> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push((
            service,
            call.to_owned(),
            std::time::Instant::now(),
        ));
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let rule = rules
            .iter_mut()
            .find(|r| r.service == service && r.call == call && r.left > 0)?;
        rule.left -= 1;
        let fault = rule.fault;
        self.fired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{call}: {}", fault.describe()));
        Some(fault)
    }

    /// Every call so far, and forgets them.
    pub fn take_calls(&self) -> Vec<(Service, String, std::time::Instant)> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every fault that fired, in order.
    pub fn fired(&self) -> Vec<String> {
        self.fired.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The name of a GitHub REST call, from its method and path.
pub fn github_call(method: &str, path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let call = match (method, parts.as_slice()) {
        ("POST", ["repos", _, _, "actions", "runners", "generate-jitconfig"])
        | ("POST", ["orgs", _, "actions", "runners", "generate-jitconfig"]) => "generate-jitconfig",
        ("GET", ["repos", _, _, "actions", "runners"] | ["orgs", _, "actions", "runners"]) => {
            "list-runners"
        }
        (
            "GET",
            ["repos", _, _, "actions", "runners", _] | ["orgs", _, "actions", "runners", _],
        ) => "get-runner",
        (
            "DELETE",
            ["repos", _, _, "actions", "runners", _] | ["orgs", _, "actions", "runners", _],
        ) => "delete-runner",
        ("GET", ["orgs", _, "actions", "runner-groups"]) => "list-runner-groups",
        ("GET", ["orgs", _, "actions", "runner-groups", _, "repositories"]) => "group-repositories",
        ("GET", ["repos", _, _]) => "get-repository",
        ("GET", ["repos", _, _, "actions", "runs"]) => "list-runs",
        ("GET", ["repos", _, _, "actions", "runs", _]) => "get-run",
        ("GET", ["repos", _, _, "actions", "runs", _, "jobs"]) => "run-jobs",
        ("POST", ["repos", _, _, "actions", "runs", _, "cancel"]) => "cancel-run",
        ("GET", ["repos", _, _, "installation"] | ["orgs", _, "installation"]) => "installation",
        ("GET", ["repos", _, _, "collaborators", _, "permission"]) => "collaborator-permission",
        ("POST", ["app", "installations", _, "access_tokens"]) => "access-token",
        _ => return None,
    };
    Some(call)
}

/// An answer whose body breaks off: the client sees the connection fail mid-answer.
pub fn dropped() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<axum::body::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the fault proxy dropped the connection",
        ))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/xml")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response())
}

/// GitHub's answers to a fault, or `None` for a slow answer (the caller waits, then answers).
pub fn github_answer(fault: Fault) -> Option<Response> {
    let json = |status: u16, message: &str| {
        let status = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            axum::Json(serde_json::json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
        )
            .into_response()
    };
    match fault {
        Fault::Status(s) | Fault::AwsError { status: s, .. } => Some(json(s, "Server Error")),
        Fault::RateLimited { retry_after_s } => {
            let mut r = json(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            if let Ok(v) = retry_after_s.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Fault::Drop => Some(dropped()),
        Fault::Slow(_) => None,
    }
}
