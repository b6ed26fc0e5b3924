//! Every parsing rule, and the exact words a user reads for each kind of bad input.

use super::*;

const TOKEN: &str = "ghp_unit-test-token";

/// A valid start, changed by `vars` (an empty value unsets a variable as the runner would).
fn env(vars: &[(&str, &str)]) -> Env {
    let mut env: Env = [
        ("INPUT_MODE", "start"),
        ("INPUT_GITHUB-TOKEN", TOKEN),
        ("INPUT_AWS-REGION", "us-east-1"),
    ]
    .into_iter()
    .collect();
    for (k, v) in vars {
        env.set(*k, *v);
    }
    env
}

fn start(vars: &[(&str, &str)]) -> StartInputs {
    match parse(&env(vars)) {
        Ok(Parsed {
            inputs: Inputs::Start(s),
            ..
        }) => s,
        other => panic!("expected a start, got {other:?}"),
    }
}

fn stop(vars: &[(&str, &str)]) -> StopInputs {
    let mut all = vec![("INPUT_MODE", "stop"), ("INPUT_AWS-REGION", "")];
    all.extend_from_slice(vars);
    match parse(&env(&all)) {
        Ok(Parsed {
            inputs: Inputs::Stop(s),
            ..
        }) => s,
        other => panic!("expected a stop, got {other:?}"),
    }
}

/// Every error as the user reads it: `title: message`.
fn errors(vars: &[(&str, &str)]) -> Vec<String> {
    match parse(&env(vars)) {
        Ok(p) => panic!("expected errors, parsed {p:?}"),
        Err(InputErrors(errors)) => errors
            .iter()
            .map(|e| format!("{}: {e}", e.title()))
            .collect(),
    }
}

#[track_caller]
fn error(vars: &[(&str, &str)]) -> String {
    let mut all = errors(vars);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn warnings(vars: &[(&str, &str)]) -> Vec<String> {
    parse(&env(vars)).unwrap().warnings
}

#[test]
fn start_defaults() {
    let s = start(&[]);
    assert_eq!(s.ec2.instance_types, ["g4dn.xlarge"]);
    assert_eq!(
        s.ec2.image,
        ImageRef::Ssm(spec::DEFAULT_IMAGE["ssm:".len()..].to_owned())
    );
    assert_eq!(s.ec2.region, "us-east-1");
    assert_eq!(s.common.audience, "sts.amazonaws.com");
    assert_eq!(s.common.role_to_assume, None);
    assert_eq!(s.common.github, GithubAuth::Token(Secret::new(TOKEN)));
    assert_eq!(s.runner.user, "runner");
    assert_eq!(
        (
            s.limits.startup_timeout_minutes,
            s.limits.max_lifetime_minutes,
            s.limits.idle_timeout_minutes
        ),
        (10, 360, 15)
    );
    assert!(!s.limits.keep_on_failure && !s.dry_run);
    assert!(s.runner.labels.is_empty() && s.ec2.tags.is_empty() && s.ec2.subnet_ids.is_empty());
    assert_eq!(
        (s.ec2.root_volume_size_gib, s.runner.pre_runner_script),
        (None, None)
    );
}

#[test]
fn values_are_trimmed_and_empty_means_unset() {
    let s = start(&[
        ("INPUT_INSTANCE-TYPES", "   "),
        ("INPUT_RUNNER-USER", "  ci  "),
        ("INPUT_DRY-RUN", "\ttrue\n"),
        ("INPUT_ROLE-TO-ASSUME", ""),
    ]);
    assert_eq!(s.ec2.instance_types, ["g4dn.xlarge"]);
    assert_eq!(s.runner.user, "ci");
    assert!(s.dry_run);
    assert_eq!(s.common.role_to_assume, None);
}

#[test]
fn mode_is_required_and_checked() {
    assert_eq!(
        error(&[("INPUT_MODE", "")]),
        "Missing input: mode: mode is not set. Set mode: start in the job that launches the GPU \
         runner, and mode: stop in the job that removes it (mode: cleanup is for a scheduled janitor \
         workflow, mode: retry for one that re-runs runs whose spot machine AWS took back)."
    );
    assert_eq!(
        error(&[("INPUT_MODE", "strat")]),
        "Invalid input: mode: mode \"strat\" is not a mode of gpu-runner. Use one of: start, stop, \
         cleanup, retry. Did you mean \"start\"?"
    );
    assert_eq!(
        error(&[("INPUT_MODE", "launch")]),
        "Invalid input: mode: mode \"launch\" is not a mode of gpu-runner. Use one of: start, stop, \
         cleanup, retry."
    );
}

#[test]
fn booleans_follow_the_yaml_core_schema() {
    for (v, expected) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("false", false),
        ("False", false),
        ("FALSE", false),
    ] {
        assert_eq!(start(&[("INPUT_DRY-RUN", v)]).dry_run, expected, "{v}");
    }
    for v in ["yes", "1", "on", "tRUE", "y"] {
        assert_eq!(
            error(&[("INPUT_KEEP-ON-FAILURE", v)]),
            format!(
                "Invalid input: keep-on-failure: keep-on-failure is \"{v}\", which is not a \
                 boolean. Use true or false (True, TRUE, False and FALSE work too)."
            )
        );
    }
}

#[test]
fn lists_take_commas_and_or_newlines() {
    for v in [
        "g5.xlarge,g4dn.xlarge,g6.xlarge",
        "g5.xlarge, g4dn.xlarge , g6.xlarge",
        "g5.xlarge\ng4dn.xlarge\ng6.xlarge\n",
        "g5.xlarge,\ng4dn.xlarge,\r\ng6.xlarge",
        "g5.xlarge, g4dn.xlarge\n  g6.xlarge",
    ] {
        assert_eq!(
            start(&[("INPUT_INSTANCE-TYPES", v)]).ec2.instance_types,
            ["g5.xlarge", "g4dn.xlarge", "g6.xlarge"],
            "{v:?}"
        );
    }
}

#[test]
fn blank_list_entries_are_errors() {
    let fix = "Remove the extra comma or blank line: entries of instance-types are separated by \
               commas or newlines, and none may be empty.";
    assert_eq!(
        error(&[("INPUT_INSTANCE-TYPES", "g5.xlarge,,g4dn.xlarge")]),
        format!(
            "Invalid input: instance-types: instance-types has an empty entry (entry 2 of \
             \"g5.xlarge,,g4dn.xlarge\"). {fix}"
        )
    );
    assert!(error(&[("INPUT_INSTANCE-TYPES", "g5.xlarge,")]).contains("(entry 2 of"));
    assert!(
        error(&[("INPUT_SUBNET-IDS", "subnet-aaaaaaaa\n\nsubnet-bbbbbbbb")])
            .contains("(entry 2 of")
    );
    assert!(error(&[("INPUT_LABELS", ",gpu")]).contains("(entry 1 of"));
}

#[test]
fn duplicate_and_too_many_entries_are_errors() {
    assert_eq!(
        error(&[("INPUT_INSTANCE-TYPES", "g5.xlarge, g5.xlarge")]),
        "Invalid input: instance-types: instance-types lists \"g5.xlarge\" more than once. List each \
         entry of instance-types once."
    );
    let many: Vec<String> = (0..100).map(|i| format!("l{i}")).collect();
    assert_eq!(
        error(&[("INPUT_LABELS", &many.join(","))]),
        "Invalid input: labels: labels has 100 entries; at most 99 are allowed. Keep at most 99 \
         entries in labels."
    );
}

#[test]
fn instance_types_are_checked() {
    assert_eq!(
        error(&[("INPUT_INSTANCE-TYPES", "g5.xlarge, g4dn..xlarge")]),
        "Invalid input: instance-types: instance-types entry \"g4dn..xlarge\" is not an EC2 instance \
         type name (FAMILY.SIZE). Write EC2 instance type names such as g5.xlarge, in order of \
         preference, separated by commas or newlines."
    );
    assert_eq!(
        error(&[("INPUT_INSTANCE-TYPES", "G5.XLarge")]),
        "Invalid input: instance-types: instance-types entry \"G5.XLarge\" is not an EC2 instance \
         type name (FAMILY.SIZE). Instance types are lowercase: write g5.xlarge."
    );
    for bad in ["g5", "g5.", ".xlarge", "g5 xlarge", "5g.xlarge"] {
        assert!(
            error(&[("INPUT_INSTANCE-TYPES", bad)]).contains("is not an EC2 instance type"),
            "{bad}"
        );
    }
    let s = start(&[(
        "INPUT_INSTANCE-TYPES",
        "p5.48xlarge, g6e.12xlarge, u-6tb1.metal",
    )]);
    assert_eq!(s.ec2.instance_types.len(), 3);
}

#[test]
fn minutes_and_sizes_are_range_checked() {
    assert_eq!(
        error(&[("INPUT_STARTUP-TIMEOUT-MINUTES", "ten")]),
        "Invalid input: startup-timeout-minutes: startup-timeout-minutes is \"ten\", which is not \
         a whole number. Set startup-timeout-minutes to a whole number of minutes from 1 to 120."
    );
    assert_eq!(
        error(&[("INPUT_ROOT-VOLUME-SIZE", "4")]),
        "Invalid input: root-volume-size: root-volume-size is \"4\", outside 8 to 16384 GiB. Set \
         root-volume-size to a whole number of GiB from 8 to 16384."
    );
    for (name, bad) in [
        ("INPUT_STARTUP-TIMEOUT-MINUTES", "0"),
        ("INPUT_STARTUP-TIMEOUT-MINUTES", "121"),
        ("INPUT_MAX-LIFETIME-MINUTES", "10081"),
        ("INPUT_IDLE-TIMEOUT-MINUTES", "0"),
        ("INPUT_IDLE-TIMEOUT-MINUTES", "1441"),
    ] {
        assert!(error(&[(name, bad)]).contains(", outside "), "{name}={bad}");
    }
    for bad in ["-5", "1.5", "99999999999999999999999", "10m"] {
        assert!(
            error(&[("INPUT_IDLE-TIMEOUT-MINUTES", bad)]).contains("not a whole number"),
            "{bad}"
        );
    }
    let s = start(&[
        ("INPUT_ROOT-VOLUME-SIZE", "200"),
        ("INPUT_STARTUP-TIMEOUT-MINUTES", "120"),
        ("INPUT_MAX-LIFETIME-MINUTES", "10080"),
        ("INPUT_IDLE-TIMEOUT-MINUTES", "1"),
    ]);
    assert_eq!(s.ec2.root_volume_size_gib, Some(200));
    assert_eq!(
        (
            s.limits.startup_timeout_minutes,
            s.limits.max_lifetime_minutes,
            s.limits.idle_timeout_minutes
        ),
        (120, 10080, 1)
    );
}

#[test]
fn max_lifetime_must_outlast_the_startup_timeout() {
    assert_eq!(
        error(&[
            ("INPUT_STARTUP-TIMEOUT-MINUTES", "30"),
            ("INPUT_MAX-LIFETIME-MINUTES", "30")
        ]),
        "Invalid input: max-lifetime-minutes: max-lifetime-minutes is \"30\", not longer than \
         startup-timeout-minutes (30): the instance would end before its runner could come \
         online. Make max-lifetime-minutes longer than startup-timeout-minutes, or shorten \
         startup-timeout-minutes."
    );
}

#[test]
fn idle_timeout_beyond_the_lifetime_is_a_warning() {
    assert_eq!(
        warnings(&[
            ("INPUT_MAX-LIFETIME-MINUTES", "60"),
            ("INPUT_IDLE-TIMEOUT-MINUTES", "90")
        ]),
        [
            "idle-timeout-minutes (90) is not shorter than max-lifetime-minutes (60), so it never \
          takes effect: the instance ends at its max lifetime first."
        ]
    );
}

/// The tags parsed from `value` as `key=value`, in key order.
fn tags(value: &str) -> Vec<String> {
    let tags = start(&[("INPUT_TAGS", value)]).ec2.tags;
    tags.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[test]
fn tags_take_a_yaml_mapping() {
    assert_eq!(
        tags("team: ml\ncost-center: 00123\nurgent: true\nnote: 'a: b'\nempty:"),
        [
            "cost-center=00123",
            "empty=",
            "note=a: b",
            "team=ml",
            "urgent=true"
        ]
    );
    let s = start(&[("INPUT_TAGS", "{team: ml, project: llm}")]);
    assert_eq!(s.ec2.tags.len(), 2);
}

#[test]
fn tags_take_key_value_lines() {
    assert_eq!(
        tags("team=ml\n\nurl = https://x.example/?a=b\nempty="),
        ["empty=", "team=ml", "url=https://x.example/?a=b"]
    );
}

#[test]
fn bad_tags_say_which_key_and_why() {
    let form = "Write tags as a YAML mapping (one \"key: value\" per line) or as key=value lines, \
                such as:\n  team: ml\n  cost-center: \"1234\"";
    assert_eq!(
        error(&[("INPUT_TAGS", "team=ml\njust-a-word")]),
        format!("Invalid input: tags: tags entry \"just-a-word\" is not a key=value line. {form}")
    );
    assert_eq!(
        error(&[("INPUT_TAGS", "team=ml\nteam=ai")]),
        "Invalid input: tags: tags entry \"team\" is not a key given once. Give each tag key once."
    );
    assert!(
        error(&[("INPUT_TAGS", "team: ml\nteam: ai")])
            .contains("is not valid YAML or key=value lines (YAML error: duplicate entry")
    );
    assert!(error(&[("INPUT_TAGS", "team: ml\ncost=1")]).starts_with(
        "Invalid input: tags: tags \"team: ml\ncost=1\" is not valid YAML or key=value lines"
    ));
    assert_eq!(
        error(&[("INPUT_TAGS", "aws:cloudformation=x")]),
        "Invalid input: tags: tags entry \"aws:cloudformation\" is not a usable tag key (aws: is \
         reserved by AWS). Choose a key that does not start with aws:."
    );
    assert!(error(&[("INPUT_TAGS", "gpu-runner:label: mine")]).contains("reserved for gpu-runner"));
    assert!(
        error(&[("INPUT_TAGS", "team: [a, b]")]).contains(
            "Give each tag a single value; lists and nested mappings are not tag values."
        )
    );
    assert!(
        error(&[("INPUT_TAGS", &format!("k={}", "v".repeat(257)))])
            .contains("is not a tag value of at most 256 characters")
    );
    assert!(
        error(&[("INPUT_TAGS", &format!("{}=v", "k".repeat(129)))])
            .contains("is not a tag key of at most 128 characters")
    );
    assert!(error(&[("INPUT_TAGS", "note: |\n  two\n  lines")]).contains("without line breaks"));
    let many: String = (0..41).map(|i| format!("k{i}=v\n")).collect();
    assert!(error(&[("INPUT_TAGS", &many)]).contains("is not at most 40 tags (it has 41)"));
}

#[test]
fn github_auth_is_a_token_or_an_app() {
    let s = start(&[
        ("INPUT_GITHUB-TOKEN", ""),
        ("INPUT_GITHUB-APP-ID", "123456"),
        (
            "INPUT_GITHUB-APP-PRIVATE-KEY",
            "-----BEGIN RSA PRIVATE KEY-----\\nMIIabc\\n-----END RSA PRIVATE KEY-----",
        ),
    ]);
    assert_eq!(
        s.common.github,
        GithubAuth::App {
            app_id: "123456".into(),
            private_key: Secret::new(
                "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY-----"
            ),
        }
    );
    let s = start(&[
        ("INPUT_GITHUB-TOKEN", ""),
        ("INPUT_GITHUB-APP-ID", "Iv23liABCdef"),
        (
            "INPUT_GITHUB-APP-PRIVATE-KEY",
            "-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----\n",
        ),
    ]);
    assert!(matches!(s.common.github, GithubAuth::App { .. }));
}

#[test]
fn github_auth_errors() {
    assert_eq!(
        error(&[("INPUT_GITHUB-TOKEN", "")]),
        "Missing input: github-token: github-token is not set. gpu-runner registers and removes \
         self-hosted runners, which takes a token with Administration: write on the repository \
         (the workflow's own GITHUB_TOKEN cannot do that). Set github-token: \
         ${{ secrets.RUNNER_ADMIN_TOKEN }}, or use a GitHub App with github-app-id and \
         github-app-private-key."
    );
    assert_eq!(
        error(&[("INPUT_GITHUB-APP-ID", "123")]),
        "Invalid input: github-app-id: github-app-id and github-token are both set. Use either \
         github-token, or github-app-id with github-app-private-key, not both."
    );
    assert_eq!(
        error(&[("INPUT_GITHUB-TOKEN", ""), ("INPUT_GITHUB-APP-ID", "123")]),
        "Missing input: github-app-private-key: github-app-private-key is not set. With \
         github-app-id, also set github-app-private-key: ${{ secrets.YOUR_APP_PRIVATE_KEY }} (the \
         App's .pem file)."
    );
    assert_eq!(
        error(&[
            ("INPUT_GITHUB-TOKEN", ""),
            ("INPUT_GITHUB-APP-PRIVATE-KEY", "k")
        ]),
        "Invalid input: github-app-private-key: github-app-private-key is set but github-app-id is \
         not. Set github-app-id too: github-app-private-key and github-app-id work together."
    );
    assert_eq!(
        error(&[("INPUT_GITHUB-APP-PRIVATE-KEY", "k")]),
        "Invalid input: github-app-private-key: github-app-private-key is set but github-app-id is \
         not. Set github-app-id too: github-app-private-key and github-app-id work together."
    );
    let e = errors(&[
        ("INPUT_GITHUB-TOKEN", ""),
        ("INPUT_GITHUB-APP-ID", "my-app"),
        ("INPUT_GITHUB-APP-PRIVATE-KEY", "not-a-pem-secret"),
    ]);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].starts_with(
        "Invalid input: github-app-id: github-app-id \"my-app\" is not a GitHub App id."
    ));
    assert!(e[1].starts_with("Invalid input: github-app-private-key: github-app-private-key is not a PEM private key. Paste the whole .pem file"));
}

#[test]
fn secret_values_never_appear_in_errors() {
    let secret = "ghp_very secret\nvalue";
    let e = error(&[("INPUT_GITHUB-TOKEN", secret)]);
    assert_eq!(
        e,
        "Invalid input: github-token: github-token is not a single token. github-token contains \
         spaces or line breaks: store only the token itself in the secret, with nothing around it."
    );
    let key = "PRIVATE KEY but not really, secret-part";
    let e = errors(&[
        ("INPUT_GITHUB-TOKEN", ""),
        ("INPUT_GITHUB-APP-ID", "1"),
        ("INPUT_GITHUB-APP-PRIVATE-KEY", key),
    ]);
    assert!(e.iter().all(|m| !m.contains("secret-part")), "{e:#?}");
}

#[test]
fn raw_secrets_lists_every_secret_input() {
    let env = env(&[("INPUT_GITHUB-APP-PRIVATE-KEY", "  pem  ")]);
    assert_eq!(raw_secrets(&env), [TOKEN, "pem"]);
}

#[test]
fn region_comes_from_the_input_or_the_environment() {
    assert_eq!(
        start(&[("INPUT_AWS-REGION", "eu-west-1")]).ec2.region,
        "eu-west-1"
    );
    assert_eq!(
        start(&[("INPUT_AWS-REGION", ""), ("AWS_REGION", "us-gov-west-1")])
            .ec2
            .region,
        "us-gov-west-1"
    );
    assert_eq!(
        start(&[
            ("INPUT_AWS-REGION", ""),
            ("AWS_DEFAULT_REGION", "ap-southeast-2")
        ])
        .ec2
        .region,
        "ap-southeast-2"
    );
    assert_eq!(
        error(&[("INPUT_AWS-REGION", "")]),
        "Missing input: aws-region: aws-region is not set. Set aws-region: us-east-1 (the region \
         to launch in), or set AWS_REGION in the workflow's env."
    );
    assert_eq!(
        error(&[("INPUT_AWS-REGION", "us-east-1a")]),
        "Invalid input: aws-region: aws-region \"us-east-1a\" is not an AWS region. Use a region \
         code such as us-east-1 or eu-west-1, not a zone (us-east-1a) or a name."
    );
    for bad in ["US-EAST-1", "virginia", "us-east", "us--1"] {
        assert!(
            error(&[("INPUT_AWS-REGION", bad)]).contains("is not an AWS region"),
            "{bad}"
        );
    }
}

#[test]
fn images_are_ami_ids_or_ssm_parameters() {
    assert_eq!(
        start(&[("INPUT_IMAGE-ID", "ami-0123456789abcdef0")])
            .ec2
            .image,
        ImageRef::Ami("ami-0123456789abcdef0".into())
    );
    assert_eq!(
        start(&[("INPUT_IMAGE-ID", "ssm:/my/ami")]).ec2.image,
        ImageRef::Ssm("/my/ami".into())
    );
    assert_eq!(
        start(&[("INPUT_IMAGE-ID", "resolve:ssm:/my/ami")])
            .ec2
            .image,
        ImageRef::Ssm("/my/ami".into())
    );
    assert_eq!(
        error(&[("INPUT_IMAGE-ID", "ubuntu-22.04")]),
        "Invalid input: image-id: image-id \"ubuntu-22.04\" is not an AMI id or an ssm: parameter. \
         Use an AMI id such as ami-0123456789abcdef0, or ssm:/path/of/a/parameter that holds one; \
         leave image-id unset for the AWS Deep Learning Base GPU AMI."
    );
    assert!(
        error(&[("INPUT_IMAGE-ID", "ssm:/bad path")]).contains("is not a valid SSM parameter name")
    );
    assert!(error(&[("INPUT_IMAGE-ID", "ami-123")]).contains("is not an AMI id"));
}

#[test]
fn network_ids_are_checked() {
    let s = start(&[
        (
            "INPUT_SUBNET-IDS",
            "subnet-0123456789abcdef0, subnet-1234abcd",
        ),
        ("INPUT_SECURITY-GROUP-IDS", "sg-0123456789abcdef0"),
    ]);
    assert_eq!(
        s.ec2.subnet_ids,
        ["subnet-0123456789abcdef0", "subnet-1234abcd"]
    );
    assert_eq!(s.ec2.security_group_ids, ["sg-0123456789abcdef0"]);
    assert_eq!(
        error(&[("INPUT_SUBNET-IDS", "subnet-0123456789abcdef0, my-subnet")]),
        "Invalid input: subnet-ids: subnet-ids entry \"my-subnet\" is not a subnet id. Use subnet ids \
         such as subnet-0123456789abcdef0 (VPC console → Subnets), separated by commas or newlines."
    );
    assert_eq!(
        error(&[("INPUT_SECURITY-GROUP-IDS", "default")]),
        "Invalid input: security-group-ids: security-group-ids entry \"default\" is not a security \
         group id. Use security group ids such as sg-0123456789abcdef0, not group names."
    );
}

#[test]
fn iam_names_are_checked() {
    let s = start(&[
        (
            "INPUT_ROLE-TO-ASSUME",
            "arn:aws:iam::123456789012:role/ci/gpu-ci",
        ),
        ("INPUT_IAM-INSTANCE-PROFILE", "gpu-ci-instance"),
    ]);
    assert_eq!(
        s.common.role_to_assume.as_deref(),
        Some("arn:aws:iam::123456789012:role/ci/gpu-ci")
    );
    assert_eq!(
        s.ec2.iam_instance_profile.as_deref(),
        Some("gpu-ci-instance")
    );
    start(&[(
        "INPUT_IAM-INSTANCE-PROFILE",
        "arn:aws-us-gov:iam::123456789012:instance-profile/gpu",
    )]);
    assert_eq!(
        error(&[("INPUT_ROLE-TO-ASSUME", "gpu-ci")]),
        "Invalid input: role-to-assume: role-to-assume \"gpu-ci\" is not an IAM role ARN. Use the \
         role's full ARN, such as arn:aws:iam::123456789012:role/gpu-ci (IAM console → Roles → the \
         role → ARN)."
    );
    for bad in [
        "arn:aws:iam::12345:role/x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:sts::123456789012:role/x",
    ] {
        assert!(
            error(&[("INPUT_ROLE-TO-ASSUME", bad)]).contains("is not an IAM role ARN"),
            "{bad}"
        );
    }
    assert!(
        error(&[("INPUT_IAM-INSTANCE-PROFILE", "gpu profile")])
            .contains("is not an IAM instance profile name or ARN")
    );
}

#[test]
fn labels_users_and_audience_are_checked() {
    assert_eq!(
        start(&[("INPUT_LABELS", "gpu\ncuda-12.4")]).runner.labels,
        ["gpu", "cuda-12.4"]
    );
    assert_eq!(
        error(&[("INPUT_LABELS", "gpu, my label")]),
        "Invalid input: labels: labels entry \"my label\" is not a runner label. Labels are 1 to \
         100 letters, digits, '.', '_', ':' or '-', such as gpu or cuda-12."
    );
    assert_eq!(
        error(&[("INPUT_RUNNER-USER", "Runner")]),
        "Invalid input: runner-user: runner-user \"Runner\" is not a Linux user name. Use 1 to 32 \
         lowercase letters, digits, '_' or '-', starting with a letter, such as runner."
    );
    assert!(error(&[("INPUT_AUDIENCE", "sts amazonaws")]).contains("is not an OIDC audience"));
    assert_eq!(
        start(&[("INPUT_AUDIENCE", "my-aud")]).common.audience,
        "my-aud"
    );
}

#[test]
fn root_runner_user_is_allowed_with_a_warning() {
    assert_eq!(start(&[("INPUT_RUNNER-USER", "root")]).runner.user, "root");
    assert!(warnings(&[("INPUT_RUNNER-USER", "root")])[0].starts_with("runner-user is root"));
}

#[test]
fn pre_runner_script_is_kept_as_written() {
    let s = start(&[("INPUT_PRE-RUNNER-SCRIPT", "set -x\n  apt-get update\n")]);
    assert_eq!(
        s.runner.pre_runner_script.as_deref(),
        Some("set -x\n  apt-get update")
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let e = errors(&[
        ("INPUT_INSTANCE-TYPES", "big"),
        ("INPUT_DRY-RUN", "yes"),
        ("INPUT_AWS-REGION", ""),
        ("INPUT_IDLE-TIMEOUT-MINUTES", "0"),
    ]);
    let titles: Vec<&str> = e.iter().map(|m| m.split(": ").nth(1).unwrap()).collect();
    assert_eq!(
        titles,
        [
            "aws-region",
            "instance-types",
            "idle-timeout-minutes",
            "dry-run"
        ]
    );
}

#[test]
fn stop_with_nothing_needs_no_region() {
    let s = stop(&[]);
    assert!(!s.has_work());
    assert_eq!(s.region, None);
}

#[test]
fn stop_reads_instance_ids_as_json_or_a_list() {
    let json = r#"["i-0123456789abcdef0","i-1234abcd"]"#;
    for v in [
        json,
        "i-0123456789abcdef0, i-1234abcd",
        "i-0123456789abcdef0\ni-1234abcd\ni-1234abcd",
    ] {
        let s = stop(&[("INPUT_INSTANCE-IDS", v), ("INPUT_REGION", "us-west-2")]);
        assert_eq!(s.instance_ids, ["i-0123456789abcdef0", "i-1234abcd"], "{v}");
        assert_eq!(s.region.as_deref(), Some("us-west-2"));
    }
    assert!(!stop(&[("INPUT_INSTANCE-IDS", "[]")]).has_work());
}

#[test]
fn stop_errors() {
    let stop_env = |vars: &[(&'static str, &'static str)]| {
        let mut all = vec![("INPUT_MODE", "stop"), ("INPUT_AWS-REGION", "")];
        all.extend_from_slice(vars);
        all
    };
    assert_eq!(
        error(&stop_env(&[("INPUT_INSTANCE-IDS", "[\"i-1234abcd\"")])),
        "Invalid input: instance-ids: instance-ids \"[\"i-1234abcd\"\" is not a JSON array of \
         instance ids (EOF while parsing a list at line 1 column 13). Pass the start job's \
         instance-ids output as it is, or a comma-separated list of instance ids."
    );
    assert_eq!(
        error(&stop_env(&[
            ("INPUT_INSTANCE-IDS", "i-1234abcd, gpu-1"),
            ("INPUT_REGION", "us-east-1")
        ])),
        "Invalid input: instance-ids: instance-ids entry \"gpu-1\" is not an EC2 instance id. Pass \
         the start job's instance-ids output as it is: instance-ids: \
         ${{ needs.start.outputs.instance-ids }}."
    );
    assert_eq!(
        error(&stop_env(&[("INPUT_LABEL", "gpu-runner-1-1-abc")])),
        "Missing input: region: region is not set. Pass the start job's region output (region: \
         ${{ needs.start.outputs.region }}), or set aws-region or AWS_REGION."
    );
    assert!(
        error(&stop_env(&[
            ("INPUT_LABEL", "bad label"),
            ("INPUT_REGION", "us-east-1")
        ]))
        .contains("is not a runner label")
    );
    assert!(error(&stop_env(&[("INPUT_REGION", "nowhere")])).contains("is not an AWS region"));
}

#[test]
fn stop_region_prefers_region_then_aws_region_then_env() {
    let label = ("INPUT_LABEL", "gpu-runner-1-1-abc");
    assert_eq!(
        stop(&[
            label,
            ("INPUT_REGION", "eu-west-1"),
            ("INPUT_AWS-REGION", "us-east-1")
        ])
        .region
        .as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(
        stop(&[label, ("INPUT_AWS-REGION", "us-east-2")])
            .region
            .as_deref(),
        Some("us-east-2")
    );
    assert_eq!(
        stop(&[label, ("AWS_REGION", "us-west-1")])
            .region
            .as_deref(),
        Some("us-west-1")
    );
}

#[test]
fn inputs_of_the_other_mode_are_warned_about_unless_default() {
    let mut vars = vec![
        ("INPUT_MODE", "stop"),
        ("INPUT_INSTANCE-TYPES", "g4dn.xlarge"),
        ("INPUT_DRY-RUN", "false"),
        ("INPUT_SUBNET-IDS", "subnet-aaaaaaaa"),
    ];
    assert_eq!(
        warnings(&vars),
        ["subnet-ids is only used with mode: start; it has no effect with mode: stop."]
    );
    vars = vec![("INPUT_LABEL", "x")];
    assert_eq!(
        warnings(&vars),
        ["label is only used with mode: stop; it has no effect with mode: start."]
    );
}

#[test]
fn unknown_inputs_are_warned_about_with_a_suggestion() {
    assert_eq!(
        warnings(&[
            ("INPUT_INSTANCE_TYPE", "g5.xlarge"),
            ("INPUT_COLOUR", "blue")
        ]),
        [
            "gpu-runner has no input named colour; it is ignored.",
            "gpu-runner has no input named instance_type; it is ignored. Did you mean instance-types?",
        ]
    );
}

#[test]
fn the_runner_is_pinned_unless_a_hash_comes_with_another_version() {
    let pin = crate::runner_package::PINNED_RUNNERS[0];
    let s = start(&[]);
    assert_eq!(
        (s.runner.version.as_str(), s.runner.sha256.as_str()),
        (pin.version, pin.sha256)
    );
    let s = start(&[
        ("INPUT_RUNNER-VERSION", "2.400.1"),
        ("INPUT_RUNNER-SHA256", &"AB".repeat(32)),
    ]);
    assert_eq!(
        (s.runner.version.as_str(), s.runner.sha256.as_str()),
        ("2.400.1", "ab".repeat(32).as_str())
    );
    assert!(error(&[("INPUT_RUNNER-VERSION", "2.400.1")]).starts_with(
        "Missing input: runner-sha256: runner-sha256 is not set. gpu-runner has no pinned hash \
             for runner-version 2.400.1: set runner-sha256 to the SHA-256 of \
             actions-runner-linux-x64-2.400.1.tar.gz"
    ));
    assert!(
        error(&[("INPUT_RUNNER-SHA256", &"0".repeat(64))]).contains(&format!(
            "is not the SHA-256 GitHub published for actions-runner-linux-x64-{}.tar.gz",
            pin.version
        ))
    );
    assert!(
        error(&[("INPUT_RUNNER-VERSION", "v2.337.0")]).contains("is not an Actions runner version")
    );
    assert!(error(&[("INPUT_RUNNER-SHA256", "abc")]).contains("is not a SHA-256 hash"));
}

#[test]
fn arm64_instance_types_get_the_arm64_runner_and_image() {
    let s = start(&[("INPUT_INSTANCE-TYPES", "g5g.xlarge, g5g.2xlarge")]);
    assert_eq!(s.runner.arch, Arch::Arm64);
    let newest = crate::runner_package::pinned(spec::RUNNER_VERSION.default, Arch::Arm64);
    assert_eq!(Some(s.runner.sha256.as_str()), newest.map(|p| p.sha256));
    assert_eq!(
        start(&[
            ("INPUT_INSTANCE-TYPES", "g5g.xlarge"),
            ("INPUT_RUNNER-VERSION", "2.337.0"),
        ])
        .runner
        .sha256,
        "9b1dc70626422526e3c94767cf024896beb15da5342a3f4819bf2feac13e0393"
    );
    assert_eq!(
        s.ec2.image,
        ImageRef::Ssm(spec::DEFAULT_IMAGE_ARM64["ssm:".len()..].to_owned())
    );
    // Another pinned version, for its architecture; a chosen image stays as given.
    let s = start(&[
        ("INPUT_INSTANCE-TYPES", "g5g.xlarge"),
        ("INPUT_RUNNER-VERSION", "2.336.0"),
        ("INPUT_IMAGE-ID", "ami-0123456789abcdef0"),
    ]);
    assert_eq!(
        (s.runner.version.as_str(), s.runner.sha256.as_str()),
        (
            "2.336.0",
            "58b758e420b87093fbd4bfddd368074960053e2f1388f01848c82624b90f27d1"
        )
    );
    assert_eq!(
        s.ec2.image,
        ImageRef::Ami("ami-0123456789abcdef0".to_owned())
    );
    assert_eq!(
        start(&[("INPUT_RUNNER-VERSION", "2.336.0")]).runner.sha256,
        "04cf0be1aff4c3ec3554466c39124ca250e3effd8873bb7e8d68535aa9505d5d"
    );
    // The x64 hash is not the arm64 one.
    assert!(
        error(&[
            ("INPUT_INSTANCE-TYPES", "g5g.xlarge"),
            ("INPUT_RUNNER-VERSION", "2.337.0"),
            (
                "INPUT_RUNNER-SHA256",
                "70920811a4f8ad4328818682bca5c6469c1c942fab52448868071d0063816613"
            ),
        ])
        .contains("actions-runner-linux-arm64-2.337.0.tar.gz as 9b1dc706")
    );
    assert!(
        error(&[
            ("INPUT_INSTANCE-TYPES", "g5g.xlarge"),
            ("INPUT_RUNNER-VERSION", "2.400.1"),
        ])
        .contains("the SHA-256 of actions-runner-linux-arm64-2.400.1.tar.gz")
    );
}

#[test]
fn instance_types_of_two_architectures_are_refused() {
    assert_eq!(
        error(&[("INPUT_INSTANCE-TYPES", "g5.xlarge,g5g.xlarge")]),
        "Invalid input: instance-types: instance-types \"g5.xlarge,g5g.xlarge\" is not instance \
         types of one CPU architecture. g5.xlarge is x64 and g5g.xlarge is arm64: one image and \
         one runner package serve every candidate. List only arm64 types (such as g5g.xlarge) or \
         only x64 types (such as g5.xlarge), or use two start jobs."
    );
}

#[test]
fn runner_scope_and_group() {
    let s = start(&[]);
    assert_eq!(
        (s.common.scope(), &s.runner.group),
        (RunnerScope::Repo, &None)
    );
    let s = start(&[
        ("INPUT_RUNNER-SCOPE", "org"),
        ("INPUT_RUNNER-GROUP", "GPU runners"),
    ]);
    assert_eq!(s.common.runner_scope, Some(RunnerScope::Org));
    assert_eq!(
        s.runner.group,
        Some(GroupRef::Name("GPU runners".to_owned()))
    );
    let s = start(&[("INPUT_RUNNER-SCOPE", "org"), ("INPUT_RUNNER-GROUP", "42")]);
    assert_eq!(s.runner.group, Some(GroupRef::Id(42)));
    assert!(
        error(&[("INPUT_RUNNER-GROUP", "GPU runners")])
            .contains("Runner groups belong to organizations: set runner-scope: org as well")
    );
    assert!(
        error(&[("INPUT_RUNNER-SCOPE", "organization")])
            .contains("is not repo or org. Use repo (runners of this repository) or org")
    );
    assert!(error(&[("INPUT_RUNNER-SCOPE", "orgs")]).ends_with("Did you mean org?"));
    // Stop and cleanup read the scope too; unset, stop may learn it from the instances.
    assert_eq!(stop(&[]).common.runner_scope, None);
    assert_eq!(
        stop(&[("INPUT_RUNNER-SCOPE", "org")]).common.runner_scope,
        Some(RunnerScope::Org)
    );
}

#[test]
fn market_type_is_one_of_three() {
    assert_eq!(
        error(&[("INPUT_MARKET-TYPE", "spot-than-on-demand")]),
        "Invalid input: market-type: market-type \"spot-than-on-demand\" is not a market type. Use \
         one of: on-demand, spot, spot-then-on-demand. Did you mean spot-then-on-demand?"
    );
}

/// The runner passes every default of `action.yml` as an input: a value equal to the declared
/// default is how "not set" arrives, and must mean it where "not set" means something.
#[test]
fn a_declared_default_that_arrives_counts_as_not_set() {
    let every_default: Vec<(String, &str)> = spec::ALL
        .iter()
        .filter(|s| !s.default.is_empty())
        .map(|s| (s.env_var(), s.default))
        .collect();
    fn with<'a>(
        defaults: &'a [(String, &'static str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut vars: Vec<(&str, &str)> = defaults.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        vars.extend_from_slice(extra);
        vars
    }
    let with_defaults = |extra: &[(&'static str, &'static str)]| with(&every_default, extra);
    let arm = start(&with_defaults(&[("INPUT_INSTANCE-TYPES", "g5g.xlarge")]));
    assert_eq!(
        Some(arm.ec2.image),
        values::image(spec::DEFAULT_IMAGE_ARM64).ok()
    );
    let given = start(&with_defaults(&[
        ("INPUT_INSTANCE-TYPES", "g5g.xlarge"),
        ("INPUT_IMAGE-ID", "ami-0123456789abcdef0"),
    ]));
    assert_eq!(
        given.ec2.image,
        ImageRef::Ami("ami-0123456789abcdef0".to_owned())
    );
    assert_eq!(stop(&with_defaults(&[])).common.runner_scope, None);
    assert!(
        parse(&env(&with_defaults(&[
            ("INPUT_MODE", "stop"),
            ("INPUT_AWS-REGION", "")
        ])))
        .is_ok_and(|p| p.warnings.is_empty()),
        "the defaults of other modes' inputs are no reason to warn"
    );
}

#[test]
fn a_pool_is_read_with_its_limits_and_refused_where_it_cannot_work() {
    assert_eq!(start(&[]).pool, None);
    let pool = start(&[("INPUT_POOL", "train"), ("INPUT_POOL-MAX-USES", "20")])
        .pool
        .expect("a pool");
    assert_eq!(pool.name.as_deref(), Some("train"));
    assert_eq!((pool.size, pool.max_uses, pool.max_age_days), (4, 20, 30));
    assert!(pool.wait_when_full);
    assert_eq!(
        pool.describe(),
        "\"train\", at most 4 instance(s); when full, wait; each instance serves up to 20 job(s) \
         for up to 30 day(s)"
    );
    let one = start(&[("INPUT_POOL-INSTANCE-ID", "i-0123456789abcdef0")])
        .pool
        .expect("a pool of one");
    assert_eq!(one.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(one.name, None);

    let e = error(&[("INPUT_POOL", "train"), ("INPUT_MARKET-TYPE", "spot")]);
    assert!(
        e.contains("pool") && e.contains("market-type") && e.contains("pools are on-demand"),
        "{e}"
    );
    let e = error(&[
        ("INPUT_POOL-INSTANCE-ID", "i-0123456789abcdef0"),
        ("INPUT_COUNT", "2"),
    ]);
    assert!(e.contains("pool-instance-id resumes one instance"), "{e}");
    let e = error(&[
        ("INPUT_POOL", "train"),
        ("INPUT_COUNT", "8"),
        ("INPUT_POOL-SIZE", "4"),
    ]);
    assert!(
        e.contains("at least count (8)") && e.contains("raise pool-size to 8"),
        "{e}"
    );
    let e = error(&[("INPUT_POOL", "my pool!")]);
    assert!(e.contains("Pool names are 1 to 64 letters"), "{e}");
    let e = error(&[("INPUT_POOL", "train"), ("INPUT_POOL-FULL", "wiat")]);
    assert!(e.contains("Did you mean wait?"), "{e}");
}

#[test]
fn machine_attached_waits_for_labels_and_reads_no_aws_input() {
    let parsed = parse(&env(&[
        ("INPUT_MACHINE", "attached"),
        ("INPUT_LABELS", "gpu-a10, cuda-12"),
        ("INPUT_STARTUP-TIMEOUT-MINUTES", "5"),
        ("INPUT_INSTANCE-TYPES", "g5.xlarge"),
    ]))
    .unwrap();
    let Inputs::Attached(a) = &parsed.inputs else {
        panic!("expected an attached start, got {parsed:?}")
    };
    assert_eq!(a.labels, ["gpu-a10", "cuda-12"]);
    assert_eq!(a.timeout_minutes, 5);
    assert!(!a.trust.allow_untrusted);
    assert_eq!(
        parsed.warnings,
        [
            "aws-region has no effect with machine: attached: the machine is yours, and \
             gpu-runner attach sets it up.",
            "instance-types has no effect with machine: attached: the machine is yours, and \
             gpu-runner attach sets it up."
        ]
    );
    assert_eq!(
        error(&[("INPUT_MACHINE", "attached")]),
        "Missing input: labels: labels is not set. With machine: attached, name the labels the \
         machine was attached with (gpu-runner attach --labels gpu-a10 → labels: gpu-a10): start \
         waits until a machine with all of them is online and idle."
    );
    assert_eq!(
        error(&[("INPUT_MACHINE", "atached")]),
        "Invalid input: machine: machine \"atached\" is not a kind of machine. Use ec2 (the \
         default: gpu-runner launches an instance), kubernetes (a GPU pod on your cluster) or \
         attached (a machine that runs gpu-runner attach). Did you mean attached?"
    );
}

#[test]
fn a_stop_of_an_attached_machine_reads_nothing_else() {
    let parsed = parse(
        &[("INPUT_MODE", "stop"), ("INPUT_MACHINE", "attached")]
            .into_iter()
            .collect(),
    )
    .unwrap();
    assert_eq!(parsed.inputs, Inputs::Detach);
    assert!(parsed.inputs.common().is_none());
    // machine: ec2 is the default and changes nothing.
    assert_eq!(stop(&[("INPUT_MACHINE", "ec2")]).label, None);
}

const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    \
    server: https://k.example\nusers:\n- name: u\n  user:\n    token: t0k3n-value\ncontexts:\n- \
    name: c\n  context:\n    cluster: c\n    user: u\n    namespace: gpu-ci\n\
    current-context: c\n";

/// A start of a pod, changed by `vars`: no AWS input.
fn pod_env<'a>(vars: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        ("INPUT_AWS-REGION", ""),
        ("INPUT_MACHINE", "kubernetes"),
        ("INPUT_KUBECONFIG", KUBECONFIG),
    ];
    for (k, v) in vars {
        all.retain(|(name, _)| name != k);
        all.push((*k, *v));
    }
    all
}

#[test]
fn machine_kubernetes_reads_the_cluster_and_the_pod_and_no_aws_input() {
    let all = pod_env(&[
        ("INPUT_GPU-COUNT", "2"),
        (
            "INPUT_NODE-SELECTOR",
            "node.kubernetes.io/instance-type=g5.xlarge",
        ),
        ("INPUT_CPU-REQUEST", "500m"),
    ]);
    let s = start(&all);
    let cluster = s.common.cluster.as_ref().expect("a cluster");
    assert_eq!(cluster.namespace, "gpu-ci", "the context's namespace");
    let pod = s.pod.expect("a pod");
    assert_eq!(pod.gpu_count, 2);
    assert_eq!(pod.gpu_resource, "nvidia.com/gpu");
    assert_eq!(pod.image, spec::DEFAULT_POD_IMAGE);
    assert_eq!(
        pod.node_selector
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some("g5.xlarge")
    );
    assert_eq!(pod.cpu_request.as_deref(), Some("500m"));
    assert_eq!(s.ec2.region, "");
    let all = pod_env(&[("INPUT_NAMESPACE", "other")]);
    assert_eq!(start(&all).common.cluster.unwrap().namespace, "other");
    // The credentials of the kubeconfig are masked, not its other lines.
    let secrets = raw_secrets(&env(&all));
    assert!(secrets.contains(&"t0k3n-value".to_owned()), "{secrets:?}");
    assert!(!secrets.iter().any(|s| s.contains("kind: Config")));
    // EC2's inputs have no effect on a pod, and say so.
    let all = pod_env(&[("INPUT_INSTANCE-TYPES", "g5.xlarge")]);
    assert_eq!(
        parse(&env(&all)).unwrap().warnings,
        [
            "instance-types has no effect here: it is about EC2 instances, and with machine: \
          kubernetes the pod's image and pod-template decide."
        ]
    );
    assert_eq!(
        warnings(&[("INPUT_GPU-COUNT", "2")]),
        [
            "gpu-count has no effect here: it is about Kubernetes pods; set machine: kubernetes to \
          use one."
        ]
    );
}

#[test]
fn machine_kubernetes_errors_name_the_input_and_the_fix() {
    let all = pod_env(&[("INPUT_KUBECONFIG", "")]);
    assert_eq!(
        error(&all),
        "Missing input: kubeconfig: kubeconfig is not set. With machine: kubernetes, say how to \
         reach the cluster: kubeconfig: ${{ secrets.KUBECONFIG }} (a kubeconfig whose user is \
         bound to gpu-runner's Role in the namespace), or eks-cluster: NAME with role-to-assume \
         (an EKS cluster, no stored secret). See docs/kubernetes.md."
    );
    let all = pod_env(&[("INPUT_KUBECONFIG", ""), ("INPUT_EKS-CLUSTER", "gpu-ci")]);
    assert_eq!(
        error(&all),
        "Missing input: aws-region: aws-region is not set. Set aws-region: us-east-1 (the region \
         the EKS cluster is in), or set AWS_REGION in the workflow's env."
    );
    let all = pod_env(&[
        ("INPUT_KUBECONFIG", ""),
        ("INPUT_EKS-CLUSTER", "gpu-ci"),
        ("INPUT_AWS-REGION", "eu-west-1"),
    ]);
    let eks = start(&all);
    assert_eq!(
        eks.common.cluster.map(|c| c.access),
        Some(ClusterAccess::Eks {
            name: "gpu-ci".to_owned(),
            region: "eu-west-1".to_owned()
        })
    );
    assert_eq!(eks.ec2.region, "eu-west-1");
    let all = pod_env(&[("INPUT_EKS-CLUSTER", "gpu-ci")]);
    assert!(error(&all).contains("Use either kubeconfig (any cluster) or eks-cluster"));
    let all = pod_env(&[("INPUT_KUBECONFIG", "apiVersion: v1\nkind: Config\n")]);
    let e = error(&all);
    assert!(
        e.starts_with(
            "Invalid input: kubeconfig: kubeconfig is not a kubeconfig (it has no current-context)"
        ),
        "{e}"
    );
    for (input, value, words) in [
        ("INPUT_GPU-RESOURCE", "gpu", "is not a GPU resource name"),
        ("INPUT_CPU-REQUEST", "four", "is not a Kubernetes quantity"),
        (
            "INPUT_NODE-SELECTOR",
            "gpu",
            "is not a node label as key=value",
        ),
        (
            "INPUT_TOLERATIONS",
            "[{key: 3, operator: [x]}]",
            "is not a YAML list of tolerations",
        ),
        (
            "INPUT_POD-TEMPLATE",
            "- a list",
            "is not a Pod manifest in YAML (not a mapping)",
        ),
        ("INPUT_NAMESPACE", "GPU_CI", "is not a Kubernetes namespace"),
        ("INPUT_POOL", "warm", "Pools keep stopped EC2 instances"),
    ] {
        let all = pod_env(&[(input, value)]);
        let e = error(&all);
        assert!(e.contains(words), "{input}: {e}");
    }
    // A stop of pods takes pod names, and needs no region.
    let all = pod_env(&[
        ("INPUT_MODE", "stop"),
        ("INPUT_INSTANCE-IDS", "[\"gpu-runner-1-1-abcd1234\"]"),
    ]);
    let s = stop(&all);
    assert_eq!(s.instance_ids, ["gpu-runner-1-1-abcd1234"]);
    assert_eq!(s.region.as_deref(), Some(""));
}

#[test]
fn jit_handoff_through_ssm_needs_the_instance_profile_that_reads_it() {
    assert_eq!(start(&[]).ec2.jit_handoff, JitHandoff::UserData);
    let s = start(&[
        ("INPUT_JIT-HANDOFF", "ssm"),
        ("INPUT_IAM-INSTANCE-PROFILE", "gpu-runner-instance"),
    ]);
    assert_eq!(s.ec2.jit_handoff, JitHandoff::Ssm);
    assert_eq!(
        error(&[("INPUT_JIT-HANDOFF", "ssm")]),
        "Missing input: iam-instance-profile: iam-instance-profile is not set. jit-handoff: ssm \
         hands the runner's JIT config to the instance's own role: set iam-instance-profile to \
         a profile whose role has docs/iam/instance-role-policy.json, or leave jit-handoff at \
         user-data."
    );
    assert_eq!(
        error(&[("INPUT_JIT-HANDOFF", "parameter-store")]),
        "Invalid input: jit-handoff: jit-handoff \"parameter-store\" is not a JIT hand-over. \
         Use one of: user-data, ssm."
    );
}

#[test]
fn retry_reads_max_retries_and_is_for_ec2_only() {
    match parse(&env(&[("INPUT_MODE", "retry"), ("INPUT_MAX-RETRIES", "2")])) {
        Ok(Parsed {
            inputs: Inputs::Retry(r),
            ..
        }) => assert_eq!((r.max_retries, r.region.as_str()), (2, "us-east-1")),
        other => panic!("expected a retry, got {other:?}"),
    }
    assert!(error(&[("INPUT_MODE", "retry"), ("INPUT_MAX-RETRIES", "9")]).contains("max-retries"));
    let pods = errors(&[
        ("INPUT_MODE", "retry"),
        ("INPUT_MACHINE", "kubernetes"),
        ("INPUT_KUBECONFIG", "apiVersion: v1\nkind: Config\n"),
    ]);
    assert!(
        pods.iter()
            .any(|e| e.contains("mode: retry re-runs runs whose EC2 spot instance")),
        "{pods:#?}"
    );
}
