//! The start → GPU job → stop cycle through the local world: moto for AWS, the fake GitHub and
//! OIDC service, and instances that run the real boot script in a sandbox.

use std::time::Duration;

use crate::support::{Outcome, Step, as_app, finished, nothing_left, seconds_of, terminated_row};
use world::{Gpu, Options, RunnerBehaviour, World};

fn world() -> World {
    World::start(Options::default()).expect("the local world starts")
}

fn start(world: &World) -> world::step::Step {
    Step::mode("start").in_world(world)
}

fn stop(world: &World) -> world::step::Step {
    Step::mode("stop").in_world(world)
}

/// Every secret the world issued appears only in the `::add-mask::` line that masks it, which the
/// runner consumes, and never before it, in stderr or in the runner's files.
#[track_caller]
fn no_secret_leaked(world: &World, outcomes: &[&Outcome]) {
    for secret in world.issued_secrets().iter().filter(|s| s.len() >= 8) {
        for out in outcomes {
            for (i, line) in out.stdout.lines().enumerate() {
                if line.contains(secret.as_str()) {
                    let masked_before = out
                        .stdout
                        .lines()
                        .take(i + 1)
                        .any(|l| l == format!("::add-mask::{secret}"));
                    assert!(
                        masked_before && line.starts_with("::add-mask::"),
                        "a secret leaked on stdout line {i}: {line}"
                    );
                }
            }
            for (name, text) in [
                ("stderr", &out.stderr),
                ("GITHUB_OUTPUT", &out.output_file),
                ("GITHUB_STATE", &out.state_file),
                ("GITHUB_STEP_SUMMARY", &out.summary),
            ] {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret leaked in {name}:\n{text}"
                );
            }
        }
    }
}

#[test]
fn a_gpu_job_runs_on_the_runner_and_nothing_is_left() {
    let world = world();
    let started = start(&world).input("instance-types", "g5.xlarge").run();
    started.success();
    let outputs = started.outputs();
    let label = outputs["label"].clone();
    assert!(label.starts_with(&format!("gpu-runner-{}-1-", world.run_id)));
    assert_eq!(outputs["labels"], format!("[\"{label}\"]"));
    assert_eq!(outputs["region"], "us-east-1");
    assert_eq!(outputs["instance-type"], "g5.xlarge");
    assert_eq!(outputs["market"], "on-demand");
    assert!(outputs["availability-zone"].starts_with("us-east-1"));
    let id = outputs["instance-id"].clone();
    assert_eq!(outputs["instance-ids"], format!("[\"{id}\"]"));
    // The whole summary and log are snapshotted in stories.rs; this one's price is g5's.
    assert!(
        started
            .summary
            .contains("| Hourly price | $1.006/h (on-demand list price in us-east-1) |"),
        "{}",
        started.summary
    );
    assert_eq!(started.state()["online"], "true");

    // The instance as launched: tags, IMDSv2 with hop limit 1, no key pair, the boot script.
    let instance = world
        .instances()
        .into_iter()
        .find(|i| i.instance_id() == Some(&id))
        .unwrap();
    let tag = |k: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(tag("gpu-runner:label").as_deref(), Some(label.as_str()));
    assert_eq!(tag("gpu-runner:repository").as_deref(), Some("octo/ml"));
    assert_eq!(tag("gpu-runner:run-id"), Some(world.run_id.to_string()));
    assert!(tag("gpu-runner:expires-at").is_some() && tag("gpu-runner:version").is_some());
    let metadata = instance.metadata_options().unwrap();
    assert_eq!(metadata.http_tokens().map(|t| t.as_str()), Some("required"));
    assert_eq!(metadata.http_put_response_hop_limit(), Some(1));
    assert_eq!(instance.key_name(), None);
    assert!(
        world
            .user_data(&id)
            .contains(&format!("readonly RUNNER_NAME='{label}'"))
    );

    // The runner user has passwordless sudo (runner-sudo defaults to true).
    assert_eq!(
        world
            .instance_file(&id, "etc/sudoers.d/90-gpu-runner")
            .as_deref(),
        Some("runner ALL=(ALL) NOPASSWD:ALL\n")
    );
    let user_data = world.dir.path().join(&id).join("user-data.sh");
    let job = world.queue_job(
        &[&label],
        &format!(
            "nvidia-smi && whoami && echo \"gpu=$GPU_RUNNER_GPU_NAME x$GPU_RUNNER_GPU_COUNT \
             cuda=$GPU_RUNNER_CUDA_VERSION\" && cat \"$GPU_RUNNER_GPU_JSON\" && \
             if [ -e '{}' ]; then echo user-data-on-disk; else echo user-data-gone; fi && \
             echo command-lines: && cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
            user_data.display()
        ),
    );
    let done = world.wait_until(Duration::from_secs(30), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    assert!(
        done,
        "the job never finished; console:\n{}",
        world.console(&id)
    );
    let job = world.job(job).unwrap();
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(
        job.output.contains("Tesla T4") && job.output.contains("runner\n"),
        "{}",
        job.output
    );
    assert_eq!(job.runner_name.as_deref(), Some(label.as_str()));
    // The JIT config is not on the instance's disk, nor on any process's command line.
    assert!(job.output.contains("user-data-gone\n"), "{}", job.output);
    // The scan saw the runner's own processes, so it would have seen a config passed as argument.
    assert!(job.output.contains("runuser -u runner"), "{}", job.output);
    for jit in world.github.lock().unwrap().issued_jit_configs.clone() {
        assert!(
            !job.output.contains(&jit),
            "a JIT config is readable:\n{}",
            job.output
        );
    }
    // The probe's findings reach the job: as variables and as a JSON file.
    assert!(
        job.output.contains("gpu=Tesla T4 x1 cuda=12.2\n"),
        "{}",
        job.output
    );
    assert!(
        job.output.contains(
            r#"{"name": "Tesla T4", "count": 1, "memory": "15360 MiB", "driver_version": "535.183.01", "cuda_version": "12.2"}"#
        ),
        "{}",
        job.output
    );
    // One job, then the instance ends itself.
    assert!(world.wait_until(Duration::from_secs(10), |w| w.live_instances().is_empty()));

    let stopped = stop(&world).outputs_of(&started).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains(&format!("| {id} | instance | already ended |"))
    );
    nothing_left(&world);

    // Stop is idempotent.
    let again = stop(&world).outputs_of(&started).run();
    again.success();
    assert!(again.summary.contains("already"));
    nothing_left(&world);
    no_secret_leaked(&world, &[&started, &stopped, &again]);
}

#[test]
fn stop_with_only_the_label_finds_the_instance_and_its_runner() {
    let world = world();
    let started = start(&world).input("runner-sudo", "false").run();
    started.success();
    let label = started.outputs()["label"].clone();
    let id = started.outputs()["instance-id"].clone();
    assert!(
        world
            .instance_log()
            .iter()
            .any(|l| l.contains("user=runner sudo=no")),
        "{:?}",
        world.instance_log()
    );
    assert_eq!(
        world.instance_file(&id, "etc/sudoers.d/90-gpu-runner"),
        None
    );
    assert_eq!(world.live_instances().len(), 1);
    assert_eq!(world.registered_runners().len(), 1);

    // Say the start job's instance-ids output was lost: the label is enough.
    let stopped = stop(&world)
        .input("label", &label)
        .input("region", "us-east-1")
        .run();
    stopped.success();
    let id = &started.outputs()["instance-id"];
    assert!(
        terminated_row(
            &stopped.summary,
            &format!("{id} | instance"),
            "$0.526/h (on-demand list price in us-east-1)"
        ),
        "{}",
        stopped.summary
    );
    assert!(
        stopped
            .summary
            .contains(&format!("| {label} | runner | removed |")),
        "{}",
        stopped.summary
    );
    nothing_left(&world);
    no_secret_leaked(&world, &[&started, &stopped]);
}

#[test]
fn a_gpu_without_a_driver_fails_start_with_the_probe_reason() {
    let world = World::start(Options {
        gpu: Gpu::NoDriver,
        ..Options::default()
    })
    .unwrap();
    let out = start(&world).run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.starts_with("::error title=The GPU runner did not come online::"),
        "{error}"
    );
    assert!(error.contains("phase=gpu-probe status=failed reason=\"nvidia-smi failed 24 times: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."), "{error}");
    assert!(
        error.contains("Rolled back: instance i-")
            && error.contains("runner gpu-runner-")
            && error.contains(" removed."),
        "{error}"
    );
    nothing_left(&world);
}

/// A GPU instance's driver loads during its boot, and the runner package is a download of its
/// own: the boot fetches the package while the GPU probe waits for the driver, not after it, and
/// every phase's console line says how long it took.
#[test]
fn the_runner_package_downloads_while_the_gpu_probe_waits_for_the_driver() {
    let world = World::start(Options {
        gpu: Gpu::Late {
            gpus: 1,
            after: Duration::from_secs(60),
        },
        ..Options::default()
    })
    .unwrap();
    let out = start(&world).run();
    out.success();
    let fetched = world.package_fetches.lock().unwrap().clone();
    let loads = world.driver_loads.lock().unwrap().clone();
    assert_eq!(
        (fetched.len(), loads.len()),
        (1, 1),
        "{fetched:?} {loads:?}"
    );
    assert!(
        fetched[0].at < loads[0].1,
        "the package was fetched {:?} after the driver loaded: the download waited for the probe",
        fetched[0].at.duration_since(loads[0].1).unwrap_or_default()
    );
    let console = world.instance_log.lock().unwrap().join("\n");
    let phases: Vec<_> = gpu_runner::boot::phases::phases(&console).collect();
    assert!(phases.len() >= 5, "{console}");
    for phase in &phases {
        let seconds = phase.get("seconds").unwrap_or_default();
        assert!(
            seconds.parse::<f64>().is_ok_and(|s| s >= 0.0),
            "{}: seconds={seconds:?}\n{console}",
            phase.name
        );
    }
    let probe = phases
        .iter()
        .find(|p| p.name == "gpu-probe")
        .expect("the probe's line");
    assert_eq!(probe.status(), Some("ok"), "{console}");
    let fetch = phases
        .iter()
        .find(|p| p.name == "runner-fetch")
        .expect("the fetch's line");
    assert_eq!(fetch.get("from"), Some("download"), "{console}");
    stop(&world)
        .input("label", &out.outputs()["label"])
        .input("instance-ids", &out.outputs()["instance-ids"])
        .run()
        .success();
    nothing_left(&world);
}

#[test]
fn too_few_gpus_fails_start_with_the_count() {
    let world = World::start(Options {
        gpu: Gpu::Healthy(1),
        ..Options::default()
    })
    .unwrap();
    let out = start(&world).input("instance-types", "g5.12xlarge").run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("nvidia-smi shows 1 GPU(s) but g5.12xlarge has 4"),
        "{error}"
    );
    nothing_left(&world);
}

#[test]
fn a_runner_that_never_comes_online_times_out_and_rolls_back() {
    let world = World::start(Options {
        runner: RunnerBehaviour::NeverOnline,
        ..Options::default()
    })
    .unwrap();
    let out = start(&world).input("startup-timeout-minutes", "1").run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("did not come online within startup-timeout-minutes (1)"),
        "{error}"
    );
    assert!(error.contains("phase=runner status=starting"), "{error}");
    assert!(error.contains("Rolled back: instance i-"), "{error}");
    // The outputs were written at launch, so a stop job would also have found the instance.
    assert!(out.outputs().contains_key("instance-id"));
    // The wait was never silent: about every 15 s, how long and where the boot is.
    let beats: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Waiting for i-") && l.contains(" s since launch, "))
        .collect();
    assert!(beats.len() >= 2, "{}", out.stdout);
    assert!(
        beats.last().is_some_and(
            |l| l.contains(" s since launch, running; last boot phase: runner status=starting")
        ),
        "{beats:?}"
    );
    // The job summary says what failed, the machine's last words and the fix, then what was
    // asked.
    for words in [
        "### GPU runner: start failed",
        "did not come online within startup-timeout-minutes (1)",
        "phase=runner status=starting",
        "What was asked:",
        "| Startup timeout | 1 min |",
    ] {
        assert!(out.summary.contains(words), "{words}: {}", out.summary);
    }
    nothing_left(&world);
}

#[test]
fn keep_on_failure_keeps_the_instance_and_says_how_to_remove_it() {
    let world = World::start(Options {
        runner: RunnerBehaviour::NeverOnline,
        ..Options::default()
    })
    .unwrap();
    let out = start(&world)
        .input("startup-timeout-minutes", "1")
        .input("keep-on-failure", "true")
        .run();
    out.failure();
    let error = out.errors().join("\n");
    assert!(
        error.contains("Left behind: kept i-") && error.contains("keep-on-failure"),
        "{error}"
    );
    assert_eq!(world.live_instances().len(), 1);
    assert_eq!(world.registered_runners(), []);
    let stopped = stop(&world).outputs_of(&out).run();
    stopped.success();
    nothing_left(&world);
}

#[test]
fn a_token_without_admin_rights_fails_before_anything_is_launched() {
    let world = world();
    let out = start(&world)
        .input("github-token", &world.weak_token.clone())
        .run();
    out.failure();
    assert_eq!(out.errors().len(), 1);
    let error = out.errors()[0];
    assert!(error.starts_with("::error title=GitHub%3A registering the runner failed::registering the runner failed (HTTP 403)"), "{error}");
    assert!(
        error.contains("needs Administration: read and write"),
        "{error}"
    );
    assert!(world.instances().is_empty(), "nothing may be launched");

    let out = start(&world)
        .input("github-token", &world.workflow_token.clone())
        .run();
    out.failure();
    assert!(
        out.errors()[0].contains("This looks like the workflow's own GITHUB_TOKEN"),
        "{}",
        out.errors()[0]
    );

    let out = start(&world)
        .input("github-token", "github_pat_wrong")
        .run();
    out.failure();
    assert!(
        out.errors()[0].contains("GitHub refused github-token (HTTP 401)"),
        "{}",
        out.errors()[0]
    );
    assert!(world.instances().is_empty());
    nothing_left(&world);
}

#[test]
fn without_id_token_permission_the_error_names_the_line_to_add() {
    let world = world();
    let out = start(&world)
        .unset("ACTIONS_ID_TOKEN_REQUEST_URL")
        .unset("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .run();
    out.failure();
    let error = out.errors()[0];
    assert!(
        error.starts_with("::error title=No AWS credentials::the job has no OIDC token"),
        "{error}"
    );
    assert!(
        error.contains("`permissions: { id-token: write, contents: read }`"),
        "{error}"
    );
    assert!(world.instances().is_empty());
    nothing_left(&world);
}

#[test]
fn dry_run_proves_permissions_and_launches_nothing() {
    let world = world();
    let out = start(&world)
        .input("dry-run", "true")
        .input("instance-types", "g5.xlarge\ng4dn.xlarge")
        .input("tags", "team: ml\nnote: ::error::pwned")
        .run();
    out.success();
    assert!(out.stdout.contains("::group::Plan"));
    assert!(
        out.stdout
            .contains("::group::Boot script (JIT config redacted)")
    );
    assert!(out.stdout.contains("readonly JIT_CONFIG='***'"));
    assert!(
        out.summary
            .contains("| 2 | g4dn.xlarge | default | on-demand |")
    );
    let notice = out.commands("notice").join("\n");
    assert!(
        notice.contains(
            "EC2 confirmed that the role may launch g5.xlarge in the default subnet (on-demand)"
        ),
        "{notice}"
    );
    assert!(out.outputs().is_empty() && out.state().is_empty());
    assert!(world.instances().is_empty(), "a dry run launches nothing");
    assert_eq!(world.registered_runners(), [], "and registers nothing");

    // The plan shows the tag, but it cannot act as a workflow command.
    let stop_at = out.stdout.find("::stop-commands::").unwrap();
    let token = out.stdout[stop_at + "::stop-commands::".len()..]
        .lines()
        .next()
        .unwrap();
    let resume = out.stdout.find(&format!("::{token}::")).unwrap();
    let pwned = out.stdout.find("::error::pwned").unwrap();
    assert!(stop_at < pwned && pwned < resume);
    no_secret_leaked(&world, &[&out]);
}

#[test]
fn run_by_hand_a_dry_run_reads_plainly() {
    let world = world();
    let out = start(&world).input("dry-run", "true").by_hand().run();
    out.success();
    // No workflow commands (the boot script shown may print some on the instance).
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("::")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("── Plan\nLabel              gpu-runner-")
    );
    assert!(
        out.stdout
            .contains("── job summary\n### GPU runner: dry run")
    );
    assert!(
        out.stdout
            .contains("Notice: GPU runner dry run: Dry run: nothing was launched")
    );
}

#[test]
fn logs_go_to_stderr_one_line_per_event_and_follow_the_debug_switch() {
    let world = world();
    let out = start(&world).input("dry-run", "true").run();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.contains(" INFO ") || l.contains(" WARN ")),
        "{}",
        out.stderr
    );
    assert!(lines.iter().any(|l| l.contains("planned the GPU runner")));
    assert!(lines.iter().any(|l| l.contains("assumed the AWS role")));

    let quiet = start(&world)
        .input("dry-run", "true")
        .env("GPU_RUNNER_LOG", "warn")
        .run();
    assert_eq!(quiet.stderr, "");
    let bad = start(&world)
        .input("dry-run", "true")
        .env("RUST_LOG", "gpu_runner=chatty")
        .run();
    assert!(
        bad.stderr
            .contains("RUST_LOG=\"gpu_runner=chatty\" is not a log filter")
    );
    let debug = start(&world)
        .input("dry-run", "true")
        .env("RUNNER_DEBUG", "1")
        .run();
    assert!(
        debug.stderr.contains(" DEBUG ") && debug.stderr.contains("read the job's OIDC token"),
        "{}",
        debug.stderr
    );
    no_secret_leaked(&world, &[&out, &debug]);
}

#[test]
fn the_post_step_rolls_back_a_start_that_never_finished() {
    let world = world();
    let label = "gpu-runner-1-1-cancelled";
    let id = world.leave_behind(label);
    assert_eq!(world.live_instances(), std::slice::from_ref(&id));
    let post = start(&world)
        .post()
        .env("STATE_label", label)
        .env("STATE_instance-ids", &format!("[\"{id}\"]"))
        .env("STATE_region", "us-east-1")
        .run();
    post.success();
    assert!(
        post.stdout.contains(&format!("instance {id}: terminated")),
        "{}",
        post.stdout
    );
    assert!(post.stdout.contains(&format!("runner {label}: removed")));
    nothing_left(&world);
}

#[test]
fn the_post_step_after_a_good_start_leaves_the_runner_to_the_job() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let post = start(&world).post().state_of(&started).run();
    post.success();
    assert_eq!(
        world.live_instances().len(),
        1,
        "the GPU job still needs it"
    );
    stop(&world).outputs_of(&started).run().success();
    nothing_left(&world);
}

#[test]
fn a_github_app_registers_and_removes_the_runner() {
    let world = world();
    let started = as_app(start(&world)).run();
    started.success();
    let label = started.outputs()["label"].clone();
    assert_eq!(world.registered_runners().len(), 1);
    let job = world.queue_job(&[&label], "nvidia-smi -L || nvidia-smi");
    assert!(world.wait_until(Duration::from_secs(30), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    }));
    let stopped = as_app(stop(&world)).outputs_of(&started).run();
    stopped.success();
    nothing_left(&world);
    let cleaned = as_app(Step::mode("cleanup").in_world(&world)).run();
    cleaned.success();
    // Each installation token is for this repository only, with what its mode needs: runners,
    // and for cleanup the workflow runs it reads and cancels.
    let runners = serde_json::json!({"repositories": ["ml"],
                                     "permissions": {"administration": "write"}});
    let cleanup = serde_json::json!({"repositories": ["ml"],
        "permissions": {"administration": "write", "actions": "write"}});
    assert_eq!(
        world.github.lock().unwrap().token_requests,
        [runners.clone(), runners, cleanup]
    );
    no_secret_leaked(&world, &[&started, &stopped, &cleaned]);
}

#[test]
fn app_problems_are_explained_before_anything_is_launched() {
    let world = world();
    let out = as_app(start(&world)).input("github-app-id", "999").run();
    out.failure();
    let error = out.errors()[0];
    assert!(error.starts_with("::error title=GitHub%3A authenticating as the GitHub App failed::authenticating as the GitHub App failed (HTTP 401): GitHub refused the app JWT."), "{error}");
    assert!(
        error.contains("Check that github-app-id is the ID of the App"),
        "{error}"
    );

    world.github.lock().unwrap().app_installed = false;
    let out = as_app(start(&world)).run();
    out.failure();
    let error = out.errors()[0];
    assert!(
        error.contains("the App is not installed on the repository octo/ml")
            && error.contains("Install App"),
        "{error}"
    );
    assert!(world.instances().is_empty());
    nothing_left(&world);
}

#[test]
fn a_github_failure_in_stop_still_terminates_the_instance() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let id = started.outputs()["instance-id"].clone();
    // Say the App was uninstalled between the jobs: GitHub is out of reach, the instance must go.
    world.github.lock().unwrap().app_installed = false;
    let stopped = as_app(stop(&world)).outputs_of(&started).run();
    stopped.failure();
    assert!(
        stopped.errors()[0].contains("the App is not installed on the repository octo/ml"),
        "{:?}",
        stopped.errors()
    );
    assert!(
        terminated_row(
            &stopped.summary,
            &format!("{id} | instance"),
            "$0.526/h (on-demand list price in us-east-1)"
        ),
        "{}",
        stopped.summary
    );
    assert!(
        stopped
            .summary
            .contains("| runner | could not reach GitHub |"),
        "{}",
        stopped.summary
    );
    assert!(world.wait_until(Duration::from_secs(10), |w| w.live_instances().is_empty()));
    // The runner is left to a stop that can reach GitHub.
    stop(&world).outputs_of(&started).run().success();
    nothing_left(&world);
}

/// actions/runner's `run-helper.sh` refuses root ("Must not run interactively with sudo") unless
/// `RUNNER_ALLOW_RUNASROOT` is set, and `run.sh` still exits 0: with the old boot script a
/// `runner-user: root` start never came online.
#[test]
fn runner_user_root_comes_online_and_runs_the_job() {
    let world = world();
    let started = start(&world).input("runner-user", "root").run();
    started.success();
    assert!(
        started
            .commands("warning")
            .iter()
            .any(|w| w.contains("runner-user is root")),
        "{}",
        started.stdout
    );
    let job = world.queue_job(&[&started.outputs()["label"]], "id -u");
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(job.output.contains("\n0\n"), "{}", job.output);
    stop(&world).outputs_of(&started).run().success();
    nothing_left(&world);
}

/// The Deep Learning AMI has Docker with its socket `root:docker 0660`: the runner user reaches it
/// through the docker group, which the old boot script did not give it, so every `container:` job
/// failed. Without the group (taken away by a pre-runner-script here) the job fails as the real
/// runner's does.
#[test]
fn a_container_job_reaches_docker_only_through_the_docker_group() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let id = started.outputs()["instance-id"].clone();
    assert!(
        world
            .console(&id)
            .contains("sudo=passwordless docker=group"),
        "{}",
        world.console(&id)
    );
    let job = world.queue_container_job(
        &[&started.outputs()["label"]],
        "nvidia/cuda:12.4.1-base-ubuntu22.04",
        "docker version && id -nG",
    );
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(
        job.output.contains("Server: Docker Engine") && job.output.contains("docker"),
        "{}",
        job.output
    );
    stop(&world).outputs_of(&started).run().success();

    let without = start(&world)
        .input("pre-runner-script", "gpasswd -d runner docker")
        .run();
    without.success();
    let job = world.queue_container_job(
        &[&without.outputs()["label"]],
        "nvidia/cuda:12.4.1-base-ubuntu22.04",
        "echo the-step-ran",
    );
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{}", job.output);
    assert!(
        job.output
            .contains("permission denied while trying to connect to the Docker daemon socket"),
        "{}",
        job.output
    );
    assert!(!job.output.contains("the-step-ran"), "{}", job.output);
    stop(&world).outputs_of(&without).run().success();
    nothing_left(&world);
}

/// The stand-in runner package behaves like actions/runner's: as root without
/// `RUNNER_ALLOW_RUNASROOT` it refuses with the real message and `run.sh` exits 0; a job-started
/// hook that exits non-zero fails the job, its plain steps are skipped, and its `if: always()` and
/// `if: failure()` steps still run (the hook is an `always()` pre-job step, JobExtension.cs).
#[test]
fn the_runner_package_refuses_root_and_still_runs_always_steps_after_a_failing_hook() {
    let world = world();
    let limit = Duration::from_secs(20);
    let (code, out) = world.run_runner_package(&["standalone"], &[], limit);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Must not run interactively with sudo"),
        "{out}"
    );
    assert!(
        world
            .registered_runners()
            .iter()
            .all(|r| r.status == "offline"),
        "a refused runner never connects"
    );

    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, "echo refusing this job; exit 3\n").unwrap();
    let canary = |name: &str| dir.path().join(name);
    let job = world.queue_job(&["hooked"], "");
    world.set_steps(
        job,
        vec![
            world::github::JobStep::run(&format!("touch '{}'", canary("step").display())),
            world::github::JobStep::always(&format!("touch '{}'", canary("always").display())),
            world::github::JobStep::on_failure(&format!("touch '{}'", canary("failure").display())),
            world::github::JobStep::on_cancel(&format!(
                "touch '{}'",
                canary("cancelled").display()
            )),
        ],
    );
    let (code, out) = world.run_runner_package(
        &["hooked"],
        &[
            ("RUNNER_ALLOW_RUNASROOT", "1"),
            ("ACTIONS_RUNNER_HOOK_JOB_STARTED", hook.to_str().unwrap()),
        ],
        limit,
    );
    assert_eq!(code, Some(0), "{out}");
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("failure"), "{}", job.output);
    assert!(
        job.output.contains("refusing this job")
            && job.output.contains("Process completed with exit code 3"),
        "{}",
        job.output
    );
    assert!(
        !canary("step").exists(),
        "a plain step ran after the hook failed"
    );
    assert!(!canary("cancelled").exists(), "a cancelled() step ran");
    assert!(canary("always").exists(), "the always() step did not run");
    assert!(canary("failure").exists(), "the failure() step did not run");
}

/// GitHub gives a JIT runner its default labels (`self-hosted`, `Linux`, `X64`) beside the custom
/// ones, shows them read-only in the API, and hands the runner the oldest queued job whose
/// `runs-on` its labels cover: a job that asks only for `self-hosted` gets the GPU runner.
#[test]
fn github_hands_any_job_the_runners_labels_cover_defaults_included() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let label = started.outputs()["label"].clone();
    let runner = world
        .registered_runners()
        .into_iter()
        .find(|r| r.name == label)
        .unwrap();
    assert_eq!(
        runner.all_labels(),
        ["self-hosted", "Linux", "X64", label.as_str()]
    );
    let broad = world.queue_job(&["self-hosted", "linux"], "echo any-self-hosted-job");
    let gpu = world.queue_job(&[&label], "echo the-gpu-job");
    let broad = finished(&world, broad, Duration::from_secs(30));
    assert_eq!(broad.runner_name.as_deref(), Some(label.as_str()));
    assert_eq!(world.job(gpu).map(|j| j.status), Some("queued"));
    // The JIT config GitHub hands out is a few KB, as real ones are.
    let jit = world.github.lock().unwrap().issued_jit_configs[0].len();
    assert!(jit > 2048, "{jit} bytes");
    world.github.lock().unwrap().cancel_run(world.run_id);
    stop(&world).outputs_of(&started).run().success();
    nothing_left(&world);
}

/// EC2 takes at most 16 KB of user data (raw); the world's AWS refuses more, as EC2 does. Start
/// (and its dry run) checks the boot script before it registers anything and says how much of it
/// pre-runner-script is; the old product registered the runner, then had RunInstances refused.
#[test]
fn a_boot_script_over_ec2s_user_data_limit_is_refused_before_anything_is_registered() {
    let world = world();
    // Lines a compressor cannot shrink much (user data travels gzip-compressed): 400 hashes.
    let line = |n: u32| {
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(n.to_le_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("echo {hash}\n")
    };
    let script: String = (0..400).map(line).collect();
    for dry in ["false", "true"] {
        let out = start(&world)
            .input("pre-runner-script", &script)
            .input("dry-run", dry)
            .run();
        out.failure();
        let error = &out.errors()[0];
        assert!(
            error.contains("title=Boot script too large for EC2")
                && error.contains(
                    "bytes gzip-compressed, and EC2 takes at most 16384 bytes of user data"
                )
                && error.contains("pre-runner-script makes up")
                && error.contains("Shorten pre-runner-script by at least"),
            "{error}"
        );
        assert_eq!(world.registered_runners(), [], "dry-run {dry}");
        assert!(world.instances().is_empty(), "dry-run {dry}");
    }
    // A script that fits runs as before.
    let fits: String = (0..60).map(line).collect();
    let fits = start(&world).input("pre-runner-script", &fits).run();
    fits.success();
    stop(&world).outputs_of(&fits).run().success();
    nothing_left(&world);
}

/// GitHub refuses to delete a runner that is running a job (422, "... is still running a job")
/// until it notices the machine is gone. Stop terminates the instance first, so it waits for
/// that and then removes the runner; the old product failed the stop with the 422.
#[test]
fn stop_during_a_job_waits_until_github_lets_go_of_the_busy_runner() {
    let world = world();
    let started = start(&world).run();
    started.success();
    let label = started.outputs()["label"].clone();
    let job = world.queue_job(&[&label], "sleep 3600");
    assert!(world.wait_until(Duration::from_secs(20), |w| {
        w.job(job).is_some_and(|j| j.status == "in_progress")
    }));
    let stopped = stop(&world).outputs_of(&started).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains(&format!("| {label} | runner | removed |")),
        "{}",
        stopped.summary
    );
    assert!(world.github.lock().unwrap().refused_busy_deletes >= 1);
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("failure"));
    nothing_left(&world);
}

/// Without `role-to-assume` and without credentials in the environment, the SDK finds none: the
/// error says so and names the two ways to give them, instead of the SDK's debug dump.
#[test]
fn without_any_aws_credentials_the_error_says_how_to_give_them() {
    let world = world();
    let out = start(&world).input("role-to-assume", "").run();
    out.failure();
    let errors = out.errors().join("\n");
    assert!(
        errors.contains("no AWS credentials were found")
            && errors.contains("set role-to-assume to an IAM role")
            && errors.contains("set AWS credentials in the environment"),
        "{errors}"
    );
    for dump in ["DispatchFailure", "ConnectorError", "{ ", "Some("] {
        assert!(
            !errors.contains(dump),
            "a Debug dump reached the user: {errors}"
        );
    }
    assert_eq!(world.registered_runners(), []);
    nothing_left(&world);
}

/// Dry-run looks at the way out of each subnet: a public one and one behind a NAT gateway reach
/// GitHub; one without a route to the internet, or without public addresses, gets a warning with
/// its fix, and a start with no way out at all fails, as does one with no default VPC and no
/// subnet-ids.
#[test]
fn a_dry_run_says_which_subnets_reach_github_and_fails_without_a_way_out() {
    let world = World::start(Options::default()).unwrap();
    let subnets = world.subnets();
    let dry = |subnet_ids: &str| {
        let step = start(&world).input("dry-run", "true");
        if subnet_ids.is_empty() {
            step.run()
        } else {
            step.input("subnet-ids", subnet_ids).run()
        }
    };
    let by_default = dry("");
    by_default.success();
    assert!(
        by_default.stdout.contains("Network: the default VPC vpc-")
            && by_default.stdout.contains("reaches GitHub through igw-"),
        "{}",
        by_default.stdout
    );

    let mixed = dry(&format!(
        "{}, {}, {}",
        subnets.public, subnets.nat, subnets.private
    ));
    mixed.success();
    assert!(
        mixed.stdout.contains(&format!(
            "Network: {} reaches GitHub through {}",
            subnets.nat, subnets.nat_gateway
        )),
        "{}",
        mixed.stdout
    );
    let warnings = mixed.commands("warning").join("\n");
    assert!(
        warnings.contains(&format!(
            "{} has no route to the internet (0.0.0.0/0 in {})",
            subnets.private, subnets.private_route_table
        )) && warnings.contains(&format!(
            "aws ec2 create-route --route-table-id {} --destination-cidr-block 0.0.0.0/0",
            subnets.private_route_table
        )),
        "{warnings}"
    );

    let none = dry(&format!(
        "{}, {}",
        subnets.private, subnets.no_public_address
    ));
    none.failure();
    let error = none.errors().join("\n");
    for words in [
        "title=The runner could not reach GitHub",
        "No subnet of this start lets the runner reach GitHub",
        &format!(
            "aws ec2 modify-subnet-attribute --subnet-id {} --map-public-ip-on-launch",
            subnets.no_public_address
        ),
    ] {
        assert!(error.contains(words), "{words}: {error}");
    }

    nothing_left(&world);

    // An account whose default VPC was deleted.
    let world = World::start(Options::default()).unwrap();
    world.delete_default_vpc();
    let no_vpc = start(&world).input("dry-run", "true").run();
    no_vpc.failure();
    let error = no_vpc.errors().join("\n");
    assert!(
        error.contains("The account has no default VPC in us-east-1")
            && error.contains("aws ec2 create-default-vpc --region us-east-1"),
        "{error}"
    );
    nothing_left(&world);
}

/// A GPU in MIG mode has no utilization to give (nvidia-smi shows `[N/A]`): the job's summary
/// says so, and neither it nor stop calls the GPU idle, since its memory shows it was used.
#[test]
fn a_gpu_that_reports_no_utilization_is_not_called_idle() {
    let world = world();
    world.set_mig_gpu_load(9216);
    let started = start(&world).run();
    started.success();
    let job = world.queue_job(&[&started.outputs()["label"]], "sleep 120; echo trained");
    let job = finished(&world, job, Duration::from_secs(30));
    assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
    assert!(
        job.summary
            .contains("| 0 | not reported | not reported | 9.0 of 15.0 GiB | not reported |")
            && job.summary.contains("nvidia-smi reports no utilization")
            && job.summary.contains("Peak GPU memory 9.0 of 15.0 GiB")
            && !job.summary.contains("idle for the whole job"),
        "{}",
        job.summary
    );
    let stopped = stop(&world).outputs_of(&started).run();
    stopped.success();
    assert!(
        stopped
            .summary
            .contains("| utilization not reported; 9.0 of 15.0 GiB |")
            && !stopped.summary.contains("idle the whole job"),
        "{}",
        stopped.summary
    );
    nothing_left(&world);
}

/// What the GPU job used of its GPU: the job-started hook samples nvidia-smi while the job runs,
/// and the job-completed hook (a post-job step with the runner's file commands) puts a table in
/// the job's own summary and one line on the console. An idle GPU is said plainly. Stop's summary
/// adds up what the run's machines cost, with what each job used, and names a cheaper GPU type
/// when a job's peak would have fitted one (never from an idle GPU).
#[test]
fn the_gpu_jobs_summary_says_what_it_used_of_the_gpu() {
    let world = world();
    let run = |instance_type: &str, market: &str, script: &str| {
        let started = start(&world)
            .input("instance-types", instance_type)
            .input("market-type", market)
            .run();
        started.success();
        let id = started.outputs()["instance-id"].clone();
        let job = world.queue_job(&[&started.outputs()["label"]], script);
        let job = finished(&world, job, Duration::from_secs(30));
        assert_eq!(job.conclusion.as_deref(), Some("success"), "{}", job.output);
        assert!(
            job.output.contains(
                "A job completed hook has been configured by the self-hosted runner administrator"
            ),
            "{}",
            job.output
        );
        let stopped = stop(&world).outputs_of(&started).run();
        stopped.success();
        let console = world.console(&id);
        (started, job, console, stopped)
    };

    let (idle_start, idle, _, stopped) = run("g4dn.xlarge", "on-demand", "echo no GPU here");
    let idle_id = &idle_start.outputs()["instance-id"];
    assert!(
        idle.summary
            .contains("The GPU was idle for the whole job: did the job use it?"),
        "{}",
        idle.summary
    );
    assert!(
        stopped
            .summary
            .contains("#### What the run's GPU machines cost")
            && stopped
                .summary
                .contains(&format!("| {idle_id} | g4dn.xlarge |"))
            && stopped.summary.contains("| idle the whole job |")
            && !stopped.summary.contains("would have held it"),
        "{}",
        stopped.summary
    );

    world.set_gpu_load(40, 3072);
    let (busy_start, busy, console, stopped) =
        run("g5.xlarge", "on-demand", "sleep 120; echo trained");
    let id = &busy_start.outputs()["instance-id"];
    assert!(
        busy.summary.contains("### GPU usage")
            && busy
                .summary
                .contains("| 0 | 40 % | 40 % | 3.0 of 15.0 GiB | 0 % of the job |")
            && busy.summary.contains("Peak GPU memory 3.0 of 15.0 GiB")
            && busy.summary.contains(
                "on 1 GPU(s); at $1.006/h (on-demand list price in us-east-1) the machine cost ≈ $"
            ),
        "{}",
        busy.summary
    );
    assert!(
        console.contains(
            "phase=gpu-usage gpus=1 peak_utilization=40 mean_utilization=40 \
             peak_memory_mib=3072 memory_mib=15360 job_seconds="
        ),
        "{console}"
    );
    // Every machine of the run, this one's job's use, the total and the hint.
    let summary = &stopped.summary;
    // The machine ran at least as long as its job: both on the user's clock (the world's runs
    // faster, and AWS's timestamps are wall-clock ones).
    let job_seconds: u64 = console
        .split("job_seconds=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no job_seconds in {console}"));
    assert!(
        ran_seconds(summary, id) >= job_seconds,
        "ran less than its job's {job_seconds} s: {summary}"
    );
    assert!(
        summary.contains(&format!("| {id} | g5.xlarge |"))
            && summary.contains(&format!("| {idle_id} | g4dn.xlarge |"))
            && summary.contains("40 % peak, 40 % mean; 3.0 of 15.0 GiB")
            && summary.contains("Total ≈ $")
            && summary.contains(&format!(
                "The job on {id} peaked at 3.0 GiB of GPU memory: g4dn.xlarge (T4, 16 GiB, \
                 $0.526/h)"
            )),
        "{summary}"
    );

    // A spot instance's job is priced at the spot price of the zone EC2 placed it in: each zone
    // has its own.
    for (n, zone) in ["a", "b", "c", "d", "e", "f"].iter().enumerate() {
        world.spot_prices.lock().unwrap().insert(
            ("g5.xlarge".to_owned(), format!("us-east-1{zone}")),
            0.41 + n as f64 / 100.0,
        );
    }
    let (spot_start, spot, _, stopped) = run("g5.xlarge", "spot", "sleep 120; echo trained");
    assert_eq!(spot_start.outputs()["market"], "spot");
    let zone = &spot_start.outputs()["availability-zone"];
    let price = world.spot_prices.lock().unwrap()[&("g5.xlarge".to_owned(), zone.clone())];
    assert!(
        spot.summary.contains(&format!(
            "on 1 GPU(s); at ${price}/h (spot price in {zone} at launch) the machine cost ≈ $"
        )),
        "{}",
        spot.summary
    );
    assert!(
        stopped
            .summary
            .contains(&format!("${price:.3}/h (current spot price in {zone})")),
        "{}",
        stopped.summary
    );
    nothing_left(&world);
}

/// The time stop's summary says a machine ran ("45 s", "2 min 8 s", "1 h 3 min"), in seconds.
fn ran_seconds(summary: &str, id: &str) -> u64 {
    let costs = summary
        .split("#### What the run's GPU machines cost")
        .nth(1)
        .unwrap_or_else(|| panic!("no costs in {summary}"));
    let row = costs
        .lines()
        .find(|l| l.starts_with(&format!("| {id} |")))
        .unwrap_or_else(|| panic!("no row of {id} in {summary}"));
    let ran = row.split('|').nth(3).unwrap_or_default();
    seconds_of(ran).unwrap_or_else(|| panic!("not a time: {ran:?}"))
}
