//! Spot interruptions: AWS takes a spot instance back with two minutes' notice. The machine hears
//! the notice from its metadata service and says so (its console, a file the job can read), and
//! stop tells an interrupted job from a failed one. The world gives the notice and the
//! termination as AWS does (`World::reclaim_spot`).

use std::time::Duration;

use serde_json::json;

use crate::support::{Outcome, Step, finished, nothing_left};
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

/// The retry workflow's step, run on `workflow_run: completed` for attempt `attempt` of the
/// world's run, which ended `conclusion`; with `max_retries` when given.
fn retry(world: &World, attempt: u32, conclusion: &str, max_retries: Option<&str>) -> Outcome {
    retry_with(world, attempt, conclusion, max_retries, &world.admin_token)
}

fn retry_with(
    world: &World,
    attempt: u32,
    conclusion: &str,
    max_retries: Option<&str>,
    token: &str,
) -> Outcome {
    let payload = json!({"workflow_run": {
        "id": world.run_id, "run_attempt": attempt, "conclusion": conclusion, "name": "GPU CI",
        "html_url": format!("https://github.com/octo/ml/actions/runs/{}", world.run_id),
    }});
    let mut step = Step::mode("retry")
        .in_world(world)
        .input("github-token", token)
        .envs(&world.triggered_by("workflow_run", &payload));
    if let Some(n) = max_retries {
        step = step.input("max-retries", n);
    }
    let outcome = step.run();
    // The run's own jobs (a re-run keeps the run's event) get tokens for push again.
    world.triggered_by("push", &json!({}));
    outcome
}

fn reruns(world: &World) -> Vec<u64> {
    world.github.lock().unwrap().reruns.clone()
}

/// A spot instance whose runner took a job that runs until the machine goes.
fn busy_spot_instance(world: &World) -> (Outcome, String, u64) {
    busy(world, start(world))
}

fn busy(world: &World, start: world::step::Step) -> (Outcome, String, u64) {
    let started = start.run();
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
    let failed = finished(&world, job, Duration::from_secs(60));
    assert_eq!(failed.conclusion.as_deref(), Some("failure"));

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

/// AWS takes the spot instance of a running job back: its stop says so, the retry workflow
/// re-runs the whole run once, and the re-run's start sees the reclaim of attempt 1 and launches
/// on-demand, where the job succeeds. A second look at the run, now green, re-runs nothing.
#[test]
fn an_interrupted_spot_run_is_re_run_once_on_demand_and_succeeds() {
    let world = world();
    let (started, id, job) = busy(
        &world,
        start(&world).input("market-type", "spot-then-on-demand"),
    );
    world.reclaim_spot(&id);
    finished(&world, job, Duration::from_secs(60));
    stop(&world).outputs_of(&started).run().success();

    // A token without Actions: write cannot re-run it, and the error says what it lacks.
    let refused = retry_with(&world, 1, "failure", None, &world.runners_only_token);
    refused.failure();
    let errors = refused.errors().join("\n");
    assert!(
        errors.contains("re-run") && errors.contains("actions: write"),
        "{errors}"
    );
    assert_eq!(reruns(&world), Vec::<u64>::new());

    let retried = retry(&world, 1, "failure", None);
    retried.success();
    assert_eq!(reruns(&world), vec![world.run_id]);
    assert!(
        retried.summary.contains(&format!(
            "AWS took back the spot instance {id} while its job ran"
        )),
        "{}",
        retried.summary
    );

    // Attempt 2: every job again, its start first.
    let again = start(&world)
        .input("market-type", "spot-then-on-demand")
        .env("GITHUB_RUN_ATTEMPT", "2")
        .run();
    again.success();
    assert_eq!(again.outputs()["market"], "on-demand");
    assert!(
        again.stdout.contains(&format!(
            "Launching on-demand, not spot: AWS took back {id}, the spot instance of an earlier \
             attempt of this run"
        )),
        "{}",
        again.stdout
    );
    let label = again.outputs()["label"].clone();
    assert!(label.starts_with(&format!("gpu-runner-{}-2-", world.run_id)));
    let job = world.queue_job(&[&label], "echo trained");
    let done = finished(&world, job, Duration::from_secs(30));
    assert_eq!(done.conclusion.as_deref(), Some("success"));
    stop(&world).outputs_of(&again).run().success();

    let green = retry(&world, 2, "success", None);
    green.success();
    assert!(
        green.stdout.contains("it ended success, not failed"),
        "{}",
        green.stdout
    );
    assert_eq!(reruns(&world), vec![world.run_id], "no second re-run");
    nothing_left(&world);
}

/// Only a run whose machine was taken back is re-run: never one whose job failed on its own,
/// nothing with max-retries: 0, and not past max-retries.
#[test]
fn a_run_that_failed_on_its_own_or_past_max_retries_is_never_re_run() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let label = started.outputs()["label"].clone();
    let job = world.queue_job(&[&label], "echo tests failed; exit 1");
    let done = finished(&world, job, Duration::from_secs(30));
    assert_eq!(done.conclusion.as_deref(), Some("failure"));
    stop(&world).outputs_of(&started).run().success();
    let own = retry(&world, 1, "failure", None);
    own.success();
    assert!(
        own.stdout.contains("it failed on its own"),
        "{}",
        own.stdout
    );
    assert_eq!(reruns(&world), Vec::<u64>::new());

    // A reclaimed machine, but retries are off, or used up.
    let (started, id, job) = busy(&world, start(&world).env("GITHUB_RUN_ATTEMPT", "2"));
    world.reclaim_spot(&id);
    finished(&world, job, Duration::from_secs(60));
    stop(&world).outputs_of(&started).run().success();
    let off = retry(&world, 2, "failure", Some("0"));
    off.success();
    assert!(off.stdout.contains("max-retries is 0"), "{}", off.stdout);
    let used_up = retry(&world, 2, "failure", None);
    used_up.success();
    assert!(
        used_up
            .stdout
            .contains("it was re-run 1 time(s) already, and max-retries is 1"),
        "{}",
        used_up.stdout
    );
    assert_eq!(reruns(&world), Vec::<u64>::new());
    nothing_left(&world);
}

/// Two of the repository's spot instances taken back within fifteen minutes: the next start
/// launches on-demand, saying why, though its own run never lost one; once `spot-breaker-minutes`
/// have passed, spot again.
#[test]
fn two_reclaims_within_the_breakers_window_move_the_next_start_to_on_demand() {
    let world = world();
    for _ in 0..2 {
        let started = start(&world).run();
        started.success();
        let id = started.outputs()["instance-id"].clone();
        world.reclaim_spot(&id);
        let gone = world.wait_until(Duration::from_secs(30), |w| {
            !w.live_instances().contains(&id)
        });
        assert!(gone);
        stop(&world).outputs_of(&started).run().success();
    }
    let next = start(&world)
        .input("market-type", "spot-then-on-demand")
        .run();
    next.success();
    assert_eq!(next.outputs()["market"], "on-demand", "{}", next.stdout);
    assert!(
        next.stdout
            .contains("AWS took back 2 of this repository's spot instances within 15 minutes"),
        "{}",
        next.stdout
    );
    stop(&world).outputs_of(&next).run().success();

    // Once spot-breaker-minutes have passed since the last reclaim (a minute: a second of the
    // world's), spot again.
    std::thread::sleep(Duration::from_secs(2));
    let after_the_hold = start(&world)
        .input("market-type", "spot-then-on-demand")
        .input("spot-breaker-minutes", "1")
        .run();
    after_the_hold.success();
    assert_eq!(
        after_the_hold.outputs()["market"],
        "spot",
        "{}",
        after_the_hold.stdout
    );
    stop(&world).outputs_of(&after_the_hold).run().success();

    // With the breaker off, spot it is.
    let spot = start(&world)
        .input("market-type", "spot-then-on-demand")
        .input("spot-breaker-interruptions", "0")
        .run();
    spot.success();
    assert_eq!(spot.outputs()["market"], "spot");
    stop(&world).outputs_of(&spot).run().success();
    nothing_left(&world);
}
