//! `gpu-runner attach`: a machine the user already has (a notebook, a workstation, a rented box)
//! serves GitHub Actions jobs one at a time, each with a fresh just-in-time runner, until it is
//! told to end; what the boot script and stop do for an EC2 instance, it does for the machine
//! in the foreground: the GPU checked before every job, the untrusted-trigger guard in the
//! job-started hook, a wiped work folder after every job, and no runner left registered at the
//! end, whatever ends it.

pub mod aftermath;
pub mod args;
pub mod credentials;
pub mod gpu;
pub mod hook;
pub mod judge;
pub mod package;
pub mod runner;
pub mod status;
pub mod system;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::actions::{Actions, Annotation};
use crate::boot::{self, Arch};
use crate::clock::Clock;
use crate::env::Env;
use crate::error::Error;
use crate::github::octo::Runners;
use crate::github::{GithubError, JitRunner, Removal, RunnerRegistry};
use args::{AttachArgs, Parsed, Target};
use credentials::{Credentials, github_error};
use hook::{JobFacts, Policy};
use runner::RunnerProcess;
use status::Status;
use system::RunAs;

/// This machine's architecture, as the runner's packages name it.
fn this_arch() -> Arch {
    if std::env::consts::ARCH == "aarch64" {
        Arch::Arm64
    } else {
        Arch::X64
    }
}

pub(crate) fn problem(
    title: &'static str,
    what: impl Into<String>,
    fix: impl Into<String>,
) -> Error {
    Error::Attach {
        title,
        what: what.into(),
        fix: fix.into(),
    }
}

/// Why the machine stopped serving.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    JobsDone(u32),
    Idle(Duration),
    MaxLifetime(Duration),
    Signal(&'static str),
}

impl Ending {
    fn describe(&self) -> String {
        match self {
            Ending::JobsDone(n) => format!("--jobs {n} served"),
            Ending::Idle(d) => format!("no job started for {} (--idle-timeout)", human(*d)),
            Ending::MaxLifetime(d) => format!("the max lifetime of {} was reached", human(*d)),
            Ending::Signal(s) => format!("{s} received"),
        }
    }
}

/// `1h 5m`, `3m 20s`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// A name for the machine, for its own label: its host name, cut to what a label may hold, and
/// a few random characters so that two sessions never share one.
fn machine_label(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let host = host.trim_matches('-');
    let id = uuid::Uuid::new_v4().simple().to_string();
    if host.is_empty() {
        format!("attached-{}", &id[..6])
    } else {
        format!("attached-{host}-{}", &id[..6])
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

fn default_dir(root: &str, home_relative: &str, env: &Env) -> PathBuf {
    if system::is_root() {
        PathBuf::from(root)
    } else {
        PathBuf::from(env.non_empty("HOME").unwrap_or("/tmp")).join(home_relative)
    }
}

/// What one session did, for the summary at exit.
#[derive(Debug, Default)]
struct Tally {
    served: u32,
    refused: u32,
    gpu_time: Duration,
    /// Runners GitHub would not let attach remove.
    left: Vec<String>,
}

/// `gpu-runner attach ...`
pub async fn run(argv: &[String], env: &Env, actions: &Actions) -> Result<(), Error> {
    let args = match args::parse(argv, this_arch())? {
        Parsed::Help => {
            actions.info(&args::help());
            return Ok(());
        }
        Parsed::Run(a) => *a,
    };
    // Before the credentials are read: from here on no job, whichever user it runs as, can read
    // them out of this process.
    let hidden = system::hide_memory();
    let clock = Clock::from_env(env);
    let credentials = Credentials::from_env(env, actions)?;
    let api_url = env
        .non_empty("GITHUB_API_URL")
        .unwrap_or("https://api.github.com")
        .trim_end_matches('/')
        .to_owned();
    if matches!(credentials, Credentials::App { .. }) && matches!(args.target, Target::Org(_)) {
        return Err(problem(
            "Not supported",
            "a GitHub App with --org is not supported by attach yet",
            "Use a token with the organization permission Self-hosted runners: read and write \
             in GITHUB_TOKEN, or attach to one repository with --repo.",
        ));
    }
    let root = system::is_root();
    let mut needed = vec!["bash", "tar", "kill"];
    if root {
        needed.extend(["runuser", "useradd"]);
    }
    if let Some(missing) = needed.iter().find(|p| !system::on_path(p)) {
        return Err(problem(
            "Missing a tool",
            format!("{missing} is not on PATH, and the runner needs it"),
            "Run attach on the machine itself (a notebook, a Linux workstation or server), \
             not in gpu-runner's action image, which holds only gpu-runner; in Docker, use \
             ghcr.io/gpu-runner/gpu-runner-attach.",
        ));
    }

    // 1. The GPU, before anything is registered.
    let gpus = match args.gpus {
        Some(wanted) => {
            let gpus = gpu::probe(wanted, clock).await.map_err(|p| {
                problem(
                    "No usable GPU",
                    p.to_string(),
                    "Check the GPU with nvidia-smi: a notebook needs a GPU runtime (Colab: \
                     Runtime → Change runtime type; Kaggle: Accelerator), a workstation a loaded \
                     NVIDIA driver. --gpus sets how many it must show; --no-gpu serves without \
                     one.",
                )
            })?;
            actions.info(&format!("GPU: {}", gpus.describe()));
            Some(gpus)
        }
        None => {
            actions.info("GPU: not checked (--no-gpu)");
            None
        }
    };

    // 2. GitHub: the credentials may manage the runners, before anything is set up.
    let registry = credentials
        .registry(&api_url, &args.target, clock, &actions.masker())
        .await?;
    registry
        .runners()
        .await
        .map_err(|e| github_error(e, &args.target))?;
    actions.info(&format!(
        "GitHub: the credentials may manage the self-hosted runners of {}",
        args.target
    ));
    match &args.target {
        Target::Repo { .. } => check_public(&registry, &args, actions).await?,
        Target::Org(_) => check_org_public(&registry, &args).await?,
    }

    // 3. The runner package, checked, and the user jobs run as.
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_dir("/var/cache/gpu-runner", ".cache/gpu-runner", env));
    let template = env
        .non_empty("GPU_RUNNER_RUNNER_DOWNLOAD_URL")
        .unwrap_or(boot::DEFAULT_RUNNER_URL);
    let ready = package::prepare(&args.runner, &cache, template)
        .await
        .map_err(|p| problem("Runner package", p.what, p.fix))?;
    actions.info(&format!("Runner: {}", ready.describe()));
    let run_as = RunAs::set_up(&args.user, args.docker)
        .await
        .map_err(|why| {
            problem(
                "Job user",
                why,
                "Give --user a name for a plain user account (attach creates it when it runs as \
             root).",
            )
        })?;
    if run_as.switch {
        actions.info(&format!("Jobs run as the user {}", run_as.user));
        if !run_as.dedicated {
            actions.info(&format!(
                "{} was here before attach: after each job attach ends the job's processes, puts \
                 its crontab back and removes what the job wrote in /tmp, /var/tmp and /dev/shm, \
                 but what a job writes in its home stays for the next job. Leave --user out for \
                 a user of attach's own, whose home is emptied after every job.",
                run_as.user
            ));
        }
        if system::in_docker_group(&run_as.user) {
            actions.annotate(
                &Annotation::warning(format!(
                    "The job user {user} is in the docker group: a job can start a privileged \
                     container, become root on this machine, read attach's memory (its GitHub \
                     credentials among it) and leave anything for later jobs. {fix}",
                    user = run_as.user,
                    fix = if args.docker {
                        "Leave --docker out unless jobs need containers and every job is \
                         trusted."
                            .to_owned()
                    } else {
                        // A user attach did not make keeps its groups: only its owner can
                        // change them.
                        format!(
                            "Take it out of the group (gpasswd -d {} docker), or leave --user \
                             out so that attach uses a user of its own, which gets the group \
                             only with --docker.",
                            run_as.user
                        )
                    }
                ))
                .title("Jobs can become root through Docker"),
            );
        }
    } else {
        actions.annotate(
            &Annotation::warning(format!(
                "attach runs as {user}, not root, so jobs run as the same user. {memory}A job \
                 can read the memory of {user}'s other processes (the shell or notebook that \
                 started attach, and a token it holds), end attach, and leave files for later \
                 jobs in the home folder. Run attach as root (sudo --preserve-env=GITHUB_TOKEN \
                 gpu-runner attach ...) to run jobs as a separate user.",
                user = run_as.user,
                memory = match &hidden {
                    Ok(()) => "attach's own memory and environment, its credentials among \
                               them, are hidden from jobs (it is not dumpable). "
                        .to_owned(),
                    Err(e) => format!(
                        "attach could not hide its memory from jobs ({e}): a job can read its \
                         credentials. "
                    ),
                },
            ))
            .title("Jobs run as attach's own user"),
        );
    }

    // 4. The work folder, the hook, and the labels.
    let work = args.work_dir.clone().unwrap_or_else(|| {
        default_dir(
            "/var/lib/gpu-runner-attach",
            ".local/state/gpu-runner-attach",
            env,
        )
    });
    let setup_failed = |e: std::io::Error| {
        problem(
            "Work folder",
            format!("could not set up {}: {e}", work.display()),
            "Give --work-dir a folder this user may write.",
        )
    };
    std::fs::create_dir_all(&work).map_err(setup_failed)?;
    set_mode(&work, 0o755).map_err(setup_failed)?;
    let exe = hook_exe(&work, &run_as).map_err(setup_failed)?;
    let socket = work.join("hook.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(setup_failed)?;
    set_mode(&socket, 0o666).map_err(setup_failed)?;
    let hook_path = work.join("job-started.sh");
    std::fs::write(&hook_path, hook::script(&exe, &socket)).map_err(setup_failed)?;
    set_mode(&hook_path, 0o755).map_err(setup_failed)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let policy = Arc::new(Policy {
        target: args.target.clone(),
        allow_untrusted: args.allow_untrusted,
        allowed_associations: args.allowed_associations.clone(),
    });
    let approvals = Arc::new(judge::Approvals {
        credentials: credentials.clone(),
        api_url: api_url.clone(),
        clock,
        masker: actions.masker(),
    });
    let server = tokio::spawn(judge::serve(
        listener, policy, approvals, events_tx, run_as.uid,
    ));

    let machine = machine_label(&host_name());
    let mut labels = args.labels.clone();
    labels.push(machine.clone());
    let arch_label = match this_arch() {
        Arch::X64 => "X64",
        Arch::Arm64 => "ARM64",
    };
    actions.info(&format!(
        "Serving jobs of {} whose runs-on is among: self-hosted, Linux, {arch_label}, {}",
        args.target,
        labels.join(", ")
    ));
    let mut session = Session {
        args: &args,
        actions,
        clock,
        credentials: &credentials,
        api_url: &api_url,
        run_as: &run_as,
        ready: &ready,
        work: &work,
        labels: &labels,
        machine: &machine,
        env_for_jobs: runner::environment(env, &args.pass_env, &hook_path, &run_as),
        gpus,
        started: Instant::now(),
        tally: Tally::default(),
        status: Status::default(),
    };
    let outcome = session.serve(&mut events).await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let _ = system::remove_dir(&work.join("runner"));
    session.status.clear();
    let tally = &session.tally;
    let why = match &outcome {
        Ok(ending) => ending.describe(),
        Err(e) => format!("an error: {e}"),
    };
    let runners = if tally.left.is_empty() {
        "No runner of this machine is registered.".to_owned()
    } else {
        format!(
            "Still registered: {} (remove under Settings → Actions → Runners).",
            tally.left.join(", ")
        )
    };
    actions.info(&format!(
        "Done: {} job(s) served, {} refused, GPU time {}, stopped because {why}. {runners}",
        tally.served,
        tally.refused,
        human(tally.gpu_time)
    ));
    let left = tally.left.clone();
    outcome.and_then(|_| {
        if left.is_empty() {
            Ok(())
        } else {
            Err(problem(
                "Runners left registered",
                format!("GitHub would not let attach remove {}", left.join(", ")),
                "GitHub removes a JIT runner that stays offline within a day; remove it by hand \
                 under Settings → Actions → Runners to be sure.",
            ))
        }
    })
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// The gpu-runner binary the hook runs: this one, when the job's user may run it where it is;
/// else a copy in the work folder.
fn hook_exe(work: &Path, run_as: &RunAs) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    if !run_as.switch || system::others_may_run(&exe) {
        return Ok(exe);
    }
    let bin = work.join("bin");
    std::fs::create_dir_all(&bin)?;
    set_mode(&bin, 0o755)?;
    let copy = bin.join("gpu-runner");
    std::fs::copy(&exe, &copy)?;
    set_mode(&copy, 0o755)?;
    Ok(copy)
}

/// For an organization: the runner joins its default runner group. When that group lets public
/// repositories use it (or GitHub cannot say), anyone's pull request to one of them could be
/// handed this machine: the guard must be on, as for a public repository.
async fn check_org_public(registry: &Runners, args: &AttachArgs) -> Result<(), Error> {
    if !args.allow_untrusted {
        return Ok(());
    }
    let groups = registry
        .runner_groups()
        .await
        .map_err(|e| github_error(e, &args.target))?;
    let default = groups
        .iter()
        .find(|g| g.default)
        .or_else(|| groups.iter().find(|g| g.id == 1));
    match default {
        Some(g) if !g.allows_public_repositories => Ok(()),
        found => Err(problem(
            "Untrusted jobs on a public repository",
            format!(
                "--allow-untrusted with {}: {}, so anyone's pull request to a public repository \
                 of it could run its code on this machine",
                args.target,
                match found {
                    Some(g) => format!(
                        "its default runner group \"{}\" lets public repositories use it",
                        g.name
                    ),
                    None => "GitHub shows no default runner group to check".to_owned(),
                }
            ),
            "Remove --allow-untrusted (the machine then runs only jobs the untrusted-trigger \
             guard trusts), or turn off \"Allow public repositories\" for the default runner \
             group under the organization's Settings → Actions → Runner groups.",
        )),
    }
}

/// On a public repository: the guard must be on, and a loose fork approval policy is named.
async fn check_public(
    registry: &Runners,
    args: &AttachArgs,
    actions: &Actions,
) -> Result<(), Error> {
    let Ok(true) = registry.repository_is_public().await else {
        return Ok(());
    };
    if args.allow_untrusted {
        return Err(problem(
            "Untrusted jobs on a public repository",
            format!(
                "--allow-untrusted with the public repository {}: anyone's pull request could \
                 run its code on this machine",
                args.target
            ),
            "Remove --allow-untrusted: the machine then runs only jobs the untrusted-trigger \
             guard trusts (pushes, maintainers' pull requests and comments).",
        ));
    }
    match registry.fork_pr_approval_policy().await {
        Ok(policy) if policy == "all_external_contributors" => actions.info(&format!(
            "{} is public; its fork pull requests' workflows wait for a maintainer's approval \
             (all_external_contributors), and this machine refuses a fork's job anyway",
            args.target
        )),
        Ok(policy) => actions.annotate(
            &Annotation::warning(format!(
                "{} is public and runs some outside contributors' fork pull request workflows \
                 without approval ({policy}). Such a job can ask for runs-on: self-hosted and be \
                 handed this machine: the job-started hook refuses it before any step runs, but \
                 it takes a turn of the machine. Under Settings → Actions → General, set \
                 \"Approval for running fork pull request workflows from contributors\" to \
                 \"Require approval for all external contributors\".",
                args.target
            ))
            .title("Fork pull requests run without approval"),
        ),
        Err(e) => actions.info(&format!(
            "Could not read the approval policy for fork pull requests ({e})"
        )),
    }
    Ok(())
}

/// Everything the serving loop needs.
struct Session<'a> {
    args: &'a AttachArgs,
    actions: &'a Actions,
    clock: Clock,
    credentials: &'a Credentials,
    api_url: &'a str,
    run_as: &'a RunAs,
    ready: &'a package::Ready,
    work: &'a Path,
    labels: &'a [String],
    machine: &'a str,
    env_for_jobs: Vec<(String, String)>,
    gpus: Option<gpu::Gpus>,
    started: Instant,
    tally: Tally,
    status: Status,
}

/// How long the runner has to end after SIGINT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a non-terminal status line repeats itself while nothing changes.
const STATUS_EVERY: Duration = Duration::from_secs(300);

impl Session<'_> {
    /// User time since `t` (the world's clock runs faster).
    fn since(&self, t: Instant) -> Duration {
        self.clock.unscaled(t.elapsed())
    }

    /// The runners of the target, with credentials fresh for this call.
    async fn registry(&self) -> Result<Runners, Error> {
        self.credentials
            .registry(
                self.api_url,
                &self.args.target,
                self.clock,
                &self.actions.masker(),
            )
            .await
    }

    fn say(&mut self, line: &str) {
        self.status.clear();
        self.actions.info(line);
    }

    /// Serves jobs until something ends it; the ending, or the error that ended it.
    async fn serve(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<judge::HookEvent>,
    ) -> Result<Ending, Error> {
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| signal_error(&e))?;
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| signal_error(&e))?;
        let mut idle_since = Instant::now();
        let mut ending: Option<Ending> = None;
        let mut n = 0u32;
        loop {
            // Between jobs too: a signal or the max lifetime that came while the GPU was checked
            // ends the machine before another runner is registered.
            if ending.is_none() {
                if interrupt.recv().now_or_never().is_some() {
                    ending = Some(Ending::Signal("SIGINT"));
                } else if terminate.recv().now_or_never().is_some() {
                    ending = Some(Ending::Signal("SIGTERM"));
                } else if self.since(self.started) >= self.args.max_lifetime {
                    ending = Some(Ending::MaxLifetime(self.args.max_lifetime));
                }
            }
            if let Some(e) = ending.take() {
                return Ok(e);
            }
            n += 1;
            let dir = self.work.join("runner");
            package::install(self.ready, &dir, self.run_as)
                .await
                .map_err(|p| problem("Runner setup", p.what, p.fix))?;
            self.write_gpu_facts(&dir);
            let name = format!("{}-{n}", self.machine);
            let registry = self.registry().await?;
            let jit = registry
                .create_jit_runner(&name, self.labels)
                .await
                .map_err(|e| github_error(e, &self.args.target))?;
            self.actions.add_mask(jit.encoded_jit_config.expose());
            let started = RunnerProcess::start(
                &dir,
                self.run_as,
                &self.env_for_jobs,
                &jit.encoded_jit_config,
            );
            let mut process = match started {
                Ok(p) => p,
                Err(e) => {
                    self.remove(&jit).await;
                    return Err(problem(
                        "Runner start",
                        format!("could not start the runner: {e}"),
                        "Check that the runner's folder under --work-dir is on a disk that \
                         allows running programs (not mounted noexec).",
                    ));
                }
            };
            let before = aftermath::before(self.run_as, process.group()).await;
            let mut job: Option<(JobFacts, Instant)> = None;
            let mut refused: Option<(JobFacts, String)> = None;
            let mut judging: Option<JobFacts> = None;
            let mut stop_asked: Option<Instant> = None;
            let mut interrupted: Option<Instant> = None;
            let mut killed = false;
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = process.wait() => break,
                    Some(event) = events.recv() => {
                        if !event.is_for(process.group()) {
                            // A late verdict on an earlier runner's job.
                            continue;
                        }
                        let Some(verdict) = event.verdict else {
                            judging = Some(event.facts);
                            continue;
                        };
                        if verdict.accept {
                            self.say(&format!(
                                "▶ job {}: {} · {} · run {} started ({})",
                                self.tally.served + 1,
                                event.facts.repository,
                                event.facts.workflow(),
                                event.facts.run_id,
                                verdict.reason
                            ));
                            job = Some((event.facts, Instant::now()));
                        } else {
                            refused = Some((event.facts, verdict.reason));
                        }
                    }
                    _ = interrupt.recv() => {
                        self.stop_asked("SIGINT", &mut ending, &mut stop_asked, &mut interrupted, &process, job.is_some()).await;
                    }
                    _ = terminate.recv() => {
                        self.stop_asked("SIGTERM", &mut ending, &mut stop_asked, &mut interrupted, &process, job.is_some()).await;
                    }
                    _ = tick.tick() => {
                        let idle = self.since(idle_since);
                        let age = self.since(self.started);
                        if ending.is_none() && age >= self.args.max_lifetime {
                            ending = Some(Ending::MaxLifetime(self.args.max_lifetime));
                            stop_asked = Some(Instant::now());
                            if job.is_some() {
                                self.say(&format!(
                                    "Max lifetime reached: the running job has {} to finish",
                                    human(self.args.grace)
                                ));
                            }
                        }
                        if ending.is_none() && job.is_none() && refused.is_none() && judging.is_none() && idle >= self.args.idle_timeout {
                            ending = Some(Ending::Idle(self.args.idle_timeout));
                            stop_asked = Some(Instant::now());
                        }
                        let grace_over = stop_asked.is_some_and(|t| job.is_none() || self.since(t) >= self.args.grace);
                        if grace_over && interrupted.is_none() {
                            if job.is_some() {
                                self.say("The grace period is over: stopping the runner, which cancels its job");
                            }
                            process.interrupt().await;
                            interrupted = Some(Instant::now());
                        }
                        // Real time, not the user's clock: this is how long a process gets to
                        // end, as the runner gives its steps (SIGINT, then a kill some seconds on).
                        if !killed && interrupted.is_some_and(|t| t.elapsed() >= STOP_TIMEOUT) {
                            process.kill_all(self.run_as).await;
                            killed = true;
                        }
                        self.show_status(job.as_ref(), idle, &name);
                    }
                }
            }
            // A verdict sent just before the runner ended is this runner's too.
            while let Ok(event) = events.try_recv() {
                if !event.is_for(process.group()) {
                    continue;
                }
                match event.verdict {
                    None => judging = Some(event.facts),
                    Some(v) if !v.accept && job.is_none() => {
                        refused = Some((event.facts, v.reason));
                    }
                    Some(_) => {}
                }
            }
            // Whatever the job left running goes with its runner, and what else it left as its
            // user before the next job.
            process.kill_all(self.run_as).await;
            self.remove(&jit).await;
            let _ = system::remove_dir(&dir);
            let cleared = aftermath::clear(self.run_as, &before, self.work).await;
            if !cleared.is_empty() {
                self.say(&format!(
                    "Cleared what the job left as {}: {}",
                    self.run_as.user,
                    cleared.join(", ")
                ));
            }
            let result = process.result();
            // A job whose runner ended while attach judged it (a cancel: the hook ends the job
            // rather than let the runner go on to its always() steps) ran no step.
            if job.is_none() && refused.is_none() {
                refused = judging.map(|facts| {
                    (
                        facts,
                        "it ended while attach judged it (cancelled, say); none of its steps ran"
                            .to_owned(),
                    )
                });
            }
            if let Some((facts, began)) = job {
                let took = self.since(began);
                self.tally.served += 1;
                self.tally.gpu_time += took;
                self.say(&format!(
                    "{} job {}: {} · {} · run {}: {} in {}",
                    if result.as_deref() == Some("Succeeded") {
                        "✓"
                    } else {
                        "✗"
                    },
                    self.tally.served,
                    facts.repository,
                    facts.workflow(),
                    facts.run_id,
                    result.as_deref().unwrap_or("ended without a result"),
                    human(took)
                ));
                idle_since = Instant::now();
            } else if let Some((facts, why)) = refused {
                self.tally.refused += 1;
                self.say(&format!(
                    "✗ refused a job of {} · {} · run {}: {why}",
                    if facts.repository.is_empty() {
                        "an unknown repository"
                    } else {
                        &facts.repository
                    },
                    facts.workflow(),
                    facts.run_id
                ));
            } else if ending.is_none() {
                // The runner ended on its own without a job: say what it said.
                let last = process.last_lines();
                return Err(problem(
                    "The runner stopped",
                    format!(
                        "the runner {name} exited before any job; its last words:\n{}",
                        last.join("\n")
                    ),
                    "Check that this machine reaches GitHub, and that the runner version is \
                     one GitHub still accepts (--runner-version).",
                ));
            }
            if ending.is_none()
                && let Some(limit) = self.args.jobs
                && self.tally.served >= limit
            {
                ending = Some(Ending::JobsDone(limit));
            }
            if ending.is_some() {
                continue;
            }
            if let Some(wanted) = self.args.gpus {
                match gpu::probe(wanted, self.clock).await {
                    Ok(g) => self.gpus = Some(g),
                    Err(p) => {
                        return Err(problem(
                            "The GPU is gone",
                            format!("after job {}, {p}", self.tally.served),
                            "The machine stopped serving so that no job runs without its GPU: \
                             check nvidia-smi (a notebook may have lost its GPU runtime), then \
                             start attach again.",
                        ));
                    }
                }
            }
        }
    }

    /// SIGINT or SIGTERM: the first one ends the machine after the running job (within the
    /// grace period); a second one stops the runner now.
    async fn stop_asked(
        &mut self,
        signal: &'static str,
        ending: &mut Option<Ending>,
        stop_asked: &mut Option<Instant>,
        interrupted: &mut Option<Instant>,
        process: &RunnerProcess,
        busy: bool,
    ) {
        if stop_asked.is_none() {
            *ending = Some(Ending::Signal(signal));
            *stop_asked = Some(Instant::now());
            if busy {
                self.say(&format!(
                    "{signal}: ending after the running job, which has {} to finish ({signal} \
                     again stops it now)",
                    human(self.args.grace)
                ));
            }
        } else if interrupted.is_none() {
            self.say(&format!(
                "{signal} again: stopping the runner and its job now"
            ));
            process.interrupt().await;
            *interrupted = Some(Instant::now());
        }
    }

    fn show_status(&mut self, job: Option<&(JobFacts, Instant)>, idle: Duration, runner: &str) {
        let (kind, detail) = match job {
            Some((facts, began)) => (
                format!(
                    "⏳ running {} · {} · run {} on {runner}",
                    facts.repository,
                    facts.workflow(),
                    facts.run_id
                ),
                format!(" · {}", human(self.since(*began))),
            ),
            None => (
                format!("… waiting for a job on {runner}"),
                format!(
                    " · idle timeout in {}",
                    human(self.args.idle_timeout.saturating_sub(idle))
                ),
            ),
        };
        let every = self.clock.scaled(STATUS_EVERY);
        self.status.show(self.actions, &kind, &detail, every);
    }

    /// The GPU's facts for every job, as the boot script gives them on EC2.
    fn write_gpu_facts(&self, dir: &Path) {
        let Some(gpus) = &self.gpus else { return };
        let json = self.work.join("gpu.json");
        let _ = std::fs::write(&json, gpus.json());
        let _ = std::fs::write(
            dir.join(".env"),
            gpus.env_lines(&json.display().to_string()),
        );
        let _ = self.run_as.own(&dir.join(".env"));
    }

    /// Removes the job's runner unless GitHub did already (an ephemeral runner goes after its
    /// job). A runner GitHub still shows busy is waited for: it fails the job soon after the
    /// runner stops answering.
    async fn remove(&mut self, jit: &JitRunner) {
        let id = jit.runner.id;
        // Fresh credentials: an App's installation token may have expired during a long job.
        let registry = match self.registry().await {
            Ok(r) => r,
            Err(e) => {
                self.tally.left.push(jit.runner.name.clone());
                self.say(&format!(
                    "Could not remove the runner {} (id {id}): {e}",
                    jit.runner.name
                ));
                return;
            }
        };
        let registry = &registry;
        let delete = || registry.delete_runner(id);
        let busy = |e: &GithubError| e.runner_busy().then_some(None).or_else(|| e.retryable());
        let mut backoff = registry.backoff();
        backoff.deadline = Duration::from_secs(300);
        match backoff.run("removing the runner", busy, delete).await {
            Ok(Removal::Deleted | Removal::AlreadyGone) => {}
            Err(e) => {
                self.tally.left.push(jit.runner.name.clone());
                let hint = github_error(e.clone(), &self.args.target);
                self.say(&format!(
                    "Could not remove the runner {} (id {id}): {e}. {}",
                    jit.runner.name,
                    match &hint {
                        Error::Github { whose, source } => whose.hint(source),
                        _ => String::new(),
                    }
                ));
            }
        }
    }
}

fn signal_error(e: &std::io::Error) -> Error {
    problem(
        "Signals",
        format!("could not listen for SIGINT and SIGTERM: {e}"),
        "Run attach again; it must be able to end its runner cleanly.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_label_is_its_host_name_and_a_random_tail() {
        let a = machine_label("Colab-VM_01.internal");
        assert!(a.starts_with("attached-colab-vm-01-internal-"), "{a}");
        assert_ne!(a, machine_label("Colab-VM_01.internal"));
        assert!(crate::inputs::values::label(&a).is_ok());
        assert!(machine_label("").starts_with("attached-"));
        assert!(crate::inputs::values::label(&machine_label(&"x".repeat(300))).is_ok());
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(200)), "3m 20s");
        assert_eq!(human(Duration::from_secs(3900)), "1h 5m");
    }
}
