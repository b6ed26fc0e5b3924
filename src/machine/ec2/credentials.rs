//! AWS credentials without stored secrets: the job's OIDC token exchanged with STS for the role,
//! or, without a role, the standard AWS credential chain (set by another step, say).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError};
use aws_sdk_sts::config::Credentials;

use super::api::cloud_error;
use crate::actions::{Actions, Masker};
use crate::context::Context;
use crate::env::Env;
use crate::guard;
use crate::inputs::Common;
use crate::machine::failure::Failure as Error;
use crate::machine::{Kind, MachineError};
use crate::oidc;
use crate::secret::Secret;

/// How long one STS session lasts: an hour, the longest a role allows unless its
/// `MaxSessionDuration` was raised. A start that waits longer (`startup-timeout-minutes` up to
/// 120, then the rollback) gets new credentials with a fresh OIDC token before these expire: the
/// SDK asks the provider again shortly before the expiry.
const SESSION_SECONDS: i32 = 3600;

pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    /// The token already read (and checked) for this job.
    pub web_identity_token: &'a Secret,
    pub session_name: &'a str,
    /// Where later tokens come from: the job's token service, for this audience.
    pub env: &'a Env,
    pub audience: &'a str,
}

/// Every AWS call retries what AWS calls retryable (throttling such as `RequestLimitExceeded`, 5xx
/// such as `InternalError` and `Unavailable`, dropped connections and timeouts) with exponential
/// backoff and jitter, and gives up after an overall deadline; anything else fails at once.
fn loader(region: &Region) -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(6)
                .with_initial_backoff(Duration::from_millis(500))
                .with_max_backoff(Duration::from_secs(10)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        )
}

/// The role's credentials through the job's OIDC token, renewed with a fresh token whenever the
/// SDK finds the current ones about to expire.
#[derive(Clone)]
struct WebIdentity {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    session_name: String,
    env: Env,
    audience: String,
    masker: Masker,
    /// The credentials of the first exchange, handed to the SDK on its first ask.
    first: Arc<Mutex<Option<Credentials>>>,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

impl WebIdentity {
    /// One `AssumeRoleWithWebIdentity` with `token`.
    async fn exchange(&self, token: &Secret) -> Result<Credentials, MachineError> {
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(token.expose())
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .map_err(|e| cloud_error("AssumeRoleWithWebIdentity", e))?;
        let Some(c) = out.credentials() else {
            return Err(MachineError {
                provider: Kind::Ec2,
                operation: "AssumeRoleWithWebIdentity",
                code: None,
                message: "STS answered without credentials".to_owned(),
            });
        };
        for secret in [c.access_key_id(), c.secret_access_key(), c.session_token()] {
            self.masker.add_mask(secret);
        }
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            std::time::SystemTime::try_from(*c.expiration()).ok(),
            "gpu-runner-oidc",
        ))
    }

    /// New credentials with a new token from the job's token service.
    async fn renew(&self) -> Result<Credentials, CredentialsError> {
        if let Some(first) = self.first.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Ok(first);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(CredentialsError::provider_error)?;
        let token = oidc::request_token(&self.env, &http, &self.audience)
            .await
            .map_err(CredentialsError::provider_error)?;
        self.masker.add_mask(token.expose());
        let credentials = self
            .exchange(&token)
            .await
            .map_err(CredentialsError::provider_error)?;
        tracing::info!(role = %self.role_arn, "renewed the AWS role's credentials");
        Ok(credentials)
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.renew())
    }
}

/// An SDK configuration for `region`. The endpoint comes from the standard `AWS_ENDPOINT_URL`
/// settings when they are set.
pub async fn sdk_config(
    region: &str,
    role: Option<AssumeRole<'_>>,
    actions: &Actions,
) -> Result<SdkConfig, MachineError> {
    let region = Region::new(region.to_owned());
    let Some(role) = role else {
        return Ok(loader(&region).load().await);
    };
    // AssumeRoleWithWebIdentity is authenticated by the token itself: no other credentials.
    let anonymous = loader(&region).no_credentials().load().await;
    let provider = WebIdentity {
        sts: aws_sdk_sts::Client::new(&anonymous),
        role_arn: role.role_arn.to_owned(),
        session_name: role.session_name.to_owned(),
        env: role.env.clone(),
        audience: role.audience.to_owned(),
        masker: actions.masker(),
        first: Arc::default(),
    };
    // The first exchange now, so that a refusal is reported as what it is, before anything else.
    let first = provider.exchange(role.web_identity_token).await?;
    *provider.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
    tracing::info!(
        role = role.role_arn,
        session = role.session_name,
        "assumed the AWS role"
    );
    Ok(loader(&region).credentials_provider(provider).load().await)
}

/// AWS access for `region`: the role through the job's OIDC token, or the ambient credentials.
/// `judged_event` is the event the untrusted-trigger guard passed, when it ran: the token must
/// name the same one, or no credentials are asked for.
pub async fn connect(
    env: &Env,
    common: &Common,
    region: &str,
    ctx: &Context,
    actions: &Actions,
    judged_event: Option<&str>,
) -> Result<SdkConfig, Error> {
    let Some(role_arn) = &common.role_to_assume else {
        return Ok(sdk_config(region, None, actions).await?);
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| oidc::OidcError::Request(e.to_string()))?;
    let token = oidc::request_token(env, &http, &common.audience).await?;
    actions.add_mask(token.expose());
    let claims = oidc::read_claims(&token, &common.audience, &ctx.server_url)?;
    tracing::debug!(sub = %claims.sub, "read the job's OIDC token");
    if let Some(event) = judged_event {
        guard::check_claims(
            claims.event_name.as_deref(),
            claims.repository.as_deref(),
            event,
            &ctx.repository(),
        )?;
    }
    let session_name = oidc::session_name(&ctx.repository(), ctx.run_id, ctx.run_attempt);
    let role = AssumeRole {
        role_arn,
        web_identity_token: &token,
        session_name: &session_name,
        env,
        audience: &common.audience,
    };
    sdk_config(region, Some(role), actions)
        .await
        .map_err(|e| refused_by_sts(e, role_arn, &claims))
}

/// STS's refusals of the exchange, told apart: the trust policy (the token is fine, the role does
/// not admit it) from the token itself (no provider, an audience the provider does not list), each
/// with the token's claims that decide it.
fn refused_by_sts(e: MachineError, role_arn: &str, claims: &oidc::Claims) -> Error {
    if e.operation != "AssumeRoleWithWebIdentity" {
        return e.into();
    }
    let refusal = || {
        Box::new(oidc::StsRefusal {
            role: role_arn.to_owned(),
            code: e.code().to_owned(),
            message: e.message.clone(),
            sub: claims.sub.clone(),
            aud: claims.aud.to_string(),
            provider: claims.provider(),
        })
    };
    match e.code() {
        "AccessDenied" => oidc::OidcError::NotTrusted(refusal()).into(),
        "InvalidIdentityToken" => oidc::OidcError::TokenRefused(refusal()).into(),
        _ => e.into(),
    }
}
