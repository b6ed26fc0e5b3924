//! Attached machines: `gpu-runner attach` on a machine the user already has serves queued jobs
//! one at a time, each with a fresh just-in-time runner and a wiped work folder, judges every
//! job in the runner's job-started hook, checks the GPU between jobs, and leaves no runner
//! registered however it ends. The world runs it in the instance sandbox, without EC2.

use std::time::Duration;

use crate::support::finished;
use world::attached::Attached;
use world::{Options, World};

fn world() -> World {
    World::start(Options::default()).expect("the local world starts")
}

fn attach(world: &World, flags: &[&str]) -> Attached {
    world.attach(env!("CARGO_BIN_EXE_gpu-runner"), &world.admin_token, flags)
}

/// A job that fails when the work folder holds anything a job before it left, then leaves a file.
const CHECKS_THE_WORKSPACE: &str = r#"left="$(ls -A)"
if [ -n "$left" ]; then echo "left over from an earlier job: $left"; exit 1; fi
echo checkout > checkout.txt
echo "gpu=$GPU_RUNNER_GPU_NAME user=$(id -un)"
nvidia-smi --query-gpu=name --format=csv,noheader
env | sort
# attach is the machine's first process: its environment holds the token.
tr '\0' '\n' < /proc/1/environ || echo "attach's environment is not readable"
true"#;

/// Waits for attach to end with `code`; what it printed.
#[track_caller]
fn ends(machine: &mut Attached, code: i32) -> String {
    let ended = machine.wait(Duration::from_secs(90));
    let output = machine.output();
    assert_eq!(ended, Some(code), "{output}");
    output
}

/// attach printed `text`.
#[track_caller]
fn says(machine: &Attached, text: &str) {
    let output = machine.output();
    assert!(output.contains(text), "{output}");
}

/// Waits until attach's first runner waits for a job.
#[track_caller]
fn waiting(machine: &Attached) {
    assert!(
        machine.wait_for("waiting for a job", Duration::from_secs(30)),
        "{}",
        machine.output()
    );
}

/// Waits until attach says its first job started.
#[track_caller]
fn job_started(machine: &Attached) {
    assert!(
        machine.wait_for("▶ job 1", Duration::from_secs(30)),
        "{}",
        machine.output()
    );
}

#[track_caller]
fn no_runner_left(world: &World) {
    assert_eq!(world.registered_runners(), [], "runners still registered");
}

#[test]
fn three_queued_jobs_run_one_at_a_time_each_on_its_own_runner_in_a_wiped_work_folder() {
    let world = world();
    let jobs: Vec<u64> = (0..3)
        .map(|_| world.queue_job(&["self-hosted", "gpu"], CHECKS_THE_WORKSPACE))
        .collect();
    let mut machine = attach(&world, &["--labels", "gpu", "--jobs", "3"]);
    let output = ends(&mut machine, 0);
    let mut runners = Vec::new();
    for id in jobs {
        let job = finished(&world, id, Duration::from_secs(1));
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
        assert!(
            job.output.contains("gpu=Tesla T4 user=runner"),
            "{}",
            job.output
        );
        assert!(job.output.contains("phase=job-accepted"), "{}", job.output);
        assert!(
            job.output.contains("attach's environment is not readable"),
            "{}",
            job.output
        );
        assert!(
            !job.output.contains(&world.admin_token),
            "the token reached a job"
        );
        runners.push(job.runner_name.expect("a runner"));
    }
    runners.sort();
    runners.dedup();
    assert_eq!(runners.len(), 3, "each job had its own runner: {runners:?}");
    assert!(
        output.contains("GPU: 1 × Tesla T4 (15360 MiB), driver 535.183.01, CUDA 12.2"),
        "{output}"
    );
    assert!(output.contains("✓ job 3: octo/ml · gpu.yml"), "{output}");
    assert!(
        output.contains("Done: 3 job(s) served, 0 refused") && output.contains("--jobs 3 served"),
        "{output}"
    );
    // The runner's folder, with every job's checkout, is gone from the disk.
    assert!(
        !machine.exists("var/lib/gpu-runner-attach/runner"),
        "{output}"
    );
    no_runner_left(&world);
    for secret in world.issued_secrets() {
        assert!(!output.contains(&secret), "a secret was printed");
    }
}

#[test]
fn with_jobs_1_it_serves_one_job_and_leaves_the_next_queued() {
    let world = world();
    let first = world.queue_job(&["self-hosted", "gpu"], "echo one");
    let second = world.queue_job(&["self-hosted", "gpu"], "echo two");
    let mut machine = attach(&world, &["--labels", "gpu", "--jobs", "1"]);
    ends(&mut machine, 0);
    assert_eq!(
        finished(&world, first, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    assert_eq!(world.job(second).map(|j| j.status), Some("queued"));
    says(&machine, "Done: 1 job(s) served");
    no_runner_left(&world);
}

#[test]
fn with_no_job_the_idle_timeout_ends_it_and_removes_its_runner() {
    let world = world();
    // 10 minutes at the world's clock: 10 seconds.
    let mut machine = attach(&world, &["--idle-timeout", "10m"]);
    waiting(&machine);
    assert_eq!(
        world.registered_runners().len(),
        1,
        "its runner waits for a job"
    );
    let output = ends(&mut machine, 0);
    assert!(
        output.contains("Done: 0 job(s) served, 0 refused")
            && output.contains("no job started for 10m 0s (--idle-timeout)"),
        "{output}"
    );
    no_runner_left(&world);
}

#[test]
fn sigterm_while_idle_ends_it_at_once_with_no_runner_left() {
    let world = world();
    let mut machine = attach(&world, &[]);
    waiting(&machine);
    machine.signal("TERM");
    ends(&mut machine, 0);
    says(&machine, "SIGTERM received");
    no_runner_left(&world);
}

#[test]
fn sigterm_while_a_job_runs_lets_it_finish_within_the_grace_period() {
    let world = world();
    // Jobs sleep at the world's clock: two minutes.
    let job = world.queue_job(&["self-hosted"], "sleep 120; echo finished");
    let mut machine = attach(&world, &["--grace", "5m"]);
    job_started(&machine);
    machine.signal("TERM");
    ends(&mut machine, 0);
    let job = finished(&world, job, Duration::from_secs(1));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    let output = machine.output();
    assert!(output.contains("ending after the running job"), "{output}");
    assert!(output.contains("Done: 1 job(s) served"), "{output}");
    no_runner_left(&world);
}

#[test]
fn a_job_that_outlasts_the_grace_period_is_cancelled_and_its_runner_removed() {
    let world = world();
    let job = world.queue_job(&["self-hosted"], "sleep 3600; echo never");
    let mut machine = attach(&world, &["--grace", "1m"]);
    job_started(&machine);
    machine.signal("TERM");
    ends(&mut machine, 0);
    let job = finished(&world, job, Duration::from_secs(1));
    assert_eq!(
        job.conclusion.as_deref(),
        Some("cancelled"),
        "{}",
        job.output
    );
    assert!(
        job.output
            .contains("The runner has received a shutdown signal"),
        "{}",
        job.output
    );
    says(&machine, "The grace period is over");
    // The listener ended its session and kept its registration: attach deleted it.
    no_runner_left(&world);
}

#[test]
fn a_gpu_lost_between_jobs_ends_it_before_the_next_job() {
    let world = world();
    let first = world.queue_job(&["self-hosted"], "sleep 120; echo first");
    let second = world.queue_job(&["self-hosted"], "echo second");
    let mut machine = attach(&world, &[]);
    job_started(&machine);
    machine.lose_gpu();
    ends(&mut machine, 1);
    assert_eq!(
        finished(&world, first, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    let output = machine.output();
    assert!(
        output.contains("The GPU is gone")
            && output.contains("nvidia-smi failed 3 times: NVIDIA-SMI has failed"),
        "{output}"
    );
    assert_eq!(world.job(second).map(|j| j.status), Some("queued"));
    no_runner_left(&world);
}

#[test]
fn a_forks_pull_request_job_is_refused_by_the_hook_before_any_step_runs() {
    let world = world();
    let payload = serde_json::json!({
        "pull_request": {
            "number": 7,
            "head": {"sha": "abc", "repo": {"full_name": "eve/ml", "fork": true}},
            "user": {"login": "eve"},
            "author_association": "FIRST_TIME_CONTRIBUTOR",
        },
        "repository": {"full_name": "octo/ml", "private": false},
    });
    let fork = world.queue_job_of_event("pull_request", payload, &["self-hosted"], "");
    world.set_steps(fork, world::hostile_steps());
    let ours = world.queue_job(&["self-hosted"], "echo ours");
    let mut machine = attach(&world, &["--jobs", "1"]);
    ends(&mut machine, 0);
    let refused = finished(&world, fork, Duration::from_secs(1));
    assert_eq!(refused.conclusion.as_deref(), Some("failure"));
    // attach ends the job's worker before the hook hears the verdict: the job's log says what
    // happens, attach's log says why.
    assert!(
        refused
            .output
            .contains("gpu-runner attach judges this job before any of its steps runs"),
        "{}",
        refused.output
    );
    assert!(
        !refused.output.contains("CANARY"),
        "a step ran: {}",
        refused.output
    );
    for canary in world::CANARIES {
        assert!(!machine.exists(canary), "the fork's step left {canary}");
    }
    says(
        &machine,
        "the pull_request event carries a pull request from the fork eve/ml",
    );
    assert_eq!(
        finished(&world, ours, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    let output = machine.output();
    assert!(output.contains("✗ refused a job of octo/ml"), "{output}");
    assert!(
        output.contains("Done: 1 job(s) served, 1 refused"),
        "{output}"
    );
    no_runner_left(&world);
}

#[test]
fn a_bad_token_is_named_before_anything_is_registered() {
    let world = world();
    let mut machine = world.attach(env!("CARGO_BIN_EXE_gpu-runner"), "github_pat_wrong", &[]);
    let output = ends(&mut machine, 1);
    assert!(
        output.contains("GitHub refused the token (HTTP 401): it is expired, revoked or mistyped"),
        "{output}"
    );
    assert!(
        !output.contains("github_pat_wrong"),
        "the token was printed"
    );
    no_runner_left(&world);
    assert!(
        world.package_fetches.lock().unwrap().is_empty(),
        "nothing was downloaded"
    );
}

#[test]
fn a_token_without_administration_is_named_before_anything_is_registered() {
    let world = world();
    let mut machine = world.attach(env!("CARGO_BIN_EXE_gpu-runner"), &world.weak_token, &[]);
    let output = ends(&mut machine, 1);
    assert!(
        output.contains("The token may not manage the self-hosted runners of octo/ml: a fine-grained token needs Administration: read and write on octo/ml"),
        "{output}"
    );
    no_runner_left(&world);
}

#[test]
fn bad_flags_are_all_named_with_their_fix_and_nothing_starts() {
    let world = world();
    let mut machine = attach(&world, &["--jobs", "many", "--gpus", "0"]);
    let output = ends(&mut machine, 1);
    assert!(
        output.contains("--jobs is \"many\", which is not a whole number"),
        "{output}"
    );
    assert!(
        output.contains("--gpus is \"0\", outside 1 to 64 GPUs"),
        "{output}"
    );
    no_runner_left(&world);
}

#[test]
fn a_start_for_an_attached_machine_waits_for_it_then_the_job_runs_there_and_stop_does_nothing() {
    let world = world();
    let mut machine = attach(&world, &["--labels", "gpu-a10"]);
    waiting(&machine);
    let start = crate::support::Step::start()
        .in_world(&world)
        .input("machine", "attached")
        .input("labels", "gpu-a10")
        .run();
    start.success();
    let outputs = start.outputs();
    assert_eq!(outputs["label"], "gpu-a10");
    assert!(
        outputs["runner-names"].contains(&machine.name),
        "{outputs:?}"
    );
    assert!(
        start.summary.contains("An attached GPU machine is ready"),
        "{}",
        start.summary
    );
    // No AWS input is read: the world's role and region are named as having no effect.
    assert!(
        start
            .stdout
            .contains("role-to-assume has no effect with machine: attached"),
        "{}",
        start.stdout
    );
    let job = world.queue_job(&["self-hosted", &outputs["label"]], "nvidia-smi");
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    let stop = crate::support::Step::mode("stop")
        .input("machine", "attached")
        .run();
    stop.success();
    assert!(
        stop.stdout.contains("machine: attached: nothing to stop"),
        "{}",
        stop.stdout
    );
    machine.signal("TERM");
    ends(&mut machine, 0);
    no_runner_left(&world);
}

#[test]
fn a_start_for_an_attached_machine_fails_fast_when_none_is_attached() {
    let world = world();
    // A minute at the world's clock.
    let start = crate::support::Step::start()
        .in_world(&world)
        .input("machine", "attached")
        .input("labels", "gpu-a10")
        .input("startup-timeout-minutes", "1")
        .run();
    start.failure();
    let errors = start.errors().join("\n");
    assert!(
        errors.contains(
            "no machine with the labels gpu-a10 was attached (online and idle) within 1 min"
        ) && errors.contains("gpu-runner attach --repo octo/ml --labels gpu-a10"),
        "{errors}"
    );
    assert!(world.live_instances().is_empty(), "nothing was launched");
}

#[test]
fn a_comment_runs_only_when_its_author_has_write_access_as_github_says() {
    let world = world();
    {
        let mut gh = world.github.lock().unwrap();
        gh.collaborators.insert("alice".into(), "write".into());
        gh.collaborators.insert("mallory".into(), "read".into());
    }
    let comment = |login: &str| {
        serde_json::json!({
            "issue": {"number": 7, "pull_request": {}},
            "comment": {"user": {"login": login}, "author_association": "MEMBER"},
        })
    };
    let refused = world.queue_job_of_event(
        "issue_comment",
        comment("mallory"),
        &["self-hosted"],
        "echo ran",
    );
    let accepted = world.queue_job_of_event(
        "issue_comment",
        comment("alice"),
        &["self-hosted"],
        "echo ran",
    );
    let mut machine = attach(&world, &["--jobs", "1"]);
    ends(&mut machine, 0);
    let refused = finished(&world, refused, Duration::from_secs(1));
    assert_eq!(refused.conclusion.as_deref(), Some("failure"));
    assert!(!refused.output.contains("ran"), "{}", refused.output);
    says(
        &machine,
        "the comment's author mallory has read permission on octo/ml",
    );
    let accepted = finished(&world, accepted, Duration::from_secs(1));
    assert_eq!(
        accepted.conclusion.as_deref(),
        Some("success"),
        "{}",
        accepted.output
    );
    assert!(
        accepted
            .output
            .contains("alice, who wrote the comment, has write permission"),
        "{}",
        accepted.output
    );
    no_runner_left(&world);
}

#[test]
fn what_a_job_leaves_running_is_killed_before_the_next_job() {
    let world = world();
    // Out of the runner's process group, as a daemon would be; an odd duration to find it by.
    let first = world.queue_job(
        &["self-hosted"],
        "setsid /usr/bin/sleep 3599.25 > /dev/null 2>&1 < /dev/null & echo left a daemon",
    );
    let second = world.queue_job(
        &["self-hosted"],
        "if pgrep -f 'sleep 3599[.]25' > /dev/null; then echo 'the last job left a daemon running'; exit 1; fi",
    );
    let mut machine = attach(&world, &["--jobs", "2"]);
    ends(&mut machine, 0);
    assert_eq!(
        finished(&world, first, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    let second = finished(&world, second, Duration::from_secs(1));
    assert_eq!(
        second.conclusion.as_deref(),
        Some("success"),
        "{}",
        second.output
    );
}

#[test]
fn at_the_max_lifetime_the_running_job_finishes_within_its_grace_then_it_ends() {
    let world = world();
    // Five minutes of the world's clock, past a two-minute lifetime.
    let job = world.queue_job(&["self-hosted"], "sleep 300; echo finished");
    let next = world.queue_job(&["self-hosted"], "echo never");
    let mut machine = attach(
        &world,
        &[
            "--max-lifetime",
            "2m",
            "--idle-timeout",
            "1m",
            "--grace",
            "10m",
        ],
    );
    let output = ends(&mut machine, 0);
    assert!(
        output.contains("Max lifetime reached: the running job has 10m 0s to finish"),
        "{output}"
    );
    assert!(
        output.contains("the max lifetime of 2m 0s was reached"),
        "{output}"
    );
    assert_eq!(
        finished(&world, job, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    assert_eq!(world.job(next).map(|j| j.status), Some("queued"));
    no_runner_left(&world);
}

#[test]
fn without_the_gpus_it_asks_for_it_refuses_to_start_unless_no_gpu() {
    let world = world();
    let bin = env!("CARGO_BIN_EXE_gpu-runner");
    let mut machine = world.attach_with_gpu(bin, &world.admin_token, "no-driver 0", &[]);
    let output = ends(&mut machine, 1);
    assert!(
        output.contains("No usable GPU: nvidia-smi failed 3 times: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"),
        "{output}"
    );
    let mut machine = world.attach_with_gpu(bin, &world.admin_token, "healthy 1", &["--gpus", "2"]);
    ends(&mut machine, 1);
    says(&machine, "nvidia-smi shows 1 GPU(s) but --gpus asks for 2");
    assert!(
        world.registered_runners().is_empty(),
        "a runner was registered"
    );
    assert!(
        world.package_fetches.lock().unwrap().is_empty(),
        "the runner was downloaded"
    );
    let job = world.queue_job(&["self-hosted"], "echo on a CPU");
    let mut machine = world.attach_with_gpu(
        bin,
        &world.admin_token,
        "no-driver 0",
        &["--no-gpu", "--jobs", "1"],
    );
    ends(&mut machine, 0);
    says(&machine, "GPU: not checked (--no-gpu)");
    assert_eq!(
        finished(&world, job, Duration::from_secs(1))
            .conclusion
            .as_deref(),
        Some("success")
    );
    no_runner_left(&world);
}

/// A CUDA program's first act: load the driver's library, by the name CUDA's runtime uses.
const LOADS_CUDA: &str =
    "python3 -c \"import ctypes; ctypes.CDLL('libcuda.so.1').cuInit(0); print('libcuda loads')\"";

/// Colab keeps the driver's libcuda.so.1 in /usr/lib64-nvidia, which only the notebook's
/// LD_LIBRARY_PATH names: nvidia-smi works without it, CUDA does not. A job gets the
/// LD_LIBRARY_PATH attach was started with, so CUDA loads in it as in the notebook.
#[test]
fn on_colab_a_jobs_cuda_loads_through_the_notebooks_ld_library_path() {
    let world = world();
    let job = world.queue_job(&["self-hosted"], LOADS_CUDA);
    let mut machine = world.attach_on_colab(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &world.admin_token,
        true,
        &["--jobs", "1"],
    );
    ends(&mut machine, 0);
    let job = finished(&world, job, Duration::from_secs(1));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(job.output.contains("libcuda loads"), "{}", job.output);
    no_runner_left(&world);
}

/// Started without that LD_LIBRARY_PATH, nvidia-smi still works, but no job could load CUDA:
/// attach stops at its GPU check, names the library and the folder, and registers nothing.
#[test]
fn on_colab_without_its_ld_library_path_attach_stops_at_the_gpu_check_and_names_the_folder() {
    let world = world();
    let mut machine = world.attach_on_colab(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &world.admin_token,
        false,
        &["--jobs", "1"],
    );
    let output = ends(&mut machine, 1);
    for words in [
        "No usable GPU: nvidia-smi works, but the CUDA driver library libcuda.so.1 does not load",
        "LD_LIBRARY_PATH",
        "/usr/lib64-nvidia",
        "troubleshooting.md#no-usable-gpu",
    ] {
        assert!(output.contains(words), "{words}: {output}");
    }
    no_runner_left(&world);
}

#[test]
fn a_runner_package_with_another_hash_is_never_run() {
    let world = world();
    let wrong = "0".repeat(64);
    let mut machine = attach(&world, &["--runner-sha256", &wrong]);
    let output = ends(&mut machine, 1);
    assert!(
        output.contains(&format!("expected {wrong}")) && output.contains(&world.runner_sha256),
        "{output}"
    );
    assert!(output.contains("do not run it"), "{output}");
    no_runner_left(&world);
}

#[test]
fn on_a_public_repository_a_loose_fork_policy_is_named_and_allow_untrusted_is_refused() {
    let world = world();
    world.github.lock().unwrap().public = true;
    let mut machine = attach(&world, &["--allow-untrusted"]);
    ends(&mut machine, 1);
    says(
        &machine,
        "--allow-untrusted with the public repository octo/ml: anyone's pull request could run its code on this machine",
    );
    assert!(
        world.registered_runners().is_empty(),
        "a runner was registered"
    );
    let mut machine = attach(&world, &["--jobs", "1"]);
    waiting(&machine);
    let output = machine.output();
    assert!(
        output.contains("Fork pull requests run without approval")
            && output
                .contains("fork pull request workflows without approval (first_time_contributors)"),
        "{output}"
    );
    machine.signal("INT");
    ends(&mut machine, 0);
    says(&machine, "SIGINT received");
    no_runner_left(&world);
}

#[test]
fn a_github_app_serves_too_with_a_token_minted_for_each_runner_and_masked() {
    let world = world();
    let job = world.queue_job(&["self-hosted"], "echo on the App runner");
    let mut machine = world.attach_as_app(env!("CARGO_BIN_EXE_gpu-runner"), &["--jobs", "1"]);
    let output = ends(&mut machine, 0);
    let job = finished(&world, job, Duration::from_secs(1));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    let gh = world.github.lock().unwrap();
    // One for the check at start, one to register the runner, one to remove it; each for this
    // repository only.
    assert!(
        gh.issued_installation_tokens.len() >= 3,
        "{:?}",
        gh.token_requests
    );
    assert!(
        gh.token_requests
            .iter()
            .all(|r| r["repositories"] == serde_json::json!(["ml"])),
        "{:?}",
        gh.token_requests
    );
    for token in &gh.issued_installation_tokens {
        assert!(
            !output.contains(token.as_str()),
            "an installation token was printed"
        );
    }
    assert!(!output.contains("PRIVATE KEY"), "the App key was printed");
    drop(gh);
    no_runner_left(&world);
}

/// An organization's default runner group that lets public repositories use it serves anyone's
/// pull request to them: `--allow-untrusted` is refused for it as for a public repository, and
/// allowed once the group serves private repositories only.
#[test]
fn for_an_organization_whose_runner_group_serves_public_repositories_allow_untrusted_is_refused() {
    let world = world();
    let token = world.org_admin_token.clone();
    world.github.lock().unwrap().groups[0].allows_public_repositories = true;
    let mut machine = world.attach_org(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &token,
        &["--allow-untrusted"],
    );
    ends(&mut machine, 1);
    says(
        &machine,
        "--allow-untrusted with the organization octo: its default runner group \"Default\" lets public repositories use it",
    );
    assert!(
        world.registered_runners().is_empty(),
        "a runner was registered"
    );

    world.github.lock().unwrap().groups[0].allows_public_repositories = false;
    let mut machine = world.attach_org(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &token,
        &["--allow-untrusted", "--jobs", "1"],
    );
    waiting(&machine);
    machine.signal("INT");
    ends(&mut machine, 0);
    no_runner_left(&world);
}

/// A job cancelled while attach still judges it (here GitHub is slow to say whether the
/// comment's author may approve): the runner would cancel the hook and then run the job's
/// `if: always()` steps. The hook ends the job's worker instead, so none of its steps runs.
#[test]
fn a_job_cancelled_while_attach_judges_it_runs_no_step() {
    let world = world();
    world
        .github
        .lock()
        .unwrap()
        .collaborators
        .insert("alice".into(), "write".into());
    world.faults.inject(
        world::faults::Service::Github,
        "collaborator-permission",
        world::faults::Fault::Slow(Duration::from_secs(8)),
        1,
    );
    let comment = serde_json::json!({
        "issue": {"number": 7, "pull_request": {}},
        "comment": {"user": {"login": "alice"}, "author_association": "MEMBER"},
    });
    let job = world.queue_job_of_event("issue_comment", comment, &["self-hosted"], "");
    world.set_steps(job, world::hostile_steps());
    let mut machine = attach(&world, &[]);
    assert!(
        world.wait_until(Duration::from_secs(30), |w| w
            .job(job)
            .is_some_and(|j| j.status == "in_progress")),
        "{}",
        machine.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    world.cancel_job(job);
    let done = finished(&world, job, Duration::from_secs(30));
    assert_ne!(
        done.conclusion.as_deref(),
        Some("success"),
        "{}",
        done.output
    );
    assert!(
        !done.output.contains("CANARY"),
        "a step ran: {}",
        done.output
    );
    for canary in world::CANARIES {
        assert!(!machine.exists(canary), "the job's step left {canary}");
    }
    assert!(
        machine.wait_for("it ended while attach judged it", Duration::from_secs(30)),
        "{}",
        machine.output()
    );
    machine.signal("INT");
    ends(&mut machine, 0);
    no_runner_left(&world);
}

/// Docker is root on the machine: the job user attach makes is in the docker group only with
/// `--docker`, and attach warns then that a job can become root.
#[test]
fn the_job_user_gets_the_docker_group_only_with_docker_and_attach_warns() {
    let world = world();
    for docker in [false, true] {
        let job = world.queue_job(&["self-hosted"], "echo \"groups: $(id -nG)\"");
        let flags: &[&str] = if docker {
            &["--docker", "--jobs", "1"]
        } else {
            &["--jobs", "1"]
        };
        let mut machine = world.attach_prepared(
            env!("CARGO_BIN_EXE_gpu-runner"),
            &world.admin_token,
            "groupadd -f docker",
            flags,
        );
        let output = ends(&mut machine, 0);
        let job = finished(&world, job, Duration::from_secs(1));
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
        let groups = job
            .output
            .lines()
            .find_map(|l| l.strip_prefix("groups: "))
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            groups.split_whitespace().any(|g| g == "docker"),
            docker,
            "--docker {docker}: {groups}"
        );
        assert_eq!(
            output.contains("Jobs can become root through Docker"),
            docker,
            "{output}"
        );
        no_runner_left(&world);
    }
}

/// attach run by a user that is not root runs jobs as that same user, which may read the memory
/// and environment of its own processes: attach hides both (it is not dumpable, as ssh-agent
/// makes itself), so a job finds the token in no process and cannot read attach's memory.
#[test]
fn as_a_plain_user_attach_keeps_its_token_from_the_jobs_it_runs_as_that_user() {
    const PEEK: &str = "echo \"user=$(id -un)\"; \
        echo \"TOKENS $(cat /proc/[0-9]*/environ 2> /dev/null | tr '\\0' '\\n' \
        | grep -c '^GITHUB_TOKEN=github_pat_admin' || true)\"; \
        for pid in $(pgrep -x gpu-runner); do \
          if head -c 1 /proc/$pid/environ > /dev/null 2>&1; then echo \"READ environ of $pid\"; fi; \
          start=$(head -n 1 /proc/$pid/maps 2> /dev/null | cut -d- -f1 || true); \
          if [ -n \"$start\" ] && dd if=/proc/$pid/mem bs=1 count=1 skip=$((0x$start)) \
            > /dev/null 2>&1; then \
            echo \"READ mem of $pid\"; fi; \
        done; echo PEEKED";
    let world = world();
    let peek = world.queue_job(&["self-hosted"], PEEK);
    let mut machine = world.attach_prepared(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &world.admin_token,
        "useradd --create-home alice && export HOME=/home/alice && \
         exec setpriv --reuid alice --regid alice --init-groups \"$@\"",
        &["--jobs", "1"],
    );
    let output = ends(&mut machine, 0);
    assert!(output.contains("Jobs run as attach's own user"), "{output}");
    let peek = finished(&world, peek, Duration::from_secs(1));
    assert!(peek.output.contains("user=alice"), "{}", peek.output);
    assert!(peek.output.contains("PEEKED"), "{}", peek.output);
    assert!(peek.output.contains("TOKENS 0"), "{}", peek.output);
    assert!(!peek.output.contains("READ "), "{}", peek.output);
    no_runner_left(&world);
}

/// What a job leaves as its user, beyond its process group: a process it detached, a crontab, files
/// in `/tmp` and `/var/tmp`, and its dotfiles (and it finds attach's token in no process's
/// environment it can read). The next job finds none of it as the user attach
/// made for jobs; as a user that was there before attach, it finds that user's crontab as it was
/// before the job, its files from before, and its home as the job left it.
#[test]
fn the_next_job_finds_nothing_the_last_one_left_as_its_user() {
    const PLANT: &str = "setsid /usr/bin/sleep 3599.5 > /dev/null 2>&1 < /dev/null & \
        echo '* * * * * touch /tmp/cron-ran' | crontab - && echo 'touch /tmp/at-ran' | at now + 1 hour && \
        touch /tmp/left-in-tmp /var/tmp/left-in-var-tmp ~/.left-in-home && \
        mkdir -p /tmp/left-folder/deeper && touch /tmp/left-folder/deeper/file && \
        echo \"TOKENS $(cat /proc/[0-9]*/environ 2> /dev/null | tr '\\0' '\\n' \
        | grep -c '^GITHUB_TOKEN=github_pat_admin' || true)\" && echo PLANTED";
    const LOOK: &str = "if pgrep -f 'sleep 3599[.]5' > /dev/null; then echo FOUND daemon; fi; \
        crontab -l 2> /dev/null | sed 's/^/CRONTAB /' || true; at -l | sed 's/^/FOUND at job /'; \
        for f in /tmp/left-in-tmp /var/tmp/left-in-var-tmp ~/.left-in-home /tmp/left-folder \
        /tmp/kept-from-before; do if [ -e \"$f\" ]; then echo \"FOUND $f\"; fi; done; \
        echo LOOKED";
    for user in [None, Some("ci-user")] {
        let world = world();
        let plant = world.queue_job(&["self-hosted"], PLANT);
        let look = world.queue_job(&["self-hosted"], LOOK);
        // cron's spool, and for the second round a user of the machine's own with a crontab and
        // a file from before attach.
        let mut prepare = "mkdir -p /var/spool/cron/crontabs /var/spool/cron/atjobs && \
                           chmod 1733 /var/spool/cron/crontabs && \
                           chmod 1777 /var/spool/cron/atjobs"
            .to_owned();
        let mut flags = vec!["--jobs", "2"];
        if let Some(user) = user {
            prepare.push_str(&format!(
                " && useradd --create-home {user} && \
                 echo '0 3 * * * echo nightly' > /var/spool/cron/crontabs/{user} && \
                 chown {user} /var/spool/cron/crontabs/{user} && \
                 touch /tmp/kept-from-before && chown {user} /tmp/kept-from-before"
            ));
            flags.extend(["--user", user]);
        }
        let mut machine = world.attach_prepared(
            env!("CARGO_BIN_EXE_gpu-runner"),
            &world.admin_token,
            &prepare,
            &flags,
        );
        let output = ends(&mut machine, 0);
        let plant = finished(&world, plant, Duration::from_secs(1));
        assert!(plant.output.contains("PLANTED"), "{}", plant.output);
        // attach's GitHub token is in attach's environment, which the job's user cannot read.
        assert!(plant.output.contains("TOKENS 0"), "{}", plant.output);
        let look = finished(&world, look, Duration::from_secs(1));
        assert!(look.output.contains("LOOKED"), "{}", look.output);
        let found: Vec<&str> = look
            .output
            .lines()
            .filter(|l| l.contains("FOUND") || l.contains("CRONTAB"))
            .collect();
        let expected: Vec<&str> = match user {
            None => Vec::new(),
            // The user's own: its crontab as before, its file from before the job, and its home,
            // which attach never empties (attach says so at start).
            Some(_) => vec![
                "CRONTAB 0 3 * * * echo nightly",
                "FOUND /home/ci-user/.left-in-home",
                "FOUND /tmp/kept-from-before",
            ],
        };
        assert_eq!(
            found.iter().map(|l| l.trim()).collect::<Vec<_>>(),
            expected,
            "{user:?}: {}",
            look.output
        );
        assert!(
            output.contains("Cleared what the job left as"),
            "{user:?}: {output}"
        );
    }
}

/// With `--docker` a job can leave containers (one Docker restarts forever) and volumes: attach
/// removes the ones made during the job, and leaves the machine's own.
#[test]
fn with_docker_the_containers_and_volumes_a_job_made_go_and_the_machines_own_stay() {
    let world = world();
    let plant = world.queue_job(
        &["self-hosted"],
        "docker run -d --restart=always alpine sleep infinity && docker volume create loot",
    );
    let look = world.queue_job(
        &["self-hosted"],
        "echo \"containers: $(docker ps -aq | wc -l) volumes: $(docker volume ls -q | wc -l)\"",
    );
    let mut machine = world.attach_prepared(
        env!("CARGO_BIN_EXE_gpu-runner"),
        &world.admin_token,
        // A machine with Docker, running a container of its owner's.
        "dlami-image && docker run -d --name owners alpine sleep infinity > /dev/null",
        &["--docker", "--jobs", "2"],
    );
    let output = ends(&mut machine, 0);
    let plant = finished(&world, plant, Duration::from_secs(1));
    assert_eq!(
        plant.conclusion.as_deref(),
        Some("success"),
        "{}",
        plant.output
    );
    let look = finished(&world, look, Duration::from_secs(1));
    assert!(
        look.output.contains("containers: 1 volumes: 0"),
        "{}",
        look.output
    );
    assert!(
        output.contains("1 Docker container(s), 1 Docker volume(s)"),
        "{output}"
    );
}

/// A start for an attached machine judges the trigger as a start for EC2 does: a fork's pull
/// request is skipped, green, with nothing waited for (and with on-untrusted: fail, refused).
#[test]
fn a_start_for_an_attached_machine_skips_a_forks_pull_request() {
    let world = world();
    let fork = serde_json::json!({
        "pull_request": {
            "number": 7,
            "head": {"sha": "abc", "repo": {"full_name": "stranger/ml", "fork": true}},
            "user": {"login": "stranger"},
            "author_association": "NONE"
        },
        "repository": {"full_name": "octo/ml", "private": true}
    });
    let start = || {
        crate::support::Step::start()
            .in_world(&world)
            .input("machine", "attached")
            .input("labels", "gpu-a10")
            .envs(&world.triggered_by("pull_request_target", &fork))
    };
    let skipped = start().run();
    skipped.success();
    assert_eq!(
        skipped.outputs().get("skipped").map(String::as_str),
        Some("true")
    );
    assert!(
        skipped
            .commands("notice")
            .join("\n")
            .contains("from the fork stranger/ml"),
        "{}",
        skipped.stdout
    );
    let refused = start().input("on-untrusted", "fail").run();
    refused.failure();
    assert!(
        refused
            .errors()
            .join("\n")
            .contains("from the fork stranger/ml"),
        "{:?}",
        refused.errors()
    );
    no_runner_left(&world);
}

/// What each job used of the machine's GPU: attach's own hooks sample it as an instance's do,
/// the job's summary gets the table, and attach says it after the job.
#[test]
fn each_job_says_what_it_used_of_the_gpu() {
    let world = world();
    world.set_gpu_load(55, 8192);
    let job = world.queue_job(&["self-hosted", "gpu"], "sleep 90; echo trained");
    let mut machine = attach(&world, &["--labels", "gpu", "--jobs", "1"]);
    ends(&mut machine, 0);
    let job = finished(&world, job, Duration::from_secs(1));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(
        job.summary
            .contains("| 0 | 55 % | 55 % | 8.0 of 15.0 GiB | 0 % of the job |"),
        "{}",
        job.summary
    );
    says(&machine, "GPU use: 55 % peak, 55 % mean; 8.0 of 15.0 GiB");
    no_runner_left(&world);
}
