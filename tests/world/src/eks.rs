//! An EKS cluster of the world: the world's Kubernetes control plane, whose endpoint and
//! certificate authority the world's AWS front gives in `DescribeCluster` (after IAM's check of
//! the role's policy on the cluster's ARN, see `aws_front::eks_describe`), and
//! an authenticator webhook in front of its API server that takes EKS tokens as EKS does
//! (aws-iam-authenticator): `k8s-aws-v1.` + a base64url presigned STS `GetCallerIdentity` whose
//! `x-k8s-aws-id` header names this cluster, signed within 15 minutes by live AWS credentials.
//! The identity STS gives for them must be a session of the role that has the cluster's access
//! entry; its Kubernetes groups are the entry's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

use crate::World;
use crate::kubernetes::{Cluster, NodeSpec};

/// What the authenticator knows: the world's AWS, the cluster, and its one access entry.
#[derive(Clone)]
struct Authenticator {
    cluster: String,
    region: String,
    /// The world's AWS endpoint, which stands for STS's (`https://sts.REGION.amazonaws.com`).
    sts_url: String,
    secrets: crate::aws_front::Secrets,
    /// The access entry: this role's sessions are `username` their session ARN, in `groups`.
    role_arn: String,
    groups: Vec<String>,
}

fn refused(why: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
           "status": {"authenticated": false, "error": why}})
}

fn query(url: &str) -> HashMap<String, String> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Some(hex) = v.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Authenticator {
    /// The username and groups of `token`, or why it is refused.
    async fn review(&self, token: &str) -> Result<(String, Vec<String>), String> {
        let encoded = token
            .strip_prefix("k8s-aws-v1.")
            .ok_or("not an EKS token")?;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("the token is not base64url")?;
        let base = format!(
            "{}/?Action=GetCallerIdentity&Version=2011-06-15",
            self.sts_url.trim_end_matches('/')
        );
        if !url.starts_with(&format!("{base}&")) {
            return Err(format!("not a GetCallerIdentity request to STS: {url}"));
        }
        let q = query(&url);
        let get = |k: &str| q.get(k).cloned().ok_or(format!("no {k}"));
        if get("X-Amz-SignedHeaders")? != "host;x-k8s-aws-id" {
            return Err("the cluster header x-k8s-aws-id is not signed".to_owned());
        }
        let credential = get("X-Amz-Credential")?;
        let mut scope = credential.split('/');
        let (key_id, _day, region, service) = (
            scope.next().unwrap_or_default(),
            scope.next().unwrap_or_default(),
            scope.next().unwrap_or_default(),
            scope.next().unwrap_or_default(),
        );
        if service != "sts" || region != self.region {
            return Err(format!("signed for {service} in {region}"));
        }
        let signed_at =
            chrono::NaiveDateTime::parse_from_str(&get("X-Amz-Date")?, "%Y%m%dT%H%M%SZ")
                .map_err(|e| e.to_string())?
                .and_utc();
        if chrono::Utc::now() - signed_at > chrono::TimeDelta::minutes(15) {
            return Err("the token is older than 15 minutes".to_owned());
        }
        let expires: u64 = get("X-Amz-Expires")?.parse().map_err(|_| "X-Amz-Expires")?;
        let (secret, session) = self
            .secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key_id)
            .cloned()
            .ok_or("an access key STS never issued")?;
        if q.get("X-Amz-Security-Token") != session.as_ref() {
            return Err("the session token does not match the access key".to_owned());
        }
        // The signature STS would compute for this request, with this cluster's header.
        let credentials =
            aws_credential_types::Credentials::new(key_id, &secret, session.clone(), None, "sts");
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            credentials.clone().into();
        let mut settings = aws_sigv4::http_request::SigningSettings::default();
        settings.signature_location = aws_sigv4::http_request::SignatureLocation::QueryParams;
        settings.expires_in = Some(Duration::from_secs(expires));
        let time = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(signed_at.timestamp()).unwrap_or(0));
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("sts")
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let host = base
            .split("://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_owned();
        let signable = aws_sigv4::http_request::SignableRequest::new(
            "GET",
            base.as_str(),
            [
                ("host", host.as_str()),
                ("x-k8s-aws-id", self.cluster.as_str()),
            ]
            .into_iter(),
            aws_sigv4::http_request::SignableBody::Bytes(&[]),
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        let expected = instructions
            .params()
            .iter()
            .find(|(k, _)| *k == "X-Amz-Signature")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        if get("X-Amz-Signature")? != expected {
            return Err("the signature does not match (another cluster's token?)".to_owned());
        }
        // Who STS says the credentials are (an expired session is refused there).
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .endpoint_url(&self.sts_url)
            .credentials_provider(credentials)
            .load()
            .await;
        let who = aws_sdk_sts::Client::new(&config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| format!("STS: {e:?}"))?;
        let arn = who.arn().unwrap_or_default().to_owned();
        // An assumed role's session: arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION.
        let role = self.role_arn.rsplit('/').next().unwrap_or_default();
        if !arn.contains(&format!(":assumed-role/{role}/")) {
            return Err(format!("{arn} has no access entry in this cluster"));
        }
        Ok((arn, self.groups.clone()))
    }
}

async fn authenticate(State(a): State<Arc<Authenticator>>, body: String) -> axum::Json<Value> {
    let review: Value = serde_json::from_str(&body).unwrap_or_default();
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    axum::Json(match a.review(token).await {
        Ok((username, groups)) => json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "status": {"authenticated": true, "user": {"username": username, "groups": groups}},
        }),
        Err(why) => refused(&why),
    })
}

impl World {
    /// An EKS cluster named `name` with these nodes, whose access entry maps the world's role to
    /// the Kubernetes `groups` (bind gpu-runner's Role to one of them).
    pub fn eks_cluster(
        &self,
        name: &str,
        nodes: &[NodeSpec],
        groups: &[&str],
    ) -> Result<Cluster, String> {
        let authenticator = Arc::new(Authenticator {
            cluster: name.to_owned(),
            region: self.region.clone(),
            sts_url: self.aws_url.clone(),
            secrets: self.aws_secrets.clone(),
            role_arn: self.role_arn.clone(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
        let app = axum::Router::new()
            .route("/authenticate", post(authenticate))
            .with_state(authenticator);
        let port = crate::kubelet_api::serve_in_background(|tcp| async move {
            let _ = axum::serve(tcp, app).await;
        })?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let webhook = dir.path().join("webhook.kubeconfig");
        std::fs::write(
            &webhook,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: aws-iam-authenticator\n  \
                 cluster:\n    server: http://127.0.0.1:{port}/authenticate\nusers:\n- name: \
                 apiserver\ncontexts:\n- name: webhook\n  context:\n    cluster: \
                 aws-iam-authenticator\n    user: apiserver\ncurrent-context: webhook\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let cluster = Cluster::start_with(
            nodes,
            &[
                format!(
                    "--authentication-token-webhook-config-file={}",
                    webhook.display()
                ),
                "--authentication-token-webhook-version=v1".to_owned(),
            ],
        )?;
        // The API server read the file at its start; the folder may go.
        drop(dir);
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&cluster.ca_pem);
        self.eks_endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), (cluster.url.clone(), ca));
        Ok(cluster)
    }
}
