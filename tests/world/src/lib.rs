//! gpu-runner's local world: real stand-ins for AWS (moto), GitHub (a stateful fake of the REST
//! API), the runner's OIDC token service, and instances that boot (the project's boot script run in
//! a sandbox). Tests and the demo run the real `gpu-runner` binary against it.

pub mod attached;
pub mod autoscaler;
pub mod aws_front;
pub mod bench;
pub mod eks;
pub mod faults;
pub mod github;
pub mod iam;
pub mod kubelet;
pub mod kubelet_api;
pub mod kubernetes;
pub mod log;
pub mod matrix;
pub mod moto;
pub mod network;
pub mod oidc;
pub mod package;
pub mod picture;
pub mod ports;
pub mod quotas;
pub mod sandbox;
pub mod simulator;
pub mod step;
pub mod stopping;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use base64::Engine;

pub use faults::{Fault, Faults, Service};
pub use simulator::{Gpu, RunnerBehaviour};

/// The public SSM parameter of the default image, and the AMI it names in the world.
pub const DEFAULT_IMAGE_PARAMETER: &str =
    "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";
pub const WORLD_AMI: &str = "ami-0123456789abcdef0";
/// The same image for arm64 (g5g), behind its own public parameter.
pub const ARM64_IMAGE_PARAMETER: &str =
    "/aws/service/deeplearning/ami/arm64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id";
pub const WORLD_ARM64_AMI: &str = "ami-0a1b2c3d4e5f6a7b8";

/// The GitHub App of the world, and its private key (a test key).
pub const APP_ID: &str = "424242";
pub const APP_PRIVATE_KEY: &str = include_str!("keys/test-key.pem");

/// The workflow of the world's run, as `GITHUB_WORKFLOW_REF` names it in each of its jobs.
pub const WORKFLOW_REF: &str = "octo/ml/.github/workflows/gpu.yml@refs/heads/main";

/// How fast the world's clock runs: a minute of the user's time passes in a second.
pub const CLOCK_SCALE: f64 = 60.0;

pub struct Options {
    pub gpu: Gpu,
    pub runner: RunnerBehaviour,
    /// The boot script is killed right after it logs this phase.
    pub die_after_phase: Option<&'static str>,
    /// How much faster than real time the instances' timers and start's waiting run.
    pub clock_scale: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gpu: Gpu::Healthy(1),
            runner: RunnerBehaviour::Normal,
            die_after_phase: None,
            clock_scale: CLOCK_SCALE,
        }
    }
}

pub struct World {
    rt: tokio::runtime::Runtime,
    _moto: moto::Moto,
    pub dir: tempfile::TempDir,
    pub aws_url: String,
    pub github_url: String,
    pub github: github::Shared,
    pub oidc: oidc::Oidc,
    pub consoles: aws_front::Consoles,
    /// What AWS and GitHub answer instead of the real thing, per call.
    pub faults: Faults,
    pub instance_log: Arc<Mutex<Vec<String>>>,
    pub region: String,
    pub account: String,
    pub role_arn: String,
    pub run_id: u64,
    /// A token with Administration: write on the repository.
    pub admin_token: String,
    /// A token of an owner of the organization `octo`: Administration of the repository and
    /// Self-hosted runners of the organization.
    pub org_admin_token: String,
    /// A fine-grained token without it.
    pub weak_token: String,
    /// A fine-grained token with Administration but without Actions (runs and jobs).
    pub runners_only_token: String,
    /// Shaped like the workflow's own GITHUB_TOKEN.
    pub workflow_token: String,
    pub runner_sha256: String,
    /// The runner packages instances downloaded, in order.
    pub package_fetches: Arc<Mutex<Vec<PackageFetch>>>,
    /// With [`Gpu::Late`]: when each boot's driver loaded, by instance id.
    pub driver_loads: Arc<Mutex<Vec<(String, std::time::SystemTime)>>>,
    pub clock_scale: f64,
    /// The GPUs of attached machines, by machine name.
    pub attached_gpus: attached::Gpus,
    /// The account's EC2 vCPU quotas (see [`quotas`]): `world.quotas.set("L-DB2E81BA", 0.0)` is a
    /// new account's G and VT quota.
    pub quotas: quotas::Quotas,
    /// Stopped instances whose zone has no capacity to start them, until they leave this map:
    /// EC2 refuses their `StartInstances` with `InsufficientInstanceCapacity`, or takes it and
    /// stops them again (see [`aws_front::Shortage`]).
    pub zone_full: aws_front::ZoneFull,
    /// The spot price of an instance type in a zone, USD an hour: `DescribeSpotPriceHistory`
    /// answers with it (moto's is $0.00001 everywhere).
    pub spot_prices: aws_front::SpotPrices,
    /// What EC2 shows of stopping, starting and reclaimed instances (see [`stopping`]).
    stops: stopping::Stops,
    /// The instances' metadata service: their spot interruption notices.
    imds: aws_front::Imds,
    /// Whether the account has the spot service-linked role (see [`World::never_ran_spot`]).
    spot_role: Arc<std::sync::atomic::AtomicBool>,
    issued_credentials: Arc<Mutex<Vec<String>>>,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    /// What `DescribeCluster` answers for the world's EKS clusters (see [`eks`]).
    pub(crate) eks_endpoints: aws_front::EksEndpoints,
    /// The secret of every access key the front handed out, for the EKS authenticator.
    pub(crate) aws_secrets: aws_front::Secrets,
}

impl Drop for World {
    fn drop(&mut self) {
        // Sandboxes are killed with the runtime's tasks (kill_on_drop).
        let rt = std::mem::replace(
            &mut self.rt,
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime"),
        );
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// One of gpu-runner's IAM documents under `docs/iam`, for `account` (the documents name
/// 123456789012).
/// What an attacker's job runs: a plain step, then one with `if: always()` and one with
/// `if: failure()`, which the runner still runs after a failed job-started hook. Each leaves its
/// canary (a file under the machine's `/tmp`, see `CANARIES`) and a line in the job's log.
pub fn hostile_steps() -> Vec<github::JobStep> {
    vec![
        github::JobStep::run("touch /tmp/canary-step; echo CANARY-STEP-RAN"),
        github::JobStep::always("touch /tmp/canary-always; echo CANARY-ALWAYS-RAN"),
        github::JobStep::on_failure("touch /tmp/canary-failure; echo CANARY-FAILURE-RAN"),
    ]
}

/// The files `hostile_steps` leave, by their path on the machine without the leading `/`.
pub const CANARIES: [&str; 3] = ["tmp/canary-step", "tmp/canary-always", "tmp/canary-failure"];

/// The role the README documents for warm pools: trusted by the default branch's workflows only
/// (docs/iam/trust-policy-branch.json), with docs/iam/pool-policy.json beside the permissions.
pub const POOL_ROLE: &str = "gpu-ci-pool";

/// The instance profile (and its role) the world's account has for `iam-instance-profile`: the
/// one the README documents for `jit-handoff: ssm`.
pub const INSTANCE_PROFILE: &str = "gpu-runner-instance";

pub fn documented_policy(name: &str, account: &str) -> Result<serde_json::Value, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/iam")
        .join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text.replace("123456789012", account))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn random_digits(n: usize) -> String {
    let digits: String = uuid::Uuid::new_v4()
        .as_u128()
        .to_string()
        .chars()
        .rev()
        .take(n)
        .collect();
    format!("{digits:0>n$}")
}

/// The AWS error code of a failed call, or its words when it has none.
fn code_of<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    e.code()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{e:?}"))
}

async fn serve(router: axum::Router) -> Result<String, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(url)
}

#[derive(Clone)]
struct Control {
    ec2: aws_sdk_ec2::Client,
    package: Arc<package::Package>,
    fetched: Arc<Mutex<Vec<PackageFetch>>>,
    gpus: attached::Gpus,
}

/// One download of the stand-in runner package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFetch {
    /// The file name asked for, which names the version and the architecture.
    pub file: String,
    /// When the request came.
    pub at: std::time::SystemTime,
}

/// What an attached machine's GPU is now, for its stand-in `nvidia-smi`.
async fn attached_gpu(State(c): State<Control>, Path(machine): Path<String>) -> String {
    c.gpus
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&machine)
        .cloned()
        .unwrap_or_else(|| "no-driver 0".to_owned())
}

/// An instance shut itself down: EC2 stops or terminates it as its
/// `InstanceInitiatedShutdownBehavior` says (`stop` unless its launch said otherwise).
async fn shutdown(State(c): State<Control>, Path(id): Path<String>) -> &'static str {
    let behaviour = c
        .ec2
        .describe_instance_attribute()
        .instance_id(&id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .ok()
        .and_then(|a| {
            a.instance_initiated_shutdown_behavior()
                .and_then(|v| v.value())
                .map(str::to_owned)
        });
    if behaviour.as_deref() == Some("terminate") {
        let _ = c.ec2.terminate_instances().instance_ids(id).send().await;
        "terminated"
    } else {
        let _ = c.ec2.stop_instances().instance_ids(id).send().await;
        "stopped"
    }
}

/// The stand-in runner package, whatever its file name; the name is recorded.
async fn runner_package(State(c): State<Control>, Path(file): Path<String>) -> Vec<u8> {
    c.fetched
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(PackageFetch {
            file,
            at: std::time::SystemTime::now(),
        });
    c.package.bytes.clone()
}

impl World {
    pub fn start(options: Options) -> Result<World, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let moto = moto::Moto::start()?;
        let account = format!("1{}", random_digits(11));
        let run_id: u64 = random_digits(9).parse().unwrap_or(1) + 1;
        let region = "us-east-1".to_owned();
        let role_arn = format!("arn:aws:iam::{account}:role/gpu-ci");
        let consoles: aws_front::Consoles = Arc::default();
        let issued_credentials: Arc<Mutex<Vec<String>>> = Arc::default();
        let faults = Faults::default();
        let spot_role = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let quotas = quotas::Quotas::default();
        let zone_full = aws_front::ZoneFull::default();
        let spot_prices = aws_front::SpotPrices::default();
        let stops = stopping::Stops::default();
        let imds = aws_front::Imds::default();
        let front = aws_front::Front {
            zone_full: zone_full.clone(),
            spot_prices: spot_prices.clone(),
            stops: stops.clone(),
            moto_url: moto.url.clone(),
            consoles: consoles.clone(),
            http: reqwest::Client::new(),
            public_parameters: Arc::new(
                [
                    (DEFAULT_IMAGE_PARAMETER.to_owned(), WORLD_AMI.to_owned()),
                    (ARM64_IMAGE_PARAMETER.to_owned(), WORLD_ARM64_AMI.to_owned()),
                ]
                .into_iter()
                .collect(),
            ),
            issued: issued_credentials.clone(),
            faults: faults.clone(),
            spot_role: spot_role.clone(),
            clock_scale: options.clock_scale,
            sessions: Arc::default(),
            sts: None,
            oidc_key: oidc::public_key(),
            secrets: Arc::default(),
            iam: None,
            eks_endpoints: Arc::default(),
            imds: imds.clone(),
            quotas: quotas.clone(),
        };
        let (eks_endpoints, aws_secrets) = (front.eks_endpoints.clone(), front.secrets.clone());
        let oidc = oidc::Oidc {
            request_token: format!("oidc-request-{}", uuid::Uuid::new_v4().simple()),
            repository: "octo/ml".to_owned(),
            run_id,
            issued: Arc::default(),
            issuer: Arc::new(Mutex::new(oidc::ISSUER.to_owned())),
            event: Arc::new(Mutex::new("push".to_owned())),
            git_ref: Arc::new(Mutex::new("refs/heads/main".to_owned())),
        };
        let admin_token = format!("github_pat_admin{}", uuid::Uuid::new_v4().simple());
        let weak_token = format!("github_pat_weak{}", uuid::Uuid::new_v4().simple());
        let org_admin_token = format!("github_pat_orgadmin{}", uuid::Uuid::new_v4().simple());
        let runners_only_token = format!("github_pat_runners{}", uuid::Uuid::new_v4().simple());
        let workflow_token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
        let github: github::Shared = Arc::new(Mutex::new(github::GithubState {
            owner: "octo".to_owned(),
            repo: "ml".to_owned(),
            admin_tokens: vec![
                admin_token.clone(),
                org_admin_token.clone(),
                runners_only_token.clone(),
            ],
            org_admin_tokens: vec![org_admin_token.clone()],
            groups: github::default_groups(),
            weak_tokens: vec![weak_token.clone(), workflow_token.clone()],
            // A token made for gpu-runner has Actions too, for cleanup's runs and jobs.
            actions_tokens: vec![admin_token.clone(), org_admin_token.clone()],
            clock_scale: options.clock_scale,
            app_id: APP_ID.to_owned(),
            app_installed: true,
            // GitHub's default for a new repository.
            fork_pr_approval: "first_time_contributors".to_owned(),
            ..Default::default()
        }));
        let package = Arc::new(package::build());
        let dir = tempfile::Builder::new()
            .prefix("gpu-runner-world-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let instance_log: Arc<Mutex<Vec<String>>> = Arc::default();
        let fetched: Arc<Mutex<Vec<PackageFetch>>> = Arc::default();
        let driver_loads: Arc<Mutex<Vec<(String, std::time::SystemTime)>>> = Arc::default();
        let attached_gpus: attached::Gpus = Arc::default();

        let (aws_url, github_url, ec2, ssm) = rt.block_on(async {
            // IAM as gpu-runner's README asks for it: the roles exactly as its CloudFormation
            // template (docs/cloudformation/gpu-runner.yaml) makes them, deployed with moto's
            // CloudFormation, gpu-ci for any ref and the pool role gpu-ci-pool for the default
            // branch alone. moto's CloudFormation has no AWS::IAM::OIDCProvider: the world's STS
            // (the AWS front) stands in for the provider, so the template is told one exists.
            let template_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/cloudformation/gpu-runner.yaml");
            let template = std::fs::read_to_string(&template_path)
                .map_err(|e| format!("{}: {e}", template_path.display()))?;
            moto.deploy_stack(
                &account,
                "gpu-runner",
                &template,
                &[
                    ("Repository", "octo/ml"),
                    ("Subject", "*"),
                    ("RoleName", "gpu-ci"),
                    ("CreateOidcProvider", "false"),
                    ("PoolRoleSubject", "ref:refs/heads/main"),
                    ("PoolRoleName", POOL_ROLE),
                ],
            )
            .await?;
            // With eks-cluster, a role also describes its cluster: docs/iam/eks-policy.json, which
            // the template leaves to the user, added here as a user would, through IAM.
            let eks = documented_policy("eks-policy.json", &account)?;
            let mut roles = std::collections::HashMap::new();
            for name in ["gpu-ci", POOL_ROLE] {
                let (trust, mut policy) = moto.role_documents(&account, name).await?;
                if let (Some(all), Some(more)) = (
                    policy["Statement"].as_array_mut(),
                    eks["Statement"].as_array(),
                ) {
                    all.extend(more.iter().cloned());
                }
                // moto enforces what it can; the front judges resources and conditions.
                moto.enforce_role_policy(&account, name, &policy).await?;
                roles.insert(name.to_owned(), (trust, policy));
            }
            let role_policy = roles["gpu-ci"].1.clone();
            let key = moto.set_up_world_user(&account).await?;
            // The instance profile the README documents for jit-handoff: ssm, with its role's
            // documented policy (docs/iam/instance-role-policy.json).
            let instance_policy = documented_policy("instance-role-policy.json", &account)?;
            moto.set_up_instance_role(&account, INSTANCE_PROFILE, &instance_policy)
                .await?;
            moto.enforce_iam().await?;
            // The world's own view of AWS, as a user of the same account that may do anything,
            // through a front of its own without faults: the faults are for the product, not
            // for the world's bookkeeping (the front re-signs for moto, see `for_moto`).
            front
                .secrets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.id.clone(), (key.secret.clone(), None));
            let own_front = aws_front::Front {
                faults: Faults::default(),
                consoles: Arc::default(),
                issued: Arc::default(),
                spot_role: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                ..front.clone()
            };
            let own_url = serve(aws_front::router(own_front)).await?;
            let config = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region.clone()))
                .endpoint_url(&own_url)
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
                    key.id, key.secret, None, None, "world",
                ))
                .load()
                .await;
            let ec2 = aws_sdk_ec2::Client::new(&config);
            let ssm = aws_sdk_ssm::Client::new(&config);
            network::as_aws_makes_it(&ec2).await?;
            let front = aws_front::Front {
                sts: Some(aws_sdk_sts::Client::new(&config)),
                iam: Some(Arc::new(aws_front::Enforcer {
                    policy: role_policy.clone(),
                    ec2: ec2.clone(),
                    ssm: ssm.clone(),
                    account: account.clone(),
                    region: region.clone(),
                    instance_policy,
                    roles,
                    sessions: Arc::default(),
                })),
                ..front
            };
            let aws_url = serve(aws_front::router(front)).await?;
            let control = Control {
                ec2: ec2.clone(),
                package: package.clone(),
                fetched: fetched.clone(),
                gpus: attached_gpus.clone(),
            };
            // GitHub Enterprise Server serves the same API under /api/v3.
            let counted = |enterprise: bool| {
                github::router(github.clone(), faults.clone()).layer(
                    axum::middleware::from_fn_with_state(
                        (github.clone(), enterprise),
                        github::count_api_call,
                    ),
                )
            };
            let router = counted(false)
                .nest("/api/v3", counted(true))
                .merge(oidc::router(oidc.clone()))
                .merge(
                    axum::Router::new()
                        .route("/_sim/shutdown/{id}", post(shutdown))
                        .route("/_package/{file}", get(runner_package))
                        .route("/_sim/gpu/{machine}", get(attached_gpu))
                        .with_state(control),
                );
            let github_url = serve(router).await?;
            Ok::<_, String>((aws_url, github_url, ec2, ssm))
        })?;
        github.lock().unwrap_or_else(|e| e.into_inner()).server_url = github_url.clone();

        let sim = simulator::Simulator {
            aws_url: aws_url.clone(),
            ec2: ec2.clone(),
            consoles: consoles.clone(),
            dir: dir.path().to_path_buf(),
            control_url: github_url.clone(),
            scale: options.clock_scale,
            gpu: options.gpu,
            runner: options.runner,
            die_after_phase: options.die_after_phase,
            log: instance_log.clone(),
            driver_loads: driver_loads.clone(),
            github: github.clone(),
            zones: imds.zones.clone(),
        };
        rt.spawn(sim.run());

        Ok(World {
            rt,
            _moto: moto,
            dir,
            aws_url,
            github_url,
            github,
            oidc,
            consoles,
            faults,
            instance_log,
            region,
            account,
            role_arn,
            run_id,
            admin_token,
            org_admin_token,
            weak_token,
            runners_only_token,
            workflow_token,
            runner_sha256: package.sha256.clone(),
            package_fetches: fetched,
            driver_loads,
            clock_scale: options.clock_scale,
            attached_gpus,
            quotas,
            zone_full,
            spot_prices,
            stops,
            imds,
            spot_role,
            issued_credentials,
            ec2,
            ssm,
            eks_endpoints,
            aws_secrets,
        })
    }

    /// Subnets of each kind in the default VPC (see [`network`]), made now.
    pub fn subnets(&self) -> network::Subnets {
        self.rt
            .block_on(network::make_subnets(&self.ec2))
            .expect("the world's subnets")
    }

    /// Deletes the region's default VPC, as a user may have: its default subnets, its internet
    /// gateway, then the VPC.
    pub fn delete_default_vpc(&self) {
        self.rt
            .block_on(network::delete_default_vpc(&self.ec2))
            .expect("the default VPC deleted");
    }

    /// The environment the Actions runner gives the action's container, pointed at this world.
    pub fn action_env(&self) -> Vec<(String, String)> {
        [
            ("GITHUB_REPOSITORY", "octo/ml".to_owned()),
            ("GITHUB_RUN_ID", self.run_id.to_string()),
            ("GITHUB_RUN_ATTEMPT", "1".to_owned()),
            // The event the world's OIDC tokens name.
            ("GITHUB_EVENT_NAME", "push".to_owned()),
            ("GITHUB_WORKFLOW_REF", WORKFLOW_REF.to_owned()),
            ("GITHUB_API_URL", self.github_url.clone()),
            ("GITHUB_SERVER_URL", "https://github.com".to_owned()),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                format!("{}/_oidc/token?api-version=2.0", self.github_url),
            ),
            (
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                self.oidc.request_token.clone(),
            ),
            ("AWS_ENDPOINT_URL", self.aws_url.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            (
                "GPU_RUNNER_RUNNER_DOWNLOAD_URL",
                format!(
                    "{}/_package/actions-runner-linux-{{arch}}-{{version}}.tar.gz",
                    self.github_url
                ),
            ),
            ("GPU_RUNNER_CLOCK_SCALE", self.clock_scale.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The inputs every step in this world needs, as a workflow would give them.
    pub fn inputs(&self, mode: &str) -> Vec<(String, String)> {
        [
            ("mode", mode.to_owned()),
            ("github-token", self.admin_token.clone()),
            ("role-to-assume", self.role_arn.clone()),
            ("aws-region", self.region.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A start's inputs: the world's runner package is not one gpu-runner has pinned.
    pub fn start_inputs(&self) -> Vec<(String, String)> {
        let mut inputs = self.inputs("start");
        inputs.push(("runner-version".to_owned(), package::VERSION.to_owned()));
        inputs.push(("runner-sha256".to_owned(), self.runner_sha256.clone()));
        inputs
    }

    /// The account has never run a spot instance: it lacks the spot service-linked role, which
    /// EC2 creates on the first spot launch only for a caller allowed to.
    pub fn never_ran_spot(&self) {
        self.spot_role
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Instances that are not terminated (pending, running, stopping, ...), read from moto.
    /// AWS takes the spot instance `id` back, as it does: its metadata service gives the
    /// two-minute notice now (`spot/instance-action`: `terminate` and the time), and two minutes
    /// later, on the world's clock, EC2 terminates it with the state reason
    /// `Server.SpotInstanceTermination` (EC2 User Guide, "Spot Instance interruption notices",
    /// "Find interrupted Spot Instances").
    pub fn reclaim_spot(&self, id: &str) {
        let notice_for = Duration::from_secs(120).div_f64(self.clock_scale);
        let at = chrono::Utc::now() + chrono::TimeDelta::from_std(notice_for).unwrap_or_default();
        let notice = serde_json::json!({
            "action": "terminate",
            "time": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        });
        self.imds
            .notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), notice.to_string());
        let (ec2, stops, id) = (self.ec2.clone(), self.stops.clone(), id.to_owned());
        self.rt.spawn(async move {
            tokio::time::sleep(notice_for).await;
            stopping::reclaim(&stops, &id);
            let _ = ec2.terminate_instances().instance_ids(&id).send().await;
        });
    }

    /// What the instances' GPUs are doing from now on, as `nvidia-smi`'s usage queries show it:
    /// `utilization` percent busy, `memory_used_mib` of their 15360 MiB in use.
    pub fn set_gpu_load(&self, utilization: u32, memory_used_mib: u32) {
        self.write_gpu_load(&utilization.to_string(), memory_used_mib);
    }

    /// The instances' GPUs are in MIG mode from now on, `memory_used_mib` in use: NVML gives no
    /// utilization for such a GPU, and the usage query shows `[N/A]` in its place (nvidia-smi(1):
    /// "Any unsupported data is indicated by a \"N/A\""; CSV queries bracket it, as in
    /// `mig.mode.current` → `[N/A]`; GPU-Util reads N/A on a MIG-enabled A100 or H100).
    pub fn set_mig_gpu_load(&self, memory_used_mib: u32) {
        self.write_gpu_load("[N/A]", memory_used_mib);
    }

    fn write_gpu_load(&self, utilization: &str, memory_used_mib: u32) {
        // Instances' and attached machines' stand-ins; the simulator may not have installed
        // them yet: the folder may be new.
        for bin in ["bin", "attached-bin"] {
            let bin = self.dir.path().join(bin);
            let _ = std::fs::create_dir_all(&bin);
            let _ = std::fs::write(
                bin.join("gpu-load"),
                format!("{utilization} {memory_used_mib}\n"),
            );
        }
    }

    pub fn live_instances(&self) -> Vec<String> {
        self.instances()
            .iter()
            .filter(|i| {
                !matches!(
                    i.state().and_then(|s| s.name()),
                    Some(aws_sdk_ec2::types::InstanceStateName::Terminated)
                )
            })
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    }

    /// Instances that are pending or running: what bills for compute.
    pub fn running_instances(&self) -> Vec<String> {
        use aws_sdk_ec2::types::InstanceStateName::{Pending, Running};
        self.instances()
            .iter()
            .filter(|i| matches!(i.state().and_then(|s| s.name()), Some(Pending | Running)))
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    }

    /// Creates a security group in the default VPC as `aws ec2 create-security-group
    /// --cli-input-json` would from `json` (GroupName, Description, TagSpecifications); its id.
    pub fn create_security_group(&self, json: &serde_json::Value) -> String {
        self.rt.block_on(async {
            use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
            let mut call = self
                .ec2
                .create_security_group()
                .group_name(json["GroupName"].as_str().expect("GroupName"))
                .description(json["Description"].as_str().expect("Description"));
            for spec in json["TagSpecifications"].as_array().into_iter().flatten() {
                let tags = spec["Tags"].as_array().into_iter().flatten().map(|t| {
                    Tag::builder()
                        .key(t["Key"].as_str().expect("Key"))
                        .value(t["Value"].as_str().expect("Value"))
                        .build()
                });
                call = call.tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::from(
                            spec["ResourceType"].as_str().expect("ResourceType"),
                        ))
                        .set_tags(Some(tags.collect()))
                        .build(),
                );
            }
            let out = call.send().await.expect("create security group");
            out.group_id().expect("a group id").to_owned()
        })
    }

    /// The inbound rules of a security group, as EC2 lists them.
    pub fn inbound_rules(&self, group_id: &str) -> Vec<aws_sdk_ec2::types::IpPermission> {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_security_groups()
                .group_ids(group_id)
                .send()
                .await
                .expect("describe security groups");
            out.security_groups()[0].ip_permissions().to_vec()
        })
    }

    /// Every instance ever launched, with its tags.
    pub fn instances(&self) -> Vec<aws_sdk_ec2::types::Instance> {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_instances()
                .send()
                .await
                .expect("describe instances");
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .cloned()
                .collect()
        })
    }

    pub fn user_data(&self, id: &str) -> String {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                .send()
                .await
                .expect("user data");
            let encoded = out
                .user_data()
                .and_then(|v| v.value())
                .unwrap_or_default()
                .to_owned();
            String::from_utf8(simulator::uncompressed(
                &base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded)
                    .unwrap_or_default(),
            ))
            .unwrap_or_default()
        })
    }

    pub fn registered_runners(&self) -> Vec<github::FakeRunner> {
        self.github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .runners
            .values()
            .cloned()
            .collect()
    }

    pub fn queue_job(&self, labels: &[&str], script: &str) -> u64 {
        self.github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue_job(
                self.run_id,
                labels.iter().map(|l| (*l).to_owned()).collect(),
                script,
            )
    }

    /// The run was started by `event` with this webhook payload: the job's OIDC tokens name it,
    /// and the returned variables (`GITHUB_EVENT_NAME`, `GITHUB_EVENT_PATH`) are what the runner
    /// gives a step of such a run.
    pub fn triggered_by(&self, event: &str, payload: &serde_json::Value) -> Vec<(String, String)> {
        *self.oidc.event.lock().unwrap_or_else(|e| e.into_inner()) = event.to_owned();
        let path = self
            .dir
            .path()
            .join(format!("event-{}.json", uuid::Uuid::new_v4().simple()));
        let _ = std::fs::write(&path, payload.to_string());
        vec![
            ("GITHUB_EVENT_NAME".to_owned(), event.to_owned()),
            (
                "GITHUB_EVENT_PATH".to_owned(),
                path.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// A job of another workflow run, queued as GitHub queues a fork's pull request run of the
    /// repository (`repository` "octo/ml", `git_ref` "refs/pull/7/merge") or a run of another
    /// repository of the organization.
    pub fn queue_job_of_run(
        &self,
        run_id: u64,
        repository: &str,
        git_ref: &str,
        labels: &[&str],
        script: &str,
    ) -> u64 {
        let mut gh = self.github.lock().unwrap_or_else(|e| e.into_inner());
        let id = gh.queue_job(
            run_id,
            labels.iter().map(|l| (*l).to_owned()).collect(),
            script,
        );
        if let Some(job) = gh.jobs.iter_mut().find(|j| j.id == id) {
            job.repository = repository.to_owned();
            job.git_ref = git_ref.to_owned();
        }
        id
    }

    /// A job of a run of the world's repository that `event` set off with this webhook payload
    /// (a fork's pull request, a comment), as the runner hands it to the job-started hook.
    pub fn queue_job_of_event(
        &self,
        event: &str,
        payload: serde_json::Value,
        labels: &[&str],
        script: &str,
    ) -> u64 {
        let mut gh = self.github.lock().unwrap_or_else(|e| e.into_inner());
        let run_id = self.run_id + 1000 + gh.next_id;
        let id = gh.queue_job(
            run_id,
            labels.iter().map(|l| (*l).to_owned()).collect(),
            script,
        );
        if let Some(job) = gh.jobs.iter_mut().find(|j| j.id == id) {
            job.event = event.to_owned();
            job.payload = payload;
        }
        id
    }

    /// A job of another workflow run (see `queue_job_of_run`) whose steps are an attacker's:
    /// see `hostile_steps`.
    pub fn queue_hostile_job_of_run(
        &self,
        run_id: u64,
        repository: &str,
        git_ref: &str,
        labels: &[&str],
    ) -> u64 {
        let id = self.queue_job_of_run(run_id, repository, git_ref, labels, "");
        self.set_steps(id, hostile_steps());
        id
    }

    /// Gives a queued job these steps (each with its `if:`) in place of its one script.
    pub fn set_steps(&self, job: u64, steps: Vec<github::JobStep>) {
        let mut gh = self.github.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = gh.jobs.iter_mut().find(|j| j.id == job) {
            j.steps = steps;
        }
    }

    /// Cancels one job as the run's Cancel button does (see `GithubState::cancel_job`).
    pub fn cancel_job(&self, job: u64) {
        self.github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel_job(job);
    }

    /// A job whose `runs-on` has these labels and whose `container:` is `image`.
    pub fn queue_container_job(&self, labels: &[&str], image: &str, script: &str) -> u64 {
        let mut gh = self.github.lock().unwrap_or_else(|e| e.into_inner());
        let id = gh.queue_job(
            self.run_id,
            labels.iter().map(|l| (*l).to_owned()).collect(),
            script,
        );
        if let Some(job) = gh.jobs.iter_mut().find(|j| j.id == id) {
            job.container = Some(image.to_owned());
        }
        id
    }

    /// Registers a JIT runner with these labels and runs the stand-in runner package's `run.sh`
    /// for it on this machine (not in an instance's sandbox), with `env` added to a bare
    /// environment, for at most `limit`: its exit code (`None` when it had to be killed) and
    /// what it printed.
    pub fn run_runner_package(
        &self,
        labels: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> (Option<i32>, String) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let bytes = package::build().bytes;
        tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()))
            .unpack(dir.path())
            .expect("unpack the runner package");
        let (_, jit) = self
            .github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_jit_runner(
                format!("standalone-{}", random_digits(6)),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                1,
                false,
            );
        let mut child = std::process::Command::new("bash")
            .arg(dir.path().join("run.sh"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ACTIONS_RUNNER_INPUT_JITCONFIG", jit)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run run.sh");
        let started = Instant::now();
        let code = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status.code();
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut text = String::new();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut p = pipe;
            let _ = p.read_to_string(&mut text);
        }
        (code, text)
    }

    pub fn job(&self, id: u64) -> Option<github::Job> {
        self.github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jobs
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    /// Waits up to `limit` for `done`; true when it happened.
    pub fn wait_until(&self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        done(self)
    }

    /// A JIT config written as start writes it (a SecureString, tagged), as a start that died
    /// right after writing it would leave it.
    pub fn put_jit_parameter(&self, name: &str, instance_arn: &str) {
        self.rt
            .block_on(
                self.ssm
                    .put_parameter()
                    .name(name)
                    .value("a-jit-config-nobody-will-read")
                    .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                    .tags(
                        aws_sdk_ssm::types::Tag::builder()
                            .key("gpu-runner:instance-arn")
                            .value(instance_arn)
                            .build()
                            .expect("a tag"),
                    )
                    .send(),
            )
            .expect("the world writes a parameter");
    }

    /// EC2 as a workflow of this run would reach it without gpu-runner: its OIDC token (with the
    /// ref the world's token service says now) exchanged for `role`'s credentials. `Err` holds
    /// STS's error code when the role's trust policy refuses the token.
    pub fn ec2_as(&self, role: &str) -> Result<aws_sdk_ec2::Client, String> {
        let token = self.oidc.token("sts.amazonaws.com");
        self.rt.block_on(async {
            let anonymous = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(self.region.clone()))
                .endpoint_url(&self.aws_url)
                .no_credentials()
                .load()
                .await;
            let out = aws_sdk_sts::Client::new(&anonymous)
                .assume_role_with_web_identity()
                .role_arn(format!("arn:aws:iam::{}:role/{role}", self.account))
                .role_session_name("by-hand")
                .web_identity_token(token)
                .send()
                .await
                .map_err(|e| e.code().unwrap_or("no code").to_owned())?;
            let c = out.credentials().ok_or("no credentials")?;
            let config = aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(self.region.clone()))
                .endpoint_url(&self.aws_url)
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
                    c.access_key_id(),
                    c.secret_access_key(),
                    Some(c.session_token().to_owned()),
                    None,
                    "by-hand",
                ))
                .load()
                .await;
            Ok(aws_sdk_ec2::Client::new(&config))
        })
    }

    /// The ARN of the role warm pools assume ([`POOL_ROLE`]).
    pub fn pool_role_arn(&self) -> String {
        format!("arn:aws:iam::{}:role/{POOL_ROLE}", self.account)
    }

    /// The SSM parameters under `/gpu-runner/`: JIT configs waiting for their instances.
    pub fn jit_parameters(&self) -> Vec<String> {
        self.rt.block_on(async {
            let mut names = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let Ok(out) = self
                    .ssm
                    .describe_parameters()
                    .set_next_token(next.take())
                    .send()
                    .await
                else {
                    return vec!["(SSM could not be listed)".to_owned()];
                };
                names.extend(
                    out.parameters()
                        .iter()
                        .filter_map(|p| p.name())
                        .filter(|n| n.starts_with("/gpu-runner/"))
                        .map(str::to_owned),
                );
                match out.next_token() {
                    Some(t) => next = Some(t.to_owned()),
                    None => return names,
                }
            }
        })
    }

    /// Every secret this world handed out: what must never appear in a log.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets = vec![
            self.admin_token.clone(),
            self.org_admin_token.clone(),
            self.weak_token.clone(),
            self.runners_only_token.clone(),
            self.workflow_token.clone(),
            self.oidc.request_token.clone(),
        ];
        secrets.extend(
            self.github
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .issued_jit_configs
                .clone(),
        );
        secrets.extend(
            self.oidc
                .issued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        secrets.extend(
            self.issued_credentials
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        );
        secrets
    }

    /// What a start that was cancelled after launch leaves: an instance tagged as start tags it
    /// at launch (its label and this repository), and its runner.
    pub fn leave_behind(&self, label: &str) -> String {
        self.offline_runner(label);
        self.launch_tagged(&[
            ("gpu-runner:label", label),
            ("gpu-runner:repository", "octo/ml"),
        ])
    }

    /// A registered runner that never connected (or whose machine is gone).
    pub fn offline_runner(&self, name: &str) {
        let mut gh = self.github.lock().unwrap_or_else(|e| e.into_inner());
        gh.next_id += 1;
        let id = gh.next_id;
        gh.runners.insert(id, github::FakeRunner::offline(id, name));
    }

    /// An instance with these tags, launched behind the product's back.
    pub fn launch_tagged(&self, tags: &[(&str, &str)]) -> String {
        let tags = aws_sdk_ec2::types::TagSpecification::builder()
            .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build();
        self.launch(|run| run.tag_specifications(tags))
    }

    /// An instance launched behind the product's back, with this user data and shutdown
    /// behaviour (`stop` or `terminate`).
    pub fn launch_with(&self, user_data: &str, shutdown_behaviour: &str) -> String {
        self.launch(|run| {
            run.user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
                .instance_initiated_shutdown_behavior(shutdown_behaviour.into())
        })
    }

    /// One instance of the world's image, launched behind the product's back as `with` says.
    fn launch(
        &self,
        with: impl FnOnce(
            aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
        )
            -> aws_sdk_ec2::operation::run_instances::builders::RunInstancesFluentBuilder,
    ) -> String {
        let run = self
            .ec2
            .run_instances()
            .image_id(WORLD_AMI)
            .instance_type(aws_sdk_ec2::types::InstanceType::G4dnXlarge)
            .min_count(1)
            .max_count(1);
        let out = self
            .rt
            .block_on(with(run).send())
            .expect("the world launches an instance");
        out.instances()[0]
            .instance_id()
            .unwrap_or_default()
            .to_owned()
    }

    /// Stops the instance as a user would; the error code EC2 answers, if any.
    pub fn stop_instance(&self, id: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let out = self.ec2.stop_instances().instance_ids(id).send().await;
            out.map(|_| ()).map_err(|e| code_of(&e))
        })
    }

    /// Starts the instance as a user would; the error code EC2 answers, if any.
    pub fn start_instance(&self, id: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let out = self.ec2.start_instances().instance_ids(id).send().await;
            out.map(|_| ()).map_err(|e| code_of(&e))
        })
    }

    /// Replaces the instance's user data; the error code EC2 answers, if any.
    pub fn set_user_data(&self, id: &str, user_data: &str) -> Result<(), String> {
        self.rt.block_on(async {
            let out = self
                .ec2
                .modify_instance_attribute()
                .instance_id(id)
                .user_data(
                    aws_sdk_ec2::types::BlobAttributeValue::builder()
                        .value(aws_sdk_ec2::primitives::Blob::new(user_data.as_bytes()))
                        .build(),
                )
                .send()
                .await;
            out.map(|_| ()).map_err(|e| code_of(&e))
        })
    }

    /// The instance's state as EC2 shows it (`pending`, `running`, `stopping`, ...).
    pub fn state_of(&self, id: &str) -> Option<String> {
        self.instances()
            .into_iter()
            .find(|i| i.instance_id() == Some(id))
            .and_then(|i| {
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_owned())
            })
    }

    pub fn instance_log(&self) -> Vec<String> {
        self.instance_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A file the instance wrote (its overlay's upper layer), by its path on the instance
    /// without the leading `/`.
    pub fn instance_file(&self, id: &str, path: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(id).join("upper").join(path)).ok()
    }

    pub fn console(&self, id: &str) -> String {
        self.consoles
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}
