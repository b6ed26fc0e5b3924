//! GitHub App authentication: a short-lived app JWT finds the repository's installation and mints
//! an installation token, which then manages the runners like any token.

use serde::Deserialize;

use super::GithubError;
use crate::context::Context;
use crate::inputs::RunnerScope;
use crate::secret::Secret;

#[derive(Deserialize)]
struct Installation {
    id: u64,
}

#[derive(Deserialize)]
struct AccessToken {
    token: String,
}

/// Why the App could not authenticate, with what to do about it.
#[derive(Debug)]
pub struct AppFailure {
    pub source: GithubError,
    pub hint: String,
}

fn failure(status: Option<u16>, message: String, hint: &str) -> AppFailure {
    AppFailure {
        source: GithubError {
            operation: "authenticating as the GitHub App",
            status,
            message,
        },
        hint: hint.to_owned(),
    }
}

/// The app JWT: RS256, issued a minute back for clock skew, valid for under ten minutes.
pub fn app_jwt(app_id: &str, private_key: &Secret, now: i64) -> Result<Secret, AppFailure> {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).map_err(|e| {
            failure(
                None,
                format!("github-app-private-key is not an RSA private key in PEM form ({e})"),
                "Paste the whole .pem file from the App's settings page (Private keys → Generate a \
             private key) into the secret.",
            )
        })?;
    let claims = serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": app_id});
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    jsonwebtoken::encode(&header, &claims, &key)
        .map(Secret::new)
        .map_err(|e| {
            failure(
                None,
                format!("could not sign the app JWT: {e}"),
                "Check github-app-private-key.",
            )
        })
}

/// What a mode does with GitHub besides managing runners: the installation token asks for that
/// and nothing more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenNeeds {
    /// Read, cancel and re-run workflow runs (cleanup, retry).
    pub actions: bool,
    /// Read a pull request's head commit (a start approved by a comment).
    pub pull_requests: bool,
}

impl TokenNeeds {
    /// The runners and the workflow runs: cleanup reads and cancels runs, retry re-runs them.
    pub const RUNS: TokenNeeds = TokenNeeds {
        actions: true,
        pull_requests: false,
    };
}

/// The body of the installation token request: this repository only, and only the permissions
/// the mode needs. Without it, the token covers every repository of the installation with every
/// permission the App has.
pub fn token_request(repo: &str, scope: RunnerScope, needs: TokenNeeds) -> serde_json::Value {
    let mut permissions = serde_json::Map::new();
    let runners = match scope {
        RunnerScope::Repo => "administration",
        RunnerScope::Org => "organization_self_hosted_runners",
    };
    permissions.insert(runners.to_owned(), "write".into());
    if needs.actions {
        permissions.insert("actions".to_owned(), "write".into());
    }
    if needs.pull_requests {
        permissions.insert("pull_requests".to_owned(), "read".into());
    }
    serde_json::json!({"repositories": [repo], "permissions": permissions})
}

/// An installation token for the repository of `ctx`, or (with `RunnerScope::Org`) for the
/// organization that owns it, limited to this repository and to what `needs` names.
pub async fn installation_token(
    api_url: &str,
    app_id: &str,
    private_key: &Secret,
    ctx: &Context,
    scope: RunnerScope,
    needs: TokenNeeds,
) -> Result<(Secret, Secret), AppFailure> {
    let (owner, repo) = (&ctx.owner, &ctx.repo);
    let (installation_url, installed_on, permission) = match scope {
        RunnerScope::Repo => (
            format!("{api_url}/repos/{owner}/{repo}/installation"),
            format!("the repository {owner}/{repo}"),
            "the repository permission Administration: read and write",
        ),
        RunnerScope::Org => (
            format!("{api_url}/orgs/{owner}/installation"),
            format!("the organization {owner}"),
            "the organization permission Self-hosted runners: read and write",
        ),
    };
    let jwt = app_jwt(app_id, private_key, chrono::Utc::now().timestamp())?;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| failure(None, e.to_string(), "Re-run the job."))?;
    let call = |request: reqwest::RequestBuilder| {
        request
            .bearer_auth(jwt.expose())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header(
                "user-agent",
                concat!("gpu-runner/", env!("CARGO_PKG_VERSION")),
            )
            .send()
    };
    let answer = call(http.get(installation_url)).await.map_err(|e| {
        failure(
            None,
            e.without_url().to_string(),
            "Re-run the job; check https://www.githubstatus.com.",
        )
    })?;
    let installation: Installation = match answer.status().as_u16() {
        200 => answer
            .json()
            .await
            .map_err(|e| failure(Some(200), e.to_string(), "Re-run the job."))?,
        401 => {
            return Err(failure(
                Some(401),
                "GitHub refused the app JWT".to_owned(),
                "Check that github-app-id is the ID of the App whose private key you passed, and \
                 that the key was not revoked.",
            ));
        }
        404 => {
            return Err(failure(
                Some(404),
                format!("the App is not installed on {installed_on}"),
                &format!(
                    "Install the App on {installed_on} (the App's settings → Install App), \
                     with {permission}."
                ),
            ));
        }
        status => {
            return Err(failure(
                Some(status),
                format!("GitHub answered HTTP {status}"),
                "Re-run the job.",
            ));
        }
    };
    let request = token_request(repo, scope, needs);
    let answer = call(
        http.post(format!(
            "{api_url}/app/installations/{}/access_tokens",
            installation.id
        ))
        .json(&request),
    )
    .await
    .map_err(|e| failure(None, e.without_url().to_string(), "Re-run the job."))?;
    let status = answer.status().as_u16();
    if status != 201 {
        let message = answer
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let wanted = request["permissions"].to_string();
        return Err(failure(
            Some(status),
            format!("GitHub refused an installation token (HTTP {status}): {message}"),
            &format!(
                "gpu-runner asks for a token for {owner}/{repo} only, with the permissions \
                 {wanted}. Check that the App's installation on {installed_on} includes this \
                 repository and grants them ({permission})."
            ),
        ));
    }
    let token: AccessToken = answer
        .json()
        .await
        .map_err(|e| failure(Some(status), e.to_string(), "Re-run the job."))?;
    Ok((Secret::new(token.token), jwt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_asks_for_one_repository_and_only_what_the_mode_needs() {
        assert_eq!(
            token_request("ml", RunnerScope::Repo, TokenNeeds::default()),
            serde_json::json!({"repositories": ["ml"],
                               "permissions": {"administration": "write"}})
        );
        assert_eq!(
            token_request(
                "ml",
                RunnerScope::Org,
                TokenNeeds {
                    actions: true,
                    pull_requests: true
                }
            ),
            serde_json::json!({"repositories": ["ml"], "permissions": {
                "organization_self_hosted_runners": "write", "actions": "write",
                "pull_requests": "read"}})
        );
    }

    #[test]
    fn the_app_jwt_is_rs256_with_a_short_life() {
        let pem = include_str!("../../tests/world/src/keys/test-key.pem");
        let jwt = app_jwt("123456", &Secret::new(pem), 1_000_000).unwrap();
        let data =
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(jwt.expose()).unwrap();
        assert_eq!(data.header.alg, jsonwebtoken::Algorithm::RS256);
        assert_eq!(data.claims["iss"], "123456");
        assert_eq!(data.claims["iat"], 999_940);
        assert_eq!(data.claims["exp"], 1_000_540);
    }

    #[test]
    fn a_key_that_is_not_rsa_pem_says_so() {
        let key = Secret::new(
            "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----",
        );
        let Err(e) = app_jwt("1", &key, 0) else {
            panic!("accepted a bad key")
        };
        assert!(
            e.source
                .message
                .starts_with("github-app-private-key is not an RSA private key in PEM form")
        );
    }
}
