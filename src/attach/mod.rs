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
mod session;
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
use crate::github::octo::Runners;
use crate::github::{GithubError, JitRunner, Removal, RunnerRegistry};
use crate::modes::failure::Error;
use args::{AttachArgs, Parsed, Target};
use credentials::{Credentials, github_error};
use hook::{JobFacts, Policy};
use runner::RunnerProcess;
use session::Session;
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
    // The hooks' folder, the job user's: the GPU sampler's samples and the job's usage line.
    let state = work.join("job-state");
    std::fs::create_dir_all(&state).map_err(setup_failed)?;
    set_mode(&state, 0o700).map_err(setup_failed)?;
    run_as.own(&state).map_err(setup_failed)?;
    let hook_path = work.join("job-started.sh");
    std::fs::write(&hook_path, hook::script(&exe, &socket, &state)).map_err(setup_failed)?;
    set_mode(&hook_path, 0o755).map_err(setup_failed)?;
    let completed_path = work.join("job-completed.sh");
    std::fs::write(&completed_path, hook::completed_script(&state)).map_err(setup_failed)?;
    set_mode(&completed_path, 0o755).map_err(setup_failed)?;
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
        env_for_jobs: runner::environment(
            env,
            &args.pass_env,
            &[&hook_path, &completed_path],
            &run_as,
        ),
        state: &state,
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
