//! A fake of the runner's OIDC token service: `ACTIONS_ID_TOKEN_REQUEST_URL` answers
//! `{"value": <jwt>}` for the request token, signed with a test RSA key whose JWKS it serves.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

const KEY: &str = include_str!("keys/test-key.pem");
const PUBLIC_KEY: &str = include_str!("keys/test-key.pub.pem");

/// The key the world's tokens are signed with, as the identity provider's JWKS publishes it.
pub fn public_key() -> String {
    PUBLIC_KEY.to_owned()
}
const JWKS: &str = include_str!("keys/oidc-test-jwks.json");
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";

#[derive(Clone)]
pub struct Oidc {
    pub request_token: String,
    pub repository: String,
    pub run_id: u64,
    /// Every token handed out.
    pub issued: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The `iss` of the tokens: GitHub's, or a GitHub Enterprise Server's
    /// (`https://HOST/_services/token`).
    pub issuer: std::sync::Arc<std::sync::Mutex<String>>,
    /// The event that started the run (`event_name`): `push` unless a test says otherwise.
    pub event: std::sync::Arc<std::sync::Mutex<String>>,
    /// The run's git ref (`ref`, and `sub` as `repo:OWNER/REPO:ref:REF`): `refs/heads/main`
    /// unless a test runs a branch's workflow.
    pub git_ref: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Oidc {
    /// A token shaped like GitHub's for this repository and run.
    pub fn token(&self, audience: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let issuer = self
            .issuer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let git_ref = self
            .git_ref
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let claims = json!({
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": format!("repo:{}:ref:{git_ref}", self.repository),
            "aud": audience,
            "ref": git_ref,
            "ref_type": "branch",
            "repository": self.repository,
            "repository_owner": self.repository.split('/').next().unwrap_or_default(),
            "repository_visibility": "private",
            "run_id": self.run_id.to_string(),
            "run_attempt": "1",
            "event_name": self.event.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "actor": "octocat",
            "runner_environment": "github-hosted",
            "iss": issuer,
            "nbf": now - 5,
            "iat": now - 5,
            "exp": now + 300,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("gpu-runner-world-test-key".to_owned());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(KEY.as_bytes())
            .expect("the test key is a PEM RSA key");
        let token =
            jsonwebtoken::encode(&header, &claims, &key).expect("signing with the test key");
        self.issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(token.clone());
        token
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    audience: Option<String>,
}

async fn token(State(o): State<Oidc>, headers: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(o.request_token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad request token").into_response();
    }
    let audience = q
        .audience
        .unwrap_or_else(|| "https://github.com/octo".to_owned());
    Json(json!({"count": 1, "value": o.token(&audience)})).into_response()
}

async fn jwks() -> Response {
    ([("content-type", "application/json")], JWKS).into_response()
}

pub fn router(oidc: Oidc) -> axum::Router {
    axum::Router::new()
        .route("/_oidc/token", get(token))
        .route("/_oidc/.well-known/jwks", get(jwks))
        .with_state(oidc)
}
