//! The moto server, one per world: a real EC2/STS/SSM API on a free loopback port. When the
//! machine's Python lacks moto, it is installed into a virtualenv under `target/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::aws_front::xml_values;

/// `%XX` escapes decoded (IAM answers policy documents URL-encoded).
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match u8::from_str_radix(&String::from_utf8_lossy(hex), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn xml_unescape(v: &str) -> String {
    v.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub struct Moto {
    child: Child,
    pub url: String,
    /// The images moto serves (`MOTO_AMIS_PATH`), kept while it runs.
    _images: tempfile::NamedTempFile,
}

/// The public images of the world: the Deep Learning Base OSS NVIDIA Driver GPU AMI (Ubuntu
/// 22.04) for x86_64 and arm64, as `DescribeImages` shows them (owned by Amazon, EBS-backed,
/// root device `/dev/sda1`), so that what reads an image (`root-volume-size`) finds it.
fn public_images() -> serde_json::Value {
    let image = |id: &str, arch: &str| {
        serde_json::json!({
            "ami_id": id,
            "name": format!("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) {arch}"),
            "description": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)",
            "owner_id": "898082745236",
            "public": true,
            "virtualization_type": "hvm",
            "architecture": arch,
            "state": "available",
            "hypervisor": "xen",
            "root_device_type": "ebs",
            "root_device_name": "/dev/sda1",
            "sriov": "simple",
        })
    };
    serde_json::json!([
        image(crate::WORLD_AMI, "x86_64"),
        image(crate::WORLD_ARM64_AMI, "arm64"),
    ])
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_moto(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A Python that can run moto's server, installing it the first time if needed; once per
/// process, so that parallel tests do not race to install it.
fn python() -> Result<String, String> {
    static PYTHON: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    PYTHON.get_or_init(find_or_install_python).clone()
}

fn find_or_install_python() -> Result<String, String> {
    if has_moto("python3") {
        return Ok("python3".to_owned());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/world-venv");
    let python = venv.join("bin/python3").to_string_lossy().into_owned();
    if has_moto(&python) {
        return Ok(python);
    }
    let run = |cmd: &mut Command| {
        let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?} failed: {status}"))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "moto[server]>=5.2,<5.3",
    ]))?;
    Ok(python)
}

/// The AWS CLI the Deep Learning AMI carries, as the world's instances run it: the real one (v1,
/// from PyPI, in a virtualenv of its own: it pins a botocore other than moto's).
pub fn aws_cli() -> Result<PathBuf, String> {
    static CLI: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    CLI.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/world-awscli");
        let aws = venv.join("bin/aws");
        let works = |aws: &PathBuf| {
            Command::new(aws)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if works(&aws) {
            return Ok(aws);
        }
        let run = |cmd: &mut Command| {
            let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("{cmd:?} failed: {status}"))
            }
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/python3")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "awscli>=1.44,<2",
        ]))?;
        if works(&aws) {
            Ok(aws)
        } else {
            Err(format!("{} does not run", aws.display()))
        }
    })
    .clone()
}

/// What moto can enforce of an IAM policy: its access control (`moto/iam/access_control.py`)
/// matches each statement's `Resource` against `*` only, because its EC2 and SSM handlers name
/// no resource, and it evaluates no condition key of a request (`aws:RequestTag/...`,
/// `aws:ResourceTag/...`, `ec2:CreateAction`). So each `Allow` statement keeps its actions with
/// `Resource: *` and no condition, and the `Deny` statements (all of them conditional) go: moto
/// then refuses every action the document does not allow. The resources and conditions are
/// checked against what gpu-runner really sends by `tests/integration/security.rs`.
pub fn enforceable(policy: &serde_json::Value) -> serde_json::Value {
    let statements: Vec<serde_json::Value> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| {
            serde_json::json!({
                "Sid": s["Sid"], "Effect": "Allow", "Action": s["Action"], "Resource": "*",
            })
        })
        .collect();
    serde_json::json!({"Version": "2012-10-17", "Statement": statements})
}

/// Credentials of an IAM user.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

impl Moto {
    /// One IAM call, unsigned: only before [`Moto::enforce_iam`].
    async fn iam(
        &self,
        http: &reqwest::Client,
        account: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, String> {
        self.call(http, account, "iam", "2010-05-08", fields).await
    }

    /// One call of a query-protocol service, unsigned: only before [`Moto::enforce_iam`].
    async fn call(
        &self,
        http: &reqwest::Client,
        account: &str,
        service: &str,
        version: &str,
        fields: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut form: Vec<(&str, &str)> = vec![("Version", version)];
        form.extend_from_slice(fields);
        let answer = http
            .post(format!("{}/", self.url))
            .header("x-moto-account-id", account)
            // moto's server picks the service from the credential scope; before enforcement it
            // checks no signature.
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIAWORLDSETUP/20260101/us-east-1/{service}/\
                     aws4_request, SignedHeaders=host, Signature=0"
                ),
            )
            .form(&form)
            .send()
            .await
            .map_err(|e| format!("{service} {fields:?}: {e}"))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "{service} {:?}: HTTP {status}: {text}",
                fields.first()
            ));
        }
        Ok(text)
    }

    /// Deploys a CloudFormation template in `account` with moto's CloudFormation, as a user
    /// would with `aws cloudformation deploy`; moto creates the resources at once.
    pub async fn deploy_stack(
        &self,
        account: &str,
        name: &str,
        template: &str,
        parameters: &[(&str, &str)],
    ) -> Result<(), String> {
        let http = reqwest::Client::new();
        let keys: Vec<(String, String)> = parameters
            .iter()
            .enumerate()
            .flat_map(|(n, (k, v))| {
                [
                    (
                        format!("Parameters.member.{}.ParameterKey", n + 1),
                        (*k).to_owned(),
                    ),
                    (
                        format!("Parameters.member.{}.ParameterValue", n + 1),
                        (*v).to_owned(),
                    ),
                ]
            })
            .collect();
        let mut fields: Vec<(&str, &str)> = vec![
            ("Action", "CreateStack"),
            ("StackName", name),
            ("TemplateBody", template),
            ("Capabilities.member.1", "CAPABILITY_NAMED_IAM"),
        ];
        fields.extend(keys.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.call(&http, account, "cloudformation", "2010-05-15", &fields)
            .await?;
        let described = self
            .call(
                &http,
                account,
                "cloudformation",
                "2010-05-15",
                &[("Action", "DescribeStacks"), ("StackName", name)],
            )
            .await?;
        match xml_values(&described, "StackStatus")
            .first()
            .map(String::as_str)
        {
            Some("CREATE_COMPLETE") => Ok(()),
            other => Err(format!("the stack {name} is {other:?}: {described}")),
        }
    }

    /// A role as IAM holds it: its trust policy, and its inline policies' statements as one
    /// policy.
    pub async fn role_documents(
        &self,
        account: &str,
        role: &str,
    ) -> Result<(serde_json::Value, serde_json::Value), String> {
        let http = reqwest::Client::new();
        let document = |xml: &str, tag: &str| -> Result<serde_json::Value, String> {
            let raw = xml_values(xml, tag)
                .pop()
                .ok_or_else(|| format!("{role}: no {tag}"))?;
            let text = xml_unescape(&percent_decode(&raw));
            serde_json::from_str(&text)
                // moto keeps an inline policy that CloudFormation made as the Python dict it
                // parsed, and answers its repr (single quotes); IAM answers JSON. The documented
                // policies hold no quote of either kind inside a value.
                .or_else(|_| serde_json::from_str(&text.replace('\'', "\"")))
                .map_err(|e| format!("{role}'s {tag}: {e}: {text}"))
        };
        let got = self
            .iam(&http, account, &[("Action", "GetRole"), ("RoleName", role)])
            .await?;
        let trust = document(&got, "AssumeRolePolicyDocument")?;
        let mut statements: Vec<serde_json::Value> = Vec::new();
        for name in self.inline_policies(&http, account, role).await? {
            let policy = self
                .iam(
                    &http,
                    account,
                    &[
                        ("Action", "GetRolePolicy"),
                        ("RoleName", role),
                        ("PolicyName", &name),
                    ],
                )
                .await?;
            let policy = document(&policy, "PolicyDocument")?;
            statements.extend(policy["Statement"].as_array().cloned().unwrap_or_default());
        }
        Ok((
            trust,
            serde_json::json!({"Version": "2012-10-17", "Statement": statements}),
        ))
    }

    /// The names of a role's inline policies.
    async fn inline_policies(
        &self,
        http: &reqwest::Client,
        account: &str,
        role: &str,
    ) -> Result<Vec<String>, String> {
        let listed = self
            .iam(
                http,
                account,
                &[("Action", "ListRolePolicies"), ("RoleName", role)],
            )
            .await?;
        Ok(xml_values(&listed, "member"))
    }

    /// Replaces a role's inline policies with what moto can enforce of `policy` (see
    /// [`enforceable`]); the world's AWS front judges the rest.
    pub async fn enforce_role_policy(
        &self,
        account: &str,
        role: &str,
        policy: &serde_json::Value,
    ) -> Result<(), String> {
        let http = reqwest::Client::new();
        for name in self.inline_policies(&http, account, role).await? {
            self.iam(
                &http,
                account,
                &[
                    ("Action", "DeleteRolePolicy"),
                    ("RoleName", role),
                    ("PolicyName", &name),
                ],
            )
            .await?;
        }
        // The world's STS exchanges a web identity for the role by an AssumeRole of the world's
        // own user, which moto judges by the role's trust policy: moto gets one that lets it
        // (the front judges the role's own trust policy, see aws_front::web_identity).
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
        }]})
        .to_string();
        self.iam(
            &http,
            account,
            &[
                ("Action", "UpdateAssumeRolePolicy"),
                ("RoleName", role),
                ("PolicyDocument", &trust),
            ],
        )
        .await?;
        let enforceable = enforceable(policy).to_string();
        self.iam(
            &http,
            account,
            &[
                ("Action", "PutRolePolicy"),
                ("RoleName", role),
                ("PolicyName", "gpu-runner"),
                ("PolicyDocument", &enforceable),
            ],
        )
        .await?;
        Ok(())
    }

    /// In `account`: a user for the world's own bookkeeping that may do anything; its
    /// credentials.
    pub async fn set_up_world_user(&self, account: &str) -> Result<AccessKey, String> {
        let http = reqwest::Client::new();
        let everything = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "*", "Resource": "*",
        }]})
        .to_string();
        self.iam(
            &http,
            account,
            &[("Action", "CreateUser"), ("UserName", "world")],
        )
        .await?;
        self.iam(
            &http,
            account,
            &[
                ("Action", "PutUserPolicy"),
                ("UserName", "world"),
                ("PolicyName", "everything"),
                ("PolicyDocument", &everything),
            ],
        )
        .await?;
        let key = self
            .iam(
                &http,
                account,
                &[("Action", "CreateAccessKey"), ("UserName", "world")],
            )
            .await?;
        Ok(AccessKey {
            id: xml_values(&key, "AccessKeyId")
                .pop()
                .ok_or("CreateAccessKey: no AccessKeyId")?,
            secret: xml_values(&key, "SecretAccessKey")
                .pop()
                .ok_or("CreateAccessKey: no SecretAccessKey")?,
        })
    }

    /// In `account`: the role an instance profile hands its instances (`role`, in the profile of
    /// the same name), trusted by EC2 as a real one is, with what moto can enforce of
    /// `permissions`; the instances' credentials come from the world's IMDS (`aws_front`).
    pub async fn set_up_instance_role(
        &self,
        account: &str,
        role: &str,
        permissions: &serde_json::Value,
    ) -> Result<(), String> {
        let http = reqwest::Client::new();
        // EC2 assumes it for its instances; in the world the IMDS does, as the world's user (moto
        // checks no trust policy, but fails on a service principal).
        let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole",
        }]})
        .to_string();
        let policy = enforceable(permissions).to_string();
        for fields in [
            vec![
                ("Action", "CreateRole"),
                ("RoleName", role),
                ("AssumeRolePolicyDocument", trust.as_str()),
            ],
            vec![
                ("Action", "PutRolePolicy"),
                ("RoleName", role),
                ("PolicyName", "gpu-runner-instance"),
                ("PolicyDocument", policy.as_str()),
            ],
            vec![
                ("Action", "CreateInstanceProfile"),
                ("InstanceProfileName", role),
            ],
            vec![
                ("Action", "AddRoleToInstanceProfile"),
                ("InstanceProfileName", role),
                ("RoleName", role),
            ],
        ] {
            self.iam(&http, account, &fields).await?;
        }
        Ok(())
    }

    /// From now on moto checks every request's signature and the caller's IAM policies
    /// (`INITIAL_NO_AUTH_ACTION_COUNT` set to 0 through `/moto-api/reset-auth`).
    pub async fn enforce_iam(&self) -> Result<(), String> {
        reqwest::Client::new()
            .post(format!("{}/moto-api/reset-auth", self.url))
            .body("0")
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| format!("enabling moto's IAM enforcement: {e}"))
    }

    /// A moto server of this world's own: started again on another port when its first one
    /// turns out taken (see [`crate::ports`]).
    pub fn start() -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::start_on(crate::ports::reserve()?)? {
                Ok(moto) => return Ok(moto),
                Err(why) => last = why,
            }
        }
        Err(last)
    }

    /// `Ok(Err(_))` when another process holds `port`.
    fn start_on(port: u16) -> Result<Result<Self, String>, String> {
        let python = python()?;
        let mut images = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut images, public_images().to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let child = Command::new(python)
            .env("MOTO_AMIS_PATH", images.path())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting moto: {e}"))?;
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _images: images,
        };
        let started = Instant::now();
        // Listening is not enough: the listener must be this moto, not a neighbour's server.
        while !crate::ports::listened_on_by(moto.child.id(), port) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Ok(Err(format!("moto on port {port} exited ({status})")));
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("moto did not start within 30 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Ok(moto))
    }
}
