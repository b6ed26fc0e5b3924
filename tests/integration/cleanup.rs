//! `mode: cleanup`, the janitor of a scheduled workflow, against the local world: it removes what
//! gpu-runner left behind, says why for each, and never touches anything else.

use std::time::Duration;

use crate::support::{Step, terminated_row};
use world::{Options, World};

#[test]
fn cleanup_removes_only_what_gpu_runner_left_and_says_why() {
    let world = World::start(Options::default()).unwrap();
    // A healthy start, waiting for its GPU job: must survive.
    let started = Step::mode("start").in_world(&world).run();
    started.success();
    let live_label = started.outputs()["label"].clone();
    let live_id = started.outputs()["instance-id"].clone();

    // Left behind by gpu-runner: an instance past its expires-at, an offline runner of a finished
    // run, and a run whose job waits for a label no instance serves.
    let expired = world.launch_tagged(&[
        ("gpu-runner:label", "gpu-runner-11-1-expired"),
        ("gpu-runner:repository", "octo/ml"),
        ("gpu-runner:expires-at", "2026-01-01T00:00:00Z"),
    ]);
    world.offline_runner("gpu-runner-12-1-gone");
    let stuck_run = 555;
    let stuck_job = {
        let mut gh = world.github.lock().unwrap();
        let id = gh.queue_job(stuck_run, vec!["gpu-runner-555-1-lost".to_owned()], "true");
        let job = gh.jobs.iter_mut().find(|j| j.id == id).unwrap();
        job.created_at = chrono::Utc::now() - chrono::TimeDelta::minutes(45);
        id
    };
    // Not gpu-runner's: an instance without its tags and someone's own offline runner.
    let foreign = world.launch_tagged(&[("Name", "build-box")]);
    world.offline_runner("build-box");

    let dry = Step::mode("cleanup")
        .in_world(&world)
        .input("dry-run", "true")
        .run();
    dry.success();
    assert!(
        dry.summary.starts_with("### GPU runner: cleanup (dry run)"),
        "{}",
        dry.summary
    );
    assert_eq!(
        dry.summary.matches("| would do (dry run) |").count(),
        3,
        "{}",
        dry.summary
    );
    assert_eq!(world.live_instances().len(), 3, "a dry run changes nothing");
    assert_eq!(world.registered_runners().len(), 3);

    let out = Step::mode("cleanup").in_world(&world).run();
    out.success();
    let summary = &out.summary;
    for row in [
        "| remove runner | gpu-runner-12-1-gone | offline, its run 12 is over and no instance serves it | removed |".to_owned(),
        format!(
            "| cancel workflow run | {stuck_run} | its job \"test\" has waited 45 min (queued-timeout-minutes: 30) for gpu-runner-555-1-lost, which no instance or runner serves | cancelled |"
        ),
    ] {
        assert!(summary.contains(&row), "missing {row}\n{summary}");
    }
    assert!(
        terminated_row(
            summary,
            &format!("terminate instance | {expired} | past its expires-at (2026-01-01T00:00:00Z)"),
            "$0.526/h (on-demand list price in us-east-1)"
        ),
        "{summary}"
    );
    assert!(
        world.wait_until(Duration::from_secs(5), |w| {
            let mut live = w.live_instances();
            live.sort();
            let mut want = vec![live_id.clone(), foreign.clone()];
            want.sort();
            live == want
        }),
        "{:?}",
        world.live_instances()
    );
    let mut runners: Vec<String> = world
        .registered_runners()
        .into_iter()
        .map(|r| r.name)
        .collect();
    runners.sort();
    assert_eq!(runners, ["build-box", live_label.as_str()]);
    assert_eq!(
        world.job(stuck_job).unwrap().conclusion.as_deref(),
        Some("cancelled")
    );

    // A second run finds nothing more to do.
    let again = Step::mode("cleanup").in_world(&world).run();
    again.success();
    assert!(
        again.summary.contains("Nothing to clean up."),
        "{}",
        again.summary
    );
    Step::mode("stop")
        .in_world(&world)
        .outputs_of(&started)
        .run()
        .success();
}

#[test]
fn cleanup_needs_a_region_and_says_which_inputs_are_its_own() {
    let out = Step::mode("cleanup")
        .input("github-token", crate::support::TOKEN)
        .input("max-age-minutes", "5")
        .input("instance-types", "g5.xlarge")
        .run();
    out.failure();
    let errors = out.errors().join("\n");
    assert!(errors.contains("Missing input%3A aws-region"), "{errors}");
    assert!(errors.contains("max-age-minutes is \"5\""), "{errors}");
}

/// Workflow runs and jobs need the Actions permission, not Administration (GitHub's REST docs for
/// "List workflow runs", "List jobs for a workflow run" and "Cancel a workflow run"): a token made
/// for runners only gets GitHub's 403 there, and the hint names Actions (the old product named
/// Administration, which the token has).
#[test]
fn a_token_without_actions_permission_is_told_to_add_it() {
    let world = World::start(Options::default()).unwrap();
    let out = Step::mode("cleanup")
        .in_world(&world)
        .input("github-token", &world.runners_only_token)
        .run();
    out.failure();
    let errors = out.errors().join("\n");
    assert!(
        errors.contains("Resource not accessible by personal access token")
            && errors.contains("that takes the Actions permission")
            && errors.contains("Add Actions: read and write"),
        "{errors}"
    );
    assert!(!errors.contains("it needs Administration"), "{errors}");
    // What it could judge without runs it still judged: the runners, by the time rules.
    assert!(
        out.summary.contains("self-hosted runner(s) of octo/ml"),
        "{}",
        out.summary
    );
}

/// Two repositories share one AWS account. One's janitor, however short its max-age-minutes, and
/// one's stop, even handed the other's instance id, never end the other's GPU jobs.
#[test]
fn one_repositorys_cleanup_and_stop_never_touch_anothers_instances() {
    let world = World::start(Options::default()).unwrap();
    let theirs = world.launch_tagged(&[
        ("gpu-runner:label", "gpu-runner-31-1-web"),
        ("gpu-runner:repository", "octo/web"),
        ("gpu-runner:expires-at", "2026-01-01T00:00:00Z"),
    ]);
    let ours = world.launch_tagged(&[
        ("gpu-runner:label", "gpu-runner-32-1-ml"),
        ("gpu-runner:repository", "octo/ml"),
        ("gpu-runner:expires-at", "2026-01-01T00:00:00Z"),
    ]);
    let out = Step::mode("cleanup")
        .in_world(&world)
        .input("max-age-minutes", "10")
        .run();
    out.success();
    assert!(
        out.summary.contains(&format!(
            "| terminate instance | {ours} | past its expires-at"
        )),
        "{}",
        out.summary
    );
    assert!(!out.summary.contains(&theirs), "{}", out.summary);
    assert_eq!(world.live_instances(), std::slice::from_ref(&theirs));

    let stopped = Step::stop()
        .in_world(&world)
        .input("instance-ids", &theirs)
        .input("region", &world.region)
        .run();
    stopped.success();
    assert!(
        stopped.summary.contains(&format!(
            "| {theirs} | instance | left alone: it was launched for octo/web |"
        )),
        "{}",
        stopped.summary
    );
    assert_eq!(world.live_instances(), [theirs]);
}

/// A job's name is the workflow author's, a stranger's too: in the summary it is text (no link,
/// no image), and in the log it cannot act as a workflow command.
#[test]
fn a_hostile_job_name_stays_text_in_the_summary_and_the_log() {
    let world = World::start(Options::default()).unwrap();
    {
        let mut gh = world.github.lock().unwrap();
        let id = gh.queue_job(556, vec!["gpu-runner-556-1-lost".to_owned()], "true");
        let job = gh.jobs.iter_mut().find(|j| j.id == id).unwrap();
        job.created_at = chrono::Utc::now() - chrono::TimeDelta::minutes(45);
        job.name = "[free GPUs](https://evil.example) <img src=x>\n::add-mask::visible".to_owned();
    }
    let out = Step::mode("cleanup").in_world(&world).run();
    out.success();
    assert!(
        out.summary.contains(
            "its job \"\\[free GPUs\\](https://evil.example) \\<img src=x\\> ::add-mask::visible\""
        ),
        "{}",
        out.summary
    );
    // The one line that would read as a command is inside stop-commands.
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("::add-mask::visible"))
        .expect("the job's name is in the log");
    let stop = lines[..at]
        .iter()
        .rposition(|l| l.starts_with("::stop-commands::"))
        .expect("inside stop-commands");
    let token = lines[stop].trim_start_matches("::stop-commands::");
    assert!(
        lines[at..].iter().any(|l| *l == format!("::{token}::")),
        "{}",
        out.stdout
    );
}

/// A start that died between writing its JIT config to SSM and saving anything (or whose stop
/// never ran) leaves the parameter: cleanup deletes it once no live instance serves its runner,
/// and leaves another repository's alone.
#[test]
fn cleanup_deletes_a_jit_config_no_instance_will_read_and_only_this_repositorys() {
    let world = World::start(Options::default()).expect("the local world starts");
    let lost = "/gpu-runner/jit/octo/ml/gpu-runner-41-1-deadbeef";
    let theirs = "/gpu-runner/jit/octo/web/gpu-runner-42-1-deadbeef";
    let arn = format!(
        "arn:aws:ec2:us-east-1:{}:instance/i-0123456789abcdef0",
        world.account
    );
    world.put_jit_parameter(lost, &arn);
    world.put_jit_parameter(theirs, &arn);
    // Past the two minutes of the world's clock that cleanup leaves a config just written (its
    // instance may not be listed yet; `src/modes/cleanup.rs` tests that rule).
    std::thread::sleep(Duration::from_secs(3));
    let cleanup = Step::mode("cleanup").in_world(&world).run();
    cleanup.success();
    assert!(
        cleanup.summary.contains(&format!(
            "| delete parameter | {lost} | a JIT config no live instance will read (its runner \
             gpu-runner-41-1-deadbeef has none) | deleted |"
        )),
        "{}",
        cleanup.summary
    );
    assert_eq!(world.jit_parameters(), [theirs]);
}
