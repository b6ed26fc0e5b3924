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

/// Secret key and session token (none for an IAM user's key), by access key id.
pub type Secrets = Arc<Mutex<HashMap<String, (String, Option<String>)>>>;

/// The world's EKS clusters as `DescribeCluster` shows them: endpoint and certificate authority
/// (base64 PEM), by name. moto makes up both; these are the world's API servers.
pub type EksEndpoints = Arc<Mutex<HashMap<String, (String, String)>>>;

/// Stopped instances that EC2 cannot start again for now, by id, and how EC2 says so.
pub type ZoneFull = Arc<Mutex<HashMap<String, Shortage>>>;
/// Spot prices the world sets, USD an hour, by instance type and zone.
pub type SpotPrices = Arc<Mutex<HashMap<(String, String), f64>>>;

/// How EC2 answers a start of a stopped instance whose zone has no capacity of its type: both
/// are common for GPU types (EC2 User Guide, "Troubleshoot instance launch issues").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// `StartInstances` fails with `InsufficientInstanceCapacity`.
    RefusesStart,
    /// `StartInstances` succeeds (`pending`), and the instance is `stopped` again a moment
    /// later with the state reason `Server.InsufficientInstanceCapacity`.
    StopsAgain,
}

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
    /// Whether the account has the spot service-linked role: one that never ran spot has not, and
    /// a role without `iam:CreateServiceLinkedRole` cannot create it on the first spot launch.
    pub spot_role: Arc<std::sync::atomic::AtomicBool>,
    /// The world's clock: an STS session of an hour lasts an hour of it.
    pub clock_scale: f64,
    /// When each STS session handed out here expires, by its session token (on the real clock).
    pub sessions: Arc<Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>>,
    /// STS as the world's IAM user: how a web identity becomes the role's session once moto
    /// enforces IAM (moto would refuse the unsigned `AssumeRoleWithWebIdentity`).
    pub sts: Option<aws_sdk_sts::Client>,
    /// The public key of the world's OIDC provider, which STS checks the token's signature with.
    pub oidc_key: String,
    /// The secret key (and session token) of every STS session handed out here, and of the
    /// world's own IAM user, by access key id.
    pub secrets: Secrets,
    /// Instances stopped through a front, and until when each is `stopping`: moto stops at once.
    pub stops: crate::stopping::Stops,
    /// The role's permissions policy, evaluated for what moto cannot: resources and conditions.
    pub iam: Option<Arc<Enforcer>>,
    pub eks_endpoints: EksEndpoints,
    /// The world's instance metadata service: its IMDSv2 tokens (by token, the instance), and
    /// the instance each set of role credentials it handed out belongs to (by access key id).
    pub imds: Imds,
    /// The account's vCPU quotas, which RunInstances and Service Quotas answer by.
    pub quotas: crate::quotas::Quotas,
    /// Stopped instances whose zone has no capacity to start them again.
    pub zone_full: ZoneFull,
    pub spot_prices: SpotPrices,
}

#[derive(Clone, Default)]
pub struct Imds {
    pub tokens: Arc<Mutex<HashMap<String, String>>>,
    pub keys: Arc<Mutex<HashMap<String, String>>>,
    /// The spot interruption notice of each instance AWS is taking back: the JSON
    /// `spot/instance-action` answers with.
    pub notices: Arc<Mutex<HashMap<String, String>>>,
    /// Each instance's zone, as EC2 placed it: `placement/availability-zone` answers with it.
    pub zones: Arc<Mutex<HashMap<String, String>>>,
}

/// What the front needs to evaluate the role's policy as IAM would.
pub struct Enforcer {
    pub policy: serde_json::Value,
    /// The world's own view of EC2, to read what a request names (tags, images, subnets).
    pub ec2: aws_sdk_ec2::Client,
    /// The world's own view of SSM: a parameter's tags.
    pub ssm: aws_sdk_ssm::Client,
    pub account: String,
    pub region: String,
    /// The policy of the role the world's instance profile hands its instances
    /// (`docs/iam/instance-role-policy.json`).
    pub instance_policy: serde_json::Value,
    /// Every role gpu-runner may assume, by name: its trust policy and its permissions policy.
    pub roles: HashMap<String, (serde_json::Value, serde_json::Value)>,
    /// The role each session handed out here belongs to, by access key id.
    pub sessions: Arc<Mutex<HashMap<String, String>>>,
}

impl Enforcer {
    /// The permissions policy of the role whose session signed the request.
    fn policy_of(&self, headers: &HeaderMap) -> &serde_json::Value {
        access_key(headers)
            .and_then(|k| {
                self.sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&k)
                    .cloned()
            })
            .and_then(|role| self.roles.get(&role))
            .map(|(_, permissions)| permissions)
            .unwrap_or(&self.policy)
    }
}

/// Numbered members of a form list (`Prefix.1`, `Prefix.2`, ...) until one is missing.
fn form_list(body: &[u8], prefix: &str, suffix: &str) -> Vec<String> {
    (1..)
        .map_while(|n| form_value(body, &format!("{prefix}.{n}{suffix}")))
        .collect()
}

/// The role's request, judged as IAM would with the conditions of its policy (moto evaluated
/// its actions already): EC2's `UnauthorizedOperation` when they refuse it. Only the role's
/// sessions (requests with a session token) are judged; the world's own user is not.
async fn iam_refusal(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let enforcer = front.iam.as_ref()?;
    headers.get("x-amz-security-token")?;
    let call = form_value(body, "Action")?;
    let arn = |kind: &str, id: &str| {
        format!(
            "arn:aws:ec2:{}:{}:{kind}/{id}",
            enforcer.region, enforcer.account
        )
    };
    let resources = match call.as_str() {
        "RunInstances" => run_instances_resources(enforcer, body, &arn).await,
        "TerminateInstances"
        | "GetConsoleOutput"
        | "StartInstances"
        | "StopInstances"
        | "ModifyInstanceAttribute"
        | "CreateTags" => {
            let ids = match call.as_str() {
                "GetConsoleOutput" | "ModifyInstanceAttribute" => {
                    form_value(body, "InstanceId").into_iter().collect()
                }
                "CreateTags" => form_list(body, "ResourceId", ""),
                _ => form_list(body, "InstanceId", ""),
            };
            // What a CreateTags asks to set: `aws:RequestTag/*` and `aws:TagKeys`.
            let keys = form_list(body, "Tag", ".Key");
            let values = form_list(body, "Tag", ".Value");
            let described = enforcer
                .ec2
                .describe_instances()
                .set_instance_ids(Some(ids.clone()))
                .send()
                .await
                .ok()?;
            described
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(|i| {
                    let resource = i.tags().iter().fold(
                        crate::iam::Resource::new(arn("instance", i.instance_id().unwrap_or(""))),
                        |r, t| {
                            r.key(
                                &format!("aws:ResourceTag/{}", t.key().unwrap_or_default()),
                                t.value().unwrap_or_default(),
                            )
                        },
                    );
                    keys.iter().zip(&values).fold(resource, |r, (k, v)| {
                        r.key(&format!("aws:RequestTag/{k}"), v.as_str())
                            .key("aws:TagKeys", k.as_str())
                    })
                })
                .collect()
        }
        _ => return None,
    };
    let refusal = crate::iam::evaluate(
        enforcer.policy_of(headers),
        &format!("ec2:{call}"),
        &resources,
    )
    .err()?;
    // EC2's own words, with what refused (EC2 encodes the rest in an authorization message).
    let why = match refusal.split_once(" on resource: ") {
        Some((_, rest)) if refusal.starts_with("no statement") => format!(
            "is not authorized to perform: ec2:{call} on resource: {rest} because no \
             identity-based policy allows the ec2:{call} action"
        ),
        Some((_, rest)) => format!(
            "is not authorized to perform: ec2:{call} on resource: {} with an explicit deny in \
             an identity-based policy",
            rest.split(" is denied by ").next().unwrap_or(rest)
        ),
        None => refusal,
    };
    Some(service_error(
        headers,
        &call,
        "UnauthorizedOperation",
        403,
        &format!(
            "You are not authorized to perform this operation. User: arn:aws:sts::{}:assumed-role/gpu-ci/gpu-runner {why}.",
            enforcer.account
        ),
    ))
}

/// The access key id a request is signed with.
fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    Some(
        auth.split("Credential=")
            .nth(1)?
            .split('/')
            .next()?
            .to_owned(),
    )
}

/// A call on a JIT config's SSM parameter (`/gpu-runner/jit/...`), judged as IAM would with the
/// conditions moto ignores: the role's policy for gpu-runner's sessions, the instance role's for
/// credentials the world's IMDS handed an instance, which carry `ec2:SourceInstanceARN` (IAM's
/// global condition key for requests signed with instance role credentials). IAM judges before SSM
/// looks for the parameter, so reading one that does not exist (yet) is `AccessDeniedException`
/// under a tag condition, as on AWS.
async fn ssm_refusal(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let enforcer = front.iam.as_ref()?;
    let call = headers
        .get("x-amz-target")?
        .to_str()
        .ok()?
        .strip_prefix("AmazonSSM.")?
        .to_owned();
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let name = json["Name"]
        .as_str()
        .or_else(|| json["ResourceId"].as_str())?
        .to_owned();
    if !name.starts_with("/gpu-runner/") {
        return None;
    }
    let key = access_key(headers)?;
    let instance = front
        .imds
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let (policy, who) = match &instance {
        Some(arn) => (
            &enforcer.instance_policy,
            format!(
                "arn:aws:sts::{}:assumed-role/gpu-runner-instance/{}",
                enforcer.account,
                arn.rsplit('/').next().unwrap_or_default()
            ),
        ),
        None if headers.get("x-amz-security-token").is_some() => (
            enforcer.policy_of(headers),
            format!(
                "arn:aws:sts::{}:assumed-role/gpu-ci/gpu-runner",
                enforcer.account
            ),
        ),
        None => return None,
    };
    let arn = format!(
        "arn:aws:ssm:{}:{}:parameter{name}",
        enforcer.region, enforcer.account
    );
    let mut resource = crate::iam::Resource::new(arn.clone());
    if let Ok(tags) = enforcer
        .ssm
        .list_tags_for_resource()
        .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
        .resource_id(&name)
        .send()
        .await
    {
        for t in tags.tag_list() {
            resource = resource.key(&format!("aws:ResourceTag/{}", t.key()), t.value());
        }
    }
    if let Some(instance) = instance {
        resource = resource.key("ec2:SourceInstanceARN", instance);
    }
    // Creating a parameter with tags needs ssm:AddTagsToResource too (AWS::SSM::Parameter's
    // documentation: "you must have the IAM permissions ssm:PutParameter and
    // ssm:AddTagsToResource").
    let tagged = call == "PutParameter" && json["Tags"].as_array().is_some_and(|t| !t.is_empty());
    let actions: Vec<&str> = if tagged {
        vec!["PutParameter", "AddTagsToResource"]
    } else {
        vec![call.as_str()]
    };
    let (action, _) = actions
        .iter()
        .map(|a| {
            let r =
                crate::iam::evaluate(policy, &format!("ssm:{a}"), std::slice::from_ref(&resource));
            (*a, r)
        })
        .find(|(_, r)| r.is_err())?;
    let call = action.to_owned();
    Some(service_error(
        headers,
        &call,
        "AccessDeniedException",
        400,
        &format!(
            "User: {who} is not authorized to perform: ssm:{call} on resource: {arn} because no \
             identity-based policy allows the ssm:{call} action"
        ),
    ))
}

/// The world's instance metadata service, one per instance at `/_imds/{id}/`, as IMDSv2 serves an
/// instance launched with `HttpTokens: required` (EC2 user guide, "Use the Instance Metadata
/// Service"): `PUT latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` gives a token;
/// every read must carry it in `X-aws-ec2-metadata-token`, or is refused with 401.
/// `meta-data/iam/security-credentials/` names the role of the instance's profile (404 without
/// one), and `.../<role>` gives that role's temporary credentials, as STS issues them.
async fn imds(
    State(front): State<Front>,
    axum::extract::Path((id, rest)): axum::extract::Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if rest == "latest/api/token" {
        if method != Method::PUT || !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
            return StatusCode::BAD_REQUEST.into_response();
        }
        let token = format!("imds-{}", uuid::Uuid::new_v4().simple());
        front
            .imds
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), id);
        return token.into_response();
    }
    let token = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default();
    let valid = front
        .imds
        .tokens
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)
        .is_some_and(|i| *i == id);
    if !valid {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    // This instance's entry in one of the metadata service's maps, or 404.
    let entry = |map: &Mutex<HashMap<String, String>>, content_type: &'static str| match map
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
    {
        Some(v) => ([("content-type", content_type)], v.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    };
    // A spot instance's interruption notice, from two minutes before AWS takes it back; 404
    // before (EC2 User Guide, "Spot Instance interruption notices").
    if rest == "latest/meta-data/spot/instance-action" {
        return entry(&front.imds.notices, "application/json");
    }
    // The zone the instance runs in (EC2 User Guide, "Instance metadata categories":
    // `placement/availability-zone`).
    if rest == "latest/meta-data/placement/availability-zone" {
        return entry(&front.imds.zones, "text/plain");
    }
    let Some(role_path) = rest.strip_prefix("latest/meta-data/iam/security-credentials/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (Some(enforcer), Some(sts)) = (front.iam.as_ref(), front.sts.as_ref()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The instance's profile, as EC2 shows it; the world's profiles are named as their roles.
    let profile = enforcer
        .ec2
        .describe_instances()
        .instance_ids(&id)
        .send()
        .await
        .ok()
        .and_then(|out| {
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find_map(|i| i.iam_instance_profile()?.arn().map(str::to_owned))
        });
    let Some(role) = profile.and_then(|arn| arn.rsplit('/').next().map(str::to_owned)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if role_path.is_empty() {
        return role.into_response();
    }
    if role_path != role {
        return StatusCode::NOT_FOUND.into_response();
    }
    let assumed = sts
        .assume_role()
        .role_arn(format!("arn:aws:iam::{}:role/{role}", enforcer.account))
        .role_session_name(&id)
        .send()
        .await;
    let c = match assumed.map(|a| a.credentials().cloned()) {
        Ok(Some(c)) => c,
        Ok(None) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Err(e) => {
            let why = format!("{:?}", aws_sdk_sts::error::DisplayErrorContext(e));
            return (StatusCode::INTERNAL_SERVER_ERROR, why).into_response();
        }
    };
    front
        .issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([
            c.access_key_id().to_owned(),
            c.secret_access_key().to_owned(),
            c.session_token().to_owned(),
        ]);
    front
        .imds
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            c.access_key_id().to_owned(),
            format!(
                "arn:aws:ec2:{}:{}:instance/{id}",
                enforcer.region, enforcer.account
            ),
        );
    let expiration = chrono::DateTime::<chrono::Utc>::from_timestamp(c.expiration().secs(), 0)
        .unwrap_or_default();
    axum::Json(serde_json::json!({
        "Code": "Success",
        "LastUpdated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "Type": "AWS-HMAC",
        "AccessKeyId": c.access_key_id(),
        "SecretAccessKey": c.secret_access_key(),
        "Token": c.session_token(),
        "Expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
    .into_response()
}

/// The resources of a `RunInstances` and the condition keys IAM gives each.
async fn run_instances_resources(
    enforcer: &Enforcer,
    body: &[u8],
    arn: &impl Fn(&str, &str) -> String,
) -> Vec<crate::iam::Resource> {
    use crate::iam::Resource;
    let tags_of = |kind: &str| -> Vec<(String, String)> {
        (1..)
            .map_while(|n| {
                form_value(body, &format!("TagSpecification.{n}.ResourceType")).map(|t| (n, t))
            })
            .filter(|(_, t)| t == kind)
            .flat_map(|(n, _)| {
                let keys = form_list(body, &format!("TagSpecification.{n}.Tag"), ".Key");
                let values = form_list(body, &format!("TagSpecification.{n}.Tag"), ".Value");
                keys.into_iter().zip(values).collect::<Vec<_>>()
            })
            .collect()
    };
    let with_tags = |r: Resource, kind: &str| {
        tags_of(kind).into_iter().fold(r, |r, (k, v)| {
            r.key(&format!("aws:RequestTag/{k}"), v)
                .key("aws:TagKeys", k)
        })
    };
    let mut instance = Resource::new(arn("instance", "*"))
        .key(
            "ec2:InstanceType",
            form_value(body, "InstanceType").unwrap_or_default(),
        )
        .key(
            "ec2:MetadataHttpTokens",
            form_value(body, "MetadataOptions.HttpTokens").unwrap_or_else(|| "optional".into()),
        );
    instance = with_tags(instance, "instance");

    // The image: EC2 gives `ec2:Owner` as `amazon` for Amazon's public images (the Deep Learning
    // AMIs' owner account is Amazon's), else the owner's account id.
    let image_id = form_value(body, "ImageId").unwrap_or_default();
    let images = enforcer
        .ec2
        .describe_images()
        .image_ids(&image_id)
        .send()
        .await
        .ok();
    let described = images.as_ref().and_then(|i| i.images().first());
    let owner = described
        .and_then(|i| i.image_owner_alias().or(i.owner_id()))
        .map(|o| if o == "898082745236" { "amazon" } else { o })
        .unwrap_or_default()
        .to_owned();
    let image = Resource::new(format!("arn:aws:ec2:{}::image/{image_id}", enforcer.region))
        .key("ec2:Owner", owner);

    // The root volume: its size as asked, else the image's.
    let size = form_value(body, "BlockDeviceMapping.1.Ebs.VolumeSize").or_else(|| {
        described
            .and_then(|i| i.block_device_mappings().first())
            .and_then(|m| m.ebs())
            .and_then(|e| e.volume_size())
            .map(|s| s.to_string())
    });
    let mut volume = Resource::new(arn("volume", "*"));
    if let Some(size) = size {
        volume = volume.key("ec2:VolumeSize", size);
    }
    volume = with_tags(volume, "volume");

    // The network: the subnet asked for, or the default VPC's; its VPC for every network resource.
    let subnet_id = form_value(body, "SubnetId");
    let subnets = enforcer.ec2.describe_subnets();
    let subnets = match &subnet_id {
        Some(id) => subnets.subnet_ids(id),
        None => subnets.filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("default-for-az")
                .values("true")
                .build(),
        ),
    };
    let subnet = subnets
        .send()
        .await
        .ok()
        .and_then(|s| s.subnets().first().cloned());
    let vpc = subnet
        .as_ref()
        .and_then(|s| s.vpc_id())
        .map(|v| arn("vpc", v))
        .unwrap_or_default();
    let subnet_arn = arn(
        "subnet",
        subnet
            .as_ref()
            .and_then(|s| s.subnet_id())
            .unwrap_or("unknown"),
    );
    let mut resources = vec![
        instance,
        image,
        volume,
        Resource::new(subnet_arn).key("ec2:Vpc", vpc.clone()),
        Resource::new(arn("network-interface", "*")).key("ec2:Vpc", vpc.clone()),
    ];
    let groups = form_list(body, "SecurityGroupId", "");
    for group in if groups.is_empty() {
        vec!["default".to_owned()]
    } else {
        groups
    } {
        resources.push(Resource::new(arn("security-group", &group)).key("ec2:Vpc", vpc.clone()));
    }
    if form_value(body, "InstanceMarketOptions.MarketType").as_deref() == Some("spot") {
        resources.push(with_tags(
            Resource::new(arn("spot-instances-request", "*")),
            "spot-instances-request",
        ));
    }
    resources
}

/// `ModifyInstanceAttribute`'s `UserData.Value` is a blob: the SDK sends it base64-encoded once,
/// and EC2 decodes it once. moto decodes it and then reads what is left as base64 again (it
/// wants it encoded twice), so the front encodes it once more for moto alone. (The front re-signs
/// the request for moto.)
fn user_data_for_moto(call: &str, body: Bytes) -> Bytes {
    if call != "ModifyInstanceAttribute" {
        return body;
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    let pairs: Vec<String> = text
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("UserData.Value", v)) => {
                let twice = base64::engine::general_purpose::STANDARD.encode(percent_decode(v));
                format!(
                    "UserData.Value={}",
                    twice
                        .replace('+', "%2B")
                        .replace('/', "%2F")
                        .replace('=', "%3D")
                )
            }
            _ => pair.to_owned(),
        })
        .collect();
    Bytes::from(pairs.join("&"))
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
    service_error(
        headers,
        action,
        code,
        status,
        &format!("the fault proxy answers {code}"),
    )
}

/// EC2 refuses user data over 16 KB in raw form, before base64 (RunInstances, "User data"
/// in the EC2 API reference); moto takes any size.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// A spot RunInstances in an account without the spot service-linked role: EC2's answer to it
/// (the role cannot create it, as gpu-runner's documented policy does not allow it to).
fn no_spot_role(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let spot = form_value(body, "Action").as_deref() == Some("RunInstances")
        && form_value(body, "InstanceMarketOptions.MarketType").as_deref() == Some("spot");
    (spot && !front.spot_role.load(std::sync::atomic::Ordering::SeqCst)).then(|| {
        service_error(
            headers,
            "RunInstances",
            "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
            403,
            "The provided credentials do not have permission to create the service-linked role \
             for EC2 Spot Instances.",
        )
    })
}

/// Service Quotas' `GetServiceQuota` for EC2's vCPU quotas (see [`crate::quotas`]), judged by the
/// caller's policy first (`servicequotas:GetServiceQuota`, whose resource is the quota's ARN).
fn service_quota(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let call = target.strip_prefix("ServiceQuotasV20190624.")?;
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let (service, code) = (
        json["ServiceCode"].as_str().unwrap_or_default(),
        json["QuotaCode"].as_str().unwrap_or_default(),
    );
    let enforcer = front.iam.as_ref()?;
    let arn = format!(
        "arn:aws:servicequotas:{}:{}:{service}/{code}",
        enforcer.region, enforcer.account
    );
    if headers.get("x-amz-security-token").is_some()
        && let Err(why) = crate::iam::evaluate(
            enforcer.policy_of(headers),
            &format!("servicequotas:{call}"),
            &[crate::iam::Resource::new(&arn)],
        )
    {
        return Some(service_error(
            headers,
            call,
            "AccessDeniedException",
            400,
            &format!("You are not authorized to perform servicequotas:{call}: {why}"),
        ));
    }
    let name = crate::quotas::Quotas::name(code);
    let (Some(name), "ec2", "GetServiceQuota") = (name, service, call) else {
        return Some(service_error(
            headers,
            call,
            "NoSuchResourceException",
            400,
            &format!(
                "The request failed because the specified quota {service}/{code} does not exist."
            ),
        ));
    };
    let quota = serde_json::json!({"Quota": {
        "ServiceCode": "ec2",
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaArn": arn,
        "QuotaCode": code,
        "QuotaName": name,
        "Value": front.quotas.value(code),
        "Unit": "None",
        "Adjustable": true,
        "GlobalQuota": false,
    }});
    Some(
        (
            [("content-type", "application/x-amz-json-1.1")],
            quota.to_string(),
        )
            .into_response(),
    )
}

/// A RunInstances that would take the account's running vCPUs of the type's quota group and
/// market over the quota: EC2's refusal (see [`crate::quotas`]). A `DryRun` checks permissions
/// only.
async fn vcpu_refusal(front: &Front, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    if form_value(body, "Action").as_deref() != Some("RunInstances")
        || form_value(body, "DryRun").as_deref() == Some("true")
    {
        return None;
    }
    let enforcer = front.iam.as_ref()?;
    let instance_type = form_value(body, "InstanceType")?;
    let spot = form_value(body, "InstanceMarketOptions.MarketType").as_deref() == Some("spot");
    let (code, _) = crate::quotas::quota(&instance_type, spot);
    let limit = front.quotas.value(code);
    let count: i32 = form_value(body, "MinCount")
        .and_then(|c| c.parse().ok())
        .unwrap_or(1);
    let described = enforcer
        .ec2
        .describe_instances()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .ok()?;
    let running: Vec<(String, bool)> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            let spot =
                i.instance_lifecycle() == Some(&aws_sdk_ec2::types::InstanceLifecycleType::Spot);
            Some((i.instance_type()?.as_str().to_owned(), spot))
        })
        .filter(|(t, s)| *s == spot && crate::quotas::quota(t, *s).0 == code)
        .collect();
    let mut types: Vec<String> = running.iter().map(|(t, _)| t.clone()).collect();
    types.push(instance_type.clone());
    types.sort();
    types.dedup();
    let vcpus: HashMap<String, i32> = enforcer
        .ec2
        .describe_instance_types()
        .set_instance_types(Some(
            types
                .iter()
                .map(|t| aws_sdk_ec2::types::InstanceType::from(t.as_str()))
                .collect(),
        ))
        .send()
        .await
        .ok()?
        .instance_types()
        .iter()
        .filter_map(|t| {
            Some((
                t.instance_type()?.as_str().to_owned(),
                t.v_cpu_info()?.default_v_cpus()?,
            ))
        })
        .collect();
    let of = |t: &str| f64::from(vcpus.get(t).copied().unwrap_or(0));
    let used: f64 = running.iter().map(|(t, _)| of(t)).sum();
    let wanted = of(&instance_type) * f64::from(count);
    (used + wanted > limit).then(|| {
        let (code, message) = crate::quotas::refusal_message(spot, limit);
        service_error(headers, "RunInstances", code, 400, &message)
    })
}

/// RunInstances with user data over EC2's limit: EC2's answer to it.
fn user_data_too_large(headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    if form_value(body, "Action").as_deref() != Some("RunInstances") {
        return None;
    }
    let encoded = form_value(body, "UserData")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    (raw.len() > USER_DATA_LIMIT).then(|| {
        service_error(
            headers,
            "RunInstances",
            "InvalidParameterValue",
            400,
            &format!("User data is limited to {USER_DATA_LIMIT} bytes"),
        )
    })
}

fn service_error(
    headers: &HeaderMap,
    action: &str,
    code: &str,
    status: u16,
    message: &str,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
/// A spot price history with the prices the world set. Each zone has a spot price of its own,
/// the latest change before the start time (EC2 API reference, `DescribeSpotPriceHistory`:
/// "the last price change before the start time, which is the effective price as of the start
/// time"); moto gives every type in every zone the same $0.00001.
fn spot_prices(prices: &SpotPrices, xml: &str) -> String {
    let prices = prices.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut parts = xml.split("<item>");
    let mut out = parts.next().unwrap_or_default().to_owned();
    for item in parts {
        out.push_str("<item>");
        let field = |tag: &str| xml_values(item, tag).into_iter().next().unwrap_or_default();
        let key = (field("instanceType"), field("availabilityZone"));
        match prices.get(&key) {
            Some(usd) => {
                out.push_str(&item.replace(
                    &format!("<spotPrice>{}</spotPrice>", field("spotPrice")),
                    &format!("<spotPrice>{usd}</spotPrice>"),
                ));
            }
            None => out.push_str(item),
        }
    }
    out
}

pub(crate) fn xml_values(xml: &str, tag: &str) -> Vec<String> {
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

/// A value of a form-encoded (query protocol) body, percent-decoded.
fn form_value(body: &[u8], key: &str) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request signed with a session whose time is up: STS's credentials stop working at their
/// `Expiration`, and AWS answers `ExpiredToken` (`ExpiredTokenException` in the JSON protocols).
fn expired_session(front: &Front, headers: &HeaderMap, call: &str) -> Option<Response> {
    let token = headers.get("x-amz-security-token")?.to_str().ok()?;
    let expires = *front
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(token)?;
    (chrono::Utc::now() >= expires).then(|| {
        let code = if headers.get("x-amz-target").is_some() {
            "ExpiredTokenException"
        } else {
            "ExpiredToken"
        };
        service_error(
            headers,
            call,
            code,
            400,
            "The security token included in the request is expired",
        )
    })
}

/// `AssumeRoleWithWebIdentity` as STS answers it: the token must be signed by the identity
/// provider's key, for the audience `sts.amazonaws.com` (the client ID the README registers), and
/// not expired (`InvalidIdentityToken` / `ExpiredTokenException` otherwise). moto checks none of
/// this and, enforcing IAM, refuses the call for being unsigned; so the front checks the token and
/// asks moto for the role's session with a signed `AssumeRole`. `None` for every other call.
#[allow(clippy::result_large_err)] // one answer per request: its size does not matter
async fn web_identity(
    front: &Front,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Result<String, Response>> {
    if form_value(body, "Action").as_deref() != Some("AssumeRoleWithWebIdentity") {
        return None;
    }
    let sts = front.sts.as_ref()?;
    let refuse = |code: &str, why: &str| {
        Err(service_error(
            headers,
            "AssumeRoleWithWebIdentity",
            code,
            400,
            why,
        ))
    };
    let field = |name| form_value(body, name).unwrap_or_default();
    let (role, session, token) = (
        field("RoleArn"),
        field("RoleSessionName"),
        field("WebIdentityToken"),
    );
    let duration = field("DurationSeconds").parse::<i32>().unwrap_or(3600);
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(front.oidc_key.as_bytes()) else {
        return Some(refuse("InvalidIdentityToken", "no key for the provider"));
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["sts.amazonaws.com"]);
    validation.leeway = 0;
    let claims = match jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
            return Some(refuse("ExpiredTokenException", "Token expired"));
        }
        // An audience the account's identity provider does not list: STS's own words
        // (aws-actions/configure-aws-credentials issues 775 and 1309; awslabs/amazon-eks-irsa-cfn
        // pull request 18).
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidAudience) => {
            return Some(refuse("InvalidIdentityToken", "Incorrect token audience"));
        }
        Err(e) => {
            return Some(refuse(
                "InvalidIdentityToken",
                &format!("Couldn't verify the token: {e}"),
            ));
        }
    };
    // STS checks the role's trust policy against the token (for GitHub's own issuer, whose
    // condition keys the documented trust policies use).
    let role_name = role.rsplit('/').next().unwrap_or_default().to_owned();
    if let Some(enforcer) = front.iam.as_ref()
        && claims["iss"] == crate::oidc::ISSUER
        && let Some((trust, _)) = enforcer.roles.get(&role_name)
    {
        // Every claim of the token is a condition key of the provider (`sub`, `aud`, and the
        // others GitHub sends, such as `job_workflow_ref` or `environment`): IAM User Guide,
        // "Available keys for AWS OIDC federation"; GitHub docs, "Configuring OpenID Connect in
        // Amazon Web Services".
        let keys = claims
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| Some((name, value.as_str()?)))
            .fold(crate::iam::Resource::new(""), |keys, (name, value)| {
                keys.key(
                    &format!("token.actions.githubusercontent.com:{name}"),
                    value,
                )
            });
        let provider = format!(
            "arn:aws:iam::{}:oidc-provider/token.actions.githubusercontent.com",
            enforcer.account
        );
        if crate::iam::trusts(trust, "sts:AssumeRoleWithWebIdentity", &provider, &keys).is_err() {
            return Some(Err(service_error(
                headers,
                "AssumeRoleWithWebIdentity",
                "AccessDenied",
                403,
                "Not authorized to perform sts:AssumeRoleWithWebIdentity",
            )));
        }
    }
    let out = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name(&session)
        .duration_seconds(duration)
        .send()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            use aws_sdk_sts::error::ProvideErrorMetadata;
            let why = format!("{e:?}");
            return Some(refuse(
                e.code().unwrap_or("InternalError"),
                e.message().unwrap_or(&why),
            ));
        }
    };
    let (Some(c), Some(user)) = (out.credentials(), out.assumed_role_user()) else {
        return Some(refuse("InternalError", "moto answered without credentials"));
    };
    if let Some(enforcer) = front.iam.as_ref() {
        enforcer
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.access_key_id().to_owned(), role_name);
    }
    let expiration = chrono::DateTime::<chrono::Utc>::from_timestamp(c.expiration().secs(), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Some(Ok(format!(
        "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <AssumeRoleWithWebIdentityResult>\
         <SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken>\
         <Audience>sts.amazonaws.com</Audience>\
         <AssumedRoleUser><Arn>{}</Arn><AssumedRoleId>{}</AssumedRoleId></AssumedRoleUser>\
         <Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
         <SessionToken>{}</SessionToken><Expiration>{expiration}</Expiration></Credentials>\
         <Provider>{}</Provider>\
         </AssumeRoleWithWebIdentityResult>\
         <ResponseMetadata><RequestId>world</RequestId></ResponseMetadata>\
         </AssumeRoleWithWebIdentityResponse>",
        claims["sub"].as_str().unwrap_or_default(),
        user.arn(),
        user.assumed_role_id(),
        c.access_key_id(),
        c.secret_access_key(),
        c.session_token(),
        claims["iss"].as_str().unwrap_or_default(),
    )))
}

/// Notes the credentials of an STS answer as issued secrets, and puts its `Expiration` on the
/// world's clock.
fn issued(front: &Front, text: &str) -> String {
    note_issued(front, text);
    scale_session(front, text)
}

/// Notes the credentials of an STS answer as issued secrets.
fn note_issued(front: &Front, text: &str) {
    let mut issued = front.issued.lock().unwrap_or_else(|e| e.into_inner());
    for tag in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
        issued.extend(xml_values(text, tag));
    }
    drop(issued);
    if let (Some(id), Some(secret), Some(token)) = (
        xml_values(text, "AccessKeyId").pop(),
        xml_values(text, "SecretAccessKey").pop(),
        xml_values(text, "SessionToken").pop(),
    ) {
        front
            .secrets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (secret, Some(token)));
    }
}

/// STS's answer with its `Expiration` on the world's clock, noted for [`expired_session`].
fn scale_session(front: &Front, text: &str) -> String {
    let (Some(token), Some(expiration)) = (
        xml_values(text, "SessionToken").pop(),
        xml_values(text, "Expiration").pop(),
    ) else {
        return text.to_owned();
    };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(&expiration) else {
        return text.to_owned();
    };
    let now = chrono::Utc::now();
    let left = (at.with_timezone(&chrono::Utc) - now)
        .to_std()
        .unwrap_or_default()
        .div_f64(front.clock_scale.max(1.0));
    let real = now + chrono::TimeDelta::from_std(left).unwrap_or_default();
    front
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token, real);
    text.replace(
        &format!("<Expiration>{expiration}</Expiration>"),
        &format!(
            "<Expiration>{}</Expiration>",
            real.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
}

/// A form body encoded as Python's `urlencode` does (space as `+`, nothing but `_.-~` left
/// unencoded), which is how moto's server re-encodes a request's form before it checks the
/// signature: its server mode sees only the parsed form (`moto/core/responses.py`, `setup_class`).
fn python_form(body: &[u8]) -> Option<String> {
    let body = std::str::from_utf8(body).ok()?;
    let encode = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect::<String>()
    };
    Some(
        body.split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                format!(
                    "{}={}",
                    encode(&percent_decode(k)),
                    encode(&percent_decode(v))
                )
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// The request as moto can check it: a form-encoded body signed by a session handed out here is
/// re-encoded as moto re-encodes it, and signed again with the same session (real AWS checks the
/// signature over the bytes sent; moto recomputes it over its own encoding, which differs from the
/// Rust SDK's in `%20` for a space, so without this it refuses correctly signed requests).
fn for_moto(
    front: &Front,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<(Vec<(String, String)>, Bytes)> {
    let auth = headers.get("authorization")?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    let mut parts = scope.split('/');
    let (key_id, _date, region, service) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (secret, token) = front
        .secrets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(key_id)?
        .clone();
    let content_type = headers.get("content-type")?.to_str().ok()?;
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let encoded = Bytes::from(python_form(body)?);
    let host = headers.get("host")?.to_str().ok()?;
    let length = encoded.len().to_string();
    let mut plain: Vec<(&str, &str)> = vec![
        ("content-type", content_type),
        ("content-length", length.as_str()),
        ("host", host),
    ];
    if let Some(ua) = headers
        .get("x-amz-user-agent")
        .and_then(|v| v.to_str().ok())
    {
        plain.push(("x-amz-user-agent", ua));
    }
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(key_id, secret, token, None, "front").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(aws_sigv4::http_request::SigningSettings::default())
        .build()
        .ok()?
        .into();
    let url = format!("http://{host}/");
    let signable = aws_sigv4::http_request::SignableRequest::new(
        "POST",
        url.as_str(),
        plain.iter().copied(),
        aws_sigv4::http_request::SignableBody::Bytes(&encoded),
    )
    .ok()?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .ok()?
        .into_parts();
    let mut out: Vec<(String, String)> = plain
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Some((out, encoded))
}

/// EKS's `DescribeCluster` of a world cluster, answered here as EKS would: the caller must hold
/// live credentials the world issued, and the role's policy must allow `eks:DescribeCluster` on
/// the cluster's ARN (IAM checks that before it looks for the cluster); the answer carries the
/// world's API server and its certificate authority. moto makes up both, and its server cannot
/// check the signature of the SDK's GET.
fn eks_describe(
    front: &Front,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Option<Response> {
    let name = uri.path().strip_prefix("/clusters/")?;
    if method != Method::GET || name.contains('/') {
        return None;
    }
    let json_error = |status: u16, code: &str, message: String| {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            [
                ("content-type", "application/json"),
                ("x-amzn-errortype", code),
            ],
            serde_json::json!({"message": message}).to_string(),
        )
            .into_response()
    };
    let auth = headers.get("authorization")?.to_str().ok()?;
    let key_id = auth.split("Credential=").nth(1)?.split('/').next()?;
    if !front
        .secrets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(key_id)
    {
        return Some(json_error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_owned(),
        ));
    }
    let enforcer = front.iam.as_ref()?;
    let arn = format!(
        "arn:aws:eks:{}:{}:cluster/{name}",
        enforcer.region, enforcer.account
    );
    if headers.get("x-amz-security-token").is_some()
        && let Err(why) = crate::iam::evaluate(
            enforcer.policy_of(headers),
            "eks:DescribeCluster",
            &[crate::iam::Resource::new(arn.clone())],
        )
    {
        return Some(json_error(
            403,
            "AccessDeniedException",
            format!(
                "User: arn:aws:sts::{}:assumed-role/gpu-ci/gpu-runner is not authorized to \
                 perform: eks:DescribeCluster on resource: {arn} ({why})",
                enforcer.account
            ),
        ));
    }
    let found = front
        .eks_endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    let Some((endpoint, ca)) = found else {
        return Some(json_error(
            404,
            "ResourceNotFoundException",
            format!("No cluster found for name: {name}."),
        ));
    };
    Some(
        (
            [("content-type", "application/json")],
            serde_json::json!({"cluster": {
                "name": name, "arn": arn, "status": "ACTIVE", "version": "1.36",
                "endpoint": endpoint, "certificateAuthority": {"data": ca},
            }})
            .to_string(),
        )
            .into_response(),
    )
}

async fn handle(
    State(front): State<Front>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = action(&headers, &body).unwrap_or_default();
    // The fault proxy (and its record of calls) is gpu-runner's: an instance's own calls, with the
    // credentials the IMDS handed it, pass by.
    let from_instance = access_key(&headers).is_some_and(|k| {
        front
            .imds
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&k)
    });
    let fault = if from_instance {
        None
    } else {
        front.faults.take(Service::Aws, &call)
    };
    match fault {
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
    if let Some(refusal) = expired_session(&front, &headers, &call) {
        return refusal;
    }
    if let Some(answer) = public_parameter(&front, &headers, &body) {
        return answer;
    }
    if let Some(answer) = eks_describe(&front, &method, &headers, &uri) {
        return answer;
    }
    if let Some(refusal) = user_data_too_large(&headers, &body) {
        return refusal;
    }
    if let Some(refusal) = no_spot_role(&front, &headers, &body) {
        return refusal;
    }
    if let Some(refusal) = iam_refusal(&front, &headers, &body).await {
        return refusal;
    }
    if let Some(answer) = service_quota(&front, &headers, &body) {
        return answer;
    }
    if let Some(refusal) = vcpu_refusal(&front, &headers, &body).await {
        return refusal;
    }
    if let Some(refusal) = ssm_refusal(&front, &headers, &body).await {
        return refusal;
    }
    let instance_ids = form_list(&body, "InstanceId", "");
    let instance_ids = match form_value(&body, "InstanceId") {
        Some(one) if instance_ids.is_empty() => vec![one],
        _ => instance_ids,
    };
    let user_data = form_value(&body, "UserData.Value").is_some()
        || form_value(&body, "Attribute").as_deref() == Some("userData");
    if let Some(why) = crate::stopping::refusal(&front.stops, &call, &instance_ids, user_data) {
        return service_error(&headers, &call, "IncorrectInstanceState", 400, &why);
    }
    // A stopped instance is tied to its zone: EC2 refuses to start it while that zone has no
    // capacity of its type, with the code a launch gets (EC2 User Guide, "Troubleshoot instance
    // launch issues", insufficient instance capacity: "when you try to launch an instance or
    // restart a stopped instance"; the CLI shows "Insufficient capacity."), as a server error.
    // Or it takes the start and sends the instance back to `stopped` (see `stopping::bounce`).
    if call == "StartInstances" {
        let full = front
            .zone_full
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let shortages: Vec<Shortage> = instance_ids
            .iter()
            .filter_map(|id| full.get(id).copied())
            .collect();
        if shortages.contains(&Shortage::RefusesStart) {
            return service_error(
                &headers,
                &call,
                "InsufficientInstanceCapacity",
                500,
                "Insufficient capacity.",
            );
        }
        if !shortages.is_empty() {
            if shortages.len() != instance_ids.len() {
                return service_error(
                    &headers,
                    &call,
                    "InternalError",
                    500,
                    "the world cannot start some instances of one call and bounce the others",
                );
            }
            let xml = crate::stopping::bounce(&front.stops, &instance_ids, front.clock_scale);
            return ([("content-type", "text/xml")], xml).into_response();
        }
    }
    match web_identity(&front, &headers, &body).await {
        Some(Ok(xml)) => {
            // The session came through the world's own front, which put it on the world's clock
            // already: scaled twice, an hour lasted a second and the SDK renewed it at every call.
            note_issued(&front, &xml);
            return ([("content-type", "text/xml")], xml).into_response();
        }
        Some(Err(refusal)) => return refusal,
        None => {}
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
    let body = user_data_for_moto(&call, body);
    // The Host header stays the one the caller signed (moto checks SigV4 signatures).
    let request = match for_moto(&front, &headers, &body) {
        Some((signed, encoded)) => {
            let mut r = front.http.request(method, url).body(encoded);
            for (name, value) in signed.iter().filter(|(n, _)| n != "content-length") {
                r = r.header(name, value);
            }
            // What the SDK sends besides the signed headers.
            for name in ["amz-sdk-invocation-id", "amz-sdk-request", "user-agent"] {
                if let Some(v) = headers.get(name) {
                    r = r.header(name, v);
                }
            }
            r
        }
        None => {
            let mut r = front.http.request(method, url).body(body);
            for (name, value) in headers.iter().filter(|(n, _)| *n != "content-length") {
                r = r.header(name, value);
            }
            r
        }
    };

    let began = crate::stopping::begin(&front.stops, &call, &instance_ids, front.clock_scale);
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            if !status.is_success() {
                crate::stopping::cancel(&front.stops, &began);
            }
            let mut out = Response::builder().status(status);
            for (name, value) in answer
                .headers()
                .iter()
                .filter(|(n, _)| *n != "content-length" && *n != "transfer-encoding")
            {
                out = out.header(name, value);
            }
            let mut bytes = answer.bytes().await.unwrap_or_default();
            if let Ok(text) = std::str::from_utf8(&bytes)
                && text.contains("<SecretAccessKey>")
            {
                bytes = Bytes::from(issued(&front, text));
            }
            if status.is_success() && call == "DescribeSpotPriceHistory" {
                bytes = Bytes::from(spot_prices(
                    &front.spot_prices,
                    &String::from_utf8_lossy(&bytes),
                ));
            }
            if status.is_success() {
                crate::stopping::record(&front.stops, &call, &instance_ids, front.clock_scale);
                if let Ok(text) = std::str::from_utf8(&bytes)
                    && text.contains("<instanceId>")
                {
                    bytes = Bytes::from(crate::stopping::as_ec2_shows(&front.stops, text));
                }
            }
            out.body(Body::from(bytes))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(e) => {
            crate::stopping::cancel(&front.stops, &began);
            (StatusCode::BAD_GATEWAY, e.to_string()).into_response()
        }
    }
}

pub fn router(front: Front) -> axum::Router {
    axum::Router::new()
        .route("/_imds/{id}/{*rest}", axum::routing::any(imds))
        .fallback(handle)
        .with_state(front)
}
