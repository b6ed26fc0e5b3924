//! Spot interruptions: AWS takes a spot instance back with two minutes' notice. The machine hears
//! the notice from its metadata service and says so (its console, a file the job can read), and
//! stop tells an interrupted job from a failed one. The world gives the notice and the
//! termination as AWS does (`World::reclaim_spot`).

use std::time::Duration;

use crate::support::{Outcome, Step, nothing_left};
use world::{Options, World};

fn world() -> World {
    World::start(Options::default()).expect("the local world starts")
}

fn start(world: &World) -> world::step::Step {
    Step::mode("start")
        .in_world(world)
        .input("market-type", "spot")
}

fn stop(world: &World) -> world::step::Step {
    Step::mode("stop").in_world(world)
}

/// A spot instance whose runner took a job that runs until the machine goes.
fn busy_spot_instance(world: &World) -> (Outcome, String, u64) {
    let started = start(world).run();
    started.success();
    assert_eq!(started.outputs()["market"], "spot");
    let id = started.outputs()["instance-id"].clone();
    let label = started.outputs()["label"].clone();
    let job = world.queue_job(&[&label], "echo training; sleep 3600; echo never");
    let running = world.wait_until(Duration::from_secs(30), |w| {
        w.job(job).is_some_and(|j| j.status == "in_progress")
    });
    assert!(running, "the job never started: {:?}", world.job(job));
    (started, id, job)
}

#[test]
fn an_interrupted_spot_job_is_said_as_such_on_the_machine_and_by_stop() {
    let world = world();
    let (started, id, job) = busy_spot_instance(&world);
    world.reclaim_spot(&id);

    // The machine hears it two minutes ahead: a console line, and the notice for the job.
    let heard = world.wait_until(Duration::from_secs(30), |w| {
        w.console(&id)
            .contains("phase=spot-interrupted action=terminate at=")
    });
    assert!(heard, "{}", world.console(&id));
    let notice = world
        .instance_file(&id, "var/lib/gpu-runner/spot-notice.json")
        .unwrap_or_default();
    assert!(notice.contains("\"action\":\"terminate\""), "{notice}");
    assert!(
        world
            .instance_file(&id, "opt/actions-runner/.env")
            .unwrap_or_default()
            .contains("GPU_RUNNER_SPOT_NOTICE=/var/lib/gpu-runner/spot-notice.json")
    );

    // Then AWS takes it, and GitHub fails the job it lost.
    let failed = world.wait_until(Duration::from_secs(60), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(failed, "{:?}", world.job(job));
    assert_eq!(
        world.job(job).unwrap().conclusion.as_deref(),
        Some("failure")
    );

    let stopped = stop(&world).outputs_of(&started).run();
    stopped.success();
    let at = world
        .console(&id)
        .lines()
        .find_map(|l| {
            l.split_once("phase=spot-interrupted action=terminate at=")
                .map(|(_, r)| r.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .unwrap();
    assert!(
        stopped.summary.contains(&format!(
            "| {id} | instance | reclaimed by AWS (a spot interruption at {at}, after a two-minute \
             notice): the GPU job was interrupted, not failed |"
        )),
        "{}",
        stopped.summary
    );
    let warning = stopped
        .stdout
        .lines()
        .find(|l| l.starts_with("::warning title=A spot instance was reclaimed::"))
        .unwrap_or_else(|| panic!("{}", stopped.stdout))
        .to_owned();
    assert!(
        warning.contains(&format!("AWS reclaimed the spot instance {id} at {at}"))
            && warning.contains("the GPU job was interrupted, not failed"),
        "{warning}"
    );
    nothing_left(&world);
}
