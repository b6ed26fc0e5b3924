//! Never an orphan: the fault matrix (the whole cycle with one fault at each point) and
//! cancellation by real signals. Whatever happens, no instance and no runner is left.

use std::time::{Duration, Instant};

use crate::support::Step;
use world::matrix;
use world::{Fault, Options, RunnerBehaviour, Service, World};

/// The runner's cancel: SIGINT, then SIGTERM soon after. The rollback must survive the second
/// signal and end within seconds, and the post step that follows finds nothing left to do.
#[test]
fn a_cancelled_start_rolls_back_within_seconds_despite_the_second_signal() {
    let world = World::start(Options {
        runner: RunnerBehaviour::NeverOnline,
        ..Options::default()
    })
    .unwrap();
    let start = Step::mode("start").in_world(&world);
    let running = start.clone().spawn();
    assert!(world.wait_until(Duration::from_secs(30), |w| {
        w.instance_log()
            .iter()
            .any(|l| l.contains("phase=runner status=starting"))
    }));
    assert_eq!(world.live_instances().len(), 1);
    let sent = Instant::now();
    running.signal("INT");
    std::thread::sleep(Duration::from_millis(50));
    running.signal("TERM");
    let out = running.wait();
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(8), "took {took:?}");
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.starts_with(
            "::error title=gpu-runner was cancelled::The job was cancelled (SIGINT) while the GPU \
             runner was starting. Rolled back: instance i-"
        ),
        "{error}"
    );
    assert!(world.wait_until(Duration::from_secs(5), |w| w.live_instances().is_empty()));
    assert_eq!(world.registered_runners(), []);

    let post = start.post().state_of(&out).run();
    post.success();
    assert!(
        post.summary.contains("| already ended |"),
        "{}",
        post.summary
    );
}

/// A cancel before any cloud call: nothing was created, and the step says so.
#[test]
fn a_cancel_before_anything_exists_just_stops() {
    let world = World::start(Options::default()).unwrap();
    world.faults.inject(
        Service::Aws,
        "AssumeRoleWithWebIdentity",
        Fault::Slow(Duration::from_secs(5)),
        1,
    );
    let running = Step::mode("start").in_world(&world).spawn();
    std::thread::sleep(Duration::from_millis(700));
    running.signal("TERM");
    let out = running.wait();
    out.failure();
    assert!(
        out.errors()
            .join("\n")
            .contains("cancelled (SIGTERM) before gpu-runner created anything. Nothing was registered or launched."),
        "{out:#?}"
    );
    assert!(world.instances().is_empty());
    assert_eq!(world.registered_runners(), []);
}

#[test]
fn no_fault_in_the_matrix_leaves_an_instance_or_a_runner() {
    let scenarios = matrix::scenarios();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gpu-runner"));
    let results = matrix::run_all(bin, &scenarios, 3);
    let table = matrix::table(&results);
    println!("{table}");
    for (scenario, result) in scenarios.iter().zip(&results) {
        let row = result
            .as_ref()
            .unwrap_or_else(|e| panic!("{}: {e}\n{table}", scenario.name));
        assert_eq!(
            (row.instances_left, row.runners_left),
            (0, 0),
            "{}\n{table}",
            row.scenario
        );
        // Each fault the row names really happened.
        for (_, call, _, _) in &scenario.faults {
            assert!(
                row.fired.iter().any(|f| f.starts_with(call)),
                "{}: the {call} fault never fired: {:?}",
                row.scenario,
                row.fired
            );
        }
    }
}

/// A start that takes a few world minutes keeps its first STS session: the world puts a session
/// on its clock once (twice, an hour lasted a second, and every AWS call renewed it).
#[test]
fn a_short_start_keeps_its_first_sts_session() {
    let world = World::start(Options::default()).unwrap();
    let started = Step::mode("start").in_world(&world).run();
    started.success();
    assert_eq!(
        started
            .stderr
            .matches("renewed the AWS role's credentials")
            .count(),
        0,
        "{}",
        started.stderr
    );
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
    crate::support::nothing_left(&world);
}

/// An STS session lasts an hour (the world's AWS expires its credentials at their `Expiration`,
/// on the world's clock, and refuses them after with `ExpiredToken`), but a start may wait up to
/// two hours for its runner and then roll back. The old product kept its first credentials, so
/// the rollback after a long wait could not terminate the instance; now the credentials are
/// renewed with a fresh OIDC token before they expire.
#[test]
fn a_start_that_waits_past_the_sts_session_still_rolls_back() {
    let world = World::start(Options {
        runner: RunnerBehaviour::NeverOnline,
        // An hour passes in 15 s here.
        clock_scale: 240.0,
        ..Options::default()
    })
    .unwrap();
    let out = Step::mode("start")
        .in_world(&world)
        .input("startup-timeout-minutes", "70")
        .input("idle-timeout-minutes", "100")
        .input("max-lifetime-minutes", "200")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("did not come online within startup-timeout-minutes (70)")
            && error.contains("Rolled back: instance")
            && !error.contains("Left behind"),
        "{error}"
    );
    assert!(
        out.stderr.contains("renewed the AWS role's credentials"),
        "{}",
        out.stderr
    );
    crate::support::nothing_left(&world);
}
