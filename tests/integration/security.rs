//! Who may run code on the machine and where its runner is registered: organization runners and
//! their groups, GitHub Enterprise Server, the pinned and checked runner package, arm64.

use std::time::Duration;

use crate::support::{Outcome, Step, as_app, nothing_left};
use world::github::FakeGroup;
use world::{Options, World};

fn world() -> World {
    World::start(Options::default()).expect("the local world starts")
}

/// A step of the organization's owner, whose token manages the organization's runners.
fn as_org(step: world::step::Step, world: &World) -> world::step::Step {
    step.input("github-token", &world.org_admin_token)
        .input("runner-scope", "org")
}

fn gpu_group(world: &World, repositories: &[&str], public: bool) {
    world.github.lock().unwrap().groups.push(FakeGroup {
        id: 7,
        name: "GPU".to_owned(),
        visibility: "selected",
        allows_public_repositories: public,
        repositories: repositories.iter().map(|r| r.to_string()).collect(),
    });
}

/// The instance a start launched, as moto describes it.
fn instance_of(world: &World, started: &Outcome) -> aws_sdk_ec2::types::Instance {
    let id = started.outputs()["instance-id"].clone();
    world
        .instances()
        .into_iter()
        .find(|i| i.instance_id() == Some(&id))
        .expect("the launched instance")
}

/// Stops what `started` launched and checks that nothing is left.
#[track_caller]
fn stop_cleanly(world: &World, started: &Outcome) {
    Step::stop()
        .in_world(world)
        .outputs_of(started)
        .run()
        .success();
    nothing_left(world);
}

/// A start the guard refused, as `on-untrusted: skip` (the default) ends it: green, with
/// `skipped: true`, nothing launched, and the reason in a notice.
#[track_caller]
fn skipped_because(out: &Outcome, why: &str) {
    out.success();
    assert_eq!(
        out.outputs().get("skipped").map(String::as_str),
        Some("true"),
        "{:?}",
        out.outputs()
    );
    let notices = out.commands("notice").join("\n");
    assert!(notices.contains(why), "{why}: {notices}");
}

#[track_caller]
fn job_runs(world: &World, label: &str) {
    let job = world.queue_job(&[label], "nvidia-smi -L || nvidia-smi");
    let done = world.wait_until(Duration::from_secs(30), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(done, "the job was never picked up");
    let job = world.job(job).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
}

#[test]
fn org_runners_join_the_named_group_and_a_stop_without_the_scope_still_removes_them() {
    let world = world();
    gpu_group(&world, &["octo/ml"], false);
    let started = as_org(Step::start().in_world(&world), &world)
        .input("runner-group", "gpu")
        .run();
    started.success();
    assert!(
        started
            .stdout
            .contains("Registering in the organization octo's runner group \"GPU\" (id 7)"),
        "{}",
        started.stdout
    );
    let runners = world.registered_runners();
    assert_eq!(runners.len(), 1);
    assert!(runners[0].org && runners[0].group == 7, "{runners:?}");
    let label = started.outputs()["label"].clone();
    job_runs(&world, &label);

    // The stop job forgot runner-scope: the instance's tag says where the runner is.
    let stopped = Step::stop()
        .in_world(&world)
        .input("github-token", &world.org_admin_token)
        .outputs_of(&started)
        .run();
    stopped.success();
    nothing_left(&world);
}

#[test]
fn a_group_that_would_never_pick_up_the_job_is_refused_before_launch() {
    let world = world();
    // GitHub's default group does not serve public repositories until told to.
    world.github.lock().unwrap().public = true;
    let out = as_org(Step::start().in_world(&world), &world).run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains(
            "::error title=GitHub%3A choosing the runner group failed::choosing the runner group \
             failed: the runner group \"Default\" does not allow public repositories, and octo/ml \
             is public: its job would never be picked up."
        ),
        "{error}"
    );
    assert!(error.contains("Allow public repositories"), "{error}");

    gpu_group(&world, &["octo/other"], true);
    let out = as_org(Step::start().in_world(&world), &world)
        .input("runner-group", "7")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("the runner group \"GPU\" is not available to octo/ml")
            && error.contains("add octo/ml to the repositories that may use the group"),
        "{error}"
    );

    let out = as_org(Step::start().in_world(&world), &world)
        .input("runner-group", "GPUs")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("the organization octo has no runner group \"GPUs\"")
            && error.contains("Set runner-group to one of: Default (id 1), GPU (id 7);"),
        "{error}"
    );
    assert!(world.instances().is_empty());
    nothing_left(&world);
}

#[test]
fn a_repository_token_for_org_runners_is_told_which_permission_it_lacks() {
    let world = world();
    let out = Step::start()
        .in_world(&world)
        .input("runner-scope", "org")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(error.contains("(HTTP 403)"), "{error}");
    assert!(
        error.contains(
            "The token cannot manage the self-hosted runners of the organization octo: a \
             fine-grained token needs the organization permission Self-hosted runners: read and \
             write, a classic token the admin:org scope"
        ),
        "{error}"
    );
    assert!(world.instances().is_empty());
    nothing_left(&world);
}

#[test]
fn an_app_installed_on_the_organization_manages_its_runners() {
    let world = world();
    {
        let mut gh = world.github.lock().unwrap();
        gh.app_installed = false;
        gh.app_installed_on_org = true;
    }
    let as_org_app = |step: world::step::Step| as_app(step).input("runner-scope", "org");
    let started = as_org_app(Step::start().in_world(&world)).run();
    started.success();
    assert!(world.registered_runners()[0].org);
    job_runs(&world, &started.outputs()["label"]);
    as_org_app(Step::stop().in_world(&world))
        .outputs_of(&started)
        .run()
        .success();
    nothing_left(&world);
    // The organization's runners, and this repository only: not every repository of the
    // installation, and not Administration of any.
    for request in &world.github.lock().unwrap().token_requests {
        assert_eq!(
            request,
            &serde_json::json!({"repositories": ["ml"],
                "permissions": {"organization_self_hosted_runners": "write"}})
        );
    }

    // Installed on the repository only, the App cannot reach the organization's runners.
    {
        let mut gh = world.github.lock().unwrap();
        gh.app_installed = true;
        gh.app_installed_on_org = false;
    }
    let out = as_org_app(Step::start().in_world(&world)).run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("the App is not installed on the organization octo")
            && error.contains("Self-hosted runners: read and write"),
        "{error}"
    );
    nothing_left(&world);
}

#[test]
fn an_org_start_that_fails_rolls_back_its_org_runner() {
    let world = World::start(Options {
        runner: world::RunnerBehaviour::NeverOnline,
        ..Options::default()
    })
    .unwrap();
    let out = as_org(Step::start().in_world(&world), &world)
        .input("startup-timeout-minutes", "1")
        .run();
    out.failure();
    assert!(out.errors().join("\n").contains("Rolled back: instance i-"));
    nothing_left(&world);
}

#[test]
fn org_cleanup_judges_only_runners_of_this_repositorys_runs() {
    let world = world();
    // Run 1 of this repository is over; run 2 belongs to another repository of the organization,
    // whose runner waits for its instance to boot.
    let (ours, theirs) = ("gpu-runner-1-1-aaaaaaaa", "gpu-runner-2-1-bbbbbbbb");
    {
        let mut gh = world.github.lock().unwrap();
        let job = gh.queue_job(1, vec![ours.to_owned()], "true");
        gh.jobs.iter_mut().find(|j| j.id == job).unwrap().status = "completed";
        for (name, id) in [(ours, 901), (theirs, 902)] {
            let mut runner = world::github::FakeRunner::offline(id, name);
            runner.org = true;
            gh.runners.insert(id, runner);
        }
    }
    let out = as_org(Step::mode("cleanup").in_world(&world), &world).run();
    out.success();
    assert!(
        out.summary.contains(&format!(
            "| remove runner | {ours} | offline, its run 1 is over and no instance serves it | removed |"
        )),
        "{}",
        out.summary
    );
    assert!(!out.summary.contains(theirs), "{}", out.summary);
    let left: Vec<String> = world
        .registered_runners()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(left, [theirs]);
}

#[test]
fn an_environment_that_names_another_event_than_the_signed_token_gets_no_credentials() {
    let world = world();
    world.faults.take_calls();
    // The token says push; a step's environment says a manual run, which the guard lets through.
    let out = Step::start()
        .in_world(&world)
        .env("GITHUB_EVENT_NAME", "workflow_dispatch")
        .run();
    out.failure();
    assert_eq!(out.errors().len(), 1, "{:?}", out.errors());
    assert!(
        out.errors()[0].contains(
            "gpu-runner refused to start because the job's OIDC token says the run was triggered \
             by push, but GITHUB_EVENT_NAME says workflow_dispatch"
        ),
        "{:?}",
        out.errors()
    );
    assert_eq!(aws_calls(&world), Vec::<String>::new(), "AWS was called");
    nothing_left(&world);

    // allow-untrusted turns the guard off, this check with it.
    let started = Step::start()
        .in_world(&world)
        .env("GITHUB_EVENT_NAME", "workflow_dispatch")
        .input("allow-untrusted", "true")
        .run();
    started.success();
    stop_cleanly(&world, &started);
}

#[test]
fn enterprise_server_urls_are_used_for_every_github_call() {
    let world = world();
    // GitHub Enterprise Server issues the job's OIDC tokens itself.
    *world.oidc.issuer.lock().unwrap() = "https://ghe.example/_services/token".to_owned();
    let enterprise = |step: world::step::Step| {
        step.env("GITHUB_API_URL", &format!("{}/api/v3", world.github_url))
            .env("GITHUB_SERVER_URL", "https://ghe.example")
    };
    let calls = || {
        let gh = world.github.lock().unwrap();
        (gh.enterprise_calls, gh.dotcom_calls)
    };
    let started = enterprise(Step::start().in_world(&world)).run();
    started.success();
    let (after_start, dotcom) = calls();
    assert!(after_start >= 2, "{after_start} calls went to /api/v3");
    assert_eq!(dotcom, 0, "start called github.com's API path");
    job_runs(&world, &started.outputs()["label"]);
    enterprise(Step::stop().in_world(&world))
        .outputs_of(&started)
        .run()
        .success();
    let (after_stop, dotcom) = calls();
    assert!(after_stop > after_start);
    assert_eq!(dotcom, 0, "stop called github.com's API path");
    // An App's installation token comes from the same server.
    let started = as_app(enterprise(Step::start().in_world(&world))).run();
    started.success();
    as_app(enterprise(Step::stop().in_world(&world)))
        .outputs_of(&started)
        .run()
        .success();
    let (after_app, dotcom) = calls();
    assert!(
        after_app >= after_stop + 4,
        "{after_app} after {after_stop}"
    );
    assert_eq!(dotcom, 0, "the App's calls went to github.com's API path");
    nothing_left(&world);
}

/// GHE.com (data residency) serves `https://<subdomain>.ghe.com`, and its jobs' tokens come from
/// `https://token.actions.<subdomain>.ghe.com` (GitHub's OIDC docs for GHE.com).
/// STS refuses a token the role's trust policy does not admit with a bare `AccessDenied`: the
/// error names the trust policy (not the permissions policy), the token's `sub` and `aud`, and
/// the condition that would admit it. A token whose audience the identity provider does not
/// list is refused as the token it is, with its own fix.
#[test]
fn a_token_the_trust_policy_does_not_admit_is_shown_with_its_sub_and_the_condition_that_would() {
    let world = world();
    // The pool role trusts the default branch alone (docs/iam/trust-policy-branch.json).
    *world.oidc.git_ref.lock().unwrap() = "refs/heads/feature".to_owned();
    let refused = Step::start()
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    for words in [
        "title=No AWS credentials",
        "Not authorized to perform sts:AssumeRoleWithWebIdentity",
        "sub: repo:octo/ml:ref:refs/heads/feature, aud: sts.amazonaws.com",
        "The role's trust policy does not admit this job",
        r#""token.actions.githubusercontent.com:sub": "repo:octo/ml:ref:refs/heads/feature""#,
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    assert!(!error.contains("missing a permission"), "{error}");

    let refused = Step::start()
        .in_world(&world)
        .input("audience", "my-audience")
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    for words in [
        "AWS STS refused the job's OIDC token (InvalidIdentityToken): Incorrect token audience",
        "does not list the token's audience my-audience",
        "aws iam add-client-id-to-open-id-connect-provider",
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    nothing_left(&world);
}

#[test]
fn ghe_com_tokens_come_from_the_subdomains_issuer() {
    let world = world();
    *world.oidc.issuer.lock().unwrap() = "https://token.actions.octo.ghe.com".to_owned();
    let on_ghe_com =
        |step: world::step::Step| step.env("GITHUB_SERVER_URL", "https://octo.ghe.com");
    let started = on_ghe_com(Step::start().in_world(&world)).run();
    started.success();
    job_runs(&world, &started.outputs()["label"]);
    on_ghe_com(Step::stop().in_world(&world))
        .outputs_of(&started)
        .run()
        .success();
    // The same token on github.com is someone else's.
    let refused = Step::start().in_world(&world).run();
    refused.failure();
    assert!(
        refused.errors()[0].contains("its issuer is https://token.actions.octo.ghe.com"),
        "{:?}",
        refused.errors()
    );
    nothing_left(&world);
}

#[test]
fn arm64_instance_types_get_the_arm64_image_and_runner_package() {
    let world = world();
    let started = Step::start()
        .in_world(&world)
        .input("instance-types", "g5g.xlarge")
        .run();
    started.success();
    let instance = instance_of(&world, &started);
    assert_eq!(instance.image_id(), Some(world::WORLD_ARM64_AMI));
    assert_eq!(
        world
            .package_fetches
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.file.clone())
            .collect::<Vec<_>>(),
        [format!(
            "actions-runner-linux-arm64-{}.tar.gz",
            world::package::VERSION
        )]
    );
    stop_cleanly(&world, &started);
}

#[test]
fn a_runner_package_with_another_hash_is_refused_on_the_instance() {
    let world = world();
    let wrong = "0".repeat(64);
    let out = Step::start()
        .in_world(&world)
        .input("runner-sha256", &wrong)
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("phase=runner-fetch status=failed")
            && error.contains(&format!("is {}, expected {wrong}", world.runner_sha256)),
        "{error}"
    );
    assert!(error.contains("Rolled back: instance i-"), "{error}");
    nothing_left(&world);
}

/// An IAM document of docs/iam as it is written (for the account 123456789012).
fn policy(name: &str) -> serde_json::Value {
    world::documented_policy(name, "123456789012").unwrap_or_else(|e| panic!("{e}"))
}

fn list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|s| s.as_str())
            .map(str::to_owned)
            .collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The IAM action an AWS call of the world's proxy needs.
fn iam_action(call: &str) -> String {
    let service = match call {
        "AssumeRoleWithWebIdentity" => "sts",
        "GetParameter" | "PutParameter" | "DeleteParameter" | "AddTagsToResource"
        | "DescribeParameters" => "ssm",
        "GetCallerIdentity" => "sts",
        "GetServiceQuota" => "servicequotas",
        _ => "ec2",
    };
    format!("{service}:{call}")
}

#[test]
fn the_documented_policies_allow_every_call_gpu_runner_makes_and_launch_only_tagged_instances() {
    let world = world();
    world.faults.take_calls();
    // root-volume-size reads the image's root device (ec2:DescribeImages).
    let started = Step::start()
        .in_world(&world)
        .input("market-type", "spot-then-on-demand")
        .input("root-volume-size", "200")
        .run();
    started.success();
    // Stopped while it waits for its job: stop terminates it.
    Step::stop()
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    Step::mode("cleanup").in_world(&world).run().success();
    // A pool: launched into it, paused, resumed (new user data, this run's tags), paused again.
    for _ in 0..2 {
        let pooled = Step::start()
            .in_world(&world)
            .input("role-to-assume", &world.pool_role_arn())
            .input("pool", "iam")
            .run();
        pooled.success();
        Step::stop()
            .in_world(&world)
            .input("role-to-assume", &world.pool_role_arn())
            .outputs_of(&pooled)
            .run()
            .success();
    }
    Step::start()
        .in_world(&world)
        .input("dry-run", "true")
        .run()
        .success();
    // jit-handoff: ssm: the JIT config's parameter is written (with its tags) after the launch.
    let ssm = |step: world::step::Step| {
        step.input("iam-instance-profile", world::INSTANCE_PROFILE)
            .input("jit-handoff", "ssm")
    };
    let handed = ssm(Step::start().in_world(&world)).run();
    handed.success();
    Step::stop()
        .in_world(&world)
        .outputs_of(&handed)
        .run()
        .success();
    let mut calls = world.faults.take_calls();
    // ... and deleted by the rollback when its instance failed before it read it.
    let no_driver = World::start(Options {
        gpu: world::simulator::Gpu::NoDriver,
        ..Options::default()
    })
    .expect("the local world starts");
    ssm(Step::start().in_world(&no_driver)).run().failure();
    calls.extend(no_driver.faults.take_calls());
    let mut needed: Vec<String> = calls
        .into_iter()
        .filter(|(service, _, _)| *service == world::faults::Service::Aws)
        // STS answers GetCallerIdentity whatever the policies say (STS API reference: "No
        // permissions are required to perform this operation").
        .filter(|(_, call, _)| call != "GetCallerIdentity")
        .flat_map(|(_, call, _)| {
            let mut actions = vec![iam_action(&call)];
            // A parameter created with tags needs AddTagsToResource too.
            if call == "PutParameter" {
                actions.push("ssm:AddTagsToResource".to_owned());
            }
            actions
        })
        .collect();
    needed.sort();
    needed.dedup();
    for action in [
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ec2:DescribeSpotPriceHistory",
        "ec2:StartInstances",
        "ec2:StopInstances",
        "ec2:ModifyInstanceAttribute",
        "ec2:CreateTags",
        "ssm:PutParameter",
        "ssm:DeleteParameter",
    ] {
        assert!(needed.iter().any(|a| a == action), "{needed:?}");
    }

    let permissions = policy("permissions-policy.json");
    let pool = policy("pool-policy.json");
    let statements: Vec<serde_json::Value> = permissions["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pool["Statement"].as_array().unwrap())
        .cloned()
        .collect();
    let allowed: Vec<String> = statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| list(&s["Action"]))
        .collect();
    let trust = policy("trust-policy.json");
    let trusted = list(&trust["Statement"][0]["Action"]);
    for action in &needed {
        assert!(
            allowed.contains(action) || trusted.contains(action),
            "gpu-runner calls {action}, which docs/iam does not allow"
        );
    }
    // Nothing is allowed that gpu-runner does not call.
    for action in &allowed {
        assert!(
            needed.contains(action),
            "docs/iam allows {action}, which gpu-runner never calls"
        );
    }

    // The conditions hold for what start launched: the launch tags are the ones the Deny checks,
    // and terminating and reading the console need gpu-runner's label tag.
    let instance = instance_of(&world, &started);
    let tag = |k: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_owned()
    };
    let denies: Vec<&serde_json::Value> = statements
        .iter()
        .filter(|s| s["Effect"] == "Deny")
        .collect();
    let deny = |sid: &str| {
        *denies
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}"))
    };
    let label_rule = &deny("NeverLaunchAnInstanceWithoutGpuRunnersTags")["Condition"]["StringNotLike"]
        ["aws:RequestTag/gpu-runner:label"];
    assert_eq!(label_rule, "gpu-runner-*");
    assert!(tag("gpu-runner:label").starts_with("gpu-runner-"));
    assert_eq!(
        deny("NeverLaunchForAnotherRepository")["Condition"]["StringNotEquals"]["aws:RequestTag/gpu-runner:repository"],
        "octo/ml"
    );
    assert_eq!(tag("gpu-runner:repository"), "octo/ml");
    let terminate = statements
        .iter()
        .find(|s| list(&s["Action"]).contains(&"ec2:TerminateInstances".to_owned()))
        .unwrap();
    assert_eq!(
        terminate["Condition"]["StringLike"]["aws:ResourceTag/gpu-runner:label"],
        "gpu-runner-*"
    );
    assert_eq!(
        terminate["Condition"]["StringEquals"]["aws:ResourceTag/gpu-runner:repository"],
        "octo/ml"
    );
    assert_eq!(
        list(&terminate["Resource"]),
        ["arn:aws:ec2:*:123456789012:instance/*"]
    );
    // IAM's verdict, as the world's AWS front evaluates it: the instance start launched may be
    // terminated; the same instance tagged for another repository of the account may not.
    let as_tagged = |repository: &str| {
        instance.tags().iter().fold(
            world::iam::Resource::new(format!(
                "arn:aws:ec2:us-east-1:123456789012:instance/{}",
                instance.instance_id().unwrap()
            )),
            |r, t| {
                let value = match t.key() {
                    Some("gpu-runner:repository") => repository,
                    _ => t.value().unwrap_or_default(),
                };
                r.key(
                    &format!("aws:ResourceTag/{}", t.key().unwrap_or_default()),
                    value,
                )
            },
        )
    };
    for action in ["ec2:TerminateInstances", "ec2:GetConsoleOutput"] {
        assert_eq!(
            world::iam::evaluate(&permissions, action, &[as_tagged("octo/ml")]),
            Ok(())
        );
        assert!(
            world::iam::evaluate(&permissions, action, &[as_tagged("octo/web")])
                .is_err_and(|e| e.starts_with("no statement allows")),
            "{action}"
        );
    }

    // PassRole, for iam-instance-profile only: one role, to EC2 only.
    let pass = policy("pass-role-policy.json");
    let pass = &pass["Statement"][0];
    assert_eq!(list(&pass["Action"]), ["iam:PassRole"]);
    assert!(!list(&pass["Resource"])[0].contains('*'));
    assert_eq!(
        pass["Condition"]["StringEquals"]["iam:PassedToService"],
        "ec2.amazonaws.com"
    );
}

#[test]
fn the_trust_policies_admit_one_repository_and_the_readme_links_every_document() {
    for (name, sub) in [
        ("trust-policy.json", "repo:octo/ml:*"),
        (
            "trust-policy-branch.json",
            "repo:octo/ml:ref:refs/heads/main",
        ),
        (
            "trust-policy-environment.json",
            "repo:octo/ml:environment:gpu",
        ),
    ] {
        let trust = policy(name);
        let statements = trust["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{name}");
        let s = &statements[0];
        assert_eq!(
            list(&s["Action"]),
            ["sts:AssumeRoleWithWebIdentity"],
            "{name}"
        );
        assert!(
            s["Principal"]["Federated"]
                .as_str()
                .unwrap()
                .ends_with(":oidc-provider/token.actions.githubusercontent.com"),
            "{name}"
        );
        let c = &s["Condition"];
        assert_eq!(
            c["StringEquals"]["token.actions.githubusercontent.com:aud"], "sts.amazonaws.com",
            "{name}"
        );
        let found = c["StringEquals"]["token.actions.githubusercontent.com:sub"]
            .as_str()
            .or(c["StringLike"]["token.actions.githubusercontent.com:sub"].as_str())
            .unwrap();
        assert_eq!(found, sub, "{name}");
        // A wildcard may only follow the repository, never stand for the owner or the repository.
        assert!(found.starts_with("repo:octo/ml:"), "{name}");
    }
    // Linked from the README (docs/iam/…) or from a page under docs/ (iam/…).
    let docs = crate::support::user_docs();
    for entry in std::fs::read_dir(format!("{}/docs/iam", env!("CARGO_MANIFEST_DIR"))).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            docs.contains(&format!("(docs/iam/{name})")) || docs.contains(&format!("(iam/{name})")),
            "the docs do not link docs/iam/{name}"
        );
    }
}

#[test]
fn the_readmes_security_group_has_no_inbound_rules_and_the_instance_uses_it() {
    let world = world();
    let text = std::fs::read_to_string(format!(
        "{}/docs/security-group.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The docs show the same document.
    assert!(crate::support::user_docs().contains(&format!("```json\n{text}```")));
    let group = world.create_security_group(&json);
    assert_eq!(world.inbound_rules(&group), []);
    let started = Step::start()
        .in_world(&world)
        .input("security-group-ids", &group)
        .run();
    started.success();
    let instance = instance_of(&world, &started);
    let groups: Vec<&str> = instance
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .collect();
    assert_eq!(groups, [group.as_str()]);
    // The runner still reaches GitHub: it only ever calls out.
    job_runs(&world, &started.outputs()["label"]);
    stop_cleanly(&world, &started);
}

#[test]
fn the_runner_bump_script_pins_a_new_release_everywhere_once() {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = tempfile::tempdir().unwrap();
    for path in [
        "src/runner_package.rs",
        "src/inputs/spec.rs",
        "action.yml",
        "docs/inputs.md",
    ] {
        let to = copy.path().join(path);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(format!("{root}/{path}"), to).unwrap();
    }
    let (x64, arm64) = ("a".repeat(64), "b".repeat(64));
    let bump = |version: &str| {
        std::process::Command::new("bash")
            .arg(format!("{root}/.github/scripts/runner-bump.sh"))
            .args([version, &x64, &arm64])
            .current_dir(copy.path())
            .output()
            .unwrap()
    };
    let out = bump("2.999.1");
    assert!(out.status.success(), "{out:?}");
    let read = |p: &str| std::fs::read_to_string(copy.path().join(p)).unwrap();
    let table = read("src/runner_package.rs");
    let first = table
        .split("pub const PINNED_RUNNERS: &[PinnedRunner] = &[")
        .nth(1)
        .unwrap();
    assert!(
        first.starts_with(&format!(
            "\n    PinnedRunner {{\n        version: \"2.999.1\",\n        arch: Arch::X64,\n        \
             sha256: \"{x64}\",\n    }},\n    PinnedRunner {{\n        version: \"2.999.1\",\n        \
             arch: Arch::Arm64,\n        sha256: \"{arm64}\",\n    }},\n    PinnedRunner {{\n"
        )),
        "{first}"
    );
    // The previous pins stay, so that a workflow pinned to them keeps working.
    let mut pinned: Vec<&str> = Vec::new();
    for pin in gpu_runner::boot::PINNED_RUNNERS {
        assert!(first.contains(&format!("sha256: \"{}\"", pin.sha256)));
        if !pinned.contains(&pin.version) {
            pinned.push(pin.version);
        }
    }
    assert!(read("src/inputs/spec.rs").contains(
        "pub const RUNNER_VERSION: Spec = Spec::new(\"runner-version\", Start, \"2.999.1\");"
    ));
    let action = read("action.yml");
    let input = action.split("  runner-version:\n").nth(1).unwrap();
    let input = input.split("\n  runner-sha256:").next().unwrap();
    assert!(input.ends_with("\n    default: 2.999.1"), "{input}");
    assert!(
        input.contains(&format!(
            "\n      Pinned, with their x64 and arm64 hashes: 2.999.1, {}.\n",
            pinned.join(", ")
        )),
        "{input}"
    );
    let inputs = read("docs/inputs.md");
    let row = inputs
        .lines()
        .find(|l| l.starts_with("| `runner-version` |"))
        .unwrap();
    assert!(
        row.starts_with(
            "| `runner-version` | start | `2.999.1` | The GitHub Actions runner version"
        ) && row.ends_with(&format!(
            "Pinned, with their x64 and arm64 hashes: 2.999.1, {}. |",
            pinned.join(", ")
        )),
        "{row}"
    );
    // A second run finds the version pinned and changes nothing (the workflow opens no PR).
    let before = read("src/runner_package.rs");
    assert_eq!(bump("2.999.1").status.code(), Some(3));
    assert_eq!(read("src/runner_package.rs"), before);
    // Bad values are refused before anything changes.
    let refused = std::process::Command::new("bash")
        .arg(format!("{root}/.github/scripts/runner-bump.sh"))
        .args(["v3.0.0", &x64, &arm64])
        .current_dir(copy.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(read("src/runner_package.rs"), before);
}

#[test]
fn a_hostile_pre_runner_script_arrives_byte_for_byte_in_the_sandbox_and_nothing_else_runs() {
    let world = world();
    let canary = "/var/lib/gpu-runner/canary";
    let hostile = [
        "it's \"quoted\" 'twice' '\\''",
        &format!("$(touch {canary}) `touch {canary}` ${{IFS}}$HOME"),
        "EOF",
        "HOOK",
        "'; touch /var/lib/gpu-runner/canary; echo '",
        "unicode: γπυ ✓ \u{202e}rtl\u{202c} tab:\tend\r",
        "\\n \\' \\\" \\\\",
    ]
    .join("\n");
    let script = format!(
        "cat > /var/lib/gpu-runner/pre-runner-seen <<'GPU_RUNNER_PAYLOAD'\n{hostile}\nGPU_RUNNER_PAYLOAD"
    );
    // The download URL reaches the script too (a mirror's, from the environment): its query is
    // hostile here, and the package still arrives from it.
    let url = format!(
        "{}/_package/actions-runner-linux-{{arch}}-{{version}}.tar.gz?x='$(touch$IFS{canary})'\
         `touch$IFS{canary}`;touch$IFS{canary}",
        world.github_url
    );
    let started = Step::start()
        .in_world(&world)
        .env("GPU_RUNNER_RUNNER_DOWNLOAD_URL", &url)
        .input("pre-runner-script", &script)
        .run();
    started.success();
    assert_eq!(
        world.package_fetches.lock().unwrap().len(),
        1,
        "the instance did not download the package from {url}"
    );
    let id = started.outputs()["instance-id"].clone();
    assert_eq!(
        world
            .instance_file(&id, "var/lib/gpu-runner/pre-runner-seen")
            .as_deref(),
        Some(format!("{hostile}\n").as_str())
    );
    assert_eq!(world.instance_file(&id, &canary[1..]), None);
    stop_cleanly(&world, &started);
}

/// The attack GitHub's routing allows: it hands a JIT runner any queued job its labels cover, and
/// every self-hosted runner has `self-hosted`. A returning contributor's fork pull request (no
/// approval needed by default) with `runs-on: self-hosted`, queued before the real GPU job, is
/// handed the machine. The runner runs a job's `if: always()` and `if: failure()` steps even
/// after its job-started hook failed; the hook ends the job's worker before it returns, so none
/// of the stranger's steps runs. The job's log and the console say why, and the machine ends
/// itself; nothing is left.
#[test]
fn a_strangers_job_handed_the_runner_runs_no_step_not_even_an_always_step() {
    let world = world();
    let strangers_run = world.run_id + 1;
    let stranger = world.queue_hostile_job_of_run(
        strangers_run,
        "octo/ml",
        "refs/pull/7/merge",
        &["self-hosted"],
    );
    let started = Step::start().in_world(&world).run();
    let label = started.outputs()["label"].clone();
    let id = started.outputs()["instance-id"].clone();
    let done = world.wait_until(Duration::from_secs(30), |w| {
        w.job(stranger).is_some_and(|j| j.status == "completed")
    });
    assert!(done, "GitHub never handed the stranger's job to the runner");
    let job = world.job(stranger).unwrap();
    assert_eq!(job.runner_name.as_deref(), Some(label.as_str()));
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{}", job.output);
    assert!(
        job.output.contains(&format!(
            "::error title=gpu-runner refused this job::this machine takes only jobs of octo/ml \
             run {}, and this job is of octo/ml run {strangers_run}: another workflow run's job",
            world.run_id
        )),
        "{}",
        job.output
    );
    assert!(!job.output.contains("CANARY"), "{}", job.output);
    for canary in world::CANARIES {
        assert_eq!(world.instance_file(&id, canary), None, "{canary}");
    }

    // The machine ends itself, and its console says why.
    let ended = world.wait_until(Duration::from_secs(30), |w| w.live_instances().is_empty());
    assert!(ended, "the machine kept running after it refused a job");
    assert!(
        world
            .instance_log()
            .iter()
            .any(|l| l.contains("gpu-runner: phase=job-refused reason=\"this machine takes only")),
        "{:#?}",
        world.instance_log()
    );

    // Start saw the runner online before GitHub handed it the job, or saw it gone; either way
    // the real GPU job can no longer run on it, and the run fails or waits for cleanup.
    if started.code == Some(0) {
        let gpu = world.queue_job(&[&label], "echo the-gpu-job");
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(world.job(gpu).map(|j| j.status), Some("queued"));
        world.github.lock().unwrap().cancel_run(world.run_id);
    } else {
        started.failure();
        let error = started.errors()[0];
        assert!(
            error.contains("was removed from GitHub while its instance booted")
                && error.contains("phase=job-refused")
                && error.contains("the machine refused it and ended"),
            "{error}"
        );
    }
    stop_cleanly(&world, &started);
}

/// `jit-handoff: ssm`: the user data (which anyone with `ec2:DescribeInstanceAttribute` can read)
/// carries no JIT config; it waits in an SSM SecureString parameter tagged with the instance's ARN,
/// which only credentials of that instance may read under the documented instance-role policy.
/// The instance reads it with its IMDS credentials through the real AWS CLI, deletes it, and runs
/// the job; nothing is left.
#[test]
fn through_ssm_the_jit_config_never_enters_the_user_data_and_is_read_once_by_its_instance() {
    let world = world();
    let started = Step::start()
        .in_world(&world)
        .input("iam-instance-profile", world::INSTANCE_PROFILE)
        .input("jit-handoff", "ssm")
        .run();
    started.success();
    let id = started.outputs()["instance-id"].clone();
    let label = started.outputs()["label"].clone();
    let parameter = format!("/gpu-runner/jit/octo/ml/{label}");
    assert!(
        started.stdout.contains(&format!(
            "Handed the runner's JIT config to {id} through the SSM parameter {parameter}"
        )),
        "{}",
        started.stdout
    );
    let jit = world.github.lock().unwrap().issued_jit_configs.clone();
    assert_eq!(jit.len(), 1);
    let user_data = world.user_data(&id);
    assert!(user_data.contains(&format!("readonly JIT_PARAMETER='{parameter}'")));
    assert!(
        !user_data.contains(&jit[0]),
        "the JIT config is in the user data"
    );
    assert!(
        world.instance_log().iter().any(|l| l.contains(&format!(
            "gpu-runner: phase=jit-handoff status=ok parameter={parameter} deleted=yes"
        ))),
        "{:#?}",
        world.instance_log()
    );
    assert_eq!(world.jit_parameters(), Vec::<String>::new());
    job_runs(&world, &label);
    stop_cleanly(&world, &started);

    // The policy binds a parameter to one instance: its own credentials may read it, another
    // instance's (same role) and a request without instance credentials may not.
    let policy = policy("instance-role-policy.json");
    let arn = |i: &str| format!("arn:aws:ec2:us-east-1:123456789012:instance/{i}");
    let read_by = |caller: Option<&str>| {
        let r = world::iam::Resource::new(format!(
            "arn:aws:ssm:us-east-1:123456789012:parameter{parameter}"
        ))
        .key("aws:ResourceTag/gpu-runner:instance-arn", arn("i-mine"));
        let r = match caller {
            Some(c) => r.key("ec2:SourceInstanceARN", arn(c)),
            None => r,
        };
        world::iam::evaluate(&policy, "ssm:GetParameter", &[r])
    };
    assert_eq!(read_by(Some("i-mine")), Ok(()));
    assert!(read_by(Some("i-other")).is_err());
    assert!(read_by(None).is_err());
}

/// An instance that ends before it reads its JIT config (here: no GPU driver) leaves the parameter
/// behind; start's rollback deletes it and says so.
#[test]
fn a_jit_config_its_instance_never_read_is_deleted_by_the_rollback() {
    let world = World::start(Options {
        gpu: world::simulator::Gpu::NoDriver,
        ..Options::default()
    })
    .expect("the local world starts");
    let started = Step::start()
        .in_world(&world)
        .input("iam-instance-profile", world::INSTANCE_PROFILE)
        .input("jit-handoff", "ssm")
        .input("startup-timeout-minutes", "3")
        .run();
    started.failure();
    let label = world
        .instances()
        .first()
        .and_then(|i| {
            i.tags()
                .iter()
                .find(|t| t.key() == Some("gpu-runner:label"))
                .and_then(|t| t.value().map(str::to_owned))
        })
        .expect("the instance start launched");
    let error = started.errors()[0];
    assert!(
        error.contains("phase=gpu-probe status=failed")
            && error.contains(&format!(
                "parameter /gpu-runner/jit/octo/ml/{label} deleted (a JIT config its instance \
                 had not read)"
            )),
        "{error}"
    );
    nothing_left(&world);
}

/// An organization's runner is handed the jobs of every repository its group serves: a job of
/// another repository never runs a step on this run's machine.
#[test]
fn an_org_runner_refuses_another_repositorys_job() {
    let world = world();
    gpu_group(&world, &["octo/ml", "octo/web"], false);
    let other = world.queue_hostile_job_of_run(
        world.run_id + 7,
        "octo/web",
        "refs/heads/main",
        &["self-hosted", "Linux"],
    );
    let started = as_org(Step::start().in_world(&world), &world)
        .input("runner-group", "GPU")
        .run();
    let id = started.outputs()["instance-id"].clone();
    let done = world.wait_until(Duration::from_secs(30), |w| {
        w.job(other).is_some_and(|j| j.status == "completed")
    });
    assert!(
        done,
        "GitHub never handed the other repository's job to the runner"
    );
    let job = world.job(other).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("failure"));
    assert!(
        job.output.contains("another repository's job") && !job.output.contains("CANARY"),
        "{}",
        job.output
    );
    for canary in world::CANARIES {
        assert_eq!(world.instance_file(&id, canary), None, "{canary}");
    }
    as_org(Step::stop().in_world(&world), &world)
        .outputs_of(&started)
        .run()
        .success();
    nothing_left(&world);
}

/// The AWS calls made since the last look.
fn aws_calls(world: &World) -> Vec<String> {
    world
        .faults
        .take_calls()
        .into_iter()
        .filter(|(service, _, _)| *service == world::faults::Service::Aws)
        .map(|(_, call, _)| call)
        .collect()
}

/// A comment on a pull request, as GitHub's `issue_comment` payload has it.
fn comment_on_pull_request(login: &str, association: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "action": "created",
        "issue": {"number": 7, "title": "Faster kernels",
                  "pull_request": {"url": "https://api.github.com/repos/octo/ml/pulls/7"}},
        "comment": {"user": {"login": login}, "author_association": association, "body": body},
        "repository": {"full_name": "octo/ml"},
        "sender": {"login": login},
    })
}

/// A comment approves a GPU run only when its author can write to the repository, which GitHub
/// is asked (an association alone is no permission: a MEMBER of the organization may only read
/// this repository). The approved start records the pull request's head commit as it was then.
#[test]
fn a_comment_approves_a_run_only_with_write_access_and_the_head_commit_is_recorded() {
    let world = world();
    {
        let mut gh = world.github.lock().unwrap();
        gh.collaborators
            .insert("alice".to_owned(), "write".to_owned());
        gh.collaborators
            .insert("carol".to_owned(), "read".to_owned());
        gh.pulls
            .insert(7, "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432".to_owned());
    }
    world.faults.take_calls();
    let refused = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by(
            "issue_comment",
            &comment_on_pull_request("carol", "MEMBER", "/gpu 9f8e7d6"),
        ))
        .run();
    skipped_because(
        &refused,
        "the comment's author carol has read permission on octo/ml; only a comment by someone \
         with write access or more starts a GPU runner",
    );
    assert_eq!(aws_calls(&world), Vec::<String>::new(), "AWS was called");
    nothing_left(&world);

    // A comment that names no commit approves none: a push could come right after it.
    let unnamed = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by(
            "issue_comment",
            &comment_on_pull_request("alice", "MEMBER", "/gpu"),
        ))
        .run();
    skipped_because(&unnamed, "the comment names no commit");
    skipped_because(&unnamed, "`/gpu 9f8e7d6`");
    nothing_left(&world);

    let started = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by(
            "issue_comment",
            &comment_on_pull_request("alice", "MEMBER", "/gpu 9f8e7d6"),
        ))
        .run();
    started.success();
    assert_eq!(
        started.outputs()["head-sha"],
        "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
    );
    // A push to the pull request after the approval does not change what was approved.
    world
        .github
        .lock()
        .unwrap()
        .pulls
        .insert(7, "0000000000000000000000000000000000000bad".to_owned());
    assert_eq!(
        started.outputs()["head-sha"],
        "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
    );
    stop_cleanly(&world, &started);

    // A push between the comment and the start: the approval was for another commit.
    let pushed = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by(
            "issue_comment",
            &comment_on_pull_request("alice", "MEMBER", "/gpu 9f8e7d6"),
        ))
        .run();
    skipped_because(
        &pushed,
        "the comment approves 9f8e7d6, but the head of pull request #7 is now \
         0000000000000000000000000000000000000bad: a push came after the approval",
    );
    nothing_left(&world);
}

/// Deny by default: an event anyone can set off (a new issue, a star) starts nothing, and the
/// error names the event and the way out.
#[test]
fn events_the_guard_does_not_know_start_nothing() {
    let world = world();
    world.faults.take_calls();
    let payload = serde_json::json!({"action": "opened", "sender": {"login": "mallory"}});
    // With on-untrusted: fail, start fails saying why.
    let out = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by("issues", &payload))
        .input("on-untrusted", "fail")
        .run();
    out.failure();
    let error = out.errors()[0];
    assert!(
        error.contains(
            "gpu-runner refused to start because the issues event is not one gpu-runner knows to \
             be safe"
        ) && error.contains("allow-untrusted"),
        "{error}"
    );
    // By default, it is skipped, green.
    let out = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by("watch", &payload))
        .run();
    skipped_because(
        &out,
        "because the watch event is not one gpu-runner knows to be safe",
    );
    assert_eq!(aws_calls(&world), Vec::<String>::new(), "AWS was called");
    nothing_left(&world);
}

/// On a public repository start warns about what lets a stranger's job reach the machine: fork
/// pull requests that run without approval, and extra labels.
#[test]
fn a_public_repository_is_warned_about_unapproved_forks_and_extra_labels() {
    let world = world();
    world.github.lock().unwrap().public = true;
    let started = Step::start().in_world(&world).input("labels", "gpu").run();
    started.success();
    let warnings = started.commands("warning");
    assert!(
        warnings.iter().any(
            |w| w.contains("title=Fork pull requests run without approval")
                && w.contains("(fork pull request approval policy: first_time_contributors)")
                && w.contains("Require approval for all external contributors")
        ),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("title=Extra labels on a public repository")
                && w.contains("labels (gpu) are extra labels")),
        "{warnings:?}"
    );
    stop_cleanly(&world, &started);

    world.github.lock().unwrap().fork_pr_approval = "all_external_contributors".to_owned();
    let started = Step::start().in_world(&world).run();
    started.success();
    assert_eq!(started.commands("warning"), Vec::<&str>::new());
    stop_cleanly(&world, &started);
}

/// The permissions policy narrows RunInstances: GPU instance families only, IMDSv2 required,
/// Amazon's images or the account's own, the account's VPCs, a root volume of at most 1024 GiB.
/// The world's AWS front evaluates those conditions as IAM does, so a launch outside them is
/// refused there as it would be on AWS, and start says so and leaves nothing.
#[test]
fn the_policy_refuses_launches_outside_its_conditions() {
    let world = world();
    let out = Step::start()
        .in_world(&world)
        .input("root-volume-size", "2000")
        .run();
    out.failure();
    let error = out.errors()[0];
    assert!(
        error.contains("RunInstances failed (UnauthorizedOperation)")
            && error.contains(":volume/* with an explicit deny")
            && error.contains("root volumes of at most 1024 GiB"),
        "{error}"
    );
    nothing_left(&world);

    let permissions = policy("permissions-policy.json");
    let launch = |instance_type: &str, tokens: &str, owner: &str, size: &str| {
        use world::iam::Resource;
        let tags = |r: Resource| {
            r.key("aws:RequestTag/gpu-runner:label", "gpu-runner-1-1-a")
                .key("aws:RequestTag/gpu-runner:repository", "octo/ml")
        };
        let vpc = "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1";
        world::iam::evaluate(
            &permissions,
            "ec2:RunInstances",
            &[
                tags(Resource::new(
                    "arn:aws:ec2:us-east-1:123456789012:instance/*",
                ))
                .key("ec2:InstanceType", instance_type)
                .key("ec2:MetadataHttpTokens", tokens),
                Resource::new("arn:aws:ec2:us-east-1::image/ami-1").key("ec2:Owner", owner),
                Resource::new("arn:aws:ec2:us-east-1:123456789012:volume/*")
                    .key("ec2:VolumeSize", size),
                Resource::new("arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1")
                    .key("ec2:Vpc", vpc),
                Resource::new("arn:aws:ec2:us-east-1:123456789012:network-interface/*")
                    .key("ec2:Vpc", vpc),
                Resource::new("arn:aws:ec2:us-east-1:123456789012:security-group/sg-1")
                    .key("ec2:Vpc", vpc),
            ],
        )
    };
    assert_eq!(launch("g5.xlarge", "required", "amazon", "200"), Ok(()));
    assert_eq!(
        launch("p5.48xlarge", "required", "123456789012", "1024"),
        Ok(())
    );
    for (refused, by) in [
        (
            launch("c5.24xlarge", "required", "amazon", "200"),
            "NeverLaunchOtherThanGpuInstanceTypes",
        ),
        (
            launch("g5.xlarge", "optional", "amazon", "200"),
            "NeverLaunchWithoutImdsv2",
        ),
        (
            launch("g5.xlarge", "required", "999999999999", "200"),
            "NeverLaunchFromImagesOfOthers",
        ),
        (
            launch("g5.xlarge", "required", "amazon", "1025"),
            "NeverLaunchRootVolumesOver1024GiB",
        ),
    ] {
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.ends_with(&format!("is denied by {by}"))),
            "{refused:?}"
        );
    }
    // A policy tailored to one VPC refuses a subnet of another.
    let mut one_vpc = permissions.clone();
    for s in one_vpc["Statement"].as_array_mut().unwrap() {
        if s["Sid"] == "NeverLaunchOutsideYourVpcs" {
            s["Condition"]["ArnNotLike"]["ec2:Vpc"] = "arn:aws:ec2:*:123456789012:vpc/vpc-1".into();
        }
    }
    let subnet_in = |vpc: &str| {
        world::iam::evaluate(
            &one_vpc,
            "ec2:RunInstances",
            &[
                world::iam::Resource::new("arn:aws:ec2:us-east-1:123456789012:subnet/subnet-9")
                    .key(
                        "ec2:Vpc",
                        format!("arn:aws:ec2:us-east-1:123456789012:vpc/{vpc}"),
                    ),
            ],
        )
    };
    assert_eq!(subnet_in("vpc-1"), Ok(()));
    assert!(subnet_in("vpc-2").is_err_and(|e| e.ends_with("NeverLaunchOutsideYourVpcs")));
}

/// The label pattern: a maintainer labels a fork's pull request, `pull_request_target` runs the
/// start with allow-untrusted, and head-sha names the head the label was put on.
#[test]
fn a_label_approved_start_records_the_labelled_head() {
    let world = world();
    let labelled = serde_json::json!({
        "action": "labeled",
        "label": {"name": "gpu-ok"},
        "pull_request": {
            "number": 9, "user": {"login": "stranger"}, "author_association": "NONE",
            "head": {"sha": "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e",
                     "repo": {"full_name": "stranger/ml", "fork": true}},
            "base": {"repo": {"full_name": "octo/ml", "fork": false}},
        },
        "repository": {"full_name": "octo/ml", "private": true},
        "sender": {"login": "alice"},
    });
    let refused = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by("pull_request_target", &labelled))
        .run();
    skipped_because(&refused, "from the fork stranger/ml");
    let started = Step::start()
        .in_world(&world)
        .envs(&world.triggered_by("pull_request_target", &labelled))
        .input("allow-untrusted", "true")
        .run();
    started.success();
    assert_eq!(
        started.outputs()["head-sha"],
        "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"
    );
    stop_cleanly(&world, &started);
}

/// The pool's permissions reach only this repository's pool instances, and a retag can only say
/// whose run a member serves now: never move it to another repository, pool or lifecycle.
#[test]
fn the_pool_permissions_touch_only_this_repositorys_pool_instances_and_only_their_run_tags() {
    use world::iam::{Resource, evaluate};
    // The pool role's: the permissions policy with the pool statements.
    let mut permissions = policy("permissions-policy.json");
    let pool = policy("pool-policy.json");
    if let (Some(all), Some(more)) = (
        permissions["Statement"].as_array_mut(),
        pool["Statement"].as_array(),
    ) {
        all.extend(more.iter().cloned());
    }
    let instance = |tags: &[(&str, &str)]| {
        tags.iter().fold(
            Resource::new("arn:aws:ec2:us-east-1:123456789012:instance/i-1"),
            |r, (k, v)| r.key(&format!("aws:ResourceTag/{k}"), *v),
        )
    };
    let ours = [
        ("gpu-runner:repository", "octo/ml"),
        ("gpu-runner:lifecycle", "pooled"),
        ("gpu-runner:pool", "train"),
    ];
    let theirs = [
        ("gpu-runner:repository", "someone/else"),
        ("gpu-runner:lifecycle", "pooled"),
        ("gpu-runner:pool", "train"),
    ];
    let ephemeral = [("gpu-runner:repository", "octo/ml")];
    for action in [
        "ec2:StartInstances",
        "ec2:StopInstances",
        "ec2:ModifyInstanceAttribute",
    ] {
        assert_eq!(evaluate(&permissions, action, &[instance(&ours)]), Ok(()));
        assert!(evaluate(&permissions, action, &[instance(&theirs)]).is_err());
        assert!(evaluate(&permissions, action, &[instance(&ephemeral)]).is_err());
    }
    let retag = |keys: &[&str]| {
        keys.iter().fold(instance(&ours), |r, k| {
            r.key(&format!("aws:RequestTag/{k}"), "x")
                .key("aws:TagKeys", *k)
        })
    };
    let run_tags: Vec<&str> = gpu_runner::plan::tag::PER_RUN.to_vec();
    assert_eq!(
        evaluate(&permissions, "ec2:CreateTags", &[retag(&run_tags)]),
        Ok(())
    );
    for key in [
        "gpu-runner:repository",
        "gpu-runner:lifecycle",
        "gpu-runner:pool",
        "gpu-runner:image",
        "gpu-runner:pooled-at",
    ] {
        assert!(
            evaluate(
                &permissions,
                "ec2:CreateTags",
                &[retag(&["gpu-runner:label", key])]
            )
            .is_err(),
            "{key} can be rewritten"
        );
    }
    assert!(evaluate(&permissions, "ec2:CreateTags", &[instance(&theirs)]).is_err());
}

/// The CloudFormation template as CloudFormation would resolve it for octo/ml in the account
/// 123456789012, with `parameters`: `!Sub`, `!Ref` and `!If` (on `MakeOidcProvider`, false:
/// the provider exists already, as docs/iam's trust policies name it).
fn resolved(v: &serde_yaml::Value, parameters: &[(&str, &str)]) -> serde_json::Value {
    use serde_yaml::Value as Y;
    let fill = |text: &str| {
        let mut text = text
            .replace("${AWS::Partition}", "aws")
            .replace("${AWS::AccountId}", "123456789012");
        for (k, v) in parameters {
            text = text.replace(&format!("${{{k}}}"), v);
        }
        assert!(!text.contains("${"), "unresolved: {text}");
        serde_json::Value::String(text)
    };
    match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(*b),
        Y::Number(n) => serde_json::json!(n.as_f64()),
        Y::String(s) => serde_json::Value::String(s.clone()),
        Y::Sequence(all) => all.iter().map(|x| resolved(x, parameters)).collect(),
        Y::Mapping(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, x)| {
                    (
                        k.as_str().unwrap_or_default().to_owned(),
                        resolved(x, parameters),
                    )
                })
                .collect(),
        ),
        Y::Tagged(t) => match (t.tag.to_string().as_str(), &t.value) {
            ("!Sub", Y::String(s)) => fill(s),
            ("!Ref", Y::String(name)) => parameters
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| serde_json::Value::String((*v).to_owned()))
                .unwrap_or_else(|| panic!("!Ref {name}")),
            ("!If", Y::Sequence(branches)) if branches.len() == 3 => {
                resolved(&branches[2], parameters)
            }
            (tag, _) => panic!("{tag} is not resolved here"),
        },
    }
}

/// The CloudFormation template and docs/iam never drift apart: its roles hold exactly the
/// documented statements, and its trust policy admits exactly the tokens the documented trust
/// policies admit. (The world deploys the template itself: every world test runs with its roles.)
#[test]
fn the_cloudformation_template_holds_the_documented_policies_and_trust() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/cloudformation/gpu-runner.yaml"
    ))
    .unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let role = |name: &str, subject: (&str, &str)| {
        resolved(
            &template["Resources"][name]["Properties"],
            &[
                ("Repository", "octo/ml"),
                ("RoleName", "gpu-ci"),
                ("PoolRoleName", "gpu-ci-pool"),
                subject,
            ],
        )
    };
    let inline = |properties: &serde_json::Value, name: &str| {
        properties["Policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["PolicyName"] == name)
            .unwrap_or_else(|| panic!("no inline policy {name}"))["PolicyDocument"]
            .clone()
    };
    let gpu_ci = role("Role", ("Subject", "*"));
    let pool = role("PoolRole", ("PoolRoleSubject", "ref:refs/heads/main"));
    let permissions = policy("permissions-policy.json");
    assert_eq!(inline(&gpu_ci, "gpu-runner"), permissions);
    assert_eq!(inline(&pool, "gpu-runner"), permissions);
    assert_eq!(inline(&pool, "gpu-runner-pool"), policy("pool-policy.json"));
    assert_eq!(pool["Policies"].as_array().map(Vec::len), Some(2));

    let provider = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com";
    for (subject, documented) in [
        ("*", "trust-policy.json"),
        ("ref:refs/heads/main", "trust-policy-branch.json"),
        ("environment:gpu", "trust-policy-environment.json"),
    ] {
        let trust = role("Role", ("Subject", subject))["AssumeRolePolicyDocument"].clone();
        let documented = policy(documented);
        for sub in [
            "repo:octo/ml:ref:refs/heads/main",
            "repo:octo/ml:ref:refs/heads/feature",
            "repo:octo/ml:pull_request",
            "repo:octo/ml:environment:gpu",
            "repo:octo/ml-fork:ref:refs/heads/main",
            "repo:someone/ml:ref:refs/heads/main",
        ] {
            for aud in ["sts.amazonaws.com", "another-audience"] {
                let keys = world::iam::Resource::new("")
                    .key("token.actions.githubusercontent.com:sub", sub)
                    .key("token.actions.githubusercontent.com:aud", aud);
                let verdict = |p: &serde_json::Value| {
                    world::iam::trusts(p, "sts:AssumeRoleWithWebIdentity", provider, &keys).is_ok()
                };
                assert_eq!(
                    verdict(&trust),
                    verdict(&documented),
                    "Subject {subject}, sub {sub}, aud {aud}"
                );
            }
        }
    }
}
