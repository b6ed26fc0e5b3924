//! `cargo run -p world -- demo`: the whole start → GPU job → stop cycle through the local world,
//! printed as a user would see it in the GitHub log; `demo --pool`: the same twice with a warm
//! pool, the second start resuming the first one's instance and disk; `demo --attach`: a machine
//! the user already has serving three queued jobs with `gpu-runner attach`; `demo --kubernetes`:
//! start → GPU job in a pod → stop on a real Kubernetes API server and scheduler.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use world::step::Step;
use world::{Options, World, log, matrix};

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("demo") if std::env::args().nth(2).as_deref() == Some("--pool") => match demo_pool() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some("demo") if std::env::args().nth(2).as_deref() == Some("--attach") => {
            match demo_attach() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("demo") if std::env::args().nth(2).as_deref() == Some("--kubernetes") => {
            match demo_kubernetes() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("demo") if std::env::args().nth(2).as_deref() == Some("--picture") => {
            match std::env::args().nth(3) {
                Some(path) => match demo(Some(Path::new(&path))) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("demo failed: {e}");
                        ExitCode::FAILURE
                    }
                },
                None => {
                    eprintln!("usage: cargo run -p world -- demo --picture PATH.svg");
                    ExitCode::from(2)
                }
            }
        }
        Some("demo") => match demo(None) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some("bench") => match bench() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some("sampler-cost") => match sampler_cost() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sampler-cost: {e}");
                ExitCode::FAILURE
            }
        },
        Some("faults") => match faults(std::env::args().nth(2).as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("faults: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo run -p world -- demo [--pool | --attach | --kubernetes | --picture PATH.svg] | faults [part of a scenario's name] | bench [--runs N] | sampler-cost [--seconds N]"
            );
            ExitCode::from(2)
        }
    }
}

/// Builds the real gpu-runner binary, as the action's image would contain it.
fn gpu_runner() -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    // `cargo run` adds variables that some build scripts watch; building with them would
    // invalidate the user's own build each time. Build with the user's environment instead.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "RUST_RECURSION_COUNT",
                "RUSTUP_TOOLCHAIN_SOURCE",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let own: Vec<_> = std::env::split_paths(&paths)
            .filter(|p| {
                !p.components()
                    .any(|c| c.as_os_str() == "target" || c.as_os_str() == ".rustup")
            })
            .collect();
        match own.is_empty() {
            true => build.env_remove("LD_LIBRARY_PATH"),
            false => build.env(
                "LD_LIBRARY_PATH",
                std::env::join_paths(own).unwrap_or_default(),
            ),
        };
    }
    // The same profile as this binary: `--release` for the benchmark measures a release build.
    // The workspace's bins: the same feature set as this binary's build, so nothing recompiles.
    build.args(["build", "--quiet", "--workspace", "--bins"]);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        build.arg("--release");
        "release"
    };
    let status = build.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build --workspace --bins failed".to_owned());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    Ok(target.join(profile).join("gpu-runner"))
}

fn banner(text: &str) {
    println!("\n\x1b[1m━━ {text}\x1b[0m");
}

fn show(outcome: &world::step::Outcome) {
    print!("{}", log::render(&outcome.stdout));
    let outputs = outcome.outputs();
    if !outputs.is_empty() {
        println!("\n  outputs:");
        for (k, v) in &outputs {
            println!("    {k} = {v}");
        }
    }
    if !outcome.summary.trim().is_empty() {
        println!("\n  job summary:");
        for line in outcome.summary.trim_end().lines() {
            println!("    {line}");
        }
    }
    println!("  (exit code {})", outcome.code.unwrap_or(-1));
}

/// The start → job → stop cycle; with `picture`, start's job summary is also drawn there as an
/// SVG (the README's picture).
fn demo(picture: Option<&Path>) -> Result<(), String> {
    let bin = gpu_runner()?;
    println!(
        "Starting the local world: moto (EC2, STS, SSM), a fake GitHub and OIDC service, and instances that run their boot script in a sandbox."
    );
    let world = World::start(Options::default())?;
    // The GPU job's work, as nvidia-smi will show it: a third of the GPU, 5 GiB of its memory.
    world.set_gpu_load(35, 5120);

    banner("Job `start`: gpu-runner with mode: start");
    let start = Step::mode(&bin, "start")
        .in_world(&world)
        .input("instance-types", "g4dn.xlarge")
        .env("GITHUB_JOB", "start")
        .run();
    show(&start);
    if start.code != Some(0) {
        banner("The instance's whole console");
        for line in world.instance_log() {
            println!("  {line}");
        }
        return Err("start failed".to_owned());
    }
    let label = start
        .outputs()
        .get("label")
        .cloned()
        .ok_or("start wrote no label output")?;
    if let Some(path) = picture {
        std::fs::write(path, world::picture::summary_svg(&start.summary))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("\n  (the job summary, drawn: {})", path.display());
    }

    banner(&format!("Job `test`: runs-on: {label}"));
    // Ninety seconds of the world's clock: long enough for the job's GPU usage to say something.
    let job_ok = gpu_job(&world, &label, "nvidia-smi && sleep 90").is_ok();

    banner("Job `stop` (if: always()): gpu-runner with mode: stop");
    let stop = stop_job(&bin, &world, &start, false);

    banner("The instance's boot phases (its console)");
    boot_phases(&world);

    world.wait_until(Duration::from_secs(5), |w| w.live_instances().is_empty());
    let running = world.live_instances().len();
    let runners = world.registered_runners().len();
    println!("\nInstances still running: {running}. Runners still registered: {runners}.");
    if job_ok && running == 0 && runners == 0 && start.code == Some(0) && stop.code == Some(0) {
        Ok(())
    } else {
        Err("the cycle left something behind or a step failed".to_owned())
    }
}

/// The stop job of `start`'s run, shown as its log.
fn stop_job(
    bin: &Path,
    world: &World,
    start: &world::step::Outcome,
    pool: bool,
) -> world::step::Outcome {
    let stop = Step::mode(bin, "stop")
        .in_world(world)
        .outputs_of(start)
        .env("GITHUB_JOB", "stop");
    // A pool's start and stop assume the pool role (docs/iam/pool-policy.json).
    let stop = if pool {
        stop.input("role-to-assume", &world.pool_role_arn())
    } else {
        stop
    };
    let stop = stop.run();
    show(&stop);
    stop
}

/// The instances' boot phases and the world's notes on them, from their consoles.
fn boot_phases(world: &World) {
    for line in world
        .instance_log()
        .iter()
        .filter(|l| l.contains("phase=") || l.contains("(instance"))
    {
        println!("  {line}");
    }
}

/// Queues `script` as the job of `label`, waits for it and prints it as the job's log would.
fn gpu_job(world: &World, label: &str, script: &str) -> Result<(), String> {
    let job = world.queue_job(&[label], script);
    let finished = world.wait_until(Duration::from_secs(60), |w| {
        w.job(job).is_some_and(|j| j.status == "completed")
    });
    let job = world.job(job).ok_or("the job vanished")?;
    if !finished {
        return Err("the GPU job did not finish within a minute".to_owned());
    }
    println!(
        "  Run the job's script   (on runner {})",
        job.runner_name.unwrap_or_default()
    );
    for line in job.output.lines() {
        println!("  {line}");
    }
    let conclusion = job.conclusion.unwrap_or_default();
    println!("  Job conclusion: {conclusion}");
    if !job.summary.trim().is_empty() {
        println!("\n  job summary:");
        for line in job.summary.trim_end().lines() {
            println!("    {line}");
        }
    }
    if conclusion == "success" {
        Ok(())
    } else {
        Err("the GPU job failed".to_owned())
    }
}

/// `machine: kubernetes` on the world's cluster (a real kube-apiserver and kube-scheduler, a GPU
/// node and a CPU node whose kubelets run pods in the sandbox), with a ServiceAccount token bound
/// to exactly the README's Role: start, the GPU job in the pod, stop. Ends counting what is left.
fn demo_kubernetes() -> Result<(), String> {
    use world::kubernetes::{Cluster, NodeSpec};
    let bin = gpu_runner()?;
    println!(
        "Starting the local world: a fake GitHub, and a Kubernetes control plane (etcd, kube-apiserver {} and kube-scheduler, built from the Kubernetes Go modules) with a GPU node and a CPU node.",
        world::kubernetes::version()
    );
    let world = World::start(Options::default())?;
    let cluster = Cluster::start(&[NodeSpec::new("gpu-node", 1), NodeSpec::new("cpu-node", 0)])?;
    let image = world::step::declared_defaults()
        .get("INPUT_POD-IMAGE")
        .cloned()
        .ok_or("action.yml has no pod-image default")?;
    let _gpu = cluster.run_node("gpu-node", 1, &[&image])?;
    let _cpu = cluster.run_node("cpu-node", 0, &[&image])?;
    let kubeconfig = cluster.gpu_runner_kubeconfig()?;
    println!(
        "Applied docs/kubernetes/gpu-runner.yaml (ServiceAccount, Role, RoleBinding in {}); gpu-runner gets a kubeconfig with that ServiceAccount's token.",
        world::kubernetes::NAMESPACE
    );
    let step = |mode: &str| {
        Step::mode(&bin, mode)
            .in_world(&world)
            .unset("INPUT_ROLE-TO-ASSUME")
            .unset("INPUT_AWS-REGION")
            .unset("INPUT_RUNNER-VERSION")
            .unset("INPUT_RUNNER-SHA256")
            .input("machine", "kubernetes")
            .input("kubeconfig", &kubeconfig)
            .env("GITHUB_JOB", mode)
    };

    banner("Job `start`: gpu-runner with mode: start, machine: kubernetes");
    let start = step("start").run();
    show(&start);
    if start.code != Some(0) {
        return Err("start failed".to_owned());
    }
    let label = start
        .outputs()
        .get("label")
        .cloned()
        .ok_or("start wrote no label output")?;

    banner(&format!("Job `test`: runs-on: {label} (in the pod)"));
    let job_ok = gpu_job(&world, &label, "nvidia-smi && hostname").is_ok();

    banner("Job `stop` (if: always()): gpu-runner with mode: stop");
    let stop = step("stop").outputs_of(&start).run();
    show(&stop);

    banner("The pod's log (its entrypoint's phases)");
    for line in _gpu.log(world::kubernetes::NAMESPACE, &label).lines() {
        if line.contains("phase=") {
            println!("  {line}");
        }
    }
    let gone = world.wait_until(Duration::from_secs(10), |_| {
        cluster.gpu_runner_objects("pods").is_empty()
    });
    let pods = cluster.gpu_runner_objects("pods").len();
    let secrets = cluster.gpu_runner_objects("secrets").len();
    let runners = world.registered_runners().len();
    println!(
        "\nPods of gpu-runner left: {pods}. Secrets of gpu-runner left: {secrets}. Runners still registered: {runners}."
    );
    if job_ok && gone && pods == 0 && secrets == 0 && runners == 0 && stop.code == Some(0) {
        Ok(())
    } else {
        Err("the cycle left something behind or a step failed".to_owned())
    }
}

/// Two runs of a workflow with `pool: demo`: a cold start into the empty pool, whose job fills the
/// cache; a stop that returns the instance; a warm start of the same instance, whose job finds
/// the cache and not the first job's checkout. Ends listing the pool (stopped) and what runs.
fn demo_pool() -> Result<(), String> {
    let bin = gpu_runner()?;
    println!(
        "Starting the local world: moto (EC2, STS, SSM), a fake GitHub and OIDC service, and instances that run their boot script in a sandbox."
    );
    let world = World::start(Options::default())?;
    let mut ok = true;
    let mut first_id = String::new();
    for (n, script) in [
        (
            1,
            "echo \"cache: $GPU_RUNNER_CACHE\"; ls \"$GPU_RUNNER_CACHE\"; \
             echo 'pretend these are 10 GB of weights' > \"$GPU_RUNNER_CACHE/weights.bin\"; \
             echo checkout > \"$GITHUB_WORKSPACE/train.py\"; echo 'wrote weights.bin to the cache'",
        ),
        (
            2,
            "echo \"cache: $GPU_RUNNER_CACHE\"; ls \"$GPU_RUNNER_CACHE\"; \
             cat \"$GPU_RUNNER_CACHE/weights.bin\"; \
             ls \"$GITHUB_WORKSPACE\" | grep -q . && echo 'the last checkout is here' \
             || echo 'the workspace is empty: the last checkout was wiped'",
        ),
    ] {
        let run = if n == 1 { "cold" } else { "warm" };
        banner(&format!(
            "Run {n} ({run}), job `start`: mode: start, pool: demo"
        ));
        let start = Step::mode(&bin, "start")
            .in_world(&world)
            .input("role-to-assume", &world.pool_role_arn())
            .input("pool", "demo")
            .env("GITHUB_JOB", "start")
            .run();
        show(&start);
        if start.code != Some(0) {
            return Err("start failed".to_owned());
        }
        let outputs = start.outputs();
        let label = outputs.get("label").cloned().ok_or("no label output")?;
        let id = outputs.get("instance-id").cloned().unwrap_or_default();
        if n == 1 {
            first_id = id;
        } else if id != first_id {
            return Err(format!("the warm start took {id}, not {first_id}"));
        }
        banner(&format!("Run {n}, job `test`: runs-on: {label}"));
        ok &= gpu_job(&world, &label, script).is_ok();
        banner(&format!("Run {n}, job `stop` (if: always()): mode: stop"));
        ok &= stop_job(&bin, &world, &start, true).code == Some(0);
    }

    banner("The instance's boot phases (its console), both boots");
    boot_phases(&world);
    banner("The pool \"demo\"");
    // The stop job returns once EC2 takes StopInstances; EC2 finishes stopping a while later.
    world.wait_until(Duration::from_secs(10), |w| {
        w.live_instances()
            .iter()
            .all(|id| w.state_of(id).as_deref() != Some("stopping"))
    });
    for id in world.live_instances() {
        println!(
            "  {id}: {}",
            world.state_of(&id).unwrap_or_else(|| "unknown".to_owned())
        );
    }
    world.wait_until(Duration::from_secs(5), |w| w.running_instances().is_empty());
    let running = world.running_instances().len();
    let runners = world.registered_runners().len();
    println!(
        "\nPool members stopped: {}. Instances running: {running}. Runners still registered: {runners}.",
        world.live_instances().len() - running
    );
    if ok && running == 0 && runners == 0 {
        Ok(())
    } else {
        Err("the pool left something running or a step failed".to_owned())
    }
}

/// Three jobs queued for `runs-on: [self-hosted, gpu]`, then a workstation that runs
/// `gpu-runner attach --repo octo/ml --labels gpu --idle-timeout 10m`: it serves them one at a
/// time, each with a fresh runner in a wiped work folder, until no job came for ten minutes (ten
/// seconds at the world's clock). Prints what attach prints, then each job's log.
fn demo_attach() -> Result<(), String> {
    let bin = gpu_runner()?;
    println!(
        "Starting the local world: a fake GitHub, and a machine (a sandbox with a stand-in nvidia-smi) that runs gpu-runner attach. No cloud is involved."
    );
    let world = World::start(Options::default())?;
    let scripts = [
        "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; echo \"GPU_RUNNER_GPU_NAME=$GPU_RUNNER_GPU_NAME\"",
        "echo \"workspace before: [$(ls -A)]\"; echo weights > model.bin; echo \"runner user: $(id -un)\"",
        "echo \"workspace before: [$(ls -A)] (the last job's model.bin is gone)\"",
    ];
    let jobs: Vec<u64> = scripts
        .iter()
        .map(|s| world.queue_job(&["self-hosted", "gpu"], s))
        .collect();
    banner("Queued: 3 jobs of octo/ml with runs-on: [self-hosted, gpu]");
    let flags = ["--labels", "gpu", "--idle-timeout", "10m"];
    banner(&format!(
        "On the workstation: GITHUB_TOKEN=*** gpu-runner attach --repo octo/ml {}",
        flags.join(" ")
    ));
    let bin = bin.display().to_string();
    let mut machine = world.attach(&bin, &world.admin_token, &flags);
    let mut shown = 0;
    let started = std::time::Instant::now();
    let code = loop {
        // Whole lines only: attach may be halfway through one.
        let output = machine.output();
        let upto = output[shown..].rfind('\n').map_or(shown, |i| shown + i + 1);
        for line in output[shown..upto].lines() {
            println!("  {line}");
        }
        shown = upto;
        if let Some(code) = machine.ended() {
            break code;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(120) {
            break machine.wait(Duration::ZERO);
        }
    };
    let output = machine.output();
    for line in output[shown..].lines() {
        println!("  {line}");
    }
    let mut ok = code == Some(0);
    for (n, id) in jobs.iter().enumerate() {
        let job = world.job(*id).ok_or("a job vanished")?;
        banner(&format!(
            "Job {} (runs-on: [self-hosted, gpu]), on runner {}",
            n + 1,
            job.runner_name.clone().unwrap_or_default()
        ));
        for line in job.output.lines() {
            println!("  {line}");
        }
        let conclusion = job
            .conclusion
            .clone()
            .unwrap_or_else(|| job.status.to_owned());
        println!("  Job conclusion: {conclusion}");
        ok &= conclusion == "success";
    }
    let runners = world.registered_runners().len();
    println!(
        "\nattach exited with code {}. Runners still registered: {runners}.",
        code.map_or("none (killed)".to_owned(), |c| c.to_string())
    );
    if ok && runners == 0 {
        Ok(())
    } else {
        Err("a job failed, attach did not end cleanly, or a runner was left".to_owned())
    }
}

/// The fault matrix as a table: every row runs the whole cycle with one fault. An argument runs
/// only the rows whose name contains it.
fn faults(only: Option<&str>) -> Result<(), String> {
    let bin = gpu_runner()?;
    let scenarios: Vec<_> = matrix::scenarios()
        .into_iter()
        .filter(|s| only.is_none_or(|o| s.name.contains(o)))
        .collect();
    let rows = scenarios.len();
    eprintln!("Running {rows} scenarios, each in a world of its own, 3 at a time…");
    let started = std::time::Instant::now();
    let results = matrix::run_all(&bin, &scenarios, 3);
    println!("{}", matrix::table(&results));
    let clean = results
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_ok_and(|r| r.instances_left == 0 && r.runners_left == 0)
        })
        .count();
    println!(
        "{clean} of {rows} scenarios left 0 instances and 0 runners ({:.0} s).",
        started.elapsed().as_secs_f64()
    );
    if clean == rows {
        Ok(())
    } else {
        Err("some scenario left something behind".to_owned())
    }
}

/// What the job hooks' GPU usage report costs. First what any machine measures: the real
/// job-completed hook (`src/boot/job-completed.sh`) summing the samples of the longest job
/// (6 hours, GitHub's job limit) on 8 GPUs, against a job-completed hook that does nothing.
/// Then, on a machine with a real GPU only: the same `nvidia-smi -lms 1000` the job-started hook
/// starts (`src/boot/gpu-sampler.sh`), run for `--seconds` (60), its CPU time read from `/proc`
/// against the wall time. The world's stand-in says nothing of the real one's cost, so without
/// `nvidia-smi` the second part is left out, and says so.
fn sampler_cost() -> Result<(), String> {
    let seconds = u64::from(count_flag("--seconds", 60)?);
    hook_cost()?;
    if Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        println!(
            "GPU sampler (nvidia-smi -lms 1000): not measured, this machine has no working \
             nvidia-smi; run this on a machine with an NVIDIA GPU."
        );
        return Ok(());
    }
    nvidia_smi_cost(seconds)
}

/// The number after `flag` on the command line, above 0, or `default` without the flag.
fn count_flag(flag: &str, default: u32) -> Result<u32, String> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == flag) {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .ok_or(format!("{flag} takes a number above 0")),
        None => Ok(default),
    }
}

/// The job-completed hook's time to sum up a 6-hour job's samples on 8 GPUs.
fn hook_cost() -> Result<(), String> {
    const HOOK: &str = include_str!("../../../src/boot/job-completed.sh");
    let (gpus, seconds) = (8u32, 6 * 3600u32);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut samples = String::new();
    for s in 0..seconds {
        for g in 0..gpus {
            // A job that works and rests: the hook's branches all run.
            let util = if s % 7 == 0 {
                0
            } else {
                (s * 13 + g * 7) % 100
            };
            let used = 2048 + (s * 31 + g) % 20000;
            samples.push_str(&format!("{g}, {util}, {used}, 23028\n"));
        }
    }
    std::fs::write(dir.path().join("gpu-samples.csv"), &samples).map_err(|e| e.to_string())?;
    let run = |script: &str| -> Result<f64, String> {
        let began = std::time::Instant::now();
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("STATE_DIR", dir.path())
            .env("PRICE_PER_HOUR", "16.288")
            .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
            .output()
            .map_err(|e| format!("bash: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the hook failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(began.elapsed().as_secs_f64())
    };
    let median = |script: &str| -> Result<f64, String> {
        let mut times = (0..5).map(|_| run(script)).collect::<Result<Vec<_>, _>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[2])
    };
    let hook = median(HOOK)?;
    let nothing = median("exit 0")?;
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap_or_default();
    if !summary.contains("### GPU usage") {
        return Err(format!("the hook wrote no report:\n{summary}"));
    }
    println!(
        "Job-completed hook: sums a 6-hour job on {gpus} GPUs ({} sample lines, {:.1} MB) in \
         {hook:.2} s, against {nothing:.3} s for a hook that does nothing (median of 5).",
        seconds * gpus,
        samples.len() as f64 / 1e6
    );
    Ok(())
}

/// The CPU cost of the job-started hook's sampler (`src/boot/gpu-sampler.sh`, as it is: its
/// `stdbuf -oL nvidia-smi -lms 1000`) on this machine's real GPUs.
fn nvidia_smi_cost(seconds: u64) -> Result<(), String> {
    const SAMPLER: &str = include_str!("../../../src/boot/gpu-sampler.sh");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let started = Command::new("bash")
        .arg("-c")
        .arg(SAMPLER)
        .env("STATE_DIR", dir.path())
        .status()
        .map_err(|e| format!("bash: {e}"))?;
    let pid = std::fs::read_to_string(dir.path().join("gpu-sampler.pid"))
        .ok()
        .filter(|_| started.success())
        .ok_or("the sampler did not start: is nvidia-smi on PATH?")?;
    let pid = pid.trim();
    let began = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc of the sampler (it ended early?): {e}"))?;
    let wall = began.elapsed().as_secs_f64();
    // Whether the sampler writes a line at a time, as the process itself has it: stdbuf hands
    // its setting to the command in _STDBUF_O (coreutils src/stdbuf.c).
    let line_buffered = std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == b"_STDBUF_O=L"));
    let _ = Command::new("kill").arg(pid).status();
    // utime and stime: the 14th and 15th fields, counted after the command's closing parenthesis.
    let after = &stat[stat.rfind(')').ok_or("an unreadable /proc/PID/stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .ok_or("an unreadable /proc/PID/stat")?
        .iter()
        .filter_map(|t| t.parse::<f64>().ok())
        .sum();
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    let cpu = ticks / per_second;
    let lines = std::fs::read_to_string(dir.path().join("gpu-samples.csv")).unwrap_or_default();
    let samples = lines.lines().count();
    // The job-completed hook counts a job's seconds in samples: how far one sample a GPU is from
    // one a second says how short that count reads.
    let gpus = lines
        .lines()
        .filter_map(|l| l.split(',').next())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1);
    let every = wall / (samples as f64 / gpus as f64).max(1.0);
    println!(
        "GPU sampler ({}nvidia-smi -lms 1000): {cpu:.2} s of CPU over {wall:.0} s of wall time, \
         {:.2} % of one core; {samples} sample lines from {gpus} GPU(s), one a GPU every \
         {every:.3} s.",
        if line_buffered { "stdbuf -oL " } else { "" },
        100.0 * cpu / wall
    );
    Ok(())
}

/// The benchmark, printed as Markdown with the machine and the date, ready for the README.
fn bench() -> Result<(), String> {
    let runs = count_flag("--runs", 5)?;
    let bin = gpu_runner()?;
    let profile = if cfg!(debug_assertions) {
        "a debug build (add --release for the figures to publish)"
    } else {
        "a release build"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let started = std::time::Instant::now();
    let report = world::bench::run(&bin, runs, &[1, 4, 16], &[1, 4])?;
    println!(
        "gpu-runner benchmark, {} UTC, Linux {} on {cores} cores, {profile}; {runs} cycles per count \
         through the local world, its clock at real speed.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        kernel.trim()
    );
    println!("{report}");
    println!(
        "Median (min–max). The whole benchmark took {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
