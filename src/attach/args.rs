//! `gpu-runner attach`'s flags: the same rules and the same error style as the action's inputs
//! (every problem found in one pass, each naming the flag, the value and the fix). Credentials
//! never come from here: a command line is readable by every user of the machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::boot::{self, Arch};
use crate::inputs::values::{self, Check, Expect};
use crate::inputs::{InputError, InputErrors, Problem, RunnerScope, Shown};

/// Whose runners the machine serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One repository, `owner/repo`.
    Repo { owner: String, repo: String },
    /// Every repository of an organization that its default runner group serves.
    Org(String),
}

impl Target {
    pub fn scope(&self) -> RunnerScope {
        match self {
            Target::Repo { .. } => RunnerScope::Repo,
            Target::Org(_) => RunnerScope::Org,
        }
    }

    /// The owner and repository the GitHub client is made for (an organization has none).
    pub fn owner_repo(&self) -> (&str, &str) {
        match self {
            Target::Repo { owner, repo } => (owner, repo),
            Target::Org(org) => (org, ""),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Repo { owner, repo } => write!(f, "{owner}/{repo}"),
            Target::Org(org) => write!(f, "the organization {org}"),
        }
    }
}

/// Where the runner comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerSource {
    /// The release package, downloaded once into the cache and checked against its SHA-256.
    Package {
        version: String,
        sha256: String,
        arch: Arch,
    },
    /// A runner already installed in this folder (copied afresh for every job).
    Installed(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttachArgs {
    pub target: Target,
    /// Extra labels, besides GitHub's defaults and the machine's own.
    pub labels: Vec<String>,
    /// The GPUs the machine must show; `None` with `--no-gpu`.
    pub gpus: Option<u32>,
    /// Jobs to serve before ending; `None`: no limit.
    pub jobs: Option<u32>,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// How long a running job may go on once the machine is asked to end.
    pub grace: Duration,
    /// The user jobs run as when attach runs as root.
    pub user: String,
    pub runner: RunnerSource,
    pub cache_dir: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub allow_untrusted: bool,
    /// Put the job user in the docker group: container jobs work, and jobs can become root.
    pub docker: bool,
    pub allowed_associations: Vec<String>,
    /// Variables of attach's environment that jobs get too.
    pub pass_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Help,
    Run(Box<AttachArgs>),
}

/// A flag: its name, the value it takes (none for a switch), its default and what it does.
struct Flag {
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    help: &'static str,
}

const fn flag(
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    help: &'static str,
) -> Flag {
    Flag {
        name,
        value,
        default,
        help,
    }
}

const FLAGS: &[Flag] = &[
    flag(
        "--repo",
        Some("OWNER/REPO"),
        None,
        "Serve this repository's jobs (or --org).",
    ),
    flag(
        "--org",
        Some("ORG"),
        None,
        "Serve the jobs of the organization's repositories (its default runner group).",
    ),
    flag(
        "--labels",
        Some("LIST"),
        None,
        "Extra runner labels, comma-separated, for runs-on. The machine also gets a label of \
         its own (printed at start) and GitHub's self-hosted, Linux and X64 or ARM64.",
    ),
    flag(
        "--gpus",
        Some("N"),
        Some("1"),
        "The GPUs nvidia-smi must show, at start and after every job.",
    ),
    flag(
        "--no-gpu",
        None,
        None,
        "Serve without a GPU check (a CPU machine).",
    ),
    flag(
        "--jobs",
        Some("N"),
        Some("0"),
        "End after N jobs (0: no limit). Refused jobs do not count.",
    ),
    flag(
        "--idle-timeout",
        Some("DURATION"),
        Some("30m"),
        "End when no job started for this long.",
    ),
    flag(
        "--max-lifetime",
        Some("DURATION"),
        Some("12h"),
        "End at this age, once the job running then is done (or its grace is over).",
    ),
    flag(
        "--grace",
        Some("DURATION"),
        Some("5m"),
        "How long a running job may go on after SIGINT, SIGTERM or the max lifetime; then its \
         runner is stopped. A second SIGINT or SIGTERM stops it at once.",
    ),
    flag(
        "--user",
        Some("NAME"),
        Some("runner"),
        "Run as root, attach runs jobs as this user, created if missing. Run as another user, \
         jobs run as that user.",
    ),
    flag(
        "--runner-version",
        Some("VERSION"),
        Some(boot::PINNED_RUNNERS[0].version),
        "The actions/runner release to run.",
    ),
    flag(
        "--runner-sha256",
        Some("HEX"),
        None,
        "The SHA-256 of that release's package (known for the pinned versions).",
    ),
    flag(
        "--runner-dir",
        Some("DIR"),
        None,
        "Use the runner installed in DIR instead of downloading it (copied afresh for each job).",
    ),
    flag(
        "--cache-dir",
        Some("DIR"),
        None,
        "Where the runner package is kept [/var/cache/gpu-runner as root, else \
         ~/.cache/gpu-runner].",
    ),
    flag(
        "--work-dir",
        Some("DIR"),
        None,
        "Where each job's runner and work folder live, wiped after every job \
         [/var/lib/gpu-runner-attach as root, else ~/.local/state/gpu-runner-attach].",
    ),
    flag(
        "--docker",
        None,
        None,
        "Put the job user in the docker group, so that container: jobs and Docker actions work. \
         The docker group is root on this machine: a job can then become root, read attach's \
         memory and leave anything for later jobs.",
    ),
    flag(
        "--allow-untrusted",
        None,
        None,
        "Run jobs the untrusted-trigger guard refuses (a fork's pull request, a stranger's \
         comment). Never on a machine that serves a public repository.",
    ),
    flag(
        "--allowed-associations",
        Some("LIST"),
        Some("OWNER,MEMBER,COLLABORATOR"),
        "Whose pull requests, reviews and comments may run jobs.",
    ),
    flag(
        "--pass-env",
        Some("NAMES"),
        None,
        "Variables of this environment that jobs get too, such as CUDA_VISIBLE_DEVICES,HF_HOME \
         (jobs get PATH, LD_LIBRARY_PATH, LANG and the GPU_RUNNER_GPU_* facts anyway).",
    ),
    flag("--help", None, None, "Print this help."),
];

/// `gpu-runner attach --help`.
pub fn help() -> String {
    let mut text = String::from(
        "gpu-runner attach: make this machine (a notebook, a workstation, a rented box) a GPU \
         runner that serves GitHub Actions jobs one at a time, each with a fresh just-in-time \
         runner, until it is told to end.\n\nUsage: gpu-runner attach (--repo OWNER/REPO | --org \
         ORG) [flags]\n\nCredentials come from the environment, never from flags:\n  \
         GITHUB_TOKEN                  a token that may manage the self-hosted runners \
         (fine-grained: Administration: read and write; classic: repo, or admin:org with --org)\n  \
         GPU_RUNNER_APP_ID and GPU_RUNNER_APP_PRIVATE_KEY   a GitHub App instead\n  \
         GITHUB_API_URL                GitHub Enterprise Server's API (default \
         https://api.github.com)\n\nFlags:\n",
    );
    for f in FLAGS {
        let head = match f.value {
            Some(v) => format!("{} {v}", f.name),
            None => f.name.to_owned(),
        };
        let default = f
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        text.push_str(&format!("  {head:<30}{}{default}\n", f.help));
    }
    text.push_str(
        "\nDURATION is a number with s, m, h or d (90s, 30m, 12h); a bare number is minutes.\n\
         \nExamples:\n  \
         GITHUB_TOKEN=... gpu-runner attach --repo octo/ml --labels gpu-a10\n  \
         GITHUB_TOKEN=... gpu-runner attach --repo octo/ml --jobs 1 --idle-timeout 20m\n  \
         sudo --preserve-env=GITHUB_TOKEN gpu-runner attach --org octo --gpus 2 --pass-env HF_HOME\n\
         \nIn the workflow: runs-on: [self-hosted, gpu-a10]. A job of a fork's pull request, or \
         set off by a stranger's comment, is refused on the machine before any of its steps runs.\n",
    );
    text
}

fn invalid(input: &'static str, value: &str, e: Expect) -> InputError {
    InputError {
        input,
        value: Shown::Value(value.to_owned()),
        problem: Problem::Invalid {
            entry: None,
            expected: e.expected,
            fix: e.fix,
        },
    }
}

/// A duration as a person writes it: `90s`, `30m`, `12h`, `2d`; a bare number is minutes.
pub fn duration(v: &str) -> Result<Duration, Expect> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let seconds = match unit {
        "s" => 1,
        "" | "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if seconds > 0 && n > 0 && n <= 366 * 86_400 / seconds => {
            Ok(Duration::from_secs(n * seconds))
        }
        _ => Err(Expect {
            expected: "a duration".to_owned(),
            fix: "Write a whole number with s, m, h or d, such as 90s, 30m or 12h (a bare \
                  number is minutes), of at most a year."
                .to_owned(),
        }),
    }
}

fn list(input: &'static str, v: &str, check: Check, errors: &mut Vec<InputError>) -> Vec<String> {
    match values::list(v) {
        Ok(items) => {
            for item in &items {
                if let Err(e) = check(item) {
                    errors.push(InputError {
                        input,
                        value: Shown::Value(v.to_owned()),
                        problem: Problem::Invalid {
                            entry: Some(item.clone()),
                            expected: e.expected,
                            fix: e.fix,
                        },
                    });
                }
            }
            items
        }
        Err(position) => {
            errors.push(InputError {
                input,
                value: Shown::Value(v.to_owned()),
                problem: Problem::BlankEntry { position },
            });
            Vec::new()
        }
    }
}

fn env_name(v: &str) -> Result<(), Expect> {
    let ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(()).ok_or_else(|| Expect {
        expected: "an environment variable name".to_owned(),
        fix: "Use letters, digits and '_', not starting with a digit, such as HF_HOME.".to_owned(),
    })
}

/// These stay with attach: jobs never get them, `--pass-env` or not.
pub const SECRET_VARIABLES: &[&str] = &[
    "GITHUB_TOKEN",
    "GPU_RUNNER_APP_ID",
    "GPU_RUNNER_APP_PRIVATE_KEY",
];

fn number(
    input: &'static str,
    v: &str,
    min: u32,
    max: u32,
    unit: &'static str,
) -> Result<u32, InputError> {
    let shown = Shown::Value(v.to_owned());
    match v.trim().parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(InputError {
            input,
            value: shown,
            problem: Problem::OutOfRange { min, max, unit },
        }),
        Err(_) => Err(InputError {
            input,
            value: shown,
            problem: Problem::NotANumber { min, max, unit },
        }),
    }
}

/// Reads the flags after `attach`. `arch` is this machine's, for the runner package.
pub fn parse(args: &[String], arch: Arch) -> Result<Parsed, InputErrors> {
    let mut errors = Vec::new();
    let mut given: Vec<(&'static str, String)> = Vec::new();
    let mut switches: Vec<&'static str> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        if name == "-h" || name == "--help" {
            return Ok(Parsed::Help);
        }
        let Some(f) = FLAGS.iter().find(|f| f.name == name) else {
            let names: Vec<&str> = FLAGS
                .iter()
                .map(|f| f.name.trim_start_matches('-'))
                .collect();
            let mut fix = "Run gpu-runner attach --help for its flags.".to_owned();
            if let Some(s) = values::closest(name.trim_start_matches('-'), names) {
                fix.push_str(&format!(" Did you mean --{s}?"));
            }
            errors.push(InputError {
                input: "attach",
                value: Shown::Value(arg.clone()),
                problem: Problem::Invalid {
                    entry: None,
                    expected: "a flag of gpu-runner attach (credentials come from the environment)"
                        .to_owned(),
                    fix,
                },
            });
            continue;
        };
        if f.value.is_none() {
            if inline.is_some() {
                errors.push(invalid(
                    f.name,
                    arg,
                    Expect {
                        expected: "a switch".to_owned(),
                        fix: format!("Write {} alone, without a value.", f.name),
                    },
                ));
            }
            switches.push(f.name);
            continue;
        }
        match inline.or_else(|| rest.next().cloned()) {
            Some(v) => given.push((f.name, v)),
            None => errors.push(InputError {
                input: f.name,
                value: Shown::Unset,
                problem: Problem::Missing {
                    fix: format!(
                        "Give {} a value: {} {}.",
                        f.name,
                        f.name,
                        f.value.unwrap_or("VALUE")
                    ),
                },
            }),
        }
    }
    let value = |name: &str| -> Option<String> {
        given
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                FLAGS
                    .iter()
                    .find(|f| f.name == name)
                    .and_then(|f| f.default.map(str::to_owned))
            })
    };
    let switch = |name: &str| switches.contains(&name);

    let target = match (value("--repo"), value("--org")) {
        (Some(_), Some(_)) => {
            errors.push(InputError {
                input: "--repo",
                value: Shown::Unset,
                problem: Problem::Conflict {
                    other: "--org",
                    fix: "Give --repo OWNER/REPO for one repository's jobs, or --org ORG for the \
                          organization's, not both.",
                },
            });
            None
        }
        (Some(r), None) => match r.split_once('/') {
            Some((o, n))
                if !o.is_empty()
                    && !n.is_empty()
                    && !n.contains('/')
                    && label_like(o)
                    && label_like(n) =>
            {
                Some(Target::Repo {
                    owner: o.to_owned(),
                    repo: n.to_owned(),
                })
            }
            _ => {
                errors.push(invalid(
                    "--repo",
                    &r,
                    Expect {
                        expected: "OWNER/REPO".to_owned(),
                        fix: "Name the repository as GitHub does, such as --repo octo/ml."
                            .to_owned(),
                    },
                ));
                None
            }
        },
        (None, Some(o)) if label_like(&o) && !o.contains('/') => Some(Target::Org(o)),
        (None, Some(o)) => {
            errors.push(invalid(
                "--org",
                &o,
                Expect {
                    expected: "an organization name".to_owned(),
                    fix: "Name the organization as GitHub does, such as --org octo.".to_owned(),
                },
            ));
            None
        }
        (None, None) => {
            errors.push(InputError {
                input: "--repo",
                value: Shown::Unset,
                problem: Problem::Missing {
                    fix: "Say whose jobs this machine serves: --repo OWNER/REPO, or --org ORG."
                        .to_owned(),
                },
            });
            None
        }
    };
    let labels = value("--labels")
        .map(|v| list("--labels", &v, values::label, &mut errors))
        .unwrap_or_default();
    let mut num = |name: &'static str, min, max, unit| {
        value(name).and_then(|v| {
            number(name, &v, min, max, unit)
                .map_err(|e| errors.push(e))
                .ok()
        })
    };
    let gpus = num("--gpus", 1, 64, "GPUs");
    let jobs = num("--jobs", 0, 1_000_000, "jobs");
    let mut dur = |name: &'static str| {
        value(name).and_then(|v| {
            duration(&v)
                .map_err(|e| errors.push(invalid(name, &v, e)))
                .ok()
        })
    };
    let idle_timeout = dur("--idle-timeout");
    let max_lifetime = dur("--max-lifetime");
    let grace = dur("--grace");
    if let (Some(idle), Some(life)) = (idle_timeout, max_lifetime)
        && idle > life
    {
        errors.push(InputError {
            input: "--idle-timeout",
            value: Shown::Value(value("--idle-timeout").unwrap_or_default()),
            problem: Problem::Invalid {
                entry: None,
                expected: format!(
                    "within --max-lifetime ({})",
                    value("--max-lifetime").unwrap_or_default()
                ),
                fix: "Make --idle-timeout shorter than --max-lifetime.".to_owned(),
            },
        });
    }
    let user = value("--user").unwrap_or_default();
    if let Err(e) = values::linux_user(&user) {
        errors.push(invalid("--user", &user, e));
    }
    let runner = match value("--runner-dir") {
        Some(dir) => {
            for other in ["--runner-version", "--runner-sha256"] {
                if given.iter().any(|(n, _)| *n == other) {
                    errors.push(InputError {
                        input: other,
                        value: Shown::Unset,
                        problem: Problem::Conflict {
                            other: "--runner-dir",
                            fix: "An installed runner (--runner-dir) is used as it is: drop \
                                  --runner-version and --runner-sha256, or drop --runner-dir to \
                                  download a checked package.",
                        },
                    });
                }
            }
            Some(RunnerSource::Installed(PathBuf::from(dir)))
        }
        None => {
            let version = value("--runner-version").unwrap_or_default();
            let sha = value("--runner-sha256");
            let mut ok = true;
            if let Err(e) = values::runner_version(&version) {
                errors.push(invalid("--runner-version", &version, e));
                ok = false;
            }
            if let Some(sha) = &sha
                && let Err(e) = values::sha256(sha)
            {
                errors.push(invalid("--runner-sha256", sha, e));
                ok = false;
            }
            let known = boot::pinned(&version, arch).map(|p| p.sha256.to_owned());
            match (sha.map(|s| s.to_ascii_lowercase()).or(known), ok) {
                (Some(sha256), true) => Some(RunnerSource::Package {
                    version,
                    sha256,
                    arch,
                }),
                (None, true) => {
                    errors.push(InputError {
                        input: "--runner-sha256",
                        value: Shown::Unset,
                        problem: Problem::Missing {
                            fix: format!(
                                "gpu-runner has no pinned hash for runner {version} on {}: give \
                                 the SHA-256 that github.com/actions/runner/releases lists for \
                                 it, or use {}.",
                                arch.name(),
                                boot::PINNED_RUNNERS[0].version
                            ),
                        },
                    });
                    None
                }
                _ => None,
            }
        }
    };
    let allowed_associations = value("--allowed-associations")
        .map(|v| {
            list(
                "--allowed-associations",
                &v,
                values::association,
                &mut errors,
            )
        })
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.to_ascii_uppercase())
        .collect();
    let pass_env: Vec<String> = value("--pass-env")
        .map(|v| list("--pass-env", &v, env_name, &mut errors))
        .unwrap_or_default();
    for name in pass_env
        .iter()
        .filter(|n| SECRET_VARIABLES.contains(&n.as_str()))
    {
        errors.push(invalid(
            "--pass-env",
            name,
            Expect {
                expected: "a variable jobs may see".to_owned(),
                fix: format!(
                    "{name} holds attach's credentials, which never reach a job: remove it."
                ),
            },
        ));
    }
    if switch("--no-gpu") && given.iter().any(|(n, _)| *n == "--gpus") {
        errors.push(InputError {
            input: "--gpus",
            value: Shown::Unset,
            problem: Problem::Conflict {
                other: "--no-gpu",
                fix: "Give --gpus N to require N GPUs, or --no-gpu to skip the GPU check, not both.",
            },
        });
    }
    if !errors.is_empty() {
        return Err(InputErrors(errors));
    }
    let (
        Some(target),
        Some(gpus),
        Some(jobs),
        Some(idle_timeout),
        Some(max_lifetime),
        Some(grace),
        Some(runner),
    ) = (
        target,
        gpus,
        jobs,
        idle_timeout,
        max_lifetime,
        grace,
        runner,
    )
    else {
        return Err(InputErrors(Vec::new()));
    };
    Ok(Parsed::Run(Box::new(AttachArgs {
        target,
        labels,
        gpus: (!switch("--no-gpu")).then_some(gpus),
        jobs: (jobs > 0).then_some(jobs),
        idle_timeout,
        max_lifetime,
        grace,
        user,
        runner,
        cache_dir: value("--cache-dir").map(PathBuf::from),
        work_dir: value("--work-dir").map(PathBuf::from),
        allow_untrusted: switch("--allow-untrusted"),
        docker: switch("--docker"),
        allowed_associations,
        pass_env,
    })))
}

/// GitHub's owner and repository names: letters, digits, '-', '_' and '.'.
fn label_like(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 100
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn run(v: &[&str]) -> AttachArgs {
        match parse(&args(v), Arch::X64).unwrap() {
            Parsed::Run(a) => *a,
            Parsed::Help => panic!("help"),
        }
    }

    fn errors(v: &[&str]) -> Vec<String> {
        parse(&args(v), Arch::X64)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_serve_one_repository_with_one_gpu_until_idle() {
        let a = run(&["--repo", "octo/ml"]);
        assert_eq!(
            a.target,
            Target::Repo {
                owner: "octo".into(),
                repo: "ml".into()
            }
        );
        assert_eq!(a.gpus, Some(1));
        assert_eq!(a.jobs, None);
        assert_eq!(a.idle_timeout, Duration::from_secs(30 * 60));
        assert_eq!(a.max_lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(a.grace, Duration::from_secs(300));
        assert_eq!(a.user, "runner");
        assert_eq!(a.allowed_associations, ["OWNER", "MEMBER", "COLLABORATOR"]);
        let RunnerSource::Package {
            version, sha256, ..
        } = a.runner
        else {
            panic!("a package")
        };
        assert_eq!(version, boot::PINNED_RUNNERS[0].version);
        assert_eq!(sha256.len(), 64);
    }

    #[test]
    fn flags_take_values_inline_or_after_and_switches_stand_alone() {
        let a = run(&[
            "--org=octo",
            "--labels",
            "gpu-a10, cuda-12",
            "--jobs=3",
            "--idle-timeout",
            "90s",
            "--max-lifetime=2h",
            "--no-gpu",
            "--allow-untrusted",
            "--pass-env",
            "HF_HOME,CUDA_VISIBLE_DEVICES",
        ]);
        assert_eq!(a.target, Target::Org("octo".into()));
        assert_eq!(a.labels, ["gpu-a10", "cuda-12"]);
        assert_eq!(a.jobs, Some(3));
        assert_eq!(a.idle_timeout, Duration::from_secs(90));
        assert_eq!(a.max_lifetime, Duration::from_secs(7200));
        assert_eq!(a.gpus, None);
        assert!(a.allow_untrusted);
        assert_eq!(a.pass_env, ["HF_HOME", "CUDA_VISIBLE_DEVICES"]);
        assert_eq!(
            parse(&args(&["--repo", "o/r", "--help"]), Arch::X64),
            Ok(Parsed::Help)
        );
    }

    #[test]
    fn every_bad_flag_is_named_with_its_value_and_fix_in_one_pass() {
        let found = errors(&[
            "--repo",
            "octo",
            "--jbos",
            "2",
            "--gpus",
            "0",
            "--idle-timeout",
            "soon",
            "--pass-env",
            "GITHUB_TOKEN",
        ]);
        assert_eq!(
            found,
            [
                "attach \"--jbos\" is not a flag of gpu-runner attach (credentials come from the \
                 environment). Run gpu-runner attach --help for its flags. Did you mean --jobs?",
                "attach \"2\" is not a flag of gpu-runner attach (credentials come from the \
                 environment). Run gpu-runner attach --help for its flags.",
                "--repo \"octo\" is not OWNER/REPO. Name the repository as GitHub does, such as \
                 --repo octo/ml.",
                "--gpus is \"0\", outside 1 to 64 GPUs. Set --gpus to a whole number of GPUs from \
                 1 to 64.",
                "--idle-timeout \"soon\" is not a duration. Write a whole number with s, m, h or \
                 d, such as 90s, 30m or 12h (a bare number is minutes), of at most a year.",
                "--pass-env \"GITHUB_TOKEN\" is not a variable jobs may see. GITHUB_TOKEN holds \
                 attach's credentials, which never reach a job: remove it.",
            ]
        );
        assert_eq!(
            errors(&[]),
            [
                "--repo is not set. Say whose jobs this machine serves: --repo OWNER/REPO, or --org ORG."
            ]
        );
        assert_eq!(
            errors(&["--repo", "o/r", "--org", "o"]),
            [
                "--repo and --org are both set. Give --repo OWNER/REPO for one repository's jobs, or \
              --org ORG for the organization's, not both."
            ]
        );
        assert!(
            errors(&["--repo", "o/r", "--runner-version", "2.300.0"])[0]
                .contains("gpu-runner has no pinned hash for runner 2.300.0")
        );
        assert!(
            errors(&[
                "--repo",
                "o/r",
                "--idle-timeout",
                "3h",
                "--max-lifetime",
                "1h"
            ])[0]
                .contains("Make --idle-timeout shorter than --max-lifetime.")
        );
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration("45"), Ok(Duration::from_secs(45 * 60)));
        assert_eq!(duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        for bad in ["", "0", "5w", "-1m", "1.5h", "400d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_help_lists_every_flag_and_the_credentials_variables() {
        let text = help();
        for f in FLAGS {
            assert!(text.contains(f.name), "{}", f.name);
        }
        assert!(text.contains("GITHUB_TOKEN"));
        assert!(text.contains("Examples:"));
    }
}
