//! One runner process for one job: started in a process group of its own (so that a Ctrl-C in
//! attach's terminal does not reach the job; attach decides when the job must end), watched
//! through its output, stopped as the runner expects to be (SIGINT, which makes it cancel its
//! job, report it and end its session), then killed with whatever the job left running.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::system::{self, RunAs};
use crate::actions::mask;
use crate::secret::Secret;

/// How the runner reported its job: `Succeeded`, `Failed`, `Canceled` (its own words).
#[derive(Debug, Default)]
struct Seen {
    last_lines: VecDeque<String>,
    result: Option<String>,
}

pub struct RunnerProcess {
    child: tokio::process::Child,
    pgid: u32,
    seen: Arc<Mutex<Seen>>,
}

/// What the environment of a runner (and so of every job) holds: nothing of attach's own but
/// what `pass` names, PATH, the loader's LD_LIBRARY_PATH (where a driver may keep libcuda, as
/// Colab's /usr/lib64-nvidia) and the locale; never a credential.
pub fn environment(
    attach_env: &crate::env::Env,
    pass: &[String],
    [started, completed]: &[&Path; 2],
    run_as: &RunAs,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for name in ["PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TZ"]
        .into_iter()
        .chain(pass.iter().map(String::as_str))
    {
        if super::args::SECRET_VARIABLES.contains(&name) {
            continue;
        }
        if let Some(v) = attach_env.get(name) {
            env.push((name.to_owned(), v.to_owned()));
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        ));
    }
    env.push(("HOME".to_owned(), run_as.home.display().to_string()));
    env.push((
        "ACTIONS_RUNNER_HOOK_JOB_STARTED".to_owned(),
        started.display().to_string(),
    ));
    env.push((
        "ACTIONS_RUNNER_HOOK_JOB_COMPLETED".to_owned(),
        completed.display().to_string(),
    ));
    env
}

impl RunnerProcess {
    /// Starts `dir/run.sh` as the job's user, with the JIT config in its environment (never on a
    /// command line, which every user can read).
    pub fn start(
        dir: &Path,
        run_as: &RunAs,
        env: &[(String, String)],
        jit: &Secret,
    ) -> std::io::Result<Self> {
        let run = dir.join("run.sh").display().to_string();
        let mut command = run_as.command(&run, &[]);
        command
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ACTIONS_RUNNER_INPUT_JITCONFIG", jit.expose())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if run_as.uid == 0 {
            command.env("RUNNER_ALLOW_RUNASROOT", "1");
        }
        let mut child = command.spawn()?;
        let pgid = child.id().unwrap_or_default();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let streams: [Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = mask::redact(&line);
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(result) = line.split("completed with result: ").nth(1) {
                        seen.result = Some(result.trim().to_owned());
                    }
                    seen.last_lines.push_back(line);
                    if seen.last_lines.len() > 20 {
                        seen.last_lines.pop_front();
                    }
                }
            });
        }
        Ok(Self { child, pgid, seen })
    }

    /// Waits until the runner exits; its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        self.child.wait().await.ok().and_then(|s| s.code())
    }

    /// Asks the runner to end as Ctrl-C would: it cancels a running job and reports it.
    pub async fn interrupt(&self) {
        system::signal_group(self.pgid, "INT").await;
    }

    /// Kills what is left of the runner's process group: the runner if it did not end, and
    /// whatever its job started and left running.
    pub async fn kill_all(&mut self, run_as: &RunAs) {
        system::signal_group(self.pgid, "KILL").await;
        let _ = self.child.start_kill();
        // A job can leave its process group (setsid, a daemon); the user attach created for jobs
        // runs nothing else, so everything of that user goes. Not a user that was there before.
        if run_as.dedicated {
            let _ = tokio::process::Command::new("pkill")
                .args(["-KILL", "-u", &run_as.user])
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }

    /// The runner's process group, which its worker and the job-started hook share.
    pub fn group(&self) -> u32 {
        self.pgid
    }

    /// The job's result as the runner printed it.
    pub fn result(&self) -> Option<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .result
            .clone()
    }

    pub fn last_lines(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_lines
            .iter()
            .cloned()
            .collect()
    }
}
