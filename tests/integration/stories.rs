//! The main scenarios as a user reads them: the whole log each step prints and its job summary,
//! snapshotted (insta) with what changes from run to run (ids, the run id, label nonces, times,
//! durations, ports, masked values) redacted. A change in what users read shows up as a snapshot
//! diff to review, not as a fragment check that still passes.

use std::time::Duration;

use crate::support::{Outcome, Step, nothing_left};
use world::{Fault, Options, Service, World};

/// The log, summary and error as the runner shows them, with what varies redacted.
fn settings(world: &World) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path("snapshots");
    s.set_prepend_module_to_snapshot(false);
    // How many values are masked depends on how often credentials were renewed: masking is
    // checked by the secret scans, not here.
    s.add_filter(r"(?m)^::add-mask::.*\n", "");
    s.add_filter(r"::stop-commands::[0-9a-f]{32}", "::stop-commands::[token]");
    s.add_filter(r"(?m)^::[0-9a-f]{32}::$", "::[token]::");
    s.add_filter(r"SHA-256 [0-9a-f]{64}", "SHA-256 [sha256]");
    // The boot script has its own snapshot (src/boot/snapshots).
    s.add_filter(
        r"(?s)(::group::Boot script \(JIT config redacted\)\n).*?\n(::endgroup::)",
        "$1[the boot script]\n$2",
    );
    s.add_filter(r"failed \d+ times", "failed [n] times");
    // How long each boot phase took on this machine.
    s.add_filter(r" seconds=\d+\.\d\b", " seconds=[s]");
    // Whether and how often a wait prints its line every 15 s depends on how fast this machine
    // is: those lines are checked by cycle.rs.
    s.add_filter(
        r"(?m)^Waiting for i-\S+ \(.*\): \d+ s since launch, .*\n",
        "",
    );
    s.add_filter(r"\bi-[0-9a-f]{8,17}\b", "i-[id]");
    s.add_filter(r"\b(vpc|igw)-[0-9a-f]{8,17}\b", "$1-[id]");
    s.add_filter(
        r"gpu-runner-\d+-(\d+)-[0-9a-f]{8}",
        "gpu-runner-[run]-$1-[nonce]",
    );
    s.add_filter(&format!(r"\b{}\b", world.run_id), "[run]");
    s.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[time]");
    s.add_filter(r"\b\d+\.\d s\b", "[seconds] s");
    // How long a machine ran, and so its cost, on the world's clock: it depends on how fast this
    // machine runs the world.
    let ran = r"(?:\d+ h \d+ min|\d+ min(?: \d+ s)?|\d+ s)";
    s.add_filter(
        &format!(r"after {ran} \(≈ \$\d+\.\d\d"),
        "after [ran] (≈ $$[cost]",
    );
    s.add_filter(
        &format!(r"\| {ran} \| (\$[0-9.]+/h [^|]*)\| ≈ \$\d+\.\d\d \|"),
        "| [ran] | $1| ≈ $$[cost] |",
    );
    s.add_filter(r"Total ≈ \$\d+\.\d\d", "Total ≈ $$[cost]");
    s.add_filter(r"(127\.0\.0\.1|localhost):\d+", "$1:[port]");
    s.add_filter(r"/tmp/[^\s'\x22)]+", "[tmp]");
    s
}

/// The step's log (stdout) and summary, one after the other.
fn shown(out: &Outcome) -> String {
    format!(
        "── log ──\n{}\n── job summary ──\n{}",
        out.stdout.trim_end(),
        out.summary.trim_end()
    )
}

#[test]
fn a_gpu_job_from_start_to_stop() {
    let world = World::start(Options::default()).unwrap();
    let started = Step::mode("start").in_world(&world).run();
    started.success();
    let label = started.outputs()["label"].clone();
    let job = world.queue_job(&[&label], "nvidia-smi -L");
    let done = world.wait_until(Duration::from_secs(30), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(done, "the job never finished");
    // The machine ends itself after its one job, and GitHub removes the ephemeral runner.
    nothing_left(&world);
    let stopped = Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run();
    stopped.success();
    nothing_left(&world);
    settings(&world).bind(|| {
        insta::assert_snapshot!("start", shown(&started));
        insta::assert_snapshot!("stop", shown(&stopped));
    });
}

#[test]
fn a_stop_before_any_job() {
    let world = World::start(Options::default()).unwrap();
    let started = Step::mode("start").in_world(&world).run();
    started.success();
    let stopped = Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run();
    stopped.success();
    nothing_left(&world);
    settings(&world).bind(|| insta::assert_snapshot!("stop_before_any_job", shown(&stopped)));
}

#[test]
fn a_dry_run_shows_the_plan_and_proves_the_permissions() {
    let world = World::start(Options::default()).unwrap();
    let out = Step::mode("start")
        .in_world(&world)
        .input("dry-run", "true")
        .input("instance-types", "g5.xlarge, g4dn.xlarge")
        .run();
    out.success();
    assert!(world.instances().is_empty());
    settings(&world).bind(|| insta::assert_snapshot!("dry_run", shown(&out)));
}

#[test]
fn no_capacity_anywhere() {
    let world = World::start(Options::default()).unwrap();
    world.faults.inject(
        Service::Aws,
        "RunInstances",
        Fault::AwsError {
            code: "InsufficientInstanceCapacity",
            status: 500,
        },
        2,
    );
    let out = Step::mode("start")
        .in_world(&world)
        .input("instance-types", "g5.xlarge, g4dn.xlarge")
        .run();
    out.failure();
    nothing_left(&world);
    settings(&world).bind(|| insta::assert_snapshot!("no_capacity", shown(&out)));
}

#[test]
fn a_boot_that_fails_its_gpu_probe() {
    let world = World::start(Options {
        gpu: world::Gpu::NoDriver,
        ..Options::default()
    })
    .unwrap();
    let out = Step::mode("start").in_world(&world).run();
    out.failure();
    nothing_left(&world);
    settings(&world).bind(|| insta::assert_snapshot!("gpu_probe_failed", shown(&out)));
}
