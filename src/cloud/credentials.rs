//! AWS credentials without stored secrets: the job's OIDC token exchanged with STS for the role,
//! or, without a role, the standard AWS credential chain (set by another step, say).

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_sts::config::Credentials;

use super::CloudError;
use super::aws::cloud_error;
use crate::actions::Actions;
use crate::secret::Secret;

/// How long assumed credentials last: longer than any start waits.
const SESSION_SECONDS: i32 = 3600;

pub struct AssumeRole<'a> {
    pub role_arn: &'a str,
    pub web_identity_token: &'a Secret,
    pub session_name: &'a str,
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

/// An SDK configuration for `region`. The endpoint comes from the standard `AWS_ENDPOINT_URL`
/// settings when they are set.
pub async fn sdk_config(
    region: &str,
    role: Option<AssumeRole<'_>>,
    actions: &Actions,
) -> Result<SdkConfig, CloudError> {
    let region = Region::new(region.to_owned());
    let Some(role) = role else {
        return Ok(loader(&region).load().await);
    };
    // AssumeRoleWithWebIdentity is authenticated by the token itself: no other credentials.
    let anonymous = loader(&region).no_credentials().load().await;
    let out = aws_sdk_sts::Client::new(&anonymous)
        .assume_role_with_web_identity()
        .role_arn(role.role_arn)
        .role_session_name(role.session_name)
        .web_identity_token(role.web_identity_token.expose())
        .duration_seconds(SESSION_SECONDS)
        .send()
        .await
        .map_err(|e| cloud_error("AssumeRoleWithWebIdentity", e))?;
    let Some(c) = out.credentials() else {
        return Err(CloudError {
            operation: "AssumeRoleWithWebIdentity",
            code: None,
            message: "STS answered without credentials".to_owned(),
        });
    };
    for secret in [c.access_key_id(), c.secret_access_key(), c.session_token()] {
        actions.add_mask(secret);
    }
    tracing::info!(
        role = role.role_arn,
        session = role.session_name,
        "assumed the AWS role"
    );
    let credentials = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        std::time::SystemTime::try_from(*c.expiration()).ok(),
        "gpu-runner-oidc",
    );
    Ok(loader(&region)
        .credentials_provider(credentials)
        .load()
        .await)
}
