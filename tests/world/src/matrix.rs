//! The fault matrix: the whole start → GPU job → stop cycle with one fault at each point, and what
//! is left afterwards once the world's clock has passed the instances' idle and max-lifetime
//! limits. `tests/integration/faults.rs` asserts that nothing is left in any row; `cargo run -p world --
//! faults` prints the same rows as a table.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::faults::{Fault, Service};
use crate::simulator::{Gpu, RunnerBehaviour};
use crate::step::{Outcome, Step};
use crate::{CLOCK_SCALE, Options, World};

/// Limits every row starts with, in the user's minutes (a second each on the world's clock).
const STARTUP_TIMEOUT: u32 = 3;
const IDLE_TIMEOUT: u32 = 2;
const MAX_LIFETIME: u32 = 6;

/// When a cancel reaches the start step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelAt {
    /// The runner is registered; `RunInstances` has not been sent.
    BeforeLaunch,
    /// `RunInstances` has answered.
    AfterRunInstances,
    /// The instance boots; its runner is not online yet.
    WhileWaiting,
    /// Start reported the runner online; the run is cancelled while the GPU job runs.
    AfterOnline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopJob {
    Runs,
    Never,
    Twice,
    /// Runs, but `needs.start.outputs.*` are empty.
    WithoutOutputs,
}

/// A row that starts from a warm pool: what the pool holds when start runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Empty: start launches into it.
    Cold,
    /// One stopped member of the start's type: start resumes it.
    Warm,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub gpu: Gpu,
    pub runner: RunnerBehaviour,
    pub die_after_phase: Option<&'static str>,
    pub faults: Vec<(Service, &'static str, Fault, u32)>,
    pub cancel: Option<CancelAt>,
    /// A GPU job is queued for the runner once start succeeded.
    pub job: bool,
    pub stop: StopJob,
    pub instance_types: &'static str,
    /// With `pool: matrix`; then "left" means left running: stopped members are the pool.
    pub pool: Option<Pool>,
    /// A spot instance, which AWS takes back while the GPU job runs (`World::reclaim_spot`).
    pub reclaimed: bool,
}

impl Scenario {
    fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            gpu: Gpu::Healthy(1),
            runner: RunnerBehaviour::Normal,
            die_after_phase: None,
            faults: Vec::new(),
            cancel: None,
            job: true,
            stop: StopJob::Runs,
            instance_types: "g4dn.xlarge",
            pool: None,
            reclaimed: false,
        }
    }

    fn pooled(name: &str, pool: Pool) -> Self {
        let mut s = Self::new(format!(
            "pool ({}): {name}",
            if pool == Pool::Warm { "warm" } else { "cold" }
        ));
        s.pool = Some(pool);
        s
    }

    fn fault(mut self, service: Service, call: &'static str, fault: Fault, times: u32) -> Self {
        self.faults.push((service, call, fault, times));
        self
    }

    fn no_job(mut self) -> Self {
        self.job = false;
        self
    }
}

/// Every row of the matrix.
pub fn scenarios() -> Vec<Scenario> {
    use Fault::*;
    use Service::*;
    let mut rows = vec![Scenario::new("no fault")];
    let mut reclaimed = Scenario::new("spot instance reclaimed by AWS during the GPU job");
    reclaimed.reclaimed = true;
    rows.push(reclaimed);
    for (at, name) in [
        (CancelAt::BeforeLaunch, "cancel (SIGTERM) before launch"),
        (
            CancelAt::AfterRunInstances,
            "cancel right after RunInstances",
        ),
        (CancelAt::WhileWaiting, "cancel while waiting for online"),
        (
            CancelAt::AfterOnline,
            "cancel after online, during the GPU job",
        ),
    ] {
        let mut s = Scenario::new(name);
        s.cancel = Some(at);
        match at {
            // Registration is done and the launch not yet sent while this answer is slow.
            CancelAt::BeforeLaunch => {
                s = s.fault(
                    Aws,
                    "DescribeInstanceTypes",
                    Slow(Duration::from_secs(3)),
                    1,
                )
            }
            CancelAt::WhileWaiting => s.runner = RunnerBehaviour::NeverOnline,
            _ => {}
        }
        rows.push(s);
    }
    for phase in [
        "watchdog",
        "gpu-probe",
        "runner-user",
        "runner-fetch",
        "runner",
    ] {
        let mut s = Scenario::new(format!("boot script dies after phase {phase}"));
        s.die_after_phase = Some(phase);
        rows.push(s);
    }
    let mut s = Scenario::new("nvidia-smi fails (no driver)");
    s.gpu = Gpu::NoDriver;
    rows.push(s);
    let mut s = Scenario::new("runner never comes online");
    s.runner = RunnerBehaviour::NeverOnline;
    rows.push(s);
    let mut s = Scenario::new("runner crashes mid-job");
    s.runner = RunnerBehaviour::CrashMidJob;
    rows.push(s);
    let mut s = Scenario::new("stop job never runs");
    s.stop = StopJob::Never;
    rows.push(s);
    let mut s = Scenario::new("stop job never runs, no job either").no_job();
    s.stop = StopJob::Never;
    rows.push(s);
    let mut s = Scenario::new("stop runs twice");
    s.stop = StopJob::Twice;
    rows.push(s);
    let mut s = Scenario::new("stop without the start's outputs").no_job();
    s.stop = StopJob::WithoutOutputs;
    rows.push(s);

    let throttled = AwsError {
        code: "RequestLimitExceeded",
        status: 503,
    };
    let internal = AwsError {
        code: "InternalError",
        status: 500,
    };
    for call in [
        "AssumeRoleWithWebIdentity",
        "GetParameter",
        "DescribeInstanceTypes",
        "RunInstances",
        "DescribeInstances",
        "TerminateInstances",
    ] {
        for (fault, what) in [(throttled, "throttled"), (internal, "5xx")] {
            // Stop terminates only an instance that is still running: no job, so it is.
            let s = Scenario::new(format!("AWS {call} {what} twice")).fault(Aws, call, fault, 2);
            rows.push(if call == "TerminateInstances" {
                s.no_job()
            } else {
                s
            });
        }
    }
    let unavailable = AwsError {
        code: "Unavailable",
        status: 503,
    };
    rows.push(Scenario::new("AWS RunInstances Unavailable twice").fault(
        Aws,
        "RunInstances",
        unavailable,
        2,
    ));
    rows.push(Scenario::new("AWS RunInstances connection dropped").fault(
        Aws,
        "RunInstances",
        Drop,
        1,
    ));
    rows.push(Scenario::new("AWS DescribeInstances slow (2 s)").fault(
        Aws,
        "DescribeInstances",
        Slow(Duration::from_secs(2)),
        2,
    ));
    let mut s = Scenario::new("AWS no capacity for the first type").fault(
        Aws,
        "RunInstances",
        AwsError {
            code: "InsufficientInstanceCapacity",
            status: 500,
        },
        1,
    );
    s.instance_types = "g5.xlarge, g4dn.xlarge";
    rows.push(s);

    // Start reads the runners with one list per look (get-runner is not called any more).
    for call in ["generate-jitconfig", "list-runners", "delete-runner"] {
        // Stop removes only a runner that is still registered: no job, so it is.
        let no_job = call == "delete-runner";
        for (fault, times, what) in [
            (Status(502), 3, "5xx three times"),
            (RateLimited { retry_after_s: 1 }, 1, "secondary rate limit"),
        ] {
            let s =
                Scenario::new(format!("GitHub {call} {what}")).fault(Github, call, fault, times);
            rows.push(if no_job { s.no_job() } else { s });
        }
    }
    // Warm pools: the same cycle resuming a stopped member; what is left is what runs.
    rows.push(Scenario::pooled("no fault", Pool::Cold));
    rows.push(Scenario::pooled("no fault", Pool::Warm));
    let mut s = Scenario::pooled("cancel while waiting for online", Pool::Warm);
    s.cancel = Some(CancelAt::WhileWaiting);
    s.runner = RunnerBehaviour::NeverOnline;
    rows.push(s);
    let mut s = Scenario::pooled("runner never comes online", Pool::Warm);
    s.runner = RunnerBehaviour::NeverOnline;
    rows.push(s);
    let mut s = Scenario::pooled("boot script dies after phase runner-fetch", Pool::Warm);
    s.die_after_phase = Some("runner-fetch");
    rows.push(s);
    let mut s = Scenario::pooled("stop job never runs", Pool::Warm);
    s.stop = StopJob::Never;
    rows.push(s);
    for (call, fault, what) in [
        ("StartInstances", internal, "5xx"),
        ("ModifyInstanceAttribute", throttled, "throttled"),
        ("CreateTags", internal, "5xx"),
    ] {
        rows.push(
            Scenario::pooled(&format!("AWS {call} {what} twice"), Pool::Warm)
                .fault(Aws, call, fault, 2),
        );
    }
    // Stop pauses only an instance that is still running: no job, so it is.
    rows.push(
        Scenario::pooled("AWS StopInstances 5xx twice", Pool::Warm)
            .fault(Aws, "StopInstances", internal, 2)
            .no_job(),
    );
    rows.push(
        Scenario::new("terminate fails once (not retryable)")
            .fault(
                Aws,
                "TerminateInstances",
                AwsError {
                    code: "UnauthorizedOperation",
                    status: 403,
                },
                1,
            )
            .no_job(),
    );
    rows
}

/// One row's result.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// The first `::error` line of the cycle, as the user saw it; empty when there was none.
    pub user_saw: String,
    /// After the clock passed the idle and max-lifetime limits (and a cleanup run, if needed).
    pub instances_left: usize,
    pub runners_left: usize,
    /// What a cleanup run had to remove; empty when none was needed.
    pub cleanup: String,
    /// The faults that fired, to show the row tested what it says.
    pub fired: Vec<String>,
}

fn first_error(outcomes: &[&Outcome]) -> String {
    outcomes
        .iter()
        .flat_map(|o| o.errors())
        .next()
        .map(|e| {
            let e = crate::log::unescape(e).replace('\n', " ");
            e.strip_prefix("::error title=")
                .map(|rest| rest.replacen("::", ": ", 1))
                .unwrap_or(e)
        })
        .unwrap_or_default()
}

/// Runs one row against a world of its own.
pub fn run(bin: &Path, s: &Scenario) -> Result<Row, String> {
    let world = World::start(Options {
        gpu: s.gpu,
        runner: s.runner,
        die_after_phase: s.die_after_phase,
        ..Options::default()
    })?;
    if s.pool == Some(Pool::Warm) {
        // A member as a pool start left it: tagged for this repository's pool, then stopped.
        let id = world.launch_tagged(&[
            ("gpu-runner:label", "gpu-runner-1-1-seed"),
            ("gpu-runner:repository", "octo/ml"),
            ("gpu-runner:lifecycle", "pooled"),
            ("gpu-runner:pool", "matrix"),
            ("gpu-runner:uses", "1"),
            // Of the workflow the matrix's starts run in: another's is not theirs to resume.
            ("gpu-runner:workflow", crate::WORKFLOW_REF),
        ]);
        world.stop_instance(&id)?;
        if !world.wait_until(Duration::from_secs(10), |w| {
            w.state_of(&id).as_deref() == Some("stopped")
        }) {
            return Err(format!("{}: the pool's member never stopped", s.name));
        }
    }
    for (service, call, fault, times) in &s.faults {
        world.faults.inject(*service, call, *fault, *times);
    }
    // What is left: every live instance, or for a pool every running one.
    let left = |w: &World| match s.pool {
        Some(_) => w.running_instances(),
        None => w.live_instances(),
    };
    let began = Instant::now();
    // A pool's starts, stops and cleanups assume the pool role (docs/iam/pool-policy.json).
    let step = |mode: &str| {
        let step = Step::mode(bin, mode).in_world(&world);
        match s.pool {
            Some(_) => step.input("role-to-assume", &world.pool_role_arn()),
            None => step,
        }
    };
    let start = step("start")
        .input("instance-types", s.instance_types)
        .input("startup-timeout-minutes", &STARTUP_TIMEOUT.to_string())
        .input("idle-timeout-minutes", &IDLE_TIMEOUT.to_string())
        .input("max-lifetime-minutes", &MAX_LIFETIME.to_string());
    let start = match s.pool {
        Some(_) => start.input("pool", "matrix"),
        None => start,
    };
    let start = if s.reclaimed {
        start.input("market-type", "spot")
    } else {
        start
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut cancel_note = String::new();
    let started = match s.cancel {
        Some(at) if at != CancelAt::AfterOnline => {
            let running = start.clone().spawn();
            let reached = world.wait_until(Duration::from_secs(30), |w| match at {
                // Registered, and held up in the slow call just before RunInstances.
                CancelAt::BeforeLaunch => {
                    !w.registered_runners().is_empty() && !w.faults.fired().is_empty()
                }
                CancelAt::AfterRunInstances => !w.instances().is_empty(),
                _ => w
                    .instance_log()
                    .iter()
                    .any(|l| l.contains("phase=runner status=starting")),
            });
            if !reached {
                return Err(format!("{}: the cancel point was never reached", s.name));
            }
            let sent = Instant::now();
            running.signal("TERM");
            let out = running.wait();
            cancel_note = format!(
                "(exit {} {:.1} s after SIGTERM) ",
                out.code.unwrap_or(-1),
                sent.elapsed().as_secs_f64()
            );
            out
        }
        _ => start.clone().run(),
    };
    // The runner runs the post-entrypoint after the job's steps, after a cancel too.
    let post = start.post().state_of(&started).run();
    let online = started.code == Some(0);
    outcomes.push(started);
    outcomes.push(post);
    let label = outcomes[0]
        .outputs()
        .get("label")
        .cloned()
        .unwrap_or_default();
    if online && s.cancel == Some(CancelAt::AfterOnline) {
        // Ten minutes of the user's time: long enough to be cancelled while it runs.
        let job = world.queue_job(&[&label], "nvidia-smi && sleep 600");
        world.wait_until(Duration::from_secs(20), |w| {
            w.job(job).is_some_and(|j| j.status == "in_progress")
        });
        world
            .github
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancel_run(world.run_id);
    } else if online && s.reclaimed {
        let job = world.queue_job(&[&label], "nvidia-smi && sleep 600");
        world.wait_until(Duration::from_secs(20), |w| {
            w.job(job).is_some_and(|j| j.status == "in_progress")
        });
        let id = outcomes[0]
            .outputs()
            .get("instance-id")
            .cloned()
            .unwrap_or_default();
        world.reclaim_spot(&id);
        world.wait_until(Duration::from_secs(20), |w| {
            w.job(job).is_some_and(|j| j.status == "completed")
        });
    } else if online && s.job {
        let job = world.queue_job(&[&label], "nvidia-smi");
        world.wait_until(Duration::from_secs(20), |w| {
            w.job(job).is_some_and(|j| j.status == "completed")
        });
    }
    let stop = step("stop").outputs_of(&outcomes[0]);
    match s.stop {
        StopJob::Never => {}
        StopJob::Runs => outcomes.push(stop.run()),
        StopJob::Twice => {
            outcomes.push(stop.clone().run());
            outcomes.push(stop.run());
        }
        StopJob::WithoutOutputs => outcomes.push(
            step("stop")
                .input("label", "")
                .input("instance-ids", "")
                .input("region", "")
                .run(),
        ),
    }

    // The world's clock passes the idle and max-lifetime limits (one minute per second).
    let limits = Duration::from_secs_f64(f64::from(MAX_LIFETIME) * 60.0 / CLOCK_SCALE + 4.0);
    let remaining = limits.saturating_sub(began.elapsed());
    world.wait_until(remaining.max(Duration::from_secs(3)), |w| {
        left(w).is_empty()
    });
    // GitHub notices that a machine is gone a moment later (here: the simulator's next look).
    world.wait_until(Duration::from_secs(3), |w| {
        w.registered_runners().iter().all(|r| r.status == "offline")
    });
    let mut instances_left = left(&world).len();
    let mut runners_left = world.registered_runners().len();
    let mut cleanup = String::new();
    if instances_left + runners_left > 0 {
        let out = step("cleanup").run();
        // The summary's table: a header, then one row per action: | Action | What | Why | Done |.
        let did: Vec<String> = out
            .summary
            .lines()
            .filter(|l| {
                l.starts_with("| ") && !l.starts_with("| Action |") && !l.starts_with("| ---")
            })
            .map(|l| {
                let cells: Vec<&str> = l.split(" | ").collect();
                format!(
                    "{} {}",
                    cells.first().unwrap_or(&"").trim_start_matches("| "),
                    cells.get(1).unwrap_or(&"")
                )
            })
            .collect();
        cleanup = format!(
            "yes ({instances_left} instance(s), {runners_left} runner(s) left): {}",
            did.join("; ")
        );
        outcomes.push(out);
        world.wait_until(Duration::from_secs(5), |w| left(w).is_empty());
        instances_left = left(&world).len();
        runners_left = world.registered_runners().len();
    }
    let refs: Vec<&Outcome> = outcomes.iter().collect();
    let error = first_error(&refs);
    Ok(Row {
        scenario: s.name.clone(),
        user_saw: format!("{cancel_note}{error}").trim().to_owned(),
        instances_left,
        runners_left,
        cleanup,
        fired: world.faults.fired(),
    })
}

/// These rows, `parallel` at a time, in their order.
pub fn run_all(bin: &Path, rows: &[Scenario], parallel: usize) -> Vec<Result<Row, String>> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Row, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..parallel.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(s) = rows.get(i) else { break };
                        mine.push((i, run(bin, s)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    // A row whose worker panicked stays "not run", so that rows never shift.
    let mut results: Vec<Result<Row, String>> = rows
        .iter()
        .map(|s| Err(format!("{}: not run", s.name)))
        .collect();
    for (i, row) in done.drain(..) {
        results[i] = row;
    }
    results
}

/// The rows as a Markdown table, the way the README shows them.
pub fn table(rows: &[Result<Row, String>]) -> String {
    let cell = |s: &str, max: usize| {
        let s = s.replace('|', "\\|");
        if s.chars().count() > max {
            format!("{}…", s.chars().take(max).collect::<String>())
        } else {
            s
        }
    };
    let mut out = String::from(
        "| Scenario | What the user saw (first error) | Instances left | Runners left | Cleanup run needed |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        match r {
            Ok(r) => out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&r.scenario, 60),
                if r.user_saw.is_empty() {
                    "no error".to_owned()
                } else {
                    cell(&r.user_saw, 140)
                },
                r.instances_left,
                r.runners_left,
                if r.cleanup.is_empty() {
                    "no".to_owned()
                } else {
                    cell(&r.cleanup, 100)
                },
            )),
            Err(e) => out.push_str(&format!(
                "| {} | (the row could not run) | ? | ? | ? |\n",
                cell(e, 100)
            )),
        }
    }
    out
}
