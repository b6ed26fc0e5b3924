//! Warm pools: a start resumes a stopped instance of the repository's pool with its disk, a stop
//! (or the machine itself, after its job) pauses it again, and nothing runs or stays registered
//! in between. The world stops instances as EC2 does (a while `stopping`, user data only while
//! stopped) and runs the boot script again at each start.

use std::time::Duration;

use crate::support::{Outcome, Step, nothing_left, nothing_running};
use world::aws_front::Shortage;
use world::{Options, World};

fn world() -> World {
    World::start(Options::default()).expect("the local world starts")
}

fn start(world: &World, pool: &str) -> world::step::Step {
    Step::mode("start")
        .in_world(world)
        .input("role-to-assume", &world.pool_role_arn())
        .input("pool", pool)
}

fn stop(world: &World) -> world::step::Step {
    Step::mode("stop")
        .in_world(world)
        .input("role-to-assume", &world.pool_role_arn())
}

fn tag(world: &World, id: &str, key: &str) -> Option<String> {
    world
        .instances()
        .into_iter()
        .find(|i| i.instance_id() == Some(id))?
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_owned)
}

/// The member is `stopped`, once EC2 has finished stopping it (stop returns as soon as EC2 takes
/// its StopInstances; the world takes half a minute of its clock).
#[track_caller]
fn stops(world: &World, id: &str) {
    let stopped = world.wait_until(Duration::from_secs(10), |w| {
        w.state_of(id).as_deref() == Some("stopped")
    });
    assert!(stopped, "{id} is {:?}", world.state_of(id));
}

/// Runs `script` as the job of `label` and waits until it is done; its output.
#[track_caller]
fn job(world: &World, label: &str, id: &str, script: &str) -> String {
    let job = world.queue_job(&[label], script);
    let done = world.wait_until(Duration::from_secs(40), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(
        done,
        "the job never finished; console:\n{}",
        world.console(id)
    );
    let job = world.job(job).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    job.output
}

#[test]
fn a_cold_start_fills_the_pool_and_a_warm_start_resumes_the_same_disk_without_the_old_checkout() {
    let world = world();
    let first = start(&world, "train").run();
    first.success();
    let id = first.outputs()["instance-id"].clone();
    let label = first.outputs()["label"].clone();
    assert_eq!(
        tag(&world, &id, "gpu-runner:lifecycle").as_deref(),
        Some("pooled")
    );
    assert_eq!(
        tag(&world, &id, "gpu-runner:pool").as_deref(),
        Some("train")
    );
    assert_eq!(tag(&world, &id, "gpu-runner:uses").as_deref(), Some("1"));
    assert!(tag(&world, &id, "gpu-runner:image").is_some_and(|i| i.starts_with("ami-")));
    assert!(
        first.stdout.contains(&format!("Launched {id}")),
        "{}",
        first.stdout
    );
    assert!(
        first
            .summary
            .contains("| Pool | train: launched into it now |"),
        "{}",
        first.summary
    );

    let output = job(
        &world,
        &label,
        &id,
        "echo \"cache=$GPU_RUNNER_CACHE\" && echo weights > \"$GPU_RUNNER_CACHE/model.bin\" && \
         echo checkout > \"$GITHUB_WORKSPACE/secret-of-job-1\"",
    );
    assert!(output.contains("cache=/var/cache/gpu-runner\n"), "{output}");
    // After its one job the machine shuts itself down, which stops a pool instance.
    assert!(
        world.wait_until(Duration::from_secs(20), |w| w.state_of(&id).as_deref()
            == Some("stopped")),
        "{:?}",
        world.state_of(&id)
    );
    let stopped = stop(&world).outputs_of(&first).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains(&format!("| {id} | instance | already back in its pool")),
        "{}",
        stopped.summary
    );
    nothing_running(&world);
    assert_eq!(
        world.live_instances(),
        std::slice::from_ref(&id),
        "the pool keeps it"
    );

    let second = start(&world, "train").run();
    second.success();
    assert_eq!(
        second.outputs()["instance-id"],
        id,
        "the same instance, resumed"
    );
    let label2 = second.outputs()["label"].clone();
    assert_ne!(label, label2);
    assert!(
        second.stdout.contains(&format!(
            "Resumed {id} (g4dn.xlarge from the pool, its job 2)"
        )),
        "{}",
        second.stdout
    );
    assert!(
        second
            .summary
            .contains("| Pool | train: resumed with its disk, for its job 2 |"),
        "{}",
        second.summary
    );
    assert_eq!(tag(&world, &id, "gpu-runner:label"), Some(label2.clone()));
    assert_eq!(tag(&world, &id, "gpu-runner:uses").as_deref(), Some("2"));
    // The new boot ran the new script: the new runner's name, never the old one's.
    assert!(
        world
            .user_data(&id)
            .contains(&format!("readonly RUNNER_NAME='{label2}'"))
    );
    let console = world.console(&id);
    assert!(
        console.contains(&format!("status=starting name={label2}")),
        "{console}"
    );
    // The boot script runs at every boot without taking the image's cloud-init modules away:
    // the image's own per-boot scripts ran at both boots.
    assert_eq!(
        console.matches("the image's per-boot script ran").count(),
        2,
        "{console}"
    );
    let output = job(
        &world,
        &label2,
        &id,
        "cat \"$GPU_RUNNER_CACHE/model.bin\" && \
         if [ -e \"$GITHUB_WORKSPACE/secret-of-job-1\" ]; then echo old-checkout-seen; \
         else echo old-checkout-gone; fi && \
         echo \"gpu-variable-sets=$(grep -c '^GPU_RUNNER_GPU_NAME=' /opt/actions-runner/.env)\"",
    );
    assert!(output.contains("weights\n"), "the cache survives: {output}");
    assert!(output.contains("old-checkout-gone\n"), "{output}");
    assert!(
        output.contains("gpu-variable-sets=1\n"),
        "one set of gpu-runner's variables: {output}"
    );

    // Stopped by the stop job while it still runs: stop pauses it and waits until it is stopped.
    let stopped = stop(&world).outputs_of(&second).run();
    stopped.success();
    stops(&world, &id);
    nothing_running(&world);

    // The next cleanup leaves a stopped pool member alone.
    let cleanup = Step::mode("cleanup")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .run();
    cleanup.success();
    assert_eq!(world.live_instances(), [id]);
}

/// EC2 takes tens of seconds to minutes to stop a GPU instance (the world half a minute of its
/// clock). A stop returns once EC2 has accepted StopInstances, so that the workflow is not billed
/// for a runner watching it; a start that finds the member still `stopping` waits for it rather
/// than launch a cold instance, even with pool-full: fail.
#[test]
fn a_stop_returns_once_ec2_accepts_it_and_the_next_start_waits_for_the_stopping_member() {
    let world = world();
    let started = start(&world, "train").run();
    started.success();
    let id = started.outputs()["instance-id"].clone();
    let stopped = stop(&world).outputs_of(&started).run();
    stopped.success();
    assert_eq!(
        world.state_of(&id).as_deref(),
        Some("stopping"),
        "stop returned before EC2 finished: {}",
        stopped.stdout
    );
    assert!(
        stopped
            .summary
            .contains(&format!("| {id} | instance | returned to its pool after"))
            && stopped.summary.contains("(still stopping; its disk kept)"),
        "{}",
        stopped.summary
    );
    // At once: the member is still stopping, and the start waits for it.
    let again = start(&world, "train").input("pool-full", "fail").run();
    again.success();
    assert_eq!(again.outputs()["instance-id"], id, "{}", again.stdout);
    assert!(
        again.stdout.contains(&format!("{id} is still stopping")),
        "{}",
        again.stdout
    );
    assert_eq!(world.live_instances().len(), 1, "no cold launch beside it");
    stop(&world).outputs_of(&again).run().success();
    nothing_running(&world);
}

/// Fills the pool "pair" with two members, both running a runner of one start: that start and
/// their ids.
fn pool_of_two(world: &World) -> (Outcome, Vec<String>) {
    let both = start(world, "pair")
        .input("count", "2")
        .input("pool-size", "2")
        .run();
    both.success();
    let ids: Vec<String> = serde_json::from_str(&both.outputs()["instance-ids"]).unwrap();
    assert_eq!(ids.len(), 2);
    (both, ids)
}

#[test]
fn a_pool_of_two_serves_count_2_and_a_full_pool_fails_or_waits_as_pool_full_says() {
    let world = world();
    let (both, ids) = pool_of_two(&world);

    // Both busy and the pool full.
    let full = start(&world, "pair")
        .input("pool-size", "2")
        .input("pool-full", "fail")
        .run();
    full.failure();
    let error = full.errors().join("\n");
    assert!(
        error.contains("no instance of the pool \"pair\" is free")
            && error.contains("pool-size (2)")
            && error.contains("Raise pool-size"),
        "{error}"
    );
    assert_eq!(
        world.live_instances().len(),
        2,
        "nothing launched past pool-size"
    );

    // pool-full: wait (the default) takes the first instance returned.
    let waiting = start(&world, "pair").input("pool-size", "2").spawn();
    std::thread::sleep(Duration::from_millis(1500));
    stop(&world).outputs_of(&both).run().success();
    let waited = waiting.wait();
    waited.success();
    assert!(
        waited
            .stdout
            .contains("Waiting: no instance of the pool \"pair\" is free"),
        "{}",
        waited.stdout
    );
    assert!(ids.contains(&waited.outputs()["instance-id"]));
    assert_eq!(world.live_instances().len(), 2);
    stop(&world).outputs_of(&waited).run().success();
    nothing_running(&world);
    let again = start(&world, "pair")
        .input("count", "2")
        .input("pool-size", "2")
        .run();
    again.success();
    let mut resumed: Vec<String> = serde_json::from_str(&again.outputs()["instance-ids"]).unwrap();
    let mut ids = ids;
    resumed.sort();
    ids.sort();
    assert_eq!(resumed, ids, "both resumed, nothing new");
    stop(&world).outputs_of(&again).run().success();
    nothing_running(&world);
}

/// Start with `pool-instance-id` naming `kept`, which EC2 will not run: a pool of one has nowhere
/// else to go, so it fails as a capacity shortage, and nothing is left running.
#[track_caller]
fn a_pool_of_one_ec2_cannot_start_fails_for_capacity(world: &World, kept: &str) {
    let named = start(world, "pair")
        .input("pool-size", "2")
        .input("pool-instance-id", kept)
        .run();
    named.failure();
    let errors = named.errors().join("\n");
    assert!(
        errors.contains("No GPU capacity") && errors.contains(kept),
        "{errors}"
    );
    nothing_running(world);
}

/// EC2 can refuse to start a stopped GPU instance for lack of capacity in its zone, a common
/// answer for GPU types (the world refuses as EC2 does). Start goes on: another stopped member,
/// else a new instance through the usual candidates, retiring the stuck member when the pool is
/// full; the summary says what was tried. A pool of one named by pool-instance-id has nowhere else
/// to go and fails as a capacity shortage does.
#[test]
fn a_member_ec2_cannot_start_for_capacity_gives_way_to_another_or_to_a_new_instance() {
    let world = world();
    let (both, ids) = pool_of_two(&world);
    stop(&world).outputs_of(&both).run().success();
    nothing_running(&world);

    // One member's zone is full: the other is resumed.
    world
        .zone_full
        .lock()
        .unwrap()
        .insert(ids[0].clone(), Shortage::RefusesStart);
    let first_choice = start(&world, "pair").input("pool-size", "2").run();
    first_choice.success();
    let resumed = first_choice.outputs()["instance-id"].clone();
    assert_eq!(
        resumed, ids[1],
        "the member EC2 can start, not a new instance"
    );
    stop(&world).outputs_of(&first_choice).run().success();
    nothing_running(&world);

    // Both members' zones full, the pool full: one member is retired and a new instance
    // launched where there is capacity.
    world
        .zone_full
        .lock()
        .unwrap()
        .insert(resumed.clone(), Shortage::RefusesStart);
    let launched = start(&world, "pair").input("pool-size", "2").run();
    launched.success();
    let new = launched.outputs()["instance-id"].clone();
    assert!(!ids.contains(&new), "a new instance: {new}");
    assert!(
        launched.stdout.contains("Insufficient capacity")
            || launched.stdout.contains("InsufficientInstanceCapacity"),
        "{}",
        launched.stdout
    );
    assert!(
        launched
            .summary
            .contains("| Tried first, without capacity |")
            && launched.summary.contains("InsufficientInstanceCapacity"),
        "{}",
        launched.summary
    );
    let members: Vec<String> = world
        .instances()
        .into_iter()
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    assert_eq!(
        members.len(),
        2,
        "the pool stays within pool-size: {members:?}"
    );
    stop(&world).outputs_of(&launched).run().success();
    nothing_running(&world);

    // A pool of one that EC2 cannot start: a capacity failure, nothing else started.
    let kept = members.iter().find(|m| **m != new).unwrap().clone();
    world
        .zone_full
        .lock()
        .unwrap()
        .insert(kept.clone(), Shortage::RefusesStart);
    a_pool_of_one_ec2_cannot_start_fails_for_capacity(&world, &kept);
}

/// EC2 can also take the start of a stopped GPU instance and send it back to `stopped` a moment
/// later, its state reason `Server.InsufficientInstanceCapacity` (the world does so, as EC2
/// does). Start sees it within the resume, never hands that member the runner, and goes on as
/// for a refused start: here both members bounce, so one is retired for a new instance; the
/// summary names both tries, and the member left keeps the label of its last run, not this one's.
#[test]
fn a_member_ec2_sends_back_to_stopped_for_capacity_gives_way_to_a_new_instance() {
    let world = world();
    let (both, ids) = pool_of_two(&world);
    stop(&world).outputs_of(&both).run().success();
    nothing_running(&world);
    let last_label = tag(&world, &ids[0], "gpu-runner:label");
    for id in &ids {
        world
            .zone_full
            .lock()
            .unwrap()
            .insert(id.clone(), Shortage::StopsAgain);
    }

    let started = start(&world, "pair").input("pool-size", "2").run();
    started.success();
    let new = started.outputs()["instance-id"].clone();
    assert!(!ids.contains(&new), "a new instance: {new}");
    for id in &ids {
        assert!(
            started
                .stdout
                .contains(&format!("EC2 sent {id} back to stopped")),
            "{}",
            started.stdout
        );
    }
    assert!(
        started
            .summary
            .contains("| Tried first, without capacity |")
            && started
                .summary
                .contains("Server.InsufficientInstanceCapacity"),
        "{}",
        started.summary
    );
    let label = started.outputs()["label"].clone();
    let live = world.live_instances();
    let kept: Vec<&String> = ids.iter().filter(|id| live.contains(id)).collect();
    assert_eq!(
        kept.len(),
        1,
        "one member retired for the new one: {kept:?}"
    );
    let kept = kept[0].clone();
    let kept_label = tag(&world, &kept, "gpu-runner:label");
    assert_ne!(kept_label.as_deref(), Some(label.as_str()));
    if kept == ids[0] {
        assert_eq!(kept_label, last_label);
    }
    assert_eq!(
        world.running_instances(),
        vec![new.clone()],
        "only the new one runs"
    );
    stop(&world).outputs_of(&started).run().success();
    nothing_running(&world);

    // A pool of one that EC2 sends back: a capacity failure, nothing left running.
    a_pool_of_one_ec2_cannot_start_fails_for_capacity(&world, &kept);
}

#[test]
fn pool_max_uses_retires_an_instance_after_its_last_job() {
    let world = world();
    let first = start(&world, "short").input("pool-max-uses", "2").run();
    first.success();
    let id = first.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&first).run().success();
    let second = start(&world, "short").input("pool-max-uses", "2").run();
    second.success();
    assert_eq!(second.outputs()["instance-id"], id);
    assert!(tag(&world, &id, "gpu-runner:retire").is_some_and(|w| w.contains("pool-max-uses (2)")));
    let stopped = stop(&world).outputs_of(&second).run();
    stopped.success();
    assert!(
        stopped.summary.contains(&format!(
            "| {id} | instance | retired from its pool (it served pool-max-uses (2) jobs): terminated"
        )),
        "{}",
        stopped.summary
    );
    nothing_left(&world);
    // The next start launches its replacement.
    let third = start(&world, "short").input("pool-max-uses", "2").run();
    third.success();
    assert_ne!(third.outputs()["instance-id"], id);
    stop(&world).outputs_of(&third).run().success();
    nothing_running(&world);
}

#[test]
fn instance_id_resumes_that_pool_instance_and_refuses_any_other() {
    let world = world();
    let seeded = start(&world, "seed").run();
    seeded.success();
    let id = seeded.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&seeded).run().success();

    let resumed = Step::mode("start")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .input("pool-instance-id", &id)
        .run();
    resumed.success();
    assert_eq!(resumed.outputs()["instance-id"], id);
    // While it serves that run, it is busy: nothing else is launched in its place.
    let busy = Step::mode("start")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .input("pool-instance-id", &id)
        .input("pool-full", "fail")
        .run();
    busy.failure();
    let error = busy.errors().join("\n");
    assert!(
        error.contains(&format!("instance-id {id} is busy: it is running")),
        "{error}"
    );
    assert_eq!(world.live_instances().len(), 1);
    stop(&world).outputs_of(&resumed).run().success();
    nothing_running(&world);

    // An instance gpu-runner did not launch into a pool of this repository is never touched.
    let stranger = world.launch_tagged(&[("Name", "someone's box")]);
    let refused = Step::mode("start")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .input("pool-instance-id", &stranger)
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    assert!(
        error.contains(&format!(
            "instance-id {stranger} is not one of octo/ml's pool instances"
        )),
        "{error}"
    );
    assert_eq!(world.state_of(&stranger).as_deref(), Some("running"));
    assert_eq!(
        world.registered_runners(),
        [],
        "its runner was removed again"
    );
}

#[test]
fn cancel_during_a_warm_start_stops_the_instance_again_and_removes_the_runner() {
    let world = world();
    let first = start(&world, "train").run();
    first.success();
    let id = first.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&first).run().success();

    let running = start(&world, "train").spawn();
    // Cancelled once the instance is resumed, while start waits for its runner.
    let resumed = world.wait_until(Duration::from_secs(20), |w| {
        w.state_of(&id).as_deref() == Some("running")
    });
    running.signal("TERM");
    let cancelled = running.wait();
    assert!(resumed, "{}", cancelled.stdout);
    cancelled.failure();
    let error = cancelled.errors().join("\n");
    assert!(
        error.contains("cancelled (SIGTERM)")
            && error.contains(&format!("instance {id} returned to its pool")),
        "{error}"
    );
    nothing_running(&world);
    stops(&world, &id);
}

#[test]
fn a_pool_never_serves_a_trigger_the_guard_refuses_even_with_allow_untrusted() {
    let world = world();
    let payload = serde_json::json!({
        "pull_request": {
            "number": 7,
            "head": {"sha": "abc", "repo": {"full_name": "stranger/ml", "fork": true}},
            "user": {"login": "stranger"},
            "author_association": "NONE"
        },
        "repository": {"private": false}
    });
    let refused = start(&world, "train")
        .input("allow-untrusted", "true")
        .envs(&world.triggered_by("pull_request_target", &payload))
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    assert!(
        error.contains("allow-untrusted does not lift this for a pool"),
        "{error}"
    );
    assert_eq!(world.live_instances(), Vec::<String>::new());
}

#[test]
fn cleanup_leaves_stopped_members_pauses_a_running_orphan_and_ends_a_retired_one() {
    let world = world();
    let kept = start(&world, "c").run();
    kept.success();
    let stopped_id = kept.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&kept).run().success();
    let member = |label: &str, extra: &[(&str, &str)]| {
        let mut tags = vec![
            ("gpu-runner:label", label),
            ("gpu-runner:repository", "octo/ml"),
            ("gpu-runner:lifecycle", "pooled"),
            ("gpu-runner:pool", "c"),
        ];
        tags.extend_from_slice(extra);
        world.launch_tagged(&tags)
    };
    // A member whose start and stop were lost: running past its expires-at, no runner.
    let orphan = member(
        "gpu-runner-11-1-orphan",
        &[("gpu-runner:expires-at", "2026-01-01T00:00:00Z")],
    );
    // A member that served its last job, whose stop never ran: stopped, tagged retire.
    let retired = member(
        "gpu-runner-12-1-retired",
        &[("gpu-runner:retire", "it served pool-max-uses (3) jobs")],
    );
    world.stop_instance(&retired).unwrap();
    assert!(world.wait_until(Duration::from_secs(10), |w| {
        w.state_of(&retired).as_deref() == Some("stopped")
    }));

    let dry = Step::mode("cleanup")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .input("dry-run", "true")
        .run();
    dry.success();
    assert_eq!(
        dry.summary.matches("| would do (dry run) |").count(),
        2,
        "{}",
        dry.summary
    );
    let out = Step::mode("cleanup")
        .in_world(&world)
        .input("role-to-assume", &world.pool_role_arn())
        .run();
    out.success();
    for row in [
        format!(
            "| return instance to its pool | {orphan} | past its expires-at (2026-01-01T00:00:00Z) | returned to its pool after"
        ),
        format!(
            "| terminate instance | {retired} | retired from its pool: it served pool-max-uses (3) jobs | retired from its pool (it served pool-max-uses (3) jobs): terminated"
        ),
    ] {
        assert!(out.summary.contains(&row), "missing {row}\n{}", out.summary);
    }
    assert!(!out.summary.contains(&stopped_id), "{}", out.summary);
    nothing_running(&world);
    stops(&world, &stopped_id);
    stops(&world, &orphan);
    assert_eq!(world.state_of(&retired).as_deref(), Some("terminated"));
}

#[test]
fn a_member_from_an_older_image_or_past_pool_max_age_days_is_retired_and_replaced() {
    let world = world();
    let stopped_member = |extra: &[(&str, &str)]| {
        let mut tags = vec![
            ("gpu-runner:label", "gpu-runner-1-1-old"),
            ("gpu-runner:repository", "octo/ml"),
            ("gpu-runner:lifecycle", "pooled"),
            ("gpu-runner:pool", "aging"),
            ("gpu-runner:uses", "3"),
            // This workflow's: another workflow's members are not this start's to retire.
            ("gpu-runner:workflow", world::WORKFLOW_REF),
        ];
        tags.extend_from_slice(extra);
        let id = world.launch_tagged(&tags);
        world.stop_instance(&id).unwrap();
        assert!(world.wait_until(Duration::from_secs(10), |w| {
            w.state_of(&id).as_deref() == Some("stopped")
        }));
        id
    };
    // Launched from an image that image-id no longer resolves to (a new Deep Learning AMI).
    let drifted = stopped_member(&[("gpu-runner:image", "ami-0000000000000000a")]);
    // Launched into the pool 40 days ago.
    let aged = stopped_member(&[("gpu-runner:pooled-at", "2026-10-24T00:00:00Z")]);

    let started = start(&world, "aging")
        .input("pool-size", "2")
        .input("pool-max-age-days", "30")
        .run();
    started.success();
    for (id, why) in [
        (
            &drifted,
            "its image ami-0000000000000000a is not the one image-id resolves to now",
        ),
        (&aged, "it is older than pool-max-age-days (30)"),
    ] {
        assert!(
            started
                .stdout
                .contains(&format!("Retiring {id} from the pool: {why}")),
            "{}",
            started.stdout
        );
        assert!(world.wait_until(Duration::from_secs(10), |w| {
            w.state_of(id).as_deref() == Some("terminated")
        }));
    }
    let id = started.outputs()["instance-id"].clone();
    assert!(id != drifted && id != aged);
    assert!(started.stdout.contains(&format!("Launched {id}")));
    stop(&world).outputs_of(&started).run().success();
    nothing_running(&world);
}

/// A stranger's job handed a pool member (GitHub routes `runs-on: self-hosted` to it) runs none
/// of its steps, not even an `if: always()` one that would leave something on the disk the next
/// job of the pool gets; the member goes back to its pool and nothing runs or stays registered.
#[test]
fn a_strangers_job_handed_a_pool_member_leaves_nothing_on_its_disk() {
    let world = world();
    let stranger = world.queue_hostile_job_of_run(
        world.run_id + 1,
        "octo/ml",
        "refs/pull/7/merge",
        &["self-hosted"],
    );
    let started = start(&world, "train").run();
    let id = started.outputs()["instance-id"].clone();
    let done = world.wait_until(Duration::from_secs(40), |w| {
        w.job(stranger).is_some_and(|j| j.status == "completed")
    });
    assert!(done, "GitHub never handed the stranger's job to the member");
    let job = world.job(stranger).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{}", job.output);
    assert!(
        job.output
            .contains("::error title=gpu-runner refused this job::")
            && !job.output.contains("CANARY"),
        "{}",
        job.output
    );
    for canary in world::CANARIES {
        assert_eq!(world.instance_file(&id, canary), None, "{canary}");
    }
    assert!(
        world.wait_until(Duration::from_secs(30), |w| w.state_of(&id).as_deref()
            == Some("stopped")),
        "{:?}",
        world.state_of(&id)
    );
    world.github.lock().unwrap().cancel_run(world.run_id);
    stop(&world).outputs_of(&started).run().success();
    nothing_running(&world);
}

/// With `allow-untrusted: true`, a pool still gets the guard's whole verdict: a comment approves
/// a run only when GitHub says its author can write to the repository.
#[test]
fn a_pool_with_allow_untrusted_still_asks_github_whether_a_comments_author_may_approve() {
    let world = world();
    {
        let mut gh = world.github.lock().unwrap();
        gh.collaborators
            .insert("carol".to_owned(), "read".to_owned());
        gh.pulls
            .insert(7, "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432".to_owned());
    }
    let comment = serde_json::json!({
        "issue": {"number": 7, "pull_request": {"url": "https://api.github.com/repos/octo/ml/pulls/7"}},
        "comment": {"user": {"login": "carol"}, "author_association": "MEMBER", "body": "/gpu 9f8e7d6"},
        "repository": {"full_name": "octo/ml", "private": true},
    });
    let refused = start(&world, "train")
        .input("allow-untrusted", "true")
        .envs(&world.triggered_by("issue_comment", &comment))
        .run();
    refused.failure();
    assert!(
        refused.errors()[0].contains("the comment's author carol has read permission on octo/ml"),
        "{:?}",
        refused.errors()
    );
    assert_eq!(world.live_instances(), Vec::<String>::new());
    assert_eq!(world.registered_runners(), [], "runners registered");
}

/// A job on a pool member makes the runner's `.env` a link to a file only root may write: the
/// next boot, as root, neither reads nor writes through it. It replaces the link with a file of
/// its own, and the linked file is untouched.
#[test]
fn the_next_boot_never_writes_through_a_link_a_job_left_on_the_disk() {
    let world = world();
    let first = start(&world, "train").run();
    first.success();
    let id = first.outputs()["instance-id"].clone();
    let label = first.outputs()["label"].clone();
    job(
        &world,
        &label,
        &id,
        "rm -f /opt/actions-runner/.env && ln -s /etc/gpu-runner-canary /opt/actions-runner/.env \
         && ls -l /opt/actions-runner/.env",
    );
    assert!(
        world.wait_until(Duration::from_secs(20), |w| w.state_of(&id).as_deref()
            == Some("stopped")),
        "{:?}",
        world.state_of(&id)
    );
    stop(&world).outputs_of(&first).run().success();

    let second = start(&world, "train").run();
    second.success();
    assert_eq!(second.outputs()["instance-id"], id);
    let label2 = second.outputs()["label"].clone();
    let output = job(
        &world,
        &label2,
        &id,
        "if [ -L /opt/actions-runner/.env ]; then echo still-a-link; else echo a-file; fi && \
         grep -c '^GPU_RUNNER_GPU_NAME=' /opt/actions-runner/.env",
    );
    assert!(output.contains("a-file\n1\n"), "{output}");
    assert_eq!(world.instance_file(&id, "etc/gpu-runner-canary"), None);
    stop(&world).outputs_of(&second).run().success();
    nothing_running(&world);
}

/// `jit-handoff: ssm` on a pool: each start writes its runner's JIT config for that member alone,
/// the member's boot reads and deletes it, and its user data never holds one. A member launched
/// without the instance profile is retired: EC2 keeps the profile an instance was launched with.
#[test]
fn a_pool_member_reads_each_runners_jit_config_from_ssm_once() {
    let world = world();
    let ssm = |s: world::step::Step| {
        s.input("iam-instance-profile", world::INSTANCE_PROFILE)
            .input("jit-handoff", "ssm")
    };
    let plain = start(&world, "vault").run();
    plain.success();
    let old = plain.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&plain).run().success();
    let mut member = None;
    for _ in 0..2 {
        let started = ssm(start(&world, "vault")).run();
        started.success();
        let id = started.outputs()["instance-id"].clone();
        match &member {
            None => {
                assert_ne!(id, old);
                assert!(
                    started.stdout.contains(&format!(
                        "Retiring {old} from the pool: it was launched with instance profile \
                         none, and iam-instance-profile asks for gpu-runner-instance"
                    )),
                    "{}",
                    started.stdout
                );
            }
            Some(member) => assert_eq!(&id, member),
        }
        member = Some(id.clone());
        let label = started.outputs()["label"].clone();
        assert_eq!(
            tag(&world, &id, "gpu-runner:jit-handoff").as_deref(),
            Some("ssm")
        );
        let jit = world.github.lock().unwrap().issued_jit_configs.clone();
        let user_data = world.user_data(&id);
        assert!(jit.iter().all(|j| !user_data.contains(j.as_str())));
        let read = world.wait_until(Duration::from_secs(20), |w| {
            w.console(&id).contains(&format!(
                "phase=jit-handoff status=ok parameter=/gpu-runner/jit/octo/ml/{label} deleted=yes"
            ))
        });
        assert!(read, "{}", world.console(&id));
        job(&world, &label, &id, "echo warm");
        stop(&world).outputs_of(&started).run().success();
        nothing_running(&world);
    }
}

/// What a job of one workflow leaves on a pool member: a poisoned `run.sh`, an `LD_PRELOAD`
/// line in the runner's `.env`, a `.path`, a crontab, systemd user units, files in its home and
/// in `/tmp`, beside the cache the pool keeps on purpose.
const PLANT: &str = "cd /opt/actions-runner \
    && echo 'echo RUNSH-POISONED' >> run.sh \
    && echo 'LD_PRELOAD=/tmp/evil.so' >> .env \
    && echo '/tmp/evil-bin' >> .path \
    && echo '* * * * * touch /tmp/cron-ran' | crontab - \
    && echo 'touch /tmp/at-ran' | at now + 1 hour \
    && mkdir -p ~/.config/systemd/user && touch ~/.config/systemd/user/evil.service \
    && touch ~/.canary-home /tmp/canary-tmp /var/tmp/canary-vartmp \
    && echo cached > \"$GPU_RUNNER_CACHE/kept\" \
    && echo PLANTED";

/// What the next job looks for.
const LOOK: &str = "for f in /opt/actions-runner/run.sh /opt/actions-runner/.env \
    /opt/actions-runner/.path; do if grep -q -e RUNSH-POISONED -e LD_PRELOAD -e evil-bin \"$f\" \
    2> /dev/null; then echo \"FOUND in $f\"; fi; done; \
    if crontab -l > /dev/null 2>&1; then echo FOUND crontab; fi; \
    at -l | sed 's/^/FOUND at job /'; \
    for f in ~/.config/systemd/user/evil.service ~/.canary-home /tmp/canary-tmp \
    /var/tmp/canary-vartmp; do if [ -e \"$f\" ]; then echo \"FOUND $f\"; fi; done; \
    cat \"$GPU_RUNNER_CACHE/kept\"; id -nG; echo LOOKED";

/// A branch's workflow names the same pool as the default branch's, without sudo: its members
/// are its own (tagged with its workflow and launch settings), so a default-branch run never gets
/// one, and the next run of the branch's workflow resumes its member clean of what the last job
/// left, but for the cache.
#[test]
fn a_branch_never_gets_the_default_branchs_members_and_each_boot_starts_clean() {
    let world = world();
    let branch_ref = "refs/heads/feature";
    let branch = |s: world::step::Step| {
        s.env(
            "GITHUB_WORKFLOW_REF",
            &format!("octo/ml/.github/workflows/gpu.yml@{branch_ref}"),
        )
        .input("runner-sudo", "false")
    };
    let branch_job = |label: &str, id: &str, script: &str| {
        let job = world.queue_job_of_run(world.run_id, "octo/ml", branch_ref, &[label], script);
        let done = world.wait_until(Duration::from_secs(40), |w| {
            w.job(job).is_some_and(|j| j.status == "completed")
        });
        assert!(
            done,
            "the job never finished; console:\n{}",
            world.console(id)
        );
        let job = world.job(job).unwrap();
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
        job.output
    };

    let a = branch(start(&world, "shared")).run();
    a.success();
    let a_id = a.outputs()["instance-id"].clone();
    assert_eq!(
        tag(&world, &a_id, "gpu-runner:workflow").as_deref(),
        Some("octo/ml/.github/workflows/gpu.yml@refs/heads/feature")
    );
    let planted = branch_job(&a.outputs()["label"], &a_id, PLANT);
    assert!(planted.contains("PLANTED"), "{planted}");
    stop(&world).outputs_of(&a).run().success();

    // The default branch's run: another member.
    let b = start(&world, "shared").input("runner-sudo", "false").run();
    b.success();
    assert_ne!(b.outputs()["instance-id"], a_id);
    stop(&world).outputs_of(&b).run().success();

    // The branch's workflow again: its member, clean but for the cache.
    let again = branch(start(&world, "shared")).run();
    again.success();
    assert_eq!(again.outputs()["instance-id"], a_id);
    let looked = branch_job(&again.outputs()["label"], &a_id, LOOK);
    assert!(looked.contains("LOOKED"), "{looked}");
    assert!(!looked.contains("FOUND"), "{looked}");
    assert!(
        looked.contains("cached"),
        "the cache is the pool's point: {looked}"
    );
    assert!(
        !looked.contains("docker"),
        "no docker group without sudo: {looked}"
    );
    assert!(
        world
            .console(&a_id)
            .contains("phase=runner-fetch status=ok version=2.999.0 from=cache"),
        "{}",
        world.console(&a_id)
    );
    stop(&world).outputs_of(&again).run().success();
    nothing_running(&world);
}

/// Any branch may assume the general role, only the default branch the pool role, which alone may
/// resume, pause and retag pool members (docs/iam/pool-policy.json): a branch's workflow that
/// skips gpu-runner and calls EC2 itself cannot give the default branch's stopped member new user
/// data (root on the machine its next job gets) or start it.
#[test]
fn only_the_default_branch_may_assume_the_pool_role_and_no_other_role_resumes_a_member() {
    let world = world();
    let main = start(&world, "guarded").run();
    main.success();
    let id = main.outputs()["instance-id"].clone();
    stop(&world).outputs_of(&main).run().success();

    // A workflow of another branch: GitHub's token names its ref.
    *world.oidc.git_ref.lock().unwrap() = "refs/heads/feature".to_owned();
    let refused = start(&world, "guarded")
        .env(
            "GITHUB_WORKFLOW_REF",
            "octo/ml/.github/workflows/gpu.yml@refs/heads/feature",
        )
        .run();
    refused.failure();
    let error = refused.errors().join("\n");
    assert!(
        error.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity")
            && error.contains("The role's trust policy does not admit this job"),
        "{error}"
    );
    assert_eq!(
        world.ec2_as(world::POOL_ROLE).err().as_deref(),
        Some("AccessDenied")
    );
    // The role it may assume has no pool statement.
    let ec2 = world
        .ec2_as("gpu-ci")
        .expect("any branch assumes the general role");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = |e: &dyn aws_sdk_ec2::error::ProvideErrorMetadata| e.code().map(str::to_owned);
    let modified = rt.block_on(
        ec2.modify_instance_attribute()
            .instance_id(&id)
            .user_data(
                aws_sdk_ec2::types::BlobAttributeValue::builder()
                    .value(aws_sdk_ec2::primitives::Blob::new(
                        "#!/bin/bash\necho owned",
                    ))
                    .build(),
            )
            .send(),
    );
    assert_eq!(
        modified.err().and_then(|e| code(&e)).as_deref(),
        Some("UnauthorizedOperation")
    );
    let started = rt.block_on(ec2.start_instances().instance_ids(&id).send());
    assert_eq!(
        started.err().and_then(|e| code(&e)).as_deref(),
        Some("UnauthorizedOperation")
    );
    stops(&world, &id);
    nothing_running(&world);
}

/// With sudo (and so the docker group), a job can leave a container that Docker restarts at
/// every boot, and a volume: the next boot removes both, and keeps the images.
#[test]
fn a_container_a_job_left_on_a_pool_member_is_gone_at_the_next_boot() {
    let world = world();
    let first = start(&world, "containers").run();
    first.success();
    let id = first.outputs()["instance-id"].clone();
    let planted = job(
        &world,
        &first.outputs()["label"],
        &id,
        "docker run -d --restart=always --name miner alpine sleep infinity \
         && docker volume create loot && docker ps -aq | wc -l",
    );
    assert!(planted.contains('1'), "{planted}");
    stop(&world).outputs_of(&first).run().success();

    let second = start(&world, "containers").run();
    second.success();
    assert_eq!(second.outputs()["instance-id"], id);
    let looked = job(
        &world,
        &second.outputs()["label"],
        &id,
        "echo \"containers: $(docker ps -aq | wc -l) volumes: $(docker volume ls -q | wc -l)\"",
    );
    assert!(looked.contains("containers: 0 volumes: 0"), "{looked}");
    stop(&world).outputs_of(&second).run().success();
    nothing_running(&world);
}
