//! The world's AWS endpoint: passes every request through to moto, except `GetConsoleOutput`,
//! which moto answers with canned text: here it returns what the simulated instance really printed.
//! The fault proxy sits here too: a programmed fault answers instead of moto.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::faults::{self, Fault, Faults, Service};

/// What each instance printed on its console, by instance id.
pub type Consoles = Arc<Mutex<HashMap<String, String>>>;

#[derive(Clone)]
pub struct Front {
    pub moto_url: String,
    pub consoles: Consoles,
    pub http: reqwest::Client,
    /// AWS's public SSM parameters that moto does not ship (it refuses to create `/aws/` names).
    pub public_parameters: Arc<HashMap<String, String>>,
    /// Credentials STS handed out through this endpoint: secrets a log must never show.
    pub issued: Arc<Mutex<Vec<String>>>,
    pub faults: Faults,
}

/// The AWS action a request calls: `Action=` of the query protocols (EC2, STS), or the
/// `x-amz-target` of the JSON ones (SSM).
fn action(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if let Some(target) = headers.get("x-amz-target").and_then(|t| t.to_str().ok()) {
        return target.rsplit('.').next().map(str::to_owned);
    }
    form_value(body, "Action")
}

/// How the service of `action` answers an error: EC2's XML, STS's XML, or SSM's JSON.
fn aws_error(headers: &HeaderMap, action: &str, code: &str, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("the fault proxy answers {code}");
    if headers.get("x-amz-target").is_some() {
        let body = serde_json::json!({"__type": code, "message": message}).to_string();
        return (
            status,
            [
                ("content-type", "application/x-amz-json-1.1"),
                ("x-amzn-errortype", code),
            ],
            body,
        )
            .into_response();
    }
    let xml = if action.starts_with("AssumeRole") {
        format!(
            "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        )
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        )
    };
    (status, [("content-type", "text/xml")], xml).into_response()
}

/// The values of `<tag>…</tag>` in an XML answer.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v.to_owned()))
        .collect()
}

/// The public parameter the default `image-id` names, answered as SSM would.
fn public_parameter(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    if target != "AmazonSSM.GetParameter" {
        return None;
    }
    let request: serde_json::Value = serde_json::from_slice(body).ok()?;
    let name = request.get("Name")?.as_str()?;
    let value = front.public_parameters.get(name)?;
    let answer = serde_json::json!({"Parameter": {
        "Name": name, "Type": "String", "Value": value, "Version": 1, "DataType": "aws:ec2:image",
        "ARN": format!("arn:aws:ssm:us-east-1::parameter{name}"),
    }});
    Some(
        (
            [("content-type", "application/x-amz-json-1.1")],
            answer.to_string(),
        )
            .into_response(),
    )
}

fn form_value(body: &[u8], key: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.replace('+', " ").replace("%2D", "-"))
    })
}

async fn handle(
    State(front): State<Front>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = action(&headers, &body).unwrap_or_default();
    match front.faults.take(Service::Aws, &call) {
        Some(Fault::AwsError { code, status }) => return aws_error(&headers, &call, code, status),
        Some(Fault::Status(status)) => {
            return StatusCode::from_u16(status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
        Some(Fault::Drop) => return faults::dropped(),
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::RateLimited { .. }) => {
            return aws_error(&headers, &call, "RequestLimitExceeded", 503);
        }
        None => {}
    }
    if let Some(answer) = public_parameter(&front, &headers, &body) {
        return answer;
    }
    if form_value(&body, "Action").as_deref() == Some("GetConsoleOutput") {
        let id = form_value(&body, "InstanceId").unwrap_or_default();
        let text = front
            .consoles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
            .unwrap_or_default();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetConsoleOutputResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>world</requestId><instanceId>{id}</instanceId><timestamp>{}</timestamp><output>{}</output></GetConsoleOutputResponse>",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            base64::engine::general_purpose::STANDARD.encode(text),
        );
        return ([("content-type", "text/xml")], xml).into_response();
    }
    let url = format!(
        "{}{}",
        front.moto_url,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = front.http.request(method, url).body(body);
    for (name, value) in headers
        .iter()
        .filter(|(n, _)| *n != "host" && *n != "content-length")
    {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let mut out = Response::builder().status(status);
            for (name, value) in answer
                .headers()
                .iter()
                .filter(|(n, _)| *n != "content-length" && *n != "transfer-encoding")
            {
                out = out.header(name, value);
            }
            let bytes = answer.bytes().await.unwrap_or_default();
            if let Ok(text) = std::str::from_utf8(&bytes)
                && text.contains("<SecretAccessKey>")
            {
                let mut issued = front.issued.lock().unwrap_or_else(|e| e.into_inner());
                for tag in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
                    issued.extend(xml_values(text, tag));
                }
            }
            out.body(Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

pub fn router(front: Front) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(front)
}
