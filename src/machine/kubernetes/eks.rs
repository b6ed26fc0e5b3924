//! Reaching an EKS cluster without a stored secret. The AWS credentials the job's OIDC token
//! brings (`role-to-assume`) describe the cluster (its endpoint and certificate authority) and
//! sign the token EKS takes, as `aws eks get-token` does: a presigned STS `GetCallerIdentity`
//! request, bound to the cluster by the signed `x-k8s-aws-id` header, base64url-encoded behind
//! `k8s-aws-v1.`. EKS accepts one for 15 minutes, so a fresh one is written to the client's token
//! file every few minutes while gpu-runner runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use base64::Engine;

use super::access::Access;
use super::errors::EKS_ACCESS;
use crate::machine::ec2::api::cloud_error;
use crate::machine::failure::Failure as Error;
use crate::machine::{Kind, MachineError};

pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";
/// The header that binds a token to one cluster; it is signed with the request.
pub const CLUSTER_HEADER: &str = "x-k8s-aws-id";
/// How long the presigned request says it lasts (EKS takes a token for 15 minutes regardless).
const PRESIGNED_SECONDS: u64 = 60;
/// How often the token file gets a fresh token: well inside EKS's 15 minutes.
const REFRESH: Duration = Duration::from_secs(5 * 60);

fn failure(operation: &'static str, message: String) -> MachineError {
    MachineError {
        provider: Kind::Kubernetes,
        operation,
        code: Some(EKS_ACCESS.to_owned()),
        message,
    }
}

/// Query values as SigV4 writes them: everything but unreserved characters encoded.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The token for `cluster`: `GET {sts}/?Action=GetCallerIdentity&Version=2011-06-15` presigned
/// with `credentials` for `region`, its `host` and `x-k8s-aws-id` headers signed.
pub fn token(
    credentials: &aws_credential_types::Credentials,
    region: &str,
    sts_endpoint: &str,
    cluster: &str,
    now: SystemTime,
) -> Result<String, String> {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    let identity: aws_smithy_runtime_api::client::identity::Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(PRESIGNED_SECONDS));
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let base = format!(
        "{}/?Action=GetCallerIdentity&Version=2011-06-15",
        sts_endpoint.trim_end_matches('/')
    );
    let host = base
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| format!("no host in the STS endpoint {sts_endpoint}"))?
        .to_owned();
    let headers = [("host", host.as_str()), (CLUSTER_HEADER, cluster)];
    let signable = SignableRequest::new(
        "GET",
        base.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut url = base;
    for (name, value) in instructions.params() {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encoding::utf8_percent_encode(value, QUERY).to_string());
    }
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url)
    ))
}

/// Signs a fresh token with the role's current credentials (renewed through OIDC when they
/// near their expiry).
async fn fresh_token(
    sdk: &aws_config::SdkConfig,
    region: &str,
    cluster: &str,
) -> Result<String, MachineError> {
    let provider = sdk.credentials_provider().ok_or_else(|| {
        failure(
            "GetToken",
            "the AWS configuration has no credentials provider".to_owned(),
        )
    })?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|e| failure("GetToken", super::errors::chain(&e)))?;
    let sts = sdk
        .endpoint_url()
        .map(str::to_owned)
        .unwrap_or_else(|| sts_endpoint(region));
    token(&credentials, region, &sts, cluster, SystemTime::now())
        .map_err(|e| failure("GetToken", e))
}

/// STS's regional endpoint, which the token is signed for: the China regions are a partition of
/// their own, under `amazonaws.com.cn` (AWS General Reference, "AWS Security Token Service
/// endpoints and quotas"), and aws-iam-authenticator accepts a token only for its partition's host.
fn sts_endpoint(region: &str) -> String {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{domain}")
}

/// Writes `token` where the client reads it, replacing the last one at once.
fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    let next = path.with_extension("next");
    std::fs::write(&next, token)?;
    std::fs::rename(next, path)
}

/// A private folder for the token file: only this user may read it.
fn token_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!("gpu-runner-eks-{}", uuid::Uuid::new_v4()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A client configuration for the EKS cluster `name` in `region`.
pub async fn config(name: &str, region: &str, access: &Access<'_>) -> Result<kube::Config, Error> {
    let sdk = crate::machine::ec2::credentials::connect(
        access.env,
        access.common,
        region,
        access.ctx,
        access.actions,
        access.judged_event,
    )
    .await?;
    let described = aws_sdk_eks::Client::new(&sdk)
        .describe_cluster()
        .name(name)
        .send()
        .await
        .map_err(|e| cloud_error("DescribeCluster", e))?;
    let cluster = described.cluster();
    let endpoint = cluster.and_then(|c| c.endpoint()).ok_or_else(|| {
        failure(
            "DescribeCluster",
            format!("the EKS cluster {name} has no endpoint yet (is it still being created?)"),
        )
    })?;
    let ca = cluster
        .and_then(|c| c.certificate_authority())
        .and_then(|c| c.data())
        .ok_or_else(|| {
            failure(
                "DescribeCluster",
                format!("the EKS cluster {name} shows no certificate authority"),
            )
        })?;
    let token = fresh_token(&sdk, region, name).await?;
    access.actions.add_mask(&token);
    let dir = token_dir().map_err(|e| failure("GetToken", e.to_string()))?;
    let path = dir.join("token");
    write_token(&path, &token).map_err(|e| failure("GetToken", e.to_string()))?;
    let masker = access.actions.masker();
    let (refresh_path, cluster_name, region_name) =
        (path.clone(), name.to_owned(), region.to_owned());
    // The client re-reads the file every minute; the task ends with the process.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH).await;
            match fresh_token(&sdk, &region_name, &cluster_name).await {
                Ok(token) => {
                    masker.add_mask(&token);
                    if let Err(e) = write_token(&refresh_path, &token) {
                        tracing::warn!(error = %e, "could not write a fresh EKS token");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not sign a fresh EKS token"),
            }
        }
    });
    let yaml = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {
            "server": endpoint, "certificate-authority-data": ca,
        }}],
        "users": [{"name": "gpu-runner", "user": {"tokenFile": path.display().to_string()}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "gpu-runner"}}],
        "current-context": name,
    });
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml.to_string())
        .map_err(|e| failure("ReadKubeconfig", super::errors::chain(&e)))?;
    let options = kube::config::KubeConfigOptions::default();
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| failure("ReadKubeconfig", super::errors::chain(&e)))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_china_region_signs_for_its_own_partitions_sts() {
        assert_eq!(
            sts_endpoint("us-east-1"),
            "https://sts.us-east-1.amazonaws.com"
        );
        assert_eq!(
            sts_endpoint("cn-northwest-1"),
            "https://sts.cn-northwest-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn a_token_is_a_presigned_get_caller_identity_bound_to_the_cluster() {
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("session/token+=".to_owned()),
            None,
            "test",
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let token = token(
            &credentials,
            "us-east-1",
            "https://sts.us-east-1.amazonaws.com",
            "gpu-ci",
            now,
        )
        .unwrap();
        let encoded = token.strip_prefix(TOKEN_PREFIX).expect("the prefix");
        assert!(!encoded.contains('=') && !encoded.contains('+') && !encoded.contains('/'));
        let url = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap();
        assert!(
            url.starts_with(
                "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20261130%2Fus-east-1%2Fsts%2Faws4_request",
            "X-Amz-Expires=60",
            "X-Amz-SignedHeaders=host%3Bx-k8s-aws-id",
            "X-Amz-Security-Token=session%2Ftoken%2B%3D",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(part), "{part} not in {url}");
        }
        // Another cluster's token differs: the header is signed.
        let other = super::token(
            &credentials,
            "us-east-1",
            "https://sts.us-east-1.amazonaws.com",
            "other",
            now,
        )
        .unwrap();
        assert_ne!(token, other);
    }
}
