//! The serving loop of `gpu-runner attach`: one job's runner after another, each registered,
//! watched, judged by the job-started hook and removed, until something ends the session.

use super::*;

/// Everything the serving loop needs.
pub(super) struct Session<'a> {
    pub(super) args: &'a AttachArgs,
    pub(super) actions: &'a Actions,
    pub(super) clock: Clock,
    pub(super) credentials: &'a Credentials,
    pub(super) api_url: &'a str,
    pub(super) run_as: &'a RunAs,
    pub(super) ready: &'a package::Ready,
    pub(super) work: &'a Path,
    pub(super) labels: &'a [String],
    pub(super) machine: &'a str,
    pub(super) env_for_jobs: Vec<(String, String)>,
    /// The hooks' folder: the GPU sampler's samples, the job's usage line.
    pub(super) state: &'a Path,
    pub(super) gpus: Option<gpu::Gpus>,
    pub(super) started: Instant,
    pub(super) tally: Tally,
    pub(super) status: Status,
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
    pub(super) async fn serve(
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
            // Nothing of the last job's GPU usage may speak for this one's.
            for file in ["gpu-samples.csv", "gpu-sampler.pid", "gpu-usage"] {
                let _ = std::fs::remove_file(self.state.join(file));
            }
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
                if let Some(usage) = self.gpu_usage() {
                    self.say(&format!("  GPU use: {usage}"));
                }
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

    /// What the job used of its GPUs, as its job-completed hook summed it up, in words. The file
    /// is the job user's: read without following a link, and no more than a line.
    fn gpu_usage(&self) -> Option<String> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.state.join("gpu-usage"))
            .ok()?;
        let mut line = String::new();
        file.by_ref().take(512).read_to_string(&mut line).ok()?;
        let usage = crate::modes::usage::GpuUsage::from_fields(line.lines().next()?)?;
        Some(usage.describe())
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

pub(super) fn signal_error(e: &std::io::Error) -> Error {
    problem(
        "Signals",
        format!("could not listen for SIGINT and SIGTERM: {e}"),
        "Run attach again; it must be able to end its runner cleanly.",
    )
}
