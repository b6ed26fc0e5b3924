//! Finding GPU capacity: start walks its candidates (type × subnet × market) past AWS's capacity
//! refusals, says what it tried, and stops at once on anything else.

use std::time::Duration;

use crate::support::{Step, nothing_left};
use world::{Fault, Options, Service, World};

fn refuse(world: &World, code: &'static str, times: u32) {
    world.faults.inject(
        Service::Aws,
        "RunInstances",
        Fault::AwsError { code, status: 500 },
        times,
    );
}

#[test]
fn start_lands_on_the_first_candidate_with_capacity_and_says_what_it_tried() {
    let world = World::start(Options::default()).unwrap();
    refuse(&world, "InsufficientInstanceCapacity", 1);
    world.faults.inject(
        Service::Aws,
        "RunInstances",
        Fault::AwsError {
            code: "VcpuLimitExceeded",
            status: 400,
        },
        1,
    );
    let started = Step::mode("start")
        .in_world(&world)
        .input("instance-types", "g5.xlarge, g6.xlarge, g4dn.xlarge")
        .run();
    started.success();
    assert_eq!(started.outputs()["instance-type"], "g4dn.xlarge");
    assert!(
        started.summary.contains(
            "| Tried first, without capacity | g5.xlarge in the default subnet (on-demand) → \
             InsufficientInstanceCapacity; g6.xlarge in the default subnet (on-demand) → \
             VcpuLimitExceeded |"
        ),
        "{}",
        started.summary
    );
    assert_eq!(world.live_instances().len(), 1, "one launch, no strays");
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
}

#[test]
fn no_capacity_anywhere_leaves_no_instance_at_all() {
    let world = World::start(Options::default()).unwrap();
    refuse(&world, "InsufficientInstanceCapacity", 2);
    let out = Step::mode("start")
        .in_world(&world)
        .input("instance-types", "g5.xlarge, g4dn.xlarge")
        .run();
    out.failure();
    // The error itself, the table of what was tried, is snapshotted in stories.rs.
    assert!(world.instances().is_empty());
    assert_eq!(world.registered_runners(), []);
}

#[test]
fn spot_then_on_demand_falls_back_when_spot_is_refused() {
    let world = World::start(Options::default()).unwrap();
    refuse(&world, "SpotMaxPriceTooLow", 1);
    let started = Step::mode("start")
        .in_world(&world)
        .input("market-type", "spot-then-on-demand")
        .run();
    started.success();
    assert_eq!(started.outputs()["market"], "on-demand");
    assert!(
        started
            .summary
            .contains("g4dn.xlarge in the default subnet (spot) → SpotMaxPriceTooLow"),
        "{}",
        started.summary
    );
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    assert!(world.wait_until(Duration::from_secs(5), |w| w.live_instances().is_empty()));
}

#[test]
fn spot_when_there_is_spot_and_permission_errors_stop_the_search() {
    let world = World::start(Options::default()).unwrap();
    let spot = Step::mode("start")
        .in_world(&world)
        .input("market-type", "spot")
        .run();
    spot.success();
    assert_eq!(spot.outputs()["market"], "spot");
    let zone = spot.outputs()["availability-zone"].clone();
    assert!(
        spot.summary
            .contains(&format!("(current spot price in {zone}) |")),
        "{}",
        spot.summary
    );
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&spot)
        .run()
        .success();

    world.faults.inject(
        Service::Aws,
        "RunInstances",
        Fault::AwsError {
            code: "UnauthorizedOperation",
            status: 403,
        },
        1,
    );
    let denied = Step::mode("start")
        .in_world(&world)
        .input("instance-types", "g5.xlarge, g4dn.xlarge")
        .run();
    denied.failure();
    let error = denied.errors().join("\n");
    assert!(
        error.starts_with("::error title=AWS RunInstances failed::"),
        "{error}"
    );
    assert_eq!(
        world.faults.fired().len(),
        1,
        "the second candidate was not tried: {:?}",
        world.faults.fired()
    );
    nothing_left(&world);
}

fn refuse_once_for_good(world: &World) {
    world.faults.inject(
        Service::Aws,
        "RunInstances",
        Fault::AwsError {
            code: "InvalidParameterValue",
            status: 400,
        },
        1,
    );
}

#[test]
fn count_four_starts_four_runners_that_share_the_label_and_stop_removes_all() {
    let world = World::start(Options::default()).unwrap();
    let started = Step::mode("start")
        .in_world(&world)
        .input("count", "4")
        .run();
    started.success();
    let outputs = started.outputs();
    let label = outputs["label"].clone();
    let ids: Vec<String> = serde_json::from_str(&outputs["instance-ids"]).unwrap();
    let names: Vec<String> = serde_json::from_str(&outputs["runner-names"]).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(
        names,
        (1..=4).map(|n| format!("{label}-{n}")).collect::<Vec<_>>()
    );
    let runners = world.registered_runners();
    assert_eq!(runners.len(), 4);
    for r in &runners {
        assert!(
            r.labels.contains(&label) && r.labels.contains(&r.name),
            "{r:?}"
        );
    }
    assert!(
        started
            .summary
            .contains("4 runners, each with its own label"),
        "{}",
        started.summary
    );

    // A matrix of four GPU jobs on the shared label: each runner takes one.
    let jobs: Vec<u64> = (0..4)
        .map(|_| world.queue_job(&[&label], "nvidia-smi"))
        .collect();
    assert!(world.wait_until(Duration::from_secs(30), |w| {
        jobs.iter()
            .all(|j| w.job(*j).is_some_and(|j| j.status == "completed"))
    }));
    let mut ran_on: Vec<String> = jobs
        .iter()
        .filter_map(|j| world.job(*j).and_then(|j| j.runner_name))
        .collect();
    ran_on.sort();
    assert_eq!(ran_on, names);

    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    nothing_left(&world);
}

#[test]
fn one_of_four_failing_rolls_back_all_four() {
    let world = World::start(Options::default()).unwrap();
    refuse_once_for_good(&world);
    let out = Step::mode("start")
        .in_world(&world)
        .input("count", "4")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("InvalidParameterValue") && error.contains("Rolled back:"),
        "{error}"
    );
    nothing_left(&world);
}

#[test]
fn allow_partial_keeps_the_three_that_came_online() {
    let world = World::start(Options::default()).unwrap();
    refuse_once_for_good(&world);
    let started = Step::mode("start")
        .in_world(&world)
        .input("count", "4")
        .input("allow-partial", "true")
        .run();
    started.success();
    let warning = started.commands("warning").join("\n");
    assert!(
        warning.contains("3 of 4 GPU runners came online; the others were removed (allow-partial)"),
        "{warning}"
    );
    let ids: Vec<String> = serde_json::from_str(&started.outputs()["instance-ids"]).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(world.live_instances().len(), 3);
    assert_eq!(world.registered_runners().len(), 3);
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    nothing_left(&world);
}

/// An account that never ran spot has no spot service-linked role, and gpu-runner's policy does
/// not let the role create it: EC2 refuses every spot launch with
/// `AuthFailure.ServiceLinkedRoleCreationNotPermitted` (checked against the old product, which
/// stopped the search there).
#[test]
fn an_account_without_the_spot_role_falls_back_to_on_demand_and_says_how_to_create_it() {
    let world = World::start(Options::default()).unwrap();
    world.never_ran_spot();
    let started = Step::mode("start")
        .in_world(&world)
        .input("market-type", "spot-then-on-demand")
        .input("instance-types", "g5.xlarge, g4dn.xlarge")
        .run();
    started.success();
    assert_eq!(started.outputs()["market"], "on-demand");
    assert_eq!(started.outputs()["instance-type"], "g5.xlarge");
    assert!(
        started.summary.contains(
            "g5.xlarge in the default subnet (spot) → AuthFailure.ServiceLinkedRoleCreationNotPermitted"
        ),
        "{}",
        started.summary
    );
    // The second spot candidate is not tried: it cannot launch either.
    assert!(
        !started
            .summary
            .contains("g4dn.xlarge in the default subnet (spot)")
    );
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();

    let spot_only = Step::mode("start")
        .in_world(&world)
        .input("market-type", "spot")
        .run();
    spot_only.failure();
    let error = spot_only.errors().join("\n");
    assert!(
        error.contains("aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"),
        "{error}"
    );
    nothing_left(&world);
}

/// GitHub limits each token to 5,000 requests an hour and, across REST endpoints, 900 points a
/// minute (a GET costs 1): the world's GitHub counts both and refuses as GitHub does. The old
/// product read each runner on every look, 32 runners every 2 s, and ran into the secondary
/// limit; one runner list per look, whatever `count` is, stays far inside it.
///
/// On AWS the 32 machines boot side by side; here 32 sandboxes share the test machine's cores
/// with every other test, and at 60 world minutes a second the default 10-minute startup
/// timeout is 10 real seconds. The timeouts are raised so that a busy CI machine measures the
/// rate limits, not its own speed.
#[test]
fn count_32_stays_inside_githubs_rate_limits() {
    let world = World::start(Options::default()).unwrap();
    let started = Step::mode("start")
        .in_world(&world)
        .input("count", "32")
        .input("startup-timeout-minutes", "60")
        .input("idle-timeout-minutes", "120")
        .run();
    started.success();
    let names: Vec<String> = serde_json::from_str(&started.outputs()["runner-names"]).unwrap();
    assert_eq!(names.len(), 32);
    {
        let gh = world.github.lock().unwrap();
        assert_eq!(gh.rate_limited, 0, "GitHub had to refuse requests");
        assert!(
            gh.peak_points_per_minute * 4 < world::github::POINTS_PER_MINUTE,
            "{} points in a minute",
            gh.peak_points_per_minute
        );
    }
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    nothing_left(&world);
}

/// A new account's G and VT quota is 0 vCPUs: start reads it (and dry-run shows it) before any
/// launch, and the closing words are about the quota, with the command that raises it, never
/// "re-run the job". Spot and on-demand quotas are named apart.
#[test]
fn a_new_accounts_gpu_quota_of_0_is_named_with_the_request_that_raises_it() {
    let world = World::start(Options::default()).unwrap();
    world.quotas.set("L-DB2E81BA", 0.0);
    world.faults.take_calls();
    let refused = Step::mode("start")
        .in_world(&world)
        .input("instance-types", "g5.xlarge, g6.2xlarge")
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    for words in [
        "title=vCPU quota too low",
        "g5.xlarge in the default subnet (on-demand) → vCPU quota → \"Running On-Demand G and VT instances\" (L-DB2E81BA) is 0 vCPUs in us-east-1, and this start needs 4",
        "aws service-quotas request-service-quota-increase --service-code ec2 --quota-code L-DB2E81BA --desired-value 8 --region us-east-1",
        "an increase can take a day",
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    assert!(!error.contains("re-run the job"), "{error}");
    let calls: Vec<String> = world
        .faults
        .take_calls()
        .into_iter()
        .map(|(_, call, _)| call)
        .collect();
    assert!(calls.iter().any(|c| c == "GetServiceQuota"), "{calls:?}");
    assert!(!calls.iter().any(|c| c == "RunInstances"), "{calls:?}");

    // Dry-run says the same before anything is asked of a launch.
    let dry = Step::mode("start")
        .in_world(&world)
        .input("dry-run", "true")
        .run();
    dry.failure();
    assert!(
        dry.errors().join("\n").contains("--quota-code L-DB2E81BA"),
        "{:?}",
        dry.errors()
    );

    // With spot first, each market's quota is named with its own request.
    world.quotas.set("L-3819A6DF", 0.0);
    let refused = Step::mode("start")
        .in_world(&world)
        .input("market-type", "spot-then-on-demand")
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    for words in [
        "--quota-code L-3819A6DF --desired-value 4",
        "\"All G and VT Spot Instance Requests\"",
        "--quota-code L-DB2E81BA --desired-value 4",
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    nothing_left(&world);
}

/// A quota that covers one instance, with one running already: EC2 counts the running vCPUs and
/// refuses the next launch (`VcpuLimitExceeded`); the closing words ask for room for both.
#[test]
fn a_quota_used_up_by_running_instances_is_told_apart_from_a_capacity_shortage() {
    let world = World::start(Options::default()).unwrap();
    world.quotas.set("L-DB2E81BA", 4.0);
    let first = Step::mode("start").in_world(&world).run();
    first.success();
    let second = Step::mode("start").in_world(&world).run();
    second.failure();
    let error = second.errors().join("\n");
    for words in [
        "title=vCPU quota too low",
        "→ VcpuLimitExceeded →",
        "--quota-code L-DB2E81BA --desired-value 8 --region us-east-1",
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&first)
        .run()
        .success();
    nothing_left(&world);
}
