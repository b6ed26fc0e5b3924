//! The syntax of input values: booleans, lists, tags, and the shapes of AWS and GitHub names.
//! Pure functions of one string; `inputs` turns their failures into `InputError`s.

use std::collections::BTreeMap;

/// Why a value or entry is not of the expected form, and how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub expected: String,
    pub fix: String,
}

impl Expect {
    fn new(expected: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            expected: expected.into(),
            fix: fix.into(),
        }
    }
}

pub type Check = fn(&str) -> Result<(), Expect>;

/// YAML 1.2 core schema booleans, as the official toolkit's `getBooleanInput` reads them.
pub fn boolean(v: &str) -> Option<bool> {
    match v {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Splits a list written with commas and/or newlines. A comma at the end of a line and the newline
/// after it are one separator. Returns the 1-based position of the first blank entry on failure.
pub fn list(v: &str) -> Result<Vec<String>, usize> {
    let mut entries = Vec::new();
    let lines: Vec<&str> = v.trim().lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let line = match line.strip_suffix(',') {
            Some(head) if !last => head,
            _ => line,
        };
        for entry in line.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(entries.len() + 1);
            }
            entries.push(entry.to_owned());
        }
    }
    Ok(entries)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `prefix-` followed by 8 or 17 lowercase hex digits, as EC2 ids are.
fn ec2_id(v: &str, prefix: &str) -> bool {
    v.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| (hex.len() == 8 || hex.len() == 17) && is_hex(hex))
}

pub fn instance_type(v: &str) -> Result<(), Expect> {
    let valid = |v: &str| {
        v.split_once('.').is_some_and(|(family, size)| {
            family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !size.is_empty()
                && size
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    };
    if valid(v) {
        return Ok(());
    }
    let mut fix =
        "Write EC2 instance type names such as g5.xlarge, in order of preference, separated by \
         commas or newlines."
            .to_owned();
    if valid(&v.to_ascii_lowercase()) {
        fix = format!(
            "Instance types are lowercase: write {}.",
            v.to_ascii_lowercase()
        );
    }
    Err(Expect::new("an EC2 instance type name (FAMILY.SIZE)", fix))
}

/// An image: an AMI id, or `ssm:` and the name of an SSM parameter that holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Ami(String),
    Ssm(String),
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageRef::Ami(id) => f.write_str(id),
            ImageRef::Ssm(name) => write!(f, "ssm:{name}"),
        }
    }
}

pub fn image(v: &str) -> Result<ImageRef, Expect> {
    if ec2_id(v, "ami") {
        return Ok(ImageRef::Ami(v.to_owned()));
    }
    if let Some(name) = v
        .strip_prefix("ssm:")
        .or_else(|| v.strip_prefix("resolve:ssm:"))
    {
        let ok = !name.is_empty()
            && name.len() <= 2048
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
        if ok {
            return Ok(ImageRef::Ssm(name.to_owned()));
        }
        return Err(Expect::new(
            "a valid SSM parameter name",
            "After ssm: write the parameter's path, such as \
             ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id.",
        ));
    }
    Err(Expect::new(
        "an AMI id or an ssm: parameter",
        "Use an AMI id such as ami-0123456789abcdef0, or ssm:/path/of/a/parameter that holds one; \
         leave image-id unset for the AWS Deep Learning Base GPU AMI.",
    ))
}

pub fn subnet(v: &str) -> Result<(), Expect> {
    ec2_id(v, "subnet").then_some(()).ok_or_else(|| {
        Expect::new(
            "a subnet id",
            "Use subnet ids such as subnet-0123456789abcdef0 (VPC console → Subnets), separated by \
             commas or newlines.",
        )
    })
}

pub fn security_group(v: &str) -> Result<(), Expect> {
    ec2_id(v, "sg").then_some(()).ok_or_else(|| {
        Expect::new(
            "a security group id",
            "Use security group ids such as sg-0123456789abcdef0, not group names.",
        )
    })
}

pub fn instance_id(v: &str) -> Result<(), Expect> {
    ec2_id(v, "i").then_some(()).ok_or_else(|| {
        Expect::new(
            "an EC2 instance id",
            "Pass the start job's instance-ids output as it is: \
             instance-ids: ${{ needs.start.outputs.instance-ids }}.",
        )
    })
}

pub fn region(v: &str) -> Result<(), Expect> {
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "an AWS region",
            "Use a region code such as us-east-1 or eu-west-1, not a zone (us-east-1a) or a name.",
        )
    })
}

/// `arn:PARTITION:iam::ACCOUNT:KIND/PATH/NAME` with IAM's name characters.
fn iam_arn(v: &str, kind: &str) -> bool {
    let Some(rest) = v.strip_prefix("arn:") else {
        return false;
    };
    let mut parts = rest.splitn(5, ':');
    let (Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(path) = resource
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return false;
    };
    partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && path.split('/').all(iam_name)
}

fn iam_name(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

pub fn role_arn(v: &str) -> Result<(), Expect> {
    iam_arn(v, "role").then_some(()).ok_or_else(|| {
        Expect::new(
            "an IAM role ARN",
            "Use the role's full ARN, such as arn:aws:iam::123456789012:role/gpu-ci (IAM console → \
             Roles → the role → ARN).",
        )
    })
}

pub fn instance_profile(v: &str) -> Result<(), Expect> {
    (iam_name(v) || iam_arn(v, "instance-profile"))
        .then_some(())
        .ok_or_else(|| {
            Expect::new(
                "an IAM instance profile name or ARN",
                "Use the instance profile's name (such as gpu-ci-instance) or its ARN \
                 (arn:aws:iam::123456789012:instance-profile/gpu-ci-instance).",
            )
        })
}

/// Runner labels: what `runs-on` matches. Kept to characters that need no quoting anywhere.
pub fn label(v: &str) -> Result<(), Expect> {
    let ok = (1..=100).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a runner label",
            "Labels are 1 to 100 letters, digits, '.', '_', ':' or '-', such as gpu or cuda-12.",
        )
    })
}

pub fn linux_user(v: &str) -> Result<(), Expect> {
    let ok = v.len() <= 32
        && v.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a Linux user name",
            "Use 1 to 32 lowercase letters, digits, '_' or '-', starting with a letter, such as runner.",
        )
    })
}

pub fn audience(v: &str) -> Result<(), Expect> {
    let ok = v.len() <= 256 && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "an OIDC audience",
            "Use the audience your AWS identity provider expects; for AWS it is sts.amazonaws.com.",
        )
    })
}

/// GitHub's author associations, as the webhook payloads spell them.
pub const ASSOCIATIONS: [&str; 8] = [
    "OWNER",
    "MEMBER",
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIME_CONTRIBUTOR",
    "FIRST_TIMER",
    "MANNEQUIN",
    "NONE",
];

pub fn association(v: &str) -> Result<(), Expect> {
    if ASSOCIATIONS.iter().any(|a| a.eq_ignore_ascii_case(v)) {
        return Ok(());
    }
    let mut fix = format!("Use some of: {}.", ASSOCIATIONS.join(", "));
    // closest() compares in lowercase, with hyphens for underscores.
    let names: Vec<String> = ASSOCIATIONS
        .iter()
        .map(|a| a.to_ascii_lowercase().replace('_', "-"))
        .collect();
    if let Some(s) = closest(v, names.iter().map(String::as_str)) {
        fix.push_str(&format!(
            " Did you mean {}?",
            s.replace('-', "_").to_ascii_uppercase()
        ));
    }
    Err(Expect::new("a GitHub author association", fix))
}

/// A pool's name: what its members are tagged with (`gpu-runner:pool`).
pub fn pool(v: &str) -> Result<(), Expect> {
    let ok = (1..=64).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a pool name",
            "Pool names are 1 to 64 letters, digits, '.', '_' or '-', such as cuda-12 or train.",
        )
    })
}

/// What a start does when every member of its pool is busy and the pool is at `pool-size`.
pub fn pool_full(v: &str) -> Result<(), Expect> {
    one_of(v, &["wait", "fail"], "wait or fail")
}

/// What start does for a trigger the untrusted-trigger guard refuses.
pub fn on_untrusted(v: &str) -> Result<(), Expect> {
    one_of(v, &["skip", "fail"], "skip or fail")
}

/// One of `names`, else the list and the closest name.
fn one_of(v: &str, names: &[&str], expected: &str) -> Result<(), Expect> {
    if names.contains(&v) {
        return Ok(());
    }
    let mut fix = format!("Use one of: {}.", names.join(", "));
    if let Some(s) = closest(v, names.iter().copied()) {
        fix.push_str(&format!(" Did you mean {s}?"));
    }
    Err(Expect::new(expected, fix))
}

/// How to buy the instance: `on-demand`, `spot`, or spot first and on-demand when spot has none.
pub fn market_type(v: &str) -> Result<(), Expect> {
    one_of(
        v,
        &["on-demand", "spot", "spot-then-on-demand"],
        "a market type",
    )
}

/// How the runner's JIT config reaches an instance: in its user data, or through an SSM
/// SecureString parameter that only the instance's role may read.
pub fn jit_handoff(v: &str) -> Result<(), Expect> {
    one_of(v, &["user-data", "ssm"], "a JIT hand-over")
}

/// A GitHub App's numeric id, or its client id (`Iv…`), which GitHub also accepts as the JWT issuer.
pub fn app_id(v: &str) -> Result<(), Expect> {
    let numeric = v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) && v != "0";
    let client = v.starts_with("Iv")
        && v.len() <= 64
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.');
    (numeric || client).then_some(()).ok_or_else(|| {
        Expect::new(
            "a GitHub App id",
            "Use the App ID (a number such as 123456) or the Client ID (Iv23…) from the App's \
             settings page.",
        )
    })
}

pub fn runner_scope(v: &str) -> Result<(), Expect> {
    const NAMES: [&str; 2] = ["repo", "org"];
    if NAMES.contains(&v) {
        return Ok(());
    }
    let mut fix = "Use repo (runners of this repository) or org (runners of the organization \
                   that owns it, which needs a token or App with the organization's Self-hosted \
                   runners permission)."
        .to_owned();
    if let Some(s) = closest(v, NAMES) {
        fix.push_str(&format!(" Did you mean {s}?"));
    } else if ["repository", "organization", "organisation"].contains(&v) {
        fix.push_str(&format!(
            " Did you mean {}?",
            &v[..if v.starts_with('r') { 4 } else { 3 }]
        ));
    }
    Err(Expect::new("repo or org", fix))
}

/// A runner group's name or numeric id: GitHub allows any name, on one line.
pub fn runner_group(v: &str) -> Result<(), Expect> {
    (v.chars().count() <= 100 && !v.chars().any(char::is_control))
        .then_some(())
        .ok_or_else(|| {
            Expect::new(
                "a runner group's name or id",
                "Write the group's name as the organization's Settings → Actions → Runner groups \
                 shows it, or its number.",
            )
        })
}

pub fn runner_version(v: &str) -> Result<(), Expect> {
    let parts: Vec<&str> = v.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "an Actions runner version",
            "Write the version without a v, such as 2.337.0 (github.com/actions/runner/releases).",
        )
    })
}

pub fn sha256(v: &str) -> Result<(), Expect> {
    (v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(())
        .ok_or_else(|| {
            Expect::new(
                "a SHA-256 hash (64 hex digits)",
                "Copy the SHA-256 of the linux package for your instance type's architecture (x64, or \
                 arm64 for g5g) from the runner's release page.",
            )
        })
}

/// A token is one word; anything else is a pasting mistake. The value itself is never shown.
pub fn token(v: &str) -> Result<(), Expect> {
    (!v.chars().any(|c| c.is_whitespace() || c.is_control()))
        .then_some(())
        .ok_or_else(|| {
            Expect::new(
                "a single token",
                "github-token contains spaces or line breaks: store only the token itself in the \
                 secret, with nothing around it.",
            )
        })
}

/// Accepts a PEM private key, also with its line breaks written as `\n` (as some secret stores
/// flatten them). Checking that it is a usable RSA key is left to signing.
pub fn private_key(v: &str) -> Result<String, Expect> {
    let key = if v.contains('\n') {
        v.to_owned()
    } else {
        v.replace("\\n", "\n")
    };
    let ok =
        key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----") && key.contains("-----END");
    ok.then_some(key).ok_or_else(|| {
        Expect::new(
            "a PEM private key",
            "Paste the whole .pem file that the App's settings page generates (Private keys → \
             Generate a private key), from -----BEGIN RSA PRIVATE KEY----- to the END line.",
        )
    })
}

/// Tag problems name the offending key or line in `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagError {
    pub entry: Option<String>,
    pub expect: Expect,
}

/// AWS allows 50 tags per resource; gpu-runner sets up to 10 of its own.
pub const MAX_USER_TAGS: usize = 40;

const TAGS_FORM: &str = "Write tags as a YAML mapping (one \"key: value\" per line) or as \
    key=value lines, such as:\n  team: ml\n  cost-center: \"1234\"";

/// A YAML mapping, or `key=value` lines. Values keep the exact text written (`00123` stays).
pub fn tags(v: &str) -> Result<BTreeMap<String, String>, TagError> {
    let yaml = serde_yaml::from_str::<serde_yaml::Value>(v);
    let map = match &yaml {
        Ok(serde_yaml::Value::Mapping(_)) => serde_yaml::from_str::<BTreeMap<String, String>>(v)
            .map_err(|e| TagError {
                entry: None,
                expect: Expect::new(
                    format!("a mapping of keys to plain values ({e})"),
                    "Give each tag a single value; lists and nested mappings are not tag values.",
                ),
            })?,
        _ => key_value_lines(v).map_err(|line_error| match yaml {
            // Text that is not even YAML was most likely meant as YAML: its error says more.
            Err(e) => TagError {
                entry: None,
                expect: Expect::new(
                    format!("valid YAML or key=value lines (YAML error: {e})"),
                    TAGS_FORM,
                ),
            },
            Ok(_) => line_error,
        })?,
    };
    if map.len() > MAX_USER_TAGS {
        return Err(TagError {
            entry: None,
            expect: Expect::new(
                format!("at most {MAX_USER_TAGS} tags (it has {})", map.len()),
                format!(
                    "AWS allows 50 tags per resource and gpu-runner needs some: keep at most \
                     {MAX_USER_TAGS}."
                ),
            ),
        });
    }
    for (key, value) in &map {
        check_tag(key, value)?;
    }
    Ok(map)
}

fn key_value_lines(v: &str) -> Result<BTreeMap<String, String>, TagError> {
    let mut map = BTreeMap::new();
    for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(TagError {
                entry: Some(line.to_owned()),
                expect: Expect::new("a key=value line", TAGS_FORM),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(TagError {
                entry: Some(line.to_owned()),
                expect: Expect::new("a key=value line with a key", TAGS_FORM),
            });
        }
        if map
            .insert(key.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(TagError {
                entry: Some(key.to_owned()),
                expect: Expect::new("a key given once", "Give each tag key once."),
            });
        }
    }
    Ok(map)
}

fn check_tag(key: &str, value: &str) -> Result<(), TagError> {
    let fail = |expected: &str, fix: &str| {
        Err(TagError {
            entry: Some(key.to_owned()),
            expect: Expect::new(expected, fix),
        })
    };
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("aws:") {
        return fail(
            "a usable tag key (aws: is reserved by AWS)",
            "Choose a key that does not start with aws:.",
        );
    }
    if lower.starts_with("gpu-runner:") {
        return fail(
            "a usable tag key (gpu-runner: is reserved for gpu-runner's own tags)",
            "Choose a key that does not start with gpu-runner:; gpu-runner sets those itself.",
        );
    }
    if key.chars().count() > 128 {
        return fail("a tag key of at most 128 characters", "Shorten the key.");
    }
    if value.chars().count() > 256 {
        return fail(
            "a tag value of at most 256 characters",
            "Shorten the value.",
        );
    }
    if key.chars().chain(value.chars()).any(char::is_control) {
        return fail(
            "a tag without line breaks or control characters",
            "Write each tag's key and value on one line.",
        );
    }
    Ok(())
}

/// Instance ids as start writes them (a JSON array), or a list.
pub fn instance_ids(v: &str) -> Result<Vec<String>, Expect> {
    if v.starts_with('[') {
        return serde_json::from_str::<Vec<String>>(v).map_err(|e| {
            Expect::new(
                format!("a JSON array of instance ids ({e})"),
                "Pass the start job's instance-ids output as it is, or a comma-separated list of \
                 instance ids.",
            )
        });
    }
    list(v).map_err(|position| {
        Expect::new(
            format!("a list of instance ids (entry {position} is empty)"),
            "Separate instance ids with commas or newlines, with no empty entries.",
        )
    })
}

/// The closest of `options` to `word`, if it is close enough to be what was meant.
pub fn closest<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase().replace('_', "-");
    options
        .into_iter()
        .map(|o| (edit_distance(&word, o), o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A DNS-1123 label, as Kubernetes names namespaces: 1 to 63 lowercase letters, digits or '-',
/// starting and ending with a letter or digit.
fn dns_label(v: &str) -> bool {
    (1..=63).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-')
}

/// A DNS-1123 subdomain, as Kubernetes names most objects: dot-separated labels, 253 at most.
fn dns_subdomain(v: &str) -> bool {
    v.len() <= 253 && v.split('.').all(dns_label)
}

pub fn namespace(v: &str) -> Result<(), Expect> {
    dns_label(v).then_some(()).ok_or_else(|| {
        Expect::new(
            "a Kubernetes namespace",
            "Namespaces are 1 to 63 lowercase letters, digits or '-', such as gpu-ci.",
        )
    })
}

pub fn pod_name(v: &str) -> Result<(), Expect> {
    dns_subdomain(v).then_some(()).ok_or_else(|| {
        Expect::new(
            "a pod name",
            "Pass the start job's instance-ids output: the names of the pods it created.",
        )
    })
}

pub fn runtime_class(v: &str) -> Result<(), Expect> {
    dns_subdomain(v).then_some(()).ok_or_else(|| {
        Expect::new(
            "a RuntimeClass name",
            "Name a RuntimeClass of the cluster (kubectl get runtimeclass), such as nvidia.",
        )
    })
}

/// An EKS cluster's name: 1 to 100 letters, digits, '-' or '_', starting with a letter or digit.
pub fn eks_cluster(v: &str) -> Result<(), Expect> {
    let ok = (1..=100).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "an EKS cluster name",
            "Use the cluster's name as EKS shows it (aws eks list-clusters), such as gpu-ci.",
        )
    })
}

/// An extended resource name as device plugins advertise them: `domain/name`.
pub fn gpu_resource(v: &str) -> Result<(), Expect> {
    let ok = v.split_once('/').is_some_and(|(domain, name)| {
        dns_subdomain(domain)
            && domain.contains('.')
            && (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    });
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a GPU resource name",
            "Name the resource the cluster's device plugin advertises (kubectl describe node): \
             nvidia.com/gpu (the default), amd.com/gpu, or a MIG slice such as \
             nvidia.com/mig-1g.10gb.",
        )
    })
}

/// A Kubernetes quantity, as `resources.requests` takes it: `4`, `500m`, `16Gi`, `1.5`.
pub fn quantity(v: &str) -> Result<(), Expect> {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let ok = SUFFIXES.iter().any(|s| {
        v.strip_suffix(s).is_some_and(|n| {
            let mut parts = n.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let frac = parts.next();
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        })
    });
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a Kubernetes quantity",
            "Write it as Kubernetes does: CPUs as 4 or 500m, memory as 16Gi or 512Mi.",
        )
    })
}

/// `key=value` for `node-selector`: a label key (with an optional `prefix/`) and value.
pub fn node_label(v: &str) -> Result<(), Expect> {
    let name = |s: &str| {
        s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let ok = v.split_once('=').is_some_and(|(key, value)| {
        let key_ok = match key.rsplit_once('/') {
            Some((prefix, n)) => dns_subdomain(prefix) && name(n),
            None => name(key),
        };
        key_ok && (value.is_empty() || name(value))
    });
    ok.then_some(()).ok_or_else(|| {
        Expect::new(
            "a node label as key=value",
            "List the labels the GPU nodes carry, such as \
             node.kubernetes.io/instance-type=g5.xlarge or nvidia.com/gpu.product=NVIDIA-A10G.",
        )
    })
}
