//! The job's OIDC token: requested from the runner's token service, its claims read and checked.
//! AWS STS verifies the signature when it exchanges the token; we read the claims to fail early with
//! a clear message (expired, wrong audience) and to name the AWS session after the run.

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::env::Env;
use crate::secret::Secret;

pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "the job has no OIDC token: ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set"
    )]
    NotPermitted,
    #[error("the OIDC token request failed: {0}")]
    Request(String),
    #[error("the OIDC token is not usable: {0}")]
    Invalid(String),
    /// STS refused the exchange because the role's trust policy admits no statement for this
    /// token (STS's `AccessDenied`, "Not authorized to perform sts:AssumeRoleWithWebIdentity").
    #[error(
        "AWS STS would not let this job assume {}: {}. The job's OIDC token says sub: {}, aud: {}",
        .0.role, .0.message, .0.sub, .0.aud
    )]
    NotTrusted(Box<StsRefusal>),
    /// STS refused the token itself (`InvalidIdentityToken`): no identity provider for its
    /// issuer in the account, an audience the provider does not list, a provider STS cannot reach.
    #[error("AWS STS refused the job's OIDC token ({}): {}", .0.code, .0.message)]
    TokenRefused(Box<StsRefusal>),
}

/// What STS said when it refused the job's token, and the token's claims that decide it.
#[derive(Debug)]
pub struct StsRefusal {
    pub role: String,
    pub code: String,
    pub message: String,
    pub sub: String,
    pub aud: String,
    /// The condition keys' prefix: the provider's URL without `https://`.
    pub provider: String,
}

impl OidcError {
    pub fn hint(&self) -> String {
        match self {
            OidcError::NotPermitted => "Give the job permission to request it: add \
                `permissions: { id-token: write, contents: read }` to the job (or the workflow) that \
                runs gpu-runner. Fork pull requests never get one. Without role-to-assume, gpu-runner \
                uses the AWS credentials already in the environment instead."
                .to_owned(),
            OidcError::Request(_) => "This is usually a passing problem of GitHub's token service: \
                re-run the job. If it persists, check https://www.githubstatus.com."
                .to_owned(),
            OidcError::Invalid(_) => "Check the audience input: it must match the audience of the \
                IAM identity provider (sts.amazonaws.com by default)."
                .to_owned(),
            OidcError::NotTrusted(r) => format!(
                "The role's trust policy does not admit this job (its permissions policy is not \
                 the problem): its statement for the identity provider {provider} needs \
                 conditions this token meets, \"{provider}:sub\": \"{sub}\" (StringEquals; or \
                 a StringLike pattern such as \"repo:OWNER/REPO:*\", which admits every branch \
                 and pull request) and \"{provider}:aud\": \"{aud}\". docs/iam has trust \
                 policies for every branch, one branch and one environment.",
                provider = r.provider,
                sub = r.sub,
                aud = r.aud,
            ),
            OidcError::TokenRefused(r) => token_refused_fix(&r.message, &r.aud, &r.provider),
        }
    }
}

/// What to do about an `InvalidIdentityToken`, by STS's message (IAM User Guide, "Creating
/// OpenID Connect (OIDC) identity providers"; STS API reference, AssumeRoleWithWebIdentity).
fn token_refused_fix(message: &str, aud: &str, provider: &str) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("no openidconnect provider") || lower.contains("no oidc provider") {
        format!(
            "The AWS account has no IAM identity provider for https://{provider}: create it \
             once per account (aws iam create-open-id-connect-provider --url https://{provider} \
             --client-id-list {aud})."
        )
    } else if lower.contains("audience") {
        format!(
            "The IAM identity provider for https://{provider} does not list the token's \
             audience {aud}: add it (aws iam add-client-id-to-open-id-connect-provider \
             --open-id-connect-provider-arn arn:aws:iam::ACCOUNT:oidc-provider/{provider} \
             --client-id {aud}), or set the audience input to one the provider lists \
             (sts.amazonaws.com by default)."
        )
    } else if lower.contains("thumbprint") || lower.contains("certificate") {
        format!(
            "STS could not trust the identity provider's certificate: for \
             token.actions.githubusercontent.com AWS checks it itself; for another issuer \
             (GitHub Enterprise Server) update the provider's thumbprint \
             (aws iam update-open-id-connect-provider-thumbprint) for https://{provider}."
        )
    } else {
        format!(
            "Check the account's IAM identity provider for https://{provider} (its URL and its \
             audience {aud}); re-run the job if STS could not reach the issuer."
        )
    }
}

impl Claims {
    /// The IAM condition keys' prefix for this token's issuer: its URL without `https://`
    /// (`token.actions.githubusercontent.com`, a GHE.com or Enterprise Server issuer).
    pub fn provider(&self) -> String {
        self.iss
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_owned()
    }
}

/// The claims gpu-runner reads; GitHub sends many more.
/// `aud` is a string or a list of strings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(all) => all.iter().any(|a| a == audience),
        }
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Audience::One(a) => f.write_str(a),
            Audience::Many(all) => f.write_str(&all.join(", ")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub run_attempt: Option<String>,
    #[serde(default)]
    pub event_name: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    value: String,
}

/// Requests a token for `audience` from the runner's token service.
pub async fn request_token(
    env: &Env,
    http: &reqwest::Client,
    audience: &str,
) -> Result<Secret, OidcError> {
    let (Some(url), Some(bearer)) = (
        env.non_empty("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env.non_empty("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
    ) else {
        return Err(OidcError::NotPermitted);
    };
    let mut url = reqwest::Url::parse(url).map_err(|e| {
        OidcError::Request(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))
    })?;
    url.query_pairs_mut().append_pair("audience", audience);
    let response = http
        .get(url)
        .bearer_auth(bearer)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| OidcError::Request(e.without_url().to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(OidcError::Request(format!(
            "the token service answered HTTP {status}"
        )));
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|e| OidcError::Request(format!("unexpected answer: {}", e.without_url())))?;
    Ok(Secret::new(body.value))
}

/// Reads the claims and checks expiry, not-before, audience and issuer (GitHub's, or a GitHub
/// Enterprise Server's under `server_url`). STS verifies the signature against GitHub's keys.
pub fn read_claims(token: &Secret, audience: &str, server_url: &str) -> Result<Claims, OidcError> {
    read_claims_at(token, audience, server_url, chrono::Utc::now().timestamp())
}

/// The issuers a job's token may come from, by the server it runs on (`GITHUB_SERVER_URL`):
/// github.com's, GitHub Enterprise Server's `<server>/_services/token`, and GHE.com's (data
/// residency) `https://token.actions.<subdomain>.ghe.com` for `https://<subdomain>.ghe.com`.
pub fn issuers(server_url: &str) -> Vec<String> {
    let server = server_url.trim_end_matches('/');
    let mut all = vec![
        GITHUB_ISSUER.to_owned(),
        format!("{server}/_services/token"),
    ];
    if let Some(subdomain) = server
        .strip_prefix("https://")
        .and_then(|host| host.strip_suffix(".ghe.com"))
        .filter(|s| !s.is_empty() && !s.contains(['/', '.', ':']))
    {
        all.push(format!("https://token.actions.{subdomain}.ghe.com"));
    }
    all
}

/// Clock skew tolerated between the token service and this machine.
const LEEWAY_SECONDS: i64 = 60;

fn read_claims_at(
    token: &Secret,
    audience: &str,
    server_url: &str,
    now: i64,
) -> Result<Claims, OidcError> {
    let invalid = |why: String| OidcError::Invalid(why);
    let data = jsonwebtoken::dangerous::insecure_decode::<Claims>(token.expose())
        .map_err(|e| invalid(format!("it is not a JWT ({e})")))?;
    if data.header.alg != Algorithm::RS256 {
        return Err(invalid(format!(
            "it is signed with {:?}, not RS256",
            data.header.alg
        )));
    }
    let claims = data.claims;
    if claims.exp + LEEWAY_SECONDS < now {
        return Err(invalid(format!("it expired {} s ago", now - claims.exp)));
    }
    if claims.nbf.is_some_and(|nbf| nbf - LEEWAY_SECONDS > now) {
        return Err(invalid(
            "it is not valid yet (is this machine's clock right?)".to_owned(),
        ));
    }
    if !claims.aud.contains(audience) {
        return Err(invalid(format!(
            "its audience is {}, not {audience}",
            claims.aud
        )));
    }
    if !issuers(server_url).iter().any(|i| i == &claims.iss)
        // An enterprise with a customized issuer on github.com gets its slug appended.
        && !claims
            .iss
            .strip_prefix(GITHUB_ISSUER)
            .is_some_and(|rest| rest.starts_with('/'))
    {
        return Err(invalid(format!(
            "its issuer is {}, not GitHub Actions",
            claims.iss
        )));
    }
    Ok(claims)
}

/// An STS session name (at most 64 of `[\w+=,.@-]`) that says which run holds the credentials:
/// it shows in CloudTrail next to every call gpu-runner makes.
pub fn session_name(repository: &str, run_id: u64, run_attempt: u32) -> String {
    let suffix = format!("-{run_id}-{run_attempt}");
    let repo: String = repository
        .chars()
        .map(|c| match c {
            '/' => '@',
            c if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) => c,
            _ => '-',
        })
        .collect();
    let room = 64usize.saturating_sub(suffix.len());
    let repo: String = repo.chars().take(room).collect();
    format!("{repo}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signed like GitHub's (RS256), with the local world's test key.
    fn token(claims: serde_json::Value) -> Secret {
        let header = jsonwebtoken::Header::new(Algorithm::RS256);
        let pem = include_str!("../tests/world/src/keys/test-key.pem");
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        Secret::new(jsonwebtoken::encode(&header, &claims, &key).unwrap())
    }

    fn claims(overrides: serde_json::Value) -> serde_json::Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = serde_json::json!({
            "sub": "repo:octo/ml:ref:refs/heads/main",
            "aud": "sts.amazonaws.com",
            "iss": GITHUB_ISSUER,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now - 10,
            "repository": "octo/ml",
            "run_id": "42",
            "run_attempt": "1",
        });
        for (k, v) in overrides.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn good_claims_are_read() {
        let c = read_claims(
            &token(claims(serde_json::json!({}))),
            "sts.amazonaws.com",
            "https://github.com",
        )
        .unwrap();
        assert_eq!(c.repository.as_deref(), Some("octo/ml"));
    }

    #[test]
    fn expired_wrong_audience_and_foreign_issuers_are_refused() {
        let now = chrono::Utc::now().timestamp();
        let cases = [
            (
                serde_json::json!({"exp": now - 3600}),
                // 3600 or 3601: the clock may tick between here and the check.
                "it expired 360",
            ),
            (
                serde_json::json!({"aud": "other"}),
                "its audience is other, not sts.amazonaws.com",
            ),
            (
                serde_json::json!({"nbf": now + 3600}),
                "it is not valid yet",
            ),
            (
                serde_json::json!({"aud": ["a", "b"]}),
                "its audience is a, b",
            ),
            (
                serde_json::json!({"iss": "https://evil.example"}),
                "its issuer is https://evil.example",
            ),
        ];
        for (overrides, expected) in cases {
            let err = read_claims(
                &token(claims(overrides)),
                "sts.amazonaws.com",
                "https://github.com",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_token_that_is_not_rs256_is_refused() {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"sub": "s", "iss": GITHUB_ISSUER, "aud": "sts.amazonaws.com", "exp": now + 60});
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        let err =
            read_claims(&Secret::new(hs), "sts.amazonaws.com", "https://github.com").unwrap_err();
        assert!(err.to_string().contains("signed with HS256"), "{err}");
        let err = read_claims(
            &Secret::new("garbage"),
            "sts.amazonaws.com",
            "https://github.com",
        )
        .unwrap_err();
        assert!(err.to_string().contains("it is not a JWT"), "{err}");
    }

    #[test]
    fn a_list_audience_is_accepted_when_it_names_ours() {
        let t = token(claims(
            serde_json::json!({"aud": ["x", "sts.amazonaws.com"]}),
        ));
        assert!(read_claims(&t, "sts.amazonaws.com", "https://github.com").is_ok());
    }

    #[test]
    fn enterprise_server_issuers_are_accepted() {
        let t = token(claims(
            serde_json::json!({"iss": "https://ghe.example/_services/token"}),
        ));
        assert!(read_claims(&t, "sts.amazonaws.com", "https://ghe.example").is_ok());
    }

    #[test]
    fn ghe_com_issuers_are_accepted_for_their_own_server_only() {
        let t = token(claims(
            serde_json::json!({"iss": "https://token.actions.octo.ghe.com"}),
        ));
        assert!(read_claims(&t, "sts.amazonaws.com", "https://octo.ghe.com").is_ok());
        assert!(read_claims(&t, "sts.amazonaws.com", "https://other.ghe.com").is_err());
        assert!(read_claims(&t, "sts.amazonaws.com", "https://github.com").is_err());
        // A look-alike of github.com's issuer is not github.com's.
        let fake = token(claims(serde_json::json!({
            "iss": "https://token.actions.githubusercontent.com.evil.example"
        })));
        assert!(read_claims(&fake, "sts.amazonaws.com", "https://github.com").is_err());
        let enterprise = token(claims(serde_json::json!({
            "iss": "https://token.actions.githubusercontent.com/octo-enterprise"
        })));
        assert!(read_claims(&enterprise, "sts.amazonaws.com", "https://github.com").is_ok());
    }

    #[test]
    fn session_names_fit_sts_rules() {
        assert_eq!(session_name("octo/ml", 42, 1), "octo@ml-42-1");
        let long = session_name(&format!("o/{}", "r".repeat(100)), 12345678901, 3);
        assert_eq!(long.len(), 64);
        assert!(long.ends_with("-12345678901-3"));
        assert_eq!(session_name("o/a b", 1, 1), "o@a-b-1-1");
    }

    #[test]
    fn each_refusal_of_the_token_by_sts_gets_the_fix_for_its_cause() {
        let fix = |message: &str| {
            token_refused_fix(
                message,
                "sts.amazonaws.com",
                "token.actions.githubusercontent.com",
            )
        };
        assert!(
            fix("No OpenIDConnect provider found in your account for https://token.actions.githubusercontent.com")
                .contains("aws iam create-open-id-connect-provider --url https://token.actions.githubusercontent.com --client-id-list sts.amazonaws.com")
        );
        assert!(
            fix("Incorrect token audience").contains("add-client-id-to-open-id-connect-provider")
        );
        assert!(
            fix("OpenIDConnect provider's HTTPS certificate doesn't match configured thumbprint")
                .contains("thumbprint")
        );
        assert!(
            fix("Couldn't retrieve verification key from your identity provider")
                .contains("re-run")
        );
    }
}
