//! The untrusted-trigger guard on an attached machine. GitHub hands a runner any queued job its
//! labels cover, so the machine itself judges each job before any step runs: the runner's
//! job-started hook (a short script, run as the job's user) runs `gpu-runner attach-hook`, which
//! sends the job's facts (repository, run, event and its payload) to the attach process over a
//! Unix socket and exits with its verdict. The verdict comes from attach, which holds the GitHub
//! credentials for what must be asked (a commenter's permission); the job's user never gets them.
//! Without an answer the hook refuses: it fails closed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::args::Target;
use crate::actions::escape;
use crate::env::Env;
use crate::guard;

/// What the hook tells attach about the job it was handed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobFacts {
    pub repository: String,
    pub run_id: String,
    pub workflow_ref: String,
    pub job: String,
    pub event: String,
    /// The webhook payload at `GITHUB_EVENT_PATH`; `None` when it could not be read.
    pub payload: Option<Value>,
}

impl JobFacts {
    pub fn from_env(env: &Env) -> Self {
        let var = |name: &str| env.non_empty(name).unwrap_or_default().to_owned();
        let (event, payload) = guard::event_of(env);
        Self {
            repository: var("GITHUB_REPOSITORY"),
            run_id: var("GITHUB_RUN_ID"),
            workflow_ref: var("GITHUB_WORKFLOW_REF"),
            job: var("GITHUB_JOB"),
            event: event.to_owned(),
            payload,
        }
    }

    /// The workflow's file, from `owner/repo/.github/workflows/FILE@REF`.
    pub fn workflow(&self) -> &str {
        let path = self.workflow_ref.split('@').next().unwrap_or_default();
        path.rsplit('/')
            .next()
            .filter(|w| !w.is_empty())
            .unwrap_or("a workflow")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub accept: bool,
    pub reason: String,
}

impl Verdict {
    pub fn refuse(reason: impl Into<String>) -> Self {
        Self {
            accept: false,
            reason: reason.into(),
        }
    }
}

/// Who may run jobs here: the guard's settings and whose jobs the machine serves.
#[derive(Debug, Clone)]
pub struct Policy {
    pub target: Target,
    pub allow_untrusted: bool,
    pub allowed_associations: Vec<String>,
}

/// What the guard passed on condition: a comment's author, whose permission GitHub must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judged {
    Verdict(Verdict),
    /// Accept once `login` has write access (or more) to `repository`.
    IfApprover {
        login: String,
        repository: String,
    },
}

impl Policy {
    /// The verdict on a job from its facts alone (pure).
    pub fn judge(&self, facts: &JobFacts) -> Judged {
        let repository = facts.repository.as_str();
        let ours = match &self.target {
            Target::Repo { owner, repo } => {
                repository.eq_ignore_ascii_case(&format!("{owner}/{repo}"))
            }
            Target::Org(org) => repository
                .split_once('/')
                .is_some_and(|(o, _)| o.eq_ignore_ascii_case(org)),
        };
        if !ours {
            return Judged::Verdict(Verdict::refuse(format!(
                "this machine serves {}, and this job is of {}",
                self.target,
                if repository.is_empty() {
                    "an unknown repository"
                } else {
                    repository
                }
            )));
        }
        if self.allow_untrusted {
            return Judged::Verdict(Verdict {
                accept: true,
                reason: "--allow-untrusted: the guard is off".to_owned(),
            });
        }
        match guard::check(
            &facts.event,
            facts.payload.as_ref(),
            repository,
            &self.allowed_associations,
        ) {
            Err(guard::Untrusted(why)) => Judged::Verdict(Verdict::refuse(format!(
                "{why}. This machine runs only jobs the untrusted-trigger guard trusts; run \
                 outside code on it only after review (a job in an environment with required \
                 reviewers), or attach with --allow-untrusted a machine that serves no one else"
            ))),
            Ok(guard::Judgment {
                approver: Some(login),
                ..
            }) => Judged::IfApprover {
                login,
                repository: repository.to_owned(),
            },
            Ok(_) => Judged::Verdict(Verdict {
                accept: true,
                reason: format!("a {} run of {repository}", facts.event),
            }),
        }
    }
}

/// The script the runner runs before each job (`ACTIONS_RUNNER_HOOK_JOB_STARTED`): attach's
/// verdict, and for an accepted job the GPU sampler, writing to `state`. The hook process is
/// `gpu-runner attach-hook` itself (`exec`): a cancel's signal reaches it, not a shell that would
/// wait for it.
pub fn script(exe: &Path, socket: &Path, state: &Path) -> String {
    let quote = |p: &Path| crate::boot::quote(&p.display().to_string());
    format!(
        "#!/bin/bash\n# gpu-runner attach's job-started hook: the attach process judges this job \
         before any of its steps runs.\nexec {} attach-hook {} {}\n",
        quote(exe),
        quote(socket),
        quote(state)
    )
}

/// Starts the job hooks' GPU sampler (`src/boot/gpu-sampler.sh`) for an accepted job, writing to
/// `state`; it outlives the hook, and the job-completed hook stops it. Holds none of the hook's
/// output: the runner waits for a step's output to close.
fn start_sampler(state: &Path) {
    let _ = std::process::Command::new("bash")
        .arg("-c")
        .arg(crate::boot::GPU_SAMPLER)
        .env("STATE_DIR", state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The script the runner runs after each job (`ACTIONS_RUNNER_HOOK_JOB_COMPLETED`): what the
/// job used of its GPUs, from the samples in `state`, to the job's summary and to
/// `state/gpu-usage` for attach to say.
pub fn completed_script(state: &Path) -> String {
    let body = crate::boot::JOB_COMPLETED_HOOK
        .split_once('\n')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    format!(
        "#!/bin/bash\nSTATE_DIR={}\n{body}",
        crate::boot::quote(&state.display().to_string())
    )
}

/// How long the hook waits for attach's verdict: asking GitHub may take a few tries.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn ask(socket: &Path, facts: &JobFacts) -> Result<Verdict, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "gpu-runner attach is not answering at {} ({e})",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(facts).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("could not ask gpu-runner attach: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("gpu-runner attach gave no verdict: {e}"))?;
    serde_json::from_str(&answer).map_err(|_| "gpu-runner attach gave no verdict".to_owned())
}

/// `gpu-runner attach-hook SOCKET [STATE]`, run by the runner's worker before each job: prints the verdict
/// into the job's log and exits 0 to let the job go on. A refused job's worker is killed before
/// the hook exits (attach kills it first; the hook makes sure), since the runner would still run
/// the job's `always()` and `failure()` steps after a failed hook (see `worker`). A cancel while
/// attach judges (the worker's SIGINT or SIGTERM) ends the job the same way: it fails closed.
pub fn client(socket: &Path, state: Option<&Path>, env: &Env) -> i32 {
    let worker = super::worker::above(std::process::id());
    // Said first: attach ends a refused job before the hook hears why, so the runner may never
    // send what the hook prints after the verdict.
    println!(
        "gpu-runner attach judges this job before any of its steps runs: a job it refuses ends \
         here, and attach's log on the machine says why."
    );
    let verdict = ask_unless_cancelled(socket, env);
    if verdict.1.accept
        && let Some(state) = state
    {
        start_sampler(state);
    }
    end_unless_accepted(verdict, worker, hold)
}

fn ask_unless_cancelled(socket: &Path, env: &Env) -> (JobFacts, Verdict) {
    let facts = JobFacts::from_env(env);
    let no_verdict = |why: String| {
        Verdict::refuse(format!(
            "{why}, so this job cannot be judged and does not run"
        ))
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return (facts, no_verdict(format!("the hook could not start ({e})"))),
    };
    let verdict = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return no_verdict("the hook could not watch for a cancel".to_owned());
        };
        let (socket, asked) = (socket.to_owned(), facts.clone());
        let answer = tokio::task::spawn_blocking(move || ask(&socket, &asked));
        tokio::select! {
            answer = answer => match answer {
                Ok(Ok(v)) => v,
                Ok(Err(why)) => no_verdict(why),
                Err(e) => no_verdict(format!("the hook failed ({e})")),
            },
            _ = interrupt.recv() => Verdict::refuse("the job was cancelled while gpu-runner attach judged it"),
            _ = terminate.recv() => Verdict::refuse("the job was cancelled while gpu-runner attach judged it"),
        }
    });
    // The blocking ask may still wait for attach: it must not keep the hook alive.
    runtime.shutdown_background();
    (facts, verdict)
}

/// Never returns: nothing of the job can run while the worker waits for the hook.
fn hold() -> i32 {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn end_unless_accepted(
    (facts, verdict): (JobFacts, Verdict),
    worker: Option<u32>,
    hold: impl FnOnce() -> i32,
) -> i32 {
    if verdict.accept {
        println!(
            "gpu-runner: phase=job-accepted run={} reason=\"{}\"",
            facts.run_id,
            escape::data(&verdict.reason)
        );
        return 0;
    }
    println!(
        "gpu-runner: phase=job-refused reason=\"{}\"",
        escape::data(&verdict.reason)
    );
    println!(
        "::error title=gpu-runner refused this job::{}",
        escape::data(&verdict.reason)
    );
    // The worker uploads the hook's output every half second: a moment, so that the job's log
    // says why. It runs nothing while it waits for this process.
    std::thread::sleep(Duration::from_secs(2));
    match worker {
        Some(w) if super::worker::end(w) => 1,
        _ => {
            println!(
                "gpu-runner: phase=job-refused reason=\"the hook could not end the job's \
                 Runner.Worker; it holds the job until attach ends the runner\""
            );
            hold()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy() -> Policy {
        Policy {
            target: Target::Repo {
                owner: "octo".into(),
                repo: "ml".into(),
            },
            allow_untrusted: false,
            allowed_associations: vec!["OWNER".into(), "MEMBER".into(), "COLLABORATOR".into()],
        }
    }

    fn facts(repository: &str, event: &str, payload: Value) -> JobFacts {
        JobFacts {
            repository: repository.into(),
            run_id: "7".into(),
            workflow_ref: format!("{repository}/.github/workflows/gpu.yml@refs/heads/main"),
            job: "test".into(),
            event: event.into(),
            payload: Some(payload),
        }
    }

    fn fork_pr() -> Value {
        json!({"pull_request": {"number": 3, "head": {"repo": {"full_name": "eve/ml", "fork": true}},
               "user": {"login": "eve"}, "author_association": "NONE"}})
    }

    #[test]
    fn a_push_of_the_repository_runs_and_a_forks_pull_request_does_not() {
        let Judged::Verdict(v) = policy().judge(&facts("octo/ml", "push", json!({}))) else {
            panic!("a verdict")
        };
        assert!(v.accept);
        let Judged::Verdict(v) = policy().judge(&facts("octo/ml", "pull_request", fork_pr()))
        else {
            panic!("a verdict")
        };
        assert!(!v.accept);
        assert!(
            v.reason
                .starts_with("the pull_request event carries a pull request from the fork eve/ml"),
            "{}",
            v.reason
        );
        let open = Policy {
            allow_untrusted: true,
            ..policy()
        };
        assert!(
            matches!(open.judge(&facts("octo/ml", "pull_request", fork_pr())), Judged::Verdict(v) if v.accept)
        );
    }

    #[test]
    fn another_repositorys_job_is_refused_even_with_allow_untrusted() {
        let open = Policy {
            allow_untrusted: true,
            ..policy()
        };
        let Judged::Verdict(v) = open.judge(&facts("octo/web", "push", json!({}))) else {
            panic!("a verdict")
        };
        assert_eq!(
            v,
            Verdict::refuse("this machine serves octo/ml, and this job is of octo/web")
        );
        let org = Policy {
            target: Target::Org("octo".into()),
            ..policy()
        };
        assert!(
            matches!(org.judge(&facts("octo/web", "push", json!({}))), Judged::Verdict(v) if v.accept)
        );
        assert!(
            matches!(org.judge(&facts("evil/web", "push", json!({}))), Judged::Verdict(v) if !v.accept)
        );
    }

    #[test]
    fn a_comment_passes_only_on_its_authors_permission() {
        let comment = json!({"issue": {"number": 3, "pull_request": {}},
            "comment": {"user": {"login": "alice"}, "author_association": "MEMBER"}});
        assert_eq!(
            policy().judge(&facts("octo/ml", "issue_comment", comment)),
            Judged::IfApprover {
                login: "alice".into(),
                repository: "octo/ml".into()
            }
        );
    }

    #[test]
    fn without_attach_the_hook_refuses_and_holds_a_job_whose_worker_it_cannot_end() {
        let env: Env = [
            ("GITHUB_REPOSITORY", "octo/ml"),
            ("GITHUB_EVENT_NAME", "push"),
        ]
        .into_iter()
        .collect();
        let asked = ask_unless_cancelled(Path::new("/nonexistent/hook.sock"), &env);
        assert!(!asked.1.accept);
        assert!(
            asked
                .1
                .reason
                .starts_with("gpu-runner attach is not answering"),
            "{}",
            asked.1.reason
        );
        // No Runner.Worker above a test: the hook would hold the job rather than return.
        let held = std::cell::Cell::new(false);
        let code = end_unless_accepted(asked, None, || {
            held.set(true);
            1
        });
        assert_eq!(code, 1);
        assert!(held.get());
    }

    #[test]
    fn the_hook_script_quotes_its_paths() {
        let s = script(
            Path::new("/opt/it's/gpu-runner"),
            Path::new("/var/lib/a/hook.sock"),
            Path::new("/var/lib/a/job state"),
        );
        assert!(s.contains(
            "exec '/opt/it'\\''s/gpu-runner' attach-hook '/var/lib/a/hook.sock' \
             '/var/lib/a/job state'\n"
        ));
        let done = completed_script(Path::new("/var/lib/a/job state"));
        assert!(done.starts_with("#!/bin/bash\nSTATE_DIR='/var/lib/a/job state'\n"));
        assert_eq!(done.matches("#!/bin/bash").count(), 1);
    }
}
