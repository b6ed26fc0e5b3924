//! The EC2 and SSM calls the provider makes, each turning the SDK's answer into gpu-runner's
//! types and keeping the AWS error code.

use aws_config::SdkConfig;
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::operation::start_instances::StartInstancesError;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    InstanceInterruptionBehavior, InstanceLifecycleType, InstanceMarketOptionsRequest,
    InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName, InstanceType,
    MarketType, ResourceType, ShutdownBehavior, SpotInstanceType, SpotMarketOptions, Tag,
    TagSpecification, VolumeType,
};
use base64::Engine;
use chrono::{DateTime, Utc};

use super::errors::{NO_CREDENTIALS, capacity_advice};
use crate::inputs::ImageRef;
use crate::machine::{Kind, Machine, MachineError, Owner, State};
use crate::plan::{Candidate, LaunchPlan, Market, tag};
use crate::secret::Secret;

mod ssm;
mod vpc;

/// What EC2 says of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeFacts {
    pub gpus: u32,
    pub vcpus: Option<u32>,
}

/// One launch attempt: a candidate of the plan, with the rendered boot script.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub plan: &'a LaunchPlan,
    /// The runner the instance is for (tagged `gpu-runner:runner`).
    pub runner_name: &'a str,
    pub candidate: &'a Candidate,
    pub image_id: &'a str,
    /// The boot script; it carries the runner's JIT config, so it is never logged.
    pub user_data: &'a Secret,
    /// Ask EC2 to check permissions only (`DryRun`).
    pub dry_run: bool,
    /// Makes a retried launch idempotent: EC2 answers a repeated `RunInstances` with the same
    /// token with the instance it launched the first time, so a lost answer never launches twice.
    pub client_token: &'a str,
}

pub struct Api {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    quotas: aws_sdk_servicequotas::Client,
}

impl Api {
    pub fn new(config: &SdkConfig) -> Self {
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            quotas: aws_sdk_servicequotas::Client::new(config),
        }
    }
}

/// Keeps the AWS error code, which decides retries, fallbacks and hints.
pub fn cloud_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> MachineError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let Some(why) = no_credentials(&err) {
        return MachineError {
            provider: Kind::Ec2,
            operation,
            code: Some(NO_CREDENTIALS.to_owned()),
            message: format!("no AWS credentials were found ({why})"),
        };
    }
    MachineError {
        provider: Kind::Ec2,
        operation,
        code: err.code().map(str::to_owned),
        message: err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| display_chain(&err)),
    }
}

/// The SDK found no credentials to sign with (the default chain came up empty): what it said.
fn no_credentials(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(display_chain(c));
        }
        cause = e.source();
    }
    None
}

/// An error and its causes in words, each once: what a user reads, never a `Debug` dump.
fn display_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

/// EC2 answers a capacity refusal with HTTP 500, which the SDK would retry in place, six times
/// with backoff; the next candidate is the better bet, so a refusal is never retried.
#[derive(Debug)]
struct NoRetryOnCapacity;

impl ClassifyRetry for NoRetryOnCapacity {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        // A launch's, and a start's of a stopped pool member (tied to its zone): the next
        // member, or a launch elsewhere, is the better bet there too.
        let error = ctx
            .output_or_error()
            .and_then(|r| r.err())
            .and_then(|e| e.as_operation_error());
        let code = error
            .and_then(|e| e.downcast_ref::<RunInstancesError>())
            .and_then(|e| e.code())
            .or_else(|| {
                error
                    .and_then(|e| e.downcast_ref::<StartInstancesError>())
                    .and_then(|e| e.code())
            });
        match code {
            Some(code) if capacity_advice(code, "", Market::OnDemand).is_some() => {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "gpu-runner: no retry on capacity refusals"
    }
}

/// An instance that is gone needs no ending.
fn gone_is_done<T>(out: Result<T, MachineError>) -> Result<(), MachineError> {
    match out {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_not_found(e: &MachineError) -> bool {
    e.code().starts_with("InvalidInstanceID.NotFound")
}

fn state(s: Option<&InstanceStateName>) -> State {
    match s {
        Some(InstanceStateName::Pending) => State::Pending,
        Some(InstanceStateName::Running) => State::Running,
        Some(InstanceStateName::ShuttingDown) => State::ShuttingDown,
        Some(InstanceStateName::Stopping) => State::Stopping,
        Some(InstanceStateName::Stopped) => State::Stopped,
        Some(InstanceStateName::Terminated) => State::Terminated,
        Some(other) => State::Other(other.as_str().to_owned()),
        None => State::Other("unknown".to_owned()),
    }
}

/// The time in EC2's `StateTransitionReason`, such as "User initiated (2026-12-05 10:00:00
/// GMT)" or "Service initiated (…)".
fn transition_time(reason: &str) -> Option<DateTime<Utc>> {
    let inside = reason.rsplit_once('(')?.1.strip_suffix(')')?;
    let stamp = inside.trim_end_matches(" GMT").trim_end_matches(" UTC");
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

fn instance(i: &aws_sdk_ec2::types::Instance) -> Machine {
    Machine {
        id: i.instance_id().unwrap_or_default().to_owned(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        availability_zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        market: match i.instance_lifecycle() {
            Some(InstanceLifecycleType::Spot) => Market::Spot,
            _ => Market::OnDemand,
        },
        state: state(i.state().and_then(|s| s.name())),
        state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_owned),
        state_since: i.state_transition_reason().and_then(transition_time),
        launched_at: i
            .launch_time()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect(),
    }
}

impl Api {
    pub async fn resolve_image(&self, image: &ImageRef) -> Result<String, MachineError> {
        match image {
            ImageRef::Ami(id) => Ok(id.clone()),
            ImageRef::Ssm(name) => {
                let out = self
                    .ssm
                    .get_parameter()
                    .name(name)
                    .send()
                    .await
                    .map_err(|e| cloud_error("GetParameter", e))?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(str::to_owned)
                    .ok_or_else(|| MachineError {
                        provider: Kind::Ec2,
                        operation: "GetParameter",
                        code: None,
                        message: format!("the SSM parameter {name} has no value"),
                    })
            }
        }
    }

    /// The partition and account the credentials act in (`GetCallerIdentity`, which needs no
    /// permission): what an instance's ARN is made of.
    pub async fn partition_and_account(&self) -> Result<(String, String), MachineError> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| cloud_error("GetCallerIdentity", e))?;
        let arn = out.arn().unwrap_or_default();
        let mut parts = arn.split(':');
        let partition = parts.nth(1).filter(|p| !p.is_empty());
        match (partition, out.account()) {
            (Some(partition), Some(account)) => Ok((partition.to_owned(), account.to_owned())),
            _ => Err(MachineError {
                provider: Kind::Ec2,
                operation: "GetCallerIdentity",
                code: None,
                message: format!("STS answered without a partition or an account ({arn})"),
            }),
        }
    }

    /// An instance type's GPUs and vCPUs, as EC2 describes it; `None` when EC2 does not say.
    pub async fn type_facts(&self, instance_type: &str) -> Option<TypeFacts> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(InstanceType::from(instance_type))
            .send()
            .await;
        match out {
            Ok(out) => {
                let info = out.instance_types().first()?;
                let gpus: i32 = info
                    .gpu_info()
                    .map(|g| g.gpus().iter().filter_map(|g| g.count()).sum())
                    .unwrap_or(0);
                Some(TypeFacts {
                    gpus: u32::try_from(gpus).unwrap_or(0),
                    vcpus: info
                        .v_cpu_info()
                        .and_then(|v| v.default_v_cpus())
                        .and_then(|v| u32::try_from(v).ok()),
                })
            }
            Err(e) => {
                let e = cloud_error("DescribeInstanceTypes", e);
                tracing::warn!(error = %e, "could not describe the instance type; the probe will accept any GPU count");
                None
            }
        }
    }

    /// The value of one of EC2's quotas (Service Quotas `GetServiceQuota`, service code `ec2`).
    pub async fn ec2_quota(&self, code: &str) -> Result<Option<f64>, MachineError> {
        let out = self
            .quotas
            .get_service_quota()
            .service_code("ec2")
            .quota_code(code)
            .send()
            .await
            .map_err(|e| cloud_error("GetServiceQuota", e))?;
        Ok(out.quota().and_then(|q| q.value()))
    }

    pub async fn launch(&self, request: LaunchRequest<'_>) -> Result<Machine, MachineError> {
        let plan = request.plan;
        let mut own = vec![(tag::RUNNER.to_owned(), request.runner_name.to_owned())];
        if let Some(pool) = &plan.pool {
            own.extend(super::pool::first_tags(
                plan,
                pool,
                request.candidate,
                request.image_id,
                Utc::now(),
            ));
        }
        let tags: Vec<Tag> = plan
            .tags
            .iter()
            .chain(own.iter().map(|(k, v)| (k, v)))
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let tag_specs = [ResourceType::Instance, ResourceType::Volume].map(|kind| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(tags.clone()))
                .build()
        });
        let mut run = self
            .ec2
            .run_instances()
            .image_id(request.image_id)
            .instance_type(InstanceType::from(request.candidate.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .user_data(
                base64::engine::general_purpose::STANDARD
                    .encode(crate::boot::wire(request.user_data.expose())),
            )
            .set_tag_specifications(Some(tag_specs.to_vec()))
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_tokens(HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            // A pool instance shuts down into its pool: stopped, its disk kept.
            .instance_initiated_shutdown_behavior(if plan.pool.is_some() {
                ShutdownBehavior::Stop
            } else {
                ShutdownBehavior::Terminate
            })
            .set_subnet_id(request.candidate.subnet_id.clone())
            .client_token(request.client_token)
            .dry_run(request.dry_run);
        if request.candidate.market == Market::Spot {
            // One-time spot: when AWS takes the capacity back, the instance ends, as on shutdown.
            run = run.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        if !plan.security_group_ids.is_empty() {
            run = run.set_security_group_ids(Some(plan.security_group_ids.clone()));
        }
        if let Some(profile) = &plan.iam_instance_profile {
            let spec = IamInstanceProfileSpecification::builder();
            let spec = if profile.starts_with("arn:") {
                spec.arn(profile)
            } else {
                spec.name(profile)
            };
            run = run.iam_instance_profile(spec.build());
        }
        if let Some(size) = plan.root_volume_size_gib {
            run = run.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(self.root_device(request.image_id).await?)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(i32::try_from(size).unwrap_or(i32::MAX))
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = run
            .customize()
            .config_override(
                aws_sdk_ec2::config::Builder::default().retry_classifier(NoRetryOnCapacity),
            )
            .send()
            .await
            .map_err(|e| cloud_error("RunInstances", e))?;
        out.instances()
            .first()
            .map(instance)
            .ok_or_else(|| MachineError {
                provider: Kind::Ec2,
                operation: "RunInstances",
                code: None,
                message: "EC2 answered without an instance".to_owned(),
            })
    }

    pub async fn describe(&self, ids: &[String]) -> Result<Vec<Machine>, MachineError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| cloud_error("DescribeInstances", e));
        match out {
            Ok(out) => Ok(out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .map(instance)
                .collect()),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub async fn find(&self, owner: Owner<'_>) -> Result<Vec<Machine>, MachineError> {
        let filter = |name: String, value: &str| Filter::builder().name(name).values(value).build();
        let of = |repository: &str| filter(format!("tag:{}", tag::REPOSITORY), repository);
        let filters = match owner {
            Owner::Label { repository, label } => {
                vec![of(repository), filter(format!("tag:{}", tag::LABEL), label)]
            }
            Owner::Run { repository, run_id } => vec![
                of(repository),
                filter(format!("tag:{}", tag::RUN_ID), &run_id.to_string()),
            ],
            Owner::Repository(repository) => {
                vec![of(repository), filter("tag-key".to_owned(), tag::LABEL)]
            }
        };
        self.described(filters).await
    }

    /// Every instance these filters match, page by page.
    async fn described(&self, filters: Vec<Filter>) -> Result<Vec<Machine>, MachineError> {
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .ec2
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| cloud_error("DescribeInstances", e))?;
            found.extend(
                out.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(instance),
            );
            match out.next_token() {
                Some(token) if !token.is_empty() => next = Some(token.to_owned()),
                _ => return Ok(found),
            }
        }
    }

    /// Terminates; instances already gone are not an error.
    pub async fn terminate(&self, ids: &[String]) -> Result<(), MachineError> {
        let call = self
            .ec2
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()));
        let out = match ids {
            [] => return Ok(()),
            _ => call.send().await,
        };
        gone_is_done(out.map_err(|e| cloud_error("TerminateInstances", e)))
    }

    /// The members of `repository`'s pool `pool`, in any state but ended.
    pub async fn pool_members(
        &self,
        repository: &str,
        pool: &str,
    ) -> Result<Vec<Machine>, MachineError> {
        let filter = |name: String, value: &str| Filter::builder().name(name).values(value).build();
        let filters = vec![
            filter(format!("tag:{}", tag::REPOSITORY), repository),
            filter(format!("tag:{}", tag::POOL), pool),
            filter(format!("tag:{}", tag::LIFECYCLE), "pooled"),
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(
                    ["pending", "running", "stopping", "stopped"]
                        .map(str::to_owned)
                        .to_vec(),
                ))
                .build(),
        ];
        self.described(filters).await
    }

    /// Gives a stopped instance the boot script of its next boot. EC2 takes user data only while
    /// the instance is stopped (`IncorrectInstanceState` otherwise).
    pub async fn set_user_data(&self, id: &str, user_data: &Secret) -> Result<(), MachineError> {
        self.ec2
            .modify_instance_attribute()
            .instance_id(id)
            .user_data(
                aws_sdk_ec2::types::BlobAttributeValue::builder()
                    .value(aws_sdk_ec2::primitives::Blob::new(crate::boot::wire(
                        user_data.expose(),
                    )))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| cloud_error("ModifyInstanceAttribute", e))?;
        Ok(())
    }

    /// Starts a stopped instance; the state it was in before, as EC2 answers: `stopped` when this
    /// call is the one that started it.
    pub async fn start(&self, id: &str) -> Result<State, MachineError> {
        let out = self
            .ec2
            .start_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| cloud_error("StartInstances", e))?;
        Ok(state(
            out.starting_instances()
                .first()
                .and_then(|c| c.previous_state())
                .and_then(|s| s.name()),
        ))
    }

    /// Sets these tags on an instance (the ones a resumed pool instance carries for its new run).
    pub async fn create_tags(
        &self,
        id: &str,
        tags: &[(String, String)],
    ) -> Result<(), MachineError> {
        self.ec2
            .create_tags()
            .resources(id)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| cloud_error("CreateTags", e))?;
        Ok(())
    }

    /// Stops, keeping the disk; instances already gone are not an error.
    pub async fn stop(&self, ids: &[String]) -> Result<(), MachineError> {
        let call = self
            .ec2
            .stop_instances()
            .set_instance_ids(Some(ids.to_vec()));
        let out = match ids {
            [] => return Ok(()),
            _ => call.send().await,
        };
        gone_is_done(out.map_err(|e| cloud_error("StopInstances", e)))
    }

    /// The spot price of `instance_type` in effect now in each zone of the region (or in `zone`
    /// alone), for Linux: a history asked for from now gives each zone's latest price.
    pub async fn spot_prices(&self, instance_type: &str, zone: Option<&str>) -> Vec<(String, f64)> {
        let out = self
            .ec2
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .set_availability_zone(zone.map(str::to_owned))
            .product_descriptions("Linux/UNIX")
            .start_time(aws_sdk_ec2::primitives::DateTime::from(
                std::time::SystemTime::now(),
            ))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                let e = cloud_error("DescribeSpotPriceHistory", e);
                tracing::warn!(error = %e, "could not read the spot price");
                return Vec::new();
            }
        };
        super::pricing::latest_by_zone(out.spot_price_history().iter().filter_map(|p| {
            Some((
                p.availability_zone()?.to_owned(),
                p.timestamp().map_or(i64::MIN, |t| t.secs()),
                p.spot_price()?.parse::<f64>().ok()?,
            ))
        }))
    }

    pub async fn console_output(&self, id: &str) -> Result<Option<String>, MachineError> {
        let out = self
            .ec2
            .get_console_output()
            .instance_id(id)
            .latest(true)
            .send()
            .await
            .map_err(|e| cloud_error("GetConsoleOutput", e))?;
        Ok(out.output().map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_else(|_| b64.to_owned())
        }))
    }
}

impl Api {
    /// The image's root device name, which a root volume size must be attached to.
    async fn root_device(&self, image_id: &str) -> Result<String, MachineError> {
        let out = self
            .ec2
            .describe_images()
            .image_ids(image_id)
            .send()
            .await
            .map_err(|e| cloud_error("DescribeImages", e))?;
        Ok(out
            .images()
            .first()
            .and_then(|i| i.root_device_name())
            .unwrap_or("/dev/sda1")
            .to_owned())
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

#[cfg(test)]
mod transition_tests {
    use super::transition_time;

    #[test]
    fn the_time_of_a_state_transition_is_read_from_ec2s_words() {
        let t = transition_time("Service initiated (2026-12-05 10:02:03 GMT)").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-05T10:02:03+00:00");
        assert!(transition_time("User initiated (2026-12-05 10:02:03 UTC)").is_some());
        assert_eq!(transition_time(""), None);
        assert_eq!(transition_time("Server.SpotInstanceTermination"), None);
    }
}
